"""The ``.lames`` accessor forwards to the public functions and adds nothing."""

from __future__ import annotations

import geopandas as gpd
import shapely
import xarray as xr

import lames_cube  # noqa: F401  (registers .lames)
from lames_cube.composite import clear_mask, composite
from lames_cube.labels import rasterize
from lames_cube.ml import predict
from lames_cube.patches import extract_patches, patch_table
from lames_cube.testing.ml_sets import pointwise_checkpoint
from lames_cube.timeseries import extent_over_time, first_mining_year, pixel_area
from tests.test_composite import make_cube as make_scene_cube
from tests.test_composite import random_scl
from tests.test_inference import make_cube


def test_every_method_equals_its_function(tmp_path):
    scenes = make_scene_cube(random_scl(3, (3, 16, 20)), chunks=(8, 10))
    xr.testing.assert_identical(scenes.lames.clear_mask(buffer_m=20),
                                clear_mask(scenes, buffer_m=20))
    xr.testing.assert_identical(scenes.lames.composite("median"), composite(scenes, "median"))

    cube = make_cube(height=128, width=192)
    poly = gpd.GeoDataFrame(geometry=[shapely.box(300200, 7000200, 300900, 7000800)],
                            crs="EPSG:32719")
    labels = cube.lames.rasterize(poly, value=1)
    xr.testing.assert_identical(labels, rasterize(poly, like=cube, value=1))
    table = cube.lames.patch_table(size=64)
    assert table.equals(patch_table(cube, size=64))
    xr.testing.assert_identical(cube.lames.patches(table), extract_patches(cube, table))

    ckpt = pointwise_checkpoint(tmp_path / "m.pt", patch_size=64)
    pred = cube.lames.predict(ckpt, tile=192, patch=64)
    xr.testing.assert_identical(pred.compute(), predict(cube, ckpt, tile=192, patch=64).compute())

    yearly = xr.concat([labels, labels], dim="year").assign_coords(year=[2022, 2023])
    assert yearly.lames.extent().equals(extent_over_time(yearly))
    xr.testing.assert_identical(yearly.lames.first_year(), first_mining_year(yearly))
    xr.testing.assert_identical(labels.lames.pixel_area(), pixel_area(labels))
    # the Dataset accessor too (a prediction)
    assert pred.lames.extent().equals(extent_over_time(pred))
