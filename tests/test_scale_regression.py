"""Regression: no documents lost when ~1.6 GB of documents goes through a 2-worker local (multi-process) build.

Root cause of the old loss (Beam 2.77 FnApiRunner, not project code): the runner sends a stage's input to each SDK
worker through a TimeBasedBufferingClosableOutputStream (runner-side DATA_BUFFER_TIME_LIMIT_MS = 1000). Its
PeriodicThread calls flush() = get() -> enqueue -> _clear() without excluding the writer (BundleManager.
_send_input_to_worker writes ~10 MB chunks, one after another). When the enqueue blocks (send queue is limited to
100 MB) the writer keeps appending chunks, and _clear() then throws them away: whole input chunks never reach the
worker, silently. It needs a multi-second write (hundreds of MB per worker per bundle), so it hit the old graph's
Filter stage, which read every document (Flatten 'AllDocs') in one bundle. See benchmarks/beam_fnapi_loss_repro.py.

Input shape here: rp_books = 200 files x 1000 documents x 8000 characters (~1.6 GB of text, cheap to make as it
compresses well) plus a tiny rp_arxiv (two sources make 'AllDocs' a real Flatten, as in the all-sources build), no
dedupe, and a filter that rejects all but every 97th document (max_bytes: 100) so tokenization costs nothing.
Old code (/tmp/oldcode, 2026-12-01): ReconciliationError rp_books read=200000, accounted 164359; at 120 files
(~0.97 GB) it passed 2 of 2 runs (the race is timing-dependent). The current code reads documents outside Beam
shuffles and must reconcile.

Run against older code: MPTDATA_REPO=/path/to/checkout pytest -m slow tests/test_scale_regression.py
(MPTDATA_SCALE_FILES changes the number of 8 MB files).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, load_stats, read_mds

FILES = int(os.environ.get("MPTDATA_SCALE_FILES", "200"))  # 200 x 1000 x 8000 chars ~ 1.6 GB
DOCS_PER_FILE, CHARS = 1000, 8000


def _corpus(tmp: Path, kept_every: int) -> tuple[Path, int, int]:
    """FILES .jsonl.zst files; every ``kept_every``-th document is short (kept), the rest 8000 chars (rejected)."""
    import zstandard

    d = tmp / "in"
    d.mkdir()
    cctx = zstandard.ZstdCompressor(level=1)
    kept = 0
    for f in range(FILES):
        lines = []
        for j in range(DOCS_PER_FILE):
            n = f * DOCS_PER_FILE + j
            if n % kept_every == 0:
                text = f"short document {n}"
                kept += 1
            else:
                text = (f"doc {n} " + "lorem ipsum dolor sit amet " * (CHARS // 27 + 1))[:CHARS]
            lines.append(json.dumps({"id": f"d{n}", "text": text}))
        (d / f"f{f:04d}.jsonl.zst").write_bytes(cctx.compress(("\n".join(lines) + "\n").encode()))
    # a second, tiny source: with two sources the documents meet in a real Flatten ('AllDocs'), so the filter stage
    # reads all ~1 GB as one materialized input, as in the all-sources build (one source fuses read and filter)
    small = tmp / "small"
    small.mkdir()
    (small / "s.jsonl").write_text("".join(json.dumps({"id": f"s{i}", "text": f"tiny {i}"}) + "\n" for i in range(10)))
    one = {"id_field": "id", "dedupe": "none", "filters": [{"max_bytes": {"max_bytes": 100}}]}
    cfg = {"sources": {"rp_books": {"inputs": [str(d / "*.jsonl.zst")], **one},
                       "rp_arxiv": {"inputs": [str(small / "s.jsonl")], **one}}}
    (tmp / "sources.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "sources.yaml", {"rp_books": (FILES * DOCS_PER_FILE, kept), "rp_arxiv": (10, 10)}


def _build(repo: Path, sources: Path, out: Path, tokenizer_path: str) -> subprocess.CompletedProcess:
    args = ["--mixture", "mpt30b_8k", "--sources", str(sources), "--out", str(out), "--tokenizer", tokenizer_path,
            "--skip-mixture", "--allow-missing-sources", "--write-rejects", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run([sys.executable, "-m", "pipelines.build", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)


@pytest.mark.slow
def test_two_worker_build_of_1gb_reconciles(tmp_path, tokenizer_path):
    repo = Path(os.environ.get("MPTDATA_REPO", REPO))
    sources, expected = _corpus(tmp_path, kept_every=97)
    out = tmp_path / "out"
    r = _build(repo, sources, out, tokenizer_path)
    assert r.returncode == 0, f"build failed (rc={r.returncode}):\n{r.stderr[-3000:]}"

    for source, (n_docs, n_kept) in expected.items():
        s = load_stats(out, source)
        dups = s["exact_duplicates"] + s["near_duplicates"] + s["semantic_duplicates"]
        assert s["read"] == n_docs, s
        assert s["read"] == s["malformed"] + s["kept"] + dups + sum(s["rejected"].values()), s
        assert s["kept"] == n_kept, s
        assert len(read_mds(out / "sources" / source)) == s["kept"]
        n_rej = sum(sum(1 for line in p.open() if line.strip()) for p in (out / "rejects" / source).rglob("*.jsonl"))
        assert n_rej == s["read"] - s["kept"], (source, n_rej, s)
