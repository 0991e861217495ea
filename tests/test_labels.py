"""rasterize: masks on exactly the cube's grid, equal to rasterio; the lazy path equals the eager."""

from __future__ import annotations

import warnings

import dask
import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox

from lames_cube import labels
from lames_cube.cube import build_cube
from lames_cube.errors import (
    AnnotationError,
    GridMismatchError,
    InvalidGridError,
    InvalidQueryError,
    NoOverlapError,
)
from lames_cube.labels import burn_list, rasterize
from lames_cube.search import search
from lames_cube.synthetic import World
from lames_cube.testing import SMALL_SPEC
from lames_cube.testing.schedulers import CountingScheduler

# rasterio's first rasterize calls in fresh threads may warn "no geotransform" spuriously.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repair reports of the annotation loader
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def lames(lames_dir):
    from lames_cube.annotations import load_sectors, load_sites

    return (_quiet(load_sectors, data_dir=lames_dir), _quiet(load_sites, "all", data_dir=lames_dir))


@pytest.fixture(scope="module")
def cube(world):
    """The lazy synthetic cube (dask, 256-px chunks) of the small world: nothing is read."""
    return build_cube(search(world), chunks=256)


def _crop(cube, gdf, margin_m=300.0):
    """The cube cut to ``gdf``'s bounds plus a margin (still a dask cube on the same grid)."""
    gbox = cube.odc.geobox
    x0, y0, x1, y1 = gdf.to_crs(gbox.crs.to_wkt()).total_bounds
    inv = ~gbox.affine
    c0, r0 = inv @ (x0 - margin_m, y1 + margin_m)
    c1, r1 = inv @ (x1 + margin_m, y0 - margin_m)
    return cube.isel(y=slice(max(int(r0), 0), int(r1) + 1), x=slice(max(int(c0), 0), int(c1) + 1))


def _reference(gdf, gbox, values, *, all_touched=False):
    """An independent rasterio burn of ``gdf`` (reprojected) in row order."""
    local = gdf.to_crs(gbox.crs.to_wkt())
    return rasterio.features.rasterize(
        zip(local.geometry.values, values, strict=True), out_shape=tuple(gbox.shape.yx),
        transform=gbox.affine, fill=0, all_touched=all_touched, dtype="uint8")


def _utm_grid(gdf, resolution=10.0, margin=200.0, crs="EPSG:32719"):
    bb = BoundingBox(*gdf.to_crs(crs).total_bounds, crs=crs).buffered(margin)
    return GeoBox.from_bbox(bb, resolution=resolution, tight=False)


# ---- eager (geocube) == rasterio on the synthetic cube grid --------------------------------------


@pytest.mark.parametrize("all_touched", [False, True])
def test_site_masks_equal_rasterio_on_the_cube_grid(cube, lames, all_touched):
    _, sites = lames
    for site_id in SMALL_SPEC.site_ids:
        site = sites[sites.site_id == site_id]
        like = _crop(cube, site)
        gbox = like.odc.geobox
        mask = rasterize(site, like=like, all_touched=all_touched)
        assert mask.dims == ("y", "x") and mask.dtype == np.uint8
        assert mask.odc.geobox == gbox
        r0, c0 = int(np.argmax(cube.y.values == like.y.values[0])), int(np.argmax(cube.x.values == like.x.values[0]))
        assert gbox == cube.odc.geobox[r0:r0 + gbox.shape.y, c0:c0 + gbox.shape.x]
        xr.testing.assert_equal(mask.x, like.x)
        xr.testing.assert_equal(mask.y, like.y)
        assert isinstance(mask.data, np.ndarray)  # small grid: eager
        ref = _reference(site, gbox, [1] * len(site), all_touched=all_touched)
        np.testing.assert_array_equal(mask.values, ref)
        assert 0 < mask.values.sum() < mask.size
        assert mask.attrs["value"] == 1 and mask.attrs["all_touched"] is all_touched
        assert mask.attrs["overlap"] == "last" and mask.attrs["backend"] == "geocube"


