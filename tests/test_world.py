"""The synthetic world: determinism, valid COGs, readable STAC, planted truth."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from lames_cube.config import find_data_dir
from lames_cube.errors import DataDirError, UnknownSiteError, WorldError
from lames_cube.synthetic import DEMO_SPEC, World, WorldSpec
from lames_cube.testing import SMALL_SPEC, small_world


def _items(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("stac/*/*/*.json"))]


def _files(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and (p.suffix in (".tif", ".csv")
                            or (p.parent.name != root.name and p.suffix == ".json")):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_same_seed_gives_identical_bytes(world, tmp_path, lames_dir):
    again = small_world(tmp_path / "again", data_dir=lames_dir, workers=1)
    a, b = _files(world), _files(again)
    assert len(a) > 100 and "truth.csv" in a
    assert a == b
    other = small_world(tmp_path / "other", data_dir=lames_dir, seed=1)
    other_tifs = {h for k, h in _files(other).items() if k.endswith(".tif")}
    assert other_tifs and not other_tifs & {h for k, h in a.items() if k.endswith(".tif")}


def test_every_cog_is_valid(world):
    tifs = sorted(world.rglob("*.tif"))
    assert tifs, "precondition: the world holds COGs"
    assert len(tifs) == 7 * len(_items(world))  # B02, B03, B04, B08, B11, B12, SCL per item
    for tif in tifs:
        valid, errors, _ = cog_validate(str(tif), quiet=True)
        assert valid, (tif, errors)


def test_catalogue_loads_with_pystac(world):
    catalog = pystac.Catalog.from_file(str(world / "stac" / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    manifest = json.loads((world / "manifest.json").read_text())
    assert len(items) == manifest["n_items"] == len(World(SMALL_SPEC).scenes)
    for item in items:
        href = item.assets["red"].get_absolute_href()
        assert Path(href).is_file()
        assert item.properties["proj:code"].startswith("EPSG:327")


def test_item_metadata_follows_earth_search(world):
    assert _items(world), "precondition: the world's catalogue holds items"
    for item in _items(world):
        p = item["properties"]
        pb = float(p["s2:processing_baseline"])
        offset = item["assets"]["red"]["raster:bands"][0]["offset"]
        # the real Earth Search v1 items: offset -0.1 from baseline 04.00 (../shared/stac
        # MANIFEST.md section 5)
        assert offset == (-0.1 if pb >= 4 else 0.0)
        # as Earth Search v1: the offset is removed from the COGs from 04.00 on, yet declared
        assert p["earthsearch:boa_offset_applied"] is (pb >= 4)
        assert isinstance(p["proj:epsg"], int) and "proj:code" not in p
        assert not [k for k in p if k.startswith("lames:")]  # nothing says "synthetic"
        assert set(item["assets"]) == {"blue", "green", "red", "nir", "swir16", "swir22", "scl"}
        # SMALL_SPEC.tile_px = 330 at 10 m, halved for the 20 m SCL
        assert item["assets"]["scl"]["proj:shape"] == [165, 165]
        assert item["assets"]["red"]["proj:shape"] == [330, 330]
        assert len(item["assets"]["red"]["proj:transform"]) == 6


def test_planetary_computer_style(world_pc):
    assert _items(world_pc), "precondition: the world's catalogue holds items"
    for item in _items(world_pc):
        assert set(item["assets"]) == {"B02", "B03", "B04", "B08", "B11", "B12", "SCL"}
        assert all("raster:bands" not in a for a in item["assets"].values())
        assert item["properties"]["platform"] in ("Sentinel-2A", "Sentinel-2B")
        assert item["id"].startswith(("S2A_MSIL2A_", "S2B_MSIL2A_"))


def test_pixels_are_what_earth_search_serves(world, lames_dir):
    """Earth Search l2a COGs: the product's DNs before 04.00, harmonised values from 04.00 on
    (Element 84 removed the offset); nodata 0 outside the scene, valid pixels >= 1."""
    w = World(SMALL_SPEC, data_dir=lames_dir)
    seen = set()
    for scene in w.scenes:
        gbox = scene.tile.geobox(10)
        folder = next(world.glob(f"stac/*/{scene.id}"))
        valid = w.valid_mask(scene, gbox)
        with rasterio.open(folder / "B04.tif") as src:
            dn = src.read(1)
        seen.add(scene.dn_offset)
        # Independently of the writer: the procedural read of the scene, harmonised, which is
        # what Earth Search serves from 04.00 and equals the product's DNs before it.
        truth = w.read(gbox, scene.date, scene=scene)["B04"]
        np.testing.assert_array_equal(dn[valid], truth[valid])
        assert (dn[~valid] == 0).all()
        assert (dn[valid] > 0).all()
    assert seen == {0, 1000}  # SMALL_SPEC's 2021-2022 spans baseline 04.00 (+1000, 2022-01-25)


def test_cloud_cover_and_nodata_match_scl(world):
    cloudy = 0
    edges = 0
    for item in _items(world):
        folder = next(world.glob(f"stac/*/{item['id']}"))
        with rasterio.open(folder / "SCL.tif") as scl_src, rasterio.open(folder / "B11.tif") as b11:
            scl = scl_src.read(1)
            swir = b11.read(1)
        valid = scl > 0
        cover = 100 * np.isin(scl, (8, 9, 10)).sum() / valid.sum()
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(cover, abs=1e-3)
        nodata = 100 * (~valid).mean()
        assert item["properties"]["s2:nodata_pixel_percentage"] == pytest.approx(nodata, abs=1e-3)
        np.testing.assert_array_equal(swir == 0, ~valid)
        cloudy += cover > 5
        edges += nodata > 1
    assert cloudy >= 2 and edges >= 2  # preconditions: the small world has cloudy and edge scenes


def test_clouds_brighten_and_shadows_darken(world, lames_dir):
    w = World(SMALL_SPEC, data_dir=lames_dir)
    for scene in (s for s in w.scenes if w.clouds(s.date).cover > 0.3):
        gbox = scene.tile.geobox(20)
        seen = w.read(gbox, scene.date, scene=scene)
        # a scene with both clouds and their shadows in the tile (the first cloudy one has none)
        if (seen["CLOUD_TRUTH"] == 2).mean() > 0.05 and (seen["CLOUD_TRUTH"] == 3).sum() > 100:
            break
    clear = w.read(gbox, scene.date, clouds=False, scene=scene)
    truth, scl = seen["CLOUD_TRUTH"], seen["SCL"]
    cloud = truth == 2
    assert cloud.mean() > 0.05, "precondition: a scene over 5 % cloud in the tile"
    # 0.95: tolerances of this test (SCL's own errors are modelled, so not 1.0)
    assert (seen["B02"][cloud] > clear["B02"][cloud]).mean() > 0.95
    assert np.isin(scl[cloud], (8, 9)).mean() > 0.95  # real clouds are flagged
    shadow = truth == 3
    assert shadow.sum() > 100, "precondition: the scene casts over 100 px of shadow in the tile"
    assert (seen["B02"][shadow] < clear["B02"][shadow]).mean() > 0.95


def test_mines_are_planted_where_the_sectors_are(lames_dir):
    """The pixels' mine classes equal an independent rasterisation, and their area the truth."""
    from rasterio.features import rasterize

    w = World(SMALL_SPEC, data_dir=lames_dir)
    truth = w.truth().set_index(["site_id", "year"])
    site = w.sites.set_index("site_id").loc["2355"]
    for year in SMALL_SPEC.years:
        sectors = w.mines.sectors_in_year(year)
        local = sectors[sectors.site_id == "2355"].to_crs(site.epsg)
        w_, s_, e_, n_ = local.total_bounds
        from odc.geo.geobox import GeoBox

        gbox = GeoBox.from_bbox((w_ - 200, s_ - 200, e_ + 200, n_ + 200), f"EPSG:{site.epsg}",
                                resolution=10)
        classes = w.mine_classes(gbox, year)
        ref = rasterize(zip(local.geometry, local["class"], strict=True), out_shape=gbox.shape,
                        transform=gbox.affine, fill=0, all_touched=False, dtype="uint8")
        np.testing.assert_array_equal(classes, ref)
        area = (classes > 0).sum() * 100.0  # 10 m x 10 m pixels
        # rel=0.03: pixel count vs polygon area, a tolerance of this test
        assert area == pytest.approx(truth.loc[("2355", year), "area_m2"], rel=0.03)
    first, last = (truth.loc[("2355", y), "area_m2"] for y in SMALL_SPEC.years)
    assert last > first * 1.05  # the mine grows over the two years (floor of this test)


