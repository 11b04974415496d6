"""Throughput and MFU as llm-foundry reports them, and the JSONL metrics log.

MFU follows ``scripts/train/benchmarking/collect_results.py`` so our numbers sit next to the published
table: ``flops_per_seq = 2 * n_params * S``, attention ``n_layers * 2 * 2 * d_model * S**2`` (full S^2,
not halved for causal), ``MFU = 3 * (flops_per_seq + attn_flops_per_seq) * seqs_per_s / (gpus * peak)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Composer's GPU_AVAILABLE_FLOPS for amp_bf16 (dense): H100 SXM 1979/2 TFLOP/s, A100 312.
PEAK_BF16_FLOPS = {"H100": 989.5e12, "H200": 989.5e12, "A100": 312e12}


def flops_per_seq(n_params: int, n_layers: int, d_model: int, seq_len: int) -> float:
    return 2.0 * n_params * seq_len + n_layers * 2 * 2 * d_model * seq_len**2


def mfu(n_params: int, n_layers: int, d_model: int, seq_len: int, seqs_per_s: float, n_gpus: int,
        peak_flops: float) -> float:
    return 3.0 * flops_per_seq(n_params, n_layers, d_model, seq_len) * seqs_per_s / (n_gpus * peak_flops)


def detect_peak_flops(override_tflops: float | None = None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


class MetricsLog:
    """Appends one JSON object per line; only rank 0 writes."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
