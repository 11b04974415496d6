"""Beam's DaskRunner with a Flatten that keeps the partition count: the build's ``--runner dask``.

Why: Beam 2.77's DaskRunner translates Flatten to ``dask.bag.concat``, which adds its inputs' partitions, and its
GroupByKey keeps the partitions of its input, so every ``CoGroupByKey`` (a Flatten of the tagged inputs, then a
GroupByKey) doubles the partitions downstream of it, and the joins of a graph multiply them: the demo build's
graph had 1,688 tasks at ``--dask_npartitions 1``, 3,314 at 2 and 16,322 at 16 (700 partitions at its leaf),
~13 s of scheduling per extra partition on 2 workers. Here a Flatten concatenates and then merges neighbouring
partitions back to the largest input's count (``Bag.repartition``: each new partition concatenates a few old
ones, no shuffle); everything else is Beam's translation. Output is unchanged (a Flatten's element order carries
no meaning in Beam, and every consumer of ours groups or sorts), tested against Beam's own runners.

What to send upstream (apache/beam, ``runners/dask/transform_evaluator.py``): the same three lines in ``Flatten``.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext

from apache_beam.runners.dask import dask_runner
from apache_beam.runners.dask import transform_evaluator as te

RUNNER = f"{__name__}.DaskRunner"


class Flatten(te.Flatten):
    """``concat``, then back to as many partitions as the largest input has."""

    def apply(self, input_bag, side_inputs=None):
        bags = [b for b in input_bag if b is not None]
        out = super().apply(bags, side_inputs)
        n = max(b.npartitions for b in bags)
        return out.repartition(npartitions=n) if out.npartitions > n else out


_TRANSLATIONS_LOCK = threading.Lock()


@contextmanager
def translations():
    """Ours in place of Beam's, in the module table Beam's visitor reads while it builds the bag graph."""
    with _TRANSLATIONS_LOCK:
        mine = {k: Flatten for k, v in te.TRANSLATIONS.items() if v is te.Flatten}
        saved = {k: te.TRANSLATIONS[k] for k in mine}
        te.TRANSLATIONS.update(mine)
        try:
            yield
        finally:
            te.TRANSLATIONS.update(saved)


def bag_graph(pipeline, npartitions: int, ours: bool = True):
    """The optimized dask bag of ``pipeline``'s leaf as a DaskRunner would compute it (ours, or Beam's), without
    running it: for counting tasks and partitions (tests, benchmarks/dask_tasks.py)."""
    import dask
    from apache_beam.runners.dask.overrides import dask_overrides

    pipeline.replace_all(dask_overrides())
    visitor = dask_runner.DaskRunner.to_dask_bag_visitor({"npartitions": npartitions})
    with translations() if ours else nullcontext():
        pipeline.visit(visitor)
    (bag,) = dask.optimize(list(visitor.bags.values())[-1])
    return bag


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner, translating Flatten with :class:`Flatten` (Beam's visitor reads the module's
    ``TRANSLATIONS`` while ``run_pipeline`` builds the graph: ours are there for that call)."""

    def run_pipeline(self, pipeline, options):
        with translations():
            return super().run_pipeline(pipeline, options)
