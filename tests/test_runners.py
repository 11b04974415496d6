"""Issue #8: the portable (Runner API) path, S3 through Beam's filesystems, kill-and-resume, malformed input
through the whole build. Everything runs against real local services (Beam job service, moto server)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    REPO,
    free_port,
    load_stats,
    read_mds,
    run_build,
    s3_options,
    wait_port,
)

TEXTS = [f"Document {i}: " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(60 + i % 40)) for i in range(120)]


def _corpus(tmp: Path) -> Path:
    import zstandard

    d = tmp / "in"
    d.mkdir()
    rows = [{"text": t, "id": f"a{i}"} for i, t in enumerate(TEXTS)] + [{"text": TEXTS[3], "id": "dup"}]
    (d / "arxiv.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(r) + "\n" for r in rows).encode()))
    (d / "books.jsonl").write_text("".join(json.dumps({"text": t.upper()}) + "\n" for t in TEXTS[:50]) + "{bad json\n")
    cfg = {"sources": {"rp_arxiv": {"inputs": [str(d / "arxiv.jsonl.zst")], "id_field": "id", "filters": "none",
                                    "dedupe": {"exact": True}},
                       "rp_books": {"inputs": [str(d / "books.jsonl")], "filters": "none", "dedupe": {"exact": True}}}}
    (tmp / "s.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "s.yaml"


def _args(sources: Path, out, tokenizer_path, *extra):
    return ["--mixture", "mpt30b_8k", "--sources", str(sources), "--out", str(out), "--tokenizer", tokenizer_path,
            "--skip-mixture", "--allow-missing-sources", "--write-rejects", *extra]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_graph_serializes_to_runner_api_and_dofns_pickle(tmp_path, tokenizer_path):
    import apache_beam as beam
    from apache_beam.internal import pickler

    from pipelines.sources.config import load_sources
    from pipelines.engine.graph import _FinalizeSource, _ProcessPart, _WritePart, build_graph
    from pipelines.engine.plan import BuildPlan, config_hash
    from pipelines.sources.readers import expand_inputs

    sources = load_sources(str(_corpus(tmp_path)))
    files = {n: expand_inputs(n, c.inputs) for n, c in sources.items()}
    plan = BuildPlan.make(str(tmp_path / "o"), open(tokenizer_path).read(), True, False, sources, files,
                          {n: "h" for n in sources}, {n: {} for n in sources})
    p = beam.Pipeline()
    build_graph(p, plan)
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"ProcessDocuments", "Dedupe", "WriteShards", "FinalizeSources", "Dedupe/Exact"} <= names
    for fn in (_ProcessPart(plan), _WritePart(plan), _FinalizeSource(plan)):
        clone = pickler.loads(pickler.dumps(fn))
        assert type(clone) is type(fn) and clone.plan.tasks == plan.tasks
    assert config_hash(sources["rp_arxiv"], files["rp_arxiv"], "fp", False) == config_hash(
        load_sources(str(tmp_path / "s.yaml"))["rp_arxiv"], files["rp_arxiv"], "fp", False)


def test_portable_runner_output_equals_local(tmp_path, tokenizer_path):
    sources = _corpus(tmp_path)
    with_mixture = lambda out, *extra: [a for a in _args(sources, out, tokenizer_path, *extra)  # noqa: E731
                                        if a != "--skip-mixture"] + ["--tokens", "100000"]
    assert run_build(with_mixture(tmp_path / "local", "--workers", "2")) == 0
    port = free_port()
    svc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                            "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, svc)
        assert run_build(with_mixture(tmp_path / "portable", "--runner=PortableRunner",
                                      f"--job_endpoint=localhost:{port}", "--environment_type=LOOPBACK")) == 0
    finally:
        svc.terminate()
        svc.wait(30)
    local, portable = _tree(tmp_path / "local"), _tree(tmp_path / "portable")
    assert local.keys() == portable.keys()
    # manifest / report name their own absolute output paths; everything else is byte-identical
    own_paths = ("manifest.json", "report.md")
    same = [k for k in local if not k.endswith(own_paths)]
    assert [k for k in same if local[k] != portable[k]] == []
    assert any(k.startswith("mixtures/mpt30b_8k/code2p5x/rp_arxiv/") and k.endswith(".mds.zstd") for k in same)
    assert load_stats(tmp_path / "local", "rp_arxiv")["exact_duplicates"] == 1


def test_s3_inputs_and_outputs_round_trip(tmp_path, tokenizer_path, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="corpora")
    s3.create_bucket(Bucket="outputs")
    local_cfg = yaml.safe_load(_corpus(tmp_path).read_text())
    for n, c in local_cfg["sources"].items():
        path = Path(c["inputs"][0])
        s3.upload_file(str(path), "corpora", f"mpt/{path.name}")
        c["inputs"] = [f"s3://corpora/mpt/{path.name}"]
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump(local_cfg))
    opts = s3_options(s3_server)
    assert run_build(_args(tmp_path / "s3.yaml", "s3://outputs/run1", tokenizer_path, "--workers", "1", *opts)) == 0
    assert run_build(_args(tmp_path / "s.yaml", tmp_path / "local", tokenizer_path, "--workers", "1")) == 0
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="outputs", Prefix="run1/")["Contents"])
    assert "run1/sources/rp_arxiv/index.json" in keys and "run1/stats/rp_books.json" in keys
    assert not [k for k in keys if "/.staging/" in k]
    local = _tree(tmp_path / "local")
    for rel, data in local.items():
        remote = s3.get_object(Bucket="outputs", Key=f"run1/{rel}")["Body"].read() if not rel.startswith("demo") else None
        if rel.startswith("sources/"):
            assert remote == data, rel
        elif rel.startswith("rejects/"):  # same records; "detail" names the input by its full (s3:// vs local) path
            strip = lambda b: [{k: v for k, v in json.loads(l).items() if k != "detail"} for l in b.splitlines()]  # noqa: E731
            assert strip(remote) == strip(data), rel
    # the report's examples: picked, decoded and scored from staging on s3:// as locally (pipelines.engine.examples)
    assert "run1/report.html" in keys
    nodetail = lambda ex: {k: [{f: v for f, v in r.items() if f != "detail"} for r in rows]  # noqa: E731
                           for k, rows in ex["examples"].items()}
    for n in local_cfg["sources"]:
        remote = json.loads(s3.get_object(Bucket="outputs", Key=f"run1/examples/{n}.json")["Body"].read())
        assert nodetail(remote) == nodetail(json.loads(local[f"examples/{n}.json"])), n
    remote_stats = json.loads(s3.get_object(Bucket="outputs", Key="run1/stats/rp_arxiv.json")["Body"].read())
    local_stats = json.loads(local["stats/rp_arxiv.json"])
    for k in ("read", "kept", "tokens", "exact_duplicates", "malformed"):
        assert remote_stats[k] == local_stats[k]


@pytest.mark.slow  # tests/test_resume.py covers it in the default suite: killed mid-build, resumed, same tree
def test_killed_build_resumes_to_the_same_result(tmp_path, tokenizer_path):
    sources = _corpus(tmp_path)
    assert run_build(_args(sources, tmp_path / "ref", tokenizer_path, "--workers", "2")) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipelines.build", *_args(sources, out, tokenizer_path, "--workers", "2")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t = time.time()
    while time.time() - t < 120 and proc.poll() is None and not (out / ".staging").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
    proc.wait()
    assert run_build(_args(sources, out, tokenizer_path, "--workers", "2")) == 0
    assert _tree(out) == _tree(tmp_path / "ref")


def test_malformed_inputs_through_the_build(tmp_path, tokenizer_path, capsys):
    import gzip

    import zstandard

    d = tmp_path / "bad"
    d.mkdir()
    good = [json.dumps({"text": f"fine document {i} " * 20}) for i in range(10)]
    lines = good[:3] + ['{"text": broken', '["array"]', '{"other": "no text"}', '{"text": 17}', '{"text": ""}'] + good[3:6]
    (d / "a.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "\xff\xfe"}\n')
    (d / "b.jsonl").write_bytes(b"")  # empty file: zero records, not an error
    big = zstandard.ZstdCompressor().compress(_lines([{"text": "x" * (30 << 20)}] + [json.loads(g) for g in good[6:]]))
    (d / "c.jsonl.zst").write_bytes(big)
    trunc = gzip.compress(_lines([json.loads(g) for g in good] * 20))
    (d / "d.jsonl.gz").write_bytes(trunc[: len(trunc) // 2])
    cfg = {"sources": {"rp_books": {"inputs": [str(d / "*")], "filters": [{"max_bytes": {"max_bytes": 20_000_000}}]}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    assert run_build(_args(tmp_path / "s.yaml", out, tokenizer_path, "--workers", "1")) == 0
    s = load_stats(out, "rp_books")
    assert s["malformed_by_file"]["a.jsonl"] == {"bad_json": 1, "empty_text": 1, "invalid_utf8": 1,
                                                  "missing_text_field": 1, "not_an_object": 1, "text_not_string": 1}
    assert s["malformed_by_file"]["d.jsonl.gz"] == {"corrupt_stream": 1}
    assert s["rejected"] == {"max_bytes": 1}  # the 30 MB document: counted, not tokenized
    rejects = [json.loads(l) for p in sorted((out / "rejects" / "rp_books").glob("*.jsonl")) for l in p.read_text().splitlines()]
    assert len(rejects) == s["read"] - s["kept"] and {r["loc"] for r in rejects} >= {"a.jsonl:4", "c.jsonl.zst:1"}
    assert len(read_mds(out / "sources" / "rp_books")) == s["kept"]
    # a file that cannot be read at all fails the run, naming it
    (d / "e.parquet").write_bytes(b"PAR1 this is not parquet")
    cfg["sources"]["rp_books"]["inputs"].append(str(d / "e.parquet"))
    (tmp_path / "s2.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert run_build(_args(tmp_path / "s2.yaml", tmp_path / "o2", tokenizer_path, "--workers", "1")) == 2
    err = capsys.readouterr().err
    assert "e.parquet" in err and "not a readable parquet" in err


def _lines(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()
