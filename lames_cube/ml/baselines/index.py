"""The index baseline: mine where one spectral index is above (or below) one threshold.

:data:`INDICES` lists the candidate indices (NDBI, BSI, NDVI, MNDWI, brightness, CMR, IOR).
:func:`fit_index_threshold` picks, on the ``"validation"`` split, the index, the direction and the
threshold that maximise macro F1 (binary site task only), scoring every candidate threshold at
once with :func:`threshold_f1`; :class:`IndexBaseline` predicts any image of the index's bands.
The test split is never read.

Examples
--------
>>> import tempfile
>>> from lames_cube.metrics import confusion_matrix, scores
>>> from lames_cube.ml.baselines.reading import predict_split
>>> from lames_cube.testing.ml_sets import baseline_patch_set
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = baseline_patch_set(f"{tmp}/p.zarr")
...     index = fit_index_threshold(store)
...     pred, truth = predict_split(index, store)
>>> index.index, index.direction, index.macro_f1, scores(confusion_matrix(pred, truth, 2))["macro_f1"]
('NDBI', '>', 1.0, 1.0)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lames_cube.errors import BaselineError
from lames_cube.ml.baselines.reading import (
    as_splits,
    batches,
    check_bands,
    check_image,
    json_safe,
    open_sets,
    selected,
    valid_pixels,
)

__all__ = ["INDICES", "IndexBaseline", "SpectralIndex", "fit_index_threshold", "threshold_f1"]


# --------------------------------------------------------------------------------------------
# Spectral indices


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised difference (a - b) / (a + b)."""
    return (a - b) / (a + b)


