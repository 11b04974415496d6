"""Bounded, deterministic example reservoirs for the HTML report (``pipelines.report.html``).

While a part's documents are processed, every document that is not kept is offered to a reservoir keyed by
``stage/reason`` (``filter/min_words``, ``read/bad_json``, ``decontam/eval_overlap``, ``near_dedupe/...``).
Each key keeps the ``K`` documents of smallest *priority*, a 64-bit hash of (key, uid): a bottom-k sample,
so the chosen documents depend only on which documents were rejected, never on worker count, bundling or
order, and merging two reservoirs is "keep the k smallest priorities of both". A reservoir holds at most
``K`` records per key, and a record's text (the first ``SNIPPET_CHARS`` characters) is cut only when the
document enters it, so the cost per document is one hash and a comparison.

Where the pieces live (they never cross the runner in bulk):

- ``pipelines.engine.process``: a ``PartSampler`` per part offers malformed, decontaminated and filtered documents;
  its records go to the part's staging file ``samples.json``, and only the chosen (priority, uid) pairs
  and byte counts ride in the part summary.
- ``pipelines.engine.shards.write_part``: the dedupe removals of the part (they carry the keeper's uid and the
  stage's value) give the dedupe picks, without text: (priority, uid, id, keeper).
- at finalize (``write_examples``): the global ``K`` per key are chosen from the parts' picks; only the
  samples.json of parts holding a winner are read, and duplicate pairs are decoded from the staged tokens
  of both documents (at most ``2 K`` per dedupe stage), with the pair's estimated Jaccard (MinHash
  signatures) or cosine (embeddings). The result is ``OUT/examples/<source>.json``.

The texts of rejected documents are shown after PII masking when the source masks PII (the report must
not bring back what the shards do not hold).
"""
from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from typing import Callable, Iterable, Mapping, Optional

import numpy as np
import xxhash

from contract import fsio, layout
from contract.tokens import EOS
from pipelines.engine.staging import DOCS, EMB, SIGS, TOKENS, Part, Seekable
from pipelines.records import reject_record

K = 5                    # examples per (source, stage/reason)
SNIPPET_CHARS = 300      # characters of text per example
SNIPPET_TOKENS = 160     # tokens decoded for a duplicate's snippet (enough for SNIPPET_CHARS)
EXAMPLES_FORMAT = "mptdata.examples/1"
EXAMPLE_FIELDS = ("id", "loc", "value", "detail", "eval_source", "ngram")   # of the audit record (records.reject_record)


def priority(key: str, uid: int) -> int:
    """The document's rank in ``key``'s reservoir (smaller is kept): a seedless 64-bit hash."""
    return xxhash.xxh64_intdigest(f"{key}\x00{int(uid)}")


def snippet(text: str, chars: int = SNIPPET_CHARS) -> str:
    return text if len(text) <= chars else text[:chars]


class Reservoir:
    """Per key, the ``k`` items of smallest priority (a bottom-k sample; ties cannot happen for distinct uids)."""

    def __init__(self, k: int = K):
        self.k = k
        self._heaps: dict[str, list] = defaultdict(list)   # max-heap by priority: (-prio, uid, item)

    def offer(self, key: str, uid: int, make: Callable[[], dict]) -> bool:
        """Offer document ``uid``; ``make()`` (which may cut text) runs only when the document enters."""
        prio = priority(key, uid)
        heap = self._heaps[key]
        if len(heap) < self.k:
            heapq.heappush(heap, (-prio, uid, make()))
            return True
        if prio < -heap[0][0]:
            heapq.heapreplace(heap, (-prio, uid, make()))
            return True
        return False

    def picks(self) -> dict[str, list[list[int]]]:
        """``{key: [[priority, uid], ...]}`` sorted by priority: what the part summary carries."""
        return {key: [[-p, u] for p, u, _ in sorted(h, reverse=True)] for key, h in sorted(self._heaps.items())}

    def records(self) -> dict[str, dict[str, dict]]:
        """``{key: {uid: record}}`` (uids as strings: JSON)."""
        return {key: {str(u): item for _p, u, item in sorted(h, reverse=True)} for key, h in sorted(self._heaps.items())}


def merge_picks(lists: Iterable[Iterable[list]], k: int = K) -> list[list]:
    """The ``k`` entries of smallest priority (first element) of several pick lists, in priority order."""
    return heapq.nsmallest(k, (p for lst in lists for p in lst), key=lambda p: (p[0], p[1]))


