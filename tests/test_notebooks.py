"""The notebooks of ``analysis/`` run top to bottom on small settings, offline, write their
figures, and the numbers drawn in those figures agree with the library.

Each notebook is a jupytext percent script executed by nbclient in a fresh kernel
(``LAMES_NB_SIZE=small``, outputs in a temporary ``LAMES_NB_OUT``). Beside its figures it saves
the numbers it drew (``figures/*.json`` / ``*.csv``); each test here recomputes those numbers by
calling the library's public functions on the same inputs (the world, the checkpoint, the
patch set, the prediction store the notebook used) and compares them: exactly for counts,
to ``RTOL`` for areas and scores. The runs take minutes (notebook 02 trains two small U-Nets),
so they are ``slow``; notebooks 03 and 04 need 02's checkpoint and run it first when it has not
run yet in this session.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import geopandas as gpd
import jupytext
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"
NOTEBOOKS = sorted(p.name for p in ANALYSIS.glob("[0-9][0-9]_*.py"))
FIGURES = {
    "01_cube_and_labels.py": ["01_cube_and_labels.png"],
    "02_training_and_evaluation.py": ["02_macro_f1.png"],
    "03_chile_map.py": ["03_chile_map.png"],
    "04_extent_over_time.py": ["04_extent.png", "04_first_year.png"],
}
#: What the notebooks save beside their figures: the numbers drawn in them.
VALUES = {
    "01_cube_and_labels.py": ["01_cube_and_labels.json"],
    "02_training_and_evaluation.py": ["02_macro_f1.json"],
    "03_chile_map.py": ["03_chile_map.json"],
    "04_extent_over_time.py": ["04_extent.csv", "04_first_year.json"],
}
#: Relative tolerance of areas and scores (the same sums, perhaps in another order).
RTOL = 1e-9


# ------------------------------------------------------------------------------------ helpers
def _plain(value):
    """numpy scalars and arrays, tuples → the JSON types the notebooks save."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _mismatches(saved, expected, where: str, rtol: float, atol: float) -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(saved, dict):
            return [f"{where}: saved {saved!r}, expected a mapping {expected!r}"]
        out = []
        if set(saved) != set(expected):
            out.append(f"{where}: keys {sorted(saved)} saved, {sorted(expected)} expected")
        for k in sorted(set(saved) & set(expected)):
            out += _mismatches(saved[k], expected[k], f"{where}[{k!r}]", rtol, atol)
        return out
    if isinstance(expected, list):
        if not isinstance(saved, list) or len(saved) != len(expected):
            return [f"{where}: saved {saved!r}, expected {expected!r}"]
        return [m for i, (s, e) in enumerate(zip(saved, expected, strict=True))
                for m in _mismatches(s, e, f"{where}[{i}]", rtol, atol)]
    if isinstance(expected, float) and not isinstance(saved, bool | str | type(None)):
        if isinstance(saved, int | float) and (
                math.isclose(saved, expected, rel_tol=rtol, abs_tol=atol)
                or (math.isnan(saved) and math.isnan(expected))):
            return []
        return [f"{where}: saved {saved!r}, the library gives {expected!r}"]
    if type(saved) is not type(expected) or saved != expected:  # counts, names: exact
        return [f"{where}: saved {saved!r}, the library gives {expected!r}"]
    return []


def assert_agrees(saved: dict, expected: dict, *, rtol: float = RTOL, atol: float = 0.0,
                  what: str = "") -> None:
    """Every entry of ``expected`` equals the saved one: ints, strings and the keys of nested
    mappings exactly, floats to ``rtol``/``atol``; all mismatches are listed."""
    expected = _plain(expected)
    assert expected, "nothing to compare"
    missing = sorted(set(expected) - set(saved))
    problems = [f"{what}: {k!r} is not saved" for k in missing]
    for key in sorted(set(expected) & set(saved)):
        problems += _mismatches(saved[key], expected[key], f"{what}[{key!r}]", rtol, atol)
    assert not problems, "the figure's numbers disagree with the library:\n" + "\n".join(problems)


