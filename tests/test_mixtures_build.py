"""End to end: synthetic per-source MDS (the pipelines' output contract) -> packed mixtures.

The sources are written with streaming's real MDSWriter (zstd, several shards each), read back by the
builder, and the outputs are checked independently: token-exact against the source documents, against
the manifest, and through a real ``streaming.StreamingDataset`` built from ``streams.yaml``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from contract.registry import SOURCE_NAMES
from mixtures.build import MixtureError, build_mixture
from mixtures.pack import dir_sha256
from mixtures.planner import boosted_shares
from mixtures.spec import load_spec
from mixtures.synthetic import random_lengths, read_documents, read_mds, write_source

REPO = Path(__file__).resolve().parents[1]
NO_LONG = "rp_stackexchange"          # a source without any long document


def _write_sources(root: Path, names=SOURCE_NAMES, n=260) -> str:
    sources = root / "sources"
    for i, s in enumerate(names):
        rng = np.random.default_rng(100 + i)
        lengths = random_lengths(n, rng, long_docs=0 if s == NO_LONG else 2 + i % 5)
        if s == "rp_books":                      # boundary cases: 4095 + EOS is not long, 4096 + EOS is
            lengths[:2] = [4096, 4097]
        write_source(str(sources), s, lengths, seed=i, size_limit=1 << 17)
    return str(sources)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> str:
    return _write_sources(tmp_path_factory.mktemp("mixsrc"))


@pytest.fixture(scope="module")
def mix8k(sources, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mix8k") / "mixtures")
    manifest = build_mixture("mpt30b_8k", sources, out, demo=True, seed=17, progress=False)
    return manifest, os.path.join(out, "mpt30b_8k")


def _stream_docs(sources: str, manifest: dict, mixdir: str, name: str) -> tuple[list[np.ndarray], np.ndarray]:
    s = manifest["streams"][name]
    order = np.load(os.path.join(mixdir, s["documents_file"]))
    docs = read_documents(sources, s["source"])
    return [docs[i] for i in order], order


def test_every_8k_sample_is_exactly_8192_uint16(mix8k):
    manifest, mixdir = mix8k
    assert manifest["seq_len"] == 8192 and len(manifest["streams"]) >= 15
    for name, s in manifest["streams"].items():
        path = os.path.join(mixdir, s["path"])
        index = json.load(open(os.path.join(path, "index.json")))
        for shard in index["shards"]:
            assert shard["column_names"] == ["tokens"] and shard["column_encodings"] == ["ndarray:uint16"]
        samples = read_mds(path)
        assert len(samples) == s["packed_samples"] > 0
        assert all(x.dtype == np.uint16 and x.shape == (8192,) for x in samples), name


def test_packing_is_lossless_and_never_mixes_sources(sources, mix8k):
    manifest, mixdir = mix8k
    for name, s in manifest["streams"].items():
        docs, _ = _stream_docs(sources, manifest, mixdir, name)
        flat = np.concatenate(docs)
        got = np.concatenate(read_mds(os.path.join(mixdir, s["path"])))
        assert s["packed_tokens"] == len(flat) and s["packed_documents"] == len(docs)
        if s["wrapped_tokens"]:
            assert s["remainder_tokens"] == 0
            assert np.array_equal(got, np.concatenate([flat, flat[:s["wrapped_tokens"]]])), name
        else:
            assert len(got) + s["remainder_tokens"] == len(flat)
            assert np.array_equal(got, flat[:len(got)]), name


def test_long_part_holds_exactly_the_long_documents(sources, mix8k):
    manifest, mixdir = mix8k
    long_streams = {s["source"]: n for n, s in manifest["streams"].items() if s["part"] == "long"}
    assert NO_LONG not in long_streams
    assert any(d["part"] == "long" and d["source"] == NO_LONG and ">= 4096 tokens" in d["reason"]
               for d in manifest["dropped"])
    for src in SOURCE_NAMES:
        lengths = np.load(os.path.join(sources, src, "doc_tokens.npy")).astype(np.int64)
        long_ids = set(np.flatnonzero(lengths - 1 >= 4096).tolist())
        assert manifest["sources"][src]["long_documents"] == len(long_ids)
        if src not in long_streams:
            assert not long_ids
            continue
        s = manifest["streams"][long_streams[src]]
        docs, order = _stream_docs(sources, manifest, mixdir, long_streams[src])
        assert all(len(d) - 1 >= 4096 and d[-1] == 0 for d in docs)       # by content, not by bookkeeping
        if s["epochs"] >= 1:
            assert set(order.tolist()) == long_ids and len(order) == len(long_ids)
    books = np.load(os.path.join(sources, "rp_books", "doc_tokens.npy"))
    books_order = np.load(os.path.join(mixdir, manifest["streams"]["long__rp_books"]["documents_file"]))
    assert 1 in books_order and 0 not in books_order and books[0] == 4096 and books[1] == 4097


def test_realized_proportions_within_one_point(mix8k):
    manifest, _ = mix8k
    spec = load_spec("mpt30b_8k")
    boosted = boosted_shares(spec.parts[0], spec.code_sources)
    for name, s in manifest["streams"].items():
        assert abs(s["realized_weight"] - s["weight"]) <= 0.01, name
        assert abs(s["realized_share"] - s["share"]) <= 0.01, name
        if s["part"] == "code2p5x":                       # all ten present: the plan is the spec
            assert s["share"] == pytest.approx(boosted[s["source"]], abs=1e-9)
    for p in manifest["parts"].values():
        assert p["weight"] == pytest.approx(0.5)
        assert abs(p["realized_weight"] - p["weight"]) <= 0.01
    code = [s for s in manifest["streams"].values() if s["part"] == "code2p5x"]
    code_share = sum(s["realized_share"] for s in code if s["source"] in spec.code_sources)
    assert code_share == pytest.approx(2.5 * 0.145, abs=0.01)


def test_manifest_streams_yaml_and_report_agree(mix8k):
    manifest, mixdir = mix8k
    assert json.load(open(os.path.join(mixdir, "manifest.json"))) == manifest
    assert manifest["demo"] and manifest["budget"]["origin"] == "demo"
    assert manifest["budget"]["samples"] == sum(s["choose"] for s in manifest["streams"].values())
    streams = yaml.safe_load(open(os.path.join(mixdir, "streams.yaml")))
    assert list(streams) == list(manifest["streams"])
    for name, entry in streams.items():
        s = manifest["streams"][name]
        assert set(entry) == {"local", "choose"} and entry["choose"] == s["choose"]
        assert entry["local"] == s["path"] and not os.path.isabs(entry["local"])  # relative: the folder can move
        assert dir_sha256(os.path.join(mixdir, entry["local"])) == s["sha256"]
        assert s["epochs"] == pytest.approx(s["choose"] * 8192 / s["eligible_tokens"], rel=1e-8)
        assert s["packed_tokens"] + s["wrapped_tokens"] == s["packed_samples"] * 8192 + s["remainder_tokens"]
    report = open(os.path.join(mixdir, "report.md")).read()
    assert "Demo scale" in report and "report.png" in report and NO_LONG in report
    assert open(os.path.join(mixdir, "report.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(os.path.dirname(mixdir)) if f.startswith(".")]   # no temp leftovers


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_same_seed_byte_identical_outputs(sources, mix8k, tmp_path):
    manifest, mixdir = mix8k
    first = _files(mixdir)
    out2 = str(tmp_path / "elsewhere")
    m2 = build_mixture("mpt30b_8k", sources, out2, demo=True, seed=17, progress=False)
    second = _files(os.path.join(out2, "mpt30b_8k"))
    assert set(first) == set(second)
    for rel in first:  # streams.yaml too: its paths are relative to the folder, wherever that is
        assert first[rel] == second[rel], rel
    # rebuilding in place replaces the mixture with identical bytes
    build_mixture("mpt30b_8k", sources, out2, demo=True, seed=17, progress=False)
    assert _files(os.path.join(out2, "mpt30b_8k")) == second
    assert os.listdir(out2) == ["mpt30b_8k"]
    m3 = build_mixture("mpt30b_8k", sources, str(tmp_path / "seed18"), demo=True, seed=18, progress=False)
    assert m3["content_sha256"] != m2["content_sha256"]
    assert {k: v["choose"] for k, v in m3["streams"].items()} == {k: v["choose"] for k, v in m2["streams"].items()}


def test_streaming_dataset_from_streams_yaml(sources, tmp_path):
    """llm-foundry does ``[Stream(**v) for v in streams.values()]`` with ``local:`` resolved against its working
    directory: the mixture is built, moved, given absolute paths where it now lies by ``python -m mixtures.streams``
    (run from elsewhere), and read for one epoch the same way."""
    from streaming import Stream, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    from mixtures.streams import main as streams_main

    out = str(tmp_path / "mixtures")
    manifest = build_mixture("mpt30b_8k", sources, out, demo=True, seed=5, progress=False)
    mixdir = str(tmp_path / "moved" / "mpt30b_8k")
    os.makedirs(os.path.dirname(mixdir))
    os.rename(os.path.join(out, "mpt30b_8k"), mixdir)
    owner = {}
    for name, s in manifest["streams"].items():
        for x in read_mds(os.path.join(mixdir, s["path"])):
            owner[x.tobytes()] = name
    assert streams_main([mixdir, "--out", str(tmp_path / "foundry.yaml")]) == 0
    streams_cfg = yaml.safe_load(open(tmp_path / "foundry.yaml"))
    assert list(streams_cfg) == list(manifest["streams"])
    assert all(v["local"] == os.path.join(mixdir, manifest["streams"][k]["path"]) for k, v in streams_cfg.items())
    clean_stale_shared_memory()
    ds = StreamingDataset(streams=[Stream(**v) for v in streams_cfg.values()], shuffle=True, shuffle_seed=9176,
                          batch_size=8)
    try:
        names = list(streams_cfg)
        assert ds.samples_per_stream.tolist() == [manifest["streams"][n]["packed_samples"] for n in names]
        assert ds.epoch_size == manifest["budget"]["samples"]
        counts = dict.fromkeys(names, 0)
        for sample in ds:
            tokens = sample["tokens"]
            assert tokens.dtype == np.uint16 and tokens.shape == (8192,)
            counts[owner[tokens.tobytes()]] += 1
        assert counts == {n: manifest["streams"][n]["choose"] for n in names}
    finally:
        del ds
        clean_stale_shared_memory()


@pytest.mark.parametrize("name,props", [("mpt30b_2k", "mpt30b_proportion"), ("mpt7b_2k", "mpt7b_proportion")])
def test_2k_mixtures_build(sources, tmp_path, name, props):
    from contract.registry import SOURCES

    m = build_mixture(name, sources, str(tmp_path), demo=True, progress=False)
    assert m["seq_len"] == 2048 and list(m["parts"]) == ["main"]
    assert m["budget"]["samples"] >= 256
    for s in m["streams"].values():
        assert s["weight"] == pytest.approx(getattr(SOURCES[s["source"]], props))
        assert abs(s["realized_weight"] - s["weight"]) <= 0.01
        samples = read_mds(os.path.join(tmp_path, name, s["path"]))
        assert len(samples) == s["packed_samples"] and all(x.shape == (2048,) for x in samples)


def test_missing_sources(tmp_path):
    present = [s for s in SOURCE_NAMES if s not in ("rp_books", "s2orc")]
    src = _write_sources(tmp_path, present, n=120)
    with pytest.raises(MixtureError) as e:
        build_mixture("mpt30b_2k", src, str(tmp_path / "out"), demo=True, progress=False)
    msg = str(e.value)
    assert "rp_books" in msg and "s2orc" in msg and "--allow-missing-sources" in msg
    assert not os.path.exists(tmp_path / "out" / "mpt30b_2k")
    m = build_mixture("mpt30b_2k", src, str(tmp_path / "out"), demo=True, allow_missing=True, progress=False)
    assert m["missing_sources"] == ["s2orc", "rp_books"]
    assert set(s["source"] for s in m["streams"].values()) == set(present)
    assert sum(s["weight"] for s in m["streams"].values()) == pytest.approx(1.0)
    assert m["streams"]["main__mc4_en"]["weight"] == pytest.approx(0.335 / (1 - 0.033 - 0.03))
    report = open(tmp_path / "out" / "mpt30b_2k" / "report.md").read()
    assert "Missing sources" in report and "rp_books" in report


def test_inconsistent_source_fails_cleanly(tmp_path):
    src = _write_sources(tmp_path, ["rp_books", "rp_arxiv"], n=60)
    spec = tmp_path / "two.yaml"
    spec.write_text("seq_len: 1024\ntokens: 200K\nparts:\n  main:\n    proportions: {rp_books: 0.5, rp_arxiv: 0.5}\n")
    out = tmp_path / "out"
    m = build_mixture(str(spec), src, str(out), progress=False)
    assert m["name"] == "two" and m["budget"]["samples"] == 195
    dt_path = os.path.join(src, "rp_arxiv", "doc_tokens.npy")
    dt = np.load(dt_path)
    dt[3] += 1
    np.save(dt_path, dt)
    with pytest.raises(MixtureError, match="rp_arxiv") as e:
        build_mixture(str(spec), src, str(out), tokens=10**6, progress=False)
    assert "doc_tokens.npy" in str(e.value)
    # the earlier mixture is untouched and no temporary folder is left behind
    assert os.listdir(out) == ["two"]
    assert json.load(open(out / "two" / "manifest.json")) == m
    np.save(dt_path, dt[:-1])
    with pytest.raises(MixtureError, match="index.json has 60 documents"):
        build_mixture(str(spec), src, str(out), progress=False)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "mixtures.build", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli(sources, tmp_path):
    h = _cli("--help")
    assert h.returncode == 0
    for opt in ("--mixture", "--sources-dir", "--out", "--tokens", "--seed", "--allow-missing-sources", "mpt30b_8k"):
        assert opt in h.stdout
    r = _cli("--mixture", "mpt7b_2k", "--sources-dir", sources, "--out", str(tmp_path), "--tokens", "1M", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "mixture mpt7b_2k: 10 streams, 488 samples" in r.stdout
    m = json.load(open(tmp_path / "mpt7b_2k" / "manifest.json"))
    assert m["budget"] == {"tokens": 10**6, "origin": "explicit", "spec_tokens": 10**12, "samples": 488,
                           "tokens_per_epoch": 488 * 2048}
    bad = _cli("--mixture", "mpt99", "--sources-dir", sources, "--out", str(tmp_path))
    assert bad.returncode == 2 and "mpt30b_8k" in bad.stderr and "Traceback" not in bad.stderr
    empty = tmp_path / "nosources"
    empty.mkdir()
    miss = _cli("--mixture", "mpt30b_8k", "--sources-dir", str(empty), "--out", str(tmp_path))
    assert miss.returncode == 2 and "mc4_en" in miss.stderr and "--allow-missing-sources" in miss.stderr


TOKENIZER = REPO.parent / "shared" / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


@pytest.mark.slow
@pytest.mark.skipif(not TOKENIZER.exists(), reason=f"{TOKENIZER} not present (../shared is only beside dev checkouts)")
def test_acceptance_demo_pipeline(tmp_path):
    """The issue's acceptance: `python -m pipelines.build --mixture mpt30b_8k` on the demo corpora, then the
    two 2k mixes from the same shards with `python -m mixtures.build`."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "pipelines.build", "--mixture", "mpt30b_8k", "--out", str(out),
                        "--workers", "1", "--tokenizer", str(TOKENIZER)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    sources = str(out / "sources")
    for name, seq_len in (("mpt30b_8k", 8192), ("mpt30b_2k", 2048), ("mpt7b_2k", 2048)):
        if name != "mpt30b_8k":
            c = _cli("--mixture", name, "--sources-dir", sources, "--quiet")
            assert c.returncode == 0, c.stderr
        mixdir = out / "mixtures" / name
        m = json.load(open(mixdir / "manifest.json"))
        assert m["demo"] and m["seq_len"] == seq_len
        for sname, s in m["streams"].items():
            samples = read_mds(str(mixdir / s["path"]))
            assert len(samples) == s["packed_samples"]
            assert all(x.dtype == np.uint16 and x.shape == (seq_len,) for x in samples)
            assert abs(s["realized_weight"] - s["weight"]) <= 0.01
            if s["part"] == "long":
                docs = read_documents(sources, s["source"])
                order = np.load(mixdir / s["documents_file"])
                assert len(order) and all(len(docs[i]) - 1 >= 4096 for i in order)
        if name == "mpt30b_8k":
            assert set(m["parts"]) == {"code2p5x", "long"}
