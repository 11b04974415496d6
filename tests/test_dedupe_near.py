"""NearDedupe end to end in Beam: planted duplicates found, keepers deterministic, scope per source or
across sources, identical removals on re-runs (also under the multi-process local runner)."""
import json
import random
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.dedupe.config import MinHashConfig
from pipelines.dedupe.minhash import exact_jaccard
from pipelines.dedupe.planted import corpus_with_plants, load_texts, plant, score
from pipelines.dedupe.transforms import NearDedupe
from pipelines.schema import Document, Reject

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


def _docs(texts, sources=None):
    sources = sources or ["src"] * len(texts)
    return [Document(i, f"doc-{i}", s, t, f"file.jsonl:{i + 1}", {}) for i, (t, s) in enumerate(zip(texts, sources))]


def _run(docs, cfg=None, cross_source=False, tmp_path=None, options=None):
    cfg = cfg or MinHashConfig()
    out = str(tmp_path / "rejects")
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(docs, reshuffle=False)
           | NearDedupe(cfg, cross_source=cross_source)
           | beam.Map(lambda r: json.dumps(r._asdict(), sort_keys=True))
           | beam.io.WriteToText(out, shard_name_template=""))
    lines = Path(out).read_text().splitlines() if Path(out).exists() else []
    return sorted((Reject(**json.loads(line)) for line in lines), key=lambda r: r.uid)


def test_planted_synthetic_duplicates(tmp_path):
    base = _synthetic_base(150)
    # copies of docs 0..29 with two words replaced (true Jaccard ~0.93), plus a chain a -> a' -> a''
    variants = [_two_word_edit(base[i], 40 + i) for i in range(30)]
    origins = list(range(30))
    chain = _two_word_edit(variants[0], 200)
    assert all(0.9 < exact_jaccard(base[i], v) < 1 for i, v in zip(origins, variants))
    texts = base + variants + [chain]
    rejects = _run(_docs(texts), tmp_path=tmp_path)
    removed = {r.uid: r for r in rejects}
    assert set(removed) == set(range(150, 181))
    for k, i in enumerate(origins):
        r = removed[150 + k]
        assert (r.stage, r.reason, r.source) == ("near_dedupe", "near_duplicate", "src")
        assert r.duplicate_of == f"doc-{i}" and r.loc == f"file.jsonl:{150 + k + 1}"
        assert 0.6 < r.value <= 1.0
    assert removed[180].duplicate_of == "doc-0"  # transitively, to the smallest uid of the component


def test_scope_per_source_and_cross_source(tmp_path):
    base = _synthetic_base(40, seed=5)
    copy = _two_word_edit(base[3], 10)
    texts = base + [copy]
    sources = ["c4_en"] * 40 + ["mc4_en"]
    assert _run(_docs(texts, sources), tmp_path=tmp_path / "a") == []
    rejects = _run(_docs(texts, sources), cross_source=True, tmp_path=tmp_path / "b")
    assert [(r.uid, r.source, r.duplicate_of) for r in rejects] == [(40, "mc4_en", "doc-3")]


def test_keeper_is_smallest_uid_not_input_order(tmp_path):
    base = _synthetic_base(20, seed=9)
    copy = _two_word_edit(base[4], 20)
    docs = _docs(base + [copy])
    # give the copy the smallest uid and feed it first: the original must now be the removed one
    docs[-1] = docs[-1]._replace(uid=-5, id="copy")
    rejects = _run(list(reversed(docs)), tmp_path=tmp_path)
    assert [(r.uid, r.duplicate_of) for r in rejects] == [(4, "copy")]


@pytest.mark.skipif(not CORPORA.exists(), reason="../shared/corpora not present")
def test_planted_real_text_quality_and_determinism(tmp_path):
    base = load_texts(CORPORA / "c4_en.jsonl.zst", limit=400) + load_texts(CORPORA / "s2orc.jsonl.zst", limit=200)
    plants = plant(base, 300, seed=11)
    texts, families, pair_j = corpus_with_plants(base, plants)
    docs = _docs(texts)
    first = _run(docs, tmp_path=tmp_path / "one")
    s = score(families, pair_j, {r.uid: int(r.duplicate_of.split("-")[1]) for r in first})
    assert s.positives > 50 and s.low_pairs > 20
    assert s.f1 >= 0.97, s
    assert s.no_relative <= 0.01 * max(1, s.removed), s
    assert s.low_pairs_merged == 0, s
    # same inputs, shuffled order, multi-process runner -> identical removals
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    opts = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_processing")
    second = _run(shuffled, tmp_path=tmp_path / "two", options=opts)
    assert second == first
