"""The dedupe stages in one transform: exact -> near (MinHash-LSH) -> semantic, each on the survivors of the last
(``exact``, ``near`` and ``semantic`` in this package; what they share, and why only keys travel, in ``shared``).

Priority when a document is removed by more than one stage: exact beats near beats semantic
(``pipelines.engine.shards.resolve_removals``); the keeper is always the smallest uid of its group, so
cross-source dedupe keeps the earliest source in registry order.
"""
from __future__ import annotations

import apache_beam as beam

from pipelines.engine.dedupe.exact import ExactDedupe
from pipelines.engine.dedupe.near import NearDedupe
from pipelines.engine.dedupe.semantic import SemanticDedupe
from pipelines.engine.dedupe.shared import by_part
from pipelines.engine.plan import BuildPlan
from pipelines.engine.staging import Part


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
        return removals | "ByPart" >> beam.Map(by_part(plan))
