"""pipelines/engine/staging.py owns the per-part staging format: every record round-trips through ``Part``, the typed
``PartSummary`` writes the same summary.json bytes as the untyped dict did, and no other module knows the
files of a part folder, their npz keys, or writes .npz files."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from contract.tokens import EOS, TOKEN_DTYPE
from pipelines.engine.staging import (
    DOCS,
    EMB,
    FILES,
    SIGS,
    TOKENS,
    Docs,
    Embeddings,
    Part,
    PartSummary,
    Sigs,
)
from tests.conftest import REPO


def _legacy_bytes(d: dict) -> bytes:
    """What pipelines.engine.process wrote for the untyped summary dict (staging.write_json)."""
    return (json.dumps(d, sort_keys=True) + "\n").encode("utf-8")


def _summary_dict(**over) -> dict:
    d = {"source": "c4_en", "part": 3, "read": 12, "docs": 9, "text_bytes": 12345, "input_bytes": 6789,
         "tokens": 4321, "counts": [["filter", "min_words", "", 2], ["read", "bad_json", "c4-ünï.jsonl", 1]],
         "finished": 1718000000.123456, "token_hist_before_dedupe": {"edges": [0, 64, 128], "counts": [4, 5]},
         "pii": {"documents": 1, "emails": 2, "ips": 0},
         "decontam": {"by_eval": {"mmlu": 1}, "spans_removed": 0, "documents_cut": 0},
         "meta_missing": {}, "filter_stats": {"min_words": {"words": {"lt_50": 2}}},
         "samples": {"read_bytes": 999, "bytes": {"filter/min_words": 10}, "picks": {"filter/min_words": [[7, 5]]}}}
    d.update(over)
    return d


def _docs(n: int) -> tuple[Docs, np.ndarray]:
    rng = np.random.default_rng(n)
    lengths = rng.integers(1, 9, size=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = rng.integers(0, 50_000, size=int(offsets[-1])).astype(TOKEN_DTYPE)
    tokens[offsets[1:] - 1] = EOS
    uid = np.sort(rng.choice(1 << 40, size=n, replace=False)).astype(np.int64)
    return Docs(uid, offsets, rng.integers(1, 1000, size=n).astype(np.int64)), tokens


# ---------------------------------------------------------------------------------------------------
# the summary


def test_summary_writes_the_same_bytes_as_the_dict():
    d = _summary_dict()
    s = PartSummary.from_dict(d)
    assert s.to_json() == _legacy_bytes(d)
    assert PartSummary.from_json(s.to_json()) == s
    assert s.key == ("c4_en", 3)
    assert list(s.pass_through()) == ["pii", "decontam", "meta_missing", "samples", "filter_stats"]
    assert s.pass_through()["meta_missing"] == {}   # an empty dict is present, not absent


def test_summary_of_an_older_build_reads_and_writes_back_unchanged():
    old = {k: v for k, v in _summary_dict().items()
           if k not in ("pii", "decontam", "meta_missing", "samples", "filter_stats")}
    s = PartSummary.from_json(_legacy_bytes(old))
    assert s.pass_through() == {} and s.samples is None
    assert s.to_json() == _legacy_bytes(old)


def test_summary_missing_a_count_is_not_done(tmp_path):
    part = Part(str(tmp_path / "p"))
    d = _summary_dict()
    del d["read"]
    with pytest.raises(ValueError, match="read"):
        PartSummary.from_dict(d)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "summary.json").write_bytes(_legacy_bytes(d))
    assert part.is_done() and part.done() is None   # redone rather than trusted
    (tmp_path / "p" / "summary.json").write_bytes(b'{"source": "c4_en", "par')   # an interrupted write
    assert part.done() is None


def test_summary_travels_through_beams_coder():
    from apache_beam.coders import coders

    s = PartSummary.from_dict(_summary_dict())
    for coder in (coders.FastPrimitivesCoder(), coders.PickleCoder()):
        assert coder.decode(coder.encode(s)) == s


# ---------------------------------------------------------------------------------------------------
# every record of a part folder


@pytest.mark.parametrize("n", [0, 1, 37])
def test_every_record_round_trips(tmp_path, n):
    part = Part(str(tmp_path / "parts" / "part-00000"))
    docs, tokens = _docs(n)
    ids = [f"doc-{i}-ü\u2028\"q\"" for i in range(n)]
    exact = np.arange(2 * n, dtype=np.uint64).reshape(-1, 2) * np.uint64(0x9E3779B97F4A7C15)
    sigs = Sigs(docs.uid[::2].copy(), np.arange(len(docs.uid[::2]) * 16, dtype=np.uint32).reshape(-1, 16))
    emb = Embeddings(docs.uid, np.linspace(-1, 1, n * 8, dtype=np.float32).reshape(n, 8))
    rejects = [(int(u), {"id": f"r{u}", "stage": "filter", "reason": "min_words", "text": "ü\t\n"})
               for u in range(n)]
    samples = {"filter/min_words": {"5": {"id": "x", "text": "ü"}}} if n else {}
    assert not part.is_done() and part.done() is None

    part.write_tokens(tokens)
    part.write_docs(docs)
    part.write_ids(ids)
    part.write_exact(exact)
    part.write_sigs(sigs)
    part.write_emb(emb)
    part.write_rejects(rejects)
    part.write_samples(samples)
    summary = PartSummary.from_dict(_summary_dict(docs=n))
    part.write_summary(summary)

    got = part.read_docs()
    assert isinstance(got, Docs)
    for a, b in zip(got, docs):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    t = part.read_tokens()
    assert t.dtype == TOKEN_DTYPE and np.array_equal(t, tokens)
    assert part.read_ids() == ids
    assert np.array_equal(part.read_exact(), exact) and part.read_exact().dtype == np.uint64
    s = part.read_sigs()
    assert np.array_equal(s.uid, sigs.uid) and np.array_equal(s.sig, sigs.sig) and s.sig.dtype == np.uint32
    e = part.read_emb()
    assert np.array_equal(e.uid, emb.uid) and np.array_equal(e.emb, emb.emb) and e.emb.dtype == np.float32
    assert part.read_rejects() == [(u, json.dumps(r, ensure_ascii=False)) for u, r in rejects]
    assert (tmp_path / "parts" / "part-00000" / "rejects.jsonl").exists() == bool(rejects)  # no empty objects
    assert part.read_samples() == samples
    assert part.is_done() and part.done() == summary
    assert Path(part.path("summary.json")).read_bytes() == _legacy_bytes(_summary_dict(docs=n))


def test_tokens_of_another_dtype_are_refused(tmp_path):
    with pytest.raises(TypeError, match=np.dtype(TOKEN_DTYPE).name):
        Part(str(tmp_path)).write_tokens(np.zeros(3, dtype=np.int32))


def test_rows_by_seeking_equal_the_arrays(tmp_path):
    part = Part(str(tmp_path))
    docs, tokens = _docs(50)
    part.write_docs(docs)
    part.write_tokens(tokens)
    part.write_sigs(Sigs(docs.uid, np.arange(50 * 4, dtype=np.uint32).reshape(50, 4)))
    part.write_emb(Embeddings(docs.uid, np.linspace(0, 1, 50 * 3, dtype=np.float32).reshape(50, 3)))
    d, t = part.seekable(DOCS), part.seekable(TOKENS)
    try:
        assert np.array_equal(d.uid, docs.uid) and t.uid is None
        for i in (0, 17, 49):
            lo, hi = (int(x) for x in d.rows(i, 2))
            assert (lo, hi) == (docs.offsets[i], docs.offsets[i + 1])
            assert np.array_equal(t.rows(lo, hi - lo), tokens[lo:hi])
        assert len(d.rows(50, 5)) == 1   # clipped at the end of the array
    finally:
        d.close()
        t.close()
    for name, arr in ((SIGS, part.read_sigs().sig), (EMB, part.read_emb().emb)):
        f = part.seekable(name)
        try:
            assert np.array_equal(f.uid, docs.uid)
            assert np.array_equal(f.rows(7, 1)[0], arr[7])
        finally:
            f.close()
    with pytest.raises(ValueError):
        part.path("other.npz")


@pytest.mark.parametrize("write_rejects", [True, False])
def test_a_processed_part_reads_back(tmp_path, tokenizer_path, write_rejects):
    """The real fused path (pipelines.engine.process) writes what the readers read, and its summary.json is the typed
    summary's bytes with every field present."""
    from pipelines.sources.config import source_config
    from pipelines.engine.plan import BuildPlan
    from pipelines.engine.process import Tools, cached_summary, process_part
    from pipelines.sources.readers import expand_inputs

    texts = [f"document number {i} has a few words " * (i % 5 + 1) for i in range(30)] + ["dup words here " * 9] * 3
    path = tmp_path / "c4.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
                    + "{not json\n")
    cfg = source_config("c4_en", {"inputs": [str(path)], "id_field": "id", "text_field": "text", "filters": "none",
                                  "dedupe": {"exact": True, "minhash": True}}, "test")
    plan = BuildPlan.make(str(tmp_path / "out"), Path(tokenizer_path).read_text(), write_rejects, False,
                          {"c4_en": cfg}, {"c4_en": expand_inputs("c4_en", cfg.inputs)}, {"c4_en": "h"},
                          {"c4_en": {}})
    (task,) = plan.tasks
    summary = process_part(task, plan, Tools(plan))
    part = Part.of(plan, "c4_en", 0)
    raw = Path(part.path("summary.json")).read_bytes()
    assert raw == summary.to_json() and cached_summary(task, plan) == PartSummary.from_json(raw)
    assert set(json.loads(raw)) == {f for f in PartSummary.__dataclass_fields__}
    assert (summary.read, summary.docs) == (len(texts) + 1, len(texts))
    docs, tokens = part.read_docs(), part.read_tokens()
    assert len(docs.uid) == len(part.read_ids()) == summary.docs and np.all(np.diff(docs.uid) > 0)
    assert docs.offsets[-1] == len(tokens) == summary.tokens and tokens.dtype == TOKEN_DTYPE
    assert np.all(tokens[docs.offsets[1:] - 1] == EOS)
    assert int(docs.nbytes.sum()) == summary.text_bytes
    assert part.read_exact().shape == (summary.docs, 2)
    assert np.array_equal(part.read_sigs().uid, docs.uid)
    rejects = part.read_rejects()
    assert [json.loads(r)["reason"] for _u, r in rejects] == (["bad_json"] if write_rejects else [])


