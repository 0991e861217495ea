"""Guard: ``merge_patches(..., blend="hann")`` on non-constant, overlapping windows equals a
slow pure-Python weighted average with the documented window.

The docstring example only merges constant patches, where any positive weights give the same
answer (a mean blend, a wrong window or a transposed window all pass it). The reference below
writes the window from its definition in ``lames_cube._kernels.hann``: a cosine-squared
(Hann) ramp sampled at pixel centres, ``w(i) = sin(pi * (i + 0.5) / size) ** 2``, and the 2-D
weight is ``w(i) * w(j)`` (row, column).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from odc.geo.geobox import GeoBox

from lames_cube.patches import merge_patches, patch_table


def _reference(values: np.ndarray, rows, cols, size: int, shape, blend: str) -> tuple:
    """Per pixel: sum_k w(i_k, j_k) v_k / sum_k w(i_k, j_k) over the windows k covering it."""
    height, width = shape
    num = [[[0.0] * width for _ in range(height)] for _ in range(values.shape[1])]
    den = [[0.0] * width for _ in range(height)]
    for k, (r0, c0) in enumerate(zip(rows, cols, strict=True)):
        for i in range(size):
            for j in range(size):
                r, c = r0 + i, c0 + j
                if not (0 <= r < height and 0 <= c < width):
                    continue  # the part of a padded window past the grid
                if blend == "hann":
                    w = math.sin(math.pi * (i + 0.5) / size) ** 2 * \
                        math.sin(math.pi * (j + 0.5) / size) ** 2
                else:
                    w = 1.0
                den[r][c] += w
                for b in range(values.shape[1]):
                    num[b][r][c] += w * float(values[k, b, i, j])
    den_a = np.array(den)
    out = np.full((values.shape[1], height, width), np.nan)
    for b in range(values.shape[1]):
        for r in range(height):
            for c in range(width):
                if den[r][c] > 0:
                    out[b, r, c] = num[b][r][c] / den[r][c]
    return out, den_a


@pytest.mark.parametrize("size, stride, edge", [(8, 4, "drop"), (7, 3, "pad"), (6, 5, "shift")])
def test_hann_merge_equals_a_slow_weighted_average(size, stride, edge):
    g = GeoBox.from_bbox((300_000, 7_000_000, 300_230, 7_000_190), "EPSG:32719",
                         resolution=10)  # 19 x 23 px: no window size divides it
    table = patch_table(g, size=size, stride=stride, edge=edge)
    n = len(table)
    rng = np.random.default_rng(size)
    # non-constant windows: a ramp inside each window (left-right and top-bottom differ) plus
    # noise, so that the window's orientation and shape matter
    ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    values = (rng.normal(0, 1, (n, 2, size, size)) + 3.0 * ii / size - 5.0 * jj / size
              + rng.normal(0, 4, (n, 2, 1, 1)))
    ref, ref_weight = _reference(values, table.row.to_numpy(), table.col.to_numpy(), size,
                                 g.shape, "hann")
    out = merge_patches(values, table, like=g, blend="hann")
    assert out.dims == ("band", "y", "x") and out.shape == ref.shape
    mean_ref, count = _reference(values, table.row, table.col, size, g.shape, "mean")
    assert (count >= 2).sum() > 100  # precondition: many pixels lie under overlapping windows
    np.testing.assert_allclose(out.values, ref, rtol=1e-12, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(out.weight.values, ref_weight, rtol=1e-12, atol=1e-15)
    # the hann blend is not the mean blend on these values (the test can tell them apart)
    assert np.nanmax(np.abs(mean_ref - ref)) > 0.05
    # the 3-D (sample, py, px) form gives the first band
    single = merge_patches(values[:, 0], table, like=g, blend="hann")
    np.testing.assert_allclose(single.values, ref[0], rtol=1e-12, atol=1e-12, equal_nan=True)
