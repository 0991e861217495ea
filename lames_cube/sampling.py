"""Sampling windows: the LAMES blind rule, and the geometric test checked sampling builds on.

"Where vs what" (DESIGN.md §4): samplers return window tables (as
:func:`lames_cube.patches.patch_table`) with a ``kind`` column; each table carries its seed and
the rule that made it in ``attrs``, so a draw can be repeated and compared.

Examples
--------
>>> from odc.geo.geobox import GeoBox
>>> from lames_cube.patches import patch_table
>>> g = GeoBox.from_bbox((300_000, 7_000_000, 310_240, 7_010_240), "EPSG:32719", resolution=10)
>>> drawn = sample_blind(patch_table(g, size=256), 3, seed=7)
>>> len(drawn), drawn.attrs["rule"], drawn.attrs["seed"], sorted(set(drawn.kind))
(3, 'blind', 7, ['blind'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from lames_cube.errors import InvalidQueryError


class NotEnoughWindowsError(InvalidQueryError):
    """More windows were asked for than the table or the raster holds."""


def _check_seed(seed: Any, *, allow_none: bool = False) -> int:
    """An integer seed; None draws one (from the OS) and returns it so it can be recorded."""
    if seed is None and allow_none:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InvalidQueryError(f"seed={seed!r} is not an integer; pass e.g. seed=1117 so the draw "
                                "can be repeated.")
    return int(seed)


def _check_n(n: Any, available: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InvalidQueryError(f"n={n!r} must be a non-negative integer number of windows.")
    if n > available:
        raise NotEnoughWindowsError(
            f"asked for n={n} windows but {what} holds only {available}; ask for at most "
            f"{available}, or use a larger area or a smaller window."
        )
    return int(n)


def sample_blind(table: gpd.GeoDataFrame, n: int, seed: int | None = None) -> gpd.GeoDataFrame:
    """The LAMES rule for "no-mine" patches: ``n`` windows drawn uniformly, without replacement,
    from a table, with no check of what they contain (LAMES used ``shuf`` over file names).

    Parameters
    ----------
    table
        Windows to draw from (e.g. :func:`lames_cube.patches.lames_patch_table`).
    n
        How many.
    seed
        An integer; None (as LAMES, unseeded) draws a seed and records it in ``attrs``.

    Returns
    -------
    geopandas.GeoDataFrame
        The drawn rows in table order, with ``kind`` "blind"; ``attrs``: the table's, plus
        ``rule`` "blind", ``seed`` and ``n``.

    Raises
    ------
    NotEnoughWindowsError
        ``n`` is larger than the table.
    InvalidQueryError
        ``seed`` is not an integer (or None).
    """
    seed = _check_seed(seed, allow_none=True)
    n = _check_n(n, len(table), "the table")
    pick = np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))
    out = table.iloc[pick].copy()
    out["kind"] = "blind"
    out.attrs = {**table.attrs, "rule": "blind", "seed": seed, "n": n}
    return out


def _polygons(polygons: Any, crs: Any, buffer_m: float) -> shapely.Geometry:
    """One geometry in ``crs`` from a GeoDataFrame/GeoSeries or a list of them, each buffered
    by ``buffer_m`` metres (in its local UTM zone, so that degrees never stand for metres)."""
    frames: Sequence[Any] = polygons if isinstance(polygons, list | tuple) else [polygons]
    parts = []
    for frame in frames:
        if not isinstance(frame, gpd.GeoDataFrame | gpd.GeoSeries):
            raise InvalidQueryError(
                f"polygons must be GeoDataFrames or GeoSeries (or a list of them); got "
                f"{type(frame).__name__}."
            )
        if frame.crs is None:
            raise InvalidQueryError("a polygon frame has no CRS; set it first (e.g. "
                                    "gdf.set_crs('EPSG:4326')).")
        if len(frame) == 0:
            continue
        series = frame.geometry
        if buffer_m:
            series = series.to_crs(series.estimate_utm_crs()).buffer(float(buffer_m))
        parts.append(shapely.union_all(series.to_crs(crs).values))
    return shapely.union_all(parts) if parts else shapely.GeometryCollection()


def touches(table: gpd.GeoDataFrame, polygons: Any, *, buffer_m: float = 0) -> np.ndarray:
    """True for each window whose box touches (intersects, boundary included) any polygon.

    Parameters
    ----------
    table
        Windows with geometry (any CRS).
    polygons
        A GeoDataFrame/GeoSeries or a list of them, in any CRS.
    buffer_m
        Grow the polygons by this many metres first.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from lames_cube.patches import patch_table
    >>> g = GeoBox.from_bbox((300_000, 7_000_000, 305_120, 7_002_560), "EPSG:32719",
    ...                      resolution=10)
    >>> t = patch_table(g, size=256)  # two windows side by side
    >>> mine = gpd.GeoSeries([shapely.Point(301_000, 7_001_000)], crs="EPSG:32719")
    >>> touches(t, mine).tolist(), touches(t, mine, buffer_m=1600).tolist()
    ([True, False], [True, True])
    """
    if buffer_m < 0:
        raise InvalidQueryError(f"buffer_m={buffer_m!r} must be >= 0 metres.")
    return _touches_geometry(table, _polygons(polygons, table.crs, buffer_m))


def _touches_geometry(table: gpd.GeoDataFrame, geom: shapely.Geometry) -> np.ndarray:
    if geom.is_empty:
        return np.zeros(len(table), bool)
    shapely.prepare(geom)
    return shapely.intersects(geom, table.geometry.values).astype(bool)


#: Above this many candidate positions, availability is not counted exactly up front.
_EXACT_POSITIONS = 50_000_000


def _mask(data: Any, what: str) -> np.ndarray:
    values = np.asarray(data.values if hasattr(data, "values") else data)
    if values.ndim != 2:
        raise InvalidQueryError(f"{what} must be a 2-D (y, x) array; got {values.ndim} dims.")
    return values


def sample_background(
    labels: Any,
    n: int,
    *,
    size: int = 256,
    exclude: Any = None,
    buffer_m: float = 0,
    max_invalid: float = 0.0,
    valid: Any = None,
    seed: int,
) -> gpd.GeoDataFrame:
    """Checked "no-mine" windows: ``n`` distinct windows at random pixel offsets that hold no
    mine pixel, touch no ``exclude`` polygon (grown by ``buffer_m``), and have at most
    ``max_invalid`` of their pixels invalid.

    Each candidate is checked in O(1) from summed-area tables of the forbidden pixels (mine
    labels, and the polygons rasterised with every touched pixel) and of the invalid ones; the
    chosen windows are then checked once more against the polygons with shapely, so a window
    whose box only grazes a polygon's edge is never kept.

    Parameters
    ----------
    labels
        ``(y, x)`` labels on the grid (``> 0`` is mine), e.g. ``rasterize(sectors, like=cube)``.
    n
        How many windows.
    size
        Window side in pixels.
    exclude
        Polygons to keep away from (GeoDataFrame/GeoSeries or a list of them, any CRS): LAMES
        sectors, site polygons, Maus footprints, the test sites' boxes.
    buffer_m
        Grow ``exclude`` by this many metres.
    max_invalid
        Largest fraction (0–1) of a window's pixels that may be invalid.
    valid
        ``(y, x)`` boolean, True where the imagery has data and is clear (default: all valid).
    seed
        An integer: the same seed gives the same table.

    Returns
    -------
    geopandas.GeoDataFrame
        As :func:`lames_cube.patches.patch_table`, with ``kind`` "background"; ``attrs``:
        ``rule`` "background", ``seed``, ``n``, ``buffer_m``, ``max_invalid``.

    Raises
    ------
    NotEnoughWindowsError
        Fewer such windows exist than ``n`` (the message names both numbers).
    InvalidQueryError, InvalidGridError
        Bad ``n``, ``size``, ``seed``, ``max_invalid``, or arrays not on the labels' grid.

    Examples
    --------
    >>> import xarray as xr
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> g = GeoBox.from_bbox((300_000, 7_000_000, 302_560, 7_002_560), "EPSG:32719",
    ...                      resolution=10)
    >>> labels = xr_zeros(g, dtype="uint8")
    >>> labels[100:140, 100:140] = 1  # a mine
    >>> t = sample_background(labels, 20, size=32, seed=1)
    >>> len(t), any((abs(t.row + 16 - 120) < 36) & (abs(t.col + 16 - 120) < 36))
    (20, False)
    """
    from lames_cube.patches import _geobox, _positive, window_table

    gbox = _geobox(labels, "labels")
    seed = _check_seed(seed)
    size = _positive(size, "size")
    if not 0 <= float(max_invalid) <= 1:
        raise InvalidQueryError(f"max_invalid={max_invalid!r} must be a fraction from 0 to 1.")
    height, width = (int(v) for v in gbox.shape)
    if size > min(height, width):
        raise InvalidQueryError(f"size={size} px is larger than the grid ({height} x {width} "
                                f"px); use a size up to {min(height, width)}.")
    forbidden = (_mask(labels, "labels") > 0).astype(np.uint8)
    geom = None
    if exclude is not None:
        from rasterio.features import rasterize

        geom = _polygons(exclude, gbox.crs.to_wkt(), buffer_m)
        if not geom.is_empty:
            # One pixel wider than the polygons: a window whose box only touches a polygon's
            # edge holds a marked pixel too (conservative by at most 1.5 px).
            pad = 1.5 * max(abs(gbox.affine.a), abs(gbox.affine.e))
            forbidden |= rasterize([geom.buffer(pad)], out_shape=(height, width),
                                   transform=gbox.affine, all_touched=True, dtype="uint8")
    invalid = None
    if valid is not None:
        if _geobox(valid, "valid") != gbox:
            raise InvalidQueryError("valid is not on the labels' grid; make it like the labels.")
        invalid = (~_mask(valid, "valid").astype(bool)).astype(np.uint8)
    from lames_cube import _kernels

    bad_sat = _kernels.summed_area(forbidden)
    inv_sat = _kernels.summed_area(invalid) if invalid is not None else None
    limit = int(np.floor(float(max_invalid) * size * size))

    def ok(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        good = _kernels.window_sums(bad_sat, rows, cols, size, size) == 0
        if inv_sat is not None:
            good &= _kernels.window_sums(inv_sat, rows, cols, size, size) <= limit
        return good

    ny, nx = height - size + 1, width - size + 1
    rng = np.random.default_rng(seed)
    n = _check_n(n, ny * nx, "the grid")
    chosen: list[tuple[int, int]] = []
    if ny * nx <= _EXACT_POSITIONS:  # count what exists, draw exactly from it when scarce
        rr, cc = (a.ravel() for a in np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij"))
        where = np.flatnonzero(ok(rr, cc))
        n = _check_n(n, where.size, f"the grid (windows of {size} px free of mines"
                     + (", excluded polygons" if exclude is not None else "") + ")")
        pick = rng.choice(where, size=n, replace=False)
        chosen = list(zip(rr[pick].tolist(), cc[pick].tolist(), strict=True))
    else:
        seen: set[tuple[int, int]] = set()
        for _ in range(200):
            rows, cols = rng.integers(0, ny, 4 * n + 64), rng.integers(0, nx, 4 * n + 64)
            keep = ok(rows, cols)
            for r, c in zip(rows[keep].tolist(), cols[keep].tolist(), strict=True):
                if (r, c) not in seen:
                    seen.add((r, c))
                    chosen.append((r, c))
            if len(chosen) >= n:
                break
        if len(chosen) < n:
            raise NotEnoughWindowsError(
                f"asked for n={n} windows but only {len(chosen)} free ones were found in "
                f"{200 * (4 * n + 64)} random draws over the grid; ask for fewer, or loosen "
                "exclude/max_invalid."
            )
        chosen = chosen[:n]
    rows, cols = (np.array(v, np.int64) for v in zip(*chosen, strict=True)) if chosen else \
        (np.zeros(0, np.int64), np.zeros(0, np.int64))
    order = np.lexsort((cols, rows))
    table = window_table(gbox, rows[order], cols[order], size)
    if geom is not None and len(table):
        grazing = _touches_geometry(table, geom)
        if grazing.any():  # cannot happen with the padded mask; never return such a window
            raise RuntimeError(f"{int(grazing.sum())} drawn windows touch an excluded polygon: "
                               "a bug in sample_background, please report it.")
    table["kind"] = "background"
    table.attrs.update(rule="background", seed=seed, n=int(n), buffer_m=float(buffer_m),
                       max_invalid=float(max_invalid), stride=None, edge="drop")
    return table
