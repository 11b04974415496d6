"""Dedupe settings from the sources YAML (``dedupe: default | none | {exact, minhash, semantic}``)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional


class DedupeConfigError(ValueError):
    pass


@dataclass(frozen=True)
class MinHashConfig:
    """MinHash-LSH near-dup settings (issue #4 owns the semantics; see pipelines/dedupe/minhash.py)."""

    num_perm: int = 128
    ngram: int = 5
    threshold: float = 0.8
    bands: Optional[int] = None   # None -> chosen from the FP/FN trade-off for ``threshold``
    rows: Optional[int] = None
    seed: int = 1


@dataclass(frozen=True)
class SemDedupConfig:
    keep_fraction: float = 0.8
    n_clusters: Optional[int] = None  # None -> chosen from the corpus size
    seed: int = 0


@dataclass(frozen=True)
class DedupeConfig:
    exact: bool = True
    minhash: Optional[MinHashConfig] = None
    semantic: Optional[SemDedupConfig] = None


def _dataclass_from(cls, value: Any, where: str):
    if value is False or value is None:
        return None
    if value is True or value == "default":
        return cls()
    if not isinstance(value, Mapping):
        raise DedupeConfigError(f"{where}: expected true/false or a mapping, got {value!r}")
    names = {f.name for f in fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise DedupeConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    return cls(**dict(value))


def parse_dedupe(spec: Any, default: Mapping[str, Any], where: str = "dedupe") -> DedupeConfig:
    if spec is None or spec == "default":
        spec = dict(default)
    elif spec == "none":
        return DedupeConfig(exact=False)
    if not isinstance(spec, Mapping):
        raise DedupeConfigError(f"{where}: expected 'default', 'none' or a mapping, got {spec!r}")
    unknown = set(spec) - {"exact", "minhash", "semantic"}
    if unknown:
        raise DedupeConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: exact, minhash, semantic")
    exact = spec.get("exact", True)
    if not isinstance(exact, bool):
        raise DedupeConfigError(f"{where}.exact: expected true or false, got {exact!r}")
    return DedupeConfig(
        exact=exact,
        minhash=_dataclass_from(MinHashConfig, spec.get("minhash"), f"{where}.minhash"),
        semantic=_dataclass_from(SemDedupConfig, spec.get("semantic"), f"{where}.semantic"),
    )
