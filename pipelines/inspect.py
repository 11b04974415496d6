"""Look inside a build's output folder: what was kept and why the rest was not, as text.

    python -m pipelines.inspect OUT                          per-source and per-mixture summary
    python -m pipelines.inspect OUT summary [--json]
    python -m pipelines.inspect OUT docs SOURCE [-n 3] [--seed 0] [--chars 600] [--json]
    python -m pipelines.inspect OUT samples MIXTURE [--part P] [--source S] [-n 2] [--seed 0] [--json]
    python -m pipelines.inspect OUT reject ID [--source S] [--json]
    python -m pipelines.inspect OUT --html FILE [--tokenizer PATH]   one self-contained HTML report

``summary`` reads ``OUT/stats/<source>.json`` and ``OUT/mixtures/<name>/manifest.json`` (counts,
top rejection reasons, tokens, planned vs realized proportions) and adds the sanity warnings of
``pipelines.sanity``. ``docs`` decodes random documents of a source's tokenized MDS dataset back to
text; ``samples`` decodes random packed samples of a mixture (``<|endoftext|>`` marks document
boundaries); ``reject`` prints the audit record(s) of a document id from ``OUT/rejects`` (written by
``--write-rejects``). Random picks are reproducible: the same ``--seed`` picks the same documents.
``--html FILE`` writes the whole build as one self-contained page (``pipelines.report_html``; the build
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
import tempfile
from typing import Any, Optional, Sequence

import numpy as np

from contract import fsio, layout

COMMANDS = ("summary", "docs", "samples", "reject")


class InspectError(RuntimeError):
    """A missing or unreadable output file; the message names it."""


# ---------------------------------------------------------------------------------------------
# File access (contract.fsio; its errors become InspectErrors naming the file)
# ---------------------------------------------------------------------------------------------


def _read_bytes(path: str, what: str) -> bytes:
    try:
        return fsio.read_bytes(path)
    except FileNotFoundError:
        raise InspectError(f"{path}: not found ({what})") from None
    except fsio.StorageError as e:  # remote errors, permissions
        raise InspectError(f"{path}: cannot read ({what}): {type(e.cause).__name__}: {e.cause}") from None


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(_read_bytes(path, what))
    except json.JSONDecodeError as e:
        raise InspectError(f"{path}: not valid JSON ({what}): {e}") from None


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------

_DUP_FIELDS = ("exact_duplicates", "near_duplicates", "semantic_duplicates")


def load_stats(out: str) -> dict[str, dict]:
    """``{source: stats}`` for every ``OUT/stats/<source>.json``."""
    d = layout.stats_dir(out)
    names = fsio.files_in(d, ".json")
    return {n[:-5]: _read_json(layout.stats_path(out, n[:-5]), "per-source stats") for n in names}


def load_manifests(out: str) -> dict[str, dict]:
    found = {}
    for name in fsio.dirs_with(layout.mixtures_dir(out), layout.MANIFEST):
        path = layout.join(layout.mixture_dir(out, name), layout.MANIFEST)
        if fsio.exists(path):
            found[name] = _read_json(path, "mixture manifest")
    return found


def summarize(out: str) -> dict:
    """The summary as plain data (what ``--json`` prints)."""
    from pipelines.filters.warnings import warnings_for

    stats = load_stats(out)
    manifests = load_manifests(out)
    if not stats and not manifests:
        raise InspectError(f"{layout.stats_dir(out)}: no <source>.json, and no "
                           f"{layout.join(layout.mixtures_dir(out), '<name>', layout.MANIFEST)}: is {out} a build's --out?")
    sources = {}
    for name, s in stats.items():
        read = int(s.get("read", 0))
        rejected = {k: int(v) for k, v in (s.get("rejected") or {}).items()}
        sources[name] = {
            "read": read,
            "kept": int(s.get("kept", 0)),
            "kept_share": (int(s.get("kept", 0)) / read) if read else None,
            "malformed": int(s.get("malformed", 0)),
            "decontaminated": int(s.get("decontaminated", 0)),
            "rejected": sum(rejected.values()),
            "top_reasons": sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:3],
            **{f: int(s.get(f, 0)) for f in _DUP_FIELDS},
            "tokens": int(s.get("tokens", 0)),
            "docs_ge_4096_tokens": int(s.get("docs_ge_4096_tokens", 0)),
            "demo": bool(s.get("demo", False)),
            "warnings": warnings_for(s),
        }
    mixtures = {}
    for name, m in manifests.items():
        streams = []
        for sname, st in (m.get("streams") or {}).items():
            streams.append({"stream": sname, "part": st.get("part"), "source": st.get("source"),
                            "planned_share": st.get("spec_share", st.get("share")),
                            "realized_share": st.get("realized_share"), "choose": st.get("choose"),
                            "epochs": st.get("epochs")})
        mixtures[name] = {
            "seq_len": m.get("seq_len"), "seed": m.get("seed"), "demo": bool(m.get("demo", False)),
            "budget_tokens": (m.get("budget") or {}).get("tokens"),
            "samples": sum(int(p.get("samples", 0)) for p in (m.get("parts") or {}).values()),
            "parts": {p: {"samples": v.get("samples"), "weight": v.get("weight"),
                          "realized_weight": v.get("realized_weight")} for p, v in (m.get("parts") or {}).items()},
            "streams": streams,
            "dropped": m.get("dropped") or [],
            "missing_sources": m.get("missing_sources") or [],
            "notes": m.get("notes") or [],
        }
    return {"out": out, "sources": sources, "mixtures": mixtures}


def _fmt_int(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "-"


def _fmt_pct(x) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def _table(headers: Sequence[str], rows: list[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_summary(summary: dict) -> str:
    parts = [f"Build output: {summary['out']}"]
    src = summary["sources"]
    if src:
        rows = []
        for name, s in src.items():
            reasons = ", ".join(f"{k} {v:,}" for k, v in s["top_reasons"]) or "-"
            rows.append([name + (" [demo]" if s["demo"] else ""), _fmt_int(s["read"]), _fmt_int(s["kept"]),
                         _fmt_pct(s["kept_share"]), _fmt_int(s["malformed"]), _fmt_int(s["decontaminated"]),
                         _fmt_int(s["rejected"]),
                         _fmt_int(s["exact_duplicates"]), _fmt_int(s["near_duplicates"]),
                         _fmt_int(s["semantic_duplicates"]), _fmt_int(s["tokens"]), reasons])
        total = [sum(s[k] for s in src.values())
                 for k in ("read", "kept", "malformed", "decontaminated", "rejected", *_DUP_FIELDS, "tokens")]
        rows.append(["TOTAL", _fmt_int(total[0]), _fmt_int(total[1]), _fmt_pct(total[1] / total[0] if total[0] else None),
                     *(_fmt_int(t) for t in total[2:]), ""])
        parts += ["", "Sources (OUT/stats):",
                  _table(["source", "read", "kept", "kept%", "malformed", "decontam", "rejected", "exact dup",
                          "near dup", "sem dup", "tokens", "top rejection reasons"], rows,
                         [False] + [True] * 10 + [False])]
        warns = [w for s in src.values() for w in s["warnings"]]
        if warns:
            parts += ["", "Warnings:", *(f"  ! {w}" for w in warns)]
    for name, m in summary["mixtures"].items():
        parts += ["", (f"Mixture {name}{' [demo]' if m['demo'] else ''}: {_fmt_int(m['samples'])} samples x "
                       f"{m['seq_len']} tokens per epoch (budget {_fmt_int(m['budget_tokens'])} tokens, "
                       f"seed {m['seed']})")]
        rows = [[s["part"] or "-", s["source"] or "-", _fmt_pct(s["planned_share"]), _fmt_pct(s["realized_share"]),
                 _fmt_int(s["choose"]), f"{s['epochs']:.2f}" if isinstance(s["epochs"], (int, float)) else "-"]
                for s in m["streams"]]
        parts.append(_table(["part", "source", "planned", "realized", "samples", "epochs"], rows,
                            [False, False, True, True, True, True]))
        for d in m["dropped"]:
            parts.append(f"  left out: {d.get('part')}/{d.get('source')}: {d.get('reason')}")
        if m["missing_sources"]:
            parts.append(f"  missing sources (renormalized): {', '.join(m['missing_sources'])}")
        parts += [f"  note: {n}" for n in m["notes"]]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# docs / samples: decode MDS back to text
# ---------------------------------------------------------------------------------------------


def _mds_index(dataset_dir: str) -> dict:
    path = layout.join(dataset_dir, layout.INDEX)
    index = _read_json(path, "MDS index")
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise InspectError(f"{path}: no 'shards' list; not a streaming MDS index")
    return index


def _local_copy(dataset_dir: str, shard: dict, tmp: str) -> str:
    """A local folder holding ``shard``'s file: the dataset folder itself, or ``tmp`` after a fetch."""
    if not layout.is_remote(dataset_dir):
        return dataset_dir
    base = (shard.get("zip_data") or shard["raw_data"])["basename"]
    path = layout.join(dataset_dir, *base.split("/"))
    try:
        fsio.local_copy(path, tmp, name=base)
    except FileNotFoundError:
        raise InspectError(f"{path}: not found (MDS shard)") from None
    except fsio.StorageError as e:
        raise InspectError(f"{path}: cannot read (MDS shard): {type(e.cause).__name__}: {e.cause}") from None
    return tmp


