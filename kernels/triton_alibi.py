"""Causal flash attention with MPT's ALiBi bias, written in Triton (forward and backward).

Why our own kernel: cuDNN's native ALiBi (``kernels/cudnn_alibi.py``, what ``auto`` uses on CUDA, ~25%
faster forward+backward on an H200) cannot mask packed documents and only has the ALiBi paper's slopes;
this kernel covers ``seq_id`` and any slopes. FlashAttention-2 (built-in ALiBi) has no wheel for the
torch/CUDA pair we train on, and FlexAttention with an ALiBi score_mod is slower on its Triton backend
(benchmarks/RESULTS.md, kernels section, H200).
ALiBi is cheap to fuse: for query i and key j MPT adds
``slope_h * (j - (S-1))`` to the scaled score; softmax cancels the per-row constant, so we add
``slope_h * (j - i)`` instead, which stays small near the diagonal (where the weight is) and keeps
fp32 rounding of the bias far below bf16 noise even at 8k tokens.

Work is done in log2 units (scores pre-multiplied by log2(e)) so every exponential is an exp2.
The bias costs one vector add per tile: with block-local offsets ``j - i = (n0 - m0) + (n - m)``
the column part ``slope*(n0 - m0 + n)`` is a BLOCK_N vector added to the scores and the row part
``slope*m`` is folded into the running max, so no (BLOCK_M, BLOCK_N) bias tile is ever built.

The backward is two kernels (dK/dV over key blocks, dQ over query blocks), as in FlashAttention-2's
Triton version, so neither needs atomics; causal blocks above the diagonal are skipped in all three
kernels and only the blocks that straddle the diagonal pay for a mask. ``set_backward("one_pass")``
instead has the dK/dV kernel add dS K into an fp32 dQ buffer with atomics (no recomputed QK^T/dP; 5
matmuls per tile pair instead of 7). Measured on an H200 it is not faster at D=128 (-7% at 2k, -1% at
8k forward+backward), so the deterministic split backward stays the default.

Head dims 64, 80, 96, 112 (MPT-30B) and 128. Triton tiles need power-of-2 sizes, so 80/96/112 run in a
128-wide tile with the padding masked off on every load and store (``D`` real, ``DP`` padded); the
mask-free fast path (``EVEN``) is kept for 64 and 128 when S is a tile multiple.

Optional ``seq_id`` (B, S) keeps packed documents apart: query i sees key j only if
``seq_id[b, i] == seq_id[b, j]`` (on top of causality).

Layout: q, k, v are (B, H, S, D) with any strides (views of a fused QKV projection work without a
copy); the output is returned as a (B, H, S, D) view of (B, S, H, D) memory so that the usual
``transpose(1, 2).reshape(B, S, H * D)`` that follows is free.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Tuple  # noqa: UP035 - torch.library's schema inference reads typing forms

import torch
import triton
import triton.language as tl

from kernels.attention import BACKENDS
from kernels.layout import bshd_buffer, check_qkv, grad_buffer

LOG2E = 1.4426950408889634
SPEC = BACKENDS["triton"]  # what this kernel supports (head dims, dtypes): stated there
SUPPORTED_HEAD_DIMS = SPEC.head_dims


def _configs(table):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) rows -> autotune configs."""
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in table]


def _fwd_configs():
    return _configs([
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 128, 8, 2),
        (128, 128, 8, 3),
        (64, 64, 4, 4),
    ])


def _bwd_kv_configs():
    # BLOCK_N: keys owned by a program; BLOCK_M: query rows streamed per step.
    return _configs([
        (64, 128, 8, 2),
        (64, 128, 8, 3),
        (64, 128, 4, 3),
        (32, 128, 4, 3),
        (32, 64, 4, 4),
        (64, 64, 4, 3),
    ])


def _bwd_q_configs():
    return _configs([
        (128, 64, 8, 2),
        (128, 64, 8, 3),
        (128, 64, 4, 3),
        (128, 32, 4, 3),
        (128, 128, 8, 2),
        (64, 64, 4, 3),
    ])


