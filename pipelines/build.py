"""python -m pipelines.build --mixture NAME [--sources FILE] [--out DIR] ... [Beam pipeline options]

Reads the ten sources, filters, dedupes, tokenizes with GPT-NeoX-20B into per-source MDS shards under
OUT/sources, writes OUT/stats, then builds the mixture. Unknown options go to Beam, so the same command
runs on Dataflow/Spark/Flink (see README).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from typing import Optional, Sequence

from contract import fsio, layout
from contract.config import ConfigError
from contract.registry import SOURCE_NAMES
from contract.stats import summary_table
from pipelines.runners import beam_logging
from pipelines.sources.config import load_sources, source_config
from pipelines.engine.plan import config_hash

log = logging.getLogger("pipelines.build")

EPILOG = """
examples:
  python -m pipelines.build --mixture mpt30b_8k                      # demo corpora, local runner, ./out
  python -m pipelines.build --mixture mpt30b_2k --sources my_sources.yaml --out gs://bucket/mpt \\
      --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp --setup_file ./setup.py
Any option not listed above is passed to Apache Beam unchanged.
"""


def parse_args(argv: Optional[Sequence[str]] = None):
    ap = argparse.ArgumentParser(prog="python -m pipelines.build", description=__doc__.split("\n\n")[1],
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixture", required=True,
                    help="mixture to build after the sources: mpt7b_2k, mpt30b_2k, mpt30b_8k, or a spec YAML path")
    ap.add_argument("--sources", help="sources YAML (README 'Real corpora'); default: the built-in DEMO corpora")
    ap.add_argument("--out", default="./out", help="output root: local path, gs:// or s3:// (default ./out)")
    ap.add_argument("--tokenizer", help="path to GPT-NeoX-20B tokenizer.json (else $NEOX_TOKENIZER, local cache, HF hub)")
    ap.add_argument("--write-rejects", action="store_true", help="write OUT/rejects/<source>/*.jsonl audit records")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local runner worker processes (default: all cores)")
    ap.add_argument("--cross-source-dedupe", action="store_true",
                    help="dedupe across sources (one id space; registry order is the keep priority)")
    ap.add_argument("--allow-missing-sources", action="store_true",
                    help="build the mixture from the sources given, renormalizing proportions (the report says so)")
    ap.add_argument("--tokens", type=int, help="mixture token budget (default: the spec's; scaled down for the demo)")
    ap.add_argument("--seed", type=int, default=17, help="mixture sampling seed (default 17)")
    ap.add_argument("--force", action="store_true",
                    help="rebuild sources even if finished outputs exist (and redo parts an interrupted run finished)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also show Apache Beam's own logging (start-up notices, workers, job service)")
    ap.add_argument("--skip-mixture", action="store_true",
                    help="stop after the per-source shards (then any subset of the ten sources may be built)")
    return ap.parse_known_args(argv)


# ``--runner dask``: Beam's DaskRunner with a Flatten that keeps the partition count (pipelines.runners.dask_runner);
# Beam's own class path still runs on Beam's translation (measured side by side: benchmarks/dask_tasks.py)
DASK_RUNNER = "pipelines.runners.dask_runner.DaskRunner"
BEAM_DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
RUNNER_NAMES = {"dask": DASK_RUNNER, "daskrunner": DASK_RUNNER}


def runner_args(extra: list[str]) -> list[str]:
    """``--runner dask`` / ``--runner=DaskRunner`` -> Beam's class path (Beam accepts only that for Dask)."""
    out: list[str] = []
    i = 0
    while i < len(extra):
        a = extra[i]
        if a == "--runner" and i + 1 < len(extra):
            name, i = extra[i + 1], i + 2
        elif a.startswith("--runner="):
            name, i = a.split("=", 1)[1], i + 1
        else:
            out.append(a)
            i += 1
            continue
        out.append(f"--runner={RUNNER_NAMES.get(name.lower(), name)}")
    return out


def is_dask(options) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    return options.view_as(StandardOptions).runner in (DASK_RUNNER, BEAM_DASK_RUNNER)


def beam_options(extra: list[str], workers: int):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.runners.local import RUNNER, guard_data_channel

    guard_data_channel()  # also for a user's --runner=DirectRunner (the FnApiRunner when Prism is out of reach)
    extra = runner_args(extra)
    if not any(a.startswith("--runner") for a in extra):
        extra = [f"--runner={RUNNER}", f"--direct_num_workers={workers}",
                 "--direct_running_mode=multi_processing", "--default_sdk_harness_log_level=WARNING", *extra]
    return PipelineOptions(extra)


