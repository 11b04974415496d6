"""SemDedup in Beam: k-means over the survivors' embeddings, then per cluster the documents within the cosine
threshold of a kept one are removed, with a global rank cutoff where a keep fraction is asked for."""
from __future__ import annotations

from collections import defaultdict

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.combiners import CountCombineFn, SingleInputTupleCombineFn, TopCombineFn
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from pipelines.dedupe import semantic
from pipelines.dedupe.embed import EMBED_DIM
from pipelines.engine.dedupe.keyed import ONE, CombineToOne, fan_out, spread
from pipelines.engine.dedupe.shared import FuzzyStage, num_buckets, one_process_shuffles
from pipelines.engine.plan import BuildPlan
from pipelines.engine.staging import EMB, Part, staged_rows
from pipelines.records import Removal

SEM_NS = "semantic_dedupe"


_QUANTILES = 1001


def _embeddings(item, plan: BuildPlan, sources: frozenset, staged: bool):
    """(summary, removed uids) -> (uid, embedding) of the part's survivors: the float32 bytes, or with
    ``staged`` a (source, part, row) reference into the part's staged ``emb.npz`` (``_vectors`` reads either).
    Why references on the local runner: each embedding (1.5 KB) crosses two shuffles, which its driver holds
    at their barriers (``one_process_shuffles``)."""
    summary, gone = item
    if summary.source not in sources or not summary.docs:
        return
    emb = Part.of(plan, summary.source, summary.part).read_emb()
    for row, uid in enumerate(emb.uid.tolist()):
        if uid not in gone:
            yield uid, (summary.source, summary.part, row) if staged else emb.emb[row].tobytes()


def _vectors(es, plan) -> np.ndarray:
    """float32 [n, 384] from what ``_embeddings`` gave (bytes, or references read from the staged emb.npz), in
    the given order."""
    out = np.empty((len(es), EMBED_DIM), dtype=np.float32)
    refs = [(i, e) for i, e in enumerate(es) if not isinstance(e, bytes)]
    for i, e in enumerate(es):
        if isinstance(e, bytes):
            out[i] = np.frombuffer(e, dtype=np.float32)
    for (i, _e), rows in zip(refs, staged_rows(plan, EMB, [(*e, 1) for _i, e in refs])):
        out[i] = rows[0]
    return out


def _fit_centroids(sample, n_docs: int, cfg, plan=None):
    """None when there is nothing to cluster (a source filtered down to no document): the rest of the
    stage then sees no element and removes nothing."""
    if not sample:
        return None
    sample = sorted(sample)  # the top-n order is not part of TopCombineFn's contract; make the fit input canonical
    x = _vectors([e for _uid, e in sample], plan)
    k = semantic.choose_n_clusters(n_docs, len(x), cfg)
    Metrics.distribution(SEM_NS, "n_clusters").update(k)
    return semantic.fit_kmeans(x, k, cfg.seed, cfg.kmeans_iters)


def _fit(kv, cfg, plan=None):
    """(ONE, (document count, top-n sample)) -> (ONE, centroids), nothing when there is nothing to cluster."""
    _one, (n_docs, sample) = kv
    centroids = _fit_centroids(sample, n_docs, cfg, plan)
    if centroids is not None:
        yield ONE, centroids


def _assign_bucket(kv, plan=None):
    """(bucket, {embedded: [(uid, embedding)], c: [centroids]}) -> (cluster, (uid, embedding, similarity)) each.
    One batch per bucket: the similarities are exact, so the batch's make-up cannot change a bit of them."""
    _b, g = kv
    cs = list(g["c"])
    if not cs:
        return
    items = list(g["embedded"])
    if not items:
        return
    idx, sim = semantic.assign_clusters(_vectors([e for _uid, e in items], plan), cs[0])
    for (uid, e), i, s in zip(items, idx.tolist(), sim.tolist()):
        yield i, (uid, e, s)


def _scored_cluster(items, plan=None):
    """Cluster members in keep-hard order with their M and arg (index into that order)."""
    items = sorted(items, key=lambda t: t[0])
    order = semantic.cluster_order([t[0] for t in items], [t[2] for t in items])
    items = [items[i] for i in order]
    e = _vectors([t[1] for t in items], plan)
    m, arg = semantic.max_prior_similarity(e)
    return items, e, m, arg


def _cluster_keys(kv, seed: int, plan=None):
    _c, items = kv
    items, _e, m, _arg = _scored_cluster(items, plan)
    for t, mi in zip(items, m):
        yield semantic.score_key(mi, t[0], seed)


