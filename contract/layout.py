"""Where a build's outputs live under ``OUT`` (local path, ``gs://`` or ``s3://``).

One place for every path, so the writer (``pipelines``), the readers (``mixtures``, ``pipelines.inspect``,
the trainer through ``streams.yaml``) and the docs cannot drift apart:

    OUT/sources/<source>/index.json, shard.*.mds.zstd, doc_tokens.npy   per-source MDS (one doc per sample)
    OUT/stats/<source>.json                                            per-source stats (written last)
    OUT/rejects/<source>/*.jsonl                                       audit records (--write-rejects)
    OUT/examples/<source>.json                                         sampled examples for the report
    OUT/report.html                                                    the build's HTML report
    OUT/mixtures/<name>/{streams.yaml, manifest.json, report.md, report.png, <part>/<source>/}
    OUT/.staging/<source>/...                                          work in progress (resumable)
"""
from __future__ import annotations

import os
import posixpath

INDEX = "index.json"
DOC_TOKENS = "doc_tokens.npy"
STREAMS = "streams.yaml"
MANIFEST = "manifest.json"
REPORT_HTML = "report.html"


def is_remote(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    """Join under a local or remote root (remote roots always use '/')."""
    if is_remote(base):
        return posixpath.join(base.rstrip("/") + "/", *parts) if parts else base
    return os.path.join(base, *parts)


def sources_dir(out: str) -> str:
    return join(out, "sources")


def source_dir(out: str, source: str) -> str:
    return join(out, "sources", source)


def source_index(out: str, source: str) -> str:
    return join(out, "sources", source, INDEX)


def stats_dir(out: str) -> str:
    return join(out, "stats")


def stats_path(out: str, source: str) -> str:
    return join(out, "stats", f"{source}.json")


def rejects_dir(out: str, source: str) -> str:
    return join(out, "rejects", source)


def examples_dir(out: str) -> str:
    return join(out, "examples")


def examples_path(out: str, source: str) -> str:
    return join(out, "examples", f"{source}.json")


def report_html(out: str) -> str:
    return join(out, REPORT_HTML)


def mixtures_dir(out: str) -> str:
    return join(out, "mixtures")


def mixture_dir(out: str, name: str) -> str:
    return join(out, "mixtures", name)


def staging_root(out: str) -> str:
    return join(out, ".staging")


def out_of_sources_dir(sources: str) -> str:
    """OUT from OUT/sources (readers that are handed the sources folder find stats beside it)."""
    return posixpath.dirname(sources.rstrip("/")) if is_remote(sources) else os.path.dirname(os.path.normpath(sources))
