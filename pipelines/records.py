"""The records every layer shares, at the bottom of ``pipelines/``: Document (what a reader yields), Reject (why
one is not kept) and its audit record, Removal (a dedupe stage's verdict), and the uid layout.

Pure (no Beam): documents never travel through the runner (``pipelines.engine.process`` handles them where they
are read), so these need no coder; what the runner carries is compact (``Removal``, part summaries, key blobs).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Union

# uid layout (fits a signed int64): 6 bits source index | 20 bits file index | 37 bits line/row.
# The smallest uid of a duplicate cluster is the keeper, so the source index doubles as the source
# priority for cross-source dedupe (registry order) and, within a source, the earliest file/line wins.
SOURCE_BITS, FILE_BITS, LINE_BITS = 6, 20, 37
MAX_FILES = 1 << FILE_BITS
MAX_LINES = 1 << LINE_BITS


def make_uid(source_index: int, file_index: int, line: int) -> int:
    if not (0 <= source_index < (1 << SOURCE_BITS)):
        raise ValueError(f"source index {source_index} out of range")
    if not (0 <= file_index < MAX_FILES):
        raise ValueError(f"too many input files for one source (max {MAX_FILES}); merge inputs")
    if not (0 <= line < MAX_LINES):
        raise ValueError(f"line/row {line} out of range (max {MAX_LINES})")
    return (source_index << (FILE_BITS + LINE_BITS)) | (file_index << LINE_BITS) | line


def split_uid(uid: int) -> tuple[int, int, int]:
    return (uid >> (FILE_BITS + LINE_BITS), (uid >> LINE_BITS) & (MAX_FILES - 1), uid & (MAX_LINES - 1))


class Document(NamedTuple):
    """One input document.

    uid: unique int64 (see make_uid), the join key for every dedupe stage and the sort key of the
         output shards (so output order is deterministic and independent of bundling).
    id:  the user-facing id: the id_field value when configured, else "<file>:<line>" (1-based line).
    loc: "<file>:<line>" always, for error messages and audit records.
    meta: small string metadata (url, lang, path, title ...) that filters may use.
    """

    uid: int
    id: str
    source: str
    text: str
    loc: str
    meta: Mapping[str, str]


class EvalOverlap(NamedTuple):
    """Why decontamination removed a document (a Reject's ``detail``): the eval source and the n-gram they share.
    Its audit record carries both fields and, as ``detail``, the text ``"<eval_source>: <ngram>"``."""

    eval_source: str
    ngram: str

    def __str__(self) -> str:
        return f"{self.eval_source}: {self.ngram}"


class Reject(NamedTuple):
    """A document that is not kept, with why. Every non-kept document yields exactly one Reject.

    stage: "read" (malformed input), "decontam" (shares an n-gram with eval data), "filter", "exact_dedupe",
           "near_dedupe", "semantic_dedupe".
    reason: rule / error name (e.g. "bad_json", "min_words", "exact_duplicate").
    value: measured value that triggered the rule (NaN when not applicable).
    duplicate_of: id of the kept document of the cluster (dedupe stages only, else "").
    detail: a human sentence, or an ``EvalOverlap`` (stage "decontam").
    """

    uid: int
    id: str
    source: str
    stage: str
    reason: str
    loc: str
    value: float
    duplicate_of: str
    detail: Union[str, EvalOverlap]


def reject(doc: Document, stage: str, reason: str, value: float = float("nan"),
           duplicate_of: str = "", detail: Union[str, EvalOverlap] = "") -> Reject:
    return Reject(doc.uid, doc.id, doc.source, stage, reason, doc.loc, float(value), duplicate_of, detail)


def reject_record(r: Reject) -> dict:
    """The audit record of a Reject (``OUT/rejects/<source>/*.jsonl`` with --write-rejects; the report's examples
    take their fields from it)."""
    rec = {"id": r.id, "source": r.source, "stage": r.stage, "reason": r.reason, "loc": r.loc}
    if r.stage.endswith("dedupe"):
        rec["duplicate_of"] = r.duplicate_of
    if not math.isnan(r.value):
        rec["value"] = r.value
    if r.detail:
        rec["detail"] = str(r.detail)
    if isinstance(r.detail, EvalOverlap):
        rec["eval_source"], rec["ngram"] = r.detail
    return rec


class Removal(NamedTuple):
    """A dedupe stage's verdict on one document (compact: this, not the text, is what gets shuffled)."""

    uid: int
    stage: str          # exact_dedupe | near_dedupe | semantic_dedupe
    reason: str
    keeper_uid: int
    value: float
    detail: str
    keeper_id: str = ""  # filled in by the dedupe stages' last step (the keeper's part knows its id)


def get_path(record: Mapping[str, Any], dotted: str) -> Any:
    """``record['a']['b']`` for ``dotted`` 'a.b' (a text_field/id_field path); KeyError(dotted) when absent."""
    cur: Any = record
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur
