"""build_cube: lazy, harmonised, fused per solar day, equal to the source COGs; composites."""

from __future__ import annotations

import dataclasses
import itertools
import json

import dask
import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

from lames_cube.composite import (
    clear_fraction,
    clear_mask,
    least_cloudy_composite,
    median_composite,
    to_rgb8,
    yearly_composites,
)
from lames_cube.cube import build_cube
from lames_cube.errors import (
    EmptyCubeError,
    InvalidGridError,
    InvalidItemError,
    InvalidQueryError,
    MixedCollectionsError,
    UnknownBandError,
)
from lames_cube.items import normalize_item
from lames_cube.search import search
from lames_cube.synthetic import World, write_world
from lames_cube.testing import SMALL_SPEC, FixedBaselineWorld, scene_coverage, small_world
from lames_cube.testing.schedulers import CountingScheduler

ONE_YEAR = dataclasses.replace(SMALL_SPEC, years=(2021,), scenes_per_year=6)


@pytest.fixture(scope="module")
def year_world(tmp_path_factory, lames_dir):
    root = small_world(tmp_path_factory.mktemp("cube") / "w6", data_dir=lames_dir, workers=2,
                       years=(2021,), scenes_per_year=6)
    return root, World(ONE_YEAR, data_dir=lames_dir)


def test_building_computes_nothing(world):
    items = search(world)
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        cube = build_cube(items, chunks=512)
        assert cube.dims == ("time", "band", "y", "x")
        assert cube.dtype == np.uint16
    assert counter.calls == 0
    assert cube.chunks[2][0] == 512 and cube.chunks[3][0] == 512