def test_brightness_alone_cannot_find_the_mines(lames_dir):
    """The best brightness threshold finds mines poorly (decoys: salt flats, dry lakes, roads)."""
    import geopandas as gpd
    from odc.geo.geobox import GeoBox

    w = World(DEMO_SPEC, data_dir=lames_dir)
    brightness, mine = [], []
    for site in w.sites.itertuples():
        b = gpd.GeoSeries([site.geometry], crs=4326).to_crs(site.epsg).total_bounds
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        gbox = GeoBox.from_bbox((cx - 6000, cy - 6000, cx + 6000, cy + 6000),
                                f"EPSG:{site.epsg}", resolution=20)
        data = w.read(gbox, None, clouds=False)
        brightness.append(sum(data[b].astype(float) for b in ("B02", "B03", "B04")).ravel())
        mine.append((w.mine_classes(gbox, DEMO_SPEC.years[-1]) > 0).ravel())
    brightness, mine = np.concatenate(brightness), np.concatenate(mine)
    assert 0.005 < mine.mean() < 0.2  # precondition: mines neither absent nor dominant in 12 km boxes
    best = 0.0
    for t in np.quantile(brightness, np.linspace(0.3, 0.999, 150)):
        for pred in (brightness > t, brightness < t):
            best = max(best, 2 * (pred & mine).sum() / (pred.sum() + mine.sum()))
    assert best < 0.5, best  # a bound of this test ("poorly"), not a measured figure


