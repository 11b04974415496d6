"""Benchmark decontamination (pipelines.steps.decontam, its eval files: pipelines.sources.evals) on hand-made eval
files and documents."""
from __future__ import annotations

import dataclasses
import gzip
import json
import pickle

import pytest
import zstandard

from pipelines.sources.evals import build_index, cached_index, list_eval_files, load_eval_texts
from pipelines.steps.decontam import DecontamConfig, DecontamError, EvalIndex, decontaminate
from tests.conftest import s3_options, s3_upload_tree

Q1 = "Which of the following best describes the primary function of mitochondria in eukaryotic cells today"
Q2 = "A train leaves the station at noon travelling at sixty miles per hour towards the distant city"
SHORT = "Name the largest planet in our solar system"       # 8 words: indexed whole
TINY = "What is two plus two"                                # 5 words: skipped


def write_jsonl(path, rows, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture
def evals(tmp_path):
    d = tmp_path / "evals"
    (d / "mmlu").mkdir(parents=True)
    write_jsonl(d / "mmlu" / "test.jsonl", [{"question": {"text": Q1}}, {"question": {"text": TINY}}, {"other": 1}])
    write_jsonl(d / "trains.jsonl.gz", [{"question": {"text": Q2}}], opener=gzip.open)
    with open(d / "quiz.jsonl.zst", "wb") as f:
        f.write(zstandard.ZstdCompressor().compress((json.dumps({"question": {"text": [SHORT, ""]}}) + "\n").encode()))
    (d / "README.md").write_text("not an eval file")
    return d


@pytest.fixture
def index(evals):
    return build_index(DecontamConfig((str(evals),), text_field="question.text"))


def test_loads_every_format_and_names_sources(evals, index):
    assert [name for _, name in list_eval_files([str(evals)])] == ["mmlu/test", "quiz", "trains"]
    assert index.sources == ("mmlu/test", "quiz", "trains")
    assert index.eval_texts == 3 and index.skipped_short == 1
    assert index.per_source == {"mmlu/test": 1, "quiz": 1, "trains": 1}
    # Q1 and Q2 have 15 and 17 words -> 3 + 5 13-grams, SHORT is one 8-gram
    assert index.num_ngrams == 3 + 5 + 1 and index.nbytes == 10 * index.num_ngrams


def test_find_reports_ngram_and_source_despite_case_and_punctuation(index):
    doc = ("Study guide.\n\nQ: which of the following BEST describes the primary function of mitochondria, "
           "in eukaryotic cells? Discuss.")
    hit = index.find(doc)
    assert hit == ("which of the following best describes the primary function of mitochondria in eukaryotic",
                   "mmlu/test")                        # the first 13 words of the overlap
    assert index.find("Trains leave stations. " + Q2.upper() + "!") [1] == "trains"


def test_short_eval_matched_whole_and_clean_documents_pass(index):
    assert index.find(f"Quiz night: {SHORT}? Jupiter.") == (SHORT.lower(), "quiz")
    assert index.find("What is two plus two? Four, said everyone.") is None     # the 5-word eval was skipped
    near = Q1.replace("mitochondria", "ribosomes")                                 # no 13 consecutive words shared
    assert index.find(near) is None
    twelve = " ".join(Q1.split()[:12])
    assert index.find(twelve + " and nothing else") is None


FILLER = "Ordinary prose about gardening, the weather and the price of bread in small towns. " * 4   # ~340 chars


def test_remove_spans_follows_gpt3_window_and_pieces(index):
    doc = f"{FILLER}{Q1}. {FILLER}"
    new, n = index.remove_spans(doc)
    assert n == 1 and index.find(new) is None
    # 200 characters on each side of the 13-gram run go too: each leftover piece is ~340 - 200 chars
    # (< 200, so dropped) -> nothing is left
    assert new == ""
    long_doc = f"{FILLER * 2}{Q1}. {FILLER * 2}"
    new, n = index.remove_spans(long_doc)
    assert n == 1 and new.count("\n\n") == 1 and len(new) <= len(long_doc) - len(Q1) - 400 + 2
    assert new.startswith(FILLER.strip()[:50]) and new.endswith(FILLER.strip()[-50:])
    clean = FILLER
    assert index.remove_spans(clean) == (clean, 0)


def test_remove_spans_exact_cut_without_window():
    idx = EvalIndex.from_texts([("mmlu", Q1), ("trains", Q2)], window_chars=0, min_piece_chars=0)
    new, n = idx.remove_spans(f"Before. {Q1}. Middle text stays. {Q2} after")
    assert n == 2 and new == "Before.\n\n. Middle text stays.\n\nafter"
    new, n = idx.remove_spans(Q1 + " " + Q1)          # adjacent copies merge into one span
    assert n == 1 and new == ""


def test_too_many_pieces_drops_the_document():
    idx = EvalIndex.from_texts([("mmlu", Q1)], window_chars=0, min_piece_chars=0, max_pieces=3)
    doc = " x ".join([Q1] * 5) + " end"                 # 5 cuts -> 5 pieces: "x" four times, "end"
    new, n = idx.remove_spans(doc)
    assert n == 5 and new == ""
    new, n = idx.remove_spans(" x ".join([Q1] * 2) + " end")
    assert n == 2 and new == "x\n\nend"


def test_first_source_in_name_order_wins_for_shared_ngrams():
    idx = EvalIndex.from_texts([("zeta", Q1), ("alpha", Q1)])
    assert idx.find(Q1)[1] == "alpha" and idx.num_ngrams == 3


def test_config_is_frozen_picklable_and_validated(evals, index):
    cfg = DecontamConfig([str(evals)], mode="spans")
    assert cfg.eval_paths == (str(evals),)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n = 8
    cfg2 = DecontamConfig((str(evals),), text_field="question.text")
    assert cached_index(cfg2) is cached_index(DecontamConfig([str(evals)], text_field="question.text"))
    idx2 = pickle.loads(pickle.dumps(index))
    assert idx2.find(Q2) == index.find(Q2)
    with pytest.raises(DecontamError, match="mode"):
        DecontamConfig(("x",), mode="paragraphs")
    with pytest.raises(DecontamError, match="min_eval_words"):
        DecontamConfig(("x",), min_eval_words=20)
    with pytest.raises(DecontamError, match="max_pieces"):
        DecontamConfig(("x",), max_pieces=0)
    assert build_index(DecontamConfig((str(evals),), text_field="question.text", window_chars=7)).window_chars == 7


def test_errors_name_the_file_or_path(tmp_path, evals):
    with pytest.raises(DecontamError, match="nowhere"):
        list(load_eval_texts(DecontamConfig((str(tmp_path / "nowhere"),))))
    with pytest.raises(DecontamError, match=r"test\.jsonl.*'text'"):
        list(load_eval_texts(DecontamConfig((str(evals / "mmlu" / "test.jsonl"),))))   # default field absent
    assert [n for n, _ in load_eval_texts(DecontamConfig((str(evals / "*.jsonl.gz"),), text_field="question.text"))] \
        == ["trains"]


@pytest.mark.parametrize("ext", [".jsonl.zst", ".jsonl.gz"])
def test_truncated_eval_file_is_an_error_naming_file_and_line(tmp_path, ext):
    """Strict decompression (contract.fsio): a cut eval file never yields a silently smaller index."""
    rows = "".join(json.dumps({"text": f"{i} {Q1}"}) + "\n" for i in range(20_000)).encode()
    blob = zstandard.ZstdCompressor(level=3).compress(rows) if ext == ".jsonl.zst" else gzip.compress(rows, mtime=0)
    path = tmp_path / f"eval{ext}"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DecontamError, match=rf"{path}: truncated or corrupt (zstd|gzip) stream at line \d+"):
        build_index(DecontamConfig((str(path),)))
    path.write_bytes(blob)
    assert build_index(DecontamConfig((str(path),))).eval_texts == 20_000


