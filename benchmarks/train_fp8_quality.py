"""Does ``precision: fp8`` train like bf16? The same model, seed and batches in bf16 and each float8 recipe.

Two steps, because the GPU machine has no network and no mosaicml-streaming:

    # here (CPU): the trainer's own loader (trainer.data, as a run with data.shuffle_seed 17 reads it)
    # writes the first STEPS x BATCH training samples and EVAL held-out samples of a mixture, in order
    python benchmarks/train_fp8_quality.py prepare --streams out/mixtures/mpt30b_2k/streams.yaml \\
        --steps 300 --batch 8 --eval 64 --out .bench/fp8_quality/tokens.npy
    # on the GPU: trainer.train.build_model + train_step on those batches, once per precision
    python benchmarks/train_fp8_quality.py run --tokens .bench/fp8_quality/tokens.npy --preset 350m \\
        --precisions bf16 tensorwise rowwise --out runs/fp8_quality

``run`` prints one table (final loss = mean of the last 20 steps, its difference from bf16, eval loss on
the held-out samples, tok/s) and writes the per-step losses (JSON) and one PNG: the loss curves and
(fp8 - bf16) / bf16 of their 20-step running means. Every precision starts from bit-identical weights
(checked: the table's init checksum column) and sees the same batches in the same order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WINDOW = 20  # steps averaged for "final loss" and the running means


def prepare(args) -> None:
    from trainer.data import TrainBatches, build_dataset

    ds = build_dataset(args.streams, seq_len=args.seq, micro_batch_size=args.batch, shuffle=True, shuffle_seed=17)
    batches = TrainBatches(ds, args.batch, args.seq, 1, 0)
    rows = []
    n_batches = args.steps + -(-args.eval // args.batch)
    for _ in range(n_batches):
        rows.append(next(batches).numpy().astype(np.uint16))
    arr = np.concatenate(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, arr)
    meta = {"streams": str(args.streams), "steps": args.steps, "batch": args.batch, "seq": args.seq,
            "eval": args.eval, "samples": int(arr.shape[0])}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"{arr.shape[0]} samples x {arr.shape[1]} tokens -> {out} ({out.stat().st_size / 2**20:.1f} MiB); "
          f"distinct token ids {len(np.unique(arr)):,}")


def precision_overrides(precision: str) -> list[str]:
    if precision == "bf16":
        return ["precision=bf16"]
    return ["precision=fp8", f"float8.recipe={precision}", "float8.modules=all"]


def model_overrides(args) -> list[str]:
    if args.d_model:  # a small model of the preset's kind (CPU emulation runs)
        return [f"model.d_model={args.d_model}", f"model.n_heads={args.n_heads}", f"model.n_layers={args.n_layers}"]
    return [f"model.preset={args.preset}"]


def shrink_vocab(tokens: np.ndarray, vocab: int) -> np.ndarray:
    """The ``vocab - 1`` most frequent ids become 0..vocab-2 (by frequency), every other id ``vocab - 1``: real
    text with a small output layer, for CPU runs where the 50432-wide LM head would cost most of the time."""
    ids, counts = np.unique(tokens, return_counts=True)
    top = ids[np.argsort(-counts, kind="stable")[:vocab - 1]]
    table = np.full(int(tokens.max()) + 1, vocab - 1, dtype=np.int64)
    table[top] = np.arange(len(top))
    return table[tokens]


def train_one(tokens: np.ndarray, meta: dict, precision: str, args) -> dict:
    import torch

    from trainer.config import load_config
    from trainer.optim import build_optimizer, build_scheduler
    from trainer.train import Dist, build_model, train_step

    cuda = args.device == "cuda"
    batch, seq = meta["batch"], args.seq or meta["seq"]
    tokens = tokens.reshape(-1, seq)  # --seq below the prepared length: consecutive pieces of each sample
    steps = args.steps or meta["steps"]
    kernels = ["model.attn_impl=auto", "model.norm_impl=auto", "model.loss_impl=auto"] if cuda else \
        ["model.attn_impl=torch", "model.norm_impl=torch", "model.loss_impl=torch"]
    vocab = [f"model.vocab_size={args.vocab}"] if args.vocab else []
    cfg = load_config(None, [*model_overrides(args), *vocab, f"model.max_seq_len={seq}", f"seq_len={seq}",
                             f"micro_batch_size={batch}", f"global_batch_size={batch}", *precision_overrides(precision),
                             f"compile={str(cuda).lower()}", "device=auto", "fsdp=off",
                             f"init_device={'meta' if cuda else 'full'}", *kernels, f"optimizer.lr={args.lr}",
                             f"optimizer.warmup_steps={args.warmup}", f"max_steps={steps}", f"seed={args.seed}"])
    d = Dist(device=torch.device(args.device))
    model = build_model(cfg, d)
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    opt = build_optimizer(model.parameters(), cfg.optimizer)
    sched = build_scheduler(opt, cfg.optimizer, cfg.max_steps)
    data = torch.from_numpy(shrink_vocab(tokens, args.vocab) if args.vocab else tokens.astype(np.int64)).to(d.device)
    it = iter(data[i * batch:(i + 1) * batch] for i in range(steps))
    losses, times = [], []
    for step in range(steps):
        t = time.perf_counter()
        loss, _ = train_step(model, opt, sched, it, cfg, 1, d.device)
        losses.append(float(loss))  # syncs
        times.append(time.perf_counter() - t)
        if step % 50 == 0:
            print(f"#   {precision} step {step + 1}: loss {losses[-1]:.4f} ({times[-1]:.2f} s)", flush=True)
    model.eval()
    held = data[steps * batch:][:args.eval_batches * batch]
    with torch.no_grad(), torch.autocast(d.device.type, dtype=torch.bfloat16):
        evals = [float(model(held[i:i + batch], labels=held[i:i + batch])) for i in range(0, len(held) - batch + 1, batch)]
    f8 = getattr(model, "float8", None)
    name = f"d{args.d_model}x{args.n_layers}L" if args.d_model else args.preset
    row = {"precision": precision, "model": name + (f", vocab {args.vocab}" if args.vocab else ""),
           "steps": steps, "batch": batch, "seq": seq, "lr": args.lr,
           "float8_linears": len(f8.converted) if f8 else 0, "init_checksum": checksum, "losses": losses,
           "final_loss": float(np.mean(losses[-WINDOW:])), "eval_loss": float(np.mean(evals)) if evals else None,
           "tok_s": batch * seq / float(np.median(times[10:])), "first_steps_s": float(sum(times[:2])),
           "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "device": torch.cuda.get_device_name() if cuda else "CPU (torchao float8 emulation)"}
    del model, opt, sched, data
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch._dynamo.reset()
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    smooth = lambda x: np.convolve(x, np.ones(WINDOW) / WINDOW, mode="valid")
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    base = next(r for r in rows if r["precision"] == "bf16")
    for r in rows:
        label = r["precision"] if r["precision"] == "bf16" else f"fp8 {r['precision']}"
        (line,) = a.plot(np.arange(WINDOW - 1, len(r["losses"])), smooth(r["losses"]), label=f"{label} (final {r['final_loss']:.3f})")
        a.plot(r["losses"], color=line.get_color(), alpha=0.15, lw=0.8)
        if r is not base:
            rel = (smooth(r["losses"]) - smooth(base["losses"])) / smooth(base["losses"])
            b.plot(np.arange(WINDOW - 1, len(r["losses"])), 100 * rel, label=label, color=line.get_color())
    a.set(xlabel="step", ylabel="train loss", title=f"MPT {base['model']}, {base['batch']}x{base['seq']} tokens/step, "
          f"same seed and batches\n{base['device']}")
    a.set_ylim(top=min(a.get_ylim()[1], max(smooth(base["losses"])) + 0.5))
    a.legend()
    b.axhline(0, color="k", lw=0.5)
    for y in (-1.5, 1.5):
        b.axhline(y, color="r", lw=0.5, ls="--")
    b.set(xlabel="step", ylabel="% vs bf16 (20-step running means)", title="(fp8 - bf16) / bf16")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def settings(args, meta) -> dict:
    return {"settings": [args.preset, args.d_model, args.n_layers, args.n_heads, args.vocab, args.seq or meta["seq"],
                         args.steps or meta["steps"], args.lr, args.warmup, args.seed, args.device]}


def run(args) -> None:
    import torch

    if args.device == "cpu":
        if not args.emulate_on_cpu:
            sys.exit("--device cpu needs --emulate-on-cpu: a CPU has no FP8 tensor cores; torchao emulates the float8 "
                     "casts and matmuls there (the numbers of a float8 run, not its speed)")
        from trainer import float8

        float8.check_device = lambda *a, **k: None  # the trainer rightly refuses a CPU for real runs
    elif not torch.cuda.is_available():
        sys.exit("train_fp8_quality.py run needs a CUDA GPU with FP8 tensor cores (or --device cpu --emulate-on-cpu)")
    tokens = np.load(args.tokens)
    meta = json.loads(Path(args.tokens).with_suffix(".json").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "fp8_quality.json"
    # rows already in OUT from the same settings are kept (a long CPU run can go one precision per process)
    same = lambda r: all(r.get(k) == v for k, v in settings(args, meta).items())
    rows = [r for r in json.loads(saved.read_text()) if same(r)] if saved.exists() else []
    for precision in args.precisions:
        if any(r["precision"] == precision for r in rows):
            continue
        rows.append({**train_one(tokens, meta, precision, args), **settings(args, meta)})
        r = rows[-1]
        print(f"# {precision}: final {r['final_loss']:.4f} eval {r['eval_loss']} {r['tok_s']:,.0f} tok/s", flush=True)
        saved.write_text(json.dumps(rows))
    rows.sort(key=lambda r: ["bf16", "tensorwise", "rowwise"].index(r["precision"]))
    if not any(r["precision"] == "bf16" for r in rows):
        return
    plot(rows, out / "fp8_quality.png")
    base = next(r for r in rows if r["precision"] == "bf16")
    print(f"# {base['device']}; MPT {base['model']}, {base['steps']} steps of {base['batch']}x{base['seq']} tokens, "
          f"lr {base['lr']}; final = mean of the last {WINDOW} steps")
    hdr = ("precision (fp8 Linears)", "init checksum", "loss step 1", "final loss", "vs bf16", "eval loss", "eval vs bf16",
           "tok/s", "mem GB")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        prec = "bf16" if r["precision"] == "bf16" else f"fp8 {r['precision']} ({r['float8_linears']})"
        rel = lambda k, r=r: f"{100 * (r[k] - base[k]) / base[k]:+.2f} %" if r[k] and base[k] else "-"
        print(f"| {prec} | {r['init_checksum']:.6e} | {r['losses'][0]:.4f} | {r['final_loss']:.4f} | {rel('final_loss')} | "
              f"{r['eval_loss']:.4f} | {rel('eval_loss')} | {r['tok_s']:,.0f} | {r['peak_mem_gb'] or 0:.1f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--streams", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--eval", type=int, default=64, help="held-out samples after the training ones")
    p.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tokens", required=True)
    r.add_argument("--preset", default="350m")
    r.add_argument("--d-model", type=int, help="instead of --preset: a small MPT (CPU emulation)")
    r.add_argument("--n-heads", type=int, default=4)
    r.add_argument("--n-layers", type=int, default=2)
    r.add_argument("--seq", type=int, help="train on pieces of this length (divides the prepared length)")
    r.add_argument("--eval-batches", type=int, default=8)
    r.add_argument("--vocab", type=int, help="keep the N-1 most frequent token ids, map the rest to one (CPU runs)")
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    r.add_argument("--emulate-on-cpu", action="store_true", help="lift the trainer's FP8-device check on a CPU")
    r.add_argument("--precisions", nargs="+", default=["bf16", "tensorwise", "rowwise"],
                   choices=["bf16", "tensorwise", "rowwise"])
    r.add_argument("--steps", type=int, help="default: all prepared")
    r.add_argument("--lr", type=float, default=3e-4)
    r.add_argument("--warmup", type=int, default=30)
    r.add_argument("--seed", type=int, default=17)
    r.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    main()
