"""Per-document steps, datatrove style: each is a small unit of one shape, ``step(doc) -> Document | Reject``
(the document kept, possibly rewritten, or a counted Reject), with its own stats.

``document_steps`` composes the chain a source's documents go through before the batch work (hashes,
signatures, embeddings, tokens) in ``pipelines.engine.process``:

    count missing metadata -> PII mask -> decontaminate -> quality filters

PII masking runs first so neither the filters, the dedupe keys nor the shards ever see the original
addresses; decontamination runs before the filters so a removed document counts as ``decontaminated``
whatever a filter would have said, and in spans mode the filters judge the cut text.
"""
from __future__ import annotations

from collections import Counter
from typing import Union

from pipelines.steps.decontam import decontaminate
from pipelines.steps.pii import mask_pii
from pipelines.filters.warnings import requirements, satisfied
from pipelines.records import Document, EvalOverlap, Reject, reject

Outcome = Union[Document, Reject]


class Step:
    """A per-document step; ``stats`` is its own counter (summed into the part summary)."""

    def __init__(self):
        self.stats: Counter = Counter()

    def __call__(self, doc: Document) -> Outcome:
        raise NotImplementedError


class CountMissingMeta(Step):
    """Counts, per requirement, the documents lacking metadata a rule of the chain needs (never rejects):
    the share ``pipelines.filters.warnings.warnings_for`` turns into a warning."""

    def __init__(self, rule_names):
        super().__init__()
        self.requirements = requirements(rule_names)   # as the rules registered them (``needs_meta``)

    def __call__(self, doc: Document) -> Outcome:
        for req in self.requirements:
            if not satisfied(doc.meta, req):
                self.stats[req] += 1
        return doc


class MaskPII(Step):
    """E-mail and public IP addresses replaced by FineWeb's placeholders (``pipelines.steps.pii``)."""

    def __call__(self, doc: Document) -> Outcome:
        text, n_emails, n_ips = mask_pii(doc.text)
        if not (n_emails or n_ips):
            return doc
        self.stats["documents"] += 1
        self.stats["emails"] += n_emails
        self.stats["ips"] += n_ips
        return doc._replace(text=text)


class Decontaminate(Step):
    """Documents sharing an n-gram with the evaluation texts: removed (document mode) or cut (spans mode)."""

    def __init__(self, index, mode: str):
        super().__init__()
        self.index, self.mode = index, mode
        self.by_eval: Counter = Counter()

    def __call__(self, doc: Document) -> Outcome:
        dc = decontaminate(self.index, self.mode, doc.text)
        if not dc.contaminated:
            return doc
        self.by_eval[dc.eval_source] += 1
        if dc.text is None:
            return reject(doc, "decontam", "eval_overlap", detail=EvalOverlap(dc.eval_source, dc.ngram))
        self.stats["documents_cut"] += 1
        self.stats["spans_removed"] += dc.spans_removed
        return doc._replace(text=dc.text)


class Filter(Step):
    """The source's quality-filter chain: the first rule that fails names the reason. ``rule_stats``: the
    counters of rules with a tally hook (rule -> group -> key -> n, e.g. detected languages)."""

    def __init__(self, chain):
        super().__init__()
        self.chain = chain
        self.rule_stats: dict = {}
        self._tally = self.rule_stats if any(r.tally is not None for r in chain.rules) else None

    def __call__(self, doc: Document) -> Outcome:
        res = self.chain(doc.text, doc.meta, self._tally)
        if res is None:
            return doc
        rule, value, detail = res
        return reject(doc, "filter", rule, value, detail=detail)


def document_steps(cfg, eval_index=None) -> list[Step]:
    """The chain for one source's config (``pipelines.sources.config.SourceConfig``)."""
    steps: list[Step] = []
    if requirements(cfg.chain.names):
        steps.append(CountMissingMeta(cfg.chain.names))
    if cfg.pii:
        steps.append(MaskPII())
    if eval_index is not None:
        steps.append(Decontaminate(eval_index, cfg.decontam.mode))
    steps.append(Filter(cfg.chain))
    return steps


class Chain:
    """A source's steps and the observers of their outcomes, applied to what a reader yields.

    ``chain(item)``: a Document goes through the steps until one rejects it (the outcome is the document, possibly
    rewritten, or that Reject); a Reject from the reader (malformed input) passes as it is. Each observer sees
    every document before the steps (``read(doc)``) and every Reject with the document as read (``reject(r,
    doc)``; ``doc`` is the Reject itself for malformed input), e.g. the report's example reservoir
    (``pipelines.engine.examples.PartSampler``), so no caller threads it through the steps by hand."""

    def __init__(self, steps: list[Step], observers=()):
        self.steps = steps
        self.observers = tuple(observers)

    def __call__(self, item: Outcome) -> Outcome:
        doc = item
        if not isinstance(item, Reject):
            for o in self.observers:
                o.read(item)
            for step in self.steps:
                item = step(item)
                if isinstance(item, Reject):
                    break
        if isinstance(item, Reject):
            for o in self.observers:
                o.reject(item, doc)
        return item


def filter_stats(steps: list[Step]) -> dict:
    """The tally counters of the filter rules (rule -> group -> key -> n), for the part summary."""
    out: dict = {}
    for s in steps:
        if isinstance(s, Filter):
            for rule, groups in s.rule_stats.items():
                for group, counts in groups.items():
                    dest = out.setdefault(rule, {}).setdefault(group, {})
                    for k, n in counts.items():
                        dest[k] = dest.get(k, 0) + n
    return {r: {g: dict(sorted(c.items())) for g, c in sorted(gs.items())} for r, gs in sorted(out.items())}


def step_stats(steps: list[Step], kind: type) -> Counter:
    return sum((s.stats for s in steps if isinstance(s, kind)), Counter())
