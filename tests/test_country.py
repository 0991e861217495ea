"""Country inference around the model: polygons of predicted mining and their areas, the
evaluation against a planted truth, and a one-tile trial of ``lames-cube infer chile-mosaic``."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from lames_cube.prediction import NODATA_CLASS, prediction_polygons
from lames_cube.recipes.country import evaluate_prediction

CRS = "EPSG:32719"
X0, Y0 = 400000.0, 7300000.0  # the Atacama, UTM 19S


def planted_prediction(height=600, width=800, squares=()):
    """A prediction Dataset with mining squares at (row, col, size) px, chunks of 256 px."""
    gbox = GeoBox.from_bbox((X0, Y0 - 10 * height, X0 + 10 * width, Y0), CRS, resolution=10)
    cls = np.zeros((height, width), np.uint8)
    prob = np.full((height, width), 20, np.uint8)
    for r, c, s in squares:
        cls[r:r + s, c:c + s] = 1
        prob[r:r + s, c:c + s] = 200
    ds = xr.Dataset({"class": (("y", "x"), cls), "probability": (("y", "x"), prob)},
                    coords=xr_coords(gbox, crs_coord_name="spatial_ref"))
    return ds.chunk({"y": 256, "x": 256}), gbox


def box_of(gbox, r, c, s):
    a = gbox.affine
    return shapely.box(a.c + c * 10, a.f - (r + s) * 10, a.c + (c + s) * 10, a.f - r * 10)


def test_polygons_areas_merging_across_blocks_and_context():
    squares = [(10, 10, 50), (230, 230, 60), (500, 700, 3)]  # the second crosses 4 blocks
    ds, gbox = planted_prediction(squares=squares)
    sites = gpd.GeoDataFrame({"site_id": ["s1"]}, geometry=[box_of(gbox, 0, 0, 40)], crs=CRS)
    feet = gpd.GeoDataFrame({"fid": ["f9"]}, geometry=[box_of(gbox, 240, 240, 20)], crs=CRS)
    tiles = gpd.GeoDataFrame({"tile_id": ["a", "b"]}, geometry=[
        shapely.box(X0, Y0 - 6000, X0 + 2000, Y0), shapely.box(X0 + 2000, Y0 - 6000,
                                                               X0 + 8000, Y0)], crs=CRS)
    polys = prediction_polygons(ds, min_area_km2=0.01, sites=sites, footprints=feet,
                                tiles=tiles).sort_values("area_km2").reset_index(drop=True)
    assert len(polys) == 2  # the 3 x 3 px speck (0.0009 km²) is dropped
    # a 50 x 50 and a 60 x 60 px square of 10 m: 0.25 and 0.36 km² (UTM scale ~0.9996^2)
    np.testing.assert_allclose(polys.area_km2, [0.25, 0.36], rtol=0.002)
    assert polys.geometry.iloc[1].equals_exact(box_of(gbox, 230, 230, 60).normalize(), 1e-6) \
        or abs(polys.geometry.iloc[1].symmetric_difference(box_of(gbox, 230, 230, 60)).area) < 1
    assert polys.site_id.tolist() == ["s1", None]
    assert polys.footprint.tolist() == [None, "f9"]
    assert polys.tile_id.tolist() == ["a", "b"]
    np.testing.assert_allclose(polys.mean_probability, 200 / 255, atol=1e-6)


def test_polygons_of_an_empty_prediction():
    ds, _ = planted_prediction()
    out = prediction_polygons(ds)
    assert len(out) == 0 and "area_km2" in out


def test_evaluation_against_a_planted_truth():
    squares = [(100, 100, 100), (400, 600, 20), (10, 700, 10)]  # site, half a mine, a false one
    ds, gbox = planted_prediction(squares=squares)
    ds["class"][:5, :5] = NODATA_CLASS  # a corner without data
    site = box_of(gbox, 100, 100, 100)
    mine = box_of(gbox, 400, 600, 40)  # 20 x 20 of its 40 x 40 px predicted: 25 %
    missed = box_of(gbox, 300, 300, 30)
    lonlat = gpd.GeoSeries([site, mine, missed], crs=CRS).to_crs(4326)
    world = types.SimpleNamespace(
        sites=gpd.GeoDataFrame({"site_id": ["1"], "split": ["test"]}, geometry=[lonlat[0]],
                               crs=4326),
        hidden=gpd.GeoDataFrame({"site_id": ["maus-1", "maus-2"], "fid": ["1", "2"]},
                                geometry=[lonlat[1], lonlat[2]], crs=4326),
        sectors=gpd.GeoDataFrame({"site_id": ["1"]}, geometry=[lonlat[0]], crs=4326))
    table = gpd.GeoDataFrame({"tile_id": ["t"], "y_off": [0], "x_off": [0], "height": [600],
                              "width": [800], "active": [True]},
                             geometry=[shapely.box(*gbox.boundingbox)], crs=CRS)
    ev = evaluate_prediction(ds, world, table, found_fraction=0.2, buffer_m=500)
    assert ev["lames_sites_recall"] == 1.0 and ev["lames_sites_found"] == 1
    assert ev["hidden_mines_found"] == 1 and ev["hidden_mines_recall"] == 0.5
    fractions = {m["site_id"]: m["fraction"] for m in ev["mines"]}
    assert fractions["maus-1"] == pytest.approx(0.25, abs=0.01)
    assert fractions["maus-2"] == 0
    # the false square: 10 x 10 px = 0.01 km², far from every mine
    assert ev["fp_km2"] == pytest.approx(0.01, abs=1e-6)
    free_px = 600 * 800 - 25  # minus the nodata corner, minus the buffered mines
    buffered = gpd.GeoSeries([site, mine, missed], crs=CRS).buffer(500).union_all()
    from rasterio.features import rasterize

    blocked = rasterize([(buffered, 1)], out_shape=(600, 800), transform=gbox.affine)
    free_px -= int(blocked.sum())
    assert ev["mine_free_km2"] == pytest.approx(free_px * 1e-4, abs=0.1)
    assert ev["fp_km2_per_1000_km2"] == pytest.approx(1000 * 100 / free_px, rel=1e-3)
    # the site box metrics: the site box (LAMES rule) around the site, site predicted exactly
    box = ev["site_boxes_all"]
    assert box["macro_recall"] > 0.99 and box["pixels"] > 100 * 100
    assert ev["site_boxes_test"]["pixels"] == box["pixels"]


@pytest.mark.usefixtures("lames_dir")
@pytest.mark.slow  # a mosaic trial through the CLI
def test_infer_chile_mosaic_one_tile_trial(tmp_path):
    """One Chile tile with a LAMES site, scored with a per-pixel model through the CLI."""
    from lames_cube.testing.ml_sets import pointwise_checkpoint

    ckpt = pointwise_checkpoint(tmp_path / "pixel.pt", patch_size=256)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lames_cube.cli", "infer", "chile-mosaic", "--checkpoint",
           str(ckpt), "--output", str(out), "--tiles", "r043c020", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiles_scored"] == 1 and summary["window"]["tile"] == 2304
    # true ground area: a UTM pixel near the central meridian covers 100 / 0.9996² m²
    assert 0 < summary["km2_scored"] <= 2304 * 2304 * 1e-4 / 0.9996 ** 2 + 1e-6
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["lames_sites_scored"] >= 1
    assert (out / "map.png").stat().st_size > 10_000
    assert len((out / "tiles.log").read_text().splitlines()) == 1
    # a rerun resumes: nothing is computed again
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len((out / "tiles.log").read_text().splitlines()) == 1


@pytest.mark.usefixtures("lames_dir")
def test_store_source_reads_the_recipes_composite_store(tmp_path):
    """``--source STORE``: a composite store of the recipe (several variables, years) on the
    whole grid is cut to a trial's tile block, and the year is chosen."""
    import dask.array as da

    from lames_cube.io import write_cube
    from lames_cube.recipes.country import InferenceRunError, inference_source
    from lames_cube.recipes.cubes import load_recipe
    from lames_cube.recipes.pipeline import tile_plan

    recipe = load_recipe("chile-mosaic")
    block, _ = tile_plan(recipe, tiles=["r043c020", "r043c021"])
    gbox = block[:, :2304 + 512]  # a store wider than the trial's first tile
    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
    shape = (2, len(bands), *gbox.shape)
    refl = xr.DataArray(da.arange(np.prod(shape), dtype=np.uint32).reshape(shape).astype(
        np.uint16).rechunk((1, 6, 256, 256)), dims=("year", "band", "y", "x"),
        coords={"year": [2021, 2022], "band": bands, **xr_coords(gbox)})
    data = xr.Dataset({"reflectance": refl,
                       "clear_count": refl.isel(band=0, drop=True).astype(np.uint8)})
    store = write_cube(data, tmp_path / "cube.zarr")
    cube, grid, _, world = inference_source(recipe, bands=bands, tile=2304, halo=128,
                                            source=store, tiles=["r043c020"], year=2021)
    assert world is None and grid.shape == (2304, 2304) and cube.odc.geobox == grid
    np.testing.assert_array_equal(cube.isel(x=slice(0, 5), y=0).values,
                                  refl.sel(year=2021).isel(x=slice(0, 5), y=0).values)
    with pytest.raises(InferenceRunError, match=r"year=2019 is not in the store.*2021, 2022"):
        inference_source(recipe, bands=bands, tile=2304, halo=128, source=store,
                         tiles=["r043c020"], year=2019)
    with pytest.raises(InferenceRunError, match="neither 'world' nor an existing cube store"):
        inference_source(recipe, bands=bands, tile=2304, halo=128, source=tmp_path / "no.zarr")