def dedupe_work(result) -> str:
    """One line of the dedupe graph's Beam counters (what cluster sizing needs: keys, candidate pairs, verified
    edges), or "" where the runner reports no metrics (the DaskRunner). Stats never come from these: they
    are computed from data (pipelines/engine/graph.py), so they reconcile on every runner."""
    from pipelines.engine.dedupe.semantic import SEM_NS
    from pipelines.engine.dedupe.shared import NS

    if result is None:
        return ""
    try:
        rows = result.metrics().query()["counters"]
    except NotImplementedError:  # DaskRunnerResult.metrics: "collecting metrics will come later!"
        return ""
    counters = collections.Counter()
    for r in rows:  # a counter is reported once per step that increments it (e.g. one per dedupe group)
        if r.key.metric.namespace in (NS, SEM_NS):
            counters[r.key.metric.name] += r.committed
    names = (("exact_duplicates", "exact duplicates"), ("near_candidate_members", "MinHash candidate pairs"),
             ("near_verified_edges", "verified near-duplicate edges"), ("semantic_duplicates", "SemDedup removals"))
    parts = [f"{counters[k]:,} {label}" for k, label in names if counters.get(k)]
    return f"dedupe work: {', '.join(parts)}" if parts else ""


def finished(out: str, source: str, chash: str) -> bool:
    path = layout.stats_path(out, source)
    if not (fsio.exists(path) and fsio.exists(layout.source_index(out, source))):
        return False
    try:
        return json.loads(fsio.read_bytes(path)).get("config_hash") == chash
    except (OSError, ValueError):
        return False


def clear_stale_staging(out: str, source: str, keep: str) -> None:
    """Staging of an earlier run with other inputs or config cannot be resumed: remove it (same config: keep)."""
    root = layout.join(layout.staging_root(out), source)
    if not fsio.has_files(root):
        return
    stale = sorted({rel.split("/", 1)[0] for rel in fsio.list_files(root)} - {keep})
    for h in stale:
        fsio.delete_tree(layout.join(root, h))


def source_summary(out: str, names: Sequence[str]) -> str:
    """The summary table, then the sanity warnings of every source (``pipelines.filters.warnings``), also logged."""
    stats = [json.loads(fsio.read_bytes(layout.stats_path(out, n))) for n in names]
    text = summary_table(stats)
    warnings = [w for s in stats for w in s.get("warnings", [])]
    for w in warnings:
        log.warning("sanity: %s", w)
    if warnings:
        text += "\n\nwarnings:\n" + "\n".join(f"  ! {w}" for w in warnings)
    return text


def check_decontam(sources: dict, where: str) -> dict:
    """Each distinct decontam config: its eval files listed and indexed on the driver, so a bad path or
    text_field fails before any input is read. Returns config -> ((path, size) of each eval file, index
    stats for the stats record)."""
    from pipelines.sources.evals import build_index, list_eval_files
    from pipelines.steps.decontam import DecontamError

    info = {}
    for cfg in dict.fromkeys(c.decontam for c in sources.values() if c.decontam is not None):
        try:
            listed = list_eval_files(cfg.eval_paths)
            index = build_index(cfg)
        except DecontamError as e:
            raise ConfigError(f"{where}: {e}; fix decontam.eval_paths / decontam.text_field") from None
        sizes = [(path, fsio.size(path)) for path, _name in listed]
        info[cfg] = (sizes, {"eval_files": len(listed), "eval_sources": list(index.sources),
                             "eval_texts": index.eval_texts, "skipped_short": index.skipped_short,
                             "ngrams": index.num_ngrams, "bytes": index.nbytes})
        print(f"decontam ({cfg.mode} mode, {cfg.n}-grams): {index.eval_texts:,} eval texts from {len(listed)} file(s) "
              f"({index.skipped_short:,} under {cfg.min_eval_words} words skipped), {index.num_ngrams:,} n-grams, "
              f"{index.nbytes / 1e6:,.1f} MB index per worker", flush=True)
    return info


