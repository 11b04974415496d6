"""Text statistics computed once per document and shared by every rule of a chain.

Why: a chain runs up to a dozen rules on the same text (Gopher quality, Gopher repetition, C4, code).
Recomputing word splits, line splits and character classes in each rule would multiply the cost, and
the filter stage must stay several times faster than NeoX tokenization (~2.4 MB/s/core) so it never
dominates a build. ``analyze(text)`` returns a ``TextStats`` whose fields are computed lazily on first
use and cached; the most recent analysis is kept in a one-slot, per-thread cache keyed by the identity
of the text object, so the rules of one chain call on one document share it without any change to the
rule signature ``rule(text, meta, **params)``.

Definitions (used consistently by all rules, documented here once):
- word: a maximal run of non-whitespace characters (``str.split()``; whitespace = ``str.isspace``),
  the way the Gopher paper and MPT's "200+ words" mC4 rule count words.
- line: the text split on ``"\\n"`` (a trailing ``"\\r"`` is stripped where line endings matter).
- letter: ``str.isalpha``; alphanumeric: ``str.isalnum``; whitespace: ``str.isspace``. Code points
  are classified with a 0x110000-entry table built once per process from Python's own ``str``/``re``
  predicates, then looked up with numpy, so per-character work never runs in a Python loop.
"""
from __future__ import annotations

import re
import threading
from collections import Counter

import numpy as np

from pipelines.text import NGRAM_MULT, char_powers, ngram_fold

# SPACE: str.isspace (what str.split splits on); LETTER: str.isalpha; ALNUM: str.isalnum;
# PUNCT: neither space nor a word character; WORDCHAR: regex \w (alphanumeric or underscore).
SPACE, LETTER, ALNUM, PUNCT, WORDCHAR = 1, 2, 4, 8, 16
_TABLE: np.ndarray | None = None


def char_class_table() -> np.ndarray:
    """uint8 class bits for every code point (built on first use, ~0.3 s, 1.1 MB)."""
    global _TABLE
    if _TABLE is None:
        allchars = "".join(map(chr, range(0x110000)))
        cps = np.frombuffer(allchars.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        not_marker = cps != 1

        def mask(pattern: str) -> np.ndarray:
            marked = re.sub(pattern, "\x01", allchars)
            return (np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) == 1) & not_marker

        def pred(method) -> np.ndarray:
            return np.fromiter(map(method, allchars), dtype=bool, count=0x110000)

        space, word = pred(str.isspace), mask(r"\w")
        table = np.zeros(0x110000, dtype=np.uint8)
        table[space] |= SPACE
        table[pred(str.isalpha)] |= LETTER
        table[pred(str.isalnum)] |= ALNUM
        table[word] |= WORDCHAR
        table[~space & ~word] |= PUNCT
        _TABLE = table
    return _TABLE


_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")


class cached_property:
    """Compute once per instance, then live in the instance __dict__ (a non-data descriptor, so later
    lookups never reach this class)."""

    def __init__(self, fn):
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value

_CHAR_BASE = 0xD6E8FEB86659FD93  # odd 64-bit base of the per-word polynomial hash (pipelines.text.char_powers)
_POW_LIMIT = 1 << 22  # texts longer than this hash words with Python's str hash instead of cached powers


