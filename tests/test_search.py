"""search(): the stac-geoparquet backend against a brute-force filter of the item JSON files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import shapely.geometry

from lames_cube.annotations import load_sites
from lames_cube.errors import (
    CatalogUnreachableError,
    DataDirError,
    EmptySearchError,
    InvalidBBoxError,
    InvalidQueryError,
    UnknownSiteError,
)
from lames_cube.search import search


def _raw(world: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(world.glob("stac/*/*/*.json"))]


def _when(item: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))


def brute_force(world, *, area=None, start=None, end=None, max_cloud=None) -> set[str]:
    """The ids an exact search must return, computed from the JSON files directly."""
    out = set()
    for item in _raw(world):
        geom = shapely.geometry.shape(item["geometry"])
        if area is not None and not geom.intersects(area):
            continue
        if start is not None and not (start <= _when(item) <= end):
            continue
        if max_cloud is not None and item["properties"]["eo:cloud_cover"] > max_cloud:
            continue
        out.add(item["id"])
    return out


def test_search_everything(world):
    items = search(world)
    assert {i.id for i in items} == brute_force(world)
    times = [(i.datetime, i.id) for i in items]
    assert times == sorted(times)


def test_search_bbox(world):
    w, s, _e, _n = shapely.geometry.shape(_raw(world)[0]["geometry"]).bounds
    bbox = (w + 0.001, s + 0.001, w + 0.004, s + 0.004)
    got = {i.id for i in search(world, bbox=bbox)}
    assert got == brute_force(world, area=shapely.box(*bbox))
    assert 0 < len(got) < len(_raw(world))


def test_search_geometry(world):
    geom = shapely.geometry.shape(_raw(world)[-1]["geometry"]).centroid.buffer(0.002)
    got = {i.id for i in search(world, intersects=shapely.geometry.mapping(geom))}
    assert got == brute_force(world, area=geom)
    assert got


def test_search_dates(world):
    got = {i.id for i in search(world, datetime="2022")}
    start = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2022, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert got == brute_force(world, start=start, end=end)
    assert got and got != brute_force(world)


def test_search_cloud_filter(world):
    got = {i.id for i in search(world, max_cloud=10)}
    assert got == brute_force(world, max_cloud=10)
    assert 0 < len(got) < len(_raw(world))


def test_search_sites(world, lames_dir):
    sites = load_sites("all", data_dir=lames_dir).set_index("site_id")
    area = shapely.box(*sites.loc["2203"].geometry.bounds)
    got = {i.id for i in search(world, sites=["2203"])}
    assert got == brute_force(world, area=area)
    assert got


def test_results_are_normalised(world, world_pc):
    es = search(world, datetime="2022-01-01/2022-12-31")
    pc = search(world_pc, datetime="2022-01-01/2022-12-31")
    assert len(es) == len(pc) > 0

    def acquisition(item):  # PC's datetime is the datatake start: match on tile and solar day
        return item.properties["s2:mgrs_tile"], item.properties["lames:solar_day"]

    pc_by = {acquisition(b): b for b in pc}
    assert set(pc_by) == {acquisition(a) for a in es}
    for a in es:
        b = pc_by[acquisition(a)]
        assert sorted(a.assets) == sorted(b.assets) == ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]
        for key in ("proj:code", "eo:cloud_cover", "platform", "s2:processing_baseline"):
            assert a.properties[key] == b.properties[key], key
        assert a.properties["lames:provider"] == "earth-search-v1"
        assert b.properties["lames:provider"] == "planetary-computer"
        # 2022 is baseline 04.00 (ESA, from 2022-01-25): Earth Search removed the offset from its
        # pixels, PC did not (../shared/stac MANIFEST.md section 5)
        assert (a.properties["lames:dn_offset"], b.properties["lames:dn_offset"]) == (0, 1000)
        for band in a.assets:
            assert a.assets[band].extra_fields["proj:transform"] == b.assets[band].extra_fields["proj:transform"]


def test_odc_stac_pixels_equal_rasterio(world):
    """Items load with odc-stac, and its pixels equal direct rasterio reads on the native grid."""
    import odc.stac

    items = search(world, datetime="2021")
    item = items[0]
    with rasterio.open(item.assets["B04"].href) as src:
        ref = src.read(1)
        crs, transform = src.crs, src.transform
    from odc.geo.geobox import GeoBox

    gbox = GeoBox(ref.shape, transform, crs.to_wkt())
    data = odc.stac.load([item], bands=["B04", "B08", "SCL"], geobox=gbox, groupby="id")
    np.testing.assert_array_equal(data["B04"].isel(time=0).values, ref)
    with rasterio.open(item.assets["SCL"].href) as src:
        scl = src.read(1)
    g20 = GeoBox(scl.shape, src.transform, crs.to_wkt())
    data20 = odc.stac.load([item], bands=["SCL"], geobox=g20, groupby="id")
    np.testing.assert_array_equal(data20["SCL"].isel(time=0).values, scl)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bbox, match",
    [
        ((1, 2, 3), "not four numbers"),
        ("1,2,3,4", "not four numbers"),
        ((10, 0, 5, 1), "west >= east"),
        ((300000, 7000000, 310000, 7010000), "out of range"),
        ((1, "a", 2, 3), "not a number"),
        ((0, float("nan"), 1, 1), "non-finite"),
    ],
)
def test_malformed_bbox(world, bbox, match):
    with pytest.raises(InvalidBBoxError, match=match):
        search(world, bbox=bbox)


def test_unknown_site(world):
    with pytest.raises(UnknownSiteError, match=r"Unknown LAMES site id\(s\) \['999999'\]"):
        search(world, sites=["999999"])


def test_empty_search(world):
    with pytest.raises(EmptySearchError, match=r"No items matched.*Widen the period"):
        search(world, datetime="1999")
    with pytest.raises(EmptySearchError, match="max_cloud"):
        search(world, max_cloud=0, datetime="2021-01-01/2021-02-01", bbox=(-10, -10, -9, -9))


def test_unreachable_url():
    with pytest.raises(CatalogUnreachableError, match="does not answer"):
        search("http://127.0.0.1:9/", bbox=(-70, -25, -69, -24), timeout=2, retry=2)


def test_missing_local_index(tmp_path):
    with pytest.raises(CatalogUnreachableError, match="neither an http"):
        search(tmp_path / "nothing.parquet")


def test_sites_without_data_dir(tmp_path, monkeypatch, world):
    monkeypatch.setenv("LAMES_DATA_DIR", str(tmp_path))
    with pytest.raises(DataDirError, match="LAMES_DATA_DIR="):
        search(tmp_path, sites=["2203"])


def test_bad_arguments(world):
    with pytest.raises(InvalidQueryError, match="at most one of"):
        search(world, bbox=(-70, -25, -69, -24), sites=["2203"])
    with pytest.raises(InvalidQueryError, match="starts after it ends"):
        search(world, datetime="2022/2021")
    with pytest.raises(InvalidQueryError, match=r"outside 0\.\.100"):
        search(world, max_cloud=120)


def test_real_provider_items_normalise_like_synthetic_ones(world, stac_dir):
    """Real ES v0/v1 and PC item JSON gets the same band keys and CRS fields as the world's items."""
    from lames_cube.items import normalize_item

    synthetic = search(world)[0]
    fields = ("proj:code", "s2:mgrs_tile", "s2:processing_baseline", "lames:dn_offset", "platform")
    files = [
        *sorted((stac_dir / "earth_search_v1/items/sentinel-2-l2a").glob("*.json")),
        *sorted((stac_dir / "earth_search_v0/items").rglob("*.json")),
        *sorted((stac_dir / "planetary_computer/items").rglob("*.json"))[:6],
    ]
    files = [f for f in files if "ARRAY" not in f.name]
    assert len(files) >= 15  # ../shared/stac MANIFEST.md: 10 ES v1 + 5 ES v0 + the first 6 PC files
    for path in files:
        raw = json.loads(path.read_text())
        item = normalize_item(raw)
        assert set(synthetic.assets) <= set(item.assets), path.name
        for field in fields:
            if field == "s2:processing_baseline" and item.properties.get(field) is None:
                continue
            assert type(item.properties[field]) is type(synthetic.properties[field]), (path.name, field)
        code = item.properties["proj:code"]
        epsg = raw["properties"].get("proj:epsg") or int(str(raw["properties"].get("proj:code")).split(":")[1])
        assert code == f"EPSG:{epsg}"
        for band in synthetic.assets:
            assert len(item.assets[band].extra_fields["proj:transform"]) == 6


def test_bbox_from_numpy_and_subsecond_periods(world):
    import geopandas as gpd

    first = _raw(world)[0]
    bounds = gpd.GeoSeries([shapely.geometry.shape(first["geometry"])], crs=4326).total_bounds
    assert first["id"] in {i.id for i in search(world, bbox=bounds)}
    when = _when(first)
    start = (when - dt.timedelta(milliseconds=1)).isoformat().replace("+00:00", "Z")
    end = (when + dt.timedelta(milliseconds=1)).isoformat().replace("+00:00", "Z")
    got = search(world, datetime=f"{start}/{end}")
    assert first["id"] in {i.id for i in got}
