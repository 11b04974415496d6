"""MiniLM's word pieces (BERT uncased): the same ids as ``tokenizers`` gives, 3-6x faster per core.

Why. SemDedup's embedders were bound by word-piece tokenization: on a GPU host the tokenizer's thread pool on
16 cores fed ~22k c4 documents/s to a forward that runs ~46k/s, and the CPU's static model spent most of its
time there too. ``tokenizers`` tracks every character's alignment through BERT's normalizer and
pre-tokenizer; we need only ids. BERT's normalizer works one character at a time (clean-up, CJK padding,
accent stripping, lower-casing), so a text is normalized here by ``str.lower`` (text of characters it
leaves alone, and ASCII capitals: most web text) or by ``str.translate`` with a per-character table; the
pre-tokenizer is one regex (runs of word characters, each punctuation character alone, whitespace
dropped), and the pieces of each pre-token come from the tokenizer's own WordPiece model, cached per word
(Zipf: a few thousand words cover most text). A text holding a character the table cannot stand for (a
combining mark NFD could reorder, anything outside the scanned planes) goes through the tokenizer whole,
so the ids are the tokenizer's for every text (tests/test_wordpiece.py: property tests and every corpus).

The character classes and the table are not written down here: they are read from the tokenizer when it is
loaded (each scanned character through its normalizer, each normalized character through its
pre-tokenizer, ~0.4 s), so they cannot drift from the installed ``tokenizers``. Measured in
benchmarks/RESULTS.md ("SemDedup on a GPU", run 4).
"""
from __future__ import annotations

import functools
import itertools
import os
import re
import unicodedata
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

_CUT = 1400         # chars per step when only the first pieces are needed (256 pieces of English: ~1,100-1,300)
_CACHE_WORDS = 1 << 19  # words remembered per process before the cache starts over (~80 MB)


_SCANNED = (range(0x10000), range(0x1F000, 0x1FB00))  # the basic plane and the emoji blocks


class _Rules(NamedTuple):
    """What the tokenizer's normalizer and pre-tokenizer do, character by character."""

    plain: re.Pattern   # a character that ``str.lower`` does not normalize as BERT does (absent: lower() is exact)
    slow: re.Pattern    # a character only the tokenizer itself can handle (absent: ``table`` is exact)
    table: dict         # code point -> its normalized text, for every character that changes
    words: re.Pattern   # pre-tokens of normalized text: runs of word characters, each punctuation alone


