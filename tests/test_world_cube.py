"""World.to_cube: a lazy cube of the synthetic world, equal to build_cube on the written world."""

from __future__ import annotations

import pickle
import time

import dask
import numpy as np
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox

from lames_cube.bands import WORLD_BANDS
from lames_cube.cube import build_cube
from lames_cube.errors import InvalidGridError, InvalidQueryError, UnknownBandError, WorldError
from lames_cube.search import search
from lames_cube.synthetic import World
from lames_cube.synthetic.lazy import CubePlan, coarse_window
from lames_cube.testing import SMALL_SPEC
from lames_cube.testing.schedulers import CountingScheduler


@pytest.fixture(scope="module")
def w(lames_dir):
    return World(SMALL_SPEC, data_dir=lames_dir)


def _edged_tile(w):
    """A tile that overlaps other tiles and has a scene cut by a swath edge."""
    index = {t.tile_id: t for t in w.tiles}
    for scene in w.scenes:
        tile = index[scene.tile.tile_id]
        box = tile.geobox(10).extent
        neighbours = [t for t in w.tiles if t is not tile and t.geobox(10).extent.intersects(box)]
        if scene.edge is not None and neighbours:
            return tile
    raise AssertionError("the small world has no tile with a swath edge and neighbours")


def test_cube_equals_build_cube_on_a_written_tile(world, w):
    """Pixel for pixel, every band and date, across both DN offsets; same coords and grid."""
    tile = _edged_tile(w)
    gbox = tile.geobox(10)
    items = search(world)
    assert {s.dn_offset for s in w.scenes if s.tile == tile} == {0, 1000}  # both baselines
    # Earth Search l2a serves harmonised pixels from 04.00 on: no offset left in any item
    assert {i.properties["lames:dn_offset"] for i in items
            if i.properties["s2:mgrs_tile"] == tile.tile_id} == {0}
    ref = build_cube(items, geobox=gbox, chunks=256).compute()
    cube = w.to_cube(gbox, chunks=256, footprints=True)
    assert cube.odc.geobox == gbox == ref.odc.geobox
    got = cube.compute()
    assert got.dtype == ref.dtype == np.uint16
    assert (ref.values == 0).any() and (ref.values != 0).any()  # a swath edge is in the tile
    np.testing.assert_array_equal(got.values, ref.values)
    for coord in ("time", "solar_day", "n_items", "band", "y", "x", "spatial_ref"):
        np.testing.assert_array_equal(got[coord].values, ref[coord].values, err_msg=coord)
    assert set(ref.attrs) <= set(got.attrs) and got.attrs["nodata"] == 0
    assert got.attrs["scale"] == ref.attrs["scale"]

    # Without footprints the world is rendered everywhere, as the date saw it (its own noise, no
    # tile's gain): SCL equal wherever build_cube has data, reflectance within the scenes' gain
    # (1 %) and noise.
    everywhere = w.to_cube(gbox, chunks=256).values
    assert (everywhere != 0).all()
    valid = ref.values != 0
    scl = list(ref.band.values).index("SCL")
    np.testing.assert_array_equal(everywhere[:, scl][valid[:, scl]], ref.values[:, scl][valid[:, scl]])
    refl = valid.copy()
    refl[:, scl] = False
    refl &= ref.values > 500  # relative differences of the darkest pixels are noise
    rel = np.abs(everywhere[refl].astype(float) / ref.values[refl] - 1)
    assert np.median(rel) < 0.01 and np.mean(rel < 0.05) > 0.99  # tolerances of this test


