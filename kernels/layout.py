"""Output and gradient buffers for the attention kernels, in the layout their readers want.

Attention outputs are written as (B, S, H, D) memory and handed out as (B, H, S, D) views, so the
``transpose(1, 2).reshape(B, S, H * D)`` before the output projection is free. Gradients of q, k, v
follow their input: a contiguous (B, H, S, D) leaf gets (B, H, S, D) memory, views of a fused QKV
projection get (B, S, H, D); any other layout makes autograd copy the gradient.
"""

from __future__ import annotations

import torch


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
