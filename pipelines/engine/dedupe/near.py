"""Near dedupe in Beam (MinHash-LSH): band records of the survivors, candidate pairs per bucket, their signatures
fetched from their parts, verification per leader group, connected components; the keeper is the smallest uid."""
from __future__ import annotations

from collections import defaultdict

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines.dedupe.minhash import SignatureSpec, band_keys_batch, estimated_jaccard
from pipelines.engine.dedupe.components import ConnectedComponents
from pipelines.engine.dedupe.shared import NS, FuzzyStage, num_buckets, one_process_shuffles, scope
from pipelines.engine.plan import BuildPlan
from pipelines.engine.staging import BANDS, Part, staged_rows
from pipelines.records import Removal
from pipelines.text import splitmix64


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
    salt = np.tile(np.arange(spec.bands, dtype=np.uint64), len(uids)) + np.uint64(scope(plan, source) << 16)
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


class NearDedupe(FuzzyStage):
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
