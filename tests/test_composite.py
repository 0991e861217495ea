"""Cloud masks grown by a buffer, least-cloudy ranking over the AOI, never-clear fallback.

Every check is against an independent truth on small hand-built cubes: slow pure-Python loops
over pixels for the buffered mask, hand-computed medians and hand-chosen darkest observations
for the composites. The cubes are dask-chunked in small blocks so that every buffer crosses
chunk edges.
"""

from __future__ import annotations

import warnings

import dask
import numpy as np
import odc.geo.xr  # noqa: F401  (the .odc accessor)
import pyproj
import pytest
import xarray as xr

from lames_cube.composite import (
    DEFAULT_CLOUD_BUFFER_M,
    FALLBACK_CLASSES,
    clear_fraction,
    clear_mask,
    least_cloudy_composite,
    median_composite,
    yearly_composites,
)
from lames_cube.errors import InvalidGridError, InvalidQueryError
from lames_cube.recipes.cubes import DEFAULT_BUFFER_M, Recipe, RecipeError, load_recipe
from lames_cube.testing.schedulers import CountingScheduler

BANDS = ["B04", "B03", "B02", "SCL"]
DAY = np.timedelta64(1, "D")
T0 = np.datetime64("2022-01-05T14:00", "ns")


def make_cube(scl, refl=None, *, res=(10.0, 10.0), crs="EPSG:32719", origin=(400_000.0, 7_300_000.0),
              chunks=(4, 5), cover=None, times=None) -> xr.DataArray:
    """A ``(time, band, y, x)`` uint16 cube with bands B04, B03, B02, SCL on a north-up grid.

    ``refl`` is ``(time, 3, y, x)`` (default 1000 everywhere); ``res`` is ``(dy, dx)`` in CRS units;
    ``chunks`` ``(y, x)`` (None: numpy-backed).
    """
    scl = np.asarray(scl)
    nt, ny, nx = scl.shape
    if refl is None:
        refl = np.full((nt, 3, ny, nx), 1000)
    data = np.concatenate([np.asarray(refl), scl[:, None]], axis=1).astype("uint16")
    dy, dx = res
    x0, y0 = origin
    times = np.array([T0 + 10 * k * DAY for k in range(nt)]) if times is None else np.asarray(times)
    cover = np.zeros(nt) if cover is None else np.asarray(cover, float)
    cube = xr.DataArray(
        data, dims=("time", "band", "y", "x"),
        coords={"time": times, "band": BANDS, "y": y0 - dy * (np.arange(ny) + 0.5),
                "x": x0 + dx * (np.arange(nx) + 0.5), "cloud_cover": ("time", cover)},
    ).odc.assign_crs(crs)
    if chunks is not None:
        cube = cube.chunk({"time": 1, "band": 1, "y": chunks[0], "x": chunks[1]})
    return cube


def reference_opened(scl, bad_classes, radius):
    """Slow truth of the opening: a not-clear pixel stays when some disk of ``radius`` px that
    holds it lies wholly in not-clear, nodata or off-grid pixels (same date)."""
    nt, ny, nx = scl.shape
    bad = np.isin(scl, list(bad_classes))
    if radius == 0:
        return bad
    disk = [(a, b) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)
            if a * a + b * b <= radius * radius]
    not_clear = bad | (scl == 0)
    out = np.zeros_like(bad)
    for t in range(nt):
        for i in range(ny):
            for j in range(nx):
                fits = all(not (0 <= i + a < ny and 0 <= j + b < nx) or not_clear[t, i + a, j + b]
                           for a, b in disk)
                if fits:
                    for a, b in disk:
                        if 0 <= i + a < ny and 0 <= j + b < nx and bad[t, i + a, j + b]:
                            out[t, i + a, j + b] = True
    return out


