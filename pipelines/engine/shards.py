"""Shard writing: one part's staged tokens minus its dedupe removals -> an MDS part; then merge the parts.

A part is a run of consecutive input files (``pipelines.engine.plan``), so its documents are already in uid
order; parts are merged in part order, so the output bytes do not depend on how the runner bundled or
ordered work (byte-identical re-runs, portable == local).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from contract import fsio, layout
from contract.layout import DOC_TOKENS, INDEX
from contract.stats import DEDUPE_STAGES, histogram
from contract.tokens import SOURCE_MDS
from pipelines.engine.plan import part_name
from pipelines.engine.examples import dedupe_picks
from pipelines.records import Reject, Removal, reject_record, split_uid
from pipelines.engine.staging import Part, read_json, write_json

STAGE_PRIORITY = {s: i for i, s in enumerate(DEDUPE_STAGES)}


def write_mds(tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray, ids: Sequence[str], out_dir: str) -> np.ndarray:
    """Write documents ``rows`` (indices into offsets/ids) as an MDS dataset in local ``out_dir``, plus
    doc_tokens.npy; returns their token counts. This is the stage benchmarked in benchmarks/tokenize_shard.py."""
    lengths = (offsets[rows + 1] - offsets[rows]).astype(np.uint32)
    with SOURCE_MDS.writer(out_dir) as w:
        for r in rows.tolist():
            w.write({"tokens": tokens[offsets[r]:offsets[r + 1]], "id": ids[r]})
    np.save(os.path.join(out_dir, DOC_TOKENS), lengths)
    return lengths


def resolve_removals(removals: Iterable[Removal]) -> dict[int, Removal]:
    """One removal per document: exact beats near beats semantic (a document is counted once)."""
    best: dict[int, Removal] = {}
    for r in removals:
        cur = best.get(r.uid)
        if cur is None or (STAGE_PRIORITY[r.stage], r.keeper_id) < (STAGE_PRIORITY[cur.stage], cur.keeper_id):
            best[r.uid] = r
    return best


def write_part(plan, source: str, part: int, removals: Iterable[Removal]) -> dict:
    """Drop the part's removed documents, write its MDS part and audit records to staging; return its stats.

    Its stats file doubles as the done marker: a resumed build re-uses a written part as it is."""
    files = Part.of(plan, source, part)
    done_path = layout.join(plan.staging(source), "written", part_name(part) + ".json")
    done = read_json(done_path)
    if done is not None:
        return done
    summary = files.done()
    if summary is None:
        raise RuntimeError(f"{source} {part_name(part)}: no staged documents (summary.json missing); this is a bug")
    uids, offsets, nbytes = files.read_docs()
    ids = files.read_ids()
    tokens = files.read_tokens()
    removed = resolve_removals(removals)
    gone = np.isin(uids, np.fromiter(removed, dtype=np.int64, count=len(removed)))
    orphans = set(removed) - set(uids[gone].tolist())
    if orphans:
        raise RuntimeError(f"{source} {part_name(part)}: {len(orphans)} dedupe removals name uids that are not in the "
                           f"part (e.g. {sorted(orphans)[:3]}); this is a bug in a dedupe stage")
    rows = np.flatnonzero(~gone)
    tmp = fsio.local_tempdir(f"mptdata-{source}-{part}-")
    try:
        data_dir = os.path.join(tmp, "data")
        lengths = write_mds(tokens, offsets, rows, ids, data_dir)
        dest = layout.join(plan.staging(source), "data", part_name(part))
        fsio.delete_tree(dest)
        fsio.upload_tree(data_dir, dest, last=[INDEX])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = [tuple(c) for c in summary.counts]
    dedupe_counts: Counter = Counter()
    won = []
    for i in np.flatnonzero(gone).tolist():
        r = removed[int(uids[i])]
        dedupe_counts[(r.stage, r.reason, "")] += 1
        won.append(r)
    if plan.write_rejects:
        _write_rejects(plan, source, part, files, won, uids, ids)
    gi = np.flatnonzero(gone).tolist()
    report_samples = dedupe_picks(won, {int(uids[i]): ids[i] for i in gi}, {int(uids[i]): int(nbytes[i]) for i in gi})
    stats = {"source": source, "part": part, "read": summary.read, "kept": int(rows.size),
             "tokens": int(lengths.sum()), "bytes": int(nbytes[rows].sum()), "token_hist": histogram(lengths),
             "docs_ge_4096_tokens": int((lengths >= 4096).sum()),
             "counts": [list(c) for c in counts] + [[s, r, f, n] for (s, r, f), n in sorted(dedupe_counts.items())],
             # per-part pass-through for the source's stats (pipelines.engine.process; absent in older summaries)
             **summary.pass_through(),
             "dedupe_samples": report_samples}  # pipelines.engine.examples: examples for the report
    write_json(done_path, stats)
    return stats


def _write_rejects(plan, source: str, part: int, files: Part, won: list[Removal], uids, ids) -> None:
    """Malformed and filtered records staged by the reader plus this part's dedupe removals, in uid order."""
    lines = files.read_rejects()
    index = {int(u): i for i, u in enumerate(uids.tolist())} if won else {}
    for r in won:
        _s, f, line = split_uid(r.uid)
        loc = f"{plan.file_name(source, f)}:{line}"
        rej = Reject(r.uid, ids[index[r.uid]], source, r.stage, r.reason, loc, r.value, r.keeper_id, r.detail)
        lines.append((r.uid, json.dumps(reject_record(rej), ensure_ascii=False)))
    if not lines:
        return  # no empty objects: S3 refuses a zero-part upload, and an absent file says the same
    lines.sort(key=lambda x: x[0])
    body = "".join(rec + "\n" for _uid, rec in lines)
    fsio.write_bytes(layout.join(plan.staging(source), "rejects", part_name(part) + ".jsonl"), body.encode("utf-8"))


def merge_parts(staging: str, num_parts: int) -> np.ndarray:
    """Merge part indexes into staging/data/index.json (streaming's merge_index) and concatenate doc_tokens."""
    from streaming.base.util import merge_index

    data = fsio.join(staging, "data")
    tmp = fsio.local_tempdir("mptdata-merge-")
    try:
        idx_paths, lengths = [], []
        for p in range(num_parts):
            name = part_name(p)
            idx_paths.append(fsio.fetch(fsio.join(data, name, INDEX), os.path.join(tmp, name, INDEX)))
            lengths.append(np.load(fsio.local_copy(fsio.join(data, name, DOC_TOKENS), tmp)))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # merge_index warns about its temp folder on every call
        try:
            merge_index(idx_paths, tmp, keep_local=True)
        finally:
            root.setLevel(level)
        fsio.write_bytes(fsio.join(data, INDEX), fsio.read_bytes(os.path.join(tmp, INDEX)))
        all_lengths = np.concatenate(lengths).astype(np.uint32) if lengths else np.zeros(0, np.uint32)
        buf_path = os.path.join(tmp, DOC_TOKENS)
        np.save(buf_path, all_lengths)
        fsio.write_bytes(fsio.join(data, DOC_TOKENS), fsio.read_bytes(buf_path))
        for p in range(num_parts):
            fsio.delete_tree(fsio.join(data, part_name(p), DOC_TOKENS))
        return all_lengths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
