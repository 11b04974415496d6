"""Exact dedupe in Beam: within each (scope, normalized-text hash) group all but the smallest uid are removed."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipelines.dedupe.exact import duplicate_pairs
from pipelines.engine.dedupe.shared import NS, num_buckets, scope
from pipelines.engine.plan import BuildPlan
from pipelines.engine.staging import Part, PartSummary
from pipelines.records import Removal


def _exact_blobs(summary: PartSummary, plan: BuildPlan, buckets: int):
    cfg = plan.sources[summary.source]
    if not cfg.dedupe.exact or not summary.docs:
        return
    staged = Part.of(plan, summary.source, summary.part)
    keys = staged.read_exact()
    uids = staged.read_docs().uid
    rec = np.empty((len(uids), 4), dtype=np.uint64)
    rec[:, 0] = scope(plan, summary.source)
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
