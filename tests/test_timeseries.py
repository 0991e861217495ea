"""Extent over time: true ground area on any grid, areas per site and year, the new-mining map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from pyproj import Geod, Transformer

from lames_cube.annotations import load_sites
from lames_cube.labels import rasterize
from lames_cube.recipes.pipeline import site_geobox
from lames_cube.synthetic import DEMO_SPEC, World
from lames_cube.timeseries import (
    ExtentError,
    compare_with_truth,
    extent_over_time,
    first_mining_year,
    pixel_area,
)

GEOD = Geod(ellps="WGS84")


def _geodesic_pixel(gbox: GeoBox, row: int, col: int) -> float:
    """pyproj's geodesic area of one pixel (the independent truth)."""
    t = gbox.transform
    xs = [t.c + (col + dx) * t.a + (row + dy) * t.b for dx, dy in ((0, 0), (1, 0), (1, 1), (0, 1))]
    ys = [t.f + (col + dx) * t.d + (row + dy) * t.e for dx, dy in ((0, 0), (1, 0), (1, 1), (0, 1))]
    if not gbox.crs.geographic:
        xs, ys = Transformer.from_crs(gbox.crs.to_wkt(), "EPSG:4326",
                                      always_xy=True).transform(xs, ys)
    return abs(GEOD.polygon_area_perimeter(xs, ys)[0])


@pytest.mark.parametrize("crs,bbox,res", [
    ("EPSG:3857", (-7740000, -3300000, -7720000, -3280000), 10),
    ("EPSG:32719", (480000, 7300000, 500000, 7320000), 10),
    ("EPSG:32718", (780000, 7300000, 800000, 7320000), 10),   # far from the central meridian
    ("EPSG:4326", (-69.2, -24.4, -69.0, -24.2), 0.001),
])
def test_pixel_area_is_the_geodesic_area(crs, bbox, res):
    gbox = GeoBox.from_bbox(bbox, crs, resolution=res)
    area = pixel_area(gbox).values
    rng = np.random.default_rng(0)
    for row, col in zip(rng.integers(0, gbox.shape[0], 12), rng.integers(0, gbox.shape[1], 12),
                        strict=True):
        truth = _geodesic_pixel(gbox, int(row), int(col))
        assert area[row, col] == pytest.approx(truth, rel=2e-4)


def test_pixel_area_is_lazy_for_a_dask_cube_and_equal():
    gbox = GeoBox.from_bbox((-7740000, -3300000, -7730000, -3290000), "EPSG:3857", resolution=10)
    cube = xr.DataArray(np.zeros(gbox.shape, np.uint8), dims=("y", "x"),
                        coords=xr_coords(gbox, crs_coord_name="spatial_ref")).chunk(300)
    lazy = pixel_area(cube)
    assert lazy.chunks == cube.chunks
    np.testing.assert_allclose(lazy.values, pixel_area(gbox).values, rtol=1e-9)
    with pytest.raises(ExtentError, match="step=0 must be a positive"):
        pixel_area(gbox, step=0)
    with pytest.raises(ExtentError, match="no CRS"):
        pixel_area(xr.DataArray(np.zeros((2, 2)), dims=("y", "x")))


def test_same_polygons_measure_the_same_in_web_mercator_and_utm(lames_dir):
    """The LAMES site polygons of three real sites, rasterised on their EPSG:3857 box and on a
    UTM grid: with true ground area the two agree within 0.5 % (and with the polygons'
    geodesic area); counting 100 m² per pixel would overstate the Mercator area by ~20 %."""
    sites = load_sites(data_dir=lames_dir)
    picked = sites[sites.site_id.isin(["2504", "2355", "2203"])]
    assert picked.site_id.nunique() == 3
    large = 0
    for site_id, group in picked.groupby("site_id"):
        w, s, e, n = group.total_bounds
        geodesic = sum(abs(GEOD.geometry_area_perimeter(g)[0]) for g in group.geometry)
        utm = site_geobox((w, s, e, n), "EPSG:32719", 10, 256)
        merc = GeoBox.from_bbox(
            Transformer.from_crs(4326, 3857, always_xy=True).transform_bounds(w, s, e, n),
            "EPSG:3857", resolution=10).pad(20)
        areas = {}
        for name, gbox in (("utm", utm), ("3857", merc)):
            labels = rasterize(group, like=gbox, value=1)
            table = extent_over_time(labels)
            areas[name] = float(table.area_km2.iloc[0]) * 1e6
            areas[name + " naive"] = float((labels.values == 1).sum()) * 100.0
        print(f"site {site_id}: geodesic {geodesic / 1e6:.4f} km², UTM {areas['utm'] / 1e6:.4f}, "
              f"3857 {areas['3857'] / 1e6:.4f}, 3857 at 100 m²/px {areas['3857 naive'] / 1e6:.4f}")
        if geodesic > 1e6:  # pixel-edge error is small against the area of a large site
            large += 1
            assert areas["3857"] == pytest.approx(areas["utm"], rel=0.005)
            assert areas["utm"] == pytest.approx(geodesic, rel=0.01)
            assert areas["3857 naive"] / areas["3857"] > 1.15
    assert large > 0, "precondition: a picked site is over 1 km² (the area checks ran)"