def _ngram_pattern(ngram: str):
    """The eval n-gram (lower-cased ``\\w+`` words, as ``pipelines.steps.decontam`` matches) in the original text."""
    import re

    return re.compile(r"(?<!\w)" + r"\W+".join(re.escape(w) for w in ngram.split()) + r"(?!\w)", re.IGNORECASE)


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class PartSampler:
    """One part's reservoir of not-kept documents and the text bytes each stage removed."""

    def __init__(self, cfg, k: int = K):
        self.pii = bool(getattr(cfg, "pii", False))
        self.res = Reservoir(k)
        self.read_bytes = 0
        self.bytes: Counter = Counter()

    def read(self, doc) -> None:
        """A parsed document (before any step): counts its text bytes."""
        self.read_bytes += _nbytes(doc.text)

    def reject(self, r, doc) -> None:
        """``r``: the Reject; ``doc``: the Document as read (or the Reject itself for malformed input)."""
        key = f"{r.stage}/{r.reason}"
        text = getattr(doc, "text", None)
        if text is not None:
            self.bytes[key] += _nbytes(text)

        def make() -> dict:
            rec = {k: v for k, v in reject_record(r).items() if k in EXAMPLE_FIELDS}
            if text is not None:
                ngram = rec.get("ngram") if r.stage == "decontam" else None
                shown = text if ngram else text[: SNIPPET_CHARS * 4]
                if self.pii:
                    from pipelines.steps.pii import mask_pii

                    shown = mask_pii(shown)[0]
                rec["text"] = snippet(shown)
                m = _ngram_pattern(ngram).search(shown) if ngram else None
                if m:  # the window around the eval n-gram, and where it is in the window
                    lo = max(0, min(m.start() - 80, len(shown) - SNIPPET_CHARS))
                    rec["text"], rec["text_offset"] = shown[lo:lo + SNIPPET_CHARS], lo
                    rec["match"] = [m.start() - lo, min(m.end() - lo, SNIPPET_CHARS)]
                rec["chars"] = len(text)
            return rec

        self.res.offer(key, r.uid, make)

    def save(self, part) -> dict:
        """Write the records to the part's staging ``samples.json`` (``pipelines.engine.staging.Part``; only when
        there are any); return what the part summary carries: picks and byte counts."""
        records = self.res.records()
        if records:
            part.write_samples(records)
        return {"read_bytes": int(self.read_bytes), "bytes": dict(sorted(self.bytes.items())), "picks": self.res.picks()}


def dedupe_picks(won, ids_by_uid: Mapping[int, str], nbytes_by_uid: Mapping[int, int], k: int = K) -> dict:
    """A part's dedupe removals (``pipelines.engine.shards.Removal``, one per document) -> the picks the part's
    written stats carry: per ``stage/reason`` the ``k`` of smallest priority as
    ``[priority, uid, id, keeper_uid, keeper_id, value]``, and the bytes each removed."""
    res: dict[str, list] = defaultdict(list)
    nbytes: Counter = Counter()
    for r in won:
        key = f"{r.stage}/{r.reason}"
        nbytes[key] += int(nbytes_by_uid.get(r.uid, 0))
        res[key].append([priority(key, r.uid), int(r.uid), ids_by_uid.get(r.uid, ""), int(r.keeper_uid),
                         r.keeper_id, float(r.value)])
    picks = {key: merge_picks([v], k) for key, v in sorted(res.items())}
    return {"bytes": dict(sorted(nbytes.items())), "picks": picks}


# ---------------------------------------------------------------------------------------------
# finalize: the source's examples file
# ---------------------------------------------------------------------------------------------


class _StagedParts:
    """Rows of staged part files, read by seeking (at most a few parts per source are opened)."""

    def __init__(self, plan):
        self.plan = plan
        self._files: dict[tuple, Optional[Seekable]] = {}
        self._ids: dict[tuple, Optional[list]] = {}
        self._tok = None

    def _file(self, source: str, part: int, name: str) -> Optional[Seekable]:
        """One staged file of a part opened for rows (``staging.DOCS``, ``SIGS``, ``EMB`` or ``TOKENS``)."""
        key = (source, part, name)
        if key not in self._files:
            try:
                self._files[key] = Part.of(self.plan, source, part).seekable(name)
            except Exception:  # noqa: BLE001 - staging of another source may already be gone (cross-source)
                self._files[key] = None
        return self._files[key]

    def _row(self, uid: int, name: str) -> tuple[Optional[Seekable], Optional[int]]:
        try:
            source, part = self.plan.part_of_uid(uid)
        except Exception:  # noqa: BLE001 - a uid of a source not in this build
            return None, None
        f = self._file(source, part, name)
        if f is None:
            return None, None
        i = int(np.searchsorted(f.uid, uid))
        if i >= len(f.uid) or int(f.uid[i]) != uid:
            return f, None
        return f, i

    def doc_id(self, uid: int) -> str:
        """The document's id (ids.json of its part); "" when its staging is gone."""
        _docs, i = self._row(uid, DOCS)
        if i is None:
            return ""
        key = self.plan.part_of_uid(uid)
        if key not in self._ids:
            try:
                self._ids[key] = Part.of(self.plan, *key).read_ids()
            except Exception:  # noqa: BLE001
                self._ids[key] = None
        ids = self._ids[key]
        return ids[i] if ids is not None else ""

    def text(self, uid: int) -> Optional[str]:
        docs, i = self._row(uid, DOCS)
        if i is None:
            return None
        tokens = self._file(*self.plan.part_of_uid(uid), TOKENS)
        if tokens is None:
            return None
        lo, hi = (int(x) for x in docs.rows(i, 2))
        ids = tokens.rows(lo, min(hi - lo, SNIPPET_TOKENS)).tolist()
        if ids and hi - lo <= SNIPPET_TOKENS and ids[-1] == EOS:
            ids = ids[:-1]       # the EOS every document ends with
        if self._tok is None:
            from tokenization import NeoXTokenizer

            self._tok = NeoXTokenizer(raw=self.plan.tokenizer_json, verify=False)
        return snippet(self._tok.decode(ids).rstrip("\ufffd"))

    def close(self) -> None:
        for f in self._files.values():
            if f is not None:
                f.close()
        self._files.clear()

    def vector(self, uid: int, name: str) -> Optional[np.ndarray]:
        """The document's MinHash signature (``staging.SIGS``) or embedding (``staging.EMB``)."""
        f, i = self._row(uid, name)
        if i is None:
            return None
        return np.asarray(f.rows(i, 1)[0])


