"""Rasterisation of annotation polygons onto exactly the cube's grid.

:func:`rasterize` burns polygons (LAMES sites, sectors, footprints) into a ``(y, x)`` uint8
DataArray that carries ``like``'s GeoBox, so that ``labels.odc.geobox == cube.odc.geobox``.

Two paths give the same pixels:

* **eager** — one :func:`geocube.api.core.make_geocube` call over the whole grid (geocube burns
  with :func:`rasterio.features.rasterize`, ``MergeAlg.replace``, in row order). The grid geocube
  returns is checked against ``like``'s; any difference raises :class:`GridMismatchError`.
* **lazy** — a dask array with ``like``'s chunks. Planning (reprojection, burn order, a
  :class:`shapely.STRtree` query of every chunk's box) happens when the array is built; each chunk
  task then burns only the polygons that touch it, with the same rasterio call geocube makes, on
  the chunk's translated transform. Nothing is computed until asked, and memory per task is one
  chunk, whatever the size of the grid. Chosen automatically above :data:`LAZY_THRESHOLD_PX`.

Both paths burn the same *burn list*: the polygons reprojected to the grid's CRS, ordered by the
overlap rule (see :data:`OVERLAP_RULES`), optionally followed by the ignore ring.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from functools import partial
from typing import Any

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
import xarray as xr
from dask.highlevelgraph import HighLevelGraph
from geocube.api.core import make_geocube
from geocube.rasterize import rasterize_image
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.xr import wrap_xr, xr_coords
from rasterio.errors import NotGeoreferencedWarning

from lames_cube._quiet import ignore_warnings
from lames_cube.errors import (
    AnnotationError,
    GridMismatchError,
    InvalidGridError,
    InvalidQueryError,
    NoOverlapError,
)

__all__ = [
    "DEFAULT_CHUNK",
    "LAZY_THRESHOLD_PX",
    "OVERLAP_RULES",
    "burn_list",
    "rasterize",
]

#: Rules for pixels covered by several polygons with different values. Every rule is a stable
#: burn order (later polygons overwrite earlier ones; ties keep the frame's row order):
#:
#: ``"last"`` (default)
#:     the frame's row order: the last polygon wins. This is what ``gdal_rasterize``, geocube and
#:     the LAMES masks do, and what :meth:`lames_cube.synthetic.World.mine_classes` plants.
#: ``"max"`` / ``"min"``
#:     the largest / smallest value wins.
#: ``"smallest"``
#:     burn by area (in the grid's CRS) descending: small polygons win, so a plant digitised inside
#:     a facility keeps its own class.
#: ``"priority"``
#:     ``priority=[v1, v2, ...]`` lists values from the highest priority down; values not listed
#:     rank below all listed ones (and among themselves keep the row order).
OVERLAP_RULES = ("last", "max", "min", "smallest", "priority")

#: Grids with more pixels than this (64 Mpx, 64 MiB as uint8) are rasterised lazily when
#: ``lazy=None``.
LAZY_THRESHOLD_PX = 8192 * 8192

#: Chunk side of the lazy path when ``like`` carries no dask chunks (the LAMES tile of 2304 px).
DEFAULT_CHUNK = 2304

_BURN = "_burn"
_TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 4: "MultiPoint",
               5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}


# --------------------------------------------------------------------------------------------
# the grid


def _grid_of(like: Any) -> tuple[GeoBox, tuple[str, str] | None, tuple | None]:
    """GeoBox, spatial dim names and (y, x) dask chunks of ``like``."""
    if isinstance(like, GeoBox):
        gbox, dims, chunks = like, None, None
    elif isinstance(like, xr.DataArray | xr.Dataset):
        gbox = like.odc.geobox
        if gbox is None or not isinstance(gbox, GeoBox):
            raise InvalidGridError(
                f"like= has no spatial grid (dims {tuple(like.dims)}): expected a cube with y/x "
                "(or latitude/longitude) coordinates and a CRS. Pass the cube itself, or a GeoBox."
            )
        dims = tuple(like.odc.spatial_dims)
        chunks = None
        try:
            sizes = like.chunksizes
        except ValueError:  # a Dataset whose variables disagree on chunks: use none
            sizes = {}
        if sizes and all(d in sizes for d in dims):
            chunks = (tuple(sizes[dims[0]]), tuple(sizes[dims[1]]))
    else:
        raise InvalidGridError(
            f"like= is a {type(like).__name__}; expected an xarray DataArray/Dataset with an odc "
            "GeoBox (a cube) or an odc.geo.geobox.GeoBox."
        )
    if gbox.crs is None:
        raise InvalidGridError(
            f"like= has no CRS (grid {gbox.shape.yx} px, transform {tuple(gbox.affine)[:6]}): "
            "polygons cannot be placed on it. Give the cube a CRS, e.g. "
            "odc.geo.xr.assign_crs(cube, 'EPSG:32719'), or pass a GeoBox with a CRS."
        )
    if not gbox.axis_aligned:
        raise InvalidGridError(
            f"like= has a rotated grid ({gbox.affine}); only axis-aligned grids can be burnt into. "
            "Reproject the cube onto a north-up grid first (cube.odc.reproject(...))."
        )
    return gbox, dims, chunks


def _describe(gbox: GeoBox) -> str:
    a = gbox.affine
    crs = gbox.crs.epsg if gbox.crs is not None and gbox.crs.epsg else gbox.crs
    return (f"shape {tuple(gbox.shape.yx)}, CRS {crs}, transform "
            f"({a.a!r}, {a.b!r}, {a.c!r}, {a.d!r}, {a.e!r}, {a.f!r})")


def _check_same_grid(got: GeoBox, want: GeoBox, what: str) -> None:
    same = (
        tuple(got.shape.yx) == tuple(want.shape.yx)
        and got.crs == want.crs
        and tuple(got.affine)[:6] == tuple(want.affine)[:6]
    )
    if not same:
        raise GridMismatchError(
            f"{what} is not on like's grid:\n  got:      {_describe(got)}\n"
            f"  expected: {_describe(want)}\nThis is a bug in the rasterisation backend; "
            "use lazy=True (rasterio per chunk) as a workaround and report it."
        )


# --------------------------------------------------------------------------------------------
# the polygons


def _check_polygons(gdf: Any, gbox: GeoBox | None = None) -> gpd.GeoDataFrame:
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise AnnotationError(
            f"Expected a geopandas GeoDataFrame of polygons, got {type(gdf).__name__}. "
            "Load annotations with lames_cube.annotations.load_sites()/load_sectors() or "
            "geopandas.read_file()."
        )
    if len(gdf) == 0:
        raise AnnotationError(
            "The GeoDataFrame is empty (0 polygons): there is nothing to rasterise. Check the "
            "file or the filter that selected the polygons (an all-zero mask needs no polygons: "
            "use xarray.zeros_like)."
        )
    if gdf.crs is None:
        raise AnnotationError(
            f"The {len(gdf)} polygons have no CRS: their coordinates cannot be placed on the grid. "
            "Declare it, e.g. gdf.set_crs('EPSG:4326') for lon/lat."
        )
    geoms = gdf.geometry.values
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.all():
        raise AnnotationError(
            f"All {len(gdf)} geometries are missing or empty: there is nothing to rasterise. Check "
            "the file or the filter that selected the polygons."
        )
    types = shapely.get_type_id(geoms[~missing])
    bad = ~np.isin(types, (3, 6))  # Polygon, MultiPolygon
    if bad.any():
        kinds = sorted(set(shapely.get_type_id(geoms[~missing][bad]).tolist()))
        kinds = [_TYPE_NAMES.get(k, str(k)) for k in kinds]
        raise AnnotationError(
            f"{int(bad.sum())} geometries are not polygons ({kinds}): rasterize burns areas. "
            "Buffer points/lines first (gdf.buffer(...)) or drop them."
        )
    if missing.any():
        gdf = gdf[~missing]
    _check_declared_crs(gdf, gbox)
    return gdf


def _looks_like_degrees(gdf: gpd.GeoDataFrame) -> bool:
    """Projected CRS in length units, but every coordinate within lon/lat ranges."""
    crs = gdf.crs
    if crs is None or crs.is_geographic or not crs.axis_info:
        return False
    west, south, east, north = (float(v) for v in gdf.total_bounds)
    return (max(abs(west), abs(east)) <= 180 and max(abs(south), abs(north)) <= 90
            and crs.axis_info[0].unit_name in ("metre", "meter", "US survey foot", "foot"))


def _check_declared_crs(gdf: gpd.GeoDataFrame, gbox: GeoBox | None = None) -> None:
    """Coordinates that cannot be in the declared CRS (e.g. metres declared as EPSG:4326)."""
    west, south, east, north = (float(v) for v in gdf.total_bounds)
    crs = gdf.crs
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise AnnotationError(
            f"The polygons have non-finite coordinates (bounds {gdf.total_bounds}); drop or repair "
            "those geometries (e.g. gdf[gdf.geometry.is_valid])."
        )
    if crs.is_geographic:
        if west < -180.0001 or east > 360.0001 or south < -90.0001 or north > 90.0001:
            raise AnnotationError(
                f"The polygons' coordinates (bounds x {west:.6g}..{east:.6g}, y {south:.6g}.."
                f"{north:.6g}) are outside the lon/lat range of their declared CRS "
                f"{crs.to_string()} (x -180..180, y -90..90): the data is in another CRS. "
                "Declare the real one, e.g. gdf.set_crs('EPSG:32719', allow_override=True)."
            )
        return
    if _looks_like_degrees(gdf) and gbox is not None:
        # read as lon/lat, do they fall on the grid? Then the declared CRS is wrong.
        fp = gbox.footprint("EPSG:4326", npoints=20).geom
        if shapely.intersects(shapely.box(west, south, east, north), fp):
            raise AnnotationError(
                f"The polygons' coordinates (bounds x {west:.6g}..{east:.6g}, y {south:.6g}.."
                f"{north:.6g}) look like lon/lat degrees on the grid, but their declared CRS "
                f"{crs.to_string()} is in {crs.axis_info[0].unit_name}s: the data is in another "
                "CRS. Declare the real one, e.g. gdf.set_crs('EPSG:4326', allow_override=True)."
            )
    aou = crs.area_of_use
    if aou is None:
        return
    try:
        from pyproj import Transformer  # local: optional, guarded

        tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        ax0, ay0, ax1, ay1 = tr.transform_bounds(aou.west, aou.south, aou.east, aou.north)
    except Exception:  # pragma: no cover - exotic CRS: skip the check
        return
    if not all(math.isfinite(v) for v in (ax0, ay0, ax1, ay1)):  # pragma: no cover
        return
    wx, wy = ax1 - ax0, ay1 - ay0  # allow the CRS's own width/height beyond its area of use
    if east < ax0 - wx or west > ax1 + wx or north < ay0 - wy or south > ay1 + wy:
        raise AnnotationError(
            f"The polygons' coordinates (bounds x {west:.6g}..{east:.6g}, y {south:.6g}.."
            f"{north:.6g}) are far outside the area of use of their declared CRS "
            f"{crs.to_string()} (x {ax0:.6g}..{ax1:.6g}, y {ay0:.6g}..{ay1:.6g}): the data is in "
            "another CRS (lon/lat?). Declare the real one, e.g. "
            "gdf.set_crs('EPSG:4326', allow_override=True)."
        )


def _values(gdf: gpd.GeoDataFrame, value: Any) -> np.ndarray:
    """The uint8 burn value of every row."""
    if isinstance(value, str):
        if value not in gdf.columns:
            present = [c for c in gdf.columns if c != gdf.geometry.name]
            raise AnnotationError(
                f"value={value!r} is not a column of the polygons; present columns: {present}. "
                f"Pass one of them (e.g. value='class' for LAMES sectors) or a number (value=1)."
            )
        col = gdf[value]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            raise AnnotationError(
                f"Column {value!r} has dtype {col.dtype}, not numbers: map it to integer class "
                "values first (e.g. with lames_cube.annotations' class table)."
            )
        vals = col.to_numpy(dtype="float64", na_value=np.nan)
        what = f"column {value!r}"
    else:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise InvalidQueryError(
                f"value={value!r} ({type(value).__name__}): expected a number 0..255 or a column name."
            )
        vals = np.full(len(gdf), float(value))
        what = f"value={value!r}"
    bad = ~np.isfinite(vals) | (vals < 0) | (vals > 255) | (vals != np.round(vals))
    if bad.any():
        examples = pd.unique(vals[bad])[:5].tolist()
        raise AnnotationError(
            f"{what} has {int(bad.sum())} value(s) that do not fit a uint8 label (e.g. {examples}): "
            "labels are integers 0..255 (0 = background). Fill or drop missing values and map "
            "the rest to class integers."
        )
    return vals.astype(np.uint8)


def _burn_order(geoms: np.ndarray, vals: np.ndarray, overlap: str, priority) -> np.ndarray:
    n = len(vals)
    if overlap == "last":
        return np.arange(n)
    if overlap == "max":
        return np.argsort(vals, kind="stable")
    if overlap == "min":
        return np.argsort(-vals.astype(np.int16), kind="stable")
    if overlap == "smallest":
        return np.argsort(-shapely.area(geoms), kind="stable")
    # priority: rank 0 = highest priority, burnt last
    prio = [int(v) for v in priority]
    rank = np.full(n, len(prio), dtype=np.int64)
    for r, v in enumerate(prio):
        rank[(vals == v) & (rank == len(prio))] = r
    return np.argsort(-rank, kind="stable")


def _validate_options(overlap, priority, ignore_value, ignore_buffer, lazy) -> int | None:
    if overlap not in OVERLAP_RULES:
        raise InvalidQueryError(
            f"overlap={overlap!r} is not one of {OVERLAP_RULES}; pick one of them."
        )
    if overlap == "priority":
        if priority is None or isinstance(priority, str) or len(priority) == 0:
            raise InvalidQueryError(
                "overlap='priority' needs priority=[...]: the values from the highest priority "
                "down, e.g. priority=[6, 4, 3, 7, 5, 8, 9] for LAMES sector classes."
            )
    elif priority is not None:
        raise InvalidQueryError(
            f"priority= is only used with overlap='priority' (got overlap={overlap!r}); pass "
            "overlap='priority' or drop priority=."
        )
    if lazy not in (None, True, False):
        raise InvalidQueryError(f"lazy={lazy!r}: expected None (automatic), True or False.")
    if ignore_buffer is None:
        if ignore_value is not None:
            raise InvalidQueryError(
                f"ignore_value={ignore_value!r} without ignore_buffer: give the ring's half-width "
                "in metres, e.g. ignore_buffer=10, ignore_value=255."
            )
        return None
    if not isinstance(ignore_buffer, int | float) or not ignore_buffer > 0 or not math.isfinite(ignore_buffer):
        raise InvalidQueryError(
            f"ignore_buffer={ignore_buffer!r}: expected a positive distance in metres (e.g. 10)."
        )
    ignore_value = 255 if ignore_value is None else ignore_value
    if isinstance(ignore_value, bool) or not isinstance(ignore_value, int | np.integer) \
            or not 0 < int(ignore_value) <= 255:
        raise InvalidQueryError(f"ignore_value={ignore_value!r}: expected an integer 1..255 (e.g. 255).")
    return int(ignore_value)


def _metric_crs(gbox: GeoBox, gdf: gpd.GeoDataFrame):
    if not gbox.crs.geographic and gbox.crs.units[0] in ("metre", "m", "meter"):
        return gbox.crs.to_wkt()
    return gdf.estimate_utm_crs()


def _ignore_ring(local: gpd.GeoDataFrame, gbox: GeoBox, buffer_m: float) -> np.ndarray:
    """Polygons of the ±buffer ring around the borders of every value (in the grid's CRS).

    The borders are those of the union of the polygons of each value, so borders between two
    values and between a value and the background are uncertain, but shared edges inside one
    value are not.
    """
    metric = _metric_crs(gbox, local)
    m = local.to_crs(metric)
    rings = []
    for _, part in m.groupby(_BURN, sort=True):
        union = shapely.union_all(part.geometry.values)
        rings.append(shapely.buffer(shapely.boundary(union), buffer_m))
    ring = gpd.GeoSeries(rings, crs=m.crs).explode(index_parts=False)
    ring = ring[~ring.is_empty].to_crs(gbox.crs.to_wkt())
    return ring.values


def burn_list(
    gdf: gpd.GeoDataFrame,
    *,
    like: Any,
    value: int | float | str = 1,
    overlap: str = "last",
    priority: Sequence[int] | None = None,
    ignore_value: int | None = None,
    ignore_buffer: float | None = None,
) -> gpd.GeoDataFrame:
    """The polygons :func:`rasterize` burns, in the grid's CRS and in burn order.

    The plan behind both the eager and the lazy path: polygons that cannot touch the grid are
    dropped, the rest reprojected to the grid's CRS, ordered by the overlap rule and followed by
    the ignore ring. Later rows overwrite earlier ones.

    Parameters
    ----------
    gdf, like, value, overlap, priority, ignore_value, ignore_buffer
        As for :func:`rasterize`.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``_burn`` (uint8) and geometry in ``like``'s CRS; ``attrs["grid"]`` is the GeoBox.

    Raises
    ------
    AnnotationError, NoOverlapError, InvalidGridError, InvalidQueryError
        See :func:`rasterize`.

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> from odc.geo.geobox import GeoBox
    >>> g = GeoBox.from_bbox((0, 0, 100, 100), "EPSG:32719", resolution=10)
    >>> polys = gpd.GeoDataFrame({"c": [3, 5]}, crs="EPSG:32719",
    ...                          geometry=[shapely.box(0, 0, 50, 50), shapely.box(10, 10, 20, 20)])
    >>> burn_list(polys, like=g, value="c", overlap="max")["_burn"].tolist()
    [3, 5]
    """
    ignore_value = _validate_options(overlap, priority, ignore_value, ignore_buffer, False)
    gbox, _, _ = _grid_of(like)
    gdf = _check_polygons(gdf, gbox)
    vals = _values(gdf, value)
    if ignore_value is not None and np.any(vals == ignore_value):
        raise InvalidQueryError(
            f"ignore_value={ignore_value} is also a burn value of {int((vals == ignore_value).sum())} "
            "polygon(s): pick an ignore value no class uses (255 by default)."
        )
    frame = gpd.GeoDataFrame({_BURN: vals}, geometry=gdf.geometry.values, crs=gdf.crs)

    # 1. cheap prefilter in the polygons' CRS: the grid's footprint, with a margin for the ring
    extent = gbox.extent.geom
    pad = 0.0 if ignore_buffer is None else float(ignore_buffer)
    keep = np.ones(len(frame), bool)
    try:
        fp = gbox.footprint(CRS(frame.crs.to_wkt()), npoints=100).geom
        x0, y0, x1, y1 = shapely.bounds(fp)
        if np.isfinite([x0, y0, x1, y1]).all():
            # generous: this only saves reprojecting far-away polygons; the exact test follows
            margin = 0.01 * max(x1 - x0, y1 - y0)
            margin += (0.01 + 3 * pad / 111_000) if frame.crs.is_geographic else (1_000.0 + 3 * pad)
            keep = shapely.intersects(frame.geometry.values, shapely.buffer(fp, margin))
    except Exception:  # pragma: no cover - footprint not expressible in the polygons' CRS
        pass
    cand = frame[keep]

    # 2. exact test in the grid's CRS
    if len(cand):
        cand = cand.to_crs(gbox.crs.to_wkt())
        geoms = cand.geometry.values
        finite = np.isfinite(shapely.bounds(geoms)).all(axis=1)
        grid_area = shapely.buffer(extent, pad) if pad else extent
        hit = finite & shapely.intersects(geoms, grid_area)
        cand = cand[hit]
    if len(cand) == 0:
        poly_ll = frame.to_crs("EPSG:4326").total_bounds
        grid_ll = gbox.footprint("EPSG:4326").geom.bounds
        raise NoOverlapError(
            f"The grid does not overlap any of the {len(frame)} polygons.\n"
            f"  grid extent (lon/lat):     {_fmt_bounds(grid_ll)}  ({_describe(gbox)})\n"
            f"  polygons extent (lon/lat): {_fmt_bounds(poly_ll)}\n"
            "Rasterise onto a cube that covers the polygons, or select the polygons of the "
            "cube's area (e.g. gdf.cx[west:east, south:north])."
            + (f" Note: their coordinates look like lon/lat degrees although the declared CRS "
               f"{frame.crs.to_string()} is projected; check gdf.crs." if _looks_like_degrees(frame)
               else "")
        )
    in_grid = cand
    if pad:  # polygons kept only for their ring do not burn their value into the grid
        inside = shapely.intersects(in_grid.geometry.values, extent)
    else:
        inside = np.ones(len(in_grid), bool)
    order = _burn_order(in_grid.geometry.values, in_grid[_BURN].to_numpy(), overlap, priority)
    out = in_grid.iloc[order]
    out = out[inside[order]]
    n_polygons = len(out)
    if ignore_value is not None:
        ring = _ignore_ring(in_grid, gbox, float(ignore_buffer))
        ring = ring[shapely.intersects(ring, extent)]
        ring_frame = gpd.GeoDataFrame(
            {_BURN: np.full(len(ring), ignore_value, np.uint8)}, geometry=ring, crs=out.crs
        )
        out = pd.concat([out, ring_frame], ignore_index=True)
    out = gpd.GeoDataFrame(out.reset_index(drop=True), geometry="geometry", crs=gbox.crs.to_wkt())
    out[_BURN] = out[_BURN].astype(np.uint8)
    out.attrs["grid"] = gbox
    out.attrs["n_polygons"] = n_polygons
    out.attrs["n_ring"] = len(out) - n_polygons
    return out


def _fmt_bounds(b) -> str:
    w, s, e, n = (float(v) for v in b)
    return f"west {w:.6f}, south {s:.6f}, east {e:.6f}, north {n:.6f}"


# --------------------------------------------------------------------------------------------
# the two paths


def _quiet_burn():
    """Around a burn: ignore rasterio's NotGeoreferencedWarning from ``rasterio.features``.

    rasterio.features.rasterize, called from several threads at once (the lazy path under
    dask's threaded scheduler), may warn that its in-memory dataset "has no geotransform"
    although the transform is passed and used (the pixels equal a single-threaded burn;
    rasterio's own silencing of the warning races between threads).
    Only that warning, only while a burn runs (:func:`lames_cube._quiet.ignore_warnings`).
    """
    return ignore_warnings(NotGeoreferencedWarning, "rasterio.features")


def _eager(burn: gpd.GeoDataFrame, gbox: GeoBox, all_touched: bool) -> np.ndarray:


    # geocube reads the grid from like.odc.geobox: a coords-only Dataset holds no pixels.
    like = xr.Dataset(coords=xr_coords(gbox))
    with _quiet_burn():
        ds = make_geocube(
            burn[[_BURN, "geometry"]],
            measurements=[_BURN],
            like=like,
            fill=0,
            rasterize_function=partial(rasterize_image, all_touched=all_touched),
        )
    out = ds[_BURN]
    height, width = out.rio.shape
    got = GeoBox((height, width), out.rio.transform(), CRS(out.rio.crs.to_wkt()))
    _check_same_grid(got, gbox, "geocube's output")
    return np.asarray(out.values).astype(np.uint8, copy=False)


class _BlockBurner:
    """Task callable: burn the listed polygons of the burn list into one chunk."""

    def __init__(self, gbox: GeoBox, all_touched: bool) -> None:
        self.affine = gbox.affine
        self.all_touched = bool(all_touched)

    def __call__(self, burn, idx, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        if len(idx) == 0:
            return np.zeros((h, w), dtype=np.uint8)
        geoms, vals = burn
        # The same call geocube's rasterize_image makes, on the chunk's translated transform.
        with _quiet_burn():  # in the task: the thread (or worker process) that burns
            return rasterio.features.rasterize(
                zip(geoms[idx], vals[idx], strict=True),
                out_shape=(h, w),
                transform=self.affine @ self.affine.translation(x0, y0),
                fill=0,
                all_touched=self.all_touched,
                dtype="uint8",
            )


def _identity(x):
    return x


def _token(burn: gpd.GeoDataFrame, gbox: GeoBox, chunks, all_touched: bool) -> str:
    h = hashlib.sha1()
    for wkb in shapely.to_wkb(burn.geometry.values):
        h.update(wkb)
    h.update(burn[_BURN].to_numpy().tobytes())
    h.update(repr((tuple(gbox.affine)[:6], tuple(gbox.shape.yx), gbox.crs.to_wkt(), chunks,
                   all_touched)).encode())
    return h.hexdigest()[:24]


def _lazy(burn: gpd.GeoDataFrame, gbox: GeoBox, chunks, all_touched: bool) -> da.Array:
    ychunks, xchunks = chunks
    y_off = np.concatenate([[0], np.cumsum(ychunks)]).astype(int)
    x_off = np.concatenate([[0], np.cumsum(xchunks)]).astype(int)
    geoms = np.asarray(burn.geometry.values, dtype=object)
    vals = burn[_BURN].to_numpy(np.uint8)

    # every chunk's box in grid coordinates, one pixel wider on each side
    a = gbox.affine
    iy, ix = np.meshgrid(np.arange(len(ychunks)), np.arange(len(xchunks)), indexing="ij")
    iy, ix = iy.ravel(), ix.ravel()
    c0, c1 = x_off[ix] - 1, x_off[ix + 1] + 1
    r0, r1 = y_off[iy] - 1, y_off[iy + 1] + 1
    xa, xb = a.c + a.a * c0, a.c + a.a * c1
    ya, yb = a.f + a.e * r0, a.f + a.e * r1
    boxes = shapely.box(np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb))
    tree = shapely.STRtree(geoms)
    bi, gi = tree.query(boxes, predicate="intersects")
    order = np.lexsort((gi, bi))  # by chunk, then burn order
    bi, gi = bi[order], gi[order]
    starts = np.searchsorted(bi, np.arange(len(boxes)))
    ends = np.searchsorted(bi, np.arange(len(boxes)), side="right")

    token = _token(burn, gbox, chunks, all_touched)
    name = f"rasterize-{token}"
    burn_key = f"rasterize-burnlist-{token}"
    burner = _BlockBurner(gbox, all_touched)
    layer: dict[Hashable, Any] = {burn_key: (_identity, (geoms, vals))}
    for k, (j, i) in enumerate(zip(iy.tolist(), ix.tolist(), strict=True)):
        idx = gi[starts[k]:ends[k]]
        layer[(name, j, i)] = (burner, burn_key, idx, int(y_off[j]), int(x_off[i]),
                               int(ychunks[j]), int(xchunks[i]))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks=(tuple(ychunks), tuple(xchunks)), dtype=np.uint8,
                    meta=np.empty((0, 0), dtype=np.uint8))


def _normalise_chunks(chunks, gbox: GeoBox) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(chunks, int):
        chunks = (chunks, chunks)
    try:
        return da.core.normalize_chunks(chunks, tuple(gbox.shape.yx), dtype=np.uint8)
    except Exception as err:
        raise InvalidQueryError(
            f"chunks={chunks!r} cannot tile the grid of {tuple(gbox.shape.yx)} px: give an int "
            f"(e.g. {DEFAULT_CHUNK}) or (y, x) chunk sizes."
        ) from err


# --------------------------------------------------------------------------------------------
# the entry point


def rasterize(
    gdf: gpd.GeoDataFrame,
    *,
    like: Any,
    value: int | float | str = 1,
    all_touched: bool = False,
    overlap: str = "last",
    priority: Sequence[int] | None = None,
    ignore_value: int | None = None,
    ignore_buffer: float | None = None,
    lazy: bool | None = None,
    chunks: int | tuple | None = None,
) -> xr.DataArray:
    """Burn polygons onto exactly ``like``'s grid.

    Parameters
    ----------
    gdf
        Polygons (Polygon/MultiPolygon) with a declared CRS; reprojected to the grid's CRS.
    like
        A cube (DataArray/Dataset with an odc GeoBox, e.g. from :func:`lames_cube.build_cube`)
        or an :class:`odc.geo.geobox.GeoBox`. The output has exactly its grid.
    value
        A number 0..255 burnt for every polygon (the LAMES site rule: ``1``) or the name of an
        integer column (``"class"`` for LAMES sectors).
    all_touched
        Burn every pixel a polygon touches (True) or only pixels whose centre is inside (False,
        the LAMES rule).
    overlap
        Which value wins where polygons overlap; one of :data:`OVERLAP_RULES` (default ``"last"``,
        the row order, as in LAMES/gdal_rasterize; ``"smallest"`` lets small polygons win).
    priority
        For ``overlap="priority"``: values from the highest priority down.
    ignore_value, ignore_buffer
        With ``ignore_buffer`` (metres), the ring of ± ``ignore_buffer`` around the borders of each
        value's polygons (borders between values and with the background) is set to
        ``ignore_value`` (default 255), burnt last. The buffer is applied in the grid's CRS when
        it is metric, else in the polygons' local UTM zone.
    lazy
        True: a dask array with ``like``'s chunks, each chunk burning only the polygons that touch
        it (nothing computed). False: one eager geocube call. None (default): lazy when the grid
        has more than :data:`LAZY_THRESHOLD_PX` pixels.
    chunks
        Lazy path only: chunk sizes when ``like`` has none (default :data:`DEFAULT_CHUNK`);
        ``like``'s own dask chunks take precedence.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` uint8 (0 = background) with ``like``'s coordinates and GeoBox
        (``out.odc.geobox == like.odc.geobox``). ``attrs`` record ``value``, ``overlap``,
        ``all_touched``, ``n_polygons``, ``lazy`` and the ignore settings.

    Raises
    ------
    AnnotationError
        Not a GeoDataFrame, empty, no CRS, coordinates outside their declared CRS, non-polygon
        geometries, a missing or non-integer value column, values outside 0..255.
    NoOverlapError
        No polygon overlaps the grid (the message prints both extents).
    InvalidGridError
        ``like`` has no grid or no CRS.
    GridMismatchError
        The backend returned another grid than ``like``'s (both printed).
    InvalidQueryError
        Bad options (overlap rule, priority, ignore settings, lazy, chunks).

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> from odc.geo.geobox import GeoBox
    >>> g = GeoBox.from_bbox((0, 0, 100, 100), "EPSG:32719", resolution=10)
    >>> polys = gpd.GeoDataFrame({"class": [5]}, geometry=[shapely.box(20, 20, 60, 60)],
    ...                          crs="EPSG:32719")
    >>> mask = rasterize(polys, like=g, value="class")
    >>> int(mask.sum()) // 5, mask.dtype.name, mask.odc.geobox == g
    (16, 'uint8', True)
    >>> lazy = rasterize(polys, like=g, value="class", lazy=True, chunks=4)
    >>> bool((lazy.compute() == mask).all())
    True
    """
    ignore_value = _validate_options(overlap, priority, ignore_value, ignore_buffer, lazy)
    gbox, dims, like_chunks = _grid_of(like)
    burn = burn_list(gdf, like=gbox, value=value, overlap=overlap, priority=priority,
                     ignore_value=ignore_value, ignore_buffer=ignore_buffer)
    h, w = gbox.shape.yx
    if lazy is None:
        lazy = h * w > LAZY_THRESHOLD_PX
    if lazy:
        norm = like_chunks or _normalise_chunks(DEFAULT_CHUNK if chunks is None else chunks, gbox)
        if like_chunks is not None and chunks is not None:
            norm = _normalise_chunks(chunks, gbox)
        data = _lazy(burn, gbox, norm, all_touched)
    else:
        data = _eager(burn, gbox, all_touched)
    attrs: dict[str, Any] = {
        "value": value,
        "overlap": overlap,
        "all_touched": bool(all_touched),
        "fill": 0,
        "n_polygons": int(burn.attrs["n_polygons"]),
        "lazy": bool(lazy),
        "backend": "rasterio per chunk (STRtree)" if lazy else "geocube",
    }
    if overlap == "priority":
        attrs["priority"] = [int(v) for v in priority]
    if ignore_value is not None:
        attrs["ignore_value"] = ignore_value
        attrs["ignore_buffer_m"] = float(ignore_buffer)
    out = wrap_xr(data, gbox, nodata=None, dims=dims)
    out.attrs.pop("nodata", None)
    out.attrs.update(attrs)
    out.name = value if isinstance(value, str) else "labels"
    return out
