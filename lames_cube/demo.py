"""The demo: the whole pipeline on the synthetic world, in one command, with an HTML report.

``lames-cube demo`` runs, each stage reusing what an earlier run left:

1. **world**: the demo's synthetic Sentinel-2 world (four real LAMES sites, 2020-2023) as COGs
   and a STAC catalogue, cached by its digest (:mod:`lames_cube.synthetic.presets`);
2. **search**: :func:`lames_cube.search` over it, as over a public catalogue;
3. **cubes**: the ``demo`` recipe: one yearly median composite per site on its UTM grid;
4. **labels**: the LAMES site polygons rasterised on each cube's grid, and the world's true
   mine masks of every year (the truth the world knows);
5. **training**: the ``demo-site-detection`` experiment: patch sets of every LAMES site box
   (the paper's split), the small U-Net for a few epochs, scored on the 35 test sites beside a
   pixel classifier, an index threshold and the paper;
6. **inference**: :func:`lames_cube.ml.predict` over every site cube and year, written into
   resumable stores;
7. **metrics**: the predicted mining against the world's truth per site and year;
8. **extent**: :func:`lames_cube.timeseries.extent_over_time` from the predictions and from
   the labels alone, against the world's ``truth.csv``;
9. **report**: ``report.html``, one self-contained file (:mod:`lames_cube.html_report`).

The demo is a face over the library, like the CLI: nothing in the library imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from lames_cube._atomic import atomic_path, atomic_write_text
from lames_cube._names import safe_name
from lames_cube.composite import to_rgb8
from lames_cube.html_report import figure_png, write_html_report
from lames_cube.io import TemplateMismatchError, open_cube, open_store
from lames_cube.labels import rasterize
from lames_cube.metrics import confusion_matrix, scores
from lames_cube.prediction import PredictionStoreMismatchError, open_prediction, write_prediction
from lames_cube.recipes.cubes import Recipe, load_recipe
from lames_cube.recipes.experiments import load_experiment, run_experiment
from lames_cube.recipes.pipeline import run_recipe
from lames_cube.report import results_table
from lames_cube.search import search
from lames_cube.synthetic import World, write_world
from lames_cube.synthetic.presets import DEMO_SPEC, demo_spec, demo_world_dir
from lames_cube.timeseries import compare_with_truth, extent_over_time, first_mining_year

__all__ = ["DEMO_SPEC", "demo_recipe", "demo_spec", "demo_world_dir", "quicklook", "run_demo"]

#: The experiment recipe the demo trains and scores (``cubes/experiments``).
DEMO_EXPERIMENT = "demo-site-detection"
#: Mining still counts as a site's this far around its polygons (mines grow past the labels).
SITE_BUFFER_M = 250.0


def demo_recipe(world, root: Path):
    """The ``demo`` cube recipe pointed at this world and its sites (works for fallback sites)."""

    data = load_recipe("demo").to_dict()
    data.update({"catalog": str(root), "area": {"sites": list(world.sites.site_id)},
                 "output": str(root / "cubes")})
    return Recipe.from_dict(data)


def quicklook(stores: list[Path], out: Path) -> Path:
    """Save true-colour quicklooks of each site's first and last yearly composite."""
    from matplotlib.figure import Figure  # local: heavy matplotlib


    stores = stores[:4]
    fig = Figure(figsize=(4 * len(stores), 8.4), layout="constrained")
    axes = fig.subplots(2, len(stores), squeeze=False)
    for col, store in enumerate(stores):
        cube = open_store(store).reflectance
        for row, year in enumerate((int(cube.year.values[0]), int(cube.year.values[-1]))):
            rgb = to_rgb8(cube.sel(year=year)).transpose("y", "x", "band").values
            axes[row, col].imshow(rgb)
            axes[row, col].set_title(f"{store.stem} {year} median", fontsize=9)
            axes[row, col].axis("off")
    fig.suptitle("Synthetic Sentinel-2: yearly median composites, 8-bit true colour (mines grow)")
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(figure_png(fig, dpi=80))
    return out