def reference_clear(scl, bad_classes, buffer_m, dy=10.0, dx=10.0, opening_px=0):
    """Slow truth: data, not saturated (when SCL 1 is masked), and no not-clear pixel centre
    within ``buffer_m`` metres (same date), after the opening of ``opening_px`` px."""
    nt, ny, nx = scl.shape
    opened = reference_opened(scl, bad_classes, opening_px)
    out = np.zeros(scl.shape, bool)
    for t in range(nt):
        bad = [(i, j) for i in range(ny) for j in range(nx) if opened[t, i, j]]
        for i in range(ny):
            for j in range(nx):
                if scl[t, i, j] == 0:
                    continue
                near = any(((i - a) * dy) ** 2 + ((j - b) * dx) ** 2 <= buffer_m ** 2
                           for a, b in bad)
                # a saturated pixel (when masked) is never clear, whatever the opening did
                out[t, i, j] = not near and not (scl[t, i, j] == 1 and 1 in bad_classes)
    return out


def random_scl(seed, shape=(3, 13, 17)):
    rng = np.random.default_rng(seed)
    classes = np.array([4, 5, 6, 0, 3, 8, 9, 10, 11, 1])
    p = np.array([0.35, 0.3, 0.15, 0.05, 0.03, 0.03, 0.03, 0.02, 0.02, 0.02])
    return rng.choice(classes, size=shape, p=p / p.sum()).astype("uint16")


# --------------------------------------------------------------------------- the buffered mask
@pytest.mark.parametrize("buffer_m", [0, 10, 15, 25, 60])
@pytest.mark.parametrize("seed", [0, 1])
def test_buffered_mask_equals_the_slow_reference_across_chunk_edges(buffer_m, seed):
    scl = random_scl(seed)
    cube = make_cube(scl)  # chunks of 4 x 5 px: a 60 m (6 px) buffer spans several chunks
    got = clear_mask(cube, buffer_m=buffer_m, opening_px=0)
    assert dask.is_dask_collection(got.data)
    expected = reference_clear(scl, {1, 3, 8, 9, 10}, buffer_m)
    np.testing.assert_array_equal(got.values, expected)
    # one chunk or none: the same pixels
    np.testing.assert_array_equal(
        clear_mask(make_cube(scl, chunks=None), buffer_m=buffer_m, opening_px=0).values, expected)
    np.testing.assert_array_equal(
        clear_mask(cube, buffer_m=buffer_m, opening_px=0, snow=True, saturated=False).values,
        reference_clear(scl, {3, 8, 9, 10, 11}, buffer_m))
    # the default: a 1-px opening first when there is a buffer, none without
    np.testing.assert_array_equal(
        clear_mask(cube, buffer_m=buffer_m).values,
        reference_clear(scl, {1, 3, 8, 9, 10}, buffer_m, opening_px=1 if buffer_m else 0))


@pytest.mark.parametrize(("opening_px", "buffer_m", "chunks"), [(1, 0, (4, 5)), (1, 25, (3, 4)),
                                                                (2, 10, (4, 5)), (2, 0, None)])
def test_opening_equals_the_slow_reference_with_nodata_and_grid_edges(opening_px, buffer_m, chunks):
    scl = random_scl(7, shape=(2, 12, 15))
    scl[:, :, :3] = 0  # a swath edge
    scl[0, 3:7, 3:7] = 9  # a cloud against the swath edge
    scl[1, :3, 5:] = 8  # a cloud off the top and right edges of the grid
    got = clear_mask(make_cube(scl, chunks=chunks), buffer_m=buffer_m, opening_px=opening_px)
    expected = reference_clear(scl, {1, 3, 8, 9, 10}, buffer_m, opening_px=opening_px)
    np.testing.assert_array_equal(got.values, expected)
    assert not got.values[1, :2, 7:].any()  # the cloud running off the grid is not eroded
    if opening_px == 1:  # ... nor the one against nodata (where a 3 x 3 cross fits)
        assert not got.values[0, 4:6, 3:5].any()


def test_buffer_works_on_rectangular_pixels_and_never_across_time():
    scl = np.full((2, 9, 11), 4, "uint16")
    scl[0, 4, 5] = 9
    cube = make_cube(scl, res=(20.0, 10.0), chunks=(3, 3))
    got = clear_mask(cube, buffer_m=25, opening_px=0).values
    np.testing.assert_array_equal(got, reference_clear(scl, {1, 3, 8, 9, 10}, 25, dy=20, dx=10))
    assert got[1].all()  # the cloud of date 0 masks nothing on date 1
    # row 4: x within 25 m (5 px); rows 3 and 5 (20 m away): x within 15 m (3 px each)
    assert (~got[0]).sum() == 5 + 2 * 3