def _keep_small_for_short(configs, named_args, **kwargs):
    """Drop tiles larger than the sequence so tiny test shapes still compile quickly.

    ``MPT_TRITON_AUTOTUNE=first`` keeps only the first config that fits: each kernel variant then compiles
    once instead of once per config and nothing is benchmarked, which is what makes the cold GPU test suite
    short (the tests check numbers, which every config must get right; one slow test keeps the autotuner)."""
    s = named_args["S"]
    kept = [c for c in configs if max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) <= max(s, 64)]
    if os.environ.get("TRITON_INTERPRET") == "1":
        # the CPU interpreter cannot benchmark; one config keeps it usable for correctness checks
        return configs[-1:]
    kept = kept or configs[-1:]
    return kept[:1] if os.environ.get("MPT_TRITON_AUTOTUNE") == "first" else kept


def _even(meta):
    """No bounds masks at all: S is a multiple of both tiles and the head dim is not padded."""
    return meta["S"] % meta["BLOCK_M"] == 0 and meta["S"] % meta["BLOCK_N"] == 0 and meta["D"] == meta["DP"]


@triton.jit
def _ld(ptrs, mask, other, EVEN: tl.constexpr):
    """Load a tile; when S is a multiple of both tile sizes no bounds mask is needed."""
    if EVEN:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=mask, other=other)


@triton.jit
def _fwd_tile(acc, l_i, m_i, q, r, sq, k_base, v_base, sks, svs, start_m, start_n, S,
              slope2, qk_scale, offs_m, offs_d,
              MASK: tl.constexpr, HAS_SEQ: tl.constexpr, BLOCK_N: tl.constexpr, SeqK, EVEN: tl.constexpr,
              D: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    kt = _ld(k_base + offs_n[None, :] * sks + offs_d[:, None], (offs_n[None, :] < S) & (offs_d[:, None] < D), 0.0, EVEN)
    qk = tl.dot(q, kt)
    # log2-score minus the row term slope*m: u = qk*scale + slope*(n0 - m0 + n)
    c = slope2 * (start_n - start_m + tl.arange(0, BLOCK_N)).to(tl.float32)
    u = qk * qk_scale + c[None, :]
    if MASK:
        u = tl.where(offs_m[:, None] >= offs_n[None, :], u, float("-inf"))
    if HAS_SEQ:
        sk = tl.load(SeqK + offs_n, mask=offs_n < S, other=-2)
        u = tl.where(sq[:, None] == sk[None, :], u, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(u, 1) - r)
    if HAS_SEQ:
        # a row may see no key of its document in this block: keep exp2 away from -inf - -inf
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    p = tl.math.exp2(u - (m_use + r)[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    v = _ld(v_base + offs_n[:, None] * svs + offs_d[None, :], (offs_n[:, None] < S) & (offs_d[None, :] < D), 0.0, EVEN)
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_new


@triton.autotune(configs=_fwd_configs(), key=["S", "D", "HAS_SEQ"],
                 prune_configs_by={"early_config_prune": _keep_small_for_short})
@triton.heuristics({"EVEN": _even})
@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, Slopes, SeqId,
                sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sob, soh, sos, ssb,
                H, S, qk_scale,
                D: tl.constexpr, DP: tl.constexpr, HAS_SEQ: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN: tl.constexpr):
    # heaviest (last) query blocks first: better tail balance under causal masking
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    slope2 = tl.load(Slopes + h) * 1.4426950408889634
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, DP)
    q_base = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh
    k_base = K + b.to(tl.int64) * skb + h.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + h.to(tl.int64) * svh
    q = tl.load(q_base + offs_m[:, None] * sqs + offs_d[None, :], mask=(offs_m[:, None] < S) & (offs_d[None, :] < D),
                other=0.0)
    r = slope2 * tl.arange(0, BLOCK_M).to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DP], tl.float32)
    SeqK = SeqId + b.to(tl.int64) * ssb
    if HAS_SEQ:
        sq = tl.load(SeqK + offs_m, mask=offs_m < S, other=-1)
    else:
        sq = offs_m  # unused
    for start_n in range(0, start_m, BLOCK_N):
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, r, sq, k_base, v_base, sks, svs, start_m, start_n, S,
                                  slope2, qk_scale, offs_m, offs_d, False, HAS_SEQ, BLOCK_N, SeqK, EVEN, D)
    for start_n in range(start_m, start_m + BLOCK_M, BLOCK_N):
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, r, sq, k_base, v_base, sks, svs, start_m, start_n, S,
                                  slope2, qk_scale, offs_m, offs_d, True, HAS_SEQ, BLOCK_N, SeqK, EVEN, D)
    acc = acc / l_i[:, None]
    o_base = O + b.to(tl.int64) * sob + h.to(tl.int64) * soh
    tl.store(o_base + offs_m[:, None] * sos + offs_d[None, :], acc.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < S) & (offs_d[None, :] < D))
    tl.store(LSE + bh.to(tl.int64) * S + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < S)


