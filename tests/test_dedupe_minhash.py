"""Pure MinHash logic: normalization, shingling, pinned signatures, band math, config validation."""
import math
import random

import numpy as np
import pytest
from datasketch.lsh import _optimal_param

from contract.config import ConfigError
from pipelines.dedupe.config import MinHashConfig, SemDedupConfig, parse_dedupe
from pipelines.dedupe import minhash
from pipelines.dedupe.minhash import (SignatureSpec, Signer, band_keys, band_keys_batch, collision_probability,
                                      estimated_jaccard, exact_jaccard, optimal_bands, shingle_hashes,
                                      verify_threshold)
from pipelines.text import WORD_RE, splitmix64, words

TEXT = ("The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the old "
        "stone wall of the garden in the quiet village by the river")


def test_words_lowercase_regex_split_keeps_digits():
    assert words("Hello, World!  It's 2024 -- naïve café_bar") == \
        ["hello", "world", "it", "s", "2024", "naïve", "café_bar"]


def test_shingles_ignore_case_punctuation_and_whitespace():
    a = shingle_hashes("The quick brown fox jumps over the lazy dog.")
    b = shingle_hashes("the   QUICK, brown fox -- jumps over\nthe lazy dog!!")
    assert a.dtype == np.uint64 and len(a) == 9 - 5 + 1
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


M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    return int(splitmix64(np.array([x], dtype=np.uint64))[0])


def _ref_shingles(text: str, ngram: int = 5, seed: int = 0) -> list[int]:
    """The scheme written out one word and one shingle at a time (plain Python integers)."""
    hs = []
    for w in words(text):
        h = 0
        for j, c in enumerate(w):
            h = (h + ord(c) * pow(0x100000001B3, j, 1 << 64)) & M64
        hs.append(_mix(h ^ (len(w) << 40)))
    if not hs:
        return []
    k = min(ngram, len(hs))
    out = []
    for i in range(len(hs) - k + 1):
        acc = hs[i]
        for m in range(1, k):
            acc = ((acc * 0x9E3779B97F4A7C15) & M64) ^ hs[i + m]
        out.append(_mix(acc ^ _mix(seed)))
    return out


def _ref_signature(text: str, spec: SignatureSpec, probe: np.ndarray):
    p = spec.num_perm
    sig = [None] * p
    for h in _ref_shingles(text, spec.ngram, spec.seed):
        b, v = ((h >> 32) * p) >> 32, h & 0xFFFFFFFF
        sig[b] = v if sig[b] is None else min(sig[b], v)
    if all(v is None for v in sig):
        return None
    out = list(sig)
    for i in range(p):
        if sig[i] is None:
            seq = list(probe[i]) + [(i + s) % p for s in range(1, p)]
            out[i] = next(sig[j] for j in seq if sig[j] is not None)
    return np.array(out, dtype=np.uint32)


CORNER_TEXTS = [TEXT, "", "  ...  ", "one", "just three words", "Hello, World!  It's 2024 -- naïve café_bar",
                "İstanbul ΣΟΦΙΑ straße ǅ ﬁ x\u00002y", "a " * 3, "日本語のテキスト、句読点。そして English mixed in",
                "tabs\tand\nnew\r\nlines  " * 20, "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ℌ𝔢𝔵 🙂 emoji 🙂 word"]


def test_vectorized_words_are_the_regex_words():
    for text in CORNER_TEXTS:
        low = text.lower()
        starts, _h = minhash._word_hashes(np.frombuffer(low.encode("utf-32-le"), dtype=np.uint32))
        assert [m.start() for m in WORD_RE.finditer(low)] == starts.tolist(), text


def test_shingles_and_signatures_equal_the_scalar_reference():
    spec = SignatureSpec.from_config(MinHashConfig())
    signer = Signer(spec)
    for text in CORNER_TEXTS:
        assert shingle_hashes(text, seed=spec.seed).tolist() == _ref_shingles(text, 5, spec.seed), text
        ref = _ref_signature(text, spec, signer._probe)
        got = signer.signature(text)
        assert (got is None) == (ref is None), text
        if ref is not None:
            assert np.array_equal(got, ref), text


def test_pinned_spec_and_batch_equals_one_at_a_time():
    spec = SignatureSpec.from_config(MinHashConfig())
    assert (spec.scheme, spec.seed, spec.num_perm) == ("oph-v1", 1, 128)
    signer = Signer(spec)
    rng = random.Random(0)
    texts = CORNER_TEXTS + [" ".join(rng.choice(["alpha", "beta", "gamma", str(rng.random())])
                                     for _ in range(rng.randrange(1, 400))) for _ in range(60)]
    rows, sigs = signer.sign_batch(texts)
    singles = [signer.signature(t) for t in texts]
    assert rows.tolist() == [i for i, s in enumerate(singles) if s is not None]
    for r, s in zip(rows.tolist(), sigs):
        assert np.array_equal(s, singles[r])
    # another seed or num_perm -> incomparable, must differ
    assert not np.array_equal(singles[0], Signer(SignatureSpec.from_config(MinHashConfig(seed=2))).signature(TEXT))
    with pytest.raises(ValueError, match="scheme"):
        Signer(SignatureSpec(128, 5, 1, "affine32", 18, 7, 0.73))


def test_long_document_split_into_passes_equals_one_pass(monkeypatch):
    rng = random.Random(0)
    long = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps", str(rng.random())]) for _ in range(30_000))
    texts = ["short text before it", long, "and one after it with a few words"]
    signer = Signer(SignatureSpec.from_config(MinHashConfig()))
    rows, one_pass = signer.sign_batch(texts)
    monkeypatch.setattr(minhash, "_CHUNK_CHARS", 50)  # every document in its own pass
    rows2, passes = signer.sign_batch(texts)
    assert rows.tolist() == rows2.tolist() == [0, 1, 2] and np.array_equal(one_pass, passes)
    assert np.array_equal(passes[1], _ref_signature(long, signer.spec, signer._probe))


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
    other = sig.copy()
    other[8 * 3 + 5] = 1  # one slot of band 3 differs: only that band's key changes
    diff = [i for i, (a, b) in enumerate(zip(keys, band_keys(other, 16, 8))) if a != b]
    assert diff == [3]
    batch = band_keys_batch(np.stack([sig, other]), 16, 8)
    assert batch[0].tolist() == keys and batch[1].tolist() == band_keys(other, 16, 8)


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
    assert parse_dedupe({"semantic": {"gpu_precision": "fp32"}}, {}).semantic.gpu_precision == "fp32"
    with pytest.raises(ConfigError, match=r"dedupe\.semantic\.gpu_precision: expected fp16 or fp32"):
        parse_dedupe({"semantic": {"gpu_precision": "bf16"}}, {})


def test_keys_fit_beams_int64_coders():
    from apache_beam.coders import VarIntCoder

    from pipelines.dedupe.semantic import tiebreak

    sig = Signer(SignatureSpec.from_config(MinHashConfig())).signature(TEXT)
    for k in band_keys(sig, 18, 7) + [tiebreak(u) for u in range(-50, 50)]:
        assert 0 <= k < 2 ** 63
        assert VarIntCoder().decode(VarIntCoder().encode(k)) == k
