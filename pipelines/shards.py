"""Tokenize-and-shard: one sorted part of a source -> an MDS part; then merge parts into the source dataset.

Why parts keyed by a hash of the uid: every document lands in a part decided by its own id, each part is
sorted by uid before writing, and parts are merged in part order, so the output bytes do not depend on
how the runner bundled or ordered work (byte-identical re-runs, portable == local).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from typing import Iterable, Iterator, Sequence

import numpy as np
import xxhash

from pipelines import fsio
from pipelines.schema import Document, Reject

MDS_COLUMNS = {"tokens": "ndarray:uint16", "id": "str"}
MDS_COMPRESSION = "zstd"
MDS_HASHES = ["xxh64"]
MDS_SIZE_LIMIT = 1 << 26
BATCH_DOCS = 512
BATCH_CHARS = 4 << 20
# token-length histogram edges (document tokens incl. EOS); the last bin is open-ended
HIST_EDGES = [0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
STAGE_PRIORITY = {"exact_dedupe": 0, "near_dedupe": 1, "semantic_dedupe": 2}


def part_of(uid: int, num_parts: int) -> int:
    return xxhash.xxh64_intdigest(uid.to_bytes(8, "little", signed=True)) % num_parts


def part_name(part: int) -> str:
    return f"part-{part:05d}"


def batches(docs: Sequence[Document]) -> Iterator[Sequence[Document]]:
    start, chars = 0, 0
    for i, d in enumerate(docs):
        chars += len(d.text)
        if i + 1 - start >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield docs[start:i + 1]
            start, chars = i + 1, 0
    if start < len(docs):
        yield docs[start:]


def histogram(lengths: np.ndarray) -> list[int]:
    idx = np.searchsorted(np.asarray(HIST_EDGES[1:]), lengths, side="right")
    return np.bincount(idx, minlength=len(HIST_EDGES)).astype(int).tolist()


def tokenize_and_write(docs: Sequence[Document], tokenizer, out_dir: str) -> dict:
    """Write sorted documents as an MDS dataset in local ``out_dir``; return counts for stats.

    This is the stage benchmarked in benchmarks/tokenize_shard.py.
    """
    from streaming import MDSWriter

    lengths = np.zeros(len(docs), dtype=np.uint32)
    nbytes = 0
    i = 0
    with MDSWriter(out=out_dir, columns=MDS_COLUMNS, compression=MDS_COMPRESSION, hashes=MDS_HASHES,
                   size_limit=MDS_SIZE_LIMIT, progress_bar=False) as w:
        for batch in batches(docs):
            toks = tokenizer.encode_batch([d.text for d in batch], eos=True)
            for d, t in zip(batch, toks):
                w.write({"tokens": t, "id": d.id})
                lengths[i] = len(t)
                nbytes += len(d.text.encode("utf-8", "surrogatepass"))
                i += 1
    np.save(os.path.join(out_dir, "doc_tokens.npy"), lengths)
    return {"kept": len(docs), "tokens": int(lengths.sum()), "bytes": nbytes,
            "token_hist": histogram(lengths), "docs_ge_4096_tokens": int((lengths >= 4096).sum())}


def resolve_removals(removals: Iterable[Reject]) -> dict[int, Reject]:
    """One removal per document: exact beats near beats semantic (a document is counted once)."""
    best: dict[int, Reject] = {}
    for r in removals:
        cur = best.get(r.uid)
        if cur is None or (STAGE_PRIORITY[r.stage], r.duplicate_of) < (STAGE_PRIORITY[cur.stage], cur.duplicate_of):
            best[r.uid] = r
    return best


def reject_record(r: Reject) -> dict:
    rec = {"id": r.id, "source": r.source, "stage": r.stage, "reason": r.reason, "loc": r.loc}
    if r.stage.endswith("dedupe"):
        rec["duplicate_of"] = r.duplicate_of
    if not math.isnan(r.value):
        rec["value"] = r.value
    if r.detail:
        rec["detail"] = r.detail
    return rec


def write_part(source: str, part: int, docs: Iterable[Document], removals: Iterable[Reject],
               rejects: Iterable[Reject], tokenizer, staging: str, write_rejects: bool) -> tuple[dict, list[Reject]]:
    """Sort, drop removed documents, tokenize, write. Returns (part stats, dedupe Rejects that won)."""
    removed = resolve_removals(removals)
    docs = sorted(docs, key=lambda d: d.uid)
    kept = [d for d in docs if d.uid not in removed]
    won = sorted((removed[d.uid] for d in docs if d.uid in removed), key=lambda r: r.uid)
    orphans = set(removed) - {d.uid for d in docs}
    if orphans:
        raise RuntimeError(f"{source} {part_name(part)}: {len(orphans)} dedupe removals name uids that are not in the "
                           f"part (e.g. {sorted(orphans)[:3]}); this is a bug in a dedupe stage")
    tmp = fsio.local_tempdir(f"mptdata-{source}-{part}-")
    try:
        data_dir = os.path.join(tmp, "data")
        stats = tokenize_and_write(kept, tokenizer, data_dir)
        dest = fsio.join(staging, "data", part_name(part))
        fsio.delete_tree(dest)
        fsio.upload_tree(data_dir, dest, last=["index.json"])
        if write_rejects:
            recs = sorted([*rejects, *won], key=lambda r: r.uid)
            body = "".join(json.dumps(reject_record(r), ensure_ascii=False) + "\n" for r in recs)
            fsio.write_bytes(fsio.join(staging, "rejects", part_name(part) + ".jsonl"), body.encode("utf-8"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats.update(source=source, part=part)
    return stats, won


def merge_parts(staging: str, num_parts: int) -> np.ndarray:
    """Merge part indexes into staging/data/index.json (streaming's merge_index) and concatenate doc_tokens."""
    from streaming.base.util import merge_index

    data = fsio.join(staging, "data")
    tmp = fsio.local_tempdir("mptdata-merge-")
    try:
        idx_paths, lengths = [], []
        for p in range(num_parts):
            name = part_name(p)
            os.makedirs(os.path.join(tmp, name))
            local_idx = os.path.join(tmp, name, "index.json")
            with open(local_idx, "wb") as f:
                f.write(fsio.read_bytes(fsio.join(data, name, "index.json")))
            idx_paths.append(local_idx)
            lengths.append(np.load(_local_copy(fsio.join(data, name, "doc_tokens.npy"), tmp)))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # merge_index warns about its temp folder on every call
        try:
            merge_index(idx_paths, tmp, keep_local=True)
        finally:
            root.setLevel(level)
        fsio.write_bytes(fsio.join(data, "index.json"), open(os.path.join(tmp, "index.json"), "rb").read())
        all_lengths = np.concatenate(lengths).astype(np.uint32) if lengths else np.zeros(0, np.uint32)
        buf_path = os.path.join(tmp, "doc_tokens.npy")
        np.save(buf_path, all_lengths)
        fsio.write_bytes(fsio.join(data, "doc_tokens.npy"), open(buf_path, "rb").read())
        for p in range(num_parts):
            fsio.delete_tree(fsio.join(data, part_name(p), "doc_tokens.npy"))
        return all_lengths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _local_copy(path: str, tmp: str) -> str:
    if not fsio.is_remote(path):
        return path
    local = os.path.join(tmp, "dl-" + xxhash.xxh64_hexdigest(path))
    with open(local, "wb") as f:
        f.write(fsio.read_bytes(path))
    return local
