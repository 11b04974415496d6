"""Shared harness for benchmarks/dedupe_quality.py and benchmarks/dedupe_speed.py.

Builds the planted-duplicate corpus from ../shared/corpora, writes it as JSONL shards both tools read,
runs our NearDedupe (Beam local runner, multi-process) and datatrove's 4-stage MinHash dedupe on it in
subprocesses, and measures wall time and the peak RSS of every worker process (VmHWM from /proc, polled;
it is a high-water mark, so polling cannot miss the peak of a process it has seen).

CLI (used by the benchmarks to get one process tree per measured run):
    python -m benchmarks.dedupe_common ours IN_DIR OUT_DIR WORKERS
    python -m benchmarks.dedupe_common datatrove IN_DIR WORK_DIR WORKERS [sigonly]
    python -m benchmarks.dedupe_common datatrove-stage N IN_DIR WORK_DIR WORKERS
    python -m benchmarks.dedupe_common sigrate-ours|sigrate-datatrove IN_DIR
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPORA = SHARED / "corpora"
N_FILES = 8
# datatrove 0.10.1 needs a newer huggingface_hub than the project pins (transformers' range), so it may
# live in its own virtualenv: DATATROVE_PYTHON=/path/to/venv/bin/python (default: this interpreter).
DATATROVE_PYTHON = os.environ.get("DATATROVE_PYTHON", sys.executable)


# ---------------------------------------------------------------------------------------------------
# corpus

def print_table(head: tuple, rows: list) -> None:
    """One Markdown table, columns padded to their widest cell (both dedupe benchmarks print this way)."""
    w = [max(len(str(r[k])) for r in [*rows, head]) for k in range(len(head))]
    print("| " + " | ".join(str(h).ljust(w[k]) for k, h in enumerate(head)) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print("| " + " | ".join(str(v).ljust(w[k]) for k, v in enumerate(r)) + " |")


def build_corpus(fraction: float = 1.0, plants_per_doc: float = 0.5, seed: int = 0):
    """Every document of ../shared/corpora plus ``plants_per_doc`` planted variants per document; with
    ``fraction`` < 1, whole families (an original and its variants) are dropped in a seeded random order
    until only ``fraction`` of the text bytes is left, so two sizes differ by exactly that factor in bytes
    and are built from distinct real text. Returns texts, families, pair_j (see planted.score)."""
    import random

    from pipelines.dedupe.planted import corpus_with_plants, plant
    from pipelines.sources.readers import read_texts

    base = []
    for f in sorted(CORPORA.glob("*.jsonl.zst")):
        base += read_texts(f)
    plants = plant(base, int(len(base) * plants_per_doc), seed=seed)
    if fraction < 1.0:
        fam_bytes = [len(t.encode("utf-8")) for t in base]
        for pl in plants:
            fam_bytes[pl.origin] += len(pl.text.encode("utf-8"))
        order = list(range(len(base)))
        random.Random(seed).shuffle(order)
        budget, keep = fraction * sum(fam_bytes), set()
        for i in order:
            if fam_bytes[i] <= budget:
                keep.add(i)
                budget -= fam_bytes[i]
        index = {old: new for new, old in enumerate(sorted(keep))}
        base = [base[i] for i in sorted(keep)]
        plants = [pl.__class__(pl.text, index[pl.origin], pl.edit, pl.strength, pl.jaccard)
                  for pl in plants if pl.origin in index]
    return corpus_with_plants(base, plants)


def write_shards(texts, out_dir: Path, n_files: int = N_FILES) -> int:
    """Contiguous JSONL shards (doc i in shard i * n_files // len); returns text bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(texts)
    per = -(-n // n_files)
    total = 0
    for k in range(n_files):
        with open(out_dir / f"part-{k:03d}.jsonl", "w", encoding="utf-8") as f:
            for i in range(k * per, min(n, (k + 1) * per)):
                f.write(json.dumps({"id": str(i), "text": texts[i]}) + "\n")
                total += len(texts[i].encode("utf-8"))
    return total


# ---------------------------------------------------------------------------------------------------
# measurement

def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                parts = f.read().rsplit(")", 1)[1].split()
            kids.setdefault(int(parts[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of the root process and of the largest descendant (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def poll():
        while not done.is_set():
            for p in [proc.pid] + _descendants(proc.pid):
                peaks[p] = max(peaks.get(p, 0), _hwm_kib(p))
            time.sleep(0.2)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-4000:]}")
    root = peaks.pop(proc.pid, 0)
    return {"wall": wall, "root_mib": root / 1024, "worker_mib": max(peaks.values(), default=0) / 1024,
            "stdout": out}


# ---------------------------------------------------------------------------------------------------
# our pipeline

def _to_doc(line: str):
    from pipelines.records import Document

    r = json.loads(line)
    i = int(r["id"])
    return Document(i, r["id"], "bench", r["text"], f"bench:{i}", {})


def run_ours(in_dir: str, out_dir: str, workers: int) -> None:
    """The build's own near-dup path: the fused per-part step (signatures staged per part) on every input
    file, then the Beam Dedupe policy with MinHash only, on the local runner with ``workers`` processes."""
    import glob as _glob

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.sources.config import source_config
    from pipelines.engine.dedupe.stages import Dedupe
    from pipelines.engine.plan import BuildPlan
    from pipelines.engine.process import Tools, process_part
    from pipelines.sources.readers import expand_inputs
    from pipelines.engine.staging import Part

    tok = os.environ.get("NEOX_TOKENIZER") or str(ROOT.parent / "shared" / "tokenizers" / "gpt-neox-20b" /
                                                  "tokenizer.json")
    cfg = source_config("rp_commoncrawl", {"inputs": sorted(_glob.glob(os.path.join(in_dir, "*.jsonl"))),
                                           "id_field": "id", "text_field": "text", "filters": "none",
                                           "dedupe": {"exact": False, "minhash": True}}, "bench")
    files = {"rp_commoncrawl": expand_inputs("rp_commoncrawl", cfg.inputs)}
    plan = BuildPlan.make(os.path.join(out_dir, "build"), Path(tok).read_text(), True, False,
                          {"rp_commoncrawl": cfg}, files, {"rp_commoncrawl": "bench"}, {"rp_commoncrawl": {}})
    t0 = time.perf_counter()
    tools = Tools(plan)
    summaries = [process_part(t, plan, tools) for t in plan.tasks]
    ids = {}
    for t in plan.tasks:
        staged = Part.of(plan, t.source, t.part)
        ids.update(zip(staged.read_docs().uid.tolist(), staged.read_ids()))
    opts = PipelineOptions(direct_num_workers=workers, direct_running_mode="multi_processing")
    with beam.Pipeline(options=opts) as p:
        (p | beam.Create(summaries) | Dedupe(plan)
           | beam.Map(lambda kv, ids=ids: json.dumps({"id": ids[kv[1].uid], "duplicate_of": kv[1].keeper_id,
                                                      "value": kv[1].value}))
           | beam.io.WriteToText(os.path.join(out_dir, "rejects"), shard_name_template=""))
    print(json.dumps({"pipeline_s": time.perf_counter() - t0}))


def read_ours(out_dir: str) -> dict[int, int]:
    path = Path(out_dir) / "rejects"
    if not path.exists():
        return {}
    return {int(r["id"]): int(r["duplicate_of"]) for r in map(json.loads, path.read_text().splitlines())}


# ---------------------------------------------------------------------------------------------------
# datatrove (FineWeb's MinHash, default MinhashConfig: 5-grams, 14 buckets x 8 hashes, 64-bit xxhash)

def run_datatrove(in_dir: str, work: str, workers: int, sig_only: bool = False) -> None:
    """The four stages, each in a fresh process (as datatrove runs them on Slurm: one job per stage).
    Chaining them with ``depends=`` in one process hung here in stage 2 (a fork after stage 1 had left
    threads behind), so the harness does not rely on it."""
    t0 = time.perf_counter()
    for stage in ([1] if sig_only else [1, 2, 3, 4]):
        subprocess.run([DATATROVE_PYTHON, "-m", "benchmarks.dedupe_common", "datatrove-stage", str(stage), in_dir,
                        work, str(workers)], check=True, cwd=ROOT)
    print(json.dumps({"pipeline_s": time.perf_counter() - t0}))


def run_datatrove_stage(stage: int, in_dir: str, work: str, workers: int) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    cfg = MinhashConfig()
    n_files = len(glob.glob(os.path.join(in_dir, "*.jsonl")))
    if stage == 1:
        pipeline, tasks = [JsonlReader(in_dir, glob_pattern="*.jsonl"),
                           MinhashDedupSignature(f"{work}/sigs", config=cfg)], n_files
    elif stage == 2:
        pipeline, tasks = [MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=cfg)], cfg.num_buckets
    elif stage == 3:
        pipeline, tasks = [MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=cfg,
                                               save_cluster_id=True)], 1
    else:
        pipeline, tasks = [JsonlReader(in_dir, glob_pattern="*.jsonl"),
                           MinhashDedupFilter(f"{work}/remove", load_cluster_ids=True,
                                              exclusion_writer=JsonlWriter(f"{work}/removed", compression=None)),
                           JsonlWriter(f"{work}/kept", compression=None)], n_files
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks), skip_completed=False,
                          logging_dir=f"{work}/logs/s{stage}").run()


