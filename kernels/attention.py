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

``BACKENDS`` (end of this file) is the registry, in the style of llm-foundry's attention registry: name ->
where the function lives and what it supports (head dims, dtypes, packed documents, slopes, CUDA, what to
install). It is the one place that says what a backend can run: the trainer's config validation, ``auto``
(``resolve_backend``, which the model calls once, when it is built) and the kernels' own input checks read it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

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


# ---------------------------------------------------------------- the backend registry
AttentionFn = Callable[..., torch.Tensor]

_LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class AttentionBackend:
    """One attention backend: where its function lives and everything it can and cannot compute. This is
    the only statement of a backend's support; config validation, ``auto`` and the kernels read it here."""

    name: str
    impl: str  # "module:function", imported on first use (the GPU kernels import triton / cudnn)
    head_dims: tuple[int, ...] | None = None  # None: any head dim
    head_dims_text: str = "any"  # the same set, for messages
    dtypes: tuple[torch.dtype, ...] | None = None  # of q, k, v; None: any floating dtype
    packed_documents: bool = True  # can mask packed documents (seq_id, attn_uses_sequence_id)
    alibi_bias_max: int | None = None  # None: any slopes; else only MPT's slopes for this alibi_bias_max
    needs_cuda: bool = False
    requires: str = "torch"  # what must be installed for it to import and run
    imports: tuple[str, ...] = ()  # packages that must import before ``impl`` is usable
    probe: str | None = None  # "module:function" -> bool: can it run on this machine (library, GPU)

    def unsupported(self, *, head_dim: int | None = None, dtype: torch.dtype | None = None, packed: bool = False,
                    alibi_bias_max: int | None = None, device=None) -> str | None:
        """Why this backend cannot compute exactly this attention, or None when it can. Arguments left
        None are not checked."""
        if head_dim is not None and self.head_dims is not None and head_dim not in self.head_dims:
            return f"head dim {head_dim} (it supports {self.head_dims_text})"
        if dtype is not None and self.dtypes is not None and dtype not in self.dtypes:
            return f"dtype {dtype_name(dtype)} (it supports {', '.join(map(dtype_name, self.dtypes))})"
        if packed and not self.packed_documents:
            return "packed documents (seq_id, attn_uses_sequence_id): it has no document mask"
        if (alibi_bias_max is not None and self.alibi_bias_max is not None
                and alibi_bias_max != self.alibi_bias_max):
            return (f"alibi_bias_max {alibi_bias_max} (it applies only the slopes of alibi_bias_max "
                    f"{self.alibi_bias_max}, the ALiBi paper's)")
        if device is not None and self.needs_cuda and torch.device(device).type != "cuda":
            return f"device {torch.device(device).type} (it needs CUDA)"
        return None

    def load(self) -> AttentionFn:
        """The backend's function; ValueError naming what to install when it cannot be imported here."""
        fn = _LOADED.get(self.name)
        if fn is None:
            try:
                for pkg in self.imports:
                    importlib.import_module(pkg)
                module, attr = self.impl.split(":")
                fn = getattr(importlib.import_module(module), attr)
            except Exception as exc:  # a broken CUDA extension raises more than ImportError
                raise ValueError(f"attention backend {self.name!r} needs {self.requires}, which does not import "
                                 f"here ({type(exc).__name__}: {exc}); use 'flex' or 'torch' instead") from exc
            _LOADED[self.name] = fn
        return fn

    def available(self) -> bool:
        """It imports here and, where it has a probe, the machine can run it (library version, GPU)."""
        try:
            self.load()
            if self.probe is None:
                return True
            module, attr = self.probe.split(":")
            return bool(getattr(importlib.import_module(module), attr)())
        except Exception:  # noqa: BLE001 - not importable / not runnable here: not available
            return False


_SHORT_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp64"}


def dtype_name(dtype: torch.dtype) -> str:
    """bf16, fp16, fp32, fp64 (else torch's name), as messages write them."""
    return _SHORT_DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


_LOADED: dict[str, AttentionFn] = {}

