"""MinHash signature stage, one core: the previous scheme (regex words, xxh3 per word in Python, datasketch
k-permutation affine32, xxh3 band keys) against the current one (one-permutation MinHash, vectorized over
batches), on all ten categories of ../shared/corpora, same texts, same process, best of ``--repeat``.
Quality (near-duplicate F1 on planted pairs) is benchmarks/dedupe_quality.py.

    python benchmarks/minhash_speed.py
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default=str(REPO.parent / "shared" / "corpora"))
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    from benchmarks.dedupe_common import sig_seconds_ours, sig_seconds_previous
    from benchmarks.make_scale_corpus import SOURCES, load_samples

    samples = load_samples(Path(a.corpora))
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "all.jsonl"), "w") as f:
            for n in SOURCES:
                for r in samples[n]:
                    f.write(json.dumps({"text": r["text"]}) + "\n")
        mb = sum(len(r["text"].encode("utf-8", "surrogatepass")) for n in SOURCES for r in samples[n]) / 1e6
        rows = {}
        for name, fn in (("previous: datasketch affine32, 128 permutations", sig_seconds_previous),
                         ("current: oph-v1, vectorized batches", sig_seconds_ours)):
            rows[name] = min(fn(d) for _ in range(a.repeat))
    base = rows["previous: datasketch affine32, 128 permutations"]
    print(f"\n{mb:.1f} MB of text (all ten ../shared/corpora categories), one core, best of {a.repeat}, "
          f"load avg {os.getloadavg()[0]:.1f}")
    print("| signature stage | seconds | MB/s per core | speed-up |")
    print("|---|---:|---:|---:|")
    for name, sec in rows.items():
        print(f"| {name} | {sec:.2f} | {mb / sec:.2f} | {base / sec:.1f}x |")


if __name__ == "__main__":
    main()
