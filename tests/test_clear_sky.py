"""The world under a clear sky: 20 m bands as Sentinel-2 records them, on any chunking."""

from __future__ import annotations

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.warp import reproject

from lames_cube.synthetic import DEMO_SPEC, World
from lames_cube.synthetic.clear import clear_sky_cube

BANDS = ["B04", "B11", "B12"]


@pytest.fixture(scope="module")
def demo_world(lames_dir):
    return World(DEMO_SPEC, data_dir=lames_dir)


def test_20m_bands_are_the_worlds_20m_pixels_resampled(demo_world):
    """Independent truth: the world's own 20 m render (10 m averaged, as its COGs are
    written) resampled bilinearly by rasterio onto the 10 m grid."""
    g = GeoBox.from_bbox((497000, 7300000, 499560, 7302560), "EPSG:32719", resolution=10)
    cube = clear_sky_cube(demo_world, g, BANDS, 128).values
    g20 = g.zoom_out(2)
    ref20 = demo_world.read(g20, None)
    inner = (slice(4, -4), slice(4, -4))  # the reference has no pixels beyond the grid
    for k, band in ((1, "B11"), (2, "B12")):
        want = np.zeros(g.shape, np.float32)
        reproject(ref20[band].astype(np.float32), want, src_transform=g20.affine,
                  src_crs=g.crs.to_wkt(), dst_transform=g.affine, dst_crs=g.crs.to_wkt(),
                  resampling=Resampling.bilinear)
        assert np.abs(cube[k][inner] - want[inner]).max() <= 1.0  # rounding only
    fine = demo_world.read(g, None)
    assert np.array_equal(cube[0], fine["B04"])  # 10 m bands untouched
    detail = clear_sky_cube(demo_world, g, BANDS, 128, native_20m=False).values
    assert np.array_equal(detail[1], fine["B11"])
    # the 20 m band is smoother than a 10 m render of it: less pixel-to-pixel variation
    assert np.abs(np.diff(cube[1].astype(float), axis=1)).mean() < \
        0.8 * np.abs(np.diff(detail[1].astype(float), axis=1)).mean()


@pytest.mark.parametrize("crs,bbox,res", [
    ("EPSG:32719", (497000, 7300000, 499560, 7302560), 10),
    ("EPSG:3857", (-7643000, -2392000, -7640260, -2389244), (10.70, 10.77)),  # a LAMES box
])
def test_any_chunking_gives_the_same_pixels(demo_world, crs, bbox, res):
    x, y = (res, res) if np.isscalar(res) else res
    from affine import Affine

    w, s, e, n = bbox
    g = GeoBox((round((n - s) / y), round((e - w) / x)), Affine(x, 0, w, 0, -y, n), crs)
    whole = clear_sky_cube(demo_world, g, BANDS).values
    parts = clear_sky_cube(demo_world, g, BANDS, (96, 93)).values  # odd offsets too
    assert np.array_equal(whole, parts)
