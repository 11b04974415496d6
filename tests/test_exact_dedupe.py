import numpy as np
import pytest

from contract.stats import ReconciliationError, check_reconciles, make_stats
from pipelines.dedupe.exact import duplicate_pairs, exact_key, normalize_for_exact, text_hash
from tests.conftest import needs_shared, stage_and_dedupe


def test_normalization_contract():
    assert normalize_for_exact("  Hello \t World\n\n") == "hello world"
    assert text_hash("Hello  World") == text_hash("hello world")
    assert text_hash("hello world.") != text_hash("hello world")
    assert text_hash("Straße") == text_hash("STRASSE")  # casefold, not lower


def test_exact_key_is_the_text_hash():
    hi, lo = exact_key("Hello  World")
    assert f"{(hi << 64) | lo:032x}" == text_hash("hello world")


def test_smallest_uid_is_kept_per_scope():
    keys = {"a": exact_key("same"), "b": exact_key("other")}
    rows = [(1, "a", 7), (1, "a", 3), (1, "a", 9), (2, "a", 5), (1, "b", 4), (2, "a", 8)]
    scope = np.array([r[0] for r in rows], dtype=np.uint64)
    hi = np.array([keys[r[1]][0] for r in rows], dtype=np.uint64)
    lo = np.array([keys[r[1]][1] for r in rows], dtype=np.uint64)
    uid = np.array([r[2] for r in rows], dtype=np.int64)
    assert sorted(map(tuple, duplicate_pairs(scope, hi, lo, uid).tolist())) == [(7, 3), (8, 5), (9, 3)]
    assert duplicate_pairs(scope[:0], hi[:0], lo[:0], uid[:0]).shape == (0, 2)


@needs_shared("tokenizers")
def test_beam_stage_per_source_and_cross_source(tmp_path, tokenizer_path):
    docs = {"c4_en": [("a", "Same text"), ("b", "same   TEXT"), ("d", "other")], "mc4_en": [("c", "same text")]}
    _plan, removals, ids = stage_and_dedupe(tmp_path / "one", docs, {"exact": True}, tokenizer_path)
    assert [(ids[r.uid], r.keeper_id, r.stage, r.value) for r in removals] == [("b", "a", "exact_dedupe", 1.0)]
    _plan, removals, ids = stage_and_dedupe(tmp_path / "two", docs, {"exact": True}, tokenizer_path, cross_source=True)
    assert [(ids[r.uid], r.keeper_id) for r in removals] == [("b", "a"), ("c", "a")]


def test_stats_reconcile_or_raise():
    part = {"part": 0, "kept": 5, "tokens": 50, "bytes": 100, "token_hist": [5] + [0] * 12, "docs_ge_4096_tokens": 0}
    counts = [("read", "bad_json", "f", 1), ("filter", "min_words", "", 2), ("exact_dedupe", "exact_duplicate", "", 2)]
    s = make_stats("c4_en", 10, counts, [part])
    assert (s["malformed"], s["kept"], s["exact_duplicates"], s["rejected"]) == (1, 5, 2, {"min_words": 2})
    assert s["malformed_by_file"] == {"f": {"bad_json": 1}}
    with pytest.raises(ReconciliationError, match="read=11"):
        make_stats("c4_en", 11, counts, [part])
    s["kept"] += 1
    with pytest.raises(ReconciliationError):
        check_reconciles(s)


def test_normalization_equals_its_regex_definition():
    """normalize_for_exact splits with str.split(); the documented definition uses re's \\s+: the same
    characters, checked for every code point, and the same result on awkward text."""
    import re
    import sys
    import unicodedata

    from pipelines.dedupe.exact import normalize_for_exact

    def normalize_for_exact_reference(text: str) -> str:  # the module docstring's definition, with re
        return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text).casefold()).strip()

    ws = re.compile(r"\s")
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    assert [c for c in chars if bool(ws.fullmatch(c)) != c.isspace()] == []
    for text in ["", "  ", "Hello  World\n", "\u00a0a\u2028b\x1c\x1dc\u3000", "ﬃ ǅ Straße\r\n\t", "a\ud800 b",
                 "\u0041\u030a\u00c5  x", "".join(chars[::997])]:
        assert normalize_for_exact(text) == normalize_for_exact_reference(text)
