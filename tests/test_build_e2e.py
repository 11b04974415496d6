"""CPU end-to-end builds through the real Beam local runner (multi-process), read back with streaming."""
import json
from pathlib import Path

import numpy as np
import yaml

from contract.registry import SOURCE_NAMES
from contract.stats import accounted
from tests.conftest import CORPORA, load_stats, needs_shared, read_mds, read_shared_category, run_build


def _check_source(out: Path, source: str, texts_by_id: dict, raw_tokenizer):
    stats = load_stats(out, source)
    assert stats["read"] == accounted(stats)
    samples = read_mds(out / "sources" / source)
    assert len(samples) == stats["kept"]
    lengths = np.load(out / "sources" / source / "doc_tokens.npy")
    assert lengths.dtype == np.uint32 and len(lengths) == len(samples)
    total = 0
    for s, n in zip(samples, lengths):
        toks = s["tokens"]
        assert toks.dtype == np.uint16 and len(toks) == n
        assert toks.tolist() == raw_tokenizer.encode(texts_by_id[s["id"]]).ids + [0], s["id"]
        total += int(n)
    assert total == stats["tokens"]
    return stats


@needs_shared("corpora")
def test_build_on_shared_corpora_tokens_equal_direct_encode(tmp_path, tokenizer_path, raw_tokenizer):
    cfg = {"sources": {n: {"inputs": [str(CORPORA / f"{n}.jsonl.zst")], "id_field": "id", "text_field": "text", "dedupe": {"exact": True},
                           "meta_fields": ["lang", "path", "url"]} for n in SOURCE_NAMES}}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    rc = run_build(["--mixture", "mpt30b_8k", "--sources", str(tmp_path / "sources.yaml"), "--out", str(out),
                    "--tokenizer", tokenizer_path, "--skip-mixture", "--write-rejects"])
    assert rc == 0
    for n in SOURCE_NAMES:
        recs = read_shared_category(n)
        stats = _check_source(out, n, {r["id"]: r["text"] for r in recs}, raw_tokenizer)
        assert stats["read"] == len(recs)
        rejected = [json.loads(l) for p in sorted((out / "rejects" / n).glob("*.jsonl")) for l in p.read_text().splitlines()]
        assert len(rejected) == stats["read"] - stats["kept"]
        assert all(r["stage"] and r["reason"] for r in rejected)


def test_demo_build_all_ten_sources_reconcile_and_rerun_is_identical(tmp_path, tokenizer_path, raw_tokenizer):
    out = tmp_path / "out"
    args = ["--mixture", "mpt30b_8k", "--out", str(out), "--tokenizer", tokenizer_path, "--skip-mixture"]
    # c4_en's default SemDedup is exercised by the dedupe tests; keep this one to the foundation stages
    from pipelines.sources.demo import demo_sources_yaml, write_demo_corpora

    paths = write_demo_corpora(str(tmp_path / "demo"))
    cfg = demo_sources_yaml(paths)
    for n in cfg["sources"]:
        cfg["sources"][n]["dedupe"] = {"exact": True}
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(cfg))
    assert run_build(args + ["--sources", str(tmp_path / "demo.yaml")]) == 0
    by_source = {}
    for n, p in paths.items():
        by_source[n] = _texts_of(n, p, cfg["sources"][n])
    for n in SOURCE_NAMES:
        stats = _check_source(out, n, by_source[n], raw_tokenizer)
        assert stats["kept"] > 0
    assert load_stats(out, "c4_en")["malformed"] == 2 and load_stats(out, "c4_en")["exact_duplicates"] > 0
    assert sum(load_stats(out, n)["docs_ge_4096_tokens"] for n in SOURCE_NAMES) > 10
    # the build's report (pipelines.report.html): every source, every rule that fired, the planted examples
    # (tests/test_report_html.py has the full demo with its mixture, and the browser)
    page = (out / "report.html").read_text(encoding="utf-8")
    for n in SOURCE_NAMES:
        assert f'data-source="{n}"' in page and all(f"rule {r}</text>" in page for r in load_stats(out, n)["rejected"])
    assert 'data-key="read/bad_json"' in page and "c4_en.jsonl.gz:351" in page and "Lorem ipsum dolor" in page
    assert page.count('<div class="pair">') >= 3 * 5   # exact pairs of c4_en, mc4_en, rp_commoncrawl (5 each)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    # second build into a fresh dir: byte-identical shards and stats
    out2 = tmp_path / "out2"
    assert run_build(["--mixture", "mpt30b_8k", "--out", str(out2), "--tokenizer", tokenizer_path, "--skip-mixture",
                      "--sources", str(tmp_path / "demo.yaml")]) == 0
    after = {p: p.read_bytes() for p in sorted(out2.rglob("*")) if p.is_file()}
    assert [p.relative_to(out2) for p in after] == [p.relative_to(out) for p in before]
    assert all(a == b for a, b in zip(before.values(), after.values()))


def _texts_of(source: str, path: str, cfg: dict) -> dict:
    from pipelines.sources.config import source_config
    from pipelines.sources.readers import expand_inputs, read_file
    from pipelines.records import Document

    sc = source_config(source, cfg, "test")
    return {d.id: d.text for f in expand_inputs(source, sc.inputs) for d in read_file(sc, f) if isinstance(d, Document)}


def test_resume_skips_finished_sources(tmp_path, tokenizer_path, capsys):
    src = tmp_path / "a.jsonl"
    src.write_text("".join(json.dumps({"text": f"document number {i} with some words"}) + "\n" for i in range(20)))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"sources": {"rp_arxiv": {"inputs": [str(src)]}}}))
    args = ["--mixture", "mpt30b_8k", "--sources", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"),
            "--tokenizer", tokenizer_path, "--skip-mixture", "--allow-missing-sources", "--workers", "1"]
    assert run_build(args) == 0
    first = (tmp_path / "o" / "stats" / "rp_arxiv.json").read_bytes()
    capsys.readouterr()
    assert run_build(args) == 0
    assert "already built" in capsys.readouterr().out
    assert (tmp_path / "o" / "stats" / "rp_arxiv.json").read_bytes() == first


def test_cli_errors_are_one_paragraph(tmp_path, tokenizer_path, capsys):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"sources": {"rp_arxiv": {"inputs": [str(tmp_path / "none*.jsonl")]}}}))
    rc = run_build(["--mixture", "mpt30b_8k", "--sources", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"),
                    "--tokenizer", tokenizer_path])
    err = capsys.readouterr().err
    assert rc == 2 and "missing: c4_en" in err and "--skip-mixture" in err
    for extra in ("--skip-mixture", "--allow-missing-sources"):  # either lets a subset of the ten through
        rc = run_build(["--mixture", "mpt30b_8k", "--sources", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"),
                        "--tokenizer", tokenizer_path, extra])
        err = capsys.readouterr().err
        assert rc == 2 and "matched no files" in err and "none*.jsonl" in err
