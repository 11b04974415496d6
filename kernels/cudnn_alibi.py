"""Causal ALiBi attention on cuDNN's fused flash-attention engine (forward and backward).

Why: cuDNN's SDPA is the fastest attention on Hopper we can reach from Python (1.7-1.9x SDPA's
FlashAttention-2 backend on an H200), and its graph API computes ALiBi natively (``use_alibi_mask``),
inside the same kernels, on both passes. torch only exposes cuDNN attention without ALiBi, and its
additive-bias path either loses the bias to bf16 rounding (a key-only bias) or streams an S x S tensor
(a relative one); benchmarks/RESULTS.md has the measurements. We call the graph API through
``nvidia-cudnn-frontend`` (pinned in requirements.lock), against the cuDNN library torch already loaded.

What cuDNN computes, and why it is MPT's function: scores ``q.k * scale + slope_h * (j - i)`` with
the ALiBi paper's slopes for H heads (the power-of-2 schedule, then the interleaved in-between slopes
for a non-power-of-2 H), under a causal mask. MPT adds ``slope_h * (j - (S-1))``; softmax cancels the
per-row difference, and MPT's ``gen_slopes`` with ``alibi_bias_max=8`` *is* the paper's schedule. Any
other slopes are refused here (:func:`supports`), and ``auto`` never picks this backend for a
different ``alibi_bias_max`` (``kernels.attention.BACKENDS["cudnn"]``, which states what it supports).

Graphs are built once per (shape, strides, dtype, scale, device) and cached; each call binds the
tensors and runs the plan on torch's current stream with a workspace from torch's allocator. Both
passes are torch custom ops (opaque to ``torch.compile``), as the Triton kernel is.
"""

from __future__ import annotations

import math
import weakref
from typing import Tuple  # noqa: UP035 - torch.library's schema inference reads typing forms

import torch

from kernels.attention import BACKENDS
from kernels.layout import bshd_buffer, check_qkv, grad_buffer

SPEC = BACKENDS["cudnn"]  # what this backend supports (head dims, dtypes, slopes, no seq_id): stated there
SUPPORTED_HEAD_DIMS = SPEC.head_dims
# The backward accumulates dQ with atomics (fastest) unless torch's deterministic mode is on, as torch's
# own cuDNN attention does; None follows torch, True/False force it (benchmarks/attention.py times both).
DETERMINISTIC_BACKWARD: bool | None = None


def _deterministic() -> bool:
    if DETERMINISTIC_BACKWARD is None:
        return torch.are_deterministic_algorithms_enabled()
    return DETERMINISTIC_BACKWARD


_HANDLES: dict[int, int] = {}
_GRAPHS: dict[tuple, tuple] = {}  # insertion-ordered; the oldest graph goes when _MAX_GRAPHS is reached
_MAX_GRAPHS = 64


def _cudnn():
    import cudnn  # nvidia-cudnn-frontend

    return cudnn


