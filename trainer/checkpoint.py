"""Atomic, resumable checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout under ``<run_dir>/checkpoints/``: ``step_NNNNNN/`` holds the DCP shards of model and optimizer
(resharded on load, so the world size may change), ``meta.json`` (step, full config, data position)
and ``rank_R.pt`` (per-rank RNG state, scheduler). Each checkpoint is written into a ``.tmp`` folder and
renamed into place by rank 0 after every rank finished, then ``latest`` is replaced atomically: a crash
at any point leaves the previous checkpoint intact and never a half-written one under a final name.

``read_full_state`` / ``diff_checkpoints`` read a checkpoint back as whole tensors, whatever world size wrote
it, so two checkpoints (say one written by 2 ranks, one by 1 rank after resuming it) can be compared bit
for bit: ``python -m trainer.checkpoint diff RUN_A/checkpoints/step_000003 RUN_B/checkpoints/step_000003``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def step_dir(ckpt_root: str | Path, step: int) -> Path:
    return Path(ckpt_root) / f"step_{step:06d}"


def save_checkpoint(ckpt_root: str | Path, step: int, model, optimizer, scheduler, meta: dict,
                    keep: int = 2) -> Path:
    """Collective: every rank calls it. ``meta`` (JSON-able: config, data state ...) comes from rank 0."""
    root = Path(ckpt_root)
    final = step_dir(root, step)
    tmp = root / f".tmp_{final.name}"
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)  # left over from a crash during an earlier save
    _barrier()
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    dcp.save(state, checkpoint_id=str(tmp))
    torch.save({"rng": _rng_state(), "scheduler": scheduler.state_dict()}, tmp / f"rank_{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=1, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_atomic(root / "latest", final.name + "\n")
        _prune(root, keep)
    _barrier()
    return final


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    done = sorted(p for p in root.glob("step_*") if (p / "meta.json").is_file())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    root = Path(ckpt_root)
    pointer = root / "latest"
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / "meta.json").is_file():
            return cand
    done = sorted(p for p in root.glob("step_*") if (p / "meta.json").is_file())
    return done[-1] if done else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A step directory, or a checkpoints/ or run directory (then its latest checkpoint)."""
    p = Path(path)
    if (p / "meta.json").is_file():
        return p
    for root in (p, p / "checkpoints"):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise FileNotFoundError(f"no complete checkpoint (a step_* folder with meta.json) at {p}")


def read_meta(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {checkpoint} is not a complete checkpoint")
    return json.loads(path.read_text())


def load_checkpoint(checkpoint: str | Path, model, optimizer, scheduler) -> dict:
    """Collective. Restores model, optimizer, scheduler and this rank's RNG; returns meta.json."""
    checkpoint = Path(checkpoint)
    meta = read_meta(checkpoint)
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=str(checkpoint))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    extra_path = checkpoint / f"rank_{_rank()}.pt"
    if not extra_path.is_file():  # resumed on more ranks than saved: reuse rank 0's scheduler, fresh RNG
        extra_path = checkpoint / "rank_0.pt"
        extra = torch.load(extra_path, weights_only=False)
        extra.pop("rng")
    else:
        extra = torch.load(extra_path, weights_only=False)
    scheduler.load_state_dict(extra["scheduler"])
    if "rng" in extra:
        _set_rng_state(extra["rng"])
    return meta


def read_full_state(checkpoint: str | Path) -> dict:
    """Model and optimizer state of a checkpoint as whole (unsharded) tensors on CPU, nested as saved
    (``{"model": {...}, "optim": {"state": ..., "param_groups": ...}}``). Needs no process group and
    reads checkpoints written by any number of ranks."""
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    checkpoint = Path(checkpoint)
    read_meta(checkpoint)  # a clear error for an incomplete checkpoint
    state: dict = {}
    # the same call as torch.distributed.checkpoint.format_utils.dcp_to_torch_save, without the file
    _load_state_dict(state, storage_reader=dcp.FileSystemReader(str(checkpoint)),
                     planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    return state


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(tree, (list, tuple)) and not all(isinstance(x, (int, float, str, bool)) for x in tree):
        out = {}
        for i, v in enumerate(tree):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): tree}


def diff_checkpoints(a: str | Path, b: str | Path, *, compare_meta: tuple = ("step", "data", "tokens")) -> list[str]:
    """Everything that differs between two checkpoints, bit for bit: every model and optimizer tensor
    (whole, so the world sizes that wrote them may differ), the optimizer's param groups (lr ...), each
    checkpoint's rank-0 scheduler state and the named ``meta.json`` entries (the data position). An empty
    list means the checkpoints hold the same training state."""
    fa, fb = _flatten(read_full_state(a)), _flatten(read_full_state(b))
    out = [f"only in {a}: {k}" for k in sorted(set(fa) - set(fb))]
    out += [f"only in {b}: {k}" for k in sorted(set(fb) - set(fa))]
    for k in sorted(set(fa) & set(fb)):
        x, y = fa[k], fb[k]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype:
                out.append(f"{k}: {tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}")
            elif not torch.equal(x, y):
                d = (x.double() - y.double()).abs()
                out.append(f"{k}: {int((x != y).sum())} of {x.numel()} elements differ, max |diff| {float(d.max()):.3g}")
        elif x != y:
            out.append(f"{k}: {x!r} vs {y!r}")
    sa = torch.load(Path(a) / "rank_0.pt", weights_only=False)["scheduler"]
    sb = torch.load(Path(b) / "rank_0.pt", weights_only=False)["scheduler"]
    for k in sorted(set(sa) | set(sb)):
        if k != "lr_lambdas" and sa.get(k) != sb.get(k):
            out.append(f"scheduler.{k}: {sa.get(k)!r} vs {sb.get(k)!r}")
    ma, mb = read_meta(a), read_meta(b)
    for k in compare_meta:
        if ma.get(k) != mb.get(k):
            out.append(f"meta.{k}: {ma.get(k)!r} vs {mb.get(k)!r}")
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m trainer.checkpoint", description="checkpoint tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("diff", help="compare two checkpoints bit for bit (any world sizes); exit 1 if they differ")
    d.add_argument("a")
    d.add_argument("b")
    args = p.parse_args(argv)
    a, b = resolve_checkpoint(args.a), resolve_checkpoint(args.b)
    diffs = diff_checkpoints(a, b)
    ws = (read_meta(a).get("world_size"), read_meta(b).get("world_size"))
    for line in diffs:
        print(line)
    print(f"{a} (world {ws[0]}) vs {b} (world {ws[1]}): "
          + ("identical training state" if not diffs else f"{len(diffs)} differences"))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
