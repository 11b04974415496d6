"""The ten MPT source subsets: names, proportions, and defaults that fit each real corpus's public layout.

Order matters: it is the source priority for cross-source dedupe (the smallest uid keeps), so the
curated/smaller web sets come before the bigger crawls that overlap them (C4 and mC4 and RedPajama-CC
are all Common Crawl).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class SourceDefaults:
    name: str
    corpus: str
    source_tokens_b: float       # MPT-30B model card, billions of NeoX tokens
    mpt30b_proportion: float
    mpt7b_proportion: float
    format: str                  # public layout of the real corpus
    text_field: str
    id_field: str | None
    meta_fields: tuple[str, ...]  # dotted paths copied into Document.meta (last path component is the key)
    is_code: bool
    filters: tuple[Any, ...]     # default filter chain (see pipelines.filters)
    dedupe: Mapping[str, Any] = field(default_factory=dict)


# Light default chains: the foundation ships the length rules; issue 3 extends these per source.
_LEN = ("max_bytes", "min_chars")

SOURCES: dict[str, SourceDefaults] = {s.name: s for s in [
    SourceDefaults("c4_en", "C4 English, SemDedup keeping 80%", 100.42, 0.299, 0.299,
                   "jsonl.gz", "text", None, ("url", "timestamp"), False, _LEN + ("min_words",),
                   {"exact": True, "minhash": False, "semantic": {"keep_fraction": 0.8}}),
    SourceDefaults("mc4_en", "mC4 3.1.0 English, documents with 200+ words", 2417.99, 0.335, 0.33,
                   "jsonl.gz", "text", None, ("url", "timestamp"), False,
                   _LEN + ({"min_words": {"min_words": 200}},), {"exact": True, "minhash": False}),
    SourceDefaults("rp_commoncrawl", "RedPajama CommonCrawl", 878.45, 0.085, 0.10,
                   "jsonl.zst", "text", None, ("meta.url",), False, _LEN + ("min_words",),
                   {"exact": True, "minhash": False}),
    SourceDefaults("stack_selected", "The Stack, selected languages", 463.78, 0.10, 0.10,
                   "parquet", "content", None, ("lang", "path", "max_stars_repo_path"), True, _LEN,
                   {"exact": True, "minhash": False}),
    SourceDefaults("rp_wikipedia", "RedPajama Wikipedia", 4.87, 0.04, 0.04,
                   "jsonl.zst", "text", None, ("meta.title", "title", "meta.language"), False, _LEN,
                   {"exact": True, "minhash": False}),
    SourceDefaults("stack_markdown", "The Stack, Markdown", 107.07, 0.045, 0.035,
                   "parquet", "content", None, ("path", "max_stars_repo_path"), True, _LEN,
                   {"exact": True, "minhash": False}),
    SourceDefaults("s2orc", "Semantic Scholar ORC", 48.95, 0.033, 0.033,
                   "jsonl.gz", "content.text", "id", ("title",), False, _LEN,
                   {"exact": True, "minhash": False}),
    SourceDefaults("rp_books", "RedPajama Books", 26.02, 0.03, 0.03,
                   "jsonl.zst", "text", None, ("meta.title", "meta.short_book_title"), False, _LEN,
                   {"exact": True, "minhash": False}),
    SourceDefaults("rp_arxiv", "RedPajama arXiv", 28.10, 0.019, 0.019,
                   "jsonl.zst", "text", None, ("meta.arxiv_id", "meta.url"), False, _LEN,
                   {"exact": True, "minhash": False}),
    SourceDefaults("rp_stackexchange", "RedPajama StackExchange", 20.54, 0.014, 0.014,
                   "jsonl.zst", "text", None, ("meta.url", "meta.question_score"), False, _LEN,
                   {"exact": True, "minhash": False}),
]}

SOURCE_NAMES: tuple[str, ...] = tuple(SOURCES)
SOURCE_INDEX: dict[str, int] = {n: i for i, n in enumerate(SOURCE_NAMES)}
CODE_SOURCES: tuple[str, ...] = tuple(n for n, s in SOURCES.items() if s.is_code)

assert abs(sum(s.mpt30b_proportion for s in SOURCES.values()) - 1.0) < 1e-9
assert abs(sum(s.mpt7b_proportion for s in SOURCES.values()) - 1.0) < 1e-9
