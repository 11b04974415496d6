"""Causal ALiBi attention, exactly as MPT computes it, behind one signature and several backends.

Every backend takes ``(q, k, v, slopes, *, seq_id=None, softmax_scale=None)`` with q, k, v of shape
``(B, H, S, D)`` and returns ``(B, H, S, D)``. The bias is MPT's (llm-foundry's ``build_alibi_bias``, slopes
``2^(-8 h / H)`` with the non-power-of-2 interleave): added to the already-scaled scores, never
multiplied by the scale. MPT builds it key-only,
``slope_h * (j - (S-1))``; flex and flash-attn use the relative form ``slope_h * (j - i)``. The two
differ by a per-row constant that softmax cancels, so all backends compute the same function, and the
relative form keeps the bias small where it matters (near the diagonal) in bf16.

``seq_id`` (B, S) restricts attention to keys of the same packed document (MPT's
``attn_uses_sequence_id``); it is off in MPT pretraining.

Backends: ``torch`` (the reference every other backend is tested against: materialised scores, fp32
softmax), ``sdpa`` (torch SDPA with an additive float bias), ``flex`` (FlexAttention with an ALiBi
score_mod and a causal block mask), ``flash_attn`` (flash-attn 2 ``alibi_slopes``, when installed),
``triton`` (``kernels.triton_alibi``, imported lazily), ``cudnn`` (``kernels.cudnn_alibi``: cuDNN's fused
attention with its native ALiBi, through nvidia-cudnn-frontend; no ``seq_id``) and ``auto``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def alibi_slopes(n_heads: int, alibi_bias_max: int = 8, device=None) -> torch.Tensor:
    """MPT's ``gen_slopes``: for a non-power-of-2 head count, the power-of-2 schedule for N/2 heads
    followed by the in-between slopes (a naive ``2**(-8(i+1)/H)`` is wrong for 12, 20, 56 heads)."""
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")
    n = 2 ** math.ceil(math.log2(n_heads))
    m = torch.arange(1, n + 1, dtype=torch.float32, device=device) * (alibi_bias_max / n)
    slopes = 1.0 / torch.pow(2, m)
    if n != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def _scale(q: torch.Tensor, softmax_scale) -> float:
    return softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])


def _visible(S: int, device, seq_id: torch.Tensor | None) -> torch.Tensor:
    """Boolean (B|1, 1, S, S): key j is visible from query i."""
    i = torch.arange(S, device=device)
    vis = (i[:, None] >= i[None, :])[None, None]
    if seq_id is not None:
        vis = vis & (seq_id[:, None, :, None] == seq_id[:, None, None, :])
    return vis


def torch_attention(q, k, v, slopes, *, seq_id=None, softmax_scale=None):
    """MPT's torch path (``scaled_multihead_dot_product_attention`` with ``build_alibi_bias``)."""
    H, S = q.shape[1], q.shape[2]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    scores = torch.matmul(q, k.transpose(-1, -2)).to(acc) * _scale(q, softmax_scale)
    j = torch.arange(S, device=q.device, dtype=acc)
    bias = slopes.to(device=q.device, dtype=acc).view(1, H, 1, 1) * (j - (S - 1)).view(1, 1, 1, S)
    scores = scores + bias
    scores = scores.masked_fill(~_visible(S, q.device, seq_id), torch.finfo(acc).min)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v)


def sdpa_attention(q, k, v, slopes, *, seq_id=None, softmax_scale=None):
    """torch SDPA with the whole bias materialised (S*S per head): correct everywhere, not fast."""
    H, S = q.shape[1], q.shape[2]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    i = torch.arange(S, device=q.device, dtype=acc)
    rel = (i[None, :] - i[:, None])  # j - i
    bias = slopes.to(device=q.device, dtype=acc).view(1, H, 1, 1) * rel.view(1, 1, S, S)
    bias = bias.masked_fill(~_visible(S, q.device, seq_id), float("-inf")).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=_scale(q, softmax_scale))


# ---------------------------------------------------------------- FlexAttention
_CAUSAL_BLOCK_MASKS: dict = {}
_flex_compiled = None


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def causal_block_mask(S: int, device) -> object:
    """Causal BlockMask for length S, built once per (S, device). The model calls this before its
    (possibly compiled) blocks so that compiled code only looks the mask up."""
    from torch.nn.attention.flex_attention import create_block_mask

    key = (S, str(torch.device(device)))
    mask = _CAUSAL_BLOCK_MASKS.get(key)
    if mask is None:
        mask = create_block_mask(_causal, None, None, S, S, device=device, _compile=False)
        _CAUSAL_BLOCK_MASKS[key] = mask
    return mask


