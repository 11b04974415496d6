"""Train MPT on a mixture's streams: one process per GPU, one node or many.

    torchrun --nproc_per_node 8 -m trainer.train --config trainer/configs/mpt-1b.yaml \
        data.streams=out/mixtures/mpt30b_2k/streams.yaml optimizer.lr=2e-4
    python -m trainer.train --config trainer/configs/tiny.yaml device=cpu    # no torchrun: one process

The loop is plain PyTorch: bf16 autocast over fp32 master weights (``precision: fp8`` adds torchao's
float8 block Linears, ``trainer/float8.py``), FSDP2 ``fully_shard`` per block (bf16 compute, fp32
gradient reduction), optional activation checkpointing and ``torch.compile`` per block, gradient
accumulation, global-norm clipping, Lion or AdamW with a cosine schedule, DCP checkpoints that resume
model, optimizer, schedule, data position and RNG exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import os
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from trainer import checkpoint as ckpt
from trainer import float8
from trainer.config import ConfigError, TrainConfig, load_config, to_dict
from trainer.data import TrainBatches, build_dataset, eval_batches, sequence_ids
from trainer.metrics import MetricsLog, detect_peak_flops, mfu
from trainer.model import MPTForCausalLM
from trainer.optim import build_optimizer, build_scheduler


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False
    env_set_here: tuple = ()


def setup_distributed(cfg: TrainConfig) -> Dist:
    """torchrun sets RANK/WORLD_SIZE; without them we run as a single process (no process group)
    unless ``fsdp: on``, which starts a one-rank group so the FSDP path can be exercised anywhere."""
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    use_pg = dist.is_initialized() or (launched and cfg.fsdp != "off") or cfg.fsdp == "on"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    d = Dist(device=device, local_rank=local_rank)
    if use_pg and not dist.is_initialized():
        defaults = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
        d.env_set_here = tuple(k for k in defaults if k not in os.environ)
        for k in d.env_set_here:
            os.environ[k] = defaults[k]
        # device_id binds NCCL to this rank's GPU up front (barriers and the first collective then
        # cannot pick another rank's device)
        dist.init_process_group("nccl" if want_cuda else "gloo", device_id=device if want_cuda else None)
        d.initialized_here = True
    if dist.is_initialized():
        d.rank, d.world = dist.get_rank(), dist.get_world_size()
    return d


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(cfg: TrainConfig, d: Dist) -> MPTForCausalLM:
    """``init_device: full``: the whole model is initialised on CPU under the run's seed (identical on
    every rank and for any world size), moved, then sharded. ``meta``: built without memory, sharded,
    and only each rank's shards are materialised and initialised (DTensor random ops), for models whose
    fp32 weights do not fit one device. In between, as torchtitan orders them: the float8 conversion
    (``precision: fp8``, :func:`trainer.float8.convert`), activation checkpointing (:func:`apply_ac`, with
    compile only), :func:`apply_compile`, :func:`apply_fsdp`. The attention backend is chosen once, here,
    for the run's device and compute dtype."""
    if cfg.precision == "fp8":  # before any work: a CPU or pre-Hopper device is a config error
        float8.check_device(d.device, cfg.float8.recipe)
    torch.manual_seed(cfg.seed)
    meta = cfg.init_device == "meta"
    build = functools.partial(MPTForCausalLM, cfg.model, attn_device=d.device, attn_dtype=cfg.compute_dtype)
    if meta:
        with torch.device("meta"):
            model = build()
    else:
        model = build().to(d.device)
    if cfg.precision == "fp8":
        float8.convert(model, cfg.float8, fsdp=wants_fsdp(cfg, d))
    if cfg.compile:
        if cfg.model.activation_checkpointing:
            apply_ac(model)
        apply_compile(model)
    if wants_fsdp(cfg, d):
        apply_fsdp(model, d, cfg.precision)
    if meta:
        model.to_empty(device=d.device)
        torch.manual_seed(cfg.seed)
        model.init_weights()
    return model


