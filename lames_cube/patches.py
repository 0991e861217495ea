"""Patch tables (where the windows are), patch extraction (the pixels) and patch merging.

"Where vs what" (DESIGN.md §4): :func:`patch_table` returns a GeoDataFrame of windows on a grid
(pixel offsets ``row``/``col`` and the window's box in the grid's CRS); :func:`extract_patches`
gathers a table's pixels from a cube (NumPy or dask: each group of windows reads only the
region it needs); :func:`merge_patches` puts per-window values back on the grid, blended where
windows overlap. The pixel loops are numba kernels in :mod:`lames_cube._kernels`.

Examples
--------
>>> from odc.geo.geobox import GeoBox
>>> g = GeoBox.from_bbox((300_000, 7_000_000, 305_120, 7_002_560), "EPSG:32719", resolution=10)
>>> table = patch_table(g, size=256)
>>> len(table), table.attrs["size"], table[["row", "col"]].iloc[-1].tolist()
(2, 256, [0, 256])
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import dask.array as da
import geopandas as gpd
import numpy as np
import shapely
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from lames_cube import _kernels
from lames_cube._checks import check_positive_int
from lames_cube.errors import InvalidGridError, InvalidQueryError
from lames_cube.grid import geobox_attrs, geobox_of, lames_tiles

EDGES = ("drop", "pad", "shift")
BLENDS = ("mean", "hann")


# --------------------------------------------------------------------------- grids
def table_geobox(table: gpd.GeoDataFrame) -> GeoBox:
    """The grid a patch table was cut from (from its ``attrs["grid"]``)."""

    grid = table.attrs.get("grid")
    if not grid:
        raise InvalidQueryError(
            "the table has no attrs['grid']; make it with patch_table(like, ...) or keep the "
            "attrs when filtering (geopandas keeps them for boolean selection and .copy())."
        )
    if isinstance(grid, str):
        grid = json.loads(grid)
    return GeoBox(tuple(grid["shape"]), Affine(*grid["affine"]), grid["crs"])


def _offsets(length: int, size: int, stride: int, edge: str) -> np.ndarray:
    """Window starts along one axis: inside (drop), covering it all (pad), or inside with a
    last window moved back onto the edge (shift)."""
    if edge == "pad":
        n = max(-(-(length - size) // stride), 0) + 1
        return np.arange(n, dtype=np.int64) * stride
    starts = np.arange(0, length - size + 1, stride, dtype=np.int64)
    if edge == "shift" and starts[-1] + size < length:
        starts = np.append(starts, length - size)
    return starts


# --------------------------------------------------------------------------- tables
def patch_table(
    like: Any,
    *,
    size: int = 256,
    stride: int | None = None,
    edge: str = "drop",
    region: Any = None,
) -> gpd.GeoDataFrame:
    """Windows of ``size`` px every ``stride`` px over a grid, one row per window.

    Parameters
    ----------
    like
        A GeoBox, or a cube (DataArray/Dataset with a GeoBox).
    size
        Window side in pixels.
    stride
        Step between windows (default ``size``: windows tile the grid).
    edge
        What to do where the grid does not end on a whole window: ``"drop"`` keeps only windows
        inside the grid; ``"pad"`` adds windows that reach past the grid (extracted with the
        nodata value there); ``"shift"`` adds a last window that ends on the grid's edge
        (overlapping its neighbour).
    region
        Keep windows that touch this shapely geometry or GeoDataFrame/GeoSeries (a bare
        geometry is in EPSG:4326; frames in their own CRS).

    Returns
    -------
    geopandas.GeoDataFrame
        ``row``, ``col`` (pixel offsets of the window's top-left corner in the grid) and the
        window's box as geometry in the grid's CRS; ``attrs``: ``size``, ``stride``, ``edge``,
        ``grid`` (CRS, shape, affine).

    Raises
    ------
    InvalidQueryError
        A size or stride that is not a positive integer, an unknown edge rule, or (with
        ``edge="drop"``) a window larger than the grid.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> g = GeoBox.from_bbox((0, 0, 600, 500), "EPSG:32719", resolution=10)  # 50 x 60 px
    >>> t = patch_table(g, size=32, stride=16, edge="shift")
    >>> sorted(set(t.row)), sorted(set(t.col))
    ([0, 16, 18], [0, 16, 28])
    """
    gbox = geobox_of(like)
    size = check_positive_int(size, "size")
    stride = size if stride is None else check_positive_int(stride, "stride")
    if edge not in EDGES:
        raise InvalidQueryError(f"edge={edge!r} is not one of {EDGES}; pick one of them.")
    height, width = (int(v) for v in gbox.shape)
    if edge != "pad" and (size > height or size > width):
        raise InvalidQueryError(
            f"size={size} px is larger than the grid ({height} x {width} px), so "
            f"edge={edge!r} leaves no window. Use a size up to {min(height, width)}, or "
            "edge='pad'."
        )
    rows = _offsets(height, size, stride, edge)
    cols = _offsets(width, size, stride, edge)
    rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    table = window_table(gbox, rr, cc, size)
    if region is not None:
        table = table[_touching(table, region)].reset_index(drop=True)
    table.attrs.update(stride=stride, edge=edge)
    return table


def window_table(gbox: GeoBox, rows: np.ndarray, cols: np.ndarray,
                 size: int) -> gpd.GeoDataFrame:
    """A window table for given top-left offsets: ``row``, ``col``, the boxes in the grid's
    CRS, and ``attrs`` ``size`` and ``grid`` (samplers add their rule and seed)."""
    a = gbox.affine
    rr, cc = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    x0, y0 = a.c + cc * a.a, a.f + rr * a.e
    boxes = shapely.box(np.minimum(x0, x0 + size * a.a), np.minimum(y0, y0 + size * a.e),
                        np.maximum(x0, x0 + size * a.a), np.maximum(y0, y0 + size * a.e))
    table = gpd.GeoDataFrame({"row": rr, "col": cc}, geometry=boxes,
                             crs=gbox.crs.to_wkt() if gbox.crs.epsg is None
                             else f"EPSG:{gbox.crs.epsg}")
    table.attrs = {"size": int(size), "grid": geobox_attrs(gbox)}
    return table


def lames_patch_table(region: Any = "chile", *, size: int = 256) -> gpd.GeoDataFrame:
    """The LAMES patches: each tile of :func:`lames_cube.grid.lames_tiles` (2304 px in EPSG:3857,
    its own pixel size) cut into ``size``-px windows, 81 per tile for 256 px.

    Returns
    -------
    geopandas.GeoDataFrame
        ``tile`` (the LAMES tile name), ``row``, ``col`` (pixel offsets in the tile) and the
        window's box in EPSG:4326; ``attrs``: ``size``, ``stride``, ``edge``, ``source``.

    Examples
    --------
    >>> t = lames_patch_table("chile")
    >>> len(t), len(t) // t.tile.nunique(), t.crs.to_epsg()
    (148878, 81, 4326)
    """

    size = check_positive_int(size, "size")
    tiles = lames_tiles(region)
    parts = []
    for name, width, height, transform in zip(tiles["name"], tiles["width"], tiles["height"],
                                              tiles["transform"], strict=True):
        x0, dx, _, y0, _, dy = transform
        offsets_r = _offsets(int(height), size, size, "drop")
        offsets_c = _offsets(int(width), size, size, "drop")
        rr, cc = (a.ravel() for a in np.meshgrid(offsets_r, offsets_c, indexing="ij"))
        xa, ya = x0 + cc * dx, y0 + rr * dy
        parts.append((np.full(rr.size, name, dtype=object), rr, cc,
                      shapely.box(xa, ya + size * dy, xa + size * dx, ya)))
    names, rows, cols, boxes = (np.concatenate(p) for p in zip(*parts, strict=True))
    table = gpd.GeoDataFrame({"tile": names, "row": rows.astype(np.int64),
                              "col": cols.astype(np.int64)}, geometry=boxes, crs="EPSG:3857")
    table = table.to_crs("EPSG:4326")
    table.attrs = {"size": size, "stride": size, "edge": "drop",
                   "source": "LAMES tiles (lames_cube.grid.lames_tiles), EPSG:3857"}
    return table


def _touching(table: gpd.GeoDataFrame, region: Any) -> np.ndarray:
    if isinstance(region, gpd.GeoDataFrame | gpd.GeoSeries):
        shapes = region.to_crs(table.crs).geometry if region.crs is not None else None
        if shapes is None:
            raise InvalidQueryError("region has no CRS; set one (region.set_crs('EPSG:4326')).")
        geom = shapely.union_all(shapes.values)
    else:
        geom = gpd.GeoSeries([region], crs="EPSG:4326").to_crs(table.crs).iloc[0]
    return table.geometry.intersects(geom).to_numpy()


# --------------------------------------------------------------------------- extraction
def check_table(table: gpd.GeoDataFrame, gbox: GeoBox) -> tuple[np.ndarray, np.ndarray, int]:
    """Check that a window table belongs to a grid, and return its windows.

    Parameters
    ----------
    table
        Windows from :func:`patch_table`, :func:`window_table` or a sampler: ``row`` and
        ``col`` columns and ``attrs`` ``size`` and ``grid``.
    gbox
        The grid the windows are to be read from (e.g. the cube's).

    Returns
    -------
    rows, cols : numpy.ndarray
        int64 top-left pixel offsets of the windows, in table order.
    size : int
        The window side in pixels.

    Raises
    ------
    InvalidQueryError
        Not a GeoDataFrame with ``row``/``col`` columns, or no ``attrs["grid"]``.
    InvalidGridError
        The table was cut from another grid.

    Examples
    --------
    >>> g = GeoBox.from_bbox((0, 0, 640, 640), "EPSG:32719", resolution=10)
    >>> rows, cols, size = check_table(patch_table(g, size=32), g)
    >>> rows.tolist(), cols.tolist(), size
    ([0, 0, 32, 32], [0, 32, 0, 32], 32)
    """
    if not isinstance(table, gpd.GeoDataFrame) or not {"row", "col"} <= set(table.columns):
        raise InvalidQueryError(
            f"table must be a GeoDataFrame with row and col columns (from patch_table); got "
            f"{type(table).__name__}."
        )
    grid = table_geobox(table)
    if grid != gbox:
        raise InvalidGridError(
            f"the table was cut from another grid ({grid!r}) than the cube's ({gbox!r}); make "
            "the table with patch_table(cube, ...) on this cube."
        )
    return (table["row"].to_numpy(np.int64), table["col"].to_numpy(np.int64),
            int(table.attrs["size"]))


def as_bands(data: xr.DataArray, what: str) -> xr.DataArray:
    """A ``(band, y, x)`` view of a ``(band, y, x)`` or ``(y, x)`` raster, for extraction.

    Parameters
    ----------
    data
        A raster with an odc GeoBox: ``(band, y, x)`` is returned as it is, ``(y, x)`` gets a
        ``band`` dimension of length one labelled ``what``.
    what
        The raster's name (``"cube"``, ``"labels"``), for the band label and error messages.

    Returns
    -------
    xarray.DataArray
        ``(band, *spatial dims)``; lazy stays lazy.

    Raises
    ------
    InvalidQueryError
        Any other layout (e.g. a ``(time, band, y, x)`` cube: select a time step first).

    Examples
    --------
    >>> from odc.geo.xr import xr_zeros
    >>> g = GeoBox.from_bbox((0, 0, 640, 640), "EPSG:32719", resolution=10)
    >>> as_bands(xr_zeros(g, dtype="uint8"), "labels").dims
    ('band', 'y', 'x')
    """
    spatial = tuple(str(d) for d in data.odc.spatial_dims)
    if data.ndim == 2:
        return data.expand_dims(band=[what]).transpose("band", *spatial)
    if data.ndim == 3 and tuple(data.dims[1:]) == spatial:
        return data
    raise InvalidQueryError(
        f"the {what} has dims {list(data.dims)}; extract from (band, y, x) or (y, x) arrays: "
        "select one time step or composite first (e.g. cube.isel(time=0))."
    )


def _gather_numpy(src: np.ndarray, rows, cols, size: int, fill, parallel: bool = True) -> np.ndarray:
    out = np.empty((rows.size, src.shape[0], size, size), src.dtype)
    kernel = _kernels.gather if parallel else _kernels.gather_serial
    kernel(np.ascontiguousarray(src), rows, cols, out, src.dtype.type(fill))
    return out


def gather_windows(data: Any, rows: np.ndarray, cols: np.ndarray, size: int, fill: Any) -> Any:
    """The pixels of square windows of a NumPy or dask ``(B, H, W)`` array.

    With dask, windows are grouped by the chunk holding their top-left corner and each group
    reads only its bounding region (lazy: one task per group).

    Parameters
    ----------
    data
        ``(B, H, W)`` NumPy or dask array.
    rows, cols
        int64 top-left offsets of the windows (as :func:`check_table` returns them); windows
        may reach past the array's edges.
    size
        Window side in pixels.
    fill
        The value of pixels outside the array.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        ``(n_windows, B, size, size)`` of ``data``'s dtype, in the order of ``rows``.

    Examples
    --------
    >>> data = np.arange(16, dtype="uint16").reshape(1, 4, 4)
    >>> gather_windows(data, np.array([0, 3]), np.array([0, 3]), 2, 0)[:, 0].tolist()
    [[[0, 1], [4, 5]], [[15, 0], [0, 0]]]
    """
    if not hasattr(data, "chunks") or data.chunks is None or isinstance(data, np.ndarray):
        return _gather_numpy(np.asarray(data), rows, cols, size, fill)

    ychunks, xchunks = (np.cumsum((0, *c)) for c in data.chunks[1:])
    gy = np.searchsorted(ychunks, np.clip(rows, 0, None), side="right") - 1
    gx = np.searchsorted(xchunks, np.clip(cols, 0, None), side="right") - 1
    height, width = data.shape[1:]
    parts, order = [], []
    for key in sorted(set(zip(gy.tolist(), gx.tolist(), strict=True))):
        pick = np.flatnonzero((gy == key[0]) & (gx == key[1]))
        r0, c0 = max(int(rows[pick].min()), 0), max(int(cols[pick].min()), 0)
        r1 = min(int(rows[pick].max()) + size, height)
        c1 = min(int(cols[pick].max()) + size, width)
        region = data[:, r0:r1, c0:c1]
        part = da.map_blocks(_gather_numpy, region.rechunk(-1), rows[pick] - r0,
                             cols[pick] - c0, size, fill, False, dtype=data.dtype,
                             chunks=((pick.size,), (data.shape[0],), (size,), (size,)),
                             new_axis=[3], meta=np.empty((0, 0, 0, 0), data.dtype))
        parts.append(part)
        order.append(pick)
    stacked = da.concatenate(parts, axis=0)
    inverse = np.empty(rows.size, np.int64)
    inverse[np.concatenate(order)] = np.arange(rows.size)
    return stacked[inverse]


def extract_patches(cube: xr.DataArray, table: gpd.GeoDataFrame, *,
                    labels: xr.DataArray | None = None) -> xr.Dataset:
    """The pixels of a table's windows: ``image (sample, band, py, px)`` and, with ``labels``,
    ``mask (sample, py, px)``; lazy when the cube is dask-backed.

    Parameters
    ----------
    cube
        ``(band, y, x)`` or ``(y, x)`` on the table's grid (select a time step or take a
        composite of a ``(time, band, y, x)`` cube first).
    table
        Windows from :func:`patch_table` (or a sampler) on the cube's grid.
    labels
        ``(y, x)`` labels on the same grid (e.g. :func:`lames_cube.rasterize` of the sectors).

    Returns
    -------
    xarray.Dataset
        ``image`` (and ``mask``), with the table's non-geometry columns as ``sample``
        coordinates; pixels outside the grid (``edge="pad"`` windows) are the cube's ``nodata``
        (0) and label 0.

    Raises
    ------
    InvalidGridError
        The table or the labels are on another grid than the cube.
    InvalidQueryError
        A cube that is not ``(band, y, x)``/``(y, x)`` or a malformed table.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> g = GeoBox.from_bbox((0, 0, 640, 640), "EPSG:32719", resolution=10)  # 64 x 64 px
    >>> cube = (xr_zeros(g, dtype="uint16") + 7).expand_dims(band=["B04"])
    >>> ds = extract_patches(cube, patch_table(g, size=32))
    >>> ds.image.shape, int(ds.image.sum())
    ((4, 1, 32, 32), 28672)
    """

    gbox = geobox_of(cube, "cube")
    rows, cols, size = check_table(table, gbox)
    image = as_bands(cube, "cube")
    fill = cube.attrs.get("nodata", 0) or 0
    columns = {str(c): ("sample", table[c].to_numpy()) for c in table.columns
               if c != table.geometry.name}
    out = xr.Dataset(coords={"band": image.band.values, **columns})
    out["image"] = (("sample", "band", "py", "px"), gather_windows(image.data, rows, cols, size, fill))
    out["image"].attrs = dict(cube.attrs)
    if labels is not None:
        if geobox_of(labels, "labels") != gbox:
            raise InvalidGridError(
                "the labels are not on the cube's grid; rasterize them with like=cube "
                "(lames_cube.rasterize(gdf, like=cube))."
            )
        mask = gather_windows(as_bands(labels, "labels").data, rows, cols, size, 0)
        out["mask"] = (("sample", "py", "px"), mask[:, 0])
    out.attrs = {k: v for k, v in table.attrs.items() if k != "grid"}
    out.attrs["grid"] = json.dumps(table.attrs["grid"])
    return out


# --------------------------------------------------------------------------- merging
def merge_patches(values: Any, table: gpd.GeoDataFrame, *, like: Any,
                  blend: str = "mean") -> xr.DataArray:
    """Per-window values back on the grid, averaged where windows overlap.

    Parameters
    ----------
    values
        ``(sample, py, px)`` or ``(sample, band, py, px)``: a NumPy array or DataArray (e.g. a
        model's per-patch probabilities), in the table's row order.
    table
        The windows the values belong to.
    like
        The grid (GeoBox or cube) to merge onto: the table's grid.
    blend
        ``"mean"`` (uniform weights) or ``"hann"`` (a cosine-squared window: patch centres
        count more than their edges, so overlapping predictions join without seams).

    Returns
    -------
    xarray.DataArray
        float64 ``(y, x)`` or ``(band, y, x)`` on ``like``'s grid, NaN where no window reaches,
        with the summed weights as the ``weight`` coordinate ``(y, x)``.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> g = GeoBox.from_bbox((0, 0, 480, 480), "EPSG:32719", resolution=10)  # 48 x 48 px
    >>> t = patch_table(g, size=16, stride=8)
    >>> m = merge_patches(np.full((len(t), 16, 16), 3.0), t, like=g, blend="hann")
    >>> bool(np.allclose(m, 3.0)), bool((m.weight > 0).all())
    (True, True)
    """
    gbox = geobox_of(like)
    rows, cols, size = check_table(table, gbox)
    if blend not in BLENDS:
        raise InvalidQueryError(f"blend={blend!r} is not one of {BLENDS}; pick one of them.")
    data = np.asarray(values.values if isinstance(values, xr.DataArray) else values)
    squeeze = data.ndim == 3
    if squeeze:
        data = data[:, None]
    if data.ndim != 4 or data.shape[0] != rows.size or data.shape[2:] != (size, size):
        raise InvalidQueryError(
            f"values have shape {tuple(np.shape(values))}; expected ({rows.size}, {size}, "
            f"{size}) or ({rows.size}, bands, {size}, {size}) for this table."
        )
    weights = np.ones((size, size)) if blend == "mean" else _kernels.hann(size)
    height, width = (int(v) for v in gbox.shape)
    total = np.zeros((data.shape[1], height, width))
    weight = np.zeros((height, width))
    _kernels.merge(np.ascontiguousarray(data, dtype=np.float64), rows, cols, weights, total,
                   weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = np.where(weight > 0, total / weight, np.nan)

    coords: dict[Hashable, Any] = dict(xr_coords(gbox, crs_coord_name="spatial_ref"))
    dims = ("y", "x") if squeeze else ("band", "y", "x")
    out = xr.DataArray(merged[0] if squeeze else merged, dims=dims, coords=coords)
    if not squeeze and isinstance(values, xr.DataArray) and "band" in values.coords:
        out = out.assign_coords(band=values.band.values)
    return out.assign_coords(weight=(("y", "x"), weight)).assign_attrs(blend=blend, size=size)