def test_sector_classes_equal_the_worlds_truth(cube, lames_dir):
    """The synthetic world plants its sectors with rasterio; geocube burns the same classes."""
    world = World(SMALL_SPEC, data_dir=lames_dir)
    sectors = world.mines.sectors_in_year(2022)
    for site_id in SMALL_SPEC.site_ids:
        like = _crop(cube, sectors[sectors.site_id == site_id])
        gbox = like.odc.geobox
        classes = rasterize(sectors, like=like, value="class")
        truth = world.mine_classes(gbox, 2022)
        np.testing.assert_array_equal(classes.values, truth)
        assert len(np.unique(truth)) > 2
        # the world burns largest first: the "smallest" rule gives the same pixels
        np.testing.assert_array_equal(
            rasterize(sectors, like=like, value="class", overlap="smallest").values, truth)


def _overlapping():
    # row order: big(3), small(9) inside big, mid(5) over both, tiny(4) inside small
    geoms = [shapely.box(0, 0, 600, 600), shapely.box(100, 100, 300, 300),
             shapely.box(200, 200, 500, 500), shapely.box(150, 150, 200, 200)]
    return gpd.GeoDataFrame({"class": [3, 9, 5, 4]}, geometry=geoms, crs="EPSG:32719")


# Burn orders (the winner burns last) by hand from _overlapping()'s classes [3, 9, 5, 4] and
# areas: max = ascending class, min = descending, smallest = largest area first, priority = the
# unlisted in row order, then the listed from last to first.
@pytest.mark.parametrize(
    "overlap, kwargs, order",
    [
        ("last", {}, [0, 1, 2, 3]),
        ("max", {}, [0, 3, 2, 1]),
        ("min", {}, [1, 2, 3, 0]),
        ("smallest", {}, [0, 2, 1, 3]),
        ("priority", {"priority": [5, 3]}, [1, 3, 0, 2]),
    ],
)
def test_overlap_rules_equal_rasterio_in_the_documented_order(overlap, kwargs, order):
    gdf = _overlapping()
    gbox = GeoBox.from_bbox((-50, -50, 650, 650), "EPSG:32719", resolution=10)
    out = rasterize(gdf, like=gbox, value="class", overlap=overlap, **kwargs)
    ref = _reference(gdf.iloc[order], gbox, gdf["class"].to_numpy()[order])
    np.testing.assert_array_equal(out.values, ref)
    assert out.attrs["overlap"] == overlap
    lazy = rasterize(gdf, like=gbox, value="class", overlap=overlap, lazy=True, chunks=16, **kwargs)
    np.testing.assert_array_equal(lazy.values, ref)
    if overlap == "smallest":  # small polygons win: each keeps its own class at its centre
        at = lambda x, y: int(out.sel(x=x, y=y, method="nearest"))  # noqa: E731
        # centres of tiny, small, mid and big (_overlapping's boxes) keep their own classes
        assert (at(175, 175), at(120, 120), at(400, 400), at(50, 50)) == (4, 9, 5, 3)


# ---- lazy == eager on real sectors, chunks cutting through them -----------------------------------


@pytest.fixture(scope="module")
def big_site(lames):
    sectors, _ = lames
    site_id = sectors.site_id.value_counts().index[0]  # the site with the most sectors
    return sectors[sectors.site_id == site_id]


def test_lazy_equals_eager_on_real_sectors_across_chunk_edges(big_site):
    gbox = _utm_grid(big_site)
    chunks = (160, 120)
    assert len(range(0, gbox.shape.y, chunks[0])) * len(range(0, gbox.shape.x, chunks[1])) >= 20
    # the chunk edges cut through many sectors
    local = np.asarray(big_site.to_crs(gbox.crs.to_wkt()).geometry.values)
    xs = gbox.affine.c + gbox.affine.a * np.arange(chunks[1], gbox.shape.x, chunks[1])
    ys = gbox.affine.f + gbox.affine.e * np.arange(chunks[0], gbox.shape.y, chunks[0])
    lines = [shapely.LineString([(x, -1e8), (x, 1e8)]) for x in xs] + \
            [shapely.LineString([(-1e8, y), (1e8, y)]) for y in ys]
    crossing = shapely.intersects(local[:, None], np.array(lines)[None, :]).any(axis=1)
    assert crossing.sum() >= 10
    for kw in ({}, {"all_touched": True}, {"overlap": "smallest"}, {"ignore_buffer": 15.0}):
        eager = rasterize(big_site, like=gbox, value="class", lazy=False, **kw)
        lazy = rasterize(big_site, like=gbox, value="class", lazy=True, chunks=chunks, **kw)
        assert lazy.chunks == (tuple(lazy.data.chunks[0]), tuple(lazy.data.chunks[1]))
        assert lazy.data.chunks[0][0] == 160 and lazy.data.chunks[1][0] == 120
        assert lazy.odc.geobox == eager.odc.geobox == gbox
        assert lazy.attrs == {**eager.attrs, "lazy": True, "backend": lazy.attrs["backend"]}
        np.testing.assert_array_equal(lazy.values, eager.values)
        assert len(np.unique(eager.values)) >= 6


