"""Exact dedupe: one document per normalized-text hash, the smallest uid kept.

Normalization (documented contract): Unicode NFC, casefold, every run of whitespace -> one space, strip.
So "Hello  World\n" and "hello world" are duplicates; punctuation and digits still count.
Only (hash, uid, id) travel through the shuffle, not the text: the removal list is joined back later.
"""
from __future__ import annotations

import re
import unicodedata

import apache_beam as beam
import xxhash

from pipelines.schema import Document, Reject

_WS = re.compile(r"\s+")


def normalize_for_exact(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFC", text).casefold()).strip()


def text_hash(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(normalize_for_exact(text).encode("utf-8", "surrogatepass"))


def pick_duplicates(members: list[tuple[int, str, str, str]]) -> list[Reject]:
    """members: (uid, id, source, loc) sharing one hash -> Rejects for all but the smallest uid."""
    members = sorted(members)
    keep_uid, keep_id = members[0][0], members[0][1]
    return [Reject(uid, id_, src, "exact_dedupe", "exact_duplicate", loc, 1.0, keep_id,
                   f"same normalized text as uid {keep_uid}") for uid, id_, src, loc in members[1:]]


class ExactDuplicates(beam.PTransform):
    """PCollection[Document] -> PCollection[Reject] for every non-keeper. Scope: per source unless cross_source."""

    def __init__(self, cross_source: bool = False):
        super().__init__()
        self.cross_source = cross_source

    def expand(self, docs):
        cross = self.cross_source

        def key(d: Document):
            h = text_hash(d.text)
            return (h if cross else f"{d.source}/{h}", (d.uid, d.id, d.source, d.loc))

        return (docs
                | "HashText" >> beam.Map(key)
                | "GroupByHash" >> beam.GroupByKey()
                | "PickKeepers" >> beam.FlatMap(_group_duplicates))


def _group_duplicates(kv) -> list[Reject]:
    members = list(kv[1])  # GBK values may be a lazy iterable on distributed runners
    return pick_duplicates(members) if len(members) > 1 else []