def assert_catches(saved: dict, expected: dict, path: tuple, **kw) -> None:
    """The comparison is not vacuous: with the saved value at ``path`` changed, it fails."""
    broken = copy.deepcopy(saved)
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    value = parent[path[-1]]
    parent[path[-1]] = value + 1 if isinstance(value, int) else value * (1 + 1e-6) + 1e-6
    with pytest.raises(AssertionError, match="disagree with the library"):
        assert_agrees(broken, expected, **kw)


def _value_counts(a) -> dict[str, int]:
    values, counts = np.unique(np.asarray(a), return_counts=True)
    return {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)}


def _world_spec(saved: dict):
    from lames_cube.synthetic import WorldSpec

    return WorldSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


# -------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def run_notebook(tmp_path_factory, lames_dir):
    """Run a notebook (once per module) in the shared output folder; return its figures folder
    after checking that the figures and the saved numbers are there."""
    out = tmp_path_factory.mktemp("notebooks")
    seconds: dict[str, float] = {}
    failed: set[str] = set()

    def run(name: str) -> Path:
        if name in failed:  # a notebook that the later ones need: not run a second time
            pytest.fail(f"{name} failed earlier in this session (see its test)", pytrace=False)
        if name not in seconds:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("LAMES_NB_OUT", str(out))
                mp.setenv("LAMES_NB_SIZE", "small")
                mp.setenv("LAMES_DATA_DIR", str(lames_dir))
                mp.delenv("LAMES_CHILE_STORE", raising=False)
                nb = jupytext.read(ANALYSIS / name)
                t0 = time.perf_counter()
                failed.add(name)
                NotebookClient(nb, timeout=900, kernel_name="python3",
                               resources={"metadata": {"path": str(ANALYSIS)}}).execute()
                failed.discard(name)
                seconds[name] = time.perf_counter() - t0
            (out / "executed").mkdir(exist_ok=True)
            jupytext.write(nb, out / "executed" / name.replace(".py", ".ipynb"))
            print(f"{name} ran in {seconds[name]:.0f} s")
            for figure in FIGURES[name]:
                png = out / "figures" / figure
                assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
                assert png.stat().st_size > 5_000
            for saved in VALUES[name]:
                assert (out / "figures" / saved).is_file(), f"{name} did not save {saved}"
        return out / "figures"

    return run


def test_every_notebook_is_listed():
    assert NOTEBOOKS == sorted(FIGURES) == sorted(VALUES)


def test_the_comparison_lists_every_mismatch():
    expected = {"n": 3, "km2": 1.5, "px": {"0": 10, "1": 5}, "name": "a", "rows": [1.0, 2]}
    saved = json.loads(json.dumps(expected))
    assert_agrees(saved, expected)
    assert_agrees({**saved, "km2": 1.5 * (1 + 1e-12)}, expected)
    for path in [("n",), ("km2",), ("px", "1"), ("rows", 0), ("rows", 1)]:
        assert_catches(saved, expected, path)
    with pytest.raises(AssertionError, match=r"\['0'\] saved, \['0', '1'\] expected"):
        assert_agrees({**saved, "px": {"0": 10}}, expected)
    with pytest.raises(AssertionError, match="'name' is not saved"):
        assert_agrees({k: v for k, v in saved.items() if k != "name"}, expected)
    with pytest.raises(AssertionError, match=r"saved 3\.0"):  # a count saved as a float
        assert_agrees({**saved, "n": 3.0}, expected)


