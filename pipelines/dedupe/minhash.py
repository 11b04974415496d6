"""MinHash signatures and LSH banding: the pure, Beam-free half of near-duplicate detection.

Why these choices (lessons from datatrove's and text-dedup's MinHash pipelines and their issue trackers;
benchmarks/RESULTS.md measures ours against datatrove on planted duplicates):

* Words come from a Unicode ``\\w+`` regex over lower-cased text, not a linguistic tokenizer: datatrove's
  spaCy tokenization costs ~40x the hashing itself and buys nothing for 5-gram shingles. Punctuation and
  whitespace differences disappear with the split; digits are kept (datatrove's digit-run collapsing made
  documents that differ only in numbers look identical).
* Each word is hashed once (xxh3-64); a 5-gram shingle hash is a polynomial combination of its words'
  hashes computed in numpy, folded to 32 bits. The signature itself is computed by ``datasketch.MinHash``
  (``update_batch`` on the shingle hashes, identity ``hashfunc``) with the scheme, seed and num_perm pinned
  explicitly: datasketch 2.0 changed the default scheme to ``affine32``, and signatures from different
  schemes, seeds or versions are silently incomparable. Every worker must build the same
  :class:`SignatureSpec`.
* Bands/rows come from the false-positive/false-negative trade-off (datasketch's integral criterion),
  evaluated at the *verification* threshold and weighting misses 9x more than band false positives: a band
  false positive only costs one signature comparison (every candidate pair is verified against the
  signature Jaccard estimate), while a missed pair is a duplicate that stays in the corpus for good.
* The verification threshold sits ``margin_sigmas`` standard errors of the MinHash estimator below the
  nominal Jaccard threshold, so a pair *at* the threshold is accepted with ~98% probability instead of the
  coin flip a raw ``estimate >= threshold`` test gives; pairs 0.2 below the threshold stay far outside.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
import xxhash
from datasketch import MinHash
from scipy.integrate import quad

from pipelines.dedupe.config import MinHashConfig

WORD_RE = re.compile(r"\w+", re.UNICODE)
# Odd 64-bit multiplier for the polynomial shingle combination (wraps mod 2^64 in numpy uint64).
_SHINGLE_MULT = np.uint64(0x9E3779B97F4A7C15)
# Shingles per datasketch update_batch call: bounds the (shingles x num_perm) temporary to a few MiB
# however long a document is, so worker memory does not depend on document size.
_CHUNK = 8192


def words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` tokens: the normalization every near-dup comparison sees."""
    return WORD_RE.findall(text.lower())


def word_hashes(ws: Sequence[str]) -> np.ndarray:
    h = xxhash.xxh3_64_intdigest  # bytes, not str: xxhash 4 refuses str
    return np.fromiter((h(w.encode("utf-8")) for w in ws), dtype=np.uint64, count=len(ws))


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """32-bit hashes of the word ``ngram``-grams of ``text`` (one per position, duplicates kept).

    A document shorter than ``ngram`` words yields one shingle made of all its words, so identical short
    documents still collide; an empty document yields an empty array.
    """
    wh = word_hashes(words(text))
    n = len(wh)
    if n == 0:
        return np.empty(0, dtype=np.uint32)
    k = min(ngram, n)
    acc = wh[: n - k + 1].copy()
    for j in range(1, k):
        acc *= _SHINGLE_MULT
        acc ^= wh[j: n - k + 1 + j]
    return (acc ^ (acc >> np.uint64(32))).astype(np.uint32)


def exact_jaccard(a: str, b: str, ngram: int = 5) -> float:
    """True Jaccard of the two documents' shingle sets (benchmarks and tests use it as ground truth)."""
    sa, sb = set(shingle_hashes(a, ngram).tolist()), set(shingle_hashes(b, ngram).tolist())
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


# ----------------------------------------------------------------------------------------------------
# band math

def collision_probability(j: float, bands: int, rows: int) -> float:
    """P(two documents of Jaccard ``j`` share at least one band) = 1 - (1 - j^r)^b."""
    return 1.0 - (1.0 - j ** rows) ** bands


