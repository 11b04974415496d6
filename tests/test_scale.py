"""A few hundred MB through the whole build, all ten sources (slow): every source reconciles, the shards hold
exactly the kept documents, and their tokens equal a direct `tokenizers` encode of the input text + EOS."""
from __future__ import annotations

import json
import random

import pytest
import zstandard

from contract.registry import SOURCE_NAMES
from contract.stats import accounted
from tests.conftest import needs_shared, read_mds, run_build

GB = 0.25


@pytest.mark.slow
@needs_shared("corpora")
@needs_shared("tokenizers")
def test_all_sources_at_a_few_hundred_mb(tmp_path, raw_tokenizer, tokenizer_path):
    from benchmarks.make_scale_corpus import make

    sources, mb = make(tmp_path / "corpus", GB)
    assert mb > 200
    out = tmp_path / "out"
    assert run_build(["--mixture", "mpt30b_2k", "--sources", str(sources), "--out", str(out), "--tokenizer",
                      tokenizer_path, "--write-rejects", "--workers", "2"]) == 0
    texts = {}
    for f in sorted((tmp_path / "corpus").glob("*/*.jsonl.zst")):
        for line in zstandard.ZstdDecompressor().stream_reader(f.open("rb")).read().decode().splitlines():
            r = json.loads(line)
            texts[(f.parent.name, r["id"])] = r["text"]
    rng = random.Random(0)
    for source in SOURCE_NAMES:
        stats = json.loads((out / "stats" / f"{source}.json").read_text())
        assert stats["read"] == accounted(stats) == sum(1 for k in texts if k[0] == source)
        samples = read_mds(out / "sources" / source)
        assert len(samples) == stats["kept"] > 0
        rejects = [x for p in (out / "rejects" / source).glob("*.jsonl") for x in p.read_text().splitlines()]
        assert len(rejects) == stats["read"] - stats["kept"]
        assert sum(len(s["tokens"]) for s in samples) == stats["tokens"]
        for s in rng.sample(samples, 20):  # shard contents: the input text's tokens + EOS, nothing else
            expected = raw_tokenizer.encode(texts[(source, s["id"])], add_special_tokens=False).ids + [0]
            assert s["tokens"].tolist() == expected, (source, s["id"])
    mixture = out / "mixtures" / "mpt30b_2k"
    assert (mixture / "streams.yaml").exists() and json.loads((mixture / "manifest.json").read_text())["streams"]
