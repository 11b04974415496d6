"""The dedupe policy in Beam: exact -> near (MinHash-LSH) -> semantic, each on the survivors of the last.

Every stage has one shape: (processed parts, removals so far) -> removals. A part's documents were hashed,
signed and embedded where they were read (``pipelines.process``) and those compact keys wait in the part's
staging folder; here only keys travel: 32-byte exact records and 16-byte band records grouped in
buckets (one element per (part, bucket), not per document), candidate pairs, the signatures of
candidates only, and the embeddings of the SemDedup sources. Nothing is collected on one worker beyond a
bucket, a candidate group, a component's edges or a k-means cluster.

Priority when a document is removed by more than one stage: exact beats near beats semantic
(``pipelines.shards.resolve_removals``); the keeper is always the smallest uid of its group, so cross-source
dedupe keeps the earliest source in registry order.
"""
from __future__ import annotations

import math
from collections import defaultdict

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.combiners import CountCombineFn, SingleInputTupleCombineFn, TopCombineFn
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from contract.registry import SOURCE_INDEX
from pipelines.dedupe import semantic
from pipelines.engine.dedupe.components import ConnectedComponents
from pipelines.dedupe.embed import EMBED_DIM
from pipelines.dedupe.exact import duplicate_pairs
from pipelines.engine.dedupe.keyed import ONE, CombineToOne, fan_out, spread
from pipelines.dedupe.minhash import SignatureSpec, band_keys_batch, estimated_jaccard
from pipelines.engine.plan import BuildPlan
from pipelines.records import Removal
from pipelines.text import splitmix64
from pipelines.engine.staging import BANDS, EMB, Part, PartSummary, staged_rows

NS = "dedupe"
BUCKET_INPUT_BYTES = 256 << 20   # input bytes per shuffle bucket: a bucket is what one worker sorts


def num_buckets(plan: BuildPlan) -> int:
    return max(1, min(4096, math.ceil(sum(t.input_bytes for t in plan.tasks) / BUCKET_INPUT_BYTES)))


def _scope(plan: BuildPlan, source: str) -> int:
    return 0 if plan.cross_source else SOURCE_INDEX[source] + 1


def _by_part(plan: BuildPlan):
    return lambda r: (plan.part_of_uid(r.uid), r)


def _part_key(summary: PartSummary):
    return summary.key, summary


def _groups_by_config(plan: BuildPlan, stage: str) -> dict:
    """Stage config -> the sources sharing it (they run in one transform; needed for cross-source scope)."""
    groups: dict = {}
    for n in sorted(plan.sources):
        cfg = getattr(plan.sources[n].dedupe, stage)
        if cfg:
            groups.setdefault(cfg, []).append(n)
    return groups


def _survivors(parts, removed, label: str):
    """(part summary, set of uids already removed in that part) for every part."""
    return ({"part": parts | f"{label}PartKey" >> beam.Map(_part_key), "gone": removed}
            | f"{label}ByPart" >> beam.CoGroupByKey()
            | f"{label}Survivors" >> beam.FlatMap(
                lambda kv: [(s, frozenset(r.uid for r in kv[1]["gone"])) for s in kv[1]["part"]]))


# ---------------------------------------------------------------------------------------------------
# exact

def _exact_blobs(summary: PartSummary, plan: BuildPlan, buckets: int):
    cfg = plan.sources[summary.source]
    if not cfg.dedupe.exact or not summary.docs:
        return
    staged = Part.of(plan, summary.source, summary.part)
    keys = staged.read_exact()
    uids = staged.read_docs().uid
    rec = np.empty((len(uids), 4), dtype=np.uint64)
    rec[:, 0] = _scope(plan, summary.source)
    rec[:, 1:3] = keys
    rec[:, 3] = uids.view(np.uint64)
    b = keys[:, 1] % np.uint64(buckets)
    for k in np.unique(b).tolist():
        yield int(k), rec[b == k].tobytes()


