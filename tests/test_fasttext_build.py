"""Issue 24 end to end: the fastText rules in the real build (pipelines.build, Beam local runner), on planted
corpora. Counts are exact: the planted non-English documents and the planted low-quality style are removed,
nothing else is; audit records carry the scores; the model's hash is in the stats and in the config hash
(a retrained model rebuilds the source, the same model resumes it).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from pipelines.filters.fasttext import file_sha256, load_model, quality_score
from pipelines.quality import train
from tests.conftest import load_stats, needs_shared, run_build
from tests.planted_styles import prose, styled

# the part summary carries the rules' tallies only once pipelines/engine/process.py adds
# "filter_stats": steps.filter_stats(steps) to it (a one-line hook in a file this change does not own)


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rejects(out: Path, source: str) -> list[dict]:
    files = sorted((out / "rejects" / source).glob("*.jsonl"))
    return [json.loads(x) for p in files for x in p.read_text().splitlines()]


def _build(tmp: Path, cfg: dict, tokenizer_path: str) -> tuple[int, Path]:
    (tmp / "sources.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp / "out"
    rc = run_build(["--mixture", "mpt30b_8k", "--sources", str(tmp / "sources.yaml"), "--out", str(out),
                    "--tokenizer", tokenizer_path, "--skip-mixture", "--write-rejects", "--workers", "1"])
    return rc, out


def _planted(tmp_path: Path) -> tuple[str, dict, dict]:
    """(model path, sources config, documents per source)."""
    rng = random.Random(2024)
    # the classifier: two planted styles, trained by the command's own function
    pos = _write(tmp_path / "pos.jsonl", [{"text": styled("encyclopedic", rng)} for _ in range(120)])
    neg = _write(tmp_path / "neg.jsonl", [{"text": styled("spam", rng)} for _ in range(120)])
    model = str(tmp_path / "quality.bin")
    assert train([pos], [neg], model, bucket=20_000, dim=16, log=lambda *_: None)["precision"] == 1.0
    # rp_commoncrawl: 40 English documents and 12 planted others
    cc = [{"id": f"en-{i}", "text": prose("en", rng, rng.randint(3, 8))} for i in range(40)]
    cc += [{"id": f"{lang}-{i}", "text": prose(lang, rng, rng.randint(3, 8))} for lang in ("de", "fr", "es")
           for i in range(4)]
    # mc4_en: min_score 0.5 on 25 + 15; c4_en: keep_top_fraction 0.5 of a 20 + 20 mix
    mc4 = [{"id": f"good-{i}", "text": styled("encyclopedic", rng)} for i in range(25)]
    mc4 += [{"id": f"spam-{i}", "text": styled("spam", rng)} for i in range(15)]
    c4 = [{"id": f"good-{i}", "text": styled("encyclopedic", rng)} for i in range(20)]
    c4 += [{"id": f"spam-{i}", "text": styled("spam", rng)} for i in range(20)]
    for docs in (cc, mc4, c4):
        rng.shuffle(docs)
    cfg = {"sources": {
        "rp_commoncrawl": {"inputs": [_write(tmp_path / "cc.jsonl", cc)], "id_field": "id",
                           "filters": ["min_words", "fasttext_lang"], "dedupe": "none"},
        "mc4_en": {"inputs": [_write(tmp_path / "mc4.jsonl", mc4)], "id_field": "id",
                   "filters": [{"fasttext_quality": {"model": model}}], "dedupe": "none"},
        "c4_en": {"inputs": [_write(tmp_path / "c4.jsonl", c4)], "id_field": "id",
                  "filters": [{"fasttext_quality": {"model": model, "keep_top_fraction": 0.5}}], "dedupe": "none"},
    }}
    return model, cfg, {"rp_commoncrawl": cc, "mc4_en": mc4, "c4_en": c4}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer_path):
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("fasttext_build")
    model, cfg, docs = _planted(tmp)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc, out = _build(tmp, cfg, tokenizer_path)
    assert rc == 0
    return out, model, docs, buf.getvalue()


@needs_shared("tokenizers")
def test_planted_non_english_documents_are_removed(built):
    out, _model, docs, _log = built
    stats = load_stats(out, "rp_commoncrawl")
    assert (stats["read"], stats["kept"], stats["rejected"]) == (52, 40, {"fasttext_lang": 12})
    recs = _rejects(out, "rp_commoncrawl")
    assert sorted(r["id"] for r in recs) == sorted(d["id"] for d in docs["rp_commoncrawl"] if d["id"][:3] != "en-")
    for r in recs:
        assert r["reason"] == "fasttext_lang" and 0.0 <= r["value"] < 0.65
        assert r["detail"].startswith(f"top language {r['id'].split('-')[0]} ")


@needs_shared("tokenizers")
def test_planted_low_quality_style_is_removed(built):
    out, model, docs, log = built
    sha = file_sha256(model)
    stats = load_stats(out, "mc4_en")
    assert (stats["read"], stats["kept"], stats["rejected"]) == (40, 25, {"fasttext_quality": 15})
    assert stats["filter_params"]["fasttext_quality"]["model_sha256"] == sha
    recs = _rejects(out, "mc4_en")
    assert sorted(r["id"] for r in recs) == sorted(f"spam-{i}" for i in range(15))
    assert all(r["value"] < 0.5 and r["detail"].startswith("hq score ") for r in recs)
    # keep_top_fraction 0.5 of 20 + 20: the threshold is the lowest score of the good half
    stats = load_stats(out, "c4_en")
    assert (stats["kept"], stats["rejected"]) == (20, {"fasttext_quality": 20})
    m = load_model(model)
    lowest_good = min(quality_score(m, d["text"]) for d in docs["c4_en"] if d["id"].startswith("good-"))
    assert stats["filter_params"]["fasttext_quality"]["min_score"] == pytest.approx(lowest_good)
    assert sorted(r["id"] for r in _rejects(out, "c4_en")) == sorted(f"spam-{i}" for i in range(20))
    assert "keep_top_fraction 0.5: min_score" in log


@needs_shared("tokenizers")
def test_language_counts_and_score_histograms_in_stats(built):
    out, _model, _docs, _log = built
    cc = load_stats(out, "rp_commoncrawl")
    assert cc["filter_stats"] == {"fasttext_lang": {"top_language": {"de": 4, "en": 40, "es": 4, "fr": 4}}}
    bins = load_stats(out, "mc4_en")["filter_stats"]["fasttext_quality"]["score_bins"]
    assert sum(bins.values()) == 40 and sum(n for k, n in bins.items() if float(k) < 0.5) == 15


@pytest.mark.slow
@needs_shared("tokenizers")
def test_retrained_model_rebuilds_the_source(tmp_path, tokenizer_path, capsys):
    """Same model: the source is resumed (skipped); a retrained model (other seed, other bytes): rebuilt."""
    model, cfg, _docs = _planted(tmp_path)
    cfg["sources"] = {"mc4_en": cfg["sources"]["mc4_en"]}
    for _ in range(2):
        rc, out = _build(tmp_path, cfg, tokenizer_path)
        assert rc == 0
    assert "[mc4_en] already built" in capsys.readouterr().out
    sha = file_sha256(model)
    train([str(tmp_path / "pos.jsonl")], [str(tmp_path / "neg.jsonl")], model, bucket=20_000, dim=16, seed=1,
          log=lambda *_: None)
    assert file_sha256(model) != sha
    rc, out = _build(tmp_path, cfg, tokenizer_path)
    assert rc == 0 and "[mc4_en] already built" not in capsys.readouterr().out
    assert load_stats(out, "mc4_en")["filter_params"]["fasttext_quality"]["model_sha256"] == file_sha256(model)


@needs_shared("tokenizers")
def test_bad_model_path_fails_before_any_input_is_read(tmp_path, tokenizer_path, capsys):
    cfg = {"sources": {"mc4_en": {"inputs": [str(tmp_path / "missing-*.jsonl")],
                                  "filters": [{"fasttext_quality": {"model": str(tmp_path / "nope.bin")}}]}}}
    rc, _out = _build(tmp_path, cfg, tokenizer_path)
    err = capsys.readouterr().err
    # the model is named, not the (also missing) inputs: the sources file is checked before inputs are listed
    assert rc == 2 and "nope.bin: no such file" in err and "missing-" not in err
