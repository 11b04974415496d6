"""Build a training mixture from per-source tokenized shards.

    python -m mixtures.build --mixture mpt30b_8k --sources-dir out/sources [--out out/mixtures]

Output, ``OUT/mixtures/<name>/``:

``<part>/<source>/``  packed MDS (``tokens: ndarray:uint16``, exactly ``seq_len`` tokens per sample,
                      zstd, sha1 hashes), one dataset per stream.
``documents/<part>__<source>.npy``  the source document indices packed into that stream, in packing order
                      (int64): which documents are in the mixture, and the key to audit it.
``streams.yaml``      mapping stream name -> {local, choose} (``contract.streams``): ``local`` relative to the
                      folder, so a moved or copied mixture trains unchanged with our trainer; llm-foundry's
                      ``train_loader.dataset.streams`` (do not set ``epoch_size``: choose is absolute) takes it as
                      is when run from the folder, or with absolute paths from ``python -m mixtures.streams``.
``manifest.json``     spec, measured tokens, planned vs realized proportions, epochs, remainders, hashes.
``report.md``, ``report.png``  the human report.

The mixture is written into a temporary sibling folder and renamed into place, so ``<name>/`` is never
half-written; a rebuild replaces it whole. Same inputs and seed give byte-identical files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from contract import fsio, layout
from contract.config import ConfigError
from contract.streams import streams_yaml
from mixtures.pack import packing_order, write_packed
from mixtures.planner import Plan, long_mask, plan_mixture, stream_rng
from mixtures.report import write_report
from mixtures.sources import (
    SourceDataError,
    SourceInfo,
    demo_sources,
    iter_documents,
    load_source,
    source_present,
)
from mixtures.spec import MIXTURE_NAMES, load_spec, parse_tokens, spec_path

MANIFEST_FORMAT = "mptdata.mixture/1"


class MixtureError(RuntimeError):
    """The mixture cannot be built; the message says which file or source and what to do."""


def _r(x: float) -> float:
    """Floats in the manifest, rounded so the JSON is stable and readable."""
    return float(f"{x:.10g}")


def _manifest(plan: Plan, infos: dict[str, SourceInfo], results: dict, spec_file: str, demo: bool) -> dict:
    spec = plan.spec
    spec_bytes = fsio.read_bytes(spec_file)
    sources = {}
    for src, info in infos.items():
        lm = long_mask(info.doc_tokens, spec.long_min_tokens, spec.long_count_eos)
        sources[src] = {"documents": info.num_docs, "tokens": info.tokens, "stats_tokens": info.stats_tokens,
                        "long_documents": int(lm.sum()),
                        "long_tokens": int(info.doc_tokens[lm].astype(np.int64).sum()), "shards": len(info.shard_sizes)}
    streams, parts = {}, {}
    total = sum(s.choose for s in plan.streams)
    for p in plan.parts:
        part_samples = sum(s.choose for s in p.streams)
        for s in p.streams:
            r = results[s.name]
            streams[s.name] = {
                "part": s.part, "source": s.source, "path": f"{s.part}/{s.source}",
                "documents_file": f"documents/{s.name}.npy",
                "spec_share": _r(s.spec_share), "share": _r(s.share), "weight": _r(s.weight),
                "realized_share": _r(s.choose / part_samples), "realized_weight": _r(s.choose / total),
                "eligible_documents": s.eligible_docs, "eligible_tokens": s.eligible_tokens,
                "target_tokens": _r(s.target_tokens), "choose": s.choose, "choose_tokens": s.choose_tokens,
                "epochs": _r(s.epochs), "packed_documents": int(len(s.selected)),
                "packed_tokens": r.tokens_in, "packed_samples": r.samples,
                "repeat": _r(s.choose / r.samples), "remainder_tokens": r.remainder_tokens,
                "remainder_from_document": r.remainder_from_doc,
                "wrapped_tokens": r.wrapped_tokens, "shards": r.shards, "sha256": r.sha256,
                "notes": list(s.notes) + ([f"last sample completed with {r.wrapped_tokens:,} tokens from the "
                                           f"stream's start (wrap)"] if r.wrapped_tokens else [])}
        parts[p.name] = {"select": p.select, "weighting": p.weighting, "spec_weight": _r(p.spec_weight),
                         "weight": _r(p.weight), "realized_weight": _r(part_samples / total),
                         "samples": part_samples, "streams": [s.name for s in p.streams]}
    content = hashlib.sha256("".join(f"{k}={v['sha256']}\n" for k, v in streams.items()).encode()).hexdigest()
    return {
        "format": MANIFEST_FORMAT, "name": spec.name,
        "spec": {"file": os.path.basename(spec_file), "sha256": hashlib.sha256(spec_bytes).hexdigest(),
                 "description": spec.description, "provenance": spec.provenance, "content": spec.raw},
        "seed": plan.seed, "seq_len": plan.seq_len, "demo": demo,
        "long_min_tokens": spec.long_min_tokens, "long_count_eos": spec.long_count_eos,
        "code_sources": list(spec.code_sources),
        "budget": {"tokens": plan.budget_tokens, "origin": plan.budget_origin, "spec_tokens": spec.tokens,
                   "samples": total, "tokens_per_epoch": total * plan.seq_len},
        "missing_sources": list(plan.missing), "notes": list(plan.notes), "dropped": list(plan.dropped),
        "sources": sources, "parts": parts, "streams": streams,
        "remainder_tokens": sum(v["remainder_tokens"] for v in streams.values()),
        "wrapped_tokens": sum(v["wrapped_tokens"] for v in streams.values()),
        "content_sha256": content,
    }


def _upsampled(s) -> bool:
    """Streams that streaming repeats anyway: their last partial sample is wrapped, not left out."""
    return s.selected_tokens < s.choose_tokens


def build_mixture(name: str, sources_dir: str, out_dir: str, *, tokens: int | None = None, seed: int = 17,
                  allow_missing: bool = False, demo: bool = False, size_limit: int | str = 1 << 26,
                  progress: bool = True, workers: int | None = None) -> dict:
    """Plan, pack and write mixture ``name`` (a built-in name or a spec file path); return the manifest.

    ``sources_dir`` is OUT/sources, ``out_dir`` is OUT/mixtures; either may be local, gs:// or s3:// (remote
    sources are fetched into a local cache first; a remote mixture is packed locally, then uploaded with
    streams.yaml last, and its streams.yaml has ``remote:`` entries). ``tokens`` overrides the spec's budget;
    ``demo`` scales the budget to what the (demo) data supplies when ``tokens`` is None. Streams are packed
    in ``workers`` processes (default: all cores): each stream's packing is independent, so the bytes do not
    depend on it. Missing sources raise MixtureError naming them, unless ``allow_missing`` (then they are
    left out, the rest renormalized, and the manifest and report say so).
    """
    try:
        spec = load_spec(name)
        spec_file = str(spec_path(name))
    except ConfigError as e:
        raise MixtureError(str(e)) from e
    sources_dir, out_dir = str(sources_dir), str(out_dir)
    with tempfile.TemporaryDirectory(prefix="mptdata-mixture-") as scratch:
        local_sources = _fetch_sources(sources_dir, spec.sources, scratch) if layout.is_remote(sources_dir) else sources_dir
        local_out = os.path.join(scratch, "mixtures") if layout.is_remote(out_dir) else out_dir
        manifest = _build_local(spec, spec_file, local_sources, local_out, out_dir, tokens=tokens, seed=seed,
                                allow_missing=allow_missing, demo=demo, size_limit=size_limit, progress=progress,
                                workers=workers or os.cpu_count() or 1)
        if layout.is_remote(out_dir):
            dest = layout.join(out_dir, spec.name)
            fsio.delete_tree(dest)
            fsio.upload_tree(os.path.join(local_out, spec.name), dest, last=[layout.MANIFEST, layout.STREAMS])
    if progress:
        print(summary(manifest, out_dir), flush=True)
    return manifest


def _fetch_sources(sources_dir: str, names, scratch: str) -> str:
    """Copy remote OUT/sources/<s> (index, doc_tokens, shards) and OUT/stats/<s>.json into ``scratch``."""
    out_root = layout.out_of_sources_dir(sources_dir)
    local = os.path.join(scratch, "sources")
    for s in names:
        src = layout.join(sources_dir, s)
        if not fsio.exists(layout.join(src, layout.INDEX)):
            continue  # reported as missing by the caller
        for rel in fsio.list_files(src):
            fsio.fetch(layout.join(src, rel), os.path.join(local, s, rel))
        stats = layout.stats_path(out_root, s)
        if fsio.exists(stats):
            fsio.fetch(stats, os.path.join(scratch, "stats", f"{s}.json"))
    return local


def _pack_stream(job) -> tuple[str, object]:
    name, info, order, out, seq_len, wrap, size_limit = job
    return name, write_packed(iter_documents(info, order), out, seq_len, wrap=wrap, size_limit=size_limit)


def _build_local(spec, spec_file: str, sources_dir: str, out_dir: str, final_out: str, *, tokens, seed, allow_missing,
                 demo, size_limit, progress, workers) -> dict:
    if not os.path.isdir(sources_dir):
        raise MixtureError(f"sources dir {sources_dir!r} does not exist; run python -m pipelines.build first")
    missing = [s for s in spec.sources if not source_present(sources_dir, s)]
    if missing and not allow_missing:
        raise MixtureError(
            f"mixture {spec.name!r} needs source(s) that are not built: "
            + ", ".join(f"{s} (no {os.path.join(sources_dir, s, 'index.json')})" for s in missing)
            + ". Build them first, or pass --allow-missing-sources (allow_missing=True) to leave them out and "
              "renormalize the remaining proportions.")
    try:
        infos = {s: load_source(sources_dir, s) for s in spec.sources if s not in missing}
        empty = [s for s, i in infos.items() if i.num_docs == 0]
        if empty and not allow_missing:
            raise MixtureError(
                f"mixture {spec.name!r} needs source(s) that were built but kept no document: "
                + ", ".join(f"{s} ({os.path.join(sources_dir, s)}: 0 documents; its stats say what removed them)"
                            for s in empty)
                + ". Fix the source (text_field, inputs, filters), or pass --allow-missing-sources to leave them "
                  "out and renormalize the remaining proportions.")
        for s in empty:
            del infos[s]
        missing = missing + empty
        plan = plan_mixture(spec, {s: i.doc_tokens for s, i in infos.items()}, tokens=tokens, demo=demo,
                            seed=seed, missing=missing)
    except (SourceDataError, ValueError) as e:
        raise MixtureError(str(e)) from e

    final = os.path.join(out_dir, spec.name)
    tmp = os.path.join(out_dir, f".{spec.name}.tmp-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(os.path.join(tmp, "documents"))
    results = {}
    try:
        from tqdm import tqdm
        expected = {s.name: -(-s.selected_tokens // spec.seq_len) if _upsampled(s) else s.selected_tokens // spec.seq_len
                    for s in plan.streams}
        jobs = []
        for s in plan.streams:
            info = infos[s.source]
            order = packing_order(s.selected, info.shard_sizes, stream_rng(seed, s.part, s.source, "order"))
            np.save(os.path.join(tmp, "documents", f"{s.name}.npy"), order.astype(np.int64))
            jobs.append((s.name, info, order, os.path.join(tmp, s.part, s.source), spec.seq_len, _upsampled(s),
                         size_limit))
        jobs.sort(key=lambda j: -expected[j[0]])  # largest first: the pool's tail is short
        with tqdm(total=sum(expected.values()), unit="sample", desc=f"packing {spec.name} ({workers} procs)",
                  disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
            if workers <= 1 or len(jobs) <= 1:
                for job in jobs:
                    name, res = _pack_stream(job)
                    results[name] = res
                    bar.update(expected[name])
            else:
                ctx = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
                    for fut in as_completed([pool.submit(_pack_stream, j) for j in jobs]):
                        name, res = fut.result()
                        results[name] = res
                        bar.set_postfix_str(name)
                        bar.update(expected[name])
        results = {s.name: results[s.name] for s in plan.streams}  # plan order, whatever finished first
        manifest = _manifest(plan, infos, results, spec_file, demo)
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=False)
            f.write("\n")
        # local: paths relative to the folder (it moves with them); remote: the URIs it is written to
        remote_dir = layout.join(final_out, spec.name) if layout.is_remote(final_out) else None
        with open(os.path.join(tmp, layout.STREAMS), "w", encoding="utf-8") as f:
            f.write(streams_yaml(manifest, remote_dir))
        write_report(manifest, {s: i.doc_tokens for s, i in infos.items()}, tmp)
        old = None
        if os.path.exists(final):
            old = os.path.join(out_dir, f".{spec.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old:
            shutil.rmtree(old)
    except SourceDataError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MixtureError(str(e)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def summary(manifest: dict, out_dir: str) -> str:
    m = manifest
    worst = max((abs(s["realized_weight"] - s["weight"]) for s in m["streams"].values()), default=0.0)
    lines = [f"mixture {m['name']}: {len(m['streams'])} streams, {m['budget']['samples']:,} samples x {m['seq_len']} "
             f"tokens per epoch ({m['budget']['origin']} budget {m['budget']['tokens']:,} tokens), largest "
             f"planned-vs-realized gap {100 * worst:.2f} points, {m['remainder_tokens']:,} remainder tokens not packed, "
             f"{m['wrapped_tokens']:,} tokens wrapped in upsampled streams",
             f"  -> {layout.join(out_dir, m['name'])}/ (streams.yaml, manifest.json, report.md)"]
    if m["missing_sources"]:
        lines.append(f"  missing sources left out: {', '.join(m['missing_sources'])}")
    for d in m["dropped"]:
        lines.append(f"  left out {d['part']}/{d['source']}: {d['reason']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mixtures.build",
        description="Build a packed MPT training mixture from the per-source tokenized shards that "
                    "`python -m pipelines.build` writes: per part and source, MDS datasets of exactly seq_len "
                    "uint16 tokens per sample, plus streams.yaml (llm-foundry train_loader.dataset.streams), "
                    "manifest.json and report.md/report.png.",
        epilog="built-in mixtures: " + ", ".join(MIXTURE_NAMES) + " (specs in mixtures/specs/; copy one and pass "
               "its .yaml path to change weights)\n\n"
               "input:  SOURCES_DIR/<source>/index.json (MDS: tokens ndarray:uint16 ending in EOS=0, id) and\n"
               "        SOURCES_DIR/<source>/doc_tokens.npy (tokens per document, EOS included)\n"
               "output: OUT/<mixture>/<part>/<source>/ packed MDS, streams.yaml, manifest.json, report.md\n\n"
               "examples:\n"
               "  python -m mixtures.build --mixture mpt30b_8k --sources-dir out/sources --demo\n"
               "  python -m mixtures.build --mixture mpt30b_2k --sources-dir out/sources --tokens 1T --seed 17\n"
               "  python -m mixtures.build --mixture my_mix.yaml --sources-dir out/sources --allow-missing-sources\n"
               "  python -m mixtures.build --mixture mpt30b_2k --sources-dir s3://b/mpt/sources --out s3://b/mpt/mixtures \\\n"
               "      --s3_endpoint_url=...   (any Beam filesystem option; streams.yaml then has remote: entries)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixture", required=True, metavar="NAME|FILE",
                    help="built-in mixture name or path to a spec YAML")
    ap.add_argument("--sources-dir", required=True, metavar="DIR",
                    help="folder holding <source>/index.json, usually OUT/sources")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="where mixtures go (default: the mixtures/ folder beside --sources-dir, i.e. OUT/mixtures)")
    ap.add_argument("--tokens", default=None, metavar="N",
                    help="token budget, e.g. 50B, 2M or 1000000 (default: the spec's: 1T for 2k mixes, 50B for 8k)")
    ap.add_argument("--demo", action="store_true",
                    help="without --tokens, scale the budget down to what the (demo) data can supply; the report "
                         "says so. Automatic when OUT/stats/<source>.json marks the sources as demo data")
    ap.add_argument("--seed", type=int, default=17,
                    help="seed for document selection and packing order (default: 17); same seed, same bytes")
    ap.add_argument("--allow-missing-sources", action="store_true",
                    help="leave out sources that are not built and renormalize the rest (the report says so); "
                         "without it a missing source is an error")
    ap.add_argument("--quiet", action="store_true", help="no progress bar (the summary is still printed)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes packing streams in parallel (default: all cores; output bytes do not depend on it)")
    args, fs_args = ap.parse_known_args(argv)
    if fs_args:  # e.g. --s3_endpoint_url=...: Beam filesystem options for gs:// and s3:// paths
        fsio.set_options(fs_args)
    out = args.out or layout.mixtures_dir(layout.out_of_sources_dir(args.sources_dir))
    try:
        tokens = parse_tokens(args.tokens, "--tokens") if args.tokens is not None else None
        demo = args.demo
        if not demo and tokens is None and demo_sources(args.sources_dir):
            demo = True
            print("notice: the sources are DEMO data (their stats say demo: true); the budget is scaled down to what "
                  "they supply. Pass --tokens N to set it yourself.", file=sys.stderr)
        manifest = build_mixture(args.mixture, args.sources_dir, out, tokens=tokens, seed=args.seed,
                                 allow_missing=args.allow_missing_sources, demo=demo, progress=not args.quiet,
                                 workers=args.workers)
    except (MixtureError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.quiet:
        print(summary(manifest, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
