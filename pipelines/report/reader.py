"""Read a finished build's OUT folder (local, gs://, s3://): stats, mixture manifests, reject records, and
documents or packed samples decoded from MDS. Paths come from ``contract.layout`` only, bytes through
``contract.fsio`` (only the shard files asked for are fetched); every error is an ``OutError`` naming the file.
Never imports the engine: what it reads is what any build wrote."""
from __future__ import annotations

import json
import tempfile
from typing import Any, Optional

import numpy as np

from contract import fsio, layout


class OutError(RuntimeError):
    """A missing or unreadable output file; the message names it."""

# ---------------------------------------------------------------------------------------------
# File access (contract.fsio; its errors become OutErrors naming the file)
# ---------------------------------------------------------------------------------------------


def read_bytes(path: str, what: str) -> bytes:
    try:
        return fsio.read_bytes(path)
    except FileNotFoundError:
        raise OutError(f"{path}: not found ({what})") from None
    except fsio.StorageError as e:  # remote errors, permissions
        raise OutError(f"{path}: cannot read ({what}): {type(e.cause).__name__}: {e.cause}") from None


def read_json(path: str, what: str) -> Any:
    try:
        return json.loads(read_bytes(path, what))
    except json.JSONDecodeError as e:
        raise OutError(f"{path}: not valid JSON ({what}): {e}") from None




def load_stats(out: str) -> dict[str, dict]:
    """``{source: stats}`` for every ``OUT/stats/<source>.json``."""
    d = layout.stats_dir(out)
    names = fsio.files_in(d, ".json")
    return {n[:-5]: read_json(layout.stats_path(out, n[:-5]), "per-source stats") for n in names}


def load_manifests(out: str) -> dict[str, dict]:
    found = {}
    for name in fsio.dirs_with(layout.mixtures_dir(out), layout.MANIFEST):
        path = layout.join(layout.mixture_dir(out, name), layout.MANIFEST)
        if fsio.exists(path):
            found[name] = read_json(path, "mixture manifest")
    return found



# ---------------------------------------------------------------------------------------------
# docs / samples: decode MDS back to text
# ---------------------------------------------------------------------------------------------


def mds_index(dataset_dir: str) -> dict:
    path = layout.join(dataset_dir, layout.INDEX)
    index = read_json(path, "MDS index")
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise OutError(f"{path}: no 'shards' list; not a streaming MDS index")
    return index


def local_copy(dataset_dir: str, shard: dict, tmp: str) -> str:
    """A local folder holding ``shard``'s file: the dataset folder itself, or ``tmp`` after a fetch."""
    if not layout.is_remote(dataset_dir):
        return dataset_dir
    base = (shard.get("zip_data") or shard["raw_data"])["basename"]
    path = layout.join(dataset_dir, *base.split("/"))
    try:
        fsio.local_copy(path, tmp, name=base)
    except FileNotFoundError:
        raise OutError(f"{path}: not found (MDS shard)") from None
    except fsio.StorageError as e:
        raise OutError(f"{path}: cannot read (MDS shard): {type(e.cause).__name__}: {e.cause}") from None
    return tmp


def pick(dataset_dir: str, n: int, seed: int) -> list[tuple[int, dict]]:
    """``n`` random samples (without replacement, sorted by position) of one MDS dataset, decoded:
    ``[(sample_index, {column: value}), ...]``. Reproducible for a given ``seed``."""
    index = mds_index(dataset_dir)
    total = sum(int(s["samples"]) for s in index["shards"])
    if total == 0:
        return []
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    return read_positions(dataset_dir, chosen.tolist(), index)


def _tokens_text(tok, tokens: np.ndarray, chars: int) -> tuple[str, bool]:
    text = tok.decode(tokens.tolist())
    if chars and len(text) > chars:
        return text[:chars], True
    return text, False


def decode_docs(out: str, source: str, n: int, seed: int, chars: int, tok) -> list[dict]:
    ddir = layout.source_dir(out, source)
    if not fsio.exists(layout.source_index(out, source)):
        known = fsio.dirs_with(layout.sources_dir(out), layout.INDEX)
        raise OutError(f"{layout.source_index(out, source)}: not found (source {source!r} not built; "
                           f"built: {', '.join(known) or 'none'})")
    docs = []
    for i, sample in pick(ddir, n, seed):
        tokens = np.asarray(sample["tokens"])
        body = tokens[:-1] if len(tokens) and int(tokens[-1]) == 0 else tokens   # drop the EOS every doc ends with
        text, cut = _tokens_text(tok, body, chars)
        docs.append({"source": source, "index": i, "id": sample.get("id"), "tokens": len(tokens),
                     "text": text, "truncated": cut})
    return docs