def read_datatrove(work: str, in_dir: str) -> dict[int, int]:
    """removed doc -> the kept doc of its cluster, from stage 3's binary ``.remove`` / ``.clusters`` files.

    (Stage 4 only attaches cluster ids in shards that have a ``.remove`` file, so a keeper in a shard
    without removals would look unclustered; reading stage 3's files directly avoids that.) Task r of
    stages 1/4 reads the r-th sorted shard (tasks == shards), and doc indices are line numbers."""
    import struct

    shard_ids = []
    for f in sorted(glob.glob(os.path.join(in_dir, "*.jsonl"))):
        shard_ids.append([int(json.loads(line)["id"]) for line in open(f, encoding="utf-8")])

    def pairs(path, fmt):
        data = Path(path).read_bytes()
        size = struct.calcsize(fmt)
        return [struct.unpack(fmt, data[k:k + size]) for k in range(0, len(data), size)]

    removed, cluster = set(), {}
    for rank, ids in enumerate(shard_ids):
        rp = Path(work) / "remove" / f"{rank:06d}.remove"
        if rp.exists():
            removed |= {ids[d] for (d,) in pairs(rp, "<I")}
        cp = Path(work) / "remove" / f"{rank:06d}.clusters"
        if cp.exists():
            for d, c in pairs(cp, "<II"):
                cluster[ids[d]] = c
    keeper_of = {c: i for i, c in cluster.items() if i not in removed}
    return {i: keeper_of.get(cluster.get(i), i) for i in removed}


