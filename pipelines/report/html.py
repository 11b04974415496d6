"""One self-contained HTML page that shows a build: what each rule removed and why, what the duplicates look
like, how long documents are, what the mixture really holds.

    python -m pipelines.inspect OUT --html FILE      (any OUT: local, gs://, s3://)
    OUT/report.html                                  written by pipelines.build at its end

Everything is inline (CSS and SVG charts, no script, no font, no image file, no network: a Content-Security-Policy
forbids any fetch), so the file can be mailed or opened from a bucket. It is built from what the build already
wrote and never reads the corpus:

- ``OUT/stats/<source>.json``: counts, token-length histogram, PII and decontamination counts, sanity warnings;
- ``OUT/examples/<source>.json`` (``pipelines.engine.examples``): bytes per stage and the bounded, deterministic
  reservoir of examples (up to 5 per rule and source, 300 characters each; duplicate pairs with their
  estimated Jaccard or cosine);
- ``OUT/mixtures/<name>/manifest.json`` and, for 3 decoded sample openings per stream, the first shard of
  each stream (the only shard data read; needs the tokenizer, else the openings are left out and the page
  says so).

Per source: the funnel read -> malformed -> decontaminated -> each filter rule (chain order: the first rule
that fails is the one counted) -> exact / near / semantic duplicates -> kept, in documents and in bytes;
the token-length histogram; examples for the top rules; duplicate pairs side by side; decontaminated
documents with the n-gram and eval source; PII counts. Per mixture: planned vs realized proportions, tokens
per stream, the long-sequence subset and the openings. Sanity warnings are at the top of the page. The
same build gives the same bytes (no clock, sorted everything); the page stays far under ``MAX_BYTES``.
"""
from __future__ import annotations

import html
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from contract import fsio, layout
from contract.registry import SOURCE_NAMES
from contract.stats import pct
from pipelines.filters.warnings import warnings_for
from pipelines.report.reader import (
    OutError,
    load_manifests,
    load_stats,
    mds_index,
    read_json,
    read_positions,
)

MAX_BYTES = 5 << 20
TOP_RULES = 8             # filter rules with examples per source (and every malformed reason)
OPENINGS = 3              # decoded sample openings per mixture stream
OPENING_TOKENS = 96
OPENING_CHARS = 300
STAGE_LABEL = {"read": "malformed", "decontam": "decontaminated", "filter": "filter",
               "exact_dedupe": "exact duplicate", "near_dedupe": "near duplicate", "semantic_dedupe": "semantic duplicate"}
COLORS = {"keep": "#3b7dd8", "drop": "#d9534f", "kept": "#2e9e5b", "planned": "#9aa7b8", "realized": "#3b7dd8",
          "long": "#e08a1e"}


# ---------------------------------------------------------------------------------------------
# gathering
# ---------------------------------------------------------------------------------------------


def _order(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda n: (SOURCE_NAMES.index(n) if n in SOURCE_NAMES else len(SOURCE_NAMES), n))


def collect(out: str, tok=None) -> dict:
    """Everything the page shows, as plain data (also handy for tests)."""
    stats = load_stats(out)
    manifests = load_manifests(out)
    if not stats and not manifests:
        raise OutError(f"{layout.stats_dir(out)}: no <source>.json and no mixture manifest: "
                       f"is {out} a build's --out?")
    warnings: list[str] = []
    sources = {}
    for name in _order(stats):
        s = stats[name]
        ex = None
        path = layout.examples_path(out, name)
        if fsio.exists(path):
            ex = read_json(path, "report examples")
        else:
            warnings.append(f"{name}: no examples/{name}.json (built before the report existed): "
                            "no examples and no byte counts per stage for this source")
        if ex is not None and not ex.get("complete", True):
            warnings.append(f"{name}: some parts were staged by an older build (resumed): examples come from the "
                            "other parts only")
        w = s.get("warnings") if s.get("warnings") is not None else warnings_for(s)
        warnings += [f"{name}: {x}" if not x.startswith(name) else x for x in w]
        sources[name] = {"stats": s, "examples": ex}
    mixtures = {}
    for name in sorted(manifests):
        m = manifests[name]
        if m.get("missing_sources"):
            warnings.append(f"mixture {name}: sources missing and renormalized away: {', '.join(m['missing_sources'])}")
        openings, why = {}, None
        if tok is None:
            why = "no tokenizer given (pass --tokenizer or set $NEOX_TOKENIZER): sample openings left out"
        else:
            for sname, st in sorted((m.get("streams") or {}).items()):
                try:
                    openings[sname] = _openings(layout.join(layout.mixture_dir(out, name), *st["path"].split("/")), tok)
                except Exception as e:  # noqa: BLE001 - a missing shard is shown, not fatal to the page
                    openings[sname] = []
                    warnings.append(f"mixture {name}: stream {sname}: cannot decode samples: {type(e).__name__}: {e}")
        mixtures[name] = {"manifest": m, "openings": openings, "openings_missing": why}
    return {"out": out, "sources": sources, "mixtures": mixtures, "warnings": warnings,
            "demo": any(bool(v["stats"].get("demo")) for v in sources.values())
            or any(bool(v["manifest"].get("demo")) for v in mixtures.values())}