def test_remote_eval_directory_through_beam_filesystems(evals, s3_server):
    """The same eval folder on a local moto S3 server loads to the same index."""
    boto3 = pytest.importorskip("boto3")
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="evals")
    s3_upload_tree(s3, evals, "evals", "bench")
    FileSystems.set_options(PipelineOptions(s3_options(s3_server)))
    remote = build_index(DecontamConfig(("s3://evals/bench",), text_field="question.text"))
    local = build_index(DecontamConfig((str(evals),), text_field="question.text"))
    assert remote.sources == local.sources == ("mmlu/test", "quiz", "trains")
    assert all((remote.keys[m] == local.keys[m]).all() for m in local.keys)
    with pytest.raises(DecontamError, match="s3://evals/missing"):
        list_eval_files(["s3://evals/missing/*.jsonl"])


def test_decontaminate_per_mode(index):
    clean = index.__class__.from_texts([("x", Q2)])
    r = decontaminate(index, "document", FILLER)
    assert r.text is FILLER and not r.contaminated
    r = decontaminate(index, "document", FILLER + Q1)
    assert r.text is None and r.eval_source == "mmlu/test" and r.ngram.startswith("which of the following")
    long_doc = f"{FILLER * 2}{Q1}. {FILLER * 2}"
    r = decontaminate(index, "spans", long_doc)
    assert r.text and r.spans_removed == 1 and r.contaminated and index.find(r.text) is None
    r = decontaminate(index, "spans", f"{FILLER}{Q1}")          # nothing left after the cut: remove
    assert r.text is None and r.spans_removed == 1
    assert decontaminate(clean, "spans", FILLER).text is FILLER
    with pytest.raises(DecontamError, match="mode"):
        decontaminate(index, "paragraphs", Q1)
