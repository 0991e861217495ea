"""Training: the LAMES protocol on patch sets, without the defects of the original code.

:func:`train` fits a segmentation model (:mod:`lames_cube.ml.models`) on the training split of
a patch set (plus extra no-mine sets), selects the epoch on the validation split only, and
writes one checkpoint (:mod:`lames_cube.ml.checkpoint`). The protocol (DESIGN.md §5):

- cross-entropy with class weights from the training split by the LAMES rule
  (:func:`lames_class_weights`: ``w_c = freq_0 / freq_c``, divided by the largest), or given;
- Adam (lr 1e-3, weight decay 1e-5) under torch's own ``CyclicLR(mode="triangular2")``
  between 1e-4 and 1e-3, 2000 steps up and 2000 down, stepped once per training batch and
  never by validation (:func:`make_scheduler`);
- inputs standardised per band with the site set's training statistics (also for the extra
  sets), the values stored in the checkpoint;
- one dihedral transform per patch, applied to image and mask together;
- validation after every epoch in eval mode under ``no_grad``; the checkpoint keeps the
  epoch with the best validation macro F1 (from one confusion matrix over all validation
  pixels); ``patience`` stops early; the test split is never opened;
- seed 1117; on the CPU the run is deterministic (``torch.use_deterministic_algorithms``, a
  fixed thread count, seeded shuffling and augmentation): the same seed gives the same
  checkpoint tensors.

Examples
--------
>>> lames_class_weights([900, 100]).tolist()  # freq_0/freq_c = [1, 9], divided by 9
[0.1111111111111111, 1.0]
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import ConcatDataset, DataLoader
from tqdm.auto import tqdm

from lames_cube import io
from lames_cube._atomic import check_writable
from lames_cube._checks import check_seed
from lames_cube.classes import BINARY_CLASSES, SECTOR_CLASSES
from lames_cube.errors import (
    BandMismatchError,
    CheckpointError,
    ClassWeightsError,
    NoPositivePixelsError,
    TrainingConfigError,
)
from lames_cube.metrics import scores
from lames_cube.ml.checkpoint import load_checkpoint, save_checkpoint
from lames_cube.ml.data import PatchDataset
from lames_cube.ml.jitter import JitterError, parse_jitter
from lames_cube.ml.models import build_model, check_patch_size, model_spec
from lames_cube.patchset import open_patch_set

__all__ = ["DEFAULT_SEED", "check_settings", "class_counts", "deterministic",
           "lames_class_weights", "make_scheduler", "require_every_class", "resolve_device",
           "task_classes", "train"]

#: The LAMES seed.
DEFAULT_SEED = 1117
TASKS = ("site", "sector")


def task_classes(task: str) -> list[str]:
    """Class names of a task, index = class value: site detection (binary) or the 8 sector
    classes of DESIGN.md §5.

    Examples
    --------
    >>> task_classes("site"), len(task_classes("sector"))
    (['no mine', 'mine site'], 8)
    """

    if task == "site":
        return list(BINARY_CLASSES)
    if task == "sector":
        return [c.code for c in SECTOR_CLASSES]
    raise TrainingConfigError(f"task={task!r} is not one of {list(TASKS)}.")


def _selected(store: Any, split: str | Sequence[str] | None) -> np.ndarray:
    ds = open_patch_set(store)
    n = ds.sizes["sample"]
    if split is None:
        return np.arange(n)
    have = np.asarray(ds.coords["split"].values).astype(str)
    return np.flatnonzero(np.isin(have, [split] if isinstance(split, str) else list(split)))


def class_counts(stores: Any, n_classes: int, *, split: str | Sequence[str] | None = "train",
                 block: int = 256) -> np.ndarray:
    """Pixels per class in the masks of the samples of ``split`` of one or more patch sets
    (read in blocks of ``block`` samples; other splits are never read).

    Raises
    ------
    ClassWeightsError
        A mask value outside ``0..n_classes-1``.
    """


    counts = np.zeros(n_classes, np.int64)
    for store in [stores] if isinstance(stores, str | os.PathLike) else list(stores):
        index = _selected(store, split)
        masks = zarr.open_group(str(io.store_path(store)), mode="r", zarr_format=3)["mask"]
        for start in range(0, index.size, block):
            part = np.asarray(masks.get_orthogonal_selection((index[start:start + block],)))
            c = np.bincount(part.ravel(), minlength=n_classes)
            if c.size > n_classes:
                raise ClassWeightsError(f"the masks of {str(store)!r} hold the value "
                                        f"{int(np.flatnonzero(c)[-1])}, outside the task's "
                                        f"classes 0..{n_classes - 1}; check task=.")
            counts += c
    return counts


def require_every_class(counts: Sequence[float], *, classes: Sequence[str] | None = None,
                        where: str = "the training split",
                        fix: str = "add windows with those classes to the training split, or "
                                   "pass class_weights= explicitly (one positive number per "
                                   "class)") -> None:
    """Raise :class:`~lames_cube.errors.NoPositivePixelsError` when a class has no pixel.

    Examples
    --------
    >>> require_every_class([10, 0], classes=["no mine", "mine site"], fix="add mines")
    Traceback (most recent call last):
    ...
    lames_cube.errors.NoPositivePixelsError: the training split has no pixel of class(es) ['mine site'] (pixels per class {'no mine': 10, 'mine site': 0}); add mines.
    """
    counts = np.asarray(counts, np.float64)
    names = list(classes) if classes is not None else [str(i) for i in range(counts.size)]
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        per = dict(zip(names, [round(c) for c in counts], strict=True))
        raise NoPositivePixelsError(f"{where} has no pixel of class(es) {empty} (pixels per "
                                    f"class {per}); {fix}.")


def lames_class_weights(counts: Sequence[float], *, classes: Sequence[str] | None = None,
                        where: str = "the training split") -> np.ndarray:
    """Class weights by the LAMES rule: ``w_c = freq_0 / freq_c``, divided by the largest.

    Raises
    ------
    NoPositivePixelsError
        A class with no pixel (its weight would be infinite); the message says how to fix it.
    """
    counts = np.asarray(counts, np.float64)
    require_every_class(counts, classes=classes, where=where,
                        fix="the LAMES weight freq_0/freq_c is undefined; add windows with "
                            "those classes to the training split, or pass class_weights= "
                            "explicitly (one positive number per class)")
    w = counts[0] / counts
    return w / w.max()


def _check_weights(weights: Any, n_classes: int, classes: Sequence[str]) -> np.ndarray:
    try:
        w = np.asarray(weights, np.float64)
    except (TypeError, ValueError):
        w = np.array([np.nan])
    if w.ndim != 1 or w.size != n_classes or not np.isfinite(w).all() or (w <= 0).any():
        raise ClassWeightsError(
            f"class_weights={weights!r} must "
            f"be {n_classes} positive numbers, one per class {list(classes)}; or pass "
            f"class_weights='lames' for the LAMES rule on the training split."
        )
    return w


def make_scheduler(optimizer: torch.optim.Optimizer, *, base_lr: float = 1e-4,
                   max_lr: float = 1e-3, step_size: int = 2000) -> torch.optim.lr_scheduler.LRScheduler:
    """torch's ``CyclicLR`` in ``triangular2`` mode (the LAMES schedule): from ``base_lr`` up
    to ``max_lr`` in ``step_size`` steps and down in as many, the peak halved every cycle.
    Step it once per training batch. Adam has no momentum to cycle (``cycle_momentum`` off).

    Examples
    --------
    >>> opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    >>> sched = make_scheduler(opt, step_size=2)
    >>> lrs = []
    >>> for _ in range(6):
    ...     lrs.append(round(sched.get_last_lr()[0], 6)); opt.step(); sched.step()
    >>> lrs
    [0.0001, 0.00055, 0.001, 0.00055, 0.0001, 0.000325]
    """
    if not 0 < base_lr <= max_lr:
        raise TrainingConfigError(f"the learning-rate range ({base_lr}, {max_lr}) must have "
                                  f"0 < base_lr <= max_lr, e.g. (1e-4, 1e-3).")
    if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
        raise TrainingConfigError(f"step_size={step_size!r} must be an integer >= 1 (LAMES: "
                                  f"2000 steps up and 2000 down).")
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=base_lr, max_lr=max_lr, step_size_up=step_size,
        step_size_down=step_size, mode="triangular2", cycle_momentum=False)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU; or a torch device name.

    Raises
    ------
    TrainingConfigError
        A device name torch does not know, or CUDA asked for where there is none.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise TrainingConfigError(f"device={device!r} is not a torch device ({err}); use "
                                  f"'auto', 'cpu' or 'cuda'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingConfigError(f"device={device!r} but torch sees no CUDA device here; use "
                                  f"device='auto' or 'cpu'.")
    return dev


@contextlib.contextmanager
def deterministic(device: torch.device, threads: int | None) -> Iterator[None]:
    """A block of reproducible torch computation (training, evaluation).

    On the CPU: deterministic kernels and a fixed thread count; the caller's RNG state,
    kernel mode and thread count are restored afterwards. On CUDA only the RNG is forked:
    deterministic mode would refuse ``nll_loss2d`` there (and mixed precision is not bitwise
    reproducible anyway).

    Parameters
    ----------
    device
        The device the block computes on (:func:`resolve_device`).
    threads
        CPU threads for the block (None: torch's current setting).

    Examples
    --------
    >>> before = torch.get_num_threads()
    >>> with deterministic(torch.device("cpu"), 1):
    ...     torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    (True, 1)
    >>> torch.get_num_threads() == before
    True
    """
    was_det = torch.are_deterministic_algorithms_enabled()
    was_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
            if threads is not None:
                torch.set_num_threads(int(threads))
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_det)
            torch.set_num_threads(was_threads)


def _grid_info(ds_attrs: Mapping[str, Any]) -> tuple[str | None, float | None, list[float]]:
    """The CRS(s), the median pixel size and its range over the set's source grids (site
    boxes in EPSG:3857 have pixel sizes of 10 m / cos(latitude) that differ by site)."""
    grids = ds_attrs.get("grids") or []
    crs = sorted({str(g.get("crs")) for g in grids if g.get("crs")})
    res = [abs(float(g["affine"][0])) for g in grids if g.get("affine")]
    if not res:
        return (", ".join(crs) if crs else None), None, []
    return (", ".join(crs) if crs else None), float(np.median(res)), [min(res), max(res)]


def _confusion(pred: torch.Tensor, truth: torch.Tensor, k: int) -> np.ndarray:
    index = (truth.reshape(-1).to(torch.int64) * k + pred.reshape(-1).to(torch.int64)).cpu()
    return torch.bincount(index, minlength=k * k).numpy().reshape(k, k)


def check_settings(**settings: Any) -> list[str]:
    """The problems of training settings (an empty list when they can work); the keys are
    :func:`train`'s keyword arguments. Recipes call it before anything runs.

    Examples
    --------
    >>> check_settings(epochs=0, batch_size=8, lr_range=(1e-3, 1e-4))
    ['epochs=0 must be an integer >= 1', 'lr_range=(0.001, 0.0001) must be (base, max) with 0 < base <= max']
    """
    problems = []
    for name, low in (("epochs", 1), ("batch_size", 1), ("num_workers", 0), ("step_size", 1)):
        value = settings.get(name, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problems.append(f"{name}={value!r} must be an integer >= {low}")
    for name in ("patience", "extra_per_epoch", "threads"):
        value = settings.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            problems.append(f"{name}={value!r} must be null/None or an integer >= 1")
    for name, low in (("lr", 0.0), ("weight_decay", None)):
        value = settings.get(name, 1e-3 if name == "lr" else 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                value > low if low is not None else value >= 0):
            problems.append(f"{name}={value!r} must be a number {'> 0' if low is not None else '>= 0'}")
    lr_range = settings.get("lr_range", (1e-4, 1e-3))
    try:
        base, peak = (float(v) for v in lr_range)
        ok = 0 < base <= peak
    except (TypeError, ValueError):
        ok = False
    if not ok:
        problems.append(f"lr_range={lr_range!r} must be (base, max) with 0 < base <= max")
    if "seed" in settings:
        try:
            check_seed(settings["seed"])
        except ValueError as err:
            problems.append(str(err).rstrip("."))
    if "jitter" in settings:
        try:
            parse_jitter(settings["jitter"])
        except JitterError as err:
            problems.append(str(err).rstrip("."))
    return problems


def _check_start_weights(weights: Any, bands: Sequence[str], classes: Sequence[str]) -> None:
    """A lames_cube checkpoint to start from must have the run's bands and classes, in order."""

    try:
        meta = load_checkpoint(weights)
    except CheckpointError:
        return  # a plain state_dict: build_model checks that its tensors fit
    if list(meta["bands"]) != list(bands) or list(meta["classes"]) != list(classes):
        raise BandMismatchError(
            f"weights={str(weights)!r} was trained on bands {meta['bands']} and classes "
            f"{meta['classes']}; this run has bands {list(bands)} and classes {list(classes)} "
            f"(the same, in the same order, are needed); pass bands={meta['bands']}."
        )


