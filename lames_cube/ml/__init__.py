"""Machine learning on lames_cube data: models, training, evaluation, torch Datasets.

Needs torch and segmentation-models-pytorch (``pip install lames-cube[ml]``); the rest of
lames_cube never imports them.

- :func:`train`: the LAMES training protocol on patch sets, one checkpoint
  (:mod:`lames_cube.ml.training`);
- :func:`evaluate`: the LAMES table, IoU, figures and a report for one split
  (:mod:`lames_cube.ml.evaluation`);
- :func:`predict`: a lazy, seamless prediction over a cube of any size, tile by tile on dask
  (:mod:`lames_cube.ml.inference`); :func:`write_prediction` computes it into a resumable store;
- :func:`build_model`: the U-Net presets of :mod:`lames_cube.ml.models`;

- :class:`PatchDataset`: samples of a patch set (:func:`lames_cube.patchset.write_patch_set`),
  selected by split and kind, standardised with the set's training statistics.
- :class:`CubeWindowDataset`: windows read straight from a cube store
  (:func:`lames_cube.io.write_cube`), without writing patches first.
- :func:`dihedral`: the 8 flips and rotations of a square, applied to image and mask together.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as err:  # pragma: no cover - torch is installed in the development env
    from lames_cube.errors import MissingDependencyError  # local: only when torch is missing

    raise MissingDependencyError(
        f"lames_cube.ml needs torch, which is not installed ({err}). Install the ml extra: "
        "pip install 'lames-cube[ml]' (the CPU build, torch==2.13.0)."
    ) from err

from lames_cube.ml._torchvision import ensure_torchvision

ensure_torchvision()  # before anyone imports timm or segmentation-models-pytorch

from lames_cube.ml.checkpoint import load_checkpoint, load_model  # noqa: E402
from lames_cube.ml.data import (  # noqa: E402
    CubeWindowDataset,
    DatasetSelectionError,
    PatchDataset,
    dihedral,
    dihedral_index,
)
from lames_cube.ml.evaluation import evaluate  # noqa: E402
from lames_cube.ml.inference import ModelHandle, predict  # noqa: E402
from lames_cube.ml.models import build_model  # noqa: E402
from lames_cube.ml.training import train  # noqa: E402

__all__ = ["CubeWindowDataset", "DatasetSelectionError", "ModelHandle", "PatchDataset",
           "build_model", "dihedral", "dihedral_index", "evaluate", "load_checkpoint",
           "load_model", "predict", "train", "write_prediction"]

from lames_cube.prediction import write_prediction  # noqa: E402