def _exact_bucket(kv):
    _bucket, blobs = kv
    rec = np.concatenate([np.frombuffer(x, dtype=np.uint64).reshape(-1, 4) for x in blobs])
    pairs = duplicate_pairs(rec[:, 0], rec[:, 1], rec[:, 2], rec[:, 3].view(np.int64))
    Metrics.counter(NS, "exact_duplicates").inc(len(pairs))
    for uid, keeper in pairs.tolist():
        yield Removal(uid, "exact_dedupe", "exact_duplicate", keeper, 1.0, f"same normalized text as uid {keeper}")


class ExactDedupe(beam.PTransform):
    """parts -> Removals: within each (scope, normalized-text hash) group all but the smallest uid."""

    def __init__(self, plan: BuildPlan, label=None):
        super().__init__(label)
        self.plan = plan

    def expand(self, parts):
        return (parts
                | "Keys" >> beam.FlatMap(_exact_blobs, self.plan, num_buckets(self.plan))
                | "GroupBuckets" >> beam.GroupByKey()
                | "Duplicates" >> beam.FlatMap(_exact_bucket))


# ---------------------------------------------------------------------------------------------------
# near (MinHash-LSH)

def _mix(x: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """splitmix64 of ``x ^ salt`` (uint64 arrays): folds a band's index and scope into its key, so one
    16-byte (key, uid) record replaces (scope, band, key, uid) at a collision risk of 2^-64 per pair."""
    return splitmix64(x ^ (salt * np.uint64(0x9E3779B97F4A7C15)))


def _band_records_of(item, plan: BuildPlan, specs: dict, buckets: int, staged: bool):
    """(summary, removed uids) -> ((group, bucket), band records) for the part's signed survivors; ``specs``:
    source -> (group index, SignatureSpec). The key mixes band index and scope (source, unless cross-source)
    into the band's 63-bit hash. A bucket's records travel as bytes, or with ``staged`` as a (source, part,
    first row, rows) reference into the part's staged ``bands.npy`` (sorted by bucket).

    Why both: where one process holds a whole shuffle (the local runner's driver keeps a shuffle's data at the
    barrier, ~4.5x the records: +1.2 GB at 4 GB of text, 18 bands x 16 B per document), the references keep it
    flat; a cluster's shuffle service is built for the bytes, while references would cost one object-store
    read per part and bucket (tens of millions per TB)."""
    summary, gone = item
    source = summary.source
    if source not in specs or not summary.docs:
        return
    group, spec = specs[source]
    part = Part.of(plan, source, summary.part)
    uids, sigs = part.read_sigs()
    if gone:
        keep = ~np.isin(uids, np.fromiter(gone, dtype=np.int64, count=len(gone)))
        uids, sigs = uids[keep], sigs[keep]
    if not len(uids):
        return
    keys = band_keys_batch(sigs, spec.bands, spec.rows).reshape(-1)
    salt = np.tile(np.arange(spec.bands, dtype=np.uint64), len(uids)) + np.uint64(_scope(plan, source) << 16)
    rec = np.empty((len(keys), 2), dtype=np.uint64)
    rec[:, 0] = _mix(keys, salt)
    rec[:, 1] = np.repeat(uids, spec.bands).view(np.uint64)
    b = rec[:, 0] % np.uint64(buckets)
    order = np.argsort(b, kind="stable")
    rec, b = rec[order], b[order]
    if staged:
        part.write_bands(rec)
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    for start, end in zip(starts.tolist(), np.append(starts[1:], len(b)).tolist()):
        key = (group, int(b[start]))
        yield key, (source, summary.part, start, end - start) if staged else rec[start:end].tobytes()


def _band_records(items, plan: BuildPlan) -> np.ndarray:
    """A bucket's band records [n, 2] from what ``_band_records_of`` gave: bytes, or references into bands.npy."""
    out = [np.frombuffer(x, dtype=np.uint64).reshape(-1, 2) for x in items if isinstance(x, bytes)]
    out += staged_rows(plan, BANDS, sorted(x for x in items if not isinstance(x, bytes)))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.uint64)