def test_geographic_grid_converts_degrees_at_the_grid_centre():
    scl = np.full((1, 9, 9), 4, "uint16")
    scl[0, 4, 4] = 8
    scl[0, 0, 8] = 10
    res = 0.0001
    cube = make_cube(scl, res=(res, res), crs="EPSG:4326", origin=(-69.0, -24.0), chunks=(4, 4))
    lat = -24.0 - 4.5 * res
    lon = -69.0 + 4.5 * res
    geod = pyproj.Geod(ellps="WGS84")
    dx = geod.inv(lon - res / 2, lat, lon + res / 2, lat)[2]
    dy = geod.inv(lon, lat - res / 2, lon, lat + res / 2)[2]
    assert 10.0 < dx < 10.4 and 11.0 < dy < 11.1  # ~10.2 m east-west, ~11.1 m north-south at 24 S
    got = clear_mask(cube, buffer_m=25, opening_px=0).values
    np.testing.assert_array_equal(got, reference_clear(scl, {1, 3, 8, 9, 10}, 25, dy=dy, dx=dx))
    assert not got[0, 4, 6] and got[0, 2, 6]  # 20.4 m east: masked; 22.2 m north + 20.4 east: not


def test_nodata_is_not_clear_and_is_not_grown():
    scl = np.full((1, 10, 12), 5, "uint16")
    scl[0, :, :4] = 0  # a swath edge
    scl[0, 7:, 9:] = 0  # a tile corner
    got = clear_mask(make_cube(scl), buffer_m=100).values
    np.testing.assert_array_equal(got, scl != 0)