def decode_samples(out: str, mixture: str, part: Optional[str], source: Optional[str], n: int, seed: int,
                   chars: int, tok) -> list[dict]:
    mdir = layout.mixture_dir(out, mixture)
    manifest = read_json(layout.join(mdir, layout.MANIFEST), "mixture manifest")
    streams = [(name, st) for name, st in sorted((manifest.get("streams") or {}).items())
               if (part is None or st.get("part") == part) and (source is None or st.get("source") == source)]
    if not streams:
        have = sorted({(st.get("part"), st.get("source")) for st in (manifest.get("streams") or {}).values()})
        raise OutError(f"{layout.join(mdir, layout.MANIFEST)}: no stream with part={part!r} source={source!r}; "
                           f"streams: {', '.join(f'{p}/{s}' for p, s in have)}")
    # one draw over all samples of the chosen streams: each packed sample equally likely
    dirs = [layout.join(mdir, *st["path"].split("/")) for _, st in streams]
    sizes = [sum(int(s["samples"]) for s in mds_index(d)["shards"]) for d in dirs]
    total = sum(sizes)
    if total == 0:
        return []
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out_rows = []
    for k, ((name, st), d) in enumerate(zip(streams, dirs)):
        mine = chosen[(chosen >= starts[k]) & (chosen < starts[k + 1])] - starts[k]
        if not len(mine):
            continue
        for i, sample in read_positions(d, [int(i) for i in mine]):
            tokens = np.asarray(sample["tokens"])
            text, cut = _tokens_text(tok, tokens, chars)
            out_rows.append({"stream": name, "part": st.get("part"), "source": st.get("source"), "sample": i,
                             "tokens": len(tokens), "documents": int((tokens == 0).sum()),
                             "text": text, "truncated": cut})
    return out_rows


def read_positions(dataset_dir: str, positions: list[int], index: Optional[dict] = None) -> list[tuple[int, dict]]:
    """The samples at ``positions`` (sorted) of one MDS dataset, reading each needed shard once."""
    from mixtures.sources import read_mds_shard

    index = index or mds_index(dataset_dir)
    sizes = [int(s["samples"]) for s in index["shards"]]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    pos = np.asarray(positions, dtype=np.int64)
    out = []
    with tempfile.TemporaryDirectory(prefix="mptdata-inspect-") as tmp:
        for shard_no in sorted({int(np.searchsorted(starts, i, side="right") - 1) for i in pos}):
            shard = index["shards"][shard_no]
            try:
                samples, _ = read_mds_shard(local_copy(dataset_dir, shard, tmp), shard)
            except FileNotFoundError as e:
                raise OutError(f"{e.filename}: not found (an MDS shard listed in "
                                   f"{layout.join(dataset_dir, layout.INDEX)})") from None
            for i in pos[(pos >= starts[shard_no]) & (pos < starts[shard_no + 1])]:
                out.append((int(i), samples[int(i - starts[shard_no])]))
    return out


# ---------------------------------------------------------------------------------------------
# reject
# ---------------------------------------------------------------------------------------------


def find_rejects(out: str, doc_id: str, source: Optional[str] = None) -> list[dict]:
    """Every audit record whose ``id`` (or ``loc``) is ``doc_id``, from OUT/rejects/<source>/*.jsonl."""
    if source:
        sources = [source]
    else:
        sources = sorted(load_stats(out))
    searched, found = [], []
    for s in sources:
        rdir = layout.rejects_dir(out, s)
        files = fsio.files_in(rdir, ".jsonl")
        if not files:
            continue
        searched.append(rdir)
        for fn in files:
            path = layout.join(rdir, fn)
            for line in read_bytes(path, "rejects").decode("utf-8").splitlines():
                if doc_id not in line:      # cheap pre-check before parsing
                    continue
                rec = json.loads(line)
                if rec.get("id") == doc_id or rec.get("loc") == doc_id:
                    found.append({**rec, "file": path})
    if not searched:
        where = layout.rejects_dir(out, source or "<source>")
        raise OutError(f"{where}: no reject records (build with --write-rejects to write them)")
    return found

