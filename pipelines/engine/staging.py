"""What one part leaves in staging between stages, so that no document text ever crosses a process boundary.

This module is the only one that knows the files of a part's folder, their names, their array keys and their
encodings: every other module writes and reads them through ``Part`` (``Part.of(plan, source, part)``), and the
part's summary is a ``PartSummary``.

``OUT/.staging/<source>/<config hash>/parts/part-NNNNN/``:

    docs.npz       uid int64[N], offsets int64[N+1] into tokens, nbytes int64[N] (UTF-8 bytes of the text)
    ids.json       the N document ids
    tokens.npy     TOKEN_DTYPE, every kept-by-filter document's tokens + EOS, concatenated
    exact.npy      uint64[N, 2] normalized-text hashes               (sources with exact dedupe)
    sigs.npz       uid int64[M], sig uint32[M, num_perm]              (sources with MinHash; M <= N)
    emb.npz        uid int64[N], emb float32[N, 384]                  (sources with SemDedup)
    rejects.jsonl  malformed and filtered documents' audit records    (--write-rejects)
                   as "uid<TAB>record" lines; the writer merges them with the dedupe rejects in uid order
    samples.json   a few sampled not-kept documents per stage/reason   (pipelines.engine.examples; for the report)
    summary.json   counts (``PartSummary``); written LAST: its presence means the part is done (resume skips it)

The files are plain numpy/JSON written through ``contract.fsio``, so staging works on gs:// and s3://.
"""
from __future__ import annotations

import dataclasses
import io
import json
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, NamedTuple, Optional

import numpy as np

from contract import fsio, layout
from contract.tokens import TOKEN_DTYPE

DOCS, IDS, TOKENS, EXACT = "docs.npz", "ids.json", "tokens.npy", "exact.npy"
SIGS, EMB, REJECTS, SAMPLES, SUMMARY = "sigs.npz", "emb.npz", "rejects.jsonl", "samples.json", "summary.json"
BANDS = "bands.npy"  # written by the near-dedupe stage, after the part is done
FILES = (DOCS, IDS, TOKENS, EXACT, SIGS, EMB, REJECTS, SAMPLES, SUMMARY, BANDS)


# ---------------------------------------------------------------------------------------------
# the records
# ---------------------------------------------------------------------------------------------


class Docs(NamedTuple):
    """``docs.npz``: the part's kept-by-filter documents in uid order."""

    uid: np.ndarray       # int64[N]
    offsets: np.ndarray   # int64[N + 1]: document i is tokens[offsets[i]:offsets[i + 1]]
    nbytes: np.ndarray    # int64[N]: UTF-8 bytes of the text


class Sigs(NamedTuple):
    """``sigs.npz``: MinHash signatures of the documents that have at least one word."""

    uid: np.ndarray       # int64[M]
    sig: np.ndarray       # uint32[M, num_perm]


class Embeddings(NamedTuple):
    """``emb.npz``: SemDedup embeddings of every document."""

    uid: np.ndarray       # int64[N]
    emb: np.ndarray       # float32[N, dim]


_REQUIRED = ("source", "part", "read", "docs", "text_bytes", "input_bytes", "tokens", "counts", "finished",
             "token_hist_before_dedupe")
PASS_THROUGH = ("pii", "decontam", "meta_missing", "samples", "filter_stats")   # absent in older summaries


@dataclass(frozen=True)
class PartSummary:
    """``summary.json``: a processed part's counts, and its done marker. It is also what the build graph
    carries from ``ProcessDocuments`` to the dedupe stages and the shard writer."""

    source: str
    part: int
    read: int                       # documents read == malformed + decontaminated + filtered + docs
    docs: int                       # documents kept by the filters (staged)
    text_bytes: int                 # UTF-8 bytes of the staged documents' text
    input_bytes: int                # bytes of the part's input files
    tokens: int                     # staged tokens, EOS included
    counts: list                    # [[stage, reason, file, n], ...] of not-kept documents, sorted
    finished: float                 # time.time() when the part was done
    token_hist_before_dedupe: dict  # contract.stats.histogram of the staged documents' token counts
    pii: Optional[dict] = None            # the five below: per-part pass-through for the source's stats
    decontam: Optional[dict] = None
    meta_missing: Optional[dict] = None
    filter_stats: Optional[dict] = None
    samples: Optional[dict] = None        # pipelines.engine.examples: picks and byte counts for the report

    @property
    def key(self) -> tuple[str, int]:
        return self.source, self.part

    def pass_through(self) -> dict:
        """The optional fields this summary has (what ``pipelines.engine.shards.write_part`` copies into the part's
        written stats), in ``PASS_THROUGH`` order."""
        return {k: getattr(self, k) for k in PASS_THROUGH if getattr(self, k) is not None}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in d.items() if k in _REQUIRED or v is not None}

    def to_json(self) -> bytes:
        """The bytes of ``summary.json`` (sorted keys, one line): the same bytes the untyped dict gave."""
        return (json.dumps(self.to_dict(), sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, d: dict) -> "PartSummary":
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"part summary without {missing}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})   # keys of newer code are not this code's

    @classmethod
    def from_json(cls, data: bytes | str) -> "PartSummary":
        return cls.from_dict(json.loads(data))


# ---------------------------------------------------------------------------------------------
# one part's folder
# ---------------------------------------------------------------------------------------------


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)   # uncompressed: ``Seekable`` reads rows of its members by seeking
    return buf.getvalue()


