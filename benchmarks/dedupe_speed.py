"""MinHash near-dup throughput and worker memory: our NearDedupe vs datatrove's MinHash dedupe, same run.

Two corpus sizes from ../shared/corpora with planted variants: all of it, and a seeded random half of its
document families by bytes (so exactly 2x the bytes of distinct real text). Rows:
  * signature stage, 1 core, in-process: the per-document work of stage 1 (normalize, shingle, MinHash,
    band keys) over the same texts -- ours (regex words + datasketch) vs datatrove's
    MinhashDedupSignature.get_shingles + get_signature (spaCy words);
  * full dedupe, ``--workers`` processes, from JSONL shards to removal lists: ours on Beam's local runner
    (multi_processing) vs datatrove's four LocalPipelineExecutor stages. MB/s/core = text MB / wall /
    workers. "worker peak" is the largest VmHWM among the run's child processes (Beam SDK workers,
    datatrove task processes); "driver peak" is the launching process (for Beam's local runner this is
    also where the runner buffers PCollections between stages, which a distributed runner would not).
Quality columns use the planted-pair scoring of benchmarks/dedupe_quality.py.

Run: python -m benchmarks.dedupe_speed [--workers 2]
(datatrove in its own venv, see benchmarks/dedupe_common.py: DATATROVE_PYTHON=/path/bin/python)
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.dedupe_common import (CORPORA, DATATROVE_PYTHON, ROOT, build_corpus, measure, read_datatrove,
                                      print_table, read_ours, write_shards)
from pipelines.dedupe.planted import score


def sig_seconds(mode: str, in_dir: Path, python: str) -> float:
    r = subprocess.run([python, "-m", "benchmarks.dedupe_common", mode, str(in_dir)], cwd=ROOT, check=True,
                       capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fractions", type=float, nargs=2, default=(0.5, 1.0))
    a = ap.parse_args(argv)
    if not CORPORA.exists():
        print(f"skipped: {CORPORA} not present")
        return 0
    py = sys.executable
    rows = []
    work = Path(tempfile.mkdtemp(prefix="dedupe_speed_"))
    try:
        for frac in a.fractions:
            texts, families, pair_j = build_corpus(frac)
            d = work / f"f{frac}"
            mb = write_shards(texts, d / "in") / 1e6
            if frac == a.fractions[0]:
                to = sig_seconds("sigrate-ours", d / "in", py)
                td = sig_seconds("sigrate-datatrove", d / "in", DATATROVE_PYTHON)
                rows.append(("signature stage, 1 core", f"{mb:.1f}", "ours", f"{to:.1f}", f"{mb / to:.2f}",
                             "", "", "", f"{td / to:.1f}x"))
                rows.append(("signature stage, 1 core", f"{mb:.1f}", "datatrove", f"{td:.1f}", f"{mb / td:.2f}",
                             "", "", "", ""))
            mo = measure([py, "-m", "benchmarks.dedupe_common", "ours", str(d / "in"), str(d / "ours"),
                          str(a.workers)])
            md = measure([py, "-m", "benchmarks.dedupe_common", "datatrove", str(d / "in"), str(d / "dt"),
                          str(a.workers)])
            so = score(families, pair_j, read_ours(str(d / "ours")))
            sd = score(families, pair_j, read_datatrove(str(d / "dt"), str(d / "in")))
            name = f"full dedupe, {a.workers} workers"
            rows.append((name, f"{mb:.1f}", "ours", f"{mo['wall']:.1f}", f"{mb / mo['wall'] / a.workers:.2f}",
                         f"{mo['worker_mib']:.0f}", f"{mo['root_mib']:.0f}",
                         f"{so.f1:.4f} / {so.precision:.4f} / {so.recall:.4f}",
                         f"{md['wall'] / mo['wall']:.1f}x"))
            rows.append((name, f"{mb:.1f}", "datatrove", f"{md['wall']:.1f}", f"{mb / md['wall'] / a.workers:.2f}",
                         f"{md['worker_mib']:.0f}", f"{md['root_mib']:.0f}",
                         f"{sd.f1:.4f} / {sd.precision:.4f} / {sd.recall:.4f}", ""))
            shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    head = ("stage", "text MB", "tool", "wall s", "MB/s/core", "worker peak MiB", "driver peak MiB",
            "F1 / P / R (J>=0.8)", "ours faster by")
    print_table(head, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
