"""A real STAC API (PostgreSQL + pgstac + stac-fastapi-pgstac) on 127.0.0.1, searched with
pystac-client.

The host is prepared once by ``.venv/bin/lames-cube stac install`` (the README's test command
runs it). The tests change nothing on the host (no apt-get, useradd or pip; the
``no_host_changes`` guard proves it for the check, start and CLI paths) and fail, never skip,
when it is not prepared.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pystac_client import Client

from lames_cube import cli
from lames_cube.errors import StacServerError
from lames_cube.services import host as stac_server
from lames_cube.services.host import check_server_env, ensure_server_env, server_host_status
from lames_cube.services.stac_api import StacApiServer

pytestmark = pytest.mark.stacapi

ROOT = Path(__file__).resolve().parents[1]
COLLECTION_ID = "lames-test-s2"
#: Programs that change the host; no test may run them.
_HOST_CHANGING = frozenset({"apt-get", "apt", "dpkg", "useradd", "adduser", "groupadd"})

def _polygon(west: float, south: float, east: float, north: float) -> dict:
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def _collection() -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": COLLECTION_ID,
        "description": "Two synthetic Sentinel-2-like scenes for the local STAC API test.",
        "license": "CC-BY-4.0",
        "links": [],
        "extent": {
            "spatial": {"bbox": [[-70.0, -30.0, -68.0, -28.0]]},
            "temporal": {"interval": [["2021-01-01T00:00:00Z", "2021-12-31T23:59:59Z"]]},
        },
    }


def _item(
    item_id: str, bbox: tuple[float, float, float, float], when: str, cloud: float, href: Path
) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": COLLECTION_ID,
        "geometry": _polygon(*bbox),
        "bbox": list(bbox),
        "properties": {"datetime": when, "eo:cloud_cover": cloud},
        "links": [],
        "assets": {
            "B04": {"href": str(href), "type": "image/tiff; application=geotiff", "roles": ["data"]}
        },
    }


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _host_changing(cmd: Any) -> bool:
    """True for apt/dpkg/useradd and for ``python -m venv`` / ``python -m pip``."""
    if isinstance(cmd, (str, bytes, os.PathLike)):
        argv = os.fsdecode(cmd).split()
    else:
        argv = [os.fsdecode(a) for a in cmd]
    if not argv:
        return False
    if any(Path(a).name in _HOST_CHANGING for a in argv[:3]):  # also `sudo apt-get`, `sh -c`
        return True
    return any(a == "-m" and b in ("venv", "pip") for a, b in itertools.pairwise(argv))


@pytest.fixture
def no_host_changes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Fail on any host-changing subprocess or installer call; yield the commands run."""
    seen: list[list[str]] = []
    real_popen = subprocess.Popen

    def guard(cmd: Any) -> None:
        seen.append([os.fsdecode(a) for a in cmd] if isinstance(cmd, (list, tuple)) else [cmd])
        if _host_changing(cmd):
            raise AssertionError(f"a test path ran a host-changing command: {cmd!r}")

    class GuardedPopen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            guard(args)
            super().__init__(args, *rest, **kwargs)

    def forbidden(name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> None:
            raise AssertionError(f"a test path called {name}{args!r}")

        return fail

    # subprocess.run, check_output, ... all go through subprocess.Popen.
    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
    monkeypatch.setattr(os, "system", forbidden("os.system"))
    for name in ("_apt_install", "_create_pg_os_user", "_install_venv"):
        monkeypatch.setattr(stac_server, name, forbidden(f"stac_server.{name}"))
    yield seen


def test_the_guard_catches_host_changes(no_host_changes: list[list[str]]) -> None:
    with pytest.raises(AssertionError, match=r"host-changing command: \['apt-get'"):
        subprocess.run(["apt-get", "install", "-y", "postgresql"], check=False)
    with pytest.raises(AssertionError, match=r"host-changing command: \['sudo', 'useradd'"):
        subprocess.run(["sudo", "useradd", "postgres"], check=False)
    with pytest.raises(AssertionError, match="host-changing"):
        subprocess.run([sys.executable, "-m", "pip", "install", "x"], check=False)
    with pytest.raises(AssertionError, match=r"stac_server\._create_pg_os_user"):
        stac_server._create_pg_os_user()
    with pytest.raises(AssertionError, match=r"stac_server\._apt_install"):
        stac_server._apt_install(["postgresql"])
    assert not _host_changing(["/usr/lib/postgresql/15/bin/initdb", "-D", "x"])


def test_check_and_start_paths_change_nothing_on_the_host(
    stac_server_env: Path, no_host_changes: list[list[str]]
) -> None:
    # What the stac_server_env fixture and StacApiServer.start() run, under the guard.
    assert check_server_env() == stac_server_env
    assert ensure_server_env() == stac_server_env  # install=False by default: only checks
    assert server_host_status().ready
    with StacApiServer([_collection()], []) as server:
        assert Client.open(server.url).get_collection(COLLECTION_ID).id == COLLECTION_ID
    programs = {Path(cmd[0]).name for cmd in no_host_changes}
    assert {"initdb", "postgres", "pypgstac"} <= programs  # the guard saw the start-up


def test_missing_venv_is_a_typed_error_naming_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_host_changes: list[list[str]]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StacServerError, match=r"lames-cube stac install --venv-dir \S*empty`"):
        check_server_env(venv_dir=empty)
    monkeypatch.setenv("LAMES_STAC_VENV", str(empty))
    with pytest.raises(StacServerError, match=r"`LAMES_STAC_VENV=\S*empty \S*lames-cube stac ins"):
        check_server_env()
    with pytest.raises(StacServerError, match=r"not a venv \(no bin/python\)"):
        ensure_server_env()
    with pytest.raises(StacServerError, match="lames-cube stac install"):
        StacApiServer([_collection()], []).start()
    assert list(empty.iterdir()) == []  # nothing was built
    a_file = tmp_path / "a-file"
    a_file.touch()
    with pytest.raises(StacServerError, match="is not a directory; remove it"):
        check_server_env(venv_dir=a_file)


