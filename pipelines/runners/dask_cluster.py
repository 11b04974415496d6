"""``--runner dask``: the build on a dask.distributed cluster through Beam's DaskRunner (README "Running on a cluster").

What the driver does for the DaskRunner, beyond Beam's own options (``--dask_client_address``,
``--dask_npartitions``, ...):

- no ``--dask_client_address`` / ``--dask_scheduler_file``: a LocalCluster of ``--workers`` processes (one
  thread each) on this machine, closed after the build;
- ``--dask_npartitions`` defaults to the cluster's worker threads (at most the number of parts), so the parts
  spread over the workers (Beam's DaskRunner puts up to 128 created elements in one partition and its Reshuffle is
  an identity: ``benchmarks/dask_runner_defects.py``);
- a worker plugin gives every worker, including one that joins or restarts later, the pipeline's filesystem
  options (``--s3_endpoint_url``, credentials, GCS project ...): on Beam's own runners the SDK harness does
  that, Dask workers only run the DoFns.

Everything else is the runner-neutral graph (``pipelines.engine.graph``); workers share nothing but OUT and the
inputs (object storage), and need this project installed (same versions as the driver).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

from distributed.diagnostics.plugin import WorkerPlugin

PLUGIN_NAME = "mptdata-beam-filesystem-options"

log = logging.getLogger("pipelines.build")


class FilesystemOptions(WorkerPlugin):
    """Dask worker plugin: Beam's FileSystems on the worker get the pipeline's options (S3 endpoint, ...), and the
    worker starts importing its heavy packages on one background thread (``pipelines.worker_imports.start``: the
    tasks that need them wait for it, the others run meanwhile)."""

    name = PLUGIN_NAME

    def __init__(self, options: dict):
        self.options = options

    def setup(self, worker=None):
        from apache_beam.options.pipeline_options import PipelineOptions

        from contract import fsio

        from pipelines import worker_imports

        fsio.set_options(PipelineOptions.from_dictionary(self.options))
        worker_imports.start()

    def teardown(self, worker=None):
        pass


# DaskOptions' dests (not passed to the workers' filesystems)
_DASK_DESTS = {"address", "scheduler_file", "npartitions", "partition_size", "timeout", "name", "connection_limit"}


@contextmanager
def dask_cluster(options, num_parts: int, workers: int):
    """Yields the options for the DaskRunner: a cluster to run on (started here if none is named), parts spread
    one per partition, workers given the filesystem options."""
    from apache_beam.runners.dask.dask_runner import DaskOptions
    from distributed import Client, LocalCluster

    opts = options.get_all_options(drop_default=True, retain_unknown_options=True)
    dask = options.view_as(DaskOptions)
    cluster = None
    if not dask.address and not dask.scheduler_file:
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.WARNING)
        dask.address = cluster.scheduler_address
        log.info("dask: no --dask_client_address: a local cluster of %d worker process(es) at %s",
                 max(1, workers), cluster.scheduler_address)
    try:
        with Client(address=dask.address, scheduler_file=dask.scheduler_file,
                    timeout=dask.timeout if isinstance(dask.timeout, int) else 30) as client:
            # the filesystem options, as flags (S3Options, GCP options ... keep their flag names as dests)
            fs_options = {k: v for k, v in opts.items() if not k.startswith("dask_") and k not in _DASK_DESTS
                          and k != "runner"}
            client.register_plugin(FilesystemOptions(fs_options), name=PLUGIN_NAME)
            client.wait_for_workers(1, timeout=120)
            info = client.scheduler_info(n_workers=-1).get("workers", {})
            threads = sum(w.get("nthreads", 1) for w in info.values())
        if not (dask.npartitions or dask.partition_size):
            # one partition per worker thread (at most one per part): the parts spread over the workers, and the
            # task graph stays small -- the DaskRunner's Flatten concatenates partitions, so every join of the
            # graph adds its inputs' partitions and the task count grows with npartitions (README)
            dask.npartitions = max(1, min(num_parts, threads))
        log.info("dask: %s, %d worker(s) with %d thread(s), %s partition(s) for %d part(s)",
                 dask.address or dask.scheduler_file, len(info), threads,
                 dask.npartitions or f"{dask.partition_size}-part", num_parts)
        yield options
    finally:
        if cluster is not None:
            cluster.close()
