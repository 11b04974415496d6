"""Synthetic per-source datasets in the exact input contract of the mixture builder.

For tests and benchmarks only: random token ids (never 0 inside a document), each document followed by
EOS = 0, written with streaming's real ``MDSWriter`` in the source shards' format (``contract.tokens.SOURCE_MDS``, several shards), plus ``doc_tokens.npy``
and ``OUT/stats/<source>.json``, the same layout ``python -m pipelines.build`` writes.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from contract import layout
from contract.tokens import EOS, SOURCE_MDS, TOKEN_DTYPE, VOCAB_SIZE


def random_lengths(n: int, rng: np.random.Generator, *, long_docs: int = 0, long_range=(4097, 20000),
                   short_range=(20, 3000)) -> np.ndarray:
    """``n`` document lengths (EOS included): short ones plus ``long_docs`` long ones, shuffled."""
    short = rng.integers(short_range[0], short_range[1], size=n - long_docs)
    long = rng.integers(long_range[0], long_range[1], size=long_docs)
    lengths = np.concatenate([short, long]).astype(np.uint32)
    return rng.permutation(lengths)


def write_source(sources_dir: str, source: str, lengths: Sequence[int], *, seed: int = 0,
                 size_limit: int | str = 1 << 18) -> np.ndarray:
    """Write ``sources_dir/<source>/`` with one document per length; return the lengths as uint32."""
    lengths = np.asarray(lengths, dtype=np.uint32)
    rng = np.random.default_rng(seed)
    out = os.path.join(sources_dir, source)
    with SOURCE_MDS.writer(out, size_limit) as w:
        for i, n in enumerate(lengths):
            tokens = rng.integers(1, VOCAB_SIZE, size=int(n), dtype=TOKEN_DTYPE)
            tokens[-1] = EOS
            w.write({"tokens": tokens, "id": f"{source}/{i:07d}"})
    np.save(os.path.join(out, layout.DOC_TOKENS), lengths)
    stats_dir = layout.stats_dir(layout.out_of_sources_dir(sources_dir))
    os.makedirs(stats_dir, exist_ok=True)
    with open(os.path.join(stats_dir, f"{source}.json"), "w", encoding="utf-8") as f:
        json.dump({"source": source, "kept": int(len(lengths)), "tokens": int(lengths.astype(np.int64).sum())}, f)
    return lengths


def read_documents(sources_dir: str, source: str) -> list[np.ndarray]:
    """Every document of a source, in sample order (a plain, independent reader for checks)."""
    from mixtures.sources import load_source, read_shard

    info = load_source(sources_dir, source)
    docs: list[np.ndarray] = []
    for shard in range(len(info.shard_sizes)):
        docs.extend(read_shard(info, shard)[0])
    return docs


def read_mds(path: str, column: str = "tokens") -> list:
    """One column of every sample of an MDS dataset folder, in index order (reads, never writes)."""
    from mixtures.sources import read_mds_shard

    with open(os.path.join(path, layout.INDEX), encoding="utf-8") as f:
        index = json.load(f)
    out = []
    for shard in index["shards"]:
        out.extend(s[column] for s in read_mds_shard(path, shard)[0])
    return out
