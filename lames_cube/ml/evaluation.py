"""Evaluation: predictions over a split, one confusion matrix over all its pixels, the LAMES
table (with IoU) next to the paper's numbers, figures and a report.

Examples
--------
>>> jsonable_scores({"macro_f1": 0.5, "f1": np.array([0.25, 0.75])})
{'macro_f1': 0.5, 'f1': [0.25, 0.75]}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lames_cube.errors import NoPositivePixelsError
from lames_cube.metrics import confusion_matrix, scores
from lames_cube.ml.baselines import predict_split
from lames_cube.ml.checkpoint import check_bands, load_checkpoint, load_model
from lames_cube.ml.data import PatchDataset
from lames_cube.ml.models import ModelSpec, check_patch_size
from lames_cube.ml.run_report import write_evaluation
from lames_cube.ml.training import deterministic, resolve_device
from lames_cube.patchset import open_patch_set

__all__ = ["evaluate", "jsonable_scores", "predict_patches"]


def jsonable_scores(s: Mapping[str, Any]) -> dict[str, Any]:
    """The scores of :func:`lames_cube.metrics.scores` with arrays as lists (for JSON)."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()}


def predict_patches(checkpoint: str | os.PathLike[str] | Mapping[str, Any],
                    patches: str | os.PathLike[str], *, split: str = "test",
                    batch_size: int = 16, device: str = "auto", threads: int | None = None,
                    progress: bool = False) -> dict[str, np.ndarray]:
    """A checkpoint's predictions for the samples of one split of a patch set.

    The inputs are standardised with the checkpoint's statistics; the model runs in eval mode
    under ``no_grad`` (mixed precision on CUDA).

    Returns
    -------
    dict
        ``pred`` (N, H, W) uint8 classes, ``prob`` (N, H, W) uint8 0–255 probability of the
        predicted class being a mine (1 − P(class 0)), ``truth`` (N, H, W) uint8, ``sample``
        the store's sample index of each row.

    Raises
    ------
    lames_cube.errors.BandMismatchError
        The patch set lacks bands the model was trained on.
    lames_cube.errors.CheckpointError
        A missing or corrupt checkpoint.
    """


    dev = resolve_device(device)
    model, meta = load_model(checkpoint, device=dev)
    patch_set = open_patch_set(patches)
    check_patch_size(ModelSpec.from_dict(meta["model"]), int(patch_set.attrs["size"]))
    bands = check_bands(meta, [str(b) for b in patch_set.band.values],
                        f"the patch set {str(patches)!r}")
    data = PatchDataset(patches, split=split, bands=bands,
                        stats=(meta["band_mean"], meta["band_std"]))
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    preds, probs, truths = [], [], []
    with deterministic(dev, threads), torch.no_grad():
        for image, mask in tqdm(loader, desc=f"predict {split}", unit="batch",
                                disable=not progress, leave=False):
            with torch.autocast(dev.type, enabled=dev.type == "cuda"):
                logits = model(image.to(dev))
            p = torch.softmax(logits.float(), dim=1)
            preds.append(p.argmax(1).to(torch.uint8).cpu().numpy())
            probs.append(torch.round((1 - p[:, 0]) * 255).to(torch.uint8).cpu().numpy())
            truths.append(mask.to(torch.uint8).numpy())
    return {"pred": np.concatenate(preds), "prob": np.concatenate(probs),
            "truth": np.concatenate(truths), "sample": data.indices.copy()}


def _check_truth(truth: np.ndarray, classes: list[str], where: str) -> None:
    if len(classes) == 2 and not (truth == 1).any():
        raise NoPositivePixelsError(
            f"{where} has no pixel of class {classes[1]!r} ({truth.size:,} pixels, all "
            f"{classes[0]!r}): precision, recall and F1 of the mine class are undefined; "
            f"evaluate on a split with mine pixels (the LAMES test sites)."
        )


