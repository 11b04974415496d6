"""Sanity warnings for a built source: say it out loud when a source is mostly thrown away.

Two situations silently gut a source, and both have happened with real configs:

1. One rule rejects more than half of a source (a threshold meant for another kind of text, a
   language list that misses the corpus's main language ...).
2. A metadata field a rule needs is absent from most documents: ``code_language`` rejects every
   document whose language it cannot find (no ``lang``, no known ``path`` extension, no shebang), so a
   Stack export read without ``meta_fields: [lang, path]`` loses nearly everything to it; the opposite
   failure is a rule that keeps what it cannot check (``md_language``, ``olmo_min_stars``) and so
   silently does nothing.

``warnings_for(stats, meta_missing)`` turns a source's stats into one sentence per problem (naming the
source, the rule, the share, and what to change); the build logs them and the summary prints them.
Pure functions of their inputs, no Beam.

Each rule that reads ``meta`` declares its requirements where it is registered (``needs_meta``, with the
``missing_effect`` a warning names; ``needs_meta()`` collects them). A requirement is a key, or alternatives
joined by ``|`` that are satisfied by any one of them (``code_language`` can use ``lang`` or the file's
``path``). ``missing_requirements(meta, rules)`` is what the build counts per document (a document misses
``"lang|path"`` when it has neither) so that ``meta_missing`` reads ``{requirement: documents lacking it}``.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional

from contract.stats import pct
from pipelines.filters import RULES
from pipelines.filters.compose import load_rule_modules

MAX_RULE_SHARE = 0.5      # one rule rejecting more than this share of what was read
MAX_MISSING_SHARE = 0.5   # a needed metadata requirement absent from more than this share


def satisfied(meta: Optional[Mapping[str, str]], requirement: str) -> bool:
    """True when ``meta`` has a non-empty value for the key, or for one of the ``|`` alternatives."""
    if not meta:
        return False
    return any(str(meta.get(k) or "").strip() for k in requirement.split("|"))


def needs_meta() -> dict[str, tuple[str, ...]]:
    """rule -> the requirements it reads from Document.meta, for every registered rule that reads any."""
    load_rule_modules()
    return {name: RULES[name].needs_meta for name in sorted(RULES) if RULES[name].needs_meta}


def requirements(rules: Iterable[str]) -> list[str]:
    """The requirements of ``rules`` (as registered), each once, in rule order."""
    needs = needs_meta()
    seen: list[str] = []
    for rule in rules:
        for req in needs.get(rule, ()):
            if req not in seen:
                seen.append(req)
    return seen


def missing_requirements(meta: Optional[Mapping[str, str]], rules: Iterable[str]) -> list[str]:
    """The requirements of ``rules`` (``requirements``) that ``meta`` does not meet."""
    return [r for r in requirements(rules) if not satisfied(meta, r)]


def _keys_hint(requirement: str) -> str:
    keys = requirement.split("|")
    return keys[0] if len(keys) == 1 else " or ".join(f"{k!r}" for k in keys)


def warnings_for(stats: Mapping, meta_missing: Optional[Mapping[str, int]] = None, *,
                 max_rule_share: float = MAX_RULE_SHARE, max_missing_share: float = MAX_MISSING_SHARE) -> list[str]:
    """One human sentence per problem in one source's stats (``OUT/stats/<source>.json``).

    ``meta_missing``: ``{requirement: documents lacking it}`` (see ``missing_requirements``); when None,
    ``stats["meta_missing"]`` is used if present. Shares are of the documents read, malformed ones
    excluded (they never reach a rule). Rules named in ``stats["filters"]`` (the chain, when the build
    records it) limit which rules a missing requirement is blamed on. Sorted: rejection warnings by
    share, then metadata warnings by share.
    """
    source = stats.get("source", "?")
    read = int(stats.get("read", 0)) - int(stats.get("malformed", 0))
    if read <= 0:
        return [_nothing_kept(source, stats, 0)] if "kept" in stats else []
    out: list[tuple[int, float, str]] = []
    needs = needs_meta()
    by_design = {r for r, p in (stats.get("filter_params") or {}).items() if p.get("keep_top_fraction", 0) > 0}
    for rule, n in (stats.get("rejected") or {}).items():
        share = int(n) / read
        if share > max_rule_share and rule not in by_design:  # keep_top_fraction: 0.1 removes 90% on purpose
            fix = (f"check that the rule and its thresholds fit this corpus, override them ({{{rule}: {{...}}}}) "
                   f"or drop {rule} from {source}'s filters")
            if rule in needs:
                reqs = ", ".join(_keys_hint(r) for r in needs[rule])
                fix = (f"{rule} reads {reqs} from the metadata, so first make sure meta_fields for {source} in "
                       f"the sources YAML names the input's fields; then " + fix)
            out.append((0, -share, (
                f"{source}: filter rule {rule} rejected {int(n):,} of {read:,} documents ({pct(share)}), more "
                f"than {pct(max_rule_share)} of the source; {fix}.")))
    if meta_missing is None:
        meta_missing = stats.get("meta_missing") or {}
    chain = stats.get("filters")
    for req, n in meta_missing.items():
        share = int(n) / read
        if share <= max_missing_share:
            continue
        rules = [r for r, reqs in needs.items() if req in reqs and (chain is None or r in chain)]
        if not rules:
            continue
        effects = "; ".join(f"{r} {RULES[r].missing_effect or 'cannot check them'}" for r in rules)
        keys = req.split("|")
        what = f"metadata field {keys[0]!r}" if len(keys) == 1 else "metadata fields " + " / ".join(
            repr(k) for k in keys) + " (any one)"
        out.append((1, -share, (
            f"{source}: {what} absent from {int(n):,} of {read:,} documents ({pct(share)}); {effects}. "
            f"If the input has it, add it to meta_fields for {source} in the sources YAML (a dotted path, e.g. "
            f"meta.{keys[0]}); otherwise drop {', '.join(rules)} from {source}'s filters.")))
    if int(stats.get("kept", 1)) == 0:
        out.append((-1, 0.0, _nothing_kept(source, stats, read)))
    return [s for _, _, s in sorted(out)]


def _nothing_kept(source: str, stats: Mapping, read: int) -> str:
    """An empty source is a result, not a crash; say what emptied it, biggest cause first."""
    causes = {f"filter rule {r}": int(n) for r, n in (stats.get("rejected") or {}).items()}
    for field, what in (("decontaminated", "decontamination"), ("exact_duplicates", "exact dedupe"),
                        ("near_duplicates", "near dedupe"), ("semantic_duplicates", "semantic dedupe")):
        causes[what] = int(stats.get(field, 0))
    top = sorted(((n, c) for c, n in causes.items() if n), reverse=True)[:3]
    most = ("most removed by " + "; ".join(f"{c}: {n:,}" for n, c in top) if top else
            f"the inputs hold no readable document: {int(stats.get('malformed', 0)):,} malformed")
    return (f"{source}: no document kept of {read:,} read ({most}); the source is empty in "
            f"sources/ and a mixture that needs it stops unless --allow-missing-sources. Check text_field, "
            f"the inputs and the filter chain.")
