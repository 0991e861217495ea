"""Composites of the messy world against what the ground really looked like (issue 8's bar).

The reference of a yearly median composite is the median of the cloud-free surfaces of the same
scenes (each rendered without clouds, with its date's sun, haze and season and its tile's own
noise): the composite must come within 2 % of it on 99 % of the valid pixels, and no mine pixel
may be lost to the classification's false clouds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import shapely
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

from lames_cube.composite import median_composite
from lames_cube.synthetic import World
from lames_cube.synthetic.lazy import fusion_key
from lames_cube.testing import SMALL_SPEC, scene_coverage

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]
YEAR_SPEC = dataclasses.replace(SMALL_SPEC, years=(2022,), scenes_per_year=8)


def _reference(world: World, gbox: GeoBox, cube) -> dict[str, np.ndarray]:
    """Per band, the median over the cube's dates of the cloud-free surfaces of the scenes that
    cover the grid (NaN where none does)."""
    return {b: np.nanmedian(v, axis=0) for b, v in _surfaces(world, gbox, cube).items()}


def _surfaces(world: World, gbox: GeoBox, cube) -> dict[str, np.ndarray]:
    """Per band, the cloud-free surfaces ``(date, y, x)`` of the cube's dates: each pixel from the
    first scene that covers it, in build_cube's fusion order (NaN where none does)."""
    from lames_cube.synthetic.lazy import coarse_window

    stacks: dict[str, list] = {b: [] for b in BANDS if b != "SCL"}
    g20, rows, cols = coarse_window(gbox)
    days = [np.datetime64(d, "D") for d in cube.solar_day.values.astype("datetime64[D]")]
    for day in days:
        date = day.astype(object)
        scenes = sorted((s for s in world.scenes if s.date == date
                         and s.tile.geobox(10).extent.intersects(gbox.extent)),
                        key=lambda s: fusion_key(world, s))
        layer = {b: np.full(gbox.shape, np.nan) for b in stacks}
        todo = np.ones(gbox.shape, bool)
        surfaces = world.read_scenes(gbox, date, scenes, clouds=False)
        coarse = world.read_scenes(g20, date, scenes, clouds=False)
        for scene, surface, surface20 in zip(scenes, surfaces, coarse, strict=True):
            for b in ("B11", "B12"):  # 20 m bands: their 20 m pixels, as the cube takes them
                surface[b] = surface20[b][rows[:, None], cols[None, :]]
            cover = scene_coverage(scene, gbox) & todo
            for b in stacks:
                layer[b][cover] = surface[b][cover]
            todo &= ~cover
        for b in stacks:
            stacks[b].append(layer[b])
    return {b: np.stack(v) for b, v in stacks.items()}


@pytest.fixture(scope="module")
def year(lames_dir):
    return World(YEAR_SPEC, data_dir=lames_dir)


def test_yearly_median_is_within_2_percent_of_the_cloud_free_median(year):
    tile = year.tiles[1]
    gbox = tile.geobox(10)
    cube = year.to_cube(gbox, dates="2022", bands=BANDS, chunks=512, footprints=True)
    # preconditions: YEAR_SPEC keeps 8 passes per orbit; at least two cloudy dates to mask
    assert cube.sizes["time"] >= 8 and (cube.cloud_cover.values > 30).sum() >= 2
    comp = median_composite(cube).compute()
    ref = _reference(year, gbox, cube)
    ratios = []
    for i, band in enumerate(b for b in BANDS if b != "SCL"):
        got = comp.reflectance.values[i].astype(float)
        ok = np.isfinite(ref[band]) & (got > 0)
        rel = np.abs(got[ok] / ref[band][ok] - 1)
        share = float((rel <= 0.02).mean())
        ratios.append(share)
        print(f"{band}: {share:.4f} of {ok.sum()} valid pixels within 2 %")
        assert share >= 0.99, band  # issue 8's bar: within 2 % on 99 % of the valid pixels
    holes = (comp.reflectance.values[0] == 0) & np.isfinite(ref["B02"])
    assert holes.mean() < 1e-3  # tolerance of this test: at most 1 pixel in 1000 left empty


def test_no_mine_pixel_is_lost_to_false_clouds(lames_dir):
    """At the demo sites, over a year, the mines stay in the composite: no hole, no cloud.

    A mine pixel is lost when the composite has no value there, or one outside the range of
    the ground's own cloud-free values on the year's dates (± 5 %): a cloud, a shadow or a hole.
    (Not its median: roofs' shadows move with the sun, so some pixels are bimodal.)
    """
    from lames_cube.synthetic import DEMO_SPEC

    world = World(DEMO_SPEC, data_dir=lames_dir)
    year = DEMO_SPEC.years[-1]
    lost = total = flagged = 0
    for site in world.sites.itertuples():
        box = Geometry(shapely.box(*site.geometry.bounds), "EPSG:4326").to_crs(site.epsg)
        gbox = GeoBox.from_geopolygon(box, resolution=10)
        cube = world.to_cube(gbox, dates=str(year), bands=BANDS, chunks=1024, footprints=True)
        comp = median_composite(cube).compute()
        mines = world.mine_classes(gbox, year) > 0
        ground = _surfaces(world, gbox, cube)
        scl = cube.sel(band="SCL").values
        valid = scl > 0
        # SCL false clouds on mines: flagged on half the dates with data or more
        often = np.isin(scl, (8, 9, 11)).sum(axis=0) >= 0.5 * valid.sum(axis=0)
        flagged += int((often & mines & valid.any(axis=0)).sum())
        for i, band in enumerate(b for b in BANDS if b != "SCL"):
            got = comp.reflectance.values[i].astype(float)
            low = np.nanmin(ground[band], axis=0) * 0.95
            high = np.nanmax(ground[band], axis=0) * 1.05
            bad = mines & ((got == 0) | (got < low) | (got > high))
            lost += int(bad.sum())
        total += int(mines.sum())
    print(f"mine pixels: {total}; flagged cloud/snow on half the dates or more: {flagged}; "
          f"lost (pixel-bands): {lost}")
    # the trap is there (floors of this test, below the printed counts of the demo sites) ...
    assert total > 10_000 and flagged > 1000
    assert lost == 0  # ... and the composite does not fall into it
