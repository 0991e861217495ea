"""The fault-injecting file server of the reliability tests fails as it claims to, and only so."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from lames_cube.testing import stac_data_dir
from lames_cube.testing.faults import FaultyServer, FaultyServerError


@pytest.fixture
def root(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "data.bin").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "secret.txt").write_text("outside the root")
    return served


def _raw(server, path, headers=None, method="GET", timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_clean_server_serves_ranges_exactly(root):
    data = (root / "data.bin").read_bytes()
    with FaultyServer(root) as server:
        assert server._httpd.server_address[0] == "127.0.0.1"
        assert _raw(server, "/data.bin")[2] == data
        status, headers, body = _raw(server, "/data.bin", {"Range": "bytes=100-1123"})
        assert status == 206 and body == data[100:1124]
        assert headers["Content-Range"] == f"bytes 100-1123/{len(data)}"
        assert _raw(server, "/data.bin", {"Range": "bytes=-10"})[2] == data[-10:]
        assert _raw(server, "/data.bin", {"Range": f"bytes={len(data)}-"})[0] == 416
        status, headers, body = _raw(server, "/data.bin", method="HEAD")
        assert status == 200 and int(headers["Content-Length"]) == len(data) and body == b""
        # nothing outside the root, however the path is spelled
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/nope.bin", "/"):
            assert _raw(server, path)[0] == 404
    assert server.faults == {}


@pytest.mark.parametrize("kind", ["500", "429", "reset", "stall", "truncate"])
def test_each_fault_is_what_a_client_sees(root, kind):
    with FaultyServer(root, fail=1.0, kinds=[kind], stall_s=2.0, retry_after=1) as server:
        if kind == "500":
            assert _raw(server, "/data.bin")[0] == 503
        elif kind == "429":
            status, headers, _ = _raw(server, "/data.bin")
            assert status == 429 and headers["Retry-After"] == "1"
        elif kind == "reset":
            with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
                _raw(server, "/data.bin")
        elif kind == "stall":
            t0 = time.monotonic()
            with pytest.raises((socket.timeout, TimeoutError)):
                _raw(server, "/data.bin", timeout=0.5)
            assert time.monotonic() - t0 < 1.5
        else:
            with pytest.raises(http.client.IncompleteRead):
                _raw(server, "/data.bin")
        assert server.faults[kind] == 1


def test_fraction_is_seeded_and_repeatable(root):
    def statuses(seed):
        with FaultyServer(root, fail=0.2, kinds=["500", "429"], seed=seed) as server:
            out = [_raw(server, "/data.bin", {"Range": "bytes=0-9"})[0] for _ in range(300)]
        return out, server

    first, server = statuses(7)
    again, _ = statuses(7)
    other, _ = statuses(8)
    failed = sum(s != 206 for s in first)
    print(f"{failed} of 300 requests failed (fail=0.2): {dict(server.faults)}")
    assert first == again and first != other
    assert 0.14 < failed / 300 < 0.26 and server.faults["500"] and server.faults["429"]


def test_bounds_and_bad_settings(root, tmp_path):
    with FaultyServer(root, max_requests=2) as server:
        assert [_raw(server, "/data.bin")[0] for _ in range(3)] == [200, 200, 503]
        assert server.faults["limit"] == 1
        port = server.port
    with pytest.raises(ConnectionRefusedError):  # stopped on leaving the block
        _raw(_Closed(port), "/data.bin", timeout=1)
    short = FaultyServer(root, max_seconds=0.3).start()
    port = short.port
    time.sleep(0.8)  # the watchdog stopped it
    with pytest.raises(ConnectionRefusedError):
        _raw(_Closed(port), "/data.bin", timeout=1)
    with pytest.raises(FaultyServerError, match=r"fail=1\.5 must be a fraction"):
        FaultyServer(root, fail=1.5)
    with pytest.raises(FaultyServerError, match="are not failure kinds"):
        FaultyServer(root, kinds=["boom"])
    with pytest.raises(FaultyServerError, match="is not a folder"):
        FaultyServer(tmp_path / "missing")


class _Closed:
    """A stand-in with the port of a stopped server."""

    def __init__(self, port: int) -> None:
        self.port = port


def test_gdal_reads_a_real_cog_through_it_as_from_disk():
    pixels = stac_data_dir() / "pixels"
    cog = sorted(pixels.rglob("*.tif"))[0]
    window = Window(100, 200, 300, 150)
    with rasterio.open(cog) as src:
        want = src.read(1, window=window)
    env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": "0"}
    with FaultyServer(pixels) as server, rasterio.Env(**env):
        with rasterio.open(server.url(cog)) as src:
            got = src.read(1, window=window)
        assert server.requests >= 1
    np.testing.assert_array_equal(got, want)


def test_urllib_sees_http_errors_as_errors(root):
    with FaultyServer(root, fail=1.0, kinds=["500"]) as server:
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(server.url("data.bin"), timeout=5)
    assert Path(root / "data.bin").exists()
