"""Packing: exact seq_len samples, lossless up to the reported remainder, deterministic order, real MDS."""
from __future__ import annotations

import json
import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mixtures.pack import Packer, dir_sha256, pack, packing_order, write_packed
from mixtures.synthetic import read_mds


def _docs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        d = rng.integers(1, 50277, size=n, dtype=np.uint16)
        d[-1] = 0
        out.append(d)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 3000), max_size=60), st.integers(1, 2048))
def test_pack_is_lossless(lengths, seq_len):
    docs = _docs(lengths)
    samples, rem = pack(docs, seq_len)
    assert all(s.dtype == np.uint16 and s.shape == (seq_len,) for s in samples)
    total = sum(lengths)
    assert len(samples) == total // seq_len and len(rem) == total % seq_len
    flat = np.concatenate(docs) if docs else np.zeros(0, np.uint16)
    got = np.concatenate(samples + [rem]) if samples or len(rem) else np.zeros(0, np.uint16)
    assert np.array_equal(got, flat)


def test_packer_streams_long_documents_across_samples():
    p = Packer(4)
    out = list(p.add(np.arange(1, 11, dtype=np.uint16)))     # 10 tokens -> 2 samples + 2 left
    assert [o.tolist() for o in out] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    out = list(p.add(np.array([11, 12, 0], dtype=np.uint16)))
    assert [o.tolist() for o in out] == [[9, 10, 11, 12]]
    assert p.remainder().tolist() == [0]


def test_packer_does_not_alias_input():
    p = Packer(3)
    doc = np.array([1, 2, 3], dtype=np.uint16)
    (s,) = list(p.add(doc))
    doc[:] = 7
    assert s.tolist() == [1, 2, 3]


def test_packing_order():
    rng_a, rng_b = (np.random.default_rng(5) for _ in range(2))
    shard_sizes = [10, 0, 7, 13]
    selected = np.array([0, 3, 9, 10, 12, 16, 20, 25, 29])
    a = packing_order(selected, shard_sizes, rng_a)
    b = packing_order(selected, shard_sizes, rng_b)
    assert np.array_equal(a, b)
    assert sorted(a.tolist()) == selected.tolist()
    starts = np.cumsum([0] + shard_sizes)
    shard = np.searchsorted(starts, a, side="right") - 1
    # each shard's documents are contiguous (one decoded shard in memory at a time)
    changes = np.flatnonzero(np.diff(shard)) + 1
    assert len(set(shard.tolist())) == len(changes) + 1
    c = packing_order(selected, shard_sizes, np.random.default_rng(6))
    assert not np.array_equal(a, c)


def test_write_packed_mds_roundtrip(tmp_path):
    docs = _docs([100, 5000, 37, 900, 2048, 1], seed=2)
    out = str(tmp_path / "stream")
    res = write_packed(enumerate(docs), out, 512, size_limit=4096)
    flat = np.concatenate(docs)
    samples = read_mds(out)
    assert res.samples == len(samples) == len(flat) // 512
    assert res.remainder_tokens == len(flat) % 512 and res.remainder_from_doc == 5
    assert res.shards > 1
    assert all(s.dtype == np.uint16 and s.shape == (512,) for s in samples)
    assert np.array_equal(np.concatenate(samples), flat[:res.samples * 512])
    index = json.load(open(os.path.join(out, "index.json")))
    assert {tuple(s["column_names"]) for s in index["shards"]} == {("tokens",)}
    assert {tuple(s["column_encodings"]) for s in index["shards"]} == {("ndarray:uint16",)}
    assert {s["compression"] for s in index["shards"]} == {"zstd"}
    assert res.sha256 == dir_sha256(out)
    # same input -> byte-identical output
    out2 = str(tmp_path / "again")
    res2 = write_packed(enumerate(docs), out2, 512, size_limit=4096)
    assert res2.sha256 == res.sha256
    assert sorted(os.listdir(out)) == sorted(os.listdir(out2))
    for f in os.listdir(out):
        assert open(os.path.join(out, f), "rb").read() == open(os.path.join(out2, f), "rb").read()


def test_write_packed_wrap_completes_last_sample(tmp_path):
    docs = _docs([700, 333, 90], seed=4)             # 1123 tokens -> 2 full samples of 512 + 99 left
    flat = np.concatenate(docs)
    res = write_packed(enumerate(docs), str(tmp_path / "w"), 512, wrap=True)
    assert (res.samples, res.remainder_tokens, res.wrapped_tokens) == (3, 0, 512 * 3 - 1123)
    got = np.concatenate(read_mds(str(tmp_path / "w")))
    assert np.array_equal(got, np.concatenate([flat, flat[:res.wrapped_tokens]]))
    exact = write_packed(enumerate(_docs([512, 512])), str(tmp_path / "e"), 512, wrap=True)
    assert (exact.samples, exact.wrapped_tokens) == (2, 0)
