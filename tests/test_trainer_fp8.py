"""``precision: fp8`` (trainer/float8.py): config and device errors, which Linears go float8, and the
trainer's loop, checkpoints, resume, FSDP2 float8 all-gather and export with real torchao Float8Linears.

Three tiers. Without torchao: the config/device errors and the module choice (pure). With torchao on
CPU: torchao emulates the float8 casts and scaled matmuls on the CPU (torch >= 2.8), so the whole loop
runs here; only the device guard (a CPU has no FP8 tensor cores, so a real run must refuse it) is
bypassed. On CUDA with FP8 tensor cores (``-m gpu``): one fp8 step against bf16, compiled, and the
FSDP2 float8 all-gather on one GPU.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch

from trainer import float8
from trainer.config import PRESETS, ConfigError, ModelConfig, load_config
from trainer.model import MPTForCausalLM

sys.path.insert(0, os.path.dirname(__file__))

try:
    import torchao.float8  # noqa: F401

    HAVE_TORCHAO = True
except ImportError:
    HAVE_TORCHAO = False
needs_torchao = pytest.mark.skipif(not HAVE_TORCHAO, reason=f"torchao not installed ({float8.TORCHAO_PIN}, gpu extra)")
FP8_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


def _block_torchao(monkeypatch):
    """Make ``import torchao`` fail, as on a machine without it."""
    for name in ("torchao", "torchao.float8"):
        monkeypatch.setitem(sys.modules, name, None)


def _meta_model(**kw) -> MPTForCausalLM:
    with torch.device("meta"):
        return MPTForCausalLM(ModelConfig(attn_impl="torch", **kw), attn_device="cpu")


# --- config and device: no torchao needed ---------------------------------------------------------------

def test_fp8_on_cpu_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="precision: fp8 needs a CUDA GPU.*device is cpu"):
        load_config(None, ["precision=fp8", "device=cpu"])
    with pytest.raises(ConfigError, match="precision: 'fp4' is not one of bf16, fp8, fp32"):
        load_config(None, ["precision=fp4"])


def test_float8_block_is_validated():
    cfg = load_config(None, ["precision=fp8", "float8.recipe=rowwise", "float8.keep_bf16=['*.out_proj']"])
    assert cfg.float8.recipe == "rowwise" and cfg.float8.keep_bf16 == ["*.out_proj"]
    assert cfg.compute_dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="float8.recipe"):
        load_config(None, ["float8.recipe=delayed"])
    with pytest.raises(ConfigError, match="float8.fsdp_float8_all_gather: on needs recipe tensorwise"):
        load_config(None, ["float8.recipe=rowwise", "float8.fsdp_float8_all_gather=on"])
    with pytest.raises(ConfigError, match="float8.keep_bf16"):
        load_config(None, ["float8.keep_bf16=['']"])
    with pytest.raises(ConfigError, match="float8.modules"):
        load_config(None, ["float8.modules=some"])
    assert load_config(None, ["float8.fsdp_float8_all_gather=off"]).float8.fsdp_float8_all_gather == "off"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_fp8_build_on_a_cpu_machine_refuses_before_needing_torchao(monkeypatch, tmp_path):
    """``device: auto`` passes the config check; the build then finds no GPU and says so, with or without
    torchao installed."""
    from trainer.train import Dist, build_model

    _block_torchao(monkeypatch)
    cfg = load_config(None, ["precision=fp8", "model.d_model=128", "model.n_heads=4", "model.n_layers=1",
                             "model.max_seq_len=64", "seq_len=64", f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="FP8 tensor cores.*device is cpu: use precision: bf16"):
        build_model(cfg, Dist())
    with pytest.raises(ConfigError, match="device is cpu"):
        float8.check_device(torch.device("cpu"), "rowwise")


def test_missing_torchao_is_a_config_error_with_the_pin(monkeypatch):
    _block_torchao(monkeypatch)
    model = _meta_model(d_model=128, n_heads=4, n_layers=1)
    with pytest.raises(ConfigError, match=r"install torchao==0\.18\.0"):
        float8.convert(model, load_config(None, ["float8.modules=all"]).float8, fsdp=False)


# --- which Linears go float8: pure ---------------------------------------------------------------------

def _names(chosen):
    return sorted({n.rsplit(".", 1)[-1] for n in chosen})


def test_auto_selection_follows_the_recipe_tables():
    d, h, L = PRESETS["1b"]
    model = _meta_model(d_model=d, n_heads=h, n_layers=L)
    f8 = lambda *o: load_config(None, list(o)).float8
    chosen, kept = float8.select_linears(model, f8())
    assert len(chosen) == 4 * L and not kept  # tensorwise at d 2048: all 96 block Linears
    assert _names(chosen) == ["Wqkv", "down_proj", "out_proj", "up_proj"]
    assert not any("wte" in n or "norm" in n for n in chosen)  # embedding / tied head are never candidates
    chosen, kept = float8.select_linears(model, f8("float8.recipe=rowwise"))
    assert _names(chosen) == ["Wqkv", "up_proj"] and len(chosen) == 2 * L  # N 2048 outputs stay bf16
    assert "N 2048 <= 2048" in kept["transformer.blocks.0.attn.out_proj"]
    chosen, _ = float8.select_linears(model, f8("float8.recipe=rowwise", "float8.modules=all"))
    assert len(chosen) == 4 * L
    chosen, kept = float8.select_linears(model, f8("float8.keep_bf16=['transformer.blocks.0.*', '*.out_proj']"))
    assert len(chosen) == 4 * L - 4 - (L - 1)
    assert "keep_bf16 'transformer.blocks.0.*'" in kept["transformer.blocks.0.ffn.up_proj"]
    d, h, L = PRESETS["350m"]  # d 1024: the 1024-wide outputs are too small for tensorwise to pay
    chosen, kept = float8.select_linears(_meta_model(d_model=d, n_heads=h, n_layers=L), f8())
    assert _names(chosen) == ["Wqkv", "up_proj"] and "N 1024 <= 1024" in kept["transformer.blocks.3.ffn.down_proj"]


def test_odd_shapes_stay_bf16_and_nothing_to_convert_is_an_error(monkeypatch):
    _block_torchao(monkeypatch)  # the refusal comes before torchao is needed
    model = _meta_model(d_model=200, n_heads=4, n_layers=1)
    fc = load_config(None, ["float8.modules=all"]).float8
    chosen, kept = float8.select_linears(model, fc)
    assert not chosen and "not multiples of 16" in kept["transformer.blocks.0.attn.Wqkv"]
    with pytest.raises(ConfigError, match="found no Linear to run in float8"):
        float8.convert(model, fc, fsdp=False)


# --- the trainer with real Float8Linears, on CPU ------------------------------------------------------

@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    pytest.importorskip("streaming", reason="mosaicml-streaming is not installed (the trainer's data loader)")
    from test_trainer_train import write_mixture

    return write_mixture(tmp_path_factory.mktemp("fp8mix"))


@pytest.fixture()
def cpu_fp8(monkeypatch):
    """A CPU has no FP8 tensor cores, so the trainer refuses it; torchao emulates float8 exactly enough to
    test the wiring, so bypass only that guard."""
    monkeypatch.setattr(float8, "check_device", lambda *a, **k: None)


def _cfg(mixture, run_dir, *extra):
    from test_trainer_train import TINY, VOCAB

    return load_config(TINY, [f"data.streams={mixture}", f"run_dir={run_dir}", f"model.vocab_size={VOCAB}",
                              "progress_bar=false", "device=auto", "model.d_model=128", "max_steps=6",
                              "optimizer.warmup_steps=2", *extra])


@needs_torchao
def test_fp8_run_tracks_bf16_and_writes_the_same_checkpoint(mixture, tmp_path, cpu_fp8):
    from trainer.checkpoint import read_full_state
    from trainer.train import run

    bf16 = run(_cfg(mixture, tmp_path / "bf16", "precision=bf16"))
    fp8 = run(_cfg(mixture, tmp_path / "fp8", "precision=fp8", "float8.modules=all"))
    lb, lf = np.array([r["loss"] for r in bf16]), np.array([r["loss"] for r in fp8])
    assert not np.array_equal(lb, lf)  # the float8 matmuls really ran
    np.testing.assert_allclose(lf, lb, rtol=0.02)
    assert lf[-1] < 0.8 * lf[0]
    a = read_full_state(tmp_path / "bf16" / "checkpoints" / "step_000006")
    b = read_full_state(tmp_path / "fp8" / "checkpoints" / "step_000006")
    flat = lambda s: {k: v for k, v in s["model"].items()}
    assert flat(a).keys() == flat(b).keys()
    for k, v in flat(b).items():
        assert type(v) is torch.Tensor and v.dtype == torch.float32 == flat(a)[k].dtype, k


@needs_torchao
def test_fp8_fsdp_float8_all_gather_resumes_exactly_and_exports(mixture, tmp_path, cpu_fp8):
    """FSDP2 on one rank (gloo) with the tensorwise float8 all-gather and the precomputed scales: stop at
    step 3 and resume = the straight run, loss for loss; the export is a plain fp32 MPT that loads."""
    from torch.distributed.tensor import DTensor

    from trainer.export import load_checkpoint_model
    from trainer.train import build_model, run, setup_distributed

    common = ["precision=fp8", "float8.modules=all", "fsdp=on"]
    cfg = _cfg(mixture, tmp_path / "probe", *common)
    d = setup_distributed(cfg)
    try:
        model = build_model(cfg, d)
        state = model.float8
        w = model.transformer.blocks[0].attn.Wqkv.weight
        assert isinstance(w, DTensor) and type(w.to_local()).__name__ == "WeightWithDynamicFloat8CastTensor"
    finally:
        torch.distributed.destroy_process_group()
        for k in d.env_set_here:
            os.environ.pop(k, None)
    assert state.fsdp_float8_all_gather and state.precompute_scale and len(state.converted) == 8
    full = run(_cfg(mixture, tmp_path / "full", *common))
    first = run(_cfg(mixture, tmp_path / "split", *common, "stop_after=3"))
    rest = run(_cfg(mixture, tmp_path / "split", *common))
    assert [r["loss"] for r in first + rest] == [r["loss"] for r in full]
    ours, _ = load_checkpoint_model(tmp_path / "full" / "checkpoints" / "step_000006")
    assert all(type(m) is torch.nn.Linear for n, m in ours.named_modules() if n.endswith(("Wqkv", "proj")))
    ids = torch.randint(1, 500, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(ours.eval()(ids)).all()


@needs_torchao
def test_bf16_checkpoint_resumes_in_fp8(mixture, tmp_path, cpu_fp8):
    """Same parameter names and dtypes: a bf16 run can be continued in fp8 (and back)."""
    from trainer.train import run

    run(_cfg(mixture, tmp_path / "r", "precision=bf16", "stop_after=3"))
    rest = run(_cfg(mixture, tmp_path / "r", "precision=fp8", "float8.modules=all"))
    assert [r["step"] for r in rest] == [4, 5, 6]


@needs_torchao
def test_meta_init_after_convert_keeps_residual_scaling(mixture, tmp_path, cpu_fp8):
    """Float8Linear.from_float makes new modules; the residual-projection flag must survive, or meta init
    would give out_proj/down_proj the unscaled std."""
    from trainer.train import build_model, setup_distributed

    cfg = _cfg(mixture, tmp_path / "meta", "precision=fp8", "float8.modules=all", "fsdp=on", "init_device=meta",
               "model.n_layers=3")
    d = setup_distributed(cfg)
    try:
        model = build_model(cfg, d)
        stds = {n: float(p.full_tensor().float().std()) for n, p in model.named_parameters()}
        kinds = {type(m).__name__ for n, m in model.named_modules() if n.endswith("out_proj")}
    finally:
        torch.distributed.destroy_process_group()
        for k in d.env_set_here:
            os.environ.pop(k, None)
    assert kinds == {"Float8Linear"}
    res = math.sqrt(2 * 3)
    assert stds["transformer.blocks.0.attn.out_proj.weight"] == pytest.approx(math.sqrt(2 / 128) / res, rel=0.1)
    assert stds["transformer.blocks.2.ffn.down_proj.weight"] == pytest.approx(math.sqrt(2 / 512) / res, rel=0.1)
    assert stds["transformer.blocks.1.ffn.up_proj.weight"] == pytest.approx(math.sqrt(2 / 128), rel=0.1)


# --- CUDA with FP8 tensor cores -------------------------------------------------------------------------

needs_fp8_gpu = pytest.mark.skipif(not FP8_GPU, reason="needs a CUDA GPU with FP8 tensor cores (compute capability 8.9+)")


def _gpu_setup(precision, *extra, compile_=False):
    from trainer.optim import build_optimizer, build_scheduler
    from trainer.train import Dist, build_model

    cfg = load_config(None, ["model.d_model=512", "model.n_heads=4", "model.n_layers=2", "model.max_seq_len=512",
                             "seq_len=512", "micro_batch_size=4", "global_batch_size=4", f"precision={precision}",
                             f"compile={str(compile_).lower()}", "device=cuda", "fsdp=off", "float8.modules=all",
                             "optimizer.warmup_steps=1", "optimizer.lr=1e-3", "max_steps=10", *extra])
    d = Dist(device=torch.device("cuda"))
    model = build_model(cfg, d)
    opt = build_optimizer(model.parameters(), cfg.optimizer)
    return cfg, d, model, opt, build_scheduler(opt, cfg.optimizer, cfg.max_steps)


@pytest.mark.gpu
@needs_fp8_gpu
@needs_torchao
@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_one_fp8_step_matches_bf16_on_cuda(recipe):
    """Same init, same batch: the fp8 loss and the loss after one optimizer step stay within 1 % of bf16's."""
    if recipe == "rowwise" and FP8_GPU and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("rowwise float8 needs Hopper")
    from trainer.train import train_step

    ids = torch.randint(1, 50000, (4, 512), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    losses = {}
    for precision in ("bf16", "fp8"):
        cfg, d, model, opt, sched = _gpu_setup(precision, f"float8.recipe={recipe}")
        if precision == "fp8":
            assert len(model.float8.converted) == 8
        batches = iter(lambda: ids, None)
        losses[precision] = [float(train_step(model, opt, sched, batches, cfg, 1, d.device)[0]) for _ in range(2)]
    for b, f in zip(losses["bf16"], losses["fp8"]):
        assert abs(f - b) / b < 0.01, losses
    assert losses["fp8"] != losses["bf16"]



@pytest.mark.gpu
@needs_fp8_gpu
@needs_torchao
def test_compiled_fp8_under_fsdp_world_one_checkpoints_plain_weights(tmp_path):
    """FSDP2 on one GPU with the float8 all-gather, compiled blocks: trains, and the DCP checkpoint holds
    plain fp32 tensors under the bf16 names (what a multi-GPU run will write, one shard each)."""
    from trainer.checkpoint import read_full_state, save_checkpoint
    from trainer.train import setup_distributed, train_step

    cfg = load_config(None, ["fsdp=on", "device=cuda"])  # a one-rank NCCL group, as torchrun would give
    d = setup_distributed(cfg)
    try:
        cfg, _, model, opt, sched = _gpu_setup("fp8", "fsdp=on", compile_=True)
        assert model.float8.fsdp_float8_all_gather and model.float8.precompute_scale
        g = torch.Generator("cuda").manual_seed(0)
        pool = [torch.randint(1, 50000, (4, 512), device="cuda", generator=g) for _ in range(2)]
        batches = iter(lambda: pool[0], None)
        losses = [float(train_step(model, opt, sched, batches, cfg, 1, d.device)[0]) for _ in range(6)]
        assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
        save_checkpoint(tmp_path, 6, model, opt, sched, {"config": {}})
    finally:
        torch.distributed.destroy_process_group()
        for k in d.env_set_here:
            os.environ.pop(k, None)
    state = read_full_state(tmp_path / "step_000006")["model"]
    assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in state.values())
    assert "transformer.blocks.1.ffn.down_proj.weight" in state


@pytest.mark.gpu
@needs_fp8_gpu
def test_check_device_accepts_this_gpu():
    float8.check_device(torch.device("cuda"), "tensorwise")
    if torch.cuda.get_device_capability() >= (9, 0):
        float8.check_device(torch.device("cuda"), "rowwise")
