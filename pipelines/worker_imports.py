"""The heavy packages a build worker needs: imported ahead, on one thread, and waited for before use.

Why ahead: mosaicml-streaming imports torch, transformers, torchvision, scikit-learn and scipy (~4-5 s of one
core; 7 s with two workers starting at once). A worker needs them to write its first shard and to embed a SemDedup
source, but not to read, filter, hash and tokenize, so a worker starts importing them on a background thread
(``start``: the local runner's worker start-up, the Dask worker plugin) while it reads its first part. On a
2-source build of 6 documents on 2 workers, importing them in the first bundle instead cost ~8 s more
(benchmarks/RESULTS.md, "First contact").

Why one thread and a guard: transformers and torchvision import parts of each other lazily, in cycles. Two
threads that enter that tree at different points -- one importing ``streaming``, another calling
``AutoModel.from_pretrained`` -- can each be handed the other's partially initialized module (``cannot import
name 'InterpolationMode' from partially initialized module 'torchvision.transforms'``: every c4_en worker of a
first-run ``make demo`` failed so, when the start-up thread raced the table distillation). So:

- code that needs any of :data:`PACKAGES` calls :func:`ensure` first (the writer and finalize DoFns in ``setup``,
  the embedder before it loads): it returns once the whole set is imported, importing it itself if nothing has
  started to, and waiting for the thread that has;
- while the background import runs, an import hook refuses any import of :data:`PACKAGES` from another thread with
  an ImportError naming the module and the fix, so a new lazy import that skips :func:`ensure` fails every time,
  in every test that builds, instead of racing once in a while.
"""
from __future__ import annotations

import importlib
import sys
import threading

# streaming first (it brings torch, transformers, torchvision, sklearn, scipy in its own order), then what the
# workers import lazily on top: the shard-index merge, BERT (MiniLM) as AutoModel loads it, SemDedup's sparse bags
MODULES = ("streaming", "streaming.base.util", "transformers", "transformers.models.auto.modeling_auto",
           "transformers.models.bert.modeling_bert", "scipy.sparse")
PACKAGES = frozenset({"streaming", "torch", "torchvision", "transformers", "sklearn", "scipy"})

_lock = threading.Lock()
_done = threading.Event()
_importer: threading.Thread | None = None  # the thread importing MODULES right now


class _Guard:
    """Meta-path hook, installed while a background import runs: other threads may not import PACKAGES."""

    def find_spec(self, name, path=None, target=None):
        if (not _done.is_set() and name.partition(".")[0] in PACKAGES
                and _importer is not None and threading.current_thread() is not _importer):
            raise ImportError(f"{name} imported on thread {threading.current_thread().name!r} while this worker "
                              "imports its heavy packages on another thread; call pipelines.worker_imports.ensure() "
                              "before the code that needs it (import race, see pipelines/worker_imports.py)")
        return None


_GUARD = _Guard()


def _import_all() -> None:
    """With the lock held: import MODULES on this thread (and set ``_done``), however it ends."""
    global _importer
    _importer = threading.current_thread()
    try:
        for name in MODULES:
            importlib.import_module(name)
        _done.set()
    finally:
        _importer = None
        if _GUARD in sys.meta_path:
            sys.meta_path.remove(_GUARD)


def ensure() -> None:
    """Import :data:`MODULES` once per process; a caller on another thread waits until all of them are in. A
    failed background import is tried again here, so its error is raised where the packages are needed."""
    if _done.is_set():
        return
    with _lock:
        if not _done.is_set():
            _import_all()


def start() -> None:
    """In a worker process at start-up: import :data:`MODULES` on a background thread, other threads guarded."""
    if _done.is_set() or _lock.locked():
        return

    def run():
        with _lock:
            if not _done.is_set():
                try:
                    _import_all()
                except Exception:  # noqa: BLE001 - ensure() imports again where they are needed and raises there
                    pass

    global _importer
    thread = threading.Thread(target=run, name="worker-imports", daemon=True)
    _importer = thread  # guarded from now on, not only once the thread runs
    sys.meta_path.insert(0, _GUARD)
    thread.start()
