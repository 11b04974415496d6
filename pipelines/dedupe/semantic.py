"""SemDedup (Abbas et al. 2023) pure logic: embeddings, spherical k-means, in-cluster similarity, cut-off.

How the keep fraction is hit: inside each k-means cluster, documents are ordered SemDeDup's "keep hard"
way (farthest from the centroid first, ties by uid) and each gets M = its highest cosine similarity to an
*earlier* document of the cluster (the first one gets -1 and is always kept). Removing every document
whose M exceeds a global cut-off removes near-duplicates while keeping one per group; choosing the cut-off
as the global quantile of M at ``1 - keep_fraction`` hits the keep fraction exactly instead of guessing
SemDeDup's ``eps`` (the implied eps = 1 - cut-off is reported). Keys are (M rounded to 1e-6, a hash of the
uid) so they are unique and the quantile is an exact rank, not a tie.

Every similarity is exact, so every machine and runner decides the same (issue 31): BLAS rounds a float32
dot product differently by CPU kernel and thread count (OpenBLAS's AVX2 kernels with one thread, as Dask's
nanny sets it, and with two, as the local runner's workers have it, gave 15 different removals out of 5,770
on 28,850 c4_en documents). So vectors are scaled to integers (``quantize``: round(x * 32767), 1.5e-5 per
component) held in float64, where their products and every sum of 384 of them are integers below 2**39,
exact under any summation order, FMA or blocking; a cosine is that integer over 32767**2 (one correctly
rounded division). k-means sums quantized rows the same exact way.

The embedders (a static model distilled from the packaged all-MiniLM-L6-v2, the default, and the
transformer itself) are in ``pipelines.dedupe.embed``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import xxhash

from pipelines.dedupe.config import SemDedupConfig

_BLOCK = 1024  # rows per similarity block: bounds the (block x cluster) matrix
_Q = 32767.0  # quantization scale: |component| <= 1, so products <= 2**30 and 384-term sums < 2**39 (exact)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): the embedders' output and the centroids."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def quantize(x: np.ndarray) -> np.ndarray:
    """Rows of (near-)unit vectors as integer-valued float64: ``cosines`` of these are exact (module doc)."""
    return np.rint(np.asarray(x, dtype=np.float64) * _Q)


def cosines(a_q: np.ndarray, b_q: np.ndarray) -> np.ndarray:
    """Cosine similarity of every quantized row of ``a_q`` with every one of ``b_q``: an exact integer matrix
    product (any BLAS kernel, thread count or block gives the same bits) over one division."""
    return (a_q @ b_q.T) / (_Q * _Q)


def choose_n_clusters(n_docs: int, sample_len: int, cfg: SemDedupConfig) -> int:
    if cfg.n_clusters is not None:
        k = cfg.n_clusters
    else:
        k = math.ceil(n_docs / cfg.docs_per_cluster)
    return int(max(1, min(k, max(1, sample_len // 4), max(1, sample_len))))


def fit_kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Spherical k-means (cosine) with greedy k-means++ seeding; the same centroids for a given seed and row
    order on any machine (exact similarities and sums: module doc)."""
    xq = quantize(l2_normalize(np.asarray(x, dtype=np.float32)))
    n = len(xq)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    first = int(rng.integers(n))
    chosen = [first]
    d2 = np.maximum(0.0, 2.0 - 2.0 * cosines(xq, xq[first:first + 1])[:, 0])
    # greedy k-means++ (as scikit-learn: best of a few draws per centre) while k is small; plain
    # k-means++ beyond, where the extra draws would dominate the fit's O(k * n * d) cost
    trials = 2 + int(math.log(k)) if k <= 256 else 1
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            cand = rng.integers(n, size=trials)
        else:
            cand = rng.choice(n, size=trials, p=d2 / total)
        pots = np.minimum(d2[None, :], np.maximum(0.0, 2.0 - 2.0 * cosines(xq[cand], xq)))
        best = int(np.argmin(pots.sum(axis=1)))
        chosen.append(int(cand[best]))
        d2 = pots[best]
    cq = xq[chosen]
    assign = None
    for _ in range(iters):
        new = np.argmax(xq @ cq.T, axis=1)  # exact integers: ties resolve to the lower centroid everywhere
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        sums = np.zeros_like(cq)
        np.add.at(sums, assign, xq)  # integer sums below 2**53: exact in any order
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = cq[empty]  # keep an emptied centroid where it was
        cq = quantize(l2_normalize(sums))
    return (cq / _Q).astype(np.float32)


def assign_clusters(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster index, cosine similarity to its centroid) per row; exact, so any batching gives the same."""
    sims = cosines(quantize(x), quantize(centroids))
    idx = np.argmax(sims, axis=1)
    return idx, sims[np.arange(len(x)), idx]


def tiebreak(uid: int, seed: int = 0) -> int:
    """Pseudo-random but fixed order among equal similarities; 63 bits so Beam's int coder takes it."""
    return xxhash.xxh3_64_intdigest(int(uid).to_bytes(8, "little", signed=True), seed=seed) >> 1


def cluster_order(uids: Sequence[int], centroid_sims: Sequence[float]) -> list[int]:
    """Keep-hard processing order: farthest from the centroid first (lowest similarity), then uid."""
    return sorted(range(len(uids)), key=lambda i: (round(float(centroid_sims[i]), 6), uids[i]))


