"""Read source files into Documents, turning every bad record into a counted, located Reject.

Files are listed, opened and strictly decompressed by ``contract.fsio`` (local, gs://, s3://), so that a
truncated .gz/.zst is reported as "corrupt stream after line N of FILE" instead of an anonymous decoder
traceback or a silent early end. A file that cannot be opened or parsed at all fails the run with its name.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

import orjson

from contract import fsio
from contract.registry import SOURCE_INDEX
from pipelines.sources.config import SourceConfig, infer_format
from pipelines.records import Document, Reject, get_path, make_uid

PARQUET_BATCH_ROWS = 2048


class InputFileError(RuntimeError):
    """A whole input file is unreadable; the message names it (the CLI prints it as the failure reason)."""


class InputFile(NamedTuple):
    index: int   # position in the sorted list of the source's files (part of the uid)
    path: str
    name: str    # short display name used in ids and locations
    size: int


@dataclass(frozen=True)
class Bad:
    line: int
    reason: str
    detail: str


class Meter:
    """Compressed input bytes consumed so far (progress and ETA for a part)."""

    def __init__(self):
        self.bytes = 0


def expand_inputs(source: str, globs: Sequence[str]) -> list[InputFile]:
    """Sorted, de-duplicated file list; a glob that matches nothing is an error naming it."""
    paths: dict[str, int] = {}
    for g in globs:
        try:
            files = fsio.glob(g)
        except fsio.StorageError as e:  # bad scheme, missing credentials, ...
            raise InputFileError(f"{source}: cannot list input {g!r}: {e.cause}") from None
        if not files:
            raise InputFileError(f"{source}: input glob {g!r} matched no files (check the path and the scheme)")
        for path, size in files:
            paths[path] = size
    ordered = sorted(paths)
    prefix = posixpath.dirname(os.path.commonprefix(ordered)) if len(ordered) > 1 else posixpath.dirname(ordered[0])
    out = []
    for i, p in enumerate(ordered):
        name = p[len(prefix):].lstrip("/") if prefix else p
        out.append(InputFile(i, p, name or posixpath.basename(p), paths[p]))
    return out


def _open_raw(path: str):
    try:
        return fsio.open(path)
    except fsio.StorageError as e:
        raise InputFileError(f"cannot open input file {path}: {e.cause}") from None


_COMPRESSION = {"jsonl": None, "jsonl.gz": "gzip", "jsonl.zst": "zstd"}


def iter_jsonl(path: str, fmt: Optional[str], meter: Optional[Meter] = None,
               strict: bool = False) -> Iterator[tuple[int, Union[dict, Bad]]]:
    """(1-based line, record | Bad). Blank lines are skipped (not documents). A corrupt compressed
    stream ends the file with one Bad('corrupt_stream') after the last good line. ``fmt`` None: the
    compression is inferred from the name. ``strict``: fsio's errors (a corrupt stream, a failed read)
    propagate as they are, for a caller that words them itself."""
    line_no = 0
    lines = fsio.read_lines(path, "infer" if fmt is None else _COMPRESSION.get(fmt), meter)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except fsio.CorruptStreamError as e:
            if strict:
                raise
            yield line_no + 1, Bad(line_no + 1, "corrupt_stream",
                                   f"{e.reason} (file truncated or corrupt; records before line {line_no + 1} were read)")
            return
        except fsio.StorageError as e:
            if strict:
                raise
            raise InputFileError(f"cannot {e.op} input file {path}: {e.cause}") from None
        line_no += 1
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            try:
                line.decode("utf-8")
                yield line_no, Bad(line_no, "bad_json", str(e)[:200])
            except UnicodeDecodeError as ue:
                yield line_no, Bad(line_no, "invalid_utf8", str(ue)[:200])
            continue
        if not isinstance(rec, dict):
            yield line_no, Bad(line_no, "not_an_object", f"JSON {type(rec).__name__}, expected an object")
            continue
        yield line_no, rec


def iter_values(path: str, field: str, fmt: Optional[str] = None,
                strict: bool = False) -> Iterator[tuple[int, Union[Any, Bad]]]:
    """(1-based line, value of the dotted ``field`` | Bad) of every record of a JSON Lines file (``iter_jsonl``);
    a record without the field is Bad('missing_field')."""
    for line, rec in iter_jsonl(path, fmt, strict=strict):
        if isinstance(rec, Bad):
            yield line, rec
            continue
        try:
            yield line, get_path(rec, field)
        except KeyError:
            yield line, Bad(line, "missing_field", f"no field {field!r}")


def read_texts(globs: Union[str, os.PathLike, Sequence[str]], text_field: str = "text", limit: Optional[int] = None,
               min_chars: int = 1) -> list[str]:
    """The string ``text_field`` values of at least ``min_chars`` characters in the JSON Lines files the globs
    match, in file and line order, at most ``limit`` (tests and benchmarks read ../shared/corpora with it);
    malformed records are skipped, a corrupt stream is an InputFileError naming the file."""
    files = expand_inputs("texts", [str(globs)] if isinstance(globs, (str, os.PathLike)) else [str(g) for g in globs])
    out: list[str] = []
    for f in files:
        for _line, value in iter_values(f.path, text_field):
            if isinstance(value, Bad):
                if value.reason == "corrupt_stream":
                    raise InputFileError(f"{f.path}: {value.detail}")
                continue
            if isinstance(value, str) and len(value) >= min_chars:
                out.append(value)
                if limit is not None and len(out) >= limit:
                    return out
    return out


def iter_parquet(path: str, columns: Sequence[str]) -> Iterator[tuple[int, Union[dict, Bad]]]:
    import pyarrow.parquet as pq

    raw = _open_raw(path)
    try:
        pf = pq.ParquetFile(raw)
    except Exception as e:
        raw.close()
        raise InputFileError(f"input file {path} is not a readable parquet file: {type(e).__name__}: {e}") from None
    names = set(pf.schema_arrow.names)
    cols = sorted({c for c in columns if c in names})
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=cols):
            for rec in batch.to_pylist():
                row += 1
                yield row, rec
    except Exception as e:
        raise InputFileError(f"input file {path}: parquet read failed after row {row}: {type(e).__name__}: {e}") from None
    finally:
        raw.close()


def to_document(cfg: SourceConfig, f: InputFile, line: int, rec: dict) -> Union[Document, Bad]:
    try:
        text = get_path(rec, cfg.text_field)
    except KeyError:
        return Bad(line, "missing_text_field", f"no field {cfg.text_field!r} (keys: {sorted(rec)[:8]})")
    if not isinstance(text, str):
        return Bad(line, "text_not_string", f"{cfg.text_field!r} is {type(text).__name__}")
    if not text.strip():
        return Bad(line, "empty_text", "text is empty or whitespace")
    loc = f"{f.name}:{line}"
    doc_id = loc
    if cfg.id_field:
        try:
            v = get_path(rec, cfg.id_field)
        except KeyError:
            return Bad(line, "missing_id_field", f"no field {cfg.id_field!r}")
        if v is None or isinstance(v, (dict, list)):
            return Bad(line, "bad_id", f"{cfg.id_field!r} is {type(v).__name__}, expected a scalar")
        doc_id = str(v)
    meta = {}
    for m in cfg.meta_fields:
        try:
            v = get_path(rec, m)
        except KeyError:
            continue
        if v is not None and not isinstance(v, (dict, list)):
            meta[m.rsplit(".", 1)[-1]] = str(v)[:1000]
    return Document(make_uid(SOURCE_INDEX[cfg.name], f.index, line), doc_id, cfg.name, text, loc, meta)


def read_file(cfg: SourceConfig, f: InputFile, meter: Optional[Meter] = None) -> Iterator[Union[Document, Reject]]:
    """All records of one file: Documents, or Rejects(stage='read') for malformed ones."""
    fmt = cfg.format or infer_format(f.path)
    if fmt == "parquet":
        top = {p.split(".")[0] for p in (cfg.text_field, cfg.id_field, *cfg.meta_fields) if p}
        records = iter_parquet(f.path, sorted(top))
    else:
        records = iter_jsonl(f.path, fmt, meter)
    sidx = SOURCE_INDEX[cfg.name]
    for line, rec in records:
        item = rec if isinstance(rec, Bad) else to_document(cfg, f, line, rec)
        if isinstance(item, Bad):
            loc = f"{f.name}:{item.line}"
            yield Reject(make_uid(sidx, f.index, item.line), loc, cfg.name, "read", item.reason, loc,
                         float("nan"), "", f"{f.path} line {item.line}: {item.detail}")
        else:
            yield item
