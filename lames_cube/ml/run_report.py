"""The files of an evaluation and of an experiment run: ``metrics.json``, figures and
``report.md`` (tables and figures from :mod:`lames_cube.report`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lames_cube import report
from lames_cube._atomic import atomic_write_text
from lames_cube.patchset import open_patch_set

__all__ = ["pick_samples", "write_evaluation", "write_experiment_report"]

_SECTOR_NOTE = ("The paper classified sectors on 0.5 m imagery, which cannot be had here; this "
                "run used the cube's 10 m Sentinel-2 bands, so its numbers are not comparable "
                "with the paper's row.")


def pick_samples(truth: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of ``truth`` (N, H, W) spread from the most to the least mine pixels.

    Examples
    --------
    >>> t = np.zeros((5, 2, 2), np.uint8); t[3] = 1; t[1, 0] = 1
    >>> pick_samples(t, 3).tolist()
    [3, 0, 4]
    """
    counts = (truth > 0).reshape(truth.shape[0], -1).sum(1)
    order = np.argsort(-counts, kind="stable")
    if n >= order.size:
        return order
    return order[np.unique(np.linspace(0, order.size - 1, n).round().astype(int))]


def _sample_images(patches: Any, sample_index: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    ds = open_patch_set(patches)
    return np.asarray(ds.image.isel(sample=np.asarray(sample_index)).sel(band=list(bands)))


def _scores_of(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in entry["scores"].items()}


def write_evaluation(out: Path, results: dict[str, Any], *, meta: Mapping[str, Any],
                     patches: Any, predictions: Mapping[str, np.ndarray], truth: np.ndarray,
                     sample_index: np.ndarray, samples: int = 6) -> dict[str, str]:
    """Write one evaluation: ``metrics.json``, the confusion matrix, per-class F1 and IoU,
    the training curve, sample predictions and ``report.md``; keep the sample predictions
    in ``results["_samples"]`` for an experiment's combined figure."""

    out.mkdir(parents=True, exist_ok=True)
    figures = out / "figures"
    classes = results["classes"]
    first = next(iter(predictions))
    scores = {name: _scores_of(e) for name, e in results["models"].items()}
    rows = pick_samples(truth, samples)
    bands = list(meta["bands"])
    images = _sample_images(patches, sample_index[rows], bands)
    results["_samples"] = {"sample": sample_index[rows], "images": images, "bands": bands,
                           "truth": truth[rows],
                           "pred": {k: v[rows] for k, v in predictions.items()}}
    files = {
        "confusion": report.plot_confusion(np.asarray(results["models"][first]
                                                      ["confusion_matrix"]), classes,
                                           figures / "confusion.png",
                                           title=f"{first}: {results['split']} pixels"),
        "class_f1": report.plot_class_scores(scores, classes, figures / "class-f1.png"),
        "class_iou": report.plot_class_scores(scores, classes, figures / "class-iou.png",
                                              metric="iou"),
        "curves": report.plot_curves({first: meta["curve"]}, figures / "curves.png"),
        "samples": report.plot_samples(images, bands, truth[rows],
                                       {k: v[rows] for k, v in predictions.items()},
                                       figures / "samples.png", class_names=classes,
                                       max_samples=samples),
    }
    table = report.results_table(scores, task=meta["task"])
    notes = [_SECTOR_NOTE] if meta["task"] == "sector" else []
    best = scores[first]
    files["report"] = report.write_report(
        out / "report.md", title=f"{first} on the {results['split']} split",
        summary=(f"{first} scored on {results['n_samples']} {results['split']} patches "
                 f"({results['n_pixels']:,} pixels), one confusion matrix over all of them: "
                 f"macro F1 {best['macro_f1']:.3f}, micro accuracy "
                 f"{best['micro_accuracy']:.3f}, mIoU {best['mean_iou']:.3f}."),
        table=table, figures={"Confusion matrix": files["confusion"],
                              "Per-class F1": files["class_f1"],
                              "Per-class IoU": files["class_iou"],
                              "Training curve": files["curves"],
                              "Sample predictions": files["samples"]},
        settings={"checkpoint": results["checkpoint"], "patches": str(patches),
                  **{k: meta[k] for k in ("bands", "model", "class_weights", "seed",
                                          "patch_size", "crs", "resolution")},
                  "training": meta.get("settings", {}), "best_epoch": meta.get("best_epoch")},
        timings={"training": meta.get("train_seconds", float("nan"))}, notes=notes)
    files = {k: str(v) for k, v in files.items()}
    public = {k: v for k, v in results.items() if not k.startswith("_")}
    atomic_write_text(out / "metrics.json", json.dumps({**public, "files": files}, indent=2))
    files["metrics"] = str(out / "metrics.json")
    return files


def write_experiment_report(out: Path, recipe: Any, results: dict[str, Any], *,
                            samples: Sequence[Mapping[str, Any]], curves: Mapping[str, Any],
                            fitted: Mapping[str, Any]) -> dict[str, str]:
    """The combined report of an experiment: every variant and baseline in one table beside
    the paper's rows, per-class F1/IoU, all training curves, the confusion matrix of each
    variant, sample predictions of every model."""

    figures = out / "figures"
    classes = results["classes"]
    models = {**results["variants"], **results["baselines"]}
    scores = {name: _scores_of(e) for name, e in models.items()}
    files: dict[str, Path] = {
        "class_f1": report.plot_class_scores(scores, classes, figures / "class-f1.png"),
        "class_iou": report.plot_class_scores(scores, classes, figures / "class-iou.png",
                                              metric="iou"),
        "curves": report.plot_curves(curves, figures / "curves.png"),
    }
    for name, entry in results["variants"].items():
        files[f"confusion {name}"] = report.plot_confusion(
            np.asarray(entry["confusion_matrix"]), classes,
            figures / f"confusion-{name.replace(' ', '-').lower()}.png", title=name)
    if samples:
        base = samples[0]
        preds: dict[str, np.ndarray] = {}
        for s in samples:
            if np.array_equal(s["sample"], base["sample"]):
                preds.update(s["pred"])
        files["samples"] = report.plot_samples(base["images"], base["bands"], base["truth"],
                                               preds, figures / "samples.png",
                                               class_names=classes,
                                               max_samples=len(base["sample"]))
    table = report.results_table(scores, task=recipe.task)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1]["macro_f1"])
    summary = (f"Test split: {results.get('n_samples', '?')} patches of the LAMES test sites, "
               f"one confusion matrix over all their pixels. Best macro F1: "
               + ", ".join(f"{n} {s['macro_f1']:.3f}" for n, s in ranked) + ".")
    notes = list(recipe.notes) + ([_SECTOR_NOTE] if recipe.task == "sector" else [])
    notes += [f"{name}: {model.describe()}" for name, model in fitted.items()]
    captions = {"Per-class F1": files["class_f1"], "Per-class IoU": files["class_iou"],
                "Training curves (the selected epoch marked)": files["curves"]}
    captions.update({f"Confusion matrix, {k.removeprefix('confusion ')}": v
                     for k, v in files.items() if k.startswith("confusion ")})
    if "samples" in files:
        captions["Sample test predictions"] = files["samples"]
    files["report"] = report.write_report(
        out / "report.md", title=f"Experiment {recipe.name} ({recipe.task} task)",
        summary=summary, table=table, figures=captions, settings=recipe.to_dict(),
        timings=results["timings"], notes=notes)
    return {k: str(v) for k, v in files.items()}
