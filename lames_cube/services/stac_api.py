"""A real STAC API on 127.0.0.1: PostgreSQL + pgstac + stac-fastapi-pgstac, run from Python.

The API server needs packages whose pins conflict with lames_cube's own, so it runs from a
separate virtual environment, as a subprocess. PostgreSQL comes from the operating system
(Debian's ``postgresql`` and ``postgresql-NN-postgis-3``).

Preparing the host is one explicit step, ``lames-cube stac install``
(:func:`prepare_server_host`): as root it installs PostgreSQL/PostGIS with apt-get when missing
and creates the ``postgres`` system user; it builds the server venv. Nothing else here changes
the host: :class:`StacApiServer` and the tests only check (:func:`check_server_env`,
``lames-cube stac check``) and raise :class:`~lames_cube.errors.StacServerError` naming the
command to run when something is missing.

:class:`StacApiServer` makes a throw-away database in a temporary directory, loads STAC
collections and items into it with ``pypgstac`` and serves them with ``uvicorn``, both on free
loopback ports. Everything it starts is stopped, and the directory removed, on
:meth:`StacApiServer.stop`, on leaving the ``with`` block, at interpreter exit, and (for the
processes) when the Python process that started them dies.

Examples
--------
A tiny synthetic world served over a real STAC API (a host prepared by ``lames-cube stac
install``; about 4 s):

>>> import tempfile
>>> import pystac_client
>>> from lames_cube.services.stac_api import StacApiServer
>>> from lames_cube.synthetic import WorldSpec, write_world
>>> from lames_cube.synthetic.write import read_world_stac
>>> spec = WorldSpec(site_ids=("2058",), years=(2021,), scenes_per_year=1, grid_km=1,
...                  tile_px=100, margin_m=100, hidden_mines=False)
>>> with tempfile.TemporaryDirectory() as tmp:
...     collection, items = read_world_stac(write_world(f"{tmp}/w", spec, workers=1,
...                                                     progress=False))
...     with StacApiServer([collection], items) as server:
...         found = pystac_client.Client.open(server.url).search(max_items=10).item_collection()
>>> sorted(i.id for i in found) == sorted(i["id"] for i in items)
True
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from lames_cube._atomic import atomic_path, atomic_write_text
from lames_cube.errors import StacServerError
from lames_cube.services.host import (
    SCRUBBED_ENV,
    OsUser,
    PostgresInstall,
    check_server_env,
    pg_os_user,
    require_postgres,
    say,
    tail,
    venv_python,
)

#: The ASGI application factory of stac-fastapi-pgstac 7.2.0 (``uvicorn --factory``).
APP_FACTORY = "stac_fastapi.pgstac.app:create_app"
_PG_DB_USER = "postgres"
_PG_DATABASE = "postgres"
_PR_SET_PDEATHSIG = 1

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _die_with_parent(signum: int) -> Any:
    """Return a preexec_fn that has the kernel send ``signum`` to the child when its parent dies."""

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)

    return preexec


def _stop_process(proc: subprocess.Popen | None, first_signal: int, grace: float) -> None:
    """Signal ``proc``, wait, escalate to SIGKILL of its whole process group, and reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(first_signal)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    # Anything the process left behind in its own session/process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _check_stac_dicts(collections: Any, items: Any) -> tuple[list[dict], list[dict]]:
    if not isinstance(collections, (list, tuple)) or not all(
        isinstance(c, dict) for c in collections
    ):
        raise StacServerError(
            f"collections must be a list of STAC collection dicts, got {type(collections).__name__}."
        )
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, dict) for i in items):
        raise StacServerError(
            f"items must be a list of STAC item dicts, got {type(items).__name__}."
        )
    ids = []
    for collection in collections:
        cid = collection.get("id")
        if not isinstance(cid, str) or not cid:
            raise StacServerError(f"Every collection needs a string 'id'; got {cid!r}.")
        ids.append(cid)
    if len(set(ids)) != len(ids):
        raise StacServerError(
            f"Collection ids must be unique; got {ids}. Rename or drop the repeats."
        )
    for item in items:
        if not isinstance(item.get("id"), str) or not item.get("id"):
            raise StacServerError(f"Every item needs a string 'id'; got {item.get('id')!r}.")
        if item.get("collection") not in ids:
            raise StacServerError(
                f"Item {item['id']!r} has collection {item.get('collection')!r}, which is not one "
                f"of the collections given ({ids}). Set item['collection'] to one of them."
            )
    return list(collections), list(items)