class Part:
    """One part's staging folder: every file in it is written and read here."""

    def __init__(self, root: str):
        self.root = root

    @classmethod
    def of(cls, plan, source: str, part: int) -> "Part":
        """The staging folder of ``source``'s part ``part`` in ``plan`` (a ``pipelines.engine.plan.BuildPlan``)."""
        return cls(plan.part_staging(source, part))

    def __repr__(self) -> str:
        return f"Part({self.root!r})"

    def path(self, name: str) -> str:
        """The path of file ``name`` (one of ``FILES``) of this part (for messages and tests)."""
        if name not in FILES:
            raise ValueError(f"{name!r} is not a staging file; expected one of {FILES}")
        return layout.join(self.root, name)

    def _load(self, name: str) -> np.ndarray:
        return np.load(io.BytesIO(fsio.read_bytes(self.path(name))), allow_pickle=False)

    def _load_npz(self, name: str, keys: tuple[str, ...]) -> list[np.ndarray]:
        with np.load(io.BytesIO(fsio.read_bytes(self.path(name))), allow_pickle=False) as z:
            return [z[k] for k in keys]

    # ---- writers (process_part; summary LAST)
    def write_tokens(self, tokens: np.ndarray) -> None:
        if tokens.dtype != TOKEN_DTYPE:
            raise TypeError(f"tokens must be {np.dtype(TOKEN_DTYPE).name}, got {tokens.dtype}")
        fsio.write_bytes(self.path(TOKENS), _npy_bytes(tokens))

    def write_docs(self, docs: Docs) -> None:
        fsio.write_bytes(self.path(DOCS), _npz_bytes(uid=docs.uid, offsets=docs.offsets, nbytes=docs.nbytes))

    def write_ids(self, ids: list[str]) -> None:
        fsio.write_bytes(self.path(IDS), json.dumps(ids, ensure_ascii=False).encode("utf-8"))

    def write_exact(self, keys: np.ndarray) -> None:
        fsio.write_bytes(self.path(EXACT), _npy_bytes(keys))

    def write_sigs(self, sigs: Sigs) -> None:
        fsio.write_bytes(self.path(SIGS), _npz_bytes(uid=sigs.uid, sig=sigs.sig))

    def write_emb(self, emb: Embeddings) -> None:
        fsio.write_bytes(self.path(EMB), _npz_bytes(uid=emb.uid, emb=emb.emb))

    def write_rejects(self, records: Iterable[tuple[int, dict]]) -> None:
        """(uid, audit record) pairs, in uid order; nothing is written for none."""
        body = "".join(f"{uid}\t{json.dumps(rec, ensure_ascii=False)}\n" for uid, rec in records)
        if body:
            fsio.write_bytes(self.path(REJECTS), body.encode("utf-8"))

    def write_samples(self, records: dict) -> None:
        """``{stage/reason: {uid: record}}`` (``pipelines.engine.examples.PartSampler``)."""
        fsio.write_bytes(self.path(SAMPLES),
                         (json.dumps(records, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))

    def write_bands(self, records: np.ndarray) -> None:
        """MinHash band records [n, 2] (key, uid) of the part's survivors, sorted by shuffle bucket: the
        shuffle carries (part, rows) references to them, not the records (``pipelines.engine.dedupe.near``)."""
        fsio.write_bytes(self.path(BANDS), _npy_bytes(records))

    def write_summary(self, summary: PartSummary) -> None:
        """The done marker: write it after every other file of the part."""
        fsio.write_bytes(self.path(SUMMARY), summary.to_json())

    # ---- readers
    def read_docs(self) -> Docs:
        return Docs(*self._load_npz(DOCS, Docs._fields))

    def read_ids(self) -> list[str]:
        return json.loads(fsio.read_bytes(self.path(IDS)))

    def read_tokens(self) -> np.ndarray:
        return self._load(TOKENS)

    def read_exact(self) -> np.ndarray:
        return self._load(EXACT)

    def read_sigs(self) -> Sigs:
        return Sigs(*self._load_npz(SIGS, Sigs._fields))

    def read_emb(self) -> Embeddings:
        return Embeddings(*self._load_npz(EMB, Embeddings._fields))

    def read_rejects(self) -> list[tuple[int, str]]:
        """(uid, audit record as its JSON text) of the staged rejects; [] when there are none."""
        if not fsio.exists(self.path(REJECTS)):
            return []
        out = []
        for line in fsio.read_bytes(self.path(REJECTS)).decode("utf-8").splitlines():
            uid, rec = line.split("\t", 1)
            out.append((int(uid), rec))
        return out

    def read_samples(self) -> dict:
        return json.loads(fsio.read_bytes(self.path(SAMPLES)))

    def is_done(self) -> bool:
        return fsio.exists(self.path(SUMMARY))

    def done(self) -> Optional[PartSummary]:
        """The part's summary, or None when it is not done (no summary, or one this code cannot read)."""
        d = read_json(self.path(SUMMARY))
        if d is None:
            return None
        try:
            return PartSummary.from_dict(d)
        except (TypeError, ValueError):
            return None

    # ---- rows by seeking (the report's examples read a few documents of a few parts)
    def seekable(self, name: str) -> "Seekable":
        """``docs``/``sigs``/``emb`` (uids loaded, rows of offsets/sig/emb by seeking), ``tokens`` or ``bands``."""
        return Seekable(fsio.open(self.path(name)), name)


# ---------------------------------------------------------------------------------------------
# rows of a staged array, read by seeking
# ---------------------------------------------------------------------------------------------


class _Npy:
    """Rows of one ``.npy`` array inside an open file (at ``base``: 0 for a .npy file, the member's data offset
    in an uncompressed .npz), read by seeking: a duplicate's snippet costs a few KB, not its part's arrays."""

    def __init__(self, f: BinaryIO, base: int = 0):
        f.seek(base)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        self.shape, fortran, self.dtype = read_header(f)
        if fortran:
            raise ValueError("Fortran-ordered array")
        self.f, self.start = f, f.tell()
        self.row = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))

    def rows(self, i: int, n: int = 1) -> np.ndarray:
        n = max(0, min(n, self.shape[0] - i))
        self.f.seek(self.start + i * self.row)
        return np.frombuffer(self.f.read(n * self.row), dtype=self.dtype).reshape((n, *self.shape[1:]))


