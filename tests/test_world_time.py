"""The synthetic world through time: season, sun, haze, noise, snow, 20 m integration and the
scene classification's errors beside the truth of the sky."""

from __future__ import annotations

import numpy as np
import pytest

from lames_cube.synthetic import World, WorldSpec
from lames_cube.synthetic.landscape import SCL_ERRORS
from lames_cube.testing import SMALL_SPEC


@pytest.fixture(scope="module")
def w(lames_dir):
    return World(SMALL_SPEC, data_dir=lames_dir)


def _vis(d):
    return (d["B02"].astype(float) + d["B03"] + d["B04"]) / 3e4


def test_the_surface_changes_with_the_date(w):
    gbox = w.tiles[0].geobox(10)
    days = [d for d in w.dates if d.year == 2021]
    a = w.read(gbox, days[0], clouds=False)
    b = w.read(gbox, days[-1], clouds=False)
    assert w.mines.sectors_in_year(2021) is not None
    for band in ("B02", "B04", "B11"):
        rel = np.abs(a[band].astype(float) / b[band] - 1)
        # bounds of this test: sun, haze and noise, not another world
        assert 0.003 < np.median(rel) < 0.2, band
    # Without a date: the neutral sky, no noise (bit-identical twice).
    n1, n2 = w.read(gbox), w.read(gbox)
    np.testing.assert_array_equal(n1["B04"], n2["B04"])
    # Another sun through the year (relief and roof shadows are lit by it).
    zen = [w.sun(d)[0] for d in days]
    assert max(zen) - min(zen) > np.radians(5)


def test_overlapping_tiles_differ_slightly_on_the_same_day(w):
    pairs = [(a, b) for a in w.scenes for b in w.scenes
             if a.date == b.date and a.tile.tile_id < b.tile.tile_id and a.tile.epsg == b.tile.epsg
             and a.tile.geobox(10).extent.intersects(b.tile.geobox(10).extent)]
    assert pairs, "no two tiles of one day overlap"
    from odc.geo.geobox import GeoBox

    for a, b in pairs:
        box = a.tile.geobox(10).extent.intersection(b.tile.geobox(10).extent)
        gbox = GeoBox.from_geopolygon(box, resolution=10)
        ra, rb = (w.read(gbox, a.date, scene=s) for s in (a, b))
        np.testing.assert_array_equal(ra["SCL"], rb["SCL"])  # one classification of the day
        rel = np.abs(ra["B04"].astype(float) / rb["B04"] - 1)
        # bounds of this test: each tile's correction (gain about 1 %) and noise
        assert 0.001 < np.median(rel) < 0.03, (a.id, b.id)
        assert w.scene_gain(a) != w.scene_gain(b)


def test_cloud_shadows_fall_away_from_the_sun(w):
    scene = max(w.scenes, key=lambda s: w.clouds(s.date).cover)
    state = w.clouds(scene.date)
    _zenith, azimuth = w.sun(scene.date)
    # the cloud lies towards the sun from its shadow
    assert state.shadow_dx * np.sin(azimuth) + state.shadow_dy * np.cos(azimuth) > 0
    gbox = scene.tile.geobox(10).pad(200)
    truth = w.read(gbox, scene.date)["CLOUD_TRUTH"]
    shadow, cloud = truth == 3, np.isin(truth, (1, 2))
    assert shadow.sum() > 1000  # precondition: the cloudiest scene casts a shadow
    dc, dr = round(state.shadow_dx / 10), round(-state.shadow_dy / 10)  # columns, rows

    def cloud_at(sign):
        rows, cols = np.nonzero(shadow)
        r, c = rows + sign * dr, cols + sign * dc
        ok = (r >= 0) & (r < truth.shape[0]) & (c >= 0) & (c < truth.shape[1])
        return cloud[r[ok], c[ok]].mean()

    assert cloud_at(+1) > 0.9 and cloud_at(-1) < 0.5  # bounds of this test


def test_20m_bands_integrate_the_10m_ground(w):
    scene = next(s for s in w.scenes if s.dn_offset == 0 and s.edge is None)
    ten = w.read(scene.tile.geobox(10), scene.date, scene=scene)
    twenty = w.scene_arrays(scene, 20)
    for band in ("B11", "B12"):
        h, wd = twenty[band].shape
        blocks = ten[band].astype(float).reshape(h, 2, wd, 2)
        mean = blocks.mean(axis=(1, 3))
        ok = (blocks > 1).all(axis=(1, 3)) & (blocks < 60000).all(axis=(1, 3))
        assert np.abs(twenty[band][ok] - mean[ok]).max() <= 1.0, band  # rounding to an integer DN
        # Not a point sample: a sub-pixel alone differs from the 20 m value somewhere.
        assert (np.abs(twenty[band] - ten[band][::2, ::2]) > 20).mean() > 0.01


def test_classification_errors_beside_the_truth(w):
    seen = {k: 0 for k in (1, 2, 7, 11)}
    bright = flagged = real = real_flagged = 0
    for scene in w.scenes:
        gbox = scene.tile.geobox(10)
        d = w.read(gbox, scene.date, scene=scene)
        clear = w.read(gbox, scene.date, clouds=False, scene=scene)
        scl, truth = d["SCL"], d["CLOUD_TRUTH"]
        for k in seen:
            seen[k] += int((scl == k).sum())
        very = (truth == 0) & (_vis(clear) > 0.27)
        bright += int(very.sum())
        flagged += int(np.isin(scl[very], (8, 9, 11)).sum())
        cloud = truth == 2
        real += int(cloud.sum())
        real_flagged += int(np.isin(scl[cloud], (8, 9)).sum())
        # A perfect classification without clouds: no errors, no cloud classes.
        assert not np.isin(clear["SCL"], (1, 2, 7, 8, 9, 10)).any()
    assert all(v > 0 for v in seen.values()), seen
    rate = flagged / bright
    print(f"very bright clear pixels flagged as cloud/snow: {rate:.2f} of {bright}")
    # SCL_ERRORS["bright_as_cloud"] = 0.4 flags bright ground where two noise blobs are low:
    # 0.2..0.7 brackets that rate; 0.95 is a tolerance of this test
    assert bright > 1000 and 0.2 < rate < 0.7 and SCL_ERRORS["bright_as_cloud"] > 0
    assert real_flagged / real > 0.95


def test_snow_on_the_high_andes_in_winter(lames_dir):
    world = World(WorldSpec(site_ids=("1959",), years=(2021,), scenes_per_year=24, grid_km=3,
                            tile_px=330, hidden_mines=False), data_dir=lames_dir)
    tile = world.tiles[0]
    gbox = tile.geobox(10).zoom_out(4)
    snowy = {}
    for day in sorted({s.date for s in world.scenes if s.tile == tile}):
        d = world.read(gbox, day, clouds=False)
        snowy[day] = float((d["CLOUD_TRUTH"] == 4).mean())
    winter = [v for k, v in snowy.items() if 5 <= k.month <= 9]
    summer = [v for k, v in snowy.items() if k.month in (12, 1, 2, 3)]
    # site 1959 lies high in the Andes: bounds of this test for southern winter (May-Sep) and
    # summer (Dec-Mar) snow cover
    assert max(winter) > 0.3 and max(summer) < 0.05
    assert min(winter) < max(winter)  # storms come and go
