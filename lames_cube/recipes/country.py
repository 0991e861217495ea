"""Country-scale inference from a cube recipe: ``lames-cube infer chile-mosaic --checkpoint …``.

:func:`run_inference` scores every active tile of a single-area recipe's mosaic grid (for
``chile-mosaic``: the LAMES country grid, 1,826 active tiles of 2304 px in EPSG:32719) with
:func:`lames_cube.ml.predict`, writes the resumable prediction store and then:

- ``summary.json``: tiles, km² scored, km² predicted mining, wall time, throughput, peak memory;
- ``evaluation.json``: the LAMES metrics over the LAMES site boxes, recall of the LAMES sites and
  of the hidden mines, false-positive km² per 1,000 km² of mine-free land (from the world's
  truth, when the source is the synthetic world);
- ``polygons.parquet``: polygons of predicted mining (km², tile, site or footprint);
- ``map.png``: the country with predicted mining per tile and the sites found and missed.

Sources
-------
``world`` (default here, offline): the synthetic world that the patch recipes render (the
recipe's world, widened to every LAMES site and hidden mine) under a clear sky, lazily on the
mosaic grid, chunked so that each pixel is rendered once; pixels farther than ``buffer_m``
outside the recipe's area are nodata. ``store``: a cube store built from the recipe's STAC
catalogue (``lames-cube cube build chile-mosaic``; online), one composite (``year``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from rasterio.features import rasterize
from shapely.ops import transform

from lames_cube._atomic import atomic_path, check_writable
from lames_cube.cluster import dask_scheduler, worker_threads
from lames_cube.errors import (
    InferenceRunError,
    LamesCubeError,
)
from lames_cube.grid import region_polygon, site_boxes
from lames_cube.io import open_cube, open_store
from lames_cube.metrics import confusion_matrix, scores
from lames_cube.prediction import (
    NODATA_CLASS,
    bbox_roi,
    open_prediction,
    prediction_polygons,
    write_polygons,
    write_prediction,
)
from lames_cube.recipes.cubes import Recipe, load_recipe
from lames_cube.recipes.pipeline import area_geometry, tile_plan
from lames_cube.synthetic import World, demo_spec
from lames_cube.synthetic.clear import clear_sky_cube
from lames_cube.timeseries import pixel_area

__all__ = ["InferenceRunError", "evaluate_prediction", "inference_source", "plot_country_map",
           "run_inference"]

#: A mine is found when at least this fraction of its area is predicted mining.
FOUND_FRACTION = 0.2
#: Predicted mining within this distance (m) of a mine is not a false positive.
MINE_BUFFER_M = 500.0



def _world(recipe: Any, data_dir: Any) -> Any:

    # The world the patch recipes render the site windows from, widened to every LAMES site
    # and hidden mine (patch_recipes._drawing_world): the training pixels' world.
    return World(dataclasses.replace(demo_spec(data_dir), area="lames", site_ids=None),
                 data_dir=data_dir)


def inference_source(recipe: Any, *, bands: Sequence[str], tile: int, halo: int,
                     source: str | os.PathLike[str] = "world", data_dir: Any = None,
                     tiles: Sequence[str] | None = None, year: int | None = None,
                     buffer_m: float = 5000.0) -> tuple[Any, Any, Any, Any]:
    """The lazy cube a recipe's inference reads, its grid, its tile table and the world.

    Returns
    -------
    (cube, gbox, table, world)
        ``world`` is None for a store source.
    """

    from lames_cube.ml.inference import halo_chunks  # local: ml needs optional torch

    gbox, table = tile_plan(recipe, data_dir=data_dir, tiles=tiles)
    if str(source) == "world":
        world = _world(recipe, data_dir)
        area = area_geometry(recipe, data_dir)
        to_grid = Transformer.from_crs(4326, gbox.crs.to_wkt(), always_xy=True).transform
        region = transform(to_grid, area).buffer(buffer_m)
        active = shapely.union_all(table.geometry[table.active].values)
        region = region.intersection(active)

        chunks = (halo_chunks(gbox.shape[0], tile, halo), halo_chunks(gbox.shape[1], tile, halo))
        cube = clear_sky_cube(world, gbox, bands, chunks, region=region)
        return cube, gbox, table, world

    path = Path(source)
    if not path.exists():
        raise InferenceRunError(f"source {str(source)!r} is neither 'world' nor an existing cube "
                                f"store; build one with lames-cube cube build {recipe.name} "
                                f"--output {source}, or use --source world.")
    cube = open_cube(path, variable="reflectance")
    for dim in ("year", "time"):
        if dim not in cube.dims:
            continue
        if dim == "year":
            years = [int(v) for v in cube.year.values]
            pick = years[-1] if year is None else year
            if pick not in years:
                raise InferenceRunError(f"year={year} is not in the store {str(path)!r} "
                                        f"(years {years}); pass one of them.")
            cube = cube.sel(year=pick)
        else:
            years = cube.time.dt.year.values
            if year is not None and year not in set(years.tolist()):
                raise InferenceRunError(f"year={year} is not in the store {str(path)!r} "
                                        f"(years {sorted(set(years.tolist()))}).")
            cube = cube.isel(time=-1 if year is None else int(np.nonzero(years == year)[0][-1]))
    store_gbox = cube.odc.geobox
    if store_gbox != gbox:  # a trial's tile block inside a whole-mosaic store: crop it

        roi = bbox_roi(store_gbox, tuple(gbox.boundingbox))
        cropped = cube.isel(y=roi[0], x=roi[1]) if roi is not None else None
        if cropped is None or cropped.odc.geobox != gbox:
            raise InferenceRunError(f"the store {str(path)!r} is on {store_gbox}, not on recipe "
                                    f"{recipe.name!r}'s grid {gbox}; build it from this recipe "
                                    f"(lames-cube cube build {recipe.name}).")
        cube = cropped
    return cube, gbox, table, None


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def run_inference(recipe: Any, checkpoint: str | os.PathLike[str],
                  output: str | os.PathLike[str], *, source: str | os.PathLike[str] = "world",
                  data_dir: Any = None, tiles: Sequence[str] | None = None,
                  scheduler: str | None = None, workers: int | None = None,
                  patch: int | None = None, overlap: int | None = None,
                  batch_size: int | None = None, device: str = "auto",
                  threads: int | None = None, year: int | None = None,
                  overwrite: bool = False, progress: bool = True,
                  evaluate: bool = True) -> dict[str, Any]:
    """Score a recipe's mosaic with a checkpoint; write the store, summary, evaluation, map.

    Parameters
    ----------
    recipe
        A single-area cube recipe (name or path), e.g. ``"chile-mosaic"``.
    checkpoint
        A checkpoint of :func:`lames_cube.ml.train`.
    output
        The run folder: ``prediction.zarr``, ``summary.json``, ``evaluation.json``,
        ``polygons.parquet``, ``map.png``, ``tiles.log`` (one line per tile written).
    source
        ``"world"`` or a cube store of the recipe (see the module docstring).
    tiles
        Only these tile ids (a trial run; the grid is the block that holds them).
    scheduler, workers
        Where dask runs (:func:`lames_cube.cluster.dask_scheduler`).
    patch, overlap, batch_size, device, threads
        As for :func:`lames_cube.ml.predict`.
    overwrite
        Replace a prediction store of another model or grid.
    evaluate
        Measure against the world's truth (world source only).

    Returns
    -------
    dict
        The summary (also in ``summary.json``), with the evaluation when made.
    """
    from lames_cube.ml.inference import (  # local: ml needs optional torch
        ModelHandle,
        predict,
        window_layout,
    )

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(output)
    check_writable(out, what="run folder")
    out.mkdir(parents=True, exist_ok=True)
    handle = ModelHandle.from_checkpoint(checkpoint, device=device, threads=threads)
    tile = int(recipe.grid.tile_size)
    layout = window_layout(tile=tile, patch=int(patch or handle.meta["patch_size"]),
                           overlap=overlap)
    cube, gbox, table, world = inference_source(
        recipe, bands=handle.meta["bands"], tile=tile, halo=layout.halo, source=source,
        data_dir=data_dir, tiles=tiles, year=year)
    started = time.perf_counter()
    pred = predict(cube, handle, tile=tile, patch=layout.patch, overlap=layout.overlap,
                   batch_size=batch_size)
    store = out / "prediction.zarr"
    if overwrite and (out / "tiles.log").exists() and _replaced(store, pred):
        (out / "tiles.log").unlink()  # the store will be replaced: its log goes with it
        (out / "evaluation.json").unlink(missing_ok=True)
    log = open(out / "tiles.log", "a")
    try:
        with dask_scheduler(scheduler, workers=workers, quiet=not progress) as client:
            n_threads = worker_threads(client)

            def on_tile(region, seconds):
                px = ((region["y"].stop - region["y"].start)
                      * (region["x"].stop - region["x"].start))
                log.write(json.dumps({"y": region["y"].start, "x": region["x"].start,
                                      "seconds": round(seconds, 3), "px": px,
                                      "scored": seconds > 0,
                                      "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
                log.flush()

            write_prediction(pred, store, tiles=table, overwrite=overwrite, progress=progress,
                             on_tile=on_tile)
    finally:
        log.close()
    wall = time.perf_counter() - started
    ds = open_prediction(store)
    active = table[table.active]
    scored_km2, mining_km2 = _areas(ds, active)
    polygons = prediction_polygons(ds, sites=world.sites if world is not None else None,
                                   footprints=world.hidden if world is not None else None,
                                   tiles=table)
    write_polygons(polygons, out / "polygons.parquet")
    summary: dict[str, Any] = {
        "recipe": recipe.name, "checkpoint": str(Path(checkpoint).resolve()),
        "model_sha256": handle.digest, "source": str(source),
        "grid": {"crs": str(gbox.crs), "resolution": float(gbox.resolution.x),
                 "shape": [int(v) for v in gbox.shape]},
        "tiles": len(table), "tiles_scored": len(active),
        "window": {"tile": tile, "patch": layout.patch, "overlap": layout.overlap,
                   "halo": layout.halo, "blend": layout.blend},
        "km2_scored": round(scored_km2, 1),
        "km2_predicted_mining": round(mining_km2, 2),
        "km2_predicted_mining_polygons": round(float(polygons.area_km2.sum()), 2),
        "polygons": len(polygons),
        "wall_seconds_this_run": round(wall, 1),
        "scheduler": scheduler or "threads", "dask_threads": n_threads,
        "peak_memory_mb": round(_peak_rss_mb(), 0),
        "device": str(handle.torch_device),
    }
    summary.update(_timing(out / "tiles.log", tile))
    ev = None
    if evaluate and world is not None:
        ev = evaluate_prediction(ds, world, table)
        (out / "evaluation.json").write_text(json.dumps(ev, indent=2))
        summary["evaluation"] = {k: v for k, v in ev.items() if not isinstance(v, list | dict)}
    plot_country_map(ds, table, out / "map.png", world=world, polygons=polygons, evaluation=ev)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _replaced(store: Path, pred: Any) -> bool:
    """Whether writing ``pred`` with overwrite replaces the store (another model/settings)."""

    if not store.exists():
        return False
    try:
        old = open_store(store, allow_incomplete=True).attrs
    except LamesCubeError:
        return True
    keys = ("model_sha256", "model_bands", "tile", "patch", "overlap", "halo", "blend", "edge")
    return any(old.get(k) != pred.attrs.get(k) for k in keys)


def _areas(ds: Any, active: Any) -> tuple[float, float]:
    """Scored (class != 255) and predicted mining km² of true ground area over the active
    tiles (:func:`lames_cube.timeseries.pixel_area`: a 10 m pixel of the mosaic's UTM grid
    covers 100 m² divided by the square of the projection's scale there)."""

    scored = mining = 0.0
    for _, t in active.iterrows():
        tile = ds["class"].isel(y=slice(int(t.y_off), int(t.y_off + t.height)),
                                x=slice(int(t.x_off), int(t.x_off + t.width)))
        cls = tile.values
        area = pixel_area(tile.odc.geobox).values / 1e6
        scored += float(area[cls != NODATA_CLASS].sum())
        mining += float(area[(cls != NODATA_CLASS) & (cls > 0)].sum())
    return scored, mining


def _timing(log: Path, tile: int) -> dict[str, Any]:
    """Wall time and throughput over every sitting, from the tile log."""

    rows = []
    for line in log.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line torn by a kill
            continue
    if not rows:
        return {}
    stamps = [dt.datetime.fromisoformat(r["at"]) for r in rows]
    scored = [r for r in rows if r.get("scored", r["seconds"] > 0)]
    busy = sum(r["seconds"] for r in scored)
    px = sum(r.get("px", tile * tile) for r in scored)
    return {"tile_seconds_median": round(float(np.median([r["seconds"] for r in scored]
                                                         or [0])), 2),
            "first_tile_at": stamps[0].isoformat(), "last_tile_at": stamps[-1].isoformat(),
            "compute_seconds_total": round(busy, 1),
            "throughput_mpx_per_s": round(px / 1e6 / max(busy, 1e-9), 3)}


def evaluate_prediction(ds: Any, world: Any, table: Any, *,
                        found_fraction: float = FOUND_FRACTION,
                        buffer_m: float = MINE_BUFFER_M) -> dict[str, Any]:
    """Measure a country prediction against the synthetic world's truth.

    - Over the LAMES site boxes (:func:`lames_cube.grid.site_boxes`, cut from the prediction's
      grid): the LAMES metrics (:func:`lames_cube.metrics.scores`) of mine site (inside any
      LAMES site polygon) against other, for all sites and for the test sites.
    - Recall of the LAMES sites and of the hidden mines: a mine is found when at least
      ``found_fraction`` of the scored part of its footprint is predicted mining.
    - False positives: predicted mining farther than ``buffer_m`` from every mine (site
      footprints, hidden mines and every LAMES sector), in km² per 1,000 km² of scored
      mine-free land.

    Returns
    -------
    dict
        The figures, and per mine its predicted fraction (``mines``).
    """


    gbox = ds.odc.geobox
    crs = gbox.crs.to_wkt()
    sites = world.sites.to_crs(crs)
    hidden = world.hidden.to_crs(crs)
    mines = pd.concat([sites.assign(kind="lames")[["site_id", "kind", "geometry"]],
                       hidden.assign(kind="hidden")[["site_id", "kind", "geometry"]]],
                      ignore_index=True)
    mines = gpd.GeoDataFrame(mines, geometry="geometry", crs=crs)
    sectors = world.sectors.to_crs(crs)
    keep_out = gpd.GeoSeries(pd.concat([mines.geometry, sectors.geometry]), crs=crs
                             ).buffer(buffer_m)
    inside = np.zeros(len(mines) + 1, np.int64)
    predicted = np.zeros(len(mines) + 1, np.int64)
    fp = free = 0.0
    mine_index = mines.sindex
    out_index = gpd.GeoSeries(keep_out.values, crs=crs).sindex
    for _, t in table[table.active].iterrows():
        ys = slice(int(t.y_off), int(t.y_off + t.height))
        xs = slice(int(t.x_off), int(t.x_off + t.width))
        cls = ds["class"].isel(y=ys, x=xs).values
        valid = cls != NODATA_CLASS
        pred = valid & (cls > 0)
        sub = gbox[ys, xs]
        shape = tuple(sub.shape)
        near = out_index.query(t.geometry, predicate="intersects")
        if len(near):
            blocked = rasterize(((keep_out.iloc[k], 1) for k in near), out_shape=shape,
                                transform=sub.affine, fill=0, dtype="uint8").astype(bool)
        else:
            blocked = np.zeros(shape, bool)
        area = pixel_area(sub).values / 1e6  # km² of true ground area per pixel
        fp += float(area[pred & ~blocked].sum())
        free += float(area[valid & ~blocked].sum())
        hits = mine_index.query(t.geometry, predicate="intersects")
        if len(hits):
            for k in hits:  # one raster per mine: footprints may overlap
                m = rasterize([(mines.geometry.iloc[k], 1)], out_shape=shape,
                              transform=sub.affine, fill=0, dtype="uint8").astype(bool)
                inside[k + 1] += int((m & valid).sum())
                predicted[k + 1] += int((m & pred).sum())
    frac = np.where(inside[1:] > 0, predicted[1:] / np.maximum(inside[1:], 1), np.nan)
    mines = mines.assign(fraction=frac, found=frac >= found_fraction,
                         scored=inside[1:] > 0)
    out: dict[str, Any] = {}
    for kind, name in (("lames", "lames_sites"), ("hidden", "hidden_mines")):
        part = mines[(mines.kind == kind) & mines.scored]
        out[f"{name}_scored"] = len(part)
        out[f"{name}_found"] = int(part.found.sum())
        out[f"{name}_recall"] = round(float(part.found.mean()), 4) if len(part) else None
        out[f"{name}_median_fraction"] = (round(float(np.nanmedian(part.fraction)), 4)
                                          if len(part) else None)
    out["found_fraction"] = found_fraction
    out["fp_km2"] = round(fp, 2)
    out["mine_free_km2"] = round(free, 1)
    out["fp_km2_per_1000_km2"] = round(1000 * fp / max(free, 1e-9), 3)
    out["buffer_m"] = buffer_m
    out.update(_site_box_metrics(ds, world, confusion_matrix, scores))
    out["mines"] = [{"site_id": str(r.site_id), "kind": r.kind,
                     "fraction": None if np.isnan(r.fraction) else round(float(r.fraction), 4),
                     "found": bool(r.found)} for r in mines.itertuples()]
    return out


def _site_box_metrics(ds: Any, world: Any, confusion_matrix: Any, scores: Any) -> dict[str, Any]:
    """LAMES metrics of the prediction inside the LAMES site boxes, truth = site polygons."""


    gbox = ds.odc.geobox
    crs = gbox.crs.to_wkt()
    sites = world.sites
    boxes = site_boxes(sites).to_crs(crs)
    split = dict(zip(sites.site_id.astype(str), sites.get("split", [None] * len(sites)),
                     strict=True))
    polys = sites.to_crs(crs)
    cms = {"all": np.zeros((2, 2), np.int64), "test": np.zeros((2, 2), np.int64)}
    for _, box in boxes.iterrows():
        roi = bbox_roi(gbox, box.geometry.bounds)
        if roi is None:
            continue
        sub = gbox[roi]
        cls = ds["class"].isel(y=roi[0], x=roi[1]).values
        near = polys[polys.intersects(shapely.box(*sub.boundingbox))]
        truth = rasterize(((g, 1) for g in near.geometry), out_shape=tuple(sub.shape),
                          transform=sub.affine, fill=0, dtype="uint8") if len(near) else \
            np.zeros(tuple(sub.shape), np.uint8)
        valid = cls != NODATA_CLASS
        cm = confusion_matrix((cls[valid] > 0).astype(np.uint8), truth[valid], 2)
        cms["all"] += cm
        if split.get(str(box.site_id)) == "test":
            cms["test"] += cm
    out = {}
    for name, cm in cms.items():
        if cm.sum() == 0:
            continue
        sc = scores(cm)
        out[f"site_boxes_{name}"] = {k: round(float(sc[k]), 4) for k in (
            "micro_accuracy", "macro_accuracy", "macro_precision", "macro_recall", "macro_f1")}
        out[f"site_boxes_{name}"]["pixels"] = int(cm.sum())
    return out


def plot_country_map(ds: Any, table: Any, path: str | os.PathLike[str], *, world: Any = None,
                     polygons: Any = None, evaluation: dict | None = None) -> Path:
    """A map of the country: predicted mining km² per tile, and the mines found and missed
    (by ``evaluation``, :func:`evaluate_prediction`'s result; without it none is marked)."""
    import matplotlib  # local: heavy matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: heavy matplotlib
    from matplotlib.colors import LogNorm  # local: heavy matplotlib


    crs = ds.odc.geobox.crs.to_wkt()
    tiles = table.copy()
    km2 = np.zeros(len(tiles))
    if polygons is not None and len(polygons):
        per = polygons.groupby("tile_id").area_km2.sum()
        km2 = tiles.tile_id.map(per).fillna(0).to_numpy()
    tiles["km2"] = km2
    fig, ax = plt.subplots(figsize=(6, 14))
    act = tiles[tiles.active]
    act.boundary.plot(ax=ax, color="0.85", linewidth=0.3)
    hot = act[act.km2 > 0]
    if len(hot):
        hot.plot(ax=ax, column="km2", cmap="magma_r", norm=LogNorm(vmin=max(hot.km2.min(), 0.01),
                 vmax=max(hot.km2.max(), 0.02)), legend=True,
                 legend_kwds={"label": "predicted mining per tile (km²)", "shrink": 0.4})
    try:
        gpd.GeoSeries([region_polygon("chile")], crs=4326).to_crs(crs).boundary.plot(
            ax=ax, color="0.3", linewidth=0.6)
    except LamesCubeError:
        pass
    if world is not None:
        state = {m["site_id"]: m["found"] for m in (evaluation or {}).get("mines", [])
                 if m["fraction"] is not None}  # site id -> found; absent: not scored
        for layer, marker, label in ((world.sites, "o", "LAMES site"),
                                     (world.hidden, "^", "hidden mine")):
            pts = layer.to_crs(crs).geometry.representative_point()
            ids = layer.site_id.astype(str)
            found = ids.map(lambda i: state.get(i) is True).to_numpy()
            missed = ids.map(lambda i: state.get(i) is False).to_numpy()
            rest = ~(found | missed)
            ax.scatter(pts.x[found], pts.y[found], s=12, marker=marker, color="tab:green",
                       label=f"{label} found ({found.sum()})", zorder=3)
            ax.scatter(pts.x[missed], pts.y[missed], s=12, marker=marker, facecolor="none",
                       edgecolor="tab:red", label=f"{label} missed ({missed.sum()})", zorder=3)
            if rest.any():
                ax.scatter(pts.x[rest], pts.y[rest], s=6, marker=marker, color="0.6",
                           label=f"{label} not scored ({rest.sum()})", zorder=2)
        ax.legend(loc="lower left", fontsize=7)
    ax.set_title("Predicted mining (synthetic world)" if world is not None else
                 "Predicted mining", fontsize=10)
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)