def test_a_window_equals_world_read(w):
    tile = w.tiles[1]
    gbox = tile.geobox(10)
    date = w.dates[0]  # a cloudy date: clouds are rendered per date
    cube = w.to_cube(gbox, dates=[date], chunks=256)
    window = cube.isel(time=0, y=slice(256, 330), x=slice(0, 256)).compute()
    wbox = gbox[256:330, 0:256]
    assert window.odc.geobox == wbox
    truth = w.read(wbox, date)
    for band in ("B02", "B03", "B04", "B08"):
        np.testing.assert_array_equal(window.sel(band=band).values, truth[band], err_msg=band)
    # 20 m bands: the tile's own 20 m pixel that holds each 10 m pixel (nearest, as build_cube).
    g20 = tile.geobox(20)
    t20 = w.read(g20, date)
    for band in ("B11", "B12", "SCL"):
        expected = t20[band][256 // 2: 330 // 2 + 1].repeat(2, 0).repeat(2, 1)[:74, :256]
        np.testing.assert_array_equal(window.sel(band=band).values, expected, err_msg=band)
    assert cube.solar_day.values[0] == np.datetime64(date, "D")


def test_grids_not_on_the_10m_lattice(w):
    """A 10 m grid shifted by 10 m takes the containing 20 m pixel; a 30 m grid renders at 30 m."""
    tile = w.tiles[1]
    shifted = GeoBox((64, 64), Affine(10, 0, tile.x0 + 10, 0, -10, tile.y0 - 10), gbox_crs(tile))
    date = w.dates[2]
    got = w.to_cube(shifted, dates=[date], bands=["B04", "SCL"], chunks=256).values[0]
    np.testing.assert_array_equal(got[0], w.read(shifted, date)["B04"])
    scl20 = w.read(tile.geobox(20), date)["SCL"]
    rows = (np.arange(64) + 1) // 2  # 10 m row k sits in 20 m row (k + 1) // 2
    np.testing.assert_array_equal(got[1], scl20[rows[:, None], rows[None, :]])

    coarse = GeoBox((40, 40), Affine(30, 0, tile.x0, 0, -30, tile.y0), gbox_crs(tile))
    got = w.to_cube(coarse, dates=[date], chunks=256).values[0]
    truth = w.read(coarse, date)
    for k, band in enumerate(WORLD_BANDS):
        np.testing.assert_array_equal(got[k], truth[band], err_msg=band)


def gbox_crs(tile):
    return f"EPSG:{tile.epsg}"


def test_coarse_window_picks_the_containing_20m_pixel():
    g = GeoBox((3, 5), Affine(10, 0, 1010, 0, -10, 2030), "EPSG:32719")
    g20, rows, cols = coarse_window(g)
    assert g20.affine == Affine(20, 0, 1000, 0, -20, 2040)
    assert rows.tolist() == [0, 1, 1] and cols.tolist() == [0, 1, 1, 2, 2]


def test_chunked_and_unchunked_give_the_same_values(w):
    gbox = w.tiles[2].geobox(10)
    small = w.to_cube(gbox, dates="2022", bands=["B08", "B11", "SCL"], chunks=256)
    whole = w.to_cube(gbox, dates="2022", bands=["B08", "B11", "SCL"], chunks=1024)
    # SMALL_SPEC.tile_px = 330 = 256 + 74; 3 bands asked; one chunk per date (2 in 2022 here)
    assert small.chunks[2] == (256, 74) and whole.chunks[2] == (330,)
    assert small.chunks[1] == (3,) and small.chunks[0] == (1, 1)
    np.testing.assert_array_equal(small.values, whole.values)


def test_a_country_grid_builds_lazily_and_fast(w):
    from lames_cube.grid import mosaic_geobox

    gbox = mosaic_geobox()
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        start = time.perf_counter()
        cube = w.to_cube(gbox, dates=w.dates[:2], chunks=2304)
        took = time.perf_counter() - start
    assert counter.calls == 0
    # mosaic_geobox("chile"): 184 x 32 tiles of 2304 px (the grid of tests/test_grid.py)
    assert cube.shape == (2, len(WORLD_BANDS), 423_936, 73_728)
    assert cube.chunks[2] == (2304,) * 184 and cube.chunks[3] == (2304,) * 32
    graph = dict(cube.data.__dask_graph__())
    plans = [v for v in graph.values() if isinstance(v, CubePlan)]
    assert len(plans) == 1 and plans[0].world is w  # the world is held once
    assert len(graph) == 1 + 2 * 184 * 32  # the plan, then one task per date and chunk
    size = len(pickle.dumps(graph))
    assert size < len(pickle.dumps(w)) + 200 * len(graph)  # budget of this test: 200 B a task
    print(f"\ncountry cube {cube.shape}: graph of {len(graph)} tasks built in {took:.3f} s, "
          f"pickled {size / 1e6:.2f} MB")


def test_the_cube_pickles_and_computes_after_unpickling(w):
    gbox = w.tiles[0].geobox(10)[:256, :256]
    cube = w.to_cube(gbox, dates=w.dates[-1:], bands=["B02", "SCL"], chunks=256)
    back = pickle.loads(pickle.dumps(cube))
    np.testing.assert_array_equal(back.values, cube.values)


def test_dates_select_the_worlds_acquisitions(w):
    gbox = w.tiles[0].geobox(10)
    assert list(w.to_cube(gbox).solar_day.values.astype("datetime64[D]").tolist()) == w.dates
    in_2022 = [d for d in w.dates if d.year == 2022]
    assert w.to_cube(gbox, dates="2022").sizes["time"] == len(in_2022)
    one = w.to_cube(gbox, dates=[str(w.dates[1])])
    assert one.solar_day.values.astype("datetime64[D]").tolist() == [w.dates[1]]


# ----------------------------------------------------------------------------- bad input
def test_bad_bands_chunks_dates_and_grids(w):
    gbox = w.tiles[0].geobox(10)
    with pytest.raises(UnknownBandError, match=r"'B05' is not rendered .*\['B02', 'B03'"):
        w.to_cube(gbox, bands=["B04", "B05"])
    with pytest.raises(UnknownBandError, match=r"'ndvi' is not rendered"):
        w.to_cube(gbox, bands="ndvi")
    with pytest.raises(InvalidQueryError, match=r"lists 'B04' twice; list each band once"):
        w.to_cube(gbox, bands=["red", "B04"])
    with pytest.raises(InvalidGridError, match=r"chunks\['y'\]=300 .*multiple of the 256-px .* e\.g\. 256"):
        w.to_cube(gbox, chunks=300)
    with pytest.raises(InvalidGridError, match=r"chunks\['x'\]=0"):
        w.to_cube(gbox, chunks={"y": 256, "x": 0})
    with pytest.raises(WorldError, match=r"2021-01-01 is not an acquisition date .*\['2021-"):
        w.to_cube(gbox, dates=["2021-01-01"])
    with pytest.raises(WorldError, match=r"dates='2019' holds none"):
        w.to_cube(gbox, dates="2019")
    with pytest.raises(InvalidGridError, match="axis-aligned"):
        w.to_cube(GeoBox((256, 256), Affine(10, 1, 0, 1, -10, 0), "EPSG:32719"))
    with pytest.raises(InvalidGridError, match=r"odc\.geo GeoBox"):
        w.to_cube((256, 256))
