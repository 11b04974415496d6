"""The default GPU test suite, timed: ``pytest -m "gpu and not slow"`` on the trainer and kernel tests.

Prints what ran, what was skipped and why (pytest's ``-rs`` lines), the slowest tests, which ``slow`` GPU
tests the default suite leaves out, and one table: wall seconds against the 300 s budget (issue 33).
CI has no GPU, so this runs on the device machine:

    python benchmarks/gpu_suite.py                 # default suite
    python benchmarks/gpu_suite.py --with-slow     # everything marked gpu, slow included
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/test_trainer_fp8.py", "tests/test_trainer_gpu.py", "tests/test_trainer_multigpu.py",
         "tests/test_trainer_model.py", "tests/test_kernels_attention.py", "tests/test_kernels_cudnn_attention.py",
         "tests/test_kernels_layernorm.py", "tests/test_kernels_cross_entropy.py", "tests/test_kernels_registry.py"]
BUDGET_S = 300


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--with-slow", action="store_true")
    ap.add_argument("--log", help="also write pytest's full output here")
    args = ap.parse_args(argv)
    marker = "gpu" if args.with_slow else "gpu and not slow"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, "-rsx", "--durations=15",
           *FILES]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    out = proc.stdout + proc.stderr
    if args.log:
        Path(args.log).write_text(out)
    keep = [ln for ln in out.splitlines() if re.match(r"(SKIPPED|XFAIL|FAILED|ERROR)|\d+\.\d+s (call|setup)", ln)]
    print("\n".join(keep))
    left_out = []
    if not args.with_slow:
        col = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                              "-m", "gpu and slow", *FILES], cwd=REPO, capture_output=True, text=True, check=False)
        left_out = [ln for ln in col.stdout.splitlines() if "::" in ln]
        for ln in left_out:
            print(f"LEFT OUT (marked slow; run with --with-slow or -m 'gpu and slow'): {ln}")
    done = re.compile(r"\d+ (passed|failed|skipped|errors?)\b.* in [\d.]+s")
    summary = next((ln for ln in reversed(out.splitlines()) if done.search(ln)), "?")
    print("| suite | pytest summary | wall s | budget s | slow gpu tests left out |")
    print("|---|---|---|---|---|")
    print(f"| -m '{marker}' | {summary.strip('= ')} | {wall:.0f} | {BUDGET_S} | {len(left_out)} |")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
