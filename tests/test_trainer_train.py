"""End to end on CPU: a tiny MPT trains on an MDS mixture, loss falls, resume is exact (with and without
FSDP2), the CLI runs, and the exported checkpoint loads in transformers with the same logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.config import load_config
from trainer.train import main, run

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "trainer" / "configs" / "tiny.yaml")
VOCAB = 512


def write_mixture(root: Path, seq_len: int = 128) -> Path:
    """Two streams of packed samples with learnable structure (arithmetic runs, one stride per
    stream, documents ended by EOS 0) plus a held-out stream; returns the streams.yaml path."""
    from streaming import MDSWriter

    rng = np.random.default_rng(0)
    for name, n, stride in (("web", 96, 3), ("code", 48, 5), ("heldout", 16, 3)):
        with MDSWriter(out=str(root / name), columns={"tokens": "ndarray:uint16"}, compression="zstd") as w:
            for _ in range(n):
                toks = (rng.integers(1, VOCAB) + stride * np.arange(seq_len)) % (VOCAB - 1) + 1
                toks[rng.integers(8, seq_len, size=2)] = 0
                w.write({"tokens": toks.astype(np.uint16)})
    path = root / "streams.yaml"
    path.write_text("streams:\n  web: {local: web, proportion: 0.75}\n  code: {local: code, proportion: 0.25}\n")
    return path


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    return write_mixture(tmp_path_factory.mktemp("mix"))


def _cfg(mixture, run_dir, *extra):
    return load_config(TINY, [f"data.streams={mixture}", f"run_dir={run_dir}", f"model.vocab_size={VOCAB}",
                              "progress_bar=false", *extra])


def test_loss_falls_and_eval_runs(mixture, tmp_path):
    heldout = mixture.parent / "heldout"
    cfg = _cfg(mixture, tmp_path / "run", "max_steps=20", "eval_every=10", "eval_batches=2",
               f"data.eval_streams={{heldout: {{local: {heldout}}}}}")
    recs = run(cfg)
    train = [r["loss"] for r in recs if "loss" in r]
    evals = [r["eval_loss"] for r in recs if "eval_loss" in r]
    assert len(train) == 20 and len(evals) == 2
    assert train[0] > 6.0  # >= ln(512) at init
    assert np.mean(train[-5:]) < 0.7 * train[0]
    assert evals[1] < evals[0] < train[0]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == recs
    assert {"lr", "grad_norm", "tokens_per_s", "tokens_per_s_per_gpu"} <= set(logged[0])


@pytest.mark.parametrize("fsdp", ["off", "on"])
def test_resume_after_stop_gives_identical_losses(mixture, tmp_path, fsdp):
    """Train 8 steps straight; or stop after 3 (checkpoint), start again, finish: same losses, same
    weights. Two micro-batches per step, so accumulation and the data position are both exercised."""
    common = ["max_steps=8", "global_batch_size=8", "micro_batch_size=4", f"fsdp={fsdp}",
              "optimizer.warmup_steps=2"]
    full = run(_cfg(mixture, tmp_path / "full", *common))
    first = run(_cfg(mixture, tmp_path / "split", *common, "stop_after=3"))
    assert [r["step"] for r in first] == [1, 2, 3]
    rest = run(_cfg(mixture, tmp_path / "split", *common))
    assert [r["step"] for r in rest] == [4, 5, 6, 7, 8]
    losses = lambda rs: [r["loss"] for r in rs]
    assert losses(first + rest) == losses(full)
    assert [r["lr"] for r in first + rest] == [r["lr"] for r in full]

    from trainer.export import load_checkpoint_model

    a, _ = load_checkpoint_model(tmp_path / "full" / "checkpoints" / "step_000008")
    b, _ = load_checkpoint_model(tmp_path / "split" / "checkpoints" / "step_000008")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_fsdp_world_one_matches_plain_training(mixture, tmp_path):
    common = ["max_steps=4", "optimizer.warmup_steps=1"]
    plain = run(_cfg(mixture, tmp_path / "plain", *common, "fsdp=off"))
    sharded = run(_cfg(mixture, tmp_path / "fsdp", *common, "fsdp=on"))
    np.testing.assert_allclose([r["loss"] for r in sharded], [r["loss"] for r in plain], rtol=1e-5)


def test_checkpoints_are_pruned_and_latest_points_at_newest(mixture, tmp_path):
    run(_cfg(mixture, tmp_path / "r", "max_steps=5", "save_every=1", "keep_checkpoints=2"))
    root = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000004", "step_000005"]
    assert (root / "latest").read_text().strip() == "step_000005"
    assert not list(root.glob(".tmp_*"))


def test_bad_config_exits_with_message(mixture, tmp_path, capsys):
    assert main(["--config", TINY, f"data.streams={mixture}", "optimizer.lrr=1"]) == 2
    err = capsys.readouterr().err  # the wording is the shared typed config's (contract/config.py)
    assert "optimizer.lrr" in err and "unknown key" in err
    assert main(["--config", TINY, f"data.streams={tmp_path / 'nope.yaml'}", f"run_dir={tmp_path}"]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_cli_train_then_export_loads_in_transformers(mixture, tmp_path):
    """The documented commands: ``python -m trainer.train`` then ``python -m trainer.export``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_dir, hf_dir = tmp_path / "run", tmp_path / "hf"
    subprocess.run([sys.executable, "-m", "trainer.train", "--config", TINY, f"data.streams={mixture}",
                    f"run_dir={run_dir}", f"model.vocab_size={VOCAB}", "max_steps=3", "progress_bar=false"],
                   check=True, cwd=REPO, env=env)
    subprocess.run([sys.executable, "-m", "trainer.export", "--checkpoint", str(run_dir), "--out", str(hf_dir)],
                   check=True, cwd=REPO, env=env)
    from transformers import AutoModelForCausalLM

    from trainer.export import load_checkpoint_model

    ours, _ = load_checkpoint_model(run_dir / "checkpoints" / "step_000003")
    hf = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours.eval()(ids) - hf(ids).logits).abs().max() < 1e-4


