"""Issue #21: the build on a dask.distributed cluster (``--runner dask``, Beam's DaskRunner).

A scheduler and two workers run as separate OS processes (the ``dask`` CLI), each in its own working directory
with its own TMPDIR and without AWS credentials in its environment; the driver is a third process. Inputs and
OUT live on a moto S3 server: no local path is shared. The result must be byte-identical (sources/, stats/) to
the local runner's on the same inputs, with exact, MinHash and SemDedup all removing documents (the demo
corpora's c4_en and mc4_en under their default config, cut into several parts each)."""
from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port, s3_options, wait_port

pytest.importorskip("distributed")

SOURCES = ("c4_en", "mc4_en")
FILES_PER_SOURCE = 3
BUCKET = "mpt"


def _own_dirs(root: Path) -> dict:
    """A working directory, a TMPDIR and an (empty) per-machine cache of its own for one process."""
    (root / "tmp").mkdir(parents=True)
    return {"cwd": root, "TMPDIR": str(root / "tmp"), "MPTDATA_CACHE": str(root / "cache")}


def _env(tmpdir: str, keep_aws: bool) -> dict:
    drop = ("NEOX_TOKENIZER", "PYTHONPATH", "MPTDATA_PART_MB") + (() if keep_aws else (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"))
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(TMPDIR=tmpdir, PYTHONUNBUFFERED="1")
    return env


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes (each its own session, so a kill takes its nanny too)."""

    def __init__(self, root: Path, n_workers: int = 2):
        self.root, self.procs, self.workers = root, [], []
        dask = str(Path(sys.executable).parent / "dask")
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        sched = self._start("scheduler", [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                          "--no-dashboard"])
        wait_port(port, sched)
        for i in range(n_workers):
            d = root / f"worker{i}"
            self.workers.append(self._start(f"worker{i}", [
                dask, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                "--local-directory", str(d / "dask-scratch")]))
        from distributed import Client

        with Client(self.address, timeout=60) as c:
            c.wait_for_workers(n_workers, timeout=120)

    def _start(self, name: str, cmd: list[str]):
        own = _own_dirs(self.root / name)
        log = open(self.root / f"{name}.log", "wb")
        env = _env(own["TMPDIR"], keep_aws=False)
        env["MPTDATA_CACHE"] = own["MPTDATA_CACHE"]  # a worker machine's own, empty cache: never the driver's disk
        proc = subprocess.Popen(cmd, cwd=own["cwd"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill_worker(self, i: int) -> None:
        os.killpg(self.workers[i].pid, signal.SIGKILL)  # the worker's nanny and its worker process
        self.workers[i].wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def s3_inputs(tmp_path_factory, s3_server_module):
    """The demo corpora of SOURCES, each cut into FILES_PER_SOURCE jsonl files, on S3; -> (s3 client, sources
    YAML path, S3 options)."""
    import boto3

    from pipelines.sources.demo import demo_sources_yaml, write_demo_corpora

    tmp_path = tmp_path_factory.mktemp("inputs")
    s3 = boto3.client("s3", endpoint_url=s3_server_module, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    raw = demo_sources_yaml(write_demo_corpora(str(tmp_path / "demo")))["sources"]
    cfg = {"sources": {}}
    for name in SOURCES:
        path = raw[name]["inputs"][0]
        assert path.endswith(".jsonl.gz"), path
        lines = gzip.decompress(Path(path).read_bytes()).decode().splitlines(keepends=True)
        step = -(-len(lines) // FILES_PER_SOURCE)
        inputs = []
        for j in range(FILES_PER_SOURCE):
            key = f"in/{name}/{j:02d}.jsonl"
            s3.put_object(Bucket=BUCKET, Key=key, Body="".join(lines[j * step:(j + 1) * step]).encode())
            inputs.append(f"s3://{BUCKET}/{key}")
        cfg["sources"][name] = {**{k: v for k, v in raw[name].items() if k != "inputs"}, "inputs": inputs}
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump(cfg))
    return s3, tmp_path / "s3.yaml", s3_options(s3_server_module)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, tokenizer_path, s3_inputs):
    """The local runner's build of the same inputs, once for the module: s3://BUCKET/local/."""
    _s3, sources, opts = s3_inputs
    _build(tmp_path_factory.mktemp("local"), "local", sources, f"s3://{BUCKET}/local", tokenizer_path,
           ["--workers", "2", *opts])
    return "local/"


def _build(tmp_path: Path, name: str, sources: Path, out: str, tokenizer_path: str, extra: list[str], wait=True):
    """The driver as its own process, in its own directory; every input file its own part."""
    own = _own_dirs(tmp_path / f"driver-{name}")
    env = _env(own["TMPDIR"], keep_aws=True)
    env["MPTDATA_PART_MB"] = "0.0001"
    cmd = [sys.executable, "-m", "pipelines.build", "--mixture", "mpt30b_8k", "--sources", str(sources), "--out", out,
           "--tokenizer", tokenizer_path, "--skip-mixture", "--allow-missing-sources", *extra]
    log = open(tmp_path / f"driver-{name}.log", "wb")
    env["PYTHONPATH"] = str(REPO)  # the driver runs this checkout (workers import the installed project)
    proc = subprocess.Popen(cmd, cwd=own["cwd"], env=env, stdout=log, stderr=subprocess.STDOUT)
    if not wait:
        return proc
    rc = proc.wait(600)
    text = (tmp_path / f"driver-{name}.log").read_text()
    assert rc == 0, text[-3000:]
    return text


def _objects(s3, prefix: str) -> dict:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return {k[len(prefix):]: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in sorted(keys)
            if k[len(prefix):].startswith(("sources/", "stats/"))}


def _check_same(s3, reference: str, prefix: str, log: str) -> dict:
    local, dask = _objects(s3, reference), _objects(s3, prefix)
    assert sorted(local) == sorted(dask)
    assert [k for k in local if local[k] != dask[k]] == []
    stats = {n: json.loads(dask[f"stats/{n}.json"]) for n in SOURCES}
    # every dedupe stage removed documents (the graph's joins and keyed combines all carried data)
    assert stats["c4_en"]["semantic_duplicates"] > 0 and stats["mc4_en"]["near_duplicates"] > 0
    assert stats["c4_en"]["exact_duplicates"] > 0
    n_parts = len(SOURCES) * FILES_PER_SOURCE
    assert f"parts resumed from an earlier run: 0/{n_parts}" in log  # each part processed once in this run
    assert f"{n_parts} part(s)" in log
    return stats


def test_dask_cluster_build_equals_local_runner(tmp_path, tokenizer_path, s3_inputs, local_reference):
    s3, sources, opts = s3_inputs
    cluster = Cluster(tmp_path / "cluster")
    try:
        log = _build(tmp_path, "dask", sources, f"s3://{BUCKET}/dask", tokenizer_path,
                     ["--runner", "dask", f"--dask_client_address={cluster.address}", *opts])
        assert all(w.poll() is None for w in cluster.workers)
    finally:
        cluster.close()
    _check_same(s3, local_reference, "dask/", log)
    # the SemDedup static table came from the driver through OUT (S3): no worker made one of its own
    for i in range(2):
        assert not list((tmp_path / "cluster" / f"worker{i}" / "cache").rglob("*.npy"))
    # the parts spread: one partition per worker thread
    assert re.search(r"2 worker\(s\) with 2 thread\(s\), 2 partition\(s\) for 6 part\(s\)", log), log[-2000:]
    assert not [k for k in _keys(s3, "dask/") if "/.staging/" in k]


def _keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]


def test_dask_build_survives_a_killed_worker(tmp_path, tokenizer_path, s3_inputs, local_reference):
    s3, sources, opts = s3_inputs
    cluster = Cluster(tmp_path / "cluster")
    try:
        proc = _build(tmp_path, "dask", sources, f"s3://{BUCKET}/dask-killed", tokenizer_path,
                      ["--runner", "dask", f"--dask_client_address={cluster.address}", *opts], wait=False)
        # kill worker 0 once the first part is done (its partition still has parts to process), mid-build
        t = time.time()
        while time.time() - t < 300 and proc.poll() is None and not any(
                k.endswith("/summary.json") for k in _keys(s3, "dask-killed/.staging/")):
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "driver-dask.log").read_text()[-3000:]
        cluster.kill_worker(0)
        rc = proc.wait(600)
        log = (tmp_path / "driver-dask.log").read_text()
        assert rc == 0, log[-3000:]
        assert cluster.workers[1].poll() is None  # the other worker finished the build
    finally:
        cluster.close()
    # byte-identical, and no part counted as resumed (or twice: stats equal the local run's)
    _check_same(s3, local_reference, "dask-killed/", log)
