"""Pure-Beam reproductions: what Beam's DaskRunner (apache-beam 2.77, dask/distributed 2026.8) does differently.

No project code. Each construct runs twice, on the DirectRunner (local, in-process) and on DaskRunner against a
dask.distributed cluster this script starts (a LocalCluster of 2 worker processes, 1 thread each, unless
--address names a running scheduler). Results are collected through files written by a final Map (every
worker runs on this machine), and upstream calls are counted the same way. One table is printed:

    construct | DirectRunner result | DaskRunner result

    python benchmarks/dask_runner_defects.py            # all constructs
    python benchmarks/dask_runner_defects.py --only top_of

Causes, read in apache_beam/runners/dask (2.77):
- transform_evaluator.apply_dofn_to_bundle collects the receivers' values *before* invoke_finish_bundle, so
  whatever a DoFn emits from finish_bundle is lost (Top.Of, Beam's combiner lifting helpers, batching DoFns).
- a side input is a DaskBagWindowedIterator holding the upstream *bag*: iterating it inside a worker task runs
  `list(bag)`, a second computation of the whole upstream graph (its DoFns run again: side effects twice) and
  embeds that upstream graph in every task that reads the side input (graph size). CombineGlobally itself
  injects its default through an AsList side input, so every global combiner does this.
- ParDo translation returns every receiver's values in one list: consumers of `.with_outputs()` tags each get
  every tag's elements.
- Reshuffle is replaced by an identity; Create makes partitions of >= 128 elements (one task for a small
  Create) unless --dask_npartitions / --dask_partition_size is given.
- beam.Partition is a ParDo with tagged outputs: same defect; separate Filters work.
- only the bag of the last visited transform is computed: a branch that does not feed it never runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.dedupe_common import print_table  # noqa: E402  (a table printer only: the repros use no project code)


# ----------------------------------------------------------------------------------------------------------
# collection through files (worker processes of both runners live on this machine)

def _save(x, d):
    Path(d, f"{os.getpid()}-{uuid.uuid4().hex}").write_text(repr(x))
    return x


def _read_all(d):
    out = []
    for f in sorted(Path(d).iterdir()):
        out.append(eval(f.read_text()))  # noqa: S307 - our own repr of ints, lists, tuples
    return out


def _count_call(x, d):
    Path(d, uuid.uuid4().hex).touch()
    return x


def _where(x, d):
    time.sleep(0.3)  # long enough that an idle worker would take the next element
    Path(d, f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    return x


# ----------------------------------------------------------------------------------------------------------
# the constructs: each builds its pipeline on p, with scratch folders, and returns a function that turns the
# folders into the row's result text

class _EmitInFinishBundle(beam.DoFn):
    def start_bundle(self):
        self.n = 0

    def process(self, x):
        self.n += 1

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        yield WindowedValue(self.n, GlobalWindow().max_timestamp(), [GlobalWindow()])


def top_of(p, out, calls):
    p | beam.Create(list(range(10))) | beam.combiners.Top.Of(3) | beam.Map(_save, out)
    return lambda: f"Top.Of(3) over 0..9 -> {sorted(_read_all(out))}"


def finish_bundle(p, out, calls):
    (p | beam.Create(list(range(10))) | beam.ParDo(_EmitInFinishBundle())
     | beam.CombineGlobally(sum).without_defaults() | beam.Map(_save, out))
    return lambda: f"sum of per-bundle counts (emitted in finish_bundle) of 10 elements -> {_read_all(out)}"


def side_input_same_collection(p, out, calls):
    pc = p | beam.Create([1, 2, 3]) | "Upstream" >> beam.Map(_count_call, calls)
    n = pc | beam.combiners.Count.Globally()
    pc | beam.Map(lambda x, n: (x, n), beam.pvalue.AsSingleton(n)) | beam.Map(_save, out)

    def result():
        got = sorted(_read_all(out))
        return f"(x, Count.Globally) -> {got}; upstream Map ran {len(os.listdir(calls))}x for 3 elements"
    return result


def keyed_join_same_collection(p, out, calls):
    """The replacement of the side input above: the count joined by key (CoGroupByKey), no side input."""
    pc = p | beam.Create([1, 2, 3]) | "Upstream" >> beam.Map(_count_call, calls)
    n = pc | "One" >> beam.Map(lambda x: (0, 1)) | beam.CombinePerKey(sum)
    ({"x": pc | beam.Map(lambda x: (0, x)), "n": n} | beam.CoGroupByKey()
     | beam.FlatMap(lambda kv: [(x, list(kv[1]["n"])[0]) for x in kv[1]["x"]]) | beam.Map(_save, out))

    def result():
        got = sorted(_read_all(out))
        return f"(x, count by CoGroupByKey) -> {got}; upstream Map ran {len(os.listdir(calls))}x"
    return result


class _Tagged(beam.DoFn):
    def process(self, x):
        if x % 2:
            yield beam.pvalue.TaggedOutput("odd", x)
        else:
            yield x


def with_outputs(p, out, calls):
    res = p | beam.Create(list(range(6))) | beam.ParDo(_Tagged()).with_outputs("odd", main="even")
    ((res.even | "E" >> beam.Map(lambda x: ("even", x)), res.odd | "O" >> beam.Map(lambda x: ("odd", x)))
     | beam.Flatten() | beam.Map(_save, out))

    def result():
        got = _read_all(out)
        return (f"even consumer got {sorted(x for t, x in got if t == 'even')}, "
                f"odd consumer got {sorted(x for t, x in got if t == 'odd')}")
    return result


def partition_split(p, out, calls):
    """The replacement of with_outputs: beam.Partition (or two Filters) consumed separately."""
    even, odd = p | beam.Create(list(range(6))) | beam.Partition(lambda x, n: x % 2, 2)
    ((even | "E" >> beam.Map(lambda x: ("even", x)), odd | "O" >> beam.Map(lambda x: ("odd", x)))
     | beam.Flatten() | beam.Map(_save, out))

    def result():
        got = _read_all(out)
        return (f"Partition: even got {sorted(x for t, x in got if t == 'even')}, "
                f"odd got {sorted(x for t, x in got if t == 'odd')}")
    return result


def filter_split(p, out, calls):
    """What works: one Filter per output, each reading the whole input."""
    pc = p | beam.Create(list(range(6)))
    ((pc | "Even" >> beam.Filter(lambda x: x % 2 == 0) | "E" >> beam.Map(lambda x: ("even", x)),
      pc | "Odd" >> beam.Filter(lambda x: x % 2 == 1) | "O" >> beam.Map(lambda x: ("odd", x)))
     | beam.Flatten() | beam.Map(_save, out))

    def result():
        got = _read_all(out)
        return (f"two Filters: even got {sorted(x for t, x in got if t == 'even')}, "
                f"odd got {sorted(x for t, x in got if t == 'odd')}")
    return result


def empty_create(p, out, calls):
    p | beam.Create([]) | beam.Map(_save, out)
    return lambda: f"Create([]) -> {len(_read_all(out))} element(s)"


def reshuffle_spread(p, out, calls):
    p | beam.Create(list(range(8))) | beam.Reshuffle() | beam.Map(_where, calls)
    return lambda: (f"Create(8) | Reshuffle | Map(0.3 s): ran in "
                    f"{len({f.split('-')[0] for f in os.listdir(calls)})} process(es)")


def groupbykey_spread(p, out, calls):
    """Spreading by a keyed GroupByKey instead of Reshuffle: no help when Create made one partition."""
    (p | beam.Create(list(range(8))) | beam.Map(lambda x: (x, x)) | beam.GroupByKey()
     | beam.Map(lambda kv: kv[0]) | beam.Map(_where, calls))
    return lambda: (f"Create(8) | key | GroupByKey | Map(0.3 s): ran in "
                    f"{len({f.split('-')[0] for f in os.listdir(calls)})} process(es)")


def many_partitions(p, out, calls):
    """Partitions sharing a worker: every element once (the ParDo receivers are per task)?"""
    (p | beam.Create(list(range(40))) | beam.Map(lambda x: (x % 4, x)) | beam.GroupByKey()
     | beam.FlatMap(lambda kv: kv[1]) | beam.Map(_save, out))
    return lambda: f"Create(40) | key | GroupByKey | FlatMap -> {len(_read_all(out))} elements, " \
                   f"{len(set(_read_all(out)))} distinct"


def two_leaves(p, out, calls):
    pc = p | beam.Create([1, 2, 3])
    pc | "Branch" >> beam.Map(lambda x: ("branch", x)) | "SaveBranch" >> beam.Map(_save, out)
    pc | "Last" >> beam.Map(lambda x: ("last", x)) | "SaveLast" >> beam.Map(_save, out)

    def result():
        got = _read_all(out)
        return (f"two branches of 3: first branch saved {sum(t == 'branch' for t, _ in got)}, "
                f"last saved {sum(t == 'last' for t, _ in got)}")
    return result


CONSTRUCTS = {"top_of": top_of, "finish_bundle": finish_bundle,
              "side_input_same_collection": side_input_same_collection,
              "keyed_join_same_collection": keyed_join_same_collection,
              "with_outputs": with_outputs, "partition_split": partition_split,
              "filter_split": filter_split, "empty_create": empty_create,
              "reshuffle_spread": reshuffle_spread, "groupbykey_spread": groupbykey_spread,
              "reshuffle_spread --dask_npartitions=8": reshuffle_spread,
              "many_partitions --dask_npartitions=8": many_partitions,
              "two_leaves": two_leaves}


def run(name: str, options: list[str]) -> str:
    if " --" in name and "DaskRunner" in options[0]:  # a row with extra DaskRunner options
        options = options + name.split(" ")[1:]
    scratch = tempfile.mkdtemp(prefix="dask_defects_")
    out, calls = os.path.join(scratch, "out"), os.path.join(scratch, "calls")
    os.makedirs(out)
    os.makedirs(calls)
    try:
        p = beam.Pipeline(options=PipelineOptions(options))
        result = CONSTRUCTS[name](p, out, calls)
        res = p.run()
        try:
            res.wait_until_finish()
        finally:
            if getattr(res, "client", None) is not None:  # DaskRunner's own client: closed here, not at exit
                res.client.close()
        return result()
    except Exception as e:  # noqa: BLE001 - a failure is a result of this table
        return f"FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1][:100] if str(e).strip() else ''}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=list(CONSTRUCTS), help="constructs to run (default: all)")
    ap.add_argument("--address", help="a running dask scheduler (default: start a LocalCluster of 2 processes)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import logging

    logging.getLogger("apache_beam.runners.dask").setLevel(logging.ERROR)  # the 'new default partition size' note
    for name in ("distributed", "distributed.client"):  # DaskRunner never closes its client: noise at the end
        logging.getLogger(name).setLevel(logging.CRITICAL)
    cluster = None
    address = args.address
    if address is None:
        from dask.distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        address = cluster.scheduler_address
    direct = ["--runner=DirectRunner", f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]
    dask = ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner", f"--dask_client_address={address}"]
    rows = [(n, run(n, direct), run(n, dask)) for n in (args.only or CONSTRUCTS)]
    if cluster is not None:
        cluster.close()
    import dask

    print(f"\napache-beam {beam.__version__}, dask {dask.__version__}; DirectRunner: {args.workers} worker processes "
          f"(multi_processing); DaskRunner on {address} ({args.workers} worker processes)\n")
    print_table(("construct", "DirectRunner result", "DaskRunner result"), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
