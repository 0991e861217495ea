"""Patch sets: the pixels and masks of window tables in one Zarr v3 store, written resumably.

"Where vs what" (DESIGN.md §4): a window table (:func:`lames_cube.patches.patch_table`, a
sampler of :mod:`lames_cube.sampling`) says where the patches are; :func:`write_patch_set`
gathers their pixels (and masks) from one or more cubes into one store that training reads
sample by sample (:class:`lames_cube.ml.PatchDataset`).

Store layout (``<store>/``)::

    zarr.json               the group; attrs: size, block, grids, tables, band_mean, band_std, ...
    image/                  (sample, band, py, px), the cubes' dtype; one shard per block of
                            ``block`` samples, one inner chunk per sample (random access)
    mask/                   (sample, py, px) uint8, sharded as image
    band/, row/, col/, ...  the band names, and every non-geometry column of the tables as a
                            ``sample`` coordinate, plus ``source`` (index of the PatchSource)
    windows/windows.parquet the windows as GeoParquet in EPSG:4326 (sample, source, row, col and
                            every column), read by :func:`patch_set_windows`
    .lames/ledger.jsonl     the write ledger (as for cubes, :mod:`lames_cube.io`)

The write lays the store out first (every array, coordinate and attribute but the statistics),
records it in the ledger, then fills it one block (one shard) at a time and appends one ledger
line per finished block, with that block's exact per-band sums for the statistics. A crash
leaves a store that :func:`open_patch_set` refuses; ``write_patch_set(sources, store,
mode="resume")`` with the same sources writes only the missing blocks and gives the same bytes as
an uninterrupted write. Its ledger events (``patchset_begin``, ``patchset_metadata``,
``patchset_block``, ``patchset_complete``) are apart from the cube writer's.

Normalisation statistics (attrs ``band_mean``, ``band_std``, ``stats_count``, ``stats_from``)
are the per-band mean and (population) standard deviation of the valid (non-zero) pixels of the
samples of one split (``stats_split``, default ``"train"``), never of the others. For integer
cubes of up to 16 bits they are exact: integer sums and sums of squares, divided once.

Examples
--------
>>> import tempfile
>>> from odc.geo.geobox import GeoBox
>>> from odc.geo.xr import xr_zeros
>>> from lames_cube.patches import patch_table
>>> g = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719", resolution=10)
>>> cube = (xr_zeros(g, dtype="uint16") + 100).expand_dims(band=["B04"])
>>> table = patch_table(g, size=32)
>>> table["split"] = ["train", "train", "test", "test"]
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = write_patch_set([PatchSource(cube, table)], f"{tmp}/p.zarr", progress=False)
...     ds = open_patch_set(store)
...     ds.image.shape, ds.split.values.tolist(), ds.attrs["band_mean"], ds.attrs["stats_from"]
((4, 1, 32, 32), ['train', 'train', 'test', 'test'], [100.0], "split == 'train'")
"""

from __future__ import annotations

import hashlib
import io as _stdio
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as dsa
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from tqdm.auto import tqdm

from lames_cube._atomic import atomic_path, atomic_write_text
from lames_cube._fs import StorePath, UrlPath, is_empty_dir, returned_path
from lames_cube.errors import (
    IncompleteStoreError,
    InvalidGridError,
    LamesCubeError,
    PatchSetError,
    PatchSetGridError,
    SourceMismatchError,
    StatsSplitError,
    StoreError,
    StoreNotFoundError,
    TemplateMismatchError,
)
from lames_cube.grid import geobox_attrs, geobox_of
from lames_cube.io.ledger import LEDGER_NAME, Ledger, crash_point
from lames_cube.io.paths import (
    claim_folder,
    clear_except_ledger,
    restart_if_killed_before_begin,
    store_path,
    store_writer,
)
from lames_cube.io.stores import Mode
from lames_cube.io.template import ZARR_KW, as_text_objects, hash_values, is_text, numpy_json
from lames_cube.patches import as_bands, check_table, gather_windows

__all__ = [
    "PatchSetError",
    "PatchSetGridError",
    "PatchSource",
    "SourceMismatchError",
    "StatsSplitError",
    "open_patch_set",
    "patch_set_windows",
    "write_patch_set",
]

#: Version of the patch-set layout (attrs ``lames_patch_set``) and of its ledger records.
PATCH_SET_VERSION = 1
WINDOWS_NAME = "windows/windows.parquet"
_WINDOWS_GROUP = {"zarr_format": 3, "node_type": "group",
                  "attributes": {"description": "lames_cube patch-set windows (windows.parquet, "
                                                "GeoParquet, EPSG:4326)"}}
_RESERVED = ("sample", "band", "py", "px", "image", "mask", "source", "spatial_ref")
_EVENTS = ("patchset_begin", "patchset_metadata", "patchset_block", "patchset_complete")