def apply_ac(model: MPTForCausalLM) -> None:
    """Activation checkpointing for compiled blocks: each block's forward is wrapped in a non-reentrant
    checkpoint *inside* what compile traces (checkpoint, then compile, as torchtitan orders them). The
    model's own checkpointing *around* a compiled FSDP2 block fails in backward ("Recomputed values ...
    have different metadata", pytorch/pytorch#144637; seen on an H200 with 7b at 8192), so the model gets a
    config copy with its own checkpointing off; the run's config (what checkpoints record) keeps it on.
    Without compile the model checkpoints its blocks itself (``activation_checkpointing`` in forward)."""
    model.cfg = copy.copy(model.cfg)
    model.cfg.activation_checkpointing = False
    for block in model.transformer.blocks:
        # an instance attribute: _call_impl (FSDP2 hooks outside) calls it
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def apply_compile(model: MPTForCausalLM) -> None:
    """``torch.compile`` per block (one graph reused by every layer) and for the loss head."""
    for block in model.transformer.blocks:
        block.compile()
    model.lm_loss = torch.compile(model.lm_loss)


def wants_fsdp(cfg: TrainConfig, d: Dist) -> bool:
    """``fsdp: auto`` shards from 2 ranks on: one rank gains no memory from FSDP2 and pays its copies and
    bf16 buffers (one H200, same day: 1b/2048 52.8% MFU sharded vs 55.1% unsharded; benchmarks/RESULTS.md);
    ``on`` forces it (inside a process group)."""
    return dist.is_initialized() and (cfg.fsdp == "on" or (cfg.fsdp == "auto" and d.world > 1))


def apply_fsdp(model: MPTForCausalLM, d: Dist, precision: str) -> None:
    """FSDP2 ``fully_shard`` per block, then the root (embedding, final norm); bf16 compute with fp32
    gradient reduction under ``precision: bf16`` and ``fp8`` (float8 Linears cast their bf16 inputs
    themselves; with the float8 all-gather, FSDP2 gathers their weights in float8)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(d.device.type, (d.world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if precision in ("bf16", "fp8") else MixedPrecisionPolicy()
    blocks = model.transformer.blocks
    for i, block in enumerate(blocks):
        # the last block's params are needed again right at the start of backward
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def autocast_ctx(cfg: TrainConfig, device: torch.device):
    if cfg.precision in ("bf16", "fp8"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def train_step(model, optimizer, scheduler, batches, cfg: TrainConfig, accum: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over ``accum`` micro-batches. Returns (mean loss on this rank, grad norm)."""
    total = torch.zeros((), device=device)
    for _ in range(accum):
        ids = next(batches).to(device, non_blocking=True)
        seq_id = sequence_ids(ids) if cfg.model.attn_uses_sequence_id else None
        with autocast_ctx(cfg, device):
            loss = model(ids, labels=ids, seq_id=seq_id)
        (loss / accum).backward()
        total += loss.detach()
    params = [p for p in model.parameters() if p.grad is not None]
    max_norm = cfg.optimizer.grad_clip if cfg.optimizer.grad_clip > 0 else float("inf")
    grad_norm = _full(torch.nn.utils.clip_grad_norm_(params, max_norm))
    optimizer.step()
    float8.after_optimizer_step(model)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total / accum, grad_norm


@torch.no_grad()
def evaluate(model, dataset, cfg: TrainConfig, device) -> float:
    model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    for ids in eval_batches(dataset, cfg.micro_batch_size, cfg.seq_len, cfg.eval_batches):
        ids = ids.to(device)
        seq_id = sequence_ids(ids) if cfg.model.attn_uses_sequence_id else None
        with autocast_ctx(cfg, device):
            total[0] += model(ids, labels=ids, seq_id=seq_id).double()
        total[1] += 1
    if dist.is_initialized():
        dist.all_reduce(total)
    model.train()
    if total[1] == 0:
        raise RuntimeError("eval streams yielded no full micro-batch")
    return float(total[0] / total[1])


def _reduce_mean(t: torch.Tensor) -> float:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return float(t)


def run(cfg: TrainConfig) -> list[dict]:
    """Train per ``cfg``; returns the logged records (rank 0) for programmatic use and tests."""
    d = setup_distributed(cfg)
    try:
        return _run(cfg, d)
    finally:
        gc.collect()
        if d.initialized_here:
            dist.destroy_process_group()
            for k in d.env_set_here:
                os.environ.pop(k, None)


