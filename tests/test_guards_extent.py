"""Guard: ``extent_over_time(labels, sites=..., buffer_m > 0)`` counts the mining pixels within
``buffer_m`` of a site's polygons and no others.

Documented rule: "the area is counted inside each site's polygons grown by ``buffer_m``";
pixels are burnt by their centres (rasterio's default, ``all_touched=False``). The site here is
a pixel-aligned rectangle on a UTM grid, so a pixel counts iff the distance from its centre to
the rectangle is below ``buffer_m``; ``buffer_m = 42`` keeps every pixel centre at least 1 m
from the buffer's edge (centre distances are 5, 15, 25, 35, 45 m ... along the sides, and
hypot(25, 25) = 35.4, hypot(15, 35) = 38.1, hypot(25, 35) = 43.0 at the corners). Areas are
the geodesic areas of the pixels (pyproj), summed by hand.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from pyproj import Geod, Transformer

from lames_cube.timeseries import extent_over_time

CRS = "EPSG:32719"
X0, Y0, RES, N = 400_000.0, 7_300_000.0, 10.0, 64
SITE = (20, 30, 20, 32)  # rows 20..29, cols 20..31
BUFFER_M = 42.0
GEOD = Geod(ellps="WGS84")
TO_LONLAT = Transformer.from_crs(CRS, 4326, always_xy=True)


def _pixel_km2(r: int, c: int) -> float:
    x0, y1 = X0 + c * RES, Y0 - r * RES
    xs, ys = TO_LONLAT.transform([x0, x0 + RES, x0 + RES, x0], [y1, y1, y1 - RES, y1 - RES])
    return abs(GEOD.polygon_area_perimeter(xs, ys)[0]) / 1e6


def _centre_distance_m(r: int, c: int) -> float:
    r0, r1, c0, c1 = SITE
    dy = max(r0 - (r + 0.5), (r + 0.5) - r1, 0.0) * RES
    dx = max(c0 - (c + 0.5), (c + 0.5) - c1, 0.0) * RES
    return math.hypot(dx, dy)


def test_buffered_site_counts_pixels_within_the_buffer_only():
    gbox = GeoBox.from_bbox((X0, Y0 - N * RES, X0 + N * RES, Y0), CRS, resolution=RES)
    labels = np.zeros((2, N, N), np.uint8)
    labels[0, 8:44, 8:44] = 1          # 2020: mining over the site, its buffer and beyond
    labels[1, 14:36, 32:40] = 3        # 2021: a strip east of the site only (any class > 0)
    labels[1, 0:3, 0:3] = 9            # ... and far away
    da = xr.DataArray(labels, dims=("year", "y", "x"),
                      coords={"year": [2020, 2021], **xr_coords(gbox, crs_coord_name="spatial_ref")})
    r0, r1, c0, c1 = SITE
    a = gbox.affine
    rect = shapely.box(a.c + c0 * RES, a.f - r1 * RES, a.c + c1 * RES, a.f - r0 * RES)
    sites = gpd.GeoDataFrame({"site_id": ["s"]}, geometry=[rect], crs=CRS).to_crs(4326)

    table = extent_over_time(da, sites=sites, buffer_m=BUFFER_M)
    inside = np.array([[_centre_distance_m(r, c) < BUFFER_M for c in range(N)] for r in range(N)])
    in_site = np.zeros((N, N), bool)
    in_site[r0:r1, c0:c1] = True
    ring = inside & ~in_site
    assert ring.sum() > 100  # precondition: the buffer holds many pixels outside the polygon
    for k, year in enumerate((2020, 2021)):
        mining = labels[k] > 0
        counted = mining & inside
        left_out = mining & ~inside
        assert (counted & ring).sum() > 20 and left_out.sum() > 20  # both sides are exercised
        hand = sum(_pixel_km2(r, c) for r, c in zip(*np.nonzero(counted), strict=True))
        row = table[(table.site_id == "s") & (table.year == year)]
        assert len(row) == 1
        assert float(row.area_km2.iloc[0]) == pytest.approx(hand, rel=1e-6), year
        # the whole grid: every mining pixel, inside the buffer or not
        total = table[(table.site_id == "total") & (table.year == year)]
        whole = sum(_pixel_km2(r, c) for r, c in zip(*np.nonzero(mining), strict=True))
        assert float(total.area_km2.iloc[0]) == pytest.approx(whole, rel=1e-6), year
    # without the buffer only the polygon's own pixels count (2021: none of the strip)
    bare = extent_over_time(da, sites=sites, buffer_m=0)
    hand0 = sum(_pixel_km2(r, c) for r, c in zip(*np.nonzero((labels[0] > 0) & in_site),
                                                 strict=True))
    got0 = bare[(bare.site_id == "s")].set_index("year").area_km2
    assert got0[2020] == pytest.approx(hand0, rel=1e-6) and got0[2021] == 0