def test_lazy_burns_only_the_polygons_touching_each_chunk(big_site, monkeypatch):
    gbox = _utm_grid(big_site)
    burn = burn_list(big_site, like=gbox, value="class")
    geoms = np.asarray(burn.geometry.values)
    calls = []
    real = rasterio.features.rasterize

    def spy(shapes, *, out_shape, transform, **kw):
        shapes = list(shapes)
        calls.append((out_shape, transform, [g for g, _ in shapes]))
        return real(shapes, out_shape=out_shape, transform=transform, **kw)

    lazy = rasterize(big_site, like=gbox, value="class", lazy=True, chunks=128)
    monkeypatch.setattr(rasterio.features, "rasterize", spy)
    with dask.config.set(scheduler="sync"):
        lazy.compute()
    n_chunks = lazy.data.npartitions
    assert 0 < len(calls) < n_chunks  # chunks without polygons are zeros, not burnt
    for (h, w), transform, shapes in calls:
        x0, y1 = transform @ (0, 0)
        x1, y0 = transform @ (w, h)
        box = shapely.box(x0, y0, x1, y1)
        touching = shapely.intersects(geoms, box)
        assert len(shapes) < len(geoms)
        assert all(shapely.intersects(g, shapely.buffer(box, 20)) for g in shapes)
        assert set(shapely.to_wkb(geoms[touching])) <= set(shapely.to_wkb(np.array(shapes)))


def test_building_the_lazy_path_computes_nothing(cube, lames, monkeypatch):
    sectors, _ = lames
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        lazy = rasterize(sectors, like=cube, value="class", lazy=True)
        assert isinstance(lazy.data, dask.array.Array)
        # the cube's own chunks, its grid
        assert lazy.data.chunks == cube.data.chunks[2:]
        assert lazy.odc.geobox == cube.odc.geobox
        # automatic choice: large grids are lazy
        monkeypatch.setattr(labels, "LAZY_THRESHOLD_PX", 1000)
        auto = rasterize(sectors, like=cube, value="class")
        assert isinstance(auto.data, dask.array.Array) and auto.attrs["lazy"] is True
    assert counter.calls == 0
    with dask.config.set(scheduler=counter):
        part = lazy[:512, :512].compute()
    assert counter.calls == 1 and part.shape == (512, 512)


def test_like_can_be_a_geobox_a_dataset_or_a_geographic_grid(big_site):
    gbox = _utm_grid(big_site, resolution=30)
    ds = xr.Dataset({"a": xr.DataArray(np.zeros(tuple(gbox.shape.yx)), dims=("y", "x"))},
                    coords=xr.Dataset(coords=labels.xr_coords(gbox)).coords)
    a = rasterize(big_site, like=gbox)
    b = rasterize(big_site, like=ds)
    xr.testing.assert_equal(a, b)
    assert a.odc.geobox == b.odc.geobox == gbox and a.attrs == b.attrs
    ll = GeoBox.from_bbox(tuple(big_site.total_bounds), "EPSG:4326", resolution=0.0003)
    m = rasterize(big_site, like=ll, value="class", ignore_buffer=20)
    assert m.dims == ("latitude", "longitude") and m.odc.geobox == ll
    np.testing.assert_array_equal(
        m.values, rasterize(big_site, like=ll, value="class", ignore_buffer=20, lazy=True,
                            chunks=100).values)
    assert {0, 255} <= set(np.unique(m.values).tolist())


