"""A source's filter chain: the sources YAML's ``filters:`` value -> a FilterChain of bound rules (every rule
module loaded, every threshold checked against its default's type before any input is read)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from contract.config import ConfigError, check_value, params_hint
from pipelines.filters import RULES, RuleFn, RuleResult


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
        """``tally``: a dict rule name -> counters that rules with a tally hook add to (``pipelines.steps.chain``)."""
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


def load_rule_modules() -> None:
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
    load_rule_modules()
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
