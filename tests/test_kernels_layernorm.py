"""The fused Triton LayerNorm computes MPT's low-precision LayerNorm (weight, no bias), both ways.

References: ``F.layer_norm`` in float64 for the numbers, and ``kernels.layernorm.low_precision_layernorm``
(the trainer's torch LPLayerNorm) for the autocast semantics (output dtype, gradient dtypes).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kernels.fused_layernorm import fused_layernorm
from tests.conftest import run_in_triton_interpreter

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _rel(a, ref):
    return ((a.double() - ref).norm() / ref.norm()).item()


def _check(shape, dtype, device, eps=1e-5, apply=None):
    fn = apply or (lambda x, w: fused_layernorm(x, w, eps))
    x = (torch.randn(shape, device=device) * 3 + 0.5).to(dtype).requires_grad_()
    w = (1 + 0.3 * torch.randn(shape[-1], device=device)).to(dtype).requires_grad_()
    dy = torch.randn(shape, device=device).to(dtype)
    y = fn(x, w)
    assert y.dtype == dtype and y.shape == x.shape
    y.backward(dy)
    xx, ww = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.layer_norm(xx, (shape[-1],), ww, None, eps)
    ref.backward(dy.double())
    xl, wl = x.detach().requires_grad_(), w.detach().requires_grad_()
    low = F.layer_norm(xl.float(), (shape[-1],), wl.float(), None, eps).to(dtype)
    low.backward(dy)
    for name, got, exact, lowp in [("y", y, ref, low), ("dx", x.grad, xx.grad, xl.grad), ("dw", w.grad, ww.grad, wl.grad)]:
        assert torch.isfinite(got).all(), name
        err, base = _rel(got, exact.detach()), _rel(lowp, exact.detach())
        assert err <= 2 * base + (1e-5 if dtype == torch.float32 else 2e-3), f"{name}: {err:.2e} vs {base:.2e}"


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(4, 512, 768), (3, 1000, 2048), (7, 4096), (5, 1, 96)])
def test_matches_layer_norm(dtype, shape):
    _check(shape, dtype, "cuda")


@cuda
@pytest.mark.gpu
def test_autocast_matches_low_precision_layernorm():
    """Under bf16 autocast: fp32 input and master weight in, bf16 out, fp32 grads, same numbers as LPLayerNorm."""
    from kernels.layernorm import low_precision_layernorm

    x = torch.randn(8, 256, 1024, device="cuda", requires_grad=True)
    w = (1 + 0.1 * torch.randn(1024, device="cuda")).requires_grad_()
    dy = torch.randn(8, 256, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = fused_layernorm(x, w)
    y.backward(dy)
    x2, w2 = x.detach().requires_grad_(), w.detach().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y2 = low_precision_layernorm(x2, w2)
    y2.backward(dy)
    assert y.dtype == y2.dtype == torch.bfloat16
    assert x.grad.dtype == w.grad.dtype == torch.float32
    assert _rel(y, y2.double()) < 1e-2
    assert _rel(x.grad, x2.grad.double()) < 1e-2
    assert _rel(w.grad, w2.grad.double()) < 1e-2


def test_cpu_fallback_is_lplayernorm():
    x = torch.randn(4, 10, 64, dtype=torch.float64, requires_grad=True)
    w = torch.randn(64, dtype=torch.float64, requires_grad=True)
    y = fused_layernorm(x, w)
    torch.testing.assert_close(y, F.layer_norm(x, (64,), w, None, 1e-5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = fused_layernorm(x.float(), w.float())
    assert yb.dtype == torch.bfloat16


_INTERPRETER_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {root!r})
    from kernels.fused_layernorm import _fused
    from tests.test_kernels_layernorm import _check
    torch.manual_seed({seed})
    _check((3, 17, 96), torch.float32, "cpu", apply=lambda x, w: _fused(x, w, 1e-5))
    _check((2, 33, 64), torch.float16, "cpu", apply=lambda x, w: _fused(x, w, 1e-5))
    print("ok")
    """
)


def test_kernels_in_triton_interpreter():
    run_in_triton_interpreter(_INTERPRETER_SCRIPT)


@cuda
@pytest.mark.gpu
def test_inductor_compiled_block_gpu():
    """Per-block torch.compile (as the trainer does) keeps the fused kernel and its numbers."""
    lin = torch.nn.Linear(1024, 1024, bias=False, device="cuda")
    w = (1 + 0.1 * torch.randn(1024, device="cuda")).requires_grad_()

    def block(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return lin(fused_layernorm(x, w)).float().square().mean()

    x = torch.randn(4, 512, 1024, device="cuda", requires_grad=True)
    compiled = torch.compile(block, fullgraph=True)
    out = compiled(x)
    out.backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = None
    w.grad = None
    ref = block(x)
    ref.backward()
    assert abs(out.item() - ref.item()) < 1e-2 * abs(ref.item())
    assert _rel(gx, x.grad.double()) < 1e-2 and _rel(gw, w.grad.double()) < 1e-2
