"""MPT's low-precision LayerNorm without bias as one Triton kernel each way.

``LPLayerNorm`` under autocast casts input and weight to bf16 and runs ``F.layer_norm`` there, so the
output (and what the next matmul reads) is bf16, not fp32. Each norm is memory-bound: the best it can
do is read x once and write y once forward, and read x, dy once and write dx once backward. Here the
forward keeps only a per-row mean and 1/std (8 bytes a row) for the backward, the statistics are
computed in fp32 from the low-precision input, and dWeight is reduced per program in fp32 before one
small sum, instead of the separate reduction passes of the generic kernels.

Off CUDA (CPU tests, CI) the same function falls back to the torch LPLayerNorm math.
"""

from __future__ import annotations

from typing import Tuple  # noqa: UP035 - torch.library's schema inference reads typing forms

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch without triton
    triton = None


if triton is not None:

    @triton.jit
    def _ln_fwd_kernel(X, W, Y, Mean, Rstd, stride_x, stride_y, N, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < N
        x = tl.load(X + row * stride_x + cols, mask=m, other=0.0).to(tl.float32)
        mean = tl.sum(x, 0) / N
        xc = tl.where(m, x - mean, 0.0)
        var = tl.sum(xc * xc, 0) / N
        rstd = 1.0 / tl.sqrt(var + eps)
        w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(Y + row * stride_y + cols, (xc * rstd * w).to(Y.dtype.element_ty), mask=m)
        tl.store(Mean + row, mean)
        tl.store(Rstd + row, rstd)

    @triton.jit
    def _ln_bwd_kernel(X, W, DY, DX, DWp, Mean, Rstd, stride_x, stride_dy, stride_dx, M, N,
                       rows_per_prog, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        m = cols < N
        w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK], tl.float32)
        start = pid * rows_per_prog
        x_ptr = X + start.to(tl.int64) * stride_x
        dy_ptr = DY + start.to(tl.int64) * stride_dy
        dx_ptr = DX + start.to(tl.int64) * stride_dx
        for r in range(start, tl.minimum(start + rows_per_prog, M)):
            x = tl.load(x_ptr + cols, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + cols, mask=m, other=0.0).to(tl.float32)
            mean = tl.load(Mean + r)
            rstd = tl.load(Rstd + r)
            xhat = tl.where(m, (x - mean) * rstd, 0.0)
            wdy = w * dy
            c1 = tl.sum(xhat * wdy, 0) / N
            c2 = tl.sum(wdy, 0) / N
            dx = (wdy - (xhat * c1 + c2)) * rstd
            tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=m)
            dw += dy * xhat
            x_ptr += stride_x
            dy_ptr += stride_dy
            dx_ptr += stride_dx
        tl.store(DWp + pid * N + cols, dw, mask=m)


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _warps(block: int) -> int:
    return min(max(block // 256, 1), 16)


# Custom ops: opaque to torch.compile (with fake implementations), so compiled MPT blocks call the
# kernels instead of tracing into them.
@torch.library.custom_op("mpt_kernels::ln_fwd", mutates_args=())
def _ln_fwd(x2: torch.Tensor, weight: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: UP006
    M, N = x2.shape
    y = torch.empty((M, N), device=x2.device, dtype=x2.dtype)
    mean = torch.empty(M, device=x2.device, dtype=torch.float32)
    rstd = torch.empty(M, device=x2.device, dtype=torch.float32)
    block = triton.next_power_of_2(N)
    _ln_fwd_kernel[(M,)](x2, weight, y, mean, rstd, x2.stride(0), y.stride(0), N, eps,
                         BLOCK=block, num_warps=_warps(block))
    return y, mean, rstd


@_ln_fwd.register_fake
def _ln_fwd_fake(x2, weight, eps):
    M, N = x2.shape
    return x2.new_empty((M, N)), x2.new_empty(M, dtype=torch.float32), x2.new_empty(M, dtype=torch.float32)


@torch.library.custom_op("mpt_kernels::ln_bwd", mutates_args=())
def _ln_bwd(dy2: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
            rstd: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
    M, N = x2.shape
    dy2 = dy2 if dy2.stride(-1) == 1 else dy2.contiguous()
    dx = torch.empty((M, N), device=x2.device, dtype=x2.dtype)
    sms = torch.cuda.get_device_properties(x2.device).multi_processor_count if x2.is_cuda else 4
    n_prog = max(1, min(M, sms * 8))
    rows_per_prog = triton.cdiv(M, n_prog)
    n_prog = triton.cdiv(M, rows_per_prog)
    dw_partial = torch.empty((n_prog, N), device=x2.device, dtype=torch.float32)
    block = triton.next_power_of_2(N)
    _ln_bwd_kernel[(n_prog,)](x2, weight, dy2, dx, dw_partial, mean, rstd,
                              x2.stride(0), dy2.stride(0), dx.stride(0), M, N, rows_per_prog,
                              BLOCK=block, num_warps=_warps(block))
    return dx, dw_partial.sum(0).to(weight.dtype)


@_ln_bwd.register_fake
def _ln_bwd_fake(dy2, x2, weight, mean, rstd):
    return x2.new_empty(x2.shape), weight.new_empty(weight.shape)


def _ln_setup(ctx, inputs, output):
    x2, weight, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x2, weight, mean, rstd)


def _ln_backward(ctx, dy2, _dmean, _drstd):
    x2, weight, mean, rstd = ctx.saved_tensors
    dx, dw = _ln_bwd(dy2, x2, weight, mean, rstd)
    return dx, dw, None


torch.library.register_autograd("mpt_kernels::ln_fwd", _ln_backward, setup_context=_ln_setup)


def _fused(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    y, _, _ = _ln_fwd(_rows(x), weight, float(eps))
    return y.view(x.shape)


def fused_layernorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dim with a weight and no bias, computed in the input's low precision
    under autocast (MPT's LPLayerNorm); exactly ``F.layer_norm(x, (d,), weight, None, eps)`` otherwise."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
    if x.is_cuda and triton is not None and x.dtype == weight.dtype and x.shape[-1] <= 65536:
        with torch.autocast(device_type=device_type, enabled=False):
            return _fused(x, weight, eps)
    with torch.autocast(device_type=device_type, enabled=False):
        return F.layer_norm(x, (x.shape[-1],), weight, None, eps)
