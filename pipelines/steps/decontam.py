"""Benchmark decontamination: find (or cut out) training text that shares a 13-gram with evaluation data.

Why 13 words: GPT-3 (Brown et al. 2020, appendix C) filtered its training data on 13-gram overlaps with
every benchmark, and for its overlap analysis called a benchmark example "dirty" when it shared an
N-gram with training data (N = the benchmark's 5th-percentile example length in words, within [8, 13];
13 for most). Later open recipes use the same kind of long exact-overlap test (Llama 2, section
A.6, counts overlapping token n-grams of 10 or more; OLMo's Dolma removes training documents whose
paragraphs appear in its Paloma evaluation data). One shared n-gram is enough: a 13-word sequence is
almost never shared by chance, while a benchmark example leaked into a web page shares many.

Normalization (the same on both sides, so the comparison is exact on normalized text): words are
Unicode ``\\w+`` runs of the lower-cased text, so case, punctuation and whitespace differences vanish
("Paris, France." and "paris france" match); digits are kept. This is the regex the near-dup stage
uses (``pipelines.text.words``) and close to GPT-3's "ignoring all punctuation, whitespace,
and casing" (one difference: an apostrophe splits a word here, "don't" -> "don t", on both sides alike).

Short evaluation texts: an eval text with fewer than ``n`` words but at least ``min_eval_words`` (8,
GPT-3's floor) is indexed whole, as one m-gram matched against the documents' m-grams; shorter ones
are skipped (and counted in ``EvalIndex.skipped_short``): a 5-word answer like "the capital of france
is" is everywhere and would flag half the web.

Index and memory: each n-gram is a 64-bit hash: word hashes (xxh3-64) folded with a polynomial over
uint64 (as the near-dup shingles), then a 64-bit finalizer. The index keeps one sorted ``uint64`` array
per n-gram length plus a ``uint16`` eval-source id per entry, so **10 bytes per distinct eval n-gram**
(about 26 bytes transiently while building: the concatenated hashes, ids and the sort order); e.g.
10 M eval n-grams (all of MMLU, HellaSwag, ARC, GSM8K ... together are well under that) take ~100 MB
on every worker. Documents are never indexed: each is hashed and looked up (``np.searchsorted``)
independently, so the stage scales like a filter. A false match needs a 64-bit collision: with 10 M
index entries and 10^12 document n-grams the expected number is ~0.5 in total, i.e. nil per document.
When several eval sources hold the same n-gram, the first source in sorted name order is reported.

Modes: ``document`` drops a document with any match (``find``). ``spans`` is GPT-3's training-set
filter (appendix C, "initial training set filtering"): cut each colliding n-gram "as well as a 200
character window around it", discard the remaining pieces shorter than 200 characters, and drop the
whole document when it was "split into more than 10 pieces" (``remove_spans``; kept pieces are joined
with a blank line). GPT-3 also ignored 13-grams that matched more than 10 training documents (common
phrases, legal boilerplate); that needs a corpus-wide count and is not done here.

Eval data (JSON Lines files or folders of them, local or remote) is listed, read and indexed by
``pipelines.sources.evals``; this module is the pure part: the index (``EvalIndex.from_texts``) and the test
of a document against it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import xxhash

from pipelines.text import WORD_RE, ngram_fold, splitmix64, word_spans, words

MODES = ("document", "spans")


class DecontamError(ValueError):
    """A configuration or eval-data problem; the message names the file or key."""


@dataclass(frozen=True)
class DecontamConfig:
    """Frozen and picklable: ship it to workers, build the index there (or ship the index)."""

    eval_paths: tuple[str, ...]            # files, directories or globs; local, gs://, s3://
    n: int = 13                            # n-gram length in words (GPT-3)
    mode: str = "document"                 # "document": drop the document | "spans": cut the matches
    text_field: str = "text"               # dotted path in each eval JSON line
    min_eval_words: int = 8                # shorter eval texts are skipped (GPT-3's lower bound for N)
    window_chars: int = 200                # spans mode: characters also cut on each side of a match (GPT-3)
    min_piece_chars: int = 200             # spans mode: shorter leftover pieces are dropped (GPT-3)
    max_pieces: int = 10                   # spans mode: more pieces than this -> whole document dropped (GPT-3)

    def __post_init__(self):
        if isinstance(self.eval_paths, str):
            object.__setattr__(self, "eval_paths", (self.eval_paths,))
        else:
            object.__setattr__(self, "eval_paths", tuple(self.eval_paths))
        if not self.eval_paths:
            raise DecontamError("decontam.eval_paths: give at least one eval file, directory or glob")
        if self.mode not in MODES:
            raise DecontamError(f"decontam.mode: expected one of {MODES}, got {self.mode!r}")
        if min(self.window_chars, self.min_piece_chars) < 0 or self.max_pieces < 1:
            raise DecontamError("decontam: window_chars and min_piece_chars must be >= 0 and max_pieces >= 1")
        if not 1 <= self.min_eval_words <= self.n:
            raise DecontamError(f"decontam: need 1 <= min_eval_words ({self.min_eval_words}) <= n ({self.n})")


# ---------------------------------------------------------------------------------------------
# Normalization and hashing (shared by both sides)
# ---------------------------------------------------------------------------------------------


def _word_hashes(ws: Sequence[str]) -> np.ndarray:
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(w.encode("utf-8")) for w in ws), dtype=np.uint64, count=len(ws))


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """64-bit hash of every word n-gram (one per start position) from the words' hashes."""
    with np.errstate(over="ignore"):
        return splitmix64(ngram_fold(wh, n) + np.uint64(n))   # spreads the polynomial's structure over all 64 bits


