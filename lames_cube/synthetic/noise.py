"""Deterministic uniform numbers from integer keys (the world's random choices).

The renderer's noise fields live in :mod:`lames_cube.synthetic.kernels`.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash_uniform(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Uniform numbers in [0, 1) from integer lattice coordinates and a key.

    Examples
    --------
    >>> a = hash_uniform(np.array([1, 2]), np.array([3, 3]), 7)
    >>> bool(((a >= 0) & (a < 1)).all()), bool((a == hash_uniform(np.array([1, 2]), np.array([3, 3]), 7)).all())
    (True, True)
    """
    with np.errstate(over="ignore"):
        h = np.uint64(key & 0xFFFFFFFFFFFFFFFF) * _GOLD
        h = _mix(h ^ ix.astype(np.int64).view(np.uint64))
        h = _mix(h ^ (iy.astype(np.int64).view(np.uint64) * _GOLD))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
