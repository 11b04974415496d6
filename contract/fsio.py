"""The one door to bytes: every path the project opens, lists, decompresses, fetches or uploads goes through here.

Any path may be local, ``gs://`` or ``s3://``. Beam's FileSystems is the backend for remote paths (and for
``glob``, whose matching rules input globs have always followed); it is imported here and nowhere else in
contract/, pipelines/, mixtures/, tokenization/ or trainer/ (tests/test_architecture.py), and only on first
use, so local readers need no Beam.

Decompression is strict: ``read_lines`` decodes gzip and zstd itself (never Beam's codecs, never zstandard's
``stream_reader``, which stops silently at a truncated frame), so a truncated or corrupt stream raises
``CorruptStreamError`` naming the file and the line it could not read.

Errors are this module's own: ``StorageError`` (cannot open / list / read / write; ``NotFoundError`` when the
object is absent) and ``CorruptStreamError``; both are ``FsioError``, an ``OSError``.

Local outputs use real atomic renames; object stores have no directory rename, so there the readable
"commit marker" (index.json, then stats.json) is always written last.
"""
from __future__ import annotations

import builtins
import functools
import gzip
import io
import os
import shutil
import tempfile
import threading
import types
import uuid
import zlib
from typing import Any, BinaryIO, Iterable, Iterator, Optional

from contract.layout import is_remote, join

__all__ = ["is_remote", "join", "FsioError", "StorageError", "NotFoundError", "CorruptStreamError",
           "set_options", "open", "read_lines", "compression_of", "glob", "size", "exists", "read_bytes",
           "write_bytes", "list_files", "files_in", "dirs_with", "fetch", "local_copy", "upload", "upload_tree",
           "delete_tree", "replace_tree", "local_tempdir", "has_files"]

COMPRESSIONS = ("gzip", "zstd")
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class FsioError(OSError):
    """A storage or stream problem; ``path`` names the file, ``str(e)`` starts with it."""

    def __init__(self, path: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = path, detail

    def __reduce__(self):  # picklable across Beam's worker boundary with its own fields
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls, state):
    e = cls.__new__(cls)
    OSError.__init__(e, f"{state['path']}: {state['detail']}")
    e.__dict__.update(state)
    return e


class StorageError(FsioError):
    """Cannot ``op`` (open, list, read, write, ...) ``path``; ``cause`` is the backend's exception."""

    def __init__(self, path: str, op: str, cause: BaseException):
        super().__init__(path, f"cannot {op}: {type(cause).__name__}: {cause}")
        self.op, self.cause = op, cause


class NotFoundError(StorageError, FileNotFoundError):
    """The file or object does not exist."""


class CorruptStreamError(FsioError):
    """A compressed stream that ends early or does not decode. ``line`` is the 1-based line that could not be
    read (every line before it was); ``reason`` the decoder's ``Type: message``."""

    def __init__(self, path: str, compression: str, line: int, reason: str):
        super().__init__(path, f"truncated or corrupt {compression} stream at line {line} ({reason}; "
                               f"the {line - 1:,} lines before it were read)")
        self.compression, self.line, self.reason = compression, line, reason


# ---------------------------------------------------------------------------------------------
# Backend
# ---------------------------------------------------------------------------------------------


class _Beam:
    """Beam's FileSystems, imported on first use only (local reads and writes need no Beam)."""

    @property
    def fs(self):
        from apache_beam.io.filesystems import FileSystems

        _reuse_s3_clients()
        return FileSystems

    @property
    def raw(self):
        # Beam picks a codec from the extension by default (".zstd" shards would be compressed twice): never.
        from apache_beam.io.filesystem import CompressionTypes

        return CompressionTypes.UNCOMPRESSED


_beam = _Beam()
_S3_CLIENTS: dict = {}
_S3_LOCK = threading.Lock()


