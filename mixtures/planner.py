"""The mixture planner: ratios + measured documents + a token budget -> what each stream contains.

Pure logic on numpy arrays (no I/O), so every number in a manifest can be checked by a test.

Vocabulary. A *stream* is one (part, source) pair; it becomes one packed MDS dataset and one entry of
``streams.yaml``. A stream's *eligible* documents are the source's documents that its part selects
(all, or the long ones). Its *share* is its weight inside its part and its *weight* is
``part weight x share``, its fraction of the whole mixture. ``choose`` is the number of ``seq_len``
samples streaming draws from it per epoch; the mixture's budget is ``sum(choose) * seq_len`` tokens.

How a budget becomes samples (why it is done this way):

* ``choose`` values come from largest-remainder rounding of ``N * weight`` over all streams at once,
  with ``N = round(budget / seq_len)``: the realized share of every stream is within ``1/N`` of its plan
  and the total is exactly ``N``.
* A stream needing fewer tokens than it has (epochs < 1) is *downsampled at packing time*: a seeded
  random subset of its documents, just large enough for ``choose`` samples, is packed (at full scale
  this keeps mC4's 0.14 epoch from costing a copy of all of mC4). A stream needing more (epochs > 1) is
  packed once in full and *upsampled by repetition* through streaming's ``choose`` (``choose >`` packed
  samples), so no repeated data is written.
* Streams that cannot fill one sample (a missing source, or no long documents) are dropped with a
  reason, and the remaining shares of their part are renormalized; a part left empty is dropped and the
  part weights are renormalized. Nothing is dropped silently: every drop is in ``Plan.dropped``.
* Demo scale (``demo=True``, no explicit budget): the budget is the largest one the data can supply
  while no source is repeated more than at full scale (``max(1, full-scale epochs)``; long parts: each
  long document once), raised if needed so every part gets at least ``DEMO_MIN_SAMPLES_PER_PART``
  samples, so that proportions are resolvable to well under one point. If that floor forces
  repetition, the affected streams say so in their notes.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from contract.registry import SOURCES
from mixtures.spec import MixtureSpec, PartSpec

DEMO_MIN_SAMPLES_PER_PART = 256


def stream_name(part: str, source: str) -> str:
    """Key of a stream in streams.yaml (``__`` keeps it a plain identifier for OmegaConf overrides)."""
    return f"{part}__{source}"


def stream_rng(seed: int, part: str, source: str, purpose: str) -> np.random.Generator:
    """An RNG that depends only on (seed, part, source, purpose): streams never share random draws,
    and adding or removing one stream does not change any other stream's draws."""
    key = zlib.crc32(f"{part}/{source}/{purpose}".encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), key]))


def boosted_shares(part: PartSpec, code_sources: Sequence[str]) -> dict[str, float]:
    """The part's proportions after its code boost.

    ``share`` mode: the code sources' combined share becomes exactly ``multiplier x`` its base value,
    split in the base ratio between them; the non-code sources are scaled by one common factor to fill
    the rest. ``weight`` mode: code weights are multiplied, then all are renormalized.
    """
    base = dict(part.proportions)
    m = part.code_multiplier
    if m == 1.0:
        total = sum(base.values())
        return {s: v / total for s, v in base.items()}
    code = {s for s in base if s in code_sources}
    c = sum(base[s] for s in code) / sum(base.values())
    total = sum(base.values())
    if part.code_boost_mode == "share":
        other = (1.0 - m * c) / (1.0 - c)
        return {s: (v / total) * (m if s in code else other) for s, v in base.items()}
    raw = {s: v * (m if s in code else 1.0) for s, v in base.items()}
    t = sum(raw.values())
    return {s: v / t for s, v in raw.items()}


