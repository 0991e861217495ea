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

import concurrent.futures as cf
from collections.abc import Sequence
from typing import Any

import dask
import geopandas as gpd
import numpy as np
import shapely
import xarray as xr
from dask.diagnostics import ProgressBar
from rasterio.features import rasterize

from lames_cube import _kernels
from lames_cube._checks import check_positive_int, check_seed
from lames_cube.errors import (
    InvalidQueryError,
    NotEnoughWindowsError,
)
from lames_cube.grid import geobox_of
from lames_cube.patches import check_table, window_table


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
    seed = check_seed(seed, allow_none=True)
    n = _check_n(n, len(table), "the table")
    pick = np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))
    out = table.iloc[pick].copy()
    out["kind"] = "blind"
    out.attrs = {**table.attrs, "rule": "blind", "seed": seed, "n": n}
    return out


def sample_checked(table: gpd.GeoDataFrame, n: int, *, exclude: Any, buffer_m: float = 0,
                   seed: int) -> gpd.GeoDataFrame:
    """The LAMES rule made safe: ``n`` windows drawn uniformly from those of a table that touch
    no ``exclude`` polygon grown by ``buffer_m`` metres (the checked twin of
    :func:`sample_blind`, for tables such as :func:`lames_cube.patches.lames_patch_table`; use
    :func:`sample_background` to check label pixels at any offset).

    Parameters
    ----------
    table
        Windows to draw from.
    n
        How many.
    exclude
        Polygons (GeoDataFrame/GeoSeries or a list of them, any CRS): LAMES sectors and site
        polygons, Maus footprints, the test sites' boxes.
    buffer_m
        Grow them by this many metres first.
    seed
        An integer.

    Returns
    -------
    geopandas.GeoDataFrame
        The drawn rows in table order, ``kind`` "checked"; ``attrs``: the table's, plus ``rule``
        "checked", ``seed``, ``n``, ``buffer_m``, ``available``.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from lames_cube.patches import patch_table
    >>> g = GeoBox.from_bbox((300_000, 7_000_000, 305_120, 7_002_560), "EPSG:32719",
    ...                      resolution=10)
    >>> mine = gpd.GeoSeries([shapely.Point(301_000, 7_001_000)], crs="EPSG:32719")
    >>> sample_checked(patch_table(g, size=256), 1, exclude=mine, seed=0)[["row", "col"]].values
    array([[  0, 256]])
    """
    seed = check_seed(seed)
    free = table[~touches(table, exclude, buffer_m=buffer_m)]
    n = _check_n(n, len(free), f"the table (windows clear of the excluded polygons"
                 f"{f' by {buffer_m:g} m' if buffer_m else ''})")
    pick = np.sort(np.random.default_rng(seed).choice(len(free), size=n, replace=False))
    out = free.iloc[pick].copy()
    out["kind"] = "checked"
    out.attrs = {**table.attrs, "rule": "checked", "seed": seed, "n": n,
                 "buffer_m": float(buffer_m), "available": len(free)}
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


#: Side (in window positions) of the blocks the numpy path splits a grid into.
BLOCK = 2048


def _mask(data: Any, what: str) -> Any:
    """The 2-D array behind ``data``: a dask array stays lazy, anything else becomes NumPy."""
    values = data.data if isinstance(data, xr.DataArray) else data
    if not hasattr(values, "dask"):
        values = np.asarray(values)
    if values.ndim != 2:
        raise InvalidQueryError(f"{what} must be a 2-D (y, x) array; got {values.ndim} dims.")
    return values


def _edges(length: int, chunks: Sequence[int] | None) -> list[int]:
    """Block edges over ``length`` positions: the labels' chunk edges, or every :data:`BLOCK`."""
    if chunks is None:
        return [*range(0, length, BLOCK), length]
    edges = [int(e) for e in np.cumsum([0, *chunks]) if e < length]
    return [*edges, length]


