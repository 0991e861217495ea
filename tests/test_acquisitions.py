"""The synthetic world's acquisitions: platforms, relative orbits, swaths and baselines as flown."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pytest
from pyproj import Transformer

from lames_cube.synthetic import World, WorldSpec
from lames_cube.synthetic.acquisitions import (
    HALF_SWATH_KM,
    N_ORBITS,
    cross_track_km,
    orbits_over,
    passes,
    published_baseline,
    scene_baseline,
    track_longitude,
)
from lames_cube.synthetic.landscape import pixel_centres, solar_angles


def test_the_anchor_acquisition_is_reproduced():
    """S2B_MSIL2A_20230103T143729_R096_T19HCC: relative orbit 96 over Santiago.

    The product id (a real Copernicus L2A product) gives the platform, the sensing time and the
    relative orbit R096 expected here.
    """
    assert 96 in orbits_over(-70.65, -33.45)
    first = passes(96, -33.45, dt.date(2023, 1, 3), dt.date(2023, 1, 3))
    assert [(p.platform, p.when.strftime("%Y%m%dT%H%M%S")) for p in first] == [
        ("sentinel-2b", "20230103T143729")]


def test_revisit_and_platforms_as_flown():
    def gaps(start, end):
        ps = passes(96, -24.0, start, end)
        return ps, {(b.when.date() - a.when.date()).days for a, b in itertools.pairwise(ps)}

    # ESA mission facts: 10-day repeat cycle per satellite; 2B from 2017-07-06, 2C replaced 2A
    # on 2025-01-21 (a 5-day revisit with two satellites in service)
    early, g = gaps(dt.date(2016, 1, 1), dt.date(2016, 12, 31))
    assert g == {10} and {p.platform for p in early} == {"sentinel-2a"}  # before 2B
    both, g = gaps(dt.date(2021, 1, 1), dt.date(2022, 12, 31))
    assert g == {5}
    # Alternating A and B, and Sentinel-2B keeps flying after December 2021 (it was
    # Sentinel-1B that was lost on 2021-12-23).
    assert all(a.platform != b.platform for a, b in itertools.pairwise(both))
    assert any(p.platform == "sentinel-2b" and p.when.date() > dt.date(2021, 12, 23) for p in both)
    late, g = gaps(dt.date(2025, 3, 1), dt.date(2025, 12, 31))
    assert g == {5} and {p.platform for p in late} == {"sentinel-2b", "sentinel-2c"}
    # Sentinel-2C takes Sentinel-2A's slot: same days of the cycle.
    a = passes(96, -24.0, dt.date(2024, 12, 1), dt.date(2025, 1, 20))[-1]
    c = passes(96, -24.0, dt.date(2025, 1, 21), dt.date(2025, 2, 28))
    c = next(p for p in c if p.platform == "sentinel-2c")
    assert a.platform == "sentinel-2a" and (c.when.date() - a.when.date()).days % 10 == 0
    assert (c.when - a.when).total_seconds() % 86400 == pytest.approx(0, abs=1)


def test_tracks_are_spaced_and_timed_like_sentinel_2():
    lat = -33.0
    lons = np.array([track_longitude(r, lat) for r in range(1, N_ORBITS + 1)])
    order = np.argsort(lons)
    spacing = np.diff(lons[order])
    assert spacing == pytest.approx(360 / 143, abs=1e-6)  # 143 relative orbits (ESA), equally spaced
    # The track next door to the west is flown 3 days later by the same satellite (by hand: it is
    # 43 orbits on, and 43 x 10 / 143 days = 3.007 days).
    r = 96
    west = int(order[np.flatnonzero(order == r - 1)[0] - 1]) + 1
    day = passes(r, lat, dt.date(2023, 1, 1), dt.date(2023, 1, 10))[0].when
    days = {(p.when - day).days % 10 for p in passes(west, lat, dt.date(2023, 1, 1), dt.date(2023, 1, 20))
            if p.platform == "sentinel-2b"}
    assert days == {3}
    # Neighbouring swaths overlap by tens of kilometres at Chilean latitudes (290 km swath, ESA;
    # 20..90 km brackets the 20-70 km of the acquisitions module docstring).
    gap_km = spacing[0] * 111.32 * math.cos(math.radians(lat)) * math.cos(
        math.atan(0.25 * math.cos(math.radians(lat))))
    assert 20 < 2 * HALF_SWATH_KM - gap_km < 90


def test_processing_baselines_over_time():
    days = [dt.date(2020, 1, 1) + dt.timedelta(days=k) for k in range(0, 5 * 365, 7)]
    names = [published_baseline(d) for d in days]
    assert [float(n) for n in names] == sorted(float(n) for n in names)
    # 04.00 (with the +1000 DN offset) from 2022-01-25: ESA's Sentinel-2 processing baseline news
    assert published_baseline(dt.date(2022, 1, 24)) < "04.00" <= published_baseline(dt.date(2022, 1, 25))
    assert {scene_baseline(d, collection1=True, reprocessed=False) >= "05.00" for d in days} == {True}
    # Collection-1 reprocessing runs baseline 05.00 (ESA Sentinel-2 Collection-1 documentation)
    assert scene_baseline(dt.date(2021, 5, 1), collection1=False, reprocessed=True) == "05.00"


def test_solar_angles_at_the_equinox_by_hand():
    # Declination 0 on day 81 (sin(2 pi (284 + 81) / 365) = 0): cos z = cos(lat) cos(22.5°) at
    # 10:30 (hour angle -22.5°), 32.43° for lat -24°; abs=0.6° leaves room for a finer declination.
    z, a = solar_angles(dt.date(2021, 3, 22), -24.0)
    assert math.degrees(z) == pytest.approx(math.degrees(math.acos(
        math.cos(math.radians(24)) * math.cos(math.radians(22.5)))), abs=0.6)
    assert 0 < math.degrees(a) < 90  # morning sun in the north-east


@pytest.fixture(scope="module")
def wide(lames_dir):
    """Sites spread over Chile: some tiles in two swaths, some cut by a swath edge."""
    return World(WorldSpec(site_ids=("2359", "2510"), years=(2022,),
                           scenes_per_year=4, grid_km=3, tile_px=330, hidden_mines=False),
                 data_dir=lames_dir)


def test_tiles_in_two_swaths_are_seen_on_other_dates(wide):
    by_tile: dict = {}
    for s in wide.scenes:
        by_tile.setdefault(s.tile.tile_id, set()).add((s.orbit, s.date))
    two = [v for v in by_tile.values() if len({o for o, _ in v}) == 2]
    assert two, "no tile lies where two swaths overlap"
    for v in two:
        orbits = {o for o, _ in v}
        dates = {o: {d for oo, d in v if oo == o} for o in orbits}
        a, b = dates.values()
        assert not a & b  # different orbits fly on different days


def test_swath_edges_cut_tiles_where_the_track_says(wide):
    edged = [s for s in wide.scenes if s.edge is not None
             and any(abs(abs(cross_track_km(s.orbit, *_lonlat(s, x, y))) - HALF_SWATH_KM) < 5
                     for x, y in _corners(s))]
    assert edged, "no scene at a swath edge"
    scene = edged[0]
    gbox = scene.tile.geobox(10).zoom_out(10)  # 100 m sample of the tile
    xs, ys = pixel_centres(gbox)
    xx, yy = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs(scene.tile.epsg, 4326, always_xy=True).transform(xx, yy)
    d = np.vectorize(lambda a, b: cross_track_km(scene.orbit, a, b))(lon, lat)
    inside = np.abs(d) <= HALF_SWATH_KM
    valid = World.valid_mask(scene, gbox)
    clear = np.abs(np.abs(d) - HALF_SWATH_KM) > 0.05  # 50 m from the edge: linearisation
    assert inside[clear].any() and (~inside[clear]).any()
    np.testing.assert_array_equal(valid[clear], inside[clear])


def _corners(scene):
    t = scene.tile
    span = t.size_px * 10
    return [(t.x0, t.y0), (t.x0 + span, t.y0 - span)]


def _lonlat(scene, x, y):
    return Transformer.from_crs(scene.tile.epsg, 4326, always_xy=True).transform(x, y)
