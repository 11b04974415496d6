"""The fused per-document path: read -> PII mask -> decontaminate -> filter -> exact hash -> MinHash signature
-> embedding -> tokenize.

Why fused: a document's text is the heavy thing. Every step that needs the text runs here, in the worker
that parsed it, one part (a run of input files) at a time; what leaves the worker is compact: token ids,
hashes, signatures and counts written to the part's staging folder (``pipelines.staging``), and a small
summary record to the runner. So the runner never buffers or shuffles text (the local runner used to hold
the whole corpus in its driver), and a finished part survives a crash.

Each step has the shape of a datatrove step: a pure function of one document (or a batch) that keeps it
or turns it into a counted ``Reject``; ``process_part`` only chains them and keeps the books:
``read == malformed + decontaminated + filtered + len(docs)`` holds for every part, checked before its
summary is written.

PII masking (``pipelines.pii``, sources with ``pii: true``) runs first, so neither the filters, the dedupe
keys nor the shards ever see the original addresses. Decontamination (``pipelines.decontam``, the sources
YAML's top-level ``decontam:`` block) runs next, before the filters, so a removed document is counted as
``decontaminated`` whatever a filter would have said, and in spans mode the filters judge the cut text.
For every well-formed document, the metadata its chain's rules need and lack
(``pipelines.sanity.missing_requirements``) is counted into the summary's ``meta_missing``.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from typing import Optional

import numpy as np

from contract.stats import histogram
from pipelines.decontam import decontaminate
from pipelines.dedupe.exact import exact_key
from pipelines.pii import mask_pii
from pipelines.plan import BuildPlan, PartTask
from pipelines.readers import Meter, read_file
from pipelines.sanity import NEEDS_META, missing_requirements
from pipelines.schema import Document, Reject, reject
from pipelines.shards import reject_record
from pipelines.staging import PartFiles, save_npy, save_npz, write_json

BATCH_DOCS = 512
BATCH_CHARS = 4 << 20


class Tools:
    """Heavy per-worker objects, built once (``DoFn.setup``): tokenizer, MinHash signers, embedder."""

    def __init__(self, plan: BuildPlan):
        from pipelines.dedupe.minhash import SignatureSpec, Signer
        from tokenization import NeoXTokenizer

        self.tokenizer = NeoXTokenizer(raw=plan.tokenizer_json)
        self.signers = {n: Signer(SignatureSpec.from_config(c.dedupe.minhash))
                        for n, c in plan.sources.items() if c.dedupe.minhash}
        self._embedder = None
        # one eval index per decontam config per worker process (cached_index), built with the tools
        from pipelines.decontam import cached_index

        self.eval_index = {n: cached_index(c.decontam) for n, c in plan.sources.items() if c.decontam is not None}

    @property
    def embedder(self):
        if self._embedder is None:
            from pipelines.dedupe import semantic

            self._embedder = semantic.load_embedder("cpu")
        return self._embedder


class _Accumulator:
    """A part's kept-by-filter documents, in uid order, as compact arrays."""

    def __init__(self):
        self.uids: list[int] = []
        self.ids: list[str] = []
        self.nbytes: list[int] = []
        self.tokens: list[np.ndarray] = []
        self.exact: list[tuple[int, int]] = []
        self.sig_uids: list[int] = []
        self.sigs: list[np.ndarray] = []
        self.embs: list[np.ndarray] = []


def _flush(batch: list[Document], acc: _Accumulator, task: PartTask, plan: BuildPlan, tools: Tools) -> int:
    """Hash, sign, embed and tokenize one batch; returns its text bytes."""
    cfg = plan.sources[task.source]
    texts = [d.text for d in batch]
    nbytes = [len(t.encode("utf-8", "surrogatepass")) for t in texts]
    acc.uids += [d.uid for d in batch]
    acc.ids += [d.id for d in batch]
    acc.nbytes += nbytes
    if cfg.dedupe.exact:
        acc.exact += [exact_key(t) for t in texts]
    signer = tools.signers.get(task.source)
    if signer is not None:
        for d, t in zip(batch, texts):
            sig = signer.signature(t)
            if sig is not None:  # a document without a single word is never a near-duplicate
                acc.sig_uids.append(d.uid)
                acc.sigs.append(sig)
    if cfg.dedupe.semantic:
        from pipelines.dedupe import semantic

        sem = cfg.dedupe.semantic
        acc.embs.append(semantic.embed(tools.embedder, texts, sem.batch_size, sem.max_chars))
    acc.tokens += tools.tokenizer.encode_batch(texts, eos=True)
    return sum(nbytes)


