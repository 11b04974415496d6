"""C4 page rules and the mC4 line-length rule, as keep/reject decisions.

Source: Raffel et al. 2020 (T5), section 2.2, and the code that built C4: TensorFlow Datasets
``tensorflow_datasets/text/c4_utils.py`` ``clean_page`` (itself an Apache Beam pipeline).

Thresholds: we follow the released CODE, not the paper, because the code produced the C4 that MPT
trained on: a line is kept only with at least 5 words (paper: 3), and a page needs at least 3
sentences (paper: 5). Both are parameters, so ``{c4_min_sentences: {min_sentences: 5}}`` and
``min_words_per_line: 3`` give the paper's version.

C4 rewrites a page by dropping lines; our chain only keeps or rejects whole documents (text is never
edited, so ids, dedupe and tokens all see the input text). So the line rules are evaluated once per
page (``c4_line_stats``) and turned into page-level decisions:

- ``c4_lorem_ipsum`` / ``c4_curly_brace``: C4 drops the whole page when a line that survives the line
  rules contains "lorem ipsum" or "{" (the code checks only surviving lines; the paper says "any page").
- ``c4_min_sentences``: C4 drops the page when its surviving lines hold fewer than 3 sentences.
- ``c4_kept_fraction``: our page-level reading of line removal: reject when less than half of the
  page's characters sit in lines C4 would keep, i.e. when C4 cleaning would have removed most of it.
  No published threshold exists for this (C4 keeps the remainder instead); 0.5 is our choice, and
  it is a no-op on real C4 output, whose lines all pass already.
- ``c4_boilerplate``: reject when "javascript" notices and policy/cookie lines (lines C4 would drop
  for those phrases) make up more than 20% of the page's otherwise-valid lines: a page dominated by
  boilerplate. Threshold is ours (C4 just drops the lines).

Sentence counting: C4 runs NLTK punkt on each kept line; we count terminal-punctuation runs followed
by whitespace or end of line (at least one per kept line, since every kept line ends in one). This
over-counts abbreviations like "e.g." slightly, i.e. it errs toward keeping.

Not implemented: C4's LDNOOBW bad-words page filter (needs the word list as a data file) and the
langdetect / URL-dedupe steps (language ID and dedupe live elsewhere in the pipeline).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.filters import register
from pipelines.filters.text_stats import analyze

_END_MARKS = (".", "?", "!", '"')
_ELLIPSIS = "..."
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")  # c4_utils._CITATION_REGEX
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


@dataclass(frozen=True)
class C4LineStats:
    total_chars: int        # characters of all stripped lines
    kept_chars: int         # characters of lines C4 keeps
    kept_lines: int
    candidate_lines: int    # lines passing the word-length, end-mark and min-words rules
    boilerplate_lines: int  # candidates dropped for "javascript" or a policy phrase
    sentences: int          # sentences in kept lines
    lorem_ipsum: bool       # a candidate line contains "lorem ipsum" (C4 drops the page)
    curly_brace: bool       # a candidate line contains "{" (C4 drops the page)


def c4_line_stats(text: str, min_words_per_line: int = 5, max_word_length: int = 1000) -> C4LineStats:
    """Run C4's per-line rules (c4_utils.clean_page, in its order) over the page once; cached per text."""
    s = analyze(text)
    key = ("c4_lines", min_words_per_line, max_word_length)
    hit = s.memo.get(key)
    if hit is not None:
        return hit
    total = kept = kept_lines = candidates = boiler = sentences = 0
    lorem = curly = False
    for line in s.lines:
        line = line.strip()
        if not line:
            continue
        total += len(line)
        if len(line) > max_word_length and any(len(w) > max_word_length for w in line.split()):
            continue
        if "[" in line:
            line = _CITATION.sub("", line)
        if not line.endswith(_END_MARKS) or line.endswith(_ELLIPSIS):
            continue
        if len(line.split(None, min_words_per_line)) < min_words_per_line:
            continue
        candidates += 1
        low = line.lower()
        if "lorem ipsum" in low:
            lorem = True
        if "javascript" in low:
            boiler += 1
            continue
        if "{" in line:
            curly = True
        if any(p in low for p in _POLICY):
            boiler += 1
            continue
        kept += len(line)
        kept_lines += 1
        sentences += max(1, len(_SENTENCE_END.findall(line)))
    out = C4LineStats(total, kept, kept_lines, candidates, boiler, sentences, lorem, curly)
    s.memo[key] = out
    return out


