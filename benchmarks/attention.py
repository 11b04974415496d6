"""Causal attention throughput on one GPU: our Triton ALiBi kernel and FlexAttention+ALiBi against the
fastest attention the card has, all in one run.

Ceilings, causal and *without* any bias (ALiBi can only cost time): torch SDPA's cuDNN backend and its
flash backend (FlashAttention-2 class). Each row's ratio is over the faster of the two, measured in the
same process on the same inputs. ALiBi rows: cuDNN's fused attention with its native ALiBi
(``kernels/cudnn_alibi.py``, what ``auto`` picks on CUDA; atomic and deterministic backward), our Triton
kernel (``kernels/triton_alibi.py``),
FlexAttention with an ALiBi score_mod on its Triton backend, and -- when ``flash_attn.cute``
(flash-attn-4) imports -- FlexAttention's FLASH backend (``kernel_options={"BACKEND": "FLASH"}``) with
the same score_mod. Every ALiBi row also reports its forward error against MPT's torch path in fp32 on
a slice of the same inputs (||out - ref|| / ||ref||; bf16 lands between 1e-3 and 1e-2), so a fast but
wrong row shows as such.

FLOPs are counted the FlashAttention way: 4*B*H*S^2*D for a full forward, halved for causal, x3.5 for
forward+backward, identical for every row, so the ratios are ratios of times. Times are medians of
``triton.testing.do_bench`` after warm-up (autotuning and compilation happen in the warm-up).

    python benchmarks/attention.py                  # S 2048 and 8192, D 128 and 112, 16 heads, 16k tokens per step
    python benchmarks/attention.py --seqs 2048 --head-dims 64 128 --tokens 65536
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _flops(B, H, S, D, mode):
    f = 4 * B * H * S * S * D * 0.5
    return f * (3.5 if mode == "fwd+bwd" else 1.0)


def _bench(fn, mode, q, k, v, do):
    from triton.testing import do_bench

    if mode == "fwd":
        def step():
            with torch.no_grad():
                fn(q, k, v)
    else:
        def step():
            q.grad = k.grad = v.grad = None
            fn(q, k, v).backward(do)
    return do_bench(step, warmup=100, rep=400, return_mode="median")


def _flash_cute_available() -> str | None:
    """None when flash-attn-4's CuTe kernels import, else why not."""
    try:
        import flash_attn.cute  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - report, do not hide
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[128, 112])
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=8 * 2048, help="B*S per step (B = tokens // S)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--skip-flex", action="store_true")
    ap.add_argument("--flash", choices=["auto", "on", "off"], default="auto",
                    help="FlexAttention FLASH backend (flash-attn-4) rows: when flash_attn.cute imports (auto)")
    ap.add_argument("--seq-id", action="store_true", help="also time our kernel with 4 packed documents per row")
    ap.add_argument("--json", help="write the rows to this file (one JSON object per row)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/attention.py needs a CUDA GPU")

    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import flex_attention

    from kernels.attention import (
        alibi_slopes,
        causal_block_mask,
        flex_attention_alibi,
        torch_attention,
    )
    from kernels.triton_alibi import set_backward, triton_alibi_attention

    dtype = getattr(torch, args.dtype)
    H = args.heads
    slopes = alibi_slopes(H, device="cuda")

    def sdpa_with(backend):
        def fn(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return fn

    def alibi_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    flex_flash = torch.compile(
        lambda q, k, v, mask: flex_attention(q, k, v, score_mod=alibi_mod, block_mask=mask,
                                             kernel_options={"BACKEND": "FLASH"}), dynamic=False)

    ceilings = {"sdpa-cudnn (no bias)": sdpa_with(SDPBackend.CUDNN_ATTENTION),
                "sdpa-flash (no bias)": sdpa_with(SDPBackend.FLASH_ATTENTION)}
    def ours(mode, seq_id=None):
        def fn(q, k, v):
            set_backward(mode)  # read when the backward runs
            return triton_alibi_attention(q, k, v, slopes, seq_id=seq_id)
        return fn

    alibi = {}
    from kernels import cudnn_alibi

    if cudnn_alibi.available():
        def cudnn_rows(deterministic):
            def fn(q, k, v):
                cudnn_alibi.DETERMINISTIC_BACKWARD = deterministic  # read when the backward graph is chosen
                return cudnn_alibi.cudnn_alibi_attention(q, k, v, slopes)
            return fn
        alibi["cudnn-alibi (auto), atomic dQ bwd"] = cudnn_rows(False)
        alibi["cudnn-alibi, deterministic bwd"] = cudnn_rows(True)
    else:
        print("# cudnn-alibi rows not run: nvidia-cudnn-frontend / cuDNN >= 9 not available", file=sys.stderr)
    alibi["triton-alibi (ours), split bwd"] = ours("split")
    alibi["triton-alibi (ours), one-pass bwd"] = ours("one_pass")
    if not args.skip_flex:
        alibi["flex + alibi, triton backend"] = lambda q, k, v: flex_attention_alibi(q, k, v, slopes)
    why_not = _flash_cute_available() if args.flash != "off" else "--flash off"
    if why_not is None or args.flash == "on":
        alibi["flex + alibi, FLASH backend (FA4)"] = (
            lambda q, k, v: flex_flash(q, k, v, causal_block_mask(q.shape[2], q.device)))
    else:
        print(f"# flex FLASH backend not run: flash_attn.cute does not import ({why_not})", file=sys.stderr)

    rows = []
    for D in args.head_dims:
        for S in args.seqs:
            B = max(1, args.tokens // S)
            torch.manual_seed(0)
            q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
            do = torch.randn(B, H, S, D, device="cuda", dtype=dtype)
            with torch.no_grad():  # fp32 reference on a slice (one batch row, 2 heads)
                qs, ks, vs = (t[:1, :2].float() for t in (q, k, v))
                ref = torch_attention(qs, ks, vs, slopes[:2])
            local = dict(alibi)
            if args.seq_id:
                cuts = torch.zeros(B, S, dtype=torch.int32, device="cuda")
                cuts[:, torch.arange(1, 4) * (S // 4)] = 1
                seq_id = torch.cumsum(cuts, 1)
                local["triton-alibi + seq_id (4 docs), split bwd"] = ours("split", seq_id)
            res = {}
            for name, fn in {**ceilings, **local}.items():
                r = {"err": float("nan")}
                for mode in ("fwd", "fwd+bwd"):
                    try:
                        ms = _bench(fn, mode, q, k, v, do)
                        r[mode] = _flops(B, H, S, D, mode) / (ms * 1e-3) / 1e12
                    except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is reported, not hidden
                        print(f"# {name} {mode} S={S} D={D} failed: {type(exc).__name__}: {str(exc)[:600]}",
                              file=sys.stderr)
                        r[mode] = float("nan")
                if name in alibi and not math.isnan(r["fwd"]):
                    with torch.no_grad():
                        out = fn(q, k, v)[:1, :2].float()
                    r["err"] = float((out - ref).norm() / ref.norm())
                res[name] = r
                print(f"# S={S} D={D} {name}: {r}", file=sys.stderr, flush=True)
            best = {m: max((res[c][m] for c in ceilings if not math.isnan(res[c][m])), default=float("nan"))
                    for m in ("fwd", "fwd+bwd")}
            for name, r in res.items():
                rows.append((S, D, B, name, r["fwd"], r["fwd"] / best["fwd"], r["fwd+bwd"],
                             r["fwd+bwd"] / best["fwd+bwd"], r["err"]))
            del q, k, v, do
            set_backward("split")
            cudnn_alibi.DETERMINISTIC_BACKWARD = None
            torch.cuda.empty_cache()

    if args.json:
        import json

        keys = ("S", "D", "B", "name", "fwd", "fwd_ratio", "fwdbwd", "fwdbwd_ratio", "err")
        with open(args.json, "w") as f:
            f.writelines(json.dumps(dict(zip(keys, r))) + "\n" for r in rows)
    print(f"\n## attention, {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}, H={H}, "
          f"causal, TFLOP/s (ratio = / the faster of sdpa-cudnn and sdpa-flash without bias, same run)\n")
    print("| S | D | B | implementation | fwd TFLOP/s | fwd ratio | fwd+bwd TFLOP/s | fwd+bwd ratio | fwd err vs fp32 ref |")
    print("|---|---|---|---|---|---|---|---|---|")
    for S, D, B, name, f, fr, fb, fbr, err in rows:
        e = "-" if math.isnan(err) else f"{err:.1e}"
        print(f"| {S} | {D} | {B} | {name} | {f:.0f} | {fr:.2f} | {fb:.0f} | {fbr:.2f} | {e} |")


if __name__ == "__main__":
    main()
