"""OLMo / OLMoE rules (pipelines.filters.olmo) on hand-made positive and negative cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.filters import RULES
from pipelines.filters.compose import build_chain
from pipelines.filters.olmo import longest_periodic_run, top_k_tokens
from tests.conftest import needs_shared


def run(rule, text, meta=None, **params):
    return build_chain([{rule: params}] if params else [rule])(text, meta or {})


PROSE = ("The committee met on Tuesday to review the budget. Members asked why the road repairs had "
         "been delayed, and the engineer explained that the contractor had run out of asphalt. ") * 3


def test_registered_with_the_papers_thresholds():
    assert RULES["olmo_repeated_ngrams"].defaults == {"min_repeats": 32, "min_period": 1, "max_period": 13}
    assert RULES["olmo_min_stars"].defaults["min_stars"] == 2
    assert RULES["olmo_top_words"].defaults == {"max_top1": 0.30, "max_top2": 0.50}


# --- repeated n-grams -------------------------------------------------------------------------

def test_periodic_run_exact():
    ids = np.array([9, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 7])
    assert longest_periodic_run(ids) == (3, 3, 1)            # "1 2 3" x3 (+ "1 2") starting at 1
    assert longest_periodic_run(np.array([5, 5, 1, 2, 1, 2, 1, 2, 1]))[:2] == (3, 2)
    assert longest_periodic_run(np.arange(50))[0] == 1       # nothing repeats
    assert longest_periodic_run(np.zeros(40, dtype=int))[:2] == (40, 1)


@pytest.mark.parametrize("n,rejected", [(31, False), (32, True), (200, True)])
def test_repeated_unigram_boundary_at_32(n, rejected):
    text = "Intro line. " + "spam " * n + "and a normal ending."
    res = run("olmo_repeated_ngrams", text)
    assert (res is not None) == rejected
    if rejected:
        assert res[0] == "olmo_repeated_ngrams" and res[1] == n


def test_repeated_13_gram_caught_14_gram_not():
    gram13 = " ".join(f"w{i}" for i in range(13))
    gram14 = " ".join(f"w{i}" for i in range(14))
    assert run("olmo_repeated_ngrams", (gram13 + " ") * 32) is not None
    assert run("olmo_repeated_ngrams", (gram14 + " ") * 40) is None
    assert run("olmo_repeated_ngrams", (gram14 + " ") * 40, max_period=14) is not None


def test_repeated_lines_with_punctuation_and_unaligned_start():
    table = "x = [" + "0x00, " * 40 + "0x01]"                # period 2: "0x00" ","
    res = run("olmo_repeated_ngrams", table)
    assert res is not None and "2-gram" in res[2]
    lines = "header\n" + "| --- | --- |\n" * 33
    assert run("olmo_repeated_ngrams", lines) is not None


def test_repetition_negatives():
    assert run("olmo_repeated_ngrams", PROSE * 5) is None   # repeated paragraphs: period far above 13 tokens
    assert run("olmo_repeated_ngrams", " " * 5000 + "word") is None   # whitespace is not a token here
    assert run("olmo_repeated_ngrams", "") is None
    counting = " ".join(str(i) for i in range(500))
    assert run("olmo_repeated_ngrams", counting) is None


# --- GitHub stars -----------------------------------------------------------------------------

@pytest.mark.parametrize("stars,rejected", [("0", True), ("1", True), ("1.0", True), ("2", False), ("2.0", False),
                                            ("15342", False), ("", True), ("None", True), ("null", True)])
def test_min_stars(stars, rejected):
    res = run("olmo_min_stars", "print('hi')\n", {"max_stars_count": stars})
    assert (res is not None) == rejected


def test_min_stars_absent_key_keeps_by_default_and_rejects_on_request():
    assert run("olmo_min_stars", "code", {"lang": "Python"}) is None
    res = run("olmo_min_stars", "code", {}, if_missing="reject")
    assert res is not None and math.isnan(res[1]) and "no max_stars_count" in res[2]


def test_min_stars_configurable_threshold_and_key():
    assert run("olmo_min_stars", "code", {"stars": "5"}, key="stars", min_stars=10) is not None
    assert run("olmo_min_stars", "code", {"stars": "10"}, key="stars", min_stars=10) is None
    res = run("olmo_min_stars", "code", {"max_stars_count": "many"})
    assert res is not None and "not a number" in res[2]


# --- most frequent words ----------------------------------------------------------------------

def test_top_k_tokens_follow_dolma_split():
    assert top_k_tokens("fooBar(x, y)") == ["foo", "Bar", "(", "x", ",", "y", ")"]
    assert top_k_tokens("  \n ") == []


def test_top_word_over_30_percent():
    hexdump = "static const unsigned char data[] = {" + "0x00, 0x1f, 0x00, 0x00, " * 50 + "};"
    res = run("olmo_top_words", hexdump)
    assert res is not None and "top word" in res[2]


def test_top_two_words_over_50_percent():
    # "a" and "b" each ~27% (top-1 rule does not fire), together ~54%
    text = " ".join(["a b"] * 27 + [f"w{i}" for i in range(46)])
    res = run("olmo_top_words", text)
    assert res is not None and "top two words" in res[2] and 0.5 < res[1] < 0.6


def test_top_words_negatives():
    assert run("olmo_top_words", PROSE) is None
    code = ("def area(radius):\n    \"\"\"Area of a circle.\"\"\"\n    return math.pi * radius ** 2\n\n\n"
            "def circumference(radius):\n    return 2 * math.pi * radius\n")
    assert run("olmo_top_words", code) is None
    assert run("olmo_top_words", "") is None


# ---- the vectorized prefilter decides exactly what the reference (token strings, every period) decides

def _reference_repeated_ngrams(text, min_repeats=32, min_period=1, max_period=13):
    """The rule as first written: token strings from the regex, the exact periodic-run search on all."""
    from pipelines.filters.olmo import repetition_tokens

    toks = repetition_tokens(text)
    if len(toks) < min_repeats * min_period:
        return None
    vocab = {}
    ids = np.array([vocab.setdefault(t, len(vocab)) for t in toks], dtype=np.int64)
    times, period, start = longest_periodic_run(ids, min_period, max_period)
    if times < min_repeats:
        return None
    gram = " ".join(toks[start:start + period])
    return "olmo_repeated_ngrams", float(times), f"{times} repeats of the {period}-gram {gram[:60]!r} >= {min_repeats}"


_TOKENS_ALPHABET = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, blacklist_categories=()),
    st.sampled_from(list(" \n\t_-.,!é日\u00a0\u2028\x00")))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_TOKENS_ALPHABET, max_size=300))
def test_repetition_spans_are_the_regex_tokens(text):
    from pipelines.filters.olmo import repetition_tokens
    from pipelines.filters.text_stats import TextStats

    starts, ends = TextStats(text).repetition_spans
    assert [text[s:e] for s, e in zip(starts.tolist(), ends.tolist())] == repetition_tokens(text)


_UNITS = st.lists(st.sampled_from(["a", "b", "the", ",", "...", "é", "日本", "x1", "!!", "\n", " "]), min_size=1,
                  max_size=14).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_UNITS, st.integers(1, 40)), max_size=6), st.integers(1, 33), st.integers(1, 3),
       st.integers(1, 13))
def test_rule_equals_reference_on_repeated_units(pieces, min_repeats, min_period, max_period):
    text = " ".join(u * k if k % 2 else " ".join([u] * k) for u, k in pieces)
    params = dict(min_repeats=min_repeats, min_period=min_period, max_period=max(min_period, max_period))
    assert run("olmo_repeated_ngrams", text, **params) == _reference_repeated_ngrams(text, **params)


@needs_shared("corpora")
def test_rule_equals_reference_on_the_shared_corpora():
    import json

    import zstandard

    from tests.conftest import CORPORA

    n = rejected = 0
    for path in sorted(CORPORA.glob("*.jsonl.zst")):
        with open(path, "rb") as f:
            lines = zstandard.ZstdDecompressor().stream_reader(f).read().decode().splitlines()
        for line in lines[:300]:
            text = json.loads(line)["text"]
            got = run("olmo_repeated_ngrams", text)
            assert got == _reference_repeated_ngrams(text), path.name
            n += 1
            rejected += got is not None
    assert n > 1000 and rejected > 0  # real text, and the rule does fire on some of it


# ---- the gate's own guarantees (the rule's speed rests on them; a wrong gate would keep repetitive documents)

@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=240), st.integers(2, 33), st.integers(1, 3), st.integers(1, 13))
def test_may_repeat_never_misses_a_run(keys, min_repeats, min_period, max_period):
    """Whenever the exact search finds ``min_repeats`` copies, the gate says "may repeat" (tiny alphabets make
    runs common, at the start, in the middle and ending at the last token)."""
    from pipelines.filters.olmo import may_repeat

    max_period = max(min_period, max_period)
    h = np.asarray(keys, dtype=np.uint64)
    times = longest_periodic_run(h, min_period, max_period)[0]
    if times >= min_repeats:
        assert may_repeat(h, min_repeats, min_period, max_period)


@pytest.mark.parametrize("period", [1, 2, 7, 13])
def test_may_repeat_sees_a_run_ending_at_the_last_token(period):
    from pipelines.filters.olmo import may_repeat

    gram = np.arange(100, 100 + period, dtype=np.uint64)
    h = np.concatenate((np.arange(40, dtype=np.uint64) * 7919 + 10**6, np.tile(gram, 32)))
    assert may_repeat(h, 32, 1, 13)
    assert not may_repeat(h[:-1], 32, 1, 13)   # 31 copies and a part: not enough anywhere


def test_may_repeat_clears_prose():
    from pipelines.filters.olmo import may_repeat
    from pipelines.filters.text_stats import TextStats

    assert not may_repeat(TextStats(PROSE * 5).repetition_token_hashes, 32, 1, 13)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_TOKENS_ALPHABET, max_size=300))
def test_repetition_keys_equal_for_equal_tokens(text):
    """The gate's keys: one per regex token, and equal tokens always get equal keys."""
    from pipelines.filters.olmo import repetition_tokens
    from pipelines.filters.text_stats import TextStats

    keys = TextStats(text).repetition_token_hashes.tolist()
    toks = repetition_tokens(text)
    assert len(keys) == len(toks)
    first = {}
    for t, k in zip(toks, keys):
        assert first.setdefault(t, k) == k


