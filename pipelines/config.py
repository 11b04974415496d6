"""The sources YAML (DESIGN.md "Interfaces"): load, validate, and merge with the registry defaults.

Errors name the file, the source and the key, and say what is allowed, because a typo in a 10-source
config should fail in the first second, not after an hour on Dataflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union

import yaml

from contract.config import ConfigError, build, require
from contract.registry import SOURCE_NAMES, SOURCES
from pipelines.dedupe.config import DedupeConfig, parse_dedupe
from pipelines.filters import FilterChain, build_chain

__all__ = ["ConfigError", "SourceConfig", "SourceSpec", "load_sources", "source_config", "infer_format"]

FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet")


@dataclass(frozen=True)
class SourceSpec:
    """One source's entry in the sources YAML, as typed data (DESIGN.md "Interfaces")."""

    inputs: Union[str, list[str]]
    format: Optional[Literal["jsonl", "jsonl.gz", "jsonl.zst", "parquet"]] = None
    text_field: Optional[str] = None
    id_field: Optional[str] = None
    meta_fields: Optional[list[str]] = None
    filters: Any = "default"      # default | none | [rule, {rule: {param: value}}, ...]  (checked by build_chain)
    dedupe: Any = "default"       # default | none | {exact, minhash, semantic}             (checked by parse_dedupe)

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
    filters_spec: Any
    dedupe: DedupeConfig
    chain: FilterChain = field(compare=False)


def infer_format(path: str) -> str:
    p = path.lower()
    for ext, fmt in ((".jsonl.zst", "jsonl.zst"), (".json.zst", "jsonl.zst"), (".jsonl.gz", "jsonl.gz"),
                     (".json.gz", "jsonl.gz"), (".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet")):
        if p.endswith(ext):
            return fmt
    raise ConfigError(f"{path}: cannot infer the format from the extension; set format: to one of {', '.join(FORMATS)}")


def source_config(name: str, raw: Mapping[str, Any], where: str) -> SourceConfig:
    """Validate one source entry (every key, type, filter threshold and dedupe setting) against the registry."""
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
    return SourceConfig(
        name=name, inputs=(spec.inputs,) if isinstance(spec.inputs, str) else tuple(spec.inputs), format=spec.format,
        text_field=spec.text_field or d.text_field,
        id_field=spec.id_field if "id_field" in raw else d.id_field,
        meta_fields=tuple(spec.meta_fields if spec.meta_fields is not None else d.meta_fields),
        filters_spec=spec.filters, dedupe=dedupe, chain=chain)


def load_sources(path: str) -> dict[str, SourceConfig]:
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            data = yaml.safe_load(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: sources file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the sources file: {e}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("sources"), Mapping) or not data["sources"]:
        raise ConfigError(f"{path}: expected a top-level 'sources:' mapping of source name -> settings")
    extra = set(data) - {"sources"}
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(extra)}; only 'sources' is allowed")
    return {name: source_config(name, raw, f"{path}: sources") for name, raw in data["sources"].items()}
