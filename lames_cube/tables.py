"""Sample tables as data: saved, read, concatenated, diffed and plotted.

"Where vs what" (DESIGN.md §4): a window table (:func:`lames_cube.patches.patch_table`, a
sampler of :mod:`lames_cube.sampling`) is a GeoDataFrame of windows on a grid (``row``, ``col``,
the window's box in the grid's CRS) whose ``attrs`` say how it was made: ``size``, ``grid``
and, for a draw, ``rule``, ``seed`` and ``n``. This module keeps that record with the table:

- :func:`save_table` / :func:`read_table`: GeoParquet, ``attrs`` kept in the file's key-value
  metadata (``lames_cube:attrs``, JSON), written atomically;
- :func:`concat_tables`: draws on one grid put together, each part's rule and seed recorded;
- :func:`diff_tables`: the windows only in one table, only in the other, and in both;
- :func:`plot_table`: the windows' outlines coloured by ``kind`` over an optional cube quicklook
  or label mask (matplotlib, Agg; a PNG with ``path=``).

Examples
--------
>>> import tempfile, pathlib
>>> from odc.geo.geobox import GeoBox
>>> from lames_cube.patches import patch_table
>>> from lames_cube.sampling import sample_blind
>>> g = GeoBox.from_bbox((300_000, 7_000_000, 302_560, 7_002_560), "EPSG:32719", resolution=10)
>>> windows = patch_table(g, size=32)  # 8 x 8 windows
>>> a, b = sample_blind(windows, 10, seed=1), sample_blind(windows, 10, seed=2)
>>> path = save_table(concat_tables([a, b]), pathlib.Path(tempfile.mkdtemp()) / "draws.parquet")
>>> both = read_table(path)
>>> len(both), both.attrs["rule"], [p["seed"] for p in both.attrs["parts"]]
(20, 'concat', [1, 2])
>>> d = diff_tables(a, b)
>>> len(d.only_a) + len(d.both) == len(a)
True
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
import xarray as xr
from pyproj import CRS

from lames_cube._atomic import atomic_path
from lames_cube.errors import (  # noqa: F401 (re-exported)
    GridMismatchError,
    InvalidGridError,
    InvalidQueryError,
    LamesCubeError,
    NotAWindowTableError,
    TableMismatchError,
    TableNotFoundError,
)
from lames_cube.grid import geobox_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ATTRS_KEY",
    "NotAWindowTableError",
    "TableDiff",
    "TableMismatchError",
    "TableNotFoundError",
    "concat_tables",
    "diff_tables",
    "plot_table",
    "read_table",
    "save_table",
]

#: The Parquet key-value metadata key that holds a table's ``attrs`` (JSON).
ATTRS_KEY = b"lames_cube:attrs"

#: The ``rule`` of a table that has none (a plain :func:`~lames_cube.patches.patch_table`).
DEFAULT_RULE = "patches"

#: Window outline colours, in order of the sorted ``by`` values: bright enough over imagery,
#: dark enough on white, none of them the red of the label overlay.
PALETTE = ("#00bfff", "#ffa500", "#ff00ff", "#32cd32", "#9400d3", "#ffff00", "#8c564b",
           "#17becf", "#7f7f7f", "#000080")

#: Colour of the label overlay (pixels with a label > 0).
MASK_COLOR = "#ff0000"

#: Longest side, in pixels, of a background drawn under the windows (larger ones are decimated).
QUICKLOOK_PX = 1600



# --------------------------------------------------------------------------- helpers
def _json_safe(value: Any, where: str = "attrs") -> Any:
    """``value`` with NumPy scalars/arrays as Python numbers/lists and tuples as lists."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist(), where)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidQueryError(
                    f"{where} has the key {key!r} ({type(key).__name__}); a saved table's attrs "
                    "need string keys. Rename it, e.g. table.attrs[str(key)] = ...")
            out[key] = _json_safe(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_json_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise InvalidQueryError(
        f"{where} is a {type(value).__name__} ({value!r:.80}), which JSON cannot hold; a saved "
        "table's attrs hold numbers, strings, None, lists and dicts. Convert it first (e.g. "
        "str(value)) or delete it from table.attrs.")


def _check_frame(table: Any, what: str = "table") -> gpd.GeoDataFrame:
    if not isinstance(table, gpd.GeoDataFrame):
        raise NotAWindowTableError(
            f"{what} is a {type(table).__name__}, not a window table; pass a GeoDataFrame "
            "from patch_table, a sampler (sample_blind, sample_background) or read_table.")
    missing = [c for c in ("row", "col") if c not in table.columns]
    if missing:
        raise NotAWindowTableError(
            f"{what} has no {' and no '.join(missing)} column (columns: {list(table.columns)}); "
            "a window table has row and col (pixel offsets) and a geometry: make it with "
            "patch_table or a sampler.")
    return table


def _grid_id(table: gpd.GeoDataFrame, what: str) -> tuple[str, Any]:
    """What identifies the grid a table was cut from: ``attrs['grid']`` or, for LAMES patch
    tables (one grid per tile), ``attrs['source']``."""
    grid = table.attrs.get("grid")
    if isinstance(grid, str):
        grid = json.loads(grid)
    if grid:
        return "grid", _json_safe(grid)
    if table.attrs.get("source") and "tile" in table.columns:
        return "source", table.attrs["source"]
    raise NotAWindowTableError(
        f"{what} has no attrs['grid'], so it cannot be compared with another table; make it "
        "with patch_table(like, ...) or a sampler, keep the attrs when filtering (boolean "
        "selection and .copy() keep them) or read it with read_table.")


def _size(table: gpd.GeoDataFrame, what: str) -> int:
    size = table.attrs.get("size")
    if size is None:
        raise NotAWindowTableError(
            f"{what} has no attrs['size'] (the window side in pixels); make it with patch_table "
            "or a sampler, or set it: table.attrs['size'] = 256.")
    return int(size)


def _describe(table: gpd.GeoDataFrame) -> str:
    rule = table.attrs.get("rule", DEFAULT_RULE)
    seed = table.attrs.get("seed")
    return f"{rule}, seed {seed}" if seed is not None else str(rule)


def _same_grid(tables: Sequence[gpd.GeoDataFrame], names: Sequence[str]) -> tuple[tuple, int]:
    grid0, size0 = _grid_id(tables[0], names[0]), _size(tables[0], names[0])
    for table, name in zip(tables[1:], names[1:], strict=True):
        grid, size = _grid_id(table, name), _size(table, name)
        if grid != grid0:
            raise TableMismatchError(
                f"{names[0]} and {name} are on different grids: {names[0]} has {grid0[0]} "
                f"{grid0[1]!r}, {name} has {grid[0]} {grid[1]!r}. Only windows of one grid can "
                "be put together or compared; draw both from tables of the same cube.")
        if size != size0:
            raise TableMismatchError(
                f"{names[0]} has windows of {size0} px but {name} has windows of {size} px; "
                "tables to put together or compare need one window size.")
        if table.crs != tables[0].crs:
            raise TableMismatchError(
                f"{names[0]} is in {tables[0].crs} but {name} is in {table.crs}; reproject "
                f"{name} back with {name}.to_crs(...) or redraw it on the grid.")
    return grid0, size0


# --------------------------------------------------------------------------- files
def save_table(table: gpd.GeoDataFrame, path: str | os.PathLike) -> Path:
    """Write a window table to GeoParquet, with its ``attrs``, atomically.

    Parameters
    ----------
    table
        A window table (``row``, ``col``, geometry), e.g. from
        :func:`lames_cube.patches.patch_table` or a sampler. Its index is kept.
    path
        The ``.parquet`` file to write; missing folders are created, an existing file is
        replaced (readers see the old file or the new one, never half of one).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    NotAWindowTableError
        ``table`` is not a GeoDataFrame with ``row`` and ``col``.
    InvalidQueryError
        An ``attrs`` value JSON cannot hold (NumPy numbers and arrays are converted; tuples
        are stored as lists).

    Notes
    -----
    ``GeoDataFrame.to_parquet`` writes the GeoParquet; ``attrs`` go to the file's key-value
    metadata under :data:`ATTRS_KEY` as JSON, so any Parquet reader sees them
    (``pyarrow.parquet.read_schema(path).metadata[b"lames_cube:attrs"]``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from odc.geo.geobox import GeoBox
    >>> from lames_cube.patches import patch_table
    >>> g = GeoBox.from_bbox((0, 0, 640, 640), "EPSG:32719", resolution=10)
    >>> t = patch_table(g, size=32)
    >>> p = save_table(t, pathlib.Path(tempfile.mkdtemp()) / "windows.parquet")
    >>> read_table(p).attrs == t.attrs
    True
    """

    table = _check_frame(table)
    path = Path(path)
    attrs = json.dumps(_json_safe(dict(table.attrs)), allow_nan=True).encode()
    frame = table.copy()
    frame.attrs = {}  # ours go under ATTRS_KEY, not geopandas' PANDAS_ATTRS
    buffer = io.BytesIO()
    frame.to_parquet(buffer, compression=None)
    arrow = pq.read_table(io.BytesIO(buffer.getvalue()))
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), ATTRS_KEY: attrs})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, compression="zstd")
    return path


