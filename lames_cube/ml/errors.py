"""The errors of :mod:`lames_cube.ml`: each a :class:`~lames_cube.errors.LamesCubeError` and the
matching builtin, with a message that gives the value and the fix."""

from __future__ import annotations

from lames_cube.errors import LamesCubeError

__all__ = ["BandMismatchError", "CheckpointError", "ClassWeightsError", "ModelConfigError",
           "NoPositivePixelsError", "PatchSizeError", "TrainingConfigError"]


class ModelConfigError(LamesCubeError, ValueError):
    """A model specification that cannot be built (unknown architecture or encoder, bad
    channel or class counts, an unreadable weights file)."""


class PatchSizeError(LamesCubeError, ValueError):
    """A patch size the model cannot take (its encoder halves it ``depth`` times)."""


class CheckpointError(LamesCubeError, ValueError):
    """A checkpoint file that is missing, corrupt, or not a lames_cube checkpoint."""


class BandMismatchError(LamesCubeError, ValueError):
    """Data whose bands differ from the bands a model was trained on."""


class ClassWeightsError(LamesCubeError, ValueError):
    """Class weights of the wrong length or with values that are not positive numbers."""


class NoPositivePixelsError(LamesCubeError, ValueError):
    """A split in which a class never occurs, so its LAMES weight or its scores are undefined."""


class TrainingConfigError(LamesCubeError, ValueError):
    """Training settings that cannot work (epochs, batch size, learning rates, device...)."""
