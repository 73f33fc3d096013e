"""Open a page in real headless Chromium and report what a reader's browser would see.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: fd 3 in,
fd 4 out, messages separated by NUL), so no port is opened and no extra Python package is
needed. `.ci/run` installs Debian's chromium where it is missing; tests skip without it.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    def __init__(self, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.profile = tempfile.mkdtemp(prefix="ecg_ray_chromium_")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Move the child's ends high first, so that dup2 onto 3 and 4 cannot clobber one of them.
        child_r, child_w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 100), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 100)

        def fds():  # in the child, before exec: its DevTools ends become fds 3 and 4 (inheritable, as dup2 makes them)
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)
            os.close(child_r)
            os.close(child_w)

        self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=None if os.environ.get("ECG_RAY_BROWSER_LOG") else subprocess.DEVNULL)
        for fd in (to_chrome_r, from_chrome_w, child_r, child_w):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_for(self, method: str) -> dict:
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self._read()

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"Chromium said nothing for {self.timeout_s} s")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self._to_chrome, self._from_chrome):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


IMAGES = """JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
  natural: [i.naturalWidth, i.naturalHeight], shown: [i.getBoundingClientRect().width, i.getBoundingClientRect().height]})))"""


def load(url: str) -> dict:
    """Load `url` and return its console errors, exceptions, requests, images and title."""
    browser = Chromium()
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_for("Page.loadEventFired")
        images = json.loads(browser.send("Runtime.evaluate", {"expression": IMAGES, "returnByValue": True},
                                         session=session)["result"]["value"])
        title = browser.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                             session=session)["result"]["value"]
        events = browser.events
        return {
            "title": title,
            "images": images,
            "console_errors": [e["params"] for e in events if e["method"] == "Runtime.consoleAPICalled"
                               and e["params"].get("type") in ("error", "assert")]
                              + [e["params"]["entry"] for e in events if e["method"] == "Log.entryAdded"
                                 and e["params"]["entry"].get("level") == "error"],
            "exceptions": [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"],
            "requests": [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"],
        }
    finally:
        browser.close()
