"""Baselines on patch sets: planted truth recovered, the vectorised threshold search against a
slow loop of confusion matrices, the test split never read, typed errors, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
import zarr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from lames_cube.errors import LamesCubeError, UnknownBandError
from lames_cube.metrics import confusion_matrix, scores
from lames_cube.ml.baselines import (
    INDICES,
    BaselineError,
    IndexBaseline,
    PixelBaseline,
    fit_index_threshold,
    fit_pixel_classifier,
    predict_split,
    reading,
    threshold_f1,
)
from lames_cube.ml.baselines import index as index_baseline
from lames_cube.ml.baselines import pixel as pixel_baseline
from lames_cube.patches import patch_table
from lames_cube.patchset import PatchSource, open_patch_set, write_patch_set

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
SIZE = 16  # 64 x 64 px grid -> 16 patches
SPLITS = np.array(["train", "train", "validation", "test"])


def grid() -> GeoBox:
    return GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719",
                            resolution=10)


def write_set(path: Path, layers: dict[str, np.ndarray], labels: np.ndarray | None, *,
              splits=SPLITS, block: int = 4) -> Path:
    """A patch set of the 16 patches of 16 px of a 64 x 64 px cube; splits cycle ``splits``."""
    g = grid()
    cube = xr.concat([xr_zeros(g, dtype="uint16").copy(data=v.astype(np.uint16))
                      for v in layers.values()], "band").assign_coords(band=list(layers))
    cube.attrs["nodata"] = 0
    table = patch_table(g, size=SIZE)
    if splits is not None:
        table["split"] = np.asarray(splits)[np.arange(len(table)) % len(splits)]
    table["kind"] = "site"
    lab = None if labels is None else xr_zeros(g, dtype="uint8").copy(data=labels.astype(np.uint8))
    return write_patch_set(PatchSource(cube, table, lab), path, block=block, progress=False)


def quantised(layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Values on steps of 50 DN: fewer distinct values than HistGradientBoosting's 255 bins, so
    its bin edges fall midway between values and a planted gap is split exactly."""
    return {b: v // 50 * 50 for b, v in layers.items()}


def planted_ndbi(seed: int = 0, mines: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mines bright in B11 and dark in B08 (NDBI > 0.2 against < 0); every other band is wide
    noise shared by both classes, so no other index separates them. ``mines=False``: ground
    only (an extra no-mine set)."""
    rng = np.random.default_rng(seed)
    shape = grid().shape
    rows, cols = np.indices(shape)
    mine = ((rows // 4 + cols // 4) % 5 == 0).astype(np.uint8) * int(mines)
    layers = {b: rng.integers(300, 9000, shape) for b in BANDS}
    layers["B08"] = np.where(mine, rng.integers(1500, 2000, shape), rng.integers(3000, 4000, shape))
    layers["B11"] = np.where(mine, rng.integers(3000, 4000, shape), rng.integers(1500, 2900, shape))
    return quantised(layers), mine


def planted_classes(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Three classes separable by a rule on B08 and B11 (disjoint ranges), noise elsewhere."""
    rng = np.random.default_rng(seed)
    shape = grid().shape
    rows, cols = np.indices(shape)
    cls = np.select([(rows // 4 + cols // 4) % 5 == 0, (rows // 4 + 2 * (cols // 4)) % 7 == 0],
                    [1, 2], 0).astype(np.uint8)
    layers = {b: rng.integers(300, 9000, shape) for b in BANDS}
    layers["B08"] = np.choose(cls, [rng.integers(3000, 4000, shape),
                                    rng.integers(1000, 2000, shape),
                                    rng.integers(1000, 2000, shape)])
    layers["B11"] = np.choose(cls, [rng.integers(1000, 5000, shape),
                                    rng.integers(2000, 3000, shape),
                                    rng.integers(6000, 7000, shape)])
    return quantised(layers), cls


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """HistGradientBoosting on a few hundred pixels is dominated by OpenMP start-up and, on a
    busy machine, by spinning threads (30x slower with 2 threads on 2 busy cores)."""
    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def ndbi_set(tmp_path_factory) -> Path:
    layers, mine = planted_ndbi()
    return write_set(tmp_path_factory.mktemp("b") / "ndbi.zarr", layers, mine)


@pytest.fixture(scope="module")
def classes_set(tmp_path_factory) -> Path:
    layers, cls = planted_classes()
    return write_set(tmp_path_factory.mktemp("b") / "classes.zarr", layers, cls)


@pytest.fixture(scope="module")
def blind_set(tmp_path_factory) -> Path:
    """An extra no-mine set: split "train" only, all-0 masks."""
    layers, _ = planted_ndbi(seed=5, mines=False)
    return write_set(tmp_path_factory.mktemp("b") / "blind.zarr", layers, None,
                     splits=["train"])


def slow_f1(values: np.ndarray, truth: np.ndarray, thresholds: np.ndarray, direction: str):
    out = []
    for t in thresholds:
        pred = (values > t) if direction == ">" else (values < t)
        out.append(scores(confusion_matrix(pred.astype(np.uint8), truth, 2))["macro_f1"])
    return np.array(out)


class Recorder(DecisionTreeClassifier):
    """A classifier that keeps the training set it was given."""

    def fit(self, X, y, sample_weight=None, check_input=True):
        self.seen_ = (np.array(X), np.array(y))
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)


# --------------------------------------------------------------------------------------------
# Index threshold


def test_index_threshold_finds_the_planted_index(ndbi_set):
    b = fit_index_threshold(ndbi_set)
    assert isinstance(b, IndexBaseline)
    assert (b.index, b.direction, b.bands) == ("NDBI", ">", ["B08", "B11"])
    assert b.macro_f1 == 1.0
    # no other index separates the planted mines: NDBI is chosen on merit, not by the tie rule
    others = [c["macro_f1"] for c in b.candidates if c["index"] != "NDBI"]
    assert len(others) == 2 * (len(INDICES) - 1) and max(others) < 0.9
    # the threshold sits inside the gap between the classes' NDBI (about 0.2 and 0.0)
    ds = open_patch_set(ndbi_set)
    v = INDICES["NDBI"].compute({bd: ds.image.sel(band=bd).values for bd in ("B08", "B11")})
    mine = ds.mask.values == 1
    assert v[~mine].max() < b.threshold < v[mine].min()
    # the test split is separated exactly
    pred, truth = predict_split(b, ndbi_set)
    assert pred.shape == truth.shape == (4, SIZE, SIZE) and pred.dtype == np.uint8
    np.testing.assert_array_equal(pred, truth)
    assert b.name == f"NDBI > {b.threshold:.4g}"


def test_index_threshold_other_direction(ndbi_set):
    """MNDWI = (B03 - B11) / (B03 + B11) falls with B11, which is high on the planted mines:
    "mine where MNDWI < t" must win (B03 is noise, so not perfectly)."""
    b = fit_index_threshold(ndbi_set, indices=["MNDWI"])
    assert (b.index, b.direction, b.bands) == ("MNDWI", "<", ["B03", "B11"])
    assert 0.5 < b.macro_f1 < 1
    assert b.name == f"MNDWI < {b.threshold:.4g}"


def test_validation_f1_reproduced_by_prediction(ndbi_set):
    """The reported F1 is what metrics.scores gives for the baseline's own predictions of the
    validation split, and it is the best of the slow loop over the same candidates."""
    for store, indices in ((ndbi_set, ["NDVI", "BSI", "CMR"]), (ndbi_set, None)):
        b = fit_index_threshold(store, indices=indices)
        pred, truth = predict_split(b, store, split="validation")
        assert scores(confusion_matrix(pred, truth, 2))["macro_f1"] == pytest.approx(
            b.macro_f1, abs=1e-12)
        ds = open_patch_set(store)
        keep = ds.split.values == "validation"
        image = ds.image.values[keep]
        v = INDICES[b.index].compute({bd: image[:, BANDS.index(bd)] for bd in b.bands}).ravel()
        t = index_baseline._candidate_thresholds(v, b.n_thresholds)
        slow = slow_f1(v, ds.mask.values[keep].ravel(), t, b.direction)
        assert slow.max() == pytest.approx(b.macro_f1, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_f1_against_slow_loop(seed):
    rng = np.random.default_rng(seed)
    truth = (rng.random(3000) < 0.2).astype(np.uint8)
    values = np.round(rng.normal(truth * 0.8, 0.5), 1)  # many ties, values on thresholds
    thresholds = np.unique(np.concatenate([np.round(np.linspace(-2, 3, 41), 1),
                                           rng.choice(values, 20)]))
    gt, lt = threshold_f1(values, truth, thresholds)
    np.testing.assert_allclose(gt, slow_f1(values, truth, thresholds, ">"), rtol=0, atol=1e-12)
    np.testing.assert_allclose(lt, slow_f1(values, truth, thresholds, "<"), rtol=0, atol=1e-12)
    assert int(np.argmax(gt)) == int(np.argmax(slow_f1(values, truth, thresholds, ">")))


def test_threshold_f1_edges():
    # every threshold below / above all values: one class predicted everywhere
    gt, lt = threshold_f1([1.0, 2.0, 3.0], [0, 1, 1], [0.0, 10.0])
    np.testing.assert_allclose(gt, slow_f1(np.array([1.0, 2, 3]), np.array([0, 1, 1]),
                                           np.array([0.0, 10.0]), ">"))
    np.testing.assert_allclose(lt, slow_f1(np.array([1.0, 2, 3]), np.array([0, 1, 1]),
                                           np.array([0.0, 10.0]), "<"))
    with pytest.raises(BaselineError, match="strictly increasing"):
        threshold_f1([1.0], [1], [2.0, 1.0])
    with pytest.raises(BaselineError, match="must be 0/1"):
        threshold_f1([1.0, 2.0], [0, 2], [1.5])
    with pytest.raises(BaselineError, match="NaN"):
        threshold_f1([np.nan, 2.0], [0, 1], [1.5])
    with pytest.raises(BaselineError, match="same shape"):
        threshold_f1([1.0, 2.0], [0], [1.5])


def test_index_predict_nodata_and_shapes(ndbi_set):
    b = fit_index_threshold(ndbi_set, indices=["NDBI"])
    # (C, H, W) -> (H, W); a pixel with a 0 band is 0 even where the index says mine
    image = np.array([[[1500, 1500, 0]], [[4000, 4000, 4000]]], np.uint16)  # B08, B11
    assert b.predict(image).tolist() == [[1, 1, 0]]
    assert b.predict(image[None]).shape == (1, 1, 3)
    with pytest.raises(BaselineError, match=r"shape \(3, 1, 3\).*2 bands in the order "
                                            r"\['B08', 'B11'\]"):
        b.predict(np.zeros((3, 1, 3)))
    with pytest.raises(BaselineError, match="shape"):
        b.predict(np.zeros((2, 3)))
    with pytest.raises(BaselineError, match="dtype"):
        b.predict(np.full((2, 1, 1), "a"))


# --------------------------------------------------------------------------------------------
# Pixel classifier


def test_pixel_classifier_recovers_planted_rule(classes_set):
    b = fit_pixel_classifier(classes_set, n_pixels=3000)
    assert isinstance(b, PixelBaseline)
    assert b.name == "pixel classifier (HistGradientBoosting)"
    assert b.classes == [0, 1, 2] and b.bands == BANDS
    pred, truth = predict_split(b, classes_set)
    np.testing.assert_array_equal(pred, truth)
    assert set(np.unique(truth).tolist()) == {0, 1, 2}


def test_pixel_draw_is_balanced_and_documented(classes_set):
    ds = open_patch_set(classes_set)
    train = ds.mask.values[ds.split.values == "train"]
    have = {c: int((train == c).sum()) for c in (0, 1, 2)}
    b = fit_pixel_classifier(classes_set, n_pixels=600, estimator=Recorder(random_state=0))
    assert b.valid_per_class == have
    # equal shares where every class has enough pixels
    assert min(have.values()) > 200 and b.pixels_per_class == {0: 200, 1: 200, 2: 200}
    x, y = b.estimator.seen_
    assert x.shape == (600, len(BANDS)) and np.bincount(y).tolist() == [200, 200, 200]
    # every drawn pixel is a real training pixel of its class, drawn without replacement
    image = np.moveaxis(ds.image.values[ds.split.values == "train"], 1, -1)
    for c in (0, 1, 2):
        pool = {tuple(p) for p in image[train == c].tolist()}
        drawn = [tuple(p) for p in x[y == c].astype(np.int64).tolist()]
        assert set(drawn) <= pool and len(set(drawn)) == len(drawn)
    # a small class gives all it has; the others share the rest
    big = fit_pixel_classifier(classes_set, n_pixels=3 * have[2] + 30)
    short = min(have, key=have.get)
    assert big.pixels_per_class[short] <= have[short]
    assert big.n_pixels == 3 * have[2] + 30


def test_pixel_classifier_is_deterministic_and_batch_independent(classes_set, monkeypatch):
    a = fit_pixel_classifier(classes_set, n_pixels=600, estimator=Recorder(random_state=0))
    b = fit_pixel_classifier(classes_set, n_pixels=600, estimator=Recorder(random_state=0))
    np.testing.assert_array_equal(a.estimator.seen_[0], b.estimator.seen_[0])
    monkeypatch.setattr(reading, "BATCH", 3)
    c = fit_pixel_classifier(classes_set, n_pixels=600, estimator=Recorder(random_state=0))
    np.testing.assert_array_equal(a.estimator.seen_[0], c.estimator.seen_[0])
    monkeypatch.undo()
    d = fit_pixel_classifier(classes_set, n_pixels=600, seed=7, estimator=Recorder(random_state=0))
    assert not np.array_equal(a.estimator.seen_[0], d.estimator.seen_[0])
    # the default estimator, twice: the same predictions
    p1, _ = predict_split(fit_pixel_classifier(classes_set, n_pixels=600), classes_set)
    p2, _ = predict_split(fit_pixel_classifier(classes_set, n_pixels=600), classes_set)
    np.testing.assert_array_equal(p1, p2)


def test_pixel_classifier_with_extra_set_and_nodata(tmp_path, blind_set):
    layers, mine = planted_ndbi()
    layers["B02"][:, :5] = 0  # nodata columns (in train, validation and test patches)
    store = write_set(tmp_path / "nodata.zarr", layers, mine)
    b = fit_pixel_classifier([store, blind_set], n_pixels=2000)
    assert b.samples == {str(store): 8, str(blind_set): 16}
    ds = open_patch_set(store)
    train = ds.split.values == "train"
    valid = (ds.image.values[train] > 0).all(axis=1)
    extra = 16 * SIZE * SIZE
    assert b.valid_per_class == {0: int((ds.mask.values[train][valid] == 0).sum()) + extra,
                                 1: int((ds.mask.values[train][valid] == 1).sum())}
    pred, truth = predict_split(b, store, batch=3)
    image = ds.image.values[ds.split.values == "test"]
    assert (pred[~(image > 0).all(axis=1)] == 0).all()
    ok = (image > 0).all(axis=1)
    np.testing.assert_array_equal(pred[ok], truth[ok])
    # (C, H, W) in, (H, W) out
    assert b.predict(image[0]).shape == (SIZE, SIZE)


def test_to_dict_and_describe(ndbi_set):
    i = fit_index_threshold(ndbi_set)
    p = fit_pixel_classifier(ndbi_set, n_pixels=500, bands=["B11", "B08"])
    for b in (i, p):
        d = json.loads(json.dumps(b.to_dict()))
        assert d["name"] == b.name and d["bands"] == b.bands and b.name in b.describe()
    d = i.to_dict()
    assert (d["index"], d["direction"], d["validation_macro_f1"]) == ("NDBI", ">", 1.0)
    assert d["threshold"] == i.threshold and d["n_pixels"] == 4 * SIZE * SIZE
    assert d["formula"] == "(B11 - B08) / (B11 + B08)"
    d = p.to_dict()
    assert d["params"]["random_state"] == 1117 and d["n_pixels"] == 500
    assert d["classes"] == [0, 1] and d["pixels_per_class"] == {"0": 250, "1": 250}
    assert p.bands == ["B11", "B08"]


# --------------------------------------------------------------------------------------------
# The test split is never read


def corrupt_test_samples(store: Path) -> list[int]:
    """Overwrite the chunk files of the test samples (one shard per sample: block=1) with
    garbage, so that any read of them raises, whatever the reader."""
    split = open_patch_set(store).split.values
    test = np.flatnonzero(split == "test").tolist()
    for i in test:
        for name in ("image", "mask"):
            files = [f for f in (store / name / "c" / str(i)).rglob("*") if f.is_file()]
            assert files
            for f in files:
                f.write_bytes(b"not a chunk" * 8)
    return test


def test_fits_never_read_the_test_split(tmp_path, monkeypatch, blind_set):
    layers, mine = planted_ndbi()
    store = write_set(tmp_path / "guard.zarr", layers, mine, block=1)
    test = corrupt_test_samples(Path(store))
    # the guard works: a test sample cannot be read, by zarr or by predict_split
    group = zarr.open_group(str(store), mode="r")
    with pytest.raises(Exception, match="checksum"):
        group["image"][test[0]]
    index = fit_index_threshold(store)
    with pytest.raises(Exception, match="checksum"):
        predict_split(index, store, split="test")
    # and which samples the fits read
    seen: list[int] = []
    real = reading.PatchSetSamples.read

    def spy(self, name, samples):
        seen.extend(np.asarray(samples).tolist())
        return real(self, name, samples)

    monkeypatch.setattr(reading.PatchSetSamples, "read", spy)
    fit_pixel_classifier([store, blind_set], n_pixels=500)
    split = open_patch_set(store).split.values
    train = np.flatnonzero(split == "train").tolist()
    # image and mask of each train sample of the site set, then of the 16 of the blind set
    assert sorted(seen) == sorted(2 * train + 2 * list(range(16)))
    seen.clear()
    b = fit_index_threshold(store)
    assert sorted(seen) == sorted(2 * np.flatnonzero(split == "validation").tolist())
    assert b.index == "NDBI" and b.macro_f1 == 1.0
    seen.clear()
    predict_split(b, store, split="validation")
    assert not set(seen) & set(test)


# --------------------------------------------------------------------------------------------
# Errors


def test_unknown_band(ndbi_set, blind_set):
    with pytest.raises(UnknownBandError, match=r"\['B05'\] are not in the patch set.*its bands "
                                               r"are \['B02', 'B03'"):
        fit_pixel_classifier(ndbi_set, bands=["B04", "B05"])
    with pytest.raises(UnknownBandError, match="B8A"):
        fit_index_threshold(ndbi_set, bands=["B8A"])
    b = SimpleNamespace(bands=["B04", "B8A"], predict=lambda image: image[:, 0] * 0)
    with pytest.raises(UnknownBandError, match="B8A"):
        predict_split(b, ndbi_set)
    assert issubclass(UnknownBandError, KeyError) and issubclass(UnknownBandError, LamesCubeError)


def test_empty_split(ndbi_set, blind_set):
    with pytest.raises(BaselineError, match=r"split='validation' selects no sample.*their "
                                            r"splits are .*\['train'\]"):
        fit_index_threshold(blind_set)
    with pytest.raises(BaselineError, match=r"split='tset' selects no sample.*'test', 'train', "
                                            r"'validation'"):
        fit_pixel_classifier(ndbi_set, split="tset")
    b = fit_index_threshold(ndbi_set, indices=["NDBI"])
    with pytest.raises(BaselineError, match="selects no sample"):
        predict_split(b, blind_set, split="test")
    assert issubclass(BaselineError, ValueError) and issubclass(BaselineError, LamesCubeError)


def test_no_split_column(tmp_path):
    layers, mine = planted_ndbi()
    store = write_set(tmp_path / "nosplit.zarr", layers, mine, splits=None)
    with pytest.raises(BaselineError, match="no 'split' column"):
        fit_pixel_classifier(store)


def test_no_positive_pixel(tmp_path, blind_set):
    layers, _ = planted_ndbi()
    store = write_set(tmp_path / "nomine.zarr", layers, np.zeros((64, 64), np.uint8))
    with pytest.raises(BaselineError, match="no mine pixel among its 1,024 valid pixels"):
        fit_index_threshold(store)
    with pytest.raises(BaselineError, match=r"only class\(es\) \[0\].*at least 2 classes"):
        fit_pixel_classifier(blind_set)


def test_index_baseline_is_binary_only(classes_set):
    with pytest.raises(BaselineError, match=r"classes \[2\] besides 0 and 1.*binary-only"):
        fit_index_threshold(classes_set)


def test_no_index_possible(ndbi_set):
    with pytest.raises(BaselineError, match=r"bands available \['B08', 'B12'\].*'NDBI': "
                                            r"\['B08', 'B11'\]"):
        fit_index_threshold(ndbi_set, bands=["B08", "B12"])
    with pytest.raises(BaselineError, match=r"not indices of.*pick from"):
        fit_index_threshold(ndbi_set, indices=["NDXI"])
    # an index whose bands are missing is skipped, and recorded
    b = fit_index_threshold(ndbi_set, bands=["B08", "B11", "B12"], indices=["NDBI", "NDVI"])
    assert b.skipped == {"NDVI": ["B04"]} and b.index == "NDBI"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_pixels": 1}, "n_pixels=1 must be an integer >= 2"),
    ({"n_pixels": 2.5}, "n_pixels=2.5"),
    ({"seed": -1}, "seed=-1"),
    ({"split": []}, "split=.* must be a split name"),
    ({"bands": []}, r"bands=\[\] selects no band"),
    ({"estimator": "tree"}, "not a scikit-learn classifier"),
])
def test_bad_arguments_pixel(ndbi_set, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_pixel_classifier(ndbi_set, **kwargs)


def test_bad_arguments_other(ndbi_set):
    with pytest.raises(BaselineError, match="n_thresholds=1"):
        fit_index_threshold(ndbi_set, n_thresholds=1)
    with pytest.raises(BaselineError, match="stores must be"):
        fit_index_threshold([])
    b = fit_index_threshold(ndbi_set, indices=["NDBI"])
    with pytest.raises(BaselineError, match="batch=0"):
        predict_split(b, ndbi_set, batch=0)
    with pytest.raises(BaselineError, match=r"must be the bands of NDBI, \['B08', 'B11'\]"):
        IndexBaseline("NDBI", ["B08"], 0.1, ">", 1.0, 1, 1, [], [], 256, [], {}, {})
    with pytest.raises(BaselineError, match="direction='>='"):
        IndexBaseline("NDBI", ["B08", "B11"], 0.1, ">=", 1.0, 1, 1, [], [], 256, [], {}, {})
    with pytest.raises(BaselineError, match="pass a fitted baseline"):
        predict_split(object(), ndbi_set)  # type: ignore[arg-type]


def test_bottom_k_is_the_k_smallest_keys():
    rng = np.random.default_rng(3)
    keys = rng.random(5000)
    items = np.arange(5000)[:, None]
    keep = pixel_baseline._BottomK(300, 1, items.dtype)
    for lo in range(0, 5000, 97):
        keep.add(keys[lo:lo + 97], items[lo:lo + 97])
    np.testing.assert_array_equal(keep.smallest(120)[:, 0], np.argsort(keys)[:120])
    assert pixel_baseline._quotas({0: 10, 1: 0, 2: 5}, 100) == {0: 10, 2: 5}
