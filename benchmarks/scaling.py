"""The whole build at 1, 2 and 4 GB of text: wall time, MB/s per core, peak RSS of the whole process tree,
time per stage, and in the same run the raw NeoX encoder ceilings (fastokens, the default, and the
`tokenizers` reference) on a sample of the same text.

The corpus is benchmarks/make_scale_corpus.py's non-duplicate rewrite of ../shared/corpora (all ten
sources; kept under --corpus-root so sizes are generated once). Each build is `python -m pipelines.build`
in a fresh process with `--workers` local workers and `--skip-mixture`, once per configuration: `default`
(the registry's dedupe: exact + MinHash everywhere and SemDedup on c4_en, what users run) and
`exact-minhash` (SemDedup off). RSS is sampled from /proc every 0.5 s over the driver and all its children, and so are the bytes under
OUT/.staging (its peak: what a cluster's object store must hold mid-build); the MinHash candidate pairs come from
the build's "dedupe work" line (Beam counters).

    python benchmarks/scaling.py --gb 1 2 4 --configs default exact-minhash
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
TOK = SHARED / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


def tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
        stack += children.get(pid, [])
    return total


def run_build(sources: Path, out: Path, workers: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "pipelines.build", "--mixture", "mpt30b_2k", "--sources", str(sources),
           "--out", str(out), "--tokenizer", str(TOK), "--skip-mixture", "--workers", str(workers), *extra]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, staging = [0], [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            staging[0] = max(staging[0], tree_bytes(out / ".staging"))
            done.wait(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    lines = []
    first_progress = None
    for line in proc.stdout:
        lines.append(line)
        if first_progress is None and line.startswith("[progress"):
            first_progress = time.time() - t0
    proc.wait()
    done.set()
    th.join()
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit("".join(lines[-40:]))
    stages = next((ln for ln in lines if ln.startswith("stage times")), "")
    work = next((ln for ln in lines if ln.startswith("dedupe work: ")), "")
    candidates = re.search(r"([\d,]+) MinHash candidate pairs", work)
    progress_gaps = _progress_gaps(lines)
    return {"wall": wall, "peak_tree_mb": peak[0] / 1e6, "stages": stages.strip(), "first_progress_s": first_progress,
            "max_progress_gap_s": progress_gaps, "peak_staging_mb": staging[0] / 1e6,
            "candidate_pairs": int(candidates.group(1).replace(",", "")) if candidates else 0}


def tree_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` now (0 while it does not exist; files may vanish mid-walk)."""
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total


def _progress_gaps(lines: list[str]) -> float | None:
    ts = [float(m.group(1).replace(",", "")) for ln in lines if (m := re.match(r"\[progress [\d:]+, ([\d,]+) s\]", ln))]
    return max((b - a for a, b in zip(ts, ts[1:])), default=None)


def encoder_ceiling(texts: list[str]) -> dict:
    """MB of text per CPU-second for the default encoder and the `tokenizers` reference, same texts."""
    from tokenization import NeoXTokenizer

    tok = NeoXTokenizer(str(TOK))
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    out = {}
    for name in ("fastokens", "tokenizers"):
        c = time.process_time()
        for i in range(0, len(texts), 512):
            tok.encode_batch(texts[i:i + 512], eos=True, encoder=name)
        out[name] = mb / (time.process_time() - c)
    out["encoder"] = tok.encoder
    return out


