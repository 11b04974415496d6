"""The build plan: which sources, which input files, how they are cut into parts, where staging lives.

Why parts of consecutive input files: a part is the unit of work, of output and of resume. Every
document's uid is (source, file index, line), so a part's documents are already in uid order, the output
order does not depend on how the runner scheduled work (byte-identical re-runs, portable == local), and
a finished part never has to be redone after a crash (its staging carries a done marker). Parts aim at
``TARGET_PART_INPUT_BYTES`` of (compressed) input so a few hundred MB of text is one task, small enough
to balance over workers and to lose little on a kill, large enough that per-task start-up is noise.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from typing import Mapping, NamedTuple, Sequence

from contract import layout
from contract.registry import SOURCE_NAMES
from pipelines.sources.config import SourceConfig
from pipelines.dedupe.minhash import SignatureSpec
from pipelines.sources.readers import InputFile
from pipelines.records import split_uid

CODE_VERSION = "1"  # bump when output bytes change for the same inputs (invalidates resume)
# compressed input bytes per part (~60-100 MB of text); $MPTDATA_PART_MB overrides it (tests use tiny parts)
TARGET_PART_INPUT_BYTES = int(float(os.environ.get("MPTDATA_PART_MB", "24")) * (1 << 20))
if TARGET_PART_INPUT_BYTES < 1:
    raise ValueError(f"MPTDATA_PART_MB={os.environ.get('MPTDATA_PART_MB')!r}: expected a positive number of MB")
MAX_PARTS_PER_SOURCE = 100_000


class PartTask(NamedTuple):
    """One unit of work: consecutive input files of one source."""

    source: str
    part: int
    files: tuple[InputFile, ...]

    @property
    def key(self) -> tuple[str, int]:
        return (self.source, self.part)

    @property
    def input_bytes(self) -> int:
        return sum(f.size for f in self.files)


def cut_parts(source: str, files: Sequence[InputFile], target: int = TARGET_PART_INPUT_BYTES) -> list[PartTask]:
    """Consecutive files grouped into parts of about ``target`` bytes (a larger file is a part of its own)."""
    parts: list[PartTask] = []
    cur: list[InputFile] = []
    size = 0
    for f in files:
        if cur and size + f.size > target:
            parts.append(PartTask(source, len(parts), tuple(cur)))
            cur, size = [], 0
        cur.append(f)
        size += f.size
    if cur:
        parts.append(PartTask(source, len(parts), tuple(cur)))
    if len(parts) > MAX_PARTS_PER_SOURCE:
        raise ValueError(f"{source}: {len(parts)} parts; raise TARGET_PART_INPUT_BYTES")
    return parts


def part_name(part: int) -> str:
    return f"part-{part:05d}"


def config_hash(cfg: SourceConfig, files: Sequence[InputFile], tokenizer_fp: str, cross: bool,
                eval_files: Sequence[tuple[str, int]] = (), semdedup_table: str = "") -> str:
    """What decides a source's output bytes: config (incl. pii and decontam), inputs, tokenizer, code version.
    ``eval_files``: (path, size) of the decontam eval files, so changed eval data rebuilds the source;
    ``semdedup_table``: the SHA-256 of the SemDedup static table the source is embedded with (its bytes may
    differ between CPU architectures: ``pipelines.artifacts``)."""
    rules = [(r.name, sorted(r.params.items())) for r in cfg.chain.rules]
    payload = {"cfg": repr((cfg.text_field, cfg.id_field, cfg.meta_fields, cfg.format, rules, cfg.dedupe)),
               "files": [(f.path, f.size) for f in files], "tok": tokenizer_fp, "cross": cross, "code": CODE_VERSION}
    if TARGET_PART_INPUT_BYTES != 24 << 20:  # part boundaries decide the shard files (default: hash unchanged)
        payload["part_bytes"] = TARGET_PART_INPUT_BYTES
    if cfg.pii:
        payload["pii"] = True
    if cfg.decontam is not None:  # absent keys keep the hashes of builds without pii/decontam unchanged
        payload["decontam"] = repr(cfg.decontam)
        payload["eval_files"] = [list(f) for f in eval_files]
    if semdedup_table:
        payload["semdedup_table"] = semdedup_table
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuildPlan:
    out: str
    tokenizer_json: str   # the file's text: remote workers cannot read the driver's local path
    write_rejects: bool
    cross_source: bool
    sources: Mapping[str, SourceConfig]
    files: Mapping[str, Sequence[InputFile]]           # source -> sorted input files
    hashes: Mapping[str, str]                          # source -> config hash (names its staging folder)
    extra_stats: Mapping[str, Mapping]                 # source -> fields added to stats.json
    tasks: tuple[PartTask, ...]    # every part of every source, in (source, part) order (no default: see __getattr__)
    # where workers read the heavy fields (HEAVY: tokenizer text, input listing, part tasks) when set (``ship``): they
    # are then not pickled with the plan, which every DoFn holds a copy of (inline: 2.4 MB of tokenizer, plus
    # 7.5 MiB per 100,000 input objects, in each of ~20 DoFns: the Dask task graph reached 21-27 MiB on the demo)
    shipped_uri: str = ""
    # the SemDedup static table shipped beside the plan (``pipelines.artifacts.ship_table``) and its SHA-256; unset,
    # a worker uses its own machine's cached table (callers outside a build)
    semdedup_table: str = ""
    semdedup_table_sha256: str = ""
    # source -> its MinHash SignatureSpec, resolved on the driver (the optimal bands need scipy, which a worker only
    # imports with its other heavy packages: ``pipelines.worker_imports``)
    minhash_specs: Mapping[str, SignatureSpec] = field(default_factory=dict)

    @classmethod
    def make(cls, out: str, tokenizer_json: str, write_rejects: bool, cross_source: bool,
             sources: Mapping[str, SourceConfig], files: Mapping[str, Sequence[InputFile]],
             hashes: Mapping[str, str], extra_stats: Mapping[str, Mapping]) -> "BuildPlan":
        names = sorted(sources, key=SOURCE_NAMES.index)
        tasks = tuple(t for n in names for t in cut_parts(n, files[n]))
        specs = {n: SignatureSpec.from_config(sources[n].dedupe.minhash) for n in names if sources[n].dedupe.minhash}
        return cls(out, tokenizer_json, write_rejects, cross_source, {n: sources[n] for n in names},
                   {n: tuple(files[n]) for n in names}, dict(hashes), dict(extra_stats), tasks, minhash_specs=specs)

    # ---- where things live
    def staging(self, source: str) -> str:
        return layout.join(layout.staging_root(self.out), source, self.hashes[source])

    def part_staging(self, source: str, part: int) -> str:
        return layout.join(self.staging(source), "parts", part_name(part))

    # ---- lookups
    def num_parts(self, source: str) -> int:
        return sum(1 for t in self.tasks if t.source == source)

    def part_of_uid(self, uid: int) -> tuple[str, int]:
        """(source, part) holding document ``uid`` (parts are consecutive file ranges)."""
        s, f, _line = split_uid(uid)
        source = SOURCE_NAMES[s]
        starts = self._part_starts[source]
        return source, bisect.bisect_right(starts, f) - 1

    def file_name(self, source: str, file_index: int) -> str:
        return self.files[source][file_index].name

    @property
    def _part_starts(self) -> dict[str, list[int]]:
        cache = self.__dict__.get("_pstarts")
        if cache is None:
            cache = {}
            for t in self.tasks:
                cache.setdefault(t.source, []).append(t.files[0].index)
            object.__setattr__(self, "_pstarts", cache)
        return cache

    def ship(self, uri: str) -> "BuildPlan":
        """The same plan, its HEAVY fields written to ``uri`` (under OUT: every worker can read it) and read from
        there, once per worker process, instead of travelling inside every pickled DoFn."""
        import pickle

        from contract import fsio

        fsio.write_bytes(uri, pickle.dumps({k: getattr(self, k) for k in HEAVY}, protocol=pickle.HIGHEST_PROTOCOL))
        return replace(self, shipped_uri=uri)

    def __getstate__(self):  # caches are rebuilt on workers; a shipped plan's HEAVY fields are read from shipped_uri
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        if state.get("shipped_uri"):
            for k in HEAVY:
                state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __getattr__(self, name):  # only for attributes missing from __dict__: the HEAVY fields of a shipped plan
        uri = self.__dict__.get("shipped_uri")
        if name in HEAVY and uri:
            import pickle

            from contract import fsio

            heavy = _SHIPPED.get(uri)
            if heavy is None:  # once per worker process, however many DoFn copies of the plan it unpickles
                heavy = _SHIPPED[uri] = pickle.loads(fsio.read_bytes(uri))
            for k, v in heavy.items():
                object.__setattr__(self, k, v)
            return heavy[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


HEAVY = ("tokenizer_json", "files", "tasks")  # fields without a class-level default: a missing one reaches __getattr__
_SHIPPED: dict = {}