def available() -> bool:
    """True when the frontend imports, finds a cuDNN with the fused attention engine (>= 9), and the GPU
    has it (Ampere or newer)."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        return False
    try:
        cudnn = _cudnn()
        return cudnn.backend_version() >= 90000
    except Exception:  # noqa: BLE001 - missing package or library: this backend is simply absent
        return False


def paper_slopes(n_heads: int) -> torch.Tensor:
    """The ALiBi paper's slopes (what cuDNN's ``use_alibi_mask`` applies)."""
    p = 2 ** math.floor(math.log2(n_heads))
    base = [2.0 ** (-8.0 * (i + 1) / p) for i in range(p)]
    extra = [2.0 ** (-8.0 * (i + 0.5) / p) for i in range(n_heads - p)]
    return torch.tensor(base + extra, dtype=torch.float32)


_SLOPES_OK: dict[int, tuple] = {}  # id -> (weakref, version, ok): one check per slopes tensor, never stale


def supports(head_dim: int, slopes: torch.Tensor | None = None, seq_id=None) -> bool:
    """Can this backend compute exactly this attention? (No packed documents; the paper's slopes.)
    The slopes are read back once per tensor (the model keeps one per device), not once per call."""
    if SPEC.unsupported(head_dim=head_dim, packed=seq_id is not None) is not None:
        return False
    if slopes is None:
        return True
    hit = _SLOPES_OK.get(id(slopes))
    if hit is not None and hit[0]() is slopes and hit[1] == slopes._version:
        return hit[2]
    ok = slopes.dim() == 1 and bool(torch.allclose(slopes.detach().float().cpu(), paper_slopes(slopes.shape[0]),
                                                   rtol=1e-6, atol=0))
    for k in [k for k, (ref, _, _) in _SLOPES_OK.items() if ref() is None]:
        del _SLOPES_OK[k]
    _SLOPES_OK[id(slopes)] = (weakref.ref(slopes), slopes._version, ok)
    return ok


def _handle(device: torch.device) -> int:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    h = _HANDLES.get(idx)
    if h is None:
        with torch.cuda.device(idx):
            h = _cudnn().create_handle()
        _HANDLES[idx] = h
    return h


def _dtype(cudnn, t: torch.dtype):
    if t == torch.bfloat16:
        return cudnn.data_type.BFLOAT16
    if t == torch.float16:
        return cudnn.data_type.HALF
    raise ValueError(f"cudnn ALiBi attention cannot run {SPEC.unsupported(dtype=t)}")


def _sig(t: torch.Tensor) -> tuple:
    return tuple(t.shape), tuple(t.stride())


def _build(kind: str, key: tuple, tensors: dict[str, torch.Tensor], scale: float, handle: int,
           deterministic: bool):
    """Build (or fetch) a forward or backward graph for these tensor shapes and strides."""
    hit = _GRAPHS.get(key)
    if hit is not None:
        return hit
    try:
        entry = _make_graph(kind, tensors, scale, handle, deterministic)
    except Exception as exc:  # cuDNN's own errors name no shape: say what was asked for
        q = tensors["q"]
        raise RuntimeError(
            f"cuDNN could not build the ALiBi attention {kind} graph for q {tuple(q.shape)} strides "
            f"{tuple(q.stride())} {q.dtype} on {torch.cuda.get_device_name(q.device)} (cuDNN "
            f"{_cudnn().backend_version()}): {type(exc).__name__}: {exc}. Use attn_impl 'triton' instead."
        ) from exc
    if len(_GRAPHS) >= _MAX_GRAPHS:
        _GRAPHS.pop(next(iter(_GRAPHS)))
    _GRAPHS[key] = entry
    return entry


def _make_graph(kind: str, tensors: dict[str, torch.Tensor], scale: float, handle: int, deterministic: bool):
    cudnn = _cudnn()
    io = _dtype(cudnn, tensors["q"].dtype)
    g = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                      compute_data_type=cudnn.data_type.FLOAT, handle=handle)
    t = {}
    for name in ("q", "k", "v") + (("o", "do", "stats") if kind == "bwd" else ()):
        x = tensors[name]
        t[name] = g.tensor(name=name, dim=list(x.shape), stride=list(x.stride()),
                           data_type=cudnn.data_type.FLOAT if name == "stats" else io)
    if kind == "fwd":
        o, stats = g.sdpa(q=t["q"], k=t["k"], v=t["v"], is_inference=False, attn_scale=scale,
                          use_alibi_mask=True, use_causal_mask=True, name="alibi_fwd")
        outs = {"o": o, "stats": stats}
    else:
        dq, dk, dv = g.sdpa_backward(q=t["q"], k=t["k"], v=t["v"], o=t["o"], dO=t["do"], stats=t["stats"],
                                     attn_scale=scale, use_alibi_mask=True, use_causal_mask=True,
                                     use_deterministic_algorithm=deterministic, name="alibi_bwd")
        outs = {"dq": dq, "dk": dk, "dv": dv}
    for name, o in outs.items():
        x = tensors[name]
        o.set_output(True).set_dim(list(x.shape)).set_stride(list(x.stride()))
        o.set_data_type(cudnn.data_type.FLOAT if name == "stats" else io)
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    g.build_plans()
    return g, {**t, **outs}, g.get_workspace_size()


def _run(kind: str, tensors: dict[str, torch.Tensor], scale: float) -> None:
    q = tensors["q"]
    handle = _handle(q.device)
    deterministic = _deterministic()
    key = (kind, q.dtype, str(q.device), scale, deterministic, *(_sig(tensors[n]) for n in sorted(tensors)))
    g, uids, ws = _build(kind, key, tensors, scale, handle, deterministic)
    cudnn = _cudnn()
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
    workspace = torch.empty(max(ws, 1), device=q.device, dtype=torch.uint8)
    g.execute({uids[n]: tensors[n] for n in tensors}, workspace, handle=handle)


@torch.library.custom_op("mpt_kernels::cudnn_alibi_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
    B, H, S, _ = q.shape
    o_buf, o = bshd_buffer(q)
    stats = torch.empty((B, H, S, 1), device=q.device, dtype=torch.float32)
    _run("fwd", {"q": q, "k": k, "v": v, "o": o, "stats": stats}, sm_scale)
    return o_buf, stats


@_fwd_op.register_fake
def _fwd_fake(q, k, v, sm_scale):
    B, H, S, D = q.shape
    return q.new_empty((B, S, H, D)), q.new_empty((B, H, S, 1), dtype=torch.float32)


@torch.library.custom_op("mpt_kernels::cudnn_alibi_bwd", mutates_args=())
def _bwd_op(do_bshd: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o_bshd: torch.Tensor,
            stats: torch.Tensor, sm_scale: float, bhsd_grads: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: UP006
    do_bshd = do_bshd if do_bshd.stride(-1) == 1 else do_bshd.contiguous()
    (dq_buf, dq), (dk_buf, dk), (dv_buf, dv) = (grad_buffer(t, bhsd_grads) for t in (q, k, v))
    _run("bwd", {"q": q, "k": k, "v": v, "o": o_bshd.transpose(1, 2), "do": do_bshd.transpose(1, 2),
                 "stats": stats, "dq": dq, "dk": dk, "dv": dv}, sm_scale)
    return dq_buf, dk_buf, dv_buf


@_bwd_op.register_fake
def _bwd_fake(do_bshd, q, k, v, o_bshd, stats, sm_scale, bhsd_grads):
    return tuple(grad_buffer(t, bhsd_grads)[0] for t in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, sm_scale = inputs
    o_bshd, stats = output
    ctx.save_for_backward(q, k, v, o_bshd, stats)
    ctx.sm_scale = sm_scale
    ctx.bhsd_grads = q.is_contiguous()


def _backward(ctx, do_bshd, _dstats):
    q, k, v, o_bshd, stats = ctx.saved_tensors
    dq, dk, dv = _bwd_op(do_bshd, q, k, v, o_bshd, stats, ctx.sm_scale, ctx.bhsd_grads)
    if not ctx.bhsd_grads:
        dq, dk, dv = dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)
    return dq, dk, dv, None


torch.library.register_autograd("mpt_kernels::cudnn_alibi_fwd", _backward, setup_context=_setup_context)


def cudnn_alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, *,
                          seq_id: torch.Tensor | None = None,
                          softmax_scale: float | None = None) -> torch.Tensor:
    """Causal ALiBi attention, (B, H, S, D) bf16/fp16 CUDA tensors with a unit stride on D; returns a
    (B, H, S, D) view of (B, S, H, D) memory. ``slopes`` must be the ALiBi paper's (MPT's default)."""
    check_qkv(q, k, v, SPEC.dtypes)
    D = q.shape[-1]
    why = SPEC.unsupported(head_dim=D, packed=seq_id is not None)
    if why is not None:
        raise ValueError(f"the cudnn backend cannot run {why}; use attn_impl 'triton'")
    # slopes are read back outside compiled code only; under compile the model routes here only for
    # alibi_bias_max 8 (resolve_backend), which are the paper's slopes
    if not torch.compiler.is_compiling() and not supports(D, slopes):
        raise ValueError("the cudnn backend applies the ALiBi paper's slopes (MPT's alibi_bias_max=8); these "
                         "slopes differ: use attn_impl 'triton' or 'flex'")
    sm_scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(D)
    o_bshd, _ = _fwd_op(q, k, v, sm_scale)
    return o_bshd.transpose(1, 2)
