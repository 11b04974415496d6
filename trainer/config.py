"""Trainer configuration: plain dataclasses filled from YAML plus ``key.sub=value`` CLI overrides.

Unknown keys and wrong types fail at load time with the file, the dotted key and what to do, so a typo
never silently falls back to a default in a long run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from contract.config import ConfigError, build
from kernels.attention import BACKEND_NAMES, BACKENDS

__all__ = [
    "PRESETS",
    "ConfigError",
    "DataConfig",
    "Float8Config",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "load_config",
]


# d_model, n_heads, n_layers. MPT sizes from llm-foundry's pretrain yamls (heads reduced so head_dim is
# 128 from 760m up); 30b uses the released MPT-30B head count (64, head_dim 112), the yaml has 56.
PRESETS: dict[str, tuple[int, int, int]] = {
    "125m": (768, 12, 12),
    "350m": (1024, 16, 24),
    "760m": (1536, 12, 24),
    "1b": (2048, 16, 24),
    "3b": (2560, 20, 32),
    "7b": (4096, 32, 32),
    "13b": (5120, 40, 40),
    "30b": (7168, 64, 48),
}


@dataclass
class ModelConfig:
    preset: str | None = None
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    expansion_ratio: int = 4
    max_seq_len: int = 2048
    vocab_size: int = 50432
    norm_eps: float = 1e-5
    alibi_bias_max: int = 8
    attn_impl: str = "auto"  # a name in kernels.attention.BACKENDS (torch, sdpa, flex, flash_attn, triton, cudnn) | auto
    norm_impl: str = "auto"  # torch | fused | auto (fused Triton LayerNorm on CUDA, torch elsewhere)
    loss_impl: str = "auto"  # torch | chunked | auto (chunked Triton cross-entropy on CUDA, torch elsewhere)
    loss_chunk_size: int = 8192
    attn_uses_sequence_id: bool = False
    init_div_is_residual: bool = True
    activation_checkpointing: bool = False

    def __post_init__(self):
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ConfigError(f"model.preset: unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
            self.d_model, self.n_heads, self.n_layers = PRESETS[self.preset]
        if self.d_model % self.n_heads:
            raise ConfigError(f"model: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.vocab_size >= 2**16 + 1 or self.vocab_size < 2:
            raise ConfigError(f"model.vocab_size {self.vocab_size}: tokens are stored as uint16, use <= 65536")
        for key, allowed in (("norm_impl", ("torch", "fused", "auto")), ("loss_impl", ("torch", "chunked", "auto")),
                             ("attn_impl", BACKEND_NAMES)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"model.{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        self.check_attention()

    def attention_needs(self) -> dict:
        """What this model asks of its attention backend, as ``AttentionBackend.unsupported`` takes it."""
        return {"head_dim": self.head_dim, "packed": self.attn_uses_sequence_id, "alibi_bias_max": self.alibi_bias_max}

    def check_attention(self, dtype: torch.dtype | None = None, where: str = "model.attn_impl") -> None:
        """A backend named by hand must be able to compute this model (the registry in kernels.attention
        says what each supports); ``auto`` only ever picks one that can."""
        if self.attn_impl == "auto":
            return
        why = BACKENDS[self.attn_impl].unsupported(**self.attention_needs(), dtype=dtype)
        if why is not None:
            able = [n for n, b in BACKENDS.items() if b.unsupported(**self.attention_needs(), dtype=dtype) is None]
            raise ConfigError(f"{where}: {self.attn_impl!r} cannot run this model: {why}; use 'auto' or one of "
                              f"{', '.join(able)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def num_params(self) -> int:
        """MPT with alibi, no biases, tied embeddings: the embedding, per block Wqkv + out_proj (4 d^2) and
        the MLP (8 d^2) plus two LayerNorm weights (2 d), and the final LayerNorm weight (d)."""
        d, L = self.d_model, self.n_layers
        return self.vocab_size * d + L * (12 * d * d + 2 * d) + d


@dataclass
class DataConfig:
    streams: Any = None  # path to a mixture's streams.yaml, a mixture directory, or an inline mapping
    eval_streams: Any = None
    shuffle: bool = True
    shuffle_seed: int = 17
    shuffle_algo: str = "py1e"
    shuffle_block_size: int | None = None
    num_canonical_nodes: int | None = None
    epoch_size: int | None = None
    num_workers: int = 0
    cache_dir: str | None = None  # local cache root for remote streams


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | lion (both decoupled weight decay, as llm-foundry)
    lr: float = 6e-4
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # global L2 norm; 0 disables
    warmup_steps: int = 100
    alpha_f: float = 0.1  # cosine floor as a fraction of lr

    def __post_init__(self):
        if self.name not in ("adamw", "lion"):
            raise ConfigError(f"optimizer.name: {self.name!r} is not one of adamw, lion")
        if len(self.betas) != 2:
            raise ConfigError(f"optimizer.betas: need two numbers, got {self.betas!r}")


@dataclass
class Float8Config:
    """How ``precision: fp8`` trains: torchao's float8 Linears (``trainer/float8.py``) inside the blocks.

    Only ``nn.Linear`` modules are candidates, so the embedding and the tied LM head (``F.linear`` on the
    embedding weight, or the chunked cross-entropy) always stay bf16, as do the LayerNorms and attention.
    ``modules: auto`` converts a block Linear only where torchao's H100 tables measured float8 faster for
    its recipe (tensorwise: not K <= 4096 and N <= 1024; rowwise: N > 2048, K > 1024, not N <= 4096 and
    K <= 2048); ``all`` converts every block Linear whose dims are multiples of 16 (a hardware rule of
    float8 matmuls, never waived). ``keep_bf16`` names more modules to leave alone (fnmatch patterns on
    qualified names, e.g. ``transformer.blocks.0.*`` or ``*.out_proj``)."""

    recipe: Literal["tensorwise", "rowwise"] = "tensorwise"
    modules: Literal["auto", "all"] = "auto"
    keep_bf16: list = field(default_factory=list)
    # FSDP2 all-gathers float8 weights (half the bytes of bf16): tensorwise only, and only when FSDP shards.
    fsdp_float8_all_gather: str | bool = "auto"  # auto (on for tensorwise under FSDP) | on | off
    # with the float8 all-gather: one fused amax of all weights after the optimizer step, not one per weight
    precompute_scale: bool = True

    def __post_init__(self):
        if isinstance(self.fsdp_float8_all_gather, bool):  # YAML reads a bare on/off as a boolean
            self.fsdp_float8_all_gather = "on" if self.fsdp_float8_all_gather else "off"
        if self.fsdp_float8_all_gather not in ("auto", "on", "off"):
            raise ConfigError(f"float8.fsdp_float8_all_gather: {self.fsdp_float8_all_gather!r} is not one of "
                              "auto, on, off")
        if self.fsdp_float8_all_gather == "on" and self.recipe != "tensorwise":
            raise ConfigError(f"float8.fsdp_float8_all_gather: on needs recipe tensorwise (torchao all-gathers "
                              f"float8 weights with one scale per tensor); recipe is {self.recipe!r}: use auto or off")
        for pat in self.keep_bf16:
            if not isinstance(pat, str) or not pat:
                raise ConfigError(f"float8.keep_bf16: {pat!r} is not a module-name pattern (e.g. '*.out_proj')")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    seq_len: int = 2048
    global_batch_size: int = 256  # sequences per optimizer step, all ranks together
    micro_batch_size: int = 8  # sequences per forward/backward per rank
    max_steps: int = 100  # length of the LR schedule
    stop_after: int | None = None  # end this invocation at this step (checkpointed); the schedule still spans max_steps
    seed: int = 17
    precision: str = "bf16"  # bf16 (fp32 master weights, bf16 compute) | fp8 (bf16 + float8 block Linears) | fp32
    float8: Float8Config = field(default_factory=Float8Config)  # read under precision: fp8 only
    fsdp: str | bool = "auto"  # auto (on when launched with torchrun) | on | off
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda
    init_device: str = "full"  # full: init the whole model on every rank, then shard | meta: shard first, init shards
    run_dir: str = "runs/default"  # checkpoints/ and metrics.jsonl go here
    save_every: int = 0  # steps; 0 saves only at the end
    keep_checkpoints: int = 2
    resume: bool = True  # resume from run_dir's latest checkpoint when there is one
    eval_every: int = 0
    eval_batches: int = 8
    log_every: int = 1
    progress_bar: bool = True
    peak_tflops: float | None = None  # per GPU; None picks 989.5 on H100, 312 on A100

    def __post_init__(self):
        if self.precision not in ("bf16", "fp8", "fp32"):
            raise ConfigError(f"precision: {self.precision!r} is not one of bf16, fp8, fp32")
        if self.precision == "fp8" and self.device == "cpu":
            raise ConfigError("precision: fp8 needs a CUDA GPU with FP8 tensor cores (compute capability 8.9+, "
                              "e.g. H100/H200); device is cpu: use precision: bf16")
        if isinstance(self.fsdp, bool):  # YAML reads a bare on/off as a boolean
            self.fsdp = "on" if self.fsdp else "off"
        if self.init_device not in ("full", "meta"):
            raise ConfigError(f"init_device: {self.init_device!r} is not one of full, meta")
        if self.fsdp not in ("auto", "on", "off"):
            raise ConfigError(f"fsdp: {self.fsdp!r} is not one of auto, on, off")
        if self.seq_len > self.model.max_seq_len:
            raise ConfigError(f"seq_len {self.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}; "
                              "raise model.max_seq_len (it sizes the exported ALiBi table)")
        self.model.check_attention(self.compute_dtype, where=f"model.attn_impl with precision {self.precision}")

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype attention and the non-float8 matmuls run in: bf16 under autocast (bf16, fp8), else fp32."""
        return torch.float32 if self.precision == "fp32" else torch.bfloat16

    def accumulation(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(f"global_batch_size {self.global_batch_size} is not a multiple of "
                              f"micro_batch_size {self.micro_batch_size} x world size {world_size}")
        return self.global_batch_size // per_step


def _set_dotted(tree: dict, dotted: str, value):
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{p}' is not a mapping")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """YAML file (optional) plus ``key.sub=value`` overrides (values parsed as YAML)."""
    tree: dict = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: write key.sub=value (e.g. optimizer.lr=3e-4)")
        key, raw = ov.split("=", 1)
        _set_dotted(tree, key.strip().lstrip("-"), yaml.safe_load(raw))
        where = f"{path or 'defaults'} + overrides"
    return build(TrainConfig, tree, where)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def model_config_from_dict(d: dict) -> ModelConfig:
    d = dict(d)
    d.pop("preset", None)  # sizes are already resolved
    return build(ModelConfig, d, "checkpoint config")

