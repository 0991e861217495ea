"""A recipe end to end: search → cubes → composites → Zarr, and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import yaml

from lames_cube.composite import yearly_composites
from lames_cube.cube import build_cube
from lames_cube.io import open_cube
from lames_cube.pipeline import run_recipe, site_geobox
from lames_cube.recipes import load_recipe
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


def test_recipe_writes_one_store_per_site_equal_to_the_direct_composite(tmp_path, world, lames_dir):
    stores = run_recipe(_recipe(tmp_path, world), data_dir=lames_dir, progress=False)
    assert [s.name for s in stores] == ["site-2203.zarr", "site-2355.zarr"]
    stored = open_cube(stores[0])
    assert stored.dims == ("year", "band", "y", "x")
    assert list(stored.band.values)[-1] == "clear_count"
    # Independent path: build the same site's cube by hand and composite it.
    from lames_cube.annotations import load_sites

    site = load_sites("all", data_dir=lames_dir).set_index("site_id").loc["2203"]
    gbox = site_geobox(site.geometry.bounds, "EPSG:32719", 10, 256)
    assert stored.odc.geobox == gbox
    cube = build_cube(search(world, sites=["2203"], datetime="2021/2022"), geobox=gbox,
                      chunks=256)
    direct = yearly_composites(cube, classes=[3, 8, 9, 10], saturated=True).compute()
    np.testing.assert_array_equal(stored.sel(band=list(direct.band.values)).values,
                                  direct.reflectance.values)
    np.testing.assert_array_equal(stored.sel(band="clear_count").values, direct.clear_count.values)


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
    cube = open_cube(tmp_path / "out" / "site-2355.zarr")
    assert cube.dims == ("time", "band", "y", "x") and cube.dtype == np.uint16
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(recipe.read_text()), "colour": "red"}))
    out = subprocess.run([sys.executable, "-m", "lames_cube.cli", "cube", "build", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "colour" in out.stderr
