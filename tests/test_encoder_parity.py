"""The fast NeoX encoder (fastokens, tokenization/fast.py) gives exactly the ids of ``tokenizers``.

Real corpora (all ten categories), an adversarial set, 1 MB single-line documents, a code-point sample,
and a hypothesis property test; plus the selection / fallback rules and the uint16 + EOS layout.
No timing assertions here: speed lives in benchmarks/encoders.py.
"""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CORPORA, needs_shared, read_shared_category
from tokenization import fast as fastmod
from tokenization.parity import (
    ADDED,
    CONTROL,
    EMOJI,
    MISC,
    NFC_NFD,
    WHITESPACE,
    adversarial_texts,
    all_codepoints,
    big_texts,
    codepoint_probes,
)

CATEGORIES = sorted(p.name.split(".")[0] for p in CORPORA.glob("*.jsonl.zst")) if CORPORA.exists() else []


@pytest.fixture(scope="session")
def fast_encoder(neox):
    pytest.importorskip("fastokens")
    enc = neox._fast_encoder("fastokens")
    assert enc is not None and enc.name == "fastokens"
    return enc


def ref_ids(raw_tokenizer, texts):
    return [e.ids for e in raw_tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]


def assert_same(fast_encoder, raw_tokenizer, texts):
    got, want = fast_encoder.encode_ids(texts), ref_ids(raw_tokenizer, texts)
    bad = [t for t, a, b in zip(texts, got, want) if a != b]
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[0][:80]!r}"


# ---------------------------------------------------------------- real corpora


@needs_shared("corpora")
@pytest.mark.parametrize("category", CATEGORIES)
def test_corpus_parity(neox, fast_encoder, raw_tokenizer, category):
    texts = [r["text"] for r in read_shared_category(category)]
    fast = neox.encode_batch(texts, eos=True, encoder="fastokens")
    want = ref_ids(raw_tokenizer, texts)
    assert len(fast) == len(want)
    for text, arr, ids in zip(texts, fast, want):
        assert arr.dtype == np.uint16 and arr[-1] == 0
        assert arr[:-1].tolist() == ids, text[:80]


# ---------------------------------------------------------------- adversarial


def test_adversarial_set(fast_encoder, raw_tokenizer):
    assert_same(fast_encoder, raw_tokenizer, adversarial_texts())


@pytest.mark.parametrize("label", list(big_texts(1000)))
def test_one_mb_single_line_documents(fast_encoder, raw_tokenizer, label):
    text = big_texts()[label]
    assert_same(fast_encoder, raw_tokenizer, [text])


def test_codepoint_sample(fast_encoder, raw_tokenizer):
    """Every code point in seven contexts passes in the full sweep (test_every_codepoint, -m slow);
    here a seeded sample of 20,000 plus the blocks where other encoders' Unicode tables disagree."""
    rng = random.Random(13)
    cps = rng.sample(all_codepoints(), 20_000)
    cps += list(range(0x0890, 0x0900)) + list(range(0x1AB0, 0x1B00)) + list(range(0x1DC0, 0x1E00))
    cps += list(range(0x10D00, 0x10D40)) + list(range(0x10F30, 0x10FB0)) + list(range(0x11900, 0x11960))
    cps += list(range(0x31350, 0x31360)) + list(range(0x1E4D0, 0x1E500))
    assert_same(fast_encoder, raw_tokenizer, [p for c in cps for p in codepoint_probes(chr(c))])


@pytest.mark.slow
def test_every_codepoint(fast_encoder, raw_tokenizer):
    """All 1,112,064 code points (no surrogates) in seven contexts, 7.8 M probes (minutes; -m slow)."""
    cps = all_codepoints()
    for i in range(0, len(cps), 65536):
        assert_same(fast_encoder, raw_tokenizer, [p for c in cps[i:i + 65536] for p in codepoint_probes(chr(c))])


