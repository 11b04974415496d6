"""The heavy packages a build worker needs, imported once per process, in one order, under one lock.

Why: mosaicml-streaming imports torch, transformers, torchvision, scikit-learn and scipy (~4-5 s of one core),
and transformers and torchvision import parts of each other lazily, in cycles. Two threads that enter that
tree at different points -- one importing ``streaming``, another calling ``AutoModel.from_pretrained`` -- can
each be handed the other's partially initialized module (``cannot import name 'InterpolationMode' from
partially initialized module 'torchvision.transforms'``: every c4_en worker of a first-run ``make demo`` failed
that way while a start-up thread imported streaming). So nothing imports these on a background thread, and
every DoFn that may touch them calls :func:`ensure` in ``setup``: the first caller imports the whole set, any
other thread of the process (a Dask worker with several threads, a runner running bundles side by side)
waits for it, and every later import of these packages finds them whole in ``sys.modules``.
"""
from __future__ import annotations

import importlib
import threading

# streaming first (it brings torch, transformers, torchvision, sklearn, scipy in its own order), then what the
# workers import lazily on top: the shard-index merge, BERT (MiniLM) as AutoModel loads it, SemDedup's sparse bags
MODULES = ("streaming", "streaming.base.util", "transformers", "transformers.models.auto.modeling_auto",
           "transformers.models.bert.modeling_bert", "scipy.sparse")

_lock = threading.Lock()
_done = False


def ensure() -> None:
    """Import :data:`MODULES` once per process; callers on other threads wait until all of them are in."""
    global _done
    if _done:
        return
    with _lock:
        if not _done:
            for name in MODULES:
                importlib.import_module(name)
            _done = True