def _write_ndjson(path: Path, records: list[dict]) -> None:
    try:
        with atomic_path(path) as tmp, open(tmp, "w") as handle:
            for record in records:
                handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    except (TypeError, ValueError) as exc:
        raise StacServerError(f"A STAC record is not JSON-serialisable: {exc}. Convert its "
                              "values to JSON types (e.g. item.to_dict() for pystac objects).") from exc


class StacApiServer:
    """A throw-away STAC API (stac-fastapi-pgstac over PostgreSQL + pgstac) on 127.0.0.1.

    Parameters
    ----------
    collections
        STAC collection dicts (each with an ``id``), loaded first.
    items
        STAC item dicts, each with ``collection`` set to one of the collections' ids. Asset
        hrefs (local absolute paths included) come back unchanged through the API.
    port
        The API's port on 127.0.0.1; None picks a free one. PostgreSQL always gets a free port.
    workdir
        Directory in which the temporary directory (database, logs, ndjson files) is made;
        None means the system temp dir. When running as root it must be reachable by the
        ``postgres`` OS user.
    venv_dir
        The server venv (see :func:`check_server_env`); None means the default.
    startup_timeout
        Seconds to wait for PostgreSQL and for the API to answer.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:PORT`` once started.
    api_port, pg_port : int or None
        The ports in use once started.

    Raises
    ------
    StacServerError
        Bad collections/items, a busy ``port``, a host not prepared by ``lames-cube stac
        install`` (start() installs nothing), or any start-up step that failed (the message
        has the tail of the logs).

    Examples
    --------
    See the module's example: ``with StacApiServer([collection], items) as server:`` then
    ``pystac_client.Client.open(server.url)``.
    """

    def __init__(
        self,
        collections: list[dict],
        items: list[dict],
        *,
        port: int | None = None,
        workdir: str | os.PathLike | None = None,
        venv_dir: str | os.PathLike | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self._collections, self._items = _check_stac_dicts(collections, items)
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
        ):
            raise StacServerError(f"port must be an int in 1..65535 or None; got {port!r}.")
        if not isinstance(startup_timeout, (int, float)) or startup_timeout <= 0:
            raise StacServerError(
                f"startup_timeout must be a positive number; got {startup_timeout!r}."
            )
        self._requested_port = port
        self._workdir = Path(workdir) if workdir is not None else None
        self._venv_dir = venv_dir
        self._startup_timeout = float(startup_timeout)
        self._tmp: Path | None = None
        self._pg_proc: subprocess.Popen | None = None
        self._api_proc: subprocess.Popen | None = None
        self._lock = threading.RLock()
        self.api_port: int | None = None
        self.pg_port: int | None = None
        self._url: str | None = None

    # -- public -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API's root URL, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._url is None:
            raise StacServerError("The STAC API server is not running; call start() or use `with`.")
        return self._url

    @property
    def running(self) -> bool:
        """True while the API and database processes are alive."""
        return (
            self._api_proc is not None
            and self._api_proc.poll() is None
            and self._pg_proc is not None
            and self._pg_proc.poll() is None
        )

    @property
    def tmpdir(self) -> Path | None:
        """The temporary directory (database, logs, ndjson files) while running, else None."""
        return self._tmp

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running ``api`` (uvicorn) and ``postgres`` (postmaster) processes."""
        found = {"api": self._api_proc, "postgres": self._pg_proc}
        return {name: proc.pid for name, proc in found.items() if proc is not None}

    def start(self) -> StacApiServer:
        """Create the database, load the records and start the API; return self.

        Raises
        ------
        StacServerError
            Already started, the host is not prepared (the message says to run
            ``lames-cube stac install``; nothing is installed here), or a step failed
            (everything started so far is stopped first).
        """
        with self._lock:
            if self._tmp is not None:
                raise StacServerError("This StacApiServer is already started; stop() it first.")
            if self._requested_port is not None and not _port_is_free(self._requested_port):
                raise StacServerError(
                    f"Port {self._requested_port} on 127.0.0.1 is already in use; pass another "
                    "port or port=None to pick a free one."
                )
            started = time.monotonic()
            venv = check_server_env(venv_dir=self._venv_dir)
            pg = require_postgres()
            atexit.register(self.stop)
            try:
                self._start(venv, pg)
            except BaseException:
                self.stop()
                raise
            say(
                f"STAC API at {self._url} ({len(self._collections)} collection(s), "
                f"{len(self._items)} item(s)) started in {time.monotonic() - started:.1f} s"
            )
            return self

    def stop(self) -> None:
        """Stop the API and PostgreSQL and remove the temporary directory. Idempotent."""
        with self._lock:
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            api, pg = self._api_proc, self._pg_proc
            self._api_proc = self._pg_proc = None
            _stop_process(api, signal.SIGTERM, grace=10)
            # SIGINT is PostgreSQL's "fast" shutdown: it ends sessions and exits cleanly.
            _stop_process(pg, signal.SIGINT, grace=20)
            tmp, self._tmp = self._tmp, None
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                if tmp.exists():
                    say(f"warning: could not remove {tmp}")
            self._url = None
            self.api_port = self.pg_port = None

    def __enter__(self) -> StacApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self._url if self._url else "stopped"
        return (
            f"StacApiServer({len(self._collections)} collection(s), {len(self._items)} "
            f"item(s), {state})"
        )

    def logs(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the PostgreSQL and API logs (while running)."""
        if self._tmp is None:
            return "(not running)"
        return (
            f"PostgreSQL log:\n{tail(self._tmp / 'postgres.log', lines)}\n"
            f"API log:\n{tail(self._tmp / 'api.log', lines)}"
        )

    def raise_if_dead(self) -> None:
        """Raise StacServerError (with the logs) if the API or PostgreSQL process has exited."""
        for name, proc in (("API (uvicorn)", self._api_proc), ("PostgreSQL", self._pg_proc)):
            if proc is not None and proc.poll() is not None:
                raise StacServerError(
                    f"The STAC {name} process exited with code {proc.returncode}.\n{self.logs()}"
                )

    # -- internals ----------------------------------------------------------------------------

    def _make_tmp(self, user: OsUser) -> Path:
        if self._workdir is not None:
            self._workdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="lames-stacapi-", dir=self._workdir)).resolve()
        self._tmp = tmp
        if os.geteuid() == 0:
            os.chown(tmp, user.uid, user.gid)
            probe = subprocess.run(
                ["test", "-w", str(tmp), "-a", "-x", str(tmp)],
                user=user.uid,
                group=user.gid,
                extra_groups=[],
                cwd="/",
                check=False,
            )
            if probe.returncode != 0:
                raise StacServerError(
                    f"The OS user {user.name!r} (PostgreSQL refuses to run as root) cannot reach "
                    f"{tmp}: a parent directory is closed to it. Pass workdir= a directory "
                    "under /tmp (or another one it can traverse)."
                )
        return tmp

    def _spawn(
        self,
        cmd: list[str],
        log: Path,
        *,
        env: dict[str, str],
        cwd: Path,
        as_user: OsUser | None,
        death_signal: int = signal.SIGKILL,
    ) -> subprocess.Popen:
        kwargs: dict[str, Any] = {}
        if as_user is not None and os.geteuid() == 0:
            kwargs.update(user=as_user.uid, group=as_user.gid, extra_groups=[])
        if threading.current_thread() is threading.main_thread():
            # Kill the child if this process dies without running stop() (e.g. SIGKILL). Only from
            # the main thread: the signal fires when the *thread* that forked exits.
            kwargs["preexec_fn"] = _die_with_parent(death_signal)
        with open(log, "ab") as handle:
            return subprocess.Popen(
                cmd,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
                **kwargs,
            )

    def _run_step(
        self,
        cmd: list[str],
        what: str,
        log: Path,
        *,
        env: dict[str, str],
        cwd: Path,
        as_user: OsUser | None = None,
        timeout: float = 300,
    ) -> None:
        proc = self._spawn(cmd, log, env=env, cwd=cwd, as_user=as_user)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _stop_process(proc, signal.SIGTERM, grace=5)
            raise StacServerError(
                f"{what} did not finish within {timeout:.0f} s.\nLog ({log.name}):\n{tail(log)}"
            ) from exc
        if code != 0:
            raise StacServerError(
                f"{what} failed with exit code {code}.\nLog ({log.name}):\n{tail(log)}"
            )

    def _wait_for(self, ready: Any, proc: subprocess.Popen, what: str, log: Path) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if ready():
                return
            if proc.poll() is not None:
                raise StacServerError(
                    f"{what} exited with code {proc.returncode} while starting."
                    f"\nLog ({log.name}):\n{tail(log)}"
                )
            if time.monotonic() > deadline:
                raise StacServerError(
                    f"{what} did not answer within {self._startup_timeout:g} s."
                    f"\nLog ({log.name}):\n{tail(log)}"
                )
            time.sleep(0.1)

    def _start(self, venv: Path, pg: PostgresInstall) -> None:
        user = pg_os_user()
        tmp = self._make_tmp(user)
        sockdir = tmp / "sock"
        sockdir.mkdir()
        pwfile = tmp / "pgpass"
        password = secrets.token_urlsafe(24)
        atomic_write_text(pwfile, password + "\n")
        if os.geteuid() == 0:
            os.chown(sockdir, user.uid, user.gid)
            os.chown(pwfile, user.uid, user.gid)
        os.chmod(pwfile, 0o600)

        base_env = {
            k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV and not k.startswith("PG")
        }
        pg_env = dict(base_env, LC_ALL="C", LANG="C", HOME=str(tmp))
        pg_env.pop("LANGUAGE", None)
        pg_log = tmp / "postgres.log"

        say(f"initdb (PostgreSQL {pg.major}) in {tmp}")
        self._run_step(
            [
                str(pg.bindir / "initdb"),
                "-D",
                str(tmp / "pgdata"),
                "-U",
                _PG_DB_USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
            tmp / "initdb.log",
            env=pg_env,
            cwd=tmp,
            as_user=user,
        )
        pwfile.unlink()

        self.pg_port = _free_port()
        self._pg_proc = self._spawn(
            [
                str(pg.bindir / "postgres"),
                "-D",
                str(tmp / "pgdata"),
                "-p",
                str(self.pg_port),
                "-k",
                str(sockdir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            # SIGQUIT if this process dies: immediate shutdown, the postmaster reaps its backends.
            pg_log,
            env=pg_env,
            cwd=tmp,
            as_user=user,
            death_signal=signal.SIGQUIT,
        )

        def pg_ready() -> bool:
            try:
                ready_line = "ready to accept connections" in pg_log.read_text(errors="replace")
            except OSError:
                return False
            if not ready_line:
                return False
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                return sock.connect_ex(("127.0.0.1", int(self.pg_port or 0))) == 0

        self._wait_for(pg_ready, self._pg_proc, "PostgreSQL", pg_log)

        client_env = dict(
            base_env,
            PGHOST="127.0.0.1",
            PGPORT=str(self.pg_port),
            PGUSER=_PG_DB_USER,
            PGPASSWORD=password,
            PGDATABASE=_PG_DATABASE,
        )
        for key, value in (
            ("STAC_FASTAPI_TITLE", "lames_cube local STAC API"),
            ("STAC_FASTAPI_DESCRIPTION", "Throw-away STAC API (pgstac) on loopback"),
            ("STAC_FASTAPI_LANDING_ID", "lames-cube-local"),
            ("STAC_FASTAPI_VERSION", "7.2.0"),
        ):
            client_env.setdefault(key, value)
        bindir = venv / "bin"
        client_env["PATH"] = f"{bindir}{os.pathsep}{client_env.get('PATH', '')}"
        pypgstac = str(bindir / "pypgstac")
        say("pypgstac migrate")
        self._run_step(
            [pypgstac, "migrate"], "pypgstac migrate", tmp / "pypgstac.log", env=client_env, cwd=tmp
        )
        if self._collections:
            _write_ndjson(tmp / "collections.ndjson", self._collections)
            say(f"pypgstac load collections ({len(self._collections)})")
            self._run_step(
                [
                    pypgstac,
                    "load",
                    "collections",
                    str(tmp / "collections.ndjson"),
                    "--method",
                    "insert",
                ],
                "pypgstac load collections",
                tmp / "pypgstac.log",
                env=client_env,
                cwd=tmp,
            )
        if self._items:
            _write_ndjson(tmp / "items.ndjson", self._items)
            say(f"pypgstac load items ({len(self._items)})")
            self._run_step(
                [pypgstac, "load", "items", str(tmp / "items.ndjson"), "--method", "insert"],
                "pypgstac load items",
                tmp / "pypgstac.log",
                env=client_env,
                cwd=tmp,
            )

        self.api_port = self._requested_port if self._requested_port is not None else _free_port()
        url = f"http://127.0.0.1:{self.api_port}"
        api_log = tmp / "api.log"
        say(f"uvicorn {APP_FACTORY} on {url}")
        # cwd=tmp: stac-fastapi-pgstac's settings also read a ".env" file from the cwd.
        self._api_proc = self._spawn(
            [
                str(venv_python(venv)),
                "-m",
                "uvicorn",
                "--factory",
                APP_FACTORY,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--log-level",
                "info",
            ],
            api_log,
            env=client_env,
            cwd=tmp,
            as_user=None,
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def api_ready() -> bool:
            try:
                with opener.open(url + "/", timeout=2) as response:
                    return int(response.status) == 200
            except (urllib.error.URLError, OSError, ValueError):
                return False

        self._wait_for(api_ready, self._api_proc, "The STAC API (uvicorn)", api_log)
        self._url = url


def serve_forever(
    collections: list[dict],
    items: list[dict],
    port: int | None = None,
    *,
    workdir: str | os.PathLike | None = None,
) -> None:
    """Serve ``collections`` and ``items`` as a STAC API until Ctrl-C (or SIGTERM).

    Checks the host (:func:`check_server_env`; ``lames-cube stac install`` prepares it),
    starts a :class:`StacApiServer`, prints its URL on stdout, blocks, then stops everything
    cleanly.

    Parameters
    ----------
    collections, items
        STAC collection and item dicts, as for :class:`StacApiServer`.
    port
        The API's port on 127.0.0.1; None picks a free one.
    workdir
        Parent of the temporary directory; None means the system temp dir.

    Raises
    ------
    StacServerError
        The host is not prepared (the message says what to run), start-up failed, or a
        server process died while serving (the message has its logs).
    """
    check_server_env()
    server = StacApiServer(collections, items, port=port, workdir=workdir)
    previous: Any = signal.SIG_DFL
    previous_int: Any = signal.default_int_handler
    in_main = threading.current_thread() is threading.main_thread()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if in_main:
        previous = signal.signal(signal.SIGTERM, on_term)
        # Ctrl-C must interrupt even when SIGINT was ignored by whoever started us (e.g. `cmd &`).
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with server:
            print(server.url, flush=True)
            say("serving; press Ctrl-C to stop")
            while True:
                server.raise_if_dead()
                time.sleep(0.5)
    except KeyboardInterrupt:
        say("stopped")
    finally:
        if in_main:  # None: a handler installed outside Python, which cannot be restored
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            signal.signal(
                signal.SIGINT,
                previous_int if previous_int is not None else signal.default_int_handler,
            )
