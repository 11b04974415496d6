"""The torch reference attention is MPT's, and every backend computes the same function.

The reference is pinned three ways: its slopes equal transformers' MPT slopes and the published
examples, it equals an independent float64 formula with the *relative* bias ``-slope * (i - j)``
(MPT's key-only bias differs by a per-row constant), and with ``seq_id`` it equals attending within
each packed document alone. Backends are then compared with it, forward and gradients.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kernels.attention import (
    BACKENDS,
    alibi_slopes,
    attention,
    flex_attention_alibi,
    get_backend,
    resolve_backend,
    sdpa_attention,
    torch_attention,
)

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def _qkv(B, H, S, D, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, S, D, generator=g, dtype=dtype).requires_grad_(requires_grad) for _ in range(3)]


def _relative_reference(q, k, v, slopes):
    """ALiBi from the paper's definition, written independently: bias -slope*(i-j), -inf above the diagonal."""
    _, H, S, D = q.shape
    out = torch.empty_like(q)
    for h in range(H):
        for i in range(S):
            s = (q[:, h, i : i + 1] @ k[:, h, : i + 1].transpose(-1, -2)).squeeze(1) / math.sqrt(D)
            s = s - float(slopes[h]) * (i - torch.arange(i + 1, dtype=q.dtype))
            out[:, h, i] = torch.einsum("bj,bjd->bd", torch.softmax(s, dim=-1), v[:, h, : i + 1])
    return out


@pytest.mark.parametrize("H", [1, 4, 8, 12, 20, 56])
def test_slopes_match_transformers_mpt(H):
    from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

    hf = build_mpt_alibi_tensor(H, 8)  # (H, 1, 8): slope * (j - 7)
    hf_slopes = -hf[:, 0, 0] / 7
    torch.testing.assert_close(alibi_slopes(H), hf_slopes.float(), rtol=1e-6, atol=0)


def test_slopes_published_examples():
    exp = lambda xs: torch.tensor([2.0 ** -x for x in xs])
    torch.testing.assert_close(alibi_slopes(12), exp([1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5]))
    torch.testing.assert_close(alibi_slopes(20), exp([0.5 * i for i in range(1, 17)] + [0.25, 0.75, 1.25, 1.75]))
    s56 = alibi_slopes(56)
    torch.testing.assert_close(s56[:32], exp([0.25 * i for i in range(1, 33)]))
    torch.testing.assert_close(s56[32:], exp([0.125 + 0.25 * i for i in range(24)]))
    assert alibi_slopes(16).dtype == torch.float32


@pytest.mark.parametrize("H,S", [(4, 9), (12, 17)])
def test_reference_equals_relative_alibi_definition(H, S):
    q, k, v = _qkv(2, H, S, 8)
    slopes = alibi_slopes(H).double()
    torch.testing.assert_close(torch_attention(q, k, v, slopes), _relative_reference(q, k, v, slopes),
                               rtol=1e-10, atol=1e-10)


def test_reference_seq_id_equals_documents_alone():
    H, S = 4, 20
    q, k, v = _qkv(2, H, S, 8)
    slopes = alibi_slopes(H)
    bounds = [[0, 7, 8, 20], [0, 20]]  # row 0: three documents, row 1: one
    seq_id = torch.zeros(2, S, dtype=torch.long)
    for b, bb in enumerate(bounds):
        for n, (lo, hi) in enumerate(itertools.pairwise(bb)):
            seq_id[b, lo:hi] = n
    out = torch_attention(q, k, v, slopes, seq_id=seq_id)
    for b, bb in enumerate(bounds):
        for lo, hi in itertools.pairwise(bb):
            alone = torch_attention(q[b : b + 1, :, lo:hi], k[b : b + 1, :, lo:hi], v[b : b + 1, :, lo:hi], slopes)
            torch.testing.assert_close(out[b : b + 1, :, lo:hi], alone, rtol=1e-10, atol=1e-10)
    # and the mask matters: without it the later documents see earlier ones
    assert not torch.allclose(out, torch_attention(q, k, v, slopes))


def _doc_ids(B, S, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum((torch.rand(B, S, generator=g) < 0.15).long(), dim=1)


@pytest.mark.parametrize("use_seq_id", [False, True])
@pytest.mark.parametrize("H", [4, 12])
def test_sdpa_matches_reference_forward_and_grad(H, use_seq_id):
    B, S, D = 2, 33, 16
    seq_id = _doc_ids(B, S) if use_seq_id else None
    slopes = alibi_slopes(H)
    q, k, v = _qkv(B, H, S, D, requires_grad=True)
    ref = torch_attention(q, k, v, slopes, seq_id=seq_id)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    out = sdpa_attention(q, k, v, slopes, seq_id=seq_id)
    grads = torch.autograd.grad(out, (q, k, v), g)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("use_seq_id", [False, True])
@pytest.mark.parametrize("H,S", [(4, 64), (12, 130)])
def test_flex_matches_reference_forward_cpu(H, S, use_seq_id):
    """FlexAttention has no CPU backward; gradients are checked on CUDA (test_trainer_gpu.py)."""
    B, D = 2, 16
    seq_id = _doc_ids(B, S) if use_seq_id else None
    q, k, v = _qkv(B, H, S, D, dtype=torch.float32)
    slopes = alibi_slopes(H)
    ref = torch_attention(q.double(), k.double(), v.double(), slopes, seq_id=seq_id)
    out = flex_attention_alibi(q, k, v, slopes, seq_id=seq_id)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_flex_sign_and_scale_pitfalls_are_detected():
    """The spec's two classic mistakes (flipped sign; bias times softmax scale) must not pass."""
    from torch.nn.attention.flex_attention import flex_attention

    from kernels.attention import causal_block_mask

    H, S = 4, 64
    q, k, v = _qkv(1, H, S, 16, dtype=torch.float32)
    slopes = alibi_slopes(H)
    ref = torch_attention(q, k, v, slopes)
    flipped = flex_attention(q, k, v, score_mod=lambda s, b, h, i, j: s + slopes[h] * (i - j),
                             block_mask=causal_block_mask(S, "cpu"))
    assert (flipped - ref).abs().max() > 0.05
    assert (flex_attention_alibi(q, k, v, slopes) - ref).abs().max() < 1e-5


def test_backend_dispatch():
    q, k, v = _qkv(1, 4, 8, 8)
    slopes = alibi_slopes(4)
    assert resolve_backend("auto", "cpu") == "torch"
    torch.testing.assert_close(attention(q, k, v, slopes, backend="auto"), torch_attention(q, k, v, slopes))
    assert set(BACKENDS) >= {"torch", "sdpa", "flex"}
    with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
        get_backend("nope")
    if not BACKENDS["flash_attn"].available():
        with pytest.raises(ValueError, match="flash-attn"):
            get_backend("flash_attn")


def test_softmax_scale_is_not_applied_to_the_bias():
    H, S = 4, 12
    q, k, v = _qkv(1, H, S, 8)
    slopes = alibi_slopes(H).double()
    # scaling q by c with softmax_scale/c must give the same result only if the bias is added after scaling
    out1 = torch_attention(q, k, v, slopes, softmax_scale=0.5)
    out2 = torch_attention(q * 2, k, v, slopes, softmax_scale=0.25)
    torch.testing.assert_close(out1, out2)
    torch.testing.assert_close(sdpa_attention(q * 2, k, v, slopes, softmax_scale=0.25), out1)