def test_window_reads_agree_with_whole_tile(lames_dir):
    w = World(SMALL_SPEC, data_dir=lames_dir)
    scene = w.scenes[0]
    gbox = scene.tile.geobox(10)
    whole = w.read(gbox, scene.date)
    part = w.read(gbox[100:180, 40:300], scene.date)
    np.testing.assert_array_equal(part["B08"], whole["B08"][100:180, 40:300])
    np.testing.assert_array_equal(part["SCL"], whole["SCL"][100:180, 40:300])


def test_fallback_world_without_lames(tmp_path):
    spec = WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1, grid_km=3,
                     tile_px=330)
    w = World(spec)
    assert {"site_id", "class", "Name", "geometry"} <= set(w.sectors.columns)
    assert len(w.scenes) >= 1


def test_bad_world_specs():
    with pytest.raises(WorldError, match="tile_px=100"):
        WorldSpec(grid_km=3, tile_px=100)
    with pytest.raises(WorldError, match="style='nasa'"):
        WorldSpec(style="nasa")
    with pytest.raises(UnknownSiteError, match=r"Unknown LAMES site id\(s\) \['nope'\]"):
        World(WorldSpec(site_ids=("nope",)))


def test_existing_other_world_is_not_overwritten(world, lames_dir):
    with pytest.raises(WorldError, match="holds another world"):
        small_world(world, data_dir=lames_dir, seed=5)


