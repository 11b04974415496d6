"""Issue 23: the build's HTML report (``pipelines.report.html``) and its example reservoirs (``pipelines.engine.examples``).

- the reservoir is a pure bottom-k sample by a hash of the uid: the same documents whatever the order and
  however the documents are split over parts/workers, at most k per key;
- a real build with decontamination, PII masking, exact and near dedupe and a sanity warning writes
  ``OUT/report.html`` that holds every source, every rule that fired and the planted examples (PII shown
  masked), and ``python -m pipelines.inspect OUT --html FILE`` writes the same bytes;
- headless Chromium (Debian's ``chromium``; installed by ``tests/headless.py`` where missing and possible,
  else the test skips) renders the page: no console error, no blocked request, non-empty charts, a
  screenshot that is not blank;
- the demo build's report (slow): all ten sources, the demo's planted malformed lines, low-quality pages and
  duplicates, the mixture with its sample openings.
"""
from __future__ import annotations

import html as htmllib
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from pipelines.engine.examples import K, PartSampler, Reservoir, merge_picks, priority
from pipelines.records import Document, EvalOverlap, Reject
from tests.conftest import load_stats, needs_shared, run_build

VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "pu", "ro", "si", "ta", "vu", "ze")
         for b in ("bar", "cen", "dol", "fim", "gup", "hes", "jor", "lin", "mot", "nax", "pel", "quo")]

CHARTS_JS = """JSON.stringify({
  charts: document.querySelectorAll('svg.chart').length,
  bars: [...document.querySelectorAll('svg.chart rect.bar')].filter(r => r.getBBox().width > 0 && r.getBBox().height > 0).length,
  empty_charts: [...document.querySelectorAll('svg.chart')].filter(s => s.getBBox().width === 0).length,
  sources: [...document.querySelectorAll('section.source')].map(s => s.dataset.source),
  drawn: [...document.querySelectorAll('section')].map(s => [...s.querySelectorAll('svg.chart')].filter(
    c => [...c.querySelectorAll('rect.bar')].some(r => r.getBBox().width > 0)).length),
  mixtures: [...document.querySelectorAll('section.mixture')].map(s => s.dataset.mixture),
  height: document.documentElement.scrollHeight, images: document.images.length,
  links: [...document.querySelectorAll('link, script, iframe')].length})"""


# ---------------------------------------------------------------------------------------------
# the reservoir (pure)
# ---------------------------------------------------------------------------------------------


def _offer_all(res: Reservoir, keys_uids):
    for key, uid in keys_uids:
        res.offer(key, uid, lambda uid=uid: {"uid": uid})


def test_reservoir_is_bottom_k_by_uid_hash_whatever_the_order_or_split():
    rng = random.Random(3)
    items = [("filter/min_words" if i % 3 else "read/bad_json", rng.randrange(1 << 40)) for i in range(3000)]
    one = Reservoir()
    _offer_all(one, items)
    shuffled = items[:]
    rng.shuffle(shuffled)
    again = Reservoir()
    _offer_all(again, shuffled)
    assert one.picks() == again.picks() and one.records() == again.records()
    # split over 7 "parts" (any order), merged by priority: the same picks as one pass
    parts = [Reservoir() for _ in range(7)]
    for i, kv in enumerate(shuffled):
        _offer_all(parts[i % 7], [kv])
    for key, picks in one.picks().items():
        assert len(picks) == K
        assert merge_picks([p.picks().get(key, []) for p in parts]) == picks
        expect = sorted((priority(key, u), u) for k, u in items if k == key)[:K]
        assert [tuple(p) for p in picks] == expect


def test_record_is_made_only_for_documents_that_enter():
    res = Reservoir(k=2)
    made = []
    for uid in range(1000):
        res.offer("k", uid, lambda uid=uid: made.append(uid) or {"uid": uid})
    assert len(res.records()["k"]) == 2 and len(made) < 40  # ~k * ln(n / k) entries, not n


def test_part_sampler_masks_pii_and_counts_bytes():
    class Cfg:
        pii = True

    s = PartSampler(Cfg())
    doc = Document(5, "doc-5", "rp_stackexchange", "Mail jane.roe@corp.example.com or ping 8.8.8.8 now", "f:5", {})
    s.read(doc)
    s.reject(Reject(5, "doc-5", "rp_stackexchange", "filter", "min_words", "f:5", 7.0, "", "7 < 10 words"), doc)
    bad = Reject(9, "f:9", "rp_stackexchange", "read", "bad_json", "f:9", float("nan"), "", "line 9: bad")
    s.reject(bad, bad)
    rec = s.res.records()
    [mw] = rec["filter/min_words"].values()
    assert "jane.roe" not in mw["text"] and "8.8.8.8" not in mw["text"] and "email@example.com" in mw["text"]
    assert (mw["value"], mw["detail"], mw["id"]) == (7.0, "7 < 10 words", "doc-5")
    assert rec["read/bad_json"]["9"] == {"id": "f:9", "loc": "f:9", "detail": "line 9: bad"}
    assert s.read_bytes == len(doc.text) and s.bytes == {"filter/min_words": len(doc.text)}