def _openings(dataset_dir: str, tok) -> list[dict]:
    """``OPENINGS`` samples of the stream's first shard (a fixed seed), each decoded to its opening."""
    index = mds_index(dataset_dir)
    if not index["shards"]:
        return []
    n0 = int(index["shards"][0]["samples"])
    if n0 == 0:
        return []
    pos = np.sort(np.random.default_rng(0).choice(n0, size=min(OPENINGS, n0), replace=False)).tolist()
    rows = []
    for i, sample in read_positions(dataset_dir, [int(p) for p in pos], index):
        tokens = np.asarray(sample["tokens"])
        text = tok.decode(tokens[:OPENING_TOKENS].tolist()).rstrip("\ufffd")[:OPENING_CHARS]
        rows.append({"sample": i, "tokens": len(tokens), "documents": int((tokens == 0).sum()), "text": text})
    return rows


# ---------------------------------------------------------------------------------------------
# small HTML/SVG helpers
# ---------------------------------------------------------------------------------------------

_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def esc(x: Any) -> str:
    return html.escape(_BAD_CHARS.sub("\ufffd", str(x)), quote=True)


def _int(x) -> str:
    return f"{int(x):,}" if isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer()) else "-"


def _bytes(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def _num(x: float) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.4g}"
    return f"{int(x):,}"


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg class="chart" role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">' + "".join(body) + "</svg>")


def funnel_svg(rows: Sequence[tuple[str, Optional[int], Optional[int]]], unit: str, title: str) -> str:
    """rows: (label, removed, remaining after); the first row is "read" (removed None), the last "kept".
    Each bar spans what reached the stage: what it removed in red, what went on in blue."""
    label_w, bar_w, val_w, row_h = 170, 220, 110, 20
    total = rows[0][2] or 0
    scale = bar_w / total if total else 0.0
    fmt = _bytes if unit == "bytes" else _int
    body = [f'<text x="0" y="14" class="ct">{esc(title)}</text>']
    y = 24
    for label, removed, after in rows:
        before = (after or 0) + (removed or 0)
        body.append(f'<text x="{label_w - 6}" y="{y + 14}" class="lab" text-anchor="end">{esc(label)}</text>')
        w_after = max(after or 0, 0) * scale
        w_rem = max(removed or 0, 0) * scale
        color = COLORS["kept"] if label == "kept" else COLORS["keep"]
        if w_after > 0:
            body.append(f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w_after:.2f}" height="{row_h - 6}" '
                        f'fill="{color}"><title>{esc(label)}: {esc(fmt(after))} go on</title></rect>')
        if w_rem > 0:
            body.append(f'<rect class="bar" x="{label_w + w_after:.2f}" y="{y + 3}" width="{max(w_rem, 1.0):.2f}" '
                        f'height="{row_h - 6}" fill="{COLORS["drop"]}"><title>{esc(label)}: {esc(fmt(removed))} removed'
                        f'</title></rect>')
        if label in ("read", "kept"):
            txt = fmt(after)
        elif removed is None:
            txt = "n/a"
        elif removed < 0:  # PII placeholders can be longer than the addresses they replace
            txt = f"+{fmt(-removed)}"
        else:
            txt = f"-{fmt(removed)}" + (f" ({pct(removed / before)})" if before else "")
        body.append(f'<text x="{label_w + bar_w + 6}" y="{y + 14}" class="val">{esc(txt)}</text>')
        y += row_h
    return _svg(label_w + bar_w + val_w, y + 4, body, title)