def sample_texts(root: Path, mb: float) -> list[str]:
    import zstandard

    texts, total = [], 0
    files = sorted(root.glob("*/r0000.jsonl.zst")) + sorted(root.glob("*/r0001.jsonl.zst"))
    for f in files:
        for line in zstandard.ZstdDecompressor().stream_reader(open(f, "rb")).read().decode().splitlines():
            t = json.loads(line)["text"]
            texts.append(t)
            total += len(t.encode("utf-8"))
            if total > mb * 1e6:
                return texts
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, nargs="+", default=[1, 2, 4])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--corpus-root", default="/tmp/mptdata-scale", help="generated corpora are kept here")
    ap.add_argument("--configs", nargs="+", default=["default", "exact-minhash"],
                    choices=["default", "exact-minhash"], help="dedupe configurations, each built at every size")
    ap.add_argument("--keep-output", action="store_true")
    args = ap.parse_args()
    if not TOK.exists():
        sys.exit(f"needs {TOK}")
    import yaml

    from benchmarks.make_scale_corpus import make

    rows = []
    ceiling = None
    for gb in args.gb:
        root = Path(args.corpus_root) / f"{gb:g}gb"
        if not (root / "sources.yaml").exists():
            print(f"generating {gb:g} GB corpus in {root} ...", file=sys.stderr, flush=True)
            make(root, gb)
        if ceiling is None:
            ceiling = encoder_ceiling(sample_texts(root, 64))
        for config in args.configs:
            cfg = yaml.safe_load((root / "sources.yaml").read_text())
            if config == "exact-minhash":
                for c in cfg["sources"].values():
                    c["dedupe"] = {"exact": True, "minhash": True}
            sources = root / f"sources-{config}.yaml"
            sources.write_text(yaml.safe_dump(cfg, sort_keys=False))
            out = root / "out"
            shutil.rmtree(out, ignore_errors=True)
            print(f"building {gb:g} GB, {config} ...", file=sys.stderr, flush=True)
            res = run_build(sources, out, args.workers, [])
            stats = [json.loads(p.read_text()) for p in sorted((out / "stats").glob("*.json"))]
            for st in stats:  # the build checks this before writing stats; a benchmark row must too
                assert st["read"] == (st["malformed"] + st["kept"] + st["exact_duplicates"] + st["near_duplicates"]
                                      + st["semantic_duplicates"] + st.get("decontaminated", 0)
                                      + sum(st["rejected"].values())), st["source"]
            res["semantic"] = sum(st["semantic_duplicates"] for st in stats)
            docs = sum(s["read"] for s in stats)
            in_mb = sum(f.stat().st_size for f in root.glob("*/*.jsonl.zst")) / 1e6
            text_in = _text_mb(root)
            rows.append((gb, config, text_in, in_mb, docs, sum(s["kept"] for s in stats),
                         sum(s["tokens"] for s in stats), res))
            if not args.keep_output:
                shutil.rmtree(out, ignore_errors=True)
    cores = args.workers
    print(f"\n{os.cpu_count()} cores, {cores} workers, load avg {os.getloadavg()[0]:.1f}; configs: default = the "
          f"registry's dedupe (SemDedup on c4_en), exact-minhash = SemDedup off; every source reconciled; "
          f"encoder in the build: {ceiling['encoder']}")
    print(f"raw encoder ceiling on 64 MB of the same text: fastokens {ceiling['fastokens']:.1f} MB/s per core, "
          f"tokenizers {ceiling['tokenizers']:.2f} MB/s per core")
    print("| text GB | config | MB text | MB on disk | docs | kept | semantic dups | tokens | wall s | MB/s | MB/s per core | core-h per TB "
          "| vs fastokens | vs tokenizers | peak tree RSS MB | peak staging MB (per MB text) | MinHash candidate pairs "
          "| first progress s | max progress gap s | stage times |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for gb, config, text_in, in_mb, docs, kept, toks, res in rows:
        rate = text_in / res["wall"]
        per_core = rate / cores
        print(f"| {gb:g} | {config} | {text_in:,.0f} | {in_mb:,.0f} | {docs:,} | {kept:,} | {res['semantic']:,} | "
              f"{toks:,} | {res['wall']:,.0f} | "
              f"{rate:.2f} | {per_core:.2f} | {1e6 / per_core / 3600:,.0f} | {per_core / ceiling['fastokens']:.3f} | "
              f"{per_core / ceiling['tokenizers']:.2f} | {res['peak_tree_mb']:,.0f} | "
              f"{res['peak_staging_mb']:,.0f} ({res['peak_staging_mb'] / text_in:.2f}) | {res['candidate_pairs']:,} | "
              f"{res['first_progress_s'] or float('nan'):.0f} | {res['max_progress_gap_s'] or float('nan'):.0f} | "
              f"{res['stages'].replace('stage times (seconds from start): ', '')} |")
    for config in args.configs:
        mine = [r for r in rows if r[1] == config]
        for a, b in zip(mine, mine[1:]):
            print(f"{config}: peak tree RSS {a[0]:g} -> {b[0]:g} GB: "
                  f"{100 * (b[7]['peak_tree_mb'] / a[7]['peak_tree_mb'] - 1):+.1f}%")


def _text_mb(root: Path) -> float:
    """UTF-8 MB of text in the generated corpus (the generator's count, kept beside it)."""
    meta = root / "text_mb.json"
    if meta.exists():
        return json.loads(meta.read_text())["text_mb"]
    import zstandard

    total = 0
    for f in sorted(root.glob("*/*.jsonl.zst")):
        with open(f, "rb") as fh:
            for line in zstandard.ZstdDecompressor().stream_reader(fh).read().decode().splitlines():
                total += len(json.loads(line)["text"].encode("utf-8", "surrogatepass"))
    meta.write_text(json.dumps({"text_mb": total / 1e6}))
    return total / 1e6


if __name__ == "__main__":
    main()
