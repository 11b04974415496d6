"""The eval files of decontamination (``pipelines.steps.decontam``): listed, read through the one JSON Lines
reader (``pipelines.sources.readers``: strict gzip/zstd, a truncated or corrupt eval file is a DecontamError
naming the file and the line, never a silently smaller index) and indexed, once per config per process.

Eval data: JSON Lines files (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``) or directories of them (searched
recursively), local or any Beam filesystem (``gs://``, ``s3://``), globs allowed. Each line's ``text_field`` (a
dotted path) is the eval text; a list of strings gives one eval text per element (e.g. answer choices). The eval
source name is the file's path relative to the directory given (or its base name), without the extension:
``mmlu/test``.
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Iterable, Iterator

from contract import fsio
from pipelines.sources.readers import Bad, iter_values
from pipelines.steps.decontam import DecontamConfig, DecontamError, EvalIndex

EXTENSIONS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd")


def _strip_ext(name: str) -> str:
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def list_eval_files(paths: Iterable[str]) -> list[tuple[str, str]]:
    """``(path, eval_source_name)`` for every eval file under ``paths``, sorted, no duplicates.

    Raises DecontamError naming a path that matches nothing."""
    found: dict[str, str] = {}
    for p in paths:
        files: list[tuple[str, str]] = []
        if fsio.is_remote(p):
            is_dir = p.endswith("/") or (not _has_glob(p) and not p.endswith(EXTENSIONS))
            pattern = p.rstrip("/") + "/**" if is_dir else p
            try:
                matched = fsio.glob(pattern)
            except fsio.StorageError as e:  # Beam raises BeamIOError when nothing matches
                raise DecontamError(f"decontam eval path {p}: cannot list it ({type(e.cause).__name__}: "
                                    f"{e.cause})") from None
            prefix = p.rstrip("/") + "/"
            for path, _size in matched:
                if path.endswith(EXTENSIONS):
                    name = path[len(prefix):] if is_dir else path.rsplit("/", 1)[-1]
                    files.append((path, _strip_ext(name)))
        elif fsio.isdir(p):
            for rel in fsio.list_files(p):
                if rel.endswith(EXTENSIONS):
                    files.append((os.path.join(p, rel), _strip_ext(rel.replace(os.sep, "/"))))
        else:
            import glob

            for full in glob.glob(p, recursive=True) if _has_glob(p) else ([p] if os.path.isfile(p) else []):
                if os.path.isfile(full):
                    files.append((full, _strip_ext(os.path.basename(full))))
        if not files:
            raise DecontamError(f"decontam eval path {p}: no {'/'.join(EXTENSIONS)} file found there")
        for path, name in files:
            found.setdefault(path, name)
    return sorted(found.items(), key=lambda kv: (kv[1], kv[0]))


def load_eval_texts(cfg: DecontamConfig) -> Iterator[tuple[str, str]]:
    """``(eval_source, text)`` for every eval text, file by file in sorted order.

    A file with no usable ``text_field`` value at all is a configuration error (named); single bad
    lines are skipped."""
    for path, name in list_eval_files(cfg.eval_paths):
        n_texts = 0
        try:
            for _line, value in iter_values(path, cfg.text_field, strict=True):
                if isinstance(value, Bad):   # not JSON, not an object, or no text_field: skipped
                    continue
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if isinstance(v, str) and v.strip():
                        n_texts += 1
                        yield name, v
        except fsio.CorruptStreamError as e:
            raise DecontamError(f"decontam eval file {path}: {e.detail}; re-create or re-download it") from None
        except fsio.StorageError as e:
            raise DecontamError(f"decontam eval file {path}: cannot read it ({type(e.cause).__name__}: "
                                f"{e.cause})") from None
        if n_texts == 0:
            raise DecontamError(f"decontam eval file {path}: no line has a string field {cfg.text_field!r} "
                                f"(set decontam.text_field)")


def build_index(cfg: DecontamConfig) -> EvalIndex:
    """The index of every eval text ``cfg`` names (``EvalIndex.from_texts``)."""
    return EvalIndex.from_texts(load_eval_texts(cfg), n=cfg.n, min_eval_words=cfg.min_eval_words,
                                window_chars=cfg.window_chars, min_piece_chars=cfg.min_piece_chars,
                                max_pieces=cfg.max_pieces)


@lru_cache(maxsize=4)
def cached_index(cfg: DecontamConfig) -> EvalIndex:
    """One index per config per process (configs are frozen, so hashable): call it from a DoFn's
    ``setup`` so each worker process reads the eval files once instead of unpickling a large index per
    bundle."""
    return build_index(cfg)