def test_missing_postgres_os_user_is_an_error_not_a_useradd(
    stac_server_env: Path, monkeypatch: pytest.MonkeyPatch, no_host_changes: list[list[str]]
) -> None:
    monkeypatch.setattr(stac_server, "_find_pg_os_user", lambda: None)
    with pytest.raises(StacServerError, match=r"OS user 'postgres': absent"):
        check_server_env()
    with pytest.raises(StacServerError, match="lames-cube stac install"):
        StacApiServer([_collection()], []).start()
    with pytest.raises(StacServerError, match=r"refuses to run as root.*lames-cube stac install"):
        stac_server.pg_os_user()


def test_cli_stac_install_and_check_are_idempotent_on_a_prepared_host(
    stac_server_env: Path, no_host_changes: list[list[str]], capsys: pytest.CaptureFixture
) -> None:
    for _ in range(2):  # in-process, under the guard: a prepared host is only looked at
        started = time.monotonic()
        assert cli.main(["stac", "install"]) == 0
        assert time.monotonic() - started < 15
        out = capsys.readouterr().out
        assert "everything is ready; nothing to do" in out and "MISSING" not in out
        assert f"server venv: ready ({stac_server_env}," in out
    check = subprocess.run(
        [sys.executable, "-m", "lames_cube.cli", "stac", "check"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip().endswith("everything is ready")


def test_stac_install_without_root_prints_the_apt_command_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, no_host_changes: list[list[str]], capsys: pytest.CaptureFixture
) -> None:
    # A host without PostgreSQL, as a non-root user: nothing to install, the command to run.
    monkeypatch.setattr(stac_server, "find_postgres", lambda: None)
    monkeypatch.setattr(stac_server, "_apt_packages", lambda: ["postgresql-15-postgis-3"])
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    apt = "apt-get update && apt-get install -y --no-install-recommends postgresql-15-postgis-3"
    with pytest.raises(StacServerError, match=r"needs root.*uid 4321\)\. As root run:\n +" +
                       re.escape(apt)):
        stac_server.prepare_server_host()
    assert cli.main(["stac", "install"]) == 2
    err = capsys.readouterr().err
    assert apt in err and "lames-cube stac install` again" in err
    with pytest.raises(StacServerError, match=r"As root run `" + re.escape(apt) + "`, then run"):
        check_server_env()


def test_cli_stac_check_exits_1_with_the_fix_when_not_ready(tmp_path: Path) -> None:
    env = dict(os.environ, LAMES_STAC_VENV=str(tmp_path / "nowhere"))
    check = subprocess.run(
        [sys.executable, "-m", "lames_cube.cli", "stac", "check"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )
    assert check.returncode == 1, check.stdout + check.stderr
    assert "MISSING server venv:" in check.stdout and "does not exist" in check.stdout
    assert "lames-cube stac install`" in check.stdout
    assert not (tmp_path / "nowhere").exists()


def test_readme_and_ci_prepare_the_host_between_pip_and_pytest() -> None:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    command, slow = blocks[1], blocks[2]  # "Run the tests", "Run the slow tests"
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-2:] == [command, slow], "README's test commands and .ci/run differ"
    assert slow.endswith(".venv/bin/python -m pytest -m slow"), slow
    steps = [step.strip() for step in command.split("&&")]
    assert steps[1].startswith(".venv/bin/pip install"), steps
    assert steps[2] == ".venv/bin/lames-cube stac install", steps
    assert steps[3].endswith(".venv/bin/python -m pytest"), steps


def test_search_through_a_real_stac_api(stac_server_env: Path, tmp_path: Path) -> None:
    href_a = tmp_path / "scene-a" / "B04.tif"
    href_b = tmp_path / "scene-b" / "B04.tif"
    items = [
        _item("scene-a", (-69.9, -29.9, -69.5, -29.5), "2021-03-01T14:30:00Z", 5.0, href_a),
        _item("scene-b", (-68.6, -28.6, -68.2, -28.2), "2021-07-15T14:30:00Z", 42.5, href_b),
    ]
    # No workdir: as root, pytest's tmp_path (under a 0700 directory) is closed to `postgres`.
    with StacApiServer([_collection()], items) as server:
        assert server.url.startswith("http://127.0.0.1:")
        tmpdir = server.tmpdir
        assert tmpdir is not None and tmpdir.is_dir()
        api_port, pg_port = server.api_port, server.pg_port
        pids = server.pids
        client = Client.open(server.url)

        assert [c.id for c in client.get_collections()] == [COLLECTION_ID]

        found = client.search(collections=[COLLECTION_ID], bbox=[-69.8, -29.8, -69.6, -29.6])
        assert [i.id for i in found.items()] == ["scene-a"]

        found = client.search(
            collections=[COLLECTION_ID], datetime="2021-06-01T00:00:00Z/2021-08-31T23:59:59Z"
        )
        assert [i.id for i in found.items()] == ["scene-b"]

        cql2 = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 10]}
        found = client.search(collections=[COLLECTION_ID], filter=cql2, filter_lang="cql2-json")
        assert [i.id for i in found.items()] == ["scene-a"]

        raw = client.search(collections=[COLLECTION_ID]).item_collection_as_dict()
        hrefs = {f["id"]: f["assets"]["B04"]["href"] for f in raw["features"]}
        assert hrefs == {"scene-a": str(href_a), "scene-b": str(href_b)}
        item = next(client.search(ids=["scene-b"]).items())
        assert item.assets["B04"].href == str(href_b)
        assert item.properties["eo:cloud_cover"] == 42.5

    assert api_port is not None and pg_port is not None
    assert not _accepts(api_port)
    assert not _accepts(pg_port)
    assert not any(_alive(pid) for pid in pids.values())
    assert not tmpdir.exists()
    with pytest.raises(StacServerError, match="not running"):
        _ = server.url


