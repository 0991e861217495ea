"""The baselines' reading of patch sets: the samples of chosen splits, batch by batch.

A patch set is opened with :func:`lames_cube.patchset.open_patch_set` (which refuses missing,
incomplete and non-patch-set stores); its lazy ``image`` and ``mask`` are read one selected
sample at a time (contiguous runs of samples at once), never whole: only the chunks of those
samples are decoded, so samples of other splits (``"test"`` while fitting) are never read. A pixel
is *valid* when every band used is > 0 (0 is nodata); invalid pixels are never drawn for fitting
and are always predicted 0. :func:`predict_split` predicts one split with any fitted baseline.

Examples
--------
>>> import tempfile
>>> from lames_cube.testing.ml_sets import baseline_patch_set
>>> with tempfile.TemporaryDirectory() as tmp:
...     s = PatchSetSamples.open(baseline_patch_set(f"{tmp}/p.zarr"))
...     pick = s.select(["test"])
...     image = s.read("image", pick)
>>> s.bands, pick.tolist(), image.shape
(['B02', 'B03', 'B04', 'B08', 'B11', 'B12'], [3, 7, 11, 15], (4, 6, 16, 16))
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from lames_cube.bands import BAND_BY_NAME
from lames_cube.errors import BaselineError, UnknownBandError
from lames_cube.io import store_path
from lames_cube.patchset import open_patch_set

__all__ = [
    "BATCH",
    "PatchSetSamples",
    "as_splits",
    "batches",
    "check_bands",
    "check_image",
    "json_safe",
    "open_sets",
    "predict_split",
    "progress_bar",
    "selected",
    "valid_pixels",
]

#: Samples read (and predicted) at once.
BATCH = 64


@dataclass
class PatchSetSamples:
    """One patch set opened for the baselines: its metadata (pixels are read only on demand).

    Attributes
    ----------
    path : str
        The store.
    ds : xarray.Dataset
        The patch set as :func:`~lames_cube.patchset.open_patch_set` opens it (lazy).
    """

    path: str
    ds: xr.Dataset

    @classmethod
    def open(cls, store: str | os.PathLike[str]) -> PatchSetSamples:
        """Open a patch set (refusing missing, incomplete and non-patch-set stores)."""
        return cls(path=str(store_path(store)), ds=open_patch_set(store))

    @property
    def bands(self) -> list[str]:
        """The bands, in the store's order."""
        return [str(b) for b in self.ds.band.values]

    @property
    def split(self) -> np.ndarray | None:
        """The split of each sample (``str``), or None without a ``split`` column."""
        return np.asarray(self.ds.coords["split"].values).astype(str) \
            if "split" in self.ds.coords else None

    @property
    def columns(self) -> list[str]:
        """The per-sample columns (the tables' columns and ``source``)."""
        return sorted(str(k) for k, c in self.ds.coords.items() if c.dims == ("sample",))

    def select(self, splits: list[str]) -> np.ndarray:
        """The (sorted) samples whose split is in ``splits``.

        Raises
        ------
        lames_cube.errors.BaselineError
            The patch set has no ``split`` column.
        """
        if self.split is None:
            raise BaselineError(
                f"the patch set {self.path!r} has no 'split' column (its columns are "
                f"{self.columns}), so it cannot select split={splits!r}; write it from tables "
                f"with a split column (lames_cube.splits)."
            )
        return np.flatnonzero(np.isin(self.split, splits))

    def splits(self) -> list[str]:
        """The splits the patch set holds."""
        return [] if self.split is None else sorted(set(self.split.tolist()))

    def band_positions(self, bands: list[str]) -> np.ndarray:
        """Positions of ``bands`` along the store's band dim."""
        return np.array([self.bands.index(b) for b in bands], np.int64)

    def read(self, name: str, samples: np.ndarray) -> np.ndarray:
        """The given (sorted) samples of ``image`` or ``mask`` as NumPy, read as contiguous runs
        of samples: only the chunks of these samples are decoded, never those of others."""
        data = self.ds[name].data
        samples = np.asarray(samples, np.int64)
        if samples.size == 0:
            return np.zeros((0, *data.shape[1:]), data.dtype)
        runs = np.split(samples, np.flatnonzero(np.diff(samples) != 1) + 1)
        # slices of the lazy array: dask reads only them (fused into the store's getter)
        parts = dask.compute(*(data[int(r[0]):int(r[-1]) + 1] for r in runs), scheduler="sync")
        return np.concatenate(parts)


