"""Pure MinHash logic: normalization, shingling, pinned signatures, band math, config validation."""
import math
import random

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from contract.config import ConfigError
from pipelines.dedupe.config import MinHashConfig, SemDedupConfig, parse_dedupe
from pipelines.dedupe.minhash import (SignatureSpec, Signer, band_keys, collision_probability,
                                      estimated_jaccard, exact_jaccard, optimal_bands, shingle_hashes,
                                      verify_threshold, words)

TEXT = ("The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the old "
        "stone wall of the garden in the quiet village by the river")


def test_words_lowercase_regex_split_keeps_digits():
    assert words("Hello, World!  It's 2024 -- naïve café_bar") == \
        ["hello", "world", "it", "s", "2024", "naïve", "café_bar"]


def test_shingles_ignore_case_punctuation_and_whitespace():
    a = shingle_hashes("The quick brown fox jumps over the lazy dog.")
    b = shingle_hashes("the   QUICK, brown fox -- jumps over\nthe lazy dog!!")
    assert a.dtype == np.uint32 and len(a) == 9 - 5 + 1
    assert np.array_equal(a, b)


def test_shingles_are_order_sensitive_and_digits_matter():
    assert set(shingle_hashes("a b c d e").tolist()) != set(shingle_hashes("e d c b a").tolist())
    assert not np.array_equal(shingle_hashes("page 1 of the report here"), shingle_hashes("page 2 of the report here"))


def test_short_and_empty_documents():
    assert shingle_hashes("").size == 0
    assert shingle_hashes("  ...  ").size == 0
    one = shingle_hashes("just three words")
    assert one.size == 1
    assert np.array_equal(one, shingle_hashes("Just three WORDS."))
    assert not np.array_equal(one, shingle_hashes("just three other"))


def test_exact_jaccard_of_known_sets():
    assert exact_jaccard(TEXT, TEXT) == 1.0
    ws = TEXT.split()
    # replacing the last word changes exactly one of the n-4 shingles
    n = len(ws) - 4
    other = " ".join(ws[:-1] + ["zzz"])
    assert exact_jaccard(TEXT, other) == pytest.approx((n - 1) / (n + 1))


def test_signature_is_datasketch_with_pinned_scheme_seed_num_perm():
    spec = SignatureSpec.from_config(MinHashConfig())
    assert (spec.scheme, spec.seed, spec.num_perm) == ("affine32", 1, 128)
    sig = Signer(spec).signature(TEXT)
    ref = MinHash(num_perm=128, seed=1, scheme="affine32", hashfunc=lambda x: x)
    ref.update_batch(shingle_hashes(TEXT).tolist())
    assert np.array_equal(sig, ref.hashvalues)
    # different seed or scheme -> incomparable, must differ
    other = Signer(SignatureSpec.from_config(MinHashConfig(seed=2))).signature(TEXT)
    assert not np.array_equal(sig, other)
    assert Signer(spec).signature("!!!") is None


def test_long_document_chunking_equals_one_batch():
    rng = random.Random(0)
    text = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps", str(rng.random())]) for _ in range(30_000))
    spec = SignatureSpec.from_config(MinHashConfig())
    sig = Signer(spec).signature(text)
    ref = MinHash(num_perm=128, seed=1, scheme="affine32", hashfunc=lambda x: x)
    ref.update_batch(shingle_hashes(text).tolist())
    assert np.array_equal(sig, ref.hashvalues)


def test_estimate_tracks_true_jaccard():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(3000)]
    base = [rng.choice(vocab) for _ in range(2000)]
    spec = SignatureSpec.from_config(MinHashConfig(num_perm=256))
    s = Signer(spec)
    for rate in (0.0, 0.02, 0.05, 0.1):
        edited = [w if rng.random() >= rate else rng.choice(vocab) for w in base]
        a, b = " ".join(base), " ".join(edited)
        true = exact_jaccard(a, b)
        est = estimated_jaccard(s.signature(a), s.signature(b))
        sigma = math.sqrt(max(true * (1 - true), 1e-4) / 256)
        assert abs(est - true) < 4 * sigma + 1e-9, (rate, true, est)


def test_band_math():
    assert collision_probability(0.8, 18, 7) == pytest.approx(1 - (1 - 0.8 ** 7) ** 18)
    for t, w in [(0.8, (0.5, 0.5)), (0.7, (0.5, 0.5)), (0.73, (0.1, 0.9))]:
        assert optimal_bands(t, 128, *w) == _optimal_param(t, 128, *w)
    spec = SignatureSpec.from_config(MinHashConfig())
    assert spec.verify_threshold == pytest.approx(0.8 - 2 * math.sqrt(0.8 * 0.2 / 128))
    assert spec.bands * spec.rows <= 128
    # default trade-off: duplicates at the threshold almost always collide, pairs at 0.5 rarely
    assert collision_probability(0.8, spec.bands, spec.rows) > 0.98
    assert collision_probability(0.5, spec.bands, spec.rows) < 0.2
    # explicit bands/rows are honoured, one of them derives the other
    assert (SignatureSpec.from_config(MinHashConfig(bands=14, rows=8)).bands,
            SignatureSpec.from_config(MinHashConfig(bands=14, rows=8)).rows) == (14, 8)
    assert SignatureSpec.from_config(MinHashConfig(bands=16)).rows == 8
    assert SignatureSpec.from_config(MinHashConfig(rows=9)).bands == 14
    assert verify_threshold(0.8, 128, 0) == 0.8


def test_band_keys_separate_bands():
    sig = np.zeros(128, dtype=np.uint32)  # identical rows in every band
    keys = band_keys(sig, 16, 8)
    assert len(set(keys)) == 16
    assert band_keys(sig, 16, 8) == keys


def test_config_parsing_and_errors():
    cfg = parse_dedupe({"minhash": {"threshold": 0.7, "num_perm": 256}}, {})
    assert cfg.minhash == MinHashConfig(threshold=0.7, num_perm=256)
    assert parse_dedupe("default", {"exact": True, "semantic": {"keep_fraction": 0.8}}).semantic == SemDedupConfig()
    with pytest.raises(ConfigError, match=r"dedupe\.minhash\.threshold"):
        parse_dedupe({"minhash": {"threshold": 1.5}}, {})
    with pytest.raises(ConfigError, match=r"bands\*rows"):
        parse_dedupe({"minhash": {"bands": 20, "rows": 8}}, {})
    with pytest.raises(ConfigError, match="scheme"):
        parse_dedupe({"minhash": {"scheme": "sha1"}}, {})
    with pytest.raises(ConfigError, match=r"dedupe\.semantic\.keep_fraction"):
        parse_dedupe({"semantic": {"keep_fraction": 0}}, {})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_dedupe({"minhash": {"thresh": 0.8}}, {})


def test_keys_fit_beams_int64_coders():
    from apache_beam.coders import VarIntCoder

    from pipelines.dedupe.semantic import tiebreak

    sig = Signer(SignatureSpec.from_config(MinHashConfig())).signature(TEXT)
    for k in band_keys(sig, 18, 7) + [tiebreak(u) for u in range(-50, 50)]:
        assert 0 <= k < 2 ** 63
        assert VarIntCoder().decode(VarIntCoder().encode(k)) == k
