"""Causal attention throughput on one GPU: our Triton ALiBi kernel vs FlexAttention+ALiBi vs the ceiling.

The ceiling is torch SDPA's flash backend, causal, *without* any bias (ALiBi can only cost time), run
in the same process on the same inputs. FLOPs are counted the FlashAttention way: 4*B*H*S^2*D for a
full forward, halved for causal, x3.5 for forward+backward, identical for every row so the ratios are
ratios of times. Times are medians of ``triton.testing.do_bench`` after warm-up (autotuning and
compilation happen in the warm-up).

    python benchmarks/attention.py                  # S 2048 and 8192, D 128, 16 heads, 16k tokens per step
    python benchmarks/attention.py --seqs 2048 --head-dims 64 128 --tokens 65536
"""

from __future__ import annotations

import argparse
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[128])
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=8 * 2048, help="B*S per step (B = tokens // S)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--skip-flex", action="store_true")
    ap.add_argument("--seq-id", action="store_true", help="also time our kernel with 4 packed documents per row")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/attention.py needs a CUDA GPU")

    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels.attention import alibi_slopes, flex_attention_alibi
    from kernels.triton_alibi import triton_alibi_attention

    dtype = getattr(torch, args.dtype)
    H = args.heads
    slopes = alibi_slopes(H, device="cuda")

    def sdpa_flash(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    impls = {
        "sdpa-flash (no bias, ceiling)": sdpa_flash,
        "triton-alibi (ours)": lambda q, k, v: triton_alibi_attention(q, k, v, slopes),
    }
    if not args.skip_flex:
        impls["flex + alibi score_mod"] = lambda q, k, v: flex_attention_alibi(q, k, v, slopes)

    rows = []
    for D in args.head_dims:
        for S in args.seqs:
            B = max(1, args.tokens // S)
            torch.manual_seed(0)
            q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
            do = torch.randn(B, H, S, D, device="cuda", dtype=dtype)
            local = dict(impls)
            if args.seq_id:
                cuts = torch.zeros(B, S, dtype=torch.int32, device="cuda")
                cuts[:, torch.arange(1, 4) * (S // 4)] = 1
                seq_id = torch.cumsum(cuts, 1)
                local["triton-alibi + seq_id (4 docs)"] = (
                    lambda q, k, v, s=seq_id: triton_alibi_attention(q, k, v, slopes, seq_id=s))
            ceiling = {}
            for name, fn in local.items():
                res = {}
                for mode in ("fwd", "fwd+bwd"):
                    try:
                        ms = _bench(fn, mode, q, k, v, do)
                        res[mode] = _flops(B, H, S, D, mode) / (ms * 1e-3) / 1e12
                    except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is reported, not hidden
                        print(f"# {name} {mode} S={S} D={D} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                        res[mode] = float("nan")
                if not ceiling:
                    ceiling = res
                rows.append((S, D, B, name, res["fwd"], res["fwd"] / ceiling["fwd"],
                             res["fwd+bwd"], res["fwd+bwd"] / ceiling["fwd+bwd"]))
            del q, k, v, do
            torch.cuda.empty_cache()

    print(f"\n## attention, {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}, H={H}, "
          f"causal, TFLOP/s (ratio = / sdpa-flash without bias, same run)\n")
    print("| S | D | B | implementation | fwd TFLOP/s | fwd ratio | fwd+bwd TFLOP/s | fwd+bwd ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for S, D, B, name, f, fr, fb, fbr in rows:
        print(f"| {S} | {D} | {B} | {name} | {f:.0f} | {fr:.2f} | {fb:.0f} | {fbr:.2f} |")


if __name__ == "__main__":
    main()
