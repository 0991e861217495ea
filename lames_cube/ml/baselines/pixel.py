"""The pixel baseline: a scikit-learn classifier on the raw bands of class-balanced pixels.

:func:`fit_pixel_classifier` draws valid pixels of the ``"train"`` split of one or more patch
sets (class-balanced, seeded, uniform over pixels within a class) and fits a scikit-learn
classifier (default :class:`~sklearn.ensemble.HistGradientBoostingClassifier`) on their raw band
values; :class:`PixelBaseline` predicts any image of those bands (0 where a band is nodata).
The test split is never read.

Examples
--------
>>> import tempfile
>>> from sklearn.tree import DecisionTreeClassifier
>>> from lames_cube.testing.ml_sets import baseline_patch_set
>>> with tempfile.TemporaryDirectory() as tmp:
...     model = fit_pixel_classifier(baseline_patch_set(f"{tmp}/p.zarr", classes=2),
...                                  n_pixels=900, estimator=DecisionTreeClassifier())
>>> model.name, model.classes, model.n_pixels
('pixel classifier (DecisionTree)', [0, 1, 2], 900)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier

from lames_cube._checks import check_seed
from lames_cube.errors import BaselineError
from lames_cube.ml.baselines.reading import (
    as_splits,
    batches,
    check_bands,
    check_image,
    json_safe,
    open_sets,
    progress_bar,
    selected,
    valid_pixels,
)

__all__ = ["PixelBaseline", "fit_pixel_classifier"]

#: Pixels given to ``estimator.predict`` at once (bounds the memory of a prediction).
_PREDICT_CHUNK = 1 << 20


def _quotas(totals: Mapping[int, int], n: int) -> dict[int, int]:
    """Pixels to draw per class: ``n`` shared equally among the classes, a class with fewer
    pixels than its share gives all it has and the rest is shared among the others (smallest
    classes served first; the remainder of the integer division goes to the largest class).

    Examples
    --------
    >>> _quotas({0: 1000, 1: 30, 2: 1000}, 100)
    {0: 35, 1: 30, 2: 35}
    >>> _quotas({0: 1000, 1: 1000}, 7)
    {0: 3, 1: 4}
    """
    order = sorted((t, c) for c, t in totals.items() if t > 0)
    out: dict[int, int] = {}
    remaining = n
    for i, (total, c) in enumerate(order):
        take = min(total, remaining // (len(order) - i))
        out[c] = take
        remaining -= take
    return dict(sorted(out.items()))


class _BottomK:
    """The ``cap`` items of smallest key seen so far: with iid uniform keys (ties have
    probability ~0), the first ``k <= cap`` of them by key are a uniform random sample of all
    the items seen, drawn without replacement."""

    def __init__(self, cap: int, width: int, dtype: np.dtype) -> None:
        self.cap = cap
        self.keys = np.zeros(0, np.float64)
        self.items = np.zeros((0, width), dtype)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.npending = 0
        self.limit = np.inf  # keys >= limit can no longer enter

    def add(self, keys: np.ndarray, items: np.ndarray) -> None:
        if self.limit < np.inf:
            keep = keys < self.limit
            keys, items = keys[keep], items[keep]
        if keys.size:
            self.pending.append((keys, items))
            self.npending += keys.size
            if self.npending > 2 * self.cap:
                self._compact()

    def _compact(self) -> None:
        if not self.pending:
            return
        keys = np.concatenate([self.keys, *(k for k, _ in self.pending)])
        items = np.concatenate([self.items, *(i for _, i in self.pending)])
        self.pending, self.npending = [], 0
        if keys.size > self.cap:
            pick = np.sort(np.argpartition(keys, self.cap - 1)[:self.cap])  # keep arrival order
            keys, items = keys[pick], items[pick]
            self.limit = float(keys.max())
        self.keys, self.items = keys, items

    def smallest(self, k: int) -> np.ndarray:
        self._compact()
        order = np.argsort(self.keys, kind="stable")[:k]
        return self.items[order]


@dataclass(eq=False)
class PixelBaseline:
    """A per-pixel classifier on raw band values (:func:`fit_pixel_classifier`).

    Attributes
    ----------
    estimator
        The fitted scikit-learn classifier (features: the raw DN of :attr:`bands`, float32).
    bands : list of str
        The bands it reads, in this order.
    classes : list of int
        The mask values it was trained on.
    pixels_per_class : dict
        Pixels drawn per class (its training set).
    valid_per_class : dict
        Valid pixels per class in the samples read (what the draw was made from).
    seed : int
        Seed of the draw (and of the default estimator).
    split : list of str
        The splits it was fitted on.
    stores : list of str
        The patch sets it was fitted on.
    samples : dict
        Samples read per store.
    """

    estimator: Any
    bands: list[str]
    classes: list[int]
    pixels_per_class: dict[int, int]
    valid_per_class: dict[int, int]
    seed: int
    split: list[str]
    stores: list[str]
    samples: dict[str, int]

    @property
    def n_pixels(self) -> int:
        """Pixels in the training set."""
        return int(sum(self.pixels_per_class.values()))

    @property
    def name(self) -> str:
        """e.g. ``"pixel classifier (HistGradientBoosting)"``."""
        kind = type(self.estimator).__name__
        return f"pixel classifier ({kind.removesuffix('Classifier') or kind})"

    def predict(self, image: Any) -> np.ndarray:
        """Class map of raw reflectance.

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
        """
        arr, single = check_image(image, self.bands)
        n, _, h, w = arr.shape
        out = np.zeros((n, h, w), np.uint8)
        valid = valid_pixels(arr)
        if valid.any():
            feats = np.moveaxis(arr, 1, -1)[valid].astype(np.float32)
            pred = np.empty(feats.shape[0], np.uint8)
            for lo in range(0, feats.shape[0], _PREDICT_CHUNK):
                pred[lo:lo + _PREDICT_CHUNK] = self.estimator.predict(
                    feats[lo:lo + _PREDICT_CHUNK])
            out[valid] = pred
        return out[0] if single else out

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-serialisable values."""
        params = self.estimator.get_params(deep=False) if hasattr(self.estimator,
                                                                   "get_params") else {}
        return json_safe({
            "baseline": "pixel_classifier", "name": self.name,
            "estimator": type(self.estimator).__name__, "params": params,
            "bands": self.bands, "classes": self.classes, "n_pixels": self.n_pixels,
            "pixels_per_class": {str(k): v for k, v in self.pixels_per_class.items()},
            "valid_per_class": {str(k): v for k, v in self.valid_per_class.items()},
            "seed": self.seed, "split": self.split, "stores": self.stores,
            "samples": self.samples, "nodata": "pixels with a band <= 0 are predicted 0",
        })

    def describe(self) -> str:
        """A few lines for logs and reports."""
        drawn = ", ".join(f"{c}: {n:,} of {self.valid_per_class[c]:,}"
                          for c, n in self.pixels_per_class.items())
        return (f"{self.name} on {self.bands}\n"
                f"  trained on {self.n_pixels:,} pixels of split {self.split} (seed "
                f"{self.seed}), per class {drawn}\n"
                f"  from {sum(self.samples.values())} samples of {self.stores}")


