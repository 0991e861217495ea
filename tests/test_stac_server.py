"""A real STAC API (PostgreSQL + pgstac + stac-fastapi-pgstac) on 127.0.0.1, searched with
pystac-client. The first run installs the server venv (and, as root, PostGIS with apt)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pystac_client import Client

from lames_cube.errors import StacServerError
from lames_cube.stac_server import StacApiServer, ensure_server_env

pytestmark = pytest.mark.stacapi

COLLECTION_ID = "lames-test-s2"


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


@pytest.fixture(scope="module")
def server_env() -> Path:
    # Installs the server venv and PostgreSQL/PostGIS when missing; raises (never skips) if it
    # cannot.
    return ensure_server_env()


def test_search_through_a_real_stac_api(server_env: Path, tmp_path: Path) -> None:
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


def test_stop_after_error_in_body_and_restart(server_env: Path) -> None:
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


def test_bad_input_and_busy_port(server_env: Path, tmp_path: Path) -> None:
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


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another OS user")
def test_workdir_closed_to_postgres_user_is_a_clear_error(server_env: Path, tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    server = StacApiServer([_collection()], [], workdir=closed)
    with pytest.raises(StacServerError, match="cannot reach"):
        server.start()
    assert server.tmpdir is None and list(closed.iterdir()) == []


def test_ensure_server_env_is_fast_when_installed(server_env: Path) -> None:
    assert ensure_server_env(install=False) == server_env
    assert (server_env / "bin" / "uvicorn").exists()