def process_part(task: PartTask, plan: BuildPlan, tools: Tools, heartbeat=None) -> dict:
    """Run the fused path over one part and write its staging files; returns the part summary (also the
    part's done marker, written last)."""
    cfg = plan.sources[task.source]
    files = PartFiles(plan.part_staging(task.source, task.part))
    counts: Counter = Counter()     # (stage, reason, file) -> n: malformed, decontaminated, filtered
    rejects: list[tuple[int, dict]] = []   # (uid, audit record)
    pii: Counter = Counter()                # documents, emails, ips
    decontam: Counter = Counter()           # spans mode, kept documents: documents_cut, spans_removed
    by_eval: Counter = Counter()            # eval source -> contaminated documents (removed or cut)
    meta_missing: Counter = Counter()       # requirement -> documents lacking it
    rule_names = cfg.chain.names
    needs_meta = any(r in NEEDS_META for r in rule_names)
    index = tools.eval_index.get(task.source)
    acc = _Accumulator()
    batch: list[Document] = []
    chars = read = text_bytes = 0
    meter = Meter()
    for f in task.files:
        for item in read_file(cfg, f, meter):
            read += 1
            if isinstance(item, Reject):
                counts[("read", item.reason, f.name)] += 1
                if plan.write_rejects:
                    rejects.append((item.uid, reject_record(item)))
                continue
            if needs_meta:  # counted over every well-formed document: the share sanity.warnings_for reports
                for req in missing_requirements(item.meta, rule_names):
                    meta_missing[req] += 1
            if cfg.pii:
                text, n_emails, n_ips = mask_pii(item.text)
                if n_emails or n_ips:
                    pii["documents"] += 1
                    pii["emails"] += n_emails
                    pii["ips"] += n_ips
                    item = item._replace(text=text)
            if index is not None:
                dc = decontaminate(index, cfg.decontam.mode, item.text)
                if dc.contaminated:
                    by_eval[dc.eval_source] += 1
                    if dc.text is None:
                        counts[("decontam", "eval_overlap", "")] += 1
                        if plan.write_rejects:
                            rec = reject_record(reject(item, "decontam", "eval_overlap",
                                                       detail=f"{dc.eval_source}: {dc.ngram}"))
                            rec.update(eval_source=dc.eval_source, ngram=dc.ngram)
                            rejects.append((item.uid, rec))
                        continue
                    decontam["documents_cut"] += 1
                    decontam["spans_removed"] += dc.spans_removed
                    item = item._replace(text=dc.text)
            res = cfg.chain(item.text, item.meta)
            if res is not None:
                rule, value, detail = res
                counts[("filter", rule, "")] += 1
                if plan.write_rejects:
                    rejects.append((item.uid, reject_record(reject(item, "filter", rule, value, detail=detail))))
                continue
            batch.append(item)
            chars += len(item.text)
            if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
                text_bytes += _flush(batch, acc, task, plan, tools)
                batch, chars = [], 0
                if heartbeat:
                    heartbeat.update(docs=read, text_bytes=text_bytes, input_bytes=meter.bytes)
        if f.path.endswith(".parquet"):
            meter.bytes += f.size  # parquet is read by seeking; count the file when it is done
    if batch:
        text_bytes += _flush(batch, acc, task, plan, tools)
    n = len(acc.uids)
    if read != n + sum(counts.values()):
        raise RuntimeError(f"{task.source} part {task.part}: read {read} but kept {n} + rejected "
                           f"{sum(counts.values())}; this is a bug")
    lengths = np.fromiter((len(t) for t in acc.tokens), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    save_npy(files.tokens, np.concatenate(acc.tokens) if n else np.zeros(0, np.uint16))
    save_npz(files.docs, uid=np.asarray(acc.uids, dtype=np.int64), offsets=offsets,
             nbytes=np.asarray(acc.nbytes, dtype=np.int64))
    from contract import fsio

    fsio.write_bytes(files.ids, json.dumps(acc.ids, ensure_ascii=False).encode("utf-8"))
    if cfg.dedupe.exact:
        save_npy(files.exact, np.asarray(acc.exact, dtype=np.uint64).reshape(-1, 2))
    if task.source in tools.signers:
        width = tools.signers[task.source].spec.num_perm
        save_npz(files.sigs, uid=np.asarray(acc.sig_uids, dtype=np.int64),
                 sig=np.stack(acc.sigs) if acc.sigs else np.zeros((0, width), np.uint32))
    if cfg.dedupe.semantic:
        from pipelines.dedupe.semantic import EMBED_DIM

        save_npz(files.emb, uid=np.asarray(acc.uids, dtype=np.int64),
                 emb=np.concatenate(acc.embs) if acc.embs else np.zeros((0, EMBED_DIM), np.float32))
    if rejects:
        # "uid<TAB>record": the writer merges these with the dedupe rejects in uid order
        body = "".join(f"{uid}\t{json.dumps(rec, ensure_ascii=False)}\n" for uid, rec in rejects)
        fsio.write_bytes(files.rejects, body.encode("utf-8"))
    summary = {"source": task.source, "part": task.part, "read": read, "docs": n, "text_bytes": text_bytes,
               "input_bytes": task.input_bytes, "tokens": int(lengths.sum()),
               "counts": [[s, r, f, c] for (s, r, f), c in sorted(counts.items())], "finished": time.time(),
               "token_hist_before_dedupe": histogram(lengths),
               "pii": {k: int(pii[k]) for k in ("documents", "emails", "ips")},
               "decontam": {"by_eval": dict(sorted(by_eval.items())), "spans_removed": int(decontam["spans_removed"]),
                            "documents_cut": int(decontam["documents_cut"])},
               "meta_missing": dict(sorted(meta_missing.items()))}
    write_json(files.summary, summary)
    return summary


def cached_summary(task: PartTask, plan: BuildPlan) -> Optional[dict]:
    """The part's summary when an earlier run (same inputs and config) finished it."""
    return PartFiles(plan.part_staging(task.source, task.part)).done()
