"""The build graph on the DaskRunner at 2 to 1,024 partitions, without running it: tasks, partitions at the leaf,
pickled graph size and the time to build it, for Beam's translation and ours (``pipelines.runners.dask_runner``);
the dask scheduler's cost per task measured here on a local cluster; and from both, the scheduling time a build
would spend at each size (an estimate: it assumes the scheduler's per-task cost stays what it is for the small
graphs measured here).

The plan is synthetic (all ten sources, default config, one 24 MB input file per part, nothing read): the
graph depends only on the sources' configs and the number of parts. Issue 31 item 2 and 3.

    python benchmarks/dask_tasks.py [--partitions 2 16 64 256 1024] [--parts-per-source 110]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_plan(parts_per_source: int):
    from contract.registry import SOURCE_NAMES
    from pipelines.engine.plan import TARGET_PART_INPUT_BYTES, BuildPlan
    from pipelines.sources.config import source_config
    from pipelines.sources.readers import InputFile

    sources = {n: source_config(n, {"inputs": [f"s3://bucket/{n}/*.jsonl.zst"]}, "bench") for n in SOURCE_NAMES}
    files = {n: [InputFile(i, f"s3://bucket/{n}/{i:06d}.jsonl.zst", f"{i:06d}.jsonl.zst", TARGET_PART_INPUT_BYTES)
                 for i in range(parts_per_source)] for n in SOURCE_NAMES}
    plan = BuildPlan.make("s3://bucket/out", "{}", False, False, sources, files, {n: "h" for n in SOURCE_NAMES},
                          {n: {} for n in SOURCE_NAMES})
    return plan


def graph_stats(plan, npartitions: int, ours: bool) -> tuple[int, int, int, float]:
    import apache_beam as beam
    import cloudpickle
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.engine.graph import build_graph
    from pipelines.runners.dask_runner import bag_graph

    t = time.time()
    p = beam.Pipeline(options=PipelineOptions([f"--dask_npartitions={npartitions}"]))
    build_graph(p, plan)
    bag = bag_graph(p, npartitions, ours)
    graph = dict(bag.__dask_graph__())
    built = time.time() - t
    return len(graph), bag.npartitions, len(cloudpickle.dumps(graph)), built


def scheduler_cost_per_task(n_tasks: int = 4000) -> float:
    """Seconds of wall time per task for a graph of trivial tasks (a chain of maps over many partitions plus one
    shuffle-like fan-in), run on a 2-process local cluster: the scheduler's and workers' bookkeeping per task."""
    import dask.bag as db
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        parts = n_tasks // 4
        bag = db.from_sequence(range(parts), npartitions=parts).map(lambda x: x + 1).map(lambda x: x * 2)
        client.compute(bag.sum()).result()  # warm-up: workers started, functions deserialized
        t = time.time()
        client.compute(bag.map(lambda x: x - 1).sum()).result()
        return (time.time() - t) / n_tasks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, nargs="+", default=[2, 16, 64, 256, 1024])
    ap.add_argument("--parts-per-source", type=int, default=110, help="parts of each of the ten sources (default 110)")
    ap.add_argument("--beam-up-to", type=int, default=64, help="largest partition count to build Beam's graph for")
    args = ap.parse_args()
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    plan = synthetic_plan(args.parts_per_source)
    per_task = scheduler_cost_per_task()
    print(f"synthetic plan: 10 sources x {args.parts_per_source} parts = {len(plan.tasks):,} parts; "
          f"dask per-task cost measured here: {per_task * 1e3:.2f} ms (2 worker processes, 1 thread each)\n")
    print("| partitions | translation | tasks | tasks per partition | leaf partitions | pickled graph MiB "
          "| graph built s | est. scheduling s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in args.partitions:
        for ours in (False, True):
            if not ours and n > args.beam_up_to:
                print(f"| {n:,} | Beam's | (not built: grows past {args.beam_up_to}) | | | | | |")
                continue
            tasks, leaf, size, built = graph_stats(plan, n, ours)
            name = "ours" if ours else "Beam's"
            print(f"| {n:,} | {name} | {tasks:,} | {tasks / n:,.0f} | {leaf:,} | "
                  f"{size / 2**20:,.1f} | {built:,.1f} | {tasks * per_task:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
