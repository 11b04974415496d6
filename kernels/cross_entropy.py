"""Cross-entropy over the tied 50432-token vocabulary without whole-batch fp32 logits.

At 8k tokens per sample the logits of one micro-batch are ``tokens x 50432``: 1.6 GiB per 8k tokens in
fp32, plus their bf16 copy and the equally large softmax gradient that autograd keeps. Here the
unembedding, log-softmax and loss are done ``chunk_size`` rows at a time, and the gradient of each
chunk is computed right away (softmax minus one-hot, scaled by 1/n_valid) and turned into its share of
dHidden and dWeight before the next chunk, so at most one chunk of logits exists at any moment. The
backward then only scales the stored gradients by the incoming grad_output: three matmuls per chunk
in total (logits, dHidden, dWeight), the same as the unchunked forward + backward.

On CUDA with bf16/fp16 a small Triton kernel turns each chunk's low-precision logits into its loss
and, in place, its gradient (fp32 math in registers: two reads and one write of the chunk, no fp32
copy); elsewhere (CPU tests, fp32/fp64) the same steps run in plain torch. Under autocast the matmuls
run in the autocast dtype with fp32 accumulation, like ``F.cross_entropy(hidden @ weight.T, labels)``
on upcast logits; dWeight is accumulated in fp32 across chunks.
"""

from __future__ import annotations

import os
from typing import Tuple  # noqa: UP035 - torch.library's schema inference reads typing forms

import torch

DEFAULT_CHUNK_SIZE = 4096


try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch without triton
    triton = None


if triton is not None:

    @triton.jit
    def _ce_rows_kernel(Logits, stride, Labels, Loss, InvDenom, V, ignore_index,
                        WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr):
        """One row of low-precision logits: loss = lse - logit[y]; then, in place, the row's gradient
        (softmax - onehot) / n_valid. Two reads and one write of the row, fp32 math in registers."""
        row = tl.program_id(0).to(tl.int64)
        ptr = Logits + row * stride
        cols = tl.arange(0, BLOCK)
        y = tl.load(Labels + row)
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        acc = tl.zeros([BLOCK], tl.float32)
        for off in range(0, V, BLOCK):
            x = tl.load(ptr + off + cols, mask=off + cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, x)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # lanes past V have seen only -inf
            acc = acc * tl.exp(m - m_safe) + tl.exp(x - m_safe)
            m = m_new
        mx = tl.max(m, 0)
        lse = mx + tl.log(tl.sum(acc * tl.exp(m - mx), 0))
        valid = y != ignore_index
        y_safe = tl.where(valid, y, 0)
        target = tl.load(ptr + y_safe).to(tl.float32)
        tl.store(Loss + row, tl.where(valid, lse - target, 0.0))
        if WRITE_GRAD:
            scale = tl.where(valid, tl.load(InvDenom), 0.0)
            for off in range(0, V, BLOCK):
                idx = off + cols
                x = tl.load(ptr + idx, mask=idx < V, other=0.0).to(tl.float32)
                g = tl.exp(x - lse) * scale
                g = tl.where(idx == y_safe, g - scale, g)
                tl.store(ptr + idx, g.to(Logits.dtype.element_ty), mask=idx < V)


def _use_row_kernel(logits: torch.Tensor) -> bool:
    on_device = logits.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"  # the interpreter runs on CPU
    return triton is not None and on_device and logits.dtype in (torch.bfloat16, torch.float16)


