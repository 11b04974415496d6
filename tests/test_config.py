"""The one typed config mechanism (contract/config.py): every key and type is refused before work starts."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from contract.config import ConfigError, build, require
from tests.conftest import REPO


@dataclass(frozen=True)
class _Inner:
    n: int = 1
    frac: float = 0.5
    mode: Literal["a", "b"] = "a"
    names: tuple[str, ...] = ()

    def __post_init__(self):
        require(0 < self.frac < 1, "frac", self.frac, "a number strictly between 0 and 1")


@dataclass(frozen=True)
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    label: Optional[str] = None


def test_build_converts_and_checks():
    cfg = build(_Outer, {"inner": {"n": 3, "frac": 0.25, "names": ["x", "y"]}, "label": "l"}, "f.yaml")
    assert cfg == _Outer(_Inner(3, 0.25, "a", ("x", "y")), "l")
    assert build(_Outer, {"inner": {"frac": "2.5e-1"}}).inner.frac == 0.25  # YAML 1.1 reads 2.5e-1 as text


@pytest.mark.parametrize("data, message", [
    ({"inner": {"n": "many"}}, r"f.yaml: inner.n: expected an integer, got 'many'"),
    ({"inner": {"n": True}}, r"inner.n: expected an integer, got True"),
    ({"inner": {"frac": 2}}, r"f.yaml: inner.frac: expected a number strictly between 0 and 1, got 2.0"),
    ({"inner": {"mode": "c"}}, r"inner.mode: expected one of 'a', 'b', got 'c'"),
    ({"inner": {"nn": 1}}, r"inner.nn: unknown key; allowed here: frac, mode, n, names"),
    ({"inner": {"names": "x"}}, r"inner.names: expected a list"),
    ({"label": 3}, r"label: expected text or null, got 3"),
    ({"inner": 5}, r"inner: expected a mapping"),
])
def test_build_refuses_with_file_key_and_value(data, message):
    with pytest.raises(ConfigError, match=message):
        build(_Outer, data, "f.yaml")


@dataclass(frozen=True)
class _Required:
    size: int
    label: str = ""


def test_build_names_a_missing_required_key():
    with pytest.raises(ConfigError, match=r"^f.yaml: outer.size: missing; this key is required$"):
        build(_Required, {"label": "x"}, "f.yaml", "outer.")
    assert build(_Required, {"size": 2}) == _Required(2)


def test_filter_threshold_type_is_refused_at_load():
    from pipelines.sources.config import source_config

    with pytest.raises(ConfigError, match=r"f.yaml: sources.mc4_en.filters\[0\].min_words.min_words: expected an integer, got 'many'"):
        source_config("mc4_en", {"inputs": ["x"], "filters": [{"min_words": {"min_words": "many"}}]}, "f.yaml: sources")
    with pytest.raises(ConfigError, match=r"gopher_symbol_ratio.max_ratio: expected a number"):
        source_config("c4_en", {"inputs": ["x"], "filters": [{"gopher_symbol_ratio": {"max_ratio": [1]}}]}, "f.yaml: sources")
    with pytest.raises(ConfigError, match=r"sources.rp_arxiv.dedupe.minhash.threshold: expected a number strictly"):
        source_config("rp_arxiv", {"inputs": ["x"], "dedupe": {"minhash": {"threshold": 1.5}}}, "f.yaml: sources")
    with pytest.raises(ConfigError, match=r"sources.rp_arxiv.dedupe.minhash.num_perm: expected an integer, got '128'"):
        source_config("rp_arxiv", {"inputs": ["x"], "dedupe": {"minhash": {"num_perm": "128"}}}, "f.yaml: sources")
    # a correct override still works and keeps its type
    cfg = source_config("mc4_en", {"inputs": ["x"], "filters": [{"min_words": {"min_words": 300}}]}, "f.yaml: sources")
    assert cfg.chain.rules[0].params == {"min_words": 300}


def test_trainer_and_mixture_specs_use_the_same_error():
    from mixtures.spec import parse_spec
    from trainer.config import ConfigError as TrainerConfigError
    from trainer.config import load_config

    assert TrainerConfigError is ConfigError
    with pytest.raises(ConfigError, match="optimizer.lr"):
        load_config(None, ["optimizer.lr=[1]"])
    with pytest.raises(ConfigError):
        parse_spec({"name": "x", "seq_len": "long"}, "spec.yaml")


def test_build_cli_refuses_bad_threshold_before_reading_input(tmp_path):
    """The acceptance case: a wrongly typed threshold exits non-zero naming the key, before any input is read
    (the input glob does not even exist, so reading it would fail with a different message)."""
    sources = {"sources": {"mc4_en": {"inputs": [str(tmp_path / "nothing-here-*.jsonl")],
                                      "filters": [{"min_words": {"min_words": "many"}}]}}}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(sources))
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", "--mixture", "mpt30b_2k", "--sources", str(path),
                           "--out", str(tmp_path / "out"), "--allow-missing-sources", "--skip-mixture"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "min_words.min_words: expected an integer, got 'many'" in proc.stderr
    assert str(path) in proc.stderr
    assert "matched no files" not in proc.stderr and not (tmp_path / "out").exists()
