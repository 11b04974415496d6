"""Mixture specs: YAML data files in ``mixtures/specs/`` turned into validated, frozen objects.

A spec says *what* a mixture is (sources, ratios, sequence length, token budget, how its parts are
weighted); the planner decides *how much* of each source that means for the data actually present.
Keeping specs as data lets a user copy one, change a weight, and pass the copy's path to
``--mixture`` without touching code. Every validation error names the file and the key.

Keys (top level):

``name``            mixture name (defaults to the file's stem); also the output folder name.
``description``, ``provenance``   free text, copied into the manifest and report.
``seq_len``         tokens per packed sample (every part of a mixture shares it).
``tokens``          default token budget: an integer or a string with a K/M/B/T suffix (decimal).
``long_min_tokens`` threshold for ``select: long`` parts (default 4096).
``long_count_eos``  whether the appended EOS counts toward that threshold (default false: strict).
``code_sources``    sources that count as code for ``code_multiplier`` (default: registry CODE_SOURCES).
``parts``           mapping part name -> part; the part name is a folder name under the mixture.

Keys of a part:

``weight``          relative weight of the part in the mixture (parts are renormalized to sum to 1).
``select``          ``all`` (every document) or ``long`` (documents with >= long_min_tokens tokens).
``weighting``       ``proportions`` (use ``proportions``) or ``natural`` (a source's share is its share of
                    the selected tokens, i.e. every selected document is equally likely).
``proportions``     mapping source -> proportion (must sum to 1); needed for ``weighting: proportions``.
``sources``         list of sources for ``weighting: natural`` (default: all ten).
``code_multiplier`` raise the code share by this factor (default 1).
``code_boost_mode`` ``share`` (the code share becomes exactly multiplier x its value; non-code sources
                    are scaled to fill the rest) or ``weight`` (code weights x multiplier, then everything
                    renormalized).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from contract.config import ConfigError
from contract.registry import CODE_SOURCES, SOURCE_NAMES

SPECS_DIR = Path(__file__).resolve().parent / "specs"
MIXTURE_NAMES: tuple[str, ...] = tuple(sorted(p.stem for p in SPECS_DIR.glob("*.yaml")))

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PROPORTION_TOL = 1e-6


@dataclass(frozen=True)
class PartSpec:
    name: str
    weight: float
    select: str                              # "all" | "long"
    weighting: str                           # "proportions" | "natural"
    proportions: Mapping[str, float]         # empty for natural weighting
    sources: tuple[str, ...]                 # the part's sources, in registry order
    code_multiplier: float = 1.0
    code_boost_mode: str = "share"


@dataclass(frozen=True)
class MixtureSpec:
    name: str
    path: str
    description: str
    provenance: str
    seq_len: int
    tokens: int
    long_min_tokens: int
    long_count_eos: bool
    code_sources: tuple[str, ...]
    parts: tuple[PartSpec, ...]
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source any part uses, in registry order."""
        used = {s for p in self.parts for s in p.sources}
        return tuple(s for s in SOURCE_NAMES if s in used)


