"""The token format of every shard this toolkit writes or reads (GPT-NeoX-20B; README "Tokenizer")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

EOS = 0                 # <|endoftext|>: appended to every document
PAD = 1                 # <|padding|>
VOCAB_SIZE = 50_277     # the tokenizer's vocabulary
MODEL_VOCAB_SIZE = 50_432  # padded for the model (a multiple of 64)
TOKEN_DTYPE = np.uint16
MDS_TOKENS_ENCODING = f"ndarray:{np.dtype(TOKEN_DTYPE).name}"  # streaming's column type for token arrays


@dataclass(frozen=True)
class MdsFormat:
    """``streaming.MDSWriter`` settings of one kind of dataset this toolkit writes (stated here once).

    Column order is part of the bytes; ``size_limit`` is the default shard size (bytes before compression).
    """

    columns: tuple[tuple[str, str], ...]
    hashes: tuple[str, ...]
    compression: str = "zstd"
    size_limit: int = 1 << 26

    def writer(self, out: str, size_limit: Union[int, str, None] = None):
        """A ``streaming.MDSWriter`` into the local folder ``out`` (use it as a context manager)."""
        from streaming import MDSWriter

        return MDSWriter(out=out, columns=dict(self.columns), compression=self.compression, hashes=list(self.hashes),
                         size_limit=self.size_limit if size_limit is None else size_limit, progress_bar=False)


# OUT/sources/<source>/: one document per sample (pipelines.engine.shards; mixtures.synthetic writes the same).
SOURCE_MDS = MdsFormat(columns=(("tokens", MDS_TOKENS_ENCODING), ("id", "str")), hashes=("xxh64",))
# OUT/mixtures/<name>/<part>/<source>/: packed seq_len samples (mixtures.pack).
MIXTURE_MDS = MdsFormat(columns=(("tokens", MDS_TOKENS_ENCODING),), hashes=("sha1",))
