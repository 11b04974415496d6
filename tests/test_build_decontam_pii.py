"""Issue 15 end to end: PII masking, benchmark decontamination and sanity warnings in the real build
(pipelines.build, Beam local runner), on hand-made corpora with planted eval overlaps, e-mails and IPs.

Counts are exact: every planted overlap is removed (document mode) or cut (spans mode), nothing else is,
the stats reconcile with the new ``decontaminated`` field, the audit records name the eval source and the
n-gram, and the shards hold the masked / cut text (decoded back with the tokenizer).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from contract.stats import ReconciliationError, accounted, make_stats, summary_table
from pipelines.steps.decontam import words
from tests.conftest import load_stats, needs_shared, read_mds, run_build

VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "pu", "ro", "si", "ta", "vu", "ze")
         for b in ("bar", "cen", "dol", "fim", "gup", "hes", "jor", "lin", "mot", "nax", "pel", "quo")]


def _prose(rng: random.Random, n_words: int) -> str:
    """Random words in sentences: no 13-gram is shared by two calls (or with the eval texts) by chance."""
    out, sent = [], []
    for _ in range(n_words):
        sent.append(rng.choice(VOCAB))
        if len(sent) == 12:
            out.append(" ".join(sent).capitalize() + ".")
            sent = []
    if sent:
        out.append(" ".join(sent).capitalize() + ".")
    return " ".join(out)


def _shout(text: str) -> str:
    """The same words with other case and punctuation: decontamination must see through both."""
    return ", ".join(w.upper() if i % 3 == 0 else w.title() for i, w in enumerate(text.split()))


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rejects(out: Path, source: str) -> list[dict]:
    return [json.loads(x) for p in sorted((out / "rejects" / source).glob("*.jsonl")) for x in p.read_text().splitlines()]


def _texts(out: Path, source: str, raw_tokenizer) -> dict[str, str]:
    """id -> text decoded from the built shards (tokens minus the EOS)."""
    return {s["id"]: raw_tokenizer.decode(s["tokens"][:-1].tolist()) for s in read_mds(out / "sources" / source)}


def _evals(tmp: Path, rng: random.Random) -> dict[str, list[str]]:
    ev = {"mmlu/test": [_prose(rng, 30), _prose(rng, 25)], "gsm8k": [_prose(rng, 20)]}
    _write_jsonl(tmp / "evals" / "mmlu" / "test.jsonl", [{"text": t} for t in ev["mmlu/test"]]
                 + [{"text": "the capital of france is"}, {"other": "no text field on this line"}])
    _write_jsonl(tmp / "evals" / "gsm8k.jsonl", [{"text": t} for t in ev["gsm8k"]])
    return ev


def _build(tmp: Path, cfg: dict, tokenizer_path: str, name: str = "sources.yaml") -> tuple[int, Path]:
    (tmp / name).write_text(yaml.safe_dump(cfg))
    out = tmp / "out"
    rc = run_build(["--mixture", "mpt30b_8k", "--sources", str(tmp / name), "--out", str(out), "--tokenizer",
                    tokenizer_path, "--skip-mixture", "--write-rejects", "--workers", "1"])
    return rc, out


@needs_shared("tokenizers")
def test_document_mode_pii_and_sanity_warning_in_one_build(tmp_path, tokenizer_path, raw_tokenizer, capsys):
    rng = random.Random(15)
    ev = _evals(tmp_path, rng)
    # rp_arxiv: 30 clean documents, 5 with a planted eval text, 2 near misses that must stay
    rows = [{"id": f"clean-{i}", "text": _prose(rng, 80)} for i in range(30)]
    planted = {"dirty-0": ("mmlu/test", ev["mmlu/test"][0]), "dirty-1": ("mmlu/test", ev["mmlu/test"][1]),
               "dirty-2": ("mmlu/test", ev["mmlu/test"][0]), "dirty-3": ("gsm8k", ev["gsm8k"][0])}
    for i, (doc_id, (_src, text)) in enumerate(planted.items()):
        rows.insert(5 + 6 * i, {"id": doc_id, "text": f"{_prose(rng, 40)} {_shout(text)} {_prose(rng, 40)}"})
    # decontamination runs before the filters: this one is counted as decontaminated, not as min_words
    rows.append({"id": "dirty-short", "text": ev["gsm8k"][0]})
    planted["dirty-short"] = ("gsm8k", ev["gsm8k"][0])
    twelve = " ".join(words(ev["gsm8k"][0])[:12])  # 12 of 13 words: not an overlap
    rows.append({"id": "near-miss-12-words", "text": f"{_prose(rng, 40)} {twelve} {_prose(rng, 40)}"})
    rows.append({"id": "short-eval-text", "text": f"{_prose(rng, 40)} the capital of france is {_prose(rng, 40)}"})
    arxiv = _write_jsonl(tmp_path / "in" / "arxiv.jsonl", rows)
    # rp_stackexchange: pii on, decontam opted out (its planted eval text stays)
    se_rows = [
        {"id": "mail", "text": f"{_prose(rng, 30)} Write to John.Doe@Example.COM or ops@mail.example.net today."},
        {"id": "ip", "text": f"{_prose(rng, 30)} The server at 8.8.4.4 answers; 192.168.1.10 is the router."},
        {"id": "both", "text": f"{_prose(rng, 30)} Mail a@b.io from 1.1.1.1 and 9.9.9.9 please."},
        {"id": "plain", "text": f"{_prose(rng, 30)} nothing personal 10.0.0.1 here."},
        {"id": "eval-but-opted-out", "text": f"{_prose(rng, 20)} {ev['gsm8k'][0]}"},
    ]
    se = _write_jsonl(tmp_path / "in" / "se.jsonl", se_rows)
    # stack_selected without lang/path metadata: code_language rejects what it cannot place -> warnings
    code = "def f(x):\n    return x + 1\n\n\nclass Point:\n    def __init__(self, a, b):\n        self.a = a\n        self.b = b\n"
    stack_rows = [{"id": f"file-{i}", "text": code.replace("f(", f"f{i}(")} for i in range(9)]
    stack_rows.append({"id": "script", "text": "#!/usr/bin/env python3\n" + code})
    stack = _write_jsonl(tmp_path / "in" / "stack.jsonl", stack_rows)
    cfg = {"decontam": {"eval_paths": [str(tmp_path / "evals")]},
           "sources": {
               "rp_arxiv": {"inputs": [arxiv], "id_field": "id", "filters": [{"min_words": {"min_words": 30}}],
                            "dedupe": {"exact": True}},
               "rp_stackexchange": {"inputs": [se], "id_field": "id", "filters": "none", "dedupe": {"exact": True},
                                    "pii": True, "decontam": False},
               "stack_selected": {"inputs": [stack], "format": "jsonl", "text_field": "text", "id_field": "id",
                                  "dedupe": {"exact": True}, "decontam": False}}}
    rc, out = _build(tmp_path, cfg, tokenizer_path)
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:]

    # decontamination, document mode: exactly the planted five
    st = load_stats(out, "rp_arxiv")
    assert (st["read"], st["decontaminated"], st["kept"], st["rejected"]) == (37, 5, 32, {})
    assert st["read"] == accounted(st)
    assert st["decontam_by_eval"] == {"gsm8k": 2, "mmlu/test": 3}
    assert st["by_stage_reason"]["decontam/eval_overlap"] == 5
    assert st["decontam_index"]["eval_texts"] == 3 and st["decontam_index"]["skipped_short"] == 1
    assert st["decontam_index"]["eval_sources"] == ["gsm8k", "mmlu/test"]
    assert st["decontam"]["mode"] == "document"
    recs = sorted((r for r in _rejects(out, "rp_arxiv")), key=lambda r: r["id"])
    assert [r["id"] for r in recs] == sorted(planted)
    for r in recs:
        src, text = planted[r["id"]]
        first13 = " ".join(words(text)[:13])
        assert (r["stage"], r["reason"], r["eval_source"], r["ngram"]) == ("decontam", "eval_overlap", src, first13)
        assert r["detail"] == f"{src}: {first13}"
    kept = _texts(out, "rp_arxiv", raw_tokenizer)
    assert "near-miss-12-words" in kept and "short-eval-text" in kept and not set(planted) & set(kept)

    # PII: counted per document, e-mail and IP; masked in the shards; private addresses and opted-out
    # decontamination left alone
    st = load_stats(out, "rp_stackexchange")
    assert (st["pii_documents"], st["pii_emails"], st["pii_ips"]) == (3, 3, 3)
    assert (st["read"], st["kept"], st["decontaminated"], st["decontam_index"]) == (5, 5, 0, None)
    kept = _texts(out, "rp_stackexchange", raw_tokenizer)
    assert "email@example.com or firstname.lastname@example.org today" in kept["mail"]
    assert "John.Doe" not in kept["mail"] and "ops@" not in kept["mail"]
    assert "8.8.4.4" not in kept["ip"] and "22.214.171.124 answers" in kept["ip"] and "192.168.1.10" in kept["ip"]
    assert "Mail email@example.com from 22.214.171.124 and 126.96.36.199" in kept["both"]
    assert kept["plain"] == se_rows[3]["text"] and kept["eval-but-opted-out"] == se_rows[4]["text"]
    assert load_stats(out, "rp_arxiv")["pii_documents"] == 0  # pii is off by default

    # sanity: stack_selected read without lang/path
    st = load_stats(out, "stack_selected")
    assert st["meta_missing"] == {"lang|path|max_stars_repo_path": 10}
    assert st["rejected"] == {"code_language": 9} and st["kept"] == 1
    assert "olmo_top_words" in st["filters"] and st["filters"][-1] == "olmo_repeated_ngrams"
    assert len(st["warnings"]) == 2
    assert "code_language rejected 9 of 10" in st["warnings"][0]
    assert "'lang' / 'path' / 'max_stars_repo_path' (any one) absent from 10 of 10" in st["warnings"][1]
    table, _, after = printed.out.partition("warnings:")
    head = next(line for line in table.splitlines() if line.startswith("source "))
    arxiv_row = next(line for line in table.splitlines() if line.startswith("rp_arxiv "))
    assert head.split()[3] == "decontam" and arxiv_row.split()[3] == "5"
    assert all(w in after for w in st["warnings"])
    assert load_stats(out, "rp_arxiv")["warnings"] == []
    from pipelines.report.text import (  # python -m pipelines.inspect OUT shows the same
        render_summary,
        summarize,
    )

    summary = summarize(str(out))
    assert summary["sources"]["rp_arxiv"]["decontaminated"] == 5
    assert summary["sources"]["stack_selected"]["warnings"] == st["warnings"]
    assert "decontam" in render_summary(summary)


@needs_shared("tokenizers")
def test_spans_mode_cuts_overlaps_and_drops_what_is_left_too_short(tmp_path, tokenizer_path, raw_tokenizer):
    rng = random.Random(7)
    ev = _evals(tmp_path, rng)
    head, tail = _prose(rng, 150), _prose(rng, 150)
    rows = [{"id": f"clean-{i}", "text": _prose(rng, 60)} for i in range(6)]
    rows.append({"id": "cut-once", "text": f"{head}\n{ev['mmlu/test'][0]}\n{tail}"})
    rows.append({"id": "cut-twice", "text": f"{head}\n{ev['gsm8k'][0]}\n{tail}\n{_shout(ev['mmlu/test'][1])}\n{head}"})
    rows.append({"id": "nothing-left", "text": f"Short intro. {ev['mmlu/test'][1]} Short outro."})
    arxiv = _write_jsonl(tmp_path / "in" / "arxiv.jsonl", rows)
    cfg = {"decontam": {"eval_paths": str(tmp_path / "evals"), "mode": "spans"},  # one path: a string is fine
           "sources": {"rp_arxiv": {"inputs": [arxiv], "id_field": "id", "filters": "none",
                                    "dedupe": {"exact": True}}}}
    rc, out = _build(tmp_path, cfg, tokenizer_path)
    assert rc == 0
    st = load_stats(out, "rp_arxiv")
    assert (st["read"], st["decontaminated"], st["kept"]) == (9, 1, 8) and st["read"] == accounted(st)
    assert (st["decontam_documents_cut"], st["decontam_spans_removed"]) == (2, 3)
    assert st["decontam_by_eval"] == {"gsm8k": 1, "mmlu/test": 2}
    [rec] = _rejects(out, "rp_arxiv")
    assert (rec["id"], rec["stage"], rec["eval_source"]) == ("nothing-left", "decontam", "mmlu/test")
    kept = _texts(out, "rp_arxiv", raw_tokenizer)
    for doc_id in ("cut-once", "cut-twice"):
        text = kept[doc_id]
        assert text.startswith(head[:150]) and len(text) >= 400
        for e in (*ev["mmlu/test"], *ev["gsm8k"]):
            assert " ".join(words(e)[:13]) not in " ".join(words(text))
    assert kept["clean-0"] == rows[0]["text"]


def test_bad_decontam_config_fails_before_reading_input(tmp_path, tokenizer_path, capsys):
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "e.jsonl").write_text(json.dumps({"question": "a b c d e f g h i j k l m n"}) + "\n")
    src = {"rp_arxiv": {"inputs": [str(tmp_path / "no-input-*.jsonl")]}}  # nothing there: listing would fail
    cases = [
        ({"eval_paths": [str(tmp_path / "evals")], "windw_chars": 50}, "decontam.windw_chars: unknown key"),
        ({"eval_paths": [str(tmp_path / "evals")], "mode": "paragraph"}, "decontam.mode"),
        ({"mode": "spans"}, "decontam.eval_paths: missing"),
        ({"eval_paths": [str(tmp_path / "nowhere")]}, "nowhere"),
        ({"eval_paths": [str(tmp_path / "evals")]}, "text_field"),  # no 'text' in the eval lines
    ]
    for i, (block, expected) in enumerate(cases):
        rc, _ = _build(tmp_path, {"decontam": block, "sources": src}, tokenizer_path, f"s{i}.yaml")
        err = capsys.readouterr().err
        assert rc == 2 and expected in err and f"s{i}.yaml" in err and "matched no files" not in err, (block, err)
    bad_source = {"rp_arxiv": {**src["rp_arxiv"], "decontam": True}}
    rc, _ = _build(tmp_path, {"sources": bad_source}, tokenizer_path, "t.yaml")
    err = capsys.readouterr().err
    assert rc == 2 and "sources.rp_arxiv.decontam: true needs a top-level 'decontam:' block" in err
    rc, _ = _build(tmp_path, {"sources": {"rp_arxiv": {**src["rp_arxiv"], "pii": "yes"}}}, tokenizer_path, "u.yaml")
    err = capsys.readouterr().err
    assert rc == 2 and "rp_arxiv.pii: expected true or false" in err


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_eval_file_fails_before_reading_input(tmp_path, tokenizer_path, capsys, damage):
    """A 20,000-line eval .jsonl.zst cut in half (or with flipped bytes) fails the build naming the file and the
    line, before any input is listed or read; zstandard's stream_reader used to stop silently at ~6,009 lines."""
    import zstandard

    rng = random.Random(3)
    body = "".join(json.dumps({"text": f"{i} " + _prose(rng, 14)}) + "\n" for i in range(20_000)).encode()
    blob = zstandard.ZstdCompressor(level=3).compress(body)
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    else:
        mid = len(blob) // 2
        blob = blob[:mid] + bytes(b ^ 0xFF for b in blob[mid:mid + 64]) + blob[mid + 64:]
    bad = tmp_path / "evals" / "mmlu.jsonl.zst"
    bad.parent.mkdir()
    bad.write_bytes(blob)
    src = {"rp_arxiv": {"inputs": [str(tmp_path / "no-input-*.jsonl")]}}  # nothing there: listing would fail
    rc, out = _build(tmp_path, {"decontam": {"eval_paths": [str(tmp_path / "evals")]}, "sources": src}, tokenizer_path)
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "zstd stream at line" in err, err
    assert "matched no files" not in err and not (out / "sources").exists()
    line = int(err.split("zstd stream at line ", 1)[1].split(" ", 1)[0])
    assert (1 < line < 20_000) if damage == "truncated" else (1 <= line < 20_000)  # corrupt: the 1st MB fails whole


