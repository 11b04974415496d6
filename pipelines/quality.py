"""python -m pipelines.quality train --positive P... --negative N... --out MODEL

Trains the fastText quality classifier that the ``fasttext_quality`` filter rule applies (the DCLM / OLMoE
recipe: DCLM-Baseline keeps the web pages a fastText bigram classifier, trained on curated "high quality"
text against random web text, scores highest).

Why a command of our own: no pretrained classifier can be downloaded here, and the rule must see its
input exactly as the classifier saw it in training. Both go through ``pipelines.filters.fasttext.preprocess``
(lower-cased, whitespace runs to one space, first ``--max-chars`` characters).

Inputs are JSON Lines files or globs (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``; local, gs://, s3://),
one document per line in ``--text-field`` (default ``text``). Positives get ``__label__hq``, negatives
``__label__lq``. Malformed lines and documents without text are skipped and counted (printed per reason);
a truncated or corrupt compressed file is an error naming it. The documents are shuffled with ``--seed``
and ``--holdout`` of them (default 10 %) are kept out of training; the command prints precision and recall
of ``hq`` on them at ``--threshold`` (default 0.5, the rule's default ``min_score``). Training runs on one
thread by default, so the same inputs and seed give a byte-identical model (``--threads`` trades that
for speed). The model is written to ``--out`` (local or remote), its SHA-256 printed with the filter
entry to paste into the sources YAML.

Hyperparameters: bigrams (``wordNgrams 2``) as DCLM's classifier; ``--dim``, ``--bucket``, ``--epoch``,
``--lr``, ``--min-count`` are fastText's. The model file holds (words + bucket) x dim float32s
(the defaults: ~130-150 MB for 500k buckets x 64 dims), loaded once per worker process.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence

from contract import fsio
from contract.config import ConfigError
from pipelines.filters.fasttext import HQ, LQ, MAX_CHARS, preprocess, quality_score

EXAMPLE = """
example:
  python -m pipelines.quality train --positive 'curated/*.jsonl.zst' --negative 'cc_sample/*.jsonl.gz' \\
      --out models/quality.bin
  then, in the sources YAML:  filters: [..., {fasttext_quality: {model: models/quality.bin, keep_top_fraction: 0.1}}]
