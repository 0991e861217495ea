"""Import torchvision beside the CPU build of torch.

segmentation-models-pytorch builds its ResNet encoders from torchvision's pure-Python model
classes, and timm imports torchvision too. PyPI ships torchvision only as a CUDA build, whose
native operators (``nms``, ``roi_align``...) cannot load beside the CPU build of torch that this
project pins (torch 2.13.0+cpu): its import then fails with ``operator torchvision::nms does
not exist``, because ``torchvision/_meta_registrations.py`` registers fake kernels for ``nms``
and ``qnms`` without first checking that the operators loaded. :func:`ensure_torchvision`
declares the two operator schemas (without kernels) and imports torchvision again; the models
work, and torchvision's detection operators, which lames_cube never calls, keep raising their
own "not compiled with ops" error. With a torchvision whose operators load, it does nothing.
"""

from __future__ import annotations

import sys
from typing import Any

_LIBRARY: Any = None  # keeps the schema declarations alive for the process


def ensure_torchvision() -> Any:
    """Import and return torchvision, declaring its two missing operator schemas if needed.

    Returns
    -------
    module
        ``torchvision``.
    """
    global _LIBRARY
    try:
        import torchvision  # local: optional torch
    except RuntimeError as err:
        if "torchvision::nms" not in str(err) or _LIBRARY is not None:
            raise
        import torch  # local: optional torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            _LIBRARY.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # local: optional torch
    return torchvision
