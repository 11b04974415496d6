"""Mixture specs: YAML data files in ``mixtures/specs/`` turned into validated, frozen objects.

A spec says *what* a mixture is (sources, ratios, sequence length, token budget, how its parts are
weighted); the planner decides *how much* of each source that means for the data actually present.
Keeping specs as data lets a user copy one, change a weight, and pass the copy's path to
``--mixture`` without touching code. Specs are checked by contract.config's typed ``build`` (every key
and type, then the range and cross-key rules below); every error names the file and the key.

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
from typing import Any, Literal, Mapping

import yaml

from contract.config import ConfigError, build, require
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


def _source_list(value: list[str], key: str) -> tuple[str, ...]:
    """Known, distinct source names, returned in registry order."""
    unknown = [v for v in value if v not in SOURCE_NAMES]
    if unknown:
        raise ConfigError(f"{key}: unknown source(s) {unknown}; known sources: {', '.join(SOURCE_NAMES)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key}: a source is listed twice: {value}")
    return tuple(s for s in SOURCE_NAMES if s in value)


# The two dataclasses below are the spec file as written, checked key by key and type by type by
# contract.config.build (unknown keys, wrong types and the file's name in every message come from there);
# their __post_init__ adds the range and cross-key rules. A default of None means "key absent": the
# annotations are not Optional, so an explicit null is refused.

@dataclass
class _PartFile:
    """One entry under ``parts:`` (keys in the module docstring)."""

    weight: float = 1.0
    select: Literal["all", "long"] = "all"
    weighting: Literal["proportions", "natural"] = None   # absent: proportions if they are given, else natural
    proportions: dict[str, float] = None
    sources: list[str] = None
    code_multiplier: float = 1.0
    code_boost_mode: Literal["share", "weight"] = "share"

    def __post_init__(self):
        require(self.weight > 0, "weight", self.weight, "a number > 0")
        require(self.code_multiplier > 0, "code_multiplier", self.code_multiplier, "a number > 0")
        if self.weighting is None:
            self.weighting = "natural" if self.proportions is None else "proportions"
        if self.weighting == "proportions":
            require(bool(self.proportions), "proportions", self.proportions,
                    "a mapping source -> proportion (weighting 'proportions' needs one)")
            _source_list(list(self.proportions), "proportions")
            for source, share in self.proportions.items():
                require(share > 0, f"proportions.{source}", share, "a number > 0")
            total = sum(self.proportions.values())
            if abs(total - 1.0) > _PROPORTION_TOL:
                raise ConfigError(f"proportions: must sum to 1, they sum to {total:.9g}")
            if self.sources is not None:
                raise ConfigError("sources: not used with weighting 'proportions' (the proportions name the sources)")
        else:
            if self.proportions is not None:
                raise ConfigError("proportions: not used with weighting 'natural'; set weighting: proportions")
            if self.code_multiplier != 1.0:
                raise ConfigError("code_multiplier: only meaningful with weighting 'proportions'")
            if self.sources is not None and not _source_list(self.sources, "sources"):
                raise ConfigError("sources: a part needs at least one source")

    def spec(self, name: str) -> PartSpec:
        if self.weighting == "proportions":
            sources = _source_list(list(self.proportions), "proportions")
            proportions = {s: self.proportions[s] for s in sources}
        else:
            sources = SOURCE_NAMES if self.sources is None else _source_list(self.sources, "sources")
            proportions = {}
        return PartSpec(name, self.weight, self.select, self.weighting, proportions, sources,
                        self.code_multiplier, self.code_boost_mode)


@dataclass
class _SpecFile:
    """The top level of a spec file (keys in the module docstring)."""

    seq_len: int
    tokens: Any                                   # parse_tokens: 50B, 1T, 1000000, ...
    parts: dict[Any, dict]                        # part name -> _PartFile's keys
    name: str = None                              # absent: the file's stem (parse_spec fills it in)
    description: str = ""
    provenance: str = ""
    long_min_tokens: int = 4096
    long_count_eos: bool = False
    code_sources: list[str] = None                # absent: the registry's CODE_SOURCES
    part_specs: tuple[PartSpec, ...] = field(init=False, default=())

    def __post_init__(self):
        require(bool(_NAME_RE.match(self.name)), "name", self.name, "a plain folder name")
        require(self.seq_len > 0, "seq_len", self.seq_len, "a positive integer")
        self.tokens = parse_tokens(self.tokens, "tokens")
        require(self.long_min_tokens > 0, "long_min_tokens", self.long_min_tokens, "a positive integer")
        code = tuple(CODE_SOURCES) if self.code_sources is None else _source_list(self.code_sources, "code_sources")
        self.code_sources = code
        require(bool(self.parts), "parts", self.parts, "a non-empty mapping part name -> part")
        specs = []
        for key, raw in self.parts.items():
            name = str(key)
            if not _NAME_RE.match(name) or "__" in name:
                raise ConfigError(f"parts.{key}: part name {name!r} must be a plain folder name "
                                  "(letters, digits, _ . -, no '__')")
            part = build(_PartFile, raw, "", f"parts.{key}.").spec(name)
            if part.code_multiplier != 1.0:
                code_share = sum(v for s, v in part.proportions.items() if s in code)
                if code_share <= 0:
                    raise ConfigError(f"parts.{key}.code_multiplier: the part has no code source "
                                      f"({', '.join(code)}) to boost")
                if part.code_boost_mode == "share" and code_share * part.code_multiplier >= 1.0:
                    raise ConfigError(f"parts.{key}.code_multiplier: code share {code_share:g} x "
                                      f"{part.code_multiplier:g} leaves nothing for the other sources; use a "
                                      "smaller multiplier or code_boost_mode: weight")
            specs.append(part)
        self.part_specs = tuple(specs)


def parse_spec(obj: Any, path: str) -> MixtureSpec:
    """Validate a loaded YAML object (through contract.config.build); ``path`` is only used in messages."""
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level, got {type(obj).__name__}")
    f = build(_SpecFile, {"name": Path(path).stem, **obj}, str(path))
    return MixtureSpec(name=f.name, path=str(path), description=f.description.strip(),
                       provenance=f.provenance.strip(), seq_len=f.seq_len, tokens=f.tokens,
                       long_min_tokens=f.long_min_tokens, long_count_eos=f.long_count_eos,
                       code_sources=f.code_sources, parts=f.part_specs, raw=obj)


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