def test_buffer_zero_is_exactly_the_plain_scl_mask():
    scl = random_scl(3)
    plain = (scl != 0) & ~np.isin(scl, [1, 3, 8, 9, 10])
    got = clear_mask(make_cube(scl), buffer_m=0)
    np.testing.assert_array_equal(got.values, plain)
    # and the median of the clear observations, nothing filled, as before the buffer existed
    rng = np.random.default_rng(3)
    refl = rng.integers(1, 10_000, size=(scl.shape[0], 3, *scl.shape[1:]))
    out = median_composite(make_cube(scl, refl), buffer_m=0, fallback=False).compute()
    stack = np.where(plain[:, None], refl, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels (never clear)
        med = np.nanmedian(stack, axis=0)
    expected = np.where(plain.any(0)[None], np.round(np.nan_to_num(med)), 0).astype("uint16")
    np.testing.assert_array_equal(out.reflectance.values, expected)
    np.testing.assert_array_equal(out.clear_count.values, plain.sum(0))


def test_saturated_pixels_are_masked_by_default():
    scl = np.array([[[4, 1, 4]]], "uint16").repeat(2, axis=1)
    cube = make_cube(scl, chunks=None)
    assert clear_mask(cube, buffer_m=0).values.tolist() == [[[True, False, True]] * 2]
    assert clear_mask(cube, buffer_m=0, saturated=False).values.all()


@pytest.mark.parametrize("buffer_m", [0, 60])
def test_a_band_at_dn_65535_is_saturated_even_where_scl_is_not_1(buffer_m):
    """Sen2Cor flags saturation per pixel (SCL 1), the product per band (DN 65 535): both mask."""
    scl = np.full((1, 9, 9), 4, "uint16")
    refl = np.full((1, 3, 9, 9), 1000)
    refl[0, 1, 4, 4] = 65535  # B03 saturated, SCL says vegetation
    cube = make_cube(scl, refl, chunks=None)
    mask = clear_mask(cube, buffer_m=buffer_m).values[0]
    assert not mask[4, 4] and mask.sum() == 80  # a lone pixel: opened away from the buffer
    scl[0, 4, 4] = 1  # the same pixel flagged by SCL instead gives the same mask
    np.testing.assert_array_equal(clear_mask(make_cube(scl, chunks=None), buffer_m=buffer_m).values[0],
                                  mask)
    assert clear_mask(cube, buffer_m=buffer_m, saturated=False).values.all()


def test_opening_removes_isolated_specks_before_the_buffer():
    scl = np.full((1, 14, 14), 4, "uint16")
    scl[0, 2, 2] = 9  # a one-pixel speck
    scl[0, 6:11, 6:11] = 9  # a 5 x 5 cloud
    cube = make_cube(scl)
    got = clear_mask(cube, buffer_m=20, opening_px=1).values[0]
    # By hand: the opening (a 1-px disk, the 3 x 3 cross) erases the speck and the cloud's four
    # corners (the cross fits the 5 x 5 square everywhere but there); the buffer grows the rest.
    opened = np.full_like(scl, 4)
    opened[0, 6:11, 6:11] = 9
    opened[0, [6, 6, 10, 10], [6, 10, 6, 10]] = 4
    np.testing.assert_array_equal(got, reference_clear(opened, {9}, 20)[0])
    assert got[5, 5] and not reference_clear(scl, {9}, 20)[0, 5, 5]
    assert not clear_mask(cube, buffer_m=20, opening_px=0).values[0, 2, 4]  # no opening: grown
    # the default opening with a buffer is 1 px; without a buffer there is none
    np.testing.assert_array_equal(clear_mask(cube, buffer_m=20).values[0], got)
    assert not clear_mask(cube, buffer_m=0).values[0, 2, 2]


def test_building_masks_and_composites_is_lazy_and_ranking_computes_once():
    cube = make_cube(random_scl(4))
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        clear_mask(cube)
        median_composite(cube)
        yearly_composites(cube)
        assert counter.calls == 0
        least_cloudy_composite(cube)
        assert counter.calls == 1  # the per-scene clear fractions, one compute


def test_mask_options_are_checked():
    cube = make_cube(random_scl(5))
    with pytest.raises(InvalidQueryError, match=r"buffer_m=-1 is not a finite number >= 0.*buffer_m=0"):
        clear_mask(cube, buffer_m=-1)
    with pytest.raises(InvalidQueryError, match=r"buffer_m='60' is not a finite number"):
        median_composite(cube, buffer_m="60")
    with pytest.raises(InvalidQueryError, match=r"buffer_m=nan"):
        clear_mask(cube, buffer_m=float("nan"))
    with pytest.raises(InvalidQueryError, match=r"opening_px=1.5 is not an integer >= 0"):
        clear_mask(cube, opening_px=1.5)
    no_crs = cube.drop_vars("spatial_ref")
    with pytest.raises(InvalidGridError, match=r"no CRS.*assign_crs.*or pass buffer_m=0"):
        clear_mask(no_crs, buffer_m=30)
    assert clear_mask(no_crs, buffer_m=0).shape == (3, 13, 17)
    with pytest.raises(InvalidQueryError, match="no SCL band"):
        clear_mask(cube.sel(band=["B04"]))


# --------------------------------------------------------------------------- least-cloudy ranking
def test_clear_fraction_counts_clear_pixels_over_the_whole_grid():
    scl = np.full((3, 6, 8), 4, "uint16")
    scl[0, :, :4] = 0  # half the grid without data
    scl[1, :3] = 9  # half the grid cloudy
    scl[2, 0, 0] = 3
    got = clear_fraction(make_cube(scl), buffer_m=0).values
    np.testing.assert_allclose(got, [24 / 48, 24 / 48, 47 / 48])


def test_least_cloudy_ranks_by_clear_fraction_over_the_aoi_not_scene_cloud_cover():
    scl = np.full((2, 8, 10), 4, "uint16")
    scl[0, :4] = 9  # the early scene: 5 % cloud over its whole tile, but half of our AOI
    refl = np.empty((2, 3, 8, 10), int)
    refl[0], refl[1] = 1000, 2000
    # the late scene: 90 % cloudy elsewhere in its tile, clear over the AOI
    cube = make_cube(scl, refl, cover=[5.0, 90.0])
    out = least_cloudy_composite(cube, buffer_m=0).compute()
    assert (out.reflectance.values == 2000).all()
    assert (out.source_time.values == cube.time.values[1]).all()
    assert out.scene_rank.values.tolist() == [1, 0]
    np.testing.assert_allclose(out.scene_clear_fraction.values, [0.5, 1.0])
    assert out.attrs["ranking"] == "aoi_clear_fraction"
    # with the buffer the ranking uses the buffered mask (fewer clear pixels in the early scene)
    buffered = least_cloudy_composite(cube, buffer_m=20).compute()
    np.testing.assert_allclose(buffered.scene_clear_fraction.values, [0.25, 1.0])
    # max_cloud still filters on the scene-level value first
    only_early = least_cloudy_composite(cube, buffer_m=0, max_cloud=50).compute()
    assert only_early.scene_rank.values.tolist() == [0] and only_early.attrs["n_scenes"] == 1
    assert (only_early.reflectance.values[:, 4:] == 1000).all()


def test_least_cloudy_ties_go_to_lower_cloud_cover_then_earlier_scenes():
    scl = np.full((3, 4, 5), 4, "uint16")
    refl = np.stack([np.full((3, 4, 5), v) for v in (100, 200, 300)])
    out = least_cloudy_composite(make_cube(scl, refl, cover=[20.0, 10.0, 10.0]), buffer_m=0)
    assert out.scene_rank.values.tolist() == [2, 0, 1]
    assert (out.reflectance.values == 200).all()
    out = least_cloudy_composite(make_cube(scl, refl, cover=[np.nan, np.nan, np.nan]), buffer_m=0)
    assert out.scene_rank.values.tolist() == [0, 1, 2]
    assert (out.reflectance.values == 100).all()


def test_yearly_least_cloudy_keeps_each_years_ranking():
    scl = np.full((4, 4, 5), 4, "uint16")
    scl[1, 0] = 9
    times = [np.datetime64(d, "ns") for d in ("2021-03-01", "2021-04-01", "2022-03-01", "2022-04-01")]
    out = yearly_composites(make_cube(scl, times=times), "least_cloudy", buffer_m=0).compute()
    assert out.scene_rank.sel(year=2021).values.tolist() == [0, 1, -1, -1]
    assert out.scene_rank.sel(year=2022).values.tolist() == [-1, -1, 0, 1]
    np.testing.assert_allclose(out.scene_clear_fraction.sel(year=2021).values[:2], [1.0, 0.75])


# --------------------------------------------------------------------------- never-clear fallback
def _mine_cube():
    """An 8 x 8 grid over 4 dates: a 3 x 3 bright "mine" flagged cloud/snow on every date.

    Background: clear, B04 = B03 = B02 = 1000 + 100 k on date k. The mine, flagged 9, 9, 11, 8:
    date 0 (1000, 5000, 5000) (mean 3667; the darkest red but not the darkest overall),
    date 1 (8000, 8000, 8000) (a real cloud over it), date 2 (3200, 3100, 3300),
    date 3 (2500, 2600, 2700) (mean 2600: the darkest; the ground). A shadow pixel (SCL 3 on every
    date) at (7, 7), a pixel without data on any date at (0, 7). Mask snow (``snow=True``) so that
    every date of the mine is flagged.
    """
    nt, n = 4, 8
    scl = np.full((nt, n, n), 4, "uint16")
    refl = np.zeros((nt, 3, n, n), int)
    for k in range(nt):
        refl[k] = 1000 + 100 * k
    mine = (slice(2, 5), slice(2, 5))
    for k, (cls, vals) in enumerate([(9, (1000, 5000, 5000)), (9, (8000,) * 3),
                                     (11, (3200, 3100, 3300)), (8, (2500, 2600, 2700))]):
        scl[k][mine] = cls
        for b in range(3):
            refl[k, b][mine] = vals[b]
    scl[:, 7, 7] = 3
    scl[:, 0, 7] = 0
    refl[:, :, 0, 7] = 0
    return make_cube(scl, refl, chunks=(3, 3)), mine


@pytest.mark.parametrize("method", ["median", "least_cloudy"])
def test_never_clear_pixels_are_reported_and_filled_with_the_darkest_flagged_observation(method):
    cube, mine = _mine_cube()
    run = median_composite if method == "median" else least_cloudy_composite
    out = run(cube, buffer_m=10, opening_px=0, snow=True).compute()
    refl = out.reflectance.values
    # the mine: never clear, filled from date 3 with all three bands of that one observation
    block = np.zeros((8, 8), bool)
    block[mine] = True
    ring = reference_clear(np.where(block, 9, 4)[None], {9}, 10)[0] == 0  # block + its 10 m ring
    ring &= ~block
    shadow = np.zeros((8, 8), bool)
    shadow[7, 7] = True
    shadow_ring = np.zeros((8, 8), bool)
    shadow_ring[[6, 7], [7, 6]] = True
    never = block | ring | shadow | shadow_ring
    np.testing.assert_array_equal(out.never_clear.values, never)
    np.testing.assert_array_equal(out.fallback.values, block)
    assert int(out.n_never_clear) == never.sum() and int(out.n_fallback) == 9
    for b, v in enumerate((2500, 2600, 2700)):
        assert (refl[b][block] == v).all()
    assert refl.max() < 8000  # the real cloud never enters
    # the ring is SCL-clear but inside the buffer on every date: its own clear observations fill it
    ring_value = 1150 if method == "median" else 1000  # median of 1000..1300 / first-ranked scene
    assert (refl[:, ring | shadow_ring] == ring_value).all()
    # a shadow is never a candidate; no data stays nodata and is not "never clear"
    assert (refl[:, 7, 7] == 0).all() and (refl[:, 0, 7] == 0).all()
    assert not out.never_clear.values[0, 7]
    # everything else is the ordinary composite
    rest = ~never
    rest[0, 7] = False
    assert (refl[:, rest] == (1150 if method == "median" else 1000)).all()
    assert (out.clear_count.values[never] == 0).all()
    if method == "least_cloudy":
        assert (out.source_time.values[block] == cube.time.values[3]).all()
        assert np.isnat(out.source_time.values[7, 7])


@pytest.mark.parametrize("method", ["median", "least_cloudy"])
def test_fallback_false_leaves_holes(method):
    cube, mine = _mine_cube()
    run = median_composite if method == "median" else least_cloudy_composite
    out = run(cube, buffer_m=10, opening_px=0, snow=True, fallback=False).compute()
    never = out.never_clear.values
    assert never[mine].all() and never.sum() == 9 + 12 + 3
    assert (out.reflectance.values[:, never] == 0).all()
    assert not out.fallback.values.any() and int(out.n_fallback) == 0
    assert out.attrs["fallback"] == 0 and out.attrs["cloud_buffer_m"] == 10.0
    assert out.attrs["opening_px"] == 0


def test_fallback_candidates_are_cloud_cirrus_and_snow_only():
    assert set(FALLBACK_CLASSES) == {8, 9, 10, 11}
    # a pixel flagged saturated on one date and shadow on the other has no candidate
    scl = np.array([[[1, 4]], [[3, 4]]], "uint16")
    out = median_composite(make_cube(scl, chunks=None), buffer_m=0).compute()
    assert out.never_clear.values.tolist() == [[True, False]]
    assert out.reflectance.values[:, 0, 0].tolist() == [0, 0, 0]


# --------------------------------------------------------------------------- recipes
def _recipe(**clouds) -> dict:
    return {"name": "tiny", "description": "a tiny recipe", "catalog": "https://example.com/stac",
            "area": {"bbox": [0, 0, 1, 1]},
            "period": {"datetime": "2021"}, "bands": ["B04", "SCL"],
            "grid": {"crs": "EPSG:32719", "resolution": 10},
            "composite": {"method": "median"}, "clouds": clouds, "output": "tiny.zarr"}


def test_recipe_buffer_default_round_trip_and_shipped_values():
    assert DEFAULT_BUFFER_M == DEFAULT_CLOUD_BUFFER_M
    assert Recipe.from_dict(_recipe()).clouds.buffer_m == DEFAULT_CLOUD_BUFFER_M
    recipe = Recipe.from_dict(_recipe(buffer_m=80))
    assert recipe.clouds.buffer_m == 80 and recipe.to_dict()["clouds"]["buffer_m"] == 80
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.from_dict(_recipe(buffer_m=0)).clouds.buffer_m == 0
    for name in ("demo", "chile-sites", "chile-mosaic", "ghana-asm"):
        assert load_recipe(name).clouds.buffer_m == DEFAULT_CLOUD_BUFFER_M


@pytest.mark.parametrize(("value", "match"), [
    (-5, r"clouds\.buffer_m=-5 is out of range\. Allowed: a number >= 0 m\. Fix: set clouds\.buffer_m"),
    ("60 m", r"clouds\.buffer_m='60 m' is a str, not a finite number.*Fix: write e\.g\. buffer_m: 60"),
    (True, r"clouds\.buffer_m=True is a bool"),
])
def test_recipe_buffer_is_validated(value, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.from_dict(_recipe(buffer_m=value))


@pytest.mark.parametrize("buffer_m", [0, 20])
def test_pipeline_carries_the_recipe_buffer_into_the_composite(buffer_m):
    from lames_cube.recipes.pipeline import store_dataset

    cube, _ = _mine_cube()
    recipe = Recipe.from_dict(_recipe(buffer_m=buffer_m))
    got = store_dataset(recipe, cube)
    direct = median_composite(cube, buffer_m=buffer_m)
    np.testing.assert_array_equal(got.reflectance.sel(band=["B04", "B03", "B02"]).values,
                                  direct.reflectance.values)
    np.testing.assert_array_equal(got.clear_count.values, direct.clear_count.values)
    assert got.attrs["cloud_buffer_m"] == buffer_m


def test_a_rarely_clear_pixel_is_not_left_to_one_cloud_rim():
    """Seen clear once, by a bright unflagged cloud rim (SCL 7), and flagged cloud on the six
    dates it was really clear (bright tailings): the ground comes back, not the rim."""
    scl = np.full((7, 4, 5), 8, "uint16")
    scl[0] = 7  # the rim: "unclassified", not masked
    refl = np.full((7, 3, 4, 5), 1500)
    refl[0] = 2400  # a rim is brighter than the ground
    refl[1:, :, :, :] += np.arange(6)[:, None, None, None] * 3  # the ground, with noise
    out = median_composite(make_cube(scl, refl), buffer_m=0).compute()
    assert (out.reflectance.values == 1500).all()  # the darkest look of the ground
    assert out.fallback.values.all() and not out.never_clear.values.any()
    # With three looks SCL calls clear (two of them buffered away), their median fills.
    scl[1:3] = 5
    scl[3:] = 9
    refl[3:] = 5000
    cube = make_cube(scl, refl)
    cube[:, 3, 0, 0] = 9  # a flagged cloud at the corner buffers its neighbours on every date
    out = median_composite(cube, buffer_m=30).compute()
    assert int(out.reflectance.values[0, 1, 1]) == 1503  # median of 2400, 1500, 1503


def test_two_clear_looks_keep_their_median():
    scl = np.full((2, 4, 5), 4, "uint16")
    refl = np.full((2, 3, 4, 5), 1000)
    refl[1] = 1100
    out = median_composite(make_cube(scl, refl), buffer_m=0).compute()
    assert (out.reflectance.values == 1050).all() and not out.fallback.values.any()


def test_a_saturated_look_never_fills_a_flagged_pixel():
    """The darkest-look fallback takes looks SCL flags as cloud, but never a saturated one
    (DN 65 535 under SCL 9 is a saturated sensor, not the ground)."""
    scl = np.array([[[9]], [[9]]], "uint16")
    refl = np.full((2, 3, 1, 1), 4000)
    refl[0, 0] = 65535  # B04 saturated on the first, darker-looking date
    refl[0, 1:] = 100
    out = median_composite(make_cube(scl, refl, chunks=None), buffer_m=0)
    assert out.reflectance.values[:, 0, 0].tolist() == [4000, 4000, 4000]
    assert bool(out.fallback.squeeze())
