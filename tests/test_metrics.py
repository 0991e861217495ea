"""Metrics against scikit-learn and the identity of DESIGN.md §5."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from sklearn import metrics as skm

from lames_cube.errors import InvalidQueryError, LamesCubeError, MetricsError
from lames_cube.metrics import confusion_matrix, scores


@pytest.mark.parametrize("k, seed", [(2, 0), (8, 1), (10, 2)])
def test_against_scikit_learn(k, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, (64, 48))
    pred = np.where(rng.random((64, 48)) < 0.7, truth, rng.integers(0, k, (64, 48)))
    pred[pred == k - 1] = 0  # one class never predicted: precision 0 by convention
    cm = confusion_matrix(pred, truth, k)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(truth.ravel(), pred.ravel(),
                                                           labels=range(k)))
    s = scores(cm)
    p, r, f, _ = skm.precision_recall_fscore_support(truth.ravel(), pred.ravel(),
                                                     labels=range(k), zero_division=0)
    np.testing.assert_allclose(s["precision"], p)
    np.testing.assert_allclose(s["recall"], r)
    np.testing.assert_allclose(s["f1"], f)
    assert s["macro_f1"] == pytest.approx(f.mean())
    oa = skm.accuracy_score(truth.ravel(), pred.ravel())
    assert s["micro_accuracy"] == pytest.approx(oa)
    assert s["macro_accuracy"] == pytest.approx(1 - 2 * (1 - oa) / k)
    iou = skm.jaccard_score(truth.ravel(), pred.ravel(), labels=range(k), average=None,
                            zero_division=0)
    np.testing.assert_allclose(s["iou"], iou)
    assert s["mean_iou"] == pytest.approx(iou.mean())


def test_hand_computed_binary_case():
    # truth: 6 background, 4 mine; pred: 5/6 background right, 3/4 mine right
    truth = np.array([0] * 6 + [1] * 4)
    pred = np.array([0] * 5 + [1] + [1] * 3 + [0])
    cm = confusion_matrix(pred, truth, 2)
    assert cm.tolist() == [[5, 1], [1, 3]]
    s = scores(cm)
    assert s["precision"].tolist() == pytest.approx([5 / 6, 3 / 4])
    assert s["recall"].tolist() == pytest.approx([5 / 6, 3 / 4])
    assert s["micro_accuracy"] == pytest.approx(0.8)
    assert s["iou"].tolist() == pytest.approx([5 / 7, 3 / 5])  # TP / (TP + FP + FN)


def test_lazy_dask_and_ignore_equal_numpy():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, (100, 80)).astype("uint8")
    truth[:10] = 255
    pred = rng.integers(0, 3, (100, 80)).astype("uint8")
    expected = confusion_matrix(pred, truth, 3, ignore=255)
    assert expected.sum() == 90 * 80  # 100 x 80 pixels less the 10 ignored rows
    lazy = confusion_matrix(xr.DataArray(da.from_array(pred, chunks=32), dims=("y", "x")),
                            da.from_array(truth, chunks=32), 3, ignore=255)
    np.testing.assert_array_equal(lazy, expected)


def test_bad_input_raises_metrics_errors_naming_value_and_fix():
    with pytest.raises(MetricsError, match=r"pred has 4 pixels and truth 5.*same shape"):
        confusion_matrix(np.zeros(4), np.zeros(5), 2)
    with pytest.raises(MetricsError, match=r"1 pixels hold a class outside 0\.\.1.*ignore="):
        confusion_matrix(np.array([0, 2]), np.array([0, 1]), 2)
    with pytest.raises(MetricsError, match=r"n_classes=1 is not an integer >= 2; pass"):
        confusion_matrix(np.zeros(4), np.zeros(4), 1)
    with pytest.raises(MetricsError, match=r"cm is all zeros \(shape \(3, 3\)\).*at least one "
                                           r"labelled pixel"):
        scores(np.zeros((3, 3)))
    with pytest.raises(MetricsError, match=r"cm has shape \(2, 3\); pass a square"):
        scores(np.ones((2, 3)))
    with pytest.raises(MetricsError, match=r"1 negative or non-finite count\(s\), e\.g\. \[-1\.0\]"):
        scores(np.array([[1, -1], [0, 2]]))
    with pytest.raises(MetricsError, match=r"cm='abc' is not a matrix of numbers"):
        scores("abc")


def test_metrics_error_is_a_value_error_of_the_package():
    assert issubclass(MetricsError, ValueError) and issubclass(MetricsError, LamesCubeError)
    assert not issubclass(MetricsError, InvalidQueryError)  # not a search/query problem
