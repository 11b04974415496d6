"""Input checks, output and gradient buffers shared by the attention kernels (Triton, cuDNN).

Attention outputs are written as (B, S, H, D) memory and handed out as (B, H, S, D) views, so the
``transpose(1, 2).reshape(B, S, H * D)`` before the output projection is free. Gradients of q, k, v
follow their input: a contiguous (B, H, S, D) leaf gets (B, H, S, D) memory, views of a fused QKV
projection get (B, S, H, D); any other layout makes autograd copy the gradient.
"""

from __future__ import annotations

import torch

from kernels.attention import dtype_name


def bshd_buffer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An empty (B, S, H, D) buffer shaped after x (B, H, S, D), and its (B, H, S, D) view."""
    b, h, s, d = x.shape
    buf = torch.empty((b, s, h, d), device=x.device, dtype=x.dtype)
    return buf, buf.transpose(1, 2)


def grad_buffer(x: torch.Tensor, bhsd: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A gradient buffer for x and its (B, H, S, D) view: (B, H, S, D) memory when ``bhsd``, else (B, S, H, D)."""
    if bhsd:
        buf = torch.empty(x.shape, device=x.device, dtype=x.dtype)
        return buf, buf
    return bshd_buffer(x)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    """What both kernels need of q, k, v: one (B, H, S, D) shape, one of the kernel's ``dtypes`` (its entry
    in ``kernels.attention.BACKENDS``), a unit stride on D."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must share one (B, H, S, D) shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if q.dtype not in dtypes or k.dtype != q.dtype or v.dtype != q.dtype:
        names = " or ".join(dtype_name(t) for t in dtypes)
        raise ValueError(f"q, k, v must all be {names}, got {q.dtype}, {k.dtype}, {v.dtype}")
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        raise ValueError("q, k, v need a unit stride on the head dim")