def explain(e: BaseException) -> str:
    """One paragraph for the user: our own error messages survive Beam's wrapping of worker exceptions."""
    text = str(e)
    from mixtures.build import MixtureError

    if isinstance(e, (ConfigError, MixtureError)):
        return f"{type(e).__name__}: {e}"
    for marker in ("InputFileError: ", "TokenizerError: ", "ReconciliationError: ", "ConfigError: ", "DecontamError: "):
        if marker in text:
            msg = text.split(marker, 1)[1].split("\n")[0].split(" [while running")[0]
            return f"{marker.rstrip(': ')}: {msg}"
    return f"{type(e).__name__}: {text.strip().splitlines()[-1] if text.strip() else ''}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, beam_args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("streaming", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    beam_logging.configure_driver(args.verbose)
    try:
        with beam_logging.worker_env(args.verbose):
            return run(args, beam_args)
    except Exception as e:  # the CLI contract: a one-paragraph reason, non-zero exit
        from contract.stats import ReconciliationError
        from mixtures.build import MixtureError
        from pipelines.sources.readers import InputFileError
        from tokenization import TokenizerError

        known = (ConfigError, InputFileError, TokenizerError, ReconciliationError, MixtureError)
        if not isinstance(e, known) and os.environ.get("MPTDATA_DEBUG"):
            raise
        print(f"\nbuild failed: {explain(e)}\n(set MPTDATA_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2


def run(args, beam_args) -> int:
    from pipelines.sources.readers import expand_inputs

    # 1. everything the user wrote is validated before any input is listed or read
    if not args.skip_mixture:
        from mixtures.spec import load_spec

        load_spec(args.mixture)  # a built-in name or a spec file: validated now, not after the sources are built
    demo = args.sources is None
    out = args.out
    if demo:
        from pipelines.sources.demo import demo_sources_yaml, write_demo_corpora

        print("*** DEMO: no --sources given; building small DEMO corpora from this machine's Python install "
              "(not the real MPT data) ***", flush=True)
        paths = write_demo_corpora(layout.join(out, "demo_corpora") if not layout.is_remote(out) else "./demo_corpora")
        raw = demo_sources_yaml(paths)["sources"]
        sources = {n: source_config(n, r, "demo sources") for n, r in raw.items()}
    else:
        sources = load_sources(args.sources)
    missing = [n for n in SOURCE_NAMES if n not in sources]
    if missing and not (args.allow_missing_sources or args.skip_mixture):
        raise ConfigError(f"{args.sources}: the {args.mixture} mixture needs all ten sources; missing: {', '.join(missing)}. "
                          "Add them to the sources file, pass --allow-missing-sources to renormalize without them, "
                          "or --skip-mixture to build only the per-source shards.")
    options = beam_options(beam_args, args.workers)
    fsio.set_options(options)  # the driver lists inputs and checks outputs with the same S3/GCS options
    decontam = check_decontam(sources, args.sources or "demo sources")
    # 2. the inputs (a wrong glob fails in seconds), then this machine's artifacts (tokenizer, fastText LID model,
    # SemDedup table: ~20-30 s to make on a new machine), once, before any worker starts
    files = {n: expand_inputs(n, c.inputs) for n, c in sources.items()}
    from pipelines.artifacts import prepare

    art = prepare(sources, args.tokenizer)
    # rules that need their model file or a sample of the source (fasttext_quality): resolved on the driver into
    # their parameters (model hash, computed threshold), so they are part of the config hash
    from pipelines.sources.prepare import prepare_sources

    sources = prepare_sources(sources, files, args.sources or "demo sources")
    hashes = {n: config_hash(c, files[n], art.tokenizer_fingerprint, args.cross_source_dedupe,
                             decontam[c.decontam][0] if c.decontam is not None else (), art.table_for(c))
              for n, c in sources.items()}
    todo = {n: c for n, c in sources.items() if args.force or args.cross_source_dedupe or not finished(out, n, hashes[n])}
    for n in sorted(set(sources) - set(todo)):
        print(f"[{n}] already built with the same inputs and config: skipping (use --force to rebuild)", flush=True)
    t0 = time.time()
    if todo:
        build_sources(args, options, out, todo, files, hashes, art, demo, decontam)
    print(f"\nper-source shards ({time.time() - t0:,.1f} s){' [DEMO DATA]' if demo else ''}:", flush=True)
    print(source_summary(out, sorted(sources, key=SOURCE_NAMES.index)), flush=True)
    if args.skip_mixture:
        write_build_report(out, art.tokenizer)
        return 0
    from mixtures.build import build_mixture

    manifest = build_mixture(args.mixture, layout.sources_dir(out), layout.mixtures_dir(out), tokens=args.tokens,
                             seed=args.seed, allow_missing=args.allow_missing_sources, demo=demo,
                             workers=args.workers)
    print(f"\nmixture {args.mixture} written to {layout.mixture_dir(out, args.mixture)}"
          f"{' [DEMO DATA]' if demo else ''}", flush=True)
    write_build_report(out, art.tokenizer)
    return 0 if manifest is not None else 1


def write_build_report(out: str, tok) -> None:
    """OUT/report.html (``pipelines.report.html``), from what the build wrote. A page that cannot be made is
    reported, not fatal: the shards, stats and mixture are already in place."""
    from pipelines.report.html import write_report

    try:
        path, size = write_report(out, None, tok)
    except Exception as e:  # noqa: BLE001
        if os.environ.get("MPTDATA_DEBUG"):
            raise
        log.error("report: %s not written: %s: %s", layout.report_html(out), type(e).__name__, e)
        return
    print(f"report: {path} ({size / 1e3:,.1f} KB; or python -m pipelines.inspect {out} --html FILE)", flush=True)


def source_extra_stats(cfg, decontam: dict, art) -> dict:
    """Config facts the stats record carries: the chain (sanity warnings blame only its rules), pii, decontam,
    the resolved parameters of prepared rules (``filter_params``: model hash, computed threshold), and the
    SemDedup static table the source was embedded with (digest and the driver's CPU architecture)."""
    from pipelines.sources.prepare import prepared_params

    dc = cfg.decontam
    return {"filters": cfg.chain.names, "pii": cfg.pii,
            "decontam": None if dc is None else {"mode": dc.mode, "n": dc.n, "eval_paths": list(dc.eval_paths)},
            "decontam_index": None if dc is None else decontam[dc][1],
            **({"filter_params": params} if (params := prepared_params(cfg.chain)) else {}),
            **({"semdedup_table": art.table_stats()} if art.table_for(cfg) else {})}


def build_sources(args, options, out, todo, files, hashes, art, demo, decontam=None) -> None:
    import apache_beam as beam

    from pipelines.engine.graph import build_graph
    from pipelines.engine.plan import BuildPlan
    from pipelines.engine.progress import Reporter, heartbeat_dir
    from pipelines.engine.staging import Part

    plan = BuildPlan.make(
        out=out, tokenizer_json=art.tokenizer.raw, write_rejects=args.write_rejects,
        cross_source=args.cross_source_dedupe, sources=todo, files={n: files[n] for n in todo},
        hashes={n: hashes[n] for n in todo},
        extra_stats={n: {"config_hash": hashes[n], "demo": demo, "tokenizer_fingerprint": art.tokenizer_fingerprint,
                         "inputs": [f.path for f in files[n]], **source_extra_stats(todo[n], decontam or {}, art)}
                     for n in todo})
    for n in todo:  # --force recomputes every part; otherwise staging of the same inputs and config is resumed
        clear_stale_staging(out, n, "" if args.force else hashes[n])
    fsio.delete_tree(heartbeat_dir(out))
    resumable = sum(1 for t in plan.tasks if Part.of(plan, t.source, t.part).is_done())
    sizes = {n: sum(f.size for f in files[n]) for n in todo}
    print(f"building {len(todo)} source(s) from {sum(len(files[n]) for n in todo)} file(s), "
          f"{sum(sizes.values()) / 1e6:,.1f} MB on disk, {len(plan.tasks)} part(s)"
          f"{f' ({resumable} already done by an earlier run: resuming)' if resumable else ''} "
          f"-> {out}/sources  (workers: {args.workers}; progress every 20 s)", flush=True)
    # workers read the plan's heavy parts (tokenizer, input listing, part tasks) from OUT, where every runner's workers
    # can, instead of a copy inside each pickled DoFn (small task graphs: README "Running on a cluster")
    plan_dir = layout.join(layout.staging_root(out), "plan")
    if any(art.table_for(todo[n]) for n in todo):  # the driver's SemDedup table, beside the plan (pipelines.artifacts)
        from pipelines.artifacts import ship_table

        plan = dataclasses.replace(plan, semdedup_table=ship_table(plan_dir, art.table, art.table_sha256),
                                   semdedup_table_sha256=art.table_sha256)
    plan = plan.ship(layout.join(plan_dir, hashlib.sha256(json.dumps(sorted(plan.hashes.items())).encode())
                                 .hexdigest()[:16] + ".pickle"))
    with contextlib.ExitStack() as stack:
        chunks = 1
        if is_dask(options):  # a cluster (started here if none is named), parts spread, workers get the S3 options
            from apache_beam.runners.dask.dask_runner import DaskOptions

            from pipelines.runners.dask_cluster import dask_cluster

            options = stack.enter_context(dask_cluster(options, len(plan.tasks), args.workers))
            # its Create cuts the part list into --dask_npartitions contiguous chunks, one per worker
            chunks = options.view_as(DaskOptions).npartitions or 1
        p = beam.Pipeline(options=options)
        try:
            with Reporter(out, sizes, parts={n: plan.num_parts(n) for n in todo}) as reporter, p:
                build_graph(p, plan, chunks)
        finally:  # the DaskRunner leaves its client open: closed before the cluster it talks to
            client = getattr(getattr(p, "result", None), "client", None)
            if client is not None:
                client.close()
    print(reporter.stage_times(), flush=True)
    work = dedupe_work(getattr(p, "result", None))
    if work:
        print(work, flush=True)
    fsio.delete_tree(heartbeat_dir(out))
    fsio.delete_tree(plan_dir)
    staging = layout.staging_root(out)
    if not layout.is_remote(out) and os.path.isdir(staging) and not os.listdir(staging):
        os.rmdir(staging)


if __name__ == "__main__":
    sys.exit(main())
