"""Gopher (MassiveText) quality and repetition rules.

Source: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher",
Appendix A.1.1 (quality filters) and Table A1 (repetition thresholds); the same numbers are the
defaults of datatrove's ``GopherQualityFilter`` / ``GopherRepetitionFilter`` (FineWeb). Each paper
criterion is its own rule so a source's stats say which one fired; all share one ``TextStats`` per
document (see ``text_stats``), so running all eleven costs little more than running one.

Word counting follows ``text_stats`` (whitespace words), not datatrove's NLTK/spaCy word tokenizer:
punctuation stays attached to words, which lengthens mean word length slightly (the 3..10 bounds are
wide) and makes the stop-word rule use a word-boundary regex instead of token equality.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from pipelines.filters import register
from pipelines.filters.basic import count_upto
from pipelines.filters.text_stats import analyze

# ---------------------------------------------------------------------------------------------
# Quality rules (Gopher A.1.1)
# ---------------------------------------------------------------------------------------------


@register("gopher_word_count", min_words=50, max_words=100_000)
def gopher_word_count(text: str, meta: Mapping[str, str], min_words: int, max_words: int):
    """Non-symbol word count outside [50, 100000] (Gopher A.1.1; symbol-only tokens such as "-" or
    "|" do not count as words)."""
    s = analyze(text)
    if s.n_words < min_words:  # cheap: non-symbol words <= words
        return float(s.n_words), f"{s.n_words} words < {min_words}"
    n = s.n_non_symbol_words
    if n < min_words:
        return float(n), f"{n} non-symbol words < {min_words}"
    if n > max_words:
        return float(n), f"{n} non-symbol words > {max_words}"
    return None


@register("gopher_mean_word_length", min_length=3.0, max_length=10.0)
def gopher_mean_word_length(text: str, meta: Mapping[str, str], min_length: float, max_length: float):
    """Mean length of non-symbol words outside [3, 10] characters (Gopher A.1.1)."""
    s = analyze(text)
    if s.n_non_symbol_words == 0:
        return 0.0, "no words"
    m = s.mean_non_symbol_word_length
    if m < min_length:
        return m, f"mean word length {m:.2f} < {min_length}"
    if m > max_length:
        return m, f"mean word length {m:.2f} > {max_length}"
    return None


@register("gopher_symbol_ratio", max_ratio=0.1)
def gopher_symbol_ratio(text: str, meta: Mapping[str, str], max_ratio: float):
    """Hash-symbol or ellipsis ("..." / "…") count per word above 0.1, each checked separately
    (Gopher A.1.1: "symbol-to-word ratio greater than 0.1 for either the hash symbol or the
    ellipsis")."""
    n = analyze(text).n_words
    if n == 0:
        return None  # nothing to measure; empty texts are the length rules' business
    hashes = text.count("#") / n
    if hashes > max_ratio:
        return hashes, f"'#' per word {hashes:.3f} > {max_ratio}"
    ell = (text.count("...") + text.count("…")) / n
    if ell > max_ratio:
        return ell, f"ellipsis per word {ell:.3f} > {max_ratio}"
    return None


# Bullets: datatrove checks "•" and "-"; we add the other common Unicode bullet glyphs and "*".
# Patterns anchored on a literal "\n" (plus a separate check of the first line) scan ~10x faster than
# the equivalent re.M "^" pattern, which the regex engine has to try at every position.
_BULLETS = "•‣◦⁃▪●∙*-"
_BULLET_AFTER_NL = re.compile(r"\n[ \t]*[" + re.escape(_BULLETS) + "]")
_BULLET_FIRST = re.compile(r"[ \t]*[" + re.escape(_BULLETS) + "]")
_DOTS_BEFORE_NL = re.compile(r"\.\.\.[ \t\r]*\n")
_ELLIPSIS_BEFORE_NL = re.compile(r"…[ \t\r]*\n")


def count_bullet_lines(text: str) -> int:
    """Lines (text.split("\\n")) whose first non-blank character is a bullet."""
    return len(_BULLET_AFTER_NL.findall(text)) + (1 if _BULLET_FIRST.match(text) else 0)


def count_ellipsis_lines(text: str) -> int:
    """Lines (text.split("\\n")) ending, before trailing blanks, in "..." or "…"."""
    n = 0
    if "..." in text:
        n += len(_DOTS_BEFORE_NL.findall(text))
    if "…" in text:
        n += len(_ELLIPSIS_BEFORE_NL.findall(text))
    if text.rstrip(" \t\r").endswith(("...", "…")) and not text.endswith("\n"):
        n += 1
    return n


@register("gopher_bullet_lines", max_fraction=0.9)
def gopher_bullet_lines(text: str, meta: Mapping[str, str], max_fraction: float):
    """More than 90% of lines start with a bullet point (Gopher A.1.1)."""
    frac = count_bullet_lines(text) / analyze(text).n_lines
    return None if frac <= max_fraction else (frac, f"bullet lines {frac:.2f} > {max_fraction}")


@register("gopher_ellipsis_lines", max_fraction=0.3)
def gopher_ellipsis_lines(text: str, meta: Mapping[str, str], max_fraction: float):
    """More than 30% of lines end with an ellipsis (Gopher A.1.1)."""
    if "..." not in text and "…" not in text:
        return None
    frac = count_ellipsis_lines(text) / analyze(text).n_lines
    return None if frac <= max_fraction else (frac, f"ellipsis lines {frac:.2f} > {max_fraction}")


@register("gopher_alpha_words", min_fraction=0.8)
def gopher_alpha_words(text: str, meta: Mapping[str, str], min_fraction: float):
    """Fewer than 80% of words contain an alphabetic character (Gopher A.1.1)."""
    s = analyze(text)
    if s.n_words == 0:
        return None
    frac = s.n_alpha_words / s.n_words
    return None if frac >= min_fraction else (frac, f"words with a letter {frac:.2f} < {min_fraction}")


# Gopher's stop-word list, verbatim. Counted as occurrences (datatrove counts occurrences too),
# case-insensitively and at word boundaries so "The" and "the," count.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_STOP_WORD = re.compile(r"\b(?:" + "|".join(STOP_WORDS) + r")\b", re.IGNORECASE)


@register("gopher_stop_words", min_stop_words=2)
def gopher_stop_words(text: str, meta: Mapping[str, str], min_stop_words: int):
    """Fewer than 2 occurrences of {the, be, to, of, and, that, have, with} (Gopher A.1.1)."""
    n = count_upto(_STOP_WORD, text, min_stop_words)
    return None if n >= min_stop_words else (float(n), f"{n} stop words < {min_stop_words}")


# ---------------------------------------------------------------------------------------------
# Repetition rules (Gopher Table A1)
# ---------------------------------------------------------------------------------------------


def _dup_check(stats: tuple[int, int, int, int], what: str, max_fraction: float, max_char_fraction: float,
               n_chars: int):
    n_items, n_dup, _, dup_chars = stats
    if n_items and n_dup / n_items > max_fraction:
        frac = n_dup / n_items
        return frac, f"duplicate {what} fraction {frac:.2f} > {max_fraction}"
    if n_chars and dup_chars / n_chars > max_char_fraction:
        frac = dup_chars / n_chars
        return frac, f"duplicate {what} character fraction {frac:.2f} > {max_char_fraction}"
    return None


@register("gopher_dup_lines", max_fraction=0.3, max_char_fraction=0.2)
def gopher_dup_lines(text: str, meta: Mapping[str, str], max_fraction: float, max_char_fraction: float):
    """Duplicate-line fraction > 0.30 or duplicate-line character fraction > 0.20 (Gopher Table A1).
    Lines are the non-empty pieces of the text split on newlines; a line is a duplicate when an
    identical line occurred earlier; characters are over the whole text (as datatrove)."""
    s = analyze(text)
    return _dup_check(s.line_dups, "line", max_fraction, max_char_fraction, s.n_chars)


@register("gopher_dup_paragraphs", max_fraction=0.3, max_char_fraction=0.2)
def gopher_dup_paragraphs(text: str, meta: Mapping[str, str], max_fraction: float, max_char_fraction: float):
    """Duplicate-paragraph fraction > 0.30 or its character fraction > 0.20 (Gopher Table A1).
    Paragraphs are separated by two or more newlines."""
    s = analyze(text)
    return _dup_check(s.paragraph_dups, "paragraph", max_fraction, max_char_fraction, s.n_chars)


@register("gopher_top_ngrams", max_2gram=0.20, max_3gram=0.18, max_4gram=0.16)
def gopher_top_ngrams(text: str, meta: Mapping[str, str], max_2gram: float, max_3gram: float, max_4gram: float):
    """Characters in the most frequent repeated word 2/3/4-gram above 0.20/0.18/0.16 of the word
    characters (Gopher Table A1).

    The exact value is computed only when cheap upper bounds from single-word and word-pair counts
    (``TextStats.top_ngram_bound``) exceed the limit: ordinary prose is decided from one or two sorts.
    """
    s = analyze(text)
    for n, limit in ((2, max_2gram), (3, max_3gram), (4, max_4gram)):
        if s.top_ngram_bound(n, limit) <= limit:
            continue
        frac = s.top_ngram_char_fraction(n)
        if frac > limit:
            return frac, f"top {n}-gram character fraction {frac:.3f} > {limit}"
    return None


@register("gopher_dup_ngrams", max_5gram=0.15, max_6gram=0.14, max_7gram=0.13, max_8gram=0.12,
          max_9gram=0.11, max_10gram=0.10)
def gopher_dup_ngrams(text: str, meta: Mapping[str, str], max_5gram: float, max_6gram: float,
                      max_7gram: float, max_8gram: float, max_9gram: float, max_10gram: float):
    """Characters covered by repeated word 5..10-grams above 0.15/0.14/0.13/0.12/0.11/0.10 of the
    word characters (Gopher Table A1).

    The fraction can only shrink as n grows (see ``TextStats.duplicate_ngram_char_fraction``), so when
    the 5-gram fraction is within the smallest of the limits every larger n passes and is skipped:
    ordinary text pays for one n instead of six.
    """
    s = analyze(text)
    limits = ((5, max_5gram), (6, max_6gram), (7, max_7gram), (8, max_8gram), (9, max_9gram), (10, max_10gram))
    floor = min(limit for _, limit in limits)
    for n, limit in limits:
        frac = s.duplicate_ngram_char_fraction(n)
        if frac > limit:
            return frac, f"duplicate {n}-gram character fraction {frac:.3f} > {limit}"
        if frac <= floor:
            return None  # monotone in n: every larger n is <= frac <= its limit
    return None
