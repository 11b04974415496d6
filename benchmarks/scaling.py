"""Build throughput with 1 and 2 local worker processes, and peak memory per worker, at two corpus sizes.

The corpus is ../shared/corpora (all ten categories) at 1x and 2x; the 2x copy gets a distinct marker line
per document so exact dedupe does not simply drop it. Each configuration runs `python -m pipelines.build`
in a fresh subprocess (default filters, exact + default dedupe except SemDedup, --skip-mixture), so
RUSAGE_CHILDREN gives the peak RSS of the largest worker process and RUSAGE_SELF the driver's.
Usage: python benchmarks/scaling.py [--sizes 1 2] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
TOK = SHARED / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pipelines.build import main
t = time.perf_counter()
rc = main(sys.argv[2:])
dt = time.perf_counter() - t
print("RESULT " + json.dumps({"rc": rc, "seconds": dt,
      "driver_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def make_corpus(root: Path, copies: int) -> tuple[Path, float]:
    import zstandard

    from contract.registry import SOURCE_NAMES

    cfg, nbytes = {"sources": {}}, 0
    for n in SOURCE_NAMES:
        raw = zstandard.ZstdDecompressor().stream_reader(open(SHARED / "corpora" / f"{n}.jsonl.zst", "rb")).read().decode()
        paths = []
        for c in range(copies):
            rows = []
            for line in raw.splitlines():
                r = json.loads(line)
                if c:
                    r["text"] = f"[copy {c}]\n" + r["text"]
                    r["id"] = f"{r['id']}#copy{c}"
                nbytes += len(r["text"].encode())
                rows.append(json.dumps(r))
            p = root / f"{n}-{c}.jsonl.zst"
            p.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(rows) + "\n").encode()))
            paths.append(str(p))
        cfg["sources"][n] = {"inputs": paths, "id_field": "id", "text_field": "text",
                             "dedupe": {"exact": True, "minhash": True}}
    import yaml

    (root / "sources.yaml").write_text(yaml.safe_dump(cfg))
    return root / "sources.yaml", nbytes / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-minhash", action="store_true", help="exact dedupe only")
    args = ap.parse_args()
    if not TOK.exists():
        sys.exit(f"needs {TOK}")
    rows = []
    for size in args.sizes:
        root = Path(tempfile.mkdtemp(prefix=f"bench-scale{size}-"))
        try:
            sources, mb = make_corpus(root, size)
            if args.no_minhash:
                import yaml
                cfg = yaml.safe_load(sources.read_text())
                for c in cfg["sources"].values():
                    c["dedupe"] = {"exact": True}
                sources.write_text(yaml.safe_dump(cfg))
            for w in args.workers:
                out = root / f"out-{w}"
                cmd = [sys.executable, "-c", CHILD, str(REPO), "--mixture", "mpt30b_8k", "--sources", str(sources),
                       "--out", str(out), "--tokenizer", str(TOK), "--skip-mixture", "--workers", str(w), "--force"]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                res = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
                assert res["rc"] == 0, proc.stderr[-2000:]
                toks = sum(json.loads(p.read_text())["tokens"] for p in (out / "stats").glob("*.json"))
                rows.append((size, mb, w, res["seconds"], toks, res["driver_mb"], res["worker_mb"]))
                shutil.rmtree(out, ignore_errors=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    base = {r[0]: r[3] for r in rows if r[2] == min(args.workers)}
    print(f"\n{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}, dedupe: {'exact' if args.no_minhash else 'exact + MinHash'}")
    print("| corpus | MB text | workers | seconds | MB/s | MB/s per worker | Mtok/s | speedup | driver peak MB | worker peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, mb, w, dt, toks, dmb, wmb in rows:
        print(f"| {size}x shared | {mb:.1f} | {w} | {dt:.1f} | {mb / dt:.2f} | {mb / dt / w:.2f} | {toks / dt / 1e6:.2f} | "
              f"{base[size] / dt:.2f}x | {dmb:.0f} | {wmb:.0f} |")


if __name__ == "__main__":
    main()
