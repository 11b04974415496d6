"""CUDA checks (skipped without a GPU): backends in bf16 against the fp32 reference with gradients
(FlexAttention has no CPU backward, so this is where its gradients are checked), and a compiled
bf16 training run of the real train step."""

from __future__ import annotations

import pytest
import torch

from kernels.attention import alibi_slopes, get_backend, torch_attention
from tests.test_kernels_attention import _one_config_per_kernel  # noqa: F401 - autouse: one Triton config each

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _rel(x, ref):
    return float((x.float() - ref.float()).norm() / ref.float().norm())


@pytest.mark.parametrize("use_seq_id", [False, True])
@pytest.mark.parametrize("backend", ["sdpa", "flex", "triton", "flash_attn", "cudnn"])
def test_backend_bf16_forward_and_grads_match_reference(backend, use_seq_id):
    if backend == "cudnn":
        from kernels import cudnn_alibi

        if use_seq_id or not cudnn_alibi.available():
            pytest.skip("cudnn: no packed-document mask" if use_seq_id else "cudnn frontend unavailable")
    try:
        fn = get_backend(backend, "cuda")
    except (ImportError, ValueError) as e:
        pytest.skip(f"{backend} unavailable: {e}")
    B, H, S, D = 2, 12, 384, 64
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, H, S, D, device="cuda", generator=g) for _ in range(4))
    seq_id = torch.cumsum((torch.rand(B, S, device="cuda", generator=g) < 0.01).long(), 1) if use_seq_id else None
    slopes = alibi_slopes(H, device="cuda")
    qr, kr, vr = (t.clone().requires_grad_(True) for t in (q, k, v))
    ref = torch_attention(qr, kr, vr, slopes, seq_id=seq_id)
    ref_grads = torch.autograd.grad(ref, (qr, kr, vr), do)
    qb, kb, vb = (t.bfloat16().requires_grad_(True) for t in (q, k, v))
    out = fn(qb, kb, vb, slopes, seq_id=seq_id)
    grads = torch.autograd.grad(out, (qb, kb, vb), do.bfloat16())
    assert _rel(out, ref) < 2e-2
    for a, b in zip(grads, ref_grads):
        assert _rel(a, b) < 2e-2


def test_compiled_flex_training_step_on_cuda(tmp_path):
    from trainer.config import load_config
    from trainer.optim import build_optimizer, build_scheduler
    from trainer.train import Dist, build_model, train_step

    cfg = load_config(None, ["model.d_model=256", "model.n_heads=4", "model.n_layers=2", "model.max_seq_len=512",
                             "model.attn_impl=flex", "seq_len=512", "micro_batch_size=4", "global_batch_size=8",
                             "compile=true", "precision=bf16", "device=cuda", "fsdp=off",
                             "optimizer.warmup_steps=1", "optimizer.lr=3e-3", "max_steps=12"])
    d = Dist(device=torch.device("cuda"))
    model = build_model(cfg, d)
    opt = build_optimizer(model.parameters(), cfg.optimizer)
    sched = build_scheduler(opt, cfg.optimizer, cfg.max_steps)
    base = torch.randint(1, 1000, (8, 1), device="cuda")
    data = iter(lambda: (base[torch.randperm(8, device="cuda")[:4]] + torch.arange(512, device="cuda")) % 50000, None)
    losses = [float(train_step(model, opt, sched, data, cfg, 2, d.device)[0]) for _ in range(12)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0]