def batches(samples: np.ndarray, batch: int | None = None) -> Iterator[np.ndarray]:
    """``samples`` in consecutive batches of ``batch`` (default :data:`BATCH`)."""
    size = BATCH if batch is None else batch
    for lo in range(0, samples.size, size):
        yield samples[lo:lo + size]


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


def open_sets(stores: Any) -> list[PatchSetSamples]:
    """Open one patch set or a list of them.

    Raises
    ------
    lames_cube.errors.BaselineError
        ``stores`` is not a path or a non-empty list of paths.
    """
    return [PatchSetSamples.open(s) for s in _as_stores(stores)]


def as_splits(split: Any) -> list[str]:
    """``split=`` as a list of split names.

    Raises
    ------
    lames_cube.errors.BaselineError
        Not a name or a non-empty list of names.
    """
    if isinstance(split, str):
        return [split]
    if isinstance(split, Sequence) and split and all(isinstance(s, str) for s in split):
        return list(split)
    raise BaselineError(f"split={split!r} must be a split name such as 'train' or a non-empty "
                        f"list of them.")


def check_bands(bands: Any, sets: list[PatchSetSamples]) -> list[str]:
    """The bands to use: ``bands`` (each in every set), or the first set's reflectance bands
    (categorical bands such as SCL left out), each in every set.

    Raises
    ------
    lames_cube.errors.BaselineError
        No band selected, a band named twice, no reflectance band.
    lames_cube.errors.UnknownBandError
        A band some set lacks (the message lists its bands).
    """
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


def selected(sets: list[PatchSetSamples], splits: list[str]) -> list[np.ndarray]:
    """The samples of ``splits`` in each set.

    Raises
    ------
    lames_cube.errors.BaselineError
        They select no sample at all (the message lists the sets' splits).
    """
    picks = [s.select(splits) for s in sets]
    if not any(p.size for p in picks):
        have = {s.path: s.splits() for s in sets}
        raise BaselineError(
            f"split={splits if len(splits) > 1 else splits[0]!r} selects no sample of "
            f"{[s.path for s in sets]}; their splits are {have}. Pick one they hold."
        )
    return picks


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``total`` batches, or None when not ``enabled``."""
    return tqdm(total=total, unit="batch", desc=desc) if enabled else None


def json_safe(value: Any) -> Any:
    """A value as JSON would hold it (NumPy scalars as numbers, anything unknown as its repr)."""
    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return repr(obj)

    return json.loads(json.dumps(value, default=default))


def check_image(image: Any, bands: list[str]) -> tuple[np.ndarray, bool]:
    """``image`` as ``(N, C, H, W)`` and whether it came without the sample dim.

    Raises
    ------
    lames_cube.errors.BaselineError
        Not numeric, or not ``(N, C, H, W)`` / ``(C, H, W)`` with one channel per band.
    """
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


def valid_pixels(image: np.ndarray) -> np.ndarray:
    """``(N, H, W)``: every band > 0 (0 is nodata)."""
    return (image > 0).all(axis=1)


def predict_split(baseline: Any, store: str | os.PathLike[str], *,
                  split: str | Sequence[str] = "test",
                  batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Predict the samples of one split of a patch set, in batches.

    Parameters
    ----------
    baseline
        A fitted baseline (anything with ``bands`` and ``predict(image)``:
        :class:`~lames_cube.ml.baselines.PixelBaseline`,
        :class:`~lames_cube.ml.baselines.IndexBaseline`).
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
    lames_cube.errors.BaselineError
        No sample of ``split`` (the message lists the store's splits), a bad ``batch``.
    lames_cube.errors.UnknownBandError
        A band of the baseline the store lacks.

    Examples
    --------
    >>> import tempfile
    >>> from lames_cube.ml.baselines import IndexBaseline
    >>> from lames_cube.testing.ml_sets import baseline_patch_set
    >>> b = IndexBaseline("NDBI", ["B08", "B11"], 0.0, ">", 1.0, 1, 1, ["validation"], [], 256,
    ...                   [], {}, {})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = baseline_patch_set(f"{tmp}/p.zarr")
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
    splits = as_splits(split)
    s = PatchSetSamples.open(store)
    names = check_bands(list(baseline.bands), [s])
    (pick,) = selected([s], splits)
    band_pos = s.band_positions(names)
    preds, truths = [], []
    for samples in batches(pick, int(batch)):
        image = s.read("image", samples)[:, band_pos]
        preds.append(np.asarray(baseline.predict(image), np.uint8))
        truths.append(s.read("mask", samples))
    return np.concatenate(preds), np.concatenate(truths)