class _EpochSampler(torch.utils.data.Sampler[int]):
    """Each epoch: all ``n_main`` samples plus ``per_epoch`` of the ``n_extra`` ones (all when
    None), shuffled; a pure function of ``(seed, epoch)``."""

    def __init__(self, n_main: int, n_extra: int, per_epoch: int | None, seed: int) -> None:
        self.n_main, self.n_extra, self.seed, self.epoch = n_main, n_extra, seed, 0
        self.per_epoch = n_extra if per_epoch is None else min(per_epoch, n_extra)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_main + self.per_epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        extra = self.n_main + rng.permutation(self.n_extra)[:self.per_epoch]
        order = np.concatenate([np.arange(self.n_main), extra])
        return iter(rng.permutation(order).tolist())


def validate(model: torch.nn.Module, loader: DataLoader, *, n_classes: int,
             loss_fn: torch.nn.Module, device: torch.device) -> dict[str, float]:
    """Validation loss (the training loss over all validation pixels at once: the weighted
    sum divided by the sum of the pixels' class weights) and the LAMES scores of one
    confusion matrix over all pixels, in eval mode under ``no_grad``; the model's mode is
    restored."""

    was_training = model.training
    model.eval()
    cm = np.zeros((n_classes, n_classes), np.int64)
    weight = loss_fn.weight
    summed = torch.nn.CrossEntropyLoss(weight=weight, reduction="sum")
    total, norm = 0.0, 0.0
    with torch.no_grad():
        for image, mask in loader:
            image, mask = image.to(device), mask.to(device)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                logits = model(image)
            total += float(summed(logits.float(), mask))
            norm += float(weight[mask].sum()) if weight is not None else mask.numel()
            cm += _confusion(logits.argmax(1), mask, n_classes)
    model.train(was_training)
    s = scores(cm)
    return {"val_loss": total / norm, "val_macro_f1": s["macro_f1"],
            "val_micro_accuracy": s["micro_accuracy"], "val_mean_iou": s["mean_iou"]}