def test_data_dir_without_lames_files(tmp_path, monkeypatch):
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DataDirError, match=r"missing annotations/Chile_LSM_sectors\.geojson"):
        find_data_dir(tmp_path)
    monkeypatch.setenv("LAMES_DATA_DIR", str(tmp_path))
    with pytest.raises(DataDirError, match="LAMES_DATA_DIR="):
        World(WorldSpec(n_sites=1))


@pytest.mark.parametrize(
    "site_ids, changes",
    [(("2800", "2007"), {}), (("2800",), {"grid_km": 1, "tile_px": 100}),
     (("2007",), {"grid_km": 5, "tile_px": 500}), (("2203", "2355"), {})],
)
def test_tiles_cover_every_site_and_margin(lames_dir, site_ids, changes):
    import dataclasses

    import geopandas as gpd
    import shapely

    spec = dataclasses.replace(SMALL_SPEC, site_ids=site_ids, **changes)
    w = World(spec, data_dir=lames_dir)
    for site in w.sites.itertuples():
        local = gpd.GeoSeries([site.geometry], crs=4326).to_crs(site.epsg).iloc[0]
        need = shapely.box(*local.bounds).buffer(spec.margin_m - 1e-6, join_style="mitre")
        cover = shapely.union_all([shapely.box(*t.geobox(10).extent.boundingbox)
                                   for t in w.tiles if t.epsg == site.epsg])
        assert cover.contains(need), site.site_id


def test_dates_are_distinct_even_at_a_five_day_revisit():
    w = World(WorldSpec(use_lames=False, n_sites=1, years=(2021, 2024), scenes_per_year=73))
    assert len(w.dates) == len(set(w.dates)) >= 146  # 2 years x 73 passes (5-day revisit)
    for tile in w.tiles:
        days = [s.date for s in w.scenes if s.tile == tile]
        assert len(days) == len(set(days)) >= 146  # every pass of its orbits, each on its day
    with pytest.raises(WorldError, match=r"1\.\.74 passes per orbit"):
        WorldSpec(scenes_per_year=400)


def test_overwrite_never_deletes_a_directory_that_is_not_a_world(tmp_path):
    spec = WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1, grid_km=3,
                     tile_px=330)
    mine = tmp_path / "data"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    with pytest.raises(WorldError, match="never deleted"):
        from lames_cube.synthetic import write_world

        write_world(mine, spec, overwrite=True, progress=False, workers=1)
    assert (mine / "precious.txt").read_text() == "keep me"
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(WorldError, match="is a file"):
        write_world(afile, spec, overwrite=True, progress=False, workers=1)
    assert not list(tmp_path.glob(".*tmp-*"))


@pytest.mark.parametrize("crs", ["utm", "EPSG:4326", "EPSG:3857"])
def test_chunks_cut_through_mines_stitch_to_the_whole_grid(lames_dir, crs):
    """Benches, pit lakes, ponds and roads near chunk edges: a halo makes chunks seamless, on the
    world's UTM grid, a lon/lat grid and a web-mercator grid alike."""
    import geopandas as gpd
    from odc.geo.geobox import GeoBox

    w = World(dataclasses.replace(DEMO_SPEC, site_ids=("2504",)), data_dir=lames_dir)
    site = w.sites.iloc[0]
    crs = f"EPSG:{site.epsg}" if crs == "utm" else crs
    x, y = gpd.GeoSeries([site.geometry.centroid], crs=4326).to_crs(crs).iloc[0].coords[0]
    step = 1e-4 if crs == "EPSG:4326" else 10.0
    x, y = x // step * step, y // step * step
    gbox = GeoBox.from_bbox((x - 384 * step, y - 256 * step, x + 384 * step, y + 256 * step), crs,
                            resolution=step)
    date = next(d for d in w.dates if 0.05 < w.clouds(d).cover < 0.6)
    whole = w.read(gbox, date)
    assert (w.mine_classes(gbox, date.year) > 0).mean() > 0.1
    size = 160  # not a divisor of the mine structure: cuts run through benches and cells
    for r in range(0, gbox.shape[0], size):
        for c in range(0, gbox.shape[1], size):
            r1, c1 = min(r + size, gbox.shape[0]), min(c + size, gbox.shape[1])
            part = w.read(gbox[r:r1, c:c1], date)
            for band in ("B02", "B08", "B12", "SCL"):
                np.testing.assert_array_equal(part[band], whole[band][r:r1, c:c1])


