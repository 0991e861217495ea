"""Guard: the realism forests are fitted on one half of the box and scored on the other half,
and the two never share a pixel.

Documented rule (``lames_cube.synthetic.realism.measure``): "Halves: columns < width // 2
(west) and the rest (east)" (north/south when west/east leaves a half with too few mine
pixels); "f1_*_ab (train on the first half, test on the second) and f1_*_ba". Spies on
scikit-learn's forest (its ``fit`` and ``predict``, however the module imports the class)
record the feature rows of every fit and predict; the bands carry each pixel's row and column,
so the rows name the pixels exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.ensemble

from lames_cube.synthetic import realism

H, W = 48, 60
ROW_BASE, COL_BASE = 10_000, 20_000  # band values that name a pixel's row and column


def _image(rng):
    rows, cols = np.indices((H, W))
    image = {b: rng.integers(500, 1500, (H, W)).astype(np.uint16)
             for b in ("B02", "B03", "B04", "B12")}
    image["B08"] = (ROW_BASE + rows).astype(np.uint16)
    image["B11"] = (COL_BASE + cols).astype(np.uint16)
    return image


def _pixels(x: np.ndarray) -> set[tuple[int, int]]:
    """(row, col) of each feature row, found by the band values that encode them."""
    x = np.asarray(x)
    rcol = [j for j in range(x.shape[1]) if (x[:, j] >= ROW_BASE).all() and (x[:, j] < ROW_BASE + H).all()]
    ccol = [j for j in range(x.shape[1]) if (x[:, j] >= COL_BASE).all() and (x[:, j] < COL_BASE + W).all()]
    assert len(rcol) == 1 and len(ccol) == 1, "the identity bands are not among the features"
    return set(zip((x[:, rcol[0]] - ROW_BASE).astype(int).tolist(),
                   (x[:, ccol[0]] - COL_BASE).astype(int).tolist(), strict=True))


@pytest.mark.parametrize("mine_cols, halves", [((20, 40), "west|east"), ((2, 12), "north|south")])
def test_forests_train_and_test_on_disjoint_halves(monkeypatch, mine_cols, halves):
    calls: list[tuple[str, set]] = []
    forest = sklearn.ensemble.RandomForestClassifier
    fit, predict = forest.fit, forest.predict

    def spy_fit(self, X, y, sample_weight=None):
        calls.append(("fit", _pixels(X)))
        return fit(self, X, y, sample_weight=sample_weight)

    def spy_predict(self, X):
        calls.append(("predict", _pixels(X)))
        return predict(self, X)

    monkeypatch.setattr(forest, "fit", spy_fit)
    monkeypatch.setattr(forest, "predict", spy_predict)
    mine = np.zeros((H, W), bool)
    mine[8:40, mine_cols[0]:mine_cols[1]] = True  # the second case: all mine in the west
    out = realism.measure(_image(np.random.default_rng(0)), mine, seed=3, n_train=300,
                          n_test=500, forests="all")
    assert out["halves"] == halves
    assert [kind for kind, _ in calls] == ["fit", "predict", "fit", "predict"]  # ab, then ba

    if halves == "west|east":
        first = {(r, c) for r in range(H) for c in range(W) if c < W // 2}
    else:
        first = {(r, c) for r in range(H) for c in range(W) if r < H // 2}
    second = {(r, c) for r in range(H) for c in range(W)} - first
    (_, fit_ab), (_, test_ab), (_, fit_ba), (_, test_ba) = calls
    assert fit_ab and test_ab and fit_ba and test_ba
    assert fit_ab <= first and test_ab <= second
    assert fit_ba <= second and test_ba <= first
    assert not fit_ab & test_ab and not fit_ba & test_ba
    # mine pixels are in every sample (else the direction would not be scored)
    for pixels in (fit_ab, test_ab, fit_ba, test_ba):
        assert sum(mine[r, c] for r, c in pixels) >= realism.MIN_MINE_PX