BACKENDS: dict[str, AttentionBackend] = {b.name: b for b in (
    AttentionBackend("torch", f"{__name__}:torch_attention"),
    AttentionBackend("sdpa", f"{__name__}:sdpa_attention"),
    AttentionBackend("flex", f"{__name__}:flex_attention_alibi", requires="torch >= 2.5 (FlexAttention)"),
    AttentionBackend("flash_attn", f"{__name__}:flash_attn_alibi", head_dims=tuple(range(1, 257)),
                     head_dims_text="up to 256", dtypes=_LOW_PRECISION, needs_cuda=True,
                     requires="the flash-attn package (pip install flash-attn, >= 2.4.2 for alibi_slopes)",
                     imports=("flash_attn",)),
    # Triton tiles are powers of 2: 80/96/112 run padded to 128 with the padding masked off
    AttentionBackend("triton", "kernels.triton_alibi:triton_alibi_attention", head_dims=(64, 80, 96, 112, 128),
                     head_dims_text="64, 80, 96, 112 or 128", dtypes=_LOW_PRECISION, needs_cuda=True,
                     requires="triton (a CUDA GPU, or TRITON_INTERPRET=1 on CPU for tests)"),
    # cuDNN's flash engine; use_alibi_mask applies the ALiBi paper's slopes, which are MPT's for
    # alibi_bias_max 8 only; no mask for packed documents
    AttentionBackend("cudnn", "kernels.cudnn_alibi:cudnn_alibi_attention", head_dims=tuple(range(8, 129, 8)),
                     head_dims_text="multiples of 8 up to 128", dtypes=_LOW_PRECISION, packed_documents=False,
                     alibi_bias_max=8, needs_cuda=True,
                     requires="nvidia-cudnn-frontend with cuDNN >= 9 and an Ampere or newer GPU",
                     probe="kernels.cudnn_alibi:available"),
)}

BACKEND_NAMES = (*BACKENDS, "auto")

# What ``auto`` tries, in order, per device type (the first that supports the call and is available here).
# benchmarks/RESULTS.md (kernels) has the measurements behind the CUDA order; elsewhere the torch reference.
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cuda": ("cudnn", "triton", "flex"), "cpu": ("torch",)}


def triton_head_dims() -> tuple[int, ...]:
    """Head dims the Triton kernel supports (empty when it cannot be imported here)."""
    spec = BACKENDS["triton"]
    return spec.head_dims if spec.available() else ()


def resolve_backend(backend: str, device=None, head_dim: int | None = None, *, packed: bool = False,
                    alibi_bias_max: int = 8, dtype: torch.dtype | None = None) -> str:
    """Turn ``auto`` into a concrete name (any other name is returned as is): the first backend of
    ``AUTO_ORDER`` for the device's type (CUDA when ``device`` is None and a GPU is present) that supports
    this head dim, dtype, packing (``seq_id``) and ``alibi_bias_max`` and is available here. On CUDA that
    is cuDNN's fused attention with its native ALiBi, else the Triton kernel, else FlexAttention (any
    head dim); off CUDA the torch reference. The model calls this once, when it is built."""
    if backend != "auto":
        return backend
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    for name in AUTO_ORDER.get(kind, AUTO_ORDER["cpu"]):
        spec = BACKENDS[name]
        if spec.unsupported(head_dim=head_dim, dtype=dtype, packed=packed, alibi_bias_max=alibi_bias_max) is None \
                and spec.available():
            return name
    raise ValueError(f"no attention backend in {AUTO_ORDER.get(kind, AUTO_ORDER['cpu'])} can run head dim "
                     f"{head_dim}, dtype {dtype}, packed={packed}, alibi_bias_max {alibi_bias_max} here")


def get_backend(backend: str, device=None, head_dim: int | None = None) -> AttentionFn:
    """The function of a backend (``auto`` resolved first); ValueError for an unknown name or one whose
    package does not import here."""
    name = resolve_backend(backend, device, head_dim) if backend == "auto" else backend
    spec = BACKENDS.get(name)
    if spec is None:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return spec.load()


def attention(q, k, v, slopes, *, backend: str = "torch", seq_id=None, softmax_scale=None):
    """Causal ALiBi attention (B, H, S, D) -> (B, H, S, D) with the named backend."""
    fn = get_backend(backend, q.device, q.shape[-1])
    return fn(q, k, v, slopes, seq_id=seq_id, softmax_scale=softmax_scale)
