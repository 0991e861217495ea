"""Deterministic value noise on world coordinates.

Every field of the synthetic world is a function of map coordinates (metres) and a seed, so any
window of any grid can be rendered on its own and overlapping windows agree exactly.
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


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1) with feature size ``scale`` (same units as x, y).

    ``x`` and ``y`` broadcast against each other (e.g. a row of x and a column of y). Only the
    lattice points that the coordinates touch are hashed, then gathered and interpolated.
    """
    fx = np.asarray(x, dtype=np.float64) / scale
    fy = np.asarray(y, dtype=np.float64) / scale
    x0 = np.floor(fx)
    y0 = np.floor(fy)
    tx = fx - x0
    ty = fy - y0
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    xmin, ymin = int(ix.min()), int(iy.min())
    lx = np.arange(xmin, int(ix.max()) + 2, dtype=np.int64)
    ly = np.arange(ymin, int(iy.max()) + 2, dtype=np.int64)
    lattice = hash_uniform(lx[None, :], ly[:, None], key)
    ix, iy = np.broadcast_arrays(ix - xmin, iy - ymin)
    tx, ty = np.broadcast_arrays(tx, ty)
    v00 = lattice[iy, ix]
    v10 = lattice[iy, ix + 1]
    v01 = lattice[iy + 1, ix]
    v11 = lattice[iy + 1, ix + 1]
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def fbm(x: np.ndarray, y: np.ndarray, scale: float, key: int, octaves: int = 4) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1); the coarsest feature is ``scale``."""
    total = 0.0
    norm = 0.0
    amp = 1.0
    for octave in range(octaves):
        total = total + amp * value_noise(x, y, scale / 2**octave, key * 131 + octave)
        norm += amp
        amp *= 0.5
    return total / norm
