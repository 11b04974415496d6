"""The sources YAML (README "Real corpora"): load, validate, and merge with the registry defaults.

Errors name the file, the source and the key, and say what is allowed, because a typo in a 10-source
config should fail in the first second, not after an hour on Dataflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union

import yaml

from contract import fsio
from contract.config import ConfigError, build, require
from contract.registry import SOURCE_NAMES, SOURCES
from pipelines.steps.decontam import DecontamConfig, DecontamError
from pipelines.dedupe.config import DedupeConfig, parse_dedupe
from pipelines.filters.compose import FilterChain, build_chain

__all__ = ["ConfigError", "SourceConfig", "SourceSpec", "load_sources", "source_config", "infer_format",
           "parse_decontam", "TOP_LEVEL_KEYS"]

TOP_LEVEL_KEYS = ("sources", "decontam")

FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet")


@dataclass(frozen=True)
class SourceSpec:
    """One source's entry in the sources YAML, as typed data (README "Real corpora")."""

    inputs: Union[str, list[str]]
    format: Optional[Literal["jsonl", "jsonl.gz", "jsonl.zst", "parquet"]] = None
    text_field: Optional[str] = None
    id_field: Optional[str] = None
    meta_fields: Optional[list[str]] = None
    filters: Any = "default"      # default | none | [rule, {rule: {param: value}}, ...]  (checked by build_chain)
    dedupe: Any = "default"       # default | none | {exact, minhash, semantic}             (checked by parse_dedupe)
    pii: bool = False             # mask e-mails and public IPv4 addresses (pipelines.steps.pii) before filtering
    decontam: Optional[bool] = None  # false: skip the top-level decontam: block for this source (true: apply it)

    def __post_init__(self):
        inputs = [self.inputs] if isinstance(self.inputs, str) else self.inputs
        require(bool(inputs) and all(inputs), "inputs", self.inputs, "a non-empty list of globs (local, gs://, s3://)")
        for key in ("text_field", "id_field"):
            v = getattr(self, key)
            require(v is None or (bool(v) and all(v.split("."))), key, v,
                    "a dotted field path like 'text' or 'content.text'")


@dataclass(frozen=True)
class SourceConfig:
    name: str
    inputs: tuple[str, ...]
    format: Optional[str]           # None -> inferred per file from its extension
    text_field: str
    id_field: Optional[str]
    meta_fields: tuple[str, ...]
    dedupe: DedupeConfig
    chain: FilterChain = field(compare=False)
    pii: bool = False
    decontam: Optional[DecontamConfig] = None   # the top-level block, unless this source opted out


def infer_format(path: str) -> str:
    p = path.lower()
    for ext, fmt in ((".jsonl.zst", "jsonl.zst"), (".json.zst", "jsonl.zst"), (".jsonl.gz", "jsonl.gz"),
                     (".json.gz", "jsonl.gz"), (".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet")):
        if p.endswith(ext):
            return fmt
    raise ConfigError(f"{path}: cannot infer the format from the extension; set format: to one of {', '.join(FORMATS)}")


def parse_decontam(raw: Any, where: str) -> DecontamConfig:
    """The top-level ``decontam:`` block -> DecontamConfig (keys and types checked; eval files are listed
    separately, on the driver, by ``pipelines.build``)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}decontam: expected a mapping with at least eval_paths (a list of eval JSON Lines "
                          f"files, folders or globs), got {raw!r}")
    if "eval_paths" not in raw:
        raise ConfigError(f"{where}decontam.eval_paths: missing; give a list of eval JSON Lines files, folders or globs "
                          "(local, gs://, s3://)")
    raw = dict(raw)
    if isinstance(raw["eval_paths"], str):
        raw["eval_paths"] = [raw["eval_paths"]]
    try:
        return build(DecontamConfig, raw, where.rstrip(": "), "decontam.")
    except DecontamError as e:  # DecontamConfig's own range checks name the key already
        raise ConfigError(f"{where}{e}") from None


def source_config(name: str, raw: Mapping[str, Any], where: str,
                  decontam: Optional[DecontamConfig] = None) -> SourceConfig:
    """Validate one source entry (every key, type, filter threshold and dedupe setting) against the registry.

    ``decontam``: the file's top-level decontam block (applies unless the entry says ``decontam: false``)."""
    if name not in SOURCES:
        raise ConfigError(f"{where}: unknown source {name!r}; the ten sources are: {', '.join(SOURCE_NAMES)}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.{name}: expected a mapping with at least 'inputs', got {raw!r}")
    if "inputs" not in raw:
        raise ConfigError(f"{where}.{name}.inputs: missing; give a list of globs (local, gs://, s3://)")
    spec = build(SourceSpec, raw, "", f"{where}.{name}.")
    d = SOURCES[name]
    chain = build_chain(spec.filters, d.filters, where=f"{where}.{name}.filters")
    dedupe = parse_dedupe(spec.dedupe, d.dedupe, where=f"{where}.{name}.dedupe")
    if spec.decontam and decontam is None:
        raise ConfigError(f"{where}.{name}.decontam: true needs a top-level 'decontam:' block with eval_paths "
                          "(per source, only 'decontam: false' is allowed, to opt out of it)")
    return SourceConfig(
        name=name, inputs=(spec.inputs,) if isinstance(spec.inputs, str) else tuple(spec.inputs), format=spec.format,
        text_field=spec.text_field or d.text_field,
        id_field=spec.id_field if "id_field" in raw else d.id_field,
        meta_fields=tuple(spec.meta_fields if spec.meta_fields is not None else d.meta_fields),
        dedupe=dedupe, chain=chain, pii=spec.pii,
        decontam=None if spec.decontam is False else decontam)


def load_sources(path: str) -> dict[str, SourceConfig]:
    try:
        data = yaml.safe_load(fsio.read_bytes(path).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: sources file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except fsio.StorageError as e:
        raise ConfigError(f"{path}: cannot read the sources file: {type(e.cause).__name__}: {e.cause}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the sources file: {e}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("sources"), Mapping) or not data["sources"]:
        raise ConfigError(f"{path}: expected a top-level 'sources:' mapping of source name -> settings")
    extra = set(data) - set(TOP_LEVEL_KEYS)
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(extra)}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    decontam = parse_decontam(data["decontam"], f"{path}: ") if "decontam" in data else None
    return {name: source_config(name, raw, f"{path}: sources", decontam) for name, raw in data["sources"].items()}
