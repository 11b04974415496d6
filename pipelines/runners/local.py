"""The local runner: Beam's FnApiRunner in worker processes, chosen directly.

Beam's ``DirectRunner`` first tries the PrismRunner, which downloads a Go binary from GitHub: offline that
costs a failed download and log noise, and on a networked machine the build would run on Prism, a different
engine that ignores ``--direct_num_workers`` and that the data-channel guard below (set by
``pipelines.build.beam_options`` for every local run) does not cover. So a local
build names this class instead (``--runner=pipelines.runners.local.LocalRunner``), which does what DirectRunner
does once Prism is ruled out: an FnApiRunner whose workers receive the pipeline options (S3 endpoint and
credentials included) through the provisioning info, as DirectRunner hands them over.
"""
from __future__ import annotations

import logging
import os
import sys

from apache_beam.runners.runner import PipelineRunner

RUNNER = f"{__name__}.LocalRunner"


class LocalRunner(PipelineRunner):
    def run_pipeline(self, pipeline, options):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=info).run_pipeline(pipeline, options)


def guard_data_channel() -> None:
    """Turn off the local runner's time-based flush of its data channel (Beam 2.77 FnApiRunner).

    Root cause of the documents a 1 GB build lost (benchmarks/beam_fnapi_loss_repro.py): the runner writes a
    stage's input in ~10 MB chunks into a TimeBasedBufferingClosableOutputStream whose background flush
    copies the buffer, blocks on a send queue capped at 100 MB, then clears the buffer; chunks written
    meanwhile are dropped without an error. With the limit at 0 the stream flushes by size only, on the
    writing thread, and nothing is lost. Our graph no longer sends text through the runner (bundles are
    part tasks and key blobs), so this is a second line of defence for the dedupe keys, not the fix.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def exit_when_done() -> None:
    """In a local-runner SDK worker process: end the process as soon as its harness has finished.

    Once the runner closes a worker's control stream, ``SdkHarness.run`` returns, and the interpreter then
    spent ~1.5 s finalizing (torch, tokenizers, Beam's modules) before the runner's next worker could be
    told to stop: the runner joins its workers one after the other, so a 2-worker build waited ~3 s at the
    end (a 12 s demo build: 25%). After ``run`` returns normally nothing is left to do but flush the log
    handlers (Beam's FnApi log handler sends its last records) and the standard streams; a failing harness
    raises as before and exits the usual way.
    """
    from apache_beam.runners.worker import sdk_worker

    run = sdk_worker.SdkHarness.run
    if getattr(run, "_exits_when_done", False):
        return

    def run_then_exit(self):
        run(self)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    run_then_exit._exits_when_done = True
    sdk_worker.SdkHarness.run = run_then_exit
