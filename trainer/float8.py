"""``precision: fp8``: torchao's float8 training on the block Linears, as torchtitan applies it.

Why torchao and not TransformerEngine (llm-foundry's ``amp_fp8``): torchao's ``Float8Linear`` is a plain
``nn.Linear`` subclass whose weight stays an fp32 ``nn.Parameter`` under the same name; inputs, weights
and output gradients are cast to float8 per matmul (dynamic scaling, ``tensorwise`` or ``rowwise``),
and ``torch.compile`` fuses the casts into the neighbouring kernels. So optimizer state, DCP
checkpoints, resume and the HF export see exactly the tensors a bf16 run has: a float8 run writes the
same kind of checkpoint and can resume a bf16 one (or the other way round).

Order (torchtitan's): :func:`convert` on the freshly built model, then activation checkpointing and the
per-block compile, then FSDP2. Under FSDP with the tensorwise recipe the weights are wrapped so FSDP2
all-gathers them in float8 (half the bytes of bf16), and :func:`after_optimizer_step` computes every
weight's scale in one fused amax instead of one per all-gather.

torchao is imported only here and only for an fp8 run (pinned in pyproject's ``gpu`` extra); the device
check comes first, so a CPU or pre-Hopper run fails with a ConfigError whether or not torchao is there.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from trainer.config import ConfigError, Float8Config

TORCHAO_PIN = "torchao==0.18.0"  # built against torch 2.11's stable ABI; what the H200 numbers used


@dataclass(frozen=True)
class Float8State:
    """What :func:`convert` did, kept on the model as ``model.float8`` (read by the loop and the tests)."""

    recipe: str
    converted: tuple[str, ...]  # qualified names of the Float8Linear modules
    kept: tuple[str, ...]  # block Linears left in bf16, with the reason
    fsdp_float8_all_gather: bool
    precompute_scale: bool


def check_device(device: torch.device, recipe: str = "tensorwise") -> None:
    """ConfigError unless ``device`` has FP8 tensor cores: compute capability 8.9 (Ada) for tensorwise,
    9.0 (Hopper) for rowwise, whose scaled matmul is a Hopper CUTLASS kernel. Needs no torchao."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ConfigError(f"precision: fp8 needs a CUDA GPU with FP8 tensor cores (compute capability 8.9+, "
                          f"e.g. H100/H200); this run's device is {device.type}: use precision: bf16")
    need = (9, 0) if recipe == "rowwise" else (8, 9)
    cap = torch.cuda.get_device_capability(device)
    if cap < need:
        raise ConfigError(f"precision: fp8 (float8.recipe {recipe}) needs compute capability "
                          f"{need[0]}.{need[1]}+ (FP8 tensor cores: Hopper H100/H200); "
                          f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: use precision: bf16")


def _torchao_float8():
    try:
        import torchao.float8 as f8
    except ImportError as e:
        raise ConfigError(f"precision: fp8 trains through torchao's float8 Linears; install {TORCHAO_PIN} "
                          f"(pip install 'mptdata[gpu]'): {e}") from None
    return f8


def _auto_keeps(recipe: str, n: int, k: int) -> str | None:
    """Why torchao's per-recipe H100 tables say a (N out, K in) Linear is not worth float8, or None.
    The thresholds are torchao 0.18's ``_auto_filter_for_recipe`` (not a public API, so restated here)."""
    if recipe == "tensorwise":
        if k <= 4096 and n <= 1024:
            return f"tensorwise gains nothing at K {k} <= 4096 and N {n} <= 1024"
        return None
    if n <= 2048:
        return f"rowwise gains nothing at N {n} <= 2048"
    if k <= 1024:
        return f"rowwise gains nothing at K {k} <= 1024"
    if n <= 4096 and k <= 2048:
        return f"rowwise gains nothing at N {n} <= 4096 and K {k} <= 2048"
    return None


def select_linears(model: nn.Module, fc: Float8Config) -> tuple[dict[str, nn.Linear], dict[str, str]]:
    """(Linears to convert by name, {name: why it stays bf16}) for ``fc``. Pure: needs no torchao and no
    GPU, so the choice is tested on CPU."""
    chosen, kept = {}, {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or type(mod).__name__ == "Float8Linear":
            continue
        n, k = mod.weight.shape
        why = None
        hit = next((p for p in fc.keep_bf16 if fnmatch.fnmatchcase(name, p)), None)
        if hit is not None:
            why = f"float8.keep_bf16 {hit!r}"
        elif n % 16 or k % 16:
            why = f"dims {n}x{k} are not multiples of 16 (float8 matmuls need them)"
        elif fc.modules == "auto":
            why = _auto_keeps(fc.recipe, n, k)
        if why is None:
            chosen[name] = mod
        else:
            kept[name] = why
    return chosen, kept


def convert(model: nn.Module, fc: Float8Config, *, fsdp: bool) -> Float8State:
    """Swap the chosen block Linears for torchao ``Float8Linear`` in place (same parameter objects and
    names). ``fsdp``: FSDP2 will shard the model next, so the tensorwise recipe all-gathers float8 weights
    (``fsdp_float8_all_gather: auto``/``on``). A ConfigError when nothing qualifies: an fp8 run that
    silently trains in bf16 would be worse than none."""
    chosen, kept = select_linears(model, fc)
    if not chosen:
        raise ConfigError("precision: fp8 found no Linear to run in float8 "
                          f"(float8.modules {fc.modules}, recipe {fc.recipe}; kept: "
                          + "; ".join(f"{n}: {w}" for n, w in list(kept.items())[:4])
                          + "): use float8.modules: all, fewer keep_bf16 patterns, or precision: bf16")
    f8 = _torchao_float8()
    all_gather = fsdp and fc.recipe == "tensorwise" and fc.fsdp_float8_all_gather != "off"
    config = f8.Float8LinearConfig.from_recipe_name(fc.recipe)
    if all_gather:
        config = dataclasses.replace(config, enable_fsdp_float8_all_gather=True)
    # Float8Linear.from_float builds a new module: carry over what init_weights reads (residual scaling)
    residual = {name for name, mod in chosen.items() if getattr(mod, "_is_residual", False)}
    f8.convert_to_float8_training(model, module_filter_fn=lambda mod, fqn: fqn in chosen, config=config)
    modules = dict(model.named_modules())
    for name in residual:
        modules[name]._is_residual = True
    state = Float8State(recipe=fc.recipe, converted=tuple(chosen), kept=tuple(f"{n}: {w}" for n, w in kept.items()),
                        fsdp_float8_all_gather=all_gather, precompute_scale=all_gather and fc.precompute_scale)
    model.float8 = state
    return state


def after_optimizer_step(model: nn.Module) -> None:
    """With the float8 all-gather: every float8 weight's scale in one fused amax (torchtitan calls this
    after each optimizer step), so FSDP's pre-all-gather hook does not reduce each weight on its own."""
    state = getattr(model, "float8", None)
    if state is not None and state.precompute_scale:
        _torchao_float8().precompute_float8_dynamic_scale_for_fsdp(model)
