"""The fast word pieces equal ``tokenizers``' ids for every text: property tests over an alphabet that mixes
characters the fast path handles with ones only the tokenizer can (accents, combining marks, CJK, control and
zero-width characters, characters outside the basic plane), every shared corpus category, and the limits the
embedders use (none; 256 and 128 with [CLS]/[SEP])."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.dedupe import wordpiece
from pipelines.sources.readers import read_texts
from tests.conftest import needs_shared

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
CATEGORIES = sorted(p.name.split(".")[0] for p in CORPORA.glob("*.jsonl.zst"))
LIMITS = [(None, False), (256, True), (128, True), (5, True), (7, False)]
_ALPHABET = ("  \n\t\r.,;'\"!?-_()[]{}#$%&*+/<=>@\\^`|~0123456789 aAbBzZ hello WORLD Running unaffable "
             "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00a0\u2003\u00b7\u00d7\u00e9\u00c9\u00df\u0130\u0131"
             "\u0301\u0300\ufb01\u4e2d\u6587\u200b\u200d\x00\x07\x0b\x0c\x1f\x7f\ufffd\U0001f600\U0001d400")


@pytest.fixture(scope="module")
def path():
    from pipelines.dedupe.embed import _package_dir

    return str(_package_dir() / "tokenizer.json")


def want(path, texts, max_pieces, special):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    if max_pieces:
        tok.enable_truncation(max_pieces)
    else:
        tok.no_truncation()
    tok.no_padding()
    return [e.ids for e in tok.encode_batch_fast(list(texts), add_special_tokens=special)]


def rows(lens, flat):
    return [x.tolist() for x in np.split(flat, np.cumsum(lens)[:-1])] if len(lens) else []


@pytest.mark.parametrize("max_pieces,special", LIMITS)
def test_random_text_gives_the_tokenizers_ids(path, max_pieces, special, monkeypatch):
    monkeypatch.setattr(wordpiece, "_CUT", 9)  # many steps per text: each must end at a pre-token boundary
    wp = wordpiece.WordPieces(path, max_pieces, special)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.text(alphabet=_ALPHABET, max_size=400), min_size=1, max_size=6))
    def prop(texts):
        lens, flat = wp.encode(texts)
        assert flat.dtype == np.int32 and lens.dtype == np.int64
        assert rows(lens, flat) == want(path, texts, max_pieces, special)

    prop()


@needs_shared("corpora")
@pytest.mark.parametrize("max_pieces,special", LIMITS[:3])
def test_every_corpus_gives_the_tokenizers_ids_mostly_on_the_fast_path(path, max_pieces, special):
    wp = wordpiece.WordPieces(path, max_pieces, special)
    for category in CATEGORIES:
        texts = [t[:2000] for t in read_texts(CORPORA / f"{category}.jsonl.zst", limit=300, min_chars=1)]
        texts += ["", " ", "x" * 3000, "word " * 700, "a" * 101 + " b", "\u00e9t\u00e9 " * 400]
        assert rows(*wp.encode(texts)) == want(path, texts, max_pieces, special), category
    c4 = read_texts(CORPORA / "c4_en.jsonl.zst", limit=1000, min_chars=1)
    fast = sum(wp._rules.slow.search(t) is None for t in c4)
    assert fast / len(c4) > 0.8  # the fast path is what runs on web text (99 % of c4_en here)


def test_the_word_cache_starts_over_without_changing_ids(path, monkeypatch):
    monkeypatch.setattr(wordpiece, "_CACHE_WORDS", 3)
    wp = wordpiece.WordPieces(path, None, False)
    texts = ["the quick brown fox jumps over the lazy dog " * 3, "Pack my box with five dozen liquor jugs."]
    assert rows(*wp.encode(texts)) == want(path, texts, None, False)
    assert set(wp._cache) == {"pack", "my", "box", "with", "five", "dozen", "liquor", "jugs", "."}  # started over


@needs_shared("corpora")
def test_the_process_pool_gives_the_same_ids_in_order(path):
    texts = [t[:2000] for t in read_texts(CORPORA / "c4_en.jsonl.zst", limit=1300, min_chars=1)]
    pool = wordpiece.PiecePool(path, 256, True, processes=2)
    try:
        pending = pool.submit(texts)  # 3 tasks of 512, 512, 276 texts
        lens, flat = pending()
        assert pool.encode([]) [0].shape == (0,)
    finally:
        pool.close()
    assert rows(lens, flat) == want(path, texts, 256, True)
