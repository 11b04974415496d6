import json
import os

import numpy as np
import pytest

from tests.conftest import CORPORA, needs_shared, read_shared_category
from tokenization import EOS_ID, MODEL_VOCAB_SIZE, PAD_ID, VOCAB_SIZE, TokenizerError, load_tokenizer
from tokenization.neox import resolve_tokenizer_path


def test_hello_world_and_special_ids(neox):
    assert neox.encode("Hello world") == [12092, 1533]
    assert neox.vocab_size == VOCAB_SIZE == 50277
    assert (EOS_ID, PAD_ID, MODEL_VOCAB_SIZE) == (0, 1, 50432)
    assert neox._tok.token_to_id("<|endoftext|>") == EOS_ID


def test_batch_is_uint16_with_eos(neox):
    out = neox.encode_batch(["Hello world", "", "x"], eos=True)
    assert all(a.dtype == np.uint16 for a in out)
    assert out[0].tolist() == [12092, 1533, 0] and out[1].tolist() == [0]
    assert neox.encode_batch(["Hello world"], eos=False)[0].tolist() == [12092, 1533]


def test_decode_round_trip(neox):
    text = "def f(x):\n    return x ** 2  # café ☕ \t\n\n日本語 and émojis 🎉"
    assert neox.decode(neox.encode(text)) == text


@needs_shared("corpora")
@pytest.mark.parametrize("category", sorted(p.name.split(".")[0] for p in CORPORA.glob("*.jsonl.zst")) if CORPORA.exists() else [])
def test_parity_with_direct_tokenizers_encode(neox, raw_tokenizer, category):
    texts = [r["text"] for r in read_shared_category(category)]
    ours = neox.encode_batch(texts, eos=True)
    for text, arr in zip(texts, ours):
        direct = raw_tokenizer.encode(text).ids
        assert arr[:-1].tolist() == direct and arr[-1] == EOS_ID
        assert max(direct, default=0) < 65536


def test_fingerprint_refuses_other_tokenizer(tokenizer_path, tmp_path):
    d = json.loads(open(tokenizer_path, encoding="utf-8").read())
    merges = d["model"]["merges"]
    merges[0], merges[1] = merges[1], merges[0]  # same vocab, different merge priority
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(TokenizerError, match="not the GPT-NeoX-20B tokenizer"):
        load_tokenizer(str(bad))


def test_resolution_order_and_error(tokenizer_path, tmp_path, monkeypatch):
    monkeypatch.setenv("NEOX_TOKENIZER", tokenizer_path)
    assert resolve_tokenizer_path(None) == tokenizer_path
    assert resolve_tokenizer_path(os.path.dirname(tokenizer_path)) == tokenizer_path  # a folder works too
    monkeypatch.delenv("NEOX_TOKENIZER")
    monkeypatch.setenv("MPTDATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerError) as e:
        resolve_tokenizer_path(None)
    msg = str(e.value)
    assert "--tokenizer" in msg and "$NEOX_TOKENIZER" in msg and "local cache" in msg and "Hugging Face hub" in msg
    with pytest.raises(TokenizerError, match="not a tokenizer.json"):
        resolve_tokenizer_path(str(tmp_path / "missing.json"))
    cache = tmp_path / "cache" / "tokenizers" / "gpt-neox-20b"
    cache.mkdir(parents=True)
    (cache / "tokenizer.json").write_bytes(open(tokenizer_path, "rb").read())
    assert resolve_tokenizer_path(None) == str(cache / "tokenizer.json")