@functools.lru_cache(maxsize=4)
def _rules(path: str) -> _Rules:
    """Read from the tokenizer itself: each character of the basic plane and the emoji blocks through its
    normalizer, and each character a normalized text can hold through its pre-tokenizer (between two
    letters: one pre-token means a word character, three a punctuation character).

    Per-character normalization is exact because every step of BERT's normalizer maps characters one at a
    time (clean-up, CJK padding, lower-casing) except NFD's reordering of combining marks, and those are all
    removed by its accent stripping: a character whose normalized text holds a combining mark is left to the
    tokenizer. ``str.lower`` stands in for the normalizer on text of characters it leaves alone and ASCII
    capitals."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    norm, pre = tok.normalizer, tok.pre_tokenizer
    table, same, spaces = {}, [], []
    for cp in itertools.chain(*_SCANNED):
        c = chr(cp)
        if 0xD800 <= cp < 0xE000 or unicodedata.combining(c):
            continue
        n = norm.normalize_str(c)
        if any(unicodedata.combining(x) for x in n):
            continue  # NFD's reordering could reach past this character: the tokenizer's job
        if n == c:
            same.append(c)
        else:
            table[cp] = n
            if n == " ":
                spaces.append(c)
    word, punct = [], []
    for o in sorted(set(same).union(*table.values()) - {" "}):
        pieces = len(pre.pre_tokenize_str("a" + o + "a"))
        (punct if pieces == 3 else word if pieces == 1 else []).append(o)
    kept = set(word) | set(punct)
    ok = kept | {" "}  # (a character the pre-tokenizer neither keeps whole nor splits off alone: the tokenizer's)
    same = [c for c in same if c in ok]
    table = {cp: n for cp, n in table.items() if ok.issuperset(n)}
    # lower() is exact on characters that keep their form (and lower() keeps), ASCII capitals, and whitespace
    seps = [" "] + [c for c in spaces if c not in kept]
    plain = [c for c in same if c.lower() == c] + [chr(cp) for cp in range(65, 91)] + seps

    def cls(chars):
        return "".join(re.escape(c) for c in sorted(chars))

    # normalized text holds only kept characters and separators, so a word is a run of anything else (a small
    # negated class: Python's re matches large positive classes slowly)
    return _Rules(plain=re.compile(f"[^{cls(plain)}]"), slow=re.compile(f"[^{cls(same + list(map(chr, table)))}]"),
                  table=table, words=re.compile(f"[^{cls(punct + seps)}]+|[{cls(punct)}]"))


class WordPieces:
    """Word-piece ids of many texts as ``(lengths, flat ids)``: what ``tokenizers`` gives with its
    truncation at ``max_pieces`` (None: none) and the ``[CLS] ... [SEP]`` template when ``special``."""

    def __init__(self, path: str | Path, max_pieces: int | None = None, special: bool = False):
        from tokenizers import Tokenizer

        self.path, self.max_pieces, self.special = str(path), max_pieces, special
        self.tok = Tokenizer.from_file(self.path)  # texts outside the fast path go through it whole
        if max_pieces:
            self.tok.enable_truncation(max_pieces)
        else:
            self.tok.no_truncation()
        self.tok.no_padding()
        self._model = self.tok.model
        self._rules = _rules(self.path)
        self._translate = lambda text: text.translate(self._rules.table)
        self._cache: dict[str, list[int]] = {}
        self._ends = ([self.tok.token_to_id("[CLS]")], [self.tok.token_to_id("[SEP]")]) if special else ([], [])
        self._limit = (max_pieces - 2 * special) if max_pieces else None

    def _ids(self, words: list[str]) -> list[list[int]]:
        """Each word's pieces: cached look-ups in one C-level pass, the WordPiece model for the misses."""
        got = list(map(self._cache.get, words))
        if None in got:
            if len(self._cache) >= _CACHE_WORDS:
                self._cache.clear()
            for i, w in enumerate(words):
                if got[i] is None:
                    got[i] = self._cache[w] = [t.id for t in self._model.tokenize(w)]
        return got

    def _pieces(self, text: str, normalize) -> list[int]:
        """The pieces of a text this module can cut; with a limit, read in steps that end at a space (a
        pre-token boundary, normalized or not) and stop once the limit is filled."""
        words = self._rules.words
        if self._limit is None:
            return list(itertools.chain.from_iterable(self._ids(words.findall(normalize(text)))))
        out: list[int] = []
        start = 0
        while start < len(text) and len(out) < self._limit:
            end = len(text) if len(text) - start <= _CUT else text.rfind(" ", start + 1, start + _CUT)
            if end <= start:
                end = text.find(" ", start + _CUT)
                end = len(text) if end < 0 else end
            out.extend(itertools.chain.from_iterable(self._ids(words.findall(normalize(text[start:end])))))
            start = end
        return out[:self._limit]

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """int64 lengths [n] and int32 ids [sum(lengths)], in the texts' order."""
        rows: list[list[int] | None] = []
        slow = []
        head, tail = self._ends
        plain, other = self._rules.plain, self._rules.slow
        for i, t in enumerate(texts):
            if not plain.search(t):
                rows.append(head + self._pieces(t, str.lower) + tail)
            elif not other.search(t):
                rows.append(head + self._pieces(t, self._translate) + tail)
            else:
                slow.append(i)
                rows.append(None)
        if slow:
            old = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
            try:
                encs = self.tok.encode_batch_fast([texts[i] for i in slow], add_special_tokens=self.special)
            finally:
                if old is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = old
            for i, e in zip(slow, encs):
                rows[i] = e.ids
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lens.sum()))
        return lens, flat

    def submit(self, texts: Sequence[str]):
        """``PiecePool.submit``'s interface, done here and now (a CPU worker has no cores to spare)."""
        done = self.encode(texts)
        return lambda: done


_PROCESS: WordPieces | None = None


def _start(path: str, max_pieces: int | None, special: bool) -> None:
    global _PROCESS
    _PROCESS = WordPieces(path, max_pieces, special)


def _encode_in_process(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _PROCESS.encode(texts)


def _ready() -> bool:
    return _PROCESS is not None


class PiecePool:
    """``WordPieces`` on a pool of processes (a GPU worker: one process feeds the device while the host's
    other cores cut word pieces). ``submit`` returns a function that waits for the ids of its texts."""

    SLICE = 512  # texts per task: small enough to spread a chunk over the pool, large enough to amortize IPC

    def __init__(self, path: str | Path, max_pieces: int | None = None, special: bool = False,
                 processes: int | None = None):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        n = processes or max(1, (os.cpu_count() or 2) - 1)
        # forkserver: the pool's processes never inherit the parent's CUDA context or threads
        self._pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("forkserver"),
                                         initializer=_start, initargs=(str(path), max_pieces, special))
        # all processes started and loaded now (a worker's setup), not one per task inside the first chunks;
        # n tasks submitted before any can finish start n processes
        for started in [self._pool.submit(_ready) for _ in range(n)]:
            started.result()

    def submit(self, texts: Sequence[str]):
        futures = [self._pool.submit(_encode_in_process, list(texts[s:s + self.SLICE]))
                   for s in range(0, len(texts), self.SLICE)]

        def result() -> tuple[np.ndarray, np.ndarray]:
            parts = [f.result() for f in futures]
            if not parts:
                return np.zeros(0, np.int64), np.zeros(0, np.int32)
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

        return result

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.submit(texts)()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