# ---------------------------------------------------------------------------------------------------
# one owner

CODE = ("pipelines", "mixtures", "trainer", "contract", "tokenization", "kernels", "benchmarks", "scripts")
NPZ_KEYS = {*Docs._fields, *Sigs._fields, *Embeddings._fields}
# np.load / np.save in pipelines/ outside staging.py, each on an array that is not a part's staging file
OTHER_NPY = {"pipelines/engine/shards.py": "doc_tokens.npy of an MDS part and of the merged source",
             "pipelines/dedupe/embed.py": "the static embedder's table cache"}


def _code_files():
    for package in CODE:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            if rel != "pipelines/engine/staging.py":
                yield rel, ast.parse(path.read_text(encoding="utf-8"))


def _np_call(node: ast.AST) -> str:
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "numpy")):
        return node.func.attr
    return ""


def _findings(rel: str, tree: ast.AST) -> list[str]:
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                node.value in FILES or node.value.endswith(tuple("/" + f for f in FILES))):
            hits.append(f"{rel}:{node.lineno} names the staging file {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "part_staging":
            hits.append(f"{rel}:{node.lineno} builds a part folder's path (use staging.Part.of)")
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
              and node.slice.value in NPZ_KEYS and rel.startswith(("pipelines/", "mixtures/", "trainer/"))):
            hits.append(f"{rel}:{node.lineno} indexes the npz key {node.slice.value!r}")
        elif _np_call(node).startswith("savez") and not rel.startswith("benchmarks/"):
            hits.append(f"{rel}:{node.lineno} writes an .npz")
        elif _np_call(node) in ("load", "save") and rel.startswith("pipelines/") and rel not in OTHER_NPY:
            hits.append(f"{rel}:{node.lineno} np.{_np_call(node)} outside pipelines/engine/staging.py")
    return hits


def test_only_staging_knows_the_part_folder():
    """No module other than pipelines/engine/staging.py names a part folder's files, builds a part folder's path
    (plan.part_staging), indexes a staged array by its npz key, or writes an .npz; np.load/np.save in the
    data path only on arrays that are not staging files (OTHER_NPY)."""
    assert [h for rel, tree in _code_files() for h in _findings(rel, tree)] == []


def test_the_check_finds_what_it_looks_for():
    src = ('x = z["sig"]\nnp.savez(b, uid=u)\np = plan.part_staging(s, 0)\nf = "docs.npz"\n'
           'g = root + "/summary.json"\nnp.load(p)\ny = d["uid"]\n')
    hits = _findings("pipelines/x.py", ast.parse(src))
    assert sorted(int(h.split(" ", 1)[0].split(":")[1]) for h in hits) == [1, 2, 3, 4, 5, 6, 7], hits
    assert _findings("pipelines/engine/shards.py", ast.parse("np.load(p)\n")) == []
