"""The fused per-document path: read -> PII mask -> decontaminate -> filter -> exact hash -> MinHash signature
-> embedding -> tokenize.

Why fused: a document's text is the heavy thing. Every step that needs the text runs here, in the worker
that parsed it, one part (a run of input files) at a time; what leaves the worker is compact: token ids,
hashes, signatures and counts written to the part's staging folder (``pipelines.engine.staging``), and a small
summary record to the runner. So the runner never buffers or shuffles text (the local runner used to hold
the whole corpus in its driver), and a finished part survives a crash.

Each per-document step (``pipelines.steps``) has one shape, ``step(doc) -> Document | Reject``, with its own
stats; the batch work after them (hash, sign, embed, tokenize) is ``_flush``. ``process_part`` only chains
them and keeps the books:
``read == malformed + decontaminated + filtered + len(docs)`` holds for every part, checked before its
summary is written.

The order of the per-document steps, and why, is in ``pipelines.steps.chain``; the report's example reservoir
(``pipelines.engine.examples``) observes the chain.
"""
from __future__ import annotations

import time
from collections import Counter

import numpy as np

from contract.stats import histogram
from contract.tokens import TOKEN_DTYPE
from pipelines.dedupe.exact import exact_key
from pipelines.engine.plan import BuildPlan, PartTask
from pipelines.sources.readers import Meter, read_file
from pipelines.engine.examples import PartSampler
from pipelines.records import Document, Reject, reject_record
from pipelines.engine.staging import Docs, Embeddings, Part, PartSummary, Sigs
from pipelines.steps.chain import (
    Chain,
    CountMissingMeta,
    Decontaminate,
    MaskPII,
    document_steps,
    filter_stats,
    step_stats,
)

BATCH_DOCS = 512
BATCH_CHARS = 4 << 20


class Tools:
    """Heavy per-worker objects, built once (``DoFn.setup``): tokenizer, MinHash signers, embedder."""

    def __init__(self, plan: BuildPlan):
        from pipelines.dedupe.minhash import Signer
        from tokenization import NeoXTokenizer

        self.tokenizer = NeoXTokenizer(raw=plan.tokenizer_json)
        self.signers = {n: Signer(spec) for n, spec in plan.minhash_specs.items()}
        self.plan = plan
        self._embedders: dict = {}
        # one eval index per decontam config per worker process (cached_index), built with the tools
        from pipelines.sources.evals import cached_index

        self.eval_index = {n: cached_index(c.decontam) for n, c in plan.sources.items() if c.decontam is not None}

    def embedder(self, source: str):
        """The source's SemDedup embedder, loaded on first use and shared by sources naming the same one."""
        from pipelines import worker_imports
        from pipelines.artifacts import shipped_table
        from pipelines.dedupe.embed import STATIC_MODEL, load_embedder

        sem = self.plan.sources[source].dedupe.semantic
        key = (sem.model, sem.device, sem.gpu_precision)
        if key not in self._embedders:
            worker_imports.ensure()  # torch / transformers: imported whole, never beside the worker's own import
            table = None
            if sem.model == STATIC_MODEL and self.plan.semdedup_table:  # the driver's, never distilled here
                table = shipped_table(self.plan.semdedup_table, self.plan.semdedup_table_sha256)
            self._embedders[key] = load_embedder(sem.model, sem.device, threads=1, precision=sem.gpu_precision,
                                                 table=table)
        return self._embedders[key]


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
    if signer is not None:  # a document without a single word gets no signature: never a near-duplicate
        rows, sigs = signer.sign_batch(texts)
        acc.sig_uids += [batch[r].uid for r in rows.tolist()]
        acc.sigs.append(sigs)
    if cfg.dedupe.semantic:
        sem = cfg.dedupe.semantic
        acc.embs.append(tools.embedder(task.source).embed(texts, sem.batch_size, sem.max_chars))
    acc.tokens += tools.tokenizer.encode_batch(texts, eos=True)
    return sum(nbytes)