# ---- the ignore ring -----------------------------------------------------------------------------


def test_ignore_ring_around_borders():
    gbox = GeoBox.from_bbox((0, 0, 3000, 3000), "EPSG:32719", resolution=10)
    sq = shapely.box(1000, 1000, 2000, 2000)
    gdf = gpd.GeoDataFrame({"class": [5]}, geometry=[sq], crs="EPSG:32719")
    out = rasterize(gdf, like=gbox, value="class", ignore_buffer=20)
    assert out.attrs["ignore_value"] == 255 and out.attrs["ignore_buffer_m"] == 20.0
    xx, yy = np.meshgrid(out.x.values, out.y.values)
    d = shapely.distance(shapely.points(xx, yy), shapely.boundary(sq))
    inside = shapely.contains_xy(sq, xx, yy)
    v = out.values
    assert (v[d < 19] == 255).all()  # 19 / 21 m: the 20 m ring, +- 1 m for pixel centres
    assert (v[(d > 21) & inside] == 5).all() and (v[(d > 21) & ~inside] == 0).all()
    # shared edges within one value are not uncertain; edges between values are
    two = gpd.GeoDataFrame({"class": [5, 5]}, crs="EPSG:32719",
                           geometry=[sq, shapely.box(2000, 1000, 2500, 2000)])
    same = rasterize(two, like=gbox, value="class", ignore_buffer=20)
    assert int(same.sel(x=2005, y=1505, method="nearest")) == 5
    diff = rasterize(two.assign(**{"class": [5, 9]}), like=gbox, value="class", ignore_buffer=20,
                     ignore_value=254)
    assert int(diff.sel(x=2005, y=1505, method="nearest")) == 254
    # a polygon just off the grid still casts its ring onto it
    off = gpd.GeoDataFrame({"class": [5]}, geometry=[shapely.box(3010, 0, 4000, 3000)],
                           crs="EPSG:32719")
    edge = rasterize(off, like=gbox, value="class", ignore_buffer=30)
    assert (edge.values[:, -1] == 255).all() and (edge.values[:, :-3] == 0).all()


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_polygons_raise_typed_errors(lames):
    _, sites = lames
    site = sites[sites.site_id == SMALL_SPEC.site_ids[0]]
    gbox = _utm_grid(site)
    with pytest.raises(AnnotationError, match=r"empty \(0 polygons\)"):
        rasterize(site.iloc[:0], like=gbox)
    with pytest.raises(AnnotationError,
                       match=r"value='class' is not a column.*present columns: \['site_id', 'split'\]"):
        rasterize(site, like=gbox, value="class")
    metres_as_degrees = site.to_crs("EPSG:32719").set_crs("EPSG:4326", allow_override=True)
    with pytest.raises(AnnotationError, match=r"outside the lon/lat range of their declared CRS EPSG:4326"):
        rasterize(metres_as_degrees, like=gbox)
    degrees_as_metres = site.set_crs("EPSG:32719", allow_override=True)
    with pytest.raises(AnnotationError, match=r"look like lon/lat degrees on the grid, but their declared CRS EPSG:32719"):
        rasterize(degrees_as_metres, like=gbox)
    web_mercator_as_utm = site.to_crs("EPSG:3857").set_crs("EPSG:32719", allow_override=True)
    with pytest.raises(AnnotationError, match=r"far outside the area of use of their declared CRS EPSG:32719"):
        rasterize(web_mercator_as_utm, like=gbox)
    with pytest.raises(AnnotationError, match=r"have no CRS.*set_crs"):
        rasterize(site.set_crs(None, allow_override=True), like=gbox)
    with pytest.raises(AnnotationError, match="Expected a geopandas GeoDataFrame"):
        rasterize(site.geometry, like=gbox)
    points = site.assign(geometry=site.geometry.representative_point())
    with pytest.raises(AnnotationError, match=r"not polygons \(\['Point'\]\)"):
        rasterize(points, like=gbox)
    with pytest.raises(AnnotationError, match=r"do not fit a uint8 label \(e.g. \[300.0\]\)"):
        rasterize(site.assign(v=300), like=gbox, value="v")
    with pytest.raises(AnnotationError, match=r"dtype object, not numbers"):
        rasterize(site, like=gbox, value="site_id")


