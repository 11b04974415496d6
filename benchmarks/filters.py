"""Filter-stage throughput and rejection rates per source, against the NeoX tokenizer as the ceiling.

For every source sample in ../shared/corpora (or --corpora DIR) this runs the source's DEFAULT filter
chain (contract.registry) over every document and, in the same run and on the same texts, the raw
GPT-NeoX-20B tokenizer (``encode_batch_fast``). Both speeds are MB of UTF-8 text per CPU-second (one
core), best of --repeat runs, so contention from other processes affects them alike; ratio = filter /
tokenizer, and "share" = filter time / (filter + tokenize time), the filter stage's part of the work
these two stages do per document. The issue's bar: ratio >= 5 on every source.

Prints one Markdown table. Usage:
  python benchmarks/filters.py [--corpora DIR] [--tokenizer PATH] [--repeat 3]
  python benchmarks/filters.py --per-rule   # instead: each rule ALONE on each source (% of docs it
                                            # would reject), to show which rules fit which source
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.filters.compose import build_chain
from pipelines.filters.text_stats import char_class_table
from contract.registry import SOURCES

SHARED = ROOT.parent / "shared"
META_KEYS = ("url", "lang", "path", "title")


def load(path: Path) -> list[tuple[str, dict]]:
    import zstandard

    with open(path, "rb") as fh:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")
        recs = [json.loads(line) for line in reader]
    return [(r["text"], {k: str(r[k]) for k in META_KEYS if r.get(k) is not None}) for r in recs]


def cpu_best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return max(best, 1e-9)


def per_rule(corpora: Path) -> int:
    """Each registered rule alone (default thresholds) on each source sample: % of documents rejected;
    * marks rules in that source's default chain."""
    from pipelines.filters import RULES
    from pipelines.filters.compose import load_rule_modules

    load_rule_modules()
    names = [n for n in SOURCES if (corpora / f"{n}.jsonl.zst").exists()]
    samples = {n: load(corpora / f"{n}.jsonl.zst") for n in names}
    in_chain = {n: set(build_chain("default", SOURCES[n].filters, n).names) for n in names}
    print("Rejection rate of each rule alone, per source sample (% of docs; * = in the default chain)\n")
    print("| rule | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for rule in RULES:
        chain = build_chain([rule])
        cells = []
        for n in names:
            rate = sum(chain(t, m) is not None for t, m in samples[n]) / len(samples[n])
            cells.append(f"{rate:.0%}{'*' if rule in in_chain[n] else ''}")
        print(f"| {rule} | " + " | ".join(cells) + " |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", type=Path, default=SHARED / "corpora")
    ap.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizers" / "gpt-neox-20b" / "tokenizer.json")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--per-rule", action="store_true", help="print the per-rule rejection table instead")
    args = ap.parse_args()
    if args.per_rule:
        return per_rule(args.corpora)
    if not args.corpora.is_dir() or not args.tokenizer.is_file():
        print(f"needs {args.corpora} and {args.tokenizer}", file=sys.stderr)
        return 2

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(args.tokenizer))
    char_class_table()  # one-time per-process table build, not part of per-document cost

    rows, tot = [], Counter()
    for name, src in SOURCES.items():
        path = args.corpora / f"{name}.jsonl.zst"
        if not path.exists():
            continue
        docs = load(path)
        texts = [t for t, _ in docs]
        mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
        chain = build_chain("default", src.filters, name)
        reasons: Counter = Counter()

        def run_chain(docs=docs, chain=chain, reasons=reasons):
            reasons.clear()
            for text, meta in docs:
                res = chain(text, meta)
                if res is not None:
                    reasons[res[0]] += 1

        t_filter = cpu_best(run_chain, args.repeat)
        t_tok = cpu_best(lambda texts=texts: tok.encode_batch_fast(texts), args.repeat)
        rejected = sum(reasons.values())
        top = ", ".join(f"{r} {c}" for r, c in reasons.most_common(4)) or "-"
        rows.append((name, len(docs), mb, mb / t_filter, mb / t_tok, t_filter, t_tok, rejected, top))
        tot.update(docs=len(docs), mb=mb, t_filter=t_filter, t_tok=t_tok, rejected=rejected)

    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Filter stage vs NeoX tokenizer, MB/s per core (CPU time, best of {args.repeat}); "
          f"load average {load1:.1f} on {os.cpu_count()} CPUs\n")
    print("| source | docs | MB | filter MB/s | tokenizer MB/s | ratio | filter share | rejected | top rejecting rules (docs) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, n, mb, f, t, tf, tt, rej, top in rows:
        print(f"| {name} | {n} | {mb:.2f} | {f:.1f} | {t:.2f} | {f / t:.1f}x | {tf / (tf + tt):.0%} | "
              f"{rej / n:.1%} | {top} |")
    f_all, t_all = tot["mb"] / tot["t_filter"], tot["mb"] / tot["t_tok"]
    print(f"| **all** | {tot['docs']} | {tot['mb']:.2f} | {f_all:.1f} | {t_all:.2f} | {f_all / t_all:.1f}x | "
          f"{tot['t_filter'] / (tot['t_filter'] + tot['t_tok']):.0%} | {tot['rejected'] / tot['docs']:.1%} | |")
    worst = min(f / t for _, _, _, f, t, *_ in rows)
    print(f"\nslowest source ratio: {worst:.1f}x (bar: 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
