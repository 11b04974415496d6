"""Atomic, resumable checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout under ``<run_dir>/checkpoints/``: ``step_NNNNNN/`` holds the DCP shards of model and optimizer
(resharded on load, so the world size may change), ``meta.json`` (step, full config, data position)
and ``rank_R.pt`` (per-rank RNG state, scheduler). Each checkpoint is written into a ``.tmp`` folder and
renamed into place by rank 0 after every rank finished, then ``latest`` is replaced atomically: a crash
at any point leaves the previous checkpoint intact and never a half-written one under a final name.
"""

from __future__ import annotations

import json
import os
import random
import shutil
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