def _npz_members(f: BinaryIO) -> dict[str, int]:
    """Member name -> offset of its data for the uncompressed (``np.savez``) members of an open .npz."""
    out = {}
    with zipfile.ZipFile(f) as z:
        infos = [i for i in z.infolist() if i.compress_type == zipfile.ZIP_STORED]
    for info in infos:
        f.seek(info.header_offset)
        head = f.read(30)
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        out[info.filename[:-4] if info.filename.endswith(".npy") else info.filename] = (
            info.header_offset + 30 + name_len + extra_len)
    return out


_ROWS = {DOCS: "offsets", SIGS: "sig", EMB: "emb"}   # the array ``Seekable.rows`` reads in each .npz


class Seekable:
    """One staged file opened for reading rows: ``uid`` (the .npz files: loaded, 8 bytes per document; None for
    tokens.npy and bands.npy) and ``rows(i, n)`` of its data array (docs: offsets; sigs: sig; emb: emb; tokens:
    tokens; bands: records)."""

    def __init__(self, f: BinaryIO, name: str):
        self.f = f
        try:
            if name in (TOKENS, BANDS):
                self.uid, self._data = None, _Npy(f)
            elif name in _ROWS:
                members = _npz_members(f)
                uid = _Npy(f, members["uid"])
                self.uid = uid.rows(0, uid.shape[0])
                self._data = _Npy(f, members[_ROWS[name]])
            else:
                raise ValueError(f"{name!r} cannot be read by rows; expected one of {(TOKENS, BANDS, *_ROWS)}")
        except Exception:
            f.close()
            raise

    def rows(self, i: int, n: int = 1) -> np.ndarray:
        return self._data.rows(i, n)

    def close(self) -> None:
        self.f.close()


def staged_rows(plan, name: str, refs: Iterable[tuple[str, int, int, int]]) -> list[np.ndarray]:
    """Rows of one kind of staged file (``bands``, ``emb``, ...) by (source, part, first row, rows) references,
    in the references' order; each part's file is opened once and read by seeking. The dedupe stages' shuffles
    carry such references instead of the rows on the local runner (``pipelines.engine.dedupe.near, .semantic``)."""
    refs = list(refs)
    by_part: dict = {}
    for k, (source, part, start, n) in enumerate(refs):
        by_part.setdefault((source, part), []).append((start, n, k))
    out: list = [None] * len(refs)
    for (source, part), reads in sorted(by_part.items()):
        f = Part.of(plan, source, part).seekable(name)
        try:
            for start, n, k in sorted(reads):
                out[k] = f.rows(start, n)
        finally:
            f.close()
    return out


# ---------------------------------------------------------------------------------------------
# small JSON files of the source's staging (written stats of a part)
# ---------------------------------------------------------------------------------------------


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
