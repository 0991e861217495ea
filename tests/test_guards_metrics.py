"""Guards: the confusion matrix is (truth, prediction) and precision is not recall, in
``lames_cube.metrics`` and in the evaluation of a checkpoint (``lames_cube.ml.evaluation``).

The existing hand case of tests/test_metrics.py is symmetric (precision == recall for every
class), so a transposed matrix or swapped precision/recall would pass it. Here the cases are
asymmetric and every expected number is counted by hand from the pixel lists.
"""

from __future__ import annotations

import numpy as np
import pytest

from lames_cube.metrics import confusion_matrix, scores

# Binary: 30 background pixels (2 predicted mine), 10 mine pixels (6 predicted mine).
#   TP(mine) = 6, FN(mine) = 4, FP(mine) = 2, TN = 28
TRUTH = np.array([0] * 30 + [1] * 10, np.uint8)
PRED = np.array([0] * 28 + [1] * 2 + [1] * 6 + [0] * 4, np.uint8)
HAND_CM = [[28, 2],   # truth 0: 28 predicted 0, 2 predicted 1
           [4, 6]]    # truth 1: 4 predicted 0, 6 predicted 1
HAND_PRECISION = [28 / (28 + 4), 6 / (6 + 2)]   # TP / predicted as the class
HAND_RECALL = [28 / (28 + 2), 6 / (6 + 4)]      # TP / truly the class


def _f1(p, r):
    return 2 * p * r / (p + r)


def test_binary_asymmetric_case_by_hand():
    assert HAND_PRECISION[1] != HAND_RECALL[1]  # precondition: the case is asymmetric
    cm = confusion_matrix(PRED, TRUTH, 2)
    assert cm.tolist() == HAND_CM
    s = scores(cm)
    np.testing.assert_allclose(s["precision"], HAND_PRECISION, rtol=1e-12)
    np.testing.assert_allclose(s["recall"], HAND_RECALL, rtol=1e-12)
    assert s["macro_precision"] == pytest.approx(np.mean(HAND_PRECISION), rel=1e-12)
    assert s["macro_recall"] == pytest.approx(np.mean(HAND_RECALL), rel=1e-12)
    assert s["support"].tolist() == [30, 10]  # pixels of each true class
    assert s["micro_accuracy"] == pytest.approx(34 / 40)


def test_three_class_orientation_by_hand():
    # (truth, pred) pairs, counted by hand into cm[truth][pred]
    pairs = [(0, 0)] * 5 + [(0, 2)] * 3 + [(1, 1)] * 4 + [(1, 0)] * 1 + [(2, 2)] * 2 + [(2, 1)] * 6
    truth = np.array([t for t, _ in pairs])
    pred = np.array([p for _, p in pairs])
    cm = confusion_matrix(pred.reshape(3, 7), truth.reshape(3, 7), 3)
    assert cm.tolist() == [[5, 0, 3], [1, 4, 0], [0, 6, 2]]
    s = scores(cm)
    # precision: column-wise; recall: row-wise
    np.testing.assert_allclose(s["precision"], [5 / 6, 4 / 10, 2 / 5])
    np.testing.assert_allclose(s["recall"], [5 / 8, 4 / 5, 2 / 8])
    np.testing.assert_allclose(s["f1"], [_f1(5 / 6, 5 / 8), _f1(4 / 10, 4 / 5), _f1(2 / 5, 2 / 8)])


def test_evaluate_scores_truth_against_prediction(monkeypatch):
    """``lames_cube.ml.evaluate`` on a model (and a baseline) whose predictions are fixed:
    the per-class precision/recall it reports are the hand values, not swapped."""
    import lames_cube.ml.evaluation as evaluation

    truth = np.stack([TRUTH.reshape(5, 8)] * 2)          # 2 samples of 5 x 8 px
    pred = np.stack([PRED.reshape(5, 8)] * 2)
    # a baseline with its own asymmetric errors: all mine pixels found, 10 false alarms
    base_pred = truth.copy()
    base_pred[:, 0, :5] = 1                                # 5 background px per sample -> 1
    meta = {"classes": ["no mine", "mine site"], "model": {"encoder": "fake"}}
    monkeypatch.setattr(evaluation, "load_checkpoint", lambda path: meta)
    monkeypatch.setattr(evaluation, "predict_patches", lambda *a, **k: {
        "pred": pred, "prob": pred * 255, "truth": truth, "sample": np.arange(2)})
    monkeypatch.setattr(evaluation, "predict_split", lambda *a, **k: (base_pred, truth))

    result = evaluation.evaluate("fake.pt", "fake.zarr", baselines={"base": object()},
                                 progress=False)
    model = result["models"]["U-Net (fake)"]
    assert model["confusion_matrix"] == (2 * np.array(HAND_CM)).tolist()
    np.testing.assert_allclose(model["scores"]["precision"], HAND_PRECISION, rtol=1e-12)
    np.testing.assert_allclose(model["scores"]["recall"], HAND_RECALL, rtol=1e-12)
    # baseline, by hand: truth 0 = 60 px of which 10 predicted 1; truth 1 = 20 px all found
    base = result["models"]["base"]
    assert base["confusion_matrix"] == [[50, 10], [0, 20]]
    np.testing.assert_allclose(base["scores"]["precision"], [50 / 50, 20 / 30], rtol=1e-12)
    np.testing.assert_allclose(base["scores"]["recall"], [50 / 60, 20 / 20], rtol=1e-12)
