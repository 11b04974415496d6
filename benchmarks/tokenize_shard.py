"""Tokenize-and-shard throughput vs the raw NeoX encode_batch_fast ceiling, measured in the same run.

Rows (all on the same text, the ten categories of ../shared/corpora):
  ceiling      tokenizers.encode_batch_fast, nothing else: one process (rayon threads on all cores), and N
               processes over the same hash parts; the faster of the two is the ceiling
  fast ceiling the same with the adopted fast encoder (fastokens, tokenization/fast.py), when installed;
               the stage rows use whichever encoder NeoXTokenizer.encode_batch selects ($NEOX_ENCODER)
  stage x1     our build's tokenize-and-shard code (pipelines.engine.process's batch encode to uint16 + EOS, then
               pipelines.engine.shards.write_mds: zstd MDS, doc_tokens.npy) in one process
  stage xN     the same code in N worker processes over hash parts, as the Beam workers run it
  llm-foundry  llm-foundry's convert_dataset_json shape: one process, per-document encode, concat into
               2048-token samples, MDSWriter(tokens: bytes, zstd)
  full build   (--build) python -m pipelines.build on the same corpora, exact dedupe + default filters,
               Beam local runner, N workers: read + filter + dedupe + tokenize + shard + finalize
Usage: python benchmarks/tokenize_shard.py [--build] [--repeat 2]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
TOK = SHARED / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


def load_docs():
    import zstandard

    from contract.registry import SOURCE_NAMES
    from pipelines.records import Document

    docs = []
    for si, n in enumerate(SOURCE_NAMES):
        raw = zstandard.ZstdDecompressor().stream_reader(open(SHARED / "corpora" / f"{n}.jsonl.zst", "rb")).read()
        for i, line in enumerate(raw.decode().splitlines()):
            r = json.loads(line)
            docs.append(Document((si << 57) | i, r["id"], n, r["text"], f"{n}:{i}", {}))
    return docs


def _ceiling_worker(texts, encoder="tokenizers"):
    """The raw encoder alone: ``tokenizers`` encode_batch_fast, or (encoder="fastokens") the adopted fast
    encoder's encode_batch_flat (tokenization/fast.py), same batches."""
    if encoder == "fastokens":
        from tokenization.fast import FastokensEncoder

        enc = FastokensEncoder(TOK.read_text(encoding="utf-8"))
        t = time.perf_counter()
        n = 0
        for i in range(0, len(texts), 512):
            n += len(enc.encode_flat(texts[i:i + 512])[0])
        return time.perf_counter() - t, n
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOK))
    t = time.perf_counter()
    n = 0
    for i in range(0, len(texts), 512):
        n += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i:i + 512], add_special_tokens=False))
    return time.perf_counter() - t, n


def _ceiling_worker_fast(texts):
    return _ceiling_worker(texts, "fastokens")


def ceiling(texts, encoder="tokenizers"):
    return _ceiling_worker(texts, encoder)


def ceiling_procs(docs, workers, encoder="tokenizers"):
    """The raw encoder in N processes over the same hash parts the stage uses (rayon inside each)."""
    fn = _ceiling_worker_fast if encoder == "fastokens" else _ceiling_worker
    parts = [[] for _ in range(workers)]
    for d in docs:
        parts[part_of(d.uid, workers)].append(d.text)
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(fn, [p[:5] for p in parts], chunksize=1)
        t = time.perf_counter()
        res = pool.map(fn, parts, chunksize=1)
    return time.perf_counter() - t, sum(r[1] for r in res)


def fast_available() -> bool:
    try:
        import fastokens  # noqa: F401
    except ImportError:
        return False
    return True


def part_of(uid: int, n: int) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(uid.to_bytes(8, "little", signed=True)) % n


def tokenize_and_write(docs, tok, out: str) -> int:
    """What a part goes through in the build: batch encode (pipelines.engine.process), then the MDS writer
    (pipelines.engine.shards.write_mds); returns the token count."""
    from pipelines.engine.process import BATCH_DOCS
    from pipelines.engine.shards import write_mds

    arrays = []
    for i in range(0, len(docs), BATCH_DOCS):
        arrays += tok.encode_batch([d.text for d in docs[i:i + BATCH_DOCS]], eos=True)
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
    return int(write_mds(tokens, offsets, np.arange(len(docs)), [d.id for d in docs], out).sum())


def _stage_worker(args):
    docs, out = args
    from tokenization import NeoXTokenizer

    tok = NeoXTokenizer(str(TOK))
    t = time.perf_counter()
    n = tokenize_and_write(docs, tok, out)
    return time.perf_counter() - t, n


