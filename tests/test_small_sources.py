"""Sources with 0, 1, 2, k-1, k and k+1 surviving documents under every dedupe configuration (issue 25): the
build finishes, every source reconciles, an empty source gets a warning naming what emptied it, and a
mixture that needs an empty source is refused (or, with --allow-missing-sources, built without it).

Regression: a c4_en whose every document fails the C4 rules used to kill the whole default build in
SemDedup's k-means fit (``need at least one array to stack``)."""
import json

import pytest
import yaml

from mixtures.build import MixtureError, build_mixture
from pipelines.dedupe import semantic
from pipelines.dedupe.config import SemDedupConfig
from tests.conftest import load_stats, needs_shared, read_mds, run_build
from tests.test_dedupe_near import _synthetic_base

K = 3  # SemDedup clusters in these builds
SEM = {"exact": True, "minhash": True, "semantic": {"n_clusters": K, "keep_fraction": 0.5}}
CONFIGS = {"semdedup": SEM, "exact": {"exact": True}, "exact+minhash": {"exact": True, "minhash": True},
           "default": "default"}
# (source, surviving documents, dedupe) per build; c4_en keeps the registry's default chain and dedupe
BUILDS = {
    "semantic": [("mc4_en", 0, SEM), ("rp_commoncrawl", 1, SEM), ("stack_selected", K - 1, SEM),
                 ("rp_wikipedia", K, SEM), ("stack_markdown", K + 1, SEM), ("s2orc", 2, "default"),
                 ("rp_books", 0, "default"), ("rp_arxiv", 1, "default"), ("rp_stackexchange", K + 1, "default")],
    "exact_minhash": [("mc4_en", 0, CONFIGS["exact"]), ("rp_commoncrawl", 1, CONFIGS["exact"]),
                      ("stack_selected", 2, CONFIGS["exact"]), ("rp_wikipedia", 0, CONFIGS["exact+minhash"]),
                      ("stack_markdown", 1, CONFIGS["exact+minhash"]), ("s2orc", 2, CONFIGS["exact+minhash"]),
                      ("rp_books", K + 1, CONFIGS["exact+minhash"]), ("rp_arxiv", K - 1, "default"),
                      ("rp_stackexchange", K, "default")],
}
# documents every C4 rule set rejects: no terminal punctuation, curly braces, few words per line
FILTERED = ["{ code block }\n  indented line\n  another one", "heading\n=======\n\n* item\n* item two"]


def _write(tmp_path, name, rows):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _sources(tmp_path, build):
    base = _synthetic_base(40, seed=3, words=120)
    cfg, expect, i = {}, {}, 0
    for source, n, dedupe in BUILDS[build]:
        # each source: n distinct documents plus one exact copy of its first (so exact dedupe always has work)
        rows = [{"id": f"{source}-{k}", "text": base[i + k]} for k in range(n)]
        rows += [{"id": f"{source}-copy", "text": base[i]}] if n else []
        i += n
        cfg[source] = {"inputs": [_write(tmp_path, source, rows)], "id_field": "id", "text_field": "text",
                       "filters": "none", "dedupe": dedupe}
        expect[source] = (len(rows), n)
    rows = [{"id": f"doc-{k}", "text": FILTERED[k % 2] + f" {k}"} for k in range(12)]
    cfg["c4_en"] = {"inputs": [_write(tmp_path, "c4_en", rows)], "id_field": "id", "text_field": "text"}
    expect["c4_en"] = (12, 0)
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"sources": cfg}))
    return expect


@needs_shared("tokenizers")
@pytest.mark.parametrize("build,cross", [("exact_minhash", False), ("semantic", False), ("exact_minhash", True)])
def test_tiny_and_empty_sources_reconcile(tmp_path, tokenizer_path, build, cross):
    expect = _sources(tmp_path, build)  # the sources share no text, so cross-source scope changes no count
    out = tmp_path / "out"
    rc = run_build(["--mixture", "mpt30b_2k", "--sources", str(tmp_path / "sources.yaml"), "--out", str(out),
                    "--tokenizer", tokenizer_path, "--skip-mixture", "--write-rejects"]
                   + (["--cross-source-dedupe"] if cross else []))
    assert rc == 0
    for source, (read, survivors) in expect.items():
        st = load_stats(out, source)
        sem = next((d for s, _n, d in BUILDS[build] if s == source), None)
        sem_cfg = sem.get("semantic") if isinstance(sem, dict) else (
            {"keep_fraction": 0.8} if sem == "default" and source == "c4_en" else None)
        removed_sem = semantic.n_to_remove(survivors, SemDedupConfig(**sem_cfg).keep_fraction) if sem_cfg else 0
        assert st["read"] == read, source
        assert st["exact_duplicates"] == (1 if survivors else 0), source
        assert st["near_duplicates"] == 0 and st["semantic_duplicates"] == removed_sem, source
        assert st["kept"] == survivors - removed_sem, source
        assert st["read"] == (st["malformed"] + st["kept"] + st["exact_duplicates"] + st["near_duplicates"]
                              + st["semantic_duplicates"] + st["decontaminated"] + sum(st["rejected"].values()))
        if st["kept"]:
            assert len(read_mds(out / "sources" / source)) == st["kept"], source
        else:  # an empty MDS dataset (streaming's reader refuses one; the index says 0 samples)
            index = json.loads((out / "sources" / source / "index.json").read_text())
            assert sum(sh["samples"] for sh in index["shards"]) == 0, source
        rejects = (out / "rejects" / source)
        n_rejects = sum(len(p.read_text().splitlines()) for p in rejects.glob("*.jsonl")) if rejects.exists() else 0
        assert n_rejects == read - st["kept"], source
        if st["kept"] == 0:
            assert any(w.startswith(f"{source}: no document kept of {read - st['malformed']:,} read")
                       for w in st["warnings"]), (source, st["warnings"])
    c4 = load_stats(out, "c4_en")  # the regression: every document filtered, SemDedup configured
    assert c4["kept"] == 0 and sum(c4["rejected"].values()) == 12
    top = max(c4["rejected"], key=c4["rejected"].get)
    assert f"most removed by filter rule {top}: {c4['rejected'][top]}" in c4["warnings"][0]

    if build == "semantic" and not cross:  # a mixture that needs an empty source: refused, or built without it when allowed
        with pytest.raises(MixtureError, match=r"kept no document: .*c4_en.*--allow-missing-sources"):
            build_mixture("mpt30b_2k", str(out / "sources"), str(tmp_path / "mix"), tokens=2000)
        # allowed: the empty sources are left out like missing ones (these tiny sources then hold too few
        # tokens for one 2048-token sample, which the planner says per stream)
        with pytest.raises(MixtureError, match=r"c4_en: source missing; main/mc4_en: source missing"):
            build_mixture("mpt30b_2k", str(out / "sources"), str(tmp_path / "mix"), tokens=2000, allow_missing=True)
