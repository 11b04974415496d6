"""Packing: documents (each ending in its EOS) concatenated into samples of exactly ``seq_len`` tokens.

As MPT did, a sample never mixes sources: each stream (one part, one source) is packed on its own.
Documents longer than ``seq_len`` continue into the next sample. What is left after the last full
sample (fewer than ``seq_len`` tokens) is the *remainder*: it is reported per stream in the manifest,
never padded and never silently dropped. For a stream that is upsampled anyway (``wrap=True``), the
last sample is completed instead with the stream's first tokens again, so no token of it is left out;
the manifest reports those ``wrapped_tokens``.

Order. ``packing_order`` visits the shards of a source in a seeded random order and the selected
documents of each shard in a seeded random order. That bounds memory to one decoded shard while still
putting unrelated documents next to each other; the loader's own shuffle (streaming ``py1e``) then
mixes samples across shards. The same seed gives the same order, so the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from contract import layout
from contract.tokens import MIXTURE_MDS, TOKEN_DTYPE


class Packer:
    """Cut a stream of token arrays into ``seq_len`` samples; ``remainder()`` is what is left."""

    def __init__(self, seq_len: int):
        if seq_len <= 0:
            raise ValueError("seq_len must be positive")
        self.seq_len = seq_len
        self._buf: list[np.ndarray] = []
        self._n = 0

    def add(self, tokens: np.ndarray) -> Iterator[np.ndarray]:
        """Append one document's tokens; yield every sample that became full."""
        tokens = np.asarray(tokens, dtype=TOKEN_DTYPE)
        pos = 0
        while self._n + (len(tokens) - pos) >= self.seq_len:
            take = self.seq_len - self._n
            piece = tokens[pos:pos + take]
            pos += take
            sample = np.concatenate(self._buf + [piece]) if self._buf else piece.copy()
            self._buf, self._n = [], 0
            yield sample
        if pos < len(tokens):
            self._buf.append(tokens[pos:])
            self._n += len(tokens) - pos

    def remainder(self) -> np.ndarray:
        return np.concatenate(self._buf) if self._buf else np.zeros(0, TOKEN_DTYPE)


def pack(documents: Iterable[np.ndarray], seq_len: int) -> tuple[list[np.ndarray], np.ndarray]:
    """All samples and the remainder, in memory (for small inputs and tests)."""
    p = Packer(seq_len)
    samples = [s for d in documents for s in p.add(d)]
    return samples, p.remainder()


def packing_order(selected: np.ndarray, shard_sizes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """The order documents are packed in: shards in random order, each shard's selected documents in
    random order (document indices are global, in the source's sample order)."""
    selected = np.sort(np.asarray(selected, dtype=np.int64))
    starts = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64)
    shard_of = np.searchsorted(starts, selected, side="right") - 1
    shards = np.unique(shard_of)
    out = []
    for shard in rng.permutation(shards):
        out.append(rng.permutation(selected[shard_of == shard]))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


@dataclass
class PackResult:
    samples: int
    tokens_in: int               # tokens of the packed documents (EOS included)
    remainder_tokens: int        # tokens_in - samples * seq_len
    remainder_from_doc: int | None   # the document the remainder ends with (its tail), if any
    wrapped_tokens: int          # tokens repeated from the stream's start to complete the last sample
    shards: int
    sha256: str                  # over index.json and every shard file, in index order


def dir_sha256(path: str) -> str:
    """Content hash of an MDS dataset: index.json then its shard files in index order."""
    h = hashlib.sha256()
    with open(os.path.join(path, layout.INDEX), "rb") as f:
        raw = f.read()
    h.update(raw)
    for shard in json.loads(raw)["shards"]:
        info = shard.get("zip_data") or shard["raw_data"]
        with open(os.path.join(path, info["basename"]), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def write_packed(docs: Iterable[tuple[int, np.ndarray]], out: str, seq_len: int, *, wrap: bool = False,
                 size_limit: int | str = 1 << 26, progress=None) -> PackResult:
    """Pack ``(doc_index, tokens)`` pairs into an MDS dataset at ``out`` (a fresh directory).

    ``wrap``: complete a partial last sample with the stream's first tokens (for upsampled streams).
    ``progress`` is an optional tqdm-like object; it is advanced by one per written sample.
    """
    packer = Packer(seq_len)
    n = tokens_in = wrapped = 0
    last_doc = None
    head: list[np.ndarray] = []           # the stream's first seq_len tokens, for wrap
    head_n = 0
    with MIXTURE_MDS.writer(out, size_limit) as writer:
        def emit(samples):
            nonlocal n
            for sample in samples:
                assert sample.dtype == TOKEN_DTYPE and sample.shape == (seq_len,)
                writer.write({"tokens": sample})
                n += 1
                if progress is not None:
                    progress.update(1)

        for doc, tokens in docs:
            tokens_in += len(tokens)
            last_doc = doc
            if wrap and head_n < seq_len:
                head.append(np.array(tokens[:seq_len - head_n], dtype=TOKEN_DTYPE))
                head_n += len(head[-1])
            emit(packer.add(tokens))
        rem = len(packer.remainder())
        if wrap and rem:
            wrapped = seq_len - rem
            filler = np.concatenate(head)[:wrapped]
            if len(filler) < wrapped:
                raise ValueError(f"{out}: cannot wrap a stream of {tokens_in} tokens into {seq_len}-token samples")
            emit(packer.add(filler))
            rem = 0
    assert tokens_in + wrapped == n * seq_len + rem
    with open(os.path.join(out, layout.INDEX), encoding="utf-8") as f:
        shards = len(json.load(f)["shards"])
    return PackResult(n, tokens_in, rem, last_doc if rem else None, wrapped, shards, dir_sha256(out))
