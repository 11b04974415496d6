"""Cross-entropy over the tied 50432-token vocabulary without whole-batch fp32 logits.

At 8k tokens per sample the logits of one micro-batch are ``tokens x 50432``: 1.6 GiB per 8k tokens in
fp32, plus their bf16 copy and the equally large softmax gradient that autograd keeps. Here the
unembedding, log-softmax and loss are done ``chunk_size`` rows at a time, and the gradient of each
chunk is computed right away (softmax minus one-hot, scaled by 1/n_valid) and turned into its share of
dHidden and dWeight before the next chunk, so at most one chunk of logits exists at any moment. The
backward then only scales the stored gradients by the incoming grad_output: three matmuls per chunk
in total (logits, dHidden, dWeight), the same as the unchunked forward + backward.

Pure torch, so it runs wherever the model runs (CPU tests included). Under autocast the matmuls run in
the autocast dtype with fp32 accumulation, and the softmax/logsumexp in fp32, like
``F.cross_entropy(hidden @ weight.T, labels)`` on upcast logits.
"""

from __future__ import annotations

from typing import Tuple

import torch

DEFAULT_CHUNK_SIZE = 4096


def _accumulate_dw(dw: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """dw (fp32) += g.T @ h, keeping fp32 accumulation without an fp32 copy of g or h on CUDA."""
    if dw.is_cuda and g.dtype in (torch.bfloat16, torch.float16):
        try:
            return torch.addmm(dw, g.t(), h, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            pass
    return dw.add_((g.t() @ h).to(dw.dtype))


def _chunked_loss_and_grads(hidden, weight, labels, ignore_index, chunk_size, need_dh, need_dw):
    n = hidden.shape[0]
    acc = torch.promote_types(hidden.dtype, torch.float32)
    valid_all = labels != ignore_index
    denom = valid_all.sum().clamp(min=1).to(acc)
    loss_sum = torch.zeros((), device=hidden.device, dtype=acc)
    dh = torch.empty(hidden.shape if need_dh else (0,), device=hidden.device, dtype=hidden.dtype)
    dw = torch.zeros(weight.shape if need_dw else (0,), device=weight.device, dtype=acc)
    for s in range(0, n, chunk_size):
        h = hidden[s:s + chunk_size]
        y = labels[s:s + chunk_size]
        valid = valid_all[s:s + chunk_size]
        y_safe = torch.where(valid, y, torch.zeros_like(y))
        logits = (h @ weight.t()).to(acc)  # (c, V): the only logits alive at any time
        lse = torch.logsumexp(logits, dim=-1)
        target = logits.gather(1, y_safe[:, None]).squeeze(1)
        loss_sum += torch.where(valid, lse - target, torch.zeros_like(lse)).sum()
        if need_dh or need_dw:
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            rows = torch.arange(probs.shape[0], device=probs.device)
            probs[rows, y_safe] -= valid.to(probs.dtype)
            probs.mul_((valid.to(acc) / denom)[:, None])
            g = probs.to(hidden.dtype)
            del logits, probs
            if need_dh:
                torch.matmul(g, weight, out=dh[s:s + chunk_size])
            if need_dw:
                dw = _accumulate_dw(dw, g, h)
    return loss_sum / denom, dh, dw


# A custom op, so that a compiled loss function (the trainer compiles it) calls this loop as is
# instead of tracing it and materialising what the chunking exists to avoid.
@torch.library.custom_op("mpt_kernels::chunked_ce", mutates_args=())
def _chunked_ce_op(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                   chunk_size: int, need_dh: bool, need_dw: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _chunked_loss_and_grads(hidden, weight, labels, ignore_index, chunk_size, need_dh, need_dw)


@_chunked_ce_op.register_fake
def _chunked_ce_fake(hidden, weight, labels, ignore_index, chunk_size, need_dh, need_dw):
    acc = torch.promote_types(hidden.dtype, torch.float32)
    return (hidden.new_empty((), dtype=acc), hidden.new_empty(hidden.shape if need_dh else (0,)),
            weight.new_empty(weight.shape if need_dw else (0,), dtype=acc))


def _ce_setup(ctx, inputs, output):
    hidden, weight = inputs[0], inputs[1]
    _, dh, dw = output
    ctx.save_for_backward(dh, dw)
    ctx.need_dh, ctx.need_dw = inputs[5], inputs[6]
    ctx.weight_dtype = weight.dtype


def _ce_backward(ctx, grad_loss, _gdh, _gdw):
    dh, dw = ctx.saved_tensors
    gh = dh * grad_loss.to(dh.dtype) if ctx.need_dh else None
    gw = (dw * grad_loss).to(ctx.weight_dtype) if ctx.need_dw else None
    return gh, gw, None, None, None, None, None


torch.library.register_autograd("mpt_kernels::chunked_ce", _ce_backward, setup_context=_ce_setup)


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          ignore_index: int = -100, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``labels`` over non-ignored positions.

    hidden (..., d), weight (V, d) (the tied embedding), labels (...) of the same leading shape. The
    result equals ``F.cross_entropy((hidden @ weight.T).float().view(-1, V), labels.view(-1),
    ignore_index=ignore_index)``; with every label ignored it is 0 (not NaN), with zero gradients.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match hidden {tuple(hidden.shape[:-1])}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be (V, {hidden.shape[-1]}), got {tuple(weight.shape)}")
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        h, weight = h.to(dtype), weight.to(dtype)
    elif h.dtype != weight.dtype:
        raise ValueError(f"hidden ({h.dtype}) and weight ({weight.dtype}) dtypes differ outside autocast")
    grad = torch.is_grad_enabled()
    need_dh = grad and h.requires_grad
    need_dw = grad and weight.requires_grad
    with torch.autocast(device_type=device_type, enabled=False):
        loss, _, _ = _chunked_ce_op(h, weight, y, int(ignore_index), int(chunk_size), need_dh, need_dw)
    return loss