def test_config_hash_sees_pii_decontam_and_eval_data(tmp_path):
    from pipelines.engine.plan import config_hash
    from pipelines.sources.config import parse_decontam, source_config

    raw = {"inputs": ["x.jsonl"]}
    dc = parse_decontam({"eval_paths": ["e"]}, "f: ")
    base = config_hash(source_config("rp_arxiv", raw, "f"), [], "tok", False)
    with_pii = config_hash(source_config("rp_arxiv", {**raw, "pii": True}, "f"), [], "tok", False)
    with_dc = config_hash(source_config("rp_arxiv", raw, "f", dc), [], "tok", False, [("e/a.jsonl", 10)])
    other_eval = config_hash(source_config("rp_arxiv", raw, "f", dc), [], "tok", False, [("e/a.jsonl", 11)])
    spans = config_hash(source_config("rp_arxiv", raw, "f", parse_decontam({"eval_paths": ["e"], "mode": "spans"}, "f: ")),
                        [], "tok", False, [("e/a.jsonl", 10)])
    opted_out = config_hash(source_config("rp_arxiv", {**raw, "decontam": False}, "f", dc), [], "tok", False)
    assert len({base, with_pii, with_dc, other_eval, spans}) == 5
    assert opted_out == base


def test_stats_reconcile_with_decontaminated_and_table_shows_it():
    part = {"part": 0, "kept": 5, "tokens": 50, "bytes": 100, "token_hist": [5] + [0] * 12, "docs_ge_4096_tokens": 0,
            "pii": {"documents": 2, "emails": 3, "ips": 1},
            "decontam": {"by_eval": {"mmlu": 2}, "documents_cut": 1, "spans_removed": 2},
            "meta_missing": {"lang|path": 4}}
    counts = [("read", "bad_json", "f", 1), ("decontam", "eval_overlap", "", 2), ("filter", "min_words", "", 2)]
    s = make_stats("rp_arxiv", 10, counts, [part, {**part, "part": 1, "kept": 0, "tokens": 0, "bytes": 0}])
    assert (s["decontaminated"], s["malformed"], s["rejected"], s["kept"]) == (2, 1, {"min_words": 2}, 5)
    assert (s["pii_documents"], s["pii_emails"], s["pii_ips"]) == (4, 6, 2)
    assert s["decontam_by_eval"] == {"mmlu": 4} and s["meta_missing"] == {"lang|path": 8}
    assert (s["decontam_documents_cut"], s["decontam_spans_removed"]) == (2, 4)
    with pytest.raises(ReconciliationError, match="decontaminated"):
        make_stats("rp_arxiv", 10, counts[:1] + counts[2:], [part])
    head, _, row, total = summary_table([s]).splitlines()
    assert head.split()[3] == "decontam" and row.split()[3] == "2" and total.split()[3] == "2"
