"""Our DaskRunner (``pipelines.runners.dask_runner``): Beam's own results, with partitions that do not multiply
at every join (Beam's DaskRunner: a Flatten adds its inputs' partitions, so each CoGroupByKey doubles them)."""
from __future__ import annotations

import hashlib
import os

import pytest

pytest.importorskip("distributed")

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipelines.build import BEAM_DASK_RUNNER as BEAMS  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    # worker processes of one thread: threads sharing a worker process share the DaskRunner's DoFn receivers and
    # mix their outputs (another DaskRunner defect; the README's cluster recipe says --nthreads 1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c.scheduler_address


def _graph(p):
    """Chained CoGroupByKeys and a Flatten of four collections (what the build's dedupe graph is made of)."""
    a = p | "A" >> beam.Create([(i % 7, i) for i in range(60)])
    b = p | "B" >> beam.Create([(i % 5, -i) for i in range(40)])
    j = ({"a": a, "b": b} | "J1" >> beam.CoGroupByKey()
         | "S1" >> beam.Map(lambda kv: (kv[0] % 3, sum(kv[1]["a"]) - sum(kv[1]["b"]))))
    c = p | "C" >> beam.Create([(k, 1000 * k) for k in range(3)])
    j = ({"j": j, "c": c} | "J2" >> beam.CoGroupByKey()
         | "S2" >> beam.Map(lambda kv: (kv[0], sorted(kv[1]["j"]), sorted(kv[1]["c"]))))
    flat = ((j | "JK0" >> beam.Map(lambda t: t[0]), a | "AK" >> beam.Keys(), b | "BK" >> beam.Keys(),
             c | "CK" >> beam.Keys()) | beam.Flatten())
    counts = flat | "Pairs" >> beam.Map(lambda k: (k, 1)) | "Count" >> beam.GroupByKey() | beam.MapTuple(lambda k, v: (k, len(list(v))))
    return ({"j": j | "JK" >> beam.Map(lambda t: (t[0], t)), "n": counts}
            | "J3" >> beam.CoGroupByKey()
            | "Out" >> beam.Map(lambda kv: (kv[0], sorted(kv[1]["j"]), sorted(kv[1]["n"]))))


def _write(x, folder: str):  # one leaf, in process(): the DaskRunner runs only the last branch of a graph
    text = repr(x)
    with open(os.path.join(folder, hashlib.sha1(text.encode()).hexdigest()), "w") as f:
        f.write(text)


def _run(folder, options: list[str]) -> list[str]:
    os.makedirs(folder)
    with beam.Pipeline(options=PipelineOptions(options)) as p:
        _graph(p) | beam.Map(_write, str(folder))
    return sorted(open(os.path.join(folder, f)).read() for f in os.listdir(folder))


def test_same_results_as_beams_own_runners(cluster, tmp_path):
    from pipelines.runners.dask_runner import RUNNER

    local = _run(tmp_path / "local", [])
    assert len(local) == 7
    for i, runner in enumerate((RUNNER, BEAMS)):
        for n in (1, 2, 5):
            got = _run(tmp_path / f"runner{i}-{n}",
                       [f"--runner={runner}", f"--dask_client_address={cluster}", f"--dask_npartitions={n}"])
            assert got == local, (runner, n)


def test_partitions_stay_at_the_inputs_count():
    """The leaf's partitions and the task count, without running: Beam's translation doubles the partitions at
    each join, ours keeps the largest input's."""
    from pipelines.runners.dask_runner import bag_graph

    def leaf(n, ours):
        p = beam.Pipeline(options=PipelineOptions([f"--dask_npartitions={n}"]))
        _graph(p) | beam.Map(_write, "/nonexistent")
        bag = bag_graph(p, n, ours)
        return bag.npartitions, len(bag.__dask_graph__())

    for n in (1, 2, 4):
        ours, theirs = leaf(n, True), leaf(n, False)
        assert ours[0] <= n < theirs[0], (n, ours, theirs)
        assert ours[1] < theirs[1], (n, ours, theirs)


def test_parts_dealt_so_each_dask_partition_costs_the_same(tokenizer_path, tmp_path):
    """The DaskRunner's Create cuts the part list into contiguous chunks, one per partition: ``by_cost(plan, n)``
    orders the parts so those chunks cost about the same (costliest-first alone gave one worker the 12 costliest
    of 24 parts)."""
    import dask.bag as db

    from pipelines.engine.graph import by_cost, part_cost
    from pipelines.engine.plan import BuildPlan
    from pipelines.sources.config import source_config
    from pipelines.sources.readers import InputFile

    sizes = [(i * 7919) % 97 + 1 for i in range(25)]
    files = [InputFile(i, f"/x/{i}.jsonl", f"{i}.jsonl", s << 20) for i, s in enumerate(sizes)]
    cfg = {"rp_arxiv": source_config("rp_arxiv", {"inputs": ["/x/*.jsonl"]}, "t")}
    plan = BuildPlan.make(str(tmp_path), "{}", False, False, cfg, {"rp_arxiv": files}, {"rp_arxiv": "h"},
                          {"rp_arxiv": {}})
    assert len(plan.tasks) > 10
    for n in (2, 3, 4):
        ordered = by_cost(plan, n)
        assert sorted(ordered) == sorted(plan.tasks)
        chunks = db.from_sequence(ordered, npartitions=n).to_delayed()
        costs = [sum(part_cost(plan, t) for t in c.compute(scheduler="sync")) for c in chunks]
        naive = [sum(part_cost(plan, t) for t in c.compute(scheduler="sync"))
                 for c in db.from_sequence(by_cost(plan), npartitions=n).to_delayed()]
        ideal = sum(costs) / len(costs)  # the build's read stage ends with its costliest chunk
        assert max(costs) / ideal < 1.1 < max(naive) / ideal, (n, costs, naive)
    assert by_cost(plan, 1) == by_cost(plan)
