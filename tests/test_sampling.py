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
                                                    f"grid \\(.*\\) holds only {free}"):
        sample_background(labels, free + 1, size=64, valid=valid, seed=4)
    with pytest.raises(InvalidQueryError, match="seed='a' is not an integer"):
        sample_background(labels, 1, size=64, seed="a")


def _slow_clean(values, size, forbidden_extra=None):
    """Every clean window's (row, col), by looking at its pixels."""
    bad = values > 0 if forbidden_extra is None else (values > 0) | forbidden_extra
    h, w = bad.shape
    return {(r, c) for r in range(h - size + 1) for c in range(w - size + 1)
            if not bad[r:r + size, c:c + size].any()}


def test_background_index_counts_every_clean_window_and_drawing_all_returns_them():
    from odc.geo.xr import xr_zeros

    from lames_cube.sampling import background_index

    g = GeoBox.from_bbox((0, 0, 900, 700), "EPSG:32719", resolution=10)  # 70 x 90 px
    labels = xr_zeros(g, dtype="uint8")
    rng = np.random.default_rng(0)
    for r, c in rng.integers(0, 65, (7, 2)):
        labels[r:r + 3, c:c + 4] = 2
    clean = _slow_clean(labels.values, 16)
    index = background_index(labels, size=16)
    assert index.count == len(clean) and 0 < len(clean) < 55 * 75
    everything = index.sample(len(clean), seed=1)
    assert set(zip(everything.row, everything.col, strict=True)) == clean


def test_background_draws_are_uniform_over_the_clean_windows():
    from scipy.stats import chisquare

    _g, labels, _ = _world()
    small = labels.isel(y=slice(0, 120), x=slice(0, 100))
    small.values[:] = 0
    small.values[50:60, 30:70] = 1
    clean = sorted(_slow_clean(small.values, 40))
    hits = {k: 0 for k in clean}
    for seed in range(2000):
        t = sample_background(small, 1, size=40, seed=seed)
        hits[(int(t.row.iloc[0]), int(t.col.iloc[0]))] += 1
    assert chisquare(list(hits.values())).pvalue > 1e-3


def test_lazy_labels_give_the_numpy_result_chunk_by_chunk(monkeypatch):
    import dask
    import dask.array as da

    from lames_cube import sampling

    _g, labels, hidden = _world()
    valid = labels.copy(data=np.ones(labels.shape, bool))
    valid[:40, :] = False
    monkeypatch.setattr(sampling, "BLOCK", 128)  # the NumPy path's blocks = the dask chunks
    want = sample_background(labels, 60, size=64, exclude=hidden, buffer_m=50, valid=valid,
                             max_invalid=0.1, seed=9)
    lazy = labels.copy(data=da.from_array(labels.values, chunks=128))
    lazy_valid = valid.copy(data=da.from_array(valid.values, chunks=(200, 128)))
    with dask.config.set(scheduler="sync"):
        got = sample_background(lazy, 60, size=64, exclude=hidden, buffer_m=50,
                                valid=lazy_valid.chunk({"y": 128}), max_invalid=0.1, seed=9)
    assert got[["row", "col"]].equals(want[["row", "col"]])
    monkeypatch.setattr(sampling, "BLOCK", 2048)  # other blocks: other draw, same clean set
    other = sample_background(labels, 60, size=64, exclude=hidden, buffer_m=50, valid=valid,
                              max_invalid=0.1, seed=9)
    assert other.attrs["available"] == want.attrs["available"] == got.attrs["available"]


def test_lazy_country_sized_labels_read_only_blocks_they_need():
    """Labels rasterised lazily on a 12,288 x 12,288 px grid (151 Mpx): the index is built
    block by block, never whole."""
    from lames_cube import rasterize
    from lames_cube.sampling import background_index

    g = GeoBox.from_bbox((300_000, 7_000_000, 422_880, 7_122_880), "EPSG:32719", resolution=10)
    mines = gpd.GeoDataFrame(geometry=[shapely.box(350_000, 7_050_000, 352_000, 7_052_500)],
                             crs="EPSG:32719")
    labels = rasterize(mines, like=g, lazy=True, chunks=4096)
    assert hasattr(labels.data, "dask")
    index = background_index(labels, size=256)
    # Hand count: the mine covers rows 7,050..7,299 and cols 5,000..5,199 (px); windows that
    # overlap it have top-left rows 6,795..7,299 and cols 4,745..5,199.
    assert index.count == (12_288 - 255) ** 2 - (7_299 - 6_795 + 1) * (5_199 - 4_745 + 1)
    t = index.sample(50, seed=2)
    assert not touches(t, mines).any() and len(t) == 50


