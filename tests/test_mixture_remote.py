"""Mixtures at scale: streams packed in parallel give the same bytes as one process, the mixture is written to
s3:// (a local S3-compatible server) with remote: streams, and the trainer's data loader streams from it."""
from __future__ import annotations

import os

import yaml

from tests.conftest import needs_shared, run_build, s3_options
from tests.test_runners import _args, _corpus, _tree


def _mixture_args(sources, out, tokenizer_path, *extra):
    return [a for a in _args(sources, out, tokenizer_path, *extra) if a != "--skip-mixture"] + ["--tokens", "100000"]


@needs_shared("tokenizers")
def test_mixture_on_s3_streams_to_the_trainer(tmp_path, tokenizer_path, s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)  # mosaicml-streaming's S3 client
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="outputs")
    sources = _corpus(tmp_path)
    opts = s3_options(s3_server)
    assert run_build(_mixture_args(sources, "s3://outputs/run", tokenizer_path, "--workers", "2", *opts)) == 0
    assert run_build(_mixture_args(sources, tmp_path / "local", tokenizer_path, "--workers", "1")) == 0

    # the packed shards and document lists are byte-identical: 2 packing processes on S3 == 1 process locally
    local = _tree(tmp_path / "local" / "mixtures" / "mpt30b_8k")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="outputs", Prefix="run/mixtures/mpt30b_8k/")["Contents"]}
    rels = {k[len("run/mixtures/mpt30b_8k/"):] for k in keys}
    assert rels == set(local)
    for rel in rels - {"streams.yaml"}:
        body = s3.get_object(Bucket="outputs", Key=f"run/mixtures/mpt30b_8k/{rel}")["Body"].read()
        assert body == local[rel], rel
    streams = yaml.safe_load(s3.get_object(Bucket="outputs", Key="run/mixtures/mpt30b_8k/streams.yaml")["Body"].read())
    local_streams = yaml.safe_load(local["streams.yaml"])
    assert streams.keys() == local_streams.keys() and streams
    for name, kw in streams.items():
        assert kw == {"remote": f"s3://outputs/run/mixtures/mpt30b_8k/{'/'.join(name.split('__'))}",
                      "choose": local_streams[name]["choose"]}

    # the trainer streams the remote mixture (through mosaicml-streaming's S3 client) and sees the local samples
    from trainer.data import build_dataset

    def samples(spec, cache):
        ds = build_dataset(spec, seq_len=8192, micro_batch_size=1, shuffle=False, shuffle_seed=0,
                           cache_dir=str(cache))
        return [ds[i]["tokens"].tobytes() for i in range(ds.num_samples)]

    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    remote = samples("s3://outputs/run/mixtures/mpt30b_8k/streams.yaml", tmp_path / "cache")
    clean_stale_shared_memory()
    here = samples(str(tmp_path / "local" / "mixtures" / "mpt30b_8k" / "streams.yaml"), tmp_path / "cache2")
    assert len(remote) == len(here) > 0  # every packed sample (choose repeats them per epoch)
    assert sorted(remote) == sorted(here)
    assert os.listdir(tmp_path / "cache")  # shards were fetched into the local cache
