"""The build graph, one sentence: parts are processed, deduped, written, and each source finalized.

    parts | ProcessDocuments | Dedupe | WriteShards | FinalizeSources

Every document ends in exactly one place: an MDS part (kept) or a count (malformed, decontaminated,
filtered, or removed by a dedupe stage) with an audit record under --write-rejects. Counts are computed from those records as
data, not from runner metrics, so stats reconcile on every runner; Metrics counters and the heartbeat
files (``pipelines.engine.progress``) are only for live progress.
"""
from __future__ import annotations

import heapq
import json
import logging
import time

import apache_beam as beam

from contract import fsio, layout
from contract.stats import make_stats
from pipelines import worker_imports
from pipelines.engine.dedupe.stages import Dedupe
from pipelines.engine.plan import BuildPlan, PartTask, part_name
from pipelines.engine.process import Tools, cached_summary, process_part
from pipelines.engine.progress import Heartbeat
from pipelines.engine.examples import write_examples
from pipelines.filters.warnings import warnings_for
from pipelines.engine.shards import merge_parts, write_part

log = logging.getLogger("pipelines.build")


def worker_setup(heavy: bool = True) -> None:
    """A DoFn's ``setup``: with ``heavy``, the packages it will need (mosaicml-streaming and what comes with it),
    waited for or imported whole (``pipelines.worker_imports``); then quiet logs (streaming logs a warning per temp
    folder in merge_index; keep worker output to our progress lines)."""
    if heavy:
        worker_imports.ensure()
    for name in ("streaming", "root"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "streaming" else logging.WARNING)


class _ProcessPart(beam.DoFn):
    def __init__(self, plan: BuildPlan):
        self.plan = plan
        # when the graph was built (driver clock): a part finished before it was resumed from an earlier run; one
        # finished after it by this run and met again (a runner retrying the task after losing a worker) was not
        self.started = time.time()

    def setup(self):
        worker_setup(heavy=False)  # reading needs none of them: they arrive meanwhile (the embedder waits for them)
        self.tools = None  # built on the first part that is not already done (a resumed build may need none)

    def process(self, task: PartTask):
        plan = self.plan
        hb = Heartbeat(plan.out, "read", task.source, part_name(task.part), task.input_bytes)
        summary = cached_summary(task, plan)
        if summary is None:
            if self.tools is None:
                self.tools = Tools(plan)
            summary = process_part(task, plan, self.tools, hb)
            beam.metrics.Metrics.counter(task.source, "read").inc(summary.read)
        hb.finish(docs=summary.read, text_bytes=summary.text_bytes, input_bytes=task.input_bytes,
                  resumed=summary.finished < self.started)
        yield summary


class ProcessDocuments(beam.PTransform):
    """PartTasks -> part summaries; each part's documents go read -> PII mask -> decontaminate -> filter ->
    hash/sign/embed -> tokenize
    in one worker (``pipelines.engine.process``), and a part done by an earlier run is not redone."""

    def __init__(self, plan: BuildPlan, label=None):
        super().__init__(label)
        self.plan = plan

    def expand(self, tasks):
        return (tasks
                | "Spread" >> beam.Reshuffle()
                | "Process" >> beam.ParDo(_ProcessPart(self.plan)))


class _WritePart(beam.DoFn):
    def __init__(self, plan: BuildPlan):
        self.plan = plan

    def setup(self):
        worker_setup()

    def process(self, kv):
        (source, part), g = kv
        if not list(g["part"]):
            raise RuntimeError(f"{source} {part_name(part)}: removals for a part that was never processed (a bug)")
        hb = Heartbeat(self.plan.out, "write", source, part_name(part))
        stats = write_part(self.plan, source, part, list(g["removals"]))
        hb.finish(docs=stats["kept"], text_bytes=stats["bytes"])
        beam.metrics.Metrics.counter(source, "kept").inc(stats["kept"])
        yield source, stats


class WriteShards(beam.PTransform):
    """(part summaries, removals by part) -> (source, part stats): each part's tokens minus its removals
    become an MDS part in staging."""

    def __init__(self, plan: BuildPlan, label=None):
        super().__init__(label)
        self.plan = plan

    def expand(self, inputs):
        parts, removals = inputs
        return ({"part": parts | "PartKey" >> beam.Map(lambda s: (s.key, s)),
                 "removals": removals}
                | "GroupByPart" >> beam.CoGroupByKey()
                | "Write" >> beam.ParDo(_WritePart(self.plan)))