def stage(docs, workers, tmp):
    parts = [[] for _ in range(max(workers, 1))]
    for d in docs:
        parts[part_of(d.uid, len(parts))].append(d)
    jobs = [(sorted(p, key=lambda d: d.uid), os.path.join(tmp, f"stage{workers}-{i}")) for i, p in enumerate(parts)]
    t = time.perf_counter()
    if workers == 1:
        res = [_stage_worker(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            # import streaming/tokenizers in every worker before timing
            pool.map(_stage_worker, [(jobs[0][0][:5], os.path.join(tmp, f"warm{i}")) for i in range(workers)], chunksize=1)
            t = time.perf_counter()
            res = pool.map(_stage_worker, jobs)
    return time.perf_counter() - t, sum(r[1] for r in res)


def foundry(texts, tmp):
    from streaming import MDSWriter
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOK))
    t = time.perf_counter()
    buf: list[int] = []
    n = 0
    with MDSWriter(out=os.path.join(tmp, "foundry"), columns={"tokens": "bytes"}, compression="zstd") as w:
        for text in texts:
            ids = tok.encode(text).ids + [0]
            n += len(ids)
            buf.extend(ids)
            while len(buf) >= 2048:
                w.write({"tokens": np.asarray(buf[:2048], dtype=np.int64).tobytes()})
                buf = buf[2048:]
    return time.perf_counter() - t, n


def full_build(tmp, workers):
    import yaml

    from pipelines.build import main
    from contract.registry import SOURCE_NAMES

    cfg = {"sources": {n: {"inputs": [str(SHARED / "corpora" / f"{n}.jsonl.zst")], "id_field": "id", "text_field": "text",
                           "dedupe": {"exact": True}} for n in SOURCE_NAMES}}
    Path(tmp, "s.yaml").write_text(yaml.safe_dump(cfg))
    t = time.perf_counter()
    rc = main(["--mixture", "mpt30b_8k", "--sources", str(Path(tmp, "s.yaml")), "--out", str(Path(tmp, "build")),
               "--tokenizer", str(TOK), "--skip-mixture", "--workers", str(workers), "--force"])
    dt = time.perf_counter() - t
    assert rc == 0
    toks = sum(json.loads(Path(tmp, "build", "stats", f"{n}.json").read_text())["tokens"] for n in SOURCE_NAMES)
    return dt, toks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="also time the whole Beam build")
    ap.add_argument("--repeat", type=int, default=2, help="best of N for each row")
    args = ap.parse_args()
    if not TOK.exists():
        sys.exit(f"needs {TOK}")
    cores = os.cpu_count() or 1
    docs = load_docs()
    texts = [d.text for d in docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    rows = []
    tmp = tempfile.mkdtemp(prefix="bench-tok-")
    try:
        def best(fn, *a):
            runs = []
            for _ in range(args.repeat):
                shutil.rmtree(tmp, ignore_errors=True)
                os.makedirs(tmp)
                runs.append(fn(*a))
            return min(runs)

        rows.append(("ceiling: encode_batch_fast, 1 process (rayon)", *best(ceiling, texts)))
        rows.append((f"ceiling: encode_batch_fast, {cores} procs", *best(ceiling_procs, docs, cores)))
        if fast_available():
            rows.append(("fast ceiling: fastokens encode_batch_flat, 1 process (1 BPE thread)", *best(ceiling, texts, "fastokens")))
            rows.append((f"fast ceiling: fastokens, {cores} procs", *best(ceiling_procs, docs, cores, "fastokens")))
        rows.append(("stage x1: tokenize_and_write, rayon", *best(stage, docs, 1, tmp)))
        rows.append((f"stage x{cores}: tokenize_and_write, {cores} procs", *best(stage, docs, cores, tmp)))
        rows.append(("llm-foundry-style, 1 process", *best(foundry, texts, tmp)))
        if args.build:
            rows.append((f"full Beam build, {cores} workers", *best(full_build, tmp, cores)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ceil = max(mb / rows[0][1], mb / rows[1][1])  # the faster of the two tokenizers raw-encoder layouts
    print(f"\n{len(docs):,} docs, {mb:.1f} MB of text, {cores} cores, load avg {os.getloadavg()[0]:.1f}")
    print("| method | seconds | MB/s | Mtok/s | vs ceiling (best tokenizers raw row) |\n|---|---:|---:|---:|---:|")
    for name, dt, toks in rows:
        print(f"| {name} | {dt:.2f} | {mb / dt:.2f} | {toks / dt / 1e6:.2f} | {mb / dt / ceil:.0%} |")


if __name__ == "__main__":
    main()
