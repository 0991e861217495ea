"""The renderer's numba kernels against slow references (DESIGN §4)."""

from __future__ import annotations

import numpy as np
import pytest

from lames_cube.synthetic import kernels as K
from lames_cube.synthetic.landscape import Octaves
from lames_cube.synthetic.noise import hash_uniform


def _value_noise_reference(x: float, y: float, scale: float, key: int) -> float:
    """Smooth value noise written out: hash the four corners, smoothstep, interpolate."""
    fx, fy = x / scale, y / scale
    x0, y0 = np.floor(fx), np.floor(fy)
    corners = hash_uniform(np.array([x0, x0 + 1, x0, x0 + 1]).astype(np.int64),
                           np.array([y0, y0, y0 + 1, y0 + 1]).astype(np.int64), key)
    tx, ty = fx - x0, fy - y0
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    top = corners[0] + (corners[1] - corners[0]) * tx
    bottom = corners[2] + (corners[3] - corners[2]) * tx
    return float(top + (bottom - top) * ty)


def test_hash01_equals_hash_uniform():
    rng = np.random.default_rng(3)
    ix = rng.integers(-10**7, 10**7, 500)
    iy = rng.integers(-10**7, 10**7, 500)
    for key in (0, 7, 2**40 + 11):
        fast = np.array([K.hash01(a, b, np.uint64(key)) for a, b in zip(ix, iy, strict=True)])
        np.testing.assert_array_equal(fast, hash_uniform(ix, iy, key))


@pytest.mark.parametrize("scale", [20.0, 333.0, 6000.0])
def test_value_noise_and_its_gradient_against_references(scale):
    rng = np.random.default_rng(int(scale))
    pts = rng.uniform((-3_000, -2_000), (27_000, 28_000), size=(200, 2))
    octaves = Octaves.build([(scale, 99)], (*pts.min(0), *pts.max(0)))
    h = 1e-4 * scale  # central differences: error ~ h / scale near nodes (C1, not C2)
    for x, y in pts:
        value, dx, dy = K._vn_grad(octaves.flat, octaves.meta, octaves.inv, 0, x, y)
        assert value == pytest.approx(_value_noise_reference(x, y, scale, 99), abs=1e-9)
        assert K._vn(octaves.flat, octaves.meta, octaves.inv, 0, x, y) == value
        num_dx = (_value_noise_reference(x + h, y, scale, 99)
                  - _value_noise_reference(x - h, y, scale, 99)) / (2 * h)
        num_dy = (_value_noise_reference(x, y + h, scale, 99)
                  - _value_noise_reference(x, y - h, scale, 99)) / (2 * h)
        assert dx == pytest.approx(num_dx, rel=1e-3, abs=1e-6 / scale)
        assert dy == pytest.approx(num_dy, rel=1e-3, abs=1e-6 / scale)


def test_a_lattice_gives_the_same_values_whatever_area_it_covers():
    """Node values depend on the node only, so any window's lattice agrees with any other."""
    small = Octaves.build([(40.0, 5)], (1000.0, 2000.0, 1400.0, 2300.0))
    large = Octaves.build([(40.0, 5)], (-5000.0, -4000.0, 9000.0, 8000.0))
    for x, y in [(1000.0, 2000.0), (1234.5, 2222.2), (1399.9, 2299.9)]:
        assert (K._vn(small.flat, small.meta, small.inv, 0, x, y)
                == K._vn(large.flat, large.meta, large.inv, 0, x, y))