def evaluate(checkpoint: str | os.PathLike[str], patches: str | os.PathLike[str], *,
             split: str = "test", baselines: Mapping[str, Any] | None = None,
             name: str | None = None, output: str | os.PathLike[str] | None = None,
             batch_size: int = 16, device: str = "auto", threads: int | None = None,
             samples: int = 6, progress: bool = True) -> dict[str, Any]:
    """Score a checkpoint (and baselines) on one split of a patch set.

    Every model is scored from one confusion matrix over all pixels of the split
    (:func:`lames_cube.metrics.confusion_matrix`, :func:`lames_cube.metrics.scores`, with IoU).

    Parameters
    ----------
    checkpoint
        A checkpoint of :func:`lames_cube.ml.train`.
    patches
        The patch set whose ``split`` is scored (the site set; the LAMES test sites).
    split
        The split to score (``"test"``; ``"validation"`` while developing).
    baselines
        Name → a fitted baseline of :mod:`lames_cube.ml.baselines` (scored on the same pixels).
    name
        The model's name in tables (default: ``U-Net (<encoder>)``).
    output
        A folder for ``metrics.json``, the figures and ``report.md`` (None: nothing written).
    batch_size, device, threads
        As :func:`predict_patches`.
    samples
        Sample predictions shown in the figure.
    progress
        A progress bar while predicting.

    Returns
    -------
    dict
        ``split``, ``classes``, ``n_samples``, ``n_pixels``, ``models`` (name → ``scores``
        as JSON-able lists and ``confusion_matrix``), and, when ``output`` is given,
        ``files`` and ``_samples`` (the sample predictions drawn in the figure).

    Raises
    ------
    lames_cube.errors.NoPositivePixelsError
        A binary split without any mine pixel.
    lames_cube.errors.BandMismatchError
        Bands the model needs that the patch set lacks.

    Examples
    --------
    >>> import tempfile
    >>> from lames_cube.ml.training import train
    >>> from lames_cube.testing.ml_sets import planted_patch_set
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store, _, _ = planted_patch_set(f"{tmp}/sites.zarr", size=32)
    ...     path = train(store, f"{tmp}/checkpoint.pt", epochs=1, batch_size=4, threads=1,
    ...                  progress=False)
    ...     result = evaluate(path, store, split="test", progress=False)
    >>> result["n_samples"], sorted(result["models"]["U-Net (tu-mobilenetv3_small_100)"]["scores"])[:3]
    (3, ['accuracy', 'f1', 'iou'])
    """

    meta = load_checkpoint(checkpoint)
    classes = list(meta["classes"])
    k = len(classes)
    out = predict_patches(meta, patches, split=split, batch_size=batch_size, device=device,
                          threads=threads, progress=progress)
    _check_truth(out["truth"], classes, f"the {split!r} split of {str(patches)!r}")
    name = name or f"U-Net ({meta['model']['encoder']})"
    predictions = {name: out["pred"]}
    for label, baseline in (baselines or {}).items():
        pred, truth = predict_split(baseline, patches, split=split)
        if not np.array_equal(truth, out["truth"]):  # pragma: no cover - same samples, same order
            raise RuntimeError("baseline truth differs from the model's truth")
        predictions[label] = pred
    results: dict[str, Any] = {
        "split": split, "classes": classes, "n_samples": int(out["truth"].shape[0]),
        "n_pixels": int(out["truth"].size), "patches": str(patches),
        "checkpoint": str(checkpoint), "models": {}}
    for label, pred in predictions.items():
        cm = confusion_matrix(pred, out["truth"], k)
        results["models"][label] = {"scores": jsonable_scores(scores(cm)),
                                    "confusion_matrix": cm.tolist()}
    if output is not None:
        results["files"] = write_evaluation(Path(output), results, meta=meta, patches=patches,
                                            predictions=predictions, truth=out["truth"],
                                            sample_index=out["sample"], samples=samples)
    return results