def pick(dataset_dir: str, n: int, seed: int) -> list[tuple[int, dict]]:
    """``n`` random samples (without replacement, sorted by position) of one MDS dataset, decoded:
    ``[(sample_index, {column: value}), ...]``. Reproducible for a given ``seed``."""
    index = _mds_index(dataset_dir)
    total = sum(int(s["samples"]) for s in index["shards"])
    if total == 0:
        return []
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    return _read_positions(dataset_dir, chosen.tolist(), index)


def _tokens_text(tok, tokens: np.ndarray, chars: int) -> tuple[str, bool]:
    text = tok.decode(tokens.tolist())
    if chars and len(text) > chars:
        return text[:chars], True
    return text, False


def decode_docs(out: str, source: str, n: int, seed: int, chars: int, tok) -> list[dict]:
    ddir = layout.source_dir(out, source)
    if not fsio.exists(layout.source_index(out, source)):
        known = fsio.dirs_with(layout.sources_dir(out), layout.INDEX)
        raise InspectError(f"{layout.source_index(out, source)}: not found (source {source!r} not built; "
                           f"built: {', '.join(known) or 'none'})")
    docs = []
    for i, sample in pick(ddir, n, seed):
        tokens = np.asarray(sample["tokens"])
        body = tokens[:-1] if len(tokens) and int(tokens[-1]) == 0 else tokens   # drop the EOS every doc ends with
        text, cut = _tokens_text(tok, body, chars)
        docs.append({"source": source, "index": i, "id": sample.get("id"), "tokens": len(tokens),
                     "text": text, "truncated": cut})
    return docs