# --------------------------------------------------------------------------- one tile-name function


def test_tiles_are_named_by_the_one_mgrs_tile_id():
    from lames_cube.synthetic.mgrs import tile_id

    for grid_km, tile_px, precision in ((10, 1098, 10_000), (5, 512, 1_000)):
        spec = WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1,
                         grid_km=grid_km, tile_px=tile_px)
        tiles = World(spec).tiles
        assert tiles
        for t in tiles:
            south = t.y0 - grid_km * 1000
            lat = t.geobox(10).extent.to_crs(4326).centroid.coords[0][1]
            assert t.tile_id == tile_id(t.epsg, t.x0, south, lat, precision_m=precision)
        assert len(tiles[0].tile_id) == (7 if precision == 10_000 else 9)
    assert tile_id(32719, 507_000.0, 7_233_000.0, -25.0, precision_m=1000) == "19JEN0733"
    with pytest.raises(WorldError, match=r"precision_m=100 is not a precision.*pass 10000"):
        tile_id(32719, 507_000.0, 7_233_000.0, -25.0, precision_m=100)


def test_benchmark_items_carry_valid_mgrs_tile_names():
    import datetime as dt

    from lames_cube.items import _MGRS
    from lames_cube.testing.catalogs import fake_items

    items = fake_items((-70.5, -25.0, -65.5, -24.0), dates=(dt.date(2022, 1, 10),))
    names = [i["properties"]["s2:mgrs_tile"] for i in items]
    assert names and all(_MGRS.match(n) for n in names), names
    assert len(set(names)) == len(names)
    assert {n[:2] for n in names} == {"19", "20"}


# --------------------------------------------------------------------------- typed errors


def test_the_world_raises_only_typed_errors():
    import ast

    import lames_cube.synthetic as synthetic

    builtins = {"ValueError", "TypeError", "KeyError", "RuntimeError", "IndexError", "Exception"}
    bare = []
    for path in sorted(Path(synthetic.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id in builtins:
                    bare.append(f"{path.name}:{node.lineno} {exc.id}")
    assert bare == []


def test_world_errors_name_the_value_and_the_fix():
    from affine import Affine
    from odc.geo.geobox import GeoBox

    from lames_cube.errors import InvalidGridError, InvalidQueryError
    from lames_cube.synthetic.landscape import pixel_centres
    from lames_cube.synthetic.lazy import _as_date
    from lames_cube.synthetic.mines import MineModel, fallback_sites

    rotated = GeoBox((4, 4), Affine(10, 1, 0, 1, -10, 0), "EPSG:32719")
    with pytest.raises(InvalidGridError, match=r"rotated or sheared \(affine .*reproject onto a north-up"):
        pixel_centres(rotated)
    with pytest.raises(InvalidQueryError, match=r"3\.5 \(float\) is not a date; pass a datetime\.date"):
        _as_date(3.5)
    with pytest.raises(WorldError, match=r"years=\(\) is empty.*e\.g\. years=\(2021, 2022\)"):
        MineModel(fallback_sites(1), ())
    with pytest.raises(WorldError, match=r"kind\(s\) \['open'\].*set the kind column"):
        MineModel(fallback_sites(1).assign(kind="open"), (2021,))
    with pytest.raises(WorldError, match=r"tile_px=1099 must be even.*tile_px=1100"):
        WorldSpec(tile_px=1099)
