"""Read the per-source tokenized datasets the Beam build writes (the mixture builder's input contract).

``SOURCES_DIR/<source>/index.json``   MDS, one sample per document: ``tokens: ndarray:uint16`` (the
                                      document's tokens then EOS = 0) and ``id: str``, in a fixed order.
``SOURCES_DIR/<source>/doc_tokens.npy`` uint32, each document's token count (EOS included), in sample
                                      order: planning needs lengths only, never the tokens.
``SOURCES_DIR/../stats/<source>.json`` per-source stats with at least an integer ``tokens``.

A source directory without ``index.json`` does not exist yet (its build has not finished).

Shards are read directly (decompressed in memory with streaming's own codecs and decoded with its
``MDSReader``) instead of through ``StreamingDataset``: that would unpack shards into the source folder
and needs shared memory, and the mixture builder must leave its inputs untouched.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from contract import layout
from contract.tokens import EOS, TOKEN_DTYPE


class SourceDataError(ValueError):
    """A source dataset is inconsistent with its contract; the message names the file."""


@dataclass
class SourceInfo:
    name: str
    path: str                    # SOURCES_DIR/<source>
    doc_tokens: np.ndarray       # uint32 per document, EOS included
    shard_sizes: list[int]       # documents per shard, in index order
    stats_tokens: int | None     # OUT/stats/<source>.json "tokens", when present
    index: dict                  # the parsed index.json

    @property
    def num_docs(self) -> int:
        return len(self.doc_tokens)

    @property
    def tokens(self) -> int:
        return int(self.doc_tokens.astype(np.int64).sum())


def source_present(sources_dir: str, source: str) -> bool:
    return os.path.isfile(os.path.join(sources_dir, source, layout.INDEX))


def _load_index(path: str) -> dict:
    index_path = os.path.join(path, layout.INDEX)
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SourceDataError(f"{index_path}: cannot read the MDS index ({e}); rebuild this source") from e
    shards = index.get("shards")
    if not isinstance(shards, list):
        raise SourceDataError(f"{index_path}: no 'shards' list; is this a streaming MDS index?")
    for shard in shards:
        if shard.get("format") != "mds" or "tokens" not in shard.get("column_names", []):
            raise SourceDataError(f"{index_path}: every shard must be MDS with a 'tokens' column "
                                  f"(got format={shard.get('format')!r}, columns={shard.get('column_names')})")
        enc = shard["column_encodings"][shard["column_names"].index("tokens")]
        if not enc.startswith("ndarray"):
            raise SourceDataError(f"{index_path}: column 'tokens' must be an ndarray encoding "
                                  f"(ndarray:uint16), got {enc!r}")
    return index


def load_source(sources_dir: str, source: str) -> SourceInfo:
    """Inventory one source: its document lengths and shard layout, checked against each other."""
    path = os.path.join(sources_dir, source)
    index = _load_index(path)
    shard_sizes = [int(s["samples"]) for s in index["shards"]]
    dt_path = os.path.join(path, layout.DOC_TOKENS)
    try:
        doc_tokens = np.load(dt_path, allow_pickle=False)
    except OSError as e:
        raise SourceDataError(f"{dt_path}: missing or unreadable ({e}); the source build writes each "
                              f"document's token count there; rebuild the source") from e
    if doc_tokens.ndim != 1 or doc_tokens.dtype.kind not in "ui":
        raise SourceDataError(f"{dt_path}: expected a 1-D integer array, got {doc_tokens.dtype} {doc_tokens.shape}")
    if len(doc_tokens) != sum(shard_sizes):
        raise SourceDataError(f"{dt_path}: {len(doc_tokens)} counts but {path}/index.json has "
                              f"{sum(shard_sizes)} documents; rebuild the source")
    if len(doc_tokens) and int(doc_tokens.min()) < 1:
        raise SourceDataError(f"{dt_path}: a document has {int(doc_tokens.min())} tokens; every document "
                              f"has at least its EOS")
    stats_tokens = None
    stats_path = layout.stats_path(layout.out_of_sources_dir(sources_dir), source)
    if os.path.isfile(stats_path):
        try:
            with open(stats_path, encoding="utf-8") as f:
                t = json.load(f).get("tokens")
            stats_tokens = int(t) if isinstance(t, int) else None
        except (OSError, json.JSONDecodeError) as e:
            raise SourceDataError(f"{stats_path}: unreadable stats ({e})") from e
    return SourceInfo(source, path, doc_tokens.astype(np.uint32, copy=False), shard_sizes, stats_tokens, index)


def read_mds_shard(dirpath: str, shard: dict) -> tuple[list[dict], str]:
    """Decode every sample of one MDS shard (its entry in index.json) without touching the folder."""
    from streaming.base.compression import (
        decompress,  # importing streaming costs seconds: only when reading
    )
    from streaming.base.format import reader_from_json

    reader = reader_from_json(dirpath, None, shard)
    zip_info, raw_info = shard.get("zip_data"), shard["raw_data"]
    fname = os.path.join(dirpath, (zip_info or raw_info)["basename"])
    with open(fname, "rb") as f:
        data = f.read()
    if zip_info:
        data = decompress(shard["compression"], data)
    n = int(shard["samples"])
    offsets = np.frombuffer(data, np.uint32, n + 1, 4)
    return [reader.decode_sample(data[offsets[i]:offsets[i + 1]]) for i in range(n)], fname


def read_shard(info: SourceInfo, shard_no: int) -> tuple[list[np.ndarray], str]:
    """All documents of one shard of a source as token arrays (in shard order), and the shard's file."""
    samples, fname = read_mds_shard(info.path, info.index["shards"][shard_no])
    docs = []
    for i, sample in enumerate(samples):
        if not isinstance(sample.get("tokens"), np.ndarray):
            raise SourceDataError(f"{fname}: sample {i}: 'tokens' is not an array")
        docs.append(sample["tokens"])
    return docs, fname


