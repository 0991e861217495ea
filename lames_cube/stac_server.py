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
>>> from lames_cube.stac_server import StacApiServer
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
import fcntl
import glob
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from lames_cube._atomic import atomic_path, atomic_write_text
from lames_cube.errors import StacServerError

#: Exact pins of the server's virtual environment (direct requirements and everything they pull
#: in), resolved together on Python 3.11. ``pypgstac``'s ``psycopg`` extra brings psycopg 3 with
#: its binary wheel and the connection pool.
SERVER_PINS: tuple[str, ...] = (
    "stac-fastapi-pgstac==7.2.0",
    "pypgstac[psycopg]==0.10.0",
    "uvicorn==0.54.0",
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "asyncpg==0.32.0",
    "attrs==26.1.0",
    "brotli==1.2.1",
    "brotli-asgi==1.7.0",
    "buildpg==0.4",
    "cachetools==6.0.0",
    "click==8.5.1",
    "cql2==0.6.0",
    "fastapi==0.165.0",
    "fire==0.7.1",
    "geojson-pydantic==2.2.0",
    "h11==0.16.0",
    "hydraters==0.1.4",
    "idna==3.20",
    "iso8601==2.1.0",
    "json-merge-patch==0.3.0",
    "jsonpatch==1.47",
    "jsonpointer==3.12",
    "opentelemetry-api==1.45.2",
    "orjson==3.13.0",
    "plpygis==0.6.1",
    "psycopg==3.3.9",
    "psycopg-binary==3.3.9",
    "psycopg-pool==3.3.3",
    "pydantic==2.14.3",
    "pydantic-core==2.50.4",
    "pydantic-settings==2.16.3",
    "python-dateutil==4.0.0",
    "python-dotenv==1.2.4",
    "smart-open==9.0.2",
    "stac-fastapi-api==7.0.0",
    "stac-fastapi-extensions==7.0.0",
    "stac-fastapi-types==7.0.0",
    "stac-pydantic==3.7.1",
    "starlette==1.10.0",
    "tenacity==9.2.1",
    "termcolor==3.3.0",
    "typing-extensions==4.16.0",
    "typing-inspection==0.4.5",
    "tzdata==2026.6",
    "version-parser==1.0.1",
    "wrapt==2.5.2",
)

#: PostgreSQL extensions that ``pypgstac migrate`` creates.
REQUIRED_PG_EXTENSIONS: tuple[str, ...] = ("postgis", "btree_gist", "unaccent")

#: The ASGI application factory of stac-fastapi-pgstac 7.2.0 (``uvicorn --factory``).
APP_FACTORY = "stac_fastapi.pgstac.app:create_app"

_REPO_ROOT = Path(__file__).resolve().parent.parent
_MARKER_NAME = "lames-stacapi-pins.txt"
_PG_OS_USER = "postgres"
_PG_DB_USER = "postgres"
_PG_DATABASE = "postgres"
_LOG_PREFIX = "[lames-cube stac]"
_APT_UPDATED = False
_PR_SET_PDEATHSIG = 1
# Variables of the calling environment that must not leak into the server processes.
_SCRUBBED_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "PGDATA",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGOPTIONS",
    "DATABASE_URL",
)


