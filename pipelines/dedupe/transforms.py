"""The two composite dedupe transforms the build wires in: NearDedupe (MinHash-LSH) and SemanticDedupe.

Both take already exact-deduped ``Document``s and return only ``Reject``s (one per removed document);
the build joins them back by uid. Neither holds a corpus-sized object anywhere: every step is a
per-element DoFn or a GroupByKey keyed by something small (band key, group leader, node, cluster).
"""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

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
        _key, uids = kv
        members = sorted(set(uids))
        if len(members) < 2:
            return
        self.multi.inc()
        self.sizes.update(len(members))
        leader = members[0]
        for u in members:
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


