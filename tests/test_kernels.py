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


# ------------------------------------------------------------------- the render (issue 24)
@pytest.fixture(scope="module")
def mine_window(lames_dir):
    """A world over site 2504 and a 200 x 240 px window across its mines and their edge, a
    cloudy date of it."""
    import dataclasses

    from lames_cube.synthetic import DEMO_SPEC, World
    from lames_cube.synthetic.appearance import lames_box

    world = World(dataclasses.replace(DEMO_SPEC, site_ids=("2504",)), data_dir=lames_dir)
    gbox = lames_box(world, "2504")[100:300, 500:740]
    date = next(d for d in world.dates if 0.1 < world.clouds(d).cover < 0.5)
    return world, gbox, date


def _render(world, gbox, date, **kw):
    land = world.landscape
    canvas = land.canvas(gbox, date.year)
    return land, canvas, land.render(canvas, world.clouds(date), world.atmosphere(date), **kw)


def test_harmonised_render_equals_harmonise_values_of_the_product(mine_window):
    from lames_cube.bands import harmonise_values

    world, gbox, date = mine_window
    for noise in (None, (123, 1.003)):
        _, _, (dn, scl, truth) = _render(world, gbox, date, noise=noise)
        _, _, (hv, scl2, truth2) = _render(world, gbox, date, noise=noise, harmonised=True)
        np.testing.assert_array_equal(hv, harmonise_values(dn, 1000))
        assert (scl == scl2).all() and (truth == truth2).all()


@pytest.mark.parametrize("noise", [(0.0, 0.0, 0.0), (1.004, 0.0006, 0.002)])
def test_sensor_row_harmonised_clamps_below_the_offset_and_keeps_saturation(noise):
    """The output step alone, on reflectance below 0 (over-corrected water), at 0 and above,
    and a saturated pixel: harmonised output = harmonise_values of the product's numbers."""
    from lames_cube.bands import harmonise_values

    rng = np.random.default_rng(4)
    w = 40
    rows = [rng.uniform(-0.02, 0.4, (6, w)).astype(np.float32) for _ in range(3)]
    scl = np.full(w, 5, np.uint8)
    scl[7] = 1
    xrow = np.arange(w) * 10.0 + 5.0
    yrow = np.full(w, 7_000_005.0)
    args = (*rows, scl, xrow, yrow, 0.175, np.uint64(99), np.array(noise))
    product = np.zeros((6, w - 2), np.uint16)
    harmonised = np.zeros((6, w - 2), np.uint16)
    K._sensor_row(*args, False, product)
    K._sensor_row(*args, True, harmonised)
    assert (product <= 1000).any() and (product[:, 6] == 65_535).all()
    np.testing.assert_array_equal(harmonised, harmonise_values(product, 1000))


def test_uniform_node_cells_give_the_pixels_of_the_full_search(mine_window):
    """The seed search is skipped inside node cells flagged uniform; clearing the flags (the
    full search everywhere) must give the same bytes."""
    world, gbox, date = mine_window
    land, canvas, (dn, scl, _) = _render(world, gbox, date)
    assert 0.2 < canvas.nodes[..., K.Q_UNIFORM].mean() < 1.0  # both paths are taken
    canvas.nodes[..., K.Q_UNIFORM] = 0.0
    dn2, scl2, _ = land.render(canvas, world.clouds(date), world.atmosphere(date))
    np.testing.assert_array_equal(dn, dn2)
    np.testing.assert_array_equal(scl, scl2)


def test_the_point_spread_function_blurs_the_10m_bands_only(mine_window):
    """The render with the sensor's PSF equals the sharp render (psf 0) blurred by the 3-tap
    kernel, to the rounding of one digital number; B11, B12 and the SCL are not blurred."""
    from scipy import ndimage

    from lames_cube.synthetic.landscape import PSF

    world, gbox, date = mine_window
    land, canvas, (dn, scl, _) = _render(world, gbox, date)
    assert canvas.psf == PSF == 0.175
    big = world.landscape.canvas(gbox.pad(1), date.year)
    big.psf = 0.0
    sharp, sharp_scl, _ = land.render(big, world.clouds(date), world.atmosphere(date))
    kernel = [PSF, 1 - 2 * PSF, PSF]
    blurred = ndimage.convolve1d(ndimage.convolve1d(sharp[:4].astype(float), kernel, axis=1),
                                 kernel, axis=2)[:, 1:-1, 1:-1]
    # saturated pixels are saturated in every band: leave them and their neighbours out
    ok = ~ndimage.binary_dilation(sharp_scl == 1, np.ones((3, 3), bool))[1:-1, 1:-1]
    assert np.abs(dn[:4][:, ok] - blurred[:, ok]).max() <= 1.0
    np.testing.assert_array_equal(dn[4:], sharp[4:, 1:-1, 1:-1])
    np.testing.assert_array_equal(scl, sharp_scl[1:-1, 1:-1])
    assert np.abs(dn[:4].astype(float) - sharp[:4, 1:-1, 1:-1]).max() > 50  # it does blur
