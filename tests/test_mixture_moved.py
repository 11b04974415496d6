"""Issue 30: a mixture folder copied or moved to the training machine trains unchanged.

The hand-off as users do it: the build writes OUT/mixtures/<name>/, the folder is moved somewhere else, the old
place is gone, and ``trainer.train`` is pointed at the moved ``streams.yaml`` from yet another working
directory. For llm-foundry (which resolves ``local:`` against its working directory) ``python -m mixtures.streams``
writes the absolute paths; its reading is tested with mosaicml-streaming in tests/test_mixtures_build.py."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from contract.registry import SOURCE_NAMES
from tests.conftest import REPO

TINY = str(REPO / "trainer" / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from mixtures import synthetic
    from mixtures.build import build_mixture

    root = tmp_path_factory.mktemp("built")
    for i, name in enumerate(SOURCE_NAMES):
        synthetic.write_source(str(root / "sources"), name, synthetic.random_lengths(40, np.random.default_rng(i)),
                               seed=i)
    build_mixture("mpt30b_2k", str(root / "sources"), str(root / "out" / "mixtures"), demo=True, progress=False)
    return root / "out" / "mixtures" / "mpt30b_2k"


def test_moved_mixture_trains_unchanged(built, tmp_path, monkeypatch):
    from trainer.config import load_config
    from trainer.train import run

    moved = tmp_path / "gpu-host" / "data" / "mpt30b_2k"
    shutil.copytree(built, moved)
    shutil.rmtree(built.parent.parent)  # the build machine's OUT is gone: nothing may point back into it
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(TINY, [f"data.streams={moved / 'streams.yaml'}", f"run_dir={tmp_path / 'run'}", "seq_len=2048",
                             "model.max_seq_len=2048", "micro_batch_size=1", "global_batch_size=2", "max_steps=2",
                             "progress_bar=false"])
    recs = run(cfg)
    assert [r["step"] for r in recs] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in recs)


def test_streams_cli_writes_the_paths_asked_for(tmp_path):
    from mixtures import synthetic
    from mixtures.build import build_mixture

    src = tmp_path / "sources"
    for i, name in enumerate(SOURCE_NAMES):
        synthetic.write_source(str(src), name, synthetic.random_lengths(30, np.random.default_rng(i)), seed=i)
    manifest = build_mixture("mpt30b_2k", str(src), str(tmp_path / "mixtures"), demo=True, progress=False)
    mixdir = tmp_path / "mixtures" / "mpt30b_2k"
    own = yaml.safe_load((mixdir / "streams.yaml").read_text())

    def cli(*args: str):
        return subprocess.run([sys.executable, "-m", "mixtures.streams", *args], cwd=tmp_path, capture_output=True,
                              text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)

    res = cli(str(mixdir))  # default: absolute paths of the folder where it is now
    assert res.returncode == 0, res.stderr
    absolute = yaml.safe_load(res.stdout)
    assert list(absolute) == list(own) == list(manifest["streams"])
    for name, kw in absolute.items():
        assert kw == {"local": str(mixdir / own[name]["local"]), "choose": own[name]["choose"]}
        assert (Path(kw["local"]) / "index.json").is_file()
    res = cli(str(mixdir), "--root", "/mnt/nfs/mix", "--out", str(tmp_path / "nfs.yaml"))
    assert res.returncode == 0 and "streams under /mnt/nfs/mix" in res.stderr
    assert {k: v["local"] for k, v in yaml.safe_load((tmp_path / "nfs.yaml").read_text()).items()} == {
        k: f"/mnt/nfs/mix/{v['local']}" for k, v in own.items()}
    res = cli(str(mixdir), "--remote", "s3://bucket/mix/")
    assert {k: v for k, v in yaml.safe_load(res.stdout).items()} == {
        k: {"remote": f"s3://bucket/mix/{v['local']}", "choose": v["choose"]} for k, v in own.items()}
    res = cli(str(mixdir), "--remote", "/not/a/bucket")
    assert res.returncode == 2 and "gs:// or s3://" in res.stderr
    res = cli(str(tmp_path))
    assert res.returncode == 2 and "manifest.json does not exist" in res.stderr