def _prediction(classes: np.ndarray, prob: np.ndarray, gbox: GeoBox) -> xr.Dataset:
    coords = {"year": [2020, 2021, 2022], **xr_coords(gbox, crs_coord_name="spatial_ref")}
    return xr.Dataset({"class": (("year", "y", "x"), classes),
                       "probability": (("year", "y", "x"), prob)}, coords=coords,
                      attrs={"model_task": "site"})


def test_extent_per_site_and_year_by_hand():
    """Two square 'sites' on a UTM grid; every figure counted by hand."""
    gbox = GeoBox.from_bbox((480000, 7300000, 482000, 7302000), "EPSG:32719", resolution=10)
    cls = np.zeros((3, 200, 200), np.uint8)
    prob = np.zeros((3, 200, 200), np.uint8)
    cls[:, :, 100:] = 255                         # the right half has no data
    for k, n in enumerate((10, 20, 30)):          # site A grows 10 -> 30 rows of 50 px
        cls[k, 20:20 + n, 20:70] = 1
        prob[k, 20:20 + n, 20:70] = 230           # p = 0.90: inside the band's low edge
    prob[:, 150:160, 20:70] = 100                 # p = 0.39: plausible, not predicted
    cls[1, 190:200, 0:10] = 1                     # one year's speckle far from both sites
    px = float(pixel_area(gbox).values.mean()) / 1e6   # km² of one pixel (UTM ~ 100 m²)
    to_lonlat = Transformer.from_crs("EPSG:32719", 4326, always_xy=True)
    box_a = shapely.box(*to_lonlat.transform_bounds(480150, 7301000, 480750, 7301850))
    box_b = shapely.box(*to_lonlat.transform_bounds(480150, 7300250, 480750, 7300500))
    import geopandas as gpd

    sites = gpd.GeoDataFrame({"site_id": ["A", "B"]}, geometry=[box_a, box_b], crs=4326)
    table = extent_over_time(_prediction(cls, prob, gbox), sites=sites, buffer_m=0)
    a = table[table.site_id == "A"].set_index("year")
    np.testing.assert_allclose(a.area_km2, np.array([500, 1000, 1500]) * px, rtol=1e-4)
    np.testing.assert_allclose(a.growth_km2.iloc[1:], [500 * px, 500 * px], rtol=1e-4)
    assert np.isnan(a.growth_km2.iloc[0])
    np.testing.assert_allclose(a.low_km2, a.area_km2, rtol=1e-6)
    b = table[table.site_id == "B"].set_index("year")
    np.testing.assert_allclose(b.area_km2, 0, atol=1e-12)
    np.testing.assert_allclose(b.high_km2, 500 * px, rtol=1e-4)   # p 0.39 >= 0.3
    np.testing.assert_allclose(b.expected_km2, 500 * px * 100 / 255, rtol=1e-4)
    tot = table[table.site_id == "total"].set_index("year")
    np.testing.assert_allclose(tot.area_km2, np.array([500, 1100, 1500]) * px, rtol=1e-4)
    np.testing.assert_allclose(tot.scored_km2, 20000 * px, rtol=1e-4)
    # labels alone: the same masks without probabilities give a band of zero width
    labels = _prediction(cls, prob, gbox)["class"]
    lab = extent_over_time(labels).set_index("year")
    np.testing.assert_allclose(lab.area_km2, lab.low_km2)
    np.testing.assert_allclose(lab.area_km2, np.array([500, 1100, 1500]) * px, rtol=1e-4)
    with pytest.raises(ExtentError, match=r"band=.* and threshold="):
        extent_over_time(labels, band=(0.6, 0.7))
    with pytest.raises(ExtentError, match="'class' and 'probability'"):
        extent_over_time(labels.to_dataset(name="mask"))


