"""Near-dup detection quality on planted duplicates: our NearDedupe vs datatrove's MinHash, same input.

Input: every document of ../shared/corpora plus ~0.5 planted variants per document (typos, word
insertions/deletions, dropped sentences, boilerplate headers/footers, verbatim copies, mixtures; see
pipelines/dedupe/planted.py), each with its true 5-gram Jaccard to its original (our normalization:
lower-cased \\w+ words). Prints ONE table: metrics as rows, tools as columns, plus the detection rate per
true-Jaccard bucket next to the rate LSH theory predicts for our settings (band collision x signature
verification).

Definitions: recall = planted pairs with J >= 0.8 that end in one cluster; precision = removals whose
keeper is a planted relative; "no planted relative" = removed documents that have no planted relative at
all (real near-duplicates inside the samples show up here); pairs J < 0.6 merged = over-removal.

Run: python -m benchmarks.dedupe_quality [--fraction 1.0] [--workers 2]
(datatrove in its own venv, see benchmarks/dedupe_common.py: DATATROVE_PYTHON=/path/bin/python)
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

from scipy.stats import binom

from benchmarks.dedupe_common import (CORPORA, DATATROVE_PYTHON, build_corpus, measure, print_table,
                                      read_datatrove, read_ours, write_shards)
from pipelines.dedupe.config import MinHashConfig
from pipelines.dedupe.minhash import SignatureSpec, collision_probability, exact_jaccard
from pipelines.dedupe.planted import score

BUCKETS = [(0.0, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0), (1.0, 1.01)]


def theory_ours(j: float, spec: SignatureSpec) -> float:
    need = math.ceil(spec.verify_threshold * spec.num_perm - 1e-9)
    return collision_probability(j, spec.bands, spec.rows) * binom.sf(need - 1, spec.num_perm, j)


def _outside(texts, families, removed) -> str:
    """Removals whose keeper is not a planted relative, with their true Jaccard to the keeper: high values
    mean near-duplicates that occur naturally in the samples, low ones are real false positives."""
    js = sorted(exact_jaccard(texts[i], texts[k]) for i, k in removed.items() if families[i] != families[k])
    if not js:
        return "0"
    return f"{len(js)}, {js[0]:.2f} / {js[len(js) // 2]:.2f}"


def _has_datatrove() -> bool:
    import subprocess

    return subprocess.run([DATATROVE_PYTHON, "-c", "import datatrove"], capture_output=True).returncode == 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args(argv)
    if not CORPORA.exists():
        print(f"skipped: {CORPORA} not present")
        return 0
    texts, families, pair_j = build_corpus(a.fraction)
    work = Path(tempfile.mkdtemp(prefix="dedupe_quality_"))
    try:
        mb = write_shards(texts, work / "in") / 1e6
        py = sys.executable
        measure([py, "-m", "benchmarks.dedupe_common", "ours", str(work / "in"), str(work / "ours"), str(a.workers)])
        ours = read_ours(str(work / "ours"))
        if _has_datatrove():
            measure([py if DATATROVE_PYTHON == sys.executable else DATATROVE_PYTHON, "-m", "benchmarks.dedupe_common",
                     "datatrove", str(work / "in"), str(work / "dt"), str(a.workers)])
            dt = read_datatrove(str(work / "dt"), str(work / "in"))
        else:  # datatrove lives in its own venv (make bench-deps); without it the column is ours only
            print("datatrove not installed (make bench-deps, DATATROVE_PYTHON=...): its column repeats ours",
                  file=sys.stderr)
            dt = None
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    spec = SignatureSpec.from_config(MinHashConfig())
    dt_label = "datatrove 0.10.1" if dt is not None else "datatrove (not installed: ours repeated)"
    dt = ours if dt is None else dt
    so, sd = score(families, pair_j, ours), score(families, pair_j, dt)
    rows = [
        ("documents / planted pairs / MB", f"{len(texts)} / {len(pair_j)} / {mb:.1f}", "same input", ""),
        ("settings", f"{spec.num_perm} perms, {spec.bands}x{spec.rows}, verify >= {spec.verify_threshold:.3f}",
         "112 perms, 14x8, no verification", ""),
        ("removed", so.removed, sd.removed, ""),
        ("precision", f"{so.precision:.4f}", f"{sd.precision:.4f}", f"{so.precision / sd.precision:.3f}"),
        (f"recall (J >= 0.8, {so.positives} pairs)", f"{so.recall:.4f}", f"{sd.recall:.4f}",
         f"{so.recall / sd.recall:.3f}"),
        ("F1", f"{so.f1:.4f}", f"{sd.f1:.4f}", f"{so.f1 / sd.f1:.3f}"),
        ("removals with no planted relative", f"{so.no_relative} ({so.no_relative / max(1, so.removed):.2%})",
         f"{sd.no_relative} ({sd.no_relative / max(1, sd.removed):.2%})", ""),
        (f"pairs J < 0.6 merged (of {so.low_pairs})", so.low_pairs_merged, sd.low_pairs_merged, ""),
        ("removals outside their planted family: n, true J to keeper min / median",
         _outside(texts, families, ours), _outside(texts, families, dt), ""),
    ]

    def keeper(rem, i):
        return rem.get(i, i)

    for lo, hi in BUCKETS:
        ids = [i for i, j in pair_j.items() if lo <= j < hi]
        if not ids:
            continue
        mo = sum(keeper(ours, i) == keeper(ours, families[i]) for i in ids) / len(ids)
        md = sum(keeper(dt, i) == keeper(dt, families[i]) for i in ids) / len(ids)
        th = sum(theory_ours(pair_j[i], spec) for i in ids) / len(ids)
        thd = sum(collision_probability(pair_j[i], 14, 8) for i in ids) / len(ids)
        name = "J = 1.0 (copies)" if lo == 1.0 else f"J in [{lo:.1f}, {min(hi, 1.0):.1f})"
        rows.append((f"merged, {name}, {len(ids)} pairs", f"{mo:.3f} (theory {th:.3f})",
                     f"{md:.3f} (theory {thd:.3f})", ""))

    print_table(("metric", "ours (NearDedupe)", dt_label, "ours/dt"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