def parse_tokens(value: Any, where: str) -> int:
    """Parse a token count: 50000000000, "50B", "1T", "2.5M" (decimal suffixes)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a token count like 50B or 1000000, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KkMmBbGgTt]?)\s*", value.replace("_", ""))
        if not m:
            raise ConfigError(f"{where}: expected a token count like 50B, 1T or 1000000, got {value!r}")
        n = int(round(float(m.group(1)) * _SUFFIX[m.group(2).upper()]))
    else:
        raise ConfigError(f"{where}: expected a token count like 50B or 1000000, got {value!r}")
    if n <= 0:
        raise ConfigError(f"{where}: the token count must be positive, got {value!r}")
    return n


def _num(value: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    return float(value)


def _source_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of source names, got {value!r}")
    unknown = [v for v in value if v not in SOURCE_NAMES]
    if unknown:
        raise ConfigError(f"{where}: unknown source(s) {unknown}; known sources: {', '.join(SOURCE_NAMES)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: a source is listed twice: {value}")
    return tuple(s for s in SOURCE_NAMES if s in value)


def _part(name: str, obj: Any, where: str) -> PartSpec:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping with weight/select/weighting, got {obj!r}")
    known = {"weight", "select", "weighting", "proportions", "sources", "code_multiplier", "code_boost_mode"}
    extra = sorted(set(obj) - known)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {extra}; allowed: {sorted(known)}")
    if not _NAME_RE.match(name) or "__" in name:
        raise ConfigError(f"{where}: part name {name!r} must be a plain folder name (letters, digits, _ . -, no '__')")
    weight = _num(obj.get("weight", 1.0), f"{where}.weight")
    select = obj.get("select", "all")
    if select not in ("all", "long"):
        raise ConfigError(f"{where}.select: expected 'all' or 'long', got {select!r}")
    weighting = obj.get("weighting", "proportions" if "proportions" in obj else "natural")
    if weighting not in ("proportions", "natural"):
        raise ConfigError(f"{where}.weighting: expected 'proportions' or 'natural', got {weighting!r}")
    proportions: dict[str, float] = {}
    if weighting == "proportions":
        props = obj.get("proportions")
        if not isinstance(props, dict) or not props:
            raise ConfigError(f"{where}.proportions: weighting 'proportions' needs a mapping source -> proportion")
        unknown = [k for k in props if k not in SOURCE_NAMES]
        if unknown:
            raise ConfigError(f"{where}.proportions: unknown source(s) {unknown}; known: {', '.join(SOURCE_NAMES)}")
        for k, v in props.items():
            proportions[k] = _num(v, f"{where}.proportions.{k}")
        total = sum(proportions.values())
        if abs(total - 1.0) > _PROPORTION_TOL:
            raise ConfigError(f"{where}.proportions: must sum to 1, they sum to {total:.9g}")
        if "sources" in obj:
            raise ConfigError(f"{where}.sources: not used with weighting 'proportions' (the proportions name the sources)")
        sources = tuple(s for s in SOURCE_NAMES if s in proportions)
        proportions = {s: proportions[s] for s in sources}
    else:
        if "proportions" in obj:
            raise ConfigError(f"{where}.proportions: not used with weighting 'natural'; set weighting: proportions")
        sources = _source_list(obj["sources"], f"{where}.sources") if "sources" in obj else SOURCE_NAMES
        if not sources:
            raise ConfigError(f"{where}.sources: a part needs at least one source")
    mult = _num(obj.get("code_multiplier", 1.0), f"{where}.code_multiplier")
    mode = obj.get("code_boost_mode", "share")
    if mode not in ("share", "weight"):
        raise ConfigError(f"{where}.code_boost_mode: expected 'share' or 'weight', got {mode!r}")
    if mult != 1.0 and weighting != "proportions":
        raise ConfigError(f"{where}.code_multiplier: only meaningful with weighting 'proportions'")
    return PartSpec(name, weight, select, weighting, proportions, sources, mult, mode)


def parse_spec(obj: Any, path: str) -> MixtureSpec:
    """Validate a loaded YAML object; ``path`` is only used in messages."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level, got {type(obj).__name__}")
    known = {"name", "description", "provenance", "seq_len", "tokens", "long_min_tokens",
             "long_count_eos", "code_sources", "parts"}
    extra = sorted(set(obj) - known)
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {extra}; allowed: {sorted(known)}")
    name = obj.get("name", Path(path).stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{path}: name: expected a plain folder name, got {name!r}")
    for key in ("seq_len", "tokens", "parts"):
        if key not in obj:
            raise ConfigError(f"{path}: missing required key {key!r}")
    seq_len = obj["seq_len"]
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise ConfigError(f"{path}: seq_len: expected a positive integer, got {seq_len!r}")
    tokens = parse_tokens(obj["tokens"], f"{path}: tokens")
    long_min = obj.get("long_min_tokens", 4096)
    if isinstance(long_min, bool) or not isinstance(long_min, int) or long_min <= 0:
        raise ConfigError(f"{path}: long_min_tokens: expected a positive integer, got {long_min!r}")
    count_eos = obj.get("long_count_eos", False)
    if not isinstance(count_eos, bool):
        raise ConfigError(f"{path}: long_count_eos: expected true or false, got {count_eos!r}")
    code = (_source_list(obj["code_sources"], f"{path}: code_sources")
            if "code_sources" in obj else tuple(CODE_SOURCES))
    parts_obj = obj["parts"]
    if not isinstance(parts_obj, dict) or not parts_obj:
        raise ConfigError(f"{path}: parts: expected a non-empty mapping part name -> part")
    parts = tuple(_part(str(k), v, f"{path}: parts.{k}") for k, v in parts_obj.items())
    for p in parts:
        if p.code_multiplier != 1.0:
            where = f"{path}: parts.{p.name}.code_multiplier"
            code_share = sum(v for s, v in p.proportions.items() if s in code)
            if code_share <= 0:
                raise ConfigError(f"{where}: the part has no code source ({', '.join(code)}) to boost")
            if p.code_boost_mode == "share" and code_share * p.code_multiplier >= 1.0:
                raise ConfigError(f"{where}: code share {code_share:g} x {p.code_multiplier:g} leaves nothing "
                                f"for the other sources; use a smaller multiplier or code_boost_mode: weight")
    for key in ("description", "provenance"):
        if key in obj and not isinstance(obj[key], str):
            raise ConfigError(f"{path}: {key}: expected text, got {obj[key]!r}")
    return MixtureSpec(name=name, path=str(path), description=obj.get("description", "").strip(),
                       provenance=obj.get("provenance", "").strip(), seq_len=seq_len, tokens=tokens,
                       long_min_tokens=long_min, long_count_eos=count_eos, code_sources=code,
                       parts=parts, raw=obj)


def spec_path(name_or_path: str) -> Path:
    """A built-in mixture name (see MIXTURE_NAMES) or a path to a spec YAML file."""
    if name_or_path in MIXTURE_NAMES:
        return SPECS_DIR / f"{name_or_path}.yaml"
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    raise ConfigError(f"unknown mixture {name_or_path!r}: expected one of {', '.join(MIXTURE_NAMES)} "
                    f"or the path of a spec .yaml file (see {SPECS_DIR})")


def load_spec(name_or_path: str) -> MixtureSpec:
    """Load and validate a mixture spec by built-in name or file path."""
    path = spec_path(name_or_path)
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_spec(obj, str(path))
