"""Shared fixtures. Anything that needs ../shared (tokenizer, real corpora) skips cleanly without it."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOKENIZER = SHARED / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"
CORPORA = SHARED / "corpora"


def needs_shared(*parts: str):
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present (../shared is only beside dev/CI checkouts)")


@pytest.fixture(scope="session")
def tokenizer_path() -> str:
    if not TOKENIZER.exists():
        pytest.skip(f"{TOKENIZER} not present")
    return str(TOKENIZER)


@pytest.fixture(scope="session")
def neox(tokenizer_path):
    from tokenization import load_tokenizer

    return load_tokenizer(tokenizer_path)


@pytest.fixture(scope="session")
def raw_tokenizer(tokenizer_path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tokenizer_path)


def run_in_triton_interpreter(script: str) -> None:
    """Run a kernel-test script (a template with {root} and {seed}) under TRITON_INTERPRET=1 on the CPU in a
    fresh process, with a random seed that the failure message names."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    seed = int.from_bytes(os.urandom(4), "little")
    proc = subprocess.run([sys.executable, "-c", script.format(root=str(REPO), seed=seed)],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, f"seed {seed}\n{proc.stdout}\n{proc.stderr[-4000:]}"


def read_shared_category(name: str) -> list[dict]:
    import zstandard

    with open(CORPORA / f"{name}.jsonl.zst", "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def run_build(args: list[str]) -> int:
    from pipelines.build import main

    return main(args)


def load_stats(out: Path, source: str) -> dict:
    return json.loads((out / "stats" / f"{source}.json").read_text())


def read_mds(path: Path) -> list[dict]:
    """All samples of an MDS dataset, in order, via mosaicml-streaming's StreamingDataset (which also
    decompresses the zstd shards into its own cache, leaving the build output untouched)."""
    import tempfile

    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    with tempfile.TemporaryDirectory() as cache:
        ds = StreamingDataset(remote=str(path), local=cache, shuffle=False, batch_size=1)
        out = [ds[i] for i in range(ds.num_samples)]
        del ds
    return out


def stage_and_dedupe(tmp_path: Path, docs: dict, dedupe, tokenizer_path: str, cross_source: bool = False,
                     options=None, write_rejects: bool = True):
    """Run the real fused per-document path (pipelines.engine.process) on ``docs`` = {source: [(id, text), ...]},
    then the Beam Dedupe policy on the staged parts; returns (plan, removals sorted by uid, ids by uid).

    A document's uid follows its line: earlier lines (and earlier sources, in registry order) have smaller
    uids, so they are the keepers."""
    import apache_beam as beam

    from pipelines.sources.config import source_config
    from pipelines.engine.dedupe.stages import Dedupe
    from pipelines.engine.plan import BuildPlan
    from pipelines.engine.process import Tools, process_part
    from pipelines.sources.readers import expand_inputs

    tmp_path.mkdir(parents=True, exist_ok=True)
    sources, files = {}, {}
    for name, rows in docs.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows))
        sources[name] = source_config(name, {"inputs": [str(path)], "id_field": "id", "text_field": "text",
                                             "filters": "none", "dedupe": dedupe}, "test")
        files[name] = expand_inputs(name, sources[name].inputs)
    plan = BuildPlan.make(str(tmp_path / "out"), Path(tokenizer_path).read_text(), write_rejects, cross_source,
                          sources, files, {n: "h" for n in sources}, {n: {} for n in sources})
    tools = Tools(plan)
    summaries = [process_part(t, plan, tools) for t in plan.tasks]
    out = tmp_path / "removals.txt"
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(summaries) | Dedupe(plan)
           | beam.Map(lambda kv: json.dumps(kv[1]._asdict()))
           | beam.io.WriteToText(str(out), shard_name_template=""))
    from pipelines.records import Removal

    removals = sorted((Removal(**json.loads(x)) for x in out.read_text().splitlines()), key=lambda r: r.uid)
    ids = {}
    from pipelines.engine.staging import Part

    for t in plan.tasks:
        staged = Part.of(plan, t.source, t.part)
        ids.update(zip(staged.read_docs().uid.tolist(), staged.read_ids()))
    return plan, removals, ids


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc, timeout: float = 60) -> None:
    import socket
    import time

    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"port {port} did not open")


@contextlib.contextmanager
def moto_server(mp: pytest.MonkeyPatch):
    """A local S3-compatible server (moto, real HTTP on loopback) with test credentials set through ``mp``;
    yields its endpoint URL. ``s3_options(endpoint)`` gives the matching Beam filesystem options."""
    import subprocess
    import sys

    pytest.importorskip("moto")
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        mp.setenv(k, v)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture()
def s3_server(monkeypatch):
    with moto_server(monkeypatch) as url:
        yield url


@pytest.fixture(scope="module")
def s3_server_module():
    """One server for a module's tests (they share inputs and a reference build; each writes its own prefix)."""
    with pytest.MonkeyPatch.context() as mp, moto_server(mp) as url:
        yield url


def s3_options(endpoint: str) -> list[str]:
    return [f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test", "--s3_secret_access_key=test",
            "--s3_region_name=us-east-1"]


def s3_upload_tree(s3, local: Path, bucket: str, prefix: str) -> None:
    for d, _, files in os.walk(local):
        for fn in files:
            rel = os.path.relpath(os.path.join(d, fn), local).replace(os.sep, "/")
            s3.upload_file(os.path.join(d, fn), bucket, f"{prefix}/{rel}")
