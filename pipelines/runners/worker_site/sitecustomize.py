"""Start-up hook of the local runner's worker processes (``pipelines.runners.beam_logging.worker_env`` puts this folder on
PYTHONPATH while ``python -m pipelines.build`` runs): quiet Beam start-up and a prompt exit once done
(``pipelines.runners.beam_logging.at_worker_startup``), then any ``sitecustomize`` this file shadows. Other
processes started meanwhile are left as they are."""
import importlib.machinery
import importlib.util
import os
import sys

try:
    from pipelines.runners.beam_logging import at_worker_startup
except ImportError:  # best effort: a worker then logs as Beam does by default
    pass
else:
    at_worker_startup()


def _run_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_run_shadowed_sitecustomize()