@pytest.mark.parametrize("fixture, expected", [("world", {0}), ("world_pc", {0, 1000})])
def test_cube_equals_the_cogs_after_harmonisation(request, lames_dir, fixture, expected):
    """Sampled pixels of every item equal rasterio reads of its COGs minus the item's offset
    (Earth Search l2a: always 0, its COGs are harmonised; Planetary Computer: 1000 from 04.00)."""
    world = request.getfixturevalue(fixture)
    w = World(SMALL_SPEC, data_dir=lames_dir)
    items = search(world)
    tile = w.tiles[0]
    gbox = tile.geobox(10)
    cube = build_cube(items, geobox=gbox, bands=["B04", "B08", "SCL"], chunks=256).compute()
    rng = np.random.default_rng(0)
    offsets = set()
    by_day: dict = {}
    for item in items:
        if item.properties["s2:mgrs_tile"] != tile.tile_id:
            continue
        day = np.datetime64(item.properties["lames:solar_day"], "D")
        t = int(np.flatnonzero(cube.solar_day.values == day)[0])
        offset = item.properties["lames:dn_offset"]
        offsets.add(offset)
        by_day[day] = offset
        rows, cols = rng.integers(0, gbox.shape[0], 400), rng.integers(0, gbox.shape[1], 400)
        for band in ("B04", "B08"):
            with rasterio.open(item.assets[band].href) as src:
                dn = src.read(1)[rows, cols].astype(int)
            got = cube.sel(band=band).values[t][rows, cols].astype(int)
            valid = dn > 0
            want = np.where(dn == 65535, 65535, np.maximum(dn - offset, 1))  # saturated kept
            np.testing.assert_array_equal(got[valid], want[valid])
        with rasterio.open(item.assets["SCL"].href) as src:
            scl = src.read(1)[rows // 2, cols // 2]
        got = cube.sel(band="SCL").values[t][rows, cols]
        np.testing.assert_array_equal(got[scl > 0], scl[scl > 0])
    assert offsets == expected
    if len(offsets) == 2:  # a reprocessed scene (1000) before a scene of offset 0: time order holds
        seq = [by_day[d] for d in sorted(by_day)]
        assert any(a > b for a, b in itertools.pairwise(seq)), seq


def test_chunked_and_unchunked_loads_are_identical(world):
    items = search(world, sites=["2203"])
    small = build_cube(items, chunks=256, bands=["B03", "SCL"])
    whole = build_cube(items, chunks=4096, bands=["B03", "SCL"])
    assert whole.chunks[2] == (whole.sizes["y"],)
    np.testing.assert_array_equal(small.values, whole.values)


def test_one_time_step_per_solar_day_without_double_counting(world):
    items = search(world)
    cube = build_cube(items, bands=["B04", "SCL"], chunks=512)
    days = sorted({i.properties["lames:solar_day"] for i in items})
    assert [str(d)[:10] for d in cube.solar_day.values] == days
    assert int(cube.n_items.sum()) == len(items)


def test_odc_and_stackstac_give_the_same_pixels(world, lames_dir):
    w = World(SMALL_SPEC, data_dir=lames_dir)
    gbox = w.tiles[2].geobox(10)
    items = search(world, datetime="2022")
    odc = build_cube(items, geobox=gbox, bands=["B02", "B11", "SCL"], chunks=512)
    stk = build_cube(items, geobox=gbox, bands=["B02", "B11", "SCL"], chunks=512, engine="stackstac")
    np.testing.assert_array_equal(odc.values, stk.values)
    np.testing.assert_array_equal(odc.time.values, stk.time.values)


def test_real_29rkh_tile_loads_with_reflectance_dn_times_1e4(stac_dir):
    folder = stac_dir / "pixels" / "rio-tiler-pds_S2A_29RKH_20200219_0_L2A_decimated10x"
    path = folder / "S2A_29RKH_20200219_0_L2A.LOCAL_DERIVED.json"
    item = normalize_item(json.loads(path.read_text()), href=str(path))
    assert item.properties["s2:processing_baseline"] == "02.14"
    assert item.properties["lames:dn_offset"] == 0
    with rasterio.open(folder / "B04.tif") as src:
        dn = src.read(1)
        gbox = GeoBox(dn.shape, src.transform, src.crs.to_wkt())
    padded = gbox.pad(5)  # 5 px beyond the tile on every side: nodata there
    cube = build_cube([item], geobox=padded, bands=["B04", "B02"], chunks=1024)
    got = cube.sel(band="B04").isel(time=0).values
    np.testing.assert_array_equal(got[5:-5, 5:-5], dn)
    assert (got[:5] == 0).all() and (got[:, -5:] == 0).all()
    assert cube.attrs["scale"] == 1e-4 and cube.attrs["nodata"] == 0
    reflectance = got[5:-5, 5:-5] * cube.attrs["scale"]
    np.testing.assert_allclose(reflectance, dn * 1e-4)


def _twin(path, base, baseline, style):
    spec = dataclasses.replace(ONE_YEAR, style=style, scenes_per_year=2)
    world = FixedBaselineWorld(spec, baseline, data_dir=base)
    return write_world(path, world=world, workers=2, progress=False)


def test_baseline_04_twins_harmonise_to_the_same_values(tmp_path, lames_dir):
    old = _twin(tmp_path / "old", lames_dir, "02.14", "earth-search")
    new_es = _twin(tmp_path / "new_es", lames_dir, "05.09", "earth-search")
    new_pc = _twin(tmp_path / "new_pc", lames_dir, "04.00", "planetary-computer")
    gbox = World(ONE_YEAR, data_dir=lames_dir).tiles[0].geobox(10)
    cubes = [build_cube(search(p), geobox=gbox, chunks=512).compute() for p in (old, new_es, new_pc)]
    with rasterio.open(next(new_pc.glob("stac/*/*/B04.tif"))) as src:  # the offset is in PC's DNs
        assert src.read(1).max() > 1000
    assert (cubes[0].values > 0).any()
    np.testing.assert_array_equal(cubes[0].values, cubes[1].values)
    np.testing.assert_array_equal(cubes[0].values, cubes[2].values)
    assert ((cubes[0].values == 0) == (cubes[2].values == 0)).all()


def test_clear_observation_count_is_right(year_world):
    """The composite's count equals clear observations computed procedurally from the world."""
    root, w = year_world
    g20 = w.tiles[1].geobox(20)
    cube = build_cube(search(root), geobox=g20, bands=["B11", "SCL"], chunks=256)
    # buffer_m=0: the count of the SCL mask itself (the buffer is tested in test_composite.py)
    count = median_composite(cube, buffer_m=0).clear_count.values
    expected = np.zeros(g20.shape, int)
    for date in w.dates:
        scl = w.read(g20, date)["SCL"]
        seen = np.zeros(g20.shape, bool)
        for scene in (s for s in w.scenes if s.date == date):
            seen |= scene_coverage(scene, g20)
        expected += seen & ~np.isin(scl, (1, 3, 8, 9, 10))  # saturated masked by default
    assert expected.max() >= 3 and (expected < len(w.dates)).any()
    np.testing.assert_array_equal(count, expected)
    frac = clear_fraction(cube, buffer_m=0).values
    np.testing.assert_allclose(frac.sum() * count.size, expected.sum())


def test_least_cloudy_mosaic_takes_the_clearest_scene_first(year_world):
    root, w = year_world
    gbox = w.tiles[1].geobox(20)
    cube = build_cube(search(root), geobox=gbox, bands=["B04", "SCL"], chunks=256)
    out = least_cloudy_composite(cube, max_cloud=100).compute()
    # ranked by the clear fraction over the grid (the 60 m buffer included), not cloud_cover
    frac = clear_fraction(cube).values
    np.testing.assert_allclose(out.scene_clear_fraction.values, frac)
    clearest = int(np.argmax(frac))
    assert out.scene_rank.values[clearest] == 0
    first = cube.isel(time=clearest).compute()
    ok = clear_mask(cube).isel(time=clearest).compute()
    assert ok.values.mean() > 0.5
    np.testing.assert_array_equal(out.reflectance.sel(band="B04").values[ok.values],
                                  first.sel(band="B04").values[ok.values])
    assert (out.source_time.values[ok.values] == cube.time.values[clearest]).all()
    with pytest.raises(InvalidQueryError, match="raise max_cloud"):
        least_cloudy_composite(cube, max_cloud=-1)


def test_yearly_composites_and_rgb(world, lames_dir):
    w = World(SMALL_SPEC, data_dir=lames_dir)
    cube = build_cube(search(world), geobox=w.tiles[0].geobox(20), chunks=256)
    yearly = yearly_composites(cube).compute()
    assert list(yearly.year.values) == list(SMALL_SPEC.years)
    rgb = to_rgb8(yearly.reflectance.sel(year=2022)).values
    refl = yearly.reflectance.sel(year=2022, band="B04").values.astype(float)
    assert rgb.dtype == np.uint8
    expected = np.where(refl == 0, 0, np.clip(np.round(refl * 255 / 3000), 1, 255))
    np.testing.assert_array_equal(rgb[0], expected)


# ----------------------------------------------------------------------------- bad input
def test_band_the_items_lack(world):
    with pytest.raises(UnknownBandError, match=r"Band 'B05' is missing from"):
        build_cube(search(world), bands=["B04", "B05"])
    with pytest.raises(UnknownBandError, match="Unknown Sentinel-2 band"):
        build_cube(search(world), bands=["ndvi"])


def test_zero_size_grid(world):
    items = search(world)
    gbox = GeoBox((0, 10), items[0].assets["B04"].extra_fields["proj:transform"][:6] and
                  __import__("affine").Affine(10, 0, 456000, 0, -10, 7068000), "EPSG:32719")
    with pytest.raises(InvalidGridError, match="zero size"):
        build_cube(items, geobox=gbox)
    with pytest.raises(InvalidGridError, match="resolution=-10"):
        build_cube(items, resolution=-10)
    with pytest.raises(InvalidGridError, match="multiple of the 256-px patch"):
        build_cube(items, chunks=300)


def test_area_outside_every_item(world):
    with pytest.raises(EmptyCubeError, match="outside every item"):
        build_cube(search(world), bbox=(10, 10, 10.1, 10.1))


def test_mixed_collections_without_band_mapping(stac_dir):
    path = stac_dir / "earth_search_v1/itemcollections/es_v1_search_s2l2a+landsat_point_2023-10-08.json"
    features = json.loads(path.read_text())["features"]
    assert len({f["collection"] for f in features}) > 1
    with pytest.raises(MixedCollectionsError, match=r"band_map=\{collection"):
        build_cube(features)


def test_a_built_cube_round_trips_through_zarr(world, tmp_path, lames_dir):
    from lames_cube.io import open_cube, write_cube

    w = World(SMALL_SPEC, data_dir=lames_dir)
    cube = build_cube(search(world), geobox=w.tiles[0].geobox(10), chunks=256)
    store = write_cube(cube, tmp_path / "c.zarr")
    back = open_cube(store)
    np.testing.assert_array_equal(back.values, cube.values)
    assert back.odc.geobox == cube.odc.geobox
    assert back.rio.crs.to_epsg() == 32719
    for coord in ("time", "solar_day", "cloud_cover", "n_items", "band"):
        np.testing.assert_array_equal(back[coord].values, cube[coord].values)
    assert back.attrs == cube.attrs


def _toy_cube(covers, years):
    """A tiny hand-made cube: B04 = 100 * (scene index + 1), SCL clear (4) everywhere.

    On a 10 m grid with a CRS: the composites' cloud buffer is in metres.
    """
    import odc.geo.xr  # noqa: F401
    import xarray as xr

    n = len(covers)
    data = np.zeros((n, 2, 2, 2), "uint16")
    for k in range(n):
        data[k, 0] = 100 * (k + 1)
        data[k, 1] = 4
    times = np.array([np.datetime64(f"{y}-06-0{k + 1}T14:00", "ns") for k, y in enumerate(years)])
    return xr.DataArray(
        data, dims=("time", "band", "y", "x"),
        coords={"time": times, "band": ["B04", "SCL"],
                "solar_day": ("time", times.astype("datetime64[D]").astype("datetime64[ns]")),
                "cloud_cover": ("time", np.array(covers, float)),
                "y": [7_000_015.0, 7_000_005.0], "x": [400_005.0, 400_015.0]},
    ).odc.assign_crs("EPSG:32719")


def test_yearly_least_cloudy_skips_years_without_a_scene_under_the_limit():
    from lames_cube.errors import InvalidQueryError

    cube = _toy_cube([50.0, 5.0, 8.0], [2021, 2022, 2022])
    out = yearly_composites(cube, "least_cloudy", max_cloud=10)
    assert list(out.year.values) == [2022] and out.attrs["skipped_years"] == [2021]
    assert (out.reflectance.sel(year=2022, band="B04").values == 200).all()  # 5 % beats 8 %
    with pytest.raises(InvalidQueryError, match="No year has a scene"):
        yearly_composites(cube, "least_cloudy", max_cloud=1)


def test_unknown_cloud_cover_ranks_last_and_scl_only_cubes_are_refused():
    from lames_cube.errors import InvalidQueryError

    cube = _toy_cube([np.nan, 30.0], [2022, 2022])
    out = least_cloudy_composite(cube)
    assert (out.reflectance.sel(band="B04").values == 200).all()
    assert least_cloudy_composite(cube, max_cloud=40).attrs["n_scenes"] == 1
    with pytest.raises(InvalidQueryError, match="no reflectance band besides SCL"):
        median_composite(cube.sel(band=["SCL"]))


@pytest.mark.parametrize("engine", ["odc", "stackstac"])
def test_where_tiles_overlap_the_fusion_rule_decides(world, engine):
    """Tiles of one day overlap and, processed apart, differ slightly there: each pixel comes
    from the first tile in build_cube's order (item time, then id)."""
    from lames_cube.synthetic.lazy import fusion_key
    from lames_cube.synthetic.realism import open_world

    w = open_world(world)
    pairs = [(a, b) for a in w.scenes for b in w.scenes
             if a.date == b.date and fusion_key(w, a) < fusion_key(w, b)
             and a.tile.epsg == b.tile.epsg
             and a.tile.geobox(10).extent.intersects(b.tile.geobox(10).extent)]
    assert pairs, "no two tiles of one day overlap"
    first, second = pairs[0]
    overlap = first.tile.geobox(10).extent.intersection(second.tile.geobox(10).extent)
    gbox = GeoBox.from_geopolygon(overlap.buffer(200), resolution=10)
    bands = ["B02", "B04", "B08"]
    cube = build_cube(search(world), geobox=gbox, bands=bands, chunks=512, engine=engine)
    day = np.datetime64(first.date, "D")
    got = cube.isel(time=int(np.flatnonzero(
        cube.solar_day.values.astype("datetime64[D]") == day)[0])).values
    scenes = sorted((s for s in w.scenes if s.date == first.date), key=lambda s: fusion_key(w, s))
    expected = np.zeros((len(bands), *gbox.shape), np.uint16)
    todo = np.ones(gbox.shape, bool)
    contested = np.zeros(gbox.shape, bool)  # won by a tile over another that also has data
    for scene, seen in zip(scenes, w.read_scenes(gbox, first.date, scenes), strict=True):
        cover = scene_coverage(scene, gbox)
        contested |= cover & ~todo
        for i, band in enumerate(bands):
            expected[i][cover & todo] = seen[band][cover & todo]
        todo &= ~cover
    np.testing.assert_array_equal(got, expected)
    assert contested.sum() > 1000
    # The losers' pixels differ there: had the rule been reversed, the cube would differ.
    last = w.read_scenes(gbox, first.date, [second])[0]
    both = contested & (expected[0] != 0)
    assert (got[0][both] != last["B02"][both]).mean() > 0.5


def test_no_item_is_dropped_silently_for_its_footprint(world):
    """A self-intersecting footprint is repaired and its item kept; one that cannot be
    projected raises, naming the item (it was left out without a word)."""
    import shapely.geometry

    items = search(world)
    item = items[0]
    gbox = GeoBox.from_geopolygon(
        Geometry(shapely.geometry.shape(item.geometry), "EPSG:4326").to_crs(
            item.properties["proj:code"]), resolution=10).pad(-40)
    w, s, e, n = shapely.geometry.shape(item.geometry).bounds
    bowtie = item.clone()
    bowtie.geometry = shapely.geometry.mapping(
        shapely.Polygon([(w, s), (e, n), (e, s), (w, n)]))  # crossing edges: not valid
    assert not shapely.geometry.shape(bowtie.geometry).is_valid
    kept = build_cube([bowtie], geobox=gbox, bands=["B04"], chunks=256)
    assert int(kept.n_items.sum()) == 1
    broken = item.clone()
    broken.geometry = {"type": "Polygon",
                       "coordinates": [[[w, s], [e, s], [e, float("nan")], [w, n], [w, s]]]}
    with pytest.raises(InvalidItemError, match=item.id):
        build_cube([item, broken], geobox=gbox, bands=["B04"], chunks=256)


def test_an_unknown_engine_is_a_query_error_not_a_grid_error(world):
    from lames_cube.errors import InvalidQueryError

    with pytest.raises(InvalidQueryError, match=r"engine='gdal'.*engine='odc'") as info:
        build_cube(search(world), engine="gdal")
    assert not isinstance(info.value, InvalidGridError)


def test_graph_is_within_twice_the_bare_odc_load(world_pc, capsys):
    """Items of both DN offsets in one load: harmonised per item by the reader, the bands
    gathered in one task per chunk; the bare odc.stac.load of the same items is the yardstick."""
    import odc.stac

    from lames_cube.cube import solar_day_key

    items = search(world_pc, sites=["2203"])
    assert {i.properties["lames:dn_offset"] for i in items} == {0, 1000}
    bands = ["B02", "B04", "B08", "B11", "SCL"]
    cube = build_cube(items, bands=bands, chunks=256)
    bare = odc.stac.load(items, bands=bands, geobox=cube.odc.geobox, chunks={"x": 256, "y": 256},
                         groupby=solar_day_key)
    ratio = len(cube.__dask_graph__()) / len(bare.__dask_graph__())
    with capsys.disabled():
        print(f"\nbuild_cube graph: {len(cube.__dask_graph__())} tasks, bare odc.stac.load "
              f"{len(bare.__dask_graph__())}: ratio {ratio:.2f}")
    assert ratio <= 2.0
    # Same pixels as the bare load minus each item's offset, where a day has one item.
    got, raw = cube.isel(time=slice(0, 6)).compute(), bare.isel(time=slice(0, 6)).compute()
    offsets = {}
    for i in items:
        offsets.setdefault(i.properties["lames:solar_day"], set()).add(i.properties["lames:dn_offset"])
    compared = 0
    for t, day in enumerate(got.solar_day.values.astype("datetime64[D]").astype(str)):
        (offset,) = offsets[day] if len(offsets[day]) == 1 else (None,)
        if offset is None:
            continue
        compared += 1
        dn = raw["B04"].values[t].astype(int)
        want = np.where((dn == 0) | (dn == 65535), dn, np.maximum(dn - offset, 1))
        np.testing.assert_array_equal(got.sel(band="B04").values[t], want)
        np.testing.assert_array_equal(got.sel(band="SCL").values[t], raw["SCL"].values[t])
    assert compared > 0, "precondition: some of the first 6 days has one offset to compare"


def test_a_signing_hook_reads_items_whose_hrefs_need_signing(world):
    """Planetary Computer hrefs need a SAS token: sign= rewrites each item before reading."""
    from lames_cube.errors import InvalidQueryError

    items = search(world, sites=["2203"], datetime="2021-01/2021-03")
    plain = build_cube(items, bands=["B04", "SCL"], chunks=512)
    unsigned = []
    for item in items:
        item = item.clone()
        for asset in item.assets.values():
            asset.href = "/nonexistent-until-signed" + asset.href
        unsigned.append(item)
    calls = []

    def sign(item):
        calls.append(item.id)
        item = item.clone()
        for asset in item.assets.values():
            asset.href = asset.href.removeprefix("/nonexistent-until-signed")
        return item

    signed = build_cube(unsigned, bands=["B04", "SCL"], chunks=512, sign=sign)
    assert sorted(calls) == sorted(i.id for i in items)
    np.testing.assert_array_equal(signed.values, plain.values)
    from lames_cube.errors import AssetReadError

    with pytest.raises(AssetReadError, match=r"Could not read asset '(B04|SCL)' of item .*"
                                             r"nonexistent-until-signed"):
        build_cube(unsigned, bands=["B04", "SCL"], chunks=512).compute()
    with pytest.raises(InvalidQueryError, match="sign='nope' is not a known signer"):
        build_cube(items, sign="nope")
    with pytest.raises(InvalidQueryError, match="sign returned dict"):
        build_cube(items, sign=lambda i: i.to_dict())


def test_reflectance_resamples_as_asked_and_scl_always_nearest(world):
    """On a grid half a pixel off the assets', bilinear reflectance differs from nearest while
    SCL (classes) is the same either way: resampling never applies to it."""
    items = search(world, sites=["2203"], datetime="2021")
    base = build_cube(items, bands=["B04", "SCL"], chunks=256).odc.geobox
    a = base.affine
    shifted = GeoBox(base.shape, a @ a.translation(0.5, 0.5), base.crs)
    near = build_cube(items, geobox=shifted, bands=["B04", "SCL"], chunks=256).compute()
    bil = build_cube(items, geobox=shifted, bands=["B04", "SCL"], chunks=256,
                     resampling="bilinear").compute()
    np.testing.assert_array_equal(bil.sel(band="SCL").values, near.sel(band="SCL").values)
    both = (near.sel(band="B04") > 0) & (bil.sel(band="B04") > 0)
    differ = (near.sel(band="B04") != bil.sel(band="B04")).values[both.values].mean()
    assert differ > 0.5