def test_decontaminated_example_is_the_window_around_the_ngram():
    class Cfg:
        pii = False

    s = PartSampler(Cfg())
    ngram = "the quick brown fox jumps over the lazy dog and runs far away"
    text = "intro " * 200 + "THE Quick, brown-fox jumps over the lazy DOG and runs far away!" + " outro" * 200
    doc = Document(1, "d", "rp_arxiv", text, "f:1", {})
    s.reject(Reject(1, "d", "rp_arxiv", "decontam", "eval_overlap", "f:1", float("nan"), "",
                    EvalOverlap("mmlu/test", ngram)), doc)
    [rec] = s.res.records()["decontam/eval_overlap"].values()
    assert (rec["eval_source"], rec["ngram"]) == ("mmlu/test", ngram) and len(rec["text"]) == 300
    assert rec["detail"] == f"mmlu/test: {ngram}"   # the audit record's text form of the structured detail
    lo, hi = rec["match"]
    assert rec["text"][lo:hi] == "THE Quick, brown-fox jumps over the lazy DOG and runs far away"
    assert text[rec["text_offset"]:rec["text_offset"] + 300] == rec["text"]


# ---------------------------------------------------------------------------------------------
# a real build with decontamination, PII, exact + near dedupe and a sanity warning
# ---------------------------------------------------------------------------------------------