class _Stages:
    """Numbered stage lines with their seconds, kept for the report."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.timings = total, 0, {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.n += 1
        print(f"\n[{self.n}/{self.total}] {name}", flush=True)
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0
        print(f"    ({self.timings[name]:.0f} s)", flush=True)


# ------------------------------------------------------------------------------- stages
def _world_and_search(world, root: Path, workers, data_dir) -> list:
    print(f"  sites  {', '.join(f'{r.site_id} ({r.split})' for r in world.sites.itertuples())}")
    print(f"  tiles  {len(world.tiles)}: {', '.join(t.tile_id for t in world.tiles)}")
    print(f"  dates  {len(world.dates)} from {world.dates[0]} to {world.dates[-1]}")
    write_world(root, world=world, workers=workers)
    print(f"  world  {root}")
    return search(root)


def _describe_search(root: Path, world, everything) -> None:
    table = pd.DataFrame([{
        "id": i.id, "date": i.datetime.date(), "cloud %": i.properties["eo:cloud_cover"],
        "baseline": i.properties["s2:processing_baseline"],
        "dn offset": i.properties["lames:dn_offset"]} for i in everything])
    print(f"  search(world): {len(everything)} items")
    print("  " + table.groupby(["baseline", "dn offset"]).size().rename("items").to_string()
          .replace("\n", "\n  "))
    site = world.sites.site_id.iloc[0]
    clear = search(root, sites=[site], max_cloud=10, max_nodata=5)
    print(f"  search(world, sites=['{site}'], max_cloud=10, max_nodata=5): {len(clear)} items")


def _cubes(world, root: Path, everything, data_dir) -> list[Path]:
    recipe = demo_recipe(world, root)
    try:
        stores = run_recipe(recipe, items=everything, data_dir=data_dir, progress=False)
    except TemplateMismatchError as exc:  # stores of an older layout in the cache: rebuild them
        print(f"  cached stores do not match this version's layout ({str(exc)[:80]}...); "
              "rebuilding them")
        stores = run_recipe(recipe, items=everything, data_dir=data_dir, progress=False,
                            overwrite=True)
    for store in stores:
        count = open_store(store).clear_count
        print(f"  {store.name}: {dict(count.sizes)}, clear looks per pixel and year: median "
              f"{float(np.median(count.values)):.0f}, min {int(count.min())}")
    quicklook(stores, root / "quicklook.png")
    return [Path(s) for s in stores]


def _site_of(store: Path) -> str:
    return store.stem.removeprefix("site-")


def _labels(world, stores: list[Path]) -> dict[str, dict[str, Any]]:
    """Per site cube: the LAMES labels (static) and the world's true masks per year."""


    out = {}
    for store in stores:
        cube = open_cube(store, variable="reflectance")
        gbox = cube.odc.geobox
        years = [int(y) for y in cube.year.values]
        labels = rasterize(world.sites, like=gbox, value=1)
        truth = np.stack([world.mine_classes(gbox, y) > 0 for y in years])
        truth = xr.DataArray(truth, dims=("year", *labels.dims),
                             coords={"year": years, **labels.coords})
        out[_site_of(store)] = {"cube": cube, "labels": labels, "truth": truth}
        print(f"  site {_site_of(store)}: label {int(labels.sum()):,} px, true mine "
              f"{int(truth[0].sum()):,} px in {years[0]} -> {int(truth[-1].sum()):,} in "
              f"{years[-1]}")
    return out


def _train(run: Path, data_dir, epochs: int | None, progress: bool) -> dict[str, Any]:
    recipe = load_experiment(DEMO_EXPERIMENT)
    recipe = dataclasses.replace(recipe, patches_output=str(run / "patches"))
    overrides = {"epochs": epochs} if epochs is not None else None
    # the demo owns its run folder: other settings (--epochs) retrain, the same ones reuse
    results = run_experiment(recipe, output=run / "model", data_dir=data_dir,
                             train_overrides=overrides, overwrite=True, progress=progress)
    for name, entry in {**results["variants"], **results["baselines"]}.items():
        s = entry["scores"]
        print(f"  {name}: test macro F1 {s['macro_f1']:.3f}, micro accuracy "
              f"{s['micro_accuracy']:.3f}")
    if results["reused"]:
        print(f"  reused the trained checkpoint of {results['reused']}")
    return results


