"""Issue 31 item 1: SemDedup removes the same documents on every runner and every machine.

Why the Dask build removed other documents than the local runner: BLAS rounds float32 dot products by CPU
kernel and thread count, and the runners' workers differ in thread count (Dask's nanny starts every worker
with ``OPENBLAS_NUM_THREADS=1``; the local runner's workers keep the machine's). On OpenBLAS's AVX2 kernels
(most cloud CPUs: AMD EPYC, Intel without AVX-512) one thread and two threads gave different k-means centroids
and 15 of 5,770 removals differed on 28,850 c4_en documents. The similarities are exact now
(``pipelines.dedupe.semantic``: integer-valued float64), and global combines add and merge in a fixed order
(``pipelines.engine.dedupe.keyed.CombineToOne``).

``OPENBLAS_CORETYPE`` picks the kernels of numpy's OpenBLAS (a DYNAMIC_ARCH build, as numpy's wheels are) in
a fresh process, so these tests run the AVX2 kernels (and older ones) on any x86-64 machine that has them.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port, needs_shared, wait_port

# a clustered corpus with planted near-copies: 2,000 unit vectors in 384 dimensions, 20 clusters (docs_per_cluster)
_SCRIPT = """
import hashlib, sys, numpy as np
from pipelines.dedupe.config import SemDedupConfig
from pipelines.dedupe.semantic import removals_in_memory
rng = np.random.default_rng(7)
n, topics = 2000, 40
x = rng.normal(size=(topics, 384))[rng.integers(topics, size=n)] + 1.5 * rng.normal(size=(n, 384))
src = rng.integers(n, size=n // 5)
x[rng.integers(n, size=n // 5)] = x[src] + 0.3 * rng.normal(size=(len(src), 384))
x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
uids = [int(u) for u in rng.integers(0, 2**62, size=n)]
r = removals_in_memory(uids, x, SemDedupConfig(docs_per_cluster=100))
print(len(r), hashlib.sha256(repr(sorted(r.items())).encode()).hexdigest())
"""


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def _core_types() -> list[str | None]:
    """None (the machine's own kernels) and the OpenBLAS kernel sets this CPU can run, when numpy's BLAS is a
    DYNAMIC_ARCH OpenBLAS (``OPENBLAS_CORETYPE`` is ignored otherwise, which only makes the test weaker)."""
    import numpy  # noqa: F401  (loads its BLAS, so threadpoolctl sees it)
    from threadpoolctl import threadpool_info

    if not any(i.get("internal_api") == "openblas" for i in threadpool_info()):
        return [None]
    flags = _cpu_flags()
    return [None] + [t for t, need in (("Haswell", "avx2"), ("SandyBridge", "avx"), ("Prescott", "sse3"))
                     if need in flags]


def _blas_env(core: str | None, threads: int | None) -> dict:
    """No OpenBLAS settings but these (``threads`` None: as a user's shell, where each runner picks its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS_", "OMP_", "MKL_"))}
    env["PYTHONPATH"] = str(REPO)
    if threads:
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    if core:
        env["OPENBLAS_CORETYPE"] = core
    return env


def test_removals_are_the_same_under_every_blas_kernel_and_thread_count():
    """The whole SemDedup policy (k-means, assignment, M, cut-off, keepers) on 2,000 clustered vectors, in fresh
    processes with each kernel set and 1 or 2 BLAS threads: one answer. Before the exact similarities, the AVX2
    kernels gave one removal set with one thread and another with two (and others per kernel set)."""
    got = {}
    for core in _core_types():
        for threads in (1, 2):
            proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=_blas_env(core, threads), cwd=REPO,
                                  capture_output=True, text=True, timeout=300, check=False)
            assert proc.returncode == 0, proc.stderr[-3000:]
            got[(core or "native", threads)] = proc.stdout.split()
    assert all(int(n) == 400 for n, _h in got.values())  # the keep fraction, exactly (0.8 of 2,000)
    assert len({h for _n, h in got.values()}) == 1, got


def _c4_corpus(root: Path) -> Path:
    """c4_en, 3,000 documents (three rewritten rounds of the shared sample: not duplicates of each other) in 12
    files, so 12 parts spread over the workers and partitions; SemDedup at 100 documents a cluster, so k-means
    runs with ~25 clusters."""
    import zstandard

    from benchmarks.make_scale_corpus import load_samples, write_round

    samples = load_samples()["c4_en"]
    vocab = sorted({w for d in samples for w in d["text"].split() if len(w) < 24})
    gen = root / "gen"
    for rnd in range(3):
        write_round(("c4_en", rnd, str(gen), samples, vocab))
    inputs = root / "c4_en"
    inputs.mkdir()
    for path in sorted((gen / "c4_en").glob("*.jsonl.zst")):
        lines = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30).splitlines()
        for k in range(4):
            piece = b"".join(ln + b"\n" for ln in lines[k::4])
            (inputs / f"{path.stem.split('.')[0]}-{k}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(piece))
    cfg = {"sources": {"c4_en": {"inputs": [str(inputs / "*.jsonl.zst")], "format": "jsonl.zst", "text_field": "text",
                                 "id_field": "id", "meta_fields": ["url", "timestamp"],
                                 "dedupe": {"exact": True, "minhash": True, "semantic": {"docs_per_cluster": 100}}}}}
    path = root / "sources.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _tree(out: Path) -> dict[str, str]:
    """Digest of every file under OUT/sources (shards, index) and OUT/rejects (every removal, its keeper and M)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("sources", "rejects") for p in sorted((out / d).rglob("*")) if p.is_file()}


@needs_shared("corpora")
def test_local_portable_and_dask_builds_remove_the_same_documents(tmp_path, tokenizer_path):
    """The same 12-part c4_en build on the local runner (2 workers, a BLAS thread per core each), the portable runner
    (Beam's job service, LOOPBACK) and ``--runner dask`` (2 worker processes, whose nanny sets one BLAS thread),
    all on the AVX2 kernels where the CPU has them: byte-identical ``sources/`` and ``rejects/`` (every removal,
    its keeper and M).
    On the float32 similarities the Dask build removed other documents than the local one."""
    pytest.importorskip("distributed")
    sources = _c4_corpus(tmp_path)
    core = "Haswell" if "Haswell" in _core_types() else None
    env = _blas_env(core, None)  # the local runner's workers take a thread per core, Dask's nanny sets one
    env.update(MPTDATA_CACHE=str(tmp_path / "cache"), NEOX_TOKENIZER=tokenizer_path, PYTHONUNBUFFERED="1",
               MPTDATA_PART_MB="0.05")  # one part per file

    def build(name: str, *extra: str) -> Path:
        out = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "pipelines.build", "--sources", str(sources), "--out", str(out),
                               "--tokenizer", tokenizer_path, "--mixture", "mpt30b_2k", "--skip-mixture", "--write-rejects",
                               "--allow-missing-sources", *extra], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return out

    local = build("local", "--workers", "2")
    dask = build("dask", "--runner", "dask", "--workers", "2")
    port = free_port()
    svc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                            "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, svc)
        portable = build("portable", "--runner=PortableRunner", f"--job_endpoint=localhost:{port}",
                         "--environment_type=LOOPBACK")
    finally:
        svc.terminate()
        svc.wait(30)

    stats = json.loads((local / "stats" / "c4_en.json").read_text())
    assert stats["semantic_duplicates"] > 100 and stats["read"] == 3000 and stats["parts"] >= 12
    reference = _tree(local)
    assert any("semantic" in line for p in (local / "rejects").rglob("*.jsonl") for line in p.open())
    for name, out in (("dask", dask), ("portable", portable)):
        other = _tree(out)
        assert other.keys() == reference.keys(), name
        assert [k for k in reference if reference[k] != other[k]] == [], name
        assert json.loads((out / "stats" / "c4_en.json").read_text())["semantic_duplicates"] == \
            stats["semantic_duplicates"]