def _bracket(quantiles, n_docs: int, keep_fraction: float):
    """Quantile keys that surely bracket the key of rank ``keep`` (ApproximateQuantiles' rank error is
    below epsilon*N = about one quantile step; two steps either side leaves margin)."""
    remove = semantic.n_to_remove(n_docs, keep_fraction)
    if remove == 0 or not quantiles:
        return None
    keep = n_docs - remove
    pos = (keep / n_docs) * (len(quantiles) - 1)
    lo = quantiles[max(0, int(np.floor(pos)) - 2)]
    hi = quantiles[min(len(quantiles) - 1, int(np.ceil(pos)) + 2)]
    return lo, hi, keep, quantiles[int(round(pos))]


def _in_window(key, bracket):
    return bracket is not None and bracket[0] <= key <= bracket[1]


def _below_window(key, bracket):
    return bracket is not None and key < bracket[0]


def _cutoff(window, below: int, bracket):
    if bracket is None:
        return None  # nothing to remove
    exact = semantic.exact_cutoff(sorted(window), below, bracket[2])
    if exact is None:
        Metrics.counter(SEM_NS, "cutoff_from_approximate_quantile").inc()
        return bracket[3]
    return exact


def _key_bucket(key, buckets: int) -> int:
    return spread(key[1], buckets)  # a score key is (rounded M, uid hash)


def _bracket_of(kv, keep_fraction: float):
    _one, (n, quantiles) = kv
    return ONE, _bracket(quantiles, n, keep_fraction)


def _window_part(kv):
    """(bucket, {k: keys, br: [bracket]}) -> (ONE, (keys below the window, keys inside it, bracket))."""
    _b, g = kv
    brs = list(g["br"])
    if not brs:
        return
    br = brs[0]
    window, below = [], 0
    for key in g["k"]:
        if _in_window(key, br):
            window.append(key)
        elif _below_window(key, br):
            below += 1
    yield ONE, (below, window, br)


def _cutoff_of_parts(kv):
    _one, parts = kv
    parts = list(parts)
    window = [k for p in parts for k in p[1]]
    return ONE, _cutoff(window, sum(p[0] for p in parts), parts[0][2])


class _ClusterRemovals(beam.DoFn):
    def __init__(self, seed: int, plan=None):
        self.seed, self.plan = seed, plan
        self.removed = Metrics.counter(SEM_NS, "semantic_duplicates")

    def process(self, kv):
        """(bucket, {m: [(cluster, member)], cutoff: [cutoff]}) -> Removals of members scored above the cut-off,
        cluster by cluster."""
        _b, g = kv
        cutoffs = list(g["cutoff"])
        if not cutoffs or cutoffs[0] is None:
            return
        clusters = defaultdict(list)
        for c, item in g["m"]:
            clusters[c].append(item)
        for c in sorted(clusters):
            yield from self.cluster(clusters[c], cutoffs[0])

    def cluster(self, items, cutoff):
        items, e, m, _arg = _scored_cluster(items, self.plan)
        keys = [semantic.score_key(mi, t[0], self.seed) for t, mi in zip(items, m)]
        gone = [i for i, k in enumerate(keys) if k > cutoff and m[i] > -1.0]
        if not gone:
            return
        gone_set = set(gone)
        kept = [i for i in range(len(items)) if i not in gone_set]
        idx, _sim = semantic.most_similar_kept(e[gone], e[kept])
        for i, j in zip(gone, idx):
            keeper = items[kept[int(j)]][0]
            self.removed.inc()
            yield Removal(items[i][0], "semantic_dedupe", "semantic_duplicate", keeper, float(m[i]),
                          f"keeper_uid={keeper}; eps={1.0 - cutoff[0]:.6f}")


class RankCutoff(beam.PTransform):
    """PCollection of unique, ordered keys -> (ONE, the key of rank ceil(N * keep_fraction)), so that exactly
    N - that many keys lie above it (None when nothing is to be removed; no element for no key).

    ApproximateQuantiles brackets the rank (its error is below one quantile step); then only the keys
    inside the bracket (about 4 / 1000 of N) are collected and sorted, and the keys below it counted, so
    the cut-off is exact without any worker holding more than a bucket or the bracket. The bracket reaches
    the keys' buckets by a keyed join (``pipelines.engine.dedupe.keyed``), not a side input."""

    def __init__(self, keep_fraction: float, buckets: int = 1, label=None):
        super().__init__(label)
        self.keep_fraction = keep_fraction
        self.buckets = max(1, buckets)

    def expand(self, keys):
        b = self.buckets
        stats = keys | "CountAndQuantiles" >> CombineToOne(
            SingleInputTupleCombineFn(CountCombineFn(), ApproximateQuantilesCombineFn.create(num_quantiles=_QUANTILES)),
            lambda k, b=b: _key_bucket(k, b), b)  # keys are unique tuples: sorted as they are
        bracket = stats | "Bracket" >> beam.Map(_bracket_of, self.keep_fraction)
        windows = ({"k": keys | "KeyBuckets" >> beam.Map(lambda k, b=b: (_key_bucket(k, b), k)),
                    "br": bracket | "FanBracket" >> beam.FlatMap(fan_out, b)}
                   | "JoinBracket" >> beam.CoGroupByKey()
                   | "Window" >> beam.FlatMap(_window_part))
        return windows | "GroupWindows" >> beam.GroupByKey() | "Exact" >> beam.Map(_cutoff_of_parts)