def _block_bits(labels: np.ndarray, invalid_src: np.ndarray | None, geom: Any,
                affine: Any, size: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean-window map of one block (labels given with a trailing ``size - 1`` px halo)."""

    bad = (np.asarray(labels) > 0).view(np.uint8)
    if geom is not None:
        height, width = bad.shape
        x0, y1 = affine @ (0, 0)
        x1, y0 = affine @ (width, height)
        clip = shapely.clip_by_rect(geom, min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if not clip.is_empty:
            bad = bad | rasterize([clip], out_shape=(height, width), transform=affine,
                                  all_touched=True, dtype="uint8")
    invalid = None
    if invalid_src is not None:
        invalid = (~np.asarray(invalid_src).astype(bool)).view(np.uint8)
        if not invalid.any():
            invalid = None
    if not bad.any() and invalid is None:  # nothing to avoid: every window is clean
        ny, nx = bad.shape[0] - size + 1, bad.shape[1] - size + 1
        return np.ones((ny, nx), bool), np.full(ny, nx, np.int64)
    return _kernels.clean_positions(np.ascontiguousarray(bad), invalid, size, limit)


def _row_starts(rows: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)


def _summary(labels, invalid, geom, affine, size, limit, keep: bool):
    bits, rows = _block_bits(labels, invalid, geom, affine, size, limit)
    return int(rows.sum()), (_row_starts(rows), _kernels.pack_rows(bits)) if keep else None


def _draw(labels, invalid, geom, affine, size, limit, local: np.ndarray) -> np.ndarray:
    """Positions (block-relative ``(k, 2)``) of the ``local``-th clean windows of a block."""

    bits, rows = _block_bits(labels, invalid, geom, affine, size, limit)
    return _kernels.locate_bits(_kernels.pack_rows(bits), _row_starts(rows), local,
                                parallel=False)


def _join(blocks, parts) -> tuple[np.ndarray, ...]:
    """The blocks' packed rows as one array (padded to the widest), with their row starts
    (cumulative set bits), grid rows and first columns."""
    width = max(p[1][1].shape[1] for p in parts)
    packed = np.zeros((sum(p[1][1].shape[0] for p in parts), width), np.uint8)
    counts, row_y, row_x, at = [], [], [], 0
    for (y0, y1, x0, _), (_, (starts, bits)) in zip(blocks, parts, strict=True):
        packed[at:at + bits.shape[0], :bits.shape[1]] = bits
        at += bits.shape[0]
        counts.append(np.diff(starts))
        row_y.append(np.arange(y0, y1))
        row_x.append(np.full(y1 - y0, x0))
    return (packed, _row_starts(np.concatenate(counts)), np.concatenate(row_y),
            np.concatenate(row_x))


class BackgroundIndex:
    """Every clean window of a grid, counted exactly, ready to be drawn from many times.

    Built by :func:`background_index` (see there); :meth:`sample` draws. The grid is split into
    blocks (the labels' dask chunks, or :data:`BLOCK`-position squares for NumPy labels); each
    block's clean windows are found from its summed-area tables (O(1) per window) and counted
    per row. For NumPy labels the clean-window map is kept, one bit per position; for lazy
    labels only the counts are, and a draw re-reads the blocks it lands in.
    """

    def __init__(self, gbox, blocks, counts, packed, reader, settings) -> None:
        self.geobox = gbox
        self.blocks = blocks
        self.counts = np.asarray(counts, np.int64)
        # NumPy labels: the rows of every block, in block order, packed to 64-bit words, with
        # the set bit each row starts at, and each row's grid row and first column.
        self._packed = packed
        self._reader = reader
        self.settings = settings

    @property
    def count(self) -> int:
        """How many clean windows the grid holds."""
        return int(self.counts.sum())

    def __repr__(self) -> str:
        h, w = self.geobox.shape
        return (f"BackgroundIndex({self.count:,} clean {self.settings['size']}-px windows of "
                f"{(h - self.settings['size'] + 1) * (w - self.settings['size'] + 1):,} on a "
                f"{h} x {w} grid, {len(self.blocks)} blocks)")

    def draw(self, n: int, *, seed: int) -> np.ndarray:
        """``n`` distinct clean windows drawn uniformly (without replacement): their top-left
        pixels as ``(n, 2)`` int64 (row, col), sorted; :meth:`sample` makes the table."""

        seed = check_seed(seed)
        n = _check_n(n, self.count, self.settings["what"])
        starts = np.concatenate([[0], np.cumsum(self.counts)])
        ranks = np.sort(np.random.default_rng(seed).choice(self.count, size=n, replace=False))
        if self._packed is not None:  # one lookup over the rows of every block
            packed, row_starts, row_y, row_x = self._packed
            found = _kernels.locate_bits(packed, row_starts, ranks)
            at = np.stack([row_y[found[:, 0]], row_x[found[:, 0]] + found[:, 1]], axis=1)
        else:  # lazy labels: read again the blocks the draw lands in

            block = np.searchsorted(starts, ranks, side="right") - 1
            hit, first = np.unique(block, return_index=True)
            todo = [(b, ranks[lo:hi] - starts[b])
                    for b, lo, hi in zip(hit, first, [*first[1:], n], strict=True)]
            parts = dask.compute(*[self._reader(b, local) for b, local in todo])
            at = np.concatenate([np.zeros((0, 2), np.int64)] + [
                part + np.array(self.blocks[b][::2])
                for (b, _), part in zip(todo, parts, strict=True)])
        return at[np.lexsort((at[:, 1], at[:, 0]))]

    def sample(self, n: int, *, seed: int) -> gpd.GeoDataFrame:
        """``n`` distinct clean windows drawn uniformly (without replacement) from all of them,
        as a window table (see :func:`sample_background`).

        Raises
        ------
        NotEnoughWindowsError
            Fewer clean windows exist than ``n`` (the message names both numbers).
        """

        seed = check_seed(seed)
        at = self.draw(n, seed=seed)
        n = len(at)
        table = window_table(self.geobox, at[:, 0], at[:, 1], self.settings["size"])
        geom = self.settings.get("geom")
        if geom is not None and len(table):
            grazing = _touches_geometry(table, geom)
            if grazing.any():  # cannot happen with the padded mask; never return such a window
                raise RuntimeError(f"{int(grazing.sum())} drawn windows touch an excluded "
                                   "polygon: a bug in sample_background, please report it.")
        table["kind"] = "background"
        table.attrs.update(rule="background", seed=seed, n=int(n),
                           buffer_m=self.settings["buffer_m"],
                           max_invalid=self.settings["max_invalid"], stride=None, edge="drop",
                           available=self.count)
        return table


def background_index(labels: Any, *, size: int = 256, exclude: Any = None, buffer_m: float = 0,
                     max_invalid: float = 0.0, valid: Any = None,
                     progress: bool = False) -> BackgroundIndex:
    """Find and count every clean window of a grid once (see :func:`sample_background`).

    Parameters are those of :func:`sample_background`; ``progress`` shows a bar over the blocks
    of lazy labels. ``labels`` and ``valid`` may be lazy (dask) country-sized arrays: each
    block reads its chunk plus a ``size - 1`` px halo, and memory stays bounded by a block.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> g = GeoBox.from_bbox((0, 0, 640, 640), "EPSG:32719", resolution=10)  # 64 x 64 px
    >>> labels = xr_zeros(g, dtype="uint8")
    >>> labels[0, 0] = 1  # one mine pixel: only the windows over it are lost
    >>> index = background_index(labels, size=32)
    >>> index.count == 33 * 33 - 1, len(index.sample(5, seed=0))
    (True, 5)
    """
    gbox = geobox_of(labels, "labels")
    size = check_positive_int(size, "size")
    if not 0 <= float(max_invalid) <= 1:
        raise InvalidQueryError(f"max_invalid={max_invalid!r} must be a fraction from 0 to 1.")
    if buffer_m < 0:
        raise InvalidQueryError(f"buffer_m={buffer_m!r} must be >= 0 metres.")
    height, width = (int(v) for v in gbox.shape)
    if size > min(height, width):
        raise InvalidQueryError(f"size={size} px is larger than the grid ({height} x {width} "
                                f"px); use a size up to {min(height, width)}.")
    lab = _mask(labels, "labels")
    inv = None
    if valid is not None:
        if geobox_of(valid, "valid") != gbox:
            raise InvalidQueryError("valid is not on the labels' grid; make it like the labels.")
        inv = _mask(valid, "valid")
    geom = None
    geom_raw = None
    if exclude is not None:
        geom_raw = _polygons(exclude, gbox.crs.to_wkt(), buffer_m)
        if not geom_raw.is_empty:
            # One pixel wider than the polygons: a window whose box only touches a polygon's
            # edge holds a marked pixel too (conservative by at most 1.5 px).
            geom = geom_raw.buffer(1.5 * max(abs(gbox.affine.a), abs(gbox.affine.e)))
        else:
            geom_raw = None
    limit = int(np.floor(float(max_invalid) * size * size))
    ny, nx = height - size + 1, width - size + 1
    lazy = hasattr(lab, "dask") or (inv is not None and hasattr(inv, "dask"))
    chunks = (lab.chunks if hasattr(lab, "dask") else inv.chunks) if lazy else (None, None)
    ys, xs = _edges(ny, chunks[0]), _edges(nx, chunks[1])
    blocks = [(ys[i], ys[i + 1], xs[j], xs[j + 1])
              for i in range(len(ys) - 1) for j in range(len(xs) - 1)]

    def args(b):
        y0, y1, x0, x1 = blocks[b]
        window = (slice(y0, y1 + size - 1), slice(x0, x1 + size - 1))
        return (lab[window], None if inv is None else inv[window], geom,
                gbox.affine @ gbox.affine.translation(x0, y0), size, limit)

    what = (f"the grid ({size}-px windows free of mines"
            + (", off the excluded polygons" if exclude is not None else "")
            + (f", at most {float(max_invalid):.0%} invalid" if valid is not None else "") + ")")
    settings = {"size": size, "buffer_m": float(buffer_m), "max_invalid": float(max_invalid),
                "geom": geom_raw, "what": what}
    if not lazy:
        with cf.ThreadPoolExecutor() as pool:  # the kernels release the GIL
            parts = list(pool.map(lambda b: _summary(*args(b), keep=True), range(len(blocks))))
        return BackgroundIndex(gbox, blocks, [p[0] for p in parts], _join(blocks, parts),
                               None, settings)

    shared = dask.delayed(geom) if geom is not None else None

    def task(fn, b, *extra):
        a = list(args(b))
        a[2] = shared
        return dask.delayed(fn, pure=True)(*a, *extra)

    summaries = [task(_summary, b, False) for b in range(len(blocks))]
    if progress:
        with ProgressBar():
            parts = dask.compute(*summaries)
    else:
        parts = dask.compute(*summaries)
    return BackgroundIndex(gbox, blocks, [p[0] for p in parts], None,
                           lambda b, local: task(_draw, b, local), settings)


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
    """Checked "no-mine" windows: ``n`` distinct windows drawn uniformly from all the windows
    (at any pixel offset) that hold no mine pixel, touch no ``exclude`` polygon (grown by
    ``buffer_m``), and have at most ``max_invalid`` of their pixels invalid.

    Each window is checked in O(1) from summed-area tables of the forbidden pixels (mine
    labels, and the polygons rasterised with every touched pixel) and of the invalid ones; every
    clean window is counted first (:func:`background_index`), so the draw is exact and uniform
    however scarce clean windows are; the chosen windows are then checked once more against the
    polygons with shapely, so a window whose box only grazes a polygon's edge is never kept.

    Parameters
    ----------
    labels
        ``(y, x)`` labels on the grid (``> 0`` is mine), e.g. ``rasterize(sectors, like=cube)``;
        NumPy-backed, or lazy (dask) and country-sized: then it is read chunk by chunk (with a
        ``size - 1`` px halo), twice at most, and never held whole.
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
        ``(y, x)`` boolean on the same grid, True where the imagery has data and is clear, or
        where windows may lie (e.g. a rasterised country outline); default: all valid.
    seed
        An integer: the same seed gives the same table.

    Returns
    -------
    geopandas.GeoDataFrame
        As :func:`lames_cube.patches.patch_table`, sorted by row and column, with ``kind``
        "background"; ``attrs``: ``rule`` "background", ``seed``, ``n``, ``buffer_m``,
        ``max_invalid``, ``available`` (how many clean windows there were).

    Raises
    ------
    NotEnoughWindowsError
        Fewer such windows exist than ``n`` (the message names both numbers).
    InvalidQueryError, InvalidGridError
        Bad ``n``, ``size``, ``seed``, ``max_invalid``, or arrays not on the labels' grid.

    Examples
    --------
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
    seed = check_seed(seed)
    _check_n(n, np.iinfo(np.int64).max, "the grid")
    index = background_index(labels, size=size, exclude=exclude, buffer_m=buffer_m,
                             max_invalid=max_invalid, valid=valid)
    return index.sample(n, seed=seed)


BALANCES = (None, "fraction", "class")


def _quotas(n: int, available: Sequence[int]) -> list[int]:
    """``n`` split as evenly as possible over groups holding ``available`` items each (a group
    that holds fewer gives its share to the others); raises when they hold fewer than ``n``."""
    quota = [0] * len(available)
    left, open_ = n, [i for i, a in enumerate(available) if a > 0]
    while left and open_:
        share, extra = divmod(left, len(open_))
        for k, i in enumerate(open_):
            take = min(share + (k < extra), available[i] - quota[i])
            quota[i] += take
            left -= take
        open_ = [i for i in open_ if quota[i] < available[i]]
    return quota


def sample_positive(
    labels: Any,
    n: int,
    *,
    size: int = 256,
    min_fraction: float,
    balance: str | None = "fraction",
    bins: int = 4,
    classes: Sequence[int] | None = None,
    table: gpd.GeoDataFrame | None = None,
    seed: int,
) -> gpd.GeoDataFrame:
    """Mine windows: ``n`` distinct windows whose mine pixels (``labels > 0``) cover at least
    ``min_fraction`` of them, balanced so that small mine fractions or common classes do not
    crowd out the rest.

    Parameters
    ----------
    labels
        ``(y, x)`` labels on the grid (``> 0`` is mine; the value is the class), read into
        memory (a per-site cube's labels).
    n
        How many windows.
    size
        Window side in pixels.
    min_fraction
        Least share of a window's pixels that must be mine (with ``balance="class"``: of the
        class it is drawn for), in (0, 1].
    balance
        ``None``: uniform over the eligible windows. ``"fraction"``: equal numbers from ``bins``
        equal-width bins of mine fraction between ``min_fraction`` and 1 (LAMES' patches are
        mostly mine edges; this keeps whole-mine windows in). ``"class"``: equal numbers per
        class (the sector task's rare classes), each window drawn for one class.
        A bin or class with too few windows gives its share to the others.
    bins
        Number of fraction bins for ``balance="fraction"``.
    classes
        The classes to balance over (default: every value > 0 in ``labels``).
    table
        Draw from these windows only (e.g. ``patch_table(labels, stride=128)``, on the labels'
        grid); default: every pixel offset.
    seed
        An integer: the same seed gives the same table.

    Returns
    -------
    geopandas.GeoDataFrame
        As :func:`lames_cube.patches.patch_table`, sorted by row and column, with ``kind``
        "positive", ``fraction`` (mine share of the window) and, with ``balance="class"``,
        ``class`` and ``class_fraction``; ``attrs``: ``rule`` "positive", ``seed``, ``n``,
        ``min_fraction``, ``balance``, ``bins``, ``available`` (eligible windows per group).

    Raises
    ------
    NotEnoughWindowsError
        Fewer eligible windows exist than ``n`` (the message names both numbers).
    InvalidQueryError, InvalidGridError
        Bad ``n``, ``size``, ``min_fraction``, ``balance``, ``seed``, or a table on another grid.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> g = GeoBox.from_bbox((0, 0, 1280, 1280), "EPSG:32719", resolution=10)  # 128 x 128 px
    >>> labels = xr_zeros(g, dtype="uint8")
    >>> labels[40:80, 40:80] = 1
    >>> t = sample_positive(labels, 8, size=32, min_fraction=0.25, seed=0)
    >>> len(t), bool((t.fraction >= 0.25).all()), t.attrs["available"]
    (8, True, [1008, 688, 444, 357])
    """

    gbox = geobox_of(labels, "labels")
    seed = check_seed(seed)
    size = check_positive_int(size, "size")
    if isinstance(min_fraction, bool) or not isinstance(min_fraction, int | float) or \
            not 0 < float(min_fraction) <= 1:
        raise InvalidQueryError(f"min_fraction={min_fraction!r} must be a fraction in (0, 1], "
                                "e.g. 0.05 for windows that are at least 5 % mine.")
    if balance not in BALANCES:
        raise InvalidQueryError(f"balance={balance!r} is not one of {BALANCES}; pick one.")
    bins = check_positive_int(bins, "bins", 4, unit=None)
    height, width = (int(v) for v in gbox.shape)
    if size > min(height, width):
        raise InvalidQueryError(f"size={size} px is larger than the grid ({height} x {width} "
                                f"px); use a size up to {min(height, width)}.")
    values = _mask(labels, "labels")
    values = np.asarray(values.compute() if hasattr(values, "dask") else values)
    if table is not None:
        rows, cols, tsize = check_table(table, gbox)
        if tsize != size:
            raise InvalidQueryError(f"the table's windows are {tsize} px but size={size}; pass "
                                    f"size={tsize}.")
        inside = (rows >= 0) & (cols >= 0) & (rows <= height - size) & (cols <= width - size)
        rows, cols = rows[inside], cols[inside]
    else:
        ny, nx = height - size + 1, width - size + 1
        if ny * nx > 2e8:
            raise InvalidQueryError(
                f"the grid has {ny * nx:,} window positions, too many to weigh one by one; "
                f"pass table=patch_table(labels, size={size}, stride={size // 2}) to draw from "
                "a lattice.")
        rows, cols = (a.ravel() for a in np.meshgrid(np.arange(ny), np.arange(nx),
                                                      indexing="ij"))
    area = float(size * size)

    def share(mask: np.ndarray) -> np.ndarray:
        sums = _kernels.window_sums(_kernels.summed_area(mask.view(np.uint8)), rows, cols, size,
                                    size)
        return sums / area

    fraction = share(values > 0)
    n = _check_n(n, np.iinfo(np.int64).max, "the grid")
    rng = np.random.default_rng(seed)
    extra: dict[str, np.ndarray] = {}
    if balance == "class":
        present = sorted(int(v) for v in np.unique(values) if v > 0)
        wanted = present if classes is None else [int(c) for c in classes]
        shares = [share(values == c) for c in wanted]
        groups = [np.flatnonzero(f >= min_fraction) for f in shares]
        chosen: list[int] = []
        klass: list[int] = []
        taken = np.zeros(rows.size, bool)
        need = n
        # Rarest class first, so that a window eligible for several goes to the rarest.
        remaining = [int(i) for i in np.argsort([g.size for g in groups], kind="stable")]
        while need and remaining:
            quota = _quotas(need, [int((~taken[groups[i]]).sum()) for i in remaining])
            for i, q in zip(remaining, quota, strict=True):
                cand = groups[i][~taken[groups[i]]]  # a rarer class may just have taken some
                q = min(q, cand.size)
                if q:
                    pick = rng.choice(cand, size=q, replace=False)
                    taken[pick] = True
                    chosen += pick.tolist()
                    klass += [i] * q
                    need -= q
            remaining = [i for i in remaining if (~taken[groups[i]]).any()]
        available = [int(g.size) for g in groups]
        if need:
            raise NotEnoughWindowsError(
                f"asked for n={n} windows but the grid holds only {len(chosen)} distinct windows "
                f"at least {min_fraction:g} of one class of {wanted}; ask for fewer or lower "
                "min_fraction.")
        pick = np.array(chosen, np.int64)
        extra["class"] = np.array([wanted[i] for i in klass], np.int64)
        extra["class_fraction"] = np.array([shares[i][w] for i, w in zip(klass, chosen,
                                                                         strict=True)])
    else:
        eligible = np.flatnonzero(fraction >= min_fraction)
        if balance == "fraction":
            edges = np.linspace(float(min_fraction), 1.0, bins + 1)
            which = np.clip(np.searchsorted(edges, fraction[eligible], side="right") - 1, 0,
                            bins - 1)
            groups = [eligible[which == b] for b in range(bins)]
        else:
            groups = [eligible]
        available = [int(g.size) for g in groups]
        n = _check_n(n, sum(available), f"the grid (windows of {size} px at least "
                     f"{min_fraction:g} mine)")
        quota = _quotas(n, available)
        pick = np.concatenate([rng.choice(g, size=q, replace=False)
                               for g, q in zip(groups, quota, strict=True)] or
                              [np.zeros(0, np.int64)])
    order = np.lexsort((cols[pick], rows[pick]))
    pick = pick[order]
    out = window_table(gbox, rows[pick], cols[pick], size)
    out["kind"] = "positive"
    out["fraction"] = fraction[pick]
    for name, column in extra.items():
        out[name] = column[order]
    out.attrs.update(rule="positive", seed=seed, n=int(n), min_fraction=float(min_fraction),
                     balance=balance, bins=bins if balance == "fraction" else None,
                     available=available, stride=None, edge="drop")
    return out