class _FinalizeSource(beam.DoFn):
    """Merge part indexes, write stats (checked to reconcile), and move the source into place.

    Order of appearance in OUT: rejects/<source>/, sources/<source>/ (index.json last), stats/<source>.json
    last of all: a source counts as finished (and is skipped on resume) only when its stats file exists.
    """

    def __init__(self, plan: BuildPlan):
        self.plan = plan

    def setup(self):
        worker_setup()

    def process(self, kv):
        source, parts = kv
        plan = self.plan
        parts = sorted(parts, key=lambda p: p["part"])
        if [p["part"] for p in parts] != list(range(plan.num_parts(source))):
            raise RuntimeError(f"{source}: {len(parts)} of {plan.num_parts(source)} parts written (a bug)")
        staging = plan.staging(source)
        merge_parts(staging, len(parts))
        counts = [tuple(c) for p in parts for c in p["counts"]]
        stats = make_stats(source, sum(p["read"] for p in parts), counts, parts, plan.extra_stats.get(source))
        stats["warnings"] = warnings_for(stats)  # the build logs and prints them under its summary table
        write_examples(plan, source, parts)      # OUT/examples/<source>.json for the report (pipelines.engine.examples)
        out = plan.out
        if plan.write_rejects and fsio.has_files(layout.join(staging, "rejects")):
            fsio.replace_tree(layout.join(staging, "rejects"), layout.rejects_dir(out, source))
        elif plan.write_rejects:  # nothing rejected: no stale records of an earlier build may remain
            fsio.delete_tree(layout.rejects_dir(out, source))
        fsio.replace_tree(layout.join(staging, "data"), layout.source_dir(out, source), last=[layout.INDEX])
        fsio.write_bytes(layout.stats_path(out, source), (json.dumps(stats, indent=1, sort_keys=False) + "\n").encode())
        fsio.delete_tree(layout.join(layout.staging_root(out), source))
        log.info("[%s] finished: %d kept of %d read, %d tokens", source, stats["kept"], stats["read"], stats["tokens"])
        yield source, stats


class FinalizeSources(beam.PTransform):
    def __init__(self, plan: BuildPlan, label=None):
        super().__init__(label)
        self.plan = plan

    def expand(self, part_stats):
        return (part_stats
                | "BySource" >> beam.GroupByKey()
                | "Finalize" >> beam.ParDo(_FinalizeSource(self.plan)))


# CPU cost of a byte of input relative to the exact + MinHash path (benchmarks/RESULTS.md): the transformer
# embedder on a CPU is ~100x the static one, which costs about what the rest of a part costs
_EMBED_COST = {"static-minilm-l6": 1.5, "minilm-l6": 40.0}


def part_cost(plan: BuildPlan, task: PartTask) -> float:
    """Estimated CPU cost of a part: its input bytes, weighted by what its source's dedupe embeds."""
    sem = plan.sources[task.source].dedupe.semantic
    return task.input_bytes * (_EMBED_COST.get(sem.model, 1.0) if sem else 1.0)


def by_cost(plan: BuildPlan, chunks: int = 1) -> list[PartTask]:
    """Costliest parts first, so that a slow source's parts start early instead of holding the build's tail
    while the other workers idle (runners that keep the order honour it; others lose nothing).

    ``chunks`` > 1: for a runner that cuts the list into that many contiguous chunks and gives each to one worker
    (the DaskRunner's Create: ``dask.bag.from_sequence(npartitions=chunks)``), the parts are dealt so that the
    chunks cost about the same: each part, costliest first, joins the cheapest chunk that has room left. Cut as
    that runner cuts it, the costliest half no longer lands on one worker (the 1 GB build's read stage: 112 s on
    Dask vs 79 s locally, with one of two workers holding the 12 costliest of 24 parts)."""
    ordered = sorted(plan.tasks, key=lambda t: (-part_cost(plan, t), t.source, t.part))
    if chunks <= 1 or len(ordered) <= chunks:
        return ordered
    size = -(-len(ordered) // chunks)  # from_sequence's partition size
    room = [min(size, len(ordered) - i * size) for i in range(-(-len(ordered) // size))]
    dealt: list[list[PartTask]] = [[] for _ in room]
    open_chunks = [(0.0, i) for i in range(len(room))]  # (load, chunk) of the chunks with room: a heap
    for t in ordered:  # O(parts log chunks): 100,000 parts into 1,024 chunks stays well under a second
        load, i = heapq.heappop(open_chunks)
        dealt[i].append(t)
        if len(dealt[i]) < room[i]:
            heapq.heappush(open_chunks, (load + part_cost(plan, t), i))
    return [t for chunk in dealt for t in chunk]


def build_graph(p: beam.Pipeline, plan: BuildPlan, chunks: int = 1):
    """Add the whole per-source build to pipeline ``p``; returns the PCollection of (source, stats). ``chunks``:
    see :func:`by_cost` (the DaskRunner's partition count; 1 elsewhere)."""
    parts = p | "Parts" >> beam.Create(by_cost(plan, chunks)) | "ProcessDocuments" >> ProcessDocuments(plan)
    removals = parts | "Dedupe" >> Dedupe(plan)
    written = (parts, removals) | "WriteShards" >> WriteShards(plan)
    return written | "FinalizeSources" >> FinalizeSources(plan)
