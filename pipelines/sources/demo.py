"""Demo corpora: small, deterministic stand-ins for the ten sources, made from real text on this machine.

*** DEMO DATA, NOT THE REAL MPT CORPORA. ***  Text comes from what every install has: the Python standard
library's source files (code), their docstrings (prose), and installed packages' long descriptions
(Markdown). Derived variants give every stage work: exact and case/whitespace duplicates, near duplicates
(word edits), low-quality pages (boilerplate, lorem ipsum, too short), a few malformed records, and
documents of 4096+ tokens in several sources. Same install -> byte-identical files.
"""
from __future__ import annotations

import ast
import gzip
import json
import os
import random
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Iterator

import zstandard

from contract.registry import SOURCE_NAMES

DEMO_VERSION = 2
BOILERPLATE = [
    "This website uses cookies to improve your experience. Accept cookies? Read our privacy policy.",
    "Please enable JavaScript in your browser to view this page.",
    "Click here to subscribe! Share on Facebook Share on Twitter",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.",
    "Home | About | Contact | Terms of use | Sitemap",
]


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    files += sorted(p for d in ("email", "json", "asyncio", "xml/dom", "http", "logging", "unittest", "importlib")
                    for p in (root / d).glob("*.py"))
    return files


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out = []
    for node in [tree, *ast.walk(tree)]:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            d = ast.get_docstring(node)
            if d and len(d.split()) >= 8:
                out.append(d.strip())
    return list(dict.fromkeys(out))


def _markdown_descriptions() -> list[tuple[str, str]]:
    out = []
    for dist in metadata.distributions():
        md = dist.metadata
        ctype = (md.get("Description-Content-Type") or "").lower()
        body = md.get_payload() or md.get("Description") or ""
        name = md.get("Name") or ""
        if "markdown" in ctype and len(body) > 400 and name:
            out.append((name.lower(), body.replace("\r\n", "\n")))
    return sorted(dict(out).items())


def _edit(text: str, rng: random.Random, n_edits: int = 3) -> str:
    """A near duplicate: a few word substitutions/deletions (Jaccard of 5-grams stays high on long texts)."""
    words = text.split(" ")
    for _ in range(n_edits):
        if len(words) < 10:
            break
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            words[i] = words[i] + "s"
        else:
            del words[i]
    return " ".join(words)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items) - size + 1, size):
        yield items[i:i + size]