def test_a_grid_that_misses_the_polygons(lames):
    _, sites = lames
    # 139 site polygons (MANIFEST.md). By hand: easting 600 km in UTM 30N is 100 km east of 3° W,
    # at 5° N 100 / 110.9 = 0.90° of longitude: west -2.09..; the sites' west bound is -72.0068.
    ghana = GeoBox.from_bbox((600000, 550000, 620000, 570000), "EPSG:32630", resolution=10)
    with pytest.raises(NoOverlapError,
                       match=r"(?s)does not overlap any of the 139 polygons.*grid extent \(lon/lat\): "
                             r"+west -2\.09.*polygons extent \(lon/lat\): +west -72\.00"):
        rasterize(sites, like=ghana)
    with pytest.raises(NoOverlapError, match=r"look like lon/lat degrees although the declared CRS EPSG:32719"):
        rasterize(sites.set_crs("EPSG:32719", allow_override=True), like=ghana)
    chile_elsewhere = GeoBox.from_bbox((-75.5, -55.5, -75.4, -55.4), "EPSG:4326", resolution=0.001)
    with pytest.raises(NoOverlapError, match="does not overlap"):
        rasterize(sites, like=chile_elsewhere, lazy=True)


def test_bad_grids_and_options(lames):
    _, sites = lames
    site = sites[sites.site_id == SMALL_SPEC.site_ids[0]]
    gbox = _utm_grid(site)
    no_crs = xr.DataArray(np.zeros((3, 4)), dims=("y", "x"),
                          coords={"y": [3.0, 2.0, 1.0], "x": [0.0, 1.0, 2.0, 3.0]})
    with pytest.raises(InvalidGridError, match=r"like= has no CRS.*assign_crs"):
        rasterize(site, like=no_crs)
    with pytest.raises(InvalidGridError, match="like= is a ndarray"):
        rasterize(site, like=np.zeros((3, 4)))
    with pytest.raises(InvalidGridError, match="no spatial grid"):
        rasterize(site, like=xr.DataArray(np.zeros(3), dims=("t",)))
    with pytest.raises(InvalidQueryError, match=r"overlap='first' is not one of"):
        rasterize(site, like=gbox, overlap="first")
    with pytest.raises(InvalidQueryError, match=r"overlap='priority' needs priority="):
        rasterize(site, like=gbox, overlap="priority")
    with pytest.raises(InvalidQueryError, match="ignore_value=255 without ignore_buffer"):
        rasterize(site, like=gbox, ignore_value=255)
    with pytest.raises(InvalidQueryError, match=r"ignore_value=1 is also a burn value of 1 polygon"):
        rasterize(site, like=gbox, ignore_buffer=10, ignore_value=1)
    with pytest.raises(InvalidQueryError, match=r"ignore_buffer=-1"):
        rasterize(site, like=gbox, ignore_buffer=-1)
    with pytest.raises(InvalidQueryError, match=r"lazy='yes'"):
        rasterize(site, like=gbox, lazy="yes")


def test_a_backend_grid_that_differs_is_reported(lames, monkeypatch):
    _, sites = lames
    site = sites[sites.site_id == SMALL_SPEC.site_ids[0]]
    gbox = _utm_grid(site)
    real = labels.make_geocube

    def shifted(*args, **kwargs):
        ds = real(*args, **kwargs)
        return ds.isel(x=slice(1, None))  # one column short: shape and transform differ

    monkeypatch.setattr(labels, "make_geocube", shifted)
    # expected: _utm_grid(site) (119 x 101 px from x = 367250); got: one column less, from + 10 m
    with pytest.raises(GridMismatchError, match=r"(?s)geocube's output is not on like's grid.*"
                                                r"got: +shape \(119, 100\).*367260.*expected: +shape \(119, 101\), CRS 32719.*367250"):
        rasterize(site, like=gbox)