def one_process_shuffles(pipeline) -> bool:
    """Whether the pipeline's runner holds each shuffle in one process: the local runner (ours, or Beam's
    DirectRunner/FnApiRunner, the default when none is named)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = pipeline.options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return name is None or name.rsplit(".", 1)[-1] in ("LocalRunner", "DirectRunner", "FnApiRunner",
                                                         "BundleBasedDirectRunner", "SwitchingDirectRunner")


def _bucket_pairs(kv, plan: BuildPlan):
    """A bucket's band records -> (member's part, [member, leader] pairs) for every band group with >= 2
    members (leader = the group's smallest uid; the leader is its own member). Linear in the bucket size:
    grouping by leader instead of emitting all pairs is the star-edge idea of text-dedup's Spark path."""
    _key, items = kv
    rec = _band_records(items, plan)
    uid = rec[:, 1].view(np.int64)
    order = np.lexsort((uid, rec[:, 0]))
    k, u = rec[order, 0], uid[order]
    start = np.ones(len(u), dtype=bool)
    start[1:] = k[1:] != k[:-1]
    gid = np.cumsum(start) - 1
    sizes = np.bincount(gid)
    multi = sizes[gid] >= 2
    if not multi.any():
        return
    leader = u[np.flatnonzero(start)][gid]
    pairs = np.unique(np.stack([u[multi], leader[multi]], axis=1), axis=0)
    Metrics.counter(NS, "near_candidate_members").inc(len(pairs))
    by_part = defaultdict(list)
    for m, ld in pairs.tolist():
        by_part[plan.part_of_uid(m)].append((m, ld))
    for part, ps in by_part.items():
        yield part, np.asarray(ps, dtype=np.int64).tobytes()


def _fetch_signatures(kv, plan: BuildPlan):
    """(part, pair blobs) -> (leader, (member, signature bytes)) for each distinct (member, leader)."""
    (source, part), blobs = kv
    pairs = np.unique(np.concatenate([np.frombuffer(x, dtype=np.int64).reshape(-1, 2) for x in blobs]), axis=0)
    staged = Part.of(plan, source, part).read_sigs()
    row = {u: i for i, u in enumerate(staged.uid.tolist())}
    sigs = staged.sig
    for m, ld in pairs.tolist():
        yield ld, (m, sigs[row[m]].tobytes())


class _VerifyGroup(beam.DoFn):
    """All documents that share a band with a leader: verify each against up to ``max_leaders`` earlier
    representatives with the signature Jaccard estimate; only verified pairs become edges (u, v, j), v < u."""

    def __init__(self, verify_threshold: float, max_leaders: int):
        self.vt = verify_threshold
        self.max_leaders = max_leaders
        self.verified = Metrics.counter(NS, "near_verified_edges")

    def process(self, kv):
        _leader, items = kv
        members = dict(items)
        if len(members) < 2:
            return
        reps: list[tuple[int, np.ndarray]] = []
        for uid in sorted(members):
            sig = np.frombuffer(members[uid], dtype=np.uint32)
            linked = False
            for r_uid, r_sig in reps:
                j = estimated_jaccard(sig, r_sig)
                if j >= self.vt:
                    self.verified.inc()
                    yield uid, r_uid, j
                    linked = True
                    break
            if not linked and len(reps) < self.max_leaders:
                reps.append((uid, sig))


def _near_removal(kv):
    uid, g = kv
    roots = list(g["root"])
    if roots:
        root = roots[0]
        yield Removal(uid, "near_dedupe", "near_duplicate", root, float(max(g["j"])), f"keeper_uid={root}")


class _FuzzyStage(beam.PTransform):
    """The shape both fuzzy stages share: (parts, removals so far) -> Removals. Sources sharing the stage's
    settings form one group (one sub-graph; required for cross-source scope), and each group works on what
    the earlier stages left (``_survivors``)."""

    stage = ""  # the DedupeConfig field: "minhash" | "semantic"

    def __init__(self, plan: BuildPlan, label=None):
        super().__init__(label)
        self.plan = plan

    def expand(self, inputs):
        parts, removed = inputs
        groups = _groups_by_config(self.plan, self.stage)
        if not groups:
            return parts.pipeline | "Nothing" >> beam.Create([])
        survivors = _survivors(parts, removed | "GoneByPart" >> beam.Map(_by_part(self.plan)), "Survivors")
        out = self.removals(survivors, groups)
        return out | "AllGroups" >> beam.Flatten() if len(out) > 1 else out[0]

    def removals(self, survivors, groups: dict) -> list:
        raise NotImplementedError


class NearDedupe(_FuzzyStage):
    """(parts, removals so far) -> near-duplicate Removals, per group of sources sharing MinHash settings.

    band records of survivors -> GroupByKey per bucket -> (member, leader) candidates -> signatures of
    candidates fetched from their parts -> verification per leader group -> connected components in Beam
    (large-star/small-star) -> every non-minimal uid of a component is removed (keeper = the smallest uid),
    value = its highest verified Jaccard estimate. Scope per source unless cross-source."""

    stage = "minhash"

    def removals(self, survivors, groups: dict) -> list:
        plan = self.plan
        specs = {n: (i, SignatureSpec.from_config(cfg)) for i, (cfg, srcs) in enumerate(groups.items()) for n in srcs}
        candidates = (survivors
                      | "Bands" >> beam.FlatMap(_band_records_of, plan, specs, num_buckets(plan),
                                               one_process_shuffles(survivors.pipeline))
                      | "GroupBands" >> beam.GroupByKey()
                      | "Candidates" >> beam.FlatMap(_bucket_pairs, plan)
                      | "GroupByPart" >> beam.GroupByKey()
                      | "Signatures" >> beam.FlatMap(_fetch_signatures, plan))
        out = []
        for i, (cfg, _srcs) in enumerate(groups.items()):
            spec = SignatureSpec.from_config(cfg)
            mine = candidates if len(groups) == 1 else (
                candidates | f"Group{i}" >> beam.Filter(lambda kv, s=frozenset(_srcs), p=plan:
                                                        p.part_of_uid(kv[0])[0] in s))
            edges = (mine
                     | f"GroupByLeader{i}" >> beam.GroupByKey()
                     | f"Verify{i}" >> beam.ParDo(_VerifyGroup(spec.verify_threshold, cfg.max_leaders)))
            labels = (edges
                      | f"EdgePairs{i}" >> beam.Map(lambda e: (e[0], e[1]))
                      | f"Components{i}" >> ConnectedComponents(cfg.cc_rounds, cfg.max_residual_edges))
            best_j = (edges
                      | f"EdgeJ{i}" >> beam.FlatMap(lambda e: [(e[0], e[2]), (e[1], e[2])])
                      | f"MaxJ{i}" >> beam.CombinePerKey(max))
            out.append({"root": labels, "j": best_j}
                       | f"JoinRemoved{i}" >> beam.CoGroupByKey()
                       | f"Removals{i}" >> beam.FlatMap(_near_removal))
        return out


# ---------------------------------------------------------------------------------------------------
# semantic (SemDedup)

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


def _assign(kv, centroids, v: np.ndarray):
    uid, e = kv
    idx, sim = semantic.assign_clusters(v[None, :], centroids)  # one row at a time: a batch could round differently
    return int(idx[0]), (uid, e, float(sim[0]))


def _assign_bucket(kv, plan=None):
    """(bucket, {embedded: [(uid, embedding)], c: [centroids]}) -> (cluster, (uid, embedding, similarity)) each."""
    _b, g = kv
    cs = list(g["c"])
    if not cs:
        return
    items = list(g["embedded"])
    for item, v in zip(items, _vectors([e for _uid, e in items], plan)):
        yield _assign(item, cs[0], v)


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
    the keys' buckets by a keyed join (``pipelines.dedupe.keyed``), not a side input."""

    def __init__(self, keep_fraction: float, buckets: int = 1, label=None):
        super().__init__(label)
        self.keep_fraction = keep_fraction
        self.buckets = max(1, buckets)

    def expand(self, keys):
        b = self.buckets
        stats = keys | "CountAndQuantiles" >> CombineToOne(
            SingleInputTupleCombineFn(CountCombineFn(), ApproximateQuantilesCombineFn.create(num_quantiles=_QUANTILES)),
            lambda k, b=b: _key_bucket(k, b), b)
        bracket = stats | "Bracket" >> beam.Map(_bracket_of, self.keep_fraction)
        windows = ({"k": keys | "KeyBuckets" >> beam.Map(lambda k, b=b: (_key_bucket(k, b), k)),
                    "br": bracket | "FanBracket" >> beam.FlatMap(fan_out, b)}
                   | "JoinBracket" >> beam.CoGroupByKey()
                   | "Window" >> beam.FlatMap(_window_part))
        return windows | "GroupWindows" >> beam.GroupByKey() | "Exact" >> beam.Map(_cutoff_of_parts)


def _uid_bucket(kv, buckets: int) -> int:
    return spread(kv[0], buckets)


class SemanticDuplicates(beam.PTransform):
    """PCollection[(uid, float32 embedding bytes or a staged reference)] -> SemDedup Removals (``semantic.py``).

    deterministic sample (the ``sample_size`` largest uid hashes, TopCombineFn per bucket then merged) and the
    document count -> spherical k-means fitted once -> centroids joined to every embedding bucket ->
    GroupByKey by cluster -> per-document M -> exact global cut-off at the keep fraction, joined to every
    bucket of clusters -> per cluster, documents above the cut-off are removed, keeper = their most similar
    kept document of the cluster. Only keyed shuffles (``pipelines.dedupe.keyed``): no side input, no global combiner."""

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
                         by_uid, b)
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


