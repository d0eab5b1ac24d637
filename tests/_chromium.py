"""A headless Chromium driven through the DevTools protocol over ``--remote-debugging-pipe``.

Fds 3/4 carry NUL-separated JSON: no port, no websocket library, nothing on the network. Used by
the HTML report tests and the labelling page tests (``Chromium``, and ``Page`` for one tab).
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)


class Chromium:
    """A headless Chromium page driven over the DevTools pipe."""

    def __init__(self, user_data_dir: Path) -> None:
        cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads them on fd 3
        res_r, res_w = os.pipe()  # Chromium writes replies on fd 4; we read them
        # Park the child's ends above the low fds so dup2 onto 3/4 cannot clobber them.
        high_r = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 50)
        high_w = fcntl.fcntl(res_w, fcntl.F_DUPFD, 50)
        os.close(cmd_r)
        os.close(res_w)

        def child_fds():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}",
                "--remote-debugging-pipe", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=child_fds, pass_fds=(3, 4),
        )
        os.close(high_r)
        os.close(high_w)
        self._out = os.fdopen(cmd_w, "wb", buffering=0)
        self._in = os.fdopen(res_r, "rb", buffering=0)
        self._next_id = 0
        self.events: list = []
        self._replies: "queue.Queue" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._in.read(65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                self._replies.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    self._replies.put(msg)
                else:
                    self.events.append(msg)

    def send(self, method: str, params=None, session=None, timeout: float = 60.0):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._replies.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError("Chromium closed the DevTools pipe: " + self.stderr())
            if reply["id"] == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def wait_event(self, method: str, session: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return ev
            time.sleep(0.05)
        raise TimeoutError(f"no {method} within {timeout}s")

    def stderr(self) -> str:
        return self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._reader.join(timeout=10)  # Chromium exited: its end of the pipe is closed
        if not self._reader.is_alive():
            self._in.close()
        self.proc.stderr.close()




# Virtual key codes for the keys the pages use (DevTools wants them for non-text keys).
_KEY_CODES = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "Enter": 13, "Escape": 27}


class Page:
    """One tab of a :class:`Chromium`: navigate, evaluate JavaScript, press keys, collect errors."""

    def __init__(self, browser: Chromium) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, params=None, timeout: float = 60.0):
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def _loads(self) -> int:
        return sum(1 for e in self.events() if e["method"] == "Page.loadEventFired")

    def _load(self, method: str, params=None) -> None:
        before = self._loads()
        self.send(method, params)
        deadline = time.monotonic() + 60
        while self._loads() == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Page.loadEventFired after {method}")
            time.sleep(0.05)

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self._load("Page.navigate", {"url": url})

    def reload(self) -> None:
        self._load("Page.reload", {"ignoreCache": True})

    def evaluate(self, expression: str, await_promise: bool = False):
        """The JSON value of ``expression`` in the page (raises on a JavaScript exception)."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": await_promise})
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still falsy after {timeout}s")
            time.sleep(0.05)

    def press(self, key: str) -> None:
        """Press and release ``key`` (a character such as ``"1"``, or ``"ArrowRight"``)."""
        if key in _KEY_CODES:
            down = {"type": "rawKeyDown", "key": key, "code": key, "windowsVirtualKeyCode": _KEY_CODES[key]}
        else:
            down = {"type": "keyDown", "key": key, "text": key, "windowsVirtualKeyCode": ord(key.upper())}
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key,
                                             "windowsVirtualKeyCode": down["windowsVirtualKeyCode"]})

    def events(self) -> list:
        return [e for e in list(self.browser.events) if e.get("sessionId") == self.session]

    def errors(self) -> list:
        """Exceptions, console errors, error log entries and failed loads seen so far."""
        return [
            e for e in self.events()
            if e["method"] == "Runtime.exceptionThrown"
            or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
            or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
            or e["method"] == "Network.loadingFailed"
        ]

    def urls(self) -> list:
        return [e["params"]["request"]["url"] for e in self.events() if e["method"] == "Network.requestWillBeSent"]
