"""The human report of a mixture: ``report.md`` plus ``report.png``.

The plot shows, per part, each source's planned share next to the share it realizes (``choose`` over
the part's samples), the part weights when there is more than one part, and the document-length
distribution of the sources with the long-document threshold drawn in. Written from the manifest (plus
the document lengths), so the report can never disagree with the manifest.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from contract.stats import pct


def plot(manifest: dict, doc_tokens: Mapping[str, np.ndarray], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = manifest["parts"]
    n = len(parts) + (1 if len(parts) > 1 else 0) + 1
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.6 * n))
    axes = np.atleast_1d(axes)
    i = 0
    for pname, part in parts.items():
        ax = axes[i]
        i += 1
        names = list(part["streams"])
        planned = [manifest["streams"][s]["share"] for s in names]
        realized = [manifest["streams"][s]["realized_share"] for s in names]
        x = np.arange(len(names))
        ax.bar(x - 0.2, [100 * v for v in planned], 0.4, label="planned")
        ax.bar(x + 0.2, [100 * v for v in realized], 0.4, label="realized")
        ax.set_xticks(x, [manifest["streams"][s]["source"] for s in names], rotation=30, ha="right")
        ax.set_ylabel("share of part (%)")
        ax.set_title(f"part {pname}: weight {pct(part['weight'], 2)}, {part['samples']} samples of "
                     f"{manifest['seq_len']} tokens, select={part['select']}, weighting={part['weighting']}")
        ax.legend()
    if len(parts) > 1:
        ax = axes[i]
        i += 1
        names = list(parts)
        x = np.arange(len(names))
        ax.bar(x - 0.2, [100 * parts[p]["weight"] for p in names], 0.4, label="planned")
        ax.bar(x + 0.2, [100 * parts[p]["realized_weight"] for p in names], 0.4, label="realized")
        ax.set_xticks(x, names)
        ax.set_ylabel("share of mixture (%)")
        ax.set_title("part weights")
        ax.legend(loc="lower center")
    ax = axes[i]
    lengths = [np.asarray(v, dtype=np.int64) for v in doc_tokens.values() if len(v)]
    cut = manifest["long_min_tokens"]
    if lengths:
        allv = np.concatenate(lengths)
        hi = max(int(allv.max()), cut * 2)
        bins = np.unique(np.logspace(0, np.log10(hi + 1), 60).astype(np.int64))
        ax.hist(allv, bins=bins, color="0.4")
        ax.set_xscale("log")
        n_long = int(sum(v["long_documents"] for v in manifest["sources"].values()))
        line = cut if manifest["long_count_eos"] else cut + 1   # the x axis counts the EOS
        what = "" if manifest["long_count_eos"] else " + EOS"
        ax.axvline(line, color="red", linestyle="--",
                   label=f"long threshold: {cut} tokens{what} ({n_long} documents at or above)")
        ax.set_yscale("log")
        ax.legend(loc="upper left")
    ax.set_xlabel("document length (tokens, EOS included)")
    ax.set_ylabel("documents")
    ax.set_title("document-length distribution of the mixture's sources")
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def markdown(manifest: dict, png_name: str = "report.png") -> str:
    m = manifest
    b = m["budget"]
    lines = [f"# Mixture `{m['name']}`", ""]
    if m["demo"]:
        lines += ["> **Demo scale.** Built from the demo corpora; the token budget is scaled down from the spec's "
                  f"{b['spec_tokens']:,} tokens to {b['tokens']:,} (see notes).", ""]
    lines += [m["spec"]["description"], "",
              f"- spec: `{m['spec']['file']}` (sha256 `{m['spec']['sha256'][:16]}`)",
              f"- sequence length: {m['seq_len']} tokens per sample (uint16), seed {m['seed']}",
              f"- budget: {b['tokens']:,} tokens ({b['origin']}); per epoch: {b['samples']:,} samples = "
              f"{b['samples'] * m['seq_len']:,} tokens",
              f"- long documents: >= {m['long_min_tokens']} tokens "
              f"({'EOS counted' if m['long_count_eos'] else 'EOS not counted'})",
              f"- content sha256: `{m['content_sha256']}`", ""]
    if m["missing_sources"]:
        lines += [f"**Missing sources, left out and renormalized:** {', '.join(m['missing_sources'])}", ""]
    if m["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in m["notes"]] + [""]
    if m["dropped"]:
        lines += ["## Streams left out", "", "| part | source | reason |", "|---|---|---|"]
        lines += [f"| {d['part']} | {d['source']} | {d['reason']} |" for d in m["dropped"]] + [""]
    lines += ["## Parts", "", "| part | select | weighting | planned weight | realized weight | samples |",
              "|---|---|---|---|---|---|"]
    for pname, p in m["parts"].items():
        lines.append(f"| {pname} | {p['select']} | {p['weighting']} | {pct(p['weight'], 2)} | "
                     f"{pct(p['realized_weight'], 2)} | {p['samples']:,} |")
    lines.append("")
    for pname, p in m["parts"].items():
        lines += [f"## Part `{pname}`", "",
                  "| source | spec share | planned share | realized share | eligible docs | eligible tokens | "
                  "packed samples | choose | epochs | remainder tokens | wrapped tokens | notes |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for sname in p["streams"]:
            s = m["streams"][sname]
            lines.append(f"| {s['source']} | {pct(s['spec_share'], 2)} | {pct(s['share'], 2)} | {pct(s['realized_share'], 2)} "
                         f"| {s['eligible_documents']:,} | {s['eligible_tokens']:,} | {s['packed_samples']:,} | "
                         f"{s['choose']:,} | {s['epochs']:.3g} | {s['remainder_tokens']:,} | {s['wrapped_tokens']:,} | "
                         f"{'; '.join(s['notes'])} |")
        lines.append("")
    lines += ["## Sources", "", "| source | documents | tokens | stats tokens | long documents | long tokens |",
              "|---|---|---|---|---|---|"]
    for src, s in m["sources"].items():
        st = "" if s["stats_tokens"] is None else f"{s['stats_tokens']:,}"
        lines.append(f"| {src} | {s['documents']:,} | {s['tokens']:,} | {st} | {s['long_documents']:,} | "
                     f"{s['long_tokens']:,} |")
    lines += ["", f"![planned vs realized proportions and document lengths]({png_name})", "",
              "Realized share = a stream's `choose` over its part's samples; `choose` is what streaming draws per "
              "epoch (streams.yaml). Epochs = choose x seq_len / eligible tokens (> 1: upsampled by repetition "
              "through streaming; < 1: a seeded random subset of documents was packed). The remainder (the tail "
              "after the last full sample) is not packed; in upsampled streams the last sample is instead completed "
              "with the stream's first tokens (wrapped tokens), so none of their data is left out.", ""]
    return "\n".join(lines)


def write_report(manifest: dict, doc_tokens: Mapping[str, np.ndarray], out_dir: str) -> None:
    plot(manifest, doc_tokens, os.path.join(out_dir, "report.png"))
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown(manifest))
