"""A file server on 127.0.0.1 that fails a seeded fraction of its requests (for tests).

:class:`FaultyServer` serves the files under one folder (a synthetic world's COGs and STAC
JSON) over HTTP with range requests, as object stores do, and fails a chosen fraction of the
requests the way public clouds do:

- ``"500"``: HTTP 503 (a transient server error);
- ``"429"``: HTTP 429 with ``Retry-After`` (rate limiting);
- ``"reset"``: the connection is reset before any byte of the response;
- ``"stall"``: nothing is sent for ``stall_s`` seconds (past a client's timeout), then 503;
- ``"truncate"``: the headers promise the whole body, half of it comes, then the connection
  closes.

With ``upstream`` (e.g. the URL of a :class:`lames_cube.services.stac_api.StacApiServer`), the
server is also a STAC API: requests under ``/api/`` are forwarded there (and fail like the
rest), and in the answers the upstream's address becomes ``<this server>/api`` and
:data:`ASSET_ORIGIN` becomes this server's address. Items loaded upstream with asset hrefs
under :data:`ASSET_ORIGIN` (:func:`asset_hrefs`) are therefore read through this server too.

Which request fails is drawn from ``seed`` and the request's number, so a run is repeatable
in order. The server is bounded: after ``max_requests`` requests it answers 503 only, and a
watchdog stops it after ``max_seconds``; leaving the ``with`` block always stops it. It binds
to the loopback address only and serves nothing outside its folder.

Examples
--------
>>> import pathlib, tempfile, urllib.request
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "a.txt").write_bytes(b"0123456789")
>>> with FaultyServer(root) as server:
...     req = urllib.request.Request(server.url("a.txt"), headers={"Range": "bytes=2-5"})
...     urllib.request.urlopen(req).read()
b'2345'
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from lames_cube.errors import (
    FaultyServerError,
)

__all__ = ["ASSET_ORIGIN", "FAULTS", "FaultyServer", "FaultyServerError", "asset_hrefs"]

#: The kinds of failure :class:`FaultyServer` can inject.
FAULTS = ("500", "429", "reset", "stall", "truncate")
#: Placeholder origin of asset hrefs that a proxying :class:`FaultyServer` rewrites to itself.
ASSET_ORIGIN = "http://lames-assets.invalid"
_API = "/api"  # where the forwarded STAC API lives (a world's files are under /stac/)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")



def asset_hrefs(items: Sequence[dict], root: str | os.PathLike,
                origin: str = ASSET_ORIGIN) -> list[dict]:
    """Copies of STAC item dicts whose local asset hrefs under ``root`` become URLs under
    ``origin`` (a :class:`FaultyServer`'s ``url()``, or :data:`ASSET_ORIGIN` for items loaded
    into the STAC API it forwards to)."""

    root = Path(root).resolve()
    out = []
    for item in items:
        item = copy.deepcopy(item)
        for asset in item.get("assets", {}).values():
            href = Path(asset["href"]).resolve()
            if href.is_relative_to(root):
                asset["href"] = f"{origin.rstrip('/')}/{quote(href.relative_to(root).as_posix())}"
        out.append(item)
    return out


def _draw(seed: int, n: int) -> float:
    """A uniform number in [0, 1) from ``seed`` and the request number ``n``."""
    digest = hashlib.sha256(f"{seed}:{n}".encode()).digest()
    return struct.unpack(">Q", digest[:8])[0] / 2.0 ** 64


class FaultyServer:
    """Serve ``root`` on 127.0.0.1 and fail ``fail`` of the requests (see the module doc).

    Parameters
    ----------
    root
        The folder served; paths outside it are 404.
    fail
        Fraction of requests that fail, 0 to 1.
    kinds
        Failure kinds drawn from (uniformly, by the same seed): any of :data:`FAULTS`.
    seed
        Makes the choice of failing requests and their kinds repeatable.
    stall_s
        How long a stalled request sends nothing.
    retry_after
        The ``Retry-After`` seconds of a 429.
    max_requests, max_seconds
        Bounds: beyond them the server answers 503 only, or stops.
    upstream
        A STAC API to forward ``/api/…`` to (loopback only).
    only
        Fail exactly these request numbers (0 is the first request) instead of a seeded
        ``fail`` fraction; the kind is still drawn from ``seed``.

    Attributes
    ----------
    requests : int
        Requests received so far.
    faults : collections.Counter
        Failures injected so far, by kind.
    """

    def __init__(self, root: str | os.PathLike, *, fail: float = 0.0,
                 kinds: Sequence[str] = FAULTS, seed: int = 0, stall_s: float = 3.0,
                 retry_after: float = 0, max_requests: int = 100_000,
                 max_seconds: float = 900.0, upstream: str | None = None,
                 only: Sequence[int] | None = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FaultyServerError(f"root {str(root)!r} is not a folder; serve a world's "
                                    f"folder (write_world(...)).")
        if not 0 <= fail <= 1:
            raise FaultyServerError(f"fail={fail!r} must be a fraction between 0 and 1.")
        unknown = [k for k in kinds if k not in FAULTS]
        if unknown or not kinds:
            raise FaultyServerError(f"kinds {unknown or list(kinds)} are not failure kinds; "
                                    f"pick from {list(FAULTS)}.")
        self.fail, self.kinds, self.seed = float(fail), tuple(kinds), int(seed)
        self.stall_s, self.retry_after = float(stall_s), retry_after
        self.max_requests, self.max_seconds = int(max_requests), float(max_seconds)
        if upstream is not None and urlsplit(upstream).hostname not in ("127.0.0.1", "localhost"):
            raise FaultyServerError(f"upstream={upstream!r} is not a loopback URL; forward "
                                    "only to a local STAC API (StacApiServer(...).url).")
        self.upstream = upstream.rstrip("/") if upstream else None
        self.only = frozenset(int(n) for n in only) if only is not None else None
        self.requests = 0
        self.faults: Counter = Counter()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise FaultyServerError("the server is not running; use it in a with block.")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def stac_url(self) -> str:
        """The STAC API forwarded to ``upstream``."""
        if self.upstream is None:
            raise FaultyServerError("no upstream STAC API; pass upstream=StacApiServer.url.")
        return f"{self.origin}{_API}"

    def url(self, relative: str | os.PathLike = "") -> str:
        """The URL of a file under the root (a path relative to it, or an absolute one in it)."""
        path = Path(relative)
        if path.is_absolute():
            path = path.resolve().relative_to(self.root)
        return f"{self.origin}/{quote(path.as_posix())}"

    def start(self) -> FaultyServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        serve = threading.Thread(target=self._httpd.serve_forever, name="faulty-server",
                                 daemon=True)
        watchdog = threading.Thread(target=self._watchdog, name="faulty-watchdog", daemon=True)
        self._threads = [serve, watchdog]
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def _watchdog(self) -> None:
        if not self._stopped.wait(self.max_seconds):
            self.stop()

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._stopped.is_set() and self._httpd is None:
            return
        self._stopped.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------- decisions
    def _next(self) -> tuple[int, str | None]:
        """The request's number and the fault to inject (None: serve it)."""
        with self._lock:
            n = self.requests
            self.requests += 1
            if n >= self.max_requests:
                self.faults["limit"] += 1
                return n, "limit"
            chosen = (n in self.only if self.only is not None
                      else self.fail and _draw(self.seed, n) < self.fail)
            if chosen:
                kind = self.kinds[int(_draw(self.seed + 1, n) * len(self.kinds))]
                self.faults[kind] += 1
                return n, kind
            return n, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: clients that leave mid-answer (timeouts, resets) are what this server
        provokes."""


class _Handler(BaseHTTPRequestHandler):
    owner: FaultyServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _file(self) -> Path | None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        path = (self.owner.root / rel).resolve()
        if not path.is_relative_to(self.owner.root) or not path.is_file():
            return None
        return path

    def _error(self, status: int, headers: dict[str, str] | None = None) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        # read a request's body first, whatever the answer: an unread body would be taken for
        # the next request on this connection
        self._body = self.rfile.read(length) if length else None
        _, fault = self.owner._next()
        if fault == "reset":
            # SO_LINGER 0: close sends a TCP reset instead of an orderly end
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if fault == "stall":
            self.owner._stopped.wait(self.owner.stall_s)
            self._error(503)
            return
        if fault in ("500", "limit"):
            self._error(503)
            return
        if fault == "429":
            self._error(429, {"Retry-After": f"{self.owner.retry_after:g}"})
            return
        route = urlsplit(self.path).path
        if self.owner.upstream and (route == _API or route.startswith(_API + "/")):
            self._forward(fault)
            return
        path = self._file()
        if path is None:
            self._error(404)
            return
        data = path.read_bytes()
        content_type = ("application/json" if path.suffix == ".json"
                        else "application/octet-stream")
        start, end, status = 0, len(data) - 1, 200
        match = _RANGE.match(self.headers.get("Range", ""))
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)
            else:  # a suffix: the last N bytes
                start = max(0, len(data) - int(match[2]))
            if start >= len(data) or start > end:
                self._error(416, {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
        headers = {"Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, content_type, data[start:end + 1], headers, fault)

    def _forward(self, fault: str | None) -> None:
        """Forward an ``/api/…`` request upstream; point the links of the answer here."""

        owner = self.owner
        tail = self.path[len(_API):] or "/"
        body = self._body
        if body:
            body = body.replace(f"{owner.origin}{_API}".encode(), owner.upstream.encode())
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("content-type", "accept")}
        request = urllib.request.Request(owner.upstream + tail, data=body, headers=headers,
                                         method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, data = answer.status, answer.read()
                content_type = answer.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
            content_type = exc.headers.get("Content-Type", "application/json")
        except OSError as exc:  # the upstream itself failed: say so (502), not a silent drop
            status, data, content_type = 502, f"upstream: {exc}\n".encode(), "text/plain"
        data = (data.replace(owner.upstream.encode(), f"{owner.origin}{_API}".encode())
                .replace(ASSET_ORIGIN.encode(), owner.origin.encode()))
        self._send(status, content_type, data, {}, fault)

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str],
              fault: str | None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", content_type)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "truncate":
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()