def decode_samples(out: str, mixture: str, part: Optional[str], source: Optional[str], n: int, seed: int,
                   chars: int, tok) -> list[dict]:
    mdir = layout.mixture_dir(out, mixture)
    manifest = _read_json(layout.join(mdir, layout.MANIFEST), "mixture manifest")
    streams = [(name, st) for name, st in sorted((manifest.get("streams") or {}).items())
               if (part is None or st.get("part") == part) and (source is None or st.get("source") == source)]
    if not streams:
        have = sorted({(st.get("part"), st.get("source")) for st in (manifest.get("streams") or {}).values()})
        raise InspectError(f"{layout.join(mdir, layout.MANIFEST)}: no stream with part={part!r} source={source!r}; "
                           f"streams: {', '.join(f'{p}/{s}' for p, s in have)}")
    # one draw over all samples of the chosen streams: each packed sample equally likely
    dirs = [layout.join(mdir, *st["path"].split("/")) for _, st in streams]
    sizes = [sum(int(s["samples"]) for s in _mds_index(d)["shards"]) for d in dirs]
    total = sum(sizes)
    if total == 0:
        return []
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out_rows = []
    for k, ((name, st), d) in enumerate(zip(streams, dirs)):
        mine = chosen[(chosen >= starts[k]) & (chosen < starts[k + 1])] - starts[k]
        if not len(mine):
            continue
        for i, sample in _read_positions(d, [int(i) for i in mine]):
            tokens = np.asarray(sample["tokens"])
            text, cut = _tokens_text(tok, tokens, chars)
            out_rows.append({"stream": name, "part": st.get("part"), "source": st.get("source"), "sample": i,
                             "tokens": len(tokens), "documents": int((tokens == 0).sum()),
                             "text": text, "truncated": cut})
    return out_rows