def _prose(rng: random.Random, n_words: int) -> str:
    out = []
    for i in range(0, n_words, 12):
        out.append(" ".join(rng.choice(VOCAB) for _ in range(min(12, n_words - i))).capitalize() + ".")
    return " ".join(out)


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory, tokenizer_path):
    """rp_arxiv: decontam (5 planted overlaps), min_words (3 short pages), an exact copy and a near copy;
    rp_stackexchange: PII masking, one short page with an e-mail address; stack_selected without lang/path
    metadata: code_language rejects nearly all -> sanity warnings."""
    tmp = tmp_path_factory.mktemp("report")
    rng = random.Random(23)
    ev = {"mmlu/test": [_prose(rng, 30), _prose(rng, 25)], "gsm8k": [_prose(rng, 20)]}
    _jsonl(tmp / "evals" / "mmlu" / "test.jsonl", [{"text": t} for t in ev["mmlu/test"]])
    _jsonl(tmp / "evals" / "gsm8k.jsonl", [{"text": t} for t in ev["gsm8k"]])
    rows = [{"id": f"clean-{i}", "text": _prose(rng, 80)} for i in range(20)]
    long_text = _prose(rng, 400)
    rows.append({"id": "long-original", "text": long_text})
    words = long_text.split()
    words[200] = "zzchanged"
    rows += [{"id": "near-copy", "text": " ".join(words)},
             {"id": "exact-copy", "text": rows[3]["text"]}]
    for i, (src, text) in enumerate([("mmlu/test", ev["mmlu/test"][0]), ("mmlu/test", ev["mmlu/test"][1]),
                                     ("gsm8k", ev["gsm8k"][0]), ("mmlu/test", ev["mmlu/test"][0]),
                                     ("gsm8k", ev["gsm8k"][0])]):
        rows.append({"id": f"dirty-{i}", "text": f"{_prose(rng, 40)} {text} {_prose(rng, 40)}"})
    rows += [{"id": f"short-{i}", "text": f"Too short page number {i} here."} for i in range(3)]
    arxiv = _jsonl(tmp / "in" / "arxiv.jsonl", rows)
    se = _jsonl(tmp / "in" / "se.jsonl", [
        {"id": "mail", "text": f"{_prose(rng, 30)} Write to John.Doe@Example.COM today."},
        {"id": "ip", "text": f"{_prose(rng, 30)} The server at 8.8.4.4 answers."},
        {"id": "short-mail", "text": "Ask jane.roe@corp.example.com now"},
        {"id": "plain", "text": _prose(rng, 30)}])
    code = "def f(x):\n    return x + 1\n\n\nclass Point:\n    def __init__(self, a, b):\n        self.a = a\n        self.b = b\n"
    stack = _jsonl(tmp / "in" / "stack.jsonl", [{"id": f"file-{i}", "text": code.replace("f(", f"f{i}(")}
                                                 for i in range(6)])
    cfg = {"decontam": {"eval_paths": [str(tmp / "evals")]},
           "sources": {
               "rp_arxiv": {"inputs": [arxiv], "id_field": "id", "filters": [{"min_words": {"min_words": 30}}],
                            "dedupe": {"exact": True, "minhash": True}},
               "rp_stackexchange": {"inputs": [se], "id_field": "id", "filters": [{"min_words": {"min_words": 10}}],
                                    "dedupe": {"exact": True}, "pii": True, "decontam": False},
               "stack_selected": {"inputs": [stack], "format": "jsonl", "text_field": "text", "id_field": "id",
                                  "dedupe": {"exact": True}, "decontam": False}}}
    (tmp / "sources.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp / "out"
    rc = run_build(["--mixture", "mpt30b_8k", "--sources", str(tmp / "sources.yaml"), "--out", str(out),
                    "--tokenizer", tokenizer_path, "--skip-mixture", "--workers", "1"])
    assert rc == 0
    return out


def _section(page: str, source: str) -> str:
    start = page.index(f'data-source="{source}"')
    end = page.find('<section class="source"', start)
    return page[start:end if end > 0 else len(page)]


def _block(section: str, key: str) -> str:
    start = section.index(f'data-key="{key}"')
    end = section.find('data-key="', start + 10)
    return section[start:end if end > 0 else len(section)]


@needs_shared("tokenizers")
def test_build_report_holds_sources_rules_and_planted_examples(small_build, tmp_path, capsys):
    out = small_build
    page = (out / "report.html").read_text(encoding="utf-8")
    assert len(page.encode()) < 5 << 20
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    for source in ("rp_arxiv", "rp_stackexchange", "stack_selected"):
        assert f'data-source="{source}"' in page
        st = load_stats(out, source)
        for rule in st["rejected"]:  # every rule that fired has a funnel row and an examples block
            assert f"rule {rule}</text>" in page and f'data-key="filter/{rule}"' in _section(page, source)
    arxiv = _section(page, "rp_arxiv")
    # min_words: the three short pages, with the measured value and the threshold
    mw = _block(arxiv, "filter/min_words")
    assert all(f"short-{i}" in mw for i in range(3)) and "min_words=30" in mw and "measured <b>6</b>" in mw
    # decontamination: all five planted documents, with eval source and n-gram
    dc = _block(arxiv, "decontam/eval_overlap")
    assert all(f"dirty-{i}" in dc for i in range(5))
    assert "eval source <b>gsm8k</b>" in dc and "eval source <b>mmlu/test</b>" in dc
    assert dc.count("<mark>") == 5  # the window around the n-gram, the n-gram marked
    st = load_stats(out, "rp_arxiv")
    assert st["decontaminated"] == 5 and st["exact_duplicates"] == 1 and st["near_duplicates"] == 1
    # duplicates side by side: the removed copy and its keeper, with the estimated Jaccard
    ex = _block(arxiv, "exact_dedupe/exact_duplicate")
    assert "removed: <b>exact-copy</b>" in ex and "kept: <b>clean-3</b>" in ex
    near = _block(arxiv, "near_dedupe/near_duplicate")
    assert "removed: <b>near-copy</b>" in near and "kept: <b>long-original</b>" in near
    jac = float(re.search(r"estimated Jaccard \(MinHash\) with its keeper: <b>([0-9.]+)</b>", near).group(1))
    assert 0.85 <= jac < 1.0
    examples = json.loads((out / "examples" / "rp_arxiv.json").read_text())
    assert examples["examples"]["near_dedupe/near_duplicate"][0]["keeper_text"].startswith(
        htmllib.unescape(near.split('<pre class="snip">')[2][:40]))
    # PII: counts, and the rejected page's address shown masked
    se = _section(page, "rp_stackexchange")
    st = load_stats(out, "rp_stackexchange")
    assert (st["pii_documents"], st["pii_emails"], st["pii_ips"]) == (3, 2, 1)  # masked before the filters
    assert "PII masked: <b>3</b> documents, <b>2</b> e-mail addresses, <b>1</b> IP" in se
    assert "short-mail" in _block(se, "filter/min_words") and "email@example.com" in se
    assert "jane.roe" not in page and "John.Doe" not in page and "8.8.4.4" not in page
    # sanity warnings at the top, before any source section
    top = page[:page.index('<section class="source"')]
    for w in load_stats(out, "stack_selected")["warnings"]:
        assert htmllib.escape(w, quote=True) in top
    # the CLI writes the same page
    from pipelines.inspect import main

    assert main([str(out), "--html", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_bytes() == (out / "report.html").read_bytes()
    assert "wrote" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# headless Chromium
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium():
    from tests.headless import ensure_chromium

    path, why = ensure_chromium()
    if path is None:
        pytest.skip(f"headless Chromium unavailable: {why}")
    return path


def _check_rendered(chromium: str, page: Path, sources: list[str], mixtures: list[str] = ()) -> dict:
    from tests.headless import render

    res = render(chromium, str(page), CHARTS_JS)
    assert res["console"] == [] and res["exceptions"] == [], (res["console"], res["exceptions"])
    assert [e for e in res["log"] if e[0] in ("error", "warning")] == [], res["log"]  # no blocked fetch, no CSP hit
    v = json.loads(res["value"])
    assert v["sources"] == sources and v["mixtures"] == list(mixtures)
    assert v["links"] == 0 and v["images"] == 0                    # self-contained: nothing to fetch
    # every source has two funnels (documents, bytes), a histogram when it kept something, every mixture
    # its part charts; every chart draws something
    assert v["empty_charts"] == 0 and v["bars"] > 10 * len(sources)
    assert len(v["drawn"]) == 1 + len(sources) + len(mixtures) and min(v["drawn"][1:]) >= 2, v["drawn"]
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(res["png"])).convert("RGB")
    assert img.size == (1280, 900)
    colors = img.getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 50                      # text and charts, not a blank page
    return res


@needs_shared("tokenizers")
def test_report_renders_in_headless_chromium(small_build, chromium, tmp_path):
    res = _check_rendered(chromium, small_build / "report.html", ["stack_selected", "rp_arxiv", "rp_stackexchange"])
    (tmp_path / "report.png").write_bytes(res["png"])


# ---------------------------------------------------------------------------------------------
# the demo build (slow: about 90 s on 2 cores)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_shared("tokenizers")
def test_demo_build_report(tmp_path, tokenizer_path, chromium):
    from contract.registry import SOURCE_NAMES
    from pipelines.report.html import TOP_RULES

    out = tmp_path / "out"
    assert run_build(["--mixture", "mpt30b_8k", "--out", str(out), "--tokenizer", tokenizer_path]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert len(page.encode()) < 5 << 20
    for source in SOURCE_NAMES:
        sec = _section(page, source)
        st = load_stats(out, source)
        top = sorted(st["rejected"].items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_RULES]
        for key, n in st["by_stage_reason"].items():   # every rule / stage that removed something
            stage, reason = key.split("/", 1)
            if stage == "filter":
                assert f"rule {reason}</text>" in sec
            if stage == "read" or (stage == "filter" and (reason, n) in top):
                assert n and f'data-key="{key}"' in sec, (source, key)
            if stage.endswith("dedupe"):
                assert f'data-key="{key}"' in sec and 'class="pair"' in _block(sec, key), (source, key)
    c4 = _section(page, "c4_en")
    # planted: the two malformed lines, lorem ipsum and boilerplate pages, exact / near / semantic duplicates
    assert "c4_en.jsonl.gz:351" in _block(c4, "read/bad_json") and "c4_en.jsonl.gz:352" in _block(c4, "read/not_an_object")
    assert "Lorem ipsum dolor sit amet" in _block(c4, "filter/c4_lorem_ipsum")
    assert "enable JavaScript" in page or "cookies" in page.lower()
    assert "cosine with its keeper" in _block(c4, "semantic_dedupe/semantic_duplicate")
    # the mixture: planned vs realized, the long part, 3 openings per stream (fewer where it packs fewer samples)
    manifest = json.loads((out / "mixtures" / "mpt30b_8k" / "manifest.json").read_text())
    mix = page[page.index('data-mixture="mpt30b_8k"'):]
    assert "planned vs realized share" in mix and "(long-sequence subset)" in mix
    for stream in manifest["streams"]:
        block = mix[mix.index(f'data-stream="{stream}"') + 10:]
        block = block[:min(i for i in (block.find('data-stream="'), block.find("</section>"), len(block)) if i >= 0)]
        assert block.count('class="ex"') == min(3, manifest["streams"][stream]["packed_samples"]) > 0, stream
    _check_rendered(chromium, out / "report.html", list(SOURCE_NAMES), ["mpt30b_8k"])