def _infer(run: Path, sites: dict[str, dict[str, Any]], checkpoint: Path) -> dict[str, Any]:
    from lames_cube.ml import predict  # local: ml needs optional torch

    preds = {}
    for site_id, data in sites.items():
        store = run / "predictions" / f"site-{safe_name(site_id, 'site id')}.zarr"
        pred = predict(data["cube"], checkpoint, threads=2)
        try:  # resumes a store of this model; one of an earlier model is replaced
            write_prediction(pred, store, progress=False)
        except PredictionStoreMismatchError:
            print(f"  site {site_id}: the stored prediction is of another model; redoing it")
            write_prediction(pred, store, progress=False, overwrite=True)
        preds[site_id] = open_prediction(store).load()
        share = float((preds[site_id]["class"] == 1).mean())
        print(f"  site {site_id}: {dict(preds[site_id]['class'].sizes)}, predicted mining "
              f"{share:.1%} of the cube")
    return preds


def _map_metrics(sites: dict[str, dict[str, Any]], preds: dict[str, Any]) -> pd.DataFrame:
    rows = []
    total = np.zeros((2, 2), np.int64)
    for site_id, data in sites.items():
        for year in data["truth"].year.values:
            truth = data["truth"].sel(year=year).values.astype(np.uint8)
            cls = preds[site_id]["class"].sel(year=year).values
            # pixels without data (class 255) are left out through the truth's ignore value
            cm = confusion_matrix(cls, np.where(cls == 255, 255, truth), 2, ignore=255)
            total += cm
            s = scores(cm)
            rows.append({"site": site_id, "year": int(year), "mine F1": s["f1"][1],
                         "mine precision": s["precision"][1], "mine recall": s["recall"][1],
                         "macro F1": s["macro_f1"], "true mine px": int(cm[1].sum())})
    s = scores(total)
    rows.append({"site": "all", "year": "all", "mine F1": s["f1"][1],
                 "mine precision": s["precision"][1], "mine recall": s["recall"][1],
                 "macro F1": s["macro_f1"], "true mine px": int(total[1].sum())})
    table = pd.DataFrame(rows).set_index("site")
    print(f"  all sites and years: mine F1 {s['f1'][1]:.3f} (precision {s['precision'][1]:.3f}, "
          f"recall {s['recall'][1]:.3f}), macro F1 {s['macro_f1']:.3f}")
    return table


def _extent(world, sites: dict[str, dict[str, Any]], preds: dict[str, Any]):
    polygons = world.sites[["site_id", "geometry"]]
    years = [int(y) for y in next(iter(sites.values()))["truth"].year.values]
    model = extent_over_time(preds, sites=polygons, buffer_m=SITE_BUFFER_M)
    labels = {k: v["labels"].expand_dims(year=years) for k, v in sites.items()}
    from_labels = extent_over_time(labels, sites=polygons, buffer_m=SITE_BUFFER_M)
    truth = world.truth()
    truth = truth[truth.kind == "lames"]
    both = compare_with_truth(model, truth).merge(
        compare_with_truth(from_labels, truth)[["site_id", "year", "area_km2", "error_km2",
                                                "relative_error"]],
        on=["site_id", "year"], suffixes=("", "_labels"))
    big = both[both.truth_km2 >= 1.0]
    summary = {
        "model_median_abs_rel_error": float(big.relative_error.abs().median()),
        "labels_median_abs_rel_error": float(big.relative_error_labels.abs().median()),
        "model_in_band": float(big.in_band.mean()),
        "sites_ge_1km2": sorted(big.site_id.unique().tolist()),
    }
    for row in both.itertuples():
        print(f"  site {row.site_id} {row.year}: truth {row.truth_km2:7.3f} km², model "
              f"{row.area_km2:7.3f} [{row.low_km2:.3f}-{row.high_km2:.3f}], labels alone "
              f"{row.area_km2_labels:7.3f}")
    print(f"  sites of >= 1 km²: median |error| model {summary['model_median_abs_rel_error']:.1%},"
          f" labels alone {summary['labels_median_abs_rel_error']:.1%}")
    return model, both, summary


