"""Segmentation models: the LAMES U-Net and a small configuration, built with
segmentation-models-pytorch (the library the LAMES code used; the architecture is not
re-implemented here).

A model is described by a :class:`ModelSpec` (plain values, stored in every checkpoint) and
built by :func:`build_model`. Two presets:

- ``"lames"``: the paper's U-Net with a ResNet-50 encoder (32.5 M parameters for 6 bands and 2
  classes), for GPU runs of the full protocol;
- ``"small"``: a U-Net with timm's MobileNetV3-small encoder, 4 levels and a narrow decoder
  (about 1 M parameters), that trains on this project's CPU budget (tests, the demo, CPU runs).

Weights start at random (nothing is downloaded); ``weights=`` takes a local file: a lames_cube
checkpoint or a plain ``state_dict``.

Examples
--------
>>> import torch
>>> spec = model_spec("small", in_channels=6, classes=2)
>>> model = build_model(spec)
>>> model(torch.zeros(1, 6, 64, 64)).shape
torch.Size([1, 2, 64, 64])
>>> count_parameters(model) > 500_000
True
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lames_cube.errors import ModelConfigError, PatchSizeError
from lames_cube.ml._torchvision import ensure_torchvision
from lames_cube.ml.torch_files import CHECKPOINT_FORMAT, read_torch_file

__all__ = ["PRESETS", "ModelSpec", "build_model", "check_patch_size", "count_parameters",
           "model_spec"]

#: ``unet``: segmentation-models-pytorch U-Net; ``pixel``: a per-pixel network of 1 x 1
#: convolutions (hidden widths ``decoder_channels``), translation-equivariant, no context.
ARCHITECTURES = ("unet", "pixel")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a segmentation model is: enough to build it again from a checkpoint.

    Parameters
    ----------
    arch
        ``"unet"``.
    encoder
        A segmentation-models-pytorch encoder name (``resnet18``, ``resnet34``, ``resnet50``…,
        or a timm encoder as ``tu-<name>``).
    in_channels
        Input bands.
    classes
        Output classes (2 for site detection, 8 for the sector task).
    encoder_depth
        Levels of the encoder (3..5); patches must be multiples of ``2 ** encoder_depth``.
    decoder_channels
        Channels of the decoder blocks, one per level.
    """

    arch: str = "unet"
    encoder: str = "resnet50"
    in_channels: int = 3
    classes: int = 2
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (a checkpoint stores them)."""
        out = dataclasses.asdict(self)
        out["decoder_channels"] = list(self.decoder_channels)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """The spec of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelConfigError(f"unknown model settings {unknown}; the settings are "
                                   f"{sorted(names)}.")
        values = dict(data)
        if "decoder_channels" in values:
            values["decoder_channels"] = tuple(int(c) for c in values["decoder_channels"])
        return cls(**values)

    @property
    def multiple(self) -> int:
        """Patch sides must be multiples of this (the encoder's total stride; 1 for
        ``pixel``)."""
        return 1 if self.arch == "pixel" else 2 ** self.encoder_depth


#: Named configurations (``in_channels`` and ``classes`` are set per task).
PRESETS: dict[str, ModelSpec] = {
    "lames": ModelSpec(encoder="resnet50", encoder_depth=5,
                       decoder_channels=(256, 128, 64, 32, 16)),
    "small": ModelSpec(encoder="tu-mobilenetv3_small_100", encoder_depth=4,
                       decoder_channels=(64, 32, 16, 8)),
}


def model_spec(model: str | ModelSpec | Mapping[str, Any] = "small", **overrides: Any) -> ModelSpec:
    """A :class:`ModelSpec` from a preset name, a mapping of settings (``preset:`` plus
    overrides, as recipes write it; without ``preset`` the overrides apply to ``"small"``) or
    a spec, with keyword overrides.

    Raises
    ------
    ModelConfigError
        An unknown preset or setting, or values out of range.

    Examples
    --------
    >>> model_spec("lames", in_channels=6).encoder, model_spec({"preset": "small", "classes": 8}).classes
    ('resnet50', 8)
    """
    if isinstance(model, ModelSpec):
        spec = model
    elif isinstance(model, str):
        if model not in PRESETS:
            raise ModelConfigError(f"model={model!r} is not a preset; the presets are "
                                   f"{sorted(PRESETS)} (or pass a mapping of settings).")
        spec = PRESETS[model]
    elif isinstance(model, Mapping):
        values = dict(model)
        base = model_spec(values.pop("preset", "small"))
        spec = ModelSpec.from_dict({**base.to_dict(), **values})
    else:
        raise ModelConfigError(f"model must be a preset name, a mapping or a ModelSpec; got "
                               f"{type(model).__name__}.")
    if overrides:
        spec = ModelSpec.from_dict({**spec.to_dict(), **overrides})
    _check_spec(spec)
    return spec


