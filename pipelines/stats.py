"""Per-source stats (OUT/stats/<source>.json) and the reconciliation every build must pass:

    read == malformed + kept + exact_duplicates + near_duplicates + semantic_duplicates + sum(rejected)
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Mapping

from pipelines.schema import STAGE_FIELD
from pipelines.shards import HIST_EDGES

STATS_VERSION = 1


class ReconciliationError(RuntimeError):
    pass


def make_stats(source: str, read: int, counts: Iterable[tuple[str, str, str, int]], parts: Iterable[Mapping],
               extra: Mapping | None = None) -> dict:
    """counts: (stage, reason, file, n) for every non-kept document; parts: write_part stats."""
    by_field: Counter = Counter()
    rejected: Counter = Counter()
    malformed_by_file: dict[str, Counter] = defaultdict(Counter)
    by_stage_reason: Counter = Counter()
    for stage, reason, file, n in counts:
        by_field[STAGE_FIELD[stage]] += n
        by_stage_reason[f"{stage}/{reason}"] += n
        if stage == "filter":
            rejected[reason] += n
        if stage == "read":
            malformed_by_file[file][reason] += n
    parts = sorted(parts, key=lambda p: p["part"])
    hist = [0] * len(HIST_EDGES)
    for p in parts:
        hist = [a + b for a, b in zip(hist, p["token_hist"])]
    stats = {
        "source": source,
        "read": int(read),
        "malformed": int(by_field["malformed"]),
        "kept": int(sum(p["kept"] for p in parts)),
        "exact_duplicates": int(by_field["exact_duplicates"]),
        "near_duplicates": int(by_field["near_duplicates"]),
        "semantic_duplicates": int(by_field["semantic_duplicates"]),
        "rejected": dict(sorted(rejected.items())),
        "tokens": int(sum(p["tokens"] for p in parts)),
        "bytes_kept": int(sum(p["bytes"] for p in parts)),
        "docs_ge_4096_tokens": int(sum(p["docs_ge_4096_tokens"] for p in parts)),
        "token_length_histogram": {"edges": HIST_EDGES, "counts": hist,
                                   "note": "counts[i] = documents with edges[i] <= tokens (incl. EOS) < edges[i+1]"},
        "malformed_by_file": {f: dict(sorted(c.items())) for f, c in sorted(malformed_by_file.items())},
        "by_stage_reason": dict(sorted(by_stage_reason.items())),
        "parts": len(parts),
        "stats_version": STATS_VERSION,
    }
    if extra:
        stats.update(extra)
    check_reconciles(stats)
    return stats


def accounted(stats: Mapping) -> int:
    return (stats["malformed"] + stats["kept"] + stats["exact_duplicates"] + stats["near_duplicates"]
            + stats["semantic_duplicates"] + sum(stats["rejected"].values()))


def check_reconciles(stats: Mapping) -> None:
    if stats["read"] != accounted(stats):
        raise ReconciliationError(
            f"{stats['source']}: read={stats['read']} but malformed+kept+duplicates+rejected={accounted(stats)}; "
            "documents were lost or double counted (a bug: please report it with this stats object)")