def _run(cfg: TrainConfig, d: Dist) -> list[dict]:
    if cfg.data.streams is None:
        raise ConfigError("data.streams is not set: give a mixture's streams.yaml (data.streams=PATH)")
    accum = cfg.accumulation(d.world)
    model = build_model(cfg, d)
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.optimizer, cfg.max_steps)
    dc = cfg.data
    dataset = build_dataset(dc.streams, seq_len=cfg.seq_len, micro_batch_size=cfg.micro_batch_size,
                            shuffle=dc.shuffle, shuffle_seed=dc.shuffle_seed, shuffle_algo=dc.shuffle_algo,
                            shuffle_block_size=dc.shuffle_block_size, num_canonical_nodes=dc.num_canonical_nodes,
                            epoch_size=dc.epoch_size, cache_dir=dc.cache_dir)
    batches = TrainBatches(dataset, cfg.micro_batch_size, cfg.seq_len, d.world, dc.num_workers)
    eval_ds = None
    if dc.eval_streams is not None:
        eval_ds = build_dataset(dc.eval_streams, seq_len=cfg.seq_len, micro_batch_size=cfg.micro_batch_size,
                                shuffle=False, shuffle_seed=dc.shuffle_seed, cache_dir=dc.cache_dir)

    ckpt_root = os.path.join(cfg.run_dir, "checkpoints")
    step = 0
    found = ckpt.latest_checkpoint(ckpt_root) if cfg.resume else None
    if found is not None:
        meta = ckpt.load_checkpoint(found, model, optimizer, scheduler)
        if meta["config"]["model"] != to_dict(cfg)["model"]:
            raise ConfigError(f"checkpoint {found} was written for a different model config; "
                              "use a new run_dir or resume=false")
        batches.load_state_dict(meta["data"])
        step = int(meta["step"])

    log = MetricsLog(os.path.join(cfg.run_dir, "metrics.jsonl"), enabled=d.rank == 0)
    peak = detect_peak_flops(cfg.peak_tflops)
    n_params = cfg.model.num_params()
    tokens_per_step = cfg.global_batch_size * cfg.seq_len
    records: list[dict] = []
    stop = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, cfg.stop_after)
    bar = None
    if cfg.progress_bar and d.rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc="train", dynamic_ncols=True)

    def save(at: int):
        meta = {"config": to_dict(cfg), "data": batches.state_dict(), "world_size": d.world,
                "tokens": at * tokens_per_step}
        ckpt.save_checkpoint(ckpt_root, at, model, optimizer, scheduler, meta, keep=cfg.keep_checkpoints)

    model.train()
    t_last, steps_since = time.perf_counter(), 0
    while step < stop:
        lr = optimizer.param_groups[0]["lr"]
        loss, grad_norm = train_step(model, optimizer, scheduler, batches, cfg, accum, d.device)
        step += 1
        steps_since += 1
        if step % cfg.log_every == 0 or step == stop:
            loss_v = _reduce_mean(loss)
            if d.device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            dt = (now - t_last) / steps_since
            t_last, steps_since = now, 0
            rec = {"step": step, "loss": loss_v, "lr": lr, "grad_norm": float(grad_norm),
                   "tokens": step * tokens_per_step, "step_time_s": dt,
                   "tokens_per_s": tokens_per_step / dt, "tokens_per_s_per_gpu": tokens_per_step / dt / d.world}
            if d.device.type == "cuda":  # this rank's high-water mark; under FSDP every rank is alike
                rec["peak_mem_gb"] = torch.cuda.max_memory_allocated(d.device) / 2**30
            if peak:
                rec["mfu"] = mfu(n_params, cfg.model.n_layers, cfg.model.d_model, cfg.seq_len,
                                 cfg.global_batch_size / dt, d.world, peak)
            records.append(rec)
            log.write(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.2e}", tok_s=f"{rec['tokens_per_s']:.0f}",
                                **({"mfu": f"{rec['mfu']:.1%}"} if "mfu" in rec else {}))
        if bar is not None:
            bar.update(1)
        if eval_ds is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            rec = {"step": step, "eval_loss": evaluate(model, eval_ds, cfg, d.device)}
            records.append(rec)
            log.write(rec)
        if (cfg.save_every and step % cfg.save_every == 0) or step == stop:
            save(step)
    if bar is not None:
        bar.close()
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file (see trainer/configs/)")
    p.add_argument("overrides", nargs="*", help="key.sub=value, e.g. optimizer.lr=3e-4 max_steps=1000")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        run(cfg)
    except (ConfigError, FileNotFoundError) as e:
        print(f"trainer: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
