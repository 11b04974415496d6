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


def test_dedupe_work_line_sums_the_graphs_counters_over_steps():
    """The build's "dedupe work" line (cluster sizing: keys, candidate pairs, verified edges) sums a counter over
    every step that increments it, reads only the dedupe namespaces, and is empty where a runner has no metrics."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    from pipelines.build import dedupe_work
    from pipelines.engine.dedupe.semantic import SEM_NS
    from pipelines.engine.dedupe.shared import NS

    def count(name, ns=NS):
        def fn(x):
            Metrics.counter(ns, name).inc(x)
            return x
        return fn

    p = beam.Pipeline()
    xs = p | beam.Create([3, 4])
    _ = xs | "group0" >> beam.Map(count("near_candidate_members"))
    _ = xs | "group1" >> beam.Map(count("near_candidate_members"))
    _ = xs | "edges" >> beam.Map(count("near_verified_edges"))
    _ = xs | "sem" >> beam.Map(count("semantic_duplicates", SEM_NS))
    _ = xs | "other" >> beam.Map(count("exact_duplicates", "somewhere_else"))
    result = p.run()
    result.wait_until_finish()
    assert dedupe_work(result) == ("dedupe work: 14 MinHash candidate pairs, 7 verified near-duplicate edges, "
                                   "7 SemDedup removals")

    class NoMetrics:  # the DaskRunner's result
        def metrics(self):
            raise NotImplementedError("collecting metrics will come later!")

    assert dedupe_work(NoMetrics()) == "" and dedupe_work(None) == ""
