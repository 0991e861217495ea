"""Honest baselines for the LAMES segmentation experiments: a per-pixel classifier and a
spectral-index threshold, fitted on patch sets without torch.

A learned U-Net is only worth its cost if it beats what a per-pixel model on the raw bands, or a
single spectral index with one threshold, already does. Both baselines here are fitted on the
samples of chosen splits of one or more patch sets (:func:`lames_cube.patchset.write_patch_set`)
and are *never* shown the test split:

- :func:`fit_pixel_classifier` draws valid pixels of the ``"train"`` split (class-balanced, seeded)
  and fits a scikit-learn classifier (default
  :class:`~sklearn.ensemble.HistGradientBoostingClassifier`) on their raw band values.
- :func:`fit_index_threshold` picks, on the ``"validation"`` split, the spectral index of
  :data:`INDICES`, the direction (mine where the index is above or below the threshold) and the
  threshold that maximise macro F1 (binary site task only).
- :func:`predict_split` predicts the samples of one split (``"test"`` for the evaluation) in
  batches and returns the predictions with the truth masks, ready for
  :func:`lames_cube.metrics.confusion_matrix`.

Pixels are read from the Zarr arrays of the patch set one selected sample at a time (contiguous
runs of samples at once), never the whole ``image`` array: samples of other splits are not read.
A pixel is *valid* when every band used is > 0 (0 is nodata); invalid pixels are never drawn for
fitting and are always predicted 0.

Examples
--------
>>> import tempfile
>>> from lames_cube.metrics import confusion_matrix, scores
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = _toy_patch_set(f"{tmp}/p.zarr")
...     index = fit_index_threshold(store)
...     pred, truth = predict_split(index, store)
>>> index.index, index.direction, index.macro_f1, scores(confusion_matrix(pred, truth, 2))["macro_f1"]
('NDBI', '>', 1.0, 1.0)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lames_cube import io
from lames_cube._checks import check_seed
from lames_cube.errors import (
    BaselineError,
    UnknownBandError,
)

__all__ = [
    "INDICES",
    "BaselineError",
    "IndexBaseline",
    "PixelBaseline",
    "SpectralIndex",
    "fit_index_threshold",
    "fit_pixel_classifier",
    "predict_split",
    "threshold_f1",
]

#: Samples read (and predicted) at once.
_BATCH = 64
#: Pixels given to ``estimator.predict`` at once (bounds the memory of a prediction).
_PREDICT_CHUNK = 1 << 20



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
# Reading patch sets


@dataclass
class _Set:
    """One opened patch set: its metadata and Zarr arrays (pixels are read only on demand)."""

    path: str
    bands: list[str]
    split: np.ndarray | None  # str per sample, or None without a split column
    columns: list[str]
    image: Any
    mask: Any

    def select(self, splits: list[str]) -> np.ndarray:
        if self.split is None:
            raise BaselineError(
                f"the patch set {self.path!r} has no 'split' column (its columns are "
                f"{self.columns}), so it cannot select split={splits!r}; write it from tables "
                f"with a split column (lames_cube.splits)."
            )
        return np.flatnonzero(np.isin(self.split, splits))

    def splits(self) -> list[str]:
        return [] if self.split is None else sorted(set(self.split.tolist()))


def _open_set(store: Any) -> _Set:
    import zarr

    from lames_cube.patchset import open_patch_set

    ds = open_patch_set(store)  # refuses missing, incomplete and non-patch-set stores
    path = str(io._as_path(store))
    columns = sorted(str(k) for k, c in ds.coords.items() if c.dims == ("sample",))
    split = np.asarray(ds.coords["split"].values).astype(str) if "split" in ds.coords else None
    group = zarr.open_group(path, mode="r", zarr_format=3)
    return _Set(path=path, bands=[str(b) for b in ds.band.values], split=split,
                columns=columns, image=group["image"], mask=group["mask"])


def _read_samples(array: Any, samples: np.ndarray) -> np.ndarray:
    """The given (sorted) samples of a Zarr array, read as contiguous runs of samples: only the
    chunks of these samples are decoded, never those of other samples."""
    samples = np.asarray(samples, np.int64)
    if samples.size == 0:
        return np.zeros((0, *array.shape[1:]), array.dtype)
    breaks = np.flatnonzero(np.diff(samples) != 1) + 1
    runs = np.split(samples, breaks)
    return np.concatenate([np.asarray(array[int(r[0]):int(r[-1]) + 1]) for r in runs])


def _batches(samples: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for lo in range(0, samples.size, batch):
        yield samples[lo:lo + batch]


def _as_stores(stores: Any) -> list[Any]:
    if isinstance(stores, str | os.PathLike):
        return [stores]
    if isinstance(stores, Sequence) and stores:
        bad = [s for s in stores if not isinstance(s, str | os.PathLike)]
        if not bad:
            return list(stores)
        raise BaselineError(f"stores must be patch-set paths; got {type(bad[0]).__name__} "
                            f"{bad[0]!r} among them.")
    raise BaselineError(f"stores must be a patch-set path or a non-empty list of them; got "
                        f"{stores!r}.")


def _as_splits(split: Any) -> list[str]:
    if isinstance(split, str):
        return [split]
    if isinstance(split, Sequence) and split and all(isinstance(s, str) for s in split):
        return list(split)
    raise BaselineError(f"split={split!r} must be a split name such as 'train' or a non-empty "
                        f"list of them.")


def _check_bands(bands: Any, sets: list[_Set]) -> list[str]:
    """The bands to use: ``bands`` (each in every set), or the first set's reflectance bands
    (categorical bands such as SCL left out), each in every set."""
    from lames_cube.bands import BAND_BY_NAME

    first = sets[0]
    if bands is None:
        names = [b for b in first.bands
                 if not (b in BAND_BY_NAME and BAND_BY_NAME[b].categorical)]
        if not names:
            raise BaselineError(f"the patch set {first.path!r} has no reflectance band (its "
                                f"bands are {first.bands}); pass bands= explicitly.")
    else:
        if isinstance(bands, str):
            bands = [bands]
        names = [str(b) for b in bands]
        if not names:
            raise BaselineError(f"bands=[] selects no band; pick some of {first.bands}.")
        if len(set(names)) != len(names):
            raise BaselineError(f"bands={names} names a band twice; name each once.")
    for s in sets:
        missing = [b for b in names if b not in s.bands]
        if missing:
            raise UnknownBandError(
                f"bands {missing} are not in the patch set {s.path!r}; its bands are {s.bands}. "
                f"Pick bands every store holds, e.g. bands="
                f"{[b for b in names if b in s.bands] or s.bands}."
            )
    return names


def _selected(sets: list[_Set], splits: list[str]) -> list[np.ndarray]:
    """The samples of ``splits`` in each set; raises when they select none at all."""
    picks = [s.select(splits) for s in sets]
    if not any(p.size for p in picks):
        have = {s.path: s.splits() for s in sets}
        raise BaselineError(
            f"split={splits if len(splits) > 1 else splits[0]!r} selects no sample of "
            f"{[s.path for s in sets]}; their splits are {have}. Pick one they hold."
        )
    return picks


def _band_positions(s: _Set, bands: list[str]) -> np.ndarray:
    return np.array([s.bands.index(b) for b in bands], np.int64)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", desc=desc)


def _json_safe(value: Any) -> Any:
    """A value as JSON would hold it (NumPy scalars as numbers, anything unknown as its repr)."""
    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return repr(obj)

    return json.loads(json.dumps(value, default=default))


def _check_image(image: Any, bands: list[str]) -> tuple[np.ndarray, bool]:
    """``image`` as ``(N, C, H, W)`` and whether it came without the sample dim."""
    arr = np.asarray(image)
    if arr.dtype.kind not in "iuf":
        raise BaselineError(f"image has dtype {arr.dtype}; pass reflectance as numbers (uint16 "
                            f"DN, reflectance x 1e4).")
    if arr.ndim not in (3, 4) or arr.shape[-3] != len(bands):
        raise BaselineError(
            f"image has shape {arr.shape}; pass (N, C, H, W) or (C, H, W) with C = "
            f"{len(bands)} bands in the order {bands}."
        )
    single = arr.ndim == 3
    return (arr[None] if single else arr), single


def _valid(image: np.ndarray) -> np.ndarray:
    """``(N, H, W)``: every band > 0 (0 is nodata)."""
    return (image > 0).all(axis=1)


# --------------------------------------------------------------------------------------------
# Pixel classifier


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
        arr, single = _check_image(image, self.bands)
        n, _, h, w = arr.shape
        out = np.zeros((n, h, w), np.uint8)
        valid = _valid(arr)
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
        return _json_safe({
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
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = _toy_patch_set(f"{tmp}/p.zarr")
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
        from sklearn.ensemble import HistGradientBoostingClassifier

        model: Any = HistGradientBoostingClassifier(random_state=seed)
    else:
        if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
            raise BaselineError(f"estimator={estimator!r} is not a scikit-learn classifier (it "
                                f"needs fit and predict); pass e.g. "
                                f"sklearn.ensemble.RandomForestClassifier().")
        from sklearn.base import clone

        model = clone(estimator)
    splits = _as_splits(split)
    sets = [_open_set(s) for s in _as_stores(stores)]
    names = _check_bands(bands, sets)
    picks = _selected(sets, splits)

    dtype = np.result_type(*(s.image.dtype for s in sets))
    keep: dict[int, _BottomK] = {}
    totals = np.zeros(256, np.int64)
    bar = _progress(sum(-(-p.size // _BATCH) for p in picks), "fit_pixel_classifier", progress)
    try:
        for pos, (s, pick) in enumerate(zip(sets, picks, strict=True)):
            band_pos = _band_positions(s, names)
            for samples in _batches(pick, _BATCH):
                image = _read_samples(s.image, samples)[:, band_pos]
                mask = _read_samples(s.mask, samples)
                keys = np.stack([np.random.default_rng([seed, pos, int(i)]).random(mask[0].size)
                                 for i in samples]).reshape(mask.shape)
                valid = _valid(image)
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


# --------------------------------------------------------------------------------------------
# Index threshold


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
            raise BaselineError(f"index={self.index!r} is not in lames_cube.baselines.INDICES; "
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
        arr, single = _check_image(image, self.bands)
        ix = INDICES[self.index]
        values = ix.compute({b: arr[:, i] for i, b in enumerate(self.bands)})
        hit = values > self.threshold if self.direction == ">" else values < self.threshold
        out = (hit & _valid(arr)).astype(np.uint8)
        return out[0] if single else out

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-serialisable values."""
        return _json_safe({
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
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = _toy_patch_set(f"{tmp}/p.zarr")
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
                                f"of lames_cube.baselines.INDICES; pick from {list(INDICES)}.")
    splits = _as_splits(split)
    sets = [_open_set(s) for s in _as_stores(stores)]
    names = _check_bands(bands, sets)
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
    picks = _selected(sets, splits)

    pixels, truth = [], []
    for s, pick in zip(sets, picks, strict=True):
        band_pos = _band_positions(s, read)
        for samples in _batches(pick, _BATCH):
            mask = _read_samples(s.mask, samples)
            if mask.size and mask.max() > 1:
                bad = sorted(set(np.unique(mask).tolist()) - {0, 1})
                raise BaselineError(
                    f"the masks of split {splits} of {s.path!r} hold classes {bad} besides 0 "
                    f"and 1: the index baseline is binary-only (site detection, mine vs not). "
                    f"Use fit_pixel_classifier for the sector task."
                )
            image = _read_samples(s.image, samples)[:, band_pos]
            valid = _valid(image)
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


# --------------------------------------------------------------------------------------------
# Prediction


def predict_split(baseline: PixelBaseline | IndexBaseline, store: str | os.PathLike[str], *,
                  split: str | Sequence[str] = "test",
                  batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Predict the samples of one split of a patch set, in batches.

    Parameters
    ----------
    baseline
        A fitted baseline (anything with ``bands`` and ``predict(image)``).
    store
        The patch set.
    split
        The split(s) to predict, in sample order.
    batch
        Samples read and predicted at once.

    Returns
    -------
    tuple of numpy.ndarray
        ``(pred, truth)``: uint8 ``(N, H, W)`` each, the predictions and the masks, ready for
        ``lames_cube.metrics.confusion_matrix(pred, truth, n_classes)``.

    Raises
    ------
    BaselineError
        No sample of ``split`` (the message lists the store's splits), a bad ``batch``.
    lames_cube.errors.UnknownBandError
        A band of the baseline the store lacks.

    Examples
    --------
    >>> import tempfile
    >>> b = IndexBaseline("NDBI", ["B08", "B11"], 0.0, ">", 1.0, 1, 1, ["validation"], [], 256,
    ...                   [], {}, {})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = _toy_patch_set(f"{tmp}/p.zarr")
    ...     pred, truth = predict_split(b, store, split="test", batch=2)
    >>> pred.shape, pred.dtype, bool((pred == truth).all())
    ((4, 16, 16), dtype('uint8'), True)
    """
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise BaselineError(f"batch={batch!r} must be a positive integer number of samples, "
                            f"e.g. batch=64.")
    if not (hasattr(baseline, "bands") and hasattr(baseline, "predict")):
        raise BaselineError(f"baseline is a {type(baseline).__name__}; pass a fitted baseline "
                            f"(fit_pixel_classifier or fit_index_threshold).")
    splits = _as_splits(split)
    s = _open_set(store)
    names = _check_bands(list(baseline.bands), [s])
    (pick,) = _selected([s], splits)
    band_pos = _band_positions(s, names)
    preds, truths = [], []
    for samples in _batches(pick, int(batch)):
        image = _read_samples(s.image, samples)[:, band_pos]
        preds.append(np.asarray(baseline.predict(image), np.uint8))
        truths.append(_read_samples(s.mask, samples))
    return np.concatenate(preds), np.concatenate(truths)


# --------------------------------------------------------------------------------------------
# A toy patch set for the examples


def _toy_patch_set(path: str | os.PathLike[str], *, block: int = 4, seed: int = 0,
                   classes: int = 1) -> Any:
    """A 64 x 64 px patch set of 16 patches of 16 px (bands B02, B03, B04, B08, B11, B12) with
    planted mines: 8 x 8 px blocks where ``(row // 8 + col // 8) % 3 == 0``, bright in B11 and
    dark in B08 (NDBI > 0, NDVI < 0.2) against vegetated ground (NDBI < 0, NDVI > 0.2).
    Splits cycle train, train, validation, test over the patches. ``classes`` > 1 labels the
    mines 1..classes by column block (a sector-like task)."""
    import xarray as xr
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_zeros

    from lames_cube.patches import patch_table
    from lames_cube.patchset import PatchSource, write_patch_set

    g = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719", resolution=10)
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(g.shape)
    mine = (rows // 8 + cols // 8) % 3 == 0
    ground = {"B02": 500, "B03": 800, "B04": 700, "B08": 3000, "B11": 2000, "B12": 1200}
    pit = {"B02": 1500, "B03": 1600, "B04": 1700, "B08": 1800, "B11": 3200, "B12": 2600}
    layers = []
    for b in ground:
        values = np.where(mine, pit[b], ground[b]) + rng.integers(0, 200, g.shape)
        layers.append(xr_zeros(g, dtype="uint16").copy(data=values.astype(np.uint16)))
    cube = xr.concat(layers, "band").assign_coords(band=list(ground))
    labels = mine.astype(np.uint8)
    if classes > 1:
        labels = np.where(mine, 1 + (cols // 8) % classes, 0).astype(np.uint8)
    table = patch_table(g, size=16)
    table["split"] = np.array(["train", "train", "validation", "test"])[np.arange(len(table)) % 4]
    table["kind"] = "site"
    return write_patch_set(PatchSource(cube, table, xr_zeros(g, dtype="uint8").copy(data=labels)),
                           path, block=block, progress=False)
