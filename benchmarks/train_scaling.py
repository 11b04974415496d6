"""Multi-GPU training throughput, MFU and memory of the trainer under FSDP2, one table per launch.

    torchrun --nproc_per_node 8 benchmarks/train_scaling.py                      # 1b, 7b, 30b at 2048 and 8192
    torchrun --nproc_per_node 2 benchmarks/train_scaling.py --presets 1b 7b --seqs 2048 --json out.jsonl
    python benchmarks/train_scaling.py --presets 1b                               # one GPU, a 1-rank FSDP group

Every rank runs the trainer's own pieces: ``trainer.train.build_model`` (``fully_shard`` per block and the
root, bf16 params / fp32 gradient reduction, ``init_device: meta`` so only each rank's shards are
materialised), per-block ``torch.compile``, and ``train_step`` (bf16 autocast, AdamW, clipping, gradient
accumulation) on random tokens, so data loading is out of the picture (``trainer.train`` with a mixture's
streams is the path with data). Step time is the slowest rank's mean over the timed steps (wall clock between device syncs);
tok/s/GPU = mbs * accum * seq / step time; MFU is llm-foundry's formula over all GPUs with Composer's
989.5 TFLOP/s H100 bf16 peak (``trainer/metrics.py``); memory is the largest per-rank high-water mark of
allocated (and reserved) bytes. A shape that runs out of memory is retried with half the micro-batch on
every rank (the decision is agreed by an all-reduce so no rank is left in a collective).

Shapes (micro-batch x accumulation, activation checkpointing) are per (model, seq) for 141 GB H200s and
can be overridden with ``--shape 7b:2048:6x1`` / ``--shape 30b:8192:1x21:ac``. A model whose sharded
fp32 weights + gradients + AdamW moments (16 B per parameter / world size) leave no room for activations
is reported as skipped with the world size it needs, not attempted.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import load_config
from trainer.metrics import detect_peak_flops, mfu

# llm-foundry scripts/train/benchmarking/README.md, "H100 80GB BF16" table (FULL_SHARD; MFU %, tok/s/GPU,
# GPUs, micro-batch x accumulation, activation checkpointing). Their models have biases, learned
# positions and vocab 50368; our MFU counts our own parameters (ALiBi, no biases, vocab 50432).
PUBLISHED = {
    ("1b", 2048): [(41.82, 45455, 8, "14x1", False)],
    ("1b", 8192): [(37.73, 29157, 8, "3x4", False)],
    ("7b", 2048): [(46.44, 10643, 8, "6x1", False)],
    ("7b", 8192): [(37.14, 6935, 8, "8x2", True)],
    ("30b", 2048): [(38.11, 2002, 8, "3x21", True), (43.92, 2308, 32, "14x3", True)],
    ("30b", 8192): [(29.92, 1384, 8, "1x21", True)],
}
# (micro-batch, accumulation, activation checkpointing) per GPU on H200 141 GB, for 2+ GPUs; one GPU
# holds whole optimizer state, hence the smaller 7b micro-batch there.
SHAPES = {
    ("1b", 2048): (8, 2, False), ("1b", 8192): (2, 2, False),
    ("7b", 2048): (6, 1, False), ("7b", 8192): (1, 2, False),
    ("30b", 2048): (8, 1, True), ("30b", 8192): (2, 1, True),
}
# measured on one H200 (benchmarks/RESULTS.md "Multi-GPU"): 7b 2048 4x1 with checkpointing 40.9% MFU vs 1x2
# without 28.7%; 7b 8192 ran with it (46.0%). The 7b peak there (124 GiB) is AdamW's step, not activations.
SHAPES_ONE_GPU = {("7b", 2048): (4, 1, True), ("7b", 8192): (1, 2, True)}
STATE_BYTES_PER_PARAM = 16  # fp32 weight + fp32 gradient + AdamW exp_avg + exp_avg_sq
ACTIVATION_ROOM_GB = 24  # the least left for activations, buffers and the all-gathered blocks


def plan(presets, seqs, world: int, gpu_gib: float, overrides=(), extra=()) -> list[dict]:
    """What a launch on ``world`` GPUs of ``gpu_gib`` each runs: per (model, seq) the shape, the sharded
    fp32 state per GPU, and ``skip`` (with the world size it would need) when that state leaves less than
    ACTIVATION_ROOM_GB."""
    shapes = dict(SHAPES)
    if world == 1:
        shapes.update(SHAPES_ONE_GPU)
    shapes.update(parse_shape(s) for s in overrides)
    out = []
    for seq in seqs:
        for preset in presets:
            mbs, accum, ac = shapes.get((preset, seq), (1, 1, True))
            n_params = load_config(None, _model_overrides(preset, extra)).model.num_params()
            per_gpu = lambda w: STATE_BYTES_PER_PARAM * n_params / w / 2**30
            row = {"preset": preset, "seq": seq, "gpus": world, "mbs": mbs, "accum": accum, "ac": ac,
                   "params": n_params, "state_gib_per_gpu": per_gpu(world), "skip": None}
            if per_gpu(world) > gpu_gib - ACTIVATION_ROOM_GB:
                need = next((w for w in (2, 4, 8, 16, 32, 64, 128) if per_gpu(w) <= gpu_gib - ACTIVATION_ROOM_GB), None)
                row["skip"] = (f"{per_gpu(world):.0f} GiB of sharded fp32 state per GPU on {world} GPUs; "
                               f"needs >= {need} by this estimate")
            out.append(row)
    return out


def scaling_table(rows: list[dict]) -> list[str]:
    """Markdown rows per (model, seq) over GPU counts: tok/s/GPU, MFU, memory, and the scaling efficiency:
    tok/s/GPU over the fastest 1-GPU row of the same model, seq and activation checkpointing (micro-batch
    and accumulation may differ: more GPUs leave room for larger micro-batches)."""
    out = ["| model | seq | GPUs | mbs x acc | act. ckpt | tok/s/GPU | MFU % | peak alloc GiB | vs 1 GPU (per GPU) |",
           "|---|---|---|---|---|---|---|---|---|"]
    rows = sorted(rows, key=lambda r: (r["seq"], r["params"], r["gpus"]))
    for r in rows:
        ones = [b for b in rows if (b["preset"], b["seq"], b["ac"], b["gpus"]) == (r["preset"], r["seq"], r["ac"], 1)]
        base = max(ones, key=lambda b: b["tok_s_gpu"], default=None)
        eff = f"{r['tok_s_gpu'] / base['tok_s_gpu']:.2f}" if base and r["gpus"] > 1 else "-"
        out.append(f"| {r['preset']} | {r['seq']} | {r['gpus']} | {r['mbs']}x{r['accum']} | {'yes' if r['ac'] else 'no'} | "
                   f"{r['tok_s_gpu']:,.0f} | {100 * r['mfu']:.1f} | {r['peak_alloc_gb']:.1f} | {eff} |")
    return out


def parse_shape(text: str):
    preset, seq, mb, *flags = text.split(":")
    mbs, accum = (int(x) for x in mb.lower().split("x"))
    return (preset, int(seq)), (mbs, accum, "ac" in flags)


class RandomBatches:
    def __init__(self, mbs, seq, vocab, seed, device, n=4):
        g = torch.Generator(device=device).manual_seed(seed)
        self.pool = [torch.randint(0, vocab, (mbs, seq), device=device, generator=g) for _ in range(n)]
        self.i = 0

    def __next__(self):
        self.i += 1
        return self.pool[self.i % len(self.pool)]


DEVICE = "cuda"


def _allreduce(value: float, op) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=DEVICE)
    dist.all_reduce(t, op=op)
    return float(t)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _model_overrides(preset: str, extra: list[str]) -> list[str]:
    """``custom`` takes the model's sizes from ``--set`` alone (presets override d_model/n_heads/n_layers)."""
    return ([] if preset == "custom" else [f"model.preset={preset}"]) + list(extra)


