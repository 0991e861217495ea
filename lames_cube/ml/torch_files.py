"""Torch files on disk: the checkpoint format tag and a safe, CPU-only reader.

Shared by :mod:`lames_cube.ml.checkpoint` (full checkpoints) and :mod:`lames_cube.ml.models`
(a local weights file for a model), so that neither imports the other's module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "read_torch_file"]

#: The ``format`` value every lames_cube checkpoint carries.
CHECKPOINT_FORMAT = "lames_cube.checkpoint"


def read_torch_file(path: Path, error: type[Exception], what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file raises
    ``error`` naming ``what`` it should have been and the ``fix``."""
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist; {fix}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and torch errors alike
        first = str(err).splitlines()[0] if str(err) else ""
        raise error(f"{what} {str(path)!r} ({path.stat().st_size:,} bytes) cannot be read: it "
                    f"is corrupt, truncated or not a torch file ({type(err).__name__}: "
                    f"{first}); {fix}.") from None
