"""OLMo / OLMoE data rules: repeated n-gram runs, GitHub stars, most frequent words.

Source: OLMoE (Muennighoff et al. 2024, "OLMoE: Open Mixture-of-Experts Language Models", section 2
"Pretraining data", and the OLMoE-mix-0924 dataset card): "To all sources above, we apply a filter that
removes all documents with a sequence of 32 or more repeated n-grams, where an n-gram is any span of 1 to
13 tokens. For the StarCoder subset, we also remove any document from a repository with fewer than 2 stars
on GitHub, whose most frequent word constitutes over 30% of the document, or whose top-2 most frequent
words constitute over 50% of the document." OLMo 2 (Team OLMo 2024, "2 OLMo 2 Furious", OLMo 2 Mix
1124, the same data) gives the reasons: the word-frequency rule removes StarCoder files "encoded in
binary format or containing mostly numerical content", the repetition rule is there "to mitigate
possible training loss spikes". The repetition rule is also OLMo-core's training-time instance filter
(``InstanceFilterConfig(repetition_max_period=13, repetition_min_period=1, repetition_max_count=32)``;
an instance is dropped when a periodic run has ``times >= 32``).

How each is measured here:

``olmo_repeated_ngrams`` (all sources): OLMo counts NeoX/Dolma BPE tokens. A filter rule here is a pure
function of the text with no tokenizer (a BPE pass costs as much as the tokenize stage itself), so the
"tokens" are word runs (``\\w+``) and punctuation runs (``[^\\w\\s]+``), whitespace dropped. That is close
to BPE for repetition: BPE also keeps a word (with its leading space) and a punctuation run as one
or a few tokens, so a span that repeats in BPE repeats here with the same or a shorter period and the
same count; long words split into several BPE pieces have a shorter period here, so this catches at
least what OLMo's 1..13-token periods catch in prose. Unlike BPE, runs of whitespace alone (a page of
blank lines or spaces) are not tokens here and never count as repetition. The run is measured exactly
(every start position, every period 1..13), where Dolma's ``find_periodic_sequences`` aligns rows to
multiples of the period.

``olmo_min_stars`` (The Stack / StarCoder): ``meta["max_stars_count"]`` (The Stack's column: stars of
the most-starred repository holding the file). Present and below 2 -> rejected. Present but empty,
"None", "null" or "nan" -> 0 stars (Dolma's StarCoder tagger reads a missing count as 0: The Stack stores
null when GH Archive saw no star event). Absent from ``meta`` -> kept (``if_missing: keep``, the default):
a reader that does not copy the column cannot tell a zero-star repository from an unknown one, and
silently dropping a whole source is worse; ``pipelines.filters.warnings`` warns when most documents lack the key.
Set ``{olmo_min_stars: {if_missing: reject}}`` to follow Dolma exactly. Note that The Stack's reader
drops null values from ``meta``, so nulls arrive here as absent, not as "None".

``olmo_top_words`` (The Stack / StarCoder): words are Dolma's ``top_k`` tagger tokens: the text split on
runs of non-word characters and before capitalized words (``\\W+|[A-Z]\\w+`` as separators that are
themselves kept), each piece stripped, empty pieces dropped; so "fooBar(x, y)" gives ``foo``, ``Bar``,
``(``, ``x``, ``,``, ``y``, ``)``. Counting punctuation runs is what makes hex dumps, CSV-like numbers and
base64 walls stand out. Shares are counts over the number of tokens. Rejected when the top word is
above 0.30 or the top two together are above 0.50.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

import numpy as np

from pipelines.filters import register
from pipelines.filters.text_stats import PUNCT, WORDCHAR, analyze

# ---------------------------------------------------------------------------------------------
# Repeated n-gram runs
# ---------------------------------------------------------------------------------------------

_REP_TOKEN = re.compile(r"\w+|[^\w\s]+")


def repetition_tokens(text: str) -> list[str]:
    """Word runs and punctuation runs, whitespace dropped (see module docstring)."""
    return _REP_TOKEN.findall(text)


def longest_periodic_run(ids: np.ndarray, min_period: int = 1, max_period: int = 13) -> tuple[int, int, int]:
    """The longest stretch of ``ids`` that repeats one n-gram (n in [min_period, max_period]) back to back.

    Returns ``(times, period, start)``: how many whole copies of the n-gram follow each other, the
    n-gram's length and where the stretch starts; ``(1, 0, 0)`` when nothing repeats. For a period p,
    ``ids[i] == ids[i + p]`` over a run of L consecutive positions means ``ids[i : i + L + p]`` is
    p-periodic, i.e. ``(L + p) // p`` whole copies.
    """
    best = (1, 0, 0)
    n = len(ids)
    for p in range(min_period, min(max_period, n // 2) + 1):
        eq = ids[p:] == ids[:-p]
        if not eq.any():
            continue
        # lengths of runs of True: gaps between the positions of False
        breaks = np.flatnonzero(~eq)
        bounds = np.concatenate(([-1], breaks, [len(eq)]))
        runs = np.diff(bounds) - 1
        j = int(runs.argmax())
        times = (int(runs[j]) + p) // p
        if times > best[0]:
            best = (times, p, int(bounds[j]) + 1)
    return best


def may_repeat(h: np.ndarray, min_repeats: int, min_period: int, max_period: int) -> bool:
    """False only when no run of ``min_repeats`` copies of an n-gram can exist in the token keys ``h``:
    equal tokens have equal keys, so a run of the tokens is a run of the keys (a key collision or the
    padding can only add a candidate, which the exact check then settles). A run of t copies of a p-gram
    needs ``(t - 1) * p`` consecutive positions with ``h[i] == h[i + p]``, hence at least that many such
    positions in all: one count per period settles ordinary prose, and the periods that pass are checked
    for such a stretch among their (few) equal positions.

    Why this shape: every period is compared at once as rows of one strided view whose rows are contiguous
    (``h`` shifted by p), so each comparison is a vectorized pass; a column-per-period window (each row the
    13 next tokens) compared ~10x slower on long documents."""
    n = len(h)
    top = min(max_period, n // 2)
    if top < min_period:
        return False
    h = np.ascontiguousarray(h)
    padded = np.concatenate((h, np.arange(top, dtype=h.dtype)))  # h[i + p] for i + p >= n: never a real token
    size = h.itemsize
    shifted = np.ndarray((top - min_period + 1, n), h.dtype, padded, min_period * size, (size, size))
    eq = shifted == h                                  # row j: h[i] == h[i + min_period + j]
    need = (min_repeats - 1) * np.arange(min_period, top + 1)
    for j in np.flatnonzero(np.count_nonzero(eq, axis=1) >= need).tolist():
        k = int(need[j]) - 1       # need[j] consecutive equal positions: e[m + k] - e[m] == k
        e = np.flatnonzero(eq[j])
        if k <= 0 or bool((e[k:] - e[:-k] == k).any()):
            return True
    return False


@register("olmo_repeated_ngrams", min_repeats=32, min_period=1, max_period=13)
def olmo_repeated_ngrams(text: str, meta: Mapping[str, str], min_repeats: int, min_period: int, max_period: int):
    """A run of 32 or more back-to-back copies of one n-gram of 1..13 tokens (OLMoE section 2; OLMo-core
    instance filter). Tokens are word and punctuation runs, not BPE (see module docstring)."""
    h = analyze(text).repetition_token_hashes  # vectorized: the exact path below runs only on candidates
    if len(h) < min_repeats * min_period:
        return None
    if min_repeats > 1 and not may_repeat(h, min_repeats, min_period, max_period):  # (1 copy: any text repeats)
        return None
    toks = repetition_tokens(text)
    if len(toks) < min_repeats * min_period:
        return None
    counts = Counter(toks)
    if max(counts.values()) < min_repeats:
        return None  # every token of a repeated n-gram occurs min_repeats times
    vocab = {t: i for i, t in enumerate(counts)}
    ids = np.fromiter(map(vocab.__getitem__, toks), dtype=np.int64, count=len(toks))
    times, period, start = longest_periodic_run(ids, min_period, max_period)
    if times < min_repeats:
        return None
    gram = " ".join(toks[start:start + period])
    return float(times), f"{times} repeats of the {period}-gram {gram[:60]!r} >= {min_repeats}"


# ---------------------------------------------------------------------------------------------
# GitHub stars
# ---------------------------------------------------------------------------------------------

STARS_KEY = "max_stars_count"
_NULLS = ("", "none", "null", "nan")


@register("olmo_min_stars", min_stars=2, key=STARS_KEY, if_missing="keep", needs_meta=("max_stars_count",),
          missing_effect="keeps them without checking (if_missing: keep)")
def olmo_min_stars(text: str, meta: Mapping[str, str], min_stars: int, key: str, if_missing: str):
    """Repository with fewer than 2 GitHub stars (OLMoE, StarCoder subset), read from
    ``meta["max_stars_count"]``; absent key -> kept unless ``if_missing: reject`` (module docstring)."""
    if if_missing not in ("keep", "reject"):
        raise ValueError(f"olmo_min_stars: if_missing must be 'keep' or 'reject', got {if_missing!r}")
    raw = meta.get(key) if meta else None
    if raw is None:
        return None if if_missing == "keep" else (float("nan"), f"no {key} in metadata")
    s = str(raw).strip()
    if s.lower() in _NULLS:
        stars = 0.0
    else:
        try:
            stars = float(s)
        except ValueError:
            return float("nan"), f"{key}={s[:40]!r} is not a number"
    return None if stars >= min_stars else (stars, f"{key}={stars:g} < {min_stars}")


# ---------------------------------------------------------------------------------------------
# Most frequent words
# ---------------------------------------------------------------------------------------------

_TOPK_SPLIT = re.compile(r"(\W+|[A-Z]\w+)")


def top_k_tokens(text: str) -> list[str]:
    """Dolma ``top_k`` tagger tokens: non-empty stripped pieces of a split that keeps its separators."""
    return [s for piece in _TOPK_SPLIT.split(text) if (s := piece.strip())]


def top_word_counts_bound(text: str) -> tuple[int, int, int]:
    """``(n, c1, c2)``: the exact number of ``top_k_tokens(text)``, and upper bounds of the counts of its most
    frequent and second most frequent token, from the shared TextStats without building a string.

    The tokens, from the split's definition: a run of ``\\W`` characters holding something other than whitespace
    is one token (the run stripped: from its first to its last non-space character); a run of ``\\w`` characters
    is one token, or two when an ASCII capital other than its first character has a ``\\w`` character after it
    and the run does not itself open with such a capital (``[A-Z]\\w+`` then takes the rest of the run from the
    first such capital). Tokens are counted by a key of (code point sum, length, first code point): equal tokens
    share a key, so the largest key count is at least the largest token count and the two largest key counts
    sum to at least the two largest token counts (tokens sharing a key only make the bounds looser).

    Why: the split, the stripping and the Counter cost ~0.5 ms per Stack file (~10 CPU-s per GB of code);
    these bounds clear ordinary code at ~0.2 ms and only near-rejects build the strings."""
    st = analyze(text)
    n_chars = st.n_chars
    if n_chars == 0:
        return 0, 0, 0
    cls, cp = st.classes, st.codepoints
    word = np.zeros(n_chars + 2, dtype=bool)                # 0-padded: every \\w run has two edges
    np.not_equal(cls & WORDCHAR, 0, out=word[1:-1])
    edges = np.flatnonzero(word[1:] != word[:-1])
    ws, we = edges[0::2], edges[1::2]                       # the \\w runs
    cap = (cp - cp.dtype.type(65)) <= 25                     # ASCII capitals (wraps below 'A'; always \\w)
    caps = np.flatnonzero(cap)
    nxt = np.searchsorted(caps, ws + 1)                      # first capital after each run's first character
    k = caps[np.minimum(nxt, len(caps) - 1)] if len(caps) else nxt
    split = (nxt < len(caps)) & (k <= we - 2) & ~(cap[ws] & (we - ws >= 2))
    punct = np.flatnonzero((cls & PUNCT) != 0)              # neither \\w nor whitespace
    wcum = np.cumsum(word, dtype=np.int32)                  # \\w characters before each position (+1 padding)
    new = np.ones(len(punct), dtype=bool)
    new[1:] = wcum[punct[1:]] != wcum[punct[:-1]]           # a \\w character between: another \\W run
    last = np.ones(len(punct), dtype=bool)
    last[:-1] = new[1:]
    starts = np.concatenate((ws, k[split], punct[new]))
    ends = np.concatenate((np.where(split, k, we), we[split], punct[last] + 1))
    n = len(starts)
    if n == 0:
        return 0, 0, 0
    csum = np.zeros(n_chars + 1, dtype=np.uint32)           # 32-bit keys: a collision only loosens the bound
    np.cumsum(cp, dtype=np.uint32, out=csum[1:])
    with np.errstate(over="ignore"):
        key = ((csum[ends] - csum[starts]) * _KEY_MULT + (ends - starts).astype(np.uint32)) * _KEY_MULT
        key += cp[starts]
    key.sort()
    runs = np.flatnonzero(key[1:] != key[:-1])
    counts = np.diff(runs, prepend=-1, append=n - 1) if len(runs) else np.array([n])
    counts.sort()
    return n, int(counts[-1]), int(counts[-2]) if len(counts) > 1 else 0


_KEY_MULT = np.uint32(0x9E3779B1)  # odd 32-bit constant (golden ratio) for key mixing


@register("olmo_top_words", max_top1=0.30, max_top2=0.50)
def olmo_top_words(text: str, meta: Mapping[str, str], max_top1: float, max_top2: float):
    """Most frequent word above 30% of the words, or the top two above 50% (OLMoE, StarCoder subset:
    binary-encoded or mostly numerical files). Words as Dolma's top_k tagger (module docstring)."""
    n, c1, c2 = top_word_counts_bound(text)  # vectorized bounds: the token strings only for candidates
    if n == 0 or (c1 / n <= max_top1 and (c1 + c2) / n <= max_top2):
        return None
    toks = top_k_tokens(text)
    if not toks:
        return None  # nothing to measure; empty texts are the length rules' business
    top = Counter(toks).most_common(2)
    n = len(toks)
    share1 = top[0][1] / n
    if share1 > max_top1:
        return share1, f"top word {top[0][0][:30]!r} is {share1:.2f} of {n} words > {max_top1}"
    if len(top) > 1:
        share2 = (top[0][1] + top[1][1]) / n
        if share2 > max_top2:
            return share2, (f"top two words {top[0][0][:20]!r}, {top[1][0][:20]!r} are {share2:.2f} of {n} "
                            f"words > {max_top2}")
    return None
