"""Quality filters: named pure rules, composed into per-source chains.

A rule is a pure function ``rule(text, meta, **params) -> None | (measured_value, detail)``: None keeps
the document, a tuple rejects it, and the chain reports the rule's name as the reason. Rules live in
small modules (``basic``, and the C4/Gopher/code rule modules) and register themselves in ``RULES``
with their default thresholds, so the sources YAML can name them and override thresholds.

A rule may also register ``check`` (``check(params, given, where) -> params``: range and path checks when
the chain is built, i.e. before any input is read), ``prepare`` (driver-side, once the inputs are listed:
``pipelines.sources.prepare`` resolves what depends on a model file or a sample, e.g. the model's hash, so it
enters the config hash) and ``tally`` (``tally(stats, text, meta, params, result)``: per-rule counters
such as detected languages, summed into the stats record's ``filter_stats``). A rule that reads ``meta`` declares
what it needs there (``needs_meta``: keys, or alternatives joined by ``|`` satisfied by any one of them) and what it
does with a document that lacks it (``missing_effect``): the build counts the documents missing each requirement
and ``pipelines.filters.warnings`` says so when most do.

This module is the registry; ``pipelines.filters.compose`` loads the rule modules and composes a source's chain
from the spec (sources YAML ``filters:``):
  default                      -> the source's default chain from the registry
  none                         -> no filtering
  [min_words, {min_words: {min_words: 200}}, ...]  -> rule names, optionally with threshold overrides
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

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
    needs_meta: tuple[str, ...] = ()     # requirements read from Document.meta ("lang|path": either key)
    missing_effect: str = ""             # what the rule does with a document that lacks them (a warning's words)


RULES: dict[str, Rule] = {}


def register(name: str, *, check=None, prepare=None, tally=None, needs_meta: tuple[str, ...] = (),
             missing_effect: str = "", **defaults: Any) -> Callable[[RuleFn], RuleFn]:
    """Decorator: register ``fn`` as rule ``name`` with default thresholds (and the optional hooks and the
    metadata it reads, above)."""

    def deco(fn: RuleFn) -> RuleFn:
        if name in RULES:
            raise ValueError(f"filter rule {name!r} registered twice")
        RULES[name] = Rule(name, fn, dict(defaults), (fn.__doc__ or "").strip(), check, prepare, tally,
                           tuple(needs_meta), missing_effect)
        return fn

    return deco