def process_part(task: PartTask, plan: BuildPlan, tools: Tools, heartbeat=None) -> PartSummary:
    """Run the fused path over one part and write its staging files; returns the part summary (also the
    part's done marker, written last)."""
    cfg = plan.sources[task.source]
    files = Part.of(plan, task.source, task.part)
    counts: Counter = Counter()     # (stage, reason, file) -> n: malformed, decontaminated, filtered
    rejects: list[tuple[int, dict]] = []   # (uid, audit record)
    steps = document_steps(cfg, tools.eval_index.get(task.source))
    sampler = PartSampler(cfg)     # bounded examples of not-kept documents for the report (pipelines.engine.examples)
    chain = Chain(steps, observers=[sampler])
    acc = _Accumulator()
    batch: list[Document] = []
    chars = read = text_bytes = 0
    meter = Meter()
    for f in task.files:
        for item in read_file(cfg, f, meter):
            read += 1
            item = chain(item)
            if isinstance(item, Reject):
                counts[(item.stage, item.reason, f.name if item.stage == "read" else "")] += 1
                if plan.write_rejects:
                    rejects.append((item.uid, reject_record(item)))
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
    pii, decontam = step_stats(steps, MaskPII), step_stats(steps, Decontaminate)
    by_eval = sum((s.by_eval for s in steps if isinstance(s, Decontaminate)), Counter())
    if read != n + sum(counts.values()):
        raise RuntimeError(f"{task.source} part {task.part}: read {read} but kept {n} + rejected "
                           f"{sum(counts.values())}; this is a bug")
    lengths = np.fromiter((len(t) for t in acc.tokens), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    files.write_tokens(np.concatenate(acc.tokens) if n else np.zeros(0, TOKEN_DTYPE))
    files.write_docs(Docs(uid=np.asarray(acc.uids, dtype=np.int64), offsets=offsets,
                          nbytes=np.asarray(acc.nbytes, dtype=np.int64)))
    files.write_ids(acc.ids)
    if cfg.dedupe.exact:
        files.write_exact(np.asarray(acc.exact, dtype=np.uint64).reshape(-1, 2))
    if task.source in tools.signers:
        width = tools.signers[task.source].spec.num_perm
        files.write_sigs(Sigs(uid=np.asarray(acc.sig_uids, dtype=np.int64),
                              sig=np.concatenate(acc.sigs) if acc.sigs else np.zeros((0, width), np.uint32)))
    if cfg.dedupe.semantic:
        from pipelines.dedupe.embed import EMBED_DIM

        files.write_emb(Embeddings(uid=np.asarray(acc.uids, dtype=np.int64),
                                   emb=np.concatenate(acc.embs) if acc.embs else np.zeros((0, EMBED_DIM), np.float32)))
    files.write_rejects(rejects)   # the writer merges these with the dedupe rejects in uid order
    summary = PartSummary(
        source=task.source, part=task.part, read=read, docs=n, text_bytes=text_bytes, input_bytes=task.input_bytes,
        tokens=int(lengths.sum()), counts=[[s, r, f, c] for (s, r, f), c in sorted(counts.items())],
        finished=time.time(), token_hist_before_dedupe=histogram(lengths),
        pii={k: int(pii[k]) for k in ("documents", "emails", "ips")},
        decontam={"by_eval": dict(sorted(by_eval.items())), "spans_removed": int(decontam["spans_removed"]),
                  "documents_cut": int(decontam["documents_cut"])},
        meta_missing=dict(sorted(step_stats(steps, CountMissingMeta).items())),
        filter_stats=filter_stats(steps),
        samples=sampler.save(files))
    files.write_summary(summary)
    return summary


def cached_summary(task: PartTask, plan: BuildPlan) -> PartSummary | None:
    """The part's summary when an earlier run (same inputs and config) finished it."""
    return Part.of(plan, task.source, task.part).done()