def test_trains_on_a_mixture_built_by_mixtures_build(tmp_path):
    """The data contract end to end: mixtures.build's streams.yaml (absolute locals, ``choose``) and
    packed 2048-token samples feed the trainer unchanged."""
    build = pytest.importorskip("mixtures.build")
    synthetic = pytest.importorskip("mixtures.synthetic")
    from contract.registry import SOURCE_NAMES

    sources = tmp_path / "sources"
    for i, name in enumerate(SOURCE_NAMES):
        rng = np.random.default_rng(i)
        synthetic.write_source(str(sources), name, synthetic.random_lengths(40, rng), seed=i)
    build.build_mixture("mpt30b_2k", str(sources), str(tmp_path / "mixtures"), demo=True, progress=False)
    streams = tmp_path / "mixtures" / "mpt30b_2k" / "streams.yaml"
    cfg = load_config(TINY, [f"data.streams={streams}", f"run_dir={tmp_path / 'run'}", "seq_len=2048",
                             "model.max_seq_len=2048", "micro_batch_size=1", "global_batch_size=2", "max_steps=2",
                             "progress_bar=false"])
    recs = run(cfg)
    assert [r["step"] for r in recs] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 9 for r in recs)  # random tokens: ~ln(50432)


@pytest.mark.slow
def test_torchrun_two_ranks_then_resume_on_one(mixture, tmp_path):
    """Two CPU ranks (gloo, FSDP2 sharded over both) train 3 of 6 steps; one rank resumes from that
    checkpoint (DCP reshards 2 -> 1) and finishes; the exported model loads."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    common = [f"data.streams={mixture}", f"run_dir={run_dir}", f"model.vocab_size={VOCAB}", "max_steps=6",
              "global_batch_size=8", "micro_batch_size=2", "progress_bar=false"]
    from trainer.train import _free_port

    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", str(_free_port()),
                    "-m", "trainer.train", "--config", TINY, *common, "stop_after=3"],
                   check=True, cwd=REPO, env=env, timeout=600)
    meta = json.loads((run_dir / "checkpoints" / "step_000003" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["data"]["sample_in_epoch"] == 24
    recs = run(_cfg(mixture, run_dir, "max_steps=6", "global_batch_size=8", "micro_batch_size=2"))
    assert [r["step"] for r in recs] == [4, 5, 6]
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    assert logged[-1]["loss"] < logged[0]["loss"]


def test_meta_init_under_fsdp_shards_first_and_trains(mixture, tmp_path):
    """``init_device: meta``: shard first, initialise only the shards (DTensor), with MPT's init stds."""
    import math

    from trainer.train import build_model, setup_distributed

    cfg = _cfg(mixture, tmp_path / "meta", "fsdp=on", "init_device=meta", "max_steps=3",
               "model.d_model=128", "model.n_layers=3")
    d = setup_distributed(cfg)
    try:
        model = build_model(cfg, d)
        stds = {n: float(p.full_tensor().std()) for n, p in model.named_parameters()}
    finally:
        torch.distributed.destroy_process_group()
        for k in d.env_set_here:
            os.environ.pop(k, None)
    res = math.sqrt(2 * 3)
    assert stds["transformer.wte.weight"] == pytest.approx(math.sqrt(2 / 128), rel=0.05)
    assert stds["transformer.blocks.0.attn.out_proj.weight"] == pytest.approx(math.sqrt(2 / 128) / res, rel=0.05)
    assert stds["transformer.blocks.2.ffn.down_proj.weight"] == pytest.approx(math.sqrt(2 / 512) / res, rel=0.05)
    assert stds["transformer.norm_f.weight"] == 0.0
    recs = run(cfg)
    assert len(recs) == 3 and recs[-1]["loss"] < recs[0]["loss"]
