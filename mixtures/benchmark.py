"""Packing throughput: ``python -m mixtures.benchmark [--tokens-per-source N]``; prints one table.

Writes ten synthetic sources (random tokens, the pipelines' MDS contract) to a temp folder, then times
``build_mixture`` for each built-in mixture with a budget equal to the data (about one epoch), i.e.
reading zstd MDS, packing, writing zstd MDS, hashing and the report.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from contract.registry import SOURCE_NAMES
from mixtures.build import build_mixture
from mixtures.spec import MIXTURE_NAMES
from mixtures.synthetic import random_lengths, write_source


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m mixtures.benchmark", description=__doc__.splitlines()[0])
    ap.add_argument("--tokens-per-source", type=int, default=2_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "sources")
        total = 0
        for i, s in enumerate(SOURCE_NAMES):
            rng = np.random.default_rng(i)
            n = max(10, args.tokens_per_source // 1600)
            lengths = random_lengths(n, rng, long_docs=max(1, n // 50))
            total += int(write_source(src, s, lengths, seed=i, size_limit="64mb").astype(np.int64).sum())
        rows = []
        for name in MIXTURE_NAMES:
            t0 = time.perf_counter()
            m = build_mixture(name, src, os.path.join(tmp, "mixtures"), tokens=total, progress=False)
            dt = time.perf_counter() - t0
            packed = sum(s["packed_tokens"] for s in m["streams"].values())
            rows.append((name, m["seq_len"], len(m["streams"]), packed, m["budget"]["samples"], dt, packed / dt))
    print(f"{'mixture':<11} {'seq_len':>7} {'streams':>7} {'tokens packed':>14} {'samples/epoch':>13} {'seconds':>8} "
          f"{'tokens/s':>11}")
    for r in rows:
        print(f"{r[0]:<11} {r[1]:>7} {r[2]:>7} {r[3]:>14,} {r[4]:>13,} {r[5]:>8.2f} {r[6]:>11,.0f}")
    print(f"(source data: {total:,} tokens in 10 synthetic sources, zstd MDS; cpus: {os.cpu_count()})")


if __name__ == "__main__":
    main()