# ---- olmo_top_words: the vectorized bounds decide only what the token strings would (exact path for the rest)

def _reference_top_words(text, max_top1=0.30, max_top2=0.50):
    """The rule as first written: token strings from the regex split, a Counter of all of them."""
    from collections import Counter

    toks = top_k_tokens(text)
    if not toks:
        return None
    top = Counter(toks).most_common(2)
    n = len(toks)
    share1 = top[0][1] / n
    if share1 > max_top1:
        return "olmo_top_words", share1, f"top word {top[0][0][:30]!r} is {share1:.2f} of {n} words > {max_top1}"
    if len(top) > 1:
        share2 = (top[0][1] + top[1][1]) / n
        if share2 > max_top2:
            return "olmo_top_words", share2, (f"top two words {top[0][0][:20]!r}, {top[1][0][:20]!r} are "
                                              f"{share2:.2f} of {n} words > {max_top2}")
    return None


_CODE_ALPHABET = st.one_of(st.sampled_from(list("aAbBzZ09_ \n\t(),.;=-{}\u00a0\u2028\x1céÉ日ǅ")), _TOKENS_ALPHABET)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_CODE_ALPHABET, max_size=200))
def test_top_word_bounds_hold(text):
    """Exact token count; key counts never below the token counts they bound."""
    from collections import Counter

    from pipelines.filters.olmo import top_word_counts_bound

    toks = top_k_tokens(text)
    n, c1, c2 = top_word_counts_bound(text)
    assert n == len(toks)
    top = [c for _, c in Counter(toks).most_common(2)] + [0, 0]
    assert c1 >= top[0] and c1 + c2 >= top[0] + top[1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["0x00", ",", "fooBar", "ABC", "B", "aB", "x", "(", " ", "\n", "日本", "_1"]),
                max_size=80).map("".join), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_top_words_rule_equals_reference(text, max_top1, max_top2):
    assert run("olmo_top_words", text, max_top1=max_top1, max_top2=max_top2) == \
        _reference_top_words(text, max_top1, max_top2)


@needs_shared("corpora")
def test_top_words_equals_reference_on_the_shared_corpora():
    import json

    import zstandard

    from tests.conftest import CORPORA

    n = 0
    for path in sorted(CORPORA.glob("*.jsonl.zst")):
        with open(path, "rb") as f:
            lines = zstandard.ZstdDecompressor().stream_reader(f).read().decode().splitlines()
        for line in lines[:300]:
            text = json.loads(line)["text"]
            for t1, t2 in ((0.30, 0.50), (0.05, 0.08)):   # the defaults, and limits that real text exceeds
                assert run("olmo_top_words", text, max_top1=t1, max_top2=t2) == _reference_top_words(text, t1, t2)
            n += 1
    assert n > 1000
