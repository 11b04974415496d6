"""Planted near-duplicates for measuring dedupe quality: realistic edits of real documents, with the true
5-gram Jaccard of every (original, variant) pair recorded.

Why a module and not test fixtures: the quality benchmark, the speed benchmark and the end-to-end tests
must score exactly the same kind of data, and the scoring rules (what counts as a hit, a wrong removal)
must not drift between them.

Edits model what near-duplicates look like in crawls and code dumps: mirrored pages with a different
header/footer (boilerplate), light re-edits (word insertions/deletions), OCR/typing noise (typos),
truncated or abridged copies (dropped sentences), and verbatim copies. Edit strength is drawn per variant
so the true Jaccard spreads from ~0.3 to 1.0 and every region of the LSH S-curve is exercised.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from pipelines.dedupe.minhash import exact_jaccard

EDITS = ("exact", "typos", "insert_delete", "drop_sentences", "boilerplate", "mixed")

_HEADERS = [
    "Home | News | Sport | Contact us | Subscribe to our newsletter for the latest updates",
    "Skip to main content. Menu. Search this site. Log in or register to post comments.",
    "This page was archived from the original source and may contain outdated information.",
]
_FOOTERS = [
    "Copyright 2021 All rights reserved. Privacy policy | Terms of use | Cookie settings | Sitemap",
    "Share this: Twitter Facebook Reddit Email. Like this: Like Loading... Related posts",
    "Leave a reply. Your email address will not be published. Required fields are marked *",
]
_FILLER = ("the a of and to in that it is was for on are with as his they be at one have this from or "
           "had by hot word but what some we can out other were all there when up use your how said an "
           "each she which do their time if will way about many then them write would like so these").split()
_SENT_RE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Planted:
    text: str
    origin: int        # index of the original in the base pool
    edit: str
    strength: float
    jaccard: float     # true 5-gram Jaccard (minhash.exact_jaccard) to the original


def _typos(text: str, rate: float, rng: random.Random) -> str:
    out = []
    for w in text.split(" "):
        if w and rng.random() < rate:
            i = rng.randrange(len(w))
            w = w[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + w[i + 1:]
        out.append(w)
    return " ".join(out)


def _insert_delete(text: str, rate: float, rng: random.Random) -> str:
    out = []
    for w in text.split(" "):
        r = rng.random()
        if r < rate / 2:
            continue
        out.append(w)
        if r > 1 - rate / 2:
            out.append(rng.choice(_FILLER))
    return " ".join(out)


def _drop_sentences(text: str, rate: float, rng: random.Random) -> str:
    parts = [p for p in _SENT_RE.split(text) if p]
    kept = [p for p in parts if rng.random() >= rate]
    return " ".join(kept or parts[:1])


def _boilerplate(text: str, strength: float, rng: random.Random) -> str:
    n = max(1, int(round(strength * 4)))
    head = " ".join(rng.choice(_HEADERS) for _ in range(n))
    foot = " ".join(rng.choice(_FOOTERS) for _ in range(n))
    return f"{head}\n\n{text}\n\n{foot}"


def make_variant(text: str, edit: str, strength: float, rng: random.Random) -> str:
    if edit == "exact":
        return text
    if edit == "typos":
        return _typos(text, 0.25 * strength, rng)
    if edit == "insert_delete":
        return _insert_delete(text, 0.2 * strength, rng)
    if edit == "drop_sentences":
        return _drop_sentences(text, 0.5 * strength, rng)
    if edit == "boilerplate":
        return _boilerplate(text, strength, rng)
    if edit == "mixed":
        t = _typos(text, 0.08 * strength, rng)
        t = _insert_delete(t, 0.06 * strength, rng)
        return _boilerplate(t, strength / 2, rng) if rng.random() < 0.5 else t
    raise ValueError(f"unknown edit {edit!r}")


def plant(base: Sequence[str], n_variants: int, seed: int = 0, ngram: int = 5,
          min_words: int = 50, edits: Sequence[str] = EDITS) -> list[Planted]:
    """``n_variants`` edited copies of randomly chosen base documents (with at least ``min_words`` words,
    so a 5-gram Jaccard is meaningful); deterministic for a given seed."""
    rng = random.Random(seed)
    eligible = [i for i, t in enumerate(base) if len(t.split()) >= min_words]
    out = []
    for _ in range(n_variants):
        i = rng.choice(eligible)
        edit = rng.choice(list(edits))
        strength = rng.random()
        v = make_variant(base[i], edit, strength, rng)
        out.append(Planted(v, i, edit, strength, exact_jaccard(base[i], v, ngram)))
    return out


# ---------------------------------------------------------------------------------------------------
# scoring

@dataclass(frozen=True)
class Score:
    removed: int
    positives: int            # planted pairs with true J >= positive_threshold
    detected: int             # of those, pairs that ended in the same cluster
    precision: float          # removals whose keeper is a planted relative (same family) / removals
    recall: float             # detected / positives
    f1: float
    no_relative: int          # removals of documents that have no planted relative at all
    low_pairs: int            # planted pairs with true J < low_threshold
    low_pairs_merged: int     # ... that the method put in one cluster


def score(families: Sequence[int], pair_j: dict[int, float], removed: dict[int, int],
          positive_threshold: float = 0.8, low_threshold: float = 0.6) -> Score:
    """Score removals against planted families.

    families[i]: family id of document i (its origin's index; originals are their own family);
    pair_j[i]: true Jaccard of planted document i to its origin; removed: document index -> index of the
    document it was declared a duplicate of (its cluster's keeper). Two documents are "in one cluster"
    when their keepers (themselves if kept) are equal.
    """
    def keeper(i: int) -> int:
        return removed.get(i, i)

    fam_size: dict[int, int] = {}
    for f in families:
        fam_size[f] = fam_size.get(f, 0) + 1
    correct = sum(1 for i, k in removed.items() if families[i] == families[k])
    no_rel = sum(1 for i in removed if fam_size[families[i]] == 1)
    positives = [i for i, j in pair_j.items() if j >= positive_threshold]
    detected = sum(1 for i in positives if keeper(i) == keeper(families[i]))
    low = [i for i, j in pair_j.items() if j < low_threshold]
    low_merged = sum(1 for i in low if keeper(i) == keeper(families[i]))
    p = correct / len(removed) if removed else 1.0
    r = detected / len(positives) if positives else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return Score(len(removed), len(positives), detected, p, r, f1, no_rel, len(low), low_merged)


def corpus_with_plants(base: Sequence[str], plants: Iterable[Planted]):
    """Documents in order: originals first (so they carry the smaller uids and are the expected keepers),
    then variants. Returns (texts, families, pair_j) in the shape ``score`` takes."""
    plants = list(plants)
    texts = list(base) + [p.text for p in plants]
    families = list(range(len(base))) + [p.origin for p in plants]
    pair_j = {len(base) + k: p.jaccard for k, p in enumerate(plants)}
    return texts, families, pair_j
