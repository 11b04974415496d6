"""MinHash signatures and LSH banding: the pure, Beam-free half of near-duplicate detection.

Why these choices (lessons from datatrove's and text-dedup's MinHash pipelines and their issue trackers;
benchmarks/RESULTS.md measures ours against datatrove on planted duplicates):

* Words are maximal runs of Unicode ``\\w`` characters of the lower-cased text (Python's ``re`` definition,
  looked up per code point in a table built from ``re`` itself), not a linguistic tokenizer: datatrove's
  spaCy tokenization costs ~40x the hashing and buys nothing for 5-gram shingles. Punctuation and
  whitespace differences disappear with the split; digits are kept (datatrove's digit-run collapsing made
  documents that differ only in numbers look identical).
* Everything is vectorized over a batch of documents in numpy: no Python loop per word or per shingle.
  A word's hash is a polynomial over its code points (mod 2^64) finished with splitmix64; a shingle's is
  the polynomial combination of its words' hashes, finished with splitmix64 and the spec's seed.
* The signature is one-permutation MinHash (OPH, Li, Owen & Zhang 2012) with optimal densification
  (Shrivastava 2017): each shingle hash picks one of ``num_perm`` bins (its high 32 bits) and competes
  for that bin's minimum with its low 32 bits; an empty bin copies the bin its seeded probe sequence meets
  first. The estimator (fraction of equal slots) has the variance of ``num_perm`` independent permutations
  or less, and it costs one hash per shingle instead of ``num_perm``: the k-permutation scheme
  (datasketch ``affine32``) spent ~60 % of the build's CPU here. The spec (``SignatureSpec``, scheme
  ``oph-v1``) is pinned: every worker must build the same one, and signatures of another scheme, seed or
  num_perm are incomparable.
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
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np

from pipelines.dedupe.config import MINHASH_SCHEME, MinHashConfig
from pipelines.text import NGRAM_MULT, char_powers, splitmix64

SCHEME = MINHASH_SCHEME
_U64 = np.uint64
_SHINGLE_MULT = NGRAM_MULT                # odd: the polynomial combination of a shingle's word hashes
_CHAR_MULT = 0x100000001B3                # odd: the polynomial over a word's code points
_EMPTY = _U64(1 << 32)                    # larger than any 32-bit bin value: marks an empty bin
_CHUNK_CHARS = 1 << 20                    # code points per vectorized pass: bounds temporaries to ~50 MB


@lru_cache(maxsize=1)
def _word_table() -> np.ndarray:
    """bool per code point: is it ``\\w`` for Python's ``re`` (``pipelines.text.WORD_RE``)? Built once per process from ``re`` itself,
    so the vectorized split is the regex split by construction (tests compare them)."""
    table = np.zeros(sys.maxunicode + 1, dtype=bool)
    cps = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    cps = cps[(cps < 0xD800) | (cps > 0xDFFF)]
    chars = cps.tobytes().decode("utf-32-le")
    starts = [m.start() for m in re.finditer(r"\w", chars)]
    table[cps[starts]] = True
    return table


def _word_hashes(cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start offsets, 64-bit hashes) of the words in a code-point array. A word's hash is
    splitmix64(sum_j c_j * B^j ^ length << 40) over its code points c_0.. (mod 2^64), computed for all words
    at once: from prefix sums where the array is short enough for cached powers, else by offsets."""
    isw = _word_table()[cp]
    edge = np.diff(isw.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    if not len(starts):
        return starts, np.zeros(0, np.uint64)
    lens = ends - starts
    n = len(cp)
    with np.errstate(over="ignore"):
        if n <= _CHUNK_CHARS * 2:
            pw, pinv = char_powers(_CHAR_MULT, 1 << max(10, int(n).bit_length()))
            prefix = np.zeros(n + 1, dtype=np.uint64)
            np.cumsum(cp.astype(np.uint64) * pw[:n], out=prefix[1:])  # only spans inside words are used
            h = (prefix[ends] - prefix[starts]) * pinv[starts]
        else:  # one huge document: offsets inside words instead of powers of the whole length
            pos = np.flatnonzero(isw)
            first = np.cumsum(lens) - lens
            off = np.arange(len(pos)) - np.repeat(first, lens)
            powers = char_powers(_CHAR_MULT, 1 << max(4, int(lens.max()).bit_length()))[0]
            h = np.add.reduceat(cp[pos].astype(np.uint64) * powers[off], first)
        h ^= lens.astype(np.uint64) << _U64(40)
    return starts, splitmix64(h)


def _shingles(texts: Sequence[str], ngram: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(document index, 64-bit shingle hash) of every word ``ngram``-gram of every text, in document and
    position order. A document shorter than ``ngram`` words yields one shingle made of all its words (so
    identical short documents still collide); one without a word yields none."""
    lowered = [t.lower() for t in texts]
    doc_out, hash_out = [], []
    i = 0
    while i < len(lowered):  # whole documents per pass, about _CHUNK_CHARS code points each
        j, size = i, 0
        while j < len(lowered) and (j == i or size + len(lowered[j]) <= _CHUNK_CHARS):
            size += len(lowered[j]) + 1
            j += 1
        lens = np.fromiter((len(t) + 1 for t in lowered[i:j]), dtype=np.int64, count=j - i)
        doc_starts = np.cumsum(lens) - lens
        cp = np.frombuffer("\0".join(lowered[i:j]).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        starts, wh = _word_hashes(cp)
        wdoc = np.searchsorted(doc_starts, starts, side="right") - 1
        counts = np.bincount(wdoc, minlength=j - i)
        accs, docs = [], []
        n, k = len(wh), ngram
        with np.errstate(over="ignore"):
            if n >= k:
                acc = wh[: n - k + 1].copy()
                for m in range(1, k):
                    acc *= _SHINGLE_MULT
                    acc ^= wh[m: n - k + 1 + m]
                valid = wdoc[: n - k + 1] == wdoc[k - 1:]
                accs.append(acc[valid])
                docs.append(wdoc[: n - k + 1][valid])
            for d in np.flatnonzero((counts > 0) & (counts < k)).tolist():
                first = int(np.searchsorted(wdoc, d))
                acc = wh[first: first + 1].copy()
                for m in range(1, int(counts[d])):
                    acc *= _SHINGLE_MULT
                    acc ^= wh[first + m: first + m + 1]
                accs.append(acc)
                docs.append(np.array([d], dtype=np.int64))
        if accs:
            d, a = np.concatenate(docs), np.concatenate(accs)
            if len(accs) > 1:  # short documents were appended after the rest: back to document order
                order = np.argsort(d, kind="stable")
                d, a = d[order], a[order]
            doc_out.append(d + i)
            hash_out.append(a)
        i = j
    if not hash_out:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    salt = splitmix64(np.array([seed], dtype=np.uint64))[0]
    return np.concatenate(doc_out), splitmix64(np.concatenate(hash_out) ^ salt)


def shingle_hashes(text: str, ngram: int = 5, seed: int = 0) -> np.ndarray:
    """64-bit hashes of the word ``ngram``-grams of ``text`` (one per position, duplicates kept)."""
    return _shingles([text], ngram, seed)[1]


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
    from scipy.integrate import quad  # here: bands are chosen on the driver (BuildPlan.make), scipy is heavy for a worker

    return quad(lambda s: collision_probability(s, b, r), 0.0, threshold)[0]


def _fn_area(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

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


class Signer:
    """One-permutation MinHash signatures with optimal densification, vectorized over a batch of texts.
    Build once per worker (``DoFn.setup``); stateless after construction, so safe to share."""

    def __init__(self, spec: SignatureSpec):
        if spec.scheme != SCHEME:
            raise ValueError(f"signature scheme {spec.scheme!r}: this version computes {SCHEME!r} only")
        self.spec = spec
        p = spec.num_perm
        # the densification probe sequence of each bin: seeded, identical on every worker
        self._probe = np.random.default_rng([spec.seed, 0x0D3E]).integers(0, p, size=(p, 2 * p))

    def sign_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(indices of the texts that have at least one word, uint32 signatures [len(indices), num_perm])."""
        p = self.spec.num_perm
        doc, h = _shingles(texts, self.spec.ngram, self.spec.seed)
        if not len(doc):
            return doc, np.zeros((0, p), np.uint32)
        new_doc = np.empty(len(doc), dtype=bool)  # doc is sorted
        new_doc[0] = True
        np.not_equal(doc[1:], doc[:-1], out=new_doc[1:])
        rows = doc[new_doc]
        local = np.cumsum(new_doc) - 1
        bins = ((h >> _U64(32)) * _U64(p)) >> _U64(32)
        sig = np.full(len(rows) * p, _EMPTY, dtype=np.uint64)
        np.minimum.at(sig, local.astype(np.uint64) * _U64(p) + bins, h & _U64(0xFFFFFFFF))
        sig = sig.reshape(len(rows), p)
        self._densify(sig)
        return rows, sig.astype(np.uint32)

    def _densify(self, sig: np.ndarray) -> None:
        """Optimal densification: an empty bin takes the value of the first non-empty bin on its probe
        sequence (then, past the sequence, the next non-empty bin to its right)."""
        r, i = np.nonzero(sig == _EMPTY)
        if not len(r):
            return
        orig = sig.copy()
        p = self.spec.num_perm
        for t in range(self._probe.shape[1] + p):
            j = self._probe[i, t] if t < self._probe.shape[1] else (i + (t - self._probe.shape[1]) + 1) % p
            v = orig[r, j]
            ok = v != _EMPTY
            sig[r[ok], i[ok]] = v[ok]
            r, i = r[~ok], i[~ok]
            if not len(r):
                return

    def signature(self, text: str) -> Optional[np.ndarray]:
        """uint32[num_perm] signature, or None for a document without a single word."""
        rows, sigs = self.sign_batch([text])
        return sigs[0] if len(rows) else None


def band_keys_batch(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 [n, bands]: one 63-bit key per band, the band index mixed in, so equal rows in different
    bands never collide. 64 bits instead of the raw rows keeps the shuffle at ~16 bytes per band; 63 so
    any Beam int coder (VarIntCoder included) can carry one."""
    x = np.asarray(sigs, dtype=np.uint64)[:, : bands * rows].reshape(len(sigs), bands, rows)
    acc = np.broadcast_to(np.arange(bands, dtype=np.uint64) + _U64(0xB5AD4ECEDA1CE2A9), x.shape[:2]).copy()
    for r in range(rows):
        acc = splitmix64(acc ^ x[:, :, r])
    return acc >> _U64(1)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    return band_keys_batch(np.asarray(sig)[None, :], bands, rows)[0].tolist()


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The MinHash estimator (fraction of equal slots)."""
    return float(np.count_nonzero(a == b)) / float(len(a))