def _read_texts(in_dir: str) -> list[str]:
    return [json.loads(line)["text"] for f in sorted(glob.glob(os.path.join(in_dir, "*.jsonl")))
            for line in open(f, encoding="utf-8")]


def sig_seconds_ours(in_dir: str) -> float:
    """Per-document signature work (normalize, shingle, one-permutation MinHash, band keys), one core, in
    the batches the build uses."""
    from pipelines.dedupe.config import MinHashConfig
    from pipelines.dedupe.minhash import SignatureSpec, Signer, band_keys_batch

    texts = _read_texts(in_dir)
    spec = SignatureSpec.from_config(MinHashConfig())
    s = Signer(spec)
    s.sign_batch(["warm up the word table"])
    t0 = time.perf_counter()
    for i in range(0, len(texts), 512):
        _rows, sigs = s.sign_batch(texts[i:i + 512])
        band_keys_batch(sigs, spec.bands, spec.rows)
    return time.perf_counter() - t0


def sig_seconds_previous(in_dir: str) -> float:
    """The previous scheme (until this change): regex words, xxh3 per word in Python, datasketch's
    k-permutation MinHash (affine32, 128 permutations), band keys by xxh3 per band: the baseline of the
    >= 5x speed-up."""
    import re as _re

    import numpy as np
    import xxhash
    from datasketch import MinHash

    texts = _read_texts(in_dir)
    word_re = _re.compile(r"\w+")
    mult = np.uint64(0x9E3779B97F4A7C15)
    tmpl = MinHash(num_perm=128, seed=1, scheme="affine32", hashfunc=lambda x: x)
    t0 = time.perf_counter()
    for t in texts:
        ws = word_re.findall(t.lower())
        wh = np.fromiter((xxhash.xxh3_64_intdigest(w.encode()) for w in ws), dtype=np.uint64, count=len(ws))
        if not len(wh):
            continue
        k = min(5, len(wh))
        acc = wh[: len(wh) - k + 1].copy()
        for j in range(1, k):
            acc *= mult
            acc ^= wh[j: len(wh) - k + 1 + j]
        hs = (acc ^ (acc >> np.uint64(32))).astype(np.uint32)
        tmpl.clear()
        for st in range(0, hs.size, 8192):
            tmpl.update_batch(hs[st: st + 8192].tolist())
        sig = np.array(tmpl.hashvalues, dtype=np.uint32)
        [xxhash.xxh3_64_intdigest(sig[i * 7:(i + 1) * 7].tobytes(), seed=i) for i in range(18)]
    return time.perf_counter() - t0


def sig_seconds_datatrove(in_dir: str) -> float:
    """datatrove stage 1's per-document work (get_shingles with spaCy words + get_signature), one core."""
    import tempfile

    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    texts = _read_texts(in_dir)
    step = MinhashDedupSignature(tempfile.mkdtemp(), config=MinhashConfig())
    step.get_signature(step.get_shingles("warm up the word tokenizer and the parameters"))
    t0 = time.perf_counter()
    for t in texts:
        sh = step.get_shingles(t)
        if sh.size:
            step.get_signature(sh)
    return time.perf_counter() - t0


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "ours":
        run_ours(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "sigrate-ours":
        print(json.dumps({"seconds": sig_seconds_ours(sys.argv[2])}))
    elif mode == "sigrate-previous":
        print(json.dumps({"seconds": sig_seconds_previous(sys.argv[2])}))
    elif mode == "sigrate-datatrove":
        print(json.dumps({"seconds": sig_seconds_datatrove(sys.argv[2])}))
    elif mode == "datatrove-stage":
        run_datatrove_stage(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif mode == "datatrove":
        run_datatrove(sys.argv[2], sys.argv[3], int(sys.argv[4]), sig_only=len(sys.argv) > 5)
    else:
        raise SystemExit(f"unknown mode {mode}")
