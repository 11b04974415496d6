"""Optimizers and LR schedule as llm-foundry / Composer define them.

Both optimizers use *decoupled* weight decay: ``p *= 1 - (lr / initial_lr) * wd``, i.e. the decay
follows the schedule but is not multiplied by the learning rate (Composer's DecoupledAdamW,
llm-foundry's DecoupledLionW). Weight decay applies to every parameter, as there.
"""

from __future__ import annotations

import math

import torch

from trainer.config import OptimConfig


class DecoupledLionW(torch.optim.Optimizer):
    """Lion (Chen et al. 2023) as llm-foundry's ``decoupled_lionw``, the MPT-7B optimizer. Per step:
    decay; ``p -= lr * sign(beta1*m + (1-beta1)*g)``; ``m = beta2*m + (1-beta2)*g``. Works on plain
    tensors and on FSDP2 DTensors (elementwise ops only)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        if lr <= 0:
            raise ValueError(f"Lion lr must be > 0, got {lr}")
        if not all(0.0 <= b <= 1.0 for b in betas):
            raise ValueError(f"Lion betas must be in [0, 1], got {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if wd != 0:
                    p.mul_(1 - (lr / group["initial_lr"]) * wd)
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = m.lerp(p.grad, 1 - beta1).sign_()
                p.add_(update, alpha=-lr)
                m.lerp_(p.grad, 1 - beta2)
        return loss


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "lion":
        return DecoupledLionW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    # torch AdamW decays by lr * wd; wd / initial_lr turns that into Composer's (lr / initial_lr) * wd.
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay / cfg.lr, foreach=True)


def cosine_lr_multiplier(step: int, warmup: int, max_steps: int, alpha_f: float) -> float:
    """Composer's ``cosine_with_warmup``: linear from 0 over ``warmup`` steps, then a half cosine from 1
    down to the floor ``alpha_f`` at ``max_steps`` (and flat after)."""
    if step < warmup:
        return step / warmup
    tau = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return alpha_f + (1 - alpha_f) * 0.5 * (1 + math.cos(math.pi * tau))


def build_scheduler(optimizer, cfg: OptimConfig, max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_lr_multiplier(step, cfg.warmup_steps, max_steps, cfg.alpha_f))
