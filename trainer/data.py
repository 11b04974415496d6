"""Training batches from a mixture's ``streams.yaml`` through mosaicml-streaming.

The same streams file feeds llm-foundry's ``train_loader.dataset.streams``: a mapping name -> Stream
kwargs (``local`` / ``remote`` / ``split`` and one of ``proportion`` / ``repeat`` / ``choose``),
optionally under a top-level ``streams:`` key, read by ``contract.streams.read_streams``. Relative ``local``
paths are taken relative to the streams file, so a mixture directory can be moved as a whole.

Samples carry ``tokens: ndarray:uint16`` of exactly ``seq_len`` tokens. StreamingDataset does the
mixing, shuffling and per-rank partitioning; we only count the samples consumed so that a resumed run
skips exactly those (``state_dict(num_samples, from_beginning=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.streams import read_streams
from contract.tokens import EOS as EOS_ID


def build_dataset(streams: Any, *, seq_len: int, micro_batch_size: int, shuffle: bool, shuffle_seed: int,
                  shuffle_algo: str = "py1e", shuffle_block_size: int | None = None,
                  num_canonical_nodes: int | None = None, epoch_size: int | None = None,
                  cache_dir: str | None = None):
    from streaming import Stream, StreamingDataset

    objs = []
    for name, kw in read_streams(streams).items():
        kw = dict(kw)
        if kw.get("remote") and not kw.get("local") and cache_dir:
            kw["local"] = str(Path(cache_dir) / name)
        objs.append(Stream(**kw))
    return StreamingDataset(streams=objs, batch_size=micro_batch_size, shuffle=shuffle, shuffle_seed=shuffle_seed,
                            shuffle_algo=shuffle_algo, shuffle_block_size=shuffle_block_size,
                            num_canonical_nodes=num_canonical_nodes, epoch_size=epoch_size,
                            partition_algo="relaxed", sampling_method="balanced")


def sequence_ids(tokens: torch.Tensor, eos_id: int = EOS_ID) -> torch.Tensor:
    """Document index of every position in a packed sample; an EOS belongs to the document it ends."""
    eos = (tokens == eos_id).to(torch.int32)
    return torch.cumsum(eos, dim=1) - eos


class Collate:
    """uint16 token samples -> int64 (B, seq_len). Longer samples are cut like llm-foundry does;
    shorter ones are an error (there is no pad token to fill them)."""

    def __init__(self, seq_len: int):
        self.seq_len = seq_len

    def __call__(self, samples: list[dict]) -> torch.Tensor:
        rows = []
        for s in samples:
            if "tokens" not in s:
                raise ValueError(f"sample has no 'tokens' column (columns: {sorted(s)}); "
                                 "the trainer reads pre-tokenized MDS with tokens: ndarray:uint16")
            t = np.asarray(s["tokens"])
            if t.shape[0] < self.seq_len:
                raise ValueError(f"sample has {t.shape[0]} tokens, fewer than seq_len {self.seq_len}; "
                                 "build the mixture with this seq_len or lower seq_len")
            rows.append(t[: self.seq_len].astype(np.int64))
        return torch.from_numpy(np.stack(rows))


class TrainBatches:
    """An endless iterator of per-rank micro-batches that knows its resume point."""

    def __init__(self, dataset, micro_batch_size: int, seq_len: int, world_size: int, num_workers: int = 0):
        from torch.utils.data import DataLoader

        self.dataset = dataset
        self.global_micro = micro_batch_size * world_size
        self.loader = DataLoader(dataset, batch_size=micro_batch_size, collate_fn=Collate(seq_len),
                                 num_workers=num_workers, drop_last=True,
                                 persistent_workers=num_workers > 0)
        self.samples_in_epoch = 0  # global, all ranks
        self._it = None

    def __next__(self) -> torch.Tensor:
        empty_epochs = 0
        while True:
            if self._it is None:
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.samples_in_epoch = 0
                empty_epochs += 1
                if empty_epochs > 1:
                    raise RuntimeError("the training streams yield no full micro-batch; they hold fewer samples "
                                       "than micro_batch_size x world size") from None
                continue
            self.samples_in_epoch += self.global_micro
            return batch

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        return self.dataset.state_dict(self.samples_in_epoch, from_beginning=True)

    def load_state_dict(self, state: dict) -> None:
        """Call before the first batch; the dataset applies it at its next ``__iter__``."""
        self.dataset.load_state_dict(state)
        self.samples_in_epoch = int(state["sample_in_epoch"])
        self._it = None


def eval_batches(dataset, micro_batch_size: int, seq_len: int, max_batches: int):
    """The first ``max_batches`` micro-batches of an unshuffled held-out dataset, in order."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=micro_batch_size, collate_fn=Collate(seq_len), drop_last=True)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        yield batch