def test_stop_after_error_in_body_and_restart(stac_server_env: Path) -> None:
    server = StacApiServer([_collection()], [])
    with pytest.raises(RuntimeError, match="boom"), server:
        port = server.api_port
        raise RuntimeError("boom")
    assert port is not None and not _accepts(port)
    server.start()  # the same object can start again
    try:
        assert Client.open(server.url).get_collection(COLLECTION_ID).id == COLLECTION_ID
    finally:
        server.stop()
    server.stop()  # idempotent


def test_bad_input_and_busy_port(stac_server_env: Path, tmp_path: Path) -> None:
    orphan = _item("x", (0, 0, 1, 1), "2021-01-01T00:00:00Z", 1.0, tmp_path / "x.tif")
    orphan["collection"] = "nope"
    with pytest.raises(StacServerError, match="not one of the collections"):
        StacApiServer([_collection()], [orphan])
    with pytest.raises(StacServerError, match="port"):
        StacApiServer([_collection()], [], port=70000)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(StacServerError, match="already in use"):
            StacApiServer([_collection()], [], port=taken).start()


def test_workdir_closed_to_others(stac_server_env: Path, tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    server = StacApiServer([_collection()], [], workdir=closed)
    if os.geteuid() == 0:
        # Root runs PostgreSQL as the OS user 'postgres', which cannot enter the directory.
        with pytest.raises(StacServerError, match="cannot reach"):
            server.start()
        assert server.tmpdir is None and list(closed.iterdir()) == []
    else:
        # Anyone else runs PostgreSQL as themselves, the directory's owner: it just works.
        with server:
            assert server.tmpdir is not None and server.tmpdir.parent == closed.resolve()
        assert list(closed.iterdir()) == []


def test_check_server_env_is_fast_when_prepared(stac_server_env: Path) -> None:
    started = time.monotonic()
    assert check_server_env() == stac_server_env
    assert time.monotonic() - started < 10
    assert (stac_server_env / "bin" / "uvicorn").exists()
