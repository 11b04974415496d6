"""SemDedup: pure pieces (k-means, in-cluster similarity, exact cut-off) and one Beam run with the packaged
embedding model (slowish: the model load and CPU embedding dominate)."""
import random
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest

from pipelines.dedupe import semantic
from pipelines.dedupe.config import SemDedupConfig
from pipelines.dedupe.planted import make_variant
from pipelines.sources.readers import read_texts
from tests.conftest import needs_shared, stage_and_dedupe

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = SHARED / "corpora"


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_kmeans_deterministic_and_separates_blobs():
    rng = np.random.default_rng(0)
    centers = _unit(rng.normal(size=(3, 16)))
    x = _unit(np.concatenate([c + 0.05 * rng.normal(size=(50, 16)) for c in centers]))
    c1 = semantic.fit_kmeans(x, 3, seed=4)
    c2 = semantic.fit_kmeans(x, 3, seed=4)
    assert np.array_equal(c1, c2)
    idx, sim = semantic.assign_clusters(x.astype(np.float32), c1)
    assert len(set(idx[:50])) == len(set(idx[50:100])) == len(set(idx[100:])) == 1
    assert len(set(idx)) == 3 and (sim > 0.9).all()


def test_max_prior_similarity_matches_brute_force():
    rng = np.random.default_rng(1)
    e = _unit(rng.normal(size=(2500, 8))).astype(np.float32)  # > one block
    m, arg = semantic.max_prior_similarity(e)
    assert m[0] == -1 and arg[0] == -1
    q = semantic.quantize(e).astype(np.int64)  # integer arithmetic (numpy's own loops, no BLAS): the exact reference
    for i in (1, 2, 1023, 1024, 1025, 2499):
        exact = q[:i] @ q[i]
        assert arg[i] == int(np.argmax(exact)) and m[i] == float(exact.max()) / 32767.0**2
        assert m[i] == pytest.approx(float((e[:i] @ e[i]).max()), abs=1e-4)  # the quantization costs < 1e-4


def test_exact_cutoff_and_counts():
    assert semantic.n_to_remove(120, 0.8) == 24
    assert semantic.n_to_remove(7, 0.8) == 1
    assert semantic.n_to_remove(10, 1.0) == 0
    keys = sorted(semantic.score_key(random.Random(i).random(), i) for i in range(100))
    # window keys[30:60] with 30 below it; keep 45 -> the 45th smallest key
    assert semantic.exact_cutoff(keys[30:60], 30, 45) == keys[44]
    assert semantic.exact_cutoff(keys[30:60], 30, 20) is None
    assert semantic.choose_n_clusters(5000, 400, SemDedupConfig()) == 5
    assert semantic.choose_n_clusters(10 ** 9, 400, SemDedupConfig()) == 100


@needs_shared("corpora")
@needs_shared("tokenizers")
def test_semdedup_keep_fraction_and_planted_paraphrases(tmp_path, tokenizer_path):
    base = read_texts(CORPORA / "c4_en.jsonl.zst", limit=90, min_chars=400)
    rng = random.Random(5)
    near = [make_variant(base[i], "insert_delete", 0.3, rng) for i in range(0, 30, 2)]  # 15 close copies
    texts = base + near
    docs = {"c4_en": [(f"c4-{i}", t) for i, t in enumerate(texts)]}
    dedupe = {"exact": False, "minhash": False,
              "semantic": {"keep_fraction": 0.8, "n_clusters": 3, "batch_size": 32}}
    _plan, rejects, ids = stage_and_dedupe(tmp_path, docs, dedupe, tokenizer_path)
    n = len(texts)
    assert len(rejects) == semantic.n_to_remove(n, 0.8) == 21  # the keep fraction, exactly
    index = {uid: int(i.split("-")[1]) for uid, i in ids.items()}
    removed = {index[r.uid] for r in rejects}
    for r in rejects:
        assert (r.stage, r.reason) == ("semantic_dedupe", "semantic_duplicate")
        assert index[r.keeper_uid] not in removed and r.keeper_id == ids[r.keeper_uid]  # a kept document
        assert -1.0 <= r.value <= 1.0 + 1e-6
    # every planted close-copy pair lost a member; when exactly one, it points at the other
    # (both may go when a third kept document is at least as close: SemDeDup keeps one per group)
    for k, i in enumerate(range(0, 30, 2)):
        a, b = i, 90 + k
        assert a in removed or b in removed, (a, b)
        if (a in removed) != (b in removed):
            r = next(r for r in rejects if index[r.uid] in (a, b))
            assert index[r.keeper_uid] == (b if index[r.uid] == a else a) and r.value > 0.95
    # one global cut-off (reported as SemDeDup's eps) and every removal is above it
    eps = {r.detail.split("eps=")[1] for r in rejects}
    assert len(eps) == 1
    assert all(r.value >= 1.0 - float(next(iter(eps))) - 1e-6 for r in rejects)


@pytest.mark.parametrize("keep", [0.8, 0.37, 1.0])
def test_rank_cutoff_is_exact_beyond_the_quantile_resolution(keep):
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.engine.dedupe.semantic import RankCutoff

    rng = random.Random(2)
    # 30k keys with heavy ties in M (broken by the uid hash), far more than the 1001 quantiles
    keys = [semantic.score_key(round(rng.random(), 2), uid) for uid in range(30_000)]
    n_remove = semantic.n_to_remove(len(keys), keep)
    expected = None if n_remove == 0 else sorted(keys)[len(keys) - n_remove - 1]
    for buckets in (1, 7):  # the result does not depend on how the keys are bucketed
        with beam.Pipeline() as p:
            cut = p | beam.Create(keys) | RankCutoff(keep, buckets)
            assert_that(cut, equal_to([(0, expected)]))  # (ONE, cut-off): a keyed global value


