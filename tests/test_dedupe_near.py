"""NearDedupe end to end in Beam: planted duplicates found, keepers deterministic, scope per source or
across sources, identical removals on re-runs (also under the multi-process local runner)."""
import random
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.dedupe.minhash import exact_jaccard
from pipelines.dedupe.planted import corpus_with_plants, plant, score
from pipelines.sources.readers import read_texts
from tests.conftest import needs_shared, stage_and_dedupe

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = SHARED / "corpora"


def _synthetic_base(n, seed=0, words=300):
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ri", "so", "tu", "va", "ze")
             for b in ("n", "r", "s", "t", "m", "l", "x", "d", "k", "p", "")] * 3
    vocab += [str(i) for i in range(200)]
    return [" ".join(rng.choice(vocab) for _ in range(words)) + "." for _ in range(n)]


def _two_word_edit(text, at):
    ws = text.split(" ")
    ws[at] = "EDITED"
    ws[at + 60] = "AGAIN"
    return " ".join(ws)


def _run(texts, tmp_path, tokenizer_path, sources=None, cfg=None, cross_source=False, options=None):
    """Near removals as (index of the removed text, index of its keeper, value) through the real path."""
    sources = sources or ["rp_arxiv"] * len(texts)
    docs: dict = {}
    for i, (t, s) in enumerate(zip(texts, sources)):
        docs.setdefault(s, []).append((f"doc-{i}", t))
    dedupe = {"exact": False, "minhash": (cfg or {}) or True}
    _plan, removals, ids = stage_and_dedupe(tmp_path, docs, dedupe, tokenizer_path, cross_source, options)
    index = lambda uid: int(ids[uid].split("-")[1])  # noqa: E731
    out = []
    for r in removals:
        assert (r.stage, r.reason) == ("near_dedupe", "near_duplicate")
        assert r.keeper_id == ids[r.keeper_uid] and r.detail == f"keeper_uid={r.keeper_uid}"
        out.append((index(r.uid), index(r.keeper_uid), r.value))
    return out


@needs_shared("tokenizers")
def test_planted_synthetic_duplicates(tmp_path, tokenizer_path):
    base = _synthetic_base(150)
    # copies of docs 0..29 with two words replaced (true Jaccard ~0.93), plus a chain a -> a' -> a''
    variants = [_two_word_edit(base[i], 40 + i) for i in range(30)]
    origins = list(range(30))
    chain = _two_word_edit(variants[0], 200)
    assert all(0.9 < exact_jaccard(base[i], v) < 1 for i, v in zip(origins, variants))
    texts = base + variants + [chain]
    removed = {i: (k, v) for i, k, v in _run(texts, tmp_path, tokenizer_path)}
    assert set(removed) == set(range(150, 181))
    for k, i in enumerate(origins):
        keeper, value = removed[150 + k]
        assert keeper == i and 0.6 < value <= 1.0
    assert removed[180][0] == 0  # transitively, to the smallest uid of the component


@needs_shared("tokenizers")
def test_scope_per_source_and_cross_source(tmp_path, tokenizer_path):
    base = _synthetic_base(40, seed=5)
    copy = _two_word_edit(base[3], 10)
    texts = base + [copy]
    sources = ["c4_en"] * 40 + ["mc4_en"]
    assert _run(texts, tmp_path / "a", tokenizer_path, sources) == []
    got = _run(texts, tmp_path / "b", tokenizer_path, sources, cross_source=True)
    assert [(i, k) for i, k, _v in got] == [(40, 3)]


@needs_shared("tokenizers")
def test_keeper_is_smallest_uid(tmp_path, tokenizer_path):
    base = _synthetic_base(20, seed=9)
    copy = _two_word_edit(base[4], 20)
    # the copy comes first in the file (smallest uid): the original is the one removed
    texts = [copy] + base
    assert [(i, k) for i, k, _v in _run(texts, tmp_path, tokenizer_path)] == [(5, 0)]


@needs_shared("corpora")
@needs_shared("tokenizers")
def test_planted_real_text_quality_and_determinism(tmp_path, tokenizer_path):
    base = read_texts(CORPORA / "c4_en.jsonl.zst", limit=400) + read_texts(CORPORA / "s2orc.jsonl.zst", limit=200)
    plants = plant(base, 300, seed=11)
    texts, families, pair_j = corpus_with_plants(base, plants)
    first = _run(texts, tmp_path / "one", tokenizer_path)
    s = score(families, pair_j, {i: k for i, k, _v in first})
    assert s.positives > 50 and s.low_pairs > 20
    assert s.f1 >= 0.97, s
    assert s.no_relative <= 0.01 * max(1, s.removed), s
    assert s.low_pairs_merged == 0, s
    # same inputs, multi-process runner -> identical removals
    opts = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_processing")
    second = _run(texts, tmp_path / "two", tokenizer_path, options=opts)
    assert second == first


def test_band_records_as_bytes_or_staged_references_are_the_same(tmp_path, tokenizer_path):
    """The local runner shuffles references into each part's staged ``bands.npy``, a cluster the records
    themselves: every bucket must get the same records either way, with and without removed documents."""
    import apache_beam as beam
    import numpy as np

    from pipelines.dedupe.minhash import SignatureSpec
    from pipelines.engine.dedupe.near import _band_records, _band_records_of
    from pipelines.engine.dedupe.shared import one_process_shuffles
    from pipelines.engine.staging import Part

    base = _synthetic_base(30, seed=3)
    docs = {"rp_arxiv": [(f"a{i}", t) for i, t in enumerate(base[:15])],
            "rp_wikipedia": [(f"w{i}", t) for i, t in enumerate(base[15:] + [_two_word_edit(base[16], 5)])]}
    plan, _removals, _ids = stage_and_dedupe(tmp_path, docs, {"exact": False, "minhash": True}, tokenizer_path)
    specs = {n: (i, SignatureSpec.from_config(plan.sources[n].dedupe.minhash)) for i, n in enumerate(plan.sources)}
    compared = 0
    for task in plan.tasks:
        part = Part.of(plan, task.source, task.part)
        summary = part.done()
        uids = part.read_sigs().uid.tolist()
        for gone in (set(), set(uids[::3])):
            refs = dict(_band_records_of((summary, gone), plan, specs, 3, True))
            blobs = dict(_band_records_of((summary, gone), plan, specs, 3, False))
            assert refs.keys() == blobs.keys() and refs
            for key in refs:
                assert isinstance(refs[key], tuple) and isinstance(blobs[key], bytes)
                got = _band_records([refs[key]], plan)
                np.testing.assert_array_equal(got, _band_records([blobs[key]], plan))
                assert not set(got[:, 1].view(np.int64).tolist()) & gone
                compared += len(got)
    assert compared > 0
    assert one_process_shuffles(beam.Pipeline())
    assert not one_process_shuffles(beam.Pipeline(options=PipelineOptions(["--runner=PortableRunner"])))
