"""SemDedup: pure pieces (k-means, in-cluster similarity, exact cut-off) and one Beam run with the packaged
embedding model (slowish: the model load and CPU embedding dominate)."""
import random
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest

from pipelines.dedupe import semantic
from pipelines.dedupe.config import SemDedupConfig
from pipelines.dedupe.planted import load_texts, make_variant
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
    for i in (1, 2, 1023, 1024, 1025, 2499):
        s = e[:i] @ e[i]
        assert arg[i] == int(np.argmax(s)) and m[i] == pytest.approx(float(s.max()), abs=1e-5)


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
    base = load_texts(CORPORA / "c4_en.jsonl.zst", limit=90, min_chars=400)
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

    from pipelines.dedupe.policy import RankCutoff

    rng = random.Random(2)
    # 30k keys with heavy ties in M (broken by the uid hash), far more than the 1001 quantiles
    keys = [semantic.score_key(round(rng.random(), 2), uid) for uid in range(30_000)]
    n_remove = semantic.n_to_remove(len(keys), keep)
    expected = None if n_remove == 0 else sorted(keys)[len(keys) - n_remove - 1]
    with beam.Pipeline() as p:
        cut = p | beam.Create(keys) | RankCutoff(keep)
        assert_that(cut, equal_to([expected]))