class TextStats:
    """Lazily computed statistics of one text. Every field is a cached_property."""

    def __init__(self, text: str):
        self.text = text
        self.memo: dict = {}  # rule modules cache their own derived results here (key: name + params)

    # ----- characters -------------------------------------------------------------------------
    @cached_property
    def n_chars(self) -> int:
        return len(self.text)

    @cached_property
    def codepoints(self) -> np.ndarray:
        text = self.text
        if text.isascii():  # O(1) in CPython; 1 byte per char instead of 4
            return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)

    @cached_property
    def classes(self) -> np.ndarray:
        return char_class_table()[self.codepoints]

    @cached_property
    def n_alnum(self) -> int:
        return int(np.count_nonzero(self.classes & ALNUM))

    @cached_property
    def n_letters(self) -> int:
        return int(np.count_nonzero(self.classes & LETTER))

    @cached_property
    def n_space(self) -> int:
        return int(np.count_nonzero(self.classes & SPACE))

    # ----- words ------------------------------------------------------------------------------
    @cached_property
    def _word_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end-exclusive) character offsets of each word (same words as ``str.split()``)."""
        nonspace = (self.classes & SPACE) == 0
        padded = np.concatenate(([False], nonspace, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        return edges[0::2], edges[1::2]

    @cached_property
    def n_words(self) -> int:
        return len(self._word_spans[0])

    @cached_property
    def word_class_or(self) -> np.ndarray:
        """Per word: OR of its characters' class bits, from one reduceat. Segments run from one word
        start to the next, so they include the trailing whitespace, whose only bit is SPACE."""
        return np.bitwise_or.reduceat(self.classes, self._word_spans[0])

    @cached_property
    def word_lengths(self) -> np.ndarray:
        starts, ends = self._word_spans
        return ends - starts

    @cached_property
    def n_alpha_words(self) -> int:
        """Words containing at least one letter (Gopher: >= 80% of words must)."""
        if self.n_words == 0:
            return 0
        return int(np.count_nonzero(self.word_class_or & LETTER))

    @cached_property
    def symbol_word_mask(self) -> np.ndarray:
        """Words made only of punctuation/symbols (no letter, digit or underscore)."""
        if self.n_words == 0:
            return np.zeros(0, dtype=bool)
        return (self.word_class_or & WORDCHAR) == 0

    @cached_property
    def n_non_symbol_words(self) -> int:
        return self.n_words - int(np.count_nonzero(self.symbol_word_mask))

    @cached_property
    def mean_non_symbol_word_length(self) -> float:
        n = self.n_non_symbol_words
        if n == 0:
            return 0.0
        return float(self.word_lengths[~self.symbol_word_mask].sum()) / n

    @cached_property
    def word_hashes(self) -> np.ndarray:
        """64-bit hash per word; only equality matters (same word -> same hash within a document)."""
        return self.span_hashes(*self._word_spans)

    def span_hashes(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """64-bit hash of each ``text[start:end]``; equal substrings get equal hashes within a document.

        A polynomial hash over code points, sum c_j * B**(j - start) mod 2**64, computed for all spans at
        once from prefix sums (B odd, so B**-start exists mod 2**64): no Python loop over spans.
        Very long texts fall back to Python's str hash (per-process seed; equality is unaffected)."""
        n = self.n_chars
        if n > _POW_LIMIT:
            text = self.text
            return np.fromiter((hash(text[s:e]) for s, e in zip(starts.tolist(), ends.tolist())),
                               dtype=np.int64, count=len(starts)).view(np.uint64)
        with np.errstate(over="ignore"):
            prefix = self._hash_prefix
            pwinv = char_powers(_CHAR_BASE, n + 1)[1]
            return (prefix[ends] - prefix[starts]) * pwinv[starts]

    @cached_property
    def _hash_prefix(self) -> np.ndarray:
        n = self.n_chars
        pw = char_powers(_CHAR_BASE, n + 1)[0]
        prefix = np.zeros(n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum((self.codepoints.astype(np.uint64) + np.uint64(1)) * pw[:n], out=prefix[1:])
        return prefix

    @cached_property
    def repetition_token_hashes(self) -> np.ndarray:
        """A 64-bit key per repetition token (``repetition_spans``), without building the strings: equal tokens
        get equal keys; unequal ones rarely do (same length, first code point and code point sum). Only a gate
        uses it (``pipelines.filters.olmo.may_repeat``, whose candidates the exact token-string check settles), so
        a collision costs time, never a verdict. Why not ``span_hashes``: its polynomial prefix is four passes over
        the text in 64 bits; this is one cumulative sum in 32 bits."""
        starts, ends = self.repetition_spans
        cp = self.codepoints
        csum = np.zeros(len(cp) + 1, dtype=np.uint32)  # wraps mod 2**32: differences stay exact sums mod 2**32
        np.cumsum(cp, dtype=np.uint32, out=csum[1:])
        with np.errstate(over="ignore"):
            key = (csum[ends] - csum[starts]).astype(np.uint64) * NGRAM_MULT + (ends - starts).astype(np.uint64)
            return key * NGRAM_MULT + cp[starts]

    @cached_property
    def repetition_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end-exclusive) of each repetition token: maximal runs of ``\\w`` characters or of characters
        that are neither ``\\w`` nor whitespace, i.e. what ``re.findall(r"\\w+|[^\\w\\s]+", text)`` returns
        (OLMo's rule, ``pipelines.filters.olmo``)."""
        kind = np.zeros(self.n_chars + 2, dtype=np.uint8)  # 0 space, WORDCHAR, PUNCT (exclusive bits); 0-padded
        np.bitwise_and(self.classes, WORDCHAR | PUNCT, out=kind[1:-1])
        change = np.flatnonzero(kind[1:] != kind[:-1])  # positions 0..n where the kind changes
        starts = change[kind[change + 1] != 0]
        ends = change[kind[change] != 0]
        return starts, ends

    def ngram_hashes(self, n: int) -> np.ndarray:
        return ngram_fold(self.word_hashes, n)

    @cached_property
    def _word_len_cum(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.word_lengths, dtype=np.int64)))

    @cached_property
    def word_chars(self) -> int:
        return int(self._word_len_cum[-1])

    def max_ngram_mass(self, n: int) -> float:
        """max over distinct word n-grams g of count(g) * len(g) / word characters (len = characters of
        its words). Upper bound machinery for the top n-gram rule (see ``top_ngram_bound``); one plain
        sort of (hash, length) keys, since equal n-grams have equal keys. Cached per n."""
        key = ("ngram_mass", n)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        hashes = self.ngram_hashes(n)
        if len(hashes) == 0 or self.word_chars == 0:
            out = 0.0
        else:
            cum = self._word_len_cum
            lengths = cum[n:] - cum[:-n]
            if int(lengths.max()) > 0xFFFF:
                out = 1.0  # cannot pack the length into the key; report the trivial bound
            else:
                keys = (hashes & np.uint64(~np.uint64(0xFFFF))) | lengths.astype(np.uint64)
                keys.sort()
                run_start = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
                counts = np.diff(np.append(run_start, len(keys)))
                mass = counts * (keys[run_start] & np.uint64(0xFFFF)).astype(np.int64)
                out = float(mass.max()) / self.word_chars
        self.memo[key] = out
        return out

    def top_ngram_bound(self, n: int, limit: float = 0.0) -> float:
        """Upper bound of ``top_ngram_char_fraction(n)`` from unigram and bigram masses (M1, M2).

        An n-gram g occurring c times can be cut into pieces (single words or word pairs) that each
        occur at least c times, so c * len(g) <= the sum of the pieces' masses: <= n * M1, and also
        <= M2 for n = 2, <= M2 + M1 for n = 3, <= 2 * M2 for n = 4. Ordinary prose has M1 ~ 0.03 (the
        word "the") and M2 ~ 0.01, so the Gopher limits are decided without an exact count. The
        bigram sort is only paid when the unigram bound alone exceeds ``limit``."""
        bound = n * self.max_ngram_mass(1)
        if bound <= limit or n not in (2, 3, 4):
            return bound
        m2 = self.max_ngram_mass(2)
        return min(bound, {2: m2, 3: m2 + self.max_ngram_mass(1), 4: 2 * m2}[n])

    def top_ngram_char_fraction(self, n: int) -> float:
        """Characters covered by the most frequent repeated word n-gram (all its occurrences, counted
        once each) over the characters of all words. Gopher Table A1 "top n-gram character fraction";
        an n-gram that occurs only once is not a repetition and scores 0. Among equally frequent
        n-grams the longest counts (deterministic tie-break)."""
        hashes = self.ngram_hashes(n)
        if len(hashes) < 2 or self.word_chars == 0:
            return 0.0
        sh = np.sort(hashes)  # a plain sort is several times cheaper than argsort
        run_start = np.flatnonzero(np.concatenate(([True], sh[1:] != sh[:-1])))
        counts = np.diff(np.append(run_start, len(sh)))
        top = int(counts.max())
        if top < 2:
            return 0.0
        tied = sh[run_start[counts == top]]
        positions = np.flatnonzero(hashes == tied[0] if len(tied) == 1 else np.isin(hashes, tied))
        cum = self._word_len_cum
        longest = int((cum[positions + n] - cum[positions]).max())
        # Occurrences of one n-gram may overlap ("a a a a"); never claim more than all word characters.
        return min(top * longest, self.word_chars) / self.word_chars

    def duplicate_ngram_char_fraction(self, n: int) -> float:
        """Characters of words covered by a repeated occurrence of a word n-gram (every occurrence
        after the first), over the characters of all words; each word counts once even when several
        repeated n-grams cover it, so the value never exceeds 1 (cf. dolma's denominator bug,
        PR #281). Gopher Table A1 "duplicate n-gram character fraction"; datatrove counts the same
        repeated occurrences but greedily skips ahead instead of taking the union.

        Monotone in n: a repeated (n+1)-gram contains repeated n-grams at the same positions, so
        the fraction for n=5 bounds those for n=6..10 (the rule exploits this to exit early)."""
        hashes = self.ngram_hashes(n)
        if len(hashes) < 2 or self.word_chars == 0:
            return 0.0
        sh = np.sort(hashes)
        repeat = sh[1:] == sh[:-1]
        if not repeat.any():  # the common case: no repeated n-gram
            return 0.0
        # Positions of every occurrence of a repeated n-gram, then drop each one's first occurrence.
        # No argsort of the whole array: the repeated values are usually a handful.
        repeated_values = np.unique(sh[1:][repeat])  # small and sorted
        if len(repeated_values) == 1:
            occurrences = np.flatnonzero(hashes == repeated_values[0])
        else:
            idx = np.minimum(np.searchsorted(repeated_values, hashes), len(repeated_values) - 1)
            occurrences = np.flatnonzero(repeated_values[idx] == hashes)
        _, first = np.unique(hashes[occurrences], return_index=True)
        rep_start = np.delete(occurrences, first)
        # Mark words [s, s+n) for every repeated occurrence s via a difference array (s unique).
        delta = np.zeros(self.n_words + 1, dtype=np.int64)
        delta[rep_start] += 1
        delta[rep_start + n] -= 1
        covered = np.cumsum(delta[:-1]) > 0
        return float(self.word_lengths[covered].sum()) / self.word_chars

    # ----- lines and paragraphs ---------------------------------------------------------------
    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def n_lines(self) -> int:
        return len(self.lines)

    @cached_property
    def max_line_length(self) -> int:
        return max(map(len, self.lines))

    @cached_property
    def mean_line_length(self) -> float:
        """Mean characters per line, newlines excluded; a final newline does not open another line
        (as ``str.splitlines``, which RedPajama's GitHub filter uses for this statistic)."""
        n_lines = self.n_lines - 1 if (self.n_lines > 1 and self.text.endswith("\n")) else self.n_lines
        return (self.n_chars - (self.n_lines - 1)) / n_lines

    def duplicate_stats(self, items: list[str]) -> tuple[int, int, int, int]:
        """(n_items, n_duplicate_items, total_chars, duplicate_chars): an item is a duplicate when an
        identical item occurred earlier (Gopher / datatrove ``find_duplicates``)."""
        counts = Counter(items)
        total_chars = sum(map(len, items))
        return len(items), len(items) - len(counts), total_chars, total_chars - sum(map(len, counts))

    @cached_property
    def paragraphs(self) -> list[str]:
        """Pieces between runs of 2+ newlines (datatrove's ``\\n{2,}`` split of the stripped text);
        str.split is used unless a run of 3+ newlines needs the regex."""
        stripped = self.text.strip()
        if "\n\n\n" in stripped:
            return _PARAGRAPH_SPLIT.split(stripped)
        return stripped.split("\n\n")

    @cached_property
    def paragraph_dups(self) -> tuple[int, int, int, int]:
        return self.duplicate_stats(self.paragraphs)

    @cached_property
    def line_dups(self) -> tuple[int, int, int, int]:
        """Over non-empty lines (datatrove splits on ``\\n+``)."""
        return self.duplicate_stats(list(filter(None, self.lines)))

    @cached_property
    def lower(self) -> str:
        return self.text.lower()


_LOCAL = threading.local()  # one cache slot per thread (Beam runs DoFns in several threads)


def analyze(text: str) -> TextStats:
    """TextStats for ``text``, shared by consecutive calls on the same text object in one thread.

    The slot holds one (text, stats) pair; it keeps the text alive and compares identity, so a stale
    entry can never be returned for a different text, and an equal-but-distinct text just recomputes.
    """
    entry = getattr(_LOCAL, "entry", None)
    if entry is not None and entry[0] is text:
        return entry[1]
    stats = TextStats(text)
    _LOCAL.entry = (text, stats)
    return stats
