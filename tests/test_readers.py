import gzip
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipelines.sources.config import ConfigError, source_config
from pipelines.sources.readers import InputFileError, expand_inputs, read_file
from pipelines.records import Document, Reject, split_uid

ROWS = [{"text": "first document text", "id": "a"}, {"text": "second one", "id": "b"}]


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _read(name, raw, tmp_path):
    cfg = source_config(name, raw, "test")
    files = expand_inputs(name, cfg.inputs)
    out = [x for f in files for x in read_file(cfg, f)]
    return [x for x in out if isinstance(x, Document)], [x for x in out if isinstance(x, Reject)]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst"])
def test_jsonl_formats(tmp_path, fmt):
    data = _jsonl(ROWS)
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl.gz":
        data = gzip.compress(data)
    elif fmt == "jsonl.zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    docs, bad = _read("rp_arxiv", {"inputs": [str(path)]}, tmp_path)
    assert not bad
    assert [d.text for d in docs] == ["first document text", "second one"]
    assert [d.id for d in docs] == [f"data.{fmt}:1", f"data.{fmt}:2"]
    assert docs[0].uid != docs[1].uid and split_uid(docs[1].uid)[2] == 2


def test_parquet_and_nested_fields(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"content": "int main() { return 0; }", "lang": "C", "path": "a/main.c"},
                                         {"content": "print(1)", "lang": "Python", "path": "b.py"}]), tmp_path / "x.parquet")
    docs, bad = _read("stack_selected", {"inputs": [str(tmp_path / "*.parquet")]}, tmp_path)
    assert not bad and [d.meta["lang"] for d in docs] == ["C", "Python"] and docs[1].text == "print(1)"
    rec = {"id": 42, "content": {"text": "nested paper body"}, "title": "T"}
    (tmp_path / "s2.jsonl.gz").write_bytes(gzip.compress(_jsonl([rec])))
    docs, bad = _read("s2orc", {"inputs": [str(tmp_path / "s2.jsonl.gz")]}, tmp_path)
    assert docs[0].text == "nested paper body" and docs[0].id == "42" and docs[0].meta["title"] == "T"


def test_malformed_records_are_counted_with_location(tmp_path):
    lines = [b'{"text": "ok"}', b'{"text": broken', b'{"text": "\xff\xfe bad utf8"}', b'[1, 2]', b'{"body": "x"}',
             b'{"text": 5}', b'{"text": "   "}', b'', b'{"text": "also ok"}']
    (tmp_path / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    docs, bad = _read("rp_books", {"inputs": [str(tmp_path / "m.jsonl")]}, tmp_path)
    assert [d.text for d in docs] == ["ok", "also ok"]
    assert [(r.reason, r.loc) for r in bad] == [
        ("bad_json", "m.jsonl:2"), ("invalid_utf8", "m.jsonl:3"), ("not_an_object", "m.jsonl:4"),
        ("missing_text_field", "m.jsonl:5"), ("text_not_string", "m.jsonl:6"), ("empty_text", "m.jsonl:7")]
    assert all(r.stage == "read" and "m.jsonl" in r.detail for r in bad)


@pytest.mark.parametrize("fmt", ["jsonl.zst", "jsonl.gz"])
def test_truncated_stream_counts_one_corrupt_stream(tmp_path, fmt):
    raw = _jsonl([{"text": f"doc {i} " * 50} for i in range(200)])
    data = zstandard.ZstdCompressor().compress(raw) if fmt == "jsonl.zst" else gzip.compress(raw)
    (tmp_path / f"t.{fmt}").write_bytes(data[: len(data) // 2])
    docs, bad = _read("rp_arxiv", {"inputs": [str(tmp_path / f"t.{fmt}")]}, tmp_path)
    assert len(bad) == 1 and bad[0].reason == "corrupt_stream" and len(docs) < 200


def test_glob_matching_nothing_names_it(tmp_path):
    with pytest.raises(InputFileError, match="matched no files"):
        expand_inputs("rp_arxiv", [str(tmp_path / "nope-*.jsonl")])


def test_unreadable_parquet_fails_with_file_name(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputFileError, match="bad.parquet"):
        _read("stack_selected", {"inputs": [str(tmp_path / "bad.parquet")]}, tmp_path)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown source 'rp_arixv'"):
        source_config("rp_arixv", {"inputs": ["x"]}, "f.yaml: sources")
    with pytest.raises(ConfigError, match=r"f.yaml: sources.rp_arxiv.txt_field: unknown key"):
        source_config("rp_arxiv", {"inputs": ["x"], "txt_field": "t"}, "f.yaml: sources")
    with pytest.raises(ConfigError, match=r"rp_arxiv.format: expected one of .*got 'csv'"):
        source_config("rp_arxiv", {"inputs": ["x"], "format": "csv"}, "f.yaml: sources")
    with pytest.raises(ConfigError, match="unknown filter rule 'min_wrds'"):
        source_config("rp_arxiv", {"inputs": ["x"], "filters": ["min_wrds"]}, "f.yaml: sources")
    assert math.isnan(float("nan"))