def _check_spec(spec: ModelSpec) -> None:
    problems = []
    if spec.arch not in ARCHITECTURES:
        problems.append(f"arch={spec.arch!r} is not one of {list(ARCHITECTURES)}")
    for name in ("in_channels", "classes"):
        value = getattr(spec, name)
        low = 2 if name == "classes" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problems.append(f"{name}={value!r} must be an integer >= {low}")
    if spec.arch == "pixel":
        if not all(isinstance(c, int) and c >= 1 for c in spec.decoder_channels):
            problems.append(f"decoder_channels={list(spec.decoder_channels)} must be positive "
                            "hidden widths for arch='pixel'")
    elif not isinstance(spec.encoder_depth, int) or not 3 <= spec.encoder_depth <= 5:
        problems.append(f"encoder_depth={spec.encoder_depth!r} must be 3, 4 or 5")
    elif len(spec.decoder_channels) != spec.encoder_depth:
        problems.append(f"decoder_channels={list(spec.decoder_channels)} must give one value "
                        f"per encoder level ({spec.encoder_depth})")
    if problems:
        raise ModelConfigError("the model settings cannot work: " + "; ".join(problems) + ".")


def check_patch_size(spec: ModelSpec, size: int) -> int:
    """Check that the model takes square patches of ``size`` px.

    Raises
    ------
    PatchSizeError
        ``size`` is not a positive multiple of ``2 ** encoder_depth`` (the message gives the
        nearest sizes that work).

    Examples
    --------
    >>> check_patch_size(PRESETS["small"], 256)
    256
    """
    m = spec.multiple
    if isinstance(size, bool) or not isinstance(size, int) or size < m or size % m:
        below = max(m, (int(size) // m) * m) if isinstance(size, int | float) else m
        raise PatchSizeError(
            f"patch size {size!r} px does not fit the {spec.encoder} U-Net: its "
            f"{spec.encoder_depth} levels halve the patch {spec.encoder_depth} times, and "
            f"lames_cube takes only sides that are multiples of {m}, so that every skip "
            f"connection lines up with its decoder level without padding or cropping; use "
            f"{below} or {below + m} px (patch recipes: size:), or another encoder_depth."
        )
    return size


def build_model(spec: str | ModelSpec | Mapping[str, Any] = "small", *,
                weights: str | os.PathLike[str] | None = None, **overrides: Any) -> torch.nn.Module:
    """Build a segmentation model with random weights (or a local weights file).

    Parameters
    ----------
    spec
        A preset name (``"small"``, ``"lames"``), a mapping or a :class:`ModelSpec`.
    weights
        A local file: a lames_cube checkpoint or a ``state_dict`` saved with ``torch.save``
        (loaded with ``weights_only=True``). Nothing is downloaded.
    **overrides
        Settings of :class:`ModelSpec` (``in_channels=6, classes=8``…).

    Returns
    -------
    torch.nn.Module
        The model in training mode, on the CPU.

    Raises
    ------
    ModelConfigError
        Unknown settings or encoder, or a weights file that does not fit the model.
    """
    spec = model_spec(spec, **overrides)
    if spec.arch == "pixel":
        model = _pixel_model(spec)
        return load_weights(model, weights) if weights is not None else model
    ensure_torchvision()
    import segmentation_models_pytorch as smp  # local: optional torch

    try:
        model = smp.Unet(encoder_name=spec.encoder, encoder_weights=None,
                         encoder_depth=spec.encoder_depth,
                         decoder_channels=tuple(spec.decoder_channels),
                         in_channels=spec.in_channels, classes=spec.classes)
    except (KeyError, ValueError, RuntimeError) as err:
        raise ModelConfigError(
            f"segmentation-models-pytorch cannot build a U-Net with encoder={spec.encoder!r} "
            f"and depth {spec.encoder_depth} ({err}); pick an encoder it lists, e.g. "
            f"'resnet18', 'resnet34', 'resnet50' or 'tu-mobilenetv3_small_100'."
        ) from None
    if weights is not None:
        load_weights(model, weights)
    return model


def _pixel_model(spec: ModelSpec) -> torch.nn.Module:
    """A per-pixel network: 1 x 1 convolutions through ``decoder_channels`` with ReLU."""
    layers: list[torch.nn.Module] = []
    width = spec.in_channels
    for hidden in spec.decoder_channels:
        layers += [torch.nn.Conv2d(width, hidden, 1), torch.nn.ReLU()]
        width = hidden
    layers.append(torch.nn.Conv2d(width, spec.classes, 1))
    return torch.nn.Sequential(*layers)


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> torch.nn.Module:
    """Load a local weights file (a lames_cube checkpoint or a ``state_dict``) into ``model``.

    Raises
    ------
    ModelConfigError
        The file is missing or unreadable, or its tensors do not fit the model.
    """
    path = Path(path)
    data = read_torch_file(path, ModelConfigError, "the weights file",
                           "pass a local checkpoint or state_dict (nothing is downloaded)")
    state = data.get("state_dict") if isinstance(data, Mapping) and \
        data.get("format") == CHECKPOINT_FORMAT else data
    if not isinstance(state, Mapping):
        raise ModelConfigError(f"weights={str(path)!r} holds a {type(state).__name__}, not a "
                               f"state_dict or a lames_cube checkpoint.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[:3]
        raise ModelConfigError(f"the weights in {str(path)!r} do not fit this model ("
                               f"{' '.join(first)}); build the model with the spec they were "
                               f"trained with (a checkpoint records it).") from None
    return model


def count_parameters(model: torch.nn.Module, *, trainable: bool = False) -> int:
    """Number of parameters (only those that require gradients with ``trainable=True``)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable))
