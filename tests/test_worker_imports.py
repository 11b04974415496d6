"""pipelines.worker_imports: a worker's heavy packages are imported on one thread, and no other thread races it."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = r"""
import sys, threading
from pipelines import worker_imports as w
assert "streaming" not in sys.modules and "sklearn" not in sys.modules
w.start()
try:
    import sklearn  # another thread, while the background import runs: refused, whatever the timing
    print("imported beside the warm-up")
except ImportError as e:
    assert "call pipelines.worker_imports.ensure()" in str(e), e
    print("refused")
import json, zstandard  # anything else imports as usual meanwhile
w.ensure()              # waits for the background thread
assert all(m in sys.modules for m in w.MODULES)
import sklearn
from transformers import AutoModel
print("after ensure", AutoModel.__name__, w._GUARD not in sys.meta_path)
"""


def test_other_threads_wait_for_the_warm_up():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:2] == ["refused", "after ensure AutoModel True"], proc.stdout


def test_ensure_without_a_warm_up_imports_on_the_caller():
    script = ("from pipelines import worker_imports as w\nimport sys, threading\n"
              "ts = [threading.Thread(target=w.ensure) for _ in range(3)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n"
              "assert all(m in sys.modules for m in w.MODULES)\nprint('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
