"""Live progress that works on every runner: workers write small heartbeat files under the build's staging
folder, the driver reads them every ``INTERVAL_S`` seconds and prints one line per stage and source.

Why files and not runner metrics: Beam's local runner reports metrics only when the pipeline ends, and
Dataflow/Spark/Flink each expose them differently; the output location is the one thing every worker and
the driver always share. A heartbeat is a few hundred bytes written at most every ``WORKER_EVERY_S``
seconds per task.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from typing import Callable, Mapping, Optional

from contract import fsio, layout

INTERVAL_S = 20.0
WORKER_EVERY_S = 5.0


def heartbeat_dir(out: str) -> str:
    return layout.join(layout.staging_root(out), "progress")


class Heartbeat:
    """One task's progress: ``update`` often (it writes at most every WORKER_EVERY_S), ``finish`` once."""

    def __init__(self, out: str, stage: str, source: str, task: str, total_bytes: int = 0):
        self.path = layout.join(heartbeat_dir(out), f"{stage}--{source}--{task}.json")
        self.rec = {"stage": stage, "source": source, "task": task, "docs": 0, "text_bytes": 0,
                    "input_bytes": 0, "total_bytes": total_bytes, "done": False, "t0": time.time()}
        self._last = 0.0

    def update(self, force: bool = False, **values) -> None:
        self.rec.update(values)
        now = time.time()
        if force or now - self._last >= WORKER_EVERY_S:
            self._last = now
            self.rec["t"] = now
            try:
                fsio.write_bytes(self.path, json.dumps(self.rec).encode())
            except OSError:
                pass  # progress is best effort; the build's outputs are not

    def finish(self, **values) -> None:
        self.update(force=True, done=True, **values)


def read_heartbeats(out: str) -> list[dict]:
    root = heartbeat_dir(out)
    if not fsio.has_files(root):
        return []
    recs = []
    for rel in fsio.list_files(root):
        try:
            recs.append(json.loads(fsio.read_bytes(layout.join(root, rel))))
        except (OSError, ValueError):
            continue  # being rewritten
    return recs


def _fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def progress_lines(recs: list[dict], totals: Mapping[str, int], started: float, now: float,
                   parts: Optional[Mapping[str, int]] = None) -> list[str]:
    """One line per (stage, source) with work, plus an ALL line: docs, MB of text, MB/s, share of input,
    parts done/running/queued and an ETA.

    The ETA divides what is left of a source (running parts' remainders and the parts not started yet) by
    the rate its running parts read at now; a source whose remaining parts all wait for a worker says
    "queued" instead of a number extrapolated from work that has stopped. ``parts``: source -> parts in
    the build (the read stage's queue); without it parts not yet started are not counted."""
    parts = dict(parts or {})
    groups: dict = defaultdict(lambda: {"docs": 0, "text": 0, "inp": 0, "tasks": 0, "done": 0, "t0": now,
                                        "run_rate": 0.0})
    for r in recs:
        for key in ((r["stage"], r["source"]), (r["stage"], "ALL")):
            g = groups[key]
            g["docs"] += r.get("docs", 0)
            g["text"] += r.get("text_bytes", 0)
            g["inp"] += r.get("input_bytes", 0)
            g["tasks"] += 1
            g["done"] += bool(r.get("done"))
            g["t0"] = min(g["t0"], r.get("t0", now))
            if not r.get("done"):
                g["run_rate"] += r.get("input_bytes", 0) / max(1.0, now - r.get("t0", now))
    lines = []
    for (stage, source), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == "ALL", kv[0][1])):
        elapsed = max(1.0, now - (started if source == "ALL" else g["t0"]))  # a source's rate from its first task
        total = totals.get(source, sum(totals.values()) if source == "ALL" else 0)
        share = min(1.0, g["inp"] / total) if total else None
        n_parts = (sum(parts.values()) if source == "ALL" else parts.get(source)) if stage == "read" else None
        running = g["tasks"] - g["done"]
        queued = max(0, n_parts - g["tasks"]) if n_parts is not None else 0
        left = total - g["inp"] if total else None
        if share == 1 or (left is not None and left <= 0 and not running and not queued):
            eta = "0m00s"
        elif running == 0 and queued:
            eta = f"queued ({queued} part{'s' if queued > 1 else ''} wait for a worker)"
        elif left is not None and g["run_rate"] > 0:
            eta = _fmt_eta(left / g["run_rate"])
        elif left is not None and g["inp"] > 0:
            eta = _fmt_eta(left / (g["inp"] / elapsed))
        else:
            eta = "-"
        tasks = (f"parts {g['done']} done, {running} running, {queued} queued" if n_parts is not None
                 else f"tasks {g['done']}/{g['tasks']}")
        lines.append(f"  {stage:<8} {source:<17} {g['docs']:>10,} docs {g['text'] / 1e6:>9,.1f} MB text "
                     f"{g['text'] / 1e6 / elapsed:>6.2f} MB/s  {'' if share is None else f'{100 * share:5.1f}% of input'}"
                     f"  {tasks}  ETA {eta}")
    return lines


class Reporter:
    """Driver side: a daemon thread printing progress lines every INTERVAL_S seconds until stopped."""

    def __init__(self, out: str, totals: Mapping[str, int], write: Callable[[str], None] = None,
                 interval: float = INTERVAL_S, parts: Optional[Mapping[str, int]] = None):
        self.out, self.totals, self.interval, self.parts = out, dict(totals), interval, dict(parts or {})
        self.write = write or (lambda s: print(s, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self.started = time.time()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def report(self) -> None:
        now = time.time()
        recs = [r for r in read_heartbeats(self.out) if r.get("t", now) >= self.started - 1]
        lines = progress_lines(recs, self.totals, self.started, now, self.parts)
        head = f"[progress {time.strftime('%H:%M:%S')}, {now - self.started:,.0f} s]"
        self.write(head + ("\n" + "\n".join(lines) if lines else "  starting workers (no part finished reading yet)"))

    def stage_times(self) -> str:
        """'stage times: read 12.3 s (from start), write ...' from the heartbeats' first and last records."""
        recs = [r for r in read_heartbeats(self.out) if r.get("t", 0) >= self.started - 1]
        spans: dict = {}
        for r in recs:
            lo, hi = spans.get(r["stage"], (r["t0"], r["t"]))
            spans[r["stage"]] = (min(lo, r["t0"]), max(hi, r["t"]))
        end = time.time()
        parts = [f"{st} {lo - self.started:,.0f}-{hi - self.started:,.0f} s" for st, (lo, hi) in sorted(spans.items(), key=lambda kv: kv[1])]
        reads = [r for r in recs if r["stage"] == "read" and r.get("done")]
        resumed = sum(1 for r in reads if r.get("resumed"))
        return (f"stage times (seconds from start): {', '.join(parts)}; end {end - self.started:,.0f} s; "
                f"parts resumed from an earlier run: {resumed}/{len(reads)}")

    def _run(self) -> None:
        first = min(self.interval, 15.0)
        if self._stop.wait(first):
            return
        while True:
            try:
                self.report()
            except Exception as e:  # never let progress kill the build
                self.write(f"[progress] unavailable: {type(e).__name__}: {e}")
            if self._stop.wait(self.interval):
                return
