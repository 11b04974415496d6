"""Planner math on plain arrays: shares, choose rounding, epochs, long selection, up/downsampling, drops."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixtures.planner import (DEMO_MIN_SAMPLES_PER_PART, boosted_shares, largest_remainder, long_mask,
                              plan_mixture, select_documents, stream_rng)
from mixtures.spec import load_spec
from contract.registry import SOURCE_NAMES


def _doc_tokens(seed=0, n=400, long_per_source=None):
    rng = np.random.default_rng(seed)
    out = {}
    for i, s in enumerate(SOURCE_NAMES):
        d = rng.integers(20, 3000, size=n).astype(np.uint32)
        k = (i + 2) if long_per_source is None else long_per_source.get(s, 0)
        d[:k] = rng.integers(4097, 30000, size=k)
        out[s] = rng.permutation(d)
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=30))
def test_largest_remainder(total, weights):
    got = largest_remainder(total, weights)
    assert sum(got) == total
    w = np.array(weights) / sum(weights)
    assert all(abs(g - total * x) < 1 for g, x in zip(got, w))


def test_long_mask_boundaries():
    d = np.array([4096, 4097, 4098, 1, 10_000], dtype=np.uint32)   # EOS included
    assert long_mask(d, 4096).tolist() == [False, True, True, False, True]
    assert long_mask(d, 4096, count_eos=True).tolist() == [True, True, True, False, True]


@pytest.mark.parametrize("name", ["mpt30b_8k", "mpt30b_2k", "mpt7b_2k"])
@pytest.mark.parametrize("tokens", [None, 3_000_000, 50_000_000])
def test_plan_invariants(name, tokens):
    spec = load_spec(name)
    dt = _doc_tokens()
    plan = plan_mixture(spec, dt, tokens=tokens, demo=tokens is None, seed=3)
    assert sum(p.weight for p in plan.parts) == pytest.approx(1.0)
    total = sum(s.choose for s in plan.streams)
    assert total == plan.total_samples == max(1, round(plan.budget_tokens / spec.seq_len))
    for p in plan.parts:
        assert sum(s.share for s in p.streams) == pytest.approx(1.0)
        part_samples = sum(s.choose for s in p.streams)
        assert abs(part_samples / total - p.weight) < len(p.streams) / total + 1e-12
    for s in plan.streams:
        assert abs(s.choose / total - s.weight) < 1 / total       # largest remainder: within one sample
        assert s.choose >= 1
        assert s.epochs == pytest.approx(s.choose * spec.seq_len / s.eligible_tokens)
        assert s.target_tokens == pytest.approx(s.weight * plan.budget_tokens)
        tok = dt[s.source][s.selected].astype(np.int64).sum()
        assert tok == s.selected_tokens
        if s.selected_tokens < s.choose * spec.seq_len:           # upsampled: everything eligible is packed
            assert len(s.selected) == s.eligible_docs
            assert any("upsampled" in n for n in s.notes)
        else:                                                      # enough packed for choose full samples
            assert s.selected_tokens // spec.seq_len >= s.choose


def test_2k_proportions_become_weights():
    spec = load_spec("mpt30b_2k")
    plan = plan_mixture(spec, _doc_tokens(), tokens=10**9)
    (part,) = plan.parts
    assert {s.source: s.weight for s in part.streams} == pytest.approx(dict(spec.parts[0].proportions))


def test_8k_weights_and_code_share():
    spec = load_spec("mpt30b_8k")
    plan = plan_mixture(spec, _doc_tokens(), tokens=10**9)
    code = next(p for p in plan.parts if p.name == "code2p5x")
    shares = {s.source: s.share for s in code.streams}
    assert shares == pytest.approx(boosted_shares(spec.parts[0], spec.code_sources))
    assert shares["stack_selected"] + shares["stack_markdown"] == pytest.approx(2.5 * 0.145)
    for p in plan.parts:
        assert p.weight == pytest.approx(0.5)


def test_long_part_selects_exactly_long_documents():
    spec = load_spec("mpt30b_8k")
    dt = _doc_tokens()
    # boundary documents: 4096 tokens including EOS (4095 of its own) is NOT long; 4097 is
    dt["rp_books"][:2] = [4096, 4097]
    plan = plan_mixture(spec, dt, tokens=10**10)   # a big budget: the long part is upsampled, takes all
    long = next(p for p in plan.parts if p.name == "long")
    total_long = sum(int(long_mask(d, 4096).astype(np.int64) @ d.astype(np.int64)) for d in dt.values())
    for s in long.streams:
        want = np.flatnonzero(dt[s.source].astype(np.int64) - 1 >= 4096)
        assert np.array_equal(np.sort(s.selected), want)
        assert s.share == pytest.approx(s.eligible_tokens / total_long)   # natural weighting
    books = next(s for s in long.streams if s.source == "rp_books")
    assert 1 in books.selected and 0 not in books.selected


def test_long_part_downsampled_keeps_only_long_documents():
    spec = load_spec("mpt30b_8k")
    dt = _doc_tokens(long_per_source={s: 40 for s in SOURCE_NAMES})
    plan = plan_mixture(spec, dt, tokens=400_000)
    long = next(p for p in plan.parts if p.name == "long")
    assert any(len(s.selected) < s.eligible_docs for s in long.streams)
    for s in long.streams:
        assert (dt[s.source][s.selected].astype(np.int64) - 1 >= 4096).all()


def test_sources_without_long_documents_are_dropped_with_a_reason():
    spec = load_spec("mpt30b_8k")
    dt = _doc_tokens(long_per_source={"rp_books": 5, "rp_arxiv": 1})
    dt["rp_arxiv"][np.argmax(dt["rp_arxiv"])] = 5000       # one long doc, < one 8192 sample
    plan = plan_mixture(spec, dt, demo=True)
    long = next(p for p in plan.parts if p.name == "long")
    assert [s.source for s in long.streams] == ["rp_books"]
    assert long.streams[0].share == pytest.approx(1.0)
    reasons = {(d["part"], d["source"]): d["reason"] for d in plan.dropped}
    assert "fewer than one 8192-token sample" in reasons[("long", "rp_arxiv")]
    assert "0 documents with >= 4096 tokens" in reasons[("long", "mc4_en")]


def test_part_without_any_long_documents_is_left_out():
    spec = load_spec("mpt30b_8k")
    plan = plan_mixture(spec, _doc_tokens(long_per_source={}), demo=True)
    assert [p.name for p in plan.parts] == ["code2p5x"]
    assert plan.parts[0].weight == pytest.approx(1.0)
    assert any("part 'long'" in n for n in plan.notes)


def test_missing_sources_renormalize():
    spec = load_spec("mpt30b_2k")
    dt = _doc_tokens()
    missing = ["rp_books", "mc4_en"]
    for m in missing:
        dt.pop(m)
    plan = plan_mixture(spec, dt, tokens=10**8, missing=missing)
    base = dict(spec.parts[0].proportions)
    rest = sum(v for k, v in base.items() if k not in missing)
    for s in plan.streams:
        assert s.weight == pytest.approx(base[s.source] / rest)
    assert plan.missing == ["mc4_en", "rp_books"]
    assert {d["source"] for d in plan.dropped} == set(missing)
    with pytest.raises(ValueError, match="rp_books"):
        plan_mixture(spec, dt, tokens=10**8)


def test_demo_budget():
    spec = load_spec("mpt30b_8k")
    plan = plan_mixture(spec, _doc_tokens(), demo=True)
    assert plan.budget_origin == "demo"
    assert plan.budget_tokens < spec.tokens
    for p in plan.parts:
        assert sum(s.choose for s in p.streams) >= DEMO_MIN_SAMPLES_PER_PART - len(p.streams)
    assert any("demo scale" in n for n in plan.notes)
    # with plenty of long data the floor does not bind and no 2k-part source is repeated beyond full scale
    spec2 = load_spec("mpt30b_2k")
    dt = _doc_tokens(n=3000)
    plan2 = plan_mixture(spec2, dt, demo=True)
    assert plan2.total_samples > DEMO_MIN_SAMPLES_PER_PART
    mc4 = next(s for s in plan2.streams if s.source == "mc4_en")   # 0.14 epochs at full scale: cap 1
    assert mc4.epochs <= 1.0 + 1.0 / mc4.choose
    assert "raised" not in plan2.notes[0]


def test_explicit_tokens_override_demo():
    spec = load_spec("mpt30b_2k")
    plan = plan_mixture(spec, _doc_tokens(), tokens=2048 * 1000, demo=True)
    assert plan.budget_origin == "explicit" and plan.total_samples == 1000


def test_selection_is_seeded():
    spec = load_spec("mpt30b_2k")
    dt = _doc_tokens()
    a = plan_mixture(spec, dt, tokens=300_000, seed=1)
    b = plan_mixture(spec, dt, tokens=300_000, seed=1)
    c = plan_mixture(spec, dt, tokens=300_000, seed=2)
    for x, y in zip(a.streams, b.streams):
        assert np.array_equal(x.selected, y.selected)
    assert any(not np.array_equal(x.selected, z.selected) for x, z in zip(a.streams, c.streams))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=200), st.integers(1, 10**6), st.integers(0, 99))
def test_select_documents(lengths, need, seed):
    d = np.array(lengths, dtype=np.uint32)
    eligible = np.arange(len(d))
    sel = select_documents(eligible, d, need, stream_rng(seed, "p", "s", "select"))
    tok = int(d[sel].sum())
    assert len(np.unique(sel)) == len(sel) and np.all(np.diff(sel) > 0)
    if need >= int(d.sum()):
        assert len(sel) == len(d)
    else:
        assert tok >= need
        # a prefix of the seeded random order, and minimal: without its last document it falls short
        perm = stream_rng(seed, "p", "s", "select").permutation(eligible)
        k = len(sel)
        assert np.array_equal(np.sort(perm[:k]), sel)
        assert int(d[perm[:k - 1]].sum()) < need
