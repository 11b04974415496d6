"""Apache Beam's own log output in the CLI: none of its start-up notices by default, all of it with ``-v``.

What Beam prints on every local run, none of it about the build:
  * at ``import apache_beam``: "apitools not found, and bigquery client libraries are not available ..."
    (``apache_beam/io/gcp/internal/clients/bigquery/__init__.py``, a ``logging.warning`` on the root logger);
  * in every worker process of the multi_processing direct runner (``python -m
    apache_beam.runners.worker.sdk_worker_main``): that same warning, which, logged before the process has
    any handler, makes ``logging`` install its default stderr handler; then "Logging handler created."
    (INFO, logged before the worker has read its log level), "No semi_persistent_directory found" and
    "Discarding unparseable args" (driver-side runner flags the worker does not know).

Default verbosity: the driver's root logger drops Beam's root-logger records below ERROR (the import-time
notices; Beam's named loggers stay at WARNING, so e.g. "Discarding unparseable args" for a mistyped option
on the command line is still shown), and the job service's re-emitted worker records below ERROR are not
shown. The worker processes import ``pipelines/runners/worker_site/sitecustomize.py`` at start-up, before Beam
(:func:`worker_env` puts that folder on PYTHONPATH while the pipeline runs; the workers inherit the
environment): it gives their root logger a stderr handler, in the default format, that drops Beam's own
records below ERROR. Errors, this project's records and other libraries' records still come through.

``-v``: none of that, and Beam's loggers at INFO (the workers still import ``worker_site``, for their prompt exit).
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from typing import Iterator

WORKER_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_site")
# set by Beam's local job service in the environment of each SDK worker process it starts
WORKER_ENV_MARKER = "CONTROL_API_SERVICE_DESCRIPTOR"
JOB_SERVICE_LOGGER = "apache_beam.runners.portability.local_job_service"
QUIET_ENV = "MPTDATA_QUIET_WORKERS"


def _beam_dir() -> str:
    """The apache_beam package folder, found without importing Beam (importing it logs the notice)."""
    spec = importlib.util.find_spec("apache_beam")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return os.path.join(locations[0], "") if locations else "\0"   # no Beam: matches no record


class BeamNoiseFilter(logging.Filter):
    """Drops records that Beam's own code logs below ERROR; ``root_only``: only those on the root logger."""

    def __init__(self, root_only: bool):
        super().__init__()
        self.root_only = root_only
        self.beam_dir = _beam_dir()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or (self.root_only and record.name != "root"):
            return True
        return not record.pathname.startswith(self.beam_dir)


def configure_driver(verbose: bool) -> None:
    """Beam's logger levels and the root filter in the driver (``python -m pipelines.build``)."""
    root = logging.getLogger()
    for f in [f for f in root.filters if isinstance(f, BeamNoiseFilter)]:
        root.removeFilter(f)
    if verbose:
        logging.getLogger("apache_beam").setLevel(logging.INFO)
        logging.getLogger(JOB_SERVICE_LOGGER).setLevel(logging.NOTSET)
        return
    root.addFilter(BeamNoiseFilter(root_only=True))
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    # worker records re-emitted by the local job service: the workers' own stderr already shows what counts
    logging.getLogger(JOB_SERVICE_LOGGER).setLevel(logging.ERROR)


@contextlib.contextmanager
def worker_env(verbose: bool) -> Iterator[None]:
    """While the pipeline runs, worker processes start with ``worker_site`` on PYTHONPATH, so they run
    :func:`at_worker_startup` before Beam is imported (quiet unless ``verbose``). Old values are restored after."""
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", QUIET_ENV)}
    os.environ["PYTHONPATH"] = WORKER_SITE if not old["PYTHONPATH"] else WORKER_SITE + os.pathsep + old["PYTHONPATH"]
    os.environ[QUIET_ENV] = "0" if verbose else "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def at_worker_startup() -> None:
    """Run by ``worker_site/sitecustomize.py`` in every process started during the run: in the Beam SDK
    workers, quiet start-up (default verbosity) and a prompt exit once the runner is done with them
    (:func:`pipelines.runners.local.exit_when_done`); any other process is left as it is."""
    if WORKER_ENV_MARKER in os.environ:
        if os.environ.get(QUIET_ENV) == "1":
            quiet_worker()
        from pipelines import worker_imports
        from pipelines.runners.local import exit_when_done

        exit_when_done()
        worker_imports.start()


def quiet_worker() -> None:
    """In a Beam SDK worker process, before Beam is imported: a root stderr handler without Beam's notices
    (having a handler also keeps ``logging`` from installing its unfiltered default one)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    handler.addFilter(BeamNoiseFilter(root_only=False))
    logging.getLogger().addHandler(handler)