def test_new_mining_map_follows_growth():
    gbox = GeoBox.from_bbox((480000, 7300000, 480500, 7300500), "EPSG:32719", resolution=10)
    cls = np.zeros((3, 50, 50), np.uint8)
    cls[0, :10] = cls[1, :20] = cls[2, :30] = 1
    cls[0, 40:] = 1                                # flicker: mining in 2020 only
    first = first_mining_year(_prediction(cls, cls * 255, gbox))
    assert (first.values[:10] == 2020).all() and (first.values[10:20] == 2021).all()
    assert (first.values[20:30] == 2022).all() and (first.values[30:] == 0).all()
    assert (first_mining_year(_prediction(cls, cls * 255, gbox),
                              persistent=False).values[40:] == 2020).all()
    assert first.odc.geobox == gbox
    with pytest.raises(ExtentError, match="needs a 'year' dim"):
        first_mining_year(_prediction(cls, cls, gbox).isel(year=0))
    # a year without data keeps the state before it; the years' order does not matter
    holes = cls.copy()
    holes[2, :10] = 255                            # mined 2020-2021, no data in 2022
    pred = _prediction(holes, cls * 255, gbox)
    assert (first_mining_year(pred).values[:10] == 2020).all()
    assert (first_mining_year(pred.isel(year=[2, 0, 1])).values[:30]
            == first_mining_year(pred).values[:30]).all()


def test_nan_labels_are_not_scored_and_years_must_be_years():
    gbox = GeoBox.from_bbox((480000, 7300000, 480200, 7300200), "EPSG:32719", resolution=10)
    values = np.ones((20, 20))
    values[:, 10:] = np.nan
    labels = xr.DataArray(values, dims=("y", "x"), coords=xr_coords(gbox))
    table = extent_over_time(labels)
    px = float(pixel_area(gbox).values.mean()) / 1e6
    assert table.scored_km2.iloc[0] == pytest.approx(200 * px, rel=1e-6)
    assert table.area_km2.iloc[0] == pytest.approx(200 * px, rel=1e-6)
    assert table.year.iloc[0] is None
    both = extent_over_time({"a": labels, "b": labels})
    assert both[both.site_id == "total"].year.iloc[0] is None
    assert both[both.site_id == "total"].area_km2.iloc[0] == pytest.approx(400 * px, rel=1e-6)
    with pytest.raises(ExtentError, match="must be whole years"):
        compare_with_truth(table, pd.DataFrame({"site_id": ["total"], "year": [2020],
                                                "area_m2": [1.0]}))


def test_truth_masks_of_the_world_measure_its_truth_table(lames_dir):
    """The world's own mine masks per year, on the demo's UTM grid of site 2504 and on its
    EPSG:3857 box, measure the world's truth table within 1 % (pixel edges only)."""
    world = World(DEMO_SPEC, data_dir=lames_dir)
    site = world.sites[world.sites.site_id == "2504"]
    bounds = tuple(site.total_bounds)
    truth = world.truth()
    for crs, gbox in (("utm", site_geobox(bounds, "EPSG:32719", 10, 256)),
                      ("3857", GeoBox.from_bbox(Transformer.from_crs(
                          4326, 3857, always_xy=True).transform_bounds(*bounds), "EPSG:3857",
                          resolution=10).pad(30))):
        years = list(DEMO_SPEC.years)
        masks = np.stack([world.mine_classes(gbox, y) > 0 for y in years])
        labels = xr.DataArray(masks, dims=("year", "y", "x"), coords={
            "year": years, **xr_coords(gbox, crs_coord_name="spatial_ref")})
        table = compare_with_truth(extent_over_time(labels, sites=site, total=False), truth)
        print(crs, table[["year", "area_km2", "truth_km2", "relative_error"]].round(4)
              .to_string(index=False))
        assert len(table) == len(years)
        assert table.relative_error.abs().max() < 0.01
    with pytest.raises(ExtentError, match="lacks columns"):
        compare_with_truth(table, pd.DataFrame({"site_id": ["1"]}))