class _SharedS3Session:
    """Stands in for ``boto3.session.Session()`` inside Beam's S3 client wrapper, which builds a new session
    and client for every filesystem call (``s3io.S3IO(options=...)`` per exists/open/match/delete): ~150 ms of
    botocore model loading each, 53 times in the driver of a 6-part build and more in every worker (a 0.8 MB
    build on a local S3 server took 46 s against 12 s on local disk). boto3 clients are thread-safe, so one
    per process and set of arguments (endpoint, region, credentials) serves every call."""

    def client(self, **kwargs):
        key = tuple(sorted(kwargs.items()))
        with _S3_LOCK:
            if key not in _S3_CLIENTS:
                import boto3

                _S3_CLIENTS[key] = boto3.session.Session().client(**kwargs)
            return _S3_CLIENTS[key]


@functools.lru_cache(maxsize=None)  # once per process: every remote call passes through here
def _reuse_s3_clients() -> None:
    """Point Beam's S3 wrapper (it uses only ``boto3.session.Session().client``) at ``_SharedS3Session``."""
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:  # Beam without its AWS extra: no S3 paths at all
        return
    if getattr(boto3_client, "boto3", None) is not None:
        boto3_client.boto3 = types.SimpleNamespace(session=types.SimpleNamespace(Session=_SharedS3Session))


def set_options(options: Any) -> None:
    """Remote filesystem options (S3 endpoint and region, GCS project, ...): a Beam ``PipelineOptions`` or a list
    of its flags (``["--s3_endpoint_url=..."]``). The driver and every tool call this once, before any I/O."""
    if isinstance(options, (list, tuple)):
        from apache_beam.options.pipeline_options import PipelineOptions

        options = PipelineOptions(list(options))
    _beam.fs.set_options(options)


def _not_found(e: BaseException) -> bool:
    if isinstance(e, FileNotFoundError):
        return True
    inner = getattr(e, "exception_details", None) or {}  # BeamIOError wraps per-path exceptions
    return bool(inner) and all(isinstance(x, FileNotFoundError) for x in inner.values())


def _storage_error(path: str, op: str, e: BaseException) -> StorageError:
    return (NotFoundError if _not_found(e) else StorageError)(path, op, e)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def open(path: str) -> BinaryIO:  # the module's verb (builtins.open stays reachable as builtins.open)
    """The file's raw bytes as a seekable binary file (remote: read by ranges). No decompression."""
    try:
        if is_remote(path):
            return _beam.fs.open(path, compression_type=_beam.raw)
        return builtins.open(path, "rb")
    except Exception as e:
        raise _storage_error(path, "open", e) from None


def read_bytes(path: str) -> bytes:
    with open(path) as f:
        try:
            return f.read()
        except Exception as e:
            raise _storage_error(path, "read", e) from None


def compression_of(path: str) -> Optional[str]:
    """The codec a file name implies: ``gzip`` (.gz), ``zstd`` (.zst, .zstd) or None."""
    if path.endswith(".gz"):
        return "gzip"
    if path.endswith((".zst", ".zstd")):
        return "zstd"
    return None


class _Counting(io.RawIOBase):
    """Counts the (compressed) bytes read from ``raw`` into ``meter.bytes``."""

    def __init__(self, raw, meter):
        self.raw, self.meter = raw, meter

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.meter.bytes += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _zstd_chunks(raw) -> Iterator[bytes]:
    """Decompress concatenated zstd frames; a frame cut short raises EOFError (zstandard's stream reader
    would just stop, silently losing the tail of a truncated file)."""
    import zstandard

    dobj = zstandard.ZstdDecompressor().decompressobj()
    in_frame = False
    while True:
        data = raw.read(_CHUNK)
        if not data:
            if in_frame:
                raise EOFError("zstd frame ended before its end marker")
            return
        while data:
            in_frame = True
            out = dobj.decompress(data)
            if out:
                yield out
            if dobj.eof:
                data = dobj.unused_data
                dobj = zstandard.ZstdDecompressor().decompressobj()
                in_frame = False
            else:
                data = b""


