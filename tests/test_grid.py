"""The LAMES tile grid (country and per-site boxes), the mosaic grid and their GeoParquet export."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Geod, Transformer

from lames_cube import grid
from lames_cube.annotations import load_sites
from lames_cube.errors import AnnotationError, InvalidGridError

GEOD = Geod(ellps="WGS84")
D_CHILE = 256 * 9 * 10.0  # D = 256 k 10 m with k = 9 for Chile (DESIGN.md section 5)


@pytest.fixture(scope="module")
def candidates():
    """Every candidate box of the Chile layout, with ``kept``."""
    return grid.lames_tiles("chile", include_dropped=True)


@pytest.fixture(scope="module")
def tiles():
    return grid.lames_tiles("chile")


@pytest.fixture(scope="module")
def sites(lames_dir):
    with warnings.catch_warnings():  # the loader's cleaning report is not under test here
        warnings.simplefilter("ignore")
        return {split: load_sites(split, data_dir=lames_dir) for split in ("train", "test")}


@pytest.fixture(scope="module")
def mosaic():
    return grid.mosaic_geobox("chile"), grid.mosaic_tiles("chile")


def _bounds(gdf):
    b = gdf.geometry.bounds
    return [b[c].to_numpy() for c in ("minx", "miny", "maxx", "maxy")]


# --------------------------------------------------------------------------- LAMES country grid


def test_chile_outline_is_shipped_and_matches_natural_earth():
    poly = grid.region_polygon("Chile")
    assert poly.geom_type == "MultiPolygon"
    # north-east corner of Natural Earth 1:110m Chile (DESIGN.md section 5; compared below)
    np.testing.assert_allclose(poly.bounds[2:], (-66.95992, -17.580012), atol=1e-6)
    assert (grid._DATA / "chile_ne110m.geojson").stat().st_size < 20_000
    from lames_cube.recipes.cubes import _outlines_path

    path = _outlines_path()
    if path is None:  # the pinned pyogrio wheel ships the fixture: a missing one is a broken env
        pytest.fail("The Natural Earth 1:110m countries are not found (no lames_cube/data/"
                    "*countries* file, no pyogrio tests/fixtures/naturalearth_lowres); reinstall "
                    "the pinned pyogrio (pyproject.toml) to compare chile_ne110m.geojson with them.")
    ne = gpd.read_file(path)
    assert shapely.equals_exact(ne.loc[ne["name"] == "Chile"].geometry.iloc[0], poly, 0)


def test_chile_grid_has_1838_tiles_from_the_north_east_corner(tiles):
    # 1,838 boxes of k = 9 (2304 px): the LAMES repository's grid (the paper says 1,842);
    # DESIGN.md section 5
    assert len(tiles) == 1838
    assert list(tiles.columns[:6]) == ["name", "hpos", "vpos", "width", "height", "transform"]
    assert tiles.crs.to_epsg() == 4326
    assert tiles.attrs["lames"]["k"] == 9
    assert (tiles["width"] == 2304).all() and (tiles["height"] == 2304).all()
    np.testing.assert_allclose(tiles.attrs["lames"]["origin"], (-66.95992, -17.580012), atol=1e-6)
    # Row 0 starts at the outline's north edge; no box reaches east of the outline's east edge.
    _west, _south, east, north = _bounds(tiles)
    assert north.max() == pytest.approx(-17.580012, abs=1e-6)
    assert np.all(east <= -66.95992 + 1e-9)


def test_chile_11_0_bounds(tiles):
    tile = tiles.set_index("name").loc["Chile_11_0"]
    assert (tile["hpos"], tile["vpos"]) == (11, 0)
    # By hand: the 12th box west of the corner, each D = 23,040 m = 0.2170° of longitude at
    # 17.58° S: -66.95992 - 12 x 0.2170 = -69.564; south = -17.580012 - 23.04 km / 110.7 km.
    np.testing.assert_allclose(tile.geometry.bounds, (-69.564465, -17.788066, -69.347420, -17.580012),
                               atol=1e-6)


def test_names_and_positions_are_unique(tiles, candidates):
    assert tiles["name"].is_unique
    assert not tiles.duplicated(["hpos", "vpos"]).any()
    assert (tiles["name"] == [f"Chile_{h}_{v}" for h, v in zip(tiles.hpos, tiles.vpos, strict=True)]).all()
    # hpos counts every candidate of a row from 0, dropped ones included; vpos counts rows.
    for _vpos, row in candidates.groupby("vpos"):
        assert list(row["hpos"]) == list(range(len(row)))
    assert sorted(candidates["vpos"].unique()) == list(range(candidates["vpos"].max() + 1))


def test_kept_tiles_intersect_chile_and_dropped_do_not(candidates, tiles):
    chile = grid.region_polygon("chile")
    hits = shapely.intersects(chile, candidates.geometry.values)
    assert (hits == candidates["kept"].to_numpy()).all()
    assert candidates["kept"].sum() == len(tiles) == 1838  # DESIGN.md section 5
    assert len(candidates) > len(tiles)
    kept = candidates[candidates["kept"]].drop(columns="kept").reset_index(drop=True)
    assert kept["name"].tolist() == tiles["name"].tolist()


def test_layout_follows_the_geodesic_rule(candidates):
    west, south, east, north = _bounds(candidates)
    n = len(candidates)
    # North edge: D west along a geodesic from the start point lands exactly on the west edge.
    lon, lat, _ = GEOD.fwd(east, north, np.full(n, 270.0), np.full(n, D_CHILE))
    np.testing.assert_allclose(lon, west, atol=1e-9)
    # From there D south (a meridian) to the south-west corner.
    _, _, down = GEOD.inv(lon, lat, west, south)
    np.testing.assert_allclose(down, D_CHILE, rtol=1e-9)
    # So the sides are ≈ D: the north edge to 1e-4, the east edge to 0.5 % (the west point
    # of a geodesic at bearing 270° lies slightly off the start's parallel).
    _, _, top = GEOD.inv(east, north, west, north)
    _, _, right = GEOD.inv(east, north, east, south)
    np.testing.assert_allclose(top, D_CHILE, rtol=1e-4)
    np.testing.assert_allclose(right, D_CHILE, rtol=5e-3)
    # Boxes of a row share north and south; the next row starts at the row's south edge.
    rows = candidates.assign(n=north, s=south).groupby("vpos")
    assert (rows["n"].nunique() == 1).all()
    np.testing.assert_allclose(rows["s"].max().to_numpy(), rows["s"].min().to_numpy(), atol=1e-12)
    np.testing.assert_array_equal(rows["n"].first().to_numpy()[1:], rows["s"].last().to_numpy()[:-1])
    # Within a row the next box starts at the previous box's west edge.
    for _vpos, row in candidates.groupby("vpos"):
        b = row.geometry.bounds
        np.testing.assert_array_equal(b["maxx"].to_numpy()[1:], b["minx"].to_numpy()[:-1])


def test_transform_maps_pixel_corners_to_the_box_in_3857(tiles):
    to3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    west, south, east, north = _bounds(tiles)
    x0, y0 = to3857.transform(west, north)
    x1, y1 = to3857.transform(east, south)
    ul = np.array([Affine.from_gdal(*t) @ (0, 0) for t in tiles["transform"]])
    lr = np.array([Affine.from_gdal(*t) @ (w, h) for t, w, h in
                   zip(tiles["transform"], tiles["width"], tiles["height"], strict=True)])
    np.testing.assert_allclose(ul, np.c_[x0, y0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(lr, np.c_[x1, y1], rtol=0, atol=1e-6)
    t = tiles["transform"].iloc[0]
    assert isinstance(t, tuple) and len(t) == 6 and all(type(v) is float for v in t)
    assert t[2] == t[4] == 0.0 and t[1] > 0 > t[5]
    gbox = grid.lames_geobox(tiles.iloc[0])
    assert gbox.crs.epsg == 3857 and tuple(gbox.shape) == (2304, 2304)
    np.testing.assert_allclose(gbox.extent.to_crs("EPSG:4326").boundingbox,
                               tiles.geometry.iloc[0].bounds, atol=1e-9)


def test_polygon_region_and_prefix():
    chile = grid.region_polygon("chile")
    by_poly = grid.lames_tiles(chile)
    assert len(by_poly) == 1838 and by_poly["name"].iloc[0].startswith("Region_")  # as "chile"
    assert grid.lames_tiles(chile, prefix="CL")["name"].iloc[0].startswith("CL_")
    series = gpd.GeoSeries([chile], crs=4326).to_crs("EPSG:32719")
    assert len(grid.lames_tiles(series)) == 1838  # reprojected back to EPSG:4326


def test_lames_k():
    # k = min(2500, s) // 256, s = the larger side in 10 m px rounded up to 256 (DESIGN.md
    # section 5): Chile (its Natural Earth bounds) gives 9; a 100 m box s = 256, k = 1; a point 0
    assert grid.lames_k((-75.644395, -55.61183, -66.95992, -17.580012)) == 9
    assert grid.lames_k((-70.0, -25.0, -69.999, -24.999)) == 1
    assert grid.lames_k((-70.0, -25.0, -70.0, -25.0)) == 0


# --------------------------------------------------------------------------- per-site boxes


def test_site_boxes_give_358_and_131_patches(sites):
    # 104 / 35 sites (MANIFEST.md); 358 training+validation and 131 test patches: LAMES
    # repository, DESIGN.md section 5
    for split, n_sites, n_patches in (("train", 104, 358), ("test", 35, 131)):
        boxes = grid.site_boxes(sites[split])
        assert len(boxes) == n_sites
        assert boxes["site_id"].tolist() == sites[split]["site_id"].tolist()
        assert int((boxes["k"] ** 2).sum()) == int(boxes["n_patches"].sum()) == n_patches
        assert ((boxes["width"] == boxes["k"] * 256) & (boxes["height"] == boxes["width"])).all()
        # One box from each site's north-east corner, holding the whole site.
        sw, ss, se, sn = _bounds(sites[split])
        bw, bs, be, bn = _bounds(boxes)
        np.testing.assert_array_equal(be, se)
        np.testing.assert_array_equal(bn, sn)
        assert np.all(bw <= sw) and np.all(bs <= ss)
        assert boxes.geometry.contains(sites[split].geometry).all()


def test_site_box_geodesic_side(sites):
    boxes = grid.site_boxes(sites["test"])
    west, _south, east, north = _bounds(boxes)
    _, _, top = GEOD.inv(east, north, west, north)
    np.testing.assert_allclose(top, boxes["k"].to_numpy() * 2560.0, rtol=1e-4)  # k x 256 px x 10 m


def test_site_boxes_reproject_other_crs(sites):
    utm = sites["test"].to_crs("EPSG:32719")
    np.testing.assert_array_equal(grid.site_boxes(utm)["k"], grid.site_boxes(sites["test"])["k"])


def test_site_boxes_errors(sites):
    one = sites["test"].iloc[:1]
    with pytest.raises(AnnotationError, match="empty GeoDataFrame"):
        grid.site_boxes(one.iloc[:0])
    with pytest.raises(AnnotationError, match="GeoDataFrame"):
        grid.site_boxes(one.drop(columns="geometry").to_dict())
    with pytest.raises(AnnotationError, match="no 'site_id' column"):
        grid.site_boxes(one.rename(columns={"site_id": "id"}))
    assert grid.site_boxes(one.rename(columns={"site_id": "id"}), id_column="id").columns[0] == "id"
    projected = one.to_crs("EPSG:32719").set_crs(4326, allow_override=True)
    with pytest.raises(AnnotationError, match="outside lon/lat range"):
        grid.site_boxes(projected)
    big = gpd.GeoDataFrame({"site_id": ["huge"]}, geometry=[shapely.box(-70.5, -25.5, -70.0, -25.0)],
                           crs=4326)
    # by hand: its larger side, 0.5° of latitude, is 55.3 km = 5,530 px, over the 2,500 px limit;
    # k = min(2500, s) // 256 = 9
    with pytest.raises(InvalidGridError, match=r"'huge'.*needs 9 LAMES boxes"):
        grid.site_boxes(big)
    with pytest.raises(InvalidGridError, match="no extent"):
        grid.site_boxes(gpd.GeoDataFrame({"site_id": ["pt"]}, geometry=[shapely.Point(-70, -25)], crs=4326))


# --------------------------------------------------------------------------- region errors


def test_region_errors():
    with pytest.raises(InvalidGridError, match=r"Unknown region 'peru'.*\['chile'\]"):
        grid.lames_tiles("peru")
    with pytest.raises(InvalidGridError, match="outside the EPSG:4326 range"):
        grid.lames_tiles(shapely.box(300_000, 7_000_000, 400_000, 7_100_000))
    with pytest.raises(InvalidGridError, match="empty"):
        grid.lames_tiles(shapely.Polygon())
    with pytest.raises(InvalidGridError, match="Point"):
        grid.lames_tiles(shapely.Point(-70, -30))
    with pytest.raises(InvalidGridError, match="not a valid polygon"):
        grid.lames_tiles(shapely.Polygon([(-70, -30), (-69, -29), (-69, -30), (-70, -29)]))
    with pytest.raises(InvalidGridError, match="neither a region name"):
        grid.lames_tiles(42)
    with pytest.raises(InvalidGridError, match="antimeridian or a pole"):
        grid.lames_tiles(shapely.box(-180, -30, -179.9, -29.9))


# --------------------------------------------------------------------------- mosaic grid


def test_mosaic_geobox_is_aligned_and_covers_chile(mosaic):
    gbox, tiles = mosaic
    step = 2304 * 10.0
    assert gbox.crs.epsg == 32719 and gbox.resolution.x == 10 and gbox.resolution.y == -10
    assert gbox.affine.c % step == 0 and gbox.affine.f % step == 0
    assert gbox.shape.y % 2304 == 0 and gbox.shape.x % 2304 == 0
    assert len(tiles) == (gbox.shape.y // 2304) * (gbox.shape.x // 2304)
    assert (tiles["width"] % 256 == 0).all() and (tiles["height"] % 256 == 0).all()
    assert tiles["tile_id"].is_unique and not tiles.duplicated(["row", "col"]).any()
    chile = grid._region_in("chile", tiles.crs)
    active = tiles[tiles["active"]]
    assert shapely.covers(active.union_all(), chile)
    assert shapely.intersects(chile, active.geometry.values).all()
    assert not shapely.intersects(chile, tiles[~tiles["active"]].geometry.values).any()
    # 1,826: counted by this grid when it landed (DESIGN.md 5b), no outside source; LAMES' own
    # EPSG:3857 layout needs 1,838 boxes
    assert int(tiles["active"].sum()) == 1826
    # Each tile is the GeoBox sliced at its pixel offsets.
    for _, t in tiles.sample(20, random_state=0).iterrows():
        sub = gbox[t.y_off:t.y_off + t.height, t.x_off:t.x_off + t.width]
        assert sub.affine == Affine.from_gdal(*t["transform"])
        np.testing.assert_allclose(sub.extent.boundingbox, t.geometry.bounds)
    assert len(grid.mosaic_tiles("chile", active_only=True)) == 1826


def test_mosaic_other_settings():
    tiles = grid.mosaic_tiles("chile", crs="EPSG:32718", resolution=20, tile_size=512)
    assert tiles.crs.to_epsg() == 32718 and (tiles["width"] == 512).all()
    assert tiles["transform"].iloc[0][1] == 20.0


def test_mosaic_errors():
    with pytest.raises(InvalidGridError, match="multiple of the 256 px patch"):
        grid.mosaic_geobox(tile_size=1000)
    with pytest.raises(InvalidGridError, match="positive number"):
        grid.mosaic_geobox(resolution=0)
    with pytest.raises(InvalidGridError, match="not projected"):
        grid.mosaic_geobox(crs="EPSG:4326")
    with pytest.raises(InvalidGridError, match="not a CRS"):
        grid.mosaic_geobox(crs="EPSG:99999999")
    with pytest.raises(InvalidGridError, match="Unknown region"):
        grid.mosaic_tiles("atlantis")


# --------------------------------------------------------------------------- GeoParquet


def _assert_same(back, gdf):
    assert list(back.columns) == list(gdf.columns)
    assert back.crs == gdf.crs
    assert back.geometry.geom_equals_exact(gdf.geometry.reset_index(drop=True), 0).all()
    assert back["transform"].tolist() == gdf["transform"].tolist()
    assert all(isinstance(t, tuple) for t in back["transform"])
    other = [c for c in gdf.columns if c not in ("geometry", "transform")]
    assert back[other].equals(gdf[other].reset_index(drop=True))


def test_geoparquet_round_trip(tmp_path, tiles, sites, mosaic):
    for name, gdf in (("chile", tiles), ("sites", grid.site_boxes(sites["test"])), ("mosaic", mosaic[1])):
        path = grid.write_geoparquet(gdf, tmp_path / f"{name}.parquet")
        _assert_same(grid.read_geoparquet(path), gdf)
        plain = gpd.read_parquet(path)  # any GeoParquet reader: transform is a list<double>
        assert list(plain["transform"].iloc[0]) == list(gdf["transform"].iloc[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chile.parquet", "mosaic.parquet", "sites.parquet"]
    with pytest.raises(InvalidGridError, match="GeoDataFrame"):
        grid.write_geoparquet(tiles.drop(columns="geometry").to_dict(), tmp_path / "x.parquet")


# --------------------------------------------------------------------------- UTM zones


@pytest.fixture(scope="module")
def utm_areas():
    """pyproj's areas of use of the 120 WGS 84 / UTM CRSs: EPSG code -> (west, south, east, north)."""
    from pyproj.database import query_utm_crs_info

    infos = query_utm_crs_info(datum_name="WGS 84")
    return {int(i.code): i.area_of_use for i in infos if i.auth_name == "EPSG"
            and (32601 <= int(i.code) <= 32660 or 32701 <= int(i.code) <= 32760)}


