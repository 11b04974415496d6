"""Training throughput and MFU of the trainer's own step on one GPU, next to llm-foundry's H100 numbers.

Runs ``trainer.train.train_step`` (bf16 autocast over fp32 master weights, AdamW, clipping, gradient
accumulation, per-block ``torch.compile``) on random tokens, so data loading is out of the picture.
MFU uses llm-foundry's formula and Composer's 989.5 TFLOP/s H100 bf16 peak (trainer/metrics.py). The
ceiling column is a large bf16 matmul measured in the same run: ``mfu_vs_ceiling`` is the share of
what this card actually delivers on dense matmuls.

One GPU, so no FSDP: llm-foundry's published rows are 8 GPUs with FSDP (their optimizer state is
sharded 8 ways; ours is whole, which costs memory, not FLOPs), and their model has biases + learned
positions and vocab 50368 (we count our own parameters, alibi/no-bias/50432).

    python benchmarks/train_mfu.py                         # 125m, 350m, 1b at 2048 and 8192, flex
    python benchmarks/train_mfu.py --presets 1b --seqs 2048 --attn flex triton --json out.jsonl
    python benchmarks/train_mfu.py --presets 30b --layers 2 --seqs 2048 --attn auto   # MPT-30B-shaped block (head dim 112)

``--mbs`` / ``--accum`` override the micro-batch and accumulation of the SHAPES table (the micro-batch is halved on
OOM down to 1); ``--layers`` keeps a
preset's width and heads but cuts its depth (a 30b-shaped 2-layer model fits one GPU with AdamW state).

Precision (issue 33): ``--precisions bf16 tensorwise rowwise`` runs each shape in bf16 and in ``precision:
fp8`` with that float8 recipe (torchao, ``trainer/float8.py``, ``float8.modules: auto``) in the same process,
so the speed-up column compares like with like on one card. MFU for every row is against the *bf16* peak
(989.5 TFLOP/s): it counts the model's FLOPs, not the float8 tensor cores' higher rate, so an fp8 row's MFU
is its speed-up times the bf16 row's. ``--cases 1b@2048 7b@2048 30b/2L@2048`` names (preset[/layers], seq)
pairs instead of the presets x seqs product; ``--init meta`` initialises on the GPU (same distribution,
seconds instead of minutes for 7b on the host).

    python benchmarks/train_mfu.py --norm-impl auto --loss-impl auto --attn auto --init meta \
        --cases 1b@2048 1b@8192 7b@2048 30b/2L@2048 --precisions bf16 tensorwise rowwise
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import load_config
from trainer.metrics import detect_peak_flops, mfu

# llm-foundry scripts/train/benchmarking/README.md, H100 80GB BF16, 8 GPUs (MFU %, tok/s/GPU).
PUBLISHED = {("760m", 2048): (34.90, 63147), ("760m", 8192): (34.84, 41825),
             ("1b", 2048): (41.82, 45455), ("1b", 8192): (37.73, 29157)}
# micro-batch x accumulation per (preset, seq) that fits one 80 GB card with unsharded AdamW state.
SHAPES = {("125m", 2048): (16, 2), ("350m", 2048): (12, 2), ("760m", 2048): (8, 2), ("1b", 2048): (8, 2),
          ("125m", 8192): (4, 2), ("350m", 8192): (3, 2), ("760m", 8192): (2, 2), ("1b", 8192): (2, 2),
          # one 141 GB H200: 7b's fp32 weights + grads + AdamW state are ~108 GB, so the micro-batch is small
          ("7b", 2048): (2, 2), ("30b", 2048): (8, 2)}


def matmul_ceiling(n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


class RandomBatches:
    def __init__(self, mbs, seq, vocab, n=4):
        g = torch.Generator(device="cuda").manual_seed(0)
        self.pool = [torch.randint(0, vocab, (mbs, seq), device="cuda", generator=g) for _ in range(n)]
        self.i = 0

    def __next__(self):
        self.i += 1
        return self.pool[self.i % len(self.pool)]


def precision_overrides(precision: str) -> list[str]:
    """``bf16``, or a float8 recipe name (``tensorwise``, ``rowwise``) for ``precision: fp8``."""
    if precision in ("bf16", "fp32"):
        return [f"precision={precision}"]
    return ["precision=fp8", f"float8.recipe={precision}"]


def bench_one(preset, seq, attn, mbs, accum, compile_, loss_impl, steps, warmup, norm_impl="torch", layers=None,
              ckpt=False, precision="bf16", init="full"):
    from trainer.config import PRESETS
    from trainer.optim import build_optimizer, build_scheduler
    from trainer.train import Dist, build_model, train_step

    if layers:  # the preset's width and heads, fewer layers
        d_model, n_heads, _ = PRESETS[preset]
        size = [f"model.d_model={d_model}", f"model.n_heads={n_heads}", f"model.n_layers={layers}"]
    else:
        size = [f"model.preset={preset}"]
    cfg = load_config(None, [*size, f"model.max_seq_len={seq}", f"seq_len={seq}",
                             f"model.attn_impl={attn}", f"model.loss_impl={loss_impl}", f"model.norm_impl={norm_impl}",
                             f"micro_batch_size={mbs}",
                             f"global_batch_size={mbs * accum}", *precision_overrides(precision), f"compile={compile_}",
                             f"init_device={init}",
                             "device=cuda", "fsdp=off", "optimizer.warmup_steps=1", "max_steps=1000",
                             f"model.activation_checkpointing={str(ckpt).lower()}"])
    d = Dist(device=torch.device("cuda"))
    model = build_model(cfg, d)
    opt = build_optimizer(model.parameters(), cfg.optimizer)
    sched = build_scheduler(opt, cfg.optimizer, cfg.max_steps)
    batches = RandomBatches(mbs, seq, cfg.model.vocab_size)
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss, _ = train_step(model, opt, sched, batches, cfg, accum, d.device)
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        loss, _ = train_step(model, opt, sched, batches, cfg, accum, d.device)
    end.record()
    torch.cuda.synchronize()
    step_s = start.elapsed_time(end) / 1000 / steps
    seqs_per_s = mbs * accum / step_s
    n_params = cfg.model.num_params()
    attn_used = model.transformer.blocks[0].attn.backend  # auto -> the concrete backend it resolved to
    f8 = getattr(model, "float8", None)
    row = {"preset": preset + (f"/{cfg.model.n_layers}L" if layers else ""), "seq": seq, "attn_resolved": attn_used,
           "precision": precision, "float8_linears": len(f8.converted) if f8 else 0,
           "ckpt": ckpt, "attn": attn, "compile": compile_, "loss_impl": loss_impl, "norm_impl": norm_impl, "mbs": mbs, "accum": accum,
               "params": n_params, "step_s": step_s, "tok_s_gpu": seqs_per_s * seq, "warmup_s": warm_s, "loss": float(loss),
               "mfu": mfu(n_params, cfg.model.n_layers, cfg.model.d_model, seq, seqs_per_s, 1, 989.5e12),
               "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30}
    del model, opt, sched, batches
    return row


def parse_case(text: str) -> tuple[str, int | None, int]:
    """``PRESET[/NL]@SEQ`` -> (preset, layers or None, seq), e.g. ``30b/2L@2048``."""
    try:
        model, seq = text.split("@")
        preset, _, layers = model.partition("/")
        return preset, int(layers.rstrip("L")) if layers else None, int(seq)
    except ValueError:
        raise SystemExit(f"--cases: {text!r} is not PRESET[/NL]@SEQ (e.g. 1b@2048, 30b/2L@2048)") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["125m", "350m", "1b"])
    ap.add_argument("--seqs", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--cases", nargs="+", help="PRESET[/NL]@SEQ pairs (instead of --presets x --seqs)")
    ap.add_argument("--attn", nargs="+", default=["flex"])
    ap.add_argument("--precisions", nargs="+", default=["bf16"], choices=["bf16", "tensorwise", "rowwise"],
                    help="bf16, and/or precision fp8 with this float8 recipe")
    ap.add_argument("--loss-impl", default="torch", choices=["torch", "chunked", "auto"])
    ap.add_argument("--norm-impl", default="torch", choices=["torch", "fused", "auto"])
    ap.add_argument("--layers", type=int, help="override the preset's n_layers (e.g. 2 for a 30b-shaped block)")
    ap.add_argument("--mbs", type=int, help="micro-batch to start from (default: the SHAPES table)")
    ap.add_argument("--accum", type=int, help="gradient accumulation steps (default: the SHAPES table)")
    ap.add_argument("--init", default="full", choices=["full", "meta"], help="init_device (meta: init on the GPU)")
    ap.add_argument("--ckpt", action="store_true", help="activation checkpointing")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", help="append each row as JSON to this file")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/train_mfu.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    ceiling = matmul_ceiling()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}; bf16 matmul ceiling "
          f"{ceiling / 1e12:.0f} TFLOP/s (peak used for MFU, every precision: {detect_peak_flops() or 989.5e12:.4g})",
          flush=True)
    cases = ([parse_case(c) for c in args.cases] if args.cases else
             [(p, args.layers, q) for q in args.seqs for p in args.presets])
    rows = []
    for preset, layers, seq in cases:
        for attn in args.attn:
            for precision in args.precisions:
                mbs, accum = SHAPES.get((preset, seq), (1, 2))
                mbs, accum = args.mbs or mbs, args.accum or accum
                while mbs >= 1:
                    try:
                        row = bench_one(preset, seq, attn, mbs, accum, not args.no_compile, args.loss_impl,
                                        args.steps, args.warmup, args.norm_impl, layers, args.ckpt, precision,
                                        args.init)
                        break
                    except torch.OutOfMemoryError:
                        print(f"# OOM at {preset}/{seq}/{precision}/mbs {mbs}; halving", flush=True)
                        row, mbs = None, mbs // 2
                    except Exception as e:  # noqa: BLE001 - report and go on: one broken backend must not cost the table
                        print(f"# FAILED {preset}/{seq}/{attn}/{precision}: {type(e).__name__}: {str(e)[:2000]}",
                              flush=True)
                        row = None
                        break
                    finally:
                        gc.collect()
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                        torch._dynamo.reset()
                if row is None:
                    continue
                row["mfu_vs_ceiling"] = row["mfu"] * 989.5e12 / ceiling
                base = next((r for r in rows if r["precision"] == "bf16" and
                             (r["preset"], r["seq"], r["attn"]) == (row["preset"], row["seq"], row["attn"])), None)
                row["speedup_vs_bf16"] = row["tok_s_gpu"] / base["tok_s_gpu"] if base else None
                rows.append(row)
                print("# " + json.dumps(row), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    hdr = ("model", "seq", "attn", "precision (fp8 Linears)", "mbs x acc", "step s", "tok/s/GPU", "vs bf16",
           "MFU % (bf16 peak)", "MFU/ceiling", "mem GB", "compile s", "llm-foundry MFU % (tok/s/GPU)")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        pub = PUBLISHED.get((r["preset"], r["seq"]))
        pub_s = f"{pub[0]:.2f} ({pub[1]:,})" if pub else "-"
        prec = r["precision"] if r["precision"] == "bf16" else f"fp8 {r['precision']} ({r['float8_linears']})"
        speed = f"{r['speedup_vs_bf16']:.3f}x" if r.get("speedup_vs_bf16") else "-"
        print(f"| {r['preset']} | {r['seq']} | {r['attn']}->{r['attn_resolved']} | {prec} | {r['mbs']}x{r['accum']} | "
              f"{r['step_s']:.3f} | {r['tok_s_gpu']:,.0f} | {speed} | {100 * r['mfu']:.1f} | {r['mfu_vs_ceiling']:.2f} | "
              f"{r['peak_mem_gb']:.1f} | {r['warmup_s']:.0f} | {pub_s} |")


if __name__ == "__main__":
    main()
