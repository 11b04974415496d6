"""MPT, exactly as released (llm-foundry ``MPTForCausalLM`` with alibi=True, no_bias=True), in one file.

Pre-norm blocks with a weight-only low-precision LayerNorm, one fused ``Wqkv`` split Q|K|V, ALiBi
attention (no positional embedding), an exact-GELU MLP with expansion 4, no biases anywhere, and
logits through the tied embedding. Parameter names are HF's ``MptForCausalLM`` names, so export is a
config.json plus the state dict (``trainer/export.py``); tests/test_trainer_model.py checks the
logits against ``transformers``' ``MptForCausalLM`` and the parameter counts of the released sizes.

The attention backend is chosen once, when the model is built: ``attn_impl: auto`` is resolved through the
registry in ``kernels.attention`` for the device and dtype the model will run in (``attn_device``,
``attn_dtype``) and for its packing (``attn_uses_sequence_id``); every block gets that concrete name, and
forward only uses it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from kernels.attention import (
    BACKENDS,
    alibi_slopes,
    causal_block_mask,
    get_backend,
    resolve_backend,
)
from kernels.layernorm import low_precision_layernorm
from trainer.config import ModelConfig


class LPLayerNorm(nn.Module):
    """Weight-only LayerNorm that runs in the autocast dtype (``norm_impl: torch``) or through the fused
    kernel (``norm_impl: fused``)."""

    def __init__(self, d: int, eps: float, impl: str):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps, self.impl = eps, impl

    def forward(self, x):
        # auto: the fused kernel measured fastest and leanest on H100 (benchmarks/RESULTS.md)
        if self.impl == "fused" or (self.impl == "auto" and x.is_cuda):
            from kernels.fused_layernorm import fused_layernorm

            return fused_layernorm(x, self.weight, self.eps)
        return low_precision_layernorm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, backend: str):
        super().__init__()
        self.n_heads, self.d_model, self.backend = cfg.n_heads, cfg.d_model, backend
        self.Wqkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.out_proj._is_residual = True

    @property
    def backend(self) -> str:
        """The concrete attention backend (a name in ``kernels.attention.BACKENDS``). Setting it looks the
        function up once, here; forward only calls it."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        if name == "auto":
            raise ValueError("a block runs a concrete attention backend: 'auto' is resolved when the model is "
                             "built (MPTForCausalLM(cfg, attn_device=...))")
        self._attend = get_backend(name)
        self._backend = name

    def forward(self, x, slopes, seq_id=None):
        B, S, d = x.shape
        H = self.n_heads
        q, k, v = self.Wqkv(x).split(d, dim=-1)  # head h = features [h*hd, (h+1)*hd) of each chunk
        q, k, v = (t.view(B, S, H, d // H).transpose(1, 2) for t in (q, k, v))
        y = self._attend(q, k, v, slopes, seq_id=seq_id)
        return self.out_proj(y.transpose(1, 2).reshape(B, S, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.expansion_ratio * cfg.d_model, bias=False)
        self.down_proj = nn.Linear(cfg.expansion_ratio * cfg.d_model, cfg.d_model, bias=False)
        self.down_proj._is_residual = True

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x), approximate="none"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, attn_backend: str):
        super().__init__()
        self.norm_1 = LPLayerNorm(cfg.d_model, cfg.norm_eps, cfg.norm_impl)
        self.attn = Attention(cfg, attn_backend)
        self.norm_2 = LPLayerNorm(cfg.d_model, cfg.norm_eps, cfg.norm_impl)
        self.ffn = MLP(cfg)

    def forward(self, x, slopes, seq_id=None):
        x = x + self.attn(self.norm_1(x), slopes, seq_id)
        return x + self.ffn(self.norm_2(x))


def resolve_attention(cfg: ModelConfig, device=None, dtype: torch.dtype | None = None) -> str:
    """The concrete backend ``cfg.attn_impl`` means for a model running on ``device`` (None: CUDA when a GPU
    is present, else CPU) in ``dtype`` (None: unchecked), with its packing (``attn_uses_sequence_id``)."""
    return resolve_backend(cfg.attn_impl, device, head_dim=cfg.head_dim, packed=cfg.attn_uses_sequence_id,
                           alibi_bias_max=cfg.alibi_bias_max, dtype=dtype)


class MPTForCausalLM(nn.Module):
    """``attn_device`` / ``attn_dtype``: where and in what dtype the model will run, for choosing its
    attention backend (``attn_impl: auto``) once, here. Parameters are still created on the current default
    device and moved by the caller (``trainer.train.build_model`` initialises on CPU, for weights identical
    across world sizes, and passes the run's device and compute dtype). ``attn_device`` None means CUDA when
    a GPU is present, else CPU."""

    def __init__(self, cfg: ModelConfig, *, attn_device=None, attn_dtype: torch.dtype | None = None):
        super().__init__()
        self.cfg = cfg
        self.attn_backend = resolve_attention(cfg, attn_device, attn_dtype)  # concrete, fixed from here on
        self.attn_device_type = (torch.device(attn_device).type if attn_device is not None else
                                 "cuda" if torch.cuda.is_available() else "cpu")
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg.vocab_size, cfg.d_model),
            "blocks": nn.ModuleList(Block(cfg, self.attn_backend) for _ in range(cfg.n_layers)),
            "norm_f": LPLayerNorm(cfg.d_model, cfg.norm_eps, cfg.norm_impl),
        })
        self._slopes: dict[torch.device, torch.Tensor] = {}
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """llm-foundry's default ``kaiming_normal_`` init (fan_in, relu gain, i.e. N(0, 2/fan_in)) for
        every Linear and the embedding; residual projections (out_proj, down_proj) divided by
        sqrt(2 * n_layers); norm weights one. Wqkv's per-slice init equals a whole-tensor one since
        fan_in stays d_model."""
        div = math.sqrt(2 * self.cfg.n_layers) if self.cfg.init_div_is_residual else 1.0
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in", nonlinearity="relu")
                if getattr(m, "_is_residual", False):
                    m.weight.div_(div)
            elif isinstance(m, LPLayerNorm):
                nn.init.ones_(m.weight)

    def forward(self, input_ids, labels=None, seq_id=None):
        """Logits (B, S, V) when ``labels`` is None, else the mean next-token loss over positions whose
        target is not -100 (target t = labels[t+1], MPT's ``get_targets``)."""
        cfg, tr = self.cfg, self.transformer
        S = input_ids.shape[1]
        if S > cfg.max_seq_len:
            raise ValueError(f"sequence length {S} exceeds max_seq_len {cfg.max_seq_len}")
        x = tr.wte(input_ids)
        slopes = self._slopes.get(x.device)
        if slopes is None:  # one tensor per device: backends that validate slopes do it once
            with torch.inference_mode(False):  # a normal tensor even if first made during inference
                slopes = self._slopes[x.device] = alibi_slopes(cfg.n_heads, cfg.alibi_bias_max, device=x.device)
        backend = tr.blocks[0].attn.backend
        self._check_attention_call(backend, x.device, seq_id)
        if seq_id is None and backend == "flex":
            causal_block_mask(S, x.device)  # built here, outside compiled blocks, then only looked up
        for block in tr.blocks:
            if cfg.activation_checkpointing and self.training:
                x = checkpoint(block, x, slopes, seq_id, use_reentrant=False)
            else:
                x = block(x, slopes, seq_id)
        h = tr.norm_f(x)
        if labels is None:
            return F.linear(h, tr.wte.weight)
        targets = torch.roll(labels, -1, dims=1)
        targets[:, -1] = -100
        return self.lm_loss(h, targets)

    def _check_attention_call(self, backend: str, device: torch.device, seq_id) -> None:
        """Plain checks (no resolving) that the backend chosen at build fits this call, with a way out."""
        auto = self.cfg.attn_impl == "auto" and backend == self.attn_backend
        if auto and device.type != self.attn_device_type:
            raise ValueError(f"attn_impl 'auto' chose {backend!r} for {self.attn_device_type} when this model was "
                             f"built, and this call runs on {device.type}: build it with "
                             f"MPTForCausalLM(cfg, attn_device={device.type!r})")
        if seq_id is not None and not BACKENDS[backend].packed_documents:
            how = (" (attn_impl 'auto' chose it for a model built with attn_uses_sequence_id false: set it true)"
                   if auto else "")
            raise ValueError(f"attention backend {backend!r} cannot mask packed documents (seq_id){how}")

    def lm_loss(self, h, targets):
        w = self.transformer.wte.weight
        if self.cfg.loss_impl == "chunked" or (self.cfg.loss_impl == "auto" and h.is_cuda):
            from kernels.cross_entropy import chunked_cross_entropy

            return chunked_cross_entropy(h.reshape(-1, h.shape[-1]), w, targets.reshape(-1),
                                         ignore_index=-100, chunk_size=self.cfg.loss_chunk_size)
        logits = F.linear(h, w)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
