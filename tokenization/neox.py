"""GPT-NeoX-20B BPE via the ``tokenizers`` library.

Why a fingerprint: a tokenizer.json that is "almost" NeoX (a different merges order, a retrained BPE,
a Llama file by mistake) tokenizes without error and silently produces shards no MPT model can use.
We hash the vocabulary, the merges and the added tokens and refuse anything else.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence

import numpy as np

from contract import fsio
from contract.tokens import EOS as EOS_ID, MODEL_VOCAB_SIZE, VOCAB_SIZE  # noqa: F401
from contract.tokens import PAD as PAD_ID  # noqa: F401
from contract.tokens import TOKEN_DTYPE
from tokenization.fast import build_fast_encoder, requested_encoder

HF_REPO = "EleutherAI/gpt-neox-20b"
ENV_VAR = "NEOX_TOKENIZER"
# sha256 over the canonical vocab + merges + added tokens of EleutherAI/gpt-neox-20b's tokenizer.json
EXPECTED_FINGERPRINT = "1f071af5a8705ce55897b93ad906c2884de97e27ac2fad4011c955b04a2eaf07"


class TokenizerError(RuntimeError):
    pass


def cache_path() -> Path:
    root = os.environ.get("MPTDATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mptdata")
    return Path(root) / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


def _hf_cache_candidates() -> list[Path]:
    hub = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
               or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    snap = hub / "models--EleutherAI--gpt-neox-20b" / "snapshots"
    return sorted(snap.glob("*/tokenizer.json")) if snap.is_dir() else []


def resolve_tokenizer_path(path: Optional[str] = None) -> str:
    """Explicit path -> $NEOX_TOKENIZER -> local caches -> Hugging Face hub; one clear error if none works."""
    tried = []
    for label, cand in (("--tokenizer", path), (f"${ENV_VAR}", os.environ.get(ENV_VAR))):
        if cand:
            p = Path(cand)
            if p.is_dir():
                p = p / "tokenizer.json"
            if p.is_file():
                return str(p)
            raise TokenizerError(f"{label} points to {cand!r}, which is not a tokenizer.json file (or a folder with one)")
        tried.append(f"{label} (not set)")
    for p in [cache_path(), *_hf_cache_candidates()]:
        if p.is_file():
            return str(p)
        tried.append(f"local cache {p} (absent)")
    hub = _try_hub_once()
    if hub.path:
        return hub.path
    tried.append(f"Hugging Face hub {HF_REPO} ({hub.why})")
    # One line (the build prints it as its one-paragraph error): every place tried, then the fix.
    raise TokenizerError(
        "GPT-NeoX-20B tokenizer not found; tried " + "; ".join(tried)
        + f". Fix: pass --tokenizer /path/to/tokenizer.json, set ${ENV_VAR}, or copy the file to {cache_path()}.")


# One hub attempt, bounded: huggingface_hub's own downloader retries a connection error or a 5xx five
# times with exponential backoff (about 20 s and a page of "Retrying in Ns" warnings on an offline
# machine) before giving up. We probe the file's URL once, briefly, and only hand over to
# hf_hub_download (which then has a reachable hub) when the probe answers.
HUB_PROBE_TIMEOUT_S = 5.0


class _HubResult(NamedTuple):
    path: Optional[str]
    why: str = ""          # one line: why the hub gave nothing


def _one_line(e: BaseException) -> str:
    msg = str(e).splitlines()[0][:160] if str(e) else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _hub_endpoint() -> str:
    """$HF_ENDPOINT read now (huggingface_hub reads it once, at import), else the public hub."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _try_hub_once(timeout: float = HUB_PROBE_TIMEOUT_S) -> _HubResult:
    """Exactly one HTTP request to the hub (a HEAD of the tokenizer's resolve URL, no redirects followed,
    ``timeout`` seconds at most); download through ``hf_hub_download`` only if it answered.

    $HF_HUB_OFFLINE (huggingface_hub's own switch) skips the request altogether."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return _HubResult(None, "skipped: HF_HUB_OFFLINE is set")
    import urllib.error
    import urllib.request

    endpoint = _hub_endpoint()
    url = f"{endpoint}/{HF_REPO}/resolve/main/tokenizer.json"

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # a 3xx already proves the hub is there
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError as e:
        if not 300 <= e.code < 400:
            return _HubResult(None, f"{url} answered HTTP {e.code}")
    except Exception as e:  # DNS failure, refused, timeout, proxy ...
        return _HubResult(None, f"{url} unreachable: {_one_line(e)}")
    try:
        from huggingface_hub import hf_hub_download

        return _HubResult(hf_hub_download(HF_REPO, "tokenizer.json", endpoint=endpoint))
    except Exception as e:  # no hub package, auth, disk ...
        return _HubResult(None, _one_line(e))


def fingerprint(tokenizer_json: dict) -> str:
    model = tokenizer_json.get("model", {})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    payload = {
        "type": model.get("type"),
        "vocab": sorted(model.get("vocab", {}).items(), key=lambda kv: kv[1]),
        "merges": merges,
        "added": sorted((t["id"], t["content"]) for t in tokenizer_json.get("added_tokens", [])),
    }
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


class NeoXTokenizer:
    """Loaded, verified NeoX tokenizer. Picklable (reloads from its path), so Beam can ship it."""

    def __init__(self, path: Optional[str] = None, verify: bool = True, raw: Optional[str] = None):
        """``raw``: the tokenizer.json text itself (how the build ships it to remote workers, which do not
        have the driver's local files); ``path`` may also be a gs:// or s3:// URL."""
        from tokenizers import Tokenizer

        if raw is None:
            self.path = path if path and "://" in path else resolve_tokenizer_path(path)
            raw = _read_text(self.path)
        else:
            self.path = path or "<tokenizer.json text>"
        self.raw = raw
        if verify:
            fp = fingerprint(json.loads(raw))
            if fp != EXPECTED_FINGERPRINT:
                raise TokenizerError(
                    f"{self.path} is not the GPT-NeoX-20B tokenizer (fingerprint {fp[:16]}..., expected "
                    f"{EXPECTED_FINGERPRINT[:16]}...). MPT shards must use EleutherAI/gpt-neox-20b's tokenizer.json.")
        self._tok = Tokenizer.from_str(raw)
        self.verified = verify

    def __reduce__(self):
        return (NeoXTokenizer, (self.path, self.verified, self.raw))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    @property
    def encoder(self) -> str:
        """Which encoder ``encode_batch`` uses here: "fastokens" or "tokenizers" (see tokenization/fast.py)."""
        fast = self._fast_encoder()
        return fast.name if fast is not None else "tokenizers"

    def _fast_encoder(self, encoder: Optional[str] = None):
        """Built lazily once per process and choice (pickling and Beam workers are unchanged); None = tokenizers."""
        key = requested_encoder(encoder)
        cache = self.__dict__.setdefault("_fast", {})
        if key not in cache:
            cache[key] = build_fast_encoder(self.raw, self._tok, self.verified, key)
        return cache[key]

    def encode_batch(self, texts: Sequence[str], eos: bool = True, encoder: Optional[str] = None) -> list[np.ndarray]:
        """Token arrays (uint16), each followed by EOS when ``eos``; ids identical to ``tokenizers``.
        ``encoder``: None (``$NEOX_ENCODER``, default auto: fastokens when installed and verified),
        "tokenizers" (the reference) or "fastokens"."""
        fast = self._fast_encoder(encoder)
        if fast is not None:
            try:
                return fast.encode_batch(texts, eos)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # lone surrogates, a Rust panic ...: the reference decides (and raises its own error)
                pass
        return self.encode_batch_reference(texts, eos)

    def encode_batch_reference(self, texts: Sequence[str], eos: bool = True) -> list[np.ndarray]:
        """The reference path: ``tokenizers`` encode_batch_fast."""
        encs = self._tok.encode_batch_fast(list(texts), add_special_tokens=False)
        out = []
        for e in encs:
            ids = e.ids
            if eos:
                ids.append(EOS_ID)
            out.append(np.array(ids, dtype=TOKEN_DTYPE))
        return out

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def _read_text(path: str) -> str:
    """tokenizer.json's text (local or remote); local files with universal newlines, as ``Path.read_text``."""
    try:
        text = fsio.read_bytes(path).decode("utf-8")
    except (fsio.StorageError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read tokenizer {path}: {getattr(e, 'cause', e)}") from None
    return text if fsio.is_remote(path) else text.replace("\r\n", "\n").replace("\r", "\n")


def load_tokenizer(path: Optional[str] = None, verify: bool = True) -> NeoXTokenizer:
    return NeoXTokenizer(path, verify=verify)