def _accumulate_dw(dw: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """dw (fp32) += g.T @ h, keeping fp32 accumulation without an fp32 copy of g or h on CUDA."""
    if dw.is_cuda and g.dtype in (torch.bfloat16, torch.float16):
        try:
            return torch.addmm(dw, g.t(), h, out_dtype=torch.float32, out=dw)
        except (TypeError, RuntimeError):
            try:
                return torch.addmm(dw, g.t(), h, out_dtype=torch.float32)
            except (TypeError, RuntimeError):
                pass
    return dw.add_((g.t() @ h).to(dw.dtype))


def _chunk_torch(logits_lp, y_safe, valid, inv_denom, acc, need_grad):
    """Reference path (CPU, fp32/fp64): fp32 copy of the chunk's logits, softmax in place."""
    logits = logits_lp.to(acc)
    lse = torch.logsumexp(logits, dim=-1)
    target = logits.gather(1, y_safe[:, None]).squeeze(1)
    loss = torch.where(valid, lse - target, torch.zeros_like(lse)).sum()
    if not need_grad:
        return loss, None
    probs = logits.sub_(lse[:, None]).exp_()
    rows = torch.arange(probs.shape[0], device=probs.device)
    probs[rows, y_safe] -= valid.to(probs.dtype)
    probs.mul_((valid.to(acc) * inv_denom)[:, None])
    return loss, probs.to(logits_lp.dtype)


def _chunk_triton(logits_lp, y, inv_denom, ignore_index, need_grad):
    """CUDA path: the gradient overwrites the low-precision logits; no fp32 copy at all."""
    c, V = logits_lp.shape
    loss_rows = torch.empty(c, device=logits_lp.device, dtype=torch.float32)
    _ce_rows_kernel[(c,)](logits_lp, logits_lp.stride(0), y, loss_rows, inv_denom, V, ignore_index,
                          WRITE_GRAD=need_grad, BLOCK=4096, num_warps=8)
    return loss_rows.sum(), (logits_lp if need_grad else None)


def _chunked_loss_and_grads(hidden, weight, labels, ignore_index, chunk_size, need_dh, need_dw):
    n = hidden.shape[0]
    acc = torch.promote_types(hidden.dtype, torch.float32)
    valid_all = labels != ignore_index
    denom = valid_all.sum().clamp(min=1).to(acc)
    inv_denom = (1.0 / denom).to(torch.float32).reshape(1) if acc == torch.float32 else 1.0 / denom
    loss_sum = torch.zeros((), device=hidden.device, dtype=acc)
    dh = torch.empty(hidden.shape if need_dh else (0,), device=hidden.device, dtype=hidden.dtype)
    dw = torch.zeros(weight.shape if need_dw else (0,), device=weight.device, dtype=acc)
    need_grad = need_dh or need_dw
    for s in range(0, n, chunk_size):
        h = hidden[s:s + chunk_size]
        y = labels[s:s + chunk_size]
        logits = h @ weight.t()  # (c, V) in the input dtype: the only logits alive at any time
        if _use_row_kernel(logits):
            loss, g = _chunk_triton(logits, y.contiguous(), inv_denom, ignore_index, need_grad)
        else:
            valid = valid_all[s:s + chunk_size]
            y_safe = torch.where(valid, y, torch.zeros_like(y))
            loss, g = _chunk_torch(logits, y_safe, valid, inv_denom, acc, need_grad)
        loss_sum += loss
        del logits
        if need_dh:
            torch.matmul(g, weight, out=dh[s:s + chunk_size])
        if need_dw:
            dw = _accumulate_dw(dw, g, h)
        del g
    return loss_sum / denom, dh, dw


# A custom op, so that a compiled loss function (the trainer compiles it) calls this loop as is
# instead of tracing it and materialising what the chunking exists to avoid.
@torch.library.custom_op("mpt_kernels::chunked_ce", mutates_args=())
def _chunked_ce_op(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                   chunk_size: int, need_dh: bool, need_dw: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: UP006
    return _chunked_loss_and_grads(hidden, weight, labels, ignore_index, chunk_size, need_dh, need_dw)


@_chunked_ce_op.register_fake
def _chunked_ce_fake(hidden, weight, labels, ignore_index, chunk_size, need_dh, need_dw):
    acc = torch.promote_types(hidden.dtype, torch.float32)
    return (hidden.new_empty((), dtype=acc), hidden.new_empty(hidden.shape if need_dh else (0,)),
            weight.new_empty(weight.shape if need_dw else (0,), dtype=acc))


def _ce_setup(ctx, inputs, output):
    weight = inputs[1]
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