def _in_mgrs_exception(lon: float, lat: float) -> bool:
    return (56 <= lat < 64 and 3 <= lon < 12) or (72 <= lat <= 84 and 0 <= lon < 42)


def test_utm_epsg_agrees_with_pyproj_areas_of_use(utm_areas):
    assert len(utm_areas) == 120
    lons = np.concatenate([np.arange(-180.0, 180.1, 6.0), np.arange(-179.25, 180.0, 1.5),
                           np.arange(-180.0, 180.0, 6.0) + 1e-9, np.arange(-174.0, 180.1, 6.0) - 1e-9])
    lats = np.concatenate([np.arange(-80.0, 84.1, 4.0), [-1e-9, 0.0, 1e-9, 83.99, 84.0]])
    checked = 0
    for lon in lons:
        for lat in lats:
            if _in_mgrs_exception(lon, lat):
                continue
            code = grid.utm_epsg(lon, lat)
            w, s, e, n = (utm_areas[code].west, utm_areas[code].south, utm_areas[code].east,
                          utm_areas[code].north)
            assert w <= lon <= e and s <= lat <= n, (lon, lat, code)
            checked += 1
    assert checked > 10_000
    # Edges belong to the zone east of them, the equator to the north; 180° is zone 60.
    assert grid.utm_epsg(-174.0, 10.0) == 32602 and grid.utm_epsg(-174.0 - 1e-9, 10.0) == 32601
    assert grid.utm_epsg(-69.0, 0.0) == 32619 and grid.utm_epsg(-69.0, -1e-9) == 32719
    assert grid.utm_epsg(180.0, -10.0) == 32760 and grid.utm_epsg(-180.0, -10.0) == 32701


