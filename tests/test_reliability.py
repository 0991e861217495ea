"""Search and cube loads over a network that fails: retries, identical results, typed errors.

The world's COGs and a real STAC API (pgstac) are served through
:class:`lames_cube.testing.faults.FaultyServer`, which fails a seeded fraction of requests
(503, 429 + Retry-After, resets, stalls past the timeout, bodies cut short). The independent
truth is a clean run: the local index and the local files, read without any network.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from lames_cube.cube import build_cube, read_skipped
from lames_cube.errors import AssetReadError, CatalogUnreachableError, InvalidQueryError
from lames_cube.retry import RetryPolicy, RetryPolicyError, retry_counts
from lames_cube.search import search
from lames_cube.synthetic.write import read_world_stac
from lames_cube.testing.faults import ASSET_ORIGIN, FaultyServer, asset_hrefs

#: Fast retries for tests: the stall (1.5 s) outlasts the timeout (1 s).
FAST = RetryPolicy(attempts=8, backoff_s=0.02, max_backoff_s=0.2, jitter=0.5, timeout_s=1)
BANDS = ["B04", "B11", "SCL"]


def _query(world):
    return {"sites": ["2355"], "datetime": "2021"}


def _cube(items, **kw):
    return build_cube(items, bands=BANDS, chunks=256, **kw)


def _items_through(server, items, root):
    """The items as pystac objects reading their assets through ``server``."""
    import pystac

    dicts = [i.to_dict(transform_hrefs=False) for i in items]
    return [pystac.Item.from_dict(d) for d in asset_hrefs(dicts, root, server.origin)]


@pytest.fixture(scope="module")
def clean(world):
    """The truth: the local index and the local files, no network."""
    items = search(world, **_query(world))
    return items, _cube(items).compute()


@pytest.fixture(scope="module")
def api(stac_server_env, world):
    """The world's items in a real STAC API, with asset hrefs under ASSET_ORIGIN."""
    from lames_cube.services.stac_api import StacApiServer

    collection, items = read_world_stac(world)
    with StacApiServer([collection], asset_hrefs(items, world)) as server:
        yield server.url


def test_search_and_cube_through_20_percent_failures_equal_a_clean_run(api, world, clean):
    """20 % of requests fail, of every kind: the same item ids and the same pixels."""
    ref_items, ref = clean
    before = retry_counts()
    # seed 15 fails 2 of the search's first 4 requests, and then a fifth of the reads
    with FaultyServer(world, fail=0.2, seed=15, stall_s=1.5, retry_after=0.05,
                      upstream=api) as server:
        origin = server.origin
        items = search(server.stac_url, **_query(world), retry=FAST, timeout=FAST.timeout_s)
        searched = server.requests
        cube = _cube(items, retry=FAST).compute()
    retries = retry_counts() - before
    print(f"\n{server.requests} requests ({searched} for the search), "
          f"{sum(server.faults.values())} failed {dict(server.faults)}; retries by the search: "
          f"{retries['search']}, re-reads by the reader: {retries['read']}, the rest by GDAL")
    assert [i.id for i in items] == [i.id for i in ref_items]
    assert all(a.href.startswith(origin) for i in items for a in i.assets.values())
    assert sum(server.faults.values()) >= 0.1 * server.requests > 5
    assert set(server.faults) == {"500", "429", "reset", "stall", "truncate"}
    assert retries["search"] > 0
    np.testing.assert_array_equal(cube.values, ref.values)
    assert (ref.values > 0).mean() > 0.5


def _pages(server):
    import pystac_client

    from lames_cube.search import _stac_io

    client = pystac_client.Client.open(server.stac_url, stac_io=_stac_io(5, FAST))
    pages = client.search(collections=["sentinel-2-l2a"], limit=2, datetime="2021").pages()
    return [[i.id for i in page] for page in pages]


def test_search_pages_are_retried_one_by_one(api, world):
    """A search of many small pages: a failed page is fetched again, not the whole search."""
    with FaultyServer(world, upstream=api) as server:
        truth = _pages(server)
    clean_requests = server.requests
    before = retry_counts()["search"]
    with FaultyServer(world, fail=0.3, kinds=("500", "truncate"), seed=3,
                      upstream=api) as server:
        pages = _pages(server)
    retried = retry_counts()["search"] - before
    print(f"\n{len(pages)} pages in {server.requests} requests ({clean_requests} without "
          f"faults), {retried} retried {dict(server.faults)}")
    assert pages == truth and len(pages) > 3
    assert retried == sum(server.faults.values()) > 0
    assert server.requests == clean_requests + retried  # each failed request once more


def test_a_search_that_keeps_failing_is_a_typed_error(api, world):
    with FaultyServer(world, fail=1.0, kinds=("500",), upstream=api) as server, \
            pytest.raises(CatalogUnreachableError, match=r"still failed after 3 tries"):
        search(server.stac_url, retry=RetryPolicy(attempts=3, backoff_s=0.01))
    assert server.requests == 3


def test_429_waits_as_long_as_the_server_asks(api, world, caplog):
    with FaultyServer(world, fail=0.5, kinds=("429",), retry_after=0.3, seed=1,
                      upstream=api) as server, caplog.at_level(logging.INFO, "lames_cube.retry"):
        search(server.stac_url, **_query(world), retry=RetryPolicy(attempts=8, backoff_s=0.001))
    waits = [float(r.getMessage().split(" in ")[1].split(" s ")[0]) for r in caplog.records
             if r.getMessage().startswith("retry")]
    assert waits and min(waits) >= 0.3 - 1e-9, waits