"""


class TrainError(RuntimeError):
    """Unusable training input (the message names the file or the reason)."""


def read_texts(globs: Sequence[str], text_field: str, skipped: Counter, prepare=lambda t: t) -> list[str]:
    """``prepare(text)`` of every record in the files the globs match, in file and line order (preparing while
    reading holds only the first ``--max-chars`` of each document in memory)."""
    from pipelines.sources.config import infer_format
    from pipelines.sources.readers import Bad, InputFileError, expand_inputs, iter_values

    try:
        files = expand_inputs("training input", globs)
    except InputFileError as e:
        raise TrainError(str(e)) from None
    texts = []
    for f in files:
        try:
            fmt = infer_format(f.path)
        except ConfigError as e:
            raise TrainError(str(e)) from None
        if fmt == "parquet":
            raise TrainError(f"{f.path}: parquet is not supported for training input; give JSON Lines")
        for _line, text in iter_values(f.path, text_field, fmt):
            if isinstance(text, Bad):
                if text.reason == "corrupt_stream":
                    raise TrainError(f"{f.path}: {text.detail}")
                skipped[f"no {text_field!r} field ({f.name})" if text.reason == "missing_field"
                        else f"{text.reason} ({f.name})"] += 1
                continue
            if not isinstance(text, str):
                skipped[f"{text_field!r} is not a string ({f.name})"] += 1
                continue
            texts.append(prepare(text))
    return texts


def precision_recall(scores: Sequence[float], labels: Sequence[bool],
                     threshold: float) -> tuple[float, float, int, int]:
    """(precision, recall, predicted positives, actual positives) of ``score >= threshold`` for the positives."""
    pred = [s >= threshold for s in scores]
    tp = sum(p and y for p, y in zip(pred, labels))
    npred, npos = sum(pred), sum(labels)
    return (tp / npred if npred else float("nan")), (tp / npos if npos else float("nan")), npred, npos


def train(positive: Sequence[str], negative: Sequence[str], out: str, *, text_field: str = "text",
          max_chars: int = MAX_CHARS, holdout: float = 0.1, threshold: float = 0.5, seed: int = 0, epoch: int = 5,
          lr: float = 0.5, dim: int = 64, bucket: int = 500_000, word_ngrams: int = 2, min_count: int = 1,
          threads: int = 1, log=print) -> dict:
    """Train, evaluate on the held-out share, write the model to ``out``; returns the numbers printed."""
    import fasttext_new

    if not 0.0 <= holdout < 1.0:
        raise TrainError(f"--holdout {holdout}: expected a fraction in [0, 1)")
    skipped: Counter = Counter()
    def prep(text):
        return preprocess(text, max_chars)

    pos, neg = read_texts(positive, text_field, skipped, prep), read_texts(negative, text_field, skipped, prep)
    rows = [(HQ, t) for t in pos] + [(LQ, t) for t in neg]
    lines = [(lab, t) for lab, t in rows if t]
    skipped["empty after preprocessing"] += len(rows) - len(lines)
    for reason, n in sorted(skipped.items()):
        if n:
            log(f"skipped {n:,} record(s): {reason}")
    n_pos = sum(lab == HQ for lab, _ in lines)
    if n_pos == 0 or n_pos == len(lines):
        raise TrainError(f"need documents of both classes; got {n_pos:,} positive and {len(lines) - n_pos:,} negative")
    random.Random(seed).shuffle(lines)
    n_test = round(len(lines) * holdout)
    test, train_rows = lines[:n_test], lines[n_test:]
    log(f"documents: {n_pos:,} positive ({HQ}), {len(lines) - n_pos:,} negative ({LQ}); "
        f"training on {len(train_rows):,}, holding out {len(test):,}")
    tmp = tempfile.mkdtemp(prefix="mptdata-quality-")
    try:
        train_file = os.path.join(tmp, "train.txt")
        with open(train_file, "w", encoding="utf-8") as f:
            f.writelines(f"{lab} {text}\n" for lab, text in train_rows)
        model = fasttext_new.train_supervised(train_file, epoch=epoch, lr=lr, dim=dim, bucket=bucket,
                                              wordNgrams=word_ngrams, minCount=min_count, thread=threads,
                                              seed=seed, loss="softmax", verbose=0)
        local = os.path.join(tmp, "model.bin")
        model.save_model(local)
        with open(local, "rb") as f:
            data = f.read()
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    fsio.write_bytes(out, data)
    result = {"out": out, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "positive": n_pos,
              "negative": len(lines) - n_pos, "train": len(train_rows), "holdout": len(test), "threshold": threshold}
    if test:  # the held-out lines are preprocessed already; preprocess is idempotent
        scores = [quality_score(model, text, HQ, max_chars) for _lab, text in test]
        p, r, npred, npos = precision_recall(scores, [lab == HQ for lab, _ in test], threshold)
        result.update(precision=p, recall=r)
        log(f"held-out ({len(test):,} documents, {npos:,} positive): precision {p:.4f}, recall {r:.4f} of {HQ} "
            f"at score >= {threshold} ({npred:,} predicted positive)")
    log(f"model: {out} ({len(data) / 1e6:,.1f} MB, sha256 {result['sha256']})")
    extra = "" if max_chars == MAX_CHARS else f", max_chars: {max_chars}"
    log(f"filter rule: {{fasttext_quality: {{model: {out}, min_score: {threshold}{extra}}}}}  "
        "(or keep_top_fraction: 0.1 instead of min_score, as DCLM)")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.quality", description=__doc__.split("\n\n")[1],
                                 epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a fastText quality classifier (hq vs lq)")
    t.add_argument("--positive", nargs="+", required=True, help="JSON Lines files or globs of high-quality text")
    t.add_argument("--negative", nargs="+", required=True, help="JSON Lines files or globs of the text to filter")
    t.add_argument("--out", required=True, help="model file to write (local, gs://, s3://)")
    t.add_argument("--text-field", default="text", help="dotted field with the text (default: text)")
    t.add_argument("--max-chars", type=int, default=MAX_CHARS,
                   help=f"characters of each document used (default {MAX_CHARS}; give the rule the same max_chars)")
    t.add_argument("--holdout", type=float, default=0.1, help="share of documents held out for evaluation (0.1)")
    t.add_argument("--threshold", type=float, default=0.5, help="score threshold the evaluation reports (0.5)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epoch", type=int, default=5)
    t.add_argument("--lr", type=float, default=0.5, help="learning rate (0.5; fastText suggests 0.1-1.0)")
    t.add_argument("--dim", type=int, default=64)
    t.add_argument("--bucket", type=int, default=500_000, help="hash buckets for word bigrams (500000)")
    t.add_argument("--word-ngrams", type=int, default=2)
    t.add_argument("--min-count", type=int, default=1)
    t.add_argument("--threads", type=int, default=1, help="training threads (1: byte-identical models)")
    args = ap.parse_args(argv)
    try:
        train(args.positive, args.negative, args.out, text_field=args.text_field, max_chars=args.max_chars,
              holdout=args.holdout, threshold=args.threshold, seed=args.seed, epoch=args.epoch, lr=args.lr,
              dim=args.dim, bucket=args.bucket, word_ngrams=args.word_ngrams, min_count=args.min_count,
              threads=args.threads)
    except (TrainError, ValueError) as e:
        print(f"quality train failed: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
