"""Quality filters: named pure rules, composed into per-source chains.

A rule is a pure function ``rule(text, meta, **params) -> None | (measured_value, detail)``: None keeps
the document, a tuple rejects it, and the chain reports the rule's name as the reason. Rules live in
small modules (``basic``, and the C4/Gopher/code rule modules) and register themselves in ``RULES``
with their default thresholds, so the sources YAML can name them and override thresholds.

A rule may also register ``check`` (``check(params, given, where) -> params``: range and path checks when
the chain is built, i.e. before any input is read), ``prepare`` (driver-side, once the inputs are listed:
``pipelines.calibrate`` resolves what depends on a model file or a sample, e.g. the model's hash, so it
enters the config hash) and ``tally`` (``tally(stats, text, meta, params, result)``: per-rule counters
such as detected languages, summed into the stats record's ``filter_stats``).

Spec grammar (sources YAML ``filters:``):
  default                      -> the source's default chain from the registry
  none                         -> no filtering
  [min_words, {min_words: {min_words: 200}}, ...]  -> rule names, optionally with threshold overrides
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from contract.config import ConfigError, check_value, params_hint

RuleResult = Optional[tuple[float, str]]
RuleFn = Callable[..., RuleResult]


@dataclass(frozen=True)
class Rule:
    name: str
    fn: RuleFn
    defaults: Mapping[str, Any]
    doc: str = ""
    check: Optional[Callable[..., dict]] = None
    prepare: Optional[Callable[..., dict]] = None
    tally: Optional[Callable[..., None]] = None


RULES: dict[str, Rule] = {}


def register(name: str, *, check=None, prepare=None, tally=None, **defaults: Any) -> Callable[[RuleFn], RuleFn]:
    """Decorator: register ``fn`` as rule ``name`` with default thresholds (and the optional hooks above)."""

    def deco(fn: RuleFn) -> RuleFn:
        if name in RULES:
            raise ValueError(f"filter rule {name!r} registered twice")
        RULES[name] = Rule(name, fn, dict(defaults), (fn.__doc__ or "").strip(), check, prepare, tally)
        return fn

    return deco


@dataclass(frozen=True)
class BoundRule:
    name: str
    fn: RuleFn
    params: Mapping[str, Any] = field(default_factory=dict)
    tally: Optional[Callable[..., None]] = None

    def __call__(self, text: str, meta: Mapping[str, str]) -> RuleResult:
        return self.fn(text, meta, **self.params)


@dataclass(frozen=True)
class FilterChain:
    """Ordered rules; the first rule that rejects names the reason (so counts are per first failure)."""

    rules: tuple[BoundRule, ...]

    def __call__(self, text: str, meta: Mapping[str, str],
                 tally: Optional[dict] = None) -> Optional[tuple[str, float, str]]:
        """``tally``: a dict rule name -> counters that rules with a tally hook add to (``pipelines.steps``)."""
        for rule in self.rules:
            res = rule(text, meta)
            if tally is not None and rule.tally is not None:
                rule.tally(tally.setdefault(rule.name, {}), text, meta, rule.params, res)
            if res is not None:
                value, detail = res
                return rule.name, float(value) if value is not None else math.nan, detail
        return None

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]


def _load_rule_modules() -> None:
    # Imported for their @register side effects.
    from pipelines.filters import basic  # noqa: F401

    for mod in ("c4", "gopher", "code", "markdown", "olmo", "fasttext"):
        try:
            __import__(f"pipelines.filters.{mod}")
        except ModuleNotFoundError as e:  # a rule module not written yet
            if e.name != f"pipelines.filters.{mod}":
                raise


def build_chain(spec: Any, default: Sequence[Any] = (), where: str = "filters") -> FilterChain:
    """Turn a YAML ``filters`` value into a FilterChain; errors name the bad key and the choices."""
    _load_rule_modules()
    if spec is None or spec == "default":
        spec = list(default)
    elif spec == "none":
        spec = []
    if not isinstance(spec, (list, tuple)):
        raise ConfigError(f"{where}: expected 'default', 'none' or a list of rules, got {spec!r}")
    bound = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, Mapping) and len(item) == 1:
            name, params = next(iter(item.items()))
            params = dict(params or {})
        else:
            raise ConfigError(f"{where}[{i}]: expected a rule name or {{rule: {{param: value}}}}, got {item!r}")
        if name not in RULES:
            raise ConfigError(f"{where}[{i}]: unknown filter rule {name!r}; known rules: {', '.join(sorted(RULES))}")
        rule = RULES[name]
        unknown = set(params) - set(rule.defaults)
        if unknown:
            raise ConfigError(
                f"{where}[{i}].{name}: unknown parameter(s) {sorted(unknown)}; {name} takes {sorted(rule.defaults)}")
        # every threshold is checked against its default's type now, not by the first document on a worker
        checked = {k: check_value(v, params_hint(rule.defaults[k]), f"{where}[{i}].{name}.{k}") for k, v in params.items()}
        merged = {**rule.defaults, **checked}
        if rule.check is not None:
            merged = rule.check(merged, set(checked), f"{where}[{i}].{name}")
        bound.append(BoundRule(name, rule.fn, merged, rule.tally))
    return FilterChain(tuple(bound))
