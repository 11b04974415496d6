"""Look inside a build's output folder: what was kept and why the rest was not, as text.

    python -m pipelines.inspect OUT                          per-source and per-mixture summary
    python -m pipelines.inspect OUT summary [--json]
    python -m pipelines.inspect OUT docs SOURCE [-n 3] [--seed 0] [--chars 600] [--json]
    python -m pipelines.inspect OUT samples MIXTURE [--part P] [--source S] [-n 2] [--seed 0] [--json]
    python -m pipelines.inspect OUT reject ID [--source S] [--json]
    python -m pipelines.inspect OUT --html FILE [--tokenizer PATH]   one self-contained HTML report

``summary`` reads ``OUT/stats/<source>.json`` and ``OUT/mixtures/<name>/manifest.json`` (counts,
top rejection reasons, tokens, planned vs realized proportions) and adds the sanity warnings of
``pipelines.filters.warnings``. ``docs`` decodes random documents of a source's tokenized MDS dataset back to
text; ``samples`` decodes random packed samples of a mixture (``<|endoftext|>`` marks document
boundaries); ``reject`` prints the audit record(s) of a document id from ``OUT/rejects`` (written by
``--write-rejects``). Random picks are reproducible: the same ``--seed`` picks the same documents.
``--html FILE`` writes the whole build as one self-contained page (``pipelines.report.html``; the build
writes the same page to ``OUT/report.html``).

Paths come from ``contract.layout`` only. ``OUT`` may be local or remote (``gs://``, ``s3://``,
read through ``contract.fsio``; only the shard files a command needs are fetched); Beam filesystem options
(``--s3_endpoint_url=...``, ``--s3_region_name=...``, GCS project ...) are accepted as the build takes them. Every error names the
file it could not find and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from contract import fsio, layout
from pipelines.report.reader import (
    OutError,
    decode_docs,
    decode_samples,
    find_rejects,
    load_manifests,
)
from pipelines.report.text import render_summary, render_texts, summarize

COMMANDS = ("summary", "docs", "samples", "reject")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.inspect",
        description="Summarize a build's output folder, decode documents or packed samples back to text, "
                    "and show why a document was not kept. With no command: summary.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m pipelines.inspect out\n"
               "  python -m pipelines.inspect out docs rp_arxiv -n 2 --chars 400\n"
               "  python -m pipelines.inspect out samples mpt30b_8k --part long -n 1\n"
               "  python -m pipelines.inspect out reject 'c4_en.json.gz:17'\n"
               "  python -m pipelines.inspect out --html report.html\n")
    p.add_argument("out", metavar="OUT", help="the build's --out folder (local path, gs:// or s3://)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    decode = argparse.ArgumentParser(add_help=False)
    decode.add_argument("-n", type=int, default=3, help="how many to show (default 3)")
    decode.add_argument("--seed", type=int, default=0, help="random pick seed (default 0; same seed, same picks)")
    decode.add_argument("--chars", type=int, default=600, help="characters of text to show, 0 = all (default 600)")
    decode.add_argument("--tokenizer", default=None, help="tokenizer.json (default: $NEOX_TOKENIZER, then caches)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sm = sub.add_parser("summary", parents=[common], help="per-source and per-mixture summary (default)")
    sm.add_argument("--html", metavar="FILE", default=None,
                    help="write one self-contained HTML report of the build to FILE (local, gs:// or s3://)")
    sm.add_argument("--tokenizer", default=None,
                    help="with --html: tokenizer.json to decode mixture samples (default: $NEOX_TOKENIZER, then caches)")
    d = sub.add_parser("docs", parents=[common, decode], help="decode random documents of a source")
    d.add_argument("source")
    s = sub.add_parser("samples", parents=[common, decode], help="decode random packed samples of a mixture")
    s.add_argument("mixture")
    s.add_argument("--part", default=None, help="only this part (e.g. long)")
    s.add_argument("--source", default=None, help="only this source's stream(s)")
    r = sub.add_parser("reject", parents=[common], help="the reject record(s) of a document id")
    r.add_argument("id")
    r.add_argument("--source", default=None, help="search only this source's rejects")
    return p


def _write_html(out: str, path: str, tokenizer: Optional[str]) -> int:
    from pipelines.report.html import write_report
    from tokenization import TokenizerError, load_tokenizer

    tok = None
    if load_manifests(out):  # the tokenizer is needed only to decode mixture sample openings
        try:
            tok = load_tokenizer(tokenizer)
        except TokenizerError as e:
            if tokenizer:
                raise
            print(f"note: no tokenizer ({str(e).splitlines()[0]}); the report leaves out the sample openings",
                  file=sys.stderr)
    path, size = write_report(out, path, tok)
    print(f"wrote {path} ({size / 1e3:,.1f} KB)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # OUT alone (or OUT --json) means summary
    if argv and not argv[0].startswith("-") and (len(argv) == 1 or argv[1] not in COMMANDS):
        argv.insert(1, "summary")
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if not a.startswith("--")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:  # Beam filesystem options for a remote OUT, e.g. --s3_endpoint_url=... (as the build takes them)
        fsio.set_options(extra)
    try:
        if args.command in (None, "summary") and getattr(args, "html", None):
            return _write_html(args.out, args.html, args.tokenizer)
        if args.command in (None, "summary"):
            summary = summarize(args.out)
            print(json.dumps(summary, indent=1) if args.json else render_summary(summary))
            return 0
        if args.command == "reject":
            recs = find_rejects(args.out, args.id, args.source)
            if args.json:
                print(json.dumps(recs, indent=1))
            elif not recs:
                print(f"{args.id}: no reject record (searched {layout.rejects_dir(args.out, '*')}); it was kept or "
                      f"the id is spelled differently (ids are the id_field value or FILE:LINE)")
            else:
                for rec in recs:
                    print("\n".join(f"{k:>13}: {v}" for k, v in rec.items()))
            return 0
        if args.n < 1:
            raise OutError(f"-n must be at least 1, got {args.n}")
        from tokenization import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
        if args.command == "docs":
            rows = decode_docs(args.out, args.source, args.n, args.seed, args.chars, tok)
            print(json.dumps(rows, indent=1) if args.json else render_texts(rows, ("source", "index", "id", "tokens")))
        else:
            rows = decode_samples(args.out, args.mixture, args.part, args.source, args.n, args.seed, args.chars, tok)
            print(json.dumps(rows, indent=1) if args.json
                  else render_texts(rows, ("stream", "sample", "tokens", "documents")))
        return 0
    except OutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from tokenization import TokenizerError

        if isinstance(e, TokenizerError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
