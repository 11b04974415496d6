"""Issue 30: what a new user's first commands do on a machine that never ran the project.

Every other build test runs with the suite's per-machine cache already filled by an earlier test (or by the
developer's machine): these two start from nothing. The demo build runs as ``make demo`` does, in a fresh process
with an empty ``MPTDATA_CACHE`` and an empty home, so the SemDedup static table is made during the build; the
transformer SemDedup model (``model: minilm-l6``) runs on a local multi-worker build, where its workers load
transformers while other work of the same process needs mosaicml-streaming."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from contract.registry import SOURCE_NAMES
from tests.conftest import REPO, load_stats, read_shared_category


def _fresh_env(root: Path, tokenizer_path: str) -> dict:
    """A new user's environment: nothing cached anywhere the project (or a library it uses) writes under ~."""
    home = root / "home"
    home.mkdir()
    drop = {"MPTDATA_CACHE", "XDG_CACHE_HOME", "HF_HOME", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR",
            "TRITON_CACHE_DIR", "MPTDATA_PART_MB"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HOME=str(home), MPTDATA_CACHE=str(root / "cache"), NEOX_TOKENIZER=tokenizer_path,
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def test_demo_build_on_a_fresh_machine(tmp_path, tokenizer_path):
    """``make demo``'s build with empty caches: all ten sources, default config, 2 workers. Failed on every
    c4_en worker before (an import race with the first-run table distillation)."""
    env = _fresh_env(tmp_path, tokenizer_path)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", "--mixture", "mpt30b_8k", "--out", str(out),
                           "--workers", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # the table was made once, by the driver, before any worker started, and said so
    assert log.count("preparing the SemDedup static table for this machine") == 1, log[-4000:]
    assert log.index("SemDedup static table ready") < log.index("building 10 source(s)")
    assert len(list((tmp_path / "cache" / "semdedup").glob("static-minilm-l6-*.npy"))) == 1
    for name in SOURCE_NAMES:
        stats = load_stats(out, name)
        assert stats["kept"] > 0
    c4 = load_stats(out, "c4_en")
    assert c4["semantic_duplicates"] > 0
    assert c4["semdedup_table"]["machine"] and len(c4["semdedup_table"]["sha256"]) == 64
    assert "semdedup_table" not in load_stats(out, "mc4_en")  # only sources that embed with it name it
    assert (out / "mixtures" / "mpt30b_8k" / "streams.yaml").is_file()
    # staging (the plan and the shipped table) is gone once the build is done
    assert not (out / ".staging").exists()


def test_transformer_semdedup_on_a_local_multi_worker_build(tmp_path, tokenizer_path):
    """``semantic: {model: minilm-l6, device: cpu}`` (the parity option) on the local runner with 2 workers, two
    parts: every worker loads transformers' AutoModel. Failed 2 of 2 runs before (``cannot import name
    'AutoModel' from 'transformers'``)."""
    rows = read_shared_category("c4_en")[:48]
    rows += rows[:8]  # a few repeats: SemDedup has near-identical neighbours to remove
    for i, half in enumerate((rows[:28], rows[28:])):
        (tmp_path / f"c4-{i}.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in half))
    sources = {"sources": {"c4_en": {
        "inputs": [str(tmp_path / "c4-*.jsonl")], "filters": "none",
        "dedupe": {"exact": False, "semantic": {"model": "minilm-l6", "device": "cpu"}}}}}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(sources))
    env = _fresh_env(tmp_path, tokenizer_path)
    env["MPTDATA_PART_MB"] = "0.00001"  # one part per file: both workers embed
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", "--mixture", "mpt30b_8k", "--sources",
                           str(tmp_path / "sources.yaml"), "--out", str(tmp_path / "out"), "--workers", "2",
                           "--skip-mixture"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "2 part(s)" in log
    stats = load_stats(tmp_path / "out", "c4_en")
    assert stats["read"] == len(rows)
    assert stats["semantic_duplicates"] >= 8  # the repeats, at least (keep_fraction 0.8 removes ~11 of 56)
    assert "semdedup_table" not in stats  # the transformer needs no static table
    assert "preparing the SemDedup static table" not in log