# ------------------------------------------------------------------------------ figures
def _site_figure(site_id: str, data: dict[str, Any], pred) -> Any:
    """True colour per year with predicted mining (red) and the true outline (yellow), then
    the new-mining map."""
    from matplotlib.colors import ListedColormap  # local: heavy matplotlib
    from matplotlib.figure import Figure  # local: heavy matplotlib


    years = [int(y) for y in data["truth"].year.values]
    ny, nx = data["truth"].shape[1:]
    panel = 3.3 * min(1.0, nx / ny)  # the panels' width; their height follows the cube
    fig = Figure(figsize=(panel * (len(years) + 1) + 0.8, panel * ny / nx + 0.7),
                 layout="constrained")
    axes = fig.subplots(1, len(years) + 1, squeeze=True)
    for ax, year in zip(axes, years, strict=False):
        rgb = to_rgb8(data["cube"].sel(year=year)).transpose("y", "x", "band").values
        ax.imshow(rgb)
        mine = (pred["class"].sel(year=year).values == 1).astype(float)
        ax.imshow(np.where(mine > 0, 1.0, np.nan), cmap=ListedColormap(["#e0301e"]), alpha=0.45,
                  vmin=0, vmax=1, interpolation="nearest")
        ax.contour(data["truth"].sel(year=year).values.astype(float), levels=[0.5],
                   colors="#ffd400", linewidths=0.8)
        ax.set_title(f"{year}", fontsize=10)
        ax.axis("off")
    first = first_mining_year(pred)
    values = first.values.astype(float)
    values[values == 0] = np.nan
    im = axes[-1].imshow(values, cmap="viridis", vmin=years[0], vmax=years[-1],
                         interpolation="nearest")
    axes[-1].set_title("first year of mining", fontsize=10)
    axes[-1].axis("off")
    fig.colorbar(im, ax=axes[-1], shrink=0.7, ticks=years, format="%d")
    fig.suptitle(f"site {site_id}: predicted mining (red) over the yearly composite, true "
                 f"extent (yellow)", fontsize=10)
    return fig


