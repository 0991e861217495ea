"""Sampling: the LAMES blind rule and the window/polygon test, against independent geometry."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from odc.geo.geobox import GeoBox

from lames_cube.errors import InvalidQueryError
from lames_cube.patches import lames_patch_table, patch_table
from lames_cube.sampling import NotEnoughWindowsError, sample_background, sample_blind, touches


def _table():
    g = GeoBox.from_bbox((300_000, 7_000_000, 340_960, 7_040_960), "EPSG:32719", resolution=10)
    return patch_table(g, size=256)  # 16 x 16 windows


def test_blind_draws_are_repeatable_recorded_and_bounded():
    table = _table()
    a, b = sample_blind(table, 40, seed=3), sample_blind(table, 40, seed=3)
    assert a[["row", "col"]].equals(b[["row", "col"]]) and len(a) == 40
    assert not a[["row", "col"]].equals(sample_blind(table, 40, seed=4)[["row", "col"]])
    assert not a.duplicated(["row", "col"]).any()
    unseeded = sample_blind(table, 5)  # LAMES drew without a seed: ours records the one used
    again = sample_blind(table, 5, seed=unseeded.attrs["seed"])
    assert unseeded[["row", "col"]].equals(again[["row", "col"]])
    with pytest.raises(NotEnoughWindowsError, match="asked for n=257 windows but the table "
                                                    "holds only 256"):
        sample_blind(table, 257, seed=1)
    with pytest.raises(InvalidQueryError, match=r"seed=2\.5 is not an integer"):
        sample_blind(table, 2, seed=2.5)


def test_touches_equals_a_plain_shapely_loop_in_another_crs():
    table = _table()
    rng = np.random.default_rng(5)
    xs, ys = rng.uniform(300_000, 341_000, 12), rng.uniform(7_000_000, 7_041_000, 12)
    local = gpd.GeoSeries([shapely.Point(x, y).buffer(r) for x, y, r in
                           zip(xs, ys, rng.uniform(50, 900, 12), strict=True)], crs="EPSG:32719")
    lonlat = gpd.GeoDataFrame(geometry=local.to_crs("EPSG:4326"))
    for buffer_m in (0, 500):
        got = touches(table, [lonlat.iloc[:6], lonlat.iloc[6:]], buffer_m=buffer_m)
        grown = [g.buffer(buffer_m) if buffer_m else g for g in local.values]
        want = [any(w.intersects(p) for p in grown) for w in table.geometry.values]
        # Reprojection to lon/lat and back moves edges by millimetres: compare away from them.
        clear = [min(w.distance(p) for p in grown) > 1 or any(w.intersects(p.buffer(-1))
                                                              for p in grown)
                 for w in table.geometry.values]
        assert np.array_equal(got[clear], np.array(want)[clear])
        assert 0 < got.sum() < len(table)
    assert not touches(table, gpd.GeoSeries([], crs="EPSG:4326")).any()


def test_blind_contamination_over_all_lames_chile_patches(lames_dir, capsys):
    """How often the LAMES blind "no-mine" rule picks windows that touch a mine: LAMES site
    polygons and Maus et al. footprints, checked by a geopandas spatial join (independent of
    touches())."""
    from lames_cube.annotations import load_footprints, load_sites

    table = lames_patch_table("chile")
    sites, maus = load_sites("all", data_dir=lames_dir), load_footprints(data_dir=lames_dir)
    counts = {}
    for name, polys in (("LAMES site polygons", sites), ("Maus footprints", maus)):
        hit = touches(table, polys)
        joined = gpd.sjoin(table[["geometry"]], polys[["geometry"]].to_crs(table.crs),
                           predicate="intersects")
        assert hit.sum() == joined.index.nunique()
        counts[name] = int(hit.sum())
    either = touches(table, [sites, maus])
    expected = 10_000 * either.mean()
    with capsys.disabled():
        print(f"\nLAMES Chile patches: {len(table)}; touching {counts}; either: "
              f"{int(either.sum())}; a blind draw of 10,000 holds {expected:.0f} contaminated "
              f"windows on average")
    assert counts["LAMES site polygons"] > 0 and counts["Maus footprints"] > 0


def _world(seed=0):
    """A 600 x 700 px grid with planted mines (labels) and polygons to avoid (not in labels)."""
    from odc.geo.xr import xr_zeros

    g = GeoBox.from_bbox((300_000, 7_000_000, 307_000, 7_006_000), "EPSG:32719", resolution=10)
    labels = xr_zeros(g, dtype="uint8")
    rng = np.random.default_rng(seed)
    for r, c in rng.integers(0, 560, (6, 2)):
        labels[r:r + 30, c:c + 40] = 1
    hidden = gpd.GeoDataFrame(geometry=[shapely.Point(303_500, 7_003_000).buffer(400)],
                              crs="EPSG:32719").to_crs("EPSG:4326")
    return g, labels, hidden


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_background_windows_hold_no_mine_and_touch_no_excluded_polygon(seed):
    _g, labels, hidden = _world()
    t = sample_background(labels, 150, size=64, exclude=hidden, buffer_m=100, seed=seed)
    assert len(t) == 150 and not t.duplicated(["row", "col"]).any()
    values = labels.values
    for r, c in zip(t.row, t.col, strict=True):  # independent: the pixels themselves
        assert 0 <= r <= 600 - 64 and 0 <= c <= 700 - 64
        assert values[r:r + 64, c:c + 64].max() == 0
    grown = hidden.to_crs("EPSG:32719").buffer(100).iloc[0]  # independent: shapely
    assert not any(w.intersects(grown) for w in t.geometry.values)
    again = sample_background(labels, 150, size=64, exclude=hidden, buffer_m=100, seed=seed)
    assert t[["row", "col"]].equals(again[["row", "col"]])
    assert t.attrs["rule"] == "background" and t.attrs["seed"] == seed


def test_background_respects_invalid_pixels_and_counts_what_exists():
    _g, labels, _ = _world()
    valid = labels.copy(data=np.ones(labels.shape, bool))
    valid[:, :350] = False  # the western half has no data
    t = sample_background(labels, 40, size=64, valid=valid, seed=4)
    assert (t.col >= 350).all()
    half = sample_background(labels, 40, size=64, valid=valid, max_invalid=0.5, seed=4)
    assert (half.col >= 350 - 32).all() and (half.col < 350).any()
    free = sum(labels.values[r:r + 64, c:c + 64].max() == 0 and (c >= 350)
               for r in range(600 - 63) for c in range(700 - 63))  # slow count
    with pytest.raises(NotEnoughWindowsError, match=f"asked for n={free + 1} windows but the "
                                                    f"grid .* holds only {free}"):
        sample_background(labels, free + 1, size=64, valid=valid, seed=4)
    with pytest.raises(InvalidQueryError, match="seed='a' is not an integer"):
        sample_background(labels, 1, size=64, seed="a")