def test_lone_surrogates_behave_like_tokenizers(neox, raw_tokenizer):
    """tokenizers refuses str with lone surrogates (TypeError); encode_batch falls back, so it raises the same.
    (The build's texts come from orjson, which never yields lone surrogates.)"""
    texts = ["ok", "a\ud800b"]
    with pytest.raises(Exception) as ref_err:
        raw_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    with pytest.raises(type(ref_err.value)):
        neox.encode_batch(texts)
    with pytest.raises(type(ref_err.value)):
        neox.encode_batch(texts, encoder="tokenizers")


# ---------------------------------------------------------------- property test (CI: a few seconds)

FRAGMENTS = WHITESPACE + NFC_NFD + EMOJI + CONTROL + ADDED + MISC + [
    "  ", "    ", " " * 24, " " * 25, "'s", "'", "\u0301", "\u0316", "a", "Z", "9", "\u65e5", "!", ".", "\n\n", "def ",
    "\u00e9", "\u0130", "\u00df", "\U0001F600", "<|", "|>", "endoftext"]
texts_strategy = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=120),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(st.characters(exclude_categories=("Cs",)), max_size=4)),
             max_size=40).map("".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts_strategy, min_size=1, max_size=6), st.booleans())
def test_property_fast_equals_tokenizers(neox, fast_encoder, raw_tokenizer, texts, eos):
    got = neox.encode_batch(texts, eos=eos, encoder="fastokens")
    want = neox.encode_batch_reference(texts, eos=eos)
    assert [a.tolist() for a in got] == [b.tolist() for b in want]
    assert all(a.dtype == np.uint16 for a in got)


# ---------------------------------------------------------------- API, selection, fallback


def test_layout_matches_reference(neox, fast_encoder):
    texts = ["Hello world", "", "x", "", "  a  "]
    for eos in (True, False):
        got, want = neox.encode_batch(texts, eos=eos, encoder="fastokens"), neox.encode_batch_reference(texts, eos=eos)
        assert [a.tolist() for a in got] == [b.tolist() for b in want]
        assert all(a.dtype == np.uint16 for a in got)
    assert neox.encode_batch([], encoder="fastokens") == []
    assert neox.encode_batch(["Hello world"])[0].tolist() == [12092, 1533, 0]


def test_auto_selects_fastokens_and_env_forces_reference(tokenizer_path, fast_encoder, monkeypatch):
    from tokenization import load_tokenizer

    monkeypatch.delenv(fastmod.ENV_ENCODER, raising=False)
    tok = load_tokenizer(tokenizer_path)
    assert tok.encoder == "fastokens"
    monkeypatch.setenv(fastmod.ENV_ENCODER, "tokenizers")
    assert tok.encoder == "tokenizers"
    assert tok.encode_batch(["Hello world"])[0].tolist() == [12092, 1533, 0]
    monkeypatch.setenv(fastmod.ENV_ENCODER, "nope")
    with pytest.raises(ValueError, match="unknown NeoX encoder"):
        tok.encode_batch(["x"])
    monkeypatch.delenv(fastmod.ENV_ENCODER)
    assert pickle.loads(pickle.dumps(tok)).encoder == "fastokens"  # rebuilt lazily in the worker


def test_unverified_or_other_version_falls_back(tokenizer_path, fast_encoder, monkeypatch):
    from tokenization import load_tokenizer

    monkeypatch.delenv(fastmod.ENV_ENCODER, raising=False)
    assert load_tokenizer(tokenizer_path, verify=False).encoder == "tokenizers"
    monkeypatch.setattr(fastmod, "FASTOKENS_VERSION", "0.0.0")
    tok = load_tokenizer(tokenizer_path)
    with pytest.warns(RuntimeWarning, match="validated"):
        assert tok.encoder == "tokenizers"
    with pytest.raises(RuntimeError, match="validated"):
        tok.encode_batch(["x"], encoder="fastokens")


def test_self_check_mismatch_falls_back(tokenizer_path, fast_encoder, monkeypatch):
    from tokenization import load_tokenizer

    monkeypatch.delenv(fastmod.ENV_ENCODER, raising=False)
    monkeypatch.setattr(fastmod.FastokensEncoder, "encode_ids", lambda self, texts: [[7] for _ in texts])
    with pytest.warns(RuntimeWarning, match="differ"):
        assert load_tokenizer(tokenizer_path).encoder == "tokenizers"