def train(patches: str | os.PathLike[str], output: str | os.PathLike[str], *,
          extra: Sequence[str | os.PathLike[str]] = (), task: str = "site",
          bands: Sequence[str] | None = None, model: Any = "small",
          epochs: int = 100, batch_size: int = 64, lr: float = 1e-3,
          weight_decay: float = 1e-5, lr_range: tuple[float, float] = (1e-4, 1e-3),
          step_size: int = 2000, class_weights: str | Sequence[float] = "lames",
          seed: int = DEFAULT_SEED, augment: bool = True, jitter: Any = True,
          patience: int | None = None,
          extra_per_epoch: int | None = None, device: str = "auto",
          threads: int | None = None, num_workers: int = 0,
          weights: str | os.PathLike[str] | None = None,
          train_split: str = "train", validation_split: str = "validation",
          run_settings: Mapping[str, Any] | None = None, progress: bool = True) -> Path:
    """Train a segmentation model on a patch set and write its checkpoint.

    Parameters
    ----------
    patches
        The site patch set (:func:`lames_cube.patchset.write_patch_set`, e.g. ``sites.zarr``
        of ``lames-cube patches build``): its ``train_split`` samples are trained on, its
        ``validation_split`` samples select the epoch, its training statistics standardise
        every input. Its ``test`` samples are never read.
    output
        The checkpoint file to write (e.g. ``run/checkpoint.pt``).
    extra
        More patch sets whose samples of ``train_split`` join the training data (the extra
        no-mine windows: ``blind.zarr``, ``checked.zarr``), standardised with ``patches``'
        statistics.
    task
        ``"site"`` (binary) or ``"sector"`` (8 classes): the class names and count.
    bands
        Input bands in order (default: every band of ``patches``).
    model
        A preset (``"small"``, ``"lames"``), a mapping or a
        :class:`~lames_cube.ml.models.ModelSpec`; ``in_channels`` and ``classes`` follow the
        bands and task.
    epochs, batch_size
        Passes over the training data (see ``extra_per_epoch``) and
        patches per step.
    lr, weight_decay
        Adam's settings (the schedule sets the learning rate from the first step).
    lr_range, step_size
        The triangular2 cycle: (base, max) learning rate and steps up (= steps down).
    class_weights
        ``"lames"`` (the LAMES rule on the training split, :func:`lames_class_weights`) or
        one positive number per class.
    seed
        Seeds the weights, shuffling and augmentation.
    augment
        One of the 8 dihedral transforms per patch, image and mask together.
    jitter
        Radiometric jitter of the training windows (brightness, contrast, per-band gain and
        haze, :mod:`lames_cube.ml.jitter`): True (default: the default spreads), False, a
        mapping of settings or a :class:`~lames_cube.ml.jitter.Jitter`; the settings are
        recorded in the checkpoint (``settings.jitter``).
    patience
        Stop when the validation macro F1 has not improved for this many epochs (None: run
        every epoch).
    extra_per_epoch
        Each epoch, every training sample of ``patches`` plus this many samples of the
        ``extra`` sets, drawn anew each epoch (None: all of them every epoch, the paper's
        plain mix). A CPU budget's way to see many no-mine windows without drowning the few
        site windows (10,000 extra against about 290 site windows in the LAMES experiment).
    device
        ``"auto"`` (CUDA with mixed precision when present, else the CPU), ``"cpu"``,
        ``"cuda"``.
    threads
        CPU threads for torch during the run (default: torch's setting).
    num_workers
        DataLoader worker processes (0: load in the main process).
    weights
        A local weights file to start from (a checkpoint or ``state_dict``).
    train_split, validation_split
        The split values of the training and validation samples.
    run_settings
        Plain values recorded in the checkpoint as ``run_settings`` (an experiment's
        settings: a rerun with the same ones reuses the checkpoint).
    progress
        A progress bar per epoch (loss) and one line per epoch (validation scores).

    Returns
    -------
    pathlib.Path
        The checkpoint: the weights of the best validation epoch and everything
        :mod:`lames_cube.ml.checkpoint` lists.

    Raises
    ------
    lames_cube.errors.NoPositivePixelsError
        The training split lacks a class (LAMES weights undefined).
    lames_cube.errors.ClassWeightsError
        ``class_weights`` of the wrong length or not positive.
    lames_cube.errors.PatchSizeError
        A patch size the model cannot take.
    lames_cube.errors.TrainingConfigError
        Impossible settings (epochs, batch size, learning rates, device).
    lames_cube.errors.DatasetSelectionError
        A split the patch set does not have (e.g. no validation samples).
    lames_cube.errors.OutputNotWritableError
        The checkpoint's folder cannot be written to (checked before training).

    Examples
    --------
    >>> import tempfile
    >>> from lames_cube.ml.checkpoint import load_checkpoint
    >>> from lames_cube.testing.ml_sets import planted_patch_set
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store, _, _ = planted_patch_set(f"{tmp}/sites.zarr", size=32)
    ...     path = train(store, f"{tmp}/checkpoint.pt", epochs=2, batch_size=4, threads=1,
    ...                  progress=False)
    ...     meta = load_checkpoint(path)
    >>> meta["task"], meta["patch_size"], [e["epoch"] for e in meta["curve"]]
    ('site', 32, [1, 2])
    """


    problems = check_settings(epochs=epochs, batch_size=batch_size, num_workers=num_workers,
                              patience=patience, extra_per_epoch=extra_per_epoch,
                              threads=threads, lr=lr, weight_decay=weight_decay,
                              lr_range=lr_range, step_size=step_size, seed=seed)
    if problems:
        raise TrainingConfigError("training settings that cannot work: " + "; ".join(problems)
                                  + ".")
    check_writable(output, what="checkpoint")  # before hours of training, not after
    classes = task_classes(task)
    n_classes = len(classes)
    dev = resolve_device(device)
    site_attrs = dict(open_patch_set(patches).attrs)
    size = int(site_attrs["size"])
    if site_attrs.get("stats_split") != train_split:
        raise TrainingConfigError(
            f"the statistics of {str(patches)!r} come from {site_attrs.get('stats_from')!r}, "
            f"not from the training split {train_split!r}: standardising with them would use "
            f"pixels the model must not see; rewrite the set with stats_split={train_split!r}."
        )
    jitter_settings = parse_jitter(jitter)
    datasets = [PatchDataset(patches, split=train_split, bands=bands, augment=augment,
                             jitter=jitter_settings, seed=seed)]
    bands = datasets[0].bands
    stats = (datasets[0].mean.ravel().tolist(), datasets[0].std.ravel().tolist())
    datasets += [PatchDataset(e, split=train_split, bands=bands, stats=stats, augment=augment,
                              jitter=jitter_settings, seed=seed) for e in extra]
    val_data = PatchDataset(patches, split=validation_split, bands=bands, augment=False)
    spec = model_spec(model, in_channels=len(bands), classes=n_classes)
    check_patch_size(spec, size)
    train_data = ConcatDataset(datasets)
    n_train = len(train_data)
    if n_train < 2:
        raise TrainingConfigError(f"the {train_split!r} split of {str(patches)!r} holds "
                                  f"{n_train} sample; training needs at least 2 (BatchNorm).")
    sampler = _EpochSampler(len(datasets[0]), n_train - len(datasets[0]), extra_per_epoch,
                            seed)
    # pixels per class as an epoch sees them: every site window, extra windows pro rata
    counts = class_counts(patches, n_classes, split=train_split).astype(np.float64)
    if extra:
        n_extra = n_train - len(datasets[0])
        counts += class_counts(list(extra), n_classes, split=train_split) * (
            sampler.per_epoch / n_extra)
    where = (f"the {train_split!r} split of {str(patches)!r}"
             + (f" and {len(extra)} extra set(s)" if extra else ""))
    require_every_class(counts, classes=classes, where=where)
    require_every_class(class_counts(patches, n_classes, split=validation_split),
                        classes=classes, where=f"the {validation_split!r} split of "
                        f"{str(patches)!r}", fix="model selection scores every class on it: "
                        "pick validation sites that hold every class (patch recipes: "
                        "split.validation, split.seed)")
    if isinstance(class_weights, str):
        if class_weights != "lames":
            raise ClassWeightsError(f"class_weights={class_weights!r}: the only named rule is "
                                    f"'lames'; or pass one positive number per class.")
        weight = lames_class_weights(counts, classes=classes, where=where)
    else:
        weight = _check_weights(class_weights, n_classes, classes)
    if weights is not None:
        _check_start_weights(weights, bands, classes)
    settings = {"task": task, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "lr_range": list(lr_range),
                "step_size": step_size, "augment": augment,
                "jitter": None if jitter_settings is None else jitter_settings.to_dict(),
                "patience": patience,
                "extra_per_epoch": extra_per_epoch, "device": str(dev),
                "threads": threads or torch.get_num_threads(), "num_workers": num_workers,
                "train_split": train_split,
                "validation_split": validation_split, "patches": str(patches),
                "extra": [str(e) for e in extra], "n_train": n_train,
                "n_validation": len(val_data), "train_pixels_per_class": counts.tolist(),
                "weights": None if weights is None else str(weights)}
    start = time.perf_counter()
    with deterministic(dev, threads):
        torch.manual_seed(seed)
        net = build_model(spec, weights=weights).to(dev)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        scheduler = make_scheduler(optimizer, base_lr=lr_range[0], max_lr=lr_range[1],
                                   step_size=step_size)
        loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight, dtype=torch.float32,
                                                                device=dev))
        scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
        loader = DataLoader(train_data, batch_size=batch_size, sampler=sampler,
                            num_workers=num_workers, drop_last=len(sampler) > batch_size,
                            generator=torch.Generator().manual_seed(seed),
                            pin_memory=dev.type == "cuda")
        val_loader = DataLoader(val_data, batch_size=batch_size, num_workers=num_workers)
        curve: list[dict[str, Any]] = []
        best: dict[str, Any] = {"score": -math.inf, "epoch": None, "state": None}
        step = 0
        for epoch in range(epochs):
            for d in datasets:
                d.set_epoch(epoch)
            sampler.set_epoch(epoch)
            net.train()
            total, batches = 0.0, 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                       disable=not progress)
            for image, mask in bar:
                image = image.to(dev, non_blocking=True)
                mask = mask.to(dev, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, enabled=dev.type == "cuda"):
                    loss = loss_fn(net(image).float(), mask)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                total += loss.detach().item()
                batches += 1
                bar.set_postfix(loss=f"{total / batches:.4f}")
            bar.close()
            entry = {"epoch": epoch + 1, "step": step, "train_loss": total / max(batches, 1),
                     "lr": float(scheduler.get_last_lr()[0]),
                     **validate(net, val_loader, n_classes=n_classes, loss_fn=loss_fn,
                                device=dev),
                     "seconds": time.perf_counter() - start}
            improved = entry["val_macro_f1"] > best["score"]
            if improved:
                best = {"score": entry["val_macro_f1"], "epoch": epoch + 1,
                        "state": copy.deepcopy(net.state_dict())}
            curve.append(entry)
            if progress:
                print(f"epoch {epoch + 1}/{epochs}: loss {entry['train_loss']:.4f}, validation "
                      f"loss {entry['val_loss']:.4f}, macro F1 {entry['val_macro_f1']:.3f}"
                      f"{' (best)' if improved else ''}, {entry['seconds']:.0f} s", flush=True)
            if patience is not None and epoch + 1 - best["epoch"] >= patience:
                break
        net.load_state_dict(best["state"])
    for entry in curve:
        entry["best"] = entry["epoch"] == best["epoch"]
    crs, resolution, resolutions = _grid_info(site_attrs)
    return save_checkpoint(
        output, model=net, spec=spec, bands=bands, band_mean=stats[0], band_std=stats[1],
        classes=classes, task=task, patch_size=size, crs=crs, resolution=resolution,
        resolution_range=resolutions, seed=seed,
        curve=curve, class_weights=weight.tolist(), best_epoch=best["epoch"],
        best_val_macro_f1=best["score"], train_seconds=time.perf_counter() - start,
        settings=settings, run_settings=dict(run_settings or {}))