@register("c4_lorem_ipsum", min_words_per_line=5)
def c4_lorem_ipsum(text: str, meta: Mapping[str, str], min_words_per_line: int):
    """Page has a C4-valid line containing "lorem ipsum" (C4: placeholder text, page dropped)."""
    if "lorem ipsum" not in analyze(text).lower:
        return None
    st = c4_line_stats(text, min_words_per_line)
    return (1.0, "contains 'lorem ipsum'") if st.lorem_ipsum else None


@register("c4_curly_brace", min_words_per_line=5)
def c4_curly_brace(text: str, meta: Mapping[str, str], min_words_per_line: int):
    """Page has a C4-valid line containing "{" (C4: likely code, page dropped)."""
    if "{" not in text:
        return None
    st = c4_line_stats(text, min_words_per_line)
    return (1.0, "contains '{' in a prose line") if st.curly_brace else None


@register("c4_min_sentences", min_sentences=3, min_words_per_line=5)
def c4_min_sentences(text: str, meta: Mapping[str, str], min_sentences: int, min_words_per_line: int):
    """Fewer than 3 sentences in the lines C4 keeps (C4 code; the paper says 5)."""
    st = c4_line_stats(text, min_words_per_line)
    if st.sentences < min_sentences:
        return float(st.sentences), f"{st.sentences} sentences in kept lines < {min_sentences}"
    return None


@register("c4_kept_fraction", min_fraction=0.5, min_words_per_line=5)
def c4_kept_fraction(text: str, meta: Mapping[str, str], min_fraction: float, min_words_per_line: int):
    """Less than half of the page's characters are in lines C4 keeps (our page-level reading of
    C4's line removal; threshold ours, see module docstring)."""
    st = c4_line_stats(text, min_words_per_line)
    if st.total_chars == 0:
        return 0.0, "no text"
    frac = st.kept_chars / st.total_chars
    return None if frac >= min_fraction else (frac, f"C4 keeps {frac:.2f} of characters < {min_fraction}")


@register("c4_boilerplate", max_fraction=0.2, min_words_per_line=5)
def c4_boilerplate(text: str, meta: Mapping[str, str], max_fraction: float, min_words_per_line: int):
    """More than 20% of otherwise-valid lines are javascript notices or policy/cookie boilerplate
    (C4 drops such lines; the page-level threshold is ours)."""
    low = analyze(text).lower
    # Every C4 boilerplate phrase contains one of these four (see _POLICY).
    if "javascript" not in low and "cookie" not in low and "privacy policy" not in low and "terms of use" not in low:
        return None
    st = c4_line_stats(text, min_words_per_line)
    if st.candidate_lines == 0:
        return None
    frac = st.boilerplate_lines / st.candidate_lines
    return None if frac <= max_fraction else (frac, f"boilerplate lines {frac:.2f} > {max_fraction}")


@register("mc4_long_lines", min_lines=3, min_line_chars=200)
def mc4_long_lines(text: str, meta: Mapping[str, str], min_lines: int, min_line_chars: int):
    """Fewer than 3 lines of at least 200 characters (mC4's line-length filter: Xue et al. 2021,
    "mT5", section 2: "pages that contain at least three lines with 200 or more characters";
    datatrove ``C4ParagraphFilter``)."""
    n = 0
    for line in analyze(text).lines:
        if len(line) >= min_line_chars and len(line.strip()) >= min_line_chars:
            n += 1
            if n >= min_lines:
                return None
    return float(n), f"{n} lines of >= {min_line_chars} chars < {min_lines}"