def _area_figure(site_id: str, rows: pd.DataFrame) -> Any:
    from matplotlib.figure import Figure  # local: heavy matplotlib

    fig = Figure(figsize=(4.6, 3.2), layout="constrained")
    ax = fig.subplots()
    rows = rows.sort_values("year")
    ax.fill_between(rows.year, rows.low_km2, rows.high_km2, color="#e0301e", alpha=0.18,
                    label="model band (p 0.7 to 0.3)")
    ax.plot(rows.year, rows.area_km2, "o-", color="#e0301e", label="model")
    ax.plot(rows.year, rows.truth_km2, "s-", color="#1d232a", label="truth")
    ax.plot(rows.year, rows.area_km2_labels, "--", color="#3b6fb6", label="LAMES labels alone")
    ax.set_xticks(rows.year.tolist())
    ax.set_ylabel("mining area (km²)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"site {site_id}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def _report(run: Path, world, results, sites, preds, map_table, extent, compared, summary,
            timings, settings) -> Path:
    scored = {name: entry["scores"] for name, entry in
              {**results["variants"], **results["baselines"]}.items()}
    metrics = results_table(scored, task="site")
    maps = [(f"Site {s}: predictions per year and the first year of mining",
             figure_png(_site_figure(s, sites[s], preds[s]), dpi=80)) for s in sites]
    charts = [(f"Site {s}: mining area per year",
               figure_png(_area_figure(s, compared[compared.site_id == s]), dpi=90))
              for s in sorted(compared.site_id.unique())]
    shown = compared[["site_id", "year", "truth_km2", "area_km2", "low_km2", "high_km2",
                      "relative_error", "area_km2_labels", "relative_error_labels"]]
    shown = shown.set_index("site_id").rename(columns={
        "truth_km2": "truth km²", "area_km2": "model km²", "low_km2": "band low",
        "high_km2": "band high", "relative_error": "model error",
        "area_km2_labels": "labels km²", "relative_error_labels": "labels error"})
    intro = (f"The whole lames_cube pipeline on the synthetic Sentinel-2 world "
             f"(digest {world.digest()}): {len(sites)} LAMES sites, years "
             f"{world.spec.years[0]}-{world.spec.years[-1]}. Areas are true ground area "
             f"(km², WGS84). On sites of at least 1 km² the model's median absolute error "
             f"per site and year is {summary['model_median_abs_rel_error']:.1%}; the LAMES "
             f"labels alone (one state, the last year's) miss the growth: "
             f"{summary['labels_median_abs_rel_error']:.1%}.")
    note = (f"Test split: {results['n_samples']} windows of the 35 LAMES test sites, one "
            f"confusion matrix over all their pixels. Paper rows: the LAMES U-Net on real "
            f"8-bit RGB imagery (DESIGN.md §5); ours: six bands of the synthetic world.")
    totals = extent[extent.site_id == "total"].set_index("year")[
        ["area_km2", "low_km2", "high_km2", "growth_km2"]]
    return write_html_report(
        run / "report.html", title="lames_cube demo: mining on the synthetic Sentinel-2 world",
        intro=intro, metrics=metrics, metrics_note=note, maps=maps, charts=charts,
        tables=[("Mining area per site and year against the truth", shown),
                ("Pixel scores on the yearly composites (truth: the world's mine masks)",
                 map_table),
                ("Mining area of the demo area per year (the sum over sites)", totals)],
        settings=settings, timings=timings)


def run_demo(path: str | os.PathLike | None = None, *, data_dir=None, workers=None,
             epochs: int | None = None, progress: bool = True) -> Path:
    """Run the whole pipeline on the demo world and write ``report.html``.

    Parameters
    ----------
    path
        The demo folder (default: the world's cache folder,
        ``<cache>/worlds/demo-<digest>``); the run goes to ``<path>/run``.
    data_dir
        The LAMES data directory (default: ``LAMES_DATA_DIR``); without it the world uses
        synthetic sites and the demo stops after the cubes (training needs the LAMES sites).
    workers
        Processes writing the world's files (default: all cores).
    epochs
        Training epochs (default: the ``demo-site-detection`` recipe's).
    progress
        Bars during patch building and training.

    Returns
    -------
    pathlib.Path
        The report (``<path>/run/report.html``); without the LAMES files, the quicklook of
        the cubes (``<path>/quicklook.png``).
    """

    t0 = time.perf_counter()
    spec = demo_spec(data_dir)
    source = "real LAMES sites" if spec.use_lames else "synthetic sites (no LAMES data found)"
    print(f"lames-cube demo: the pipeline on a synthetic Sentinel-2 L2A world over {source}")
    world = World(spec, data_dir=data_dir)
    root = Path(path) if path else demo_world_dir(world)
    run = root / "run"
    stages = _Stages(9 if spec.use_lames else 3)
    with stages("world: COGs and a STAC catalogue"):
        everything = _world_and_search(world, root, workers, data_dir)
    with stages("search"):
        _describe_search(root, world, everything)
    with stages("cubes: yearly median composites per site (UTM, 10 m)"):
        stores = _cubes(world, root, everything, data_dir)
    if not spec.use_lames:
        print(f"\nno LAMES data: stopping after the cubes (quicklook {root / 'quicklook.png'}); "
              "set LAMES_DATA_DIR to run the whole pipeline.")
        return root / "quicklook.png"
    with stages("labels: LAMES site polygons on each cube's grid, true masks per year"):
        sites = _labels(world, stores)
    with stages(f"training: {DEMO_EXPERIMENT} (patch sets, small U-Net, test metrics)"):
        results = _train(run, data_dir, epochs, progress)
    checkpoint = run / "model" / "checked" / "checkpoint.pt"
    with stages("inference over every site cube and year"):
        preds = _infer(run, sites, checkpoint)
    with stages("metrics on the composites against the world's truth"):
        map_table = _map_metrics(sites, preds)
    with stages("extent over time: model, labels alone, truth"):
        extent, compared, summary = _extent(world, sites, preds)
        atomic_write_text(run / "extent.csv", compared.to_csv(index=False))
    with stages("report"):
        settings = {"world digest": world.digest(), "sites": ", ".join(sites),
                    "years": f"{spec.years[0]}-{spec.years[-1]}",
                    "cube recipe": "demo (median yearly composites, UTM, 10 m)",
                    "experiment": DEMO_EXPERIMENT,
                    "epochs": epochs if epochs is not None else "recipe (4)",
                    "checkpoint": str(checkpoint), "site buffer": f"{SITE_BUFFER_M:g} m",
                    "confidence band": "p >= 0.7 to p >= 0.3"}
        timings = dict(stages.timings)
        report = _report(run, world, results, sites, preds, map_table, extent, compared,
                         summary, timings, settings)
        atomic_write_text(run / "summary.json", json.dumps(
            {"timings": timings, "extent": summary, "report": str(report),
             "test_macro_f1": {k: v["scores"]["macro_f1"] for k, v in
                               {**results["variants"], **results["baselines"]}.items()}},
            indent=2))
    print(f"\nreport: {report}\ndone in {time.perf_counter() - t0:.0f} s")
    return report
