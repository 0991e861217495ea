"""Guard: the pixel baseline draws its training pixels uniformly over pixels (within a class),
not uniformly over patches.

``fit_pixel_classifier``'s documented draw: class ``c``'s training pixels are ``quota_c`` of
its valid pixels "of smallest key: a uniform random sample without replacement", so every
valid pixel of class ``c`` is drawn with probability ``quota_c / N_c`` wherever it lies.
Two training patches hold very unequal numbers of background pixels (850 valid in one, 100 in
the other), so a per-patch draw would take about half of the background from each patch where a
per-pixel draw takes 850/950 from the first. Each pixel carries its identity in its band
values (B02 = row + 1, B03 = column + 1), so the fitted features say which pixels were drawn.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin

from lames_cube.ml.baselines import fit_pixel_classifier
from lames_cube.patches import patch_table
from lames_cube.patchset import PatchSource, write_patch_set

SIZE = 32


class _Recorder(ClassifierMixin, BaseEstimator):
    """Records what it is fitted on (a class attribute: fit_pixel_classifier clones it)."""

    seen: ClassVar[list] = []

    def fit(self, X, y):
        _Recorder.seen.append((np.array(X), np.array(y)))
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.zeros(len(X), np.uint8)


@pytest.fixture(scope="module")
def unequal_patches(tmp_path_factory):
    g = GeoBox.from_bbox((300_000, 7_000_000, 300_000 + 2 * SIZE * 10, 7_000_000 + SIZE * 10),
                         "EPSG:32719", resolution=10)  # 32 x 64 px: two 32-px patches
    rows, cols = np.indices(g.shape)
    mask = np.ones(g.shape, np.uint8)
    mask[:, :SIZE] = 0
    mask[:4, :31] = 1                      # patch A: 124 mine px, 900 background px
    mask[:4, SIZE:SIZE + 25] = 0           # patch B: 100 background px, 924 mine px
    b02 = (rows + 1).astype(np.uint16)
    b02[10:15, 0:10] = 0                   # 50 background px of patch A are nodata
    b03 = (cols + 1).astype(np.uint16)
    cube = xr.concat([xr_zeros(g, dtype="uint16").copy(data=b02),
                      xr_zeros(g, dtype="uint16").copy(data=b03)], "band")
    cube = cube.assign_coords(band=["B02", "B03"])
    table = patch_table(g, size=SIZE)
    table["split"] = ["train", "train"]
    table["kind"] = "site"
    labels = xr_zeros(g, dtype="uint8").copy(data=mask)
    store = write_patch_set(PatchSource(cube, table, labels),
                            tmp_path_factory.mktemp("px") / "p.zarr", block=2, progress=False)
    return store, mask, b02 > 0


def test_pixel_draw_is_uniform_over_pixels_not_patches(unequal_patches):
    store, mask, valid = unequal_patches
    n_valid = {c: int(((mask == c) & valid).sum()) for c in (0, 1)}
    assert n_valid == {0: 950, 1: 1048}  # hand count of the layout above
    quota = 100                          # n_pixels = 200 shared equally by 2 classes
    counts = {c: np.zeros(mask.shape, np.int64) for c in (0, 1)}
    runs = 40
    _Recorder.seen.clear()
    for seed in range(runs):
        model = fit_pixel_classifier(store, n_pixels=2 * quota, seed=seed, estimator=_Recorder())
        assert model.pixels_per_class == {0: quota, 1: quota}
        assert model.valid_per_class == n_valid
    assert len(_Recorder.seen) == runs
    for x, y in _Recorder.seen:
        r, c = x[:, 0].astype(int) - 1, x[:, 1].astype(int) - 1
        assert (r >= 0).all(), "a nodata pixel was drawn"
        assert (mask[r, c] == y).all()   # each drawn pixel is labelled with its own class
        for k in (0, 1):
            sel = y == k
            assert sel.sum() == quota
            assert len(set(zip(r[sel], c[sel], strict=True))) == quota  # without replacement
            np.add.at(counts[k], (r[sel], c[sel]), 1)

    for k in (0, 1):
        pool = (mask == k) & valid
        assert counts[k][~pool].sum() == 0
        observed = counts[k][pool]
        # every pixel of the class equally likely: chi-square against the flat expectation
        # (draws without replacement make the statistic slightly conservative)
        p = stats.chisquare(observed).pvalue
        assert p > 1e-4, (k, p)
        # share per patch: proportional to the patch's pixels, not one half each
        in_a = counts[k][:, :SIZE].sum() / counts[k].sum()
        want = ((pool[:, :SIZE]).sum()) / pool.sum()
        assert in_a == pytest.approx(want, abs=0.03), (k, in_a, want)
    assert abs(850 / 950 - 0.5) > 0.3  # the per-patch alternative is far from the truth
