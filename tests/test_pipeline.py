"""A recipe end to end: search → cubes → composites → Zarr, and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from lames_cube.cube import build_cube
from lames_cube.io import open_store
from lames_cube.recipes.cubes import load_recipe
from lames_cube.recipes.pipeline import run_recipe, site_geobox
from lames_cube.search import search


def _recipe(tmp_path, world, **changes):
    data = yaml.safe_load(open(load_recipe("demo").source).read())
    data.update({"name": "small", "catalog": str(world), "area": {"sites": ["2203", "2355"]},
                 "period": {"start": "2021-01-01", "end": "2022-12-31"},
                 "chunks": {"y": 256, "x": 256, "time": 1}, "output": str(tmp_path / "out")})
    data.update(changes)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _reference_median(items, xs, ys, year, bands):
    """Slow, independent truth from the COGs themselves (rasterio point reads, no odc, no dask):
    each item's DN minus its offset, one look per solar day (the first item with data, in
    (time, id) order), clear where SCL is not 1/3/8/9/10 and no band is 65 535, then the
    median of the clear looks per pixel, rounded half to even (numpy)."""
    import rasterio

    looks: dict[str, np.ndarray] = {}
    for item in sorted(items, key=lambda i: (i.datetime, i.id)):
        day = item.properties["lames:solar_day"]
        if not day.startswith(str(year)):
            continue
        offset = item.properties["lames:dn_offset"]
        values = []
        for band in [*bands, "SCL"]:
            with rasterio.open(item.assets[band].href) as src:
                rows, cols = rasterio.transform.rowcol(src.transform, xs, ys)
                rows, cols = np.asarray(rows), np.asarray(cols)
                inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
                v = np.zeros(len(xs), np.int64)
                arr = src.read(1)
                v[inside] = arr[rows[inside], cols[inside]]
            if band != "SCL":
                keep = (v == 0) | (v == 65535)
                v = np.where(keep, v, np.maximum(v - offset, 1))
            values.append(v)
        values = np.stack(values)  # (band + SCL, point)
        if day in looks:  # fuse: first item with data wins
            first = looks[day]
            looks[day] = np.where(first[-1] != 0, first, values)
        else:
            looks[day] = values
    stack = np.stack(list(looks.values()))  # (day, band + SCL, point)
    scl, refl = stack[:, -1], stack[:, :-1]
    clear = (scl != 0) & ~np.isin(scl, [1, 3, 8, 9, 10]) & ~(refl == 65535).any(axis=1)
    count = clear.sum(axis=0)
    med = np.zeros((len(bands), len(xs)))
    for p in np.flatnonzero(count):
        med[:, p] = np.round(np.median(refl[clear[:, p], :, p], axis=0))
    # Seen clear fewer than 3 times and flagged as cloud, cirrus or snow at least once: the
    # composite's fallback (darkest look) fills these, not the median (median_composite).
    fallback = (count < 3) & np.isin(scl, [8, 9, 10, 11]).any(axis=0)
    return med, count, fallback


def test_recipe_writes_one_store_per_site_equal_to_an_independent_composite(tmp_path, world,
                                                                            lames_dir):
    from lames_cube.io import open_store

    # 10 m bands: on this grid (the tiles' CRS, 10 m aligned) no band is resampled.
    recipe = _recipe(tmp_path, world, clouds={"buffer_m": 0},
                     bands=["B02", "B03", "B04", "B08", "SCL"])
    stores = run_recipe(recipe, data_dir=lames_dir, progress=False)
    assert [s.name for s in stores] == ["site-2203.zarr", "site-2355.zarr"]
    stored = open_store(stores[0])
    assert sorted(stored.data_vars) == ["clear_count", "fallback", "never_clear", "reflectance"]
    refl = stored.reflectance
    assert refl.dims == ("year", "band", "y", "x") and "SCL" not in refl.band.values
    assert refl.attrs["scale"] == 1e-4
    for name in ("clear_count", "never_clear", "fallback"):  # scaling them would corrupt them
        assert "scale" not in stored[name].attrs, name
    from lames_cube.annotations import load_sites

    site = load_sites("all", data_dir=lames_dir).set_index("site_id").loc["2203"]
    gbox = site_geobox(site.geometry.bounds, "EPSG:32719", 10, 256)
    assert refl.odc.geobox == gbox
    rng = np.random.default_rng(7)
    rows, cols = rng.integers(0, gbox.shape[0], 300), rng.integers(0, gbox.shape[1], 300)
    xs = gbox.affine.c + (cols + 0.5) * gbox.affine.a
    ys = gbox.affine.f + (rows + 0.5) * gbox.affine.e
    bands = list(refl.band.values)
    items = search(world, sites=["2203"], datetime="2021/2022")
    checked = 0
    for year in (2021, 2022):
        med, count, fallback = _reference_median(items, xs, ys, year, bands)
        got = refl.sel(year=year).values[:, rows, cols]
        got_count = stored.clear_count.sel(year=year).values[rows, cols]
        np.testing.assert_array_equal(got_count, count)
        assert (stored.fallback.sel(year=year).values[rows, cols] <= fallback).all()
        seen = (count > 0) & ~fallback
        np.testing.assert_array_equal(got[:, seen], med[:, seen])
        assert (stored.never_clear.sel(year=year).values[rows, cols] == (count == 0)).all()
        checked += seen.sum()
    assert checked > 400


@pytest.mark.slow  # a whole recipe through the CLI
def test_cli_cube_build_and_list(tmp_path, world, lames_dir):
    out = subprocess.run([sys.executable, "-m", "lames_cube.cli", "cube", "list"],
                         capture_output=True, text=True, check=True)
    for name in ("demo", "chile-sites", "chile-mosaic", "ghana-asm"):
        assert name in out.stdout
    recipe = _recipe(tmp_path, world, composite={"method": "none", "period": "all"})
    out = subprocess.run(
        [sys.executable, "-m", "lames_cube.cli", "--data-dir", str(lames_dir), "cube", "build",
         str(recipe), "--quiet"], capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    scenes = open_store(tmp_path / "out" / "site-2355.zarr")
    assert scenes.reflectance.dims == ("time", "band", "y", "x")
    assert scenes.reflectance.dtype == np.uint16 and "SCL" not in scenes.reflectance.band.values
    assert scenes.scl.dims == ("time", "y", "x") and scenes.scl.dtype == np.uint8
    assert "scale" not in scenes.scl.attrs
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(recipe.read_text()), "colour": "red"}))
    out = subprocess.run([sys.executable, "-m", "lames_cube.cli", "cube", "build", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "colour" in out.stderr


def _site_tiles(world, lames_dir, n=2):
    """Active chile-mosaic tiles under the world's first site, and the recipe on the world."""
    import dataclasses

    import shapely

    from lames_cube.recipes.pipeline import tile_plan

    recipe = dataclasses.replace(load_recipe("chile-mosaic"), catalog=str(world))
    _, table = tile_plan(recipe, data_dir=lames_dir)
    footprints = shapely.union_all([shapely.geometry.shape(i.geometry)
                                    for i in search(world, sites=["2203"])])
    lonlat = table.to_crs(4326)
    hit = lonlat[lonlat.active & lonlat.intersects(footprints)].tile_id.tolist()
    assert len(hit) >= n, hit
    return recipe, hit[:n]


