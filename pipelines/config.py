"""The sources YAML (DESIGN.md "Interfaces"): load, validate, and merge with the registry defaults.

Errors name the file, the source and the key, and say what is allowed, because a typo in a 10-source
config should fail in the first second, not after an hour on Dataflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import yaml

from pipelines.dedupe.config import DedupeConfig, DedupeConfigError, parse_dedupe
from pipelines.filters import FilterChain, FilterConfigError, build_chain
from contract.registry import SOURCE_NAMES, SOURCES

FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "parquet")
_KEYS = {"inputs", "format", "text_field", "id_field", "meta_fields", "filters", "dedupe"}


class ConfigError(ValueError):
    pass


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
    if name not in SOURCES:
        raise ConfigError(f"{where}: unknown source {name!r}; the ten sources are: {', '.join(SOURCE_NAMES)}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.{name}: expected a mapping with at least 'inputs', got {raw!r}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{where}.{name}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(_KEYS))}")
    d = SOURCES[name]
    inputs = raw.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs or not all(isinstance(i, str) and i for i in inputs):
        raise ConfigError(f"{where}.{name}.inputs: expected a non-empty list of globs (local, gs://, s3://), got {inputs!r}")
    fmt = raw.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"{where}.{name}.format: {fmt!r} is not one of {', '.join(FORMATS)} (or omit it to infer from the extension)")
    for key in ("text_field", "id_field"):
        v = raw.get(key)
        if v is not None and (not isinstance(v, str) or not v or any(not part for part in v.split("."))):
            raise ConfigError(f"{where}.{name}.{key}: expected a dotted field path like 'text' or 'content.text', got {v!r}")
    meta_fields = raw.get("meta_fields", d.meta_fields)
    if not isinstance(meta_fields, (list, tuple)) or not all(isinstance(m, str) for m in meta_fields):
        raise ConfigError(f"{where}.{name}.meta_fields: expected a list of dotted field paths, got {meta_fields!r}")
    try:
        chain = build_chain(raw.get("filters", "default"), d.filters, where=f"{where}.{name}.filters")
        dedupe = parse_dedupe(raw.get("dedupe", "default"), d.dedupe, where=f"{where}.{name}.dedupe")
    except (FilterConfigError, DedupeConfigError) as e:
        raise ConfigError(str(e)) from None
    return SourceConfig(
        name=name, inputs=tuple(inputs), format=fmt,
        text_field=raw.get("text_field") or d.text_field,
        id_field=raw["id_field"] if "id_field" in raw else d.id_field,
        meta_fields=tuple(meta_fields), filters_spec=raw.get("filters", "default"), dedupe=dedupe, chain=chain)


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