@dataclass(frozen=True)
class SpectralIndex:
    """A spectral index computed from Sentinel-2 reflectance.

    Attributes
    ----------
    name : str
        Short name (the key in :data:`INDICES`).
    bands : tuple of str
        The canonical bands it needs.
    formula : str
        The formula, in band ids.
    about : str
        What it responds to, and where it comes from.
    func : callable
        ``func(values)`` with ``values`` a mapping band -> float64 array of DN (reflectance x
        1e4); returns the index (float64).
    """

    name: str
    bands: tuple[str, ...]
    formula: str
    about: str
    func: Callable[[Mapping[str, np.ndarray]], np.ndarray] = field(repr=False, compare=False)

    def compute(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """The index of ``values`` (band -> DN array); float64, computed in float.

        Examples
        --------
        >>> INDICES["NDVI"].compute({"B04": np.array([1000]), "B08": np.array([3000])}).tolist()
        [0.5]
        """
        floats = {b: np.asarray(values[b], dtype=np.float64) for b in self.bands}
        with np.errstate(divide="ignore", invalid="ignore"):  # nodata pixels: 0 / 0
            return np.asarray(self.func(floats), dtype=np.float64)


#: The candidate indices of :func:`fit_index_threshold`, in the order that breaks ties (an earlier
#: index wins an exact tie of macro F1). Ratios and normalised differences do not depend on the
#: reflectance scale; ``brightness`` is in reflectance (DN / 1e4).
INDICES: dict[str, SpectralIndex] = {ix.name: ix for ix in (
    SpectralIndex("NDBI", ("B08", "B11"), "(B11 - B08) / (B11 + B08)",
                  "normalised difference built-up index (Zha et al. 2003); high on bare, built "
                  "and mined ground", lambda v: _nd(v["B11"], v["B08"])),
    SpectralIndex("BSI", ("B02", "B04", "B08", "B11"),
                  "((B11 + B04) - (B08 + B02)) / ((B11 + B04) + (B08 + B02))",
                  "bare soil index (Rikimaru et al. 2002); high on bare soil",
                  lambda v: _nd(v["B11"] + v["B04"], v["B08"] + v["B02"])),
    SpectralIndex("NDVI", ("B04", "B08"), "(B08 - B04) / (B08 + B04)",
                  "normalised difference vegetation index (Rouse et al. 1974); low where "
                  "vegetation was cleared", lambda v: _nd(v["B08"], v["B04"])),
    SpectralIndex("MNDWI", ("B03", "B11"), "(B03 - B11) / (B03 + B11)",
                  "modified normalised difference water index (Xu 2006); high on open water "
                  "(tailings ponds, pit lakes)", lambda v: _nd(v["B03"], v["B11"])),
    SpectralIndex("brightness", ("B02", "B03", "B04"), "(B02 + B03 + B04) / 3 / 1e4",
                  "mean visible reflectance; high on bare rock, tailings and waste dumps",
                  lambda v: (v["B02"] + v["B03"] + v["B04"]) / 3e4),
    SpectralIndex("CMR", ("B11", "B12"), "B11 / B12",
                  "clay minerals ratio (Drury 1987); hydroxyl-bearing alteration minerals",
                  lambda v: v["B11"] / v["B12"]),
    SpectralIndex("IOR", ("B02", "B04"), "B04 / B02",
                  "iron oxide ratio (Segal 1982); ferric iron of oxidised rock and tailings",
                  lambda v: v["B04"] / v["B02"]),
)}


# --------------------------------------------------------------------------------------------
# Choosing the threshold


def _binary_f1(tp: np.ndarray, fp: np.ndarray, positives: int, negatives: int) -> np.ndarray:
    """Macro F1 of the binary confusion counts (TP and FP per threshold), computed as
    :func:`lames_cube.metrics.scores` does: per-class precision and recall (0 without
    predictions or truth), F1 = 2PR / (P + R) (0 when P + R = 0), then their mean."""
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    fn = positives - tp
    tn = negatives - fp
    f1 = []
    for hit, pred_total, truth_total in ((tn, tn + fn, float(negatives)),
                                         (tp, tp + fp, float(positives))):
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(pred_total > 0, hit / pred_total, 0.0)
            recall = np.where(truth_total > 0, hit / truth_total, 0.0)
            f1.append(np.where(precision + recall > 0,
                               2 * precision * recall / (precision + recall), 0.0))
    return (f1[0] + f1[1]) / 2


def threshold_f1(values: Any, truth: Any, thresholds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Macro F1 of ``values > t`` and of ``values < t`` against binary ``truth``, for every
    threshold at once.

    The counts come from one histogram of the values over the sorted thresholds and its
    cumulative sums (``O(n log T)``), not from one confusion matrix per threshold; the F1 is
    computed from them as :func:`lames_cube.metrics.scores` computes ``macro_f1``.

    Parameters
    ----------
    values
        Index values (any shape; NaN is not allowed).
    truth
        0/1 (or bool) of the same shape.
    thresholds
        Increasing candidate thresholds ``(T,)``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(f1_greater, f1_less)``, each ``(T,)``.

    Raises
    ------
    BaselineError
        Shapes that differ, truth not 0/1, NaN values, thresholds not increasing.

    Examples
    --------
    >>> gt, lt = threshold_f1([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], [0.0, 0.5, 1.0])
    >>> gt.tolist(), lt.tolist()
    ([0.3333333333333333, 1.0, 0.3333333333333333], [0.3333333333333333, 0.0, 0.3333333333333333])
    """
    v = np.asarray(values, np.float64).ravel()
    t = np.asarray(truth).ravel()
    thr = np.asarray(thresholds, np.float64).ravel()
    if v.shape != t.shape:
        raise BaselineError(f"values have {v.size} elements and truth {t.size}; pass arrays of "
                            f"the same shape.")
    if t.size and not np.isin(t, (0, 1)).all():
        raise BaselineError(f"truth holds values {np.unique(t)[:10].tolist()}; it must be 0/1 "
                            f"(binary task).")
    if np.isnan(v).any():
        raise BaselineError(f"values hold {int(np.isnan(v).sum())} NaN; drop the pixels where "
                            f"the index is undefined (nodata) first.")
    if thr.size == 0 or (np.diff(thr) <= 0).any():
        raise BaselineError(f"thresholds must be a non-empty, strictly increasing array; got "
                            f"{thr[:5].tolist()}{' ...' if thr.size > 5 else ''}.")
    pos = t.astype(bool)
    positives, negatives = int(pos.sum()), int((~pos).sum())
    n_thr = thr.size
    # v > thr[j]  <=>  j < (number of thresholds < v)
    below = np.searchsorted(thr, v, side="left")
    hist_pos = np.bincount(below[pos], minlength=n_thr + 1)
    hist_neg = np.bincount(below[~pos], minlength=n_thr + 1)
    tp_gt = positives - np.cumsum(hist_pos)[:n_thr]
    fp_gt = negatives - np.cumsum(hist_neg)[:n_thr]
    # v < thr[j]  <=>  j >= (number of thresholds <= v)
    upto = np.searchsorted(thr, v, side="right")
    tp_lt = np.cumsum(np.bincount(upto[pos], minlength=n_thr + 1))[:n_thr]
    fp_lt = np.cumsum(np.bincount(upto[~pos], minlength=n_thr + 1))[:n_thr]
    return (_binary_f1(tp_gt, fp_gt, positives, negatives),
            _binary_f1(tp_lt, fp_lt, positives, negatives))


def _candidate_thresholds(values: np.ndarray, n: int) -> np.ndarray:
    """The thresholds tried for one index: its quantiles at levels ``linspace(0, 1, n)`` and
    ``n`` evenly spaced values from its minimum to its maximum, sorted, without duplicates.

    Examples
    --------
    >>> _candidate_thresholds(np.array([0.0, 0.0, 0.0, 1.0]), 3).tolist()
    [0.0, 0.5, 1.0]
    """
    levels = np.linspace(0.0, 1.0, n)
    low, high = float(values.min()), float(values.max())
    return np.unique(np.concatenate([np.quantile(values, levels), low + (high - low) * levels]))


def _centred(values: np.ndarray, t: float, direction: str) -> float:
    """The threshold in the middle of the gap between the values around ``t`` that splits
    ``values`` as ``t`` does (as decision trees place their splits); ``t`` itself when every
    value falls on one side.

    Examples
    --------
    >>> v = np.array([0.1, 0.2, 0.8, 0.9])
    >>> _centred(v, 0.25, ">"), _centred(v, 0.8, "<"), _centred(v, 0.95, ">")
    (0.5, 0.5, 0.95)
    """
    if direction == ">":  # {v > t} is {v > t'} for lo <= t' < hi
        below, above = values[values <= t], values[values > t]
    else:  # {v < t} is {v < t'} for lo < t' <= hi
        below, above = values[values < t], values[values >= t]
    if not below.size or not above.size:
        return t
    lo, hi = float(below.max()), float(above.min())
    mid = lo + (hi - lo) / 2
    return mid if lo < mid < hi else t


@dataclass(eq=False)
class IndexBaseline:
    """Mine where a spectral index is above (or below) a threshold chosen on validation pixels
    (:func:`fit_index_threshold`).

    Attributes
    ----------
    index : str
        The index (a key of :data:`INDICES`).
    bands : list of str
        The bands it reads, in this order (the index's bands).
    threshold : float
        The threshold.
    direction : str
        ``">"`` (mine where index > threshold) or ``"<"``.
    macro_f1 : float
        Macro F1 on the valid pixels of the split it was chosen on.
    n_pixels, n_positive : int
        Valid pixels of that split, and those of them that are mine.
    split : list of str
        The split(s) it was chosen on.
    stores : list of str
        The patch sets.
    n_thresholds : int
        Quantile levels, and evenly spaced values, tried per index.
    candidates : list of dict
        The best threshold of every index and direction tried (index, direction, threshold,
        macro_f1).
    skipped : dict
        Indices not tried, with the bands they miss.
    samples : dict
        Samples read per store.
    """

    index: str
    bands: list[str]
    threshold: float
    direction: str
    macro_f1: float
    n_pixels: int
    n_positive: int
    split: list[str]
    stores: list[str]
    n_thresholds: int
    candidates: list[dict[str, Any]]
    skipped: dict[str, list[str]]
    samples: dict[str, int]

    def __post_init__(self) -> None:
        if self.index not in INDICES:
            raise BaselineError(f"index={self.index!r} is not in lames_cube.ml.baselines.INDICES; "
                                f"pick from {list(INDICES)}.")
        if self.direction not in (">", "<"):
            raise BaselineError(f"direction={self.direction!r} must be '>' (mine where the index "
                                f"is above the threshold) or '<'.")
        need = INDICES[self.index].bands
        if sorted(self.bands) != sorted(need):
            raise BaselineError(f"bands={self.bands!r} must be the bands of {self.index}, "
                                f"{list(need)} (in the order of the images to predict).")

    @property
    def name(self) -> str:
        """e.g. ``"NDBI > 0.12"``."""
        return f"{self.index} {self.direction} {self.threshold:.4g}"

    def predict(self, image: Any) -> np.ndarray:
        """Binary map (1 = mine) of raw reflectance.

        Parameters
        ----------
        image
            ``(N, C, H, W)`` or ``(C, H, W)`` DN (reflectance x 1e4, nodata 0) of :attr:`bands`
            in that order.

        Returns
        -------
        numpy.ndarray
            uint8 ``(N, H, W)`` or ``(H, W)``; 0 where any band is 0 (nodata).

        Raises
        ------
        BaselineError
            An image of another shape or band count, or not numeric.

        Examples
        --------
        >>> b = IndexBaseline("NDVI", ["B04", "B08"], 0.3, "<", 1.0, 4, 2, ["validation"],
        ...                   [], 256, [], {}, {})
        >>> b.name, b.predict(np.array([[[1000, 1000, 0]], [[4000, 1200, 5]]])).tolist()
        ('NDVI < 0.3', [[0, 1, 0]])
        """
        arr, single = check_image(image, self.bands)
        ix = INDICES[self.index]
        values = ix.compute({b: arr[:, i] for i, b in enumerate(self.bands)})
        hit = values > self.threshold if self.direction == ">" else values < self.threshold
        out = (hit & valid_pixels(arr)).astype(np.uint8)
        return out[0] if single else out

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-serialisable values."""
        return json_safe({
            "baseline": "index_threshold", "name": self.name, "index": self.index,
            "formula": INDICES[self.index].formula, "bands": self.bands,
            "threshold": self.threshold, "direction": self.direction,
            "validation_macro_f1": self.macro_f1, "n_pixels": self.n_pixels,
            "n_positive": self.n_positive, "classes": [0, 1], "split": self.split,
            "stores": self.stores, "n_thresholds": self.n_thresholds,
            "candidates": self.candidates, "skipped": self.skipped, "samples": self.samples,
            "nodata": "pixels with a band <= 0 are predicted 0",
        })

    def describe(self) -> str:
        """A few lines for logs and reports."""
        ix = INDICES[self.index]
        lines = [f"{self.name}  (mine where {ix.formula} {self.direction} {self.threshold:.6g})",
                 f"  chosen on split {self.split}: macro F1 {self.macro_f1:.4f} over "
                 f"{self.n_pixels:,} valid pixels ({self.n_positive:,} mine)"]
        lines += [f"  {c['index']:>10} {c['direction']} {c['threshold']:<10.4g} macro F1 "
                  f"{c['macro_f1']:.4f}" for c in self.candidates]
        if self.skipped:
            lines.append(f"  skipped (bands missing): {self.skipped}")
        return "\n".join(lines)


def fit_index_threshold(stores: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                        bands: Sequence[str] | None = None,
                        split: str | Sequence[str] = "validation",
                        indices: Sequence[str] | None = None,
                        n_thresholds: int = 256) -> IndexBaseline:
    """Choose a spectral index, a direction and a threshold on the validation split (binary).

    Every index of ``indices`` (default: all of :data:`INDICES`) whose bands are among ``bands``
    is tried, in both directions (mine where index > t, or < t), against up to
    ``2 * n_thresholds`` candidate thresholds: the quantiles of that index over the validation
    pixels at levels ``linspace(0, 1, n_thresholds)`` (fine where the pixels are many) and
    ``n_thresholds`` evenly spaced values from its minimum to its maximum (which also fall into
    gaps between the classes), duplicates dropped. The winner has the
    highest macro F1 (:func:`threshold_f1`, equal to ``metrics.scores(metrics.confusion_matrix(
    ...))["macro_f1"]``); exact ties go to the earlier index of :data:`INDICES`, then ``">"``,
    then the lower threshold. The threshold kept is then moved to the middle between the two
    validation values around it (as decision trees place their splits), which predicts every
    validation pixel as before but does not sit on the edge of one class.

    The pixels scored are the *valid* pixels (every band of any index tried > 0) of the samples
    of ``split``; they are held in memory (2 bytes per band and pixel). Samples of other splits
    are never read.

    Parameters
    ----------
    stores
        One patch set or a list of them (the pixels of ``split`` of all are pooled; a store
        without such samples, like an extra no-mine set, adds none).
    bands
        Bands the indices may use; default: the first store's bands but categorical ones (SCL).
    split
        The split(s) to choose on.
    indices
        Names of :data:`INDICES` to try (default all).
    n_thresholds
        Quantile levels, and evenly spaced values, per index (>= 2).

    Returns
    -------
    IndexBaseline

    Raises
    ------
    BaselineError
        No sample of ``split`` (the message lists the stores' splits); masks with classes other
        than 0 and 1 (the index baseline is binary-only); no valid pixel, or no mine pixel, in
        the split; no index whose bands are available (the message lists the bands available and
        those each index needs); an unknown index name; bad arguments.
    lames_cube.errors.UnknownBandError
        A band some store lacks.

    Examples
    --------
    >>> import tempfile
    >>> from lames_cube.testing.ml_sets import baseline_patch_set
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = baseline_patch_set(f"{tmp}/p.zarr")
    ...     index = fit_index_threshold(store, indices=["NDVI", "brightness"])
    >>> index.name, index.macro_f1, index.bands
    ('NDVI < 0.3102', 1.0, ['B04', 'B08'])
    """
    if (isinstance(n_thresholds, bool) or not isinstance(n_thresholds, int | np.integer)
            or n_thresholds < 2):
        raise BaselineError(f"n_thresholds={n_thresholds!r} must be an integer >= 2 (candidate "
                            f"thresholds per index), e.g. n_thresholds=256.")
    if indices is None:
        wanted = list(INDICES)
    else:
        wanted = [indices] if isinstance(indices, str) else [str(i) for i in indices]
        unknown = [i for i in wanted if i not in INDICES]
        if unknown or not wanted:
            raise BaselineError(f"indices={wanted!r}: {unknown or 'none given'} are not indices "
                                f"of lames_cube.ml.baselines.INDICES; pick from {list(INDICES)}.")
    splits = as_splits(split)
    sets = open_sets(stores)
    names = check_bands(bands, sets)
    wanted = [i for i in INDICES if i in wanted]  # the order of INDICES breaks ties
    usable = [i for i in wanted if set(INDICES[i].bands) <= set(names)]
    skipped = {i: [b for b in INDICES[i].bands if b not in names] for i in wanted
               if i not in usable}
    if not usable:
        needs = {i: list(INDICES[i].bands) for i in wanted}
        raise BaselineError(
            f"no spectral index can be computed from the bands available {names}; the indices "
            f"need {needs}. Write the patch set with those bands, or pass bands= that include "
            f"them."
        )
    read = [b for b in names if any(b in INDICES[i].bands for i in usable)]
    picks = selected(sets, splits)

    pixels, truth = [], []
    for s, pick in zip(sets, picks, strict=True):
        band_pos = s.band_positions(read)
        for samples in batches(pick):
            mask = s.read("mask", samples)
            if mask.size and mask.max() > 1:
                bad = sorted(set(np.unique(mask).tolist()) - {0, 1})
                raise BaselineError(
                    f"the masks of split {splits} of {s.path!r} hold classes {bad} besides 0 "
                    f"and 1: the index baseline is binary-only (site detection, mine vs not). "
                    f"Use fit_pixel_classifier for the sector task."
                )
            image = s.read("image", samples)[:, band_pos]
            valid = valid_pixels(image)
            pixels.append(np.moveaxis(image, 1, -1)[valid])
            truth.append(mask[valid])
    x = np.concatenate(pixels)
    y = np.concatenate(truth).astype(bool)
    where = f"split {splits} of {[s.path for s in sets]}"
    if y.size == 0:
        raise BaselineError(f"{where} has no valid pixel (every band of {read} > 0); check the "
                            f"bands (all nodata?).")
    if not y.any():
        raise BaselineError(
            f"{where} has no mine pixel among its {y.size:,} valid pixels: no threshold can be "
            f"chosen for mines. Choose on a split with sites (split='validation' of the site "
            f"set), not on a no-mine set."
        )

    candidates: list[dict[str, Any]] = []
    best = 0  # position in candidates of the best so far (the first on exact ties)
    for name in usable:
        ix = INDICES[name]
        values = ix.compute({b: x[:, read.index(b)] for b in ix.bands})
        thresholds = _candidate_thresholds(values, int(n_thresholds))
        for direction, f1 in zip((">", "<"), threshold_f1(values, y, thresholds), strict=True):
            j = int(np.argmax(f1))
            candidates.append({"index": name, "direction": direction,
                               "threshold": _centred(values, float(thresholds[j]), direction),
                               "macro_f1": float(f1[j])})
            if f1[j] > candidates[best]["macro_f1"]:
                best = len(candidates) - 1
    win = candidates[best]
    return IndexBaseline(
        index=win["index"], bands=[b for b in names if b in INDICES[win["index"]].bands],
        threshold=win["threshold"], direction=win["direction"], macro_f1=win["macro_f1"],
        n_pixels=int(y.size), n_positive=int(y.sum()), split=splits,
        stores=[s.path for s in sets], n_thresholds=int(n_thresholds), candidates=candidates,
        skipped=skipped, samples={s.path: int(p.size) for s, p in zip(sets, picks, strict=True)},
    )
