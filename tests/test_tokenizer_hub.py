"""The Hugging Face hub is tried once, briefly, when no local tokenizer exists (issue 15, item 6a).

A real local HTTP server stands in for the hub (through $HF_ENDPOINT) and counts the requests it gets:
huggingface_hub's own downloader would retry a 5xx answer five times with backoff (~20 s and a page of
warnings); the resolver must send exactly one request, then fail with one line naming all three places.
"""
from __future__ import annotations

import http.server
import threading
from typing import ClassVar

import pytest

from tokenization import TokenizerError, resolve_tokenizer_path


class _CountingHub(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def _answer(self):
        type(self).hits.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _answer

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    _CountingHub.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for var in ("NEOX_TOKENIZER", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MPTDATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    yield _CountingHub.hits
    server.shutdown()
    server.server_close()


def test_failing_hub_gets_exactly_one_request_and_a_one_line_error(hub):
    with pytest.raises(TokenizerError) as e:
        resolve_tokenizer_path(None)
    assert len(hub) == 1, f"expected one hub request, got {hub}"
    assert hub[0].startswith("HEAD /EleutherAI/gpt-neox-20b/resolve/main/tokenizer.json")
    msg = str(e.value)
    assert "\n" not in msg
    for place in ("--tokenizer", "$NEOX_TOKENIZER", "local cache", "Hugging Face hub"):
        assert place in msg
    assert "HTTP 503" in msg


def test_offline_switch_skips_the_hub(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerError, match="HF_HUB_OFFLINE is set"):
        resolve_tokenizer_path(None)
    assert hub == []


def test_unreachable_hub_is_one_attempt(hub, monkeypatch):
    # A port with nothing listening: connection refused at once; one line says so.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(TokenizerError) as e:
        resolve_tokenizer_path(None)
    msg = str(e.value)
    assert "\n" not in msg and "unreachable" in msg and "Hugging Face hub" in msg
