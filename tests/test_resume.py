"""Resume at part granularity: a build killed after some parts finished re-uses them (their staged files are
not rewritten) and ends byte-identical to an uninterrupted build."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from tests.conftest import REPO, needs_shared

TEXTS = [f"Document {i} about topic {i % 13}: " + " ".join(f"w{(i * 31 + j * 7) % 997}" for j in range(800))
         for i in range(6000)]
PER_FILE = 500  # ~2 MB a part: long enough (~0.1 s each) for the poll below to catch a partial build


def _corpus(tmp: Path) -> Path:
    import yaml

    d = tmp / "in"
    d.mkdir(parents=True)
    for f in range(12):  # 12 files; with 0.001 MB parts every file is its own part
        rows = [{"text": t, "id": f"f{f}-{i}"} for i, t in enumerate(TEXTS[f * PER_FILE:(f + 1) * PER_FILE])]
        (d / f"{f:02d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
            "".join(json.dumps(r) + "\n" for r in rows).encode()))
    cfg = {"sources": {"rp_arxiv": {"inputs": [str(d / "*.jsonl.zst")], "id_field": "id", "filters": "none",
                                    "dedupe": {"exact": True, "minhash": True}}}}
    (tmp / "s.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "s.yaml"


def _cmd(sources: Path, out: Path, tokenizer_path: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.build", "--mixture", "mpt30b_8k", "--sources", str(sources),
            "--out", str(out), "--tokenizer", tokenizer_path, "--skip-mixture", "--write-rejects", "--workers", "1"]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_shared("tokenizers")
def test_killed_build_reuses_finished_parts(tmp_path, tokenizer_path):
    env = dict(os.environ, MPTDATA_PART_MB="0.001")
    sources = _corpus(tmp_path)
    subprocess.run(_cmd(sources, tmp_path / "ref", tokenizer_path), cwd=REPO, env=env, check=True,
                   capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(sources, out, tokenizer_path), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    t = time.time()
    done = []
    while time.time() - t < 240 and proc.poll() is None and len(done) < 3:
        done = sorted(out.glob(".staging/rp_arxiv/*/parts/*/summary.json"))
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
    proc.wait()
    done = sorted(out.glob(".staging/rp_arxiv/*/parts/*/summary.json"))
    assert 3 <= len(done) < 12, f"{len(done)} parts finished before the kill; the test needs a partial build"
    res = subprocess.run(_cmd(sources, out, tokenizer_path), cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"({len(done)} already done by an earlier run: resuming)" in res.stdout
    # the finished parts were not redone: their heartbeats say "resumed" (staged at the first run, only read now)
    assert f"parts resumed from an earlier run: {len(done)}/12" in res.stdout
    assert _tree(out) == _tree(tmp_path / "ref")  # staging is gone and every output equals the uninterrupted one


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_part_size_env_is_validated(bad):
    res = subprocess.run([sys.executable, "-c", "import pipelines.engine.plan"], cwd=REPO,
                         env=dict(os.environ, MPTDATA_PART_MB=bad), capture_output=True, text=True)
    assert res.returncode != 0 and "MPTDATA_PART_MB" in res.stderr
