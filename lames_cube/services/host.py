"""The host side of the local STAC API: PostgreSQL/PostGIS and the server's virtual environment.

Preparing the host is one explicit step, ``lames-cube stac install`` (:func:`prepare_server_host`):
as root it installs PostgreSQL/PostGIS with apt-get when missing and creates the ``postgres``
system user; it builds the server venv (:data:`SERVER_PINS`). Everything else only checks
(:func:`check_server_env`, :func:`server_host_status`, ``lames-cube stac check``) and raises
:class:`~lames_cube.errors.StacServerError` naming the command to run when something is missing.
The server itself is :class:`lames_cube.services.stac_api.StacApiServer`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lames_cube._atomic import atomic_write_text
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


_REPO_ROOT = Path(__file__).resolve().parents[2]
_MARKER_NAME = "lames-stacapi-pins.txt"
_PG_OS_USER = "postgres"
_LOG_PREFIX = "[lames-cube stac]"
_APT_UPDATED = False
# Variables of the calling environment that must not leak into the server processes.
SCRUBBED_ENV = (
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


def say(message: str) -> None:
    print(f"{_LOG_PREFIX} {message}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 40) -> str:
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


def venv_python(venv_dir: Path) -> Path:
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
                f"Command: {' '.join(cmd)}\nLast output:\n{tail(Path(log.name))}"
            ) from exc
        if proc.returncode != 0:
            raise StacServerError(
                f"{what} failed with exit code {proc.returncode}.\n"
                f"Command: {' '.join(cmd)}\nLast output:\n{tail(Path(log.name))}"
            )


def _install_venv(venv_dir: Path) -> None:
    python = venv_python(venv_dir)
    if python.exists():
        wanted = f"{sys.version_info[0]}.{sys.version_info[1]}"
        probe = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0 or probe.stdout.strip() != wanted:
            say(f"the venv at {venv_dir} is broken or not Python {wanted}; rebuilding it")
            python.unlink()
    if not python.exists():
        say(f"creating the STAC API server venv at {venv_dir}")
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        _run_logged(
            [sys.executable, "-m", "venv", "--clear", str(venv_dir)],
            "Creating the STAC API server venv",
            timeout=300,
        )
    say(
        f"installing {len(SERVER_PINS)} pinned packages (stac-fastapi-pgstac, pypgstac, "
        "uvicorn, ...) into it"
    )
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
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
        say("apt-get update")
        _run_logged(["apt-get", "update"], "apt-get update", timeout=900, env=env)
        _APT_UPDATED = True
    say(f"apt-get install -y {' '.join(packages)}")
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
    say(f"{_describe_missing(found)}; installing with apt")
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


def require_postgres() -> PostgresInstall:
    """The PostgreSQL server with PostGIS; raise (installing nothing) when there is none."""
    found = find_postgres()
    if found is None or found.missing_extensions:
        raise StacServerError(
            f"The local STAC API needs PostgreSQL with PostGIS, but {_describe_missing(found)}. "
            f"Run `{install_command()}` (as root) to install it."
        )
    return found


@dataclass
class OsUser:
    uid: int
    gid: int
    name: str


def _current_user() -> OsUser:
    """This process's user (named by its uid when it has no passwd entry, as in containers)."""
    try:
        entry = pwd.getpwuid(os.geteuid())
    except KeyError:
        return OsUser(os.geteuid(), os.getegid(), str(os.geteuid()))
    return OsUser(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _find_pg_os_user() -> OsUser | None:
    """The OS user that runs initdb/postgres: yourself, or ``postgres`` as root (None if absent)."""
    if os.geteuid() != 0:
        return _current_user()
    try:
        entry = pwd.getpwnam(_PG_OS_USER)
    except KeyError:
        return None
    return OsUser(entry.pw_uid, entry.pw_gid, entry.pw_name)


def pg_os_user() -> OsUser:
    """Like :func:`_find_pg_os_user`, but a missing user raises (it is never created here)."""
    user = _find_pg_os_user()
    if user is None:
        raise StacServerError(
            f"Running as root, PostgreSQL needs the OS user {_PG_OS_USER!r} (it refuses to run "
            f"as root), and there is none on this host. Run `{install_command()}` (as root) "
            "to create it."
        )
    return user


def _create_pg_os_user() -> OsUser:
    """Create the system user ``postgres`` (root only); the one place that runs useradd."""
    say(f"creating the system user {_PG_OS_USER!r} to run PostgreSQL (it refuses root)")
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
    return OsUser(entry.pw_uid, entry.pw_gid, entry.pw_name)


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
            elif not venv_python(self.venv_dir).exists():
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
    >>> from lames_cube.services.host import server_host_status
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
    >>> from lames_cube.services.host import check_server_env
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
    >>> from lames_cube.services.host import prepare_server_host
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
