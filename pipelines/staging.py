"""What one part leaves in staging between stages, so that no document text ever crosses a process boundary.

``OUT/.staging/<source>/<config hash>/parts/part-NNNNN/``:

    docs.npz       uid int64[N], offsets int64[N+1] into tokens, nbytes int64[N] (UTF-8 bytes of the text)
    ids.json       the N document ids
    tokens.npy     uint16, every kept-by-filter document's tokens + EOS, concatenated
    exact.npy      uint64[N, 2] normalized-text hashes               (sources with exact dedupe)
    sigs.npz       uid int64[M], sig uint32[M, num_perm]              (sources with MinHash; M <= N)
    emb.npz        uid int64[N], emb float32[N, 384]                  (sources with SemDedup)
    rejects.jsonl  malformed and filtered documents' audit records    (--write-rejects)
    samples.json   a few sampled not-kept documents per stage/reason   (pipelines.samples; for the report)
    summary.json   counts; written LAST: its presence means the part is done (resume skips it)

The files are plain numpy/JSON written through Beam's filesystems, so staging works on gs:// and s3://.
"""
from __future__ import annotations

import io
import json
from typing import Any, Mapping, Optional

import numpy as np

from contract import fsio, layout

SUMMARY = "summary.json"


def save_npy(path: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    fsio.write_bytes(path, buf.getvalue())


def save_npz(path: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    fsio.write_bytes(path, buf.getvalue())


def load_npy(path: str) -> np.ndarray:
    return np.load(io.BytesIO(fsio.read_bytes(path)), allow_pickle=False)


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(fsio.read_bytes(path)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_json(path: str, obj: Any) -> None:
    fsio.write_bytes(path, (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: str) -> Optional[Any]:
    """The object, or None when the file does not exist or is unreadable (an interrupted write)."""
    try:
        return json.loads(fsio.read_bytes(path))
    except (OSError, ValueError):
        return None
    except Exception as e:  # Beam's remote filesystems raise their own "not found" errors
        if "not found" in str(e).lower() or "no such" in str(e).lower() or "404" in str(e):
            return None
        raise


class PartFiles:
    """Paths of one part's staging files."""

    def __init__(self, root: str):
        self.root = root

    def __getattr__(self, name: str) -> str:
        files = {"docs": "docs.npz", "ids": "ids.json", "tokens": "tokens.npy", "exact": "exact.npy",
                 "sigs": "sigs.npz", "emb": "emb.npz", "rejects": "rejects.jsonl", "samples": "samples.json",
                 "summary": SUMMARY}
        if name not in files:
            raise AttributeError(name)
        return layout.join(self.root, files[name])

    def done(self) -> Optional[Mapping]:
        return read_json(self.summary)
