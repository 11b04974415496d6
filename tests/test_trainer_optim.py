"""Lion and AdamW with Composer's decoupled weight decay, and the cosine-with-warmup schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.config import OptimConfig
from trainer.optim import (
    DecoupledLionW,
    build_optimizer,
    build_scheduler,
    cosine_lr_multiplier,
)


def _lion_reference(p, grads, lrs, initial_lr, beta1, beta2, wd):
    """llm-foundry's DecoupledLionW written out in numpy float64."""
    p, m = p.astype(np.float64).copy(), np.zeros_like(p, dtype=np.float64)
    for g, lr in zip(grads, lrs):
        g = g.astype(np.float64)
        p *= 1 - (lr / initial_lr) * wd
        p -= lr * np.sign(beta1 * m + (1 - beta1) * g)
        m = beta2 * m + (1 - beta2) * g
    return p, m


def test_lion_matches_reference_computation():
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(5, 7)).astype(np.float32)
    grads = [rng.normal(size=(5, 7)).astype(np.float32) for _ in range(4)]
    cfg = OptimConfig(name="lion", lr=1e-2, betas=[0.9, 0.99], weight_decay=0.1, warmup_steps=2, alpha_f=0.1)
    param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = build_optimizer([param], cfg)
    assert isinstance(opt, DecoupledLionW)
    sched = build_scheduler(opt, cfg, max_steps=4)
    lrs = []
    for g in grads:
        lrs.append(opt.param_groups[0]["lr"])
        param.grad = torch.from_numpy(g)
        opt.step()
        sched.step()
    assert lrs[0] == 0 and lrs[1] == pytest.approx(5e-3) and lrs[2] == pytest.approx(1e-2)
    want_p, want_m = _lion_reference(p0, grads, lrs, 1e-2, 0.9, 0.99, 0.1)
    np.testing.assert_allclose(param.detach().numpy(), want_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(opt.state[param]["exp_avg"].numpy(), want_m, rtol=1e-6, atol=1e-7)


def test_lion_update_is_sign_sized():
    p = torch.nn.Parameter(torch.zeros(100))
    opt = DecoupledLionW([p], lr=0.5, betas=(0.9, 0.99))
    p.grad = torch.randn(100) * 1e-6  # tiny gradients still move every weight by exactly lr
    opt.step()
    torch.testing.assert_close(p.detach().abs(), torch.full((100,), 0.5))


def test_adamw_weight_decay_is_decoupled_from_lr():
    """Composer: p *= 1 - (lr / initial_lr) * wd, not torch's 1 - lr * wd."""
    cfg = OptimConfig(name="adamw", lr=1e-3, weight_decay=0.1, warmup_steps=0)
    p = torch.nn.Parameter(torch.ones(4))
    opt = build_optimizer([p], cfg)
    p.grad = torch.zeros(4)  # no Adam update, decay only
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((4,), 0.9))


def test_cosine_schedule_composer_values():
    f = lambda s: cosine_lr_multiplier(s, warmup=10, max_steps=110, alpha_f=0.1)
    assert f(0) == 0.0 and f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)