def _say(message: str) -> None:
    print(f"{_LOG_PREFIX} {message}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    kept = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else "    (empty)"


# --------------------------------------------------------------------------------------------
# The server's virtual environment
# --------------------------------------------------------------------------------------------


def default_venv_dir() -> Path:
    """Return where the server's virtual environment lives by default.

    Returns
    -------
    pathlib.Path
        ``$LAMES_STAC_VENV`` when set, else ``<repo>/.venv-stacapi`` (gitignored), where
        ``<repo>`` is the directory that holds the ``lames_cube`` package.
    """
    env = os.environ.get("LAMES_STAC_VENV")
    if env:
        return Path(env).expanduser().absolute()
    return _REPO_ROOT / ".venv-stacapi"


def _marker_text() -> str:
    header = f"# lames_cube stac server env; python {sys.version_info[0]}.{sys.version_info[1]}"
    return "\n".join([header, *SERVER_PINS]) + "\n"


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _venv_ready(venv_dir: Path) -> bool:
    marker = venv_dir / _MARKER_NAME
    try:
        if marker.read_text() != _marker_text():
            return False
    except OSError:
        return False
    return all((venv_dir / "bin" / name).exists() for name in ("python", "uvicorn", "pypgstac"))


@contextlib.contextmanager
def _file_lock(key: Path) -> Iterator[None]:
    """Serialise installs of one venv across processes (a lock file in the temp dir)."""
    digest = hashlib.sha1(str(key).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"lames-stacapi-{digest}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(cmd: Sequence[str], what: str, *, timeout: float, env: dict | None = None) -> None:
    """Run ``cmd`` with its output captured; raise StacServerError with the tail on failure."""
    with tempfile.NamedTemporaryFile("w+", prefix="lames-stac-", suffix=".log") as log:
        try:
            proc = subprocess.run(
                list(cmd),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                env=env,
                check=False,
            )
        except FileNotFoundError as exc:
            raise StacServerError(f"{what} failed: {cmd[0]!r} not found ({exc}).") from exc
        except subprocess.TimeoutExpired as exc:
            raise StacServerError(
                f"{what} did not finish within {timeout:.0f} s.\n"
                f"Command: {' '.join(cmd)}\nLast output:\n{_tail(Path(log.name))}"
            ) from exc
        if proc.returncode != 0:
            raise StacServerError(
                f"{what} failed with exit code {proc.returncode}.\n"
                f"Command: {' '.join(cmd)}\nLast output:\n{_tail(Path(log.name))}"
            )


def _install_venv(venv_dir: Path) -> None:
    python = _venv_python(venv_dir)
    if python.exists():
        wanted = f"{sys.version_info[0]}.{sys.version_info[1]}"
        probe = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0 or probe.stdout.strip() != wanted:
            _say(f"the venv at {venv_dir} is broken or not Python {wanted}; rebuilding it")
            python.unlink()
    if not python.exists():
        _say(f"creating the STAC API server venv at {venv_dir}")
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        _run_logged(
            [sys.executable, "-m", "venv", "--clear", str(venv_dir)],
            "Creating the STAC API server venv",
            timeout=300,
        )
    _say(
        f"installing {len(SERVER_PINS)} pinned packages (stac-fastapi-pgstac, pypgstac, "
        "uvicorn, ...) into it"
    )
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run_logged(
        [str(python), "-m", "pip", "install", "--no-input", *SERVER_PINS],
        "Installing the STAC API server packages",
        timeout=1800,
        env=env,
    )
    atomic_write_text(venv_dir / _MARKER_NAME, _marker_text())


# --------------------------------------------------------------------------------------------
# PostgreSQL and PostGIS from the operating system
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresInstall:
    """A PostgreSQL server installation found on this machine.

    Attributes
    ----------
    bindir
        Directory that holds ``initdb`` and ``postgres``.
    major
        Major version (e.g. ``15``).
    sharedir
        The server's share directory (its ``extension/`` holds ``*.control`` files).
    missing_extensions
        Extensions among :data:`REQUIRED_PG_EXTENSIONS` that this server cannot create.
    """

    bindir: Path
    major: int
    sharedir: Path
    missing_extensions: tuple[str, ...]

    @property
    def debian_managed(self) -> bool:
        """True when this is a Debian ``postgresql-NN`` package (``/usr/lib/postgresql/NN/bin``)."""
        return self.bindir == Path(f"/usr/lib/postgresql/{self.major}/bin")


def _candidate_bindirs() -> list[Path]:
    found: list[Path] = []
    for name in ("initdb", "pg_ctl", "postgres"):
        where = shutil.which(name)
        if where:
            found.append(Path(where).resolve().parent)

    def version_key(path: str) -> tuple[int, str]:
        match = re.search(r"/postgresql/(\d+)/bin$", path)
        return (int(match.group(1)) if match else -1, path)

    found += [
        Path(p)
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    ]
    unique: list[Path] = []
    for path in found:
        if path not in unique and all(
            os.access(path / exe, os.X_OK) for exe in ("initdb", "postgres")
        ):
            unique.append(path)
    return unique


def _probe(bindir: Path) -> PostgresInstall | None:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out) or re.search(r"(\d+)\.\d+", out)
    if not match:
        return None
    major = int(match.group(1))
    sharedirs: list[Path] = []
    pg_config = bindir / "pg_config"
    if os.access(pg_config, os.X_OK):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            shared = subprocess.run(
                [str(pg_config), "--sharedir"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
            if shared:
                sharedirs.append(Path(shared))
    sharedirs += [
        Path(f"/usr/share/postgresql/{major}"),
        bindir.parent / "share" / "postgresql",
        bindir.parent / "share",
    ]
    sharedir = next(
        (d for d in sharedirs if (d / "extension" / "plpgsql.control").is_file()), sharedirs[0]
    )
    missing = tuple(
        ext
        for ext in REQUIRED_PG_EXTENSIONS
        if not (sharedir / "extension" / f"{ext}.control").is_file()
    )
    return PostgresInstall(
        bindir=bindir, major=major, sharedir=sharedir, missing_extensions=missing
    )


def find_postgres_installs() -> list[PostgresInstall]:
    """List the PostgreSQL servers on this machine, in search order.

    The order is ``initdb``/``pg_ctl``/``postgres`` on ``PATH`` (symlinks resolved), then
    ``/usr/lib/postgresql/*/bin`` (newest first).

    Returns
    -------
    list of PostgresInstall
        Possibly empty.
    """
    return [p for p in (_probe(d) for d in _candidate_bindirs()) if p is not None]


def find_postgres() -> PostgresInstall | None:
    """Find a PostgreSQL server, preferring one that has PostGIS.

    Returns
    -------
    PostgresInstall or None
        The first of :func:`find_postgres_installs` with every extension pgstac needs, else the
        first one found (its ``missing_extensions`` tell what it lacks), or None when there is
        no server.
    """
    installs = find_postgres_installs()
    for install in installs:
        if not install.missing_extensions:
            return install
    return installs[0] if installs else None


def _apt_packages() -> list[str]:
    """Debian packages that give PostGIS to the (newest Debian-packaged) server, or a server."""
    debian = [p for p in find_postgres_installs() if p.debian_managed]
    if debian:
        return [f"postgresql-{debian[0].major}-postgis-3"]
    return ["postgresql", "postgresql-15-postgis-3"]  # Debian 12's PostgreSQL


def _apt_install(packages: list[str]) -> None:
    global _APT_UPDATED
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _APT_UPDATED:
        _say("apt-get update")
        _run_logged(["apt-get", "update"], "apt-get update", timeout=900, env=env)
        _APT_UPDATED = True
    _say(f"apt-get install -y {' '.join(packages)}")
    _run_logged(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        "apt-get install",
        timeout=1800,
        env=env,
    )


def _describe_missing(install: PostgresInstall | None) -> str:
    if install is None:
        return "no PostgreSQL server (initdb/postgres not on PATH nor in /usr/lib/postgresql/*/bin)"
    return (
        f"the PostgreSQL {install.major} server in {install.bindir} lacks the extension(s) "
        f"{', '.join(install.missing_extensions)} (looked in {install.sharedir / 'extension'})"
    )


def _apt_command(packages: Sequence[str]) -> str:
    """The shell command, to run as root, that installs ``packages`` with apt."""
    return "apt-get update && apt-get install -y --no-install-recommends " + " ".join(packages)


def install_command() -> str:
    """Return the command that prepares this host for the local STAC API.

    Returns
    -------
    str
        ``<venv>/bin/lames-cube stac install`` for the ``lames-cube`` script beside the running
        Python (relative to the current directory when it lies below it, e.g.
        ``.venv/bin/lames-cube stac install`` from the repository root), else
        ``lames-cube stac install``.
    """
    script = Path(sys.executable).parent / "lames-cube"
    if not script.exists():
        return "lames-cube stac install"
    with contextlib.suppress(ValueError):
        return f"{script.absolute().relative_to(Path.cwd())} stac install"
    return f"{script.absolute()} stac install"


def _install_postgres() -> tuple[PostgresInstall, list[str]]:
    """Install PostgreSQL + PostGIS with apt when missing (root only); return it and what was done."""
    found = find_postgres()
    if found is not None and not found.missing_extensions:
        return found, []
    packages = _apt_packages()
    if os.geteuid() != 0:
        raise StacServerError(
            f"The local STAC API needs PostgreSQL with PostGIS, but {_describe_missing(found)}. "
            f"Installing it needs root and this process runs as {_current_user().name!r} "
            f"(uid {os.geteuid()}). As root run:\n"
            f"    {_apt_command(packages)}\nthen run `{install_command()}` again."
        )
    _say(f"{_describe_missing(found)}; installing with apt")
    done = list(packages)
    _apt_install(packages)
    found = find_postgres()
    if found is not None and found.missing_extensions and not found.debian_managed:
        packages = _apt_packages()  # a Debian server came with the first install: add PostGIS
        _apt_install(packages)
        done += packages
        found = find_postgres()
    if found is None or found.missing_extensions:
        raise StacServerError(
            f"Installed {' '.join(done)} with apt, but still {_describe_missing(found)}."
        )
    return found, [f"installed {' '.join(done)} with apt-get"]


def _require_postgres() -> PostgresInstall:
    """The PostgreSQL server with PostGIS; raise (installing nothing) when there is none."""
    found = find_postgres()
    if found is None or found.missing_extensions:
        raise StacServerError(
            f"The local STAC API needs PostgreSQL with PostGIS, but {_describe_missing(found)}. "
            f"Run `{install_command()}` (as root) to install it."
        )
    return found


@dataclass
class _OsUser:
    uid: int
    gid: int
    name: str


def _current_user() -> _OsUser:
    """This process's user (named by its uid when it has no passwd entry, as in containers)."""
    try:
        entry = pwd.getpwuid(os.geteuid())
    except KeyError:
        return _OsUser(os.geteuid(), os.getegid(), str(os.geteuid()))
    return _OsUser(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _find_pg_os_user() -> _OsUser | None:
    """The OS user that runs initdb/postgres: yourself, or ``postgres`` as root (None if absent)."""
    if os.geteuid() != 0:
        return _current_user()
    try:
        entry = pwd.getpwnam(_PG_OS_USER)
    except KeyError:
        return None
    return _OsUser(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _pg_os_user() -> _OsUser:
    """Like :func:`_find_pg_os_user`, but a missing user raises (it is never created here)."""
    user = _find_pg_os_user()
    if user is None:
        raise StacServerError(
            f"Running as root, PostgreSQL needs the OS user {_PG_OS_USER!r} (it refuses to run "
            f"as root), and there is none on this host. Run `{install_command()}` (as root) "
            "to create it."
        )
    return user


def _create_pg_os_user() -> _OsUser:
    """Create the system user ``postgres`` (root only); the one place that runs useradd."""
    _say(f"creating the system user {_PG_OS_USER!r} to run PostgreSQL (it refuses root)")
    _run_logged(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            _PG_OS_USER,
        ],
        f"Creating the OS user {_PG_OS_USER}",
        timeout=60,
    )
    entry = pwd.getpwnam(_PG_OS_USER)
    return _OsUser(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _resolve_venv_dir(venv_dir: str | os.PathLike | None) -> Path:
    venv = Path(venv_dir).expanduser().absolute() if venv_dir is not None else default_venv_dir()
    if venv.exists() and not venv.is_dir():
        raise StacServerError(
            f"The STAC API server venv_dir {str(venv)!r} exists and is not a directory; remove "
            "it or point LAMES_STAC_VENV (or venv_dir=) at a directory."
        )
    return venv


@dataclass(frozen=True)
class ServerHostStatus:
    """What the local STAC API needs on this host, and what of it is there.

    Made by :func:`server_host_status`, which only looks (it changes nothing).

    Attributes
    ----------
    venv_dir
        The server's virtual environment.
    venv_ready
        True when ``venv_dir`` holds exactly :data:`SERVER_PINS` for this Python.
    postgres
        The PostgreSQL server found (see :func:`find_postgres`), or None.
    os_user
        The OS user that would run PostgreSQL (``postgres`` as root, else yourself), or None
        when running as root and there is no ``postgres`` user.
    as_root
        True when this process runs as root.
    """

    venv_dir: Path
    venv_ready: bool
    postgres: PostgresInstall | None
    os_user: str | None
    as_root: bool

    @property
    def postgres_ready(self) -> bool:
        """True when a PostgreSQL server with every extension pgstac needs is installed."""
        return self.postgres is not None and not self.postgres.missing_extensions

    @property
    def missing(self) -> tuple[str, ...]:
        """One sentence per missing piece (empty when :attr:`ready`)."""
        out = []
        if not self.postgres_ready:
            out.append(
                f"PostgreSQL + PostGIS: {_describe_missing(self.postgres)}; it comes from apt "
                f"(as root: {_apt_command(_apt_packages())})"
            )
        if self.os_user is None:
            out.append(
                f"OS user {_PG_OS_USER!r}: absent; running as root, PostgreSQL needs it (it "
                "refuses to run as root)"
            )
        if not self.venv_ready:
            if not self.venv_dir.exists():
                state = "does not exist"
            elif not _venv_python(self.venv_dir).exists():
                state = "is not a venv (no bin/python)"
            else:
                state = f"is out of date (its {_MARKER_NAME} does not match these pins)"
            out.append(
                f"server venv: {self.venv_dir} {state}; it needs the {len(SERVER_PINS)} pinned "
                "packages of stac-fastapi-pgstac, pypgstac and uvicorn"
            )
        return tuple(out)

    @property
    def ready(self) -> bool:
        """True when the STAC API can start without installing anything."""
        return not self.missing

    def report(self) -> str:
        """Return a few lines, one per requirement, saying ``ready`` or what is missing."""
        pg = self.postgres
        lines = [
            f"PostgreSQL + PostGIS: ready (PostgreSQL {pg.major} in {pg.bindir})"
            if self.postgres_ready and pg is not None
            else "",
            f"OS user for PostgreSQL: ready ({self.os_user!r})" if self.os_user else "",
            f"server venv: ready ({self.venv_dir}, {len(SERVER_PINS)} pinned packages)"
            if self.venv_ready
            else "",
        ]
        lines = [line for line in lines if line] + [f"MISSING {m}" for m in self.missing]
        return "\n".join(lines)


def server_host_status(*, venv_dir: str | os.PathLike | None = None) -> ServerHostStatus:
    """Look at what the local STAC API needs on this host; change nothing.

    Parameters
    ----------
    venv_dir
        The server venv. None means :func:`default_venv_dir` (``$LAMES_STAC_VENV``, else
        ``<repo>/.venv-stacapi``).

    Returns
    -------
    ServerHostStatus
        Its ``ready`` tells whether the server can start, ``missing`` what is not there.

    Raises
    ------
    StacServerError
        ``venv_dir`` exists and is not a directory.

    Examples
    --------
    >>> from lames_cube.stac_server import server_host_status
    >>> server_host_status().ready  # after `lames-cube stac install`
    True
    """
    venv = _resolve_venv_dir(venv_dir)
    user = _find_pg_os_user()
    return ServerHostStatus(
        venv_dir=venv,
        venv_ready=_venv_ready(venv),
        postgres=find_postgres(),
        os_user=user.name if user is not None else None,
        as_root=os.geteuid() == 0,
    )


def check_server_env(*, venv_dir: str | os.PathLike | None = None) -> Path:
    """Make sure the host is prepared for the local STAC API, without changing anything.

    This is what the tests and :class:`StacApiServer` call; :func:`prepare_server_host`
    (``lames-cube stac install``) is what prepares the host.

    Parameters
    ----------
    venv_dir
        The server venv; None means :func:`default_venv_dir`.

    Returns
    -------
    pathlib.Path
        The venv directory (its ``bin/python`` runs the server).

    Raises
    ------
    StacServerError
        Something is missing: the message lists each missing piece and the command to run
        (``.venv/bin/lames-cube stac install``, and the apt command to run as root when
        PostgreSQL/PostGIS is missing and this process is not root).

    Examples
    --------
    >>> from lames_cube.stac_server import check_server_env
    >>> check_server_env().is_dir()  # after `lames-cube stac install`
    True
    """
    status = server_host_status(venv_dir=venv_dir)
    if status.ready:
        return status.venv_dir
    if venv_dir is not None:
        fix = f"Run `{install_command()} --venv-dir {status.venv_dir}`"
    elif os.environ.get("LAMES_STAC_VENV"):
        fix = f"Run `LAMES_STAC_VENV={status.venv_dir} {install_command()}`"
    else:
        fix = f"Run `{install_command()}`"
    if not status.postgres_ready and not status.as_root:
        fix = (
            f"As root run `{_apt_command(_apt_packages())}`, then "
            f"{fix[0].lower()}{fix[1:]}"
        )
    raise StacServerError(
        "The host is not prepared for the local STAC API (nothing is installed on demand):\n"
        + "\n".join(f"  - {m}" for m in status.missing)
        + f"\n{fix} once to prepare it (`lames-cube stac check` tells when it is ready)."
    )


def prepare_server_host(*, venv_dir: str | os.PathLike | None = None) -> list[str]:
    """Prepare this host for the local STAC API: the only function that changes the host.

    Installs what is missing and nothing else, so a second run only looks and returns at once:
    PostgreSQL + PostGIS with apt-get (root only), the system user ``postgres`` with useradd
    (root only: PostgreSQL refuses to run as root), and the server venv with
    :data:`SERVER_PINS`. Progress goes to stderr. ``lames-cube stac install`` runs this.

    Parameters
    ----------
    venv_dir
        The server venv; None means :func:`default_venv_dir`.

    Returns
    -------
    list of str
        What was done, one sentence per step; empty when everything was already there.

    Raises
    ------
    StacServerError
        PostgreSQL/PostGIS is missing and this process is not root (the message gives the apt
        command to run as root), or an install step failed (the message has its output).

    Examples
    --------
    >>> from lames_cube.stac_server import prepare_server_host
    >>> prepare_server_host()  # a prepared host: nothing to do
    []
    """
    venv = _resolve_venv_dir(venv_dir)
    done: list[str] = []
    with _file_lock(venv):  # one preparation at a time per venv, across processes
        _, installed = _install_postgres()
        done += installed
        if _find_pg_os_user() is None:
            user = _create_pg_os_user()
            done.append(f"created the system user {user.name!r} (uid {user.uid})")
        if not _venv_ready(venv):
            started = time.monotonic()
            _install_venv(venv)
            done.append(
                f"built the server venv {venv} ({len(SERVER_PINS)} pinned packages) in "
                f"{time.monotonic() - started:.0f} s"
            )
    return done


def ensure_server_env(*, venv_dir: str | os.PathLike | None = None, install: bool = False) -> Path:
    """Check the host for the local STAC API, or (``install=True``) prepare it first.

    Kept for callers of earlier versions; new code calls :func:`check_server_env` or
    :func:`prepare_server_host`.

    Parameters
    ----------
    venv_dir
        The server venv; None means :func:`default_venv_dir`.
    install
        False (the default) only checks, changing nothing. True runs
        :func:`prepare_server_host` first (apt-get, useradd and pip: host changes).

    Returns
    -------
    pathlib.Path
        The venv directory.

    Raises
    ------
    StacServerError
        As :func:`check_server_env` (something missing) or :func:`prepare_server_host`.
    """
    if install:
        prepare_server_host(venv_dir=venv_dir)
    return check_server_env(venv_dir=venv_dir)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


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
            pg = _require_postgres()
            atexit.register(self.stop)
            try:
                self._start(venv, pg)
            except BaseException:
                self.stop()
                raise
            _say(
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
                    _say(f"warning: could not remove {tmp}")
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
            f"PostgreSQL log:\n{_tail(self._tmp / 'postgres.log', lines)}\n"
            f"API log:\n{_tail(self._tmp / 'api.log', lines)}"
        )

    def raise_if_dead(self) -> None:
        """Raise StacServerError (with the logs) if the API or PostgreSQL process has exited."""
        for name, proc in (("API (uvicorn)", self._api_proc), ("PostgreSQL", self._pg_proc)):
            if proc is not None and proc.poll() is not None:
                raise StacServerError(
                    f"The STAC {name} process exited with code {proc.returncode}.\n{self.logs()}"
                )

    # -- internals ----------------------------------------------------------------------------

    def _make_tmp(self, user: _OsUser) -> Path:
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
        as_user: _OsUser | None,
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
        as_user: _OsUser | None = None,
        timeout: float = 300,
    ) -> None:
        proc = self._spawn(cmd, log, env=env, cwd=cwd, as_user=as_user)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _stop_process(proc, signal.SIGTERM, grace=5)
            raise StacServerError(
                f"{what} did not finish within {timeout:.0f} s.\nLog ({log.name}):\n{_tail(log)}"
            ) from exc
        if code != 0:
            raise StacServerError(
                f"{what} failed with exit code {code}.\nLog ({log.name}):\n{_tail(log)}"
            )

    def _wait_for(self, ready: Any, proc: subprocess.Popen, what: str, log: Path) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if ready():
                return
            if proc.poll() is not None:
                raise StacServerError(
                    f"{what} exited with code {proc.returncode} while starting."
                    f"\nLog ({log.name}):\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise StacServerError(
                    f"{what} did not answer within {self._startup_timeout:g} s."
                    f"\nLog ({log.name}):\n{_tail(log)}"
                )
            time.sleep(0.1)

    def _start(self, venv: Path, pg: PostgresInstall) -> None:
        user = _pg_os_user()
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
            k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV and not k.startswith("PG")
        }
        pg_env = dict(base_env, LC_ALL="C", LANG="C", HOME=str(tmp))
        pg_env.pop("LANGUAGE", None)
        pg_log = tmp / "postgres.log"

        _say(f"initdb (PostgreSQL {pg.major}) in {tmp}")
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
        _say("pypgstac migrate")
        self._run_step(
            [pypgstac, "migrate"], "pypgstac migrate", tmp / "pypgstac.log", env=client_env, cwd=tmp
        )
        if self._collections:
            _write_ndjson(tmp / "collections.ndjson", self._collections)
            _say(f"pypgstac load collections ({len(self._collections)})")
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
            _say(f"pypgstac load items ({len(self._items)})")
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
        _say(f"uvicorn {APP_FACTORY} on {url}")
        # cwd=tmp: stac-fastapi-pgstac's settings also read a ".env" file from the cwd.
        self._api_proc = self._spawn(
            [
                str(_venv_python(venv)),
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
            _say("serving; press Ctrl-C to stop")
            while True:
                server.raise_if_dead()
                time.sleep(0.5)
    except KeyboardInterrupt:
        _say("stopped")
    finally:
        if in_main:  # None: a handler installed outside Python, which cannot be restored
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            signal.signal(
                signal.SIGINT,
                previous_int if previous_int is not None else signal.default_int_handler,
            )