# --------------------------------------------------------------------------------------------
# Errors



# --------------------------------------------------------------------------------------------
# Sources and the plan of a write


@dataclass(frozen=True, eq=False)
class PatchSource:
    """One cube and the windows to cut from it.

    Parameters
    ----------
    cube
        ``(band, y, x)`` (or ``(y, x)``) reflectance, NumPy or lazy dask, with a GeoBox
        (``cube.odc.geobox``).
    table
        Windows on the cube's grid (:func:`lames_cube.patches.patch_table` or a sampler of
        :mod:`lames_cube.sampling`); its extra columns (``split``, ``kind``, ``site_id``, ...)
        are kept as ``sample`` coordinates.
    labels
        ``(y, x)`` integer labels (0..255) on the cube's grid; None gives all-0 masks (no-mine
        windows).
    origin
        Where the pixels come from (e.g. ``"site-2203.zarr year=2022"``), recorded in the store
        and checked on resume: a resume whose cube holds other pixels on the same grid (another
        store, year or world) is refused only when the origins differ, as the pixels themselves
        are not hashed.
    """

    cube: xr.DataArray
    table: gpd.GeoDataFrame
    labels: xr.DataArray | None = None
    origin: str | None = None


@dataclass
class _Source:
    image: xr.DataArray  # (band, y, x)
    labels: xr.DataArray | None
    rows: np.ndarray
    cols: np.ndarray
    fill: Any
    grid: dict[str, Any]
    table: gpd.GeoDataFrame