def _document_block_mask(seq_id: torch.Tensor):
    from torch.nn.attention.flex_attention import create_block_mask

    B, S = seq_id.shape

    def doc_causal(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (seq_id[b, q_idx] == seq_id[b, kv_idx])

    return create_block_mask(doc_causal, B, None, S, S, device=seq_id.device, _compile=False)


def _flex_impl(q, k, v, slopes, block_mask, scale):
    from torch.nn.attention.flex_attention import flex_attention

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    return flex_attention(q, k, v, score_mod=alibi, block_mask=block_mask, scale=scale)


def flex_attention_alibi(q, k, v, slopes, *, seq_id=None, softmax_scale=None):
    """FlexAttention: ``score + slope_h * (kv_idx - q_idx)`` (<= 0 for visible keys) on top of a causal
    (or causal-within-document) block mask. On CUDA it runs through ``torch.compile`` (eager flex is a
    slow math fallback); inside an already compiled region it is traced inline."""
    global _flex_compiled
    S = q.shape[2]
    slopes = slopes.to(device=q.device, dtype=torch.float32)
    mask = causal_block_mask(S, q.device) if seq_id is None else _document_block_mask(seq_id)
    scale = _scale(q, softmax_scale)
    if q.is_cuda and not torch.compiler.is_compiling():
        if _flex_compiled is None:
            _flex_compiled = torch.compile(_flex_impl, dynamic=False)
        return _flex_compiled(q, k, v, slopes, mask, scale)
    return _flex_impl(q, k, v, slopes, mask, scale)


# ---------------------------------------------------------------- flash-attn
def flash_attn_alibi(q, k, v, slopes, *, seq_id=None, softmax_scale=None):
    """flash-attn 2 with MPT's slopes passed as-is (positive, fp32), as llm-foundry does. With seq_id
    it uses the varlen kernel; each run of equal seq_id values is one document (packed documents are
    contiguous, so this matches the mask the other backends build)."""
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    B, H, S, D = q.shape
    slopes = slopes.to(device=q.device, dtype=torch.float32)
    scale = _scale(q, softmax_scale)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, S, H, D)
    if seq_id is None:
        out = flash_attn_func(qt, kt, vt, softmax_scale=scale, causal=True, alibi_slopes=slopes)
        return out.transpose(1, 2)
    flat = seq_id.reshape(-1)
    start = torch.ones_like(flat, dtype=torch.bool)
    start[1:] = flat[1:] != flat[:-1]
    start[::S] = True  # every batch row starts a new document
    starts = start.nonzero().flatten()
    cu = torch.cat([starts, starts.new_tensor([B * S])]).to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max())
    out = flash_attn_varlen_func(
        qt.reshape(B * S, H, D), kt.reshape(B * S, H, D), vt.reshape(B * S, H, D),
        cu, cu, max_len, max_len, softmax_scale=scale, causal=True, alibi_slopes=slopes,
    )
    return out.view(B, S, H, D).transpose(1, 2)


def _flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken CUDA extension raises more than ImportError
        return False
    return True


def _triton_available() -> bool:
    try:
        from kernels.triton_alibi import triton_alibi_attention  # noqa: F401
    except Exception:  # noqa: BLE001 - no triton / no GPU toolchain: fall back
        return False
    return True


AttentionFn = Callable[..., torch.Tensor]

BACKENDS: dict[str, AttentionFn] = {
    "torch": torch_attention,
    "sdpa": sdpa_attention,
    "flex": flex_attention_alibi,
}
if _flash_attn_available():
    BACKENDS["flash_attn"] = flash_attn_alibi

BACKEND_NAMES = ("torch", "sdpa", "flex", "flash_attn", "triton", "cudnn", "auto")


def triton_head_dims() -> tuple[int, ...]:
    """Head dims the Triton kernel supports (empty when it cannot be imported here)."""
    try:
        from kernels.triton_alibi import SUPPORTED_HEAD_DIMS
    except Exception:  # noqa: BLE001 - no triton / no GPU toolchain
        return ()
    return tuple(SUPPORTED_HEAD_DIMS)


def _cudnn_usable(head_dim: int | None, alibi_bias_max: int) -> bool:
    """cuDNN applies the ALiBi paper's slopes, which are MPT's only for ``alibi_bias_max`` 8."""
    if alibi_bias_max != 8:
        return False
    try:
        from kernels import cudnn_alibi
    except Exception:  # noqa: BLE001 - no torch.library custom ops / broken install: not usable
        return False
    return (head_dim is None or head_dim in cudnn_alibi.SUPPORTED_HEAD_DIMS) and cudnn_alibi.available()


def resolve_backend(backend: str, device=None, head_dim: int | None = None, *, packed: bool = False,
                    alibi_bias_max: int = 8) -> str:
    """Turn ``auto`` into a concrete name. On CUDA: cuDNN's fused attention with native ALiBi when the
    frontend is installed, the head dim is a multiple of 8 up to 128 and the slopes are MPT's default
    (``alibi_bias_max`` 8), unless documents are ``packed`` (``seq_id``, which cuDNN cannot mask); else
    the Triton kernel when it imports and supports ``head_dim`` (64, 80, 96, 112, 128); else
    FlexAttention (any head dim). Off CUDA the torch reference. benchmarks/RESULTS.md (kernels) has the
    measurements behind this order."""
    if backend != "auto":
        return backend
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if not on_cuda:
        return "torch"
    if not packed and _cudnn_usable(head_dim, alibi_bias_max):
        return "cudnn"
    if (head_dim is None or head_dim in triton_head_dims()) and _triton_available():
        return "triton"
    return "flex"


def get_backend(backend: str, device=None, head_dim: int | None = None) -> AttentionFn:
    name = resolve_backend(backend, device, head_dim)
    if name == "triton":
        from kernels.triton_alibi import triton_alibi_attention

        return triton_alibi_attention
    if name == "cudnn":
        from kernels.cudnn_alibi import cudnn_alibi_attention

        return cudnn_alibi_attention
    if name == "flash_attn" and name not in BACKENDS:
        raise ValueError("attention backend 'flash_attn' needs the flash-attn package (pip install flash-attn); "
                         "use 'flex' or 'torch' instead")
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return BACKENDS[name]


def attention(q, k, v, slopes, *, backend: str = "torch", seq_id=None, softmax_scale=None):
    """Causal ALiBi attention (B, H, S, D) -> (B, H, S, D) with the named backend."""
    fn = get_backend(backend, q.device, q.shape[-1])
    return fn(q, k, v, slopes, seq_id=seq_id, softmax_scale=softmax_scale)
