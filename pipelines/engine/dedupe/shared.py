"""What the dedupe stages share: the shuffle's bucket count, the dedupe scope of a source, removals keyed by part,
the sources grouped by stage settings, the survivors of earlier stages, and the shape of a fuzzy stage.

Every stage has one shape: (processed parts, removals so far) -> removals. A part's documents were hashed,
signed and embedded where they were read (``pipelines.engine.process``) and those compact keys wait in the
part's staging folder; here only keys travel: 32-byte exact records and 16-byte band records grouped in
buckets (one element per (part, bucket), not per document), candidate pairs, the signatures of candidates
only, and the embeddings of the SemDedup sources. Nothing is collected on one worker beyond a bucket, a
candidate group, a component's edges or a k-means cluster.
"""
from __future__ import annotations

import math

import apache_beam as beam

from contract.registry import SOURCE_INDEX
from pipelines.engine.plan import BuildPlan
from pipelines.engine.staging import PartSummary

NS = "dedupe"


BUCKET_INPUT_BYTES = 256 << 20   # input bytes per shuffle bucket: a bucket is what one worker sorts


def num_buckets(plan: BuildPlan) -> int:
    return max(1, min(4096, math.ceil(sum(t.input_bytes for t in plan.tasks) / BUCKET_INPUT_BYTES)))


def scope(plan: BuildPlan, source: str) -> int:
    return 0 if plan.cross_source else SOURCE_INDEX[source] + 1


def by_part(plan: BuildPlan):
    return lambda r: (plan.part_of_uid(r.uid), r)


def part_key(summary: PartSummary):
    return summary.key, summary


def groups_by_config(plan: BuildPlan, stage: str) -> dict:
    """Stage config -> the sources sharing it (they run in one transform; needed for cross-source scope)."""
    groups: dict = {}
    for n in sorted(plan.sources):
        cfg = getattr(plan.sources[n].dedupe, stage)
        if cfg:
            groups.setdefault(cfg, []).append(n)
    return groups


def survivors_of(parts, removed, label: str):
    """(part summary, set of uids already removed in that part) for every part."""
    return ({"part": parts | f"{label}PartKey" >> beam.Map(part_key), "gone": removed}
            | f"{label}ByPart" >> beam.CoGroupByKey()
            | f"{label}Survivors" >> beam.FlatMap(
                lambda kv: [(s, frozenset(r.uid for r in kv[1]["gone"])) for s in kv[1]["part"]]))


def one_process_shuffles(pipeline) -> bool:
    """Whether the pipeline's runner holds each shuffle in one process: the local runner (ours, or Beam's
    DirectRunner/FnApiRunner, the default when none is named)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = pipeline.options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return name is None or name.rsplit(".", 1)[-1] in ("LocalRunner", "DirectRunner", "FnApiRunner",
                                                         "BundleBasedDirectRunner", "SwitchingDirectRunner")


class FuzzyStage(beam.PTransform):
    """The shape both fuzzy stages share: (parts, removals so far) -> Removals. Sources sharing the stage's
    settings form one group (one sub-graph; required for cross-source scope), and each group works on what
    the earlier stages left (``survivors_of``)."""

    stage = ""  # the DedupeConfig field: "minhash" | "semantic"

    def __init__(self, plan: BuildPlan, label=None):
        super().__init__(label)
        self.plan = plan

    def expand(self, inputs):
        parts, removed = inputs
        groups = groups_by_config(self.plan, self.stage)
        if not groups:
            return parts.pipeline | "Nothing" >> beam.Create([])
        survivors = survivors_of(parts, removed | "GoneByPart" >> beam.Map(by_part(self.plan)), "Survivors")
        out = self.removals(survivors, groups)
        return out | "AllGroups" >> beam.Flatten() if len(out) > 1 else out[0]

    def removals(self, survivors, groups: dict) -> list:
        raise NotImplementedError