def _fp_area(threshold: float, b: int, r: int) -> float:
    return quad(lambda s: collision_probability(s, b, r), 0.0, threshold)[0]


def _fn_area(threshold: float, b: int, r: int) -> float:
    return quad(lambda s: 1.0 - collision_probability(s, b, r), threshold, 1.0)[0]


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.1,
                  fn_weight: float = 0.9) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimizing the weighted FP + FN areas of the S-curve.

    Same criterion as ``datasketch.lsh._optimal_param`` (tests check they agree), re-implemented so we do
    not lean on a private function.
    """
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = fp_weight * _fp_area(threshold, b, r) + fn_weight * _fn_area(threshold, b, r)
            if err < best_err:
                best, best_err = (b, r), err
    return best


def verify_threshold(threshold: float, num_perm: int, margin_sigmas: float) -> float:
    """Signature-estimate cut-off: ``margin_sigmas`` standard errors of the estimator below ``threshold``."""
    sigma = math.sqrt(threshold * (1.0 - threshold) / num_perm)
    return max(0.0, threshold - margin_sigmas * sigma)


# ----------------------------------------------------------------------------------------------------
# signatures

@dataclass(frozen=True)
class SignatureSpec:
    """Everything that must be identical on every worker for signatures to be comparable."""

    num_perm: int
    ngram: int
    seed: int
    scheme: str
    bands: int
    rows: int
    verify_threshold: float

    @classmethod
    def from_config(cls, cfg: MinHashConfig) -> "SignatureSpec":
        vt = verify_threshold(cfg.threshold, cfg.num_perm, cfg.margin_sigmas)
        bands, rows = cfg.bands, cfg.rows
        if bands is None and rows is None:
            bands, rows = optimal_bands(round(vt, 4), cfg.num_perm, cfg.fp_weight, cfg.fn_weight)
        elif bands is None:
            bands = cfg.num_perm // rows
        elif rows is None:
            rows = cfg.num_perm // bands
        if bands < 1 or rows < 1 or bands * rows > cfg.num_perm:
            raise ValueError(f"bands*rows = {bands}*{rows} must be between 1 and num_perm={cfg.num_perm}")
        return cls(cfg.num_perm, cfg.ngram, cfg.seed, cfg.scheme, bands, rows, vt)


def _identity(x):
    return x


class Signer:
    """Computes signatures with datasketch; build once per worker (DoFn.setup), reuse for every doc.
    Not thread-safe (one reused MinHash): one per DoFn instance, which Beam never shares across threads."""

    def __init__(self, spec: SignatureSpec):
        self.spec = spec
        # Pinned explicitly: scheme (2.0's default changed), seed and num_perm.
        self._template = MinHash(num_perm=spec.num_perm, seed=spec.seed, scheme=spec.scheme,
                                 hashfunc=_identity)

    def signature(self, text: str) -> Optional[np.ndarray]:
        """uint32[num_perm] signature, or None for a document without a single word."""
        hs = shingle_hashes(text, self.spec.ngram)
        if hs.size == 0:
            return None
        m = self._template  # reused: clear() is much cheaper than MinHash.copy() per document
        m.clear()
        for start in range(0, hs.size, _CHUNK):
            m.update_batch(hs[start: start + _CHUNK].tolist())
        return np.array(m.hashvalues, dtype=np.uint32)

    def signatures(self, texts: Sequence[str]) -> list[Optional[np.ndarray]]:
        return [self.signature(t) for t in texts]


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    """One 63-bit key per band (band index mixed in via the hash seed, so equal rows in different bands
    never collide). 64 bits instead of the raw rows keeps the shuffle at ~16 bytes per band."""
    h = xxhash.xxh3_64_intdigest
    # 63 bits: fits a signed int64, so any Beam int coder (VarIntCoder included) can carry the key
    return [h(sig[i * rows:(i + 1) * rows].tobytes(), seed=i) >> 1 for i in range(bands)]


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The MinHash estimator (fraction of equal slots), as ``datasketch.MinHash.jaccard`` computes it."""
    return float(np.count_nonzero(a == b)) / float(len(a))
