"""Prediction stores: write a lazy prediction tile by tile, resumably; export COGs and polygons.

:func:`write_prediction` lays out a Zarr v3 store for the whole grid first (nothing computed),
then fills it tile by tile through :func:`lames_cube.io.write_cube` with ``region=``: each
finished tile is recorded in the store's ledger, so a run killed at any moment and started
again computes only the tiles not yet recorded and ends with the same bytes as an uninterrupted
run. Tiles are computed a few at a time (``group``) in one dask compute, so that neighbouring
tiles share the source pixels of their halos while memory stays bounded whatever the grid's size.

The store's attrs name the model (checkpoint sha256, settings) and its coordinates the grid: a
rerun with another model or grid is refused (:class:`PredictionStoreMismatchError`).

No torch here: the lazy prediction comes from :func:`lames_cube.ml.predict`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import dask
import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
import xarray as xr
from odc.geo.geom import BoundingBox
from scipy import ndimage
from tqdm.auto import tqdm

from lames_cube._atomic import atomic_path, atomic_write_text, check_writable
from lames_cube.cluster import worker_threads
from lames_cube.errors import LamesCubeError, PredictionError, PredictionStoreMismatchError  # noqa: F401 (re-exported)
from lames_cube.grid import geodesic_area
from lames_cube.io import (
    Ledger,
    TemplateMismatchError,
    init_cube_store,
    open_store,
    regions_written,
    write_cube,
)
from lames_cube.io.ledger import crash_point

__all__ = [
    "NODATA_CLASS",
    "PredictionError",
    "PredictionStoreMismatchError",
    "bbox_roi",
    "export_cog",
    "open_prediction",
    "prediction_polygons",
    "tile_regions",
    "write_prediction",
]

#: The class value of pixels without data or outside the scored tiles.
NODATA_CLASS = 255



# --------------------------------------------------------------------------- tiles
def tile_regions(pred: xr.Dataset, tiles: Any = None) -> list[tuple[dict[str, slice], bool]]:
    """The prediction's tiles (its chunks along y/x) as ``(region, scored)`` pairs.

    Parameters
    ----------
    pred
        A lazy prediction of :func:`lames_cube.ml.predict`.
    tiles
        None (score every tile), or a table like :func:`lames_cube.grid.mosaic_tiles`
        (``y_off``, ``x_off`` and ``active``): only its active tiles are scored, the others
        are written as nodata.

    Raises
    ------
    PredictionError
        A table whose tiles are not the prediction's chunks.
    """
    ys = np.cumsum((0, *pred.chunks["y"]))
    xs = np.cumsum((0, *pred.chunks["x"]))
    scored = None
    if tiles is not None:
        missing = {"y_off", "x_off"} - set(tiles.columns)
        if missing:
            raise PredictionError(f"tiles lacks the columns {sorted(missing)}; pass a table of "
                                  "lames_cube.grid.mosaic_tiles (or pipeline.tile_plan).")
        active = tiles["active"] if "active" in tiles else np.ones(len(tiles), bool)
        scored = {(int(y), int(x)) for y, x, a in zip(tiles.y_off, tiles.x_off, active,
                                                     strict=True) if a}
        stray = sorted(scored - {(int(y), int(x)) for y in ys[:-1] for x in xs[:-1]})
        if stray:
            raise PredictionError(
                f"tiles at pixel offsets {stray[:3]} (y_off, x_off) are not tiles of the "
                f"prediction (chunks of {pred.chunks['y'][0]} px from the grid's corner); "
                "predict with tile= the table's tile size on the table's grid.")
    out = []
    for y0, y1 in pairwise(ys):
        for x0, x1 in pairwise(xs):
            region = {"y": slice(int(y0), int(y1)), "x": slice(int(x0), int(x1))}
            out.append((region, scored is None or (int(y0), int(x0)) in scored))
    return out


def _nodata_part(pred: xr.Dataset, region: Mapping[str, slice]) -> xr.Dataset:
    """A tile that is not scored: class 255, probability 0 (uint8) or NaN (float)."""
    part = pred.isel(region)
    out = {}
    for name, var in part.data_vars.items():
        fill = NODATA_CLASS if name == "class" else (
            np.nan if np.issubdtype(var.dtype, np.floating) else 0)
        out[name] = var.copy(data=np.full(var.shape, fill, var.dtype))
    return part.assign(out)


# --------------------------------------------------------------------------- writing
def _layout(pred: xr.Dataset, store: Path, overwrite: bool, *, replace: bool = False) -> bool:
    """Lay the store out (or keep a store of this prediction; ``replace``: lay it out anew);
    True when a store of another prediction was replaced (``overwrite``)."""
    tile = int(pred.attrs.get("tile", pred.chunks["y"][0]))
    patch = int(np.gcd(tile, pred.chunks["y"][0]))
    try:
        init_cube_store(pred, store, mode="w" if replace else "resume", patch_size=patch)
        return False
    except TemplateMismatchError as err:
        if overwrite:
            init_cube_store(pred, store, mode="w", patch_size=patch)
            return True
        try:
            old = open_store(store, allow_incomplete=True).attrs
        except Exception:
            old = {}
        was = (f"model sha256 {str(old.get('model_sha256', '?'))[:12]} "
               f"({old.get('model_checkpoint', '?')}), tile {old.get('tile', '?')}, patch "
               f"{old.get('patch', '?')}")
        now = (f"model sha256 {str(pred.attrs.get('model_sha256', '?'))[:12]} "
               f"({pred.attrs.get('model_checkpoint', '?')}), tile {pred.attrs.get('tile')}, "
               f"patch {pred.attrs.get('patch')}")
        raise PredictionStoreMismatchError(
            f"the prediction store {str(store)!r} was written by another model, settings or "
            f"grid (the store: {was}; this prediction: {now}; differences: {err}). Write to "
            "another path, or pass overwrite=True (--overwrite) to replace it.") from None


def _check_selection(store: Path, regions: list[tuple[dict[str, slice], bool]]) -> None:
    """Record which tiles the store scores (``.lames/tiles.json``) and refuse to resume it
    with another selection: tiles written as nodata would silently stay so."""


    scored = sorted((r["y"].start, r["x"].start) for r, s in regions if s)
    digest = hashlib.sha256(json.dumps(scored).encode()).hexdigest()
    path = store / ".lames" / "tiles.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("sha256") != digest:
            raise PredictionStoreMismatchError(
                f"the prediction store {str(store)!r} was started scoring {old.get('scored')} "
                f"tiles, this run scores {len(scored)} (another tile selection): tiles written "
                "as nodata would stay nodata. Resume with the same tiles, write to another "
                "path, or pass overwrite=True (--overwrite) to replace it.")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"sha256": digest, "scored": len(scored)}))


def write_prediction(pred: xr.Dataset, store: str | os.PathLike[str], *, tiles: Any = None,
                     overwrite: bool = False, group: int | None = None,
                     progress: bool = True,
                     on_tile: Callable[[dict[str, slice], float], None] | None = None) -> Path:
    """Compute a lazy prediction tile by tile into a Zarr store (resumable).

    Parameters
    ----------
    pred
        The lazy Dataset of :func:`lames_cube.ml.predict` (one chunk per tile).
    store
        The Zarr store (created; an existing store of the same prediction is resumed).
    tiles
        Which tiles to score (:func:`tile_regions`); the others are written as nodata
        (class 255) without computing anything.
    overwrite
        Replace a store of another model, settings, grid or tile selection instead of
        refusing it (a store of this prediction is resumed either way).
    group
        Scored tiles per dask compute (default: four times the number of tasks that run at
        once): tiles of one group share their halo's source pixels; the next group computes
        while one is written, and each tile is recorded as soon as it is written.
    progress
        A progress bar with tiles, Mpx/s and the time left.
    on_tile
        Called with each written tile's region and its seconds (e.g. a log).

    Returns
    -------
    pathlib.Path
        The store, complete (every tile in the ledger).

    Raises
    ------
    PredictionStoreMismatchError
        The store holds a prediction of another model, settings or grid.
    lames_cube.errors.OutputNotWritableError
        The store's folder cannot be written to (checked before anything is computed).
    lames_cube.errors.DiskFullError
        The disk filled up; a rerun resumes the store.

    Examples
    --------
    >>> import tempfile, numpy as np, xarray as xr
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_coords
    >>> from lames_cube.ml import predict
    >>> from lames_cube.testing.ml_sets import pointwise_checkpoint
    >>> gbox = GeoBox.from_bbox((300000, 7000000, 305120, 7005120), "EPSG:32719", resolution=10)
    >>> cube = xr.DataArray(np.full((1, 512, 512), 900, np.uint16), dims=("band", "y", "x"),
    ...                     coords={"band": ["B04"], **xr_coords(gbox)})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pred = predict(cube, pointwise_checkpoint(f"{tmp}/m.pt", bands=["B04"]), tile=256,
    ...                    patch=64)
    ...     path = write_prediction(pred, f"{tmp}/pred.zarr", progress=False)
    ...     open_prediction(path)["class"].shape
    (512, 512)
    """


    if not isinstance(pred, xr.Dataset) or "class" not in pred or pred.chunks is None:
        raise PredictionError("pred must be the lazy Dataset of lames_cube.ml.predict (class "
                              f"and probability, one chunk per tile); got {type(pred).__name__}.")
    store = Path(store)
    check_writable(store, what="prediction store")
    store.parent.mkdir(parents=True, exist_ok=True)
    regions = tile_regions(pred, tiles)
    _layout(pred, store, overwrite)
    try:
        _check_selection(store, regions)
    except PredictionStoreMismatchError:
        if not overwrite:
            raise
        _layout(pred, store, overwrite, replace=True)
        _check_selection(store, regions)
    done = regions_written(store, [r for r, _ in regions])
    todo = [(r, s) for (r, s), d in zip(regions, done, strict=True) if not d]
    try:
        from distributed import get_client  # local: optional, guarded

        client = get_client()
    except (ImportError, ValueError):
        client = None
    group = group or 4 * worker_threads(client)
    scored_px = sum(_pixels(r) for r, s in todo if s)
    bar = tqdm(total=len(regions), initial=len(regions) - len(todo), unit="tile",
               desc=f"predict {store.name}", smoothing=0.1, disable=not progress)
    start, px, written = time.perf_counter(), 0, 0

    def compute(batch: list[tuple[dict[str, slice], bool]]) -> tuple[tuple, float]:
        t0 = time.perf_counter()
        lazy = [pred.isel(r) for r, s in batch if s]
        out = dask.compute(*lazy) if lazy else ()
        return out, (time.perf_counter() - t0) / max(1, len(lazy))

    # The next group computes while this one is written (writing is one thread's work).
    pool = ThreadPoolExecutor(1, thread_name_prefix="lames-predict")
    try:
        with pool:
            batches = _groups(todo, group)
            ahead = pool.submit(compute, batches[0]) if batches else None
            for i, batch in enumerate(batches):
                results, took = ahead.result()
                ahead = pool.submit(compute, batches[i + 1]) if i + 1 < len(batches) else None
                computed = iter(results)
                for region, scored in batch:
                    part = next(computed) if scored else _nodata_part(pred, region)
                    crash_point(written, "tiles")
                    # written here (the tile is computed): never shipped back to a worker
                    write_cube(part, store, region=region, mode="resume", scheduler="sync")
                    written += 1
                    if scored:
                        px += _pixels(region)
                    if on_tile is not None:
                        on_tile(region, took if scored else 0.0)
                    rate = px / 1e6 / max(1e-9, time.perf_counter() - start)
                    bar.set_postfix_str(f"{rate:.2f} Mpx/s, {px / 1e6:,.0f}/"
                                        f"{scored_px / 1e6:,.0f} Mpx")
                    bar.update(1)
    except (KeyboardInterrupt, SystemExit):  # stop now: do not finish the prefetched group
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    Ledger(store).mark_complete()
    return store


def _groups(todo: list[tuple[dict[str, slice], bool]],
            group: int) -> list[list[tuple[dict[str, slice], bool]]]:
    """Consecutive tiles in groups of ``group`` scored tiles (with the unscored between)."""
    out: list[list[tuple[dict[str, slice], bool]]] = []
    cur: list[tuple[dict[str, slice], bool]] = []
    scored = 0
    for item in todo:
        cur.append(item)
        scored += item[1]
        if scored == group:
            out.append(cur)
            cur, scored = [], 0
    if cur:
        out.append(cur)
    return out


def _pixels(region: Mapping[str, slice]) -> int:
    return (region["y"].stop - region["y"].start) * (region["x"].stop - region["x"].start)


def open_prediction(store: str | os.PathLike[str], *, allow_incomplete: bool = False) -> xr.Dataset:
    """A prediction store as a lazy Dataset (``class``, ``probability``) on its grid.

    Raises
    ------
    StoreNotFoundError, IncompleteStoreError
        As :func:`lames_cube.io.open_store` (an unfinished run: resume it, or pass
        ``allow_incomplete=True``).
    """
    ds = open_store(store, allow_incomplete=allow_incomplete)
    if "class" not in ds:
        raise PredictionError(f"{str(store)!r} is a store but not a prediction (variables "
                              f"{list(ds.data_vars)}); write one with write_prediction.")
    return ds


# --------------------------------------------------------------------------- exports
def bbox_roi(gbox: Any, bounds: Sequence[float]) -> tuple[slice, slice] | None:
    """The pixel slices ``(y, x)`` of ``gbox`` that hold the box ``bounds`` (minx, miny, maxx,
    maxy in the grid's CRS; pixels whose area touches it), or None when they do not overlap.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> g = GeoBox.from_bbox((0, 0, 1000, 1000), "EPSG:32719", resolution=10)
    >>> bbox_roi(g, (95, 0, 205, 50)), bbox_roi(g, (2000, 0, 3000, 50))
    ((slice(95, 100, None), slice(9, 21, None)), None)
    """

    a = gbox.affine  # axis-aligned grids (north-up or not)
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    c0, c1 = (minx - a.c) / a.a, (maxx - a.c) / a.a
    r0, r1 = (maxy - a.f) / a.e, (miny - a.f) / a.e
    r0, r1 = sorted((r0, r1))
    c0, c1 = sorted((c0, c1))
    h, w = (int(v) for v in gbox.shape)
    ys = slice(max(0, math.floor(r0)), min(h, math.ceil(r1)))
    xs = slice(max(0, math.floor(c0)), min(w, math.ceil(c1)))
    if ys.stop <= ys.start or xs.stop <= xs.start:
        return None
    return ys, xs


def _region(ds: xr.Dataset, bbox: Sequence[float] | None, crs: Any) -> xr.Dataset:
    if bbox is None:
        return ds

    gbox = ds.odc.geobox
    box = BoundingBox(*bbox, crs=crs or gbox.crs).to_crs(gbox.crs)
    roi = bbox_roi(gbox, tuple(box))
    if roi is None:
        raise PredictionError(f"bbox {tuple(bbox)} does not overlap the prediction's grid "
                              f"{tuple(gbox.boundingbox)} ({gbox.crs}).")
    return ds.isel(y=roi[0], x=roi[1])


def export_cog(pred: xr.Dataset | str | os.PathLike[str], path: str | os.PathLike[str], *,
               variable: str = "probability", bbox: Sequence[float] | None = None,
               crs: Any = None) -> Path:
    """Write one variable of a prediction (a region of it) as a Cloud-Optimised GeoTIFF.

    Parameters
    ----------
    pred
        A prediction Dataset or store.
    variable
        ``"probability"`` or ``"class"``.
    bbox, crs
        The region (``minx, miny, maxx, maxy`` in ``crs``, default the grid's CRS); None for all.

    Returns
    -------
    pathlib.Path
        The file (written atomically), with the grid's CRS and nodata (255 for class).

    Notes
    -----
    The region is computed in memory: for a country, pass a ``bbox``.
    """

    ds = open_prediction(pred) if not isinstance(pred, xr.Dataset) else pred
    if variable not in ds:
        raise PredictionError(f"variable={variable!r} is not in the prediction "
                              f"({list(ds.data_vars)}).")
    ds = _region(ds, bbox, crs)
    da = ds[variable]
    nodata = NODATA_CLASS if variable == "class" else None
    da = da.rio.write_crs(ds.odc.geobox.crs.to_wkt())
    if nodata is not None:
        da = da.rio.write_nodata(nodata)
    with atomic_path(path) as tmp:
        da.compute().rio.to_raster(tmp, driver="COG", compress="DEFLATE")
    return Path(path)


def prediction_polygons(pred: xr.Dataset | str | os.PathLike[str], *, threshold: float = 0.5,
                        min_area_km2: float = 0.01, sites: Any = None, footprints: Any = None,
                        tiles: Any = None, block: int | None = None) -> Any:
    """Polygons of predicted mining (probability >= ``threshold``), with area and context.

    Parameters
    ----------
    pred
        A prediction Dataset or store (probability uint8 x 255 or float).
    threshold
        Mine probability at or above which a pixel is mining.
    min_area_km2
        Drop polygons smaller than this.
    sites, footprints
        GeoDataFrames of LAMES site polygons (``site_id``) and Maus footprints (``fid``): each
        polygon gets the site or footprint it overlaps most (None when none).
    tiles
        A tile table (:func:`lames_cube.grid.mosaic_tiles`): each polygon gets the ``tile_id``
        that holds its centroid.
    block
        Pixels per side of the blocks read at a time (default: the store's chunk).

    Returns
    -------
    geopandas.GeoDataFrame
        In the grid's CRS: ``area_km2`` (true ground area on the WGS84 ellipsoid:
        :func:`lames_cube.grid.geodesic_area`),
        ``tile_id``, ``site_id``, ``footprint``, ``mean_probability``, geometry. Polygons that
        cross block edges are merged.
    """


    ds = open_prediction(pred) if not isinstance(pred, xr.Dataset) else pred
    extra = [d for d in ds["probability"].dims if d not in ("y", "x")]
    if extra:
        raise PredictionError(f"the prediction has dims {ds['probability'].dims}; polygons are "
                              f"made of one map: select one first, e.g. pred.isel({extra[0]}=-1).")
    gbox = ds.odc.geobox
    prob = ds["probability"]
    cut = threshold * 255 if prob.dtype == np.uint8 else threshold
    step = block or (int(prob.chunks[0][0]) if prob.chunks else 2304)  # along y
    rows: list[tuple[Any, float, int, bool]] = []  # geometry, probability sum, pixels, at edge
    px_km2 = abs(gbox.resolution.x * gbox.resolution.y) / 1e6
    min_px = min_area_km2 / px_km2
    for y0 in range(0, prob.sizes["y"], step):
        for x0 in range(0, prob.sizes["x"], step):
            ys, xs = slice(y0, y0 + step), slice(x0, x0 + step)
            rows += _block_polygons(ds, ys, xs, cut, min_px, gbox)
    crs = gbox.crs.to_wkt()
    columns = ["area_km2", "tile_id", "site_id", "footprint", "mean_probability"]
    if not rows:
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=crs)
    out = _merge_edges(rows, crs)
    out["area_km2"] = geodesic_area(out) / 1e6
    out = out[out.area_km2 >= min_area_km2].reset_index(drop=True)
    if prob.dtype == np.uint8:
        out["mean_probability"] = out["mean_probability"] / 255
    out["tile_id"] = _tile_of(out, tiles)
    out["site_id"] = _best_overlap(out, sites, "site_id")
    out["footprint"] = _best_overlap(out, footprints, "fid")
    return out[[*columns, "geometry"]]


def _block_polygons(ds: xr.Dataset, ys: slice, xs: slice, cut: float, min_px: float,
                    gbox: Any) -> list[tuple[Any, float, int, bool]]:
    """Connected areas of mining in one block: (polygon, probability sum, pixels, at edge);
    areas smaller than ``min_px`` that do not touch the block's edge are dropped here."""

    both = ds[["probability", "class"]].isel(y=ys, x=xs).compute()  # one read (or model run)
    part = both["probability"].values
    mask = part >= cut
    if ds["probability"].dtype == np.uint8:
        mask &= both["class"].values != NODATA_CLASS
    else:
        mask &= ~np.isnan(part)
    if not mask.any():
        return []
    labels, n = ndimage.label(mask)
    count = np.bincount(labels.ravel(), minlength=n + 1)
    total = np.bincount(labels.ravel(), weights=np.nan_to_num(part, nan=0.0).ravel().astype(
        np.float64), minlength=n + 1)
    edge = np.zeros(n + 1, bool)
    for line in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        edge[line] = True
    keep = (count >= min_px) | edge
    keep[0] = False
    if not keep.any():
        return []
    transform = gbox[ys, xs].affine
    out = []
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=keep[labels],
                                                transform=transform, connectivity=4):
        k = int(value)
        out.append((shapely.geometry.shape(geom), float(total[k]), int(count[k]), bool(edge[k])))
    return out


def _merge_edges(rows: list[tuple[Any, float, int, bool]], crs: str) -> Any:
    """One polygon per connected area: pieces at block edges are merged with their
    neighbours; the probability sums and pixel counts add up."""

    inner = [r for r in rows if not r[3]]
    pieces = [r for r in rows if r[3]]
    geoms = [r[0] for r in inner]
    sums = [r[1] for r in inner]
    counts = [r[2] for r in inner]
    if pieces:
        merged = shapely.union_all([r[0] for r in pieces])
        parts = list(getattr(merged, "geoms", [merged]))
        tree = shapely.STRtree(parts)
        acc = np.zeros((len(parts), 2))
        points = [r[0].representative_point() for r in pieces]
        where = tree.query(points, predicate="within")
        for i, j in zip(*where, strict=True):
            acc[j] += (pieces[i][1], pieces[i][2])
        geoms += parts
        sums += list(acc[:, 0])
        counts += list(acc[:, 1])
    counts_arr = np.maximum(np.asarray(counts, np.float64), 1)
    return gpd.GeoDataFrame({"mean_probability": np.asarray(sums) / counts_arr},
                            geometry=geoms, crs=crs)


def _tile_of(gdf: Any, tiles: Any) -> list:
    if tiles is None or len(gdf) == 0:
        return [None] * len(gdf)
    t = tiles.to_crs(gdf.crs)
    joined = gdf.geometry.representative_point().to_frame("geometry").sjoin(
        t[["tile_id", "geometry"]], how="left", predicate="within")
    joined = joined[~joined.index.duplicated()]
    return [None if not isinstance(v, str) else v for v in joined["tile_id"]]


def _best_overlap(gdf: Any, layer: Any, column: str) -> list:
    """Per polygon, ``layer[column]`` of the feature it overlaps most (None if none)."""
    if layer is None or len(gdf) == 0 or len(layer) == 0:
        return [None] * len(gdf)
    other = layer.to_crs(gdf.crs)[[column, "geometry"]].reset_index(drop=True)
    pairs = gdf.geometry.sindex.query(other.geometry, predicate="intersects")
    best: dict[int, tuple[float, Any]] = {}
    for j, i in zip(*pairs, strict=True):
        area = gdf.geometry.iloc[i].intersection(other.geometry.iloc[j]).area
        if area > best.get(i, (0.0, None))[0]:  # sharing an edge is not overlapping
            best[i] = (area, other[column].iloc[j])
    return [None if i not in best else _plain(best[i][1]) for i in range(len(gdf))]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def write_polygons(gdf: Any, path: str | os.PathLike[str]) -> Path:
    """Write prediction polygons to GeoParquet atomically."""

    with atomic_path(path) as tmp:
        gdf.to_parquet(tmp)
    return Path(path)