@pytest.mark.slow  # 22 s; the 20 % test above mixes every kind in the default run
def test_cube_reads_through_every_kind_of_failure(world, clean):
    """Without the API: each kind alone, 25 % of the reads fail; the pixels never change."""
    ref_items, ref = clean
    for kind in ("500", "429", "reset", "stall", "truncate"):
        with FaultyServer(world, fail=0.25, kinds=(kind,), seed=11, stall_s=1.5) as server:
            items = _items_through(server, ref_items, world)
            got = _cube(items, retry=FAST).compute()
        print(f"{kind}: {server.requests} requests, {sum(server.faults.values())} failed")
        assert sum(server.faults.values()) > 0, kind
        np.testing.assert_array_equal(got.values, ref.values, err_msg=kind)


def test_failures_gdal_gives_up_on_are_read_again(world, clean):
    """Three failures in a row outlast GDAL's own tries (attempts=2): the reader reads again,
    without GDAL's cache, and gets the same pixels."""
    ref_items, _ = clean
    one = [ref_items[0].clone()]
    before = retry_counts()["read"]
    with FaultyServer(world, only=(0, 1, 2), kinds=("500",)) as server:
        items = _items_through(server, one, world)
        got = build_cube(items, bands=["B04"], chunks=256,
                         retry=RetryPolicy(attempts=2, backoff_s=0.01)).compute()
        faults = sum(server.faults.values())
    assert faults == 3 and retry_counts()["read"] - before >= 1
    expected = build_cube(one, bands=["B04"], chunks=256).compute()
    np.testing.assert_array_equal(got.values, expected.values)


def test_which_read_errors_are_retried():
    """Over the network only refusals (4xx but 408/429, also found in a cause) are final: a
    file "not recognized" may only have had its header read fail. Local files never retry."""
    import rasterio.errors

    from lames_cube.cube import _transient

    url, local = "https://example.test/a/B04.tif?sig=x", "/data/B04.tif"
    header = rasterio.errors.RasterioIOError(
        "'/vsicurl/https://example.test/a/B04.tif' not recognized as being in a supported file "
        "format.")
    assert _transient(url, header) and not _transient(local, header)
    assert _transient(url, rasterio.errors.RasterioIOError("HTTP response code: 503"))
    assert _transient(url, rasterio.errors.RasterioIOError("HTTP response code: 429"))
    refused = rasterio.errors.RasterioIOError("Read failed")
    refused.__cause__ = rasterio.errors.RasterioIOError("HTTP response code: 403")
    assert not _transient(url, refused)
    assert not _transient(url, rasterio.errors.RasterioIOError("HTTP response code: 404"))
    assert not _transient(url, MemoryError("a bug, not the network"))


def test_a_broken_asset_names_its_item_and_asset(world, clean, tmp_path):
    """A COG that is not a COG (a corrupt file): no retry mends it; the error names it."""
    ref_items, _ = clean
    root = tmp_path / "w"
    shutil.copytree(world, root)
    item = ref_items[0]
    href = item.assets["B11"].href
    broken = root / __import__("pathlib").Path(href).relative_to(world.resolve())
    broken.write_bytes(broken.read_bytes()[:1000])  # a download cut short, saved anyway
    items = [i.clone() for i in ref_items]
    for i in items:
        for a in i.assets.values():
            a.href = str(root / __import__("pathlib").Path(a.href).relative_to(world.resolve()))
    with pytest.raises(AssetReadError,
                       match=rf"Could not read asset 'B11' of item '{item.id}'.*on_error='nodata'"):
        _cube(items).compute()


def test_on_error_nodata_reads_through_and_reports_what_it_skipped(world, clean, tmp_path):
    """A permanently failing server for one asset: nodata there, the rest identical, and the
    skip log names the item and asset."""
    ref_items, ref = clean
    item = ref_items[0]
    log = tmp_path / "skipped.jsonl"
    with FaultyServer(world) as server:
        items = _items_through(server, ref_items, world)
        bad = next(i for i in items if i.id == item.id)
        bad.assets["B11"].href = server.url("does/not/exist.tif")  # 404: never mended
        cube = _cube(items, on_error="nodata", skipped=log, retry=FAST)
        got = cube.compute()
    records = read_skipped(cube)
    assert records and {(r["item"], r["asset"]) for r in records} == {(item.id, "B11")}
    assert all("404" in r["error"] for r in records)
    assert json.loads(log.read_text().splitlines()[0])["href"].endswith("exist.tif")
    b11 = list(got.band.values).index("B11")
    same = np.ones(got.shape, bool)
    same[:, b11] = False
    np.testing.assert_array_equal(got.values[same], ref.values[same])  # other bands untouched
    changed = (got.values[:, b11] != ref.values[:, b11]).any(axis=(1, 2))
    day = np.datetime64(item.properties["lames:solar_day"], "ns")
    assert changed.any() and (got.solar_day.values[changed] == day).all()  # its day only


def test_read_settings_are_checked():
    with pytest.raises(RetryPolicyError, match=r"attempts=0 must be an integer >= 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(RetryPolicyError, match=r"jitter=2 must be a fraction"):
        RetryPolicy(jitter=2)
    with pytest.raises(InvalidQueryError, match=r"on_error='skip' is not one of"):
        build_cube([], on_error="skip")
    with pytest.raises(InvalidQueryError, match=r"on_error='nodata' needs engine='odc'"):
        build_cube([], on_error="nodata", engine="stackstac")
    assert ASSET_ORIGIN.endswith(".invalid")  # never a real host


def test_signatures_stay_out_of_messages():
    """A SAS token or any other query never reaches an error message or the skip log."""
    from lames_cube.cube import _public

    text = "HTTP 403 on https://acct.blob.core.windows.net/c/B04.tif?st=2021&sig=SECRET for x"
    assert "SECRET" not in _public(text) and "B04.tif?…" in _public(text)
    assert _public("/data/B04.tif") == "/data/B04.tif"