def test_utm_epsg_follows_the_mgrs_exceptions_of_sentinel_2():
    # Sentinel-2 tiles: Bergen 32VKN (zone 32, not 31); Svalbard 33X (not 32/34), 31X, 35X, 37X.
    assert grid.utm_epsg(5.32, 60.39) == 32632
    assert grid.utm_epsg(2.9, 60.0) == 32631 and grid.utm_epsg(5.32, 64.0) == 32631
    assert grid.utm_epsg(15.6, 78.2) == 32633 and grid.utm_epsg(8.9, 79.0) == 32631
    assert grid.utm_epsg(25.0, 80.0) == 32635 and grid.utm_epsg(40.0, 84.0) == 32637
    assert grid.utm_epsg(45.0, 80.0) == 32638  # east of Svalbard's zones again 6° wide


def test_utm_epsg_errors_name_the_value_and_the_fix():
    with pytest.raises(InvalidGridError, match=r"lat=-85\.0 is outside -80\.\.84.*EPSG:32761"):
        grid.utm_epsg(-70.0, -85.0)
    with pytest.raises(InvalidGridError, match=r"lon=200\.0 is not a longitude.*reproject"):
        grid.utm_epsg(200.0, 10.0)
    with pytest.raises(InvalidGridError, match=r"lon=nan"):
        grid.utm_epsg(float("nan"), 10.0)