def _read_positions(dataset_dir: str, positions: list[int], index: Optional[dict] = None) -> list[tuple[int, dict]]:
    """The samples at ``positions`` (sorted) of one MDS dataset, reading each needed shard once."""
    from mixtures.sources import read_mds_shard

    index = index or _mds_index(dataset_dir)
    sizes = [int(s["samples"]) for s in index["shards"]]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    pos = np.asarray(positions, dtype=np.int64)
    out = []
    with tempfile.TemporaryDirectory(prefix="mptdata-inspect-") as tmp:
        for shard_no in sorted({int(np.searchsorted(starts, i, side="right") - 1) for i in pos}):
            shard = index["shards"][shard_no]
            try:
                samples, _ = read_mds_shard(_local_copy(dataset_dir, shard, tmp), shard)
            except FileNotFoundError as e:
                raise InspectError(f"{e.filename}: not found (an MDS shard listed in "
                                   f"{layout.join(dataset_dir, layout.INDEX)})") from None
            for i in pos[(pos >= starts[shard_no]) & (pos < starts[shard_no + 1])]:
                out.append((int(i), samples[int(i - starts[shard_no])]))
    return out


# ---------------------------------------------------------------------------------------------
# reject
# ---------------------------------------------------------------------------------------------


def find_rejects(out: str, doc_id: str, source: Optional[str] = None) -> list[dict]:
    """Every audit record whose ``id`` (or ``loc``) is ``doc_id``, from OUT/rejects/<source>/*.jsonl."""
    if source:
        sources = [source]
    else:
        sources = sorted(load_stats(out))
    searched, found = [], []
    for s in sources:
        rdir = layout.rejects_dir(out, s)
        files = fsio.files_in(rdir, ".jsonl")
        if not files:
            continue
        searched.append(rdir)
        for fn in files:
            path = layout.join(rdir, fn)
            for line in _read_bytes(path, "rejects").decode("utf-8").splitlines():
                if doc_id not in line:      # cheap pre-check before parsing
                    continue
                rec = json.loads(line)
                if rec.get("id") == doc_id or rec.get("loc") == doc_id:
                    found.append({**rec, "file": path})
    if not searched:
        where = layout.rejects_dir(out, source or "<source>")
        raise InspectError(f"{where}: no reject records (build with --write-rejects to write them)")
    return found


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


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


def _render_texts(rows: list[dict], title_keys: Sequence[str]) -> str:
    blocks = []
    for row in rows:
        head = "  ".join(f"{k}={row[k]}" for k in title_keys if row.get(k) is not None)
        tail = " [...]" if row["truncated"] else ""
        blocks.append(f"=== {head}\n{row['text']}{tail}")
    return "\n\n".join(blocks) if blocks else "(nothing to show)"


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
            raise InspectError(f"-n must be at least 1, got {args.n}")
        from tokenization import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
        if args.command == "docs":
            rows = decode_docs(args.out, args.source, args.n, args.seed, args.chars, tok)
            print(json.dumps(rows, indent=1) if args.json else _render_texts(rows, ("source", "index", "id", "tokens")))
        else:
            rows = decode_samples(args.out, args.mixture, args.part, args.source, args.n, args.seed, args.chars, tok)
            print(json.dumps(rows, indent=1) if args.json
                  else _render_texts(rows, ("stream", "sample", "tokens", "documents")))
        return 0
    except InspectError as e:
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