@needs_shared("corpora")
@needs_shared("tokenizers")
def test_graph_equals_the_in_memory_policy(tmp_path, tokenizer_path):
    """The Beam graph removes exactly what semantic.removals_in_memory removes from the staged embeddings
    (same keepers, same M), so benchmarks that score embedders with the function score the build."""
    from pipelines.engine.staging import Part

    base = read_texts(CORPORA / "c4_en.jsonl.zst", limit=150, min_chars=200)
    rng = random.Random(9)
    texts = base + [make_variant(base[i], "typos", 0.5, rng) for i in range(0, 60, 3)]
    cfg = {"keep_fraction": 0.7, "n_clusters": 4, "sample_size": 120}
    plan, rejects, _ids = stage_and_dedupe(tmp_path, {"c4_en": [(f"c4-{i}", t) for i, t in enumerate(texts)]},
                                           {"exact": False, "minhash": False, "semantic": cfg}, tokenizer_path)
    z = [Part.of(plan, t.source, t.part).read_emb() for t in plan.tasks]
    uids = np.concatenate([x.uid for x in z])
    emb = np.concatenate([x.emb for x in z])
    expected = semantic.removals_in_memory(uids, emb, SemDedupConfig(**cfg))
    assert len(expected) == semantic.n_to_remove(len(texts), 0.7)
    assert {r.uid: r.keeper_uid for r in rejects} == {u: k for u, (k, _m) in expected.items()}
    assert all(r.value == pytest.approx(expected[r.uid][1], abs=1e-6) for r in rejects)


def test_in_memory_policy_on_tiny_inputs():
    rng = np.random.default_rng(0)
    cfg = SemDedupConfig(n_clusters=3, keep_fraction=0.5)
    for n in range(0, 6):
        e = _unit(rng.normal(size=(n, 8))).astype(np.float32) if n else np.zeros((0, 8), np.float32)
        out = semantic.removals_in_memory(list(range(n)), e, cfg)
        assert len(out) == (semantic.n_to_remove(n, 0.5) if n >= 2 else 0)
        assert all(k not in out for k, _m in out.values())  # keepers are kept


@needs_shared("corpora")
def test_static_embedder_batches_and_devices():
    from pipelines.dedupe.embed import EMBED_DIM, load_embedder

    texts = read_texts(CORPORA / "c4_en.jsonl.zst", limit=40, min_chars=50) + ["", "   ", "!!"]
    static = load_embedder("static-minilm-l6", "cpu")
    e = static.embed(texts)
    assert e.shape == (len(texts), EMBED_DIM) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e[:40], axis=1), 1.0, atol=1e-5)
    assert not e[-3].any()  # no word piece: a zero vector (similar to nothing)
    one_by_one = np.concatenate([static.embed([t]) for t in texts])
    assert np.allclose(e, one_by_one, atol=1e-6)
    assert np.array_equal(e, load_embedder("static-minilm-l6", "cpu").embed(texts))  # deterministic
    # a close copy is nearer to its original than to other documents
    near = static.embed([make_variant(texts[0], "typos", 0.3, random.Random(1))])[0]
    sims = e[:40] @ near
    assert int(np.argmax(sims)) == 0
    if torch_cuda():
        g = load_embedder("static-minilm-l6", "cuda").embed(texts)
        assert np.allclose(g, e, atol=1e-4)
    with pytest.raises(RuntimeError if not torch_cuda() else ValueError):
        load_embedder("static-minilm-l6" if not torch_cuda() else "nope", "cuda")


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@needs_shared("corpora")
def test_transformer_embedder_is_sentence_transformers_encode():
    """Our batched MiniLM path (length-sorted batches, own pooling; fp16 + SDPA on a GPU) gives what
    sentence-transformers' encode gives for the same packaged model, so the GPU path is that model."""
    import torch
    from sentence_transformers import SentenceTransformer

    from pipelines.dedupe.embed import MiniLM, _package_dir
    from pipelines.dedupe.wordpiece import PiecePool

    texts = read_texts(CORPORA / "c4_en.jsonl.zst", limit=24, min_chars=50) + ["", "short one", "x " * 3000]
    ours = MiniLM("cpu", threads=1)
    got = ours.embed(texts, batch_size=7)
    st = SentenceTransformer(str(_package_dir()), device="cpu")
    want = st.encode([t[:2000] for t in texts], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    assert st.max_seq_length == MiniLM.MAX_PIECES
    assert np.abs(got - want).max() < 2e-5
    assert np.allclose(np.concatenate([ours.embed([t]) for t in texts[:5]]), got[:5], atol=2e-5)
    # the GPU's overlapped loop (next chunk cut while this one runs), here on the CPU in small chunks
    out = torch.empty((len(texts), 384))
    ours._overlapped(texts, bs=4, step=10, out=out)
    assert np.allclose(out.numpy(), got, atol=2e-5)
    ours.pieces = PiecePool(_package_dir() / "tokenizer.json", MiniLM.MAX_PIECES, True, processes=2)  # the GPU's
    try:
        out = torch.empty((len(texts), 384))
        ours._overlapped(texts, bs=4, step=10, out=out)
    finally:
        ours.pieces.close()
    assert np.allclose(out.numpy(), got, atol=2e-5)
    if torch_cuda():
        g = MiniLM("cuda").embed(texts)
        assert np.abs(g - want).max() < 2e-3 and (np.sum(g * want, axis=1) > 0.9999).all()
        assert np.abs(MiniLM("cuda", precision="fp32").embed(texts) - want).max() < 2e-5  # the CPU's arithmetic


