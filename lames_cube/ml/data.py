"""torch Datasets over patch sets and cube stores, and the dihedral augmentation.

Radiometric jitter (``jitter=``, :mod:`lames_cube.ml.jitter`) changes each item's brightness,
contrast, band gains and haze before the dihedral transform, drawn from the same
``(seed, epoch, key)``.

Both datasets return ``(image, mask)``: ``image`` a float32 tensor ``(C, H, W)`` (standardised
per band with training statistics), ``mask`` an int64 tensor ``(H, W)``. They hold paths, never
open stores, when pickled: each DataLoader worker opens the Zarr arrays itself on first use, so
``num_workers > 0`` yields exactly what ``num_workers=0`` yields.

Augmentation (``augment=True``) applies one of the 8 dihedral transforms (:func:`dihedral`) to
image and mask together -- never independently (a defect of the original LAMES code, DESIGN.md
§5). The transform of an item is drawn from ``(seed, epoch, key)`` (:func:`dihedral_index`), so
it does not depend on worker scheduling; call ``set_epoch`` before each epoch for new draws.

Examples
--------
>>> import numpy as np
>>> image, mask = np.arange(4).reshape(1, 2, 2), np.array([[1, 0], [0, 0]])
>>> [dihedral(image, mask, k)[0][0].tolist() for k in (0, 1, 4)]
[[[0, 1], [2, 3]], [[1, 3], [0, 2]], [[1, 0], [3, 2]]]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
import zarr
from torch.utils.data import Dataset

from lames_cube import io
from lames_cube._checks import check_seed
from lames_cube.errors import (
    DatasetSelectionError,
    InvalidGridError,
    UnknownBandError,
)
from lames_cube.grid import geobox_of
from lames_cube.ml.jitter import Jitter, check_jitter_input, parse_jitter
from lames_cube.ml.jitter import jitter as apply_jitter
from lames_cube.patches import check_table
from lames_cube.patchset import open_patch_set

__all__ = ["CubeWindowDataset", "DatasetSelectionError", "PatchDataset", "dihedral",
           "dihedral_index"]



# --------------------------------------------------------------------------------------------
# Dihedral transforms


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k <= 7:
        raise DatasetSelectionError(f"k={k!r} must be an integer from 0 to 7 (one of the 8 "
                                    f"dihedral transforms).")
    return int(k)


def dihedral(image: Any, mask: Any, k: int) -> tuple[Any, Any]:
    """One of the 8 flips and rotations of the square, applied to image and mask together.

    ``k = 4 * f + r``: flip left-right if ``f`` is 1, then rotate ``r`` quarter turns
    counter-clockwise (``k = 0`` is the identity). A pixel marked in the mask stays on the same
    image pixel after every transform.

    Parameters
    ----------
    image
        ``(C, H, W)`` (or ``(H, W)``) NumPy array or torch tensor.
    mask
        ``(H, W)`` of the same kind, or None.
    k
        0..7.

    Returns
    -------
    tuple
        The transformed image and mask (contiguous copies for NumPy, tensors for torch).

    Raises
    ------
    DatasetSelectionError
        ``k`` outside 0..7, or a mask whose shape is not the image's last two dims.

    Examples
    --------
    >>> import torch
    >>> image = torch.arange(9).reshape(1, 3, 3)
    >>> mask = (image[0] == 2).long()  # marks the top-right pixel
    >>> out = [dihedral(image, mask, k) for k in range(8)]
    >>> len({tuple(i.flatten().tolist()) for i, _ in out}), all(i[0][m == 1].item() == 2 for i, m in out)
    (8, True)
    """
    k = _check_k(k)
    if mask is not None and tuple(mask.shape) != tuple(image.shape[-2:]):
        raise DatasetSelectionError(f"the mask has shape {tuple(mask.shape)}; it must be the "
                                    f"image's last two dims {tuple(image.shape[-2:])}.")
    turns, flip = k % 4, k >= 4
    if isinstance(image, torch.Tensor):
        def apply(a: Any) -> Any:
            if flip:
                a = torch.flip(a, dims=(-1,))
            return torch.rot90(a, turns, dims=(-2, -1)) if turns else a.clone()
    else:
        def apply(a: Any) -> Any:
            a = np.asarray(a)
            if flip:
                a = np.flip(a, axis=-1)
            return np.ascontiguousarray(np.rot90(a, turns, axes=(-2, -1)))
    return apply(image), None if mask is None else apply(mask)


def dihedral_index(seed: int, epoch: int, key: int) -> int:
    """The transform (0..7) of item ``key`` in ``epoch``: a pure function of the three integers.

    Examples
    --------
    >>> dihedral_index(0, 0, 5) == dihedral_index(0, 0, 5), 0 <= dihedral_index(1, 2, 3) < 8
    (True, True)
    """
    state = np.random.SeedSequence([int(seed), int(epoch), int(key)]).generate_state(1)
    return int(state[0] % 8)


# --------------------------------------------------------------------------------------------
# Shared parts


def _band_index(bands: Any, available: list[str], where: str) -> tuple[list[str], np.ndarray]:
    if bands is None:
        return list(available), np.arange(len(available))
    if isinstance(bands, str):
        bands = [bands]
    names = [str(b) for b in bands]
    unknown = [b for b in names if b not in available]
    if unknown:
        raise UnknownBandError(f"bands {unknown} are not in {where}; its bands are {available}. "
                               f"Pick some of them, e.g. bands={available[:3]}.")
    if not names:
        raise DatasetSelectionError(f"bands=[] selects no band; pick some of {available}.")
    return names, np.array([available.index(b) for b in names], np.int64)


def _as_stats(mean: Sequence[Any], std: Sequence[Any], what: str) -> tuple[np.ndarray, np.ndarray]:
    if any(v is None for v in (*mean, *std)):
        raise DatasetSelectionError(
            f"{what} has no statistics for some bands (band_mean {list(mean)}, band_std "
            f"{list(std)}: no valid training pixel there); pass normalise=False or stats=None, "
            f"or rebuild the patch set with training windows that cover every band."
        )
    m = np.asarray(mean, np.float64).astype(np.float32)[:, None, None]
    s = np.asarray(std, np.float64)
    s = np.where(s > 0, s, 1.0).astype(np.float32)[:, None, None]  # a constant band: centre only
    return m, s


class _WindowDataset(Dataset):
    """What both datasets share: epoch, augmentation and the conversion to tensors."""

    augment: bool
    jitter: Jitter | None = None
    bands: list[str]
    seed: int
    epoch: int
    mean: np.ndarray | None
    std: np.ndarray | None

    def set_epoch(self, epoch: int) -> None:
        """Draw other transforms: the augmentation depends on ``(seed, epoch, key)``. Call it in
        the main process before iterating (DataLoader workers copy the dataset when an epoch
        starts, unless ``persistent_workers=True``)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise DatasetSelectionError(f"epoch={epoch!r} must be a non-negative integer.")
        self.epoch = int(epoch)

    def _item(self, image: np.ndarray, mask: np.ndarray, key: int) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
        if self.jitter is not None:
            image = apply_jitter(image, self.jitter.draw(self.bands, seed=self.seed,
                                                         epoch=self.epoch, key=key))
        if self.augment:
            image, mask = dihedral(image, mask, dihedral_index(self.seed, self.epoch, key))
        out = image.astype(np.float32)
        if self.mean is not None and self.std is not None:
            out -= self.mean
            out /= self.std
        return (torch.from_numpy(np.ascontiguousarray(out)),
                torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = None, None  # each process opens its own
        return state


def _index(i: Any, n: int) -> int:
    if isinstance(i, bool) or not isinstance(i, int | np.integer):
        raise TypeError(f"dataset indices are integers; got {type(i).__name__}.")
    i = int(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {i} is out of range for a dataset of {n} items.")
    return i


# --------------------------------------------------------------------------------------------
# Patch sets


def _values(values: Any) -> list[str]:
    if isinstance(values, str):
        return [values]
    return [str(v) for v in values]


class PatchDataset(_WindowDataset):
    """The samples of a patch set (:func:`lames_cube.patchset.write_patch_set`) as a torch
    Dataset.

    Parameters
    ----------
    store
        A complete patch set.
    split
        Keep the samples whose ``split`` is this value (or one of these values).
    kinds
        Keep the samples whose ``kind`` is one of these values (e.g. ``["site",
        "background"]``).
    bands
        Band names to read, in this order (default: every band of the set).
    normalise
        Standardise each band with the set's statistics (``band_mean``, ``band_std``: from its
        training split only); a band whose std is 0 is only centred. False gives the raw values
        as float32.
    stats
        Standardise with other statistics instead of the set's own (e.g. the site set's,
        for an extra no-mine set trained beside it): a patch-set store, a mapping with
        ``band_mean``/``band_std`` (matched by band name) or a ``(mean, std)`` pair per
        selected band. Needs ``normalise=True``.
    augment
        Apply one dihedral transform per item, drawn from ``(seed, epoch, sample)`` where
        ``sample`` is the item's index in the store (:func:`dihedral_index`).
    jitter
        Radiometric jitter of each item (brightness, contrast, band gains, haze; see
        :mod:`lames_cube.ml.jitter`), drawn from ``(seed, epoch, sample)``: None (default),
        True (the default spreads), a mapping of settings or a :class:`Jitter`. For sets of
        reflectance × 10 000.
    seed
        Seed of the augmentation.

    Attributes
    ----------
    indices : numpy.ndarray
        The store's sample index of each item.
    bands : list of str
        The bands read.

    Raises
    ------
    DatasetSelectionError
        A split/kind column the set lacks, values it does not hold, or missing statistics.
    lames_cube.errors.UnknownBandError
        A band the set does not hold (the message lists its bands).
    lames_cube.errors.IncompleteStoreError
        An unfinished patch set.

    Examples
    --------
    >>> import tempfile
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from lames_cube.patches import patch_table
    >>> from lames_cube.patchset import PatchSource, write_patch_set
    >>> g = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719",
    ...                      resolution=10)
    >>> cube = (xr_zeros(g, dtype="uint16") + 9).expand_dims(band=["B04"])
    >>> table = patch_table(g, size=32)
    >>> table["split"] = ["train", "train", "train", "test"]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = write_patch_set(PatchSource(cube, table), f"{tmp}/p.zarr", progress=False)
    ...     data = PatchDataset(store, split="train", normalise=False)
    ...     image, mask = data[0]
    >>> len(data), tuple(image.shape), image.dtype, mask.dtype, float(image.max())
    (3, (1, 32, 32), torch.float32, torch.int64, 9.0)
    """

    def __init__(self, store: str | os.PathLike[str], *, split: str | Sequence[str] | None = None,
                 kinds: str | Sequence[str] | None = None, bands: Sequence[str] | None = None,
                 normalise: bool = True, stats: Any = None, augment: bool = False,
                 jitter: Any = None, seed: int = 0) -> None:
        ds = open_patch_set(store)
        path = io.store_path(store)
        self.store = str(path)
        available = [str(b) for b in ds.band.values]
        self.bands, self._band_index = _band_index(bands, available, f"the patch set {self.store!r}")
        if np.array_equal(self._band_index, np.arange(len(available))):
            self._band_index = None
        keep = np.ones(ds.sizes["sample"], bool)
        for column, wanted in (("split", split), ("kind", kinds)):
            if wanted is None:
                continue
            if column not in ds.coords:
                columns = sorted(str(k) for k, c in ds.coords.items() if c.dims == ("sample",))
                raise DatasetSelectionError(
                    f"the patch set {self.store!r} has no {column!r} column (its columns are "
                    f"{columns}), so it cannot select {column}={wanted!r}; pass "
                    f"{'split' if column == 'split' else 'kinds'}=None."
                )
            have = np.asarray(ds.coords[column].values).astype(str)
            wanted_list = _values(wanted)
            unknown = [v for v in wanted_list if v not in set(have.tolist())]
            if unknown:
                raise DatasetSelectionError(
                    f"no sample of the patch set {self.store!r} has {column} {unknown}; its "
                    f"{column} values are {sorted(set(have.tolist()))}."
                )
            keep &= np.isin(have, wanted_list)
        self.indices = np.flatnonzero(keep)
        if not self.indices.size:
            raise DatasetSelectionError(f"split={split!r} and kinds={kinds!r} together select "
                                        f"no sample of {self.store!r}; loosen one of them.")
        self.size = int(ds.attrs["size"])
        self.stats_from = ds.attrs.get("stats_from")
        self.mean = self.std = None
        if stats is not None and not normalise:
            raise DatasetSelectionError("stats= given with normalise=False; drop one of them.")
        if stats is not None:
            self.mean, self.std = _stats(stats, self.bands)
        elif normalise:
            mean, std = ds.attrs.get("band_mean"), ds.attrs.get("band_std")
            if mean is None or std is None:  # pragma: no cover - complete sets have them
                raise DatasetSelectionError(f"the patch set {self.store!r} has no statistics; "
                                            f"pass normalise=False.")
            pick = [available.index(b) for b in self.bands]
            self.mean, self.std = _as_stats([mean[i] for i in pick], [std[i] for i in pick],
                                            f"the patch set {self.store!r}")
        self.augment, self.seed, self.epoch = bool(augment), check_seed(seed), 0
        self.jitter = parse_jitter(jitter)
        check_jitter_input(self.jitter, self.bands, ds["image"].dtype, ds.attrs.get("nodata", 0),
                           f"the patch set {self.store!r}")
        self._handles: tuple[Any, Any] | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def _arrays(self) -> tuple[Any, Any]:
        """The Zarr arrays, opened once per process (never pickled to workers)."""
        if self._handles is None or self._pid != os.getpid():
            group = zarr.open_group(self.store, mode="r", zarr_format=3)
            self._handles, self._pid = (group["image"], group["mask"]), os.getpid()
        return self._handles

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = int(self.indices[_index(i, len(self))])
        image_arr, mask_arr = self._arrays()
        image = np.asarray(image_arr[sample])
        if self._band_index is not None:
            image = image[self._band_index]
        return self._item(image, np.asarray(mask_arr[sample]), sample)


# --------------------------------------------------------------------------------------------
# Cube stores


def _stats(stats: Any, bands: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """None, a patch-set store (its training statistics), a mapping with ``band_mean`` and
    ``band_std`` (and ``stats_bands``: matched by name), or ``(mean, std)`` per selected band."""
    if stats is None:
        return None, None
    where = "stats"
    if isinstance(stats, str | os.PathLike):
        where = f"the patch set {str(stats)!r}"
        stats = dict(open_patch_set(stats).attrs)
    if isinstance(stats, Mapping):
        if "band_mean" not in stats or "band_std" not in stats:
            raise DatasetSelectionError(f"stats must hold 'band_mean' and 'band_std' (the attrs "
                                        f"of a patch set); got keys {sorted(map(str, stats))}.")
        mean, std = list(stats["band_mean"]), list(stats["band_std"])
        names = stats.get("stats_bands") or stats.get("bands")
        if names is not None:
            names = [str(b) for b in names]
            missing = [b for b in bands if b not in names]
            if missing:
                raise UnknownBandError(f"{where} has no statistics for bands {missing}; it has "
                                       f"them for {names}. Select bands it covers.")
            mean = [mean[names.index(b)] for b in bands]
            std = [std[names.index(b)] for b in bands]
    elif isinstance(stats, Sequence) and len(stats) == 2:
        mean, std = list(stats[0]), list(stats[1])
    else:
        raise DatasetSelectionError(
            f"stats must be None, a patch-set store, a mapping with band_mean/band_std or a "
            f"(mean, std) pair; got {type(stats).__name__}."
        )
    if len(mean) != len(bands) or len(std) != len(bands):
        raise DatasetSelectionError(f"stats give {len(mean)} means and {len(std)} stds for "
                                    f"{len(bands)} bands {bands}; give one of each per band.")
    return _as_stats(mean, std, where)


class CubeWindowDataset(_WindowDataset):
    """Windows read straight from a cube store (:func:`lames_cube.io.write_cube`), one table
    row per item, without writing patches first.

    Each item reads only the Zarr chunks its window overlaps; pixels of windows that reach past
    the grid (``edge="pad"``) are the cube's ``nodata`` (0) and label 0.

    Parameters
    ----------
    cube_store
        A complete store holding ``(band, y, x)`` or ``(time, band, y, x)`` reflectance.
    table
        Windows on the store's grid (:func:`lames_cube.patches.patch_table` of
        ``io.open_cube(store)``, or a sampler).
    labels
        ``(y, x)`` integer labels on the same grid (None: all-0 masks).
    bands
        Band names to read, in this order (default: all).
    stats
        Standardisation: None (raw values as float32), a patch-set store (its training
        statistics, matched by band name), a mapping with ``band_mean``/``band_std`` (e.g. a
        patch set's attrs), or a ``(mean, std)`` pair of per-band sequences for ``bands``.
    augment, jitter, seed
        As :class:`PatchDataset`; the key of an item is its row position in the table.
    time
        With a ``(time, band, y, x)`` store: the time step, by position (int) or label
        (``"2022-03-01"``, ``numpy.datetime64``); may be omitted when there is one.
    variable
        The store's variable (default: its only one, or ``reflectance``).

    Raises
    ------
    lames_cube.errors.InvalidGridError
        A table or labels not on the store's grid.
    lames_cube.errors.UnknownBandError
        A band the store does not hold.
    DatasetSelectionError
        A missing or unknown ``time``, dims the dataset cannot read, or bad ``stats``.

    Examples
    --------
    >>> import tempfile
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from lames_cube.io import write_cube
    >>> from lames_cube.patches import patch_table
    >>> g = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719",
    ...                      resolution=10)
    >>> cube = (xr_zeros(g, dtype="uint16") + 4).expand_dims(band=["B04"]).rename("reflectance")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = write_cube(cube, f"{tmp}/c.zarr", patch_size=32)
    ...     data = CubeWindowDataset(store, patch_table(g, size=32), stats=([2.0], [2.0]))
    ...     image, mask = data[3]
    >>> len(data), tuple(image.shape), float(image.mean()), int(mask.sum())
    (4, (1, 32, 32), 1.0, 0)
    """

    def __init__(self, cube_store: str | os.PathLike[str], table: Any, *, labels: Any = None,
                 bands: Sequence[str] | None = None, stats: Any = None, augment: bool = False,
                 jitter: Any = None, seed: int = 0, time: Any = None,
                 variable: str | None = None) -> None:
        ds = io.open_store(cube_store)
        path = io.store_path(cube_store)
        names = [str(n) for n in ds.data_vars]
        if variable is None:
            variable = names[0] if len(names) == 1 else "reflectance" if "reflectance" in names \
                else None
            if variable is None:
                raise DatasetSelectionError(f"the store {str(path)!r} holds {names}; pass "
                                            f"variable= one of them.")
        elif variable not in names:
            raise DatasetSelectionError(f"the store {str(path)!r} has no variable {variable!r}; "
                                        f"it has {names}.")
        cube = ds[variable]
        spatial = tuple(str(d) for d in cube.odc.spatial_dims)
        dims = tuple(str(d) for d in cube.dims)
        if dims not in (("band", *spatial), ("time", "band", *spatial)):
            raise DatasetSelectionError(
                f"the store's variable {variable!r} has dims {list(dims)}; CubeWindowDataset "
                f"reads (band, y, x) or (time, band, y, x) cubes."
            )
        gbox = cube.odc.geobox
        self.rows, self.cols, self.size = check_table(table, gbox)
        available = [str(b) for b in cube.band.values]
        self.bands, band_index = _band_index(bands, available, f"the store {str(path)!r}")
        step = np.diff(band_index)
        self._band_sel: Any = (slice(int(band_index[0]), int(band_index[-1]) + 1)
                               if band_index.size == 1 or (step == 1).all() else band_index)
        self._lead: tuple[int, ...] = ()
        self.time = None
        if "time" in dims:
            times = cube.time.values
            if time is None:
                if times.size != 1:
                    raise DatasetSelectionError(
                        f"the store {str(path)!r} holds {times.size} time steps; pass time= a "
                        f"position (0..{times.size - 1}) or a label (e.g. "
                        f"{str(times[0])[:10]!r})."
                    )
                t = 0
            elif isinstance(time, int | np.integer) and not isinstance(time, bool):
                if not -times.size <= time < times.size:
                    raise DatasetSelectionError(f"time={time} is out of range for the store's "
                                                f"{times.size} time steps.")
                t = int(time) % times.size
            else:
                try:
                    t = int(np.flatnonzero(times == np.datetime64(time, "ns"))[0])
                except (ValueError, TypeError, IndexError):
                    raise DatasetSelectionError(
                        f"time={time!r} is not a time of the store {str(path)!r}; its times are "
                        f"{[str(v)[:19] for v in times[:5]]}{' ...' if times.size > 5 else ''}."
                    ) from None
            self._lead, self.time = (t,), times[t]
        elif time is not None:
            raise DatasetSelectionError(f"time={time!r} given but the store {str(path)!r} has no "
                                        f"time dim; drop time=.")
        self.labels = None
        if labels is not None:
            if not isinstance(labels, xr.DataArray) or labels.ndim != 2:
                raise DatasetSelectionError("labels must be a (y, x) DataArray on the store's "
                                            "grid (lames_cube.rasterize(gdf, like=cube)).")
            if geobox_of(labels, "labels") != gbox:
                raise InvalidGridError(
                    "the labels are not on the store's grid; rasterize them with like="
                    "io.open_cube(store) (lames_cube.rasterize(gdf, like=cube))."
                )
            self.labels = labels.data
        self.fill = cube.attrs.get("nodata", 0) or 0
        self.dtype = cube.dtype
        self.shape = tuple(int(v) for v in gbox.shape)
        self.mean, self.std = _stats(stats, self.bands)
        self.array_path = f"{path}/{variable}"
        self.augment, self.seed, self.epoch = bool(augment), check_seed(seed), 0
        self.jitter = parse_jitter(jitter)
        check_jitter_input(self.jitter, self.bands, self.dtype, self.fill,
                           f"the cube store {self.array_path!r}")
        self._handles: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(self.rows.size)

    def _array(self) -> Any:
        if self._handles is None or self._pid != os.getpid():
            self._handles, self._pid = zarr.open_array(self.array_path, mode="r",
                                                       zarr_format=3), os.getpid()
        return self._handles

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = _index(i, len(self))
        r, c, s = int(self.rows[i]), int(self.cols[i]), self.size
        (height, width), nb = self.shape, len(self.bands)
        r0, r1, c0, c1 = max(r, 0), min(r + s, height), max(c, 0), min(c + s, width)
        inside = r0 == r and c0 == c and r1 == r + s and c1 == c + s
        image = None if inside else np.full((nb, s, s), self.fill, self.dtype)
        mask = np.zeros((s, s), np.int64)
        if r1 > r0 and c1 > c0:
            sel = (*self._lead, self._band_sel, slice(r0, r1), slice(c0, c1))
            arr = self._array()
            part = arr.get_orthogonal_selection(sel) if isinstance(self._band_sel, np.ndarray) \
                else arr[sel]
            if image is None:
                image = np.asarray(part)
            else:
                image[:, r0 - r:r1 - r, c0 - c:c1 - c] = part
            if self.labels is not None:
                mask[r0 - r:r1 - r, c0 - c:c1 - c] = np.asarray(self.labels[r0:r1, c0:c1])
        assert image is not None
        return self._item(image, mask, i)
