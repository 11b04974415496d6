"""Mixture specs: the shipped YAML files, their agreement with the registry, and validation messages."""
from __future__ import annotations

import math

import pytest
import yaml

from mixtures.planner import boosted_shares
from contract.config import ConfigError
from mixtures.spec import MIXTURE_NAMES, load_spec, parse_spec, parse_tokens
from contract.registry import CODE_SOURCES, SOURCE_NAMES, SOURCES


def test_builtin_names():
    assert set(MIXTURE_NAMES) == {"mpt7b_2k", "mpt30b_2k", "mpt30b_8k"}


@pytest.mark.parametrize("name", MIXTURE_NAMES)
def test_specs_load_and_proportions_sum_to_one(name):
    spec = load_spec(name)
    assert spec.name == name
    assert spec.description and spec.provenance
    assert spec.long_min_tokens == 4096
    assert set(spec.sources) == set(SOURCE_NAMES)
    for part in spec.parts:
        if part.weighting == "proportions":
            assert math.isclose(sum(part.proportions.values()), 1.0, abs_tol=1e-9)
            assert math.isclose(sum(boosted_shares(part, spec.code_sources).values()), 1.0, abs_tol=1e-12)


@pytest.mark.parametrize("name,attr", [("mpt30b_2k", "mpt30b_proportion"), ("mpt7b_2k", "mpt7b_proportion")])
def test_2k_specs_match_registry(name, attr):
    spec = load_spec(name)
    assert spec.seq_len == 2048 and spec.tokens == 10**12
    (part,) = spec.parts
    assert part.select == "all" and part.code_multiplier == 1.0
    assert dict(part.proportions) == pytest.approx({s: getattr(SOURCES[s], attr) for s in SOURCE_NAMES}, abs=1e-12)


def test_8k_spec_structure():
    spec = load_spec("mpt30b_8k")
    assert spec.seq_len == 8192 and spec.tokens == 50 * 10**9
    assert spec.code_sources == tuple(CODE_SOURCES) == ("stack_selected", "stack_markdown")
    parts = {p.name: p for p in spec.parts}
    assert set(parts) == {"code2p5x", "long"}
    assert parts["code2p5x"].weight == parts["long"].weight == 0.5
    assert parts["code2p5x"].code_multiplier == 2.5 and parts["code2p5x"].select == "all"
    assert dict(parts["code2p5x"].proportions) == pytest.approx(
        {s: SOURCES[s].mpt30b_proportion for s in SOURCE_NAMES}, abs=1e-12)
    assert parts["long"].select == "long" and parts["long"].weighting == "natural"
    assert parts["long"].sources == SOURCE_NAMES


def test_code_share_exactly_2p5x_and_others_renormalized():
    spec = load_spec("mpt30b_8k")
    part = next(p for p in spec.parts if p.name == "code2p5x")
    base, boosted = dict(part.proportions), boosted_shares(part, spec.code_sources)
    code_before = sum(base[s] for s in spec.code_sources)
    code_after = sum(boosted[s] for s in spec.code_sources)
    assert code_before == pytest.approx(0.145)
    assert code_after / code_before == pytest.approx(2.5, rel=1e-12)
    assert sum(boosted.values()) == pytest.approx(1.0, abs=1e-12)
    # within code and within non-code, the base ratios are kept
    assert boosted["stack_selected"] / boosted["stack_markdown"] == pytest.approx(0.10 / 0.045)
    others = [s for s in SOURCE_NAMES if s not in spec.code_sources]
    factor = (1 - 2.5 * code_before) / (1 - code_before)
    for s in others:
        assert boosted[s] == pytest.approx(base[s] * factor, rel=1e-12)


def test_code_boost_weight_mode():
    obj = yaml.safe_load(open(load_spec("mpt30b_8k").path))
    obj["parts"]["code2p5x"]["code_boost_mode"] = "weight"
    spec = parse_spec(obj, "x.yaml")
    part = next(p for p in spec.parts if p.name == "code2p5x")
    b = boosted_shares(part, spec.code_sources)
    assert sum(b.values()) == pytest.approx(1.0)
    # odds of code vs non-code are raised exactly 2.5x
    c0 = 0.145
    c1 = b["stack_selected"] + b["stack_markdown"]
    assert (c1 / (1 - c1)) / (c0 / (1 - c0)) == pytest.approx(2.5)


@pytest.mark.parametrize("text,expected", [("50B", 50 * 10**9), ("1T", 10**12), ("2.5M", 2_500_000),
                                           (1000, 1000), ("1_000", 1000), ("7k", 7000)])
def test_parse_tokens(text, expected):
    assert parse_tokens(text, "x") == expected


@pytest.mark.parametrize("bad", ["", "ten", "-5", 0, True, "5X", None])
def test_parse_tokens_rejects(bad):
    with pytest.raises(ConfigError, match="where"):
        parse_tokens(bad, "where")


def _base():
    return yaml.safe_load(open(load_spec("mpt30b_8k").path))


@pytest.mark.parametrize("mutate,key", [
    (lambda o: o["parts"]["code2p5x"]["proportions"].update(mc4_en=0.5), "parts.code2p5x.proportions"),
    (lambda o: o["parts"]["code2p5x"]["proportions"].update(nope=0.0), "parts.code2p5x.proportions"),
    (lambda o: o.update(seq_len="8k"), "seq_len"),
    (lambda o: o.pop("tokens"), "tokens"),
    (lambda o: o.update(colour="red"), "colour"),
    (lambda o: o["parts"]["long"].update(select="longest"), "parts.long.select"),
    (lambda o: o["parts"]["long"].update(weight=-1), "parts.long.weight"),
    (lambda o: o["parts"]["long"].update(sources=["rp_books", "books3"]), "parts.long.sources"),
    (lambda o: o["parts"]["code2p5x"].update(code_multiplier=10), "parts.code2p5x.code_multiplier"),
    (lambda o: o["parts"]["code2p5x"].update(proportions={"mc4_en": 0.5, "rp_books": 0.5}),
     "parts.code2p5x.code_multiplier"),
    (lambda o: o.update(long_min_tokens=0), "long_min_tokens"),
    (lambda o: o["parts"].update(long=None), "parts.long"),
    (lambda o: o["parts"]["long"].update(wieght=1), "parts.long.wieght"),
    (lambda o: o["parts"]["long"].update(sources=None), "parts.long.sources"),
])
def test_validation_names_file_and_key(mutate, key):
    obj = _base()
    mutate(obj)
    with pytest.raises(ConfigError) as e:
        parse_spec(obj, "/some/where/my_mix.yaml")
    assert "/some/where/my_mix.yaml" in str(e.value)
    assert key in str(e.value)


def test_load_spec_from_path_and_unknown_name(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text("seq_len: 128\ntokens: 1M\nparts:\n  main:\n    proportions: {rp_books: 0.25, rp_arxiv: 0.75}\n")
    spec = load_spec(str(p))
    assert spec.name == "tiny" and spec.sources == ("rp_books", "rp_arxiv")
    with pytest.raises(ConfigError, match="mpt30b_8k"):
        load_spec("mpt99b")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seq_len: [\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_spec(str(bad))