def test_positive_windows_reach_their_fraction_and_balance_it():
    from lames_cube.sampling import sample_positive

    _g, labels, _ = _world()
    t = sample_positive(labels, 80, size=32, min_fraction=0.3, seed=5)
    values = labels.values
    share = [values[r:r + 32, c:c + 32].astype(bool).mean() for r, c in zip(t.row, t.col,
                                                                              strict=True)]
    assert np.allclose(share, t.fraction) and min(share) >= 0.3
    counts = np.histogram(share, bins=np.linspace(0.3, 1, 5))[0]
    assert counts.tolist() == [20, 20, 20, 20]  # fraction bins equally filled
    plain = sample_positive(labels, 80, size=32, min_fraction=0.3, balance=None, seed=5)
    assert np.histogram(plain.fraction, bins=np.linspace(0.3, 1, 5))[0][0] > 30  # mostly edges
    again = sample_positive(labels, 80, size=32, min_fraction=0.3, seed=5)
    assert t[["row", "col"]].equals(again[["row", "col"]])
    with pytest.raises(NotEnoughWindowsError, match="holds only"):
        sample_positive(labels, 10**7, size=32, min_fraction=0.3, seed=5)
    with pytest.raises(InvalidQueryError, match="min_fraction=0 must be a fraction"):
        sample_positive(labels, 1, size=32, min_fraction=0, seed=5)


def test_positive_windows_balanced_per_class_from_a_lattice():
    from lames_cube.sampling import sample_positive

    g, labels, _ = _world()
    values = labels.values
    values[values > 0] = 3  # a common class
    values[20:60, 20:60] = 7  # a rare one
    values[300:330, 600:650] = 5  # rarer still
    table = patch_table(g, size=32, stride=8)
    t = sample_positive(labels, 30, size=32, min_fraction=0.2, balance="class", table=table,
                        seed=1)
    assert sorted(set(t["class"])) == [3, 5, 7] and not t.duplicated(["row", "col"]).any()
    per = t["class"].value_counts()
    rare5 = sum(values[r:r + 32, c:c + 32].__eq__(5).mean() >= 0.2
                for r, c in zip(table.row, table.col, strict=True))
    assert per[5] == min(10, rare5) and per.sum() == 30 and abs(per[3] - per[7]) <= 1
    for r, c, k, f in zip(t.row, t.col, t["class"], t.class_fraction, strict=True):
        assert (r % 8, c % 8) == (0, 0)  # from the lattice
        assert np.isclose((values[r:r + 32, c:c + 32] == k).mean(), f) and f >= 0.2


@pytest.mark.filterwarnings("ignore:.*impossible date")
def test_checked_draw_over_all_lames_chile_patches_touches_nothing(lames_dir, capsys):
    """Checked no-mine windows over the LAMES Chile patches: none touches a LAMES sector, site
    polygon, Maus footprint or test-site box grown by 500 m, verified by a spatial join on the
    polygons buffered in UTM (not by the sampler's own test)."""
    from lames_cube.annotations import load_footprints, load_sectors, load_sites
    from lames_cube.grid import site_boxes
    from lames_cube.sampling import sample_checked

    table = lames_patch_table("chile")
    layers = {"sectors": load_sectors(data_dir=lames_dir),
              "sites": load_sites("all", data_dir=lames_dir),
              "Maus footprints": load_footprints(data_dir=lames_dir),
              "test boxes": site_boxes(load_sites("test", data_dir=lames_dir))}
    drawn = sample_checked(table, 10_000, exclude=list(layers.values()), buffer_m=500, seed=11)
    assert len(drawn) == 10_000 and (drawn.kind == "checked").all()
    utm = "EPSG:32719"
    touching = {}
    for name, polys in layers.items():
        grown = gpd.GeoDataFrame(geometry=polys.to_crs(utm).buffer(500))
        joined = gpd.sjoin(drawn[["geometry"]].to_crs(utm), grown, predicate="intersects")
        touching[name] = joined.index.nunique()
    blind = sample_blind(table, 10_000, seed=11)
    either = touches(blind, list(layers.values()), buffer_m=500)
    with capsys.disabled():
        print(f"\nchecked draw of 10,000 from {drawn.attrs['available']:,} clear LAMES patches: "
              f"touching {touching}; the blind draw with the same seed: {int(either.sum())} "
              "windows within 500 m of a mine or test box")
    assert touching == dict.fromkeys(layers, 0)
    assert either.sum() > 0


@pytest.mark.parametrize("seed", range(6))
def test_per_class_draws_share_windows_between_classes_without_failing(seed):
    """Windows eligible for two classes: a rarer class may take them first in a round; the
    others then draw from what is left (a found bug raised numpy's ValueError here)."""
    from odc.geo.xr import xr_zeros

    from lames_cube.sampling import sample_positive

    g = GeoBox.from_bbox((0, 0, 400, 80), "EPSG:32719", resolution=10)  # 8 x 40 px
    labels = xr_zeros(g, dtype="uint8")
    v = labels.values
    v[0:2, 0:8], v[2:4, 0:8] = 1, 2  # windows 0 and 1: half class 1, half class 2
    v[0:4, 8:12] = 2                  # window 2: class 2
    v[0:4, 12:28] = 3                 # windows 3-6: class 3
    table = patch_table(g, size=4, stride=4)
    for n in (5, 6, 7):
        t = sample_positive(labels, n, size=4, min_fraction=0.5, balance="class", table=table,
                            seed=seed)
        assert len(t) == n and not t.duplicated(["row", "col"]).any()
        for r, c, k in zip(t.row, t.col, t["class"], strict=True):
            assert (v[r:r + 4, c:c + 4] == k).mean() >= 0.5
    with pytest.raises(NotEnoughWindowsError, match="only 7 distinct windows"):
        sample_positive(labels, 8, size=4, min_fraction=0.5, balance="class", table=table,
                        seed=seed)