def test_one_utm_zone_function_serves_the_whole_package():
    from lames_cube.recipes.cubes import Grid
    from lames_cube.synthetic.mines import zones

    bergen = shapely.box(5.3, 60.3, 5.4, 60.4)
    assert Grid("utm", 10).crs_for(5.32, 60.39) == "EPSG:32632"
    assert zones([bergen]).tolist() == [32632]
    root = Path(grid.__file__).parent
    others = [str(p.relative_to(root)) for p in root.rglob("*.py")
              if p.name != "grid.py" and re.search(r"\b32[67]00\b", p.read_text())]
    assert others == [], f"UTM EPSG codes built outside lames_cube.grid.utm_epsg: {others}"


# --------------------------------------------------------------------------- one Natural Earth outline


def test_chile_outline_has_one_loader(monkeypatch):
    from lames_cube.recipes import cubes as recipes
    from lames_cube.testing.catalogs import CHILE_BBOX

    monkeypatch.setattr(recipes, "_outlines_path", lambda: None)  # no other copy to fall back on
    geom = shapely.geometry.shape(recipes.country_geometry("Chile"))
    assert shapely.equals_exact(geom, grid.region_polygon("chile"), 0)
    assert CHILE_BBOX == tuple(round(v, 2) for v in grid.region_polygon("chile").bounds)
    root = Path(grid.__file__).parent
    readers = [str(p.relative_to(root)) for p in root.rglob("*.py")
               if p.name != "grid.py" and "ne110m" in p.read_text()]
    assert readers == [], f"the packaged outline read outside lames_cube.grid: {readers}"
