"""Chunked cross-entropy equals ``F.cross_entropy(hidden @ weight.T, labels)`` in value and gradients,
and at 8k tokens over the 50432 vocabulary it never holds the whole batch's logits."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kernels.cross_entropy import chunked_cross_entropy
from tests.conftest import run_in_triton_interpreter

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _inputs(N, d, V, dtype, device, ignore_frac=0.1):
    h = torch.randn(N, d, device=device, dtype=dtype, requires_grad=True)
    w = (torch.randn(V, d, device=device, dtype=dtype) / d ** 0.5).requires_grad_()
    y = torch.randint(0, V, (N,), device=device)
    y[torch.rand(N, device=device) < ignore_frac] = -100
    return h, w, y


def _reference(h, w, y, dtype=torch.float64):
    hh, ww = h.detach().to(dtype).requires_grad_(), w.detach().to(dtype).requires_grad_()
    loss = F.cross_entropy(hh @ ww.T, y, ignore_index=-100)
    loss.backward()
    return loss.detach(), hh.grad, ww.grad


@pytest.mark.parametrize("N,chunk", [(300, 64), (300, 300), (300, 1000), (257, 1)])
def test_matches_cross_entropy_cpu(N, chunk):
    h, w, y = _inputs(N, 48, 211, torch.float64, "cpu")
    loss = chunked_cross_entropy(h, w, y, chunk_size=chunk)
    loss.backward()
    ref, dh, dw = _reference(h, w, y)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h.grad, dh, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w.grad, dw, rtol=1e-10, atol=1e-12)


def test_float32_batch_shape_and_grad_scale_cpu():
    """(B, S, d) inputs, fp32, and a non-unit upstream gradient (e.g. loss scaling / accumulation)."""
    h, w, y = _inputs(2 * 96, 32, 500, torch.float32, "cpu", ignore_frac=0.3)
    h3 = h.detach().view(2, 96, 32).requires_grad_()
    loss = chunked_cross_entropy(h3, w, y.view(2, 96), chunk_size=50)
    (loss * 0.25).backward()
    ref, dh, dw = _reference(h, w, y)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h3.grad.view(-1, 32).double(), dh * 0.25, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(w.grad.double(), dw * 0.25, rtol=1e-4, atol=1e-7)


def test_all_ignored_gives_zero_loss_and_grads():
    h, w, y = _inputs(40, 16, 30, torch.float32, "cpu")
    y[:] = -100
    loss = chunked_cross_entropy(h, w, y, chunk_size=16)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(h.grad) == 0 and torch.count_nonzero(w.grad) == 0


def test_no_grad_and_frozen_weight():
    h, w, y = _inputs(64, 16, 30, torch.float32, "cpu")
    with torch.no_grad():
        l0 = chunked_cross_entropy(h, w, y, chunk_size=10)
    w.requires_grad_(False)
    l1 = chunked_cross_entropy(h, w, y, chunk_size=10)
    l1.backward()
    ref, dh, _ = _reference(h, w, y)
    torch.testing.assert_close(l0.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h.grad.double(), dh, rtol=1e-4, atol=1e-7)
    assert w.grad is None


def test_rejects_bad_shapes():
    h, w, y = _inputs(10, 8, 12, torch.float32, "cpu")
    with pytest.raises(ValueError):
        chunked_cross_entropy(h, w, y[:5])
    with pytest.raises(ValueError):
        chunked_cross_entropy(h, w[:, :4], y)


@cuda
@pytest.mark.gpu
def test_bf16_autocast_matches_reference_gpu():
    """Trainer setting: bf16 autocast, fp32 master embedding, vocab 50432."""
    N, d, V = 4096, 768, 50432
    h = torch.randn(N, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(V, d, device="cuda") * 0.05).requires_grad_()
    y = torch.randint(0, V, (N,), device="cuda")
    y[::7] = -100
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = chunked_cross_entropy(h, w, y, chunk_size=1000)
    loss.backward()
    assert w.grad.dtype == torch.float32 and h.grad.dtype == torch.bfloat16
    ref, dh, dw = _reference(h, w.to(torch.bfloat16), y, torch.float32)
    assert abs(loss.item() - ref.item()) < 2e-3 * ref.item()
    for got, exp in [(h.grad, dh), (w.grad, dw)]:
        rel = ((got.float() - exp).norm() / exp.norm()).item()
        assert rel < 1e-2, rel


@cuda
@pytest.mark.gpu
def test_memory_stays_below_full_logits_gpu():
    """8k tokens x 50432 vocab: fp32 logits alone would be 1.65 GB; the chunked loss must peak far below."""
    N, d, V = 8192, 1024, 50432
    h = torch.randn(N, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(V, d, device="cuda", dtype=torch.bfloat16) * 0.03).requires_grad_()
    y = torch.randint(0, V, (N,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = chunked_cross_entropy(h, w, y, chunk_size=1024)
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    full_fp32_logits = N * V * 4
    assert extra < 0.5 * full_fp32_logits, (extra, full_fp32_logits)
    assert torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()


def test_traces_under_torch_compile_cpu():
    """The trainer compiles its loss function: the chunked loss must trace as one opaque op, same numbers."""
    h, w, y = _inputs(120, 24, 77, torch.float32, "cpu")

    def loss_fn(h, w, y):
        return chunked_cross_entropy(h * 1.0, w, y, chunk_size=50)

    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    loss = compiled(h, w, y)
    loss.backward()
    ref, dh, dw = _reference(h, w, y)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h.grad.double(), dh, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(w.grad.double(), dw, rtol=1e-4, atol=1e-7)


@cuda
@pytest.mark.gpu
def test_inductor_compiled_loss_gpu():
    h, w, y = _inputs(3000, 256, 50432, torch.bfloat16, "cuda")

    @torch.compile(fullgraph=True)
    def loss_fn(h, w, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return chunked_cross_entropy(h, w, y, chunk_size=1024)

    loss = loss_fn(h, w, y)
    loss.backward()
    ref, dh, dw = _reference(h, w, y, torch.float32)
    assert abs(loss.item() - ref.item()) < 2e-3 * ref.item()
    for got, exp in [(h.grad, dh), (w.grad, dw)]:
        assert ((got.float() - exp).norm() / exp.norm()).item() < 1e-2


_INTERPRETER_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {root!r})
    from tests.test_kernels_cross_entropy import _inputs, _reference
    from kernels.cross_entropy import chunked_cross_entropy
    torch.manual_seed({seed})
    for N, V, chunk in [(37, 300, 16), (9, 5000, 4)]:   # V > 4096 exercises the kernel's column loop
        h, w, y = _inputs(N, 32, V, torch.float16, "cpu", ignore_frac=0.3)
        loss = chunked_cross_entropy(h, w, y, chunk_size=chunk)
        loss.backward()
        ref, dh, dw = _reference(h, w, y)
        assert abs(loss.item() - ref.item()) < 2e-3 * ref.item(), (loss.item(), ref.item())
        for got, exp in [(h.grad, dh), (w.grad, dw)]:
            rel = ((got.double() - exp).norm() / exp.norm()).item()
            assert rel < 1e-2, rel
    print("ok")
    """
)


def test_row_kernel_in_triton_interpreter():
    """The Triton loss/gradient row kernel, run by Triton's CPU interpreter in fp16."""
    run_in_triton_interpreter(_INTERPRETER_SCRIPT)
