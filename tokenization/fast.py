"""A faster, token-exact GPT-NeoX-20B encoder behind ``NeoXTokenizer.encode_batch``.

Adopted: ``fastokens`` (PyPI, Apache-2.0, Rust, no Python dependencies), pinned to ``FASTOKENS_VERSION``.
It loads the same tokenizer.json and reproduces ``tokenizers`` exactly for NeoX: NFC normalizer, the
23 whitespace added tokens (matched on the normalized text, leftmost-longest), ``<|endoftext|>`` /
``<|padding|>`` inside text, the ByteLevel regex and the BPE merges. Evidence (issue 13, item 1,
``tests/test_encoder_parity.py``, ``benchmarks/encoders.py``): identical ids on all ten categories of
../shared/corpora, on an adversarial set (whitespace runs, NFC/NFD pairs, emoji, control characters,
added-token strings, 1 MB single-line documents) and on every Unicode code point in seven contexts.

``tokenizers`` stays the reference and the fallback:
  * ``NEOX_ENCODER=tokenizers`` (env) or ``encode_batch(..., encoder="tokenizers")`` forces it;
  * ``NEOX_ENCODER=fastokens`` demands the fast encoder (error if it is unavailable);
  * default ``auto``: fastokens when it is importable, at the pinned version, the tokenizer is the verified
    NeoX one, and a self-check on a built-in probe set gives the reference's ids; else ``tokenizers``.
  * Any batch the fast encoder raises on is re-encoded by ``tokenizers``, so errors are the reference's
    (lone surrogates: ``tokenizers`` raises TypeError; texts from orjson can never hold them).

Threads: fastokens can spread a batch over ``FASTOKENS_BPE_THREADS`` threads (default: all cores). We set
it to 1 when unset (before fastokens is imported), because the build parallelises over processes and extra
threads cost more CPU than they save (about half the MB per CPU-second on 2 cores); export
``FASTOKENS_BPE_THREADS=N`` to choose otherwise. It is fork-safe (a forked child encodes correctly).
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import numpy as np

from contract.tokens import EOS as EOS_ID
from contract.tokens import TOKEN_DTYPE

ENV_ENCODER = "NEOX_ENCODER"
ENCODERS = ("auto", "fastokens", "tokenizers")
FASTOKENS_VERSION = "0.3.5"

# Small, cheap self-check run once per process before the fast encoder is trusted: each class of input
# where a byte-level BPE re-implementation could part ways with ``tokenizers``.
SELF_CHECK = [
    "Hello world", "", " ", "  ", "a  b", "a" + " " * 30 + "b", "def f():\n    return 1\n\n\n",
    "\t\t x \r\n\x0b\x0c\x85\xa0\u2028\u3000 y", "Cafe\u0301 na\u00efve A\u030angstro\u0308m \u212b \uac01 \u1100\u1161\u11a8",
    "a\u0316\u0301 a\u0301\u0316 <\u0338 \u0958", "x <|endoftext|> y<|padding|>z <|endoftext", "<|endoftext|>\u0338",
    "it's I'M 'll 've \u2019s", "1234567890 \u0661\u0662 \u00bd \U0001d7d8", "\U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F1EB\U0001F1F7 \U0001FAE8",
    "".join(chr(c) for c in range(32)) + "\x7f\x80\x9f\u200b\ufeff\u202e", "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0",
    "\U00031350\U00011F04 x\U0001E4D0y \u0897\u1ac1\u1df6",
]


def requested_encoder(explicit: Optional[str] = None) -> str:
    name = (explicit or os.environ.get(ENV_ENCODER) or "auto").strip().lower()
    if name not in ENCODERS:
        raise ValueError(f"unknown NeoX encoder {name!r} (from {'argument' if explicit else '$' + ENV_ENCODER}); "
                         f"choose one of {', '.join(ENCODERS)}")
    return name


class FastokensEncoder:
    """fastokens' Rust encoder over the same tokenizer.json; ids as uint16 arrays (views into one buffer
    per batch), each followed by EOS when ``eos``."""

    name = "fastokens"

    def __init__(self, raw_json: str):
        # One BPE thread per process unless the user says otherwise: on a loaded or process-parallel machine
        # (Beam workers) fastokens' extra threads spin and halve the MB per CPU-second (benchmarks/encoders.py).
        os.environ.setdefault("FASTOKENS_BPE_THREADS", "1")
        import fastokens

        self.version = _dist_version("fastokens")
        self._tok = fastokens.Tokenizer.from_json_str(raw_json)

    def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All ids concatenated (uint32) and len(texts)+1 offsets (int64), no Python object per token."""
        ids, offsets = self._tok.encode_batch_flat(list(texts), add_special_tokens=False)
        return np.frombuffer(ids, dtype=np.uint32), np.frombuffer(offsets, dtype=np.uint64).astype(np.int64)

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        ids, off = self.encode_flat(texts)
        return [ids[off[i]:off[i + 1]].tolist() for i in range(len(off) - 1)]

    def encode_batch(self, texts: Sequence[str], eos: bool = True) -> list[np.ndarray]:
        if len(texts) == 1:  # the fused per-document path: skip the offsets bookkeeping
            ids = np.frombuffer(self._tok.encode_batch_flat([texts[0]], add_special_tokens=False)[0], dtype=np.uint32)
            out = np.empty(len(ids) + eos, dtype=TOKEN_DTYPE)
            out[:len(ids)] = ids
            if eos:
                out[-1] = EOS_ID
            return [out]
        ids, off = self.encode_flat(texts)
        n = len(off) - 1
        if n == 0:
            return []
        if eos:  # one EOS after each document's ids (np.insert keeps order for equal indices: empty docs)
            flat = np.insert(ids.astype(TOKEN_DTYPE), off[1:], EOS_ID)
            bounds = off + np.arange(n + 1, dtype=np.int64)
        else:
            flat = ids.astype(TOKEN_DTYPE)
            bounds = off
        return [flat[bounds[i]:bounds[i + 1]] for i in range(n)]


def _dist_version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def reference_ids(tok, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch_fast(list(texts), add_special_tokens=False)]


def build_fast_encoder(raw_json: str, reference_tok, verified: bool, name: str = "auto") -> Optional[FastokensEncoder]:
    """The fast encoder when ``name`` allows it and it passes the checks; None means use ``tokenizers``.
    ``name="fastokens"`` raises instead of falling back."""
    if name == "tokenizers":
        return None
    strict = name == "fastokens"
    if not verified and not strict:  # verify=False: an explicit choice of another tokenizer.json, no warning
        return None
    try:
        if not verified:
            raise RuntimeError("the fast encoder is only validated for the fingerprint-verified NeoX tokenizer")
        enc = FastokensEncoder(raw_json)
        if enc.version != FASTOKENS_VERSION:
            raise RuntimeError(f"fastokens {enc.version} installed, {FASTOKENS_VERSION} is the version validated "
                               "for token-exact NeoX ids")
        got, want = enc.encode_ids(SELF_CHECK), reference_ids(reference_tok, SELF_CHECK)
        if got != want:
            bad = next(t for t, a, b in zip(SELF_CHECK, got, want) if a != b)
            raise RuntimeError(f"fastokens ids differ from tokenizers on {bad!r}")
        return enc
    except ImportError as e:
        if strict:
            raise RuntimeError(f"{ENV_ENCODER}=fastokens but fastokens is not installed ({e})") from None
        return None
    except Exception as e:
        if strict:
            raise
        warnings.warn(f"NeoX fast encoder disabled, using tokenizers: {e}", RuntimeWarning, stacklevel=3)
        return None
