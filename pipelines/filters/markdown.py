"""Markdown rules for The Stack's Markdown subset (stack_markdown).

Markdown is prose with markup, so the code rules fit only partly: the size guard, auto-generated
markers and alphanumeric fraction carry over unchanged (the default chain reuses those code rules),
but a Markdown paragraph is usually a single line, so the code line-length limits would reject
ordinary prose. Thresholds:

- ``md_visible_text``: bigcode-dataset's HTML filter keeps a file only when its visible text is at
  least 20% of it and at least 100 characters; we apply the same two numbers to Markdown after
  removing what a reader never sees as text (HTML tags and comments, link/image targets, bare URLs),
  which rejects badge walls, link dumps, and HTML-comment-only templates.
- ``md_max_line_length``: 3000 characters, our choice (3x the code limit of 1000 from Codex/The
  Stack, because one line is one paragraph; on the shared Stack Markdown sample the longest line is
  ~1,050 characters and the 99th percentile ~680). It still catches inlined base64 images and
  minified HTML blobs, which run to tens of kilobytes per line.
- ``md_language``: the file must be Markdown by The Stack's ``lang`` column or by its extension;
  documents with neither are kept (a Markdown-only input needs no label).
"""
from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from pipelines.filters import register
from pipelines.filters.text_stats import analyze

MARKDOWN_EXTENSIONS = (".md", ".markdown", ".mdown", ".mkd", ".mkdn", ".mdwn", ".mdx", ".ronn", ".workbook")

_INVISIBLE = re.compile(r"<!--.*?(?:-->|\Z)|<[A-Za-z/!][^>\n]*>|\]\([^)\s]*\)|https?://\S+", re.DOTALL)


@register("md_visible_text", min_fraction=0.2, min_chars=100)
def md_visible_text(text: str, meta: Mapping[str, str], min_fraction: float, min_chars: int):
    """Visible text (non-space characters outside HTML tags/comments, link targets and URLs) under
    20% of the non-space characters or under 100 characters (bigcode-dataset HTML filter numbers)."""
    s = analyze(text)
    total = s.n_chars - s.n_space
    if total == 0:
        return 0.0, "empty"
    visible = len("".join(_INVISIBLE.sub(" ", text).split())) if ("<" in text or "](" in text or "://" in text) else total
    frac = visible / total
    if visible < min_chars:
        return float(visible), f"{visible} visible characters < {min_chars}"
    if frac < min_fraction:
        return frac, f"visible text fraction {frac:.2f} < {min_fraction}"
    return None


@register("md_max_line_length", max_line_length=3000)
def md_max_line_length(text: str, meta: Mapping[str, str], max_line_length: int):
    """Longest line above 3000 characters (our choice, see module docstring): inlined data or
    minified HTML rather than a paragraph."""
    if len(text) <= max_line_length:
        return None
    m = analyze(text).max_line_length
    return None if m <= max_line_length else (float(m), f"max line length {m} > {max_line_length}")


@register("md_language", extensions=MARKDOWN_EXTENSIONS, needs_meta=("lang|path|max_stars_repo_path",),
          missing_effect="keeps them without checking")
def md_language(text: str, meta: Mapping[str, str], extensions):
    """Not Markdown by The Stack ``lang`` (when present) or by the path extension (when present)."""
    lang = (meta or {}).get("lang")
    if lang:
        return None if str(lang).strip().lower() == "markdown" else (float("nan"), f"lang {lang!r} is not Markdown")
    path = (meta or {}).get("path") or (meta or {}).get("max_stars_repo_path")
    if path:
        ext = posixpath.splitext(str(path).lower())[1]
        if ext not in tuple(extensions):
            return float("nan"), f"extension {ext!r} is not Markdown"
    return None