def _pair_score(stage: str, a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[float]:
    if a is None or b is None:
        return None
    if stage == "near_dedupe":
        return float(np.mean(a == b))
    if stage == "semantic_dedupe":
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        return float(np.dot(a, b) / (na * nb)) if na and nb else None
    return None


def _dedupe_examples(staged: _StagedParts, dd_by_key: Mapping[str, list], examples: dict, k: int) -> None:
    """Per dedupe stage the k picks of smallest priority, both sides decoded from the staged tokens, with the
    pair's estimated Jaccard (signatures) or cosine (embeddings)."""
    for key in sorted(dd_by_key):
        stage = key.split("/", 1)[0]
        what = {"near_dedupe": SIGS, "semantic_dedupe": EMB}.get(stage)
        rows = []
        for _pr, uid, doc_id, keeper_uid, keeper_id, value, _part in dd_by_key[key]:
            row = {"id": doc_id, "value": value, "keeper_id": keeper_id or staged.doc_id(keeper_uid),
                   "text": staged.text(uid), "keeper_text": staged.text(keeper_uid)}
            if what:
                score = _pair_score(stage, staged.vector(uid, what), staged.vector(keeper_uid, what))
                if score is not None:
                    row["pair_score"] = round(score, 6)
            rows.append(row)
        examples[key] = rows


def build_examples(plan, source: str, parts: list[Mapping], k: int = K) -> dict:
    """The examples record of one source from its parts' written stats (``pipelines.engine.shards.write_part``)."""
    read_bytes = 0
    nbytes: Counter = Counter()
    by_key: dict[str, list] = defaultdict(list)       # key -> [[prio, uid, part], ...]
    dd_by_key: dict[str, list] = defaultdict(list)    # key -> [[prio, uid, id, keeper_uid, keeper_id, value, part]]
    have_samples = True
    for p in parts:
        s = p.get("samples")
        if s is None:  # a part staged by an older build: no examples from it
            have_samples = False
            continue
        read_bytes += int(s.get("read_bytes", 0))
        nbytes.update(s.get("bytes") or {})
        for key, lst in (s.get("picks") or {}).items():   # merged as they come: memory k per key
            by_key[key] = merge_picks([by_key[key], [[pr, uid, p["part"]] for pr, uid in lst]], k)
        d = p.get("dedupe_samples") or {}
        nbytes.update(d.get("bytes") or {})
        for key, lst in (d.get("picks") or {}).items():
            dd_by_key[key] = merge_picks([dd_by_key[key], [[*x, p["part"]] for x in lst]], k)
    examples: dict[str, list] = {}
    # per-document rejects: read only the samples.json of parts that hold a winner
    wanted: dict[int, set] = defaultdict(set)
    chosen = dict(by_key)
    for key, lst in chosen.items():
        for _pr, _uid, part in lst:
            wanted[part].add(key)
    loaded: dict[int, dict] = {}
    for part in sorted(wanted):
        try:
            loaded[part] = Part.of(plan, source, part).read_samples()
        except Exception:  # noqa: BLE001 - a resumed part from older code has no samples file
            loaded[part] = {}
    for key in sorted(chosen):
        rows = []
        for _pr, uid, part in chosen[key]:
            rec = (loaded.get(part) or {}).get(key, {}).get(str(uid))
            if rec is not None:
                rows.append(rec)
        examples[key] = rows
    staged = _StagedParts(plan)
    try:
        _dedupe_examples(staged, dd_by_key, examples, k)
    finally:
        staged.close()
    cfg = plan.sources[source]
    thresholds = {r.name: dict(sorted(r.params.items())) for r in cfg.chain.rules}
    return {"format": EXAMPLES_FORMAT, "source": source, "k": k, "snippet_chars": SNIPPET_CHARS,
            "complete": have_samples, "read_bytes": int(read_bytes),
            "bytes": {key: int(v) for key, v in sorted(nbytes.items())},
            "thresholds": json.loads(json.dumps(thresholds, default=str)),
            "pii_masked_in_examples": bool(cfg.pii), "examples": examples}


def write_examples(plan, source: str, parts: list[Mapping]) -> None:
    """``OUT/examples/<source>.json`` (before the source's stats file, which is written last)."""
    rec = build_examples(plan, source, parts)
    fsio.write_bytes(layout.examples_path(plan.out, source),
                     (json.dumps(rec, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
