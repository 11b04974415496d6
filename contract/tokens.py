"""The token format of every shard this toolkit writes or reads (GPT-NeoX-20B; README "Tokenizer")."""
from __future__ import annotations

import numpy as np

EOS = 0                 # <|endoftext|>: appended to every document
PAD = 1                 # <|padding|>
VOCAB_SIZE = 50_277     # the tokenizer's vocabulary
MODEL_VOCAB_SIZE = 50_432  # padded for the model (a multiple of 64)
TOKEN_DTYPE = np.uint16
MDS_TOKENS_ENCODING = "ndarray:uint16"