def _decoder_errors() -> tuple:
    import zstandard

    return EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError


def read_lines(path: str, compression: Optional[str] = "infer", meter=None) -> Iterator[bytes]:
    """The file's lines, without their ``\\n`` (a last empty line is not a line), decompressed strictly.

    ``compression``: ``"infer"`` (from the name, ``compression_of``), ``"gzip"``, ``"zstd"`` or None. ``meter``:
    anything with an int ``bytes`` attribute, advanced by the compressed bytes read. Raises ``StorageError`` when
    the file cannot be opened or read, ``CorruptStreamError`` (with the line) when the stream is truncated or
    corrupt: never a silent early end."""
    if compression == "infer":
        compression = compression_of(path)
    if compression not in (None, *COMPRESSIONS):
        raise ValueError(f"compression must be one of {COMPRESSIONS}, None or 'infer', got {compression!r}")
    raw = open(path)
    stream = raw if meter is None else io.BufferedReader(_Counting(raw, meter), buffer_size=_CHUNK)
    decoder_errors = _decoder_errors()
    n = 0
    try:
        if compression == "zstd":
            tail = b""
            for block in _zstd_chunks(stream):
                parts = (tail + block).split(b"\n")
                tail = parts.pop()
                n += len(parts)
                yield from parts
            if tail:
                n += 1
                yield tail
        else:
            lines = io.BufferedReader(gzip.GzipFile(fileobj=stream, mode="rb"), buffer_size=_CHUNK) \
                if compression == "gzip" else stream
            for line in lines:
                n += 1
                yield line.rstrip(b"\n")
    except decoder_errors as e:
        raise CorruptStreamError(path, compression or "uncompressed", n + 1, f"{type(e).__name__}: {e}") from None
    except FsioError:
        raise
    except OSError as e:
        raise _storage_error(path, f"read line {n + 1}", e) from None
    finally:
        stream.close()


def glob(pattern: str) -> list[tuple[str, int]]:
    """``(path, size)`` of every file matching ``pattern`` (Beam's matching rules, every filesystem: ``*`` stays in
    one folder, ``**`` crosses folders; a path without wildcards matches itself if it exists), in the backend's
    order. Raises StorageError when the location cannot be listed."""
    try:
        metas = _beam.fs.match([pattern])[0].metadata_list
    except Exception as e:  # bad scheme, missing credentials, Beam's BeamIOError ...
        raise _storage_error(pattern, "list", e) from None
    return [(m.path, m.size_in_bytes) for m in metas if not m.path.endswith("/")]


def size(path: str) -> int:
    """Bytes in one file."""
    if not is_remote(path):
        try:
            return os.path.getsize(path)
        except OSError as e:
            raise _storage_error(path, "stat", e) from None
    found = glob(path)
    if not found:
        raise NotFoundError(path, "stat", FileNotFoundError(path))
    return found[0][1]


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    try:
        return _beam.fs.exists(path)
    except Exception as e:
        raise _storage_error(path, "check", e) from None


def isdir(path: str) -> bool:
    """A local folder (object stores have none: use ``has_files`` for a prefix)."""
    return not is_remote(path) and os.path.isdir(path)


def has_files(root: str) -> bool:
    """A folder with at least one file (object stores have no folders: a prefix with objects)."""
    if is_remote(root):
        return bool(list_files(root))
    return os.path.isdir(root) and any(files for _d, _s, files in os.walk(root))


def list_files(root: str) -> list[str]:
    """All files under root (recursively), relative to it ('/'-separated remotely), sorted."""
    if is_remote(root):
        prefix = root.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p, _size in glob(prefix + "**"))
    out = []
    for d, _, files in os.walk(root):
        for fn in files:
            out.append(os.path.relpath(os.path.join(d, fn), root))
    return sorted(out)


