"""The per-source stats record (``OUT/stats/<source>.json``), its reconciliation, the summary table, and how a
share reads in every human output (``pct``: the summary, warnings, inspect, the HTML and mixture reports).

The record is the contract between the build (which writes it) and everything that reads it (the mixture
builder checks token totals against it, ``pipelines.inspect`` and the summary print it). Every build must
pass the reconciliation before the file is written:

    read == malformed + kept + exact_duplicates + near_duplicates + semantic_duplicates + decontaminated
            + sum(rejected)

Beside the counts that reconcile, the record carries counts that do not remove documents: PII masking
(``pii_documents``, ``pii_emails``, ``pii_ips``), decontamination details (``decontam_by_eval``: eval
source -> contaminated documents, removed or cut; ``decontam_documents_cut`` and
``decontam_spans_removed``: spans mode, documents kept with matches cut out, and the spans cut), and
``meta_missing`` (metadata requirement of the chain's rules -> documents lacking it) and ``filter_stats``
(rule -> group -> key -> documents, from rules that tally what they measure: ``fasttext_lang``'s
``top_language``, ``fasttext_quality``'s ``score_bins``; only present when such a rule ran). ``filters`` (the
chain), ``decontam_index`` and ``warnings`` (``pipelines.filters.warnings``) are added by the build.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

STATS_VERSION = 2   # 2: decontaminated, pii_*, decontam_*, meta_missing (readers default them for 1)
# token-length histogram edges (document tokens incl. EOS); the last bin is open-ended
HIST_EDGES = [0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
# a Reject's stage -> the stats field it is counted under
STAGE_FIELD = {
    "read": "malformed",
    "decontam": "decontaminated",
    "filter": "rejected",
    "exact_dedupe": "exact_duplicates",
    "near_dedupe": "near_duplicates",
    "semantic_dedupe": "semantic_duplicates",
}
DEDUPE_STAGES = ("exact_dedupe", "near_dedupe", "semantic_dedupe")  # also the priority: exact beats near ...


class ReconciliationError(RuntimeError):
    pass


def pct(x, digits: int = 1) -> str:
    """A share as a percentage with ``digits`` decimals ("81.2%"); "-" when it is not a number (absent, NaN)."""
    if not isinstance(x, (int, float)) or math.isnan(x):
        return "-"
    return f"{100 * x:.{digits}f}%"


def histogram(lengths) -> list[int]:
    import numpy as np

    idx = np.searchsorted(np.asarray(HIST_EDGES[1:]), np.asarray(lengths), side="right")
    return np.bincount(idx, minlength=len(HIST_EDGES)).astype(int).tolist()


def make_stats(source: str, read: int, counts: Iterable[tuple[str, str, str, int]], parts: Iterable[Mapping],
               extra: Mapping | None = None) -> dict:
    """The stats record. counts: (stage, reason, file, n) for every non-kept document; parts: per-part
    ``kept, tokens, bytes, token_hist, docs_ge_4096_tokens, part``. Raises ReconciliationError."""
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
    pii: Counter = Counter()
    by_eval: Counter = Counter()
    cut: Counter = Counter()
    meta_missing: Counter = Counter()
    filter_stats: dict = {}
    for p in parts:
        hist = [a + b for a, b in zip(hist, p["token_hist"])]
        pii.update(p.get("pii") or {})
        dc = p.get("decontam") or {}
        by_eval.update(dc.get("by_eval") or {})
        cut.update({k: dc.get(k, 0) for k in ("documents_cut", "spans_removed")})
        meta_missing.update(p.get("meta_missing") or {})
        for rule, groups in (p.get("filter_stats") or {}).items():
            for group, counts in groups.items():
                filter_stats.setdefault(rule, {}).setdefault(group, Counter()).update(counts)
    stats = {
        "source": source,
        "read": int(read),
        "malformed": int(by_field["malformed"]),
        "kept": int(sum(p["kept"] for p in parts)),
        "exact_duplicates": int(by_field["exact_duplicates"]),
        "near_duplicates": int(by_field["near_duplicates"]),
        "semantic_duplicates": int(by_field["semantic_duplicates"]),
        "decontaminated": int(by_field["decontaminated"]),
        "rejected": dict(sorted(rejected.items())),
        "tokens": int(sum(p["tokens"] for p in parts)),
        "bytes_kept": int(sum(p["bytes"] for p in parts)),
        "docs_ge_4096_tokens": int(sum(p["docs_ge_4096_tokens"] for p in parts)),
        "token_length_histogram": {"edges": HIST_EDGES, "counts": hist,
                                   "note": "counts[i] = documents with edges[i] <= tokens (incl. EOS) < edges[i+1]"},
        "malformed_by_file": {f: dict(sorted(c.items())) for f, c in sorted(malformed_by_file.items())},
        "by_stage_reason": dict(sorted(by_stage_reason.items())),
        "pii_documents": int(pii["documents"]),
        "pii_emails": int(pii["emails"]),
        "pii_ips": int(pii["ips"]),
        "decontam_by_eval": {k: int(v) for k, v in sorted(by_eval.items())},
        "decontam_documents_cut": int(cut["documents_cut"]),
        "decontam_spans_removed": int(cut["spans_removed"]),
        "meta_missing": {k: int(v) for k, v in sorted(meta_missing.items())},
        "parts": len(parts),
        "stats_version": STATS_VERSION,
    }
    if filter_stats:  # absent otherwise: stats of builds without tallying rules stay as they were
        stats["filter_stats"] = {r: {g: {k: int(v) for k, v in sorted(c.items())} for g, c in sorted(gs.items())}
                                 for r, gs in sorted(filter_stats.items())}
    if extra:
        stats.update(extra)
    check_reconciles(stats)
    return stats


def accounted(stats: Mapping) -> int:
    return (stats["malformed"] + stats["kept"] + stats["exact_duplicates"] + stats["near_duplicates"]
            + stats["semantic_duplicates"] + stats.get("decontaminated", 0) + sum(stats["rejected"].values()))


def check_reconciles(stats: Mapping) -> None:
    if stats["read"] != accounted(stats):
        raise ReconciliationError(
            f"{stats['source']}: read={stats['read']} but malformed+kept+duplicates+decontaminated+rejected="
            f"{accounted(stats)}; "
            "documents were lost or double counted (a bug: please report it with this stats object)")


def summary_table(stats: Sequence[Mapping]) -> str:
    """One row per source and a TOTAL row: read, malformed, decontaminated, filtered, dups (exact/near/semantic),
    kept, tokens."""
    rows = []
    tot = dict(read=0, malformed=0, decontam=0, rejected=0, dups=0, kept=0, tokens=0)
    for s in stats:
        rej = sum(s["rejected"].values())
        dec = int(s.get("decontaminated", 0))
        dups = s["exact_duplicates"] + s["near_duplicates"] + s["semantic_duplicates"]
        top = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items(), key=lambda kv: -kv[1])[:3]) or "-"
        rows.append((s["source"], s["read"], s["malformed"], dec, rej,
                     f'{s["exact_duplicates"]}/{s["near_duplicates"]}/{s["semantic_duplicates"]}',
                     s["kept"], s["tokens"], s["docs_ge_4096_tokens"], top))
        for k, v in (("read", s["read"]), ("malformed", s["malformed"]), ("decontam", dec), ("rejected", rej),
                     ("dups", dups), ("kept", s["kept"]), ("tokens", s["tokens"])):
            tot[k] += v
    head = ("source", "read", "malformed", "decontam", "filtered", "dups e/n/s", "kept", "tokens", ">=4096",
            "top filter reasons")
    rows.append(("TOTAL", tot["read"], tot["malformed"], tot["decontam"], tot["rejected"], str(tot["dups"]), tot["kept"],
                 tot["tokens"], "", ""))
    cell = lambda v: f"{v:,}" if isinstance(v, int) else str(v)  # noqa: E731
    widths = [max(len(cell(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(cell(v).rjust(w) if 0 < i < 9 else cell(v).ljust(w)  # noqa: E731
                              for i, (v, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, rows)])