class SemanticDedupe(_FuzzyStage):
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


# ---------------------------------------------------------------------------------------------------
# the policy

def _keeper_ids(kv, plan: BuildPlan):
    """Removals grouped by their keeper's part -> the same Removals with the keeper's id filled in."""
    (source, part), removals = kv
    staged = Part.of(plan, source, part)
    index = dict(zip(staged.read_docs().uid.tolist(), staged.read_ids()))
    for r in removals:
        yield r._replace(keeper_id=index[r.keeper_uid])


class Dedupe(beam.PTransform):
    """processed parts -> ((source, part), Removal) for every document a dedupe stage removes.

    exact on everything kept by the filters; MinHash-LSH on exact survivors; SemDedup on near survivors (so
    its keep fraction applies to what is left and its keeper is never removed by an earlier stage)."""

    def __init__(self, plan: BuildPlan, label=None):
        super().__init__(label)
        self.plan = plan

    def expand(self, parts):
        plan = self.plan
        exact = parts | "Exact" >> ExactDedupe(plan)
        near = (parts, exact) | "Near" >> NearDedupe(plan)
        so_far = (exact, near) | "ExactAndNear" >> beam.Flatten()
        sem = (parts, so_far) | "Semantic" >> SemanticDedupe(plan)
        removals = (so_far, sem) | "AllRemovals" >> beam.Flatten()
        if plan.write_rejects:  # duplicate_of in the audit records needs the keeper's id
            removals = (removals
                        | "ByKeeperPart" >> beam.Map(lambda r, p=plan: (p.part_of_uid(r.keeper_uid), r))
                        | "GroupByKeeperPart" >> beam.GroupByKey()
                        | "KeeperIds" >> beam.FlatMap(_keeper_ids, plan))
        return removals | "ByPart" >> beam.Map(_by_part(plan))
