"""Exact dedupe, pure half: one document per normalized-text hash, the smallest uid kept.

Normalization (documented contract): Unicode NFC, casefold, every run of whitespace -> one space, strip.
So "Hello  World\n" and "hello world" are duplicates; punctuation and digits still count.
Only (hash, uid) pairs are shuffled (16 + 8 bytes a document), never the text; the Beam stage is
``pipelines.engine.dedupe.exact.ExactDedupe``.
"""
from __future__ import annotations

import unicodedata

import numpy as np
import xxhash

_MASK64 = (1 << 64) - 1


def normalize_for_exact(text: str) -> str:
    """NFC, casefold, whitespace runs -> one space, stripped. ``str.split()`` splits on exactly the characters
    ``re``'s ``\\s`` matches (both are ``str.isspace``; tests check every code point) at ~3x the speed of
    ``re.sub`` (tests compare it with the regex form of the definition)."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def text_hash(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(normalize_for_exact(text).encode("utf-8", "surrogatepass"))


def exact_key(text: str) -> tuple[int, int]:
    """The 128-bit normalized-text hash as (high, low) 64-bit halves (the same hash as ``text_hash``)."""
    h = xxhash.xxh3_128_intdigest(normalize_for_exact(text).encode("utf-8", "surrogatepass"))
    return h >> 64, h & _MASK64


def duplicate_pairs(scope: np.ndarray, hi: np.ndarray, lo: np.ndarray, uid: np.ndarray) -> np.ndarray:
    """(removed uid, keeper uid) for every document whose (scope, hash) group has a smaller uid.

    Vectorized: one lexsort over the bucket, then each group's first (smallest) uid is its keeper.
    """
    if len(uid) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    order = np.lexsort((uid, lo, hi, scope))
    s, h, l, u = scope[order], hi[order], lo[order], uid[order]
    new_group = np.ones(len(u), dtype=bool)
    new_group[1:] = (s[1:] != s[:-1]) | (h[1:] != h[:-1]) | (l[1:] != l[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(u)), 0))
    keeper = u[group_start]
    dup = ~new_group
    return np.stack([u[dup], keeper[dup]], axis=1)