def long_mask(doc_tokens: np.ndarray, min_tokens: int, count_eos: bool = False) -> np.ndarray:
    """Documents that are long: ``doc_tokens`` includes each document's EOS; unless ``count_eos`` it
    is not counted, so a selected document has >= min_tokens tokens of its own."""
    lengths = doc_tokens.astype(np.int64) - (0 if count_eos else 1)
    return lengths >= min_tokens


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Integers summing to ``total``, each within 1 of ``total * w / sum(w)``. Ties go to the earlier
    entry, so the result is deterministic."""
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or len(w) == 0 or w.sum() <= 0:
        raise ValueError("largest_remainder needs a non-negative total and positive weights")
    exact = total * w / w.sum()
    base = np.floor(exact).astype(np.int64)
    rest = int(total - base.sum())
    frac = exact - base
    order = sorted(range(len(w)), key=lambda i: (-frac[i], i))
    for i in order[:rest]:
        base[i] += 1
    return [int(x) for x in base]


@dataclass
class StreamPlan:
    part: str
    source: str
    spec_share: float            # share inside the part from the spec (after the code boost)
    share: float                 # effective share inside the part (after drops / natural weighting)
    weight: float                # effective weight in the whole mixture = part weight x share
    eligible_docs: int
    eligible_tokens: int
    target_tokens: float         # weight x budget
    choose: int = 0              # samples per epoch (streams.yaml)
    choose_tokens: int = 0       # choose x seq_len
    selected: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # docs to pack
    selected_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return stream_name(self.part, self.source)

    @property
    def epochs(self) -> float:
        """Passes over the eligible documents per mixture epoch."""
        return self.choose_tokens / self.eligible_tokens if self.eligible_tokens else 0.0


@dataclass
class PartPlan:
    name: str
    select: str
    weighting: str
    spec_weight: float           # normalized weight from the spec
    weight: float                # effective weight after dropping empty parts
    streams: list[StreamPlan]


@dataclass
class Plan:
    spec: MixtureSpec
    seed: int
    seq_len: int
    budget_tokens: int           # the budget the plan was made for
    budget_origin: str           # "spec" | "explicit" | "demo"
    total_samples: int
    parts: list[PartPlan]
    dropped: list[dict]          # {"part", "source", "reason"}
    missing: list[str]
    notes: list[str]

    @property
    def streams(self) -> list[StreamPlan]:
        return [s for p in self.parts for s in p.streams]


def _eligible(spec: MixtureSpec, part: PartSpec, doc_tokens: np.ndarray) -> np.ndarray:
    if part.select == "long":
        return np.flatnonzero(long_mask(doc_tokens, spec.long_min_tokens, spec.long_count_eos))
    return np.arange(len(doc_tokens), dtype=np.int64)


def demo_budget(spec: MixtureSpec, parts: Sequence[PartPlan],
                min_samples_per_part: int = DEMO_MIN_SAMPLES_PER_PART) -> tuple[int, list[str]]:
    """The demo-scale budget (see the module docstring) and a note explaining how it was chosen."""
    supply = []
    for p in parts:
        part_spec = next(ps for ps in spec.parts if ps.name == p.name)
        limits = []
        for s in p.streams:
            cap = 1.0
            if part_spec.select == "all" and s.source in SOURCES:
                full_epochs = spec.tokens * p.spec_weight * s.spec_share / (SOURCES[s.source].source_tokens_b * 1e9)
                cap = max(1.0, full_epochs)
            limits.append(s.eligible_tokens * cap / s.share)
        supply.append(min(limits) / p.weight)
    supplied = min(supply)
    floor = max(min_samples_per_part * spec.seq_len / p.weight for p in parts)
    budget = int(min(spec.tokens, max(supplied, floor)))
    note = (f"demo scale: budget {budget:,} tokens instead of the spec's {spec.tokens:,}: the largest budget the "
            f"present data supplies without repeating any source more than at full scale is {int(supplied):,} "
            f"tokens")
    if floor > supplied:
        note += (f"; raised to {int(floor):,} so every part has at least {min_samples_per_part} samples "
                 f"(proportions resolvable to < 1 point), which repeats some streams (see their notes)")
    return budget, [note]


def plan_mixture(spec: MixtureSpec, doc_tokens: Mapping[str, np.ndarray], *, tokens: int | None = None,
                 demo: bool = False, seed: int = 17, missing: Sequence[str] = (),
                 min_samples_per_part: int = DEMO_MIN_SAMPLES_PER_PART) -> Plan:
    """Plan a mixture. ``doc_tokens`` maps each present source to its per-document token counts (EOS
    included, sample order); sources in ``missing`` are left out and their parts renormalized."""
    seq_len = spec.seq_len
    dropped: list[dict] = []
    notes: list[str] = []
    missing = [s for s in spec.sources if s in set(missing)]
    absent = [s for s in spec.sources if s not in doc_tokens and s not in missing]
    if absent:
        raise ValueError(f"plan_mixture: no document counts for source(s) {absent} and they are not marked missing")
    if missing:
        notes.append(f"sources missing and left out (allow-missing): {', '.join(missing)}; the remaining "
                     f"proportions of their parts are renormalized")

    parts: list[PartPlan] = []
    spec_total_w = sum(p.weight for p in spec.parts)
    for part in spec.parts:
        shares = boosted_shares(part, spec.code_sources) if part.weighting == "proportions" else {}
        streams = []
        for source in part.sources:
            if source in missing:
                dropped.append({"part": part.name, "source": source, "reason": "source missing"})
                continue
            dt = np.asarray(doc_tokens[source])
            idx = _eligible(spec, part, dt)
            etok = int(dt[idx].astype(np.int64).sum())
            if etok < seq_len:
                what = (f"documents with >= {spec.long_min_tokens} tokens" if part.select == "long" else "documents")
                dropped.append({"part": part.name, "source": source,
                                "reason": f"{len(idx)} {what} holding {etok:,} tokens: fewer than one "
                                          f"{seq_len}-token sample"})
                continue
            streams.append(StreamPlan(part.name, source, shares.get(source, 0.0), 0.0, 0.0, len(idx), etok, 0.0,
                                      selected=idx))
        if not streams:
            notes.append(f"part {part.name!r} has no usable stream and is left out; the other parts' weights are "
                         f"renormalized")
            continue
        if part.weighting == "natural":
            t = sum(s.eligible_tokens for s in streams)
            for s in streams:
                s.spec_share = s.share = s.eligible_tokens / t
        else:
            t = sum(s.spec_share for s in streams)
            for s in streams:
                s.share = s.spec_share / t
        parts.append(PartPlan(part.name, part.select, part.weighting, part.weight / spec_total_w, 0.0, streams))
    if not parts:
        reasons = "; ".join(f"{d['part']}/{d['source']}: {d['reason']}" for d in dropped)
        raise ValueError(f"mixture {spec.name!r}: no stream has enough data for one {seq_len}-token sample ({reasons})")
    wt = sum(p.spec_weight for p in parts)
    for p in parts:
        p.weight = p.spec_weight / wt
        for s in p.streams:
            s.weight = p.weight * s.share

    if tokens is not None:
        budget, origin = int(tokens), "explicit"
    elif demo:
        budget, demo_notes = demo_budget(spec, parts, min_samples_per_part)
        origin = "demo"
        notes.extend(demo_notes)
    else:
        budget, origin = spec.tokens, "spec"
    total = max(1, round(budget / seq_len))
    streams = [s for p in parts for s in p.streams]
    for s, c in zip(streams, largest_remainder(total, [s.weight for s in streams])):
        s.choose = c
        s.target_tokens = s.weight * budget

    for p in parts:
        kept = []
        for s in p.streams:
            if s.choose == 0:
                dropped.append({"part": p.name, "source": s.source,
                                "reason": f"planned weight {s.weight:.3g} rounds to 0 of {total} samples"})
                continue
            s.choose_tokens = s.choose * seq_len
            s.selected = select_documents(s.selected, np.asarray(doc_tokens[s.source]), s.choose_tokens,
                                          stream_rng(seed, s.part, s.source, "select"))
            s.selected_tokens = int(np.asarray(doc_tokens[s.source])[s.selected].astype(np.int64).sum())
            if s.selected_tokens < s.choose_tokens:
                s.notes.append(f"upsampled by repetition: {s.epochs:.3g} epochs over its "
                               f"{s.eligible_docs} documents")
            elif len(s.selected) < s.eligible_docs:
                s.notes.append(f"downsampled: {len(s.selected)} of {s.eligible_docs} documents "
                               f"({s.epochs:.3g} epochs)")
            kept.append(s)
        p.streams = kept
    return Plan(spec, seed, seq_len, budget, origin, total, parts, dropped, missing, notes)


def select_documents(eligible: np.ndarray, doc_tokens: np.ndarray, need_tokens: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Seeded random subset of ``eligible`` whose tokens first reach ``need_tokens`` (sorted), or all
    of ``eligible`` when they hold no more than that."""
    eligible = np.asarray(eligible, dtype=np.int64)
    total = int(doc_tokens[eligible].astype(np.int64).sum())
    if need_tokens >= total:
        return eligible
    perm = rng.permutation(eligible)
    cum = np.cumsum(doc_tokens[perm].astype(np.int64))
    k = int(np.searchsorted(cum, need_tokens, side="left")) + 1
    return np.sort(perm[:k])
