"""Streams files, batches and the data resume point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contract.streams import read_streams
from trainer.data import (
    Collate,
    TrainBatches,
    build_dataset,
    sequence_ids,
)


def _write(root: Path, name: str, n: int, seq_len: int = 16, base: int = 0) -> None:
    from streaming import MDSWriter

    with MDSWriter(out=str(root / name), columns={"tokens": "ndarray:uint16"}, compression="zstd") as w:
        for i in range(n):
            w.write({"tokens": np.full(seq_len, base + i, dtype=np.uint16)})


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    _write(root, "a", 60, base=1000)
    _write(root, "b", 40, base=2000)
    (root / "streams.yaml").write_text("streams:\n  a: {local: a, proportion: 0.25}\n  b: {local: b, proportion: 0.75}\n")
    return root


def test_read_streams_resolves_relative_paths_and_validates(mix, tmp_path):
    streams = read_streams(mix)  # a directory holding streams.yaml
    assert streams == {"a": {"local": str(mix / "a"), "proportion": 0.25},
                       "b": {"local": str(mix / "b"), "proportion": 0.75}}
    assert read_streams({"x": {"remote": "s3://bucket/x", "choose": 5}}) == {"x": {"remote": "s3://bucket/x", "choose": 5}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: {local: a, weight: 1}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: stream 'a' has unknown keys \['weight'\]"):
        read_streams(bad)
    with pytest.raises(FileNotFoundError, match="streams.yaml"):
        read_streams(tmp_path / "nowhere")


def test_proportions_are_honoured(mix):
    ds = build_dataset(mix / "streams.yaml", seq_len=16, micro_batch_size=4, shuffle=True, shuffle_seed=3, epoch_size=80)
    first = [int(s["tokens"][0]) for s in ds]
    assert len(first) == 80
    assert sum(t >= 2000 for t in first) == 60  # 0.75 of 80 from stream b (b is repeated to get there)


def test_resume_continues_exactly_where_it_stopped(mix):
    def make():
        ds = build_dataset(mix / "streams.yaml", seq_len=16, micro_batch_size=4, shuffle=True, shuffle_seed=5)
        return TrainBatches(ds, micro_batch_size=4, seq_len=16, world_size=1)

    full = make()
    ref = [next(full)[:, 0].tolist() for _ in range(30)]  # 120 samples: crosses an epoch (100)
    part = make()
    seen = [next(part)[:, 0].tolist() for _ in range(7)]
    state = part.state_dict()
    assert state["sample_in_epoch"] == 28
    again = make()
    again.load_state_dict(state)
    rest = [next(again)[:, 0].tolist() for _ in range(23)]
    assert seen + rest == ref
    flat = [t for b in ref[:25] for t in b]
    assert len(flat) == 100 and sum(t >= 2000 for t in flat) == 75  # one epoch: 100 samples at 0.25 / 0.75


def test_collate_casts_and_checks_length():
    batch = Collate(4)([{"tokens": np.arange(6, dtype=np.uint16)}, {"tokens": np.array([65535] * 4, dtype=np.uint16)}])
    assert batch.dtype == torch.int64 and batch.tolist() == [[0, 1, 2, 3], [65535] * 4]
    with pytest.raises(ValueError, match="fewer than seq_len 4"):
        Collate(4)([{"tokens": np.arange(3, dtype=np.uint16)}])
    with pytest.raises(ValueError, match="no 'tokens' column"):
        Collate(4)([{"text": "hi"}])


def test_sequence_ids_end_documents_at_eos():
    tokens = torch.tensor([[5, 6, 0, 7, 0, 0, 8]])
    assert sequence_ids(tokens).tolist() == [[0, 0, 0, 1, 1, 2, 3]]
