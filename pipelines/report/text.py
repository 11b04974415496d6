"""A build's OUT folder as plain text: the per-source and per-mixture summary (what ``python -m pipelines.inspect OUT``
prints, or its ``--json``) and decoded documents or samples."""
from __future__ import annotations

from typing import Sequence

from contract import layout
from contract.stats import pct
from pipelines.filters.warnings import warnings_for
from pipelines.report.reader import OutError, load_manifests, load_stats

_DUP_FIELDS = ("exact_duplicates", "near_duplicates", "semantic_duplicates")


def summarize(out: str) -> dict:
    """The summary as plain data (what ``--json`` prints)."""
    stats = load_stats(out)
    manifests = load_manifests(out)
    if not stats and not manifests:
        raise OutError(f"{layout.stats_dir(out)}: no <source>.json, and no "
                           f"{layout.join(layout.mixtures_dir(out), '<name>', layout.MANIFEST)}: is {out} a build's --out?")
    sources = {}
    for name, s in stats.items():
        read = int(s.get("read", 0))
        rejected = {k: int(v) for k, v in (s.get("rejected") or {}).items()}
        sources[name] = {
            "read": read,
            "kept": int(s.get("kept", 0)),
            "kept_share": (int(s.get("kept", 0)) / read) if read else None,
            "malformed": int(s.get("malformed", 0)),
            "decontaminated": int(s.get("decontaminated", 0)),
            "rejected": sum(rejected.values()),
            "top_reasons": sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:3],
            **{f: int(s.get(f, 0)) for f in _DUP_FIELDS},
            "tokens": int(s.get("tokens", 0)),
            "docs_ge_4096_tokens": int(s.get("docs_ge_4096_tokens", 0)),
            "demo": bool(s.get("demo", False)),
            "warnings": warnings_for(s),
        }
    mixtures = {}
    for name, m in manifests.items():
        streams = []
        for sname, st in (m.get("streams") or {}).items():
            streams.append({"stream": sname, "part": st.get("part"), "source": st.get("source"),
                            "planned_share": st.get("spec_share", st.get("share")),
                            "realized_share": st.get("realized_share"), "choose": st.get("choose"),
                            "epochs": st.get("epochs")})
        mixtures[name] = {
            "seq_len": m.get("seq_len"), "seed": m.get("seed"), "demo": bool(m.get("demo", False)),
            "budget_tokens": (m.get("budget") or {}).get("tokens"),
            "samples": sum(int(p.get("samples", 0)) for p in (m.get("parts") or {}).values()),
            "parts": {p: {"samples": v.get("samples"), "weight": v.get("weight"),
                          "realized_weight": v.get("realized_weight")} for p, v in (m.get("parts") or {}).items()},
            "streams": streams,
            "dropped": m.get("dropped") or [],
            "missing_sources": m.get("missing_sources") or [],
            "notes": m.get("notes") or [],
        }
    return {"out": out, "sources": sources, "mixtures": mixtures}


def _fmt_int(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "-"


def _table(headers: Sequence[str], rows: list[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_summary(summary: dict) -> str:
    parts = [f"Build output: {summary['out']}"]
    src = summary["sources"]
    if src:
        rows = []
        for name, s in src.items():
            reasons = ", ".join(f"{k} {v:,}" for k, v in s["top_reasons"]) or "-"
            rows.append([name + (" [demo]" if s["demo"] else ""), _fmt_int(s["read"]), _fmt_int(s["kept"]),
                         pct(s["kept_share"]), _fmt_int(s["malformed"]), _fmt_int(s["decontaminated"]),
                         _fmt_int(s["rejected"]),
                         _fmt_int(s["exact_duplicates"]), _fmt_int(s["near_duplicates"]),
                         _fmt_int(s["semantic_duplicates"]), _fmt_int(s["tokens"]), reasons])
        total = [sum(s[k] for s in src.values())
                 for k in ("read", "kept", "malformed", "decontaminated", "rejected", *_DUP_FIELDS, "tokens")]
        rows.append(["TOTAL", _fmt_int(total[0]), _fmt_int(total[1]), pct(total[1] / total[0] if total[0] else None),
                     *(_fmt_int(t) for t in total[2:]), ""])
        parts += ["", "Sources (OUT/stats):",
                  _table(["source", "read", "kept", "kept%", "malformed", "decontam", "rejected", "exact dup",
                          "near dup", "sem dup", "tokens", "top rejection reasons"], rows,
                         [False] + [True] * 10 + [False])]
        warns = [w for s in src.values() for w in s["warnings"]]
        if warns:
            parts += ["", "Warnings:", *(f"  ! {w}" for w in warns)]
    for name, m in summary["mixtures"].items():
        parts += ["", (f"Mixture {name}{' [demo]' if m['demo'] else ''}: {_fmt_int(m['samples'])} samples x "
                       f"{m['seq_len']} tokens per epoch (budget {_fmt_int(m['budget_tokens'])} tokens, "
                       f"seed {m['seed']})")]
        rows = [[s["part"] or "-", s["source"] or "-", pct(s["planned_share"]), pct(s["realized_share"]),
                 _fmt_int(s["choose"]), f"{s['epochs']:.2f}" if isinstance(s["epochs"], (int, float)) else "-"]
                for s in m["streams"]]
        parts.append(_table(["part", "source", "planned", "realized", "samples", "epochs"], rows,
                            [False, False, True, True, True, True]))
        for d in m["dropped"]:
            parts.append(f"  left out: {d.get('part')}/{d.get('source')}: {d.get('reason')}")
        if m["missing_sources"]:
            parts.append(f"  missing sources (renormalized): {', '.join(m['missing_sources'])}")
        parts += [f"  note: {n}" for n in m["notes"]]
    return "\n".join(parts)


def render_texts(rows: list[dict], title_keys: Sequence[str]) -> str:
    blocks = []
    for row in rows:
        head = "  ".join(f"{k}={row[k]}" for k in title_keys if row.get(k) is not None)
        tail = " [...]" if row["truncated"] else ""
        blocks.append(f"=== {head}\n{row['text']}{tail}")
    return "\n\n".join(blocks) if blocks else "(nothing to show)"