# ---------------------------------------------------------------------- 01 cube and labels
@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.filterwarnings("ignore:.*impossible date")  # load_sectors' known repairs
def test_notebook_01_cube_and_labels(run_notebook):
    """The composite, the label contour and the clear looks drawn are the library's."""
    import lames_cube
    from lames_cube.annotations import load_sectors
    from lames_cube.composite import clear_mask, median_composite, to_rgb8
    from lames_cube.patches import patch_table
    from lames_cube.recipes.pipeline import site_geobox
    from lames_cube.synthetic import World
    from lames_cube.timeseries import pixel_area

    figures = run_notebook("01_cube_and_labels.py")
    saved = json.loads((figures / "01_cube_and_labels.json").read_text())
    world = World(_world_spec(saved["world_spec"]))
    site_id = saved["site"]
    site = world.sites[world.sites.site_id == site_id]
    grid = site_geobox(tuple(site.total_bounds), f"EPSG:{site.epsg.iloc[0]}", 10, 256)
    items = lames_cube.search(saved["world_root"], sites=[site_id])
    cube = lames_cube.build_cube(items, geobox=grid, chunks=256, resampling="bilinear")
    when = cube.solar_day if "solar_day" in cube.coords else cube.time
    in_year = np.flatnonzero(when.dt.year.values == saved["year"])
    clear = clear_mask(cube).values  # (time, y, x): clear looks, counted here per pixel
    rgb = to_rgb8(median_composite(cube.isel(time=in_year)).reflectance)
    rgb = rgb.transpose("y", "x", "band").values
    sectors = load_sectors()
    labels = lames_cube.rasterize(sectors[sectors.site_id == site_id], like=grid, value=1)
    label_km2 = float((pixel_area(grid).values * (labels.values == 1)).sum() / 1e6)
    expected = {
        "grid": {"crs": str(grid.crs), "shape": list(grid.shape),
                 "affine": list(tuple(grid.affine)[:6])},
        "n_items": len(items), "n_dates": int(cube.sizes["time"]),
        "years": sorted(set(when.dt.year.values.tolist())),
        "rgb_sum": [int(rgb[..., c].sum(dtype=np.int64)) for c in range(3)],
        "rgb_nodata_px": int((rgb == 0).all(axis=-1).sum()),
        "label_px": _value_counts(labels.values),
        "label_km2": label_km2,
        "clear_share": float(clear.mean()),
        "clear_count_px": _value_counts(clear[in_year].sum(axis=0)),
        "n_windows": len(patch_table(labels, size=256)),
    }
    assert_agrees(saved, expected, what="01_cube_and_labels.json")
    assert saved["label_px"].get("1", 0) > 0 and len(saved["clear_count_px"]) > 1
    assert_catches(saved, expected, ("label_px", "1"), what="01")
    assert_catches(saved, expected, ("label_km2",), what="01")


# --------------------------------------------------------------- 02 training and evaluation
def _expected_02(saved: dict) -> tuple[dict, np.ndarray]:
    """Each bar's macro F1 from a confusion matrix made here: the checkpoints' predictions
    and the baselines (fitted again) over the test split; the paper's bars from the paper."""
    from lames_cube.metrics import confusion_matrix, scores
    from lames_cube.ml.baselines import fit_index_threshold, fit_pixel_classifier, predict_split
    from lames_cube.ml.evaluation import predict_patches
    from lames_cube.patchset import open_patch_set
    from lames_cube.report import PAPER

    patches, split, k = saved["patches"], saved["split"], len(saved["classes"])
    ds = open_patch_set(patches)
    pick = np.flatnonzero(ds["split"].values.astype(str) == split)
    truth_px = np.bincount(ds["mask"].isel(sample=pick).values.ravel(), minlength=k)
    bands = saved["bands"]
    fitted = {}
    for kind in saved["baselines"]:
        if kind == "index":
            model = fit_index_threshold(patches, bands=bands, split="validation")
        else:
            model = fit_pixel_classifier(patches, bands=bands, split="train",
                                         **saved["baseline_settings"])
        fitted[model.name] = model
    bars = {}
    for name, bar in saved["bars"].items():
        if bar["source"] == "paper":
            bars[name] = {"macro_f1": float(PAPER[saved["task"]][name]["macro_f1"]),
                          "source": "paper"}
            continue
        if bar["checkpoint"] is not None:
            out = predict_patches(bar["checkpoint"], patches, split=split)
            pred, truth = out["pred"], out["truth"]
        else:
            assert name in fitted, f"bar {name!r}: neither a checkpoint nor a baseline refitted"
            pred, truth = predict_split(fitted[name], patches, split=split)
        cm = confusion_matrix(pred, truth, k)
        bars[name] = {"macro_f1": scores(cm)["macro_f1"], "source": "this run",
                      "confusion_matrix": cm.tolist()}
    names = {n for n, b in saved["bars"].items() if b["source"] == "this run"}
    assert names == {n for n, b in saved["bars"].items() if b["checkpoint"]} | set(fitted)
    assert set(PAPER[saved["task"]]) <= set(saved["bars"])
    return {"n_samples": len(pick), "bars": bars}, truth_px


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_notebook_02_training_and_evaluation(run_notebook):
    """Each macro F1 bar is the library's score of the model it names on the test split."""
    figures = run_notebook("02_training_and_evaluation.py")
    saved = json.loads((figures / "02_macro_f1.json").read_text())
    saved_bars = {n: {k: v for k, v in b.items() if k != "checkpoint"}
                  for n, b in saved["bars"].items()}
    saved_bars = {n: {k: v for k, v in b.items() if v is not None} for n, b in saved_bars.items()}
    expected, truth_px = _expected_02(saved)
    checked = {**saved, "bars": saved_bars}
    assert_agrees(checked, expected, what="02_macro_f1.json")
    for name, bar in saved_bars.items():  # the label pixels per class of the test split
        if "confusion_matrix" in bar:
            assert np.array_equal(np.sum(bar["confusion_matrix"], axis=1), truth_px), name
    assert truth_px.min() > 0, "the test split lacks a class: its macro F1 means little"
    first = next(n for n, b in saved_bars.items() if b["source"] == "this run")
    assert_catches(checked, expected, ("bars", first, "confusion_matrix", 1, 1), what="02")
    assert_catches(checked, expected, ("bars", first, "macro_f1"), what="02")