def max_prior_similarity(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows in processing order: M[i] = max cosine similarity to rows j < i, and that j (-1 for row 0)."""
    eq = quantize(e)
    n = len(eq)
    m = np.full(n, -1.0, dtype=np.float64)
    arg = np.full(n, -1, dtype=np.int64)
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        s = cosines(eq[start:stop], eq[:stop])  # block x stop
        # mask j >= i (only earlier rows count)
        rows = np.arange(start, stop)[:, None]
        s[np.arange(stop)[None, :] >= rows] = -np.inf
        if start == 0:
            s[0, :] = -np.inf
        j = np.argmax(s, axis=1)
        best = s[np.arange(stop - start), j]
        ok = np.isfinite(best)
        m[start:stop][ok] = best[ok]
        arg[start:stop][ok] = j[ok]
    return m, arg


def score_key(m: float, uid: int, seed: int = 0) -> tuple[float, int]:
    """Unique, totally ordered removal key: larger = more redundant."""
    return (round(float(m), 6), tiebreak(uid, seed))


def n_to_remove(n_docs: int, keep_fraction: float) -> int:
    return n_docs - int(math.ceil(n_docs * keep_fraction - 1e-9))


def exact_cutoff(keys_sorted_window: Sequence, below: int, keep: int):
    """The ``keep``-th smallest key overall, given the sorted keys of a window and how many keys lie
    below the window; None if that rank is not inside the window."""
    r = keep - below - 1
    if 0 <= r < len(keys_sorted_window):
        return keys_sorted_window[r]
    return None


def most_similar_kept(e_removed: np.ndarray, e_kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into the kept rows and cosine similarity of each removed row's nearest kept row."""
    rq, kq = quantize(e_removed), quantize(e_kept)
    idx = np.empty(len(rq), dtype=np.int64)
    sim = np.empty(len(rq), dtype=np.float64)
    for start in range(0, len(rq), _BLOCK):
        s = cosines(rq[start:start + _BLOCK], kq)
        j = np.argmax(s, axis=1)
        idx[start:start + _BLOCK] = j
        sim[start:start + _BLOCK] = s[np.arange(len(j)), j]
    return idx, sim


def sample_key(uid: int, seed: int = 0) -> int:
    """The k-means sample is the ``sample_size`` documents with the largest key (independent of order and
    of how the documents are spread over workers)."""
    return tiebreak(uid, seed)


def scores_in_memory(uids: Sequence[int], emb: np.ndarray, cfg: SemDedupConfig):
    """SemDedup's scores on one machine: ([(rows of a cluster in scan order, their M)], the cut-off key), the
    cut-off None when nothing is removed. ``removals_in_memory`` removes every key above the cut-off;
    benchmarks read how far from the cut-off two embedders' removals differ."""
    uids = [int(u) for u in uids]
    n = len(uids)
    remove = n_to_remove(n, cfg.keep_fraction)
    if n < 2 or remove == 0:
        return [], None
    emb = np.asarray(emb, dtype=np.float32)
    sample = sorted(range(n), key=lambda i: sample_key(uids[i], cfg.seed))[-cfg.sample_size:]
    sample = sorted(sample, key=lambda i: (uids[i], emb[i].tobytes()))
    x = emb[sample]
    centroids = fit_kmeans(x, choose_n_clusters(n, len(x), cfg), cfg.seed, cfg.kmeans_iters)
    idx, csim = assign_clusters(emb, centroids)
    scored = []
    for c in np.unique(idx).tolist():
        rows = sorted(np.flatnonzero(idx == c).tolist(), key=lambda i: uids[i])
        order = [rows[i] for i in cluster_order([uids[i] for i in rows], [csim[i] for i in rows])]
        m, _arg = max_prior_similarity(emb[order])
        scored.append((order, m))
    keys = sorted(score_key(mi, uids[i], cfg.seed) for order, m in scored for i, mi in zip(order, m))
    return scored, keys[n - remove - 1]


def removals_in_memory(uids: Sequence[int], emb: np.ndarray, cfg: SemDedupConfig) -> dict[int, tuple[int, float]]:
    """The whole SemDedup policy on one machine: uid -> (keeper uid, M) for every removed document.

    Exactly what the Beam graph (``pipelines.engine.dedupe.semantic.SemanticDuplicates``) computes, written as one
    function: benchmarks compare embedders with it and tests hold the graph to it. Any size is fine,
    0 and 1 included (nothing is removed)."""
    scored, cutoff = scores_in_memory(uids, emb, cfg)
    uids = [int(u) for u in uids]
    emb = np.asarray(emb, dtype=np.float32)
    out = {}
    for order, m in scored:
        gone = [k for k, (i, mi) in enumerate(zip(order, m)) if score_key(mi, uids[i], cfg.seed) > cutoff and mi > -1.0]
        if not gone:
            continue
        kept = [k for k in range(len(order)) if k not in set(gone)]
        e = emb[order]
        j, _sim = most_similar_kept(e[gone], e[kept])
        for k, jj in zip(gone, j.tolist()):
            out[uids[order[k]]] = (uids[order[kept[jj]]], float(m[k]))
    return out
