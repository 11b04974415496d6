"""The GPT-NeoX-20B tokenizer: resolution, fingerprint check, and fast uint16 batch encoding.

(The project card calls this folder ``tokenize/``; a top-level package of that name shadows the standard
library's ``tokenize`` module and breaks ``import torch``, so it is ``tokenization/``.)
"""
from tokenization.neox import (  # noqa: F401
    EOS_ID,
    MODEL_VOCAB_SIZE,
    PAD_ID,
    VOCAB_SIZE,
    NeoXTokenizer,
    TokenizerError,
    fingerprint,
    load_tokenizer,
    resolve_tokenizer_path,
)