def bench_one(preset, seq, mbs, accum, ac, attn, compile_, steps, warmup, rank, extra=()):
    from trainer.optim import build_optimizer, build_scheduler
    from trainer.train import build_model, setup_distributed, train_step

    cuda = DEVICE == "cuda"
    cfg = load_config(None, [*_model_overrides(preset, extra), f"model.max_seq_len={seq}", f"seq_len={seq}",
                             f"model.attn_impl={attn}", f"model.activation_checkpointing={str(ac).lower()}",
                             f"micro_batch_size={mbs}", f"global_batch_size={mbs * accum * dist.get_world_size()}",
                             "precision=bf16", f"compile={str(compile_).lower()}", f"device={DEVICE}", "fsdp=on",
                             "init_device=meta", "optimizer.warmup_steps=1", "max_steps=1000", "progress_bar=false"])
    d = setup_distributed(cfg)  # the group exists already: this only reads rank, world and the device
    t0 = time.perf_counter()
    model = build_model(cfg, d)
    opt = build_optimizer(model.parameters(), cfg.optimizer)
    sched = build_scheduler(opt, cfg.optimizer, cfg.max_steps)
    batches = RandomBatches(mbs, seq, cfg.model.vocab_size, seed=rank, device=d.device)
    for _ in range(warmup):
        loss, _ = train_step(model, opt, sched, batches, cfg, accum, d.device)
    _sync()
    warm_s = time.perf_counter() - t0
    dist.barrier()
    _sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, grad_norm = train_step(model, opt, sched, batches, cfg, accum, d.device)
    _sync()
    world = d.world
    step_s = _allreduce((time.perf_counter() - t0) / steps, dist.ReduceOp.MAX)
    seqs_per_s = mbs * accum * world / step_s
    n_params = cfg.model.num_params()
    row = {"preset": preset, "seq": seq, "gpus": world, "mbs": mbs, "accum": accum, "ac": ac, "attn": attn,
           "compile": compile_, "params": n_params, "step_s": step_s, "tok_s_gpu": seqs_per_s * seq / world,
           "tok_s": seqs_per_s * seq, "warmup_s": _allreduce(warm_s, dist.ReduceOp.MAX),
           "loss": _allreduce(float(loss), dist.ReduceOp.SUM) / world, "grad_norm": float(grad_norm),
           "mfu": mfu(n_params, cfg.model.n_layers, cfg.model.d_model, seq, seqs_per_s, world, 989.5e12),
           "peak_alloc_gb": _allreduce(torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0, dist.ReduceOp.MAX),
           "peak_reserved_gb": _allreduce(torch.cuda.max_memory_reserved() / 2**30 if cuda else 0.0, dist.ReduceOp.MAX)}
    del model, opt, sched, batches
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["1b", "7b", "30b"])
    ap.add_argument("--seqs", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--shape", action="append", default=[], help="PRESET:SEQ:MBSxACCUM[:ac], repeatable")
    ap.add_argument("--attn", default="auto")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", help="rank 0 appends each row as JSON to this file")
    ap.add_argument("--label", default="", help="free text carried into the JSON rows (e.g. the machine)")
    ap.add_argument("--timeout-min", type=float, default=10, help="collective timeout (a stuck rank ends the run)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra trainer config overrides, e.g. model.norm_impl=torch; with --presets custom, the sizes")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: gloo and fp32 timing, only to smoke-test this script (tests/test_trainer_multigpu.py)")
    ap.add_argument("--plan", type=int, metavar="WORLD",
                    help="print what a launch on WORLD GPUs of --gpu-gib would run or skip, and exit (no GPU needed)")
    ap.add_argument("--gpu-gib", type=float, default=140.0, help="GPU memory for --plan (H200: 140)")
    ap.add_argument("--report", metavar="JSONL", help="print the scaling table of rows from earlier --json runs, and exit")
    args = ap.parse_args(argv)
    if args.report:
        print("\n".join(scaling_table([json.loads(x) for x in Path(args.report).read_text().splitlines() if x.strip()])))
        return
    if args.plan:
        for r in plan(args.presets, args.seqs, args.plan, args.gpu_gib, args.shape, args.set):
            print(f"{r['preset']}/{r['seq']} on {r['gpus']}: {r['mbs']}x{r['accum']}{' ac' if r['ac'] else ''}, "
                  f"{r['state_gib_per_gpu']:.1f} GiB state per GPU" + (f" -> SKIP: {r['skip']}" if r["skip"] else ""))
        return
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/train_scaling.py needs CUDA GPUs (or --device cpu for a smoke test)")
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29517"}.items():
        os.environ.setdefault(k, v)  # plain `python`: a 1-rank group, the same FSDP code path
    local = int(os.environ["LOCAL_RANK"])
    timeout = datetime.timedelta(minutes=args.timeout_min)
    if DEVICE == "cuda":
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local), timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    torch.backends.cuda.matmul.allow_tf32 = True
    if DEVICE == "cuda":
        gpu_gb = torch.cuda.get_device_properties(local).total_memory / 2**30
        say(f"# {world} x {torch.cuda.get_device_name()} ({gpu_gb:.0f} GiB), torch {torch.__version__}, "
            f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}, NCCL_NVLS_ENABLE={os.environ.get('NCCL_NVLS_ENABLE')}; "
            f"MFU peak {detect_peak_flops() or 989.5e12:.4g} FLOP/s per GPU")
    else:
        gpu_gb = float("inf")
        say(f"# {world} CPU ranks (gloo), torch {torch.__version__}: a smoke test, MFU against the H100 peak is meaningless")
    rows, skipped = [], []
    for p in plan(args.presets, args.seqs, world, gpu_gb, args.shape, args.set):
        preset, seq, mbs, accum, ac = p["preset"], p["seq"], p["mbs"], p["accum"], p["ac"]
        if p["skip"]:
            skipped.append(f"{preset}/{seq}: {p['skip']}")
            say(f"# SKIP {skipped[-1]}")
            continue
        row = None
        while mbs >= 1:
            failed, err = 0.0, ""
            try:
                row = bench_one(preset, seq, mbs, accum, ac, args.attn, not args.no_compile,
                                args.steps, args.warmup, rank, args.set)
            except torch.OutOfMemoryError as e:
                failed, err = 1.0, f"OOM: {str(e).splitlines()[0][:200]}"
            except Exception as e:  # noqa: BLE001 - report and go on: one failing shape must not cost the table
                failed, err = 2.0, f"{type(e).__name__}: {str(e)[:1500]}"
            finally:
                gc.collect()
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                torch._dynamo.reset()
            worst = _allreduce(failed, dist.ReduceOp.MAX)  # every rank takes the same branch
            if worst == 0:
                break
            row = None
            if err:
                print(f"# rank {rank} {preset}/{seq} mbs {mbs}: {err}", flush=True)
            if worst == 2:
                break
            mbs //= 2
        if row is None:
            skipped.append(f"{preset}/{seq}: failed (see above)")
            continue
        row["label"] = args.label
        rows.append(row)
        say("# " + json.dumps(row))
        if args.json and rank == 0:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    hdr = ("model", "seq", "GPUs", "mbs x acc", "act. ckpt", "step s", "tok/s/GPU", "MFU %", "peak alloc GiB",
           "reserved GiB", "compile+warm-up s", "llm-foundry 8/32xH100 MFU % (tok/s/GPU; GPUs, mbs x acc)")
    say("| " + " | ".join(hdr) + " |")
    say("|" + "---|" * len(hdr))
    for r in rows:
        pub = "; ".join(f"{m:.2f} ({t:,}; {g}, {s}{', ac' if a else ''})"
                        for m, t, g, s, a in PUBLISHED.get((r["preset"], r["seq"]), [])) or "-"
        say(f"| {r['preset']} | {r['seq']} | {r['gpus']} | {r['mbs']}x{r['accum']} | {'yes' if r['ac'] else 'no'} | "
            f"{r['step_s']:.3f} | {r['tok_s_gpu']:,.0f} | {100 * r['mfu']:.1f} | {r['peak_alloc_gb']:.1f} | "
            f"{r['peak_reserved_gb']:.1f} | {r['warmup_s']:.0f} | {pub} |")
    for s in skipped:
        say(f"# not run: {s}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