# ------------------------------------------------------------------------- 03 the Chile map
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_notebook_03_chile_map(run_notebook):
    """The map drawn, its mining share and polygons are the prediction store's, and the store
    is the one of notebook 02's checkpoint."""
    from lames_cube.ml.inference import file_digest
    from lames_cube.prediction import NODATA_CLASS, open_prediction
    from lames_cube.timeseries import extent_over_time

    run_notebook("02_training_and_evaluation.py")
    figures = run_notebook("03_chile_map.py")
    saved = json.loads((figures / "03_chile_map.json").read_text())
    pred = open_prediction(saved["store"], allow_incomplete=True)
    cls, prob = pred["class"].values, pred["probability"].values
    ny, nx = cls.shape
    step = max(1, max(ny, nx) // 1500)
    h, w = ny // step, nx // step  # the display: max probability, min class per cell

    def cells(a, how):
        return how(a[:h * step, :w * step].reshape(h, step, w, step), axis=(1, 3))

    scored_cells = cells(cls, np.min) != NODATA_CLASS
    scored = cls != NODATA_CLASS
    mining = scored & (cls > 0)
    # the polygons that the inference run wrote beside the store (prediction_polygons with its
    # default minimum area, 0.01 km²; the notebook lists those of 0.05 km² and more)
    polygons = gpd.read_parquet(Path(saved["store"]).parent / "polygons.parquet")
    polygons = polygons[polygons.area_km2 >= 0.05]
    expected = {
        "model_sha256": file_digest(saved["checkpoint"]),
        "shape": [ny, nx], "step": step, "map_shape": [h, w],
        "map_cells_scored": int(scored_cells.sum()),
        "map_probability_cells": _value_counts(cells(prob, np.max)[scored_cells]),
        "px_scored": int(scored.sum()), "px_mining": int(mining.sum()),
        "mine_fraction": float(mining.sum() / max(scored.sum(), 1)),
        "polygons": len(polygons), "polygons_km2": float(polygons.area_km2.sum()),
    }
    assert_agrees(saved, expected, what="03_chile_map.json")
    assert 0 < saved["px_mining"] < saved["px_scored"]
    # the inference run's summary that the notebook prints: the same store, in km² of ground
    summary = saved["summary"]
    extent = extent_over_time(pred).iloc[0]
    assert summary["tiles_scored"] == len(summary["tiles_requested"])
    assert_agrees(summary, {"km2_predicted_mining": float(extent.area_km2)},
                  rtol=0, atol=0.005 + 1e-9, what="summary (km² rounded to 0.01)")
    assert_agrees(summary, {"km2_scored": float(extent.scored_km2)},
                  rtol=0, atol=0.05 + 1e-9, what="summary (km² rounded to 0.1)")
    assert_catches(saved, expected, ("px_mining",), what="03")
    assert_catches(saved, expected, ("map_probability_cells", next(iter(
        saved["map_probability_cells"]))), what="03")


# --------------------------------------------------------------------- 04 extent over time
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_notebook_04_extent_over_time(run_notebook):
    """The areas drawn per site and year (model, its band, truth, labels) and the first-year
    map are the library's, from the same world and checkpoint."""
    from lames_cube.composite import yearly_composites
    from lames_cube.labels import rasterize
    from lames_cube.ml import predict
    from lames_cube.recipes.pipeline import site_geobox
    from lames_cube.synthetic import World
    from lames_cube.timeseries import extent_over_time, pixel_area

    run_notebook("02_training_and_evaluation.py")
    figures = run_notebook("04_extent_over_time.py")
    saved_first = json.loads((figures / "04_first_year.json").read_text())
    table = pd.read_csv(figures / "04_extent.csv", dtype={"site_id": str})
    world = World(_world_spec(saved_first["world_spec"]))
    sites = world.sites[["site_id", "geometry"]]
    epsg = world.sites.set_index("site_id").epsg
    predictions, label_km2 = {}, {}
    for site in sites.itertuples():
        gbox = site_geobox(site.geometry.bounds, f"EPSG:{int(epsg[site.site_id])}", 10, 256)
        scenes = world.to_cube(gbox, bands=["B02", "B03", "B04", "B08", "B11", "B12", "SCL"],
                               chunks=256)
        refl = yearly_composites(scenes).reflectance
        predictions[site.site_id] = predict(refl, saved_first["checkpoint"]).compute()
        mask = rasterize(sites[sites.site_id == site.site_id], like=gbox, value=1).values
        label_km2[site.site_id] = float((pixel_area(gbox).values * (mask == 1)).sum() / 1e6)
    model = extent_over_time(predictions, sites=sites).set_index(["site_id", "year"])
    truth = world.truth().assign(site_id=lambda t: t.site_id.astype(str))
    truth = truth.set_index(["site_id", "year"]).area_m2 / 1e6
    expected, saved = {}, {}
    for key in sorted(set(model.index) & set(truth.index)):
        row = model.loc[key]
        expected[f"{key[0]}/{key[1]}"] = {
            "truth_km2": float(truth[key]), "area_km2": float(row.area_km2),
            "low_km2": float(row.low_km2), "high_km2": float(row.high_km2),
            "area_km2_labels": label_km2[key[0]]}
    for row in table.itertuples():
        saved[f"{row.site_id}/{row.year}"] = {k: float(getattr(row, k)) for k in (
            "truth_km2", "area_km2", "low_km2", "high_km2", "area_km2_labels")}
    assert_agrees(saved, expected, what="04_extent.csv")
    assert (table.low_km2 <= table.area_km2).all() and (table.area_km2 <= table.high_km2).all()

    # the first year of mining, counted here from the predicted classes: mining in a year and
    # every later one (a year without data keeps the year before's state)
    cls = predictions[saved_first["site_id"]]["class"].transpose("year", ...).values
    years = [int(y) for y in predictions[saved_first["site_id"]].year.values]
    state = cls == 1
    for k in range(1, len(years)):
        state[k] = np.where(cls[k] != 255, state[k], state[k - 1])
    first = np.zeros(cls.shape[1:], np.int64)
    for k in reversed(range(len(years))):
        stays = state[k:].all(axis=0)
        first = np.where(stays, years[k], first)
    expected_first = {"years": years, "shape": list(first.shape),
                      "first_year_px": _value_counts(first)}
    assert_agrees(saved_first, expected_first, what="04_first_year.json")
    assert len(saved_first["first_year_px"]) > 1
    assert_catches(saved, expected, (next(iter(saved)), "area_km2"), what="04")
    assert_catches(saved_first, expected_first,
                   ("first_year_px", str(years[0])), what="04")
