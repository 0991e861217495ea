"""Open a page in headless Chromium and report what a reader would see (for report tests).

:func:`inspect_page` starts Debian's ``chromium`` headless with the DevTools protocol on a
free port, loads a file, and over the protocol (``websocket-client``) collects console
messages, uncaught exceptions and log entries of level error (e.g. an image that fails to
load), evaluates a script in the page, and saves a PNG screenshot. :func:`ensure_chromium`
installs the browser with apt when it is missing and the process runs as root.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import websocket

from lames_cube.errors import (
    BrowserError,
)

__all__ = ["BrowserError", "ensure_chromium", "inspect_page"]

INSTALL = "apt-get update && apt-get install -y chromium"



def ensure_chromium() -> str:
    """The path of ``chromium``; installed with apt first when missing and running as root.

    Raises
    ------
    BrowserError
        Chromium is missing and cannot be installed here (not root, or apt failed).
    """
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        raise BrowserError(f"chromium is not installed and this user cannot install it; run "
                           f"as root: {INSTALL}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise BrowserError(f"{' '.join(cmd)} failed ({done.returncode}): "
                               f"{done.stderr[-500:]}")
    found = shutil.which("chromium")
    if not found:
        raise BrowserError(f"apt installed chromium but it is not on PATH; try: {INSTALL}")
    return found


def _port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            text = (profile / "chromium.log").read_text()[-800:]
            raise BrowserError(f"chromium exited with {proc.returncode} before it listened: "
                               f"{text}")
        time.sleep(0.1)
    raise BrowserError(f"chromium did not open its DevTools port within {timeout:.0f} s")


def inspect_page(path: str | os.PathLike, screenshot: str | os.PathLike, *,
                 script: str = "document.title", width: int = 1280, height: int = 2400,
                 timeout: float = 60.0) -> dict[str, Any]:
    """Load ``path`` in headless Chromium, run ``script`` and save a screenshot.

    Parameters
    ----------
    path
        An HTML file.
    screenshot
        Where the PNG screenshot (the first ``width`` x ``height`` px) goes.
    script
        A JavaScript expression evaluated after the page loaded; its value must be JSON.
    width, height
        The window.
    timeout
        Seconds for the browser to start and for the page to load.

    Returns
    -------
    dict
        ``value`` (the script's), ``console`` (every console message: ``{"type", "text"}``),
        ``errors`` (console errors, uncaught exceptions and error log entries, as text).

    Raises
    ------
    BrowserError
        No chromium, or it did not start, load or answer in time.
    """

    exe = ensure_chromium()
    url = Path(path).resolve().as_uri()
    # chromium's helper processes may still write to the profile while it goes
    with tempfile.TemporaryDirectory(prefix="lames-chromium-", ignore_cleanup_errors=True) as tmp:
        profile = Path(tmp)
        log = (profile / "chromium.log").open("w")  # never a pipe: a full one blocks chromium
        proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        ws = None
        try:
            port = _port(profile, proc, timeout)
            targets = []
            end = time.monotonic() + timeout
            while not targets and time.monotonic() < end:
                from urllib.request import urlopen  # local: optional, guarded

                with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                    targets = [t for t in json.load(resp) if t.get("type") == "page"]
                time.sleep(0.1)
            if not targets:
                raise BrowserError("chromium opened no page target")
            ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"],
                                             timeout=timeout, suppress_origin=True)
            counter = itertools.count(1)
            events: list[dict[str, Any]] = []

            def call(method: str, **params: Any) -> dict[str, Any]:
                msg_id = next(counter)
                ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv())
                    if msg.get("id") == msg_id:
                        if "error" in msg:
                            raise BrowserError(f"{method} failed: {msg['error']}")
                        return msg.get("result", {})
                    events.append(msg)

            for domain in ("Page", "Runtime", "Log"):
                call(f"{domain}.enable")
            call("Page.navigate", url=url)
            end = time.monotonic() + timeout
            while not any(e.get("method") == "Page.loadEventFired" for e in events):
                if time.monotonic() > end:
                    raise BrowserError(f"{url} did not finish loading within {timeout:.0f} s")
                events.append(json.loads(ws.recv()))
            value = call("Runtime.evaluate", expression=f"JSON.stringify({script})",
                         returnByValue=True, awaitPromise=True)
            shot = call("Page.captureScreenshot", format="png")
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        except (OSError, websocket.WebSocketException) as exc:  # URLError is an OSError
            raise BrowserError(f"talking to chromium failed: {exc!r}; its log: "
                               f"{(profile / 'chromium.log').read_text()[-800:]}") from exc
        finally:  # the socket, then the browser and its helpers (its own process group)
            import signal  # local: optional, guarded

            if ws is not None:
                ws.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.close()
    console, errors = [], []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            console.append({"type": params["type"], "text": text})
            if params["type"] in ("error", "assert"):
                errors.append(text)
        elif method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"].get("text", ""))
    result = value.get("result", {})
    if result.get("subtype") == "error" or "value" not in result:
        raise BrowserError(f"the script {script!r} failed in the page: "
                           f"{result.get('description', result)}")
    return {"value": json.loads(result["value"]), "console": console, "errors": errors}
