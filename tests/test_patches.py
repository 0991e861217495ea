"""Patch tables, extraction and merging: numba kernels against slow NumPy references."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from lames_cube import _kernels
from lames_cube.errors import InvalidGridError, InvalidQueryError
from lames_cube.patches import extract_patches, merge_patches, patch_table, table_geobox
from lames_cube.testing.patch_cases import CASES


def grid(height: int, width: int, res: float = 10.0) -> GeoBox:
    return GeoBox.from_bbox((300_000, 7_000_000, 300_000 + width * res, 7_000_000 + height * res),
                            "EPSG:32719", resolution=res)


def cube(shape, *, seed=0, chunks=None) -> xr.DataArray:
    bands, height, width = shape
    data = np.random.default_rng(seed).integers(1, 10_000, shape).astype(np.uint16)
    coords = dict(xr_coords(grid(height, width), crs_coord_name="spatial_ref"))
    out = xr.DataArray(data, dims=("band", "y", "x"),
                       coords={**coords, "band": [f"B{i}" for i in range(bands)]},
                       attrs={"nodata": 0})
    return out.chunk({"band": 1, "y": chunks[0], "x": chunks[1]}) if chunks else out


def slow_gather(src, rows, cols, size, fill=0):
    """Reference: pad the raster with the fill value, then slice each window."""
    b, h, w = src.shape
    pad = np.full((b, h + 2 * size, w + 2 * size), fill, src.dtype)
    pad[:, size:size + h, size:size + w] = src
    return np.stack([pad[:, r + size:r + 2 * size, c + size:c + 2 * size]
                     for r, c in zip(rows, cols, strict=True)])


def slow_merge(values, rows, cols, weights, shape):
    total = np.zeros((values.shape[1], *shape))
    weight = np.zeros(shape)
    s = values.shape[-1]
    for k, (r, c) in enumerate(zip(rows, cols, strict=True)):
        for i in range(s):
            for j in range(s):
                if 0 <= r + i < shape[0] and 0 <= c + j < shape[1]:
                    weight[r + i, c + j] += weights[i, j]
                    total[:, r + i, c + j] += weights[i, j] * values[k, :, i, j]
    return total, weight


@pytest.mark.parametrize(("name", "shape", "size", "stride", "edge"), CASES)
def test_gather_and_merge_equal_their_slow_references(name, shape, size, stride, edge):
    data = cube(shape)
    table = patch_table(data, size=size, stride=stride, edge=edge)
    rows, cols = table.row.to_numpy(), table.col.to_numpy()
    got = extract_patches(data, table).image.values
    np.testing.assert_array_equal(got, slow_gather(data.values, rows, cols, size))
    values = np.random.default_rng(1).random((len(table), shape[0], size, size))
    for weights in (np.ones((size, size)), _kernels.hann(size)):
        total = np.zeros((shape[0], *shape[1:]))
        weight = np.zeros(shape[1:])
        _kernels.merge(values, rows, cols, weights, total, weight)
        want_total, want_weight = slow_merge(values, rows, cols, weights, shape[1:])
        np.testing.assert_allclose(total, want_total, rtol=1e-12)
        np.testing.assert_allclose(weight, want_weight, rtol=1e-12)


@pytest.mark.parametrize(("name", "shape", "size", "stride", "edge"), CASES)
def test_dask_extraction_equals_numpy_across_chunk_edges(name, shape, size, stride, edge):
    data = cube(shape)
    table = patch_table(data, size=size, stride=stride, edge=edge)
    for chunks in ((13, 17), (shape[1], 9), (40, 40)):
        lazy = extract_patches(cube(shape, chunks=chunks), table)
        assert isinstance(lazy.image.data, da.Array)
        np.testing.assert_array_equal(lazy.image.values, extract_patches(data, table).image.values)


def test_summed_area_window_sums_equal_direct_sums():
    rng = np.random.default_rng(3)
    mask = (rng.random((57, 83)) < 0.2).astype(np.uint8)
    table = _kernels.summed_area(mask)
    assert table[-1, -1] == mask.sum()
    rows, cols = rng.integers(0, 57 - 9, 500), rng.integers(0, 83 - 12, 500)
    got = _kernels.window_sums(table, rows, cols, 9, 12)
    want = [mask[r:r + 9, c:c + 12].sum() for r, c in zip(rows, cols, strict=True)]
    np.testing.assert_array_equal(got, want)
    full = _kernels.window_sums(table, np.array([0]), np.array([0]), 57, 83)  # window = raster
    assert full[0] == mask.sum()


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 90), width=st.integers(1, 90), size=st.integers(1, 40),
       stride=st.integers(1, 45), edge=st.sampled_from(["drop", "shift", "pad"]))
def test_windows_stay_inside_or_cover_the_raster(height, width, size, stride, edge):
    g = grid(height, width)
    if edge != "pad" and size > min(height, width):
        with pytest.raises(InvalidQueryError, match=f"size={size} px is larger than the grid"):
            patch_table(g, size=size, stride=stride, edge=edge)
        return
    t = patch_table(g, size=size, stride=stride, edge=edge)
    rows, cols = t.row.to_numpy(), t.col.to_numpy()
    assert len(t) == len(set(zip(rows, cols, strict=True))) > 0
    if edge in ("drop", "shift"):
        assert (rows >= 0).all() and (rows + size <= height).all()
        assert (cols >= 0).all() and (cols + size <= width).all()
    if edge in ("shift", "pad") and stride <= size:  # no gaps: every pixel in some window
        covered = np.zeros((height, width), bool)
        for r, c in zip(rows, cols, strict=True):
            covered[r:r + size, c:c + size] = True
        assert covered.all()
    # The geometry is the window's box in the grid's CRS.
    a = g.affine
    first = t.geometry.iloc[0].bounds
    assert first == pytest.approx((a.c + cols[0] * a.a, a.f + (rows[0] + size) * a.e,
                                   a.c + (cols[0] + size) * a.a, a.f + rows[0] * a.e))
    assert table_geobox(t) == g


@pytest.mark.parametrize("edge", ["drop", "pad"])
def test_merging_extracted_tiles_gives_the_raster_back(edge):
    data = cube((2, 64, 80))
    table = patch_table(data, size=16, edge=edge)
    merged = merge_patches(extract_patches(data, table).image, table, like=data)
    np.testing.assert_array_equal(merged.values, data.values.astype(float))
    assert (merged.weight == 1).all()


@pytest.mark.parametrize("blend", ["mean", "hann"])
@pytest.mark.parametrize("edge", ["shift", "pad"])
def test_a_blended_constant_is_that_constant_everywhere(blend, edge):
    g = grid(50, 61)
    table = patch_table(g, size=16, stride=5, edge=edge)
    merged = merge_patches(np.full((len(table), 16, 16), 0.75), table, like=g, blend=blend)
    np.testing.assert_allclose(merged.values, 0.75, rtol=1e-12)  # edges and corners included
    assert merged.odc.geobox == g


def test_labels_are_extracted_as_masks_and_bad_input_is_refused():
    data = cube((2, 64, 64))
    labels = (data.isel(band=0, drop=True) % 3).astype(np.uint8)
    table = patch_table(data, size=32)
    ds = extract_patches(data, table, labels=labels)
    np.testing.assert_array_equal(ds.mask.values, slow_gather(labels.values[None], table.row,
                                                              table.col, 32)[:, 0])
    assert list(ds.row.values) == table.row.tolist()
    other = patch_table(grid(64, 64, res=20), size=32)
    with pytest.raises(InvalidGridError, match="cut from another grid"):
        extract_patches(data, other)
    shifted = labels.assign_coords(x=labels.x + 10)
    with pytest.raises(InvalidGridError, match="labels are not on the cube's grid"):
        extract_patches(data, table, labels=shifted)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidQueryError, match=f"size={bad!r} must be a positive integer"):
            patch_table(data, size=bad)
    with pytest.raises(InvalidQueryError, match="edge='wrap' is not one of"):
        patch_table(data, edge="wrap")
    with pytest.raises(InvalidQueryError, match=r"select one time step"):
        extract_patches(data.expand_dims(time=2), table)
    with pytest.raises(InvalidQueryError, match=r"values have shape \(3, 32, 32\)"):
        merge_patches(np.zeros((3, 32, 32)), table, like=data)


def test_lames_patch_table_cuts_every_lames_tile_into_81_windows(lames_dir):
    """1,838 LAMES tiles x 81 windows of 256 px (DESIGN.md §5: 2304-px tiles, k = 9 x 9);
    each tile's windows tile its box exactly (independent: the tile geometry of lames_tiles)."""
    import shapely

    from lames_cube.grid import lames_tiles
    from lames_cube.patches import lames_patch_table

    table = lames_patch_table("chile")
    tiles = lames_tiles("chile").set_index("name")
    assert len(table) == 1838 * 81 and (table.groupby("tile").size() == 81).all()
    for name in tiles.index[[0, 500, 1837]]:
        windows = table[table.tile == name].to_crs("EPSG:3857")
        box = tiles.loc[[name]].set_crs("EPSG:4326", allow_override=True).to_crs("EPSG:3857")
        union = shapely.union_all(windows.geometry.values)
        assert union.symmetric_difference(box.geometry.iloc[0]).area < 1e-6 * union.area
