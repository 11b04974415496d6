import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from pipelines.dedupe.exact import ExactDuplicates, normalize_for_exact, pick_duplicates, text_hash
from pipelines.schema import Document
from pipelines.stats import ReconciliationError, check_reconciles, make_stats

import pytest


def test_normalization_contract():
    assert normalize_for_exact("  Hello \t World\n\n") == "hello world"
    assert text_hash("Hello  World") == text_hash("hello world")
    assert text_hash("hello world.") != text_hash("hello world")
    assert text_hash("Straße") == text_hash("STRASSE")  # casefold, not lower


def test_smallest_uid_is_kept():
    rejects = pick_duplicates([(7, "g", "s", "f:7"), (3, "c", "s", "f:3"), (9, "i", "s", "f:9")])
    assert [(r.uid, r.duplicate_of) for r in rejects] == [(7, "c"), (9, "c")]


def test_beam_transform_per_source_and_cross_source():
    docs = [Document(1, "a", "c4_en", "Same text", "f:1", {}), Document(2, "b", "c4_en", "same   TEXT", "f:2", {}),
            Document(3, "c", "mc4_en", "same text", "g:1", {}), Document(4, "d", "c4_en", "other", "f:4", {})]
    with beam.Pipeline() as p:
        out = p | beam.Create(docs) | ExactDuplicates() | beam.Map(lambda r: (r.uid, r.duplicate_of, r.stage))
        assert_that(out, equal_to([(2, "a", "exact_dedupe")]))
    with beam.Pipeline() as p:
        out = p | beam.Create(docs) | ExactDuplicates(cross_source=True) | beam.Map(lambda r: (r.uid, r.duplicate_of))
        assert_that(out, equal_to([(2, "a"), (3, "a")]))


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
