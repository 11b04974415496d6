"""Length rules every source can use (the foundation's basic filter)."""
from __future__ import annotations

import re
from typing import Mapping

from pipelines.filters import register

_WORD = re.compile(r"\S+")


def count_upto(pattern: re.Pattern, text: str, limit: int) -> int:
    """Matches of ``pattern`` in ``text``, counting no further than ``limit`` (early exit for keep rules)."""
    n = 0
    for _ in pattern.finditer(text):
        n += 1
        if n >= limit:
            break
    return n


@register("min_words", min_words=1)
def min_words(text: str, meta: Mapping[str, str], min_words: int):
    """Reject documents with fewer than ``min_words`` whitespace-separated words.

    mc4_en uses 200: MPT-7B/30B kept "mC4 3.1.0 English, documents with 200+ words" (model card).
    """
    if min_words <= 1:
        return None if text.strip() else (0.0, "empty after whitespace strip")
    n = count_upto(_WORD, text, min_words)
    return None if n >= min_words else (float(n), f"{n} < {min_words} words")


@register("min_chars", min_chars=1)
def min_chars(text: str, meta: Mapping[str, str], min_chars: int):
    """Reject documents with fewer than ``min_chars`` non-whitespace-stripped characters."""
    n = len(text.strip())
    return None if n >= min_chars else (float(n), f"{n} < {min_chars} chars")


@register("max_bytes", max_bytes=100_000_000)
def max_bytes(text: str, meta: Mapping[str, str], max_bytes: int):
    """Size guard: reject single documents over ``max_bytes`` UTF-8 bytes (100 MB default).

    Not a quality rule: one pathological multi-hundred-MB "document" would stall a worker and blow up
    a shard; it is counted and reported instead of dropped silently.
    """
    if len(text) * 4 <= max_bytes:  # cheap upper bound first
        return None
    n = len(text.encode("utf-8", "surrogatepass"))
    return None if n <= max_bytes else (float(n), f"{n} bytes > {max_bytes}")