def vbars_svg(labels: Sequence[str], values: Sequence[int], title: str, highlight: Sequence[bool] = (),
              xlabel: str = "") -> str:
    """A vertical bar chart (the token-length histogram)."""
    n = len(labels)
    bw, gap, h, top, left = 42, 6, 150, 36, 8
    width = left + n * (bw + gap) + 8
    vmax = max(values) if values and max(values) > 0 else 1
    body = [f'<text x="0" y="14" class="ct">{esc(title)}</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        x = left + i * (bw + gap)
        bh = h * v / vmax
        color = COLORS["long"] if (highlight and highlight[i]) else COLORS["keep"]
        if v > 0:
            body.append(f'<rect class="bar" x="{x}" y="{top + h - max(bh, 1):.2f}" width="{bw}" height="{max(bh, 1):.2f}" '
                        f'fill="{color}"><title>{esc(lab)} tokens: {v:,} documents</title></rect>')
        body.append(f'<text x="{x + bw / 2}" y="{top + h - max(bh, 1) - 3:.2f}" class="val" text-anchor="middle">'
                    f'{esc(_int(v))}</text>')
        body.append(f'<text x="{x + bw / 2}" y="{top + h + 13}" class="lab small" text-anchor="middle">{esc(lab)}</text>')
    if xlabel:
        body.append(f'<text x="{left}" y="{top + h + 30}" class="lab small">{esc(xlabel)}</text>')
    return _svg(width, top + h + 36, body, title)


def grouped_hbars_svg(labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], title: str,
                      fmt=pct) -> str:
    """Horizontal bars, one group per label, one bar per series (name, color, values)."""
    label_w, bar_w, val_w = 150, 260, 80
    bh = 11
    group_h = bh * len(series) + 8
    vmax = max((v for _n, _c, vals in series for v in vals), default=0) or 1
    body = [f'<text x="0" y="14" class="ct">{esc(title)}</text>']
    lx = label_w
    for name, color, _vals in series:  # legend
        body.append(f'<rect x="{lx}" y="20" width="10" height="10" fill="{color}"/>'
                    f'<text x="{lx + 14}" y="29" class="lab small">{esc(name)}</text>')
        lx += 14 + 7 * len(name) + 16
    y = 38
    for i, lab in enumerate(labels):
        body.append(f'<text x="{label_w - 6}" y="{y + group_h / 2 + 2:.1f}" class="lab" text-anchor="end">{esc(lab)}</text>')
        for j, (name, color, vals) in enumerate(series):
            v = vals[i]
            w = bar_w * v / vmax
            yy = y + j * bh
            if w > 0:
                body.append(f'<rect class="bar" x="{label_w}" y="{yy}" width="{max(w, 1.0):.2f}" height="{bh - 2}" '
                            f'fill="{color}"><title>{esc(lab)} {esc(name)}: {esc(fmt(v))}</title></rect>')
            body.append(f'<text x="{label_w + max(w, 0) + 4:.2f}" y="{yy + bh - 3}" class="val small">{esc(fmt(v))}</text>')
        y += group_h
    return _svg(label_w + bar_w + val_w, y + 4, body, title)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], num: Sequence[bool] = ()) -> str:
    th = "".join(f'<th{" class=n" if (num and num[i]) else ""}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r in rows:
        body.append("<tr>" + "".join(f'<td{" class=n" if (num and num[i]) else ""}>{c if isinstance(c, _Raw) else esc(c)}</td>'
                                     for i, c in enumerate(r)) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _anchor(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts))


# ---------------------------------------------------------------------------------------------
# per source
# ---------------------------------------------------------------------------------------------


def funnel_rows(s: Mapping, ex: Optional[Mapping]) -> tuple[list, Optional[list]]:
    """(documents rows, bytes rows or None): (label, removed, remaining after), in processing order."""
    by = s.get("by_stage_reason") or {}
    bytes_by = (ex or {}).get("bytes") or {}
    read_bytes = (ex or {}).get("read_bytes")
    docs = [("read", None, int(s["read"]))]
    byt = [("read", None, int(read_bytes))] if ex is not None else None
    left_d, left_b = int(s["read"]), (int(read_bytes) if ex is not None else 0)

    def add(label: str, n: int, key_prefixes: Sequence[str], has_bytes: bool = True):
        nonlocal left_d, left_b
        left_d -= n
        docs.append((label, n, left_d))
        if byt is not None:
            if has_bytes:
                b = sum(v for k, v in bytes_by.items() if any(k.startswith(p) for p in key_prefixes))
                left_b -= b
                byt.append((label, b, left_b))
            else:
                byt.append((label, None, left_b))

    malformed = {k.split("/", 1)[1]: v for k, v in by.items() if k.startswith("read/")}
    for reason, n in sorted(malformed.items(), key=lambda kv: (-kv[1], kv[0])):
        add(f"malformed: {reason}", int(n), [f"read/{reason}"], has_bytes=False)
    if not malformed and s.get("malformed"):
        add("malformed", int(s["malformed"]), ["read/"], has_bytes=False)
    if s.get("decontaminated") or s.get("decontam"):
        add("decontaminated", int(s.get("decontaminated", 0)), ["decontam/"])
    rejected = s.get("rejected") or {}
    chain = list(s.get("filters") or [])
    for rule in [r for r in chain if r in rejected] + sorted(r for r in rejected if r not in chain):
        add(f"rule {rule}", int(rejected[rule]), [f"filter/{rule}"])
    for stage, field in (("exact_dedupe", "exact_duplicates"), ("near_dedupe", "near_duplicates"),
                         ("semantic_dedupe", "semantic_duplicates")):
        if s.get(field):
            add(STAGE_LABEL[stage], int(s[field]), [f"{stage}/"])
    docs.append(("kept", None, int(s["kept"])))
    if byt is not None:
        kept_b = int(s.get("bytes_kept", 0))
        if left_b != kept_b:  # PII masking and decontam cuts rewrite kept documents in place
            byt.append(("masked / cut in place", left_b - kept_b, kept_b))
        byt.append(("kept", None, kept_b))
    return docs, byt


def _threshold(ex: Optional[Mapping], rule: str) -> str:
    params = ((ex or {}).get("thresholds") or {}).get(rule)
    if not params:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _snip(text: Optional[str], cls: str = "snip") -> str:
    if text is None:
        return '<div class="snip none">(text not available)</div>'
    return f'<pre class="{cls}">{esc(text)}</pre>'


def _snip_match(r: Mapping) -> str:
    """A decontaminated document's window with the eval n-gram marked."""
    text, m = r.get("text"), r.get("match")
    if text is None or not m:
        return _snip(text)
    lead = "&hellip;" if r.get("text_offset") else ""
    return (f'<pre class="snip">{lead}{esc(text[:m[0]])}<mark>{esc(text[m[0]:m[1]])}</mark>'
            f"{esc(text[m[1]:])}</pre>")


def _reject_examples(name: str, s: Mapping, ex: Optional[Mapping]) -> str:
    by = s.get("by_stage_reason") or {}
    order = lambda k: (-by[k], k)  # noqa: E731
    keys = (sorted((k for k in by if k.startswith("filter/")), key=order)[:TOP_RULES]
            + sorted((k for k in by if k.startswith("read/")), key=order))   # malformed: every reason (no text)
    if not keys:
        return "<p class=muted>No document was rejected by a filter rule or malformed.</p>"
    if ex is None:
        return "<p class=muted>No examples file for this source.</p>"
    out = []
    for key in keys:
        stage, reason = key.split("/", 1)
        rows = (ex.get("examples") or {}).get(key) or []
        what = "malformed input" if stage == "read" else f"rule {reason}"
        thr = "" if stage == "read" else f" &middot; threshold: <code>{esc(_threshold(ex, reason))}</code>"
        out.append(f'<div class="rule" id="{_anchor("ex", name, key)}" data-key="{esc(key)}">'
                   f'<h4>{esc(what)} <span class=muted>({by[key]:,} documents{", " + esc(reason) if stage == "read" else ""})'
                   f'</span>{thr}</h4>')
        if not rows:
            out.append("<p class=muted>(no example sampled)</p>")
        for r in rows:
            meta = [f"<b>{esc(r.get('id', ''))}</b>"]
            if r.get("loc") and r.get("loc") != r.get("id"):
                meta.append(f"at {esc(r['loc'])}")
            if "value" in r:
                meta.append(f"measured <b>{esc(_num(r['value']))}</b>")
            if r.get("detail"):
                meta.append(esc(r["detail"]))
            if "chars" in r:
                meta.append(f"{r['chars']:,} chars")
            out.append(f'<div class="ex"><div class="meta">{" &middot; ".join(meta)}</div>'
                       + (_snip(r.get("text")) if stage != "read" or r.get("text") else "") + "</div>")
        out.append("</div>")
    return "".join(out)


def _pairs(name: str, key: str, rows: list, score_label: str, count: int) -> str:
    stage = key.split("/", 1)[0]
    out = [f'<div class="pairs" id="{_anchor("dup", name, stage)}" data-key="{esc(key)}"><h4>{esc(STAGE_LABEL[stage])}s '
           f'<span class=muted>({count:,} removed; {len(rows)} shown)</span></h4>']
    for r in rows:
        score = r.get("pair_score")
        scores = []
        if score is not None:
            scores.append(f"{score_label} with its keeper: <b>{score:.3f}</b>")
        if stage == "near_dedupe":
            scores.append(f"highest verified Jaccard estimate in its component: {r.get('value', float('nan')):.3f}")
        elif stage == "semantic_dedupe" and score is None:
            scores.append(f"cosine: <b>{r.get('value', float('nan')):.3f}</b>")
        elif stage == "semantic_dedupe":
            scores.append(f"highest in-cluster cosine: {r.get('value', float('nan')):.3f}")
        out.append(f'<div class="pair"><div class="meta">{" &middot; ".join(scores) or "same normalized text"}</div>'
                   f'<div class="side"><div><div class="meta">removed: <b>{esc(r.get("id", ""))}</b></div>'
                   f'{_snip(r.get("text"))}</div><div><div class="meta">kept: <b>{esc(r.get("keeper_id", ""))}</b></div>'
                   f'{_snip(r.get("keeper_text"))}</div></div></div>')
    out.append("</div>")
    return "".join(out)


def _hist(s: Mapping) -> str:
    h = s.get("token_length_histogram") or {}
    edges, counts = h.get("edges"), h.get("counts")
    if not edges or not counts or not sum(counts):
        return "<p class=muted>No kept documents: no token-length histogram.</p>"

    def lab(i):
        lo = edges[i]
        hi = edges[i + 1] if i + 1 < len(edges) else None
        k = lambda v: f"{v // 1024}k" if v >= 1024 else str(v)  # noqa: E731
        return f"{k(lo)}-{k(hi)}" if hi else f"{k(lo)}+"
    last = max(i for i, c in enumerate(counts) if c) + 1
    n = max(last, min(len(counts), 8))
    return vbars_svg([lab(i) for i in range(n)], counts[:n], "token-length histogram (kept documents, EOS included)",
                     [edges[i] >= 4096 for i in range(n)], "orange: 4096+ tokens (the long-sequence subset)")


def render_source(name: str, s: Mapping, ex: Optional[Mapping]) -> str:
    docs_rows, byte_rows = funnel_rows(s, ex)
    kept_share = s["kept"] / s["read"] if s.get("read") else None
    head = (f'<section class="source" id="{_anchor("src", name)}" data-source="{esc(name)}">'
            f'<h2>{esc(name)}{" <span class=badge>demo</span>" if s.get("demo") else ""}</h2>'
            f'<p>{_int(s["read"])} read &rarr; {_int(s["kept"])} kept ({pct(kept_share)}), {_int(s.get("tokens", 0))} '
            f'tokens, {_bytes(s.get("bytes_kept"))} of text kept, {_int(s.get("docs_ge_4096_tokens", 0))} documents '
            f'with 4096+ tokens.</p>')
    parts = [head]
    for w in s.get("warnings") or []:
        parts.append(f'<p class="warn">&#9888; {esc(w)}</p>')
    charts = [funnel_svg(docs_rows, "documents", "funnel: documents")]
    if byte_rows is not None:
        charts.append(funnel_svg(byte_rows, "bytes", "funnel: UTF-8 bytes of text"))
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    unfired = [r for r in (s.get("filters") or []) if r not in (s.get("rejected") or {})]
    if unfired:
        parts.append(f'<p class="muted small">Rules of the chain that removed nothing: {esc(", ".join(unfired))}. '
                     "A document is counted under the first rule it fails (chain order).</p>")
    parts.append(f'<div class="charts">{_hist(s)}</div>')
    # PII and decontamination facts
    facts = []
    if s.get("pii") or s.get("pii_documents"):
        facts.append(f'<p class="pii">PII masked: <b>{_int(s.get("pii_documents", 0))}</b> documents, '
                     f'<b>{_int(s.get("pii_emails", 0))}</b> e-mail addresses, <b>{_int(s.get("pii_ips", 0))}</b> IP '
                     "addresses (replaced before filtering; examples below are shown masked).</p>")
    else:
        facts.append('<p class="pii muted">PII masking off for this source (pii: false).</p>')
    parts += facts
    parts.append("<h3>Rejected examples (top rules)</h3>")
    parts.append(_reject_examples(name, s, ex))
    examples = (ex or {}).get("examples") or {}
    if s.get("decontaminated") or s.get("decontam_by_eval") or s.get("decontam"):
        dc = s.get("decontam") or {}
        parts.append(f"<h3>Decontamination</h3><p>{esc(dc.get('mode', ''))} mode, {esc(dc.get('n', ''))}-grams: "
                     f"{_int(s.get('decontaminated', 0))} documents removed, {_int(s.get('decontam_documents_cut', 0))} "
                     f"cut ({_int(s.get('decontam_spans_removed', 0))} spans).</p>")
        by_eval = s.get("decontam_by_eval") or {}
        if by_eval:
            parts.append(_table(["eval source", "contaminated documents"],
                                [[k, _int(v)] for k, v in sorted(by_eval.items())], [False, True]))
        rows = examples.get("decontam/eval_overlap") or []
        if rows:
            parts.append(f'<div class="rule" id="{_anchor("ex", name, "decontam")}" data-key="decontam/eval_overlap">')
            for r in rows:
                parts.append(f'<div class="ex"><div class="meta"><b>{esc(r.get("id", ""))}</b> &middot; eval source '
                             f'<b>{esc(r.get("eval_source", "?"))}</b> &middot; n-gram <code>{esc(r.get("ngram", ""))}'
                             f'</code></div>{_snip_match(r)}</div>')
            parts.append("</div>")
    dup_fields = (("exact_dedupe", "exact_duplicates", "identical normalized text"),
                  ("near_dedupe", "near_duplicates", "estimated Jaccard (MinHash)"),
                  ("semantic_dedupe", "semantic_duplicates", "cosine"))
    if any(s.get(f) for _st, f, _l in dup_fields):
        parts.append("<h3>Duplicates</h3>")
        for stage, field, label in dup_fields:
            if not s.get(field):
                continue
            key = next((k for k in examples if k.startswith(stage + "/")), f"{stage}/")
            parts.append(_pairs(name, key, examples.get(key) or [], label, int(s[field])))
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# per mixture
# ---------------------------------------------------------------------------------------------


def render_mixture(name: str, mx: Mapping) -> str:
    m = mx["manifest"]
    streams = m.get("streams") or {}
    parts_m = m.get("parts") or {}
    b = m.get("budget") or {}
    out = [f'<section class="mixture" id="{_anchor("mix", name)}" data-mixture="{esc(name)}">'
           f'<h2>Mixture {esc(name)}{" <span class=badge>demo</span>" if m.get("demo") else ""}</h2>'
           f'<p>{_int(b.get("samples", 0))} samples &times; {esc(m.get("seq_len"))} tokens per epoch '
           f'({_int(b.get("tokens_per_epoch", 0))} tokens; budget {_int(b.get("tokens", 0))}, {esc(b.get("origin", ""))}), '
           f'seed {esc(m.get("seed"))}.</p>']
    for n in m.get("notes") or []:
        out.append(f'<p class="muted small">note: {esc(n)}</p>')
    for d in m.get("dropped") or []:
        out.append(f'<p class="muted small">stream {esc(d.get("part"))}/{esc(d.get("source"))} left out: '
                   f'{esc(d.get("reason"))}</p>')
    if len(parts_m) > 1:
        labels = list(parts_m)
        out.append(f'<div class="charts">{grouped_hbars_svg(labels, [("planned", COLORS["planned"], [parts_m[p].get("weight", 0) for p in labels]), ("realized", COLORS["realized"], [parts_m[p].get("realized_weight", 0) for p in labels])], "part weights: planned vs realized")}</div>')
    for pname, p in parts_m.items():
        names = [s for s in p.get("streams") or [] if s in streams]
        labels = [streams[s].get("source", s) for s in names]
        planned = [float(streams[s].get("share", streams[s].get("spec_share", 0)) or 0) for s in names]
        realized = [float(streams[s].get("realized_share", 0) or 0) for s in names]
        tokens = [int(streams[s].get("choose", 0)) * int(m.get("seq_len", 0)) for s in names]
        long_part = p.get("select") == "long"
        out.append(f'<h3>Part {esc(pname)}{" (long-sequence subset)" if long_part else ""}</h3>'
                   f'<p class="muted small">select={esc(p.get("select"))}, weighting={esc(p.get("weighting"))}, '
                   f'planned weight {pct(p.get("weight"))}, realized {pct(p.get("realized_weight"))}, '
                   f'{_int(p.get("samples", 0))} samples.</p>')
        if names:
            out.append('<div class="charts">'
                       + grouped_hbars_svg(labels, [("planned", COLORS["planned"], planned),
                                                    ("realized", COLORS["realized"], realized)],
                                           f"part {pname}: planned vs realized share")
                       + grouped_hbars_svg(labels, [("tokens per epoch", COLORS["long"] if long_part else COLORS["kept"],
                                                     tokens)], f"part {pname}: tokens per stream (per epoch)", fmt=_int)
                       + "</div>")
            out.append(_table(["source", "planned", "realized", "samples (choose)", "tokens per epoch", "eligible docs",
                               "eligible tokens", "epochs"],
                              [[labels[i], pct(planned[i], 2), pct(realized[i], 2), _int(streams[s].get("choose", 0)),
                                _int(tokens[i]), _int(streams[s].get("eligible_documents", 0)),
                                _int(streams[s].get("eligible_tokens", 0)),
                                f'{streams[s].get("epochs", 0):.3g}'] for i, s in enumerate(names)],
                              [False] + [True] * 7))
    srcs = m.get("sources") or {}
    if srcs:
        cut = m.get("long_min_tokens")
        out.append(f"<h3>Long-sequence subset (documents with {esc(cut)}+ tokens"
                   f"{'' if m.get('long_count_eos') else ', EOS not counted'})</h3>")
        labels = _order(srcs)
        out.append('<div class="charts">' + grouped_hbars_svg(
            labels, [("long documents", COLORS["long"], [int(srcs[s].get("long_documents", 0)) for s in labels])],
            "long documents per source", fmt=_int) + "</div>")
        out.append(_table(["source", "documents", "tokens", "long documents", "long tokens", "long share of tokens"],
                          [[s, _int(srcs[s].get("documents", 0)), _int(srcs[s].get("tokens", 0)),
                            _int(srcs[s].get("long_documents", 0)), _int(srcs[s].get("long_tokens", 0)),
                            pct(srcs[s]["long_tokens"] / srcs[s]["tokens"] if srcs[s].get("tokens") else None)]
                           for s in labels], [False] + [True] * 5))
    out.append("<h3>Sample openings</h3>")
    if mx.get("openings_missing"):
        out.append(f'<p class="muted">{esc(mx["openings_missing"])}</p>')
    else:
        out.append(f'<p class="muted small">{OPENINGS} packed samples per stream (fixed seed, the stream\'s first shard), '
                   f"first {OPENING_CHARS} characters; &lt;|endoftext|&gt; marks a document boundary.</p>")
        for sname, rows in sorted(mx["openings"].items()):
            out.append(f'<div class="stream" data-stream="{esc(sname)}"><h4>{esc(sname)}</h4>')
            for r in rows:
                out.append(f'<div class="ex"><div class="meta">sample {r["sample"]:,} &middot; {r["tokens"]:,} tokens '
                           f'&middot; {r["documents"]} document ends</div>{_snip(r["text"])}</div>')
            out.append("</div>")
    out.append("</section>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# page
# ---------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#c9d1de}
main{padding:8px 24px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:4px 18px 14px;margin:16px 0}
h2{font-size:18px;margin:12px 0 4px}h3{font-size:15px;margin:16px 0 6px;border-bottom:1px solid #eef0f4}
h4{font-size:13px;margin:10px 0 4px}
.badge{background:#e08a1e;color:#fff;border-radius:3px;padding:1px 6px;font-size:11px;vertical-align:middle}
.warnings{background:#fff4e5;border:1px solid #f0b429;border-radius:6px;padding:8px 18px;margin:16px 0}
.warnings li,.warn{color:#8a4b00}.ok{color:#2e7d32}
.muted{color:#6b7385}.small{font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin:8px 0}
svg.chart{background:#fbfcfd;border:1px solid #eef0f4;border-radius:4px;padding:6px}
svg .ct{font-size:12px;font-weight:600;fill:#1d2330}svg .lab{font-size:11px;fill:#3a4254}
svg .val{font-size:11px;fill:#3a4254}svg .small{font-size:10px}
table{border-collapse:collapse;margin:6px 0;font-size:12px}th,td{border:1px solid #e3e7ee;padding:3px 8px;text-align:left}
th{background:#f0f3f7}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ex{margin:6px 0 10px}.meta{font-size:12px;color:#3a4254;margin-bottom:2px}
pre.snip{white-space:pre-wrap;word-break:break-word;background:#f7f8fa;border-left:3px solid #c4cbd6;margin:0;
padding:4px 8px;font:12px/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;max-height:9em;overflow:auto}
.none{font-size:12px;color:#6b7385}
.pair{margin:8px 0 14px}.side{display:grid;grid-template-columns:1fr 1fr;gap:10px}
mark{background:#ffe08a;padding:0 1px}nav a{margin-right:10px}code{background:#f0f3f7;padding:0 3px;border-radius:3px}
"""


def render(data: Mapping) -> str:
    sources, mixtures = data["sources"], data["mixtures"]
    title = "mptdata build report"  # no OUT path: the same build gives the same bytes wherever it is written
    rows = []
    for name, v in sources.items():
        s = v["stats"]
        rows.append([_Raw(f'<a href="#{_anchor("src", name)}">{esc(name)}</a>'), _int(s["read"]), _int(s.get("malformed", 0)),
                     _int(s.get("decontaminated", 0)), _int(sum((s.get("rejected") or {}).values())),
                     _int(s.get("exact_duplicates", 0)), _int(s.get("near_duplicates", 0)),
                     _int(s.get("semantic_duplicates", 0)), _int(s["kept"]),
                     pct(s["kept"] / s["read"] if s.get("read") else None), _int(s.get("tokens", 0)),
                     _bytes(s.get("bytes_kept"))])
    warn = data["warnings"]
    body = [f"<header><h1>{esc(title)}</h1><p>{len(sources)} source(s), {len(mixtures)} mixture(s)"
            f"{' &middot; <b>DEMO DATA</b>: small stand-ins made from this machine&#39;s Python install, not the real corpora' if data['demo'] else ''}"
            "</p></header><main>"]
    if warn:
        body.append('<div class="warnings" id="warnings"><h3>Sanity warnings</h3><ul>'
                    + "".join(f"<li>{esc(w)}</li>" for w in warn) + "</ul></div>")
    else:
        body.append('<div class="warnings ok" id="warnings"><b>No sanity warnings.</b></div>')
    nav = [f'<a href="#{_anchor("src", n)}">{esc(n)}</a>' for n in sources]
    nav += [f'<a href="#{_anchor("mix", n)}">mixture {esc(n)}</a>' for n in mixtures]
    body.append(f"<nav>{''.join(nav)}</nav>")
    if rows:
        body.append('<section id="overview"><h2>Sources</h2>'
                    + _table(["source", "read", "malformed", "decontam", "filtered", "exact dup", "near dup", "sem dup",
                              "kept", "kept %", "tokens", "text kept"], rows, [False] + [True] * 11)
                    + '<p class="muted small">Each source below: the funnel in processing order (read &rarr; malformed '
                      "&rarr; decontaminated &rarr; filter rules in chain order &rarr; exact, near, semantic duplicates "
                      "&rarr; kept), in documents and in bytes of text; examples are a fixed-size deterministic sample "
                      "(smallest hash of the document uid per rule), not the first ones.</p></section>")
    for name, v in sources.items():
        body.append(render_source(name, v["stats"], v["examples"]))
    for name, mx in mixtures.items():
        body.append(render_mixture(name, mx))
    body.append("</main>")
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n")


def build_html(out: str, tok=None) -> str:
    data = collect(out, tok)
    page = render(data)
    if len(page.encode("utf-8")) > MAX_BYTES:  # cannot happen with the bounded samples; a guard, not a path
        for v in data["sources"].values():
            for rows in ((v["examples"] or {}).get("examples") or {}).values():
                del rows[2:]
        page = render(data)
    return page


def write_report(out: str, path: Optional[str] = None, tok=None) -> tuple[str, int]:
    """Write the page for build ``out`` to ``path`` (default ``OUT/report.html``); returns (path, bytes)."""
    path = path or layout.report_html(out)
    data = build_html(out, tok).encode("utf-8", "replace")
    fsio.write_bytes(path, data)
    return path, len(data)