# ---------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalIndex:
    """Hashed eval n-grams -> eval source. Picklable (numpy arrays and a tuple of names)."""

    n: int
    sources: tuple[str, ...]
    keys: dict[int, np.ndarray]            # n-gram length -> sorted unique uint64 hashes
    source_ids: dict[int, np.ndarray]      # n-gram length -> uint16 index into ``sources``, per key
    eval_texts: int = 0
    skipped_short: int = 0
    per_source: dict[str, int] = field(default_factory=dict)   # eval texts indexed per source
    window_chars: int = 200                # spans mode, see DecontamConfig
    min_piece_chars: int = 200
    max_pieces: int = 10

    @classmethod
    def from_texts(cls, pairs: Iterable[tuple[str, str]], n: int = 13, min_eval_words: int = 8,
                   window_chars: int = 200, min_piece_chars: int = 200, max_pieces: int = 10) -> "EvalIndex":
        """Index ``(eval_source, text)`` pairs; see the module docstring for short texts."""
        chunks: dict[int, list[np.ndarray]] = {}
        chunk_src: dict[int, list[str]] = {}
        counts: Counter = Counter()
        skipped = total = 0
        for source, text in pairs:
            ws = words(text)
            if len(ws) < min_eval_words:
                skipped += 1
                continue
            m = min(n, len(ws))
            h = ngram_hashes(_word_hashes(ws), m)
            chunks.setdefault(m, []).append(h)
            chunk_src.setdefault(m, []).append(source)
            counts[source] += 1
            total += 1
        names = tuple(sorted(counts))
        if len(names) > np.iinfo(np.uint16).max:
            raise DecontamError(f"decontam: {len(names)} eval sources; at most 65535 are supported")
        sid = {s: i for i, s in enumerate(names)}
        keys, ids = {}, {}
        for m, hs in chunks.items():
            k = np.concatenate(hs)
            s = np.concatenate([np.full(len(h), sid[src], dtype=np.uint16) for h, src in zip(hs, chunk_src[m])])
            order = np.lexsort((s, k))                     # by hash, then by source name order
            k, s = k[order], s[order]
            first = np.ones(len(k), dtype=bool)
            first[1:] = k[1:] != k[:-1]
            keys[m], ids[m] = k[first], s[first]
        return cls(n, names, keys, ids, total, skipped, dict(sorted(counts.items())),
                   window_chars, min_piece_chars, max_pieces)

    @property
    def num_ngrams(self) -> int:
        return int(sum(len(k) for k in self.keys.values()))

    @property
    def nbytes(self) -> int:
        return int(sum(k.nbytes for k in self.keys.values()) + sum(s.nbytes for s in self.source_ids.values()))

    def _matches(self, wh: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """``(start_word, length, source_id)`` for every matching position, each length in turn."""
        for m in sorted(self.keys, reverse=True):
            keys = self.keys[m]
            h = ngram_hashes(wh, m)
            if not len(h) or not len(keys):
                continue
            pos = np.searchsorted(keys, h)
            pos[pos == len(keys)] = 0
            hit = np.flatnonzero(keys[pos] == h)
            for i in hit:
                yield int(i), m, int(self.source_ids[m][pos[i]])

    def find(self, text: str) -> Optional[tuple[str, str]]:
        """The first shared n-gram in document order (longest length first at a tie) as
        ``(normalized n-gram text, eval source)``, or None when the document is clean."""
        ws = words(text)
        if len(ws) < min(self.keys, default=self.n + 1):
            return None
        best = None
        for start, m, sid in self._matches(_word_hashes(ws)):
            if best is None or (start, -m) < (best[0], -best[1]):
                best = (start, m, sid)
        if best is None:
            return None
        start, m, sid = best
        return " ".join(ws[start:start + m]), self.sources[sid]

    def remove_spans(self, text: str) -> tuple[str, int]:
        """GPT-3's span filter (module docstring): returns ``(new_text, spans_removed)``.

        Every matching word run, widened by ``window_chars`` on each side, is cut; cuts that overlap or
        have no word between them merge and count as one span. The pieces left between cuts that are shorter than ``min_piece_chars``
        (after stripping) are dropped and the rest joined with a blank line. A document cut into more than
        ``max_pieces`` pieces comes back as ``""`` (drop it; count it as contaminated). Nothing matched:
        ``(text, 0)`` with the same object."""
        ws, spans = word_spans(text)
        if len(ws) < min(self.keys, default=self.n + 1):
            return text, 0
        cuts = sorted((max(0, spans[s][0] - self.window_chars), min(len(text), spans[s + m - 1][1] + self.window_chars))
                      for s, m, _ in self._matches(_word_hashes(ws)))
        if not cuts:
            return text, 0
        merged = [list(cuts[0])]
        for a, b in cuts[1:]:
            if a <= merged[-1][1] or not WORD_RE.search(text, merged[-1][1], a):   # overlap, or no word between
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        bounds = [0] + [x for ab in merged for x in ab] + [len(text)]
        pieces = [text[bounds[i]:bounds[i + 1]] for i in range(0, len(bounds), 2)]
        pieces = [p.strip() for p in pieces if p.strip()]
        if len(pieces) > self.max_pieces:
            return "", len(merged)
        return "\n\n".join(p for p in pieces if len(p) >= self.min_piece_chars), len(merged)


class DecontamResult(NamedTuple):
    """What the build does with one document: ``text`` None -> remove it (stats key and reject record);
    ``text`` changed -> keep the cut text; ``ngram``/``eval_source`` name the first overlap ("" if clean)."""

    text: Optional[str]
    spans_removed: int
    ngram: str
    eval_source: str

    @property
    def contaminated(self) -> bool:
        return bool(self.eval_source)


def decontaminate(index: EvalIndex, mode: str, text: str) -> DecontamResult:
    """One document through the stage: ``find`` first (the cheap test every document pays), then in
    ``spans`` mode ``remove_spans`` on the few that matched; an empty cut result means remove."""
    hit = index.find(text)
    if hit is None:
        return DecontamResult(text, 0, "", "")
    ngram, source = hit
    if mode == "document":
        return DecontamResult(None, 0, ngram, source)
    if mode != "spans":
        raise DecontamError(f"decontam.mode: expected one of {MODES}, got {mode!r}")
    new, n = index.remove_spans(text)
    return DecontamResult(new if new.strip() else None, n, ngram, source)