def _uid_of(kv) -> int:
    return kv[0]


def _uid_bucket(kv, buckets: int) -> int:
    return spread(kv[0], buckets)


class SemanticDuplicates(beam.PTransform):
    """PCollection[(uid, float32 embedding bytes or a staged reference)] -> SemDedup Removals (``semantic.py``).

    deterministic sample (the ``sample_size`` largest uid hashes, TopCombineFn per bucket then merged) and the
    document count -> spherical k-means fitted once -> centroids joined to every embedding bucket ->
    GroupByKey by cluster -> per-document M -> exact global cut-off at the keep fraction, joined to every
    bucket of clusters -> per cluster, documents above the cut-off are removed, keeper = their most similar
    kept document of the cluster. Only keyed shuffles (``pipelines.engine.dedupe.keyed``): no side input, no global combiner."""

    def __init__(self, cfg, buckets: int = 1, plan=None, label=None):
        super().__init__(label)
        self.cfg = cfg
        self.buckets = max(1, buckets)
        self.plan = plan  # reads embeddings given as staged references (``_embeddings``)

    def expand(self, embedded):
        cfg, seed, b, plan = self.cfg, self.cfg.seed, self.buckets, self.plan
        by_uid = lambda kv, b=b: _uid_bucket(kv, b)
        # each global value is one combine (count and sample together, count and quantiles together) and each
        # join has the fewest inputs: on Beam's DaskRunner every CoGroupByKey input adds its partitions (tasks)
        centroids = (embedded
                     | "CountAndSample" >> CombineToOne(SingleInputTupleCombineFn(
                         CountCombineFn(), TopCombineFn(cfg.sample_size, key=lambda kv, s=seed: semantic.tiebreak(kv[0], s))),
                         by_uid, b, order=_uid_of)
                     | "FitKMeans" >> beam.FlatMap(_fit, cfg, plan))
        assigned = ({"embedded": embedded | "EmbBuckets" >> beam.Map(lambda kv, b=b: (_uid_bucket(kv, b), kv)),
                     "c": centroids | "FanCentroids" >> beam.FlatMap(fan_out, b)}
                    | "JoinCentroids" >> beam.CoGroupByKey()
                    | "Assign" >> beam.FlatMap(_assign_bucket, plan))
        keys = (assigned
                | "GroupByCluster" >> beam.GroupByKey()
                | "Keys" >> beam.FlatMap(_cluster_keys, seed, plan))
        cutoff = keys | "Cutoff" >> RankCutoff(cfg.keep_fraction, b)
        return ({"m": assigned | "ClusterBuckets" >> beam.Map(lambda ci, b=b: (spread(ci[0], b), ci)),
                 "cutoff": cutoff | "FanCutoff" >> beam.FlatMap(fan_out, b)}
                | "JoinCutoff" >> beam.CoGroupByKey()
                | "Remove" >> beam.ParDo(_ClusterRemovals(seed, plan)))


class SemanticDedupe(FuzzyStage):
    """(parts, removals so far) -> SemDedup Removals, per group of sources sharing SemDedup settings."""

    stage = "semantic"

    def removals(self, survivors, groups: dict) -> list:
        # one k-means and one keep fraction per source unless cross-source: sources sharing settings must
        # not remove each other's documents (MinHash separates them by scope inside the band keys)
        jobs = [(cfg, srcs) if self.plan.cross_source else (cfg, [s]) for cfg, srcs in groups.items() for s in
                ([None] if self.plan.cross_source else srcs)]
        staged = one_process_shuffles(survivors.pipeline)
        return [survivors
                | f"Embeddings{i}" >> beam.FlatMap(_embeddings, self.plan, frozenset(srcs), staged)
                | f"SemDedup{i}" >> SemanticDuplicates(cfg, num_buckets(self.plan), self.plan)
                for i, (cfg, srcs) in enumerate(jobs)]
