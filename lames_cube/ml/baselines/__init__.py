"""Honest baselines for the LAMES segmentation experiments: a per-pixel classifier and a
spectral-index threshold, fitted on patch sets with scikit-learn and NumPy (no torch).

A learned U-Net is only worth its cost if it beats what a per-pixel model on the raw bands, or a
single spectral index with one threshold, already does. Both baselines are fitted on the
samples of chosen splits of one or more patch sets (:func:`lames_cube.patchset.write_patch_set`)
and are *never* shown the test split:

- :func:`fit_pixel_classifier` (:mod:`lames_cube.ml.baselines.pixel`) draws valid pixels of the
  ``"train"`` split (class-balanced, seeded) and fits a scikit-learn classifier on their raw band
  values;
- :func:`fit_index_threshold` (:mod:`lames_cube.ml.baselines.index`) picks, on the
  ``"validation"`` split, the spectral index of :data:`INDICES`, the direction and the threshold
  that maximise macro F1 (binary site task only);
- :func:`predict_split` (:mod:`lames_cube.ml.baselines.reading`, which also reads the patch sets
  for the fits) predicts the samples of one split (``"test"`` for the evaluation) in batches and
  returns the predictions with the truth masks, ready for
  :func:`lames_cube.metrics.confusion_matrix`.

Examples
--------
>>> import tempfile
>>> from lames_cube.metrics import confusion_matrix, scores
>>> from lames_cube.testing.ml_sets import baseline_patch_set
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = baseline_patch_set(f"{tmp}/p.zarr")
...     index = fit_index_threshold(store)
...     pred, truth = predict_split(index, store)
>>> index.name, scores(confusion_matrix(pred, truth, 2))["macro_f1"]
('NDBI > 0.03877', 1.0)
"""

from lames_cube.errors import BaselineError
from lames_cube.ml.baselines.index import (
    INDICES,
    IndexBaseline,
    SpectralIndex,
    fit_index_threshold,
    threshold_f1,
)
from lames_cube.ml.baselines.pixel import PixelBaseline, fit_pixel_classifier
from lames_cube.ml.baselines.reading import predict_split

__all__ = [
    "INDICES",
    "BaselineError",
    "IndexBaseline",
    "PixelBaseline",
    "SpectralIndex",
    "fit_index_threshold",
    "fit_pixel_classifier",
    "predict_split",
    "threshold_f1",
]