@dataclass
class _Plan:
    sources: list[_Source]
    size: int
    bands: list[str]
    dtype: np.dtype
    block: int
    columns: dict[str, np.ndarray]  # every sample coordinate, "source" included
    stats_pick: np.ndarray  # bool per sample: counts for the statistics
    stats_from: str
    stats_split: str | None
    attrs: dict[str, Any]
    template: dict[str, Any]
    job: str = ""
    starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))

    @property
    def n(self) -> int:
        return int(self.starts[-1])

    @property
    def nblocks(self) -> int:
        return -(-self.n // self.block)

    def block_range(self, i: int) -> tuple[int, int]:
        return i * self.block, min((i + 1) * self.block, self.n)


def _json_safe(value: Any) -> Any:
    """Attrs as JSON (NumPy scalars and arrays as numbers and lists, anything else as text)."""
    def default(obj: Any) -> Any:
        try:
            return numpy_json(obj)
        except TypeError:
            return str(obj)

    return json.loads(json.dumps(value, sort_keys=True, default=default))


def _column_values(series: pd.Series, name: str, index: int) -> np.ndarray:
    """A table column as the array stored: numbers, booleans and datetimes as they are, text as
    an object array of ``str`` (Zarr v3 variable-length strings)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(series.cat.categories.dtype)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    values = series.to_numpy()
    if values.dtype.kind in "biufM":
        return values
    if values.dtype.kind in "OUT":
        objects = values.astype(object)
        bad = [i for i, v in enumerate(objects) if not isinstance(v, str)]
        if not bad:
            return objects
        raise SourceMismatchError(
            f"column {name!r} of source {index}'s table holds non-text values (e.g. "
            f"{objects[bad[0]]!r} at position {bad[0]}) among text; a patch set stores a column "
            f"as one type. Fill or convert them, e.g. table[{name!r}] = "
            f"table[{name!r}].fillna('').astype(str)."
        )
    raise SourceMismatchError(
        f"column {name!r} of source {index}'s table has dtype {series.dtype}, which a patch set "
        f"cannot store; convert it to numbers, booleans, datetimes or text (e.g. "
        f"table[{name!r}] = table[{name!r}].astype(str)), or drop it."
    )


def _sources_list(sources: Any) -> list[PatchSource]:
    if isinstance(sources, PatchSource):
        return [sources]
    if not isinstance(sources, Sequence) or isinstance(sources, str):
        raise PatchSetError(f"sources must be a PatchSource or a list of them; got "
                            f"{type(sources).__name__}.")
    out = list(sources)
    if not out:
        raise PatchSetError("sources is empty: a patch set needs at least one "
                            "PatchSource(cube, table[, labels]).")
    for i, s in enumerate(out):
        if not isinstance(s, PatchSource):
            raise PatchSetError(f"sources[{i}] is a {type(s).__name__}, not a PatchSource; wrap "
                                f"it: PatchSource(cube, table, labels).")
    return out


def _check_source(src: PatchSource, index: int) -> _Source:
    """Validate one source with the checks of :mod:`lames_cube.patches` (errors name it)."""


    try:
        if not isinstance(src.cube, xr.DataArray):
            raise PatchSetError(f"the cube is a {type(src.cube).__name__}; pass an "
                                f"xarray.DataArray (band, y, x) with a CRS.")
        gbox = geobox_of(src.cube, "cube")
        rows, cols, _ = check_table(src.table, gbox)
        image = as_bands(src.cube, "cube")
        labels = src.labels
        if labels is not None:
            if not isinstance(labels, xr.DataArray) or labels.ndim != 2:
                raise PatchSetError(
                    f"labels must be a (y, x) DataArray on the cube's grid; got "
                    f"{type(labels).__name__} with {getattr(labels, 'ndim', '?')} dims. Rasterize "
                    f"them with lames_cube.rasterize(gdf, like=cube)."
                )
            if geobox_of(labels, "labels") != gbox:
                raise PatchSetGridError(
                    f"the labels are not on the cube's grid (labels {labels.odc.geobox!r}, cube "
                    f"{gbox!r}); rasterize them with like=cube (lames_cube.rasterize(gdf, "
                    f"like=cube))."
                )
            if labels.dtype.kind not in "biu":
                raise PatchSetError(f"labels have dtype {labels.dtype}; masks are uint8 class "
                                    f"values: cast them, e.g. labels.astype('uint8').")
    except LamesCubeError as err:
        kind = PatchSetGridError if isinstance(err, InvalidGridError) else type(err)
        raise kind(f"source {index}: {err}") from err
    if image.dtype.kind not in "iuf":
        raise PatchSetError(f"source {index}: the cube has dtype {image.dtype}; a patch set holds "
                            f"numeric reflectance (uint16). Cast it, e.g. cube.astype('uint16').")
    reserved = sorted(set(map(str, src.table.columns)) & set(_RESERVED))
    if reserved:
        raise SourceMismatchError(
            f"source {index}: the table has columns {reserved}, names the patch set uses itself "
            f"({list(_RESERVED)}); rename them, e.g. table.rename(columns={{{reserved[0]!r}: "
            f"'{reserved[0]}_'}})."
        )
    fill = src.cube.attrs.get("nodata", 0) or 0
    return _Source(image=image, labels=labels, rows=rows, cols=cols, fill=fill,
                   grid=geobox_attrs(gbox), table=src.table)


def _hash(values: np.ndarray) -> str:
    return hash_values(np.asarray(values))


def _plan(sources: Any, block: Any, stats_split: str | None) -> _Plan:
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1:
        raise PatchSetError(f"block={block!r} must be a positive integer number of samples per "
                            f"Zarr shard, e.g. block=64.")
    if stats_split is not None and not isinstance(stats_split, str):
        raise PatchSetError(f"stats_split={stats_split!r} must be a split name such as 'train', "
                            f"or None for all samples.")
    given = _sources_list(sources)
    checked = [_check_source(s, i) for i, s in enumerate(given)]
    first = checked[0]
    bands = [str(b) for b in first.image.band.values]
    size = int(first.table.attrs["size"])
    dtype = first.image.dtype
    names = [str(c) for c in first.table.columns if c != first.table.geometry.name]
    for i, s in enumerate(checked[1:], start=1):
        other = [str(b) for b in s.image.band.values]
        if other != bands:
            raise SourceMismatchError(f"source {i} has bands {other}; source 0 has {bands}. Every "
                                      f"source of a patch set has the same bands in the same "
                                      f"order: select them, e.g. cube.sel(band={bands}).")
        if s.image.dtype != dtype:
            raise SourceMismatchError(f"source {i} has dtype {s.image.dtype}; source 0 has "
                                      f"{dtype}. Cast it, e.g. cube.astype({str(dtype)!r}).")
        if int(s.table.attrs["size"]) != size:
            raise SourceMismatchError(
                f"source {i}'s windows are {int(s.table.attrs['size'])} px; source 0's are "
                f"{size} px. A patch set has one window size: cut the table again with "
                f"patch_table(cube, size={size})."
            )
        cols = [str(c) for c in s.table.columns if c != s.table.geometry.name]
        if set(cols) != set(names):
            raise SourceMismatchError(
                f"source {i}'s table has the columns {sorted(cols)}; source 0's has "
                f"{sorted(names)}. The tables of a patch set have the same columns: add the "
                f"missing ones (e.g. table['kind'] = 'background') or drop the extra ones."
            )
    starts = np.cumsum([0] + [len(s.rows) for s in checked]).astype(np.int64)
    if starts[-1] == 0:
        raise PatchSetError("the tables hold no window: a patch set needs at least one. Check "
                            "the tables (patch_table(..., region=...) may have kept none).")
    columns: dict[str, np.ndarray] = {}
    for name in names:
        parts = [_column_values(s.table[name], name, i) for i, s in enumerate(checked)]
        try:
            columns[name] = np.concatenate(parts)
        except (TypeError, ValueError) as err:  # pragma: no cover - numpy concatenates most
            raise SourceMismatchError(f"column {name!r} has incompatible types across sources "
                                      f"({[p.dtype for p in parts]}): {err}.") from None
        if columns[name].dtype == object and not all(p.dtype == object for p in parts):
            raise SourceMismatchError(
                f"column {name!r} is text in some tables and not in others "
                f"({[str(p.dtype) for p in parts]}); give it one type in every table."
            )
    columns["source"] = np.repeat(np.arange(len(checked), dtype=np.int64), np.diff(starts))
    if stats_split is None:
        pick = np.ones(int(starts[-1]), bool)
        stats_from = "all samples (stats_split=None)"
    elif "split" in columns:
        pick = columns["split"].astype(str) == stats_split
        if not pick.any():
            have = sorted(set(columns["split"].astype(str).tolist()))
            raise StatsSplitError(
                f"no sample has split {stats_split!r}, so the normalisation statistics would be "
                f"empty; the tables' splits are {have}. Pass stats_split= one of them (the "
                f"training split), or add the training windows."
            )
        stats_from = f"split == {stats_split!r}"
    else:
        pick = np.ones(int(starts[-1]), bool)
        stats_from = "all samples (the tables have no 'split' column)"
    grids = [s.grid for s in checked]
    tables = [_json_safe({k: v for k, v in s.table.attrs.items() if k != "grid"})
              for s in checked]
    template = {
        "lames_patch_set": PATCH_SET_VERSION,
        "size": size,
        "block": int(block),
        "bands": bands,
        "dtype": dtype.str,
        "n": int(starts[-1]),
        "stats_split": stats_split,
        "columns": names,
        "sources": [{"grid": s.grid, "n": len(s.rows), "bands": bands,
                     "labels": s.labels is not None,
                     "labels_dtype": None if s.labels is None else s.labels.dtype.str,
                     "rows": _hash(s.rows), "cols": _hash(s.cols),
                     "table": {n: _hash(_column_values(s.table[n], n, i)) for n in names},
                     "attrs": tables[i], "origin": given[i].origin}
                    for i, s in enumerate(checked)],
    }
    job = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
    attrs = {
        "lames_patch_set": PATCH_SET_VERSION,
        "size": size,
        "block": int(block),
        "n_samples": int(starts[-1]),
        "dtype": str(dtype),
        "nodata": _json_safe(first.fill),
        "grids": grids,
        "tables": tables,
        "labels": [s.labels is not None for s in checked],
        "stats_split": stats_split,
        "stats_from": stats_from,
        "stats_samples": int(pick.sum()),
        "stats_bands": bands,
        "windows": WINDOWS_NAME,
    }
    return _Plan(sources=checked, size=size, bands=bands, dtype=dtype, block=int(block),
                 columns=columns, stats_pick=pick, stats_from=stats_from,
                 stats_split=stats_split, attrs=attrs, template=template, job=job, starts=starts)


# --------------------------------------------------------------------------------------------
# Layout


def _windows_frame(plan: _Plan) -> gpd.GeoDataFrame:
    parts = []
    for i, s in enumerate(plan.sources):
        lo, hi = int(plan.starts[i]), int(plan.starts[i + 1])
        geom = gpd.GeoSeries(s.table.geometry.values, crs=s.table.crs)
        if geom.crs is not None:
            geom = geom.to_crs("EPSG:4326")
        parts.append(gpd.GeoDataFrame(
            {"sample": np.arange(lo, hi, dtype=np.int64), "source": np.full(hi - lo, i),
             **{n: v[lo:hi] for n, v in plan.columns.items() if n != "source"}},
            geometry=geom.values, crs="EPSG:4326"))
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry",
                            crs="EPSG:4326")


def _write_windows(plan: _Plan, path: StorePath) -> None:
    frame = _windows_frame(plan)
    folder = path / WINDOWS_NAME.split("/")[0]
    folder.mkdir(parents=True, exist_ok=True)
    target = path / WINDOWS_NAME
    group = json.dumps(_WINDOWS_GROUP, indent=2)
    if isinstance(target, UrlPath):
        (folder / "zarr.json").write_text(group)
        buffer = _stdio.BytesIO()
        frame.to_parquet(buffer, index=False)
        target.write_bytes(buffer.getvalue())
        return
    atomic_write_text(folder / "zarr.json", group)
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def _layout(plan: _Plan, path: StorePath) -> None:
    """Every array, coordinate and attribute (but the statistics), and the windows."""

    n, nb, s = plan.n, len(plan.bands), plan.size
    coords: dict[str, Any] = {"band": ("band", as_text_objects(np.asarray(plan.bands)))}
    for name, values in plan.columns.items():
        coords[name] = ("sample", values)
    ds = xr.Dataset(coords=coords, attrs=plan.attrs)
    ds["image"] = (("sample", "band", "py", "px"),
                   dsa.zeros((n, nb, s, s), dtype=plan.dtype, chunks=(plan.block, nb, s, s)))
    ds["mask"] = (("sample", "py", "px"),
                  dsa.zeros((n, s, s), dtype=np.uint8, chunks=(plan.block, s, s)))
    ds["image"].encoding = {"chunks": (1, nb, s, s), "shards": (plan.block, nb, s, s)}
    ds["mask"].encoding = {"chunks": (1, s, s), "shards": (plan.block, s, s)}
    # mode="a": the directory already holds the ledger, which mode="w" would delete.
    ds.to_zarr(str(path), mode="a", compute=False, **ZARR_KW)
    _write_windows(plan, path)


# --------------------------------------------------------------------------------------------
# Blocks


def _block_pixels(plan: _Plan, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    images, masks = [], []
    for i, s in enumerate(plan.sources):
        a, b = max(lo, int(plan.starts[i])), min(hi, int(plan.starts[i + 1]))
        if a >= b:
            continue
        rows = s.rows[a - plan.starts[i]:b - plan.starts[i]]
        cols = s.cols[a - plan.starts[i]:b - plan.starts[i]]
        images.append(gather_windows(s.image.data, rows, cols, plan.size, s.fill))
        if s.labels is None:
            masks.append(np.zeros((b - a, plan.size, plan.size), np.uint8))
        else:
            masks.append(gather_windows(s.labels.data[None], rows, cols, plan.size, 0)[:, 0])
    images, masks = dask.compute(images, masks)
    image = np.concatenate([np.asarray(x) for x in images]).astype(plan.dtype, copy=False)
    mask = np.concatenate([np.asarray(x) for x in masks])
    if mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise PatchSetError(
                f"labels of samples {lo}..{hi - 1} hold values from {mask.min()} to "
                f"{mask.max()}; masks are uint8 (0..255). Map the classes to 0..255 first."
            )
        mask = mask.astype(np.uint8)
    return image, mask


def _block_stats(image: np.ndarray, pick: np.ndarray) -> dict[str, list]:
    """Per-band valid-pixel count, sum and sum of squares of the picked samples; Python
    integers (exact) for integer cubes of up to 16 bits, floats otherwise."""
    sub = image[pick]
    nb = image.shape[1]
    if image.dtype.kind in "iu" and image.dtype.itemsize <= 2:
        count = np.count_nonzero(sub, axis=(2, 3)).sum(axis=0) if len(sub) else np.zeros(nb, int)
        wide = sub.astype(np.int64)  # invalid pixels are 0: they add nothing to the sums
        per_sample = wide.sum(axis=(2, 3)), (wide * wide).sum(axis=(2, 3))  # < 2**63 each
        total = [[sum(int(v) for v in col) for col in arr.T] for arr in per_sample]
        return {"count": [int(c) for c in count], "sum": total[0], "sumsq": total[1]}
    values = sub.astype(np.float64)
    valid = (values != 0) & np.isfinite(values)
    values = np.where(valid, values, 0.0)
    return {"count": [int(v) for v in valid.sum(axis=(0, 2, 3))] if len(sub) else [0] * nb,
            "sum": [float(v) for v in values.sum(axis=(0, 2, 3))] if len(sub) else [0.0] * nb,
            "sumsq": [float(v) for v in (values * values).sum(axis=(0, 2, 3))] if len(sub)
            else [0.0] * nb}


def _final_stats(plan: _Plan, blocks: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    nb = len(plan.bands)
    count, total, squares = [0] * nb, [0] * nb, [0] * nb
    for rec in blocks.values():
        st = rec["stats"]
        for b in range(nb):
            count[b] += st["count"][b]
            total[b] += st["sum"][b]
            squares[b] += st["sumsq"][b]
    mean: list[float | None] = []
    std: list[float | None] = []
    for n, s, q in zip(count, total, squares, strict=True):
        if n == 0:
            mean.append(None)
            std.append(None)
        elif isinstance(s, int) and isinstance(q, int):  # exact: one rounding per division
            mean.append(s / n)
            std.append(math.sqrt((q * n - s * s) / (n * n)))
        else:
            m = s / n
            mean.append(m)
            std.append(math.sqrt(max(q / n - m * m, 0.0)))
    return {"band_mean": mean, "band_std": std, "stats_count": count}


def _block_records(records: list[dict[str, Any]], job: str) -> dict[int, dict[str, Any]]:
    return {int(r["block"]): r for r in records
            if r.get("event") == "patchset_block" and r.get("job") == job}


def _write_blocks(plan: _Plan, path: StorePath, done: Mapping[int, Any], *,
                  progress: bool) -> None:
    ledger = Ledger(path)
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    image_arr, mask_arr = group["image"], group["mask"]
    todo = [i for i in range(plan.nblocks) if i not in done]
    bar = tqdm(total=plan.nblocks, initial=plan.nblocks - len(todo), unit="block",
               desc=f"write_patch_set {path.name}", disable=not progress)
    written = 0
    try:
        for i in todo:
            crash_point(written, "blocks")
            lo, hi = plan.block_range(i)
            image, mask = _block_pixels(plan, lo, hi)
            image_arr[lo:hi] = image
            mask_arr[lo:hi] = mask
            ledger.append({"event": "patchset_block", "job": plan.job, "block": i,
                           "samples": [lo, hi],
                           "stats": _block_stats(image, plan.stats_pick[lo:hi])})
            written += 1
            bar.update(1)
    finally:
        bar.close()


def _finish(plan: _Plan, path: StorePath) -> None:
    """Statistics from the ledger's block records into the attrs, then the ``complete`` line."""

    ledger = Ledger(path)
    blocks = _block_records(ledger.records(), plan.job)
    missing = [i for i in range(plan.nblocks) if i not in blocks]
    if missing:  # pragma: no cover - _write_blocks writes every block or raises
        raise IncompleteStoreError(f"blocks {missing[:5]} of {str(path)!r} are not written.")
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    group.attrs.update(_final_stats(plan, blocks))
    ledger.append({"event": "patchset_complete", "job": plan.job})


# --------------------------------------------------------------------------------------------
# State of a store


@dataclass
class _State:
    begin: dict[str, Any] | None
    metadata: bool
    blocks: dict[int, dict[str, Any]]
    complete: bool

    @property
    def nblocks(self) -> int:
        t = self.begin["template"] if self.begin else {}
        return -(-int(t.get("n", 0)) // int(t.get("block", 1)))

    @property
    def missing(self) -> list[int]:
        return [i for i in range(self.nblocks) if i not in self.blocks]


def _state(path: StorePath) -> _State:
    records = Ledger(path).records()
    begins = [r for r in records if r.get("event") == "patchset_begin"]
    if not begins:
        return _State(None, False, {}, False)
    begin = begins[-1]
    job = begin["job"]
    if begin.get("lames_ledger") != PATCH_SET_VERSION:
        raise PatchSetError(f"the patch set {str(path)!r} has ledger version "
                            f"{begin.get('lames_ledger')!r}; this lames_cube reads version "
                            f"{PATCH_SET_VERSION}. Rewrite it with mode='w'.")
    metadata = any(r.get("event") == "patchset_metadata" and r.get("job") == job for r in records)
    complete = any(r.get("event") == "patchset_complete" and r.get("job") == job for r in records)
    return _State(begin, metadata, _block_records(records, job), complete)


def _template_diff(stored: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    out = [f"{k}: store {stored.get(k)!r}, sources {new.get(k)!r}"
           for k in ("lames_patch_set", "size", "block", "bands", "dtype", "n", "stats_split",
                     "columns") if stored.get(k) != new.get(k)]
    old_s, new_s = stored.get("sources", []), new.get("sources", [])
    if len(old_s) != len(new_s):
        out.append(f"number of sources: store {len(old_s)}, given {len(new_s)}")
    for i, (a, b) in enumerate(zip(old_s, new_s, strict=False)):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if keys:
            what = ["windows (rows/cols)" if k in ("rows", "cols") else
                    "table column values" if k == "table" else k for k in keys]
            out.append(f"source {i}: {', '.join(dict.fromkeys(what))} differ")
    return "; ".join(out) or "another job"


def _describe_incomplete(path: StorePath, state: _State) -> str:
    if state.begin is None:
        return (f"the patch set {str(path)!r} is incomplete: it was interrupted before its "
                f"layout was recorded. Rewrite it with write_patch_set(sources, {str(path)!r}, "
                f"mode='w').")
    missing = state.missing if state.metadata else list(range(state.nblocks))
    total = state.nblocks
    first = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
    detail = (f"{len(missing)} of {total} blocks are missing (blocks {first})" if missing else
              f"all {total} blocks are written but the statistics are not")
    return (f"the patch set {str(path)!r} is incomplete: {detail}. Finish it with "
            f"write_patch_set(sources, {str(path)!r}, mode='resume') using the same sources, or "
            f"pass allow_incomplete=True to read it anyway (unwritten samples read as 0, and "
            f"band_mean/band_std are missing).")


# --------------------------------------------------------------------------------------------
# Public API


@store_writer
def write_patch_set(sources: PatchSource | Sequence[PatchSource], store: str | os.PathLike[str],
                    *, mode: Mode = "w-", block: int = 64, stats_split: str | None = "train",
                    progress: bool = True) -> Path | str:
    """Write the patches of window tables (pixels and masks) to one Zarr v3 store, resumably.

    Parameters
    ----------
    sources
        One :class:`PatchSource` or a list of them; all with the same bands (names and order),
        dtype, window size and table columns. Samples follow the sources' order, then each
        table's row order.
    store
        Path (or fsspec URL) of the store.
    mode
        ``"w-"`` refuses an existing store (:class:`~lames_cube.errors.StoreExistsError`); ``"w"``
        replaces it; ``"resume"`` finishes an interrupted write of the same sources, writing only
        the missing blocks (a no-op on a complete store, a plain write without a store), and
        refuses a store of other sources (:class:`~lames_cube.errors.TemplateMismatchError`).
    block
        Samples per Zarr shard (the unit written and recorded in the ledger). Inside a shard
        each sample is its own chunk, so a reader decodes one sample, not the whole block.
    stats_split
        The ``split`` value whose samples give the normalisation statistics (``"train"``);
        tables without a ``split`` column use every sample (``stats_from`` says so); None uses
        every sample.
    progress
        Show a tqdm bar over blocks.

    Returns
    -------
    pathlib.Path or str
        The store's path (the URL for a remote store).

    Raises
    ------
    PatchSetError
        No sources, a bad ``block`` or ``stats_split``, tables without windows.
    SourceMismatchError
        Sources whose bands, dtype, window size or columns differ.
    StatsSplitError
        No sample of ``stats_split``.
    PatchSetGridError
        A table or labels not on their cube's grid.
    lames_cube.errors.StoreExistsError, lames_cube.errors.TemplateMismatchError
        As described under ``mode``.
    lames_cube.errors.OutputNotWritableError
        The store's folder cannot be written to (checked before any work).
    lames_cube.errors.DiskFullError
        The disk filled up; the store stays resumable with ``mode="resume"``.

    Examples
    --------
    >>> import tempfile
    >>> import xarray as xr
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from lames_cube.patches import patch_table
    >>> g = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719",
    ...                      resolution=10)
    >>> cube = xr.concat([xr_zeros(g, dtype="uint16") + v for v in (1, 3)], "band")
    >>> cube = cube.assign_coords(band=["B04", "B08"])
    >>> labels = xr_zeros(g, dtype="uint8")
    >>> labels[:10, :10] = 1
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_patch_set(PatchSource(cube, patch_table(g, size=16), labels),
    ...                            f"{tmp}/p.zarr", block=4, progress=False)
    ...     ds = open_patch_set(path)
    ...     ds.image.shape, int(ds.mask[0].sum()), ds.attrs["band_mean"], ds.attrs["stats_from"]
    ((16, 2, 16, 16), 100, [1.0, 3.0], "all samples (the tables have no 'split' column)")
    """
    if mode not in ("w-", "w", "resume"):
        raise StoreError(f"mode must be one of ('w-', 'w', 'resume'); got {mode!r}.")
    plan = _plan(sources, block, stats_split)
    path = store_path(store)
    ledger = Ledger(path)
    restart_if_killed_before_begin(path, mode)  # killed before its job was recorded: start afresh
    if mode == "resume" and path.exists() and not is_empty_dir(path):
        state = _state(path)
        if state.begin is None:
            raise TemplateMismatchError(
                f"cannot resume {str(path)!r}: it is not a patch set written by write_patch_set "
                f"(its ledger has no patchset_begin record). Replace it with mode='w' or pick "
                f"another path."
            )
        if state.begin["job"] != plan.job:
            raise TemplateMismatchError(
                f"cannot resume {str(path)!r} with these sources: the store was started with "
                f"other ones ({_template_diff(state.begin['template'], plan.template)}). Resume "
                f"with the same sources, or replace the store with mode='w'."
            )
        if state.complete:
            return returned_path(path)
        if not state.metadata:  # crashed while laying out: lay it out again
            clear_except_ledger(path)
            _layout(plan, path)
            ledger.append({"event": "patchset_metadata", "job": plan.job})
            state = _state(path)
        _write_blocks(plan, path, state.blocks, progress=progress)
        _finish(plan, path)
        return returned_path(path)

    claim_folder(path, mode, "the same sources")
    ledger.append({"event": "patchset_begin", "lames_ledger": PATCH_SET_VERSION, "job": plan.job,
                   "op": "patchset", "blocks": plan.nblocks, "template": plan.template})
    _layout(plan, path)
    ledger.append({"event": "patchset_metadata", "job": plan.job})
    _write_blocks(plan, path, {}, progress=progress)
    _finish(plan, path)
    return returned_path(path)


def _checked(store: str | os.PathLike[str], allow_incomplete: bool) -> tuple[StorePath, _State]:
    path = store_path(store)
    if not path.exists():
        raise StoreNotFoundError(f"no patch set at {str(path)!r}; check the path, or write "
                                    f"one with write_patch_set(sources, {str(path)!r}).")
    state = _state(path)
    if state.begin is None:
        if Ledger(path).exists() and not (path / "zarr.json").exists():
            raise IncompleteStoreError(_describe_incomplete(path, state))
        raise PatchSetError(f"{str(path)!r} is not a patch set (no patchset_begin record in "
                            f"{LEDGER_NAME}); cube stores open with lames_cube.io.open_cube.")
    if not state.metadata or not (state.complete or allow_incomplete):
        raise IncompleteStoreError(_describe_incomplete(path, state))
    return path, state


def _text_coords(ds: xr.Dataset) -> xr.Dataset:
    """Load the 1-D coordinates (small); text as NumPy unicode, as the tables held it."""
    new = {}
    for k, c in ds.coords.items():
        if c.ndim != 1:
            continue
        values = np.asarray(c.values)
        if values.dtype.kind in "OT" and is_text(values):
            values = np.asarray([str(v) for v in values.tolist()], dtype=str)
        new[k] = c.copy(data=values)
    return ds.assign_coords(new) if new else ds


def open_patch_set(store: str | os.PathLike[str], *,
                   allow_incomplete: bool = False) -> xr.Dataset:
    """Open a patch set written by :func:`write_patch_set` (lazily, one dask chunk per shard).

    Parameters
    ----------
    store
        The store.
    allow_incomplete
        Open a store whose write has not finished (unwritten samples read as 0; no statistics).

    Returns
    -------
    xarray.Dataset
        ``image (sample, band, py, px)``, ``mask (sample, py, px)``, the ``band`` coordinate
        and every table column plus ``source`` as ``sample`` coordinates (text as NumPy
        unicode); attrs: ``size``, ``block``, ``grids``, ``tables``, ``band_mean``,
        ``band_std``, ``stats_count``, ``stats_from``, ``stats_split``, ...

    Raises
    ------
    lames_cube.errors.StoreNotFoundError
        No store at ``store``.
    lames_cube.errors.IncompleteStoreError
        An unfinished write; the message says how many blocks are missing and how to finish.
    PatchSetError
        A store that is not a patch set.

    Examples
    --------
    >>> open_patch_set("no-such-patches.zarr")
    Traceback (most recent call last):
    ...
    lames_cube.errors.StoreNotFoundError: no patch set at 'no-such-patches.zarr'; check the path, or write one with write_patch_set(sources, 'no-such-patches.zarr').
    """
    path, _ = _checked(store, allow_incomplete)
    block = json.loads((path / "zarr.json").read_text())["attributes"]["block"]
    # chunks=None, then one dask chunk per shard (the stored chunk is one sample; asking
    # open_zarr for whole shards would warn about the coordinates' chunks).
    ds = _text_coords(xr.open_zarr(str(path), chunks=None, **ZARR_KW))
    for name in ("image", "mask"):
        ds[name] = ds[name].chunk({"sample": block})
    return ds


def patch_set_windows(store: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    """The windows of a patch set: one row per sample, in sample order.

    Parameters
    ----------
    store
        A patch set (complete, or laid out and being written).

    Returns
    -------
    geopandas.GeoDataFrame
        ``sample``, ``source``, ``row``, ``col`` and every table column, with the windows' boxes
        in EPSG:4326; ``attrs``: ``size``, ``grids`` and ``tables`` (one per source), and for a
        single-source set that source's ``grid`` and table attrs (so
        :func:`lames_cube.patches.table_geobox` works on it).

    Examples
    --------
    >>> import tempfile
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from lames_cube.patches import patch_table
    >>> g = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_320), "EPSG:32719",
    ...                      resolution=10)
    >>> cube = (xr_zeros(g, dtype="uint16") + 5).expand_dims(band=["B04"])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = write_patch_set(PatchSource(cube, patch_table(g, size=32)), f"{tmp}/p.zarr",
    ...                         progress=False)
    ...     w = patch_set_windows(p)
    >>> w[["sample", "source", "row", "col"]].values.tolist(), w.crs.to_epsg()
    ([[0, 0, 0, 0], [1, 0, 0, 32]], 4326)
    """
    path, _ = _checked(store, allow_incomplete=True)
    target = path / WINDOWS_NAME
    if not target.exists():  # pragma: no cover - written with the layout
        raise IncompleteStoreError(f"the patch set {str(path)!r} has no {WINDOWS_NAME}; "
                                      f"rewrite it with mode='w'.")
    if isinstance(target, UrlPath):
        frame = gpd.read_parquet(_stdio.BytesIO(target.read_bytes()))
    else:
        frame = gpd.read_parquet(target)
    attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    frame.attrs = {"size": attrs.get("size"), "grids": attrs.get("grids", []),
                   "tables": attrs.get("tables", [])}
    if len(frame.attrs["grids"]) == 1:
        frame.attrs = {**attrs.get("tables", [{}])[0], **frame.attrs,
                       "grid": frame.attrs["grids"][0]}
    return frame