def fit_pixel_classifier(stores: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                         bands: Sequence[str] | None = None,
                         split: str | Sequence[str] = "train", n_pixels: int = 200_000,
                         seed: int = 1117, estimator: Any = None,
                         progress: bool = False) -> PixelBaseline:
    """Fit a per-pixel classifier on the raw bands of class-balanced training pixels.

    The draw, exactly: every sample whose ``split`` is in ``split`` is read (in store order, then
    sample order), in batches of 64 samples; its *valid* pixels (every band of ``bands`` > 0) are
    grouped by mask value. Each pixel gets a key, uniform in [0, 1), from the generator
    ``numpy.random.default_rng([seed, store_position, sample])`` (one ``random(H * W)`` draw per
    sample, in row-major pixel order), so keys do not depend on batching or on the other
    samples. Class ``c`` gets a quota: ``n_pixels`` is shared equally among the classes present;
    a class with fewer valid pixels than its share gives all of them and the rest is shared
    among the others (smallest classes first, the remainder of the integer division to the
    largest). Class ``c``'s training pixels are its ``quota_c`` valid pixels of smallest key: a
    uniform random sample without replacement. Fewer than ``n_pixels`` are drawn only when fewer
    valid pixels exist. The memory held is at most ``n_pixels`` pixels per class.

    Parameters
    ----------
    stores
        One patch set, or a list of them (e.g. the site set and an extra no-mine set); they must
        all hold ``bands``. A store without samples of ``split`` adds none (``samples`` of the
        result says how many each gave); only no sample at all is an error.
    bands
        Bands to use, in this order; default: the first store's bands but categorical ones (SCL).
    split
        The split(s) to read; samples of other splits (``"test"``) are never read.
    n_pixels
        Training pixels to draw.
    seed
        Seed of the draw and ``random_state`` of the default estimator.
    estimator
        A scikit-learn classifier (cloned, then fitted); default
        ``HistGradientBoostingClassifier(random_state=seed)``.
    progress
        Show a tqdm bar over batches.

    Returns
    -------
    PixelBaseline

    Raises
    ------
    BaselineError
        No sample of ``split`` in any store (the message lists their splits), a store without a
        split column, fewer than 2 classes among the valid pixels, bad arguments.
    lames_cube.errors.UnknownBandError
        A band some store lacks (the message lists its bands).

    Examples
    --------
    >>> import tempfile
    >>> from lames_cube.ml.baselines.reading import predict_split
    >>> from lames_cube.testing.ml_sets import baseline_patch_set
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = baseline_patch_set(f"{tmp}/p.zarr")
    ...     model = fit_pixel_classifier(store, n_pixels=2000)
    ...     pred, truth = predict_split(model, store)
    >>> model.name, model.pixels_per_class, bool((pred == truth).all())
    ('pixel classifier (HistGradientBoosting)', {0: 1296, 1: 704}, True)
    """
    seed = check_seed(seed)
    if isinstance(n_pixels, bool) or not isinstance(n_pixels, int | np.integer) or n_pixels < 2:
        raise BaselineError(f"n_pixels={n_pixels!r} must be an integer >= 2 (pixels to draw), "
                            f"e.g. n_pixels=200_000.")
    n_pixels = int(n_pixels)
    if estimator is None:
        model: Any = HistGradientBoostingClassifier(random_state=seed)
    else:
        if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
            raise BaselineError(f"estimator={estimator!r} is not a scikit-learn classifier (it "
                                f"needs fit and predict); pass e.g. "
                                f"sklearn.ensemble.RandomForestClassifier().")
        model = clone(estimator)
    splits = as_splits(split)
    sets = open_sets(stores)
    names = check_bands(bands, sets)
    picks = selected(sets, splits)

    dtype = np.result_type(*(s.ds.image.dtype for s in sets))
    keep: dict[int, _BottomK] = {}
    totals = np.zeros(256, np.int64)
    bar = progress_bar(sum(1 for p in picks for _ in batches(p)), "fit_pixel_classifier",
                       progress)
    try:
        for pos, (s, pick) in enumerate(zip(sets, picks, strict=True)):
            band_pos = s.band_positions(names)
            for samples in batches(pick):
                image = s.read("image", samples)[:, band_pos]
                mask = s.read("mask", samples)
                keys = np.stack([np.random.default_rng([seed, pos, int(i)]).random(mask[0].size)
                                 for i in samples]).reshape(mask.shape)
                valid = valid_pixels(image)
                labels = mask[valid]
                feats = np.moveaxis(image, 1, -1)[valid]
                pkeys = keys[valid]
                counts = np.bincount(labels, minlength=256)
                totals += counts
                for c in np.flatnonzero(counts):
                    sel = labels == c
                    if int(c) not in keep:
                        keep[int(c)] = _BottomK(n_pixels, len(names), dtype)
                    keep[int(c)].add(pkeys[sel], feats[sel])
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    valid_per_class = {int(c): int(totals[c]) for c in np.flatnonzero(totals)}
    where = f"split {splits} of {[s.path for s in sets]}"
    if len(valid_per_class) < 2:
        raise BaselineError(
            f"the valid pixels of {where} hold only class(es) {list(valid_per_class)} "
            f"({sum(valid_per_class.values()):,} pixels); a classifier needs at least 2 classes. "
            f"Include samples with mines (the site set), or check that the bands are not all 0."
        )
    quotas = _quotas(valid_per_class, n_pixels)
    x = np.concatenate([keep[c].smallest(q) for c, q in quotas.items()]).astype(np.float32)
    y = np.concatenate([np.full(q, c, np.uint8) for c, q in quotas.items()])
    model.fit(x, y)
    return PixelBaseline(
        estimator=model, bands=names, classes=sorted(valid_per_class), pixels_per_class=quotas,
        valid_per_class=valid_per_class, seed=seed, split=splits,
        stores=[s.path for s in sets],
        samples={s.path: int(p.size) for s, p in zip(sets, picks, strict=True)},
    )
