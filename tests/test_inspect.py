"""pipelines.inspect on a small hand-made build output (real MDS written with streaming's MDSWriter)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from contract import layout
from pipelines.inspect import main
from tests.conftest import s3_options, s3_upload_tree

DOCS = [f"Document number {i} talks about topic {i * 7} and nothing else." for i in range(12)]


def _write_mds(path, rows, columns):
    from streaming import MDSWriter

    with MDSWriter(out=str(path), columns=columns, compression="zstd", size_limit=1 << 10) as w:
        for r in rows:
            w.write(r)


@pytest.fixture(scope="module")
def out(tmp_path_factory, neox):
    root = str(tmp_path_factory.mktemp("out"))
    toks = neox.encode_batch(DOCS)                           # each ends with EOS = 0
    _write_mds(layout.source_dir(root, "c4_en"),
               [{"tokens": t, "id": f"c4.json.gz:{i + 1}"} for i, t in enumerate(toks)],
               {"tokens": "ndarray:uint16", "id": "str"})
    os.makedirs(layout.stats_dir(root))
    stats = {"source": "c4_en", "read": 32, "malformed": 1, "kept": 12, "exact_duplicates": 2,
             "near_duplicates": 0, "semantic_duplicates": 0, "rejected": {"min_words": 16, "c4_boilerplate": 1},
             "tokens": int(sum(len(t) for t in toks))}
    with open(layout.stats_path(root, "c4_en"), "w") as f:
        json.dump(stats, f)
    os.makedirs(layout.rejects_dir(root, "c4_en"))
    with open(os.path.join(layout.rejects_dir(root, "c4_en"), "part-00000.jsonl"), "w") as f:
        f.write(json.dumps({"id": "c4.json.gz:40", "source": "c4_en", "stage": "filter", "reason": "min_words",
                            "loc": "c4.json.gz:40", "value": 3.0, "detail": "3 words < 5"}) + "\n")
        f.write(json.dumps({"id": "c4.json.gz:400", "source": "c4_en", "stage": "exact_dedupe",
                            "reason": "exact_duplicate", "duplicate_of": "c4.json.gz:2"}) + "\n")
    # a mixture: one stream of packed 16-token samples made of the documents back to back
    flat = np.concatenate(toks)
    samples = [flat[i:i + 16] for i in range(0, len(flat) - 15, 16)]
    mdir = layout.mixture_dir(root, "tiny")
    _write_mds(os.path.join(mdir, "all", "c4_en"), [{"tokens": s} for s in samples], {"tokens": "ndarray:uint16"})
    manifest = {"name": "tiny", "seq_len": 16, "seed": 3, "budget": {"tokens": 16 * len(samples)},
                "parts": {"all": {"samples": len(samples), "weight": 1.0, "realized_weight": 1.0}},
                "streams": {"all__c4_en": {"part": "all", "source": "c4_en", "path": "all/c4_en", "spec_share": 1.0,
                                           "realized_share": 1.0, "choose": len(samples), "epochs": 1.0}}}
    with open(os.path.join(mdir, layout.MANIFEST), "w") as f:
        json.dump(manifest, f)
    return root


def run(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_summary_text_and_json(out, capsys):
    rc, text, _ = run(capsys, out)
    assert rc == 0
    assert "c4_en" in text and "min_words 16" in text and "Mixture tiny" in text
    assert "37.5%" in text                                   # kept share 12/32
    assert "! c4_en: filter rule min_words rejected 16 of 31 documents (51.6%)" in text   # sanity warning
    rc, js, _ = run(capsys, out, "--json")
    data = json.loads(js)
    assert data["sources"]["c4_en"]["kept"] == 12 and data["sources"]["c4_en"]["top_reasons"][0] == ["min_words", 16]
    assert data["mixtures"]["tiny"]["streams"][0]["source"] == "c4_en"


def test_docs_decode_back_to_the_original_text_deterministically(out, capsys, tokenizer_path):
    args = (out, "docs", "c4_en", "-n", "4", "--seed", "5", "--chars", "0", "--json", "--tokenizer", tokenizer_path)
    rc, js, _ = run(capsys, *args)
    rows = json.loads(js)
    assert rc == 0 and len(rows) == 4
    for r in rows:
        assert r["text"] == DOCS[r["index"]] and r["id"] == f"c4.json.gz:{r['index'] + 1}"
    assert run(capsys, *args)[1] == js                                  # same seed, same picks
    other = json.loads(run(capsys, *args[:5], "--seed", "6", *args[7:])[1])
    assert [r["index"] for r in other] != [r["index"] for r in rows]
    rc, text, _ = run(capsys, out, "docs", "c4_en", "-n", "1", "--chars", "10", "--tokenizer", tokenizer_path)
    assert rc == 0 and "[...]" in text and "=== source=c4_en" in text


def test_samples_show_document_boundaries(out, capsys, tokenizer_path):
    rc, js, _ = run(capsys, out, "samples", "tiny", "-n", "50", "--chars", "0", "--json", "--tokenizer", tokenizer_path)
    rows = json.loads(js)
    assert rc == 0 and rows and all(r["tokens"] == 16 for r in rows)
    joined = "".join(r["text"] for r in sorted(rows, key=lambda r: r["sample"]))
    assert "<|endoftext|>" in joined and DOCS[1] in joined


def test_reject_lookup(out, capsys):
    rc, text, _ = run(capsys, out, "reject", "c4.json.gz:40")
    assert rc == 0 and "min_words" in text and "3 words < 5" in text and "part-00000.jsonl" in text
    rc, js, _ = run(capsys, out, "reject", "c4.json.gz:400", "--json")
    assert json.loads(js)[0]["duplicate_of"] == "c4.json.gz:2"
    rc, text, _ = run(capsys, out, "reject", "c4.json.gz:4")       # a prefix of other ids: no false hit
    assert rc == 0 and "no reject record" in text


def test_errors_name_the_missing_file(out, capsys, tmp_path, tokenizer_path):
    rc, _, err = run(capsys, out, "docs", "rp_books", "--tokenizer", tokenizer_path)
    assert rc == 2 and layout.source_index(out, "rp_books") in err and "built: c4_en" in err
    rc, _, err = run(capsys, out, "samples", "nope", "--tokenizer", tokenizer_path)
    assert rc == 2 and os.path.join(layout.mixture_dir(out, "nope"), layout.MANIFEST) in err
    rc, _, err = run(capsys, str(tmp_path), "reject", "x", "--source", "c4_en")
    assert rc == 2 and layout.rejects_dir(str(tmp_path), "c4_en") in err and "--write-rejects" in err
    rc, _, err = run(capsys, str(tmp_path / "empty"))
    assert rc == 2 and layout.stats_dir(str(tmp_path / "empty")) in err


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "reject" in capsys.readouterr().out


@pytest.fixture()
def s3_out(out, s3_server):
    """The same output folder copied to a local moto S3 server; yields (s3 url, Beam filesystem options)."""
    boto3 = pytest.importorskip("boto3")
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="outputs")
    s3_upload_tree(s3, out, "outputs", "run1")
    yield "s3://outputs/run1", s3_options(s3_server)


def test_remote_out_through_beam_filesystems(out, s3_out, capsys, tokenizer_path):
    url, opts = s3_out
    local = json.loads(run(capsys, out, "--json")[1])
    rc, js, err = run(capsys, url, "summary", "--json", *opts)
    assert rc == 0, err
    remote = json.loads(js)
    assert remote["sources"] == local["sources"] and remote["mixtures"] == local["mixtures"]
    args = ("docs", "c4_en", "-n", "3", "--seed", "2", "--json", "--tokenizer", tokenizer_path)
    assert json.loads(run(capsys, url, *args, *opts)[1]) == json.loads(run(capsys, out, *args)[1])
    rc, text, _ = run(capsys, url, "reject", "c4.json.gz:40", *opts)
    assert rc == 0 and "min_words" in text and "s3://outputs/run1/rejects/c4_en/part-00000.jsonl" in text


def test_html_report_of_a_remote_out_is_the_local_page(out, s3_out, capsys, tmp_path, tokenizer_path):
    """--html on s3:// reads stats, manifest and the streams' first shards through Beam's filesystems and writes
    the same bytes as on the local copy (the page names no path)."""
    url, opts = s3_out
    rc, text, err = run(capsys, out, "--html", str(tmp_path / "local.html"), "--tokenizer", tokenizer_path)
    assert rc == 0 and "wrote" in text, err
    rc, _, err = run(capsys, url, "--html", str(tmp_path / "remote.html"), "--tokenizer", tokenizer_path, *opts)
    assert rc == 0, err
    page = (tmp_path / "local.html").read_text(encoding="utf-8")
    assert (tmp_path / "remote.html").read_text(encoding="utf-8") == page
    assert 'data-source="c4_en"' in page and 'data-mixture="tiny"' in page and 'data-stream="all__c4_en"' in page
    assert "Document number" in page  # a decoded sample opening
    assert "examples/c4_en.json (built before the report existed" in page  # a hand-made OUT: said, not fatal
