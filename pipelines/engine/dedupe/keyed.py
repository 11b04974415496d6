"""Global values in a Beam graph with keyed shuffles only: constructs every runner executes the same way.

Beam's global combiners (``CombineGlobally``, ``Count.Globally``, ``Top.Of``, ``ToList``), side inputs
(``AsSingleton``, ``AsDict``) and tagged outputs are where runners differ: the DaskRunner (Beam 2.77) drops what
``Top.Of`` emits from ``finish_bundle``, recomputes a side input's whole upstream inside every task that reads
it (``Count.Globally`` of 3 elements gave 6, and upstream DoFns ran twice), and hands every tag of
``.with_outputs()`` to each consumer (``benchmarks/dask_runner_defects.py``). The dedupe graph therefore builds
its global values from GroupByKey/CoGroupByKey only:

- ``CombineToOne(fn, bucket_of, buckets, order)``: a global combine as two keyed shuffles (accumulators per
  bucket, then merged under the one key ``ONE``), what combiner lifting does, spelled out, in an order no
  runner can change; ``(ONE, result)``, or no element at all for an empty input (no default).
- ``fan_out(one, buckets)``: a global value copied to every bucket key, to be joined (CoGroupByKey) with a
  collection keyed by the same buckets: a side input as a keyed join.
"""
from __future__ import annotations

from collections.abc import Callable

import apache_beam as beam

ONE = 0  # the key of a global value
_MASK = (1 << 64) - 1


def spread(x: int, buckets: int) -> int:
    """Bucket of an integer id (uid, hash): a multiplicative hash, so consecutive ids spread over the buckets."""
    return (((int(x) * 0x9E3779B97F4A7C15) & _MASK) >> 32) % buckets


def fan_out(one, buckets: int):
    """(ONE, value) -> (b, value) for every bucket b."""
    _key, value = one
    return [(b, value) for b in range(buckets)]


def _partial(kv, fn: beam.CombineFn, order):
    bucket, xs = kv
    return ONE, (bucket, fn.compact(fn.add_inputs(fn.create_accumulator(), sorted(xs, key=order))))


def _merged(kv, fn: beam.CombineFn):
    _one, partials = kv
    return ONE, fn.extract_output(fn.merge_accumulators([acc for _b, acc in sorted(partials, key=lambda p: p[0])]))


class CombineToOne(beam.PTransform):
    """PCollection[x] -> PCollection[(ONE, fn over all x)], none for an empty input.

    Elements are grouped by ``bucket_of(x) % buckets``; each bucket's accumulator is built where the bucket is,
    and the accumulators meet under ``ONE``: no worker holds more than one bucket or ``buckets``
    accumulators. The result does not depend on the runner: a shuffle delivers values in any order, so each
    bucket adds its inputs sorted (by ``order``, a sort key; None: the elements themselves) and the
    accumulators merge in bucket order. Approximate combiners (quantiles) need that to give the same answer
    on every runner; exact ones lose nothing by it."""

    def __init__(self, fn: beam.CombineFn, bucket_of: Callable[[object], int], buckets: int, order=None, label=None):
        super().__init__(label)
        self.fn, self.bucket_of, self.buckets, self.order = fn, bucket_of, max(1, buckets), order

    def expand(self, pcoll):
        bucket_of, buckets = self.bucket_of, self.buckets
        return (pcoll
                | "Bucket" >> beam.Map(lambda x: (bucket_of(x) % buckets, x))
                | "GroupBuckets" >> beam.GroupByKey()
                | "Partial" >> beam.Map(_partial, self.fn, self.order)
                | "GroupOne" >> beam.GroupByKey()
                | "Merge" >> beam.Map(_merged, self.fn))