@triton.jit
def _bwd_delta_kernel(O, DO, Delta, sob, soh, sos, sdb, sdh, sds, H, S,
                      D: tl.constexpr, DP: tl.constexpr, BLOCK: tl.constexpr):
    """Delta_i = rowsum(O_i * dO_i), the softmax-backward correction term."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, DP)
    o = tl.load(O + b.to(tl.int64) * sob + h.to(tl.int64) * soh + offs[:, None] * sos + offs_d[None, :],
                mask=(offs[:, None] < S) & (offs_d[None, :] < D), other=0.0).to(tl.float32)
    do = tl.load(DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh + offs[:, None] * sds + offs_d[None, :],
                 mask=(offs[:, None] < S) & (offs_d[None, :] < D), other=0.0).to(tl.float32)
    tl.store(Delta + bh.to(tl.int64) * S + offs, tl.sum(o * do, 1), mask=offs < S)


@triton.jit
def _bwd_kv_tile(dk, dv, k, v, bj, sk, q_base, do_base, lse_base, delta_base, sqs, sds,
                 start_n, start_m, S, slope2, qk_scale, offs_n, offs_d,
                 MASK: tl.constexpr, HAS_SEQ: tl.constexpr, BLOCK_M: tl.constexpr, SeqQ, EVEN: tl.constexpr,
                 D: tl.constexpr, dqa_base, ONE_PASS: tl.constexpr):
    offs_m = start_m + tl.arange(0, BLOCK_M)
    qt = _ld(q_base + offs_m[None, :] * sqs + offs_d[:, None], (offs_m[None, :] < S) & (offs_d[:, None] < D), 0.0, EVEN)
    lse = _ld(lse_base + offs_m, offs_m < S, float("inf"), EVEN)
    qkt = tl.dot(k, qt)  # (BLOCK_N, BLOCK_M)
    # t - lse = qk*scale + slope*(j - i) - lse; j - i = (n0 - i) + n, with bj = slope*n
    a = lse + slope2 * (offs_m - start_n).to(tl.float32)
    pt = tl.math.exp2(qkt * qk_scale + bj[:, None] - a[None, :])
    if MASK:
        pt = tl.where(offs_m[None, :] >= offs_n[:, None], pt, 0.0)
    if HAS_SEQ:
        sq = tl.load(SeqQ + offs_m, mask=offs_m < S, other=-1)
        pt = tl.where(sk[:, None] == sq[None, :], pt, 0.0)
    do = _ld(do_base + offs_m[:, None] * sds + offs_d[None, :], (offs_m[:, None] < S) & (offs_d[None, :] < D), 0.0, EVEN)
    dv = tl.dot(pt.to(do.dtype), do, dv)
    dpt = tl.dot(v, tl.trans(do))
    di = _ld(delta_base + offs_m, offs_m < S, 0.0, EVEN)
    dst = pt * (dpt - di[None, :])
    dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk)
    if ONE_PASS:
        # dQ_i += dS_ij K_j for this key block, straight into an fp32 accumulator: no second pass that
        # recomputes QK^T and dP per query block (5 matmuls per tile pair instead of 7)
        dq_part = tl.dot(tl.trans(dst.to(k.dtype)), k)
        dq_ptrs = dqa_base + offs_m[:, None] * D + offs_d[None, :]
        if EVEN:
            tl.atomic_add(dq_ptrs, dq_part, sem="relaxed")
        else:
            tl.atomic_add(dq_ptrs, dq_part, mask=(offs_m[:, None] < S) & (offs_d[None, :] < D), sem="relaxed")
    return dk, dv


@triton.autotune(configs=_bwd_kv_configs(), key=["S", "D", "HAS_SEQ", "ONE_PASS"],
                 prune_configs_by={"early_config_prune": _keep_small_for_short}, reset_to_zero=["DQA"])
@triton.heuristics({"EVEN": _even})
@triton.jit
def _bwd_kv_kernel(Q, K, V, DO, DK, DV, LSE, Delta, Slopes, SeqId, DQA,
                   sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sdb, sdh, sds,
                   sdkb, sdkh, sdks, sdvb, sdvh, sdvs, ssb,
                   H, S, qk_scale, sm_scale,
                   D: tl.constexpr, DP: tl.constexpr, HAS_SEQ: tl.constexpr, ONE_PASS: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN: tl.constexpr):
    # first key blocks see the most queries: run them first
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    slope2 = tl.load(Slopes + h) * 1.4426950408889634
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, DP)
    k = tl.load(K + b.to(tl.int64) * skb + h.to(tl.int64) * skh + offs_n[:, None] * sks + offs_d[None, :],
                mask=(offs_n[:, None] < S) & (offs_d[None, :] < D), other=0.0)
    v = tl.load(V + b.to(tl.int64) * svb + h.to(tl.int64) * svh + offs_n[:, None] * svs + offs_d[None, :],
                mask=(offs_n[:, None] < S) & (offs_d[None, :] < D), other=0.0)
    q_base = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh
    do_base = DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh
    lse_base = LSE + bh.to(tl.int64) * S
    delta_base = Delta + bh.to(tl.int64) * S
    dqa_base = DQA + bh.to(tl.int64) * S * D  # fp32 (B, H, S, D), used when ONE_PASS
    SeqQ = SeqId + b.to(tl.int64) * ssb
    if HAS_SEQ:
        sk = tl.load(SeqQ + offs_n, mask=offs_n < S, other=-2)
    else:
        sk = offs_n  # unused
    bj = slope2 * tl.arange(0, BLOCK_N).to(tl.float32)
    dk = tl.zeros([BLOCK_N, DP], tl.float32)
    dv = tl.zeros([BLOCK_N, DP], tl.float32)
    for start_m in range(start_n, start_n + BLOCK_N, BLOCK_M):
        dk, dv = _bwd_kv_tile(dk, dv, k, v, bj, sk, q_base, do_base, lse_base, delta_base, sqs, sds,
                              start_n, start_m, S, slope2, qk_scale, offs_n, offs_d,
                              True, HAS_SEQ, BLOCK_M, SeqQ, EVEN, D, dqa_base, ONE_PASS)
    for start_m in range(start_n + BLOCK_N, S, BLOCK_M):
        dk, dv = _bwd_kv_tile(dk, dv, k, v, bj, sk, q_base, do_base, lse_base, delta_base, sqs, sds,
                              start_n, start_m, S, slope2, qk_scale, offs_n, offs_d,
                              False, HAS_SEQ, BLOCK_M, SeqQ, EVEN, D, dqa_base, ONE_PASS)
    dk = dk * sm_scale
    tl.store(DK + b.to(tl.int64) * sdkb + h.to(tl.int64) * sdkh + offs_n[:, None] * sdks + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=(offs_n[:, None] < S) & (offs_d[None, :] < D))
    tl.store(DV + b.to(tl.int64) * sdvb + h.to(tl.int64) * sdvh + offs_n[:, None] * sdvs + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=(offs_n[:, None] < S) & (offs_d[None, :] < D))


@triton.jit
def _bwd_q_tile(dq, q, do, a, di, sq, k_base, v_base, sks, svs, start_m, start_n, S,
                slope2, qk_scale, offs_m, offs_d,
                MASK: tl.constexpr, HAS_SEQ: tl.constexpr, BLOCK_N: tl.constexpr, SeqK, EVEN: tl.constexpr,
                D: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    kvm = (offs_n[None, :] < S) & (offs_d[:, None] < D)
    kt = _ld(k_base + offs_n[None, :] * sks + offs_d[:, None], kvm, 0.0, EVEN)
    vt = _ld(v_base + offs_n[None, :] * svs + offs_d[:, None], kvm, 0.0, EVEN)
    qk = tl.dot(q, kt)
    c = slope2 * (start_n - start_m + tl.arange(0, BLOCK_N)).to(tl.float32)
    p = tl.math.exp2(qk * qk_scale + c[None, :] - a[:, None])
    if MASK:
        p = tl.where(offs_m[:, None] >= offs_n[None, :], p, 0.0)
    if HAS_SEQ:
        sk = tl.load(SeqK + offs_n, mask=offs_n < S, other=-2)
        p = tl.where(sq[:, None] == sk[None, :], p, 0.0)
    dp = tl.dot(do, vt)
    ds = p * (dp - di[:, None])
    dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq)
    return dq


@triton.autotune(configs=_bwd_q_configs(), key=["S", "D", "HAS_SEQ"],
                 prune_configs_by={"early_config_prune": _keep_small_for_short})
@triton.heuristics({"EVEN": _even})
@triton.jit
def _bwd_q_kernel(Q, K, V, DO, DQ, LSE, Delta, Slopes, SeqId,
                  sqb, sqh, sqs, skb, skh, sks, svb, svh, svs, sdb, sdh, sds, sdqb, sdqh, sdqs, ssb,
                  H, S, qk_scale, sm_scale,
                  D: tl.constexpr, DP: tl.constexpr, HAS_SEQ: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN: tl.constexpr):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    slope2 = tl.load(Slopes + h) * 1.4426950408889634
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, DP)
    q = tl.load(Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh + offs_m[:, None] * sqs + offs_d[None, :],
                mask=(offs_m[:, None] < S) & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh + offs_m[:, None] * sds + offs_d[None, :],
                 mask=(offs_m[:, None] < S) & (offs_d[None, :] < D), other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * S + offs_m, mask=offs_m < S, other=float("inf"))
    di = tl.load(Delta + bh.to(tl.int64) * S + offs_m, mask=offs_m < S, other=0.0)
    a = lse + slope2 * tl.arange(0, BLOCK_M).to(tl.float32)
    k_base = K + b.to(tl.int64) * skb + h.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + h.to(tl.int64) * svh
    SeqK = SeqId + b.to(tl.int64) * ssb
    if HAS_SEQ:
        sq = tl.load(SeqK + offs_m, mask=offs_m < S, other=-1)
    else:
        sq = offs_m  # unused
    dq = tl.zeros([BLOCK_M, DP], tl.float32)
    for start_n in range(start_m, start_m + BLOCK_M, BLOCK_N):
        dq = _bwd_q_tile(dq, q, do, a, di, sq, k_base, v_base, sks, svs, start_m, start_n, S,
                         slope2, qk_scale, offs_m, offs_d, True, HAS_SEQ, BLOCK_N, SeqK, EVEN, D)
    for start_n in range(0, start_m, BLOCK_N):
        dq = _bwd_q_tile(dq, q, do, a, di, sq, k_base, v_base, sks, svs, start_m, start_n, S,
                         slope2, qk_scale, offs_m, offs_d, False, HAS_SEQ, BLOCK_N, SeqK, EVEN, D)
    dq = dq * sm_scale
    tl.store(DQ + b.to(tl.int64) * sdqb + h.to(tl.int64) * sdqh + offs_m[:, None] * sdqs + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=(offs_m[:, None] < S) & (offs_d[None, :] < D))


# Backward schedule. split (default): dK/dV over key blocks, then dQ over query blocks (recomputes QK^T
# and dP; deterministic). one_pass: the dK/dV kernel also adds dS K into an fp32 dQ accumulator with
# atomics (FlashAttention-2's CUDA schedule; 5 matmuls per tile pair instead of 7, not bitwise
# deterministic). benchmarks/attention.py times both; set with set_backward().
BACKWARD = {"one_pass": os.environ.get("MPT_ALIBI_BWD", "split") == "one_pass"}


def set_backward(mode: str) -> None:
    if mode not in ("split", "one_pass"):
        raise ValueError(f"backward mode must be 'split' or 'one_pass', got {mode!r}")
    BACKWARD["one_pass"] = mode == "one_pass"


def _pad(d: int) -> int:
    """Head dims that are not a power of 2 (80, 96, 112) run in the next power-of-2 tile, masked."""
    return triton.next_power_of_2(d)


def _check(q, k, v, slopes, seq_id):
    check_qkv(q, k, v, SPEC.dtypes)
    why = SPEC.unsupported(head_dim=q.shape[-1])
    if why is not None:
        raise ValueError(f"triton_alibi_attention cannot run {why}")
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("triton_alibi_attention needs CUDA tensors; use backend='torch' on CPU")
    if slopes.shape != (q.shape[1],):
        raise ValueError(f"slopes must have shape ({q.shape[1]},), got {tuple(slopes.shape)}")
    if seq_id is not None and tuple(seq_id.shape) != (q.shape[0], q.shape[2]):
        raise ValueError(f"seq_id must have shape (B, S) = {(q.shape[0], q.shape[2])}, got {tuple(seq_id.shape)}")


# The kernels are wrapped as torch custom ops (opaque to torch.compile, with fake implementations
# for tracing) rather than called from an autograd.Function that Dynamo would have to trace into.
@torch.library.custom_op("mpt_kernels::alibi_attn_fwd", mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor,
            seq_id: Optional[torch.Tensor], sm_scale: float) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006, UP045
    B, H, S, D = q.shape
    has_seq = seq_id is not None
    seq = seq_id if has_seq else slopes  # dummy pointer when unused
    o_buf, o = bshd_buffer(q)
    lse = torch.empty((B * H, S), device=q.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(S, meta["BLOCK_M"]), B * H)
    _fwd_kernel[grid](
        q, k, v, o, lse, slopes, seq,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
        seq.stride(0) if has_seq else 0,
        H, S, sm_scale * LOG2E, D=D, DP=_pad(D), HAS_SEQ=has_seq,
    )
    return o_buf, lse


@_fwd_op.register_fake
def _fwd_fake(q, k, v, slopes, seq_id, sm_scale):
    B, H, S, D = q.shape
    return q.new_empty((B, S, H, D)), q.new_empty((B * H, S), dtype=torch.float32)


@torch.library.custom_op("mpt_kernels::alibi_attn_bwd", mutates_args=())
def _bwd_op(do_bshd: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o_bshd: torch.Tensor,
            lse: torch.Tensor, slopes: torch.Tensor, seq_id: Optional[torch.Tensor], sm_scale: float,  # noqa: UP045
            bhsd_grads: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: UP006
    B, H, S, D = q.shape
    has_seq = seq_id is not None
    seq = seq_id if has_seq else slopes
    do_bshd = do_bshd if do_bshd.stride(-1) == 1 else do_bshd.contiguous()
    do, o = do_bshd.transpose(1, 2), o_bshd.transpose(1, 2)
    delta = torch.empty_like(lse)
    _bwd_delta_kernel[(triton.cdiv(S, 128), B * H)](
        o, do, delta, o.stride(0), o.stride(1), o.stride(2), do.stride(0), do.stride(1), do.stride(2),
        H, S, D=D, DP=_pad(D), BLOCK=128,
    )
    (dq_buf, dq), (dk_buf, dk), (dv_buf, dv) = (grad_buffer(t, bhsd_grads) for t in (q, k, v))
    ss = seq.stride(0) if has_seq else 0
    qk_scale = sm_scale * LOG2E
    one_pass = BACKWARD["one_pass"]
    # fp32 dQ accumulator; a 1-element dummy when unused (autotuning zeroes it between trials)
    dqa = torch.zeros((B, H, S, D) if one_pass else (1,), device=q.device, dtype=torch.float32)
    _bwd_kv_kernel[lambda meta: (triton.cdiv(S, meta["BLOCK_N"]), B * H)](
        q, k, v, do, dk, dv, lse, delta, slopes, seq, dqa,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
        dk.stride(0), dk.stride(1), dk.stride(2), dv.stride(0), dv.stride(1), dv.stride(2), ss,
        H, S, qk_scale, sm_scale, D=D, DP=_pad(D), HAS_SEQ=has_seq, ONE_PASS=one_pass,
    )
    if one_pass:
        dq.copy_(dqa.mul_(sm_scale))
        return dq_buf, dk_buf, dv_buf
    _bwd_q_kernel[lambda meta: (triton.cdiv(S, meta["BLOCK_M"]), B * H)](
        q, k, v, do, dq, lse, delta, slopes, seq,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
        dq.stride(0), dq.stride(1), dq.stride(2), ss,
        H, S, qk_scale, sm_scale, D=D, DP=_pad(D), HAS_SEQ=has_seq,
    )
    return dq_buf, dk_buf, dv_buf


@_bwd_op.register_fake
def _bwd_fake(do_bshd, q, k, v, o_bshd, lse, slopes, seq_id, sm_scale, bhsd_grads):
    return tuple(grad_buffer(t, bhsd_grads)[0] for t in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, slopes, seq_id, sm_scale = inputs
    o_bshd, lse = output
    ctx.save_for_backward(q, k, v, o_bshd, lse, slopes, seq_id)
    ctx.sm_scale = sm_scale
    # a leaf (B, H, S, D) tensor wants its gradient in its own layout (else autograd copies it);
    # views of a fused QKV projection are served best by (B, S, H, D), the projection's layout
    ctx.bhsd_grads = q.is_contiguous()


def _backward(ctx, do_bshd, _dlse):
    q, k, v, o_bshd, lse, slopes, seq_id = ctx.saved_tensors
    dq, dk, dv = _bwd_op(do_bshd, q, k, v, o_bshd, lse, slopes, seq_id, ctx.sm_scale, ctx.bhsd_grads)
    if not ctx.bhsd_grads:
        dq, dk, dv = dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)
    return dq, dk, dv, None, None, None


torch.library.register_autograd("mpt_kernels::alibi_attn_fwd", _backward, setup_context=_setup_context)


def triton_alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, *,
                           seq_id: torch.Tensor | None = None,
                           softmax_scale: float | None = None) -> torch.Tensor:
    """Causal attention with MPT's ALiBi bias; q, k, v (B, H, S, D) bf16/fp16 on CUDA, slopes fp32 (H,).

    Returns (B, H, S, D) (a view of (B, S, H, D) memory). ``seq_id`` (B, S) integer labels restrict
    attention to keys of the same document. ``softmax_scale`` defaults to 1/sqrt(D); the bias is added
    after scaling, as MPT does.
    """
    _check(q, k, v, slopes, seq_id)
    sm_scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    slopes = slopes.to(device=q.device, dtype=torch.float32).contiguous()
    if seq_id is not None:
        seq_id = seq_id.to(device=q.device, dtype=torch.int32).contiguous()
    o_bshd, _ = _fwd_op(q, k, v, slopes, seq_id, sm_scale)
    return o_bshd.transpose(1, 2)
