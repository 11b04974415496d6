"""Words and n-gram hashing, stated once for every layer above: near dedupe (``pipelines.dedupe.minhash``),
decontamination (``pipelines.steps.decontam``) and the filters' text statistics
(``pipelines.filters.text_stats``).

- A word is a maximal run of Unicode ``\\w`` characters of the lower-cased text (``WORD_RE``, ``words``,
  ``word_spans``): punctuation, whitespace and case differences vanish, digits are kept.
- ``splitmix64``: the 64-bit finalizer every hash here ends with (full avalanche, a bijection).
- ``char_powers(base, n)``: the powers B**j and B**-j mod 2**64 of an odd base, for polynomial hashes of spans of
  code points from prefix sums; one table per base, grown geometrically and shared by all documents.
- ``ngram_fold(word_hashes, n)``: the polynomial combination of ``n`` consecutive word hashes with ``NGRAM_MULT``,
  one per start position (decontamination finishes it with ``splitmix64``; MinHash's shingles combine with
  ``NGRAM_MULT`` and xor, part of its pinned signature scheme).
"""
from __future__ import annotations

import re

import numpy as np

WORD_RE = re.compile(r"\w+", re.UNICODE)  # the reference definition of a word
NGRAM_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) combining word hashes into n-grams
_U64 = np.uint64
_POWERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` tokens: the normalization every n-gram comparison sees (the reference)."""
    return WORD_RE.findall(text.lower())


def word_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Normalized words (lower-cased ``\\w+`` runs) and their character spans in ``text``."""
    ws, spans = [], []
    for m in WORD_RE.finditer(text):
        ws.append(m.group(0).lower())
        spans.append(m.span())
    return ws, spans


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on a uint64 array (wraps mod 2^64): full avalanche, a bijection."""
    with np.errstate(over="ignore"):
        z = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def char_powers(base: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(B**j, B**-j) mod 2**64 for j < at least ``n`` (odd ``base``, so its inverse exists mod 2**64)."""
    pw, pwinv = _POWERS.get(base, (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)))
    if len(pw) < n:
        size = max(n, 2 * len(pw), 4096)
        pw = np.full(size, base, dtype=np.uint64)
        pw[0] = 1
        pwinv = np.full(size, pow(base, -1, 1 << 64), dtype=np.uint64)
        pwinv[0] = 1
        with np.errstate(over="ignore"):
            pw, pwinv = np.cumprod(pw), np.cumprod(pwinv)  # wraps mod 2**64
        _POWERS[base] = (pw, pwinv)
    return pw, pwinv


def ngram_fold(wh: np.ndarray, n: int) -> np.ndarray:
    """sum_k wh[i + k] * NGRAM_MULT**(n - 1 - k) mod 2**64 for every start ``i`` (empty when fewer than ``n``)."""
    m = len(wh) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    out = wh[:m].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            out = out * NGRAM_MULT + wh[k:k + m]  # wraps mod 2**64 (numpy unsigned overflow is defined)
    return out
