"""The build graph: read -> filter -> dedupe -> (join removals) -> tokenize-and-shard -> finalize per source.

Every document ends in exactly one place: an MDS part (kept) or a Reject (malformed, filtered, or removed
by a dedupe stage). Counts are computed from those records as data, not from runner metrics, so the
stats reconcile on every runner; Metrics counters are only for live progress.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Mapping

import apache_beam as beam

from pipelines import fsio
from pipelines.config import SourceConfig
from pipelines.dedupe.exact import ExactDuplicates
from pipelines.readers import InputFile, ReadFiles
from pipelines.schema import Document, Reject, reject
from pipelines.shards import merge_parts, part_name, part_of, write_part
from pipelines.stats import make_stats

log = logging.getLogger("pipelines.build")
TARGET_PART_INPUT_BYTES = 64 << 20  # compressed input bytes per output part (~256 MB of text)
MAX_PARTS = 4096


def choose_parts(files: list[InputFile]) -> int:
    return max(1, min(MAX_PARTS, math.ceil(sum(f.size for f in files) / TARGET_PART_INPUT_BYTES)))


@dataclass(frozen=True)
class BuildPlan:
    out: str
    tokenizer_json: str   # the file's text: remote workers cannot read the driver's local path
    write_rejects: bool
    cross_source: bool
    sources: Mapping[str, SourceConfig]
    files: Mapping[str, list]          # source -> [InputFile]
    num_parts: Mapping[str, int]
    extra_stats: Mapping[str, Mapping]  # source -> fields added to stats.json (config hash, demo flag ...)

    def staging(self, source: str) -> str:
        return fsio.join(self.out, ".staging", source)


class ApplyFilters(beam.DoFn):
    def __init__(self, sources: Mapping[str, SourceConfig]):
        self.chains = {n: c.chain for n, c in sources.items()}

    def setup(self):
        self.kept = {n: beam.metrics.Metrics.counter(n, "filter_kept") for n in self.chains}

    def process(self, doc: Document):
        res = self.chains[doc.source](doc.text, doc.meta)
        if res is None:
            self.kept[doc.source].inc()
            yield doc
        else:
            rule, value, detail = res
            beam.metrics.Metrics.counter(doc.source, f"rejected.{rule}").inc()
            yield beam.pvalue.TaggedOutput("rejected", reject(doc, "filter", rule, value, detail=detail))


class WriteParts(beam.DoFn):
    """((source, part), {docs, removals, rejects, seed}) -> part stats; tagged 'dedupe_rejects'."""

    def __init__(self, plan: BuildPlan):
        self.plan = plan

    def setup(self):
        from tokenization import NeoXTokenizer

        quiet_worker_logs()
        logging.getLogger("pipelines.build").setLevel(logging.INFO)
        self.tokenizer = NeoXTokenizer(raw=self.plan.tokenizer_json)

    def process(self, kv):
        (source, part), groups = kv
        stats, won = write_part(source, part, groups["docs"], groups["removals"], groups["rejects"],
                                self.tokenizer, self.plan.staging(source), self.plan.write_rejects)
        beam.metrics.Metrics.counter(source, "kept").inc(stats["kept"])
        beam.metrics.Metrics.counter(source, "tokens").inc(stats["tokens"])
        log.info("[%s] %s/%d written: %d docs, %d tokens", source, part_name(part),
                 self.plan.num_parts[source], stats["kept"], stats["tokens"])
        yield stats
        for r in won:
            yield beam.pvalue.TaggedOutput("dedupe_rejects", r)


def quiet_worker_logs() -> None:
    """streaming logs a warning per temp folder in merge_index; keep worker output to our progress lines."""
    for name in ("streaming", "root"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "streaming" else logging.WARNING)


class FinalizeSource(beam.DoFn):
    """Merge part indexes, write stats (checked to reconcile), and move the source into place.

    Order of appearance in OUT: rejects/<source>/, sources/<source>/ (index.json last), stats/<source>.json
    last of all — a source counts as finished (and is skipped on resume) only when its stats file exists.
    """

    def __init__(self, plan: BuildPlan):
        self.plan = plan

    def setup(self):
        quiet_worker_logs()

    def process(self, kv):
        source, g = kv
        plan = self.plan
        staging = plan.staging(source)
        merge_parts(staging, plan.num_parts[source])
        stats = make_stats(source, sum(g["read"]), list(g["counts"]), list(g["parts"]), plan.extra_stats.get(source))
        out = plan.out
        if plan.write_rejects:
            fsio.replace_tree(fsio.join(staging, "rejects"), fsio.join(out, "rejects", source))
        fsio.replace_tree(fsio.join(staging, "data"), fsio.join(out, "sources", source), last=["index.json"])
        fsio.write_bytes(fsio.join(out, "stats", f"{source}.json"),
                         (json.dumps(stats, indent=1, sort_keys=False) + "\n").encode())
        fsio.delete_tree(staging)
        log.info("[%s] finished: %d kept of %d read, %d tokens", source, stats["kept"], stats["read"], stats["tokens"])
        yield source, stats


def _count_key(r: Reject):
    file = r.loc.rsplit(":", 1)[0] if r.stage == "read" else ""
    return (r.source, r.stage, r.reason, file), 1


def build_graph(p: beam.Pipeline, plan: BuildPlan):
    """Add the whole per-source build to pipeline ``p``; returns the PCollection of (source, stats)."""
    names = sorted(plan.sources)
    read_parts = []
    for n in names:
        read_parts.append(
            p | f"Files[{n}]" >> beam.Create([(n, f) for f in plan.files[n]])
              | f"Spread[{n}]" >> beam.Reshuffle()
              | f"Read[{n}]" >> beam.ParDo(_ReadDispatch(plan.sources)).with_outputs("malformed", "read_counts", main="docs"))
    docs = [r.docs for r in read_parts] | "AllDocs" >> beam.Flatten()
    malformed = [r.malformed for r in read_parts] | "AllMalformed" >> beam.Flatten()
    read_counts = [r.read_counts for r in read_parts] | "AllReadCounts" >> beam.Flatten()

    filt = docs | "Filter" >> beam.ParDo(ApplyFilters(plan.sources)).with_outputs("rejected", main="kept")
    kept = filt.kept

    exact_on = [n for n in names if plan.sources[n].dedupe.exact]
    removals = []
    if exact_on:
        exact_in = kept | "ExactScope" >> beam.Filter(lambda d, s=frozenset(exact_on): d.source in s)
        removals.append(exact_in | "ExactDedupe" >> ExactDuplicates(cross_source=plan.cross_source))
    removals += _fuzzy_removals(kept, removals[0] if removals else None, plan)
    all_removals = removals | "AllRemovals" >> beam.Flatten() if removals else p | "NoRemovals" >> beam.Create([])

    num_parts = dict(plan.num_parts)
    key = lambda x, np_=num_parts: ((x.source, part_of(x.uid, np_[x.source])), x)  # noqa: E731
    seeds = p | "PartSeeds" >> beam.Create([((n, i), None) for n in names for i in range(num_parts[n])])
    groups = {
        "docs": kept | "KeyDocs" >> beam.Map(key),
        "removals": all_removals | "KeyRemovals" >> beam.Map(key),
        "seed": seeds,
    }
    if plan.write_rejects:
        rej = (malformed, filt.rejected) | "AuditRejects" >> beam.Flatten()
        groups["rejects"] = rej | "KeyRejects" >> beam.Map(key)
    else:
        groups["rejects"] = p | "NoRejects" >> beam.Create([])
    written = (groups | "GroupParts" >> beam.CoGroupByKey()
               | "TokenizeAndShard" >> beam.ParDo(WriteParts(plan)).with_outputs("dedupe_rejects", main="parts"))

    counts = ((malformed, filt.rejected, written.dedupe_rejects) | "AllOutcomes" >> beam.Flatten()
              | "CountKey" >> beam.Map(_count_key) | "CountOutcomes" >> beam.CombinePerKey(sum)
              | "BySource" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[0][2], kv[0][3], kv[1]))))
    reads = read_counts | "SumReads" >> beam.CombinePerKey(sum)
    parts = written.parts | "PartsBySource" >> beam.Map(lambda s: (s["source"], s))
    return ({"parts": parts, "counts": counts, "read": reads} | "GatherSource" >> beam.CoGroupByKey()
            | "Finalize" >> beam.ParDo(FinalizeSource(plan)))


class _ReadDispatch(beam.DoFn):
    """(source, InputFile) -> ReadFiles of that source (one DoFn class for all sources)."""

    def __init__(self, sources: Mapping[str, SourceConfig]):
        self.readers = {n: ReadFiles(c) for n, c in sources.items()}

    def setup(self):
        for r in self.readers.values():
            r.setup()

    def process(self, item):
        source, f = item
        yield from self.readers[source].process(f)


def _without(docs, removals, label: str):
    """Documents whose uid has no removal record (a CoGroupByKey on uid; texts travel once)."""
    return ({"doc": docs | f"{label}DocByUid" >> beam.Map(lambda d: (d.uid, d)),
             "gone": removals | f"{label}GoneByUid" >> beam.Map(lambda r: (r.uid, None))}
            | f"{label}Join" >> beam.CoGroupByKey()
            | f"{label}Drop" >> beam.FlatMap(lambda kv: [] if list(kv[1]["gone"]) else list(kv[1]["doc"])))


def _fuzzy_removals(kept, exact_removals, plan: BuildPlan) -> list:
    """MinHash removals on exact-dedupe survivors, then SemDedup on near-dedupe survivors (so SemDedup's
    keep fraction applies to what is left and its duplicate_of always names a kept document)."""
    near = {n: c.dedupe.minhash for n, c in plan.sources.items() if c.dedupe.minhash}
    sem = {n: c.dedupe.semantic for n, c in plan.sources.items() if c.dedupe.semantic}
    if not near and not sem:
        return []
    survivors = kept if exact_removals is None else _without(kept, exact_removals, "Exact")
    near_out = []
    if near:
        from pipelines.dedupe.transforms import NearDedupe
    # sources sharing identical settings run in one transform (required for cross-source scope)
    for i, (cfg, srcs) in enumerate(_group_by_config(near).items()):
        sub = survivors | f"NearScope{i}" >> beam.Filter(lambda d, s=frozenset(srcs): d.source in s)
        near_out.append(sub | f"NearDedupe{i}" >> NearDedupe(cfg, cross_source=plan.cross_source))
    sem_out = []
    if sem:
        from pipelines.dedupe.transforms import SemanticDedupe

        sem_scope = frozenset(sem)
        sem_in = survivors | "SemSources" >> beam.Filter(lambda d, s=sem_scope: d.source in s)
        if near_out:
            near_sem = (near_out | "NearAll" >> beam.Flatten()
                        | "NearInSem" >> beam.Filter(lambda r, s=sem_scope: r.source in s))
            sem_in = _without(sem_in, near_sem, "Near")
        for i, (cfg, srcs) in enumerate(_group_by_config(sem).items()):
            sub = sem_in | f"SemScope{i}" >> beam.Filter(lambda d, s=frozenset(srcs): d.source in s)
            sem_out.append(sub | f"SemanticDedupe{i}" >> SemanticDedupe(cfg))
    return near_out + sem_out


def _group_by_config(by_source: Mapping[str, object]) -> dict:
    groups: dict = {}
    for n in sorted(by_source):
        groups.setdefault(by_source[n], []).append(n)
    return groups