@pytest.mark.slow  # kill trial, 67 s
def test_chile_mosaic_builds_tile_by_tile_and_resumes_after_a_kill(tmp_path, world, lames_dir):
    """`lames-cube cube build chile-mosaic` on the mosaic grid, killed (SIGKILL) after its
    first tile and run again, ends with the bytes of an uninterrupted build."""
    import json
    import os
    import signal
    import time

    from lames_cube.grid import mosaic_geobox
    from lames_cube.io import LEDGER_NAME, store_status

    recipe, tiles = _site_tiles(world, lames_dir)
    ref = run_recipe(recipe, data_dir=lames_dir, output=tmp_path / "ref.zarr", tiles=tiles,
                     progress=False)[0]
    stored = open_store(ref)
    mosaic = mosaic_geobox("chile")  # the LAMES country grid: EPSG:32719, 10 m, 2304-px tiles
    gbox = stored.reflectance.odc.geobox
    assert gbox.crs == mosaic.crs and gbox.resolution == mosaic.resolution
    col = (gbox.affine.c - mosaic.affine.c) / 10
    row = (mosaic.affine.f - gbox.affine.f) / 10
    assert col % 2304 == 0 and row % 2304 == 0 and gbox.shape[1] % 2304 == 0
    assert int(stored.clear_count.max()) > 0  # the selected tiles hold the site's scenes
    assert list(stored.year.values) == [2021, 2022]
    # Seamless: the tiles equal one composite of the whole block (the cloud buffer crosses tile
    # edges through each tile's halo).
    from lames_cube.recipes.pipeline import store_dataset

    items = recipe.search(data_dir=lames_dir)
    halo = 9  # the 60 m buffer at 10 m (6 px), the 1 px opening (2 px), one to spare
    whole = store_dataset(recipe, build_cube(items, geobox=gbox.pad(halo), chunks=2304,
                                             bands=list(recipe.bands), resampling="bilinear"))
    whole = whole.isel(y=slice(halo, -halo), x=slice(halo, -halo))
    for year in whole.year.values:
        for name in ("reflectance", "clear_count", "never_clear"):
            np.testing.assert_array_equal(stored[name].sel(year=year).values,
                                          whole[name].sel(year=year).values, err_msg=name)

    store = tmp_path / "crash.zarr"
    cmd = [sys.executable, "-m", "lames_cube.cli", "--data-dir", str(lames_dir), "cube",
           "build", "chile-mosaic", "--catalog", str(world), "--tiles", ",".join(tiles),
           "--output", str(store), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (store / LEDGER_NAME).exists():
            lines = (store / LEDGER_NAME).read_text().splitlines()
            done = sum(json.loads(x).get("event") == "done" for x in lines if x.strip())
            if done >= 1:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = store_status(store)
    assert not status["complete"] and status["regions_done"] < status["regions_total"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert store_status(store)["complete"]
    got, want = _files(store), _files(ref)
    assert sorted(got) == sorted(want)
    differ = {k: (got[k][:2000], want[k][:2000]) for k in got if got[k] != want[k]}
    assert not differ, differ


def _files(path):
    from lames_cube.io import LEDGER_NAME

    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*"))
            if f.is_file() and f != path / LEDGER_NAME}


def test_tile_plans_are_checked(world, lames_dir):
    from lames_cube.recipes.cubes import RecipeError
    from lames_cube.recipes.pipeline import tile_plan

    recipe, tiles = _site_tiles(world, lames_dir)
    with pytest.raises(RecipeError, match=r"tiles \['r999c999'\] are not active tiles"):
        tile_plan(recipe, tiles=["r999c999"])
    gbox, table = tile_plan(recipe, tiles=tiles)
    assert set(table[table.active].tile_id) == set(tiles)
    assert gbox.shape == (int((table.y_off + table.height).max()),
                          int((table.x_off + table.width).max()))
    with pytest.raises(RecipeError, match="makes one cube per site"):
        tile_plan(load_recipe("demo"))


@pytest.mark.slow  # a tiled recipe run
def test_tiles_are_seamless_where_clouds_cross_their_edges(tmp_path, world, lames_dir):
    """Small (512 px) tiles through a site, every scene kept: the cloud buffer reaches across
    tile edges (each tile is built with a halo), so the tiled store equals one composite of
    the whole block, built independently of the tiling."""
    import shapely

    from lames_cube.recipes.cubes import Recipe
    from lames_cube.recipes.pipeline import store_dataset, tile_plan

    data = load_recipe("chile-mosaic").to_dict()
    data.update(catalog=str(world), chunks={"y": 512, "x": 512, "time": 1})
    data["grid"]["tile_size"] = 512
    data["clouds"]["max_cloud"] = None
    recipe = Recipe.from_dict(data)
    _, table = tile_plan(recipe, data_dir=lames_dir)
    footprints = shapely.union_all([shapely.geometry.shape(i.geometry)
                                    for i in search(world, sites=["2203"])])
    lonlat = table.to_crs(4326)
    tiles = lonlat[lonlat.active & lonlat.intersects(footprints)].tile_id.tolist()
    assert len(tiles) >= 4  # tile edges cross the site both ways
    store = run_recipe(recipe, data_dir=lames_dir, output=tmp_path / "t.zarr", tiles=tiles,
                       progress=False)[0]
    stored = open_store(store)
    gbox = stored.reflectance.odc.geobox
    halo = 9
    whole = store_dataset(recipe, build_cube(recipe.search(data_dir=lames_dir),
                                             geobox=gbox.pad(halo), chunks=512,
                                             bands=list(recipe.bands), resampling="bilinear"))
    whole = whole.isel(y=slice(halo, -halo), x=slice(halo, -halo)).compute()
    assert int(whole.clear_count.max()) > 0 and bool((whole.clear_count == 0).any())
    for name in ("reflectance", "clear_count", "never_clear", "fallback"):
        np.testing.assert_array_equal(stored[name].sel(year=whole.year).values,
                                      whole[name].values, err_msg=name)


@pytest.mark.slow  # a second mosaic trial
def test_widening_a_trial_runs_tiles_is_another_store_not_a_silent_resume(tmp_path, world,
                                                                          lames_dir):
    """Tiles left nodata in a trial run are not 'done' for a run that builds them."""
    from lames_cube.io import TemplateMismatchError
    from lames_cube.recipes.pipeline import tile_plan

    recipe, tiles = _site_tiles(world, lames_dir)
    _, table = tile_plan(recipe, data_dir=lames_dir)
    first = table.set_index("tile_id").loc[tiles[0]]
    row, col = int(first.row), int(first.col)
    ids = [f"r{row:03d}c{c:03d}" for c in (col, col + 1, col + 2)]
    assert table.set_index("tile_id").loc[ids].active.all()
    store = tmp_path / "t.zarr"
    # The same 1 x 3 block both times: the middle tile is nodata in the first run only.
    run_recipe(recipe, data_dir=lames_dir, output=store, tiles=[ids[0], ids[2]], progress=False)
    with pytest.raises(TemplateMismatchError, match="laid out for another cube"):
        run_recipe(recipe, data_dir=lames_dir, output=store, tiles=ids, progress=False)
    assert open_store(store).attrs["tiles_built"] == 2