def read_table(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """Read a window table written by :func:`save_table`, ``attrs`` and CRS included.

    Parameters
    ----------
    path
        A GeoParquet file with ``row``, ``col`` and a geometry column.

    Returns
    -------
    geopandas.GeoDataFrame
        The table as saved: columns, index, CRS and ``attrs`` (lists where tuples were saved).
        A GeoParquet without :data:`ATTRS_KEY` (written by another tool) gets the attrs
        geopandas stored, if any.

    Raises
    ------
    TableNotFoundError
        No file at ``path`` (also a ``FileNotFoundError``).
    NotAWindowTableError
        Not a Parquet file, or one without ``row``, ``col`` or GeoParquet geometry (the
        message names what is missing).

    Examples
    --------
    >>> read_table("no/such/table.parquet")
    Traceback (most recent call last):
    ...
    lames_cube.errors.TableNotFoundError: no table at no/such/table.parquet: ...
    """

    path = Path(path)
    if not path.exists():
        raise TableNotFoundError(
            f"no table at {path}: the file does not exist. Check the path, or write the table "
            "first with save_table(table, path).")
    if path.is_dir():
        raise NotAWindowTableError(f"{path} is a folder; pass the table's .parquet file.")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise NotAWindowTableError(
            f"{path} is not a Parquet file ({exc}); pass a table written by save_table.") from exc
    metadata = schema.metadata or {}
    missing = [c for c in ("row", "col") if c not in schema.names]
    if b"geo" not in metadata:
        missing.append("geometry (GeoParquet 'geo' metadata)")
    if missing:
        raise NotAWindowTableError(
            f"{path} is not a window table: it has no {', no '.join(missing)} (columns: "
            f"{schema.names}). Window tables are written by save_table from patch_table or a "
            "sampler.")
    table = gpd.read_parquet(path)
    if ATTRS_KEY in metadata:
        table.attrs = json.loads(metadata[ATTRS_KEY])
    return table


# --------------------------------------------------------------------------- concat
def concat_tables(tables: Sequence[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """Put window tables of one grid and window size together, recording where each came from.

    Parameters
    ----------
    tables
        Window tables on the same grid (equal ``attrs["grid"]``; for LAMES patch tables equal
        ``attrs["source"]``) with the same ``attrs["size"]``, e.g. a blind draw and a checked
        background draw.

    Returns
    -------
    geopandas.GeoDataFrame
        The rows of every table in order, with a new index; a ``kind`` column (a part without
        one gets its ``attrs["rule"]``, or ``"patches"``) and ``part`` (the position of the row's
        part in ``attrs["parts"]``). ``attrs``: the common ``size`` and ``grid`` (or ``source``),
        ``rule`` ``"concat"``, ``n`` (all rows) and ``parts``: per part its ``rule``, ``seed``,
        ``n`` (its number of rows), ``kind`` (sorted kinds) and its other attrs (``stride``,
        ``buffer_m``, ...). Concatenated tables in ``tables`` contribute their own parts.

    Raises
    ------
    TableMismatchError
        Tables on different grids, with different window sizes or CRSs (names both).
    NotAWindowTableError
        A table without ``row``/``col``, ``attrs["grid"]`` or ``attrs["size"]``.
    InvalidQueryError
        No table given.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from lames_cube.patches import patch_table
    >>> from lames_cube.sampling import sample_blind
    >>> g = GeoBox.from_bbox((0, 0, 1280, 1280), "EPSG:32719", resolution=10)
    >>> windows = patch_table(g, size=16)
    >>> both = concat_tables([windows.iloc[:3], sample_blind(windows, 5, seed=4)])
    >>> both.groupby("kind").size().to_dict(), both.attrs["rule"], both.attrs["n"]
    ({'blind': 5, 'patches': 3}, 'concat', 8)
    >>> [(p["rule"], p["seed"], p["n"]) for p in both.attrs["parts"]]
    [('patches', None, 3), ('blind', 4, 5)]
    >>> concat_tables([windows, patch_table(g, size=32)])
    Traceback (most recent call last):
    ...
    lames_cube.errors.TableMismatchError: table 0 has windows of 16 px but table 1 has windows ...
    """
    if isinstance(tables, gpd.GeoDataFrame) or not isinstance(tables, Sequence) or not tables:
        raise InvalidQueryError(
            f"tables must be a non-empty list of window tables; got {type(tables).__name__}"
            + (" (an empty list)" if isinstance(tables, Sequence) and not tables else "")
            + ". Pass e.g. concat_tables([blind, background]).")
    names = [f"table {i}" for i in range(len(tables))]
    tables = [_check_frame(t, name) for t, name in zip(tables, names, strict=True)]
    (grid_key, grid), size = _same_grid(tables, names)
    frames, parts = [], []
    for table in tables:
        frame = table.copy()
        if table.attrs.get("rule") == "concat" and "part" in frame.columns:
            frame["part"] = frame["part"].astype(np.int64) + len(parts)
            parts.extend(dict(p) for p in table.attrs.get("parts", []))
        else:
            rule = table.attrs.get("rule", DEFAULT_RULE)
            kind = frame["kind"] if "kind" in frame.columns else pd.Series(
                pd.NA, index=frame.index, dtype=object)
            frame["kind"] = kind.astype(object).where(kind.notna(), rule)
            frame["part"] = np.int64(len(parts))
            extra = {k: v for k, v in table.attrs.items()
                     if k not in ("grid", "size", "source", "rule", "seed", "n", "parts")}
            parts.append({"rule": rule, "seed": table.attrs.get("seed"), "n": len(frame),
                          "kind": sorted(str(k) for k in frame["kind"].unique()), **extra})
        frames.append(frame)
    with warnings.catch_warnings():  # all-NA columns of some parts (e.g. tile) are fine here
        warnings.simplefilter("ignore", FutureWarning)
        out = pd.concat(frames, ignore_index=True)
    out = gpd.GeoDataFrame(out, geometry=tables[0].geometry.name, crs=tables[0].crs)
    out["part"] = out["part"].astype(np.int64)
    out.attrs = {"size": size, grid_key: grid, "rule": "concat", "n": len(out), "parts": parts}
    return out


# --------------------------------------------------------------------------- diff
@dataclass(frozen=True)
class TableDiff:
    """The windows of two tables, split by (``tile``,) ``row``, ``col``.

    Attributes
    ----------
    only_a, only_b
        The rows of ``a`` whose window is not in ``b``, and the rows of ``b`` not in ``a``.
    both
        The rows of ``a`` whose window is also in ``b``.
    keys
        The columns that identify a window.
    names
        How ``a`` and ``b`` are described in :meth:`summary` (their rule and seed).
    """

    only_a: gpd.GeoDataFrame
    only_b: gpd.GeoDataFrame
    both: gpd.GeoDataFrame
    keys: tuple[str, ...]
    names: tuple[str, str] = ("a", "b")

    @property
    def identical(self) -> bool:
        """True when both tables hold the same windows (order and duplicates aside)."""
        return len(self.only_a) == 0 and len(self.only_b) == 0

    def summary(self) -> str:
        """Counts of the three parts, one per line.

        Examples
        --------
        >>> empty = gpd.GeoDataFrame({"row": [], "col": []}, geometry=[])
        >>> print(TableDiff(empty, empty, empty, ("row", "col")).summary())
        windows keyed by (row, col): 0 only in a, 0 only in b, 0 in both
          only in a: 0
          only in b: 0
          in both:   0
        """
        a, b = self.names

        def kinds(frame: gpd.GeoDataFrame) -> str:
            if "kind" not in frame.columns or not len(frame):
                return ""
            counts = frame["kind"].value_counts().sort_index()
            return " (" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ")"

        return "\n".join([
            f"windows keyed by ({', '.join(self.keys)}): {len(self.only_a)} only in a, "
            f"{len(self.only_b)} only in b, {len(self.both)} in both",
            f"  only in a: {len(self.only_a)}{kinds(self.only_a)}" + (
                f"  [a: {a}]" if a != "a" else ""),
            f"  only in b: {len(self.only_b)}{kinds(self.only_b)}" + (
                f"  [b: {b}]" if b != "b" else ""),
            f"  in both:   {len(self.both)}{kinds(self.both)}",
        ])

    def __repr__(self) -> str:
        return "TableDiff: " + self.summary()


def diff_tables(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> TableDiff:
    """Which windows two tables share: only in ``a``, only in ``b``, in both.

    Parameters
    ----------
    a, b
        Window tables on the same grid with the same window size (as :func:`concat_tables`).
        Windows are matched by ``row`` and ``col`` (and ``tile`` when both have one, as LAMES
        patch tables do); other columns are not compared.

    Returns
    -------
    TableDiff
        ``only_a``, ``only_b`` and ``both`` (rows of ``a``), each in its table's order with
        its table's index and attrs; :meth:`TableDiff.summary` prints the counts.

    Raises
    ------
    TableMismatchError
        Different grids, window sizes or CRSs.
    NotAWindowTableError
        A table without ``row``/``col``, ``attrs["grid"]`` or ``attrs["size"]``.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from lames_cube.patches import patch_table
    >>> g = GeoBox.from_bbox((0, 0, 640, 640), "EPSG:32719", resolution=10)
    >>> t = patch_table(g, size=16)  # 4 x 4 windows
    >>> d = diff_tables(t.iloc[:10], t.iloc[6:])
    >>> len(d.only_a), len(d.only_b), len(d.both)
    (6, 6, 4)
    >>> print(d.summary().splitlines()[0])
    windows keyed by (row, col): 6 only in a, 6 only in b, 4 in both
    """
    a, b = _check_frame(a, "a"), _check_frame(b, "b")
    _same_grid([a, b], ["a", "b"])
    keys = ("tile", "row", "col") if "tile" in a.columns and "tile" in b.columns else ("row",
                                                                                      "col")
    ka = pd.MultiIndex.from_frame(pd.DataFrame({k: a[k].to_numpy() for k in keys}))
    kb = pd.MultiIndex.from_frame(pd.DataFrame({k: b[k].to_numpy() for k in keys}))
    in_b, in_a = ka.isin(kb), kb.isin(ka)

    def pick(table: gpd.GeoDataFrame, mask: np.ndarray, note: str) -> gpd.GeoDataFrame:
        out = table[mask].copy()
        out.attrs = {**table.attrs, "diff": note}
        return out

    return TableDiff(pick(a, ~in_b, "only in a"), pick(b, ~in_a, "only in b"),
                     pick(a, in_b, "in both"), keys, (_describe(a), _describe(b)))


# --------------------------------------------------------------------------- plotting
def _raster_extent(gbox: Any, ny: int, nx: int, step: int) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) of ``ny x nx`` pixels of ``step`` grid pixels."""
    a = gbox.affine
    x0, y0 = a.c, a.f
    x1, y1 = a.c + nx * step * a.a, a.f + ny * step * a.e
    return (x0, x1, y1, y0)


def _quicklook(cube: xr.DataArray, gbox: Any) -> tuple[np.ndarray, tuple, str]:
    """An RGBA float image (nodata transparent) of a ``(band, y, x)`` or ``(time, band, y, x)``
    cube: B04/B03/B02 (or the first 3, or 1 band), 2–98 percentile stretch, decimated."""
    ydim, xdim = (str(d) for d in cube.odc.spatial_dims)
    if "band" not in cube.dims:
        raise InvalidQueryError(
            f"the background has dims {list(cube.dims)} but no 'band' dim; pass a (band, y, x) "
            "or (time, band, y, x) cube, or (y, x) labels.")
    names = [str(b) for b in cube["band"].values] if "band" in cube.coords else []
    if {"B04", "B03", "B02"} <= set(names):
        cube, label = cube.sel(band=["B04", "B03", "B02"]), "B04, B03, B02"
    else:
        take = 3 if cube.sizes["band"] >= 3 else 1
        cube = cube.isel(band=slice(0, take))
        label = ", ".join(str(b) for b in (cube["band"].values if names else range(take)))
    step = max(1, math.ceil(max(cube.sizes[ydim], cube.sizes[xdim]) / QUICKLOOK_PX))
    small = cube.isel({ydim: slice(None, None, step), xdim: slice(None, None, step)})
    other = [d for d in small.dims if d not in ("band", ydim, xdim)]
    small = small.transpose(*other, "band", ydim, xdim)
    values = np.asarray(small.values, dtype=np.float64)
    nodata = cube.attrs.get("nodata", 0)
    if nodata is not None:
        values[values == nodata] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        while values.ndim > 3:
            values = np.nanmedian(values, axis=0)
        if other:
            label += f", median of {math.prod(cube.sizes[d] for d in other)} {other[0]} steps"
        valid = np.isfinite(values).all(axis=0)
        if valid.any():
            lo, hi = np.nanpercentile(values[:, valid], (2, 98))
        else:
            lo, hi = 0.0, 1.0
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)
    if scaled.shape[0] == 1:
        scaled = np.repeat(scaled, 3, axis=0)
    rgba = np.concatenate([np.nan_to_num(scaled), valid[None].astype(np.float64)])
    extent = _raster_extent(gbox, values.shape[1], values.shape[2], step)
    return np.moveaxis(rgba, 0, -1), extent, f"{label}, {lo:.0f}–{hi:.0f} stretched"


def _mask_overlay(labels: xr.DataArray, gbox: Any) -> tuple[np.ndarray, tuple]:
    """An RGBA image of ``labels > 0`` in :data:`MASK_COLOR` (block maximum when decimated, so
    small objects stay visible)."""
    from matplotlib.colors import to_rgb  # local: heavy matplotlib

    ydim, xdim = (str(d) for d in labels.odc.spatial_dims)
    step = max(1, math.ceil(max(labels.sizes[ydim], labels.sizes[xdim]) / QUICKLOOK_PX))
    on = np.asarray((labels > 0).transpose(ydim, xdim).values, dtype=bool)
    if step > 1:
        ny, nx = -(-on.shape[0] // step), -(-on.shape[1] // step)
        padded = np.zeros((ny * step, nx * step), bool)
        padded[: on.shape[0], : on.shape[1]] = on
        on = padded.reshape(ny, step, nx, step).any(axis=(1, 3))
    rgba = np.zeros((*on.shape, 4))
    rgba[..., :3] = to_rgb(MASK_COLOR)
    rgba[..., 3] = np.where(on, 0.55, 0.0)
    return rgba, _raster_extent(gbox, on.shape[0], on.shape[1], step)


def _outlines(geoms: np.ndarray) -> list[np.ndarray]:
    """The exterior rings of polygons as (n, 2) arrays."""
    rings = shapely.get_exterior_ring(geoms)
    coords, index = shapely.get_coordinates(rings, return_index=True)
    splits = np.flatnonzero(np.diff(index)) + 1
    return np.split(coords, splits) if len(coords) else []


def plot_table(
    table: gpd.GeoDataFrame,
    *,
    background: xr.DataArray | None = None,
    labels: xr.DataArray | None = None,
    ax: Axes | None = None,
    path: str | os.PathLike | None = None,
    by: str | None = "kind",
    title: str | None = None,
    colors: Mapping[Any, str] | None = None,
    figsize: tuple[float, float] = (8.0, 7.0),
    dpi: int = 100,
) -> Figure:
    """Draw a table's windows as outlines coloured by ``kind``, over an optional quicklook.

    Parameters
    ----------
    table
        A window table (any CRS).
    background
        Drawn under the windows: a ``(band, y, x)`` or ``(time, band, y, x)`` cube with a
        GeoBox (e.g. from :func:`lames_cube.build_cube`) as true colour (B04, B03, B02 when
        present, else the first 3 bands or the first one in grey; reflectance × 10 000
        stretched from its 2nd to 98th percentile; the median over time; nodata, from
        ``attrs["nodata"]`` or 0, transparent), or ``(y, x)`` labels shown as a red mask of
        the pixels ``> 0``. Large rasters are decimated to about 1600 px.
    labels
        ``(y, x)`` labels drawn as a red mask over a cube ``background``.
    ax
        Axes to draw on (its figure is returned); by default a new Agg figure.
    path
        Also save the figure there (atomically; PNG unless the suffix names another format).
    by
        The column whose values colour the windows (a legend gives each value's count); None
        draws every window in one colour. With ``by="kind"`` and no ``kind`` column, all
        windows are labelled with the table's rule.
    title
        Default: the table's rule, seed, number of windows and window size.
    colors
        Colour per value of ``by``; default :data:`PALETTE` in the order of the sorted values.
    figsize, dpi
        Size of a new figure in inches and its (and the saved file's) pixels per inch: the
        default PNG is 800 x 700 px.

    Returns
    -------
    matplotlib.figure.Figure
        The figure: ``fig.axes[0]`` is the map, ``fig.legends[0]`` the legend (with ``ax``
        given, the legend is ``ax.get_legend()``, inside the axes). The map is in the table's
        CRS, or with a background in the background's CRS (the windows reprojected when they
        differ).

    Raises
    ------
    NotAWindowTableError
        ``table`` is not a GeoDataFrame with a CRS.
    InvalidQueryError
        A ``by`` column the table lacks, or a background that is neither a cube nor labels.
    InvalidGridError
        A background or labels without a GeoBox, or labels in another CRS than the cube.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from lames_cube.patches import patch_table
    >>> from lames_cube.sampling import sample_blind
    >>> g = GeoBox.from_bbox((0, 0, 640, 640), "EPSG:32719", resolution=10)
    >>> t = sample_blind(patch_table(g, size=16), 5, seed=1)
    >>> fig = plot_table(t)
    >>> [x.get_text() for x in fig.legends[0].get_texts()]
    ['blind (5)']
    >>> fig.axes[0].get_title()
    'blind, seed 1: 5 windows of 16 px'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # local: heavy matplotlib
    from matplotlib.collections import LineCollection  # local: heavy matplotlib
    from matplotlib.figure import Figure  # local: heavy matplotlib
    from matplotlib.lines import Line2D  # local: heavy matplotlib
    from matplotlib.patches import Patch  # local: heavy matplotlib

    if not isinstance(table, gpd.GeoDataFrame):
        raise NotAWindowTableError(f"table is a {type(table).__name__}; pass a window table "
                                   "(a GeoDataFrame from patch_table, a sampler or read_table).")
    if table.crs is None:
        raise NotAWindowTableError("the table has no CRS; set it (table.set_crs(...)) first.")
    if by is not None and by not in table.columns and by != "kind":
        raise InvalidQueryError(f"by={by!r} is not a column of the table (columns: "
                                f"{list(table.columns)}); pass one of them, or by=None.")
    frame = table
    images: list[tuple[np.ndarray, tuple]] = []
    note = None
    if background is not None or labels is not None:
        if background is not None and (not isinstance(background, xr.DataArray)
                                       or background.ndim not in (2, 3, 4)):
            raise InvalidQueryError(
                f"background must be a (band, y, x) or (time, band, y, x) cube or (y, x) "
                f"labels (an xarray DataArray); got {type(background).__name__} with "
                f"{getattr(background, 'ndim', '?')} dims.")
        if labels is not None and (not isinstance(labels, xr.DataArray) or labels.ndim != 2):
            raise InvalidQueryError(f"labels must be a (y, x) DataArray; got "
                                    f"{type(labels).__name__} with "
                                    f"{getattr(labels, 'ndim', '?')} dims.")
        rasters = [r for r in (background, labels) if r is not None]
        gbox = geobox_of(rasters[0], "background" if background is not None else "labels")
        if background is not None:
            if background.ndim == 2:
                images.append(_mask_overlay(background, gbox))
            else:
                rgba, extent, note = _quicklook(background, gbox)
                images.append((rgba, extent))
        if labels is not None:
            lbox = geobox_of(labels, "labels")
            if lbox.crs != gbox.crs:
                raise InvalidGridError(
                    f"the labels are in {lbox.crs} but the background in {gbox.crs}; rasterize "
                    "the labels like the cube (lames_cube.rasterize(gdf, like=cube)).")
            images.append(_mask_overlay(labels, lbox))
        crs = CRS.from_user_input(gbox.crs.to_wkt())
        if CRS.from_user_input(frame.crs) != crs:
            frame = frame.to_crs(crs)
    save_dpi: float | str = "figure"
    own = ax is None
    if own:
        fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        save_dpi = dpi
    fig = ax.figure
    for rgba, extent in images:
        ax.imshow(rgba, extent=extent, origin="upper", interpolation="nearest", zorder=1)

    if by is None:
        values = pd.Series(["windows"] * len(frame), index=frame.index)
    elif by in frame.columns:
        values = frame[by].astype(object).where(frame[by].notna(), "(none)")
    else:  # by == "kind", missing: the rule made them all
        values = pd.Series([str(frame.attrs.get("rule", DEFAULT_RULE))] * len(frame),
                           index=frame.index)
    counts = values.value_counts()
    order = sorted(counts.index, key=str)
    colors = dict(colors or {})
    palette = [c for c in PALETTE if c not in colors.values()]
    width = 1.6 if len(frame) <= 500 else 0.8 if len(frame) <= 5000 else 0.3
    geoms = frame.geometry.to_numpy()
    color_of = {v: colors.get(v) or palette[i % len(palette)] for i, v in enumerate(order)}
    # The most numerous values first, so that a few drawn windows stay on top of a full grid.
    for rank, value in enumerate(sorted(order, key=lambda v: -counts[v])):
        lines = _outlines(geoms[(values == value).to_numpy()])
        ax.add_collection(LineCollection(lines, colors=color_of[value], linewidths=width,
                                         zorder=2 + rank / 100), autolim=False)
    handles = [Line2D([], [], color=color_of[v], lw=2, label=f"{v} ({counts[v]:,})")
               for v in order]
    if any(r is not None and r.ndim == 2 for r in (background, labels)):
        handles.append(Patch(color=MASK_COLOR, alpha=0.55, label="labels > 0"))

    # Limits: the background, grown to the windows that reach onto it; else the windows.
    boxes = [tuple(frame.total_bounds)] if len(frame) else []
    if images:
        left, right, bottom, top = images[0][1]
        bg = (min(left, right), min(bottom, top), max(left, right), max(bottom, top))
        over = frame[frame.intersects(shapely.box(*bg))] if len(frame) else frame
        boxes = [bg] + ([tuple(over.total_bounds)] if len(over) else [])
    if boxes:
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        ax.update_datalim([(x0, y0), (x1, y1)])
    # The limits follow the data, one of them widened to keep the aspect: a map that fills
    # its box keeps its place when (constrained) layout runs again.
    ax.use_sticky_edges = False
    ax.margins(0.01)
    ax.autoscale_view()
    crs = frame.crs
    if crs.is_geographic:
        mid = (ax.dataLim.y0 + ax.dataLim.y1) / 2
        ax.set_aspect(1 / max(math.cos(math.radians(mid)), 1e-6), adjustable="datalim")
    else:
        ax.set_aspect("equal", adjustable="datalim")
    ax.ticklabel_format(useOffset=False, style="plain")
    name = f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.name
    unit = "°" if crs.is_geographic else "m"
    ax.set_xlabel(f"x ({name}, {unit})" + (f"\nbackground: {note}" if note else ""), fontsize=8)
    ax.set_ylabel(f"y ({name}, {unit})", fontsize=8)
    ax.tick_params(labelsize=7)
    style = {"handles": handles, "title": by, "fontsize": 8, "title_fontsize": 8}
    if handles and own:  # beside the map (constrained layout makes room for it)
        fig.legend(loc="outside right upper", **style)
    elif handles:  # someone else's figure: keep to the given axes
        ax.legend(loc="upper right", framealpha=0.85, **style)
    if title is None:
        size = table.attrs.get("size")
        title = f"{_describe(table)}: {len(table):,} windows" + (
            f" of {size} px" if size is not None else "")
        if table.attrs.get("rule") == "concat":
            title = f"concat of {len(table.attrs.get('parts', []))} parts: " + title.split(
                ": ", 1)[1]
    ax.set_title(title, fontsize=10)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=save_dpi, format=path.suffix.lstrip(".").lower() or "png")
    return fig
