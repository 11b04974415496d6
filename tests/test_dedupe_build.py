"""The real build (pipelines.build) with MinHash near-dup dedupe on planted duplicates: the removed
documents are exactly the near-copies, they are counted as near_duplicates, and their audit records
name the kept original."""
import io
import json
import random

import pytest
import yaml
import zstandard

from pipelines.dedupe.minhash import exact_jaccard
from tests.conftest import load_stats, needs_shared, run_build
from tests.test_dedupe_near import _synthetic_base, _two_word_edit


@needs_shared("tokenizers")
@pytest.mark.slow
def test_build_removes_planted_near_duplicates(tmp_path, tokenizer_path):
    base = _synthetic_base(60, seed=21)
    rng = random.Random(4)
    origins = sorted(rng.sample(range(60), 12))
    variants = [_two_word_edit(base[i], 30 + k) for k, i in enumerate(origins)]
    assert all(0.9 < exact_jaccard(base[i], v) < 1 for i, v in zip(origins, variants))
    records = [{"id": f"orig-{i}", "text": t} for i, t in enumerate(base)]
    records += [{"id": f"copy-{i}", "text": v} for i, v in zip(origins, variants)]
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path = tmp_path / "planted.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    cfg = {"sources": {"rp_commoncrawl": {
        "inputs": [str(path)], "id_field": "id", "text_field": "text", "filters": "none",
        "dedupe": {"exact": True, "minhash": {"threshold": 0.8}}}}}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    rc = run_build(["--mixture", "mpt30b_8k", "--sources", str(tmp_path / "sources.yaml"), "--out", str(out),
                    "--tokenizer", tokenizer_path, "--skip-mixture", "--write-rejects",
                    "--allow-missing-sources"])
    assert rc == 0
    stats = load_stats(out, "rp_commoncrawl")
    assert stats["read"] == 72 and stats["near_duplicates"] == 12 and stats["kept"] == 60
    rejects = [json.loads(x) for p in sorted((out / "rejects" / "rp_commoncrawl").glob("*.jsonl"))
               for x in io.open(p, encoding="utf-8").read().splitlines()]
    near = sorted((r["id"], r["duplicate_of"]) for r in rejects if r["stage"] == "near_dedupe")
    assert near == sorted((f"copy-{i}", f"orig-{i}") for i in origins)
