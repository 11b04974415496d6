"""Driver and shuffle sizing for cluster runs (README "Running on a cluster"): one table.

1. Planning a large listing on the driver: N input objects (default 100,000 small jsonl files written to a local
   temp folder) listed, cut into parts and made into a BuildPlan; wall time, peak Python memory (tracemalloc),
   the pickled plan inline and as every DoFn of the graph carries it (heavy parts shipped by path,
   ``BuildPlan.ship``), and the part tasks (the elements of the graph's Create).
2. Shuffle bytes per TB of text, from the measured mean document size of each source's real sample
   (../shared/corpora) and the records the dedupe graph shuffles per surviving document: exact 32 B
   (scope, 128-bit key, uid), SemDedup 384 float32 + uid through the k-means assignment and again grouped by
   cluster. MinHash band records (bands x 16 B: mixed band key, uid) are written to staging and only a
   reference per part and bucket is shuffled; their bytes are a column of their own.

    python benchmarks/cluster_sizing.py                # 100,000 objects
    python benchmarks/cluster_sizing.py --objects 20000
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.dedupe_common import print_table  # noqa: E402

CORPORA = REPO.parent / "shared" / "corpora"


def plan_listing(n: int) -> list[tuple[str, str]]:
    from pipelines.sources.config import source_config
    from pipelines.engine.plan import BuildPlan, config_hash
    from pipelines.sources.readers import expand_inputs

    with tempfile.TemporaryDirectory(prefix="sizing_") as d:
        t = time.time()
        for i in range(n):  # 1,000 folders of 100 objects, like a sharded bucket prefix
            sub = os.path.join(d, f"{i // 100:04d}")
            if i % 100 == 0:
                os.mkdir(sub)
            with open(os.path.join(sub, f"{i:06d}.jsonl"), "w") as f:
                f.write('{"text": "a small document"}\n')
        made = time.time() - t
        cfg = source_config("c4_en", {"inputs": [os.path.join(d, "*", "*.jsonl")]}, "sizing")
        tracemalloc.start()
        t = time.time()
        files = expand_inputs("c4_en", cfg.inputs)
        listed = time.time() - t
        h = config_hash(cfg, files, "fp", False)
        plan = BuildPlan.make(d, "{}", False, False, {"c4_en": cfg}, {"c4_en": files}, {"c4_en": h}, {"c4_en": {}})
        planned = time.time() - t
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        plan_bytes = len(pickle.dumps(plan))
        task_bytes = len(pickle.dumps(plan.tasks))
        shipped_bytes = len(pickle.dumps(plan.ship(os.path.join(d, "plan.pickle"))))
    return [("objects listed", f"{len(files):,} ({made:.0f} s to create them locally)"),
            ("list (glob + sizes)", f"{listed:.1f} s"),
            ("list + hash + cut into parts + plan", f"{planned:.1f} s"),
            ("peak Python memory while planning", f"{peak / 2**20:,.0f} MiB"),
            ("parts (24 MB target; tiny files: 1 part per ~24 MB)", f"{len(plan.tasks):,}"),
            ("pickled plan, heavy parts inline", f"{plan_bytes / 2**20:,.1f} MiB"),
            ("pickled plan as each DoFn carries it (shipped by path)", f"{shipped_bytes / 2**10:,.1f} KiB"),
            ("pickled part tasks (the Create)", f"{task_bytes / 2**20:,.1f} MiB")]


def doc_sizes() -> dict:
    import zstandard

    out = {}
    for p in sorted(CORPORA.glob("*.jsonl.zst")):
        n = total = 0
        with open(p, "rb") as f:
            for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8"):
                rec = json.loads(line)
                text = rec.get("text") or (rec.get("content") or {}).get("text") or ""
                n += 1
                total += len(text.encode())
        out[p.name.split(".")[0]] = (n, total / max(1, n))
    return out


def shuffle_rows() -> list[tuple[str, str]]:
    from contract.registry import SOURCE_NAMES
    from pipelines.sources.config import source_config
    from pipelines.dedupe.embed import EMBED_DIM
    from pipelines.dedupe.minhash import SignatureSpec

    rows = []
    sizes = doc_sizes()
    for n in SOURCE_NAMES:
        if n not in sizes:
            continue
        docs, mean = sizes[n]
        d = source_config(n, {"inputs": ["/x/a.jsonl"]}, "sizing").dedupe
        per_doc = 32 if d.exact else 0
        bands = SignatureSpec.from_config(d.minhash).bands * 16 if d.minhash else 0  # staged, not shuffled
        sem = (EMBED_DIM * 4 + 8) * 2 if d.semantic else 0  # embedding to its k-means bucket, then by cluster
        docs_tb = 1e12 / mean
        rows.append((n, f"{mean:,.0f} B/doc ({docs:,} docs)", f"{docs_tb / 1e6:,.0f} M",
                     f"{per_doc + sem:,} B", f"{docs_tb * (per_doc + sem) / 1e9:,.0f} GB",
                     f"{docs_tb * bands / 1e9:,.0f} GB"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=100_000)
    args = ap.parse_args()
    rows = plan_listing(args.objects)
    print(f"\n1. planning a listing of {args.objects:,} objects on the driver (local file system)\n")
    print_table(("what", "measured"), rows)
    if CORPORA.exists():
        print("\n2. dedupe shuffle per TB of text (before survivors shrink it; upper bound), default config\n")
        print_table(("source", "mean document (sample)", "docs/TB", "shuffled/doc", "shuffle/TB",
                     "MinHash bands staged/TB"), shuffle_rows())
    return 0


if __name__ == "__main__":
    sys.exit(main())
