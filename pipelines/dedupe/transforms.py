"""The two composite dedupe transforms the build wires in: NearDedupe (MinHash-LSH) and SemanticDedupe.

Both take already exact-deduped ``Document``s and return only ``Reject``s (one per removed document);
the build joins them back by uid. Neither holds a corpus-sized object anywhere: every step is a
per-element DoFn or a GroupByKey keyed by something small (band key, group leader, node, cluster).
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines.dedupe import semantic
from pipelines.dedupe.components import ConnectedComponents
from pipelines.dedupe.config import MinHashConfig, SemDedupConfig
from pipelines.dedupe.minhash import SignatureSpec, Signer, band_keys, estimated_jaccard
from pipelines.schema import Document, Reject

NS = "near_dedupe"


# ---------------------------------------------------------------------------------------------------
# NearDedupe

class _Sign(beam.DoFn):
    """Batch of Documents -> (uid, (scope, ref, signature bytes)). The datasketch template is built once
    per worker in setup() from the pinned spec."""

    def __init__(self, spec: SignatureSpec, cross_source: bool):
        self.spec = spec
        self.cross_source = cross_source
        self.signed = Metrics.counter(NS, "signed_docs")
        self.no_words = Metrics.counter(NS, "docs_without_words")
        self.bytes = Metrics.counter(NS, "signed_bytes")

    def setup(self):
        self.signer = Signer(self.spec)

    def process(self, batch: list[Document]):
        for d in batch:
            sig = self.signer.signature(d.text)
            if sig is None:
                self.no_words.inc()
                continue
            self.signed.inc()
            self.bytes.inc(len(d.text))
            scope = "" if self.cross_source else d.source
            yield d.uid, (scope, (d.id, d.source, d.loc), sig.tobytes())


def _band_entries(kv, bands: int, rows: int):
    uid, (scope, _ref, sig) = kv
    arr = np.frombuffer(sig, dtype=np.uint32)
    for i, k in enumerate(band_keys(arr, bands, rows)):
        yield (scope, i, k), uid


class _BucketToLeader(beam.DoFn):
    """A band bucket with >= 2 members -> (member, leader) for each member; leader = smallest uid.

    Grouping candidate pairs by leader instead of emitting all pairs keeps the work linear in bucket size
    (the star-edge idea of text-dedup's Spark path)."""

    def __init__(self):
        self.sizes = Metrics.distribution(NS, "bucket_size")
        self.multi = Metrics.counter(NS, "colliding_buckets")

    def process(self, kv):
        # two passes over the (re-iterable, lazily paged on Dataflow) grouped values instead of a list:
        # a hot bucket is streamed, never materialized. A document lands in a bucket at most once (the
        # key includes the band index), so members need no dedupe.
        _key, uids = kv
        leader, n = None, 0
        for u in uids:
            n += 1
            if leader is None or u < leader:
                leader = u
        if n < 2:
            return
        self.multi.inc()
        self.sizes.update(n)
        for u in uids:
            yield u, leader


def _route_signature(kv):
    """(uid, {sig: [...], leader: [...]}) -> (leader, (uid, ref, sig)) for each distinct leader."""
    uid, g = kv
    leaders = sorted(set(g["leader"]))
    if not leaders:
        return
    sigs = list(g["sig"])
    _scope, ref, sig = sigs[0]
    for leader in leaders:
        yield leader, (uid, ref, sig)


class _VerifyGroup(beam.DoFn):
    """All documents that share a band with a leader: verify each against up to ``max_leaders`` earlier
    representatives with the signature Jaccard estimate; only verified pairs become edges.

    Output: (u, v, estimate, ref_u, ref_v) with v < u."""

    def __init__(self, verify_threshold: float, max_leaders: int):
        self.vt = verify_threshold
        self.max_leaders = max_leaders
        self.candidates = Metrics.counter(NS, "candidate_pairs_checked")
        self.verified = Metrics.counter(NS, "verified_edges")
        self.rejected = Metrics.counter(NS, "rejected_candidates")

    def process(self, kv):
        _leader, items = kv
        members = {}
        for uid, ref, sig in items:
            members[uid] = (ref, sig)
        if len(members) < 2:
            return
        order = sorted(members)
        reps: list[tuple[int, tuple, np.ndarray]] = []
        for uid in order:
            ref, sig_b = members[uid]
            sig = np.frombuffer(sig_b, dtype=np.uint32)
            linked = False
            for r_uid, r_ref, r_sig in reps:
                self.candidates.inc()
                j = estimated_jaccard(sig, r_sig)
                if j >= self.vt:
                    self.verified.inc()
                    yield uid, r_uid, j, ref, r_ref
                    linked = True
                    break
            if not linked:
                if reps:
                    self.rejected.inc()
                if len(reps) < self.max_leaders:
                    reps.append((uid, ref, sig))


def _to_reject(kv):
    """(keeper uid, {removed: [(uid, ref, j)], ref: [keeper ref]}) -> Rejects."""
    keeper, g = kv
    keeper_refs = list(g["ref"])
    keeper_id = keeper_refs[0][0]
    for uid, (doc_id, source, loc), j in sorted(g["removed"]):
        yield Reject(uid, doc_id, source, "near_dedupe", "near_duplicate", loc, float(j), keeper_id,
                     f"keeper_uid={keeper}")


def _removed_by_keeper(kv):
    uid, g = kv
    roots = list(g["root"])
    if not roots:
        return
    ref = list(g["ref"])[0]
    j = max(g["j"])
    yield roots[0], (uid, ref, j)


class NearDedupe(beam.PTransform):
    """PCollection[Document] (exact-deduped) -> PCollection[Reject] for near-duplicates.

    Signatures (datasketch, pinned spec) -> band keys -> GroupByKey per band bucket -> candidate groups
    per leader -> verification against the signature estimate -> connected components in Beam
    (large-star/small-star) -> every non-minimal uid of a component is removed, ``duplicate_of`` = id of
    the component's smallest uid, ``value`` = its highest verified Jaccard estimate to a neighbour.
    Scope: within each source unless ``cross_source`` (then the smallest uid, i.e. the earliest source in
    registry order, keeps)."""

    def __init__(self, cfg: MinHashConfig, cross_source: bool = False, label=None):
        super().__init__(label)
        self.cfg = cfg
        self.cross_source = cross_source
        self.spec = SignatureSpec.from_config(cfg)

    def expand(self, docs):
        spec = self.spec
        signed = (docs
                  | "Batch" >> beam.BatchElements(min_batch_size=16, max_batch_size=256)
                  | "Sign" >> beam.ParDo(_Sign(spec, self.cross_source)))
        membership = (signed
                      | "Bands" >> beam.FlatMap(_band_entries, spec.bands, spec.rows)
                      | "GroupBands" >> beam.GroupByKey()
                      | "BucketToLeader" >> beam.ParDo(_BucketToLeader()))
        edges = ({"sig": signed, "leader": membership}
                 | "JoinSignatures" >> beam.CoGroupByKey()
                 | "RouteToLeader" >> beam.FlatMap(_route_signature)
                 | "GroupByLeader" >> beam.GroupByKey()
                 | "Verify" >> beam.ParDo(_VerifyGroup(spec.verify_threshold, self.cfg.max_leaders)))
        labels = (edges
                  | "EdgePairs" >> beam.Map(lambda e: (e[0], e[1]))
                  | "Components" >> ConnectedComponents(self.cfg.cc_rounds, self.cfg.max_residual_edges))
        best_j = (edges
                  | "EdgeJ" >> beam.FlatMap(lambda e: [(e[0], e[2]), (e[1], e[2])])
                  | "MaxJ" >> beam.CombinePerKey(max))
        refs = (edges
                | "EdgeRefs" >> beam.FlatMap(lambda e: [(e[0], e[3]), (e[1], e[4])])
                | "OneRef" >> beam.CombinePerKey(min))
        removed = ({"root": labels, "j": best_j, "ref": refs}
                   | "JoinRemoved" >> beam.CoGroupByKey()
                   | "ByKeeper" >> beam.FlatMap(_removed_by_keeper))
        return ({"removed": removed, "ref": refs}
                | "JoinKeeper" >> beam.CoGroupByKey()
                | "Rejects" >> beam.FlatMap(_to_reject).with_output_types(Reject))




# ---------------------------------------------------------------------------------------------------
# SemanticDedupe

SEM_NS = "semantic_dedupe"
_QUANTILES = 1001


class _Embed(beam.DoFn):
    """Batch of Documents -> (uid, (ref, float32 embedding bytes)); the model is loaded once per worker."""

    def __init__(self, cfg: SemDedupConfig):
        self.cfg = cfg
        self.embedded = Metrics.counter(SEM_NS, "embedded_docs")

    def setup(self):
        self.model = semantic.load_embedder("cpu")

    def process(self, batch: list[Document]):
        vecs = semantic.embed(self.model, [d.text for d in batch], self.cfg.batch_size, self.cfg.max_chars)
        for d, v in zip(batch, vecs):
            self.embedded.inc()
            yield d.uid, ((d.id, d.source, d.loc), v.tobytes())


def _fit_centroids(sample, n_docs: int, cfg: SemDedupConfig):
    sample = sorted(sample)  # Top.Of order is not part of its contract; make the fit input canonical
    x = np.stack([np.frombuffer(e, dtype=np.float32) for _uid, (_ref, e) in sample])
    k = semantic.choose_n_clusters(n_docs, len(x), cfg)
    Metrics.distribution(SEM_NS, "n_clusters").update(k)
    return semantic.fit_kmeans(x, k, cfg.seed, cfg.kmeans_iters)


def _assign(kv, centroids):
    uid, (ref, e) = kv
    v = np.frombuffer(e, dtype=np.float32)[None, :]
    idx, sim = semantic.assign_clusters(v, centroids)
    return int(idx[0]), (uid, ref, e, float(sim[0]))


def _scored_cluster(items):
    """Cluster members in keep-hard order with their M and arg (index into that order)."""
    items = sorted(items, key=lambda t: t[0])
    uids = [t[0] for t in items]
    order = semantic.cluster_order(uids, [t[3] for t in items])
    items = [items[i] for i in order]
    e = np.stack([np.frombuffer(t[2], dtype=np.float32) for t in items])
    m, arg = semantic.max_prior_similarity(e)
    return items, e, m, arg


def _cluster_keys(kv, seed: int):
    _c, items = kv
    items, _e, m, _arg = _scored_cluster(items)
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


class _ClusterRemovals(beam.DoFn):
    def __init__(self, seed: int):
        self.seed = seed
        self.removed = Metrics.counter(SEM_NS, "semantic_duplicates")

    def process(self, kv, cutoff):
        if cutoff is None:
            return
        _c, items = kv
        items, e, m, _arg = _scored_cluster(items)
        keys = [semantic.score_key(mi, t[0], self.seed) for t, mi in zip(items, m)]
        gone = [i for i, k in enumerate(keys) if k > cutoff and m[i] > -1.0]
        if not gone:
            return
        gone_set = set(gone)
        kept = [i for i in range(len(items)) if i not in gone_set]
        idx, _sim = semantic.most_similar_kept(e[gone], e[kept])
        for i, j in zip(gone, idx):
            uid, (doc_id, source, loc), _e, _s = items[i]
            keeper = items[kept[int(j)]]
            self.removed.inc()
            yield Reject(uid, doc_id, source, "semantic_dedupe", "semantic_duplicate", loc, float(m[i]),
                         keeper[1][0], f"keeper_uid={keeper[0]}; eps={1.0 - cutoff[0]:.6f}")


class RankCutoff(beam.PTransform):
    """PCollection of unique, ordered keys -> singleton: the key of rank ceil(N * keep_fraction), so that
    exactly N - that many keys lie above it (None when nothing is to be removed).

    ApproximateQuantiles brackets the rank (its error is below one quantile step); then only the keys
    inside the bracket (about 4 / 1000 of N) are collected and sorted, and the keys below it counted, so
    the cut-off is exact without any worker holding more than the bracket."""

    def __init__(self, keep_fraction: float, label=None):
        super().__init__(label)
        self.keep_fraction = keep_fraction

    def expand(self, keys):
        n = keys | "Count" >> beam.combiners.Count.Globally()
        bracket = (keys
                   | "Quantiles" >> beam.transforms.stats.ApproximateQuantiles.Globally(_QUANTILES)
                   | "Bracket" >> beam.Map(_bracket, beam.pvalue.AsSingleton(n), self.keep_fraction))
        br = beam.pvalue.AsSingleton(bracket)
        below = (keys
                 | "BelowWindow" >> beam.Filter(_below_window, br)
                 | "CountBelow" >> beam.combiners.Count.Globally())
        window = (keys
                  | "InWindow" >> beam.Filter(_in_window, br)
                  | "Window" >> beam.combiners.ToList())
        return window | "Exact" >> beam.Map(_cutoff, beam.pvalue.AsSingleton(below), br)


class SemanticDedupe(beam.PTransform):
    """PCollection[Document] -> PCollection[Reject] for SemDedup removals (see pipelines/dedupe/semantic.py).

    embeddings (model loaded in DoFn.setup, BatchElements) -> deterministic sample (Top.Of by a uid hash,
    bounded by sample_size) -> spherical k-means fitted once, passed as a side input -> GroupByKey by
    cluster -> per-document M -> exact global cut-off at the keep fraction (ApproximateQuantiles brackets
    the rank, then only the keys inside the bracket are sorted) -> per cluster, documents above the cut-off
    are removed with duplicate_of = their most similar kept document of the cluster."""

    def __init__(self, cfg: SemDedupConfig, label=None):
        super().__init__(label)
        self.cfg = cfg

    def expand(self, docs):
        cfg = self.cfg
        seed = cfg.seed
        embedded = (docs
                    | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=cfg.batch_size)
                    | "Embed" >> beam.ParDo(_Embed(cfg)))
        n_docs = embedded | "CountDocs" >> beam.combiners.Count.Globally()
        sample = embedded | "Sample" >> beam.combiners.Top.Of(
            cfg.sample_size, key=lambda kv: semantic.tiebreak(kv[0], seed))
        centroids = sample | "FitKMeans" >> beam.Map(_fit_centroids, beam.pvalue.AsSingleton(n_docs), cfg)
        clusters = (embedded
                    | "Assign" >> beam.Map(_assign, beam.pvalue.AsSingleton(centroids))
                    | "GroupByCluster" >> beam.GroupByKey())
        keys = clusters | "Keys" >> beam.FlatMap(_cluster_keys, seed)
        cutoff = keys | "Cutoff" >> RankCutoff(cfg.keep_fraction)
        return clusters | "Remove" >> beam.ParDo(
            _ClusterRemovals(seed), beam.pvalue.AsSingleton(cutoff)).with_output_types(Reject)
