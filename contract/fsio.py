"""Storage for both sides of the contract: every output path may be local, gs:// or s3:// (Beam's FileSystems, imported only for remote paths).

Local outputs use real atomic renames; object stores have no directory rename, so there the readable
"commit marker" (index.json, then stats.json) is always written last.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from typing import Iterable

from contract.layout import is_remote, join

__all__ = ["is_remote", "join", "exists", "read_bytes", "write_bytes", "list_files", "upload_tree", "delete_tree",
           "replace_tree", "local_tempdir", "has_files"]


class _Beam:
    """Beam's FileSystems, imported on first remote use only (local builds and readers need no Beam)."""

    @property
    def fs(self):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems

    @property
    def raw(self):
        # Beam picks a codec from the extension by default (".zstd" shards would be compressed twice): never.
        from apache_beam.io.filesystem import CompressionTypes

        return CompressionTypes.UNCOMPRESSED


_beam = _Beam()


def exists(path: str) -> bool:
    return _beam.fs.exists(path) if is_remote(path) else os.path.exists(path)


def has_files(root: str) -> bool:
    """A folder with at least one file (object stores have no folders: a prefix with objects)."""
    if is_remote(root):
        return bool(list_files(root))
    return os.path.isdir(root) and any(files for _d, _s, files in os.walk(root))


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    with _beam.fs.open(path, compression_type=_beam.raw) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Local: write a temp file beside the target and rename (readers never see a partial file)."""
    if is_remote(path):
        with _beam.fs.create(path, compression_type=_beam.raw) as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def list_files(root: str) -> list[str]:
    """All files under root, relative to it, sorted."""
    if is_remote(root):
        prefix = root.rstrip("/") + "/"
        res = _beam.fs.match([prefix + "**"])[0].metadata_list
        return sorted(m.path[len(prefix):] for m in res if not m.path.endswith("/"))
    out = []
    for d, _, files in os.walk(root):
        for fn in files:
            out.append(os.path.relpath(os.path.join(d, fn), root))
    return sorted(out)


def upload_tree(local_dir: str, dest: str, last: Iterable[str] = ()) -> None:
    """Copy a local directory to dest (any filesystem); files named in ``last`` are copied last."""
    last = list(last)
    rels = [r for r in list_files(local_dir) if r not in last] + [r for r in last if os.path.exists(os.path.join(local_dir, r))]
    if not is_remote(dest):
        os.makedirs(dest, exist_ok=True)
    for rel in rels:
        src = os.path.join(local_dir, rel)
        if is_remote(dest):
            with open(src, "rb") as f, _beam.fs.create(join(dest, rel), compression_type=_beam.raw) as g:
                shutil.copyfileobj(f, g, 1 << 22)
        else:
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copyfile(src, os.path.join(dest, rel))


def delete_tree(path: str) -> None:
    if is_remote(path):
        files = [join(path, r) for r in list_files(path)]
        if files:
            _beam.fs.delete(files)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def replace_tree(src: str, dst: str, last: Iterable[str] = ()) -> None:
    """Move a finished staging directory into its final place, replacing any older copy."""
    if is_remote(dst):
        delete_tree(dst)
        rels = [r for r in list_files(src) if r not in set(last)] + [r for r in last]
        for rel in rels:
            if exists(join(src, rel)):
                _beam.fs.rename([join(src, rel)], [join(dst, rel)])
        return
    os.makedirs(os.path.dirname(dst.rstrip("/")) or ".", exist_ok=True)
    if os.path.exists(dst):
        trash = f"{dst}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


def local_tempdir(prefix: str = "mptdata-") -> str:
    return tempfile.mkdtemp(prefix=prefix)