def build_records(seed: int = 1234) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    files = _stdlib_files()
    docs_by_module = [(p.stem if p.parent.name == "lib" or p.parent == files[0].parent else f"{p.parent.name}.{p.stem}",
                       _docstrings(p)) for p in files]
    docs_by_module = [(m, d) for m, d in docs_by_module if d]
    paragraphs = [d for _, ds in docs_by_module for d in ds]
    md = _markdown_descriptions()
    rec: dict[str, list[dict]] = {n: [] for n in SOURCE_NAMES}

    def web(n_pages: int, per_page: int, offset: int, name: str):
        pages = []
        for i, chunk in enumerate(_chunks(paragraphs[offset:], per_page)):
            if len(pages) >= n_pages:
                break
            body = "\n\n".join(c.replace("\n", " ") for c in chunk)
            pages.append({"text": body, "url": f"https://demo.example/{name}/{i}", "timestamp": "2019-04-22T00:00:00Z"})
        return pages

    # web: c4_en, mc4_en (200+ words), rp_commoncrawl
    rec["c4_en"] = web(300, 3, 0, "c4")
    rec["mc4_en"] = web(150, 8, 900, "mc4")
    rec["rp_commoncrawl"] = [{"text": r["text"], "meta": {"url": r["url"]}} for r in web(150, 5, 2100, "cc")]
    for name in ("c4_en", "mc4_en", "rp_commoncrawl"):
        pages = rec[name]
        extra = []
        for i in range(0, min(len(pages), 40), 4):  # planted exact / normalized / near duplicates
            src = pages[i]["text"]
            extra.append({**pages[i], "text": src})
            extra.append({**pages[i], "text": "  " + src.upper().replace(" ", "   ") + "\n"})
            extra.append({**pages[i], "text": _edit(src, rng)})
        for i, b in enumerate(BOILERPLATE * 4):  # low-quality pages
            extra.append({**pages[0], "text": b if i % 2 else (b + "\n") * 5})
        pages += extra
    rec["rp_commoncrawl"].append({"text": "", "meta": {"url": "https://demo.example/empty"}})

    # code: stdlib sources (python) as The Stack parquet rows
    stack = []
    for p in files[:160]:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if 300 <= len(text.encode()) <= 400_000:
            stack.append({"content": text, "lang": "Python", "path": f"cpython/Lib/{p.relative_to(p.parents[1]) if p.parent.name != files[0].parent.name else p.name}"})
    for i in range(0, 30, 3):
        stack.append({**stack[i], "path": "vendored/" + stack[i]["path"]})                       # exact copy
        stack.append({**stack[i + 1], "content": stack[i + 1]["content"].replace("\n", "\n# demo edit\n", 1)})
    rec["stack_selected"] = stack
    mdrows = [{"content": body, "path": f"{name}/README.md"} for name, body in md[:400]]
    if mdrows:
        mdrows += [dict(mdrows[i]) for i in range(0, min(len(mdrows), 20), 5)]
    rec["stack_markdown"] = mdrows

    # prose: wikipedia-like articles per module, books and papers as long concatenations
    rec["rp_wikipedia"] = [{"text": f"{m.replace('.', ' ').title()}\n\n" + "\n\n".join(ds), "meta": {"title": m}}
                           for m, ds in docs_by_module if sum(len(d) for d in ds) > 1500][:120]
    big = sorted(docs_by_module, key=lambda x: -sum(len(d) for d in x[1]))
    # books: three modules' docstrings per volume, so every volume is long (4096+ tokens) without repetition
    rec["rp_books"] = [{"text": f"THE BOOK OF {big[i][0].upper()}\n\n" + "\n\n".join(d for _, ds in big[i:i + 3] for d in ds),
                        "meta": {"title": big[i][0]}} for i in range(0, 36, 3)]
    rec["rp_arxiv"] = [{"text": f"\\section{{Introduction}}\nWe study the \\texttt{{{m}}} module.\n\n"
                        + "\n\n".join(f"\\subsection{{Part {j}}}\n{d}" for j, d in enumerate(ds)),
                        "meta": {"arxiv_id": f"demo.{i:05d}"}} for i, (m, ds) in enumerate(big[12:40])]
    se = []
    for i, (m, ds) in enumerate(docs_by_module[:400]):
        q = ds[0].split("\n")[0]
        se.append({"text": f"How do I use {m}?\n\nQ:\n\n{q}\n\nA:\n\n" + "\n\n".join(ds[1:4] or ds),
                   "meta": {"url": f"https://demo.stackexchange.example/q/{i}"}})
    rec["rp_stackexchange"] = se
    rec["s2orc"] = [{"id": f"demo-s2orc-{i}", "content": {"text": f"{m}: a study\n\nAbstract\n\n{ds[0]}\n\n" + "\n\n".join(ds[1:6])},
                     "title": f"{m}: a study"} for i, (m, ds) in enumerate(docs_by_module[100:300])]
    return rec


FORMATS = {"c4_en": "jsonl.gz", "mc4_en": "jsonl.gz", "s2orc": "jsonl.gz", "stack_selected": "parquet",
           "stack_markdown": "parquet"}


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")


def write_demo_corpora(out_dir: str, seed: int = 1234) -> dict[str, str]:
    """Write the ten demo files (skipping ones already present from the same demo version); return source->path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    stamp = os.path.join(out_dir, "DEMO_DATA_README.txt")
    paths = {n: os.path.join(out_dir, f"{n}.{FORMATS.get(n, 'jsonl.zst')}") for n in SOURCE_NAMES}
    marker = f"demo corpora v{DEMO_VERSION} seed {seed}\n"
    if os.path.exists(stamp) and open(stamp).read().startswith(marker) and all(map(os.path.exists, paths.values())):
        return paths
    records = build_records(seed)
    for n, rows in records.items():
        path, fmt = paths[n], FORMATS.get(n, "jsonl.zst")
        tmp = path + ".tmp"
        if fmt == "parquet":
            table = pa.Table.from_pylist(rows)
            pq.write_table(table, tmp, compression="zstd")
        elif fmt == "jsonl.gz":
            data = _jsonl(rows)
            if n == "c4_en":  # two malformed lines, counted as malformed in the demo stats
                data += b'{"text": "truncated json\n' + b'["not", "an", "object"]\n'
            with open(tmp, "wb") as f:
                f.write(gzip.compress(data, mtime=0))
        else:
            with open(tmp, "wb") as f:
                f.write(zstandard.ZstdCompressor(level=3).compress(_jsonl(rows)))
        os.replace(tmp, path)
    with open(stamp, "w") as f:
        f.write(marker + "DEMO DATA: small deterministic stand-ins for the ten MPT sources, made from the Python "
                "standard library and installed packages' descriptions on this machine. Not the real corpora.\n")
    return paths


def demo_sources_yaml(paths: dict[str, str]) -> dict:
    cfg = {}
    for n, p in paths.items():
        cfg[n] = {"inputs": [p]}
        if n == "s2orc":
            cfg[n].update(text_field="content.text", id_field="id")
    return {"sources": cfg}
