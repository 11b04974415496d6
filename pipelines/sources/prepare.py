"""Driver-side preparation of filter rules that need a model file or a sample of the source (``prepare`` hooks).

Why on the driver, once, before the build: what such a rule decides with must be fixed before any worker
starts and must be part of the config hash. ``fasttext_quality`` hashes its model (a changed model file
rebuilds the source instead of being resumed into it) and, with ``keep_top_fraction``, turns the fraction
into a score threshold computed from a sample of the source, so every worker applies the same threshold
and a re-run is byte-identical. The resolved values become the rule's parameters, which
``pipelines.engine.plan.config_hash`` already hashes.

The sample: up to ``n`` documents, read from the start of up to ``SAMPLE_FILES`` input files spread evenly
over the sorted file list (the same documents on every run), each put through the rules that come before
this one in the chain, so the threshold is a quantile of the documents the rule will actually judge.
PII masking and decontamination are not applied to the sample.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from contextlib import closing

from pipelines.filters import RULES
from pipelines.filters.compose import FilterChain
from pipelines.sources.readers import InputFile, read_file
from pipelines.records import Reject

SAMPLE_FILES = 64


class SampleContext:
    """What a ``prepare`` hook gets: where it is (for messages), a sample of its source, a way to report."""

    def __init__(self, cfg, files: Sequence[InputFile], before: FilterChain, where: str):
        self.cfg, self.files, self.before, self.where = cfg, list(files), before, where
        self.notes: list[str] = []

    def sample(self, n: int) -> list[str]:
        if not self.files:
            return []
        k = min(SAMPLE_FILES, len(self.files))
        picked = sorted({round(i * (len(self.files) - 1) / max(k - 1, 1)) for i in range(k)})
        per_file = math.ceil(n / len(picked))
        texts: list[str] = []
        for i in picked:
            taken = 0
            with closing(read_file(self.cfg, self.files[i])) as docs:
                for doc in docs:
                    if isinstance(doc, Reject) or self.before(doc.text, doc.meta) is not None:
                        continue
                    texts.append(doc.text)
                    taken += 1
                    if taken >= per_file or len(texts) >= n:
                        break
            if len(texts) >= n:
                break
        return texts

    def note(self, message: str) -> None:
        self.notes.append(message)
        print(f"[{self.cfg.name}] {self.where.rsplit('.', 1)[-1]}: {message}", flush=True)


def prepare_chain(cfg, files: Sequence[InputFile], where: str):
    """``cfg`` with every rule that has a ``prepare`` hook resolved (the config unchanged if none has)."""
    rules = list(cfg.chain.rules)
    if not any(RULES[r.name].prepare for r in rules):
        return cfg
    for i, r in enumerate(rules):
        hook = RULES[r.name].prepare
        if hook is None:
            continue
        ctx = SampleContext(cfg, files, FilterChain(tuple(rules[:i])), f"{where}.{cfg.name}.filters.{r.name}")
        rules[i] = dataclasses.replace(r, params=hook(dict(r.params), ctx))
    return dataclasses.replace(cfg, chain=FilterChain(tuple(rules)))


def prepare_sources(sources: Mapping, files: Mapping[str, Sequence[InputFile]], where: str) -> dict:
    """Every source's chain prepared (model hashes, computed thresholds); ConfigError names the rule."""
    return {n: prepare_chain(c, files[n], where) for n, c in sources.items()}


def prepared_params(chain: FilterChain) -> dict:
    """rule -> parameters of the rules that were prepared (the stats record shows what they resolved to)."""
    return {r.name: dict(r.params) for r in chain.rules if RULES[r.name].prepare is not None}
