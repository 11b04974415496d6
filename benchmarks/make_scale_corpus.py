"""Make a non-duplicate all-sources corpus of any size from ../shared/corpora, for scale tests and benchmarks.

Why not just copy the samples: copies are exact duplicates, so dedupe would drop them and the build would
measure nothing past the first copy. Each round r rewrites every sample document: its paragraphs are
rotated by r, and every third word (whitespace-delimited; separators kept) is replaced by a word drawn
from the same source's vocabulary with a generator seeded by (source, round). Every word 5-gram then
contains a replaced word, so rounds are neither exact nor near duplicates of each other, yet the text
keeps its source's character (line structure, code punctuation, long documents).

Output: ``OUT/<source>/r<round>.jsonl.zst`` (one file per source and round, ``{"id", "text", ...meta}``)
and ``OUT/sources.yaml`` listing all ten sources for ``python -m pipelines.build --sources``.
Same arguments -> byte-identical files.

    python benchmarks/make_scale_corpus.py --gb 1 --out /tmp/scale1g
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import zstandard

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpora"
_SPLIT = re.compile(r"(\s+)")
_PARA = re.compile(r"\n\s*\n")
SOURCES = ("c4_en", "mc4_en", "rp_commoncrawl", "stack_selected", "rp_wikipedia", "stack_markdown", "s2orc",
           "rp_books", "rp_arxiv", "rp_stackexchange")
META = {"stack_selected": ("lang", "path"), "stack_markdown": ("path",), "c4_en": ("url", "timestamp"),
        "mc4_en": ("url",), "rp_wikipedia": ("title",), "rp_arxiv": ("arxiv_id",)}


def load_samples(corpora: Path = SHARED) -> dict[str, list[dict]]:
    out = {}
    for n in SOURCES:
        with open(corpora / f"{n}.jsonl.zst", "rb") as f:
            raw = zstandard.ZstdDecompressor().stream_reader(f).read().decode("utf-8")
        out[n] = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return out


def rewrite(text: str, rnd: int, vocab: list[str], rng: np.random.Generator) -> str:
    """Rotate paragraphs by ``rnd`` and replace every third word by a vocabulary word."""
    paras = _PARA.split(text)
    if len(paras) > 1:
        k = rnd % len(paras)
        paras = paras[k:] + paras[:k]
        text = "\n\n".join(paras)
    parts = _SPLIT.split(text)
    words = parts[0::2]
    n_rep = (len(words) + 2) // 3
    picks = rng.integers(0, len(vocab), size=n_rep)
    for j, w in enumerate(range(2, len(words), 3)):
        if words[w]:
            words[w] = vocab[picks[j]]
    parts[0::2] = words
    return "".join(parts)


def write_round(args: tuple[str, int, str, list[dict], list[str]]) -> tuple[str, int, int]:
    source, rnd, out, docs, vocab = args
    rng = np.random.default_rng([zlib.crc32(source.encode()), rnd])
    lines, nbytes = [], 0
    for d in docs:
        text = rewrite(d["text"], rnd, vocab, rng)
        rec = {"id": f"{d['id']}#r{rnd}", "text": text}
        for m in META.get(source, ()):
            if m in d:
                rec[m] = d[m]
        nbytes += len(text.encode("utf-8", "surrogatepass"))
        lines.append(json.dumps(rec, ensure_ascii=False))
    path = Path(out) / source / f"r{rnd:04d}.jsonl.zst"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(zstandard.ZstdCompressor(level=3).compress(("\n".join(lines) + "\n").encode("utf-8")))
    os.replace(tmp, path)
    return source, rnd, nbytes


def sources_yaml(out: Path) -> str:
    import yaml

    cfg = {"sources": {n: {"inputs": [str(out / n / "*.jsonl.zst")], "format": "jsonl.zst", "text_field": "text",
                           "id_field": "id", "meta_fields": list(META.get(n, ()))} for n in SOURCES}}
    return yaml.safe_dump(cfg, sort_keys=False)


def make(out: Path, gb: float, workers: int = os.cpu_count() or 1, corpora: Path = SHARED) -> tuple[Path, float]:
    """Write enough rounds for ``gb`` GB of text; returns (sources.yaml, MB of text written)."""
    samples = load_samples(corpora)
    per_round = sum(len(d["text"].encode("utf-8", "surrogatepass")) for docs in samples.values() for d in docs)
    rounds = max(1, round(gb * 1e9 / per_round))
    vocab = {n: sorted({w for d in docs for w in d["text"].split() if len(w) < 24}) for n, docs in samples.items()}
    jobs = [(n, r, str(out), samples[n], vocab[n]) for r in range(rounds) for n in SOURCES]
    total, t0 = 0, time.time()
    with ProcessPoolExecutor(workers) as ex:
        for i, (_n, _r, nb) in enumerate(ex.map(write_round, jobs, chunksize=2)):
            total += nb
            if (i + 1) % (10 * 10) == 0:
                print(f"  {i + 1}/{len(jobs)} files, {total / 1e6:,.0f} MB text, {time.time() - t0:.0f} s",
                      file=sys.stderr, flush=True)
    path = out / "sources.yaml"
    (out / "text_mb.json").write_text(json.dumps({"text_mb": total / 1e6}))
    path.write_text(sources_yaml(out))
    return path, total / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, required=True, help="approximate GB of UTF-8 text to write")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not SHARED.exists():
        sys.exit(f"needs {SHARED} (the shared sample corpora)")
    path, mb = make(Path(args.out).resolve(), args.gb, args.workers)
    print(f"{mb:,.1f} MB of text -> {path}")


if __name__ == "__main__":
    main()