def files_in(dirpath: str, suffix: str = "") -> list[str]:
    """Base names of the files directly in ``dirpath`` ending in ``suffix``, sorted; [] if it is absent."""
    if is_remote(dirpath):
        prefix = dirpath.rstrip("/") + "/"
        try:
            found = glob(prefix + "*" + suffix)
        except StorageError:
            return []
        return sorted(p[len(prefix):] for p, _size in found if "/" not in p[len(prefix):])
    if not os.path.isdir(dirpath):
        return []
    return sorted(f for f in os.listdir(dirpath) if f.endswith(suffix) and os.path.isfile(os.path.join(dirpath, f)))


def dirs_with(dirpath: str, marker: str) -> list[str]:
    """Names of the folders directly in ``dirpath`` that hold a file named ``marker``, sorted."""
    if is_remote(dirpath):
        prefix = dirpath.rstrip("/") + "/"
        try:
            found = glob(prefix + "*/" + marker)
        except StorageError:
            return []
        return sorted({p[len(prefix):].split("/")[0] for p, _size in found})
    if not os.path.isdir(dirpath):
        return []
    return sorted(d for d in os.listdir(dirpath) if os.path.isfile(os.path.join(dirpath, d, marker)))


def fetch(path: str, local_path: str) -> str:
    """Copy ``path`` (any filesystem) to the local file ``local_path`` (folders created); returns it."""
    os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
    with open(path) as src, builtins.open(local_path, "wb") as dst:
        try:
            shutil.copyfileobj(src, dst, 1 << 22)
        except OSError as e:
            raise _storage_error(path, "read", e) from None
    return local_path


def local_copy(path: str, tmp: str, name: Optional[str] = None) -> str:
    """A local file holding ``path``'s bytes: ``path`` itself when local, else a copy fetched into folder ``tmp``
    (as ``name``, default a name derived from the path; fetched once)."""
    if not is_remote(path):
        return path
    if name is None:
        import xxhash

        name = "dl-" + xxhash.xxh64_hexdigest(path)
    dest = os.path.join(tmp, name)
    return dest if os.path.exists(dest) else fetch(path, dest)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_bytes(path: str, data: bytes) -> None:
    """Local: write a temp file beside the target and rename (readers never see a partial file)."""
    if is_remote(path):
        try:
            with _beam.fs.create(path, compression_type=_beam.raw) as f:
                f.write(data)
        except Exception as e:
            raise _storage_error(path, "write", e) from None
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with builtins.open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def upload(local_path: str, dest: str) -> None:
    """Copy the local file ``local_path`` to ``dest`` (any filesystem; local: copied, folders created)."""
    if not is_remote(dest):
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        shutil.copyfile(local_path, dest)
        return
    try:
        with builtins.open(local_path, "rb") as f, _beam.fs.create(dest, compression_type=_beam.raw) as g:
            shutil.copyfileobj(f, g, 1 << 22)
    except Exception as e:
        raise _storage_error(dest, "write", e) from None


def upload_tree(local_dir: str, dest: str, last: Iterable[str] = ()) -> None:
    """Copy a local directory to dest (any filesystem); files named in ``last`` are copied last."""
    last = list(last)
    rels = [r for r in list_files(local_dir) if r not in last] + [r for r in last if os.path.exists(os.path.join(local_dir, r))]
    if not is_remote(dest):
        os.makedirs(dest, exist_ok=True)
    for rel in rels:
        upload(os.path.join(local_dir, rel), join(dest, rel))


def delete_tree(path: str) -> None:
    if is_remote(path):
        files = [join(path, r) for r in list_files(path)]
        if files:
            try:
                _beam.fs.delete(files)
            except Exception as e:
                raise _storage_error(path, "delete", e) from None
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
                try:
                    _beam.fs.rename([join(src, rel)], [join(dst, rel)])
                except Exception as e:
                    raise _storage_error(join(src, rel), "rename", e) from None
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
