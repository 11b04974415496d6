"""Headless Chromium for the report tests: find (or, best effort, install) Debian's ``chromium`` and drive it
over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ended by NUL on file
descriptors 3 and 4), so no port is opened and no websocket package is needed.

``render(path)`` loads a local HTML file and returns what the page did: console messages, uncaught
exceptions, log entries (a blocked fetch or a Content-Security-Policy violation is one), the value of a
JavaScript expression evaluated in the page, and a PNG screenshot.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> Optional[str]:
    env = os.environ.get("MPTDATA_CHROMIUM")
    if env and os.path.exists(env):
        return env
    for n in NAMES:
        p = shutil.which(n)
        if p:
            return p
    return None


def ensure_chromium(timeout: float = 900) -> tuple[Optional[str], str]:
    """(path, why-not): the browser, installed with apt-get when missing and we may (root, apt present,
    ``MPTDATA_NO_APT`` unset). Never raises: a failed install is a reason to skip."""
    path = find_chromium()
    if path:
        return path, ""
    if os.environ.get("MPTDATA_NO_APT"):
        return None, "chromium not installed and MPTDATA_NO_APT is set"
    if not shutil.which("apt-get"):
        return None, "chromium not installed and no apt-get here (install Debian's chromium package)"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return None, "chromium not installed and not root (run: apt-get update && apt-get install -y chromium)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        quick = ["-o", "Acquire::http::Timeout=20", "-o", "Acquire::https::Timeout=20", "-o", "Acquire::Retries=1"]
        for cmd in (["apt-get", *quick, "update", "-q"],
                    ["apt-get", *quick, "install", "-y", "-q", "--no-install-recommends", "chromium"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
                return None, f"{' '.join(cmd)} failed ({proc.returncode}): {tail[0]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"installing chromium failed: {type(e).__name__}: {e}"
    path = find_chromium()
    return (path, "") if path else (None, "apt-get installed chromium but no chromium binary was found")


class _Pipe:
    """The DevTools protocol over the browser's pipe."""

    def __init__(self, proc: subprocess.Popen, wfd: int, rfd: int):
        self.proc, self.wfd, self.rfd = proc, wfd, rfd
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
             timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        deadline = time.time() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.time() + timeout
        while True:
            m = self._read(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            r, _, _ = select.select([self.rfd], [], [], min(left, 1.0))
            if r:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed its pipe (exit {self.proc.poll()})")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)


def _launch(binary: str, profile: str, width: int, height: int) -> _Pipe:
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # the browser reads commands on fd 3 and writes answers on fd 4
    hi_r, hi_w = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)

    def child():
        os.dup2(hi_r, 3)
        os.dup2(hi_w, 4)

    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                             f"--window-size={width},{height}", "about:blank"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            close_fds=False, preexec_fn=child)  # close_fds would close 3 and 4 after child()
    for fd in (to_browser_r, from_browser_w, hi_r, hi_w):
        os.close(fd)
    return _Pipe(proc, to_browser_w, from_browser_r)


def render(binary: str, html_path: str, expression: str = "1", width: int = 1280, height: int = 900,
           full_page: bool = False, timeout: float = 90) -> dict:
    """Load ``html_path`` in a fresh headless browser; returns ``{"console": [...], "exceptions": [...],
    "log": [...], "value": <expression's value>, "png": bytes}``. ``console`` holds (type, text) of
    console calls, ``log`` (level, text, url) of browser log entries (network, security/CSP, ...)."""
    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="mptdata-chromium-") as profile:
        pipe = _launch(binary, profile, width, height)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            sid = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=sid)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=sid)
            nav = pipe.send("Page.navigate", {"url": url}, session=sid, timeout=timeout)
            if nav.get("errorText"):
                raise RuntimeError(f"navigation to {url} failed: {nav['errorText']}")
            pipe.wait_event("Page.loadEventFired", timeout=timeout)
            res = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=sid)
            value = (res.get("result") or {}).get("value")
            shot = {"format": "png"}
            if full_page:
                h = pipe.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight",
                                                   "returnByValue": True}, session=sid)["result"]["value"]
                pipe.send("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": int(h), "deviceScaleFactor": 1, "mobile": False}, session=sid)
            png = base64.b64decode(pipe.send("Page.captureScreenshot", shot, session=sid, timeout=timeout)["data"])
            time.sleep(0.2)  # late log entries
            try:
                pipe.send("Runtime.evaluate", {"expression": "0"}, session=sid, timeout=5)
            except Exception:  # noqa: BLE001
                pass
            events = [e for e in pipe.events if e.get("sessionId") in (sid, None)]
            console = [(e["params"]["type"], " ".join(str(a.get("value", a.get("description", "")))
                                                     for a in e["params"].get("args", [])))
                       for e in events if e.get("method") == "Runtime.consoleAPICalled"]
            exceptions = [e["params"]["exceptionDetails"].get("text", "") for e in events
                          if e.get("method") == "Runtime.exceptionThrown"]
            log = [(e["params"]["entry"]["level"], e["params"]["entry"].get("text", ""), e["params"]["entry"].get("url", ""))
                   for e in events if e.get("method") == "Log.entryAdded"]
            try:
                pipe.send("Browser.close", timeout=10)
            except Exception:  # noqa: BLE001 - it may close the pipe before answering
                pass
            return {"console": console, "exceptions": exceptions, "log": log, "value": value, "png": png}
        finally:
            try:
                pipe.proc.wait(10)
            except subprocess.TimeoutExpired:
                pipe.proc.kill()
                pipe.proc.wait(10)
            for fd in (pipe.wfd, pipe.rfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
