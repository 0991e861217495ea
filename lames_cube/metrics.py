"""Segmentation metrics from one confusion matrix over all test pixels (the LAMES table).

micro accuracy = precision = recall = F1 = overall accuracy; macro accuracy is the mean over
classes of one-vs-rest accuracy (TP_c + TN_c) / N, which equals 1 − 2(1 − OA)/K; macro
precision, recall and F1 are unweighted means of the per-class values (DESIGN.md §5).
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np

from lames_cube.errors import MetricsError


def _flat(a: Any):
    data = getattr(a, "data", a)  # xarray → numpy or dask
    if hasattr(data, "dask"):
        return data.ravel()
    return np.asarray(data).ravel()


def confusion_matrix(pred: Any, truth: Any, n_classes: int, ignore: int | None = None) -> np.ndarray:
    """Confusion matrix ``(K, K)``, rows = truth, columns = prediction.

    Parameters
    ----------
    pred, truth
        Integer class maps of the same shape (numpy, dask or xarray; dask is reduced lazily and
        computed once at the end).
    n_classes
        K; class values must lie in ``0..K-1`` (apart from ``ignore``).
    ignore
        A truth value whose pixels are left out (e.g. 255 for uncertain borders).

    Raises
    ------
    MetricsError
        Shapes differ, K < 2, or a value outside ``0..K-1``.

    Examples
    --------
    >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3).tolist()
    [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise MetricsError(
            f"n_classes={n_classes!r} is not an integer >= 2; pass the number of classes K, e.g. "
            "n_classes=10 for the LAMES mask values 0..9."
        )
    p, t = _flat(pred), _flat(truth)
    if p.shape != t.shape:
        raise MetricsError(
            f"pred has {p.shape[0]} pixels and truth {t.shape[0]}; pass maps of the same shape "
            "(cut both from the same grid, e.g. rasterize(..., like=cube))."
        )
    lazy = hasattr(p, "dask") or hasattr(t, "dask")
    if lazy:
        p, t = da.asarray(p).astype("int64"), da.asarray(t).astype("int64")
    else:
        p, t = p.astype(np.int64), t.astype(np.int64)
    keep = t != ignore if ignore is not None else None
    if keep is not None:
        p, t = p[keep], t[keep]
    bad = ((p < 0) | (p >= n_classes) | (t < 0) | (t >= n_classes)).sum()
    index = t * n_classes + p
    counts = (da if lazy else np).bincount(index.clip(0, n_classes**2 - 1), minlength=n_classes**2)
    if lazy:
        bad, counts = dask.compute(bad, counts)
    if int(bad):
        raise MetricsError(
            f"{int(bad)} pixels hold a class outside 0..{n_classes - 1}"
            + (f" (ignore={ignore} excluded)" if ignore is not None else "")
            + "; check n_classes, or pass ignore= for a no-label value."
        )
    return np.asarray(counts[: n_classes**2]).reshape(n_classes, n_classes)


def scores(cm: np.ndarray) -> dict[str, Any]:
    """The LAMES metrics from a confusion matrix (rows = truth).

    Returns
    -------
    dict
        ``micro_accuracy`` (= micro precision = recall = F1 = overall accuracy),
        ``macro_accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``, and per-class
        arrays ``precision``, ``recall``, ``f1``, ``accuracy``, ``support``; ``iou`` per class
        (TP / (TP + FP + FN), 0 for a class absent from both truth and prediction) and
        ``mean_iou`` (their unweighted mean). Classes without predictions (or truth) get
        precision (recall) 0, as in the paper's table.

    Raises
    ------
    MetricsError
        ``cm`` is not a square matrix of K >= 2 classes, holds negative or non-finite counts, or
        is all zeros.

    Examples
    --------
    >>> s = scores(np.array([[8, 2], [1, 9]]))
    >>> round(s["micro_accuracy"], 3), round(s["macro_accuracy"], 3), round(s["macro_f1"], 3)
    (0.85, 0.85, 0.85)
    >>> s["iou"].round(3).tolist(), round(s["mean_iou"], 3)  # 8/(8+1+2), 9/(9+2+1)
    ([0.727, 0.75], 0.739)
    """
    try:
        cm = np.asarray(cm, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricsError(
            f"cm={cm!r} is not a matrix of numbers ({exc}); pass a (K, K) array of pixel counts, "
            "e.g. confusion_matrix(pred, truth, n_classes)."
        ) from None
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2:
        raise MetricsError(
            f"cm has shape {cm.shape}; pass a square (K, K) confusion matrix with K >= 2, e.g. "
            "confusion_matrix(pred, truth, n_classes)."
        )
    bad = cm[~np.isfinite(cm) | (cm < 0)]
    if bad.size:
        raise MetricsError(
            f"cm holds {bad.size} negative or non-finite count(s), e.g. {bad[:3].tolist()}; pass "
            "pixel counts, e.g. confusion_matrix(pred, truth, n_classes)."
        )
    n = cm.sum()
    if n == 0:
        raise MetricsError(
            f"cm is all zeros (shape {cm.shape}): there are no pixels to score; pass predictions "
            "with at least one labelled pixel (check ignore= and the area of the labels)."
        )
    tp = np.diag(cm)
    pred_total = cm.sum(axis=0)
    truth_total = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_total > 0, tp / pred_total, 0.0)
        recall = np.where(truth_total > 0, tp / truth_total, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    fp = pred_total - tp
    fn = truth_total - tp
    accuracy = (n - fp - fn) / n
    union = tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, 0.0)
    return {
        "micro_accuracy": float(tp.sum() / n),
        "macro_accuracy": float(accuracy.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": accuracy,
        "support": truth_total.astype(np.int64),
        "iou": iou,
        "mean_iou": float(iou.mean()),
    }