def iter_documents(info: SourceInfo, order: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(doc_index, tokens)`` for the documents in ``order``, checking each against the
    contract (length equals doc_tokens, ends with EOS, fits uint16).

    ``order`` must visit each shard's documents contiguously (see ``pack.packing_order``) so only one
    decoded shard is held in memory at a time.
    """
    starts = np.concatenate([[0], np.cumsum(info.shard_sizes)]).astype(np.int64)
    current, docs, fname = -1, [], ""
    seen: set[int] = set()
    for doc in order:
        doc = int(doc)
        shard = int(np.searchsorted(starts, doc, side="right") - 1)
        if shard != current:
            if shard in seen:
                raise ValueError(f"iter_documents: order revisits shard {shard} of {info.name}; "
                                 f"group documents by shard")
            seen.add(shard)
            docs, fname = read_shard(info, shard)
            current = shard
        tokens = docs[doc - starts[shard]]
        if len(tokens) != int(info.doc_tokens[doc]) or len(tokens) == 0 or int(tokens[-1]) != EOS:
            raise SourceDataError(
                f"{fname}: document {doc} of source {info.name} has {len(tokens)} tokens ending in "
                f"{int(tokens[-1]) if len(tokens) else None}, but doc_tokens.npy says {int(info.doc_tokens[doc])} "
                f"ending in EOS={EOS}; the source is inconsistent, rebuild it")
        if tokens.dtype != TOKEN_DTYPE:
            if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(TOKEN_DTYPE).max):
                raise SourceDataError(f"{fname}: document {doc} has token ids outside {np.dtype(TOKEN_DTYPE).name}")
            tokens = tokens.astype(TOKEN_DTYPE)
        yield doc, tokens


def demo_sources(sources_dir: str) -> list[str]:
    """Sources whose stats (``OUT/stats/<source>.json``) mark them as demo data (``"demo": true``)."""
    stats_dir = layout.stats_dir(layout.out_of_sources_dir(sources_dir))
    found = []
    if os.path.isdir(stats_dir):
        for name in sorted(os.listdir(stats_dir)):
            if name.endswith(".json"):
                try:
                    with open(os.path.join(stats_dir, name), encoding="utf-8") as f:
                        if json.load(f).get("demo") is True:
                            found.append(name[:-5])
                except (OSError, json.JSONDecodeError, AttributeError):
                    continue
    return found
