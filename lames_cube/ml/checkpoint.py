"""Checkpoints: the weights with everything needed to use them again.

A checkpoint is one file written by ``torch.save`` (atomically) that holds only tensors and
plain values, so it loads with ``torch.load(path, weights_only=True)``: no pickled code runs.
Besides the ``state_dict`` it records the model spec, the bands in input order and their
standardisation (training statistics), the class names, the task, the patch size, the grid's
CRS and resolution, the seed, the lames_cube version, the training curve, the class weights
used and the training settings.

Examples
--------
>>> import tempfile
>>> from lames_cube.ml.models import build_model, model_spec
>>> spec = model_spec("small", in_channels=1)
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = save_checkpoint(f"{tmp}/m.pt", model=build_model(spec), spec=spec, bands=["B04"],
...                            band_mean=[1000.0], band_std=[300.0], classes=["other", "mine"],
...                            task="site", patch_size=256, crs="EPSG:32719", resolution=10.0,
...                            seed=1117, curve=[], class_weights=[0.01, 1.0])
...     meta = load_checkpoint(path)
>>> meta["bands"], meta["model"]["encoder"], meta["class_weights"]
(['B04'], 'tu-mobilenetv3_small_100', [0.01, 1.0])
"""

from __future__ import annotations

import io as _io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lames_cube import __version__
from lames_cube._atomic import atomic_write_bytes
from lames_cube.errors import BandMismatchError, CheckpointError
from lames_cube.ml.models import build_model
from lames_cube.ml.torch_files import CHECKPOINT_FORMAT, read_torch_file

__all__ = ["CHECKPOINT_FORMAT", "check_bands", "load_checkpoint", "load_model",
           "save_checkpoint"]

CHECKPOINT_VERSION = 1
_REQUIRED = ("state_dict", "model", "bands", "band_mean", "band_std", "classes", "task",
             "patch_size", "crs", "resolution", "seed", "lames_cube_version", "curve",
             "class_weights")


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays, tuples and paths as the plain types weights_only accepts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def save_checkpoint(path: str | os.PathLike[str], *, model: torch.nn.Module, spec: Any,
                    bands: Sequence[str], band_mean: Sequence[float], band_std: Sequence[float],
                    classes: Sequence[str], task: str, patch_size: int, crs: str | None,
                    resolution: float | None, seed: int, curve: Sequence[Mapping[str, Any]],
                    class_weights: Sequence[float], **extra: Any) -> Path:
    """Write a checkpoint atomically (a crash leaves the previous file or none).

    Parameters
    ----------
    path
        The file (``.pt``); its folder is created.
    model
        The model whose ``state_dict`` is saved (moved to the CPU).
    spec
        Its :class:`~lames_cube.ml.models.ModelSpec`.
    bands, band_mean, band_std
        Input bands in order and the standardisation applied to them.
    classes
        Class names, index = class value.
    task, patch_size, crs, resolution, seed, curve, class_weights
        As recorded by :func:`lames_cube.ml.train`.
    **extra
        More plain values (training settings, selected epoch, timings).

    Returns
    -------
    pathlib.Path
    """

    bands = [str(b) for b in bands]
    for name, values in (("band_mean", band_mean), ("band_std", band_std)):
        if len(values) != len(bands):
            raise CheckpointError(f"{name} has {len(values)} values for {len(bands)} bands "
                                  f"{bands}; give one per band.")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    data = {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
        "state_dict": state, "model": spec.to_dict(), "bands": bands,
        "band_mean": [float(v) for v in band_mean], "band_std": [float(v) for v in band_std],
        "classes": [str(c) for c in classes], "task": str(task), "patch_size": int(patch_size),
        "crs": None if crs is None else str(crs),
        "resolution": None if resolution is None else float(resolution), "seed": int(seed),
        "lames_cube_version": __version__, "curve": _plain(list(curve)),
        "class_weights": [float(w) for w in class_weights],
        **{k: _plain(v) for k, v in extra.items()},
    }
    buffer = _io.BytesIO()
    torch.save(data, buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` (no code is unpickled).

    Raises
    ------
    CheckpointError
        The file is missing, corrupt or truncated, or not a lames_cube checkpoint (the message
        says which and how to make one).
    """
    path = Path(path)
    data = read_torch_file(path, CheckpointError, "checkpoint",
                           "pass the checkpoint.pt that lames_cube.ml.train (lames-cube train) "
                           "wrote, or train again")
    if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is a torch file but not a lames_cube checkpoint "
                              f"(no format={CHECKPOINT_FORMAT!r}); for bare weights use "
                              f"build_model(..., weights=path).")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {missing}; it was not written by "
                              f"save_checkpoint of this version.")
    return dict(data)


def load_model(checkpoint: str | os.PathLike[str] | Mapping[str, Any], *,
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a checkpoint in eval mode on ``device``, and the checkpoint's values."""

    meta = dict(checkpoint) if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint)
    model = build_model(meta["model"])
    model.load_state_dict(meta["state_dict"], strict=True)
    return model.to(device).eval(), meta


def check_bands(meta: Mapping[str, Any], available: Sequence[str], where: str) -> list[str]:
    """The checkpoint's bands, checked against the bands of the data.

    Raises
    ------
    BandMismatchError
        A band the model needs is not in ``available`` (the message lists both).
    """
    need = [str(b) for b in meta["bands"]]
    have = [str(b) for b in available]
    missing = [b for b in need if b not in have]
    if missing:
        raise BandMismatchError(
            f"the model was trained on bands {need}, but {where} has {have} (missing "
            f"{missing}); use data with those bands, or train a model on {have}."
        )
    return need
