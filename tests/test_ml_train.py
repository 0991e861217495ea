"""Training: the LAMES schedule and class weights against hand computations, determinism,
the test split never read, checkpoints and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from lames_cube.errors import (
    BandMismatchError,
    CheckpointError,
    ClassWeightsError,
    ModelConfigError,
    NoPositivePixelsError,
    PatchSizeError,
    TrainingConfigError,
)
from lames_cube.ml.checkpoint import load_checkpoint, load_model
from lames_cube.ml.data import DatasetSelectionError
from lames_cube.ml.evaluation import evaluate
from lames_cube.ml.models import build_model, count_parameters, model_spec
from lames_cube.ml.training import class_counts, lames_class_weights, make_scheduler, train
from lames_cube.patchset import open_patch_set
from lames_cube.testing.ml_sets import planted_patch_set

FAST = {"epochs": 2, "batch_size": 4, "threads": 1, "progress": False, "step_size": 3}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_patch_set(tmp_path_factory.mktemp("ml") / "sites.zarr", size=32)


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory):
    store = planted[0]
    return train(store, tmp_path_factory.mktemp("run") / "checkpoint.pt", **FAST)


# --------------------------------------------------------------------------------------------
# The schedule and the class weights, by hand


def triangular2(step: int, base: float, peak: float, half: int) -> float:
    """The triangular2 policy written out: within cycle c (0-based) of 2*half steps, a
    triangle from base to base + (peak - base) / 2**c and back."""
    cycle, within = divmod(step, 2 * half)
    rise = within if within <= half else 2 * half - within
    return base + (peak - base) / 2**cycle * rise / half


def test_learning_rate_follows_triangular2_by_hand():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3, weight_decay=1e-5)
    sched = make_scheduler(opt, base_lr=1e-4, max_lr=1e-3, step_size=5)
    seen = []
    for _ in range(32):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    hand = [triangular2(s, 1e-4, 1e-3, 5) for s in range(32)]
    np.testing.assert_allclose(seen, hand, rtol=1e-9)
    assert max(seen[:10]) == pytest.approx(1e-3) and max(seen[10:20]) == pytest.approx(5.5e-4)
    # the LAMES default: 2000 up, 2000 down; the peak of cycle 2 is at step 6000
    opt2 = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched2 = make_scheduler(opt2)
    assert (sched2.total_size, sched2.step_ratio) == (4000, 0.5)
    for _ in range(6000):
        opt2.step()
        sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(triangular2(6000, 1e-4, 1e-3, 2000))
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-4 + 0.9e-3 / 2)


def test_class_weights_equal_a_hand_count(planted, trained):
    store, mask, table = planted
    train_rows = table[table.split == "train"]
    size = 32
    ones = sum(int(mask[r:r + size, c:c + size].sum()) for r, c in
               zip(train_rows.row, train_rows.col, strict=True))
    total = len(train_rows) * size * size
    assert class_counts(store, 2, split="train").tolist() == [total - ones, ones]
    hand = [ones / (total - ones), 1.0]  # w_c = f_0 / f_c = [1, f0/f1], divided by f0/f1
    np.testing.assert_allclose(load_checkpoint(trained)["class_weights"], hand, rtol=1e-12)
    np.testing.assert_allclose(lames_class_weights([total - ones, ones]), hand, rtol=1e-12)


def test_sector_weights_by_hand():
    counts = [800, 100, 50, 0 + 25]
    w = np.array([800 / 800, 800 / 100, 800 / 50, 800 / 25]) / 32
    np.testing.assert_allclose(lames_class_weights(counts), w)


# --------------------------------------------------------------------------------------------
# Determinism and what the checkpoint holds


def test_same_seed_twice_gives_identical_checkpoints_and_metrics(planted, trained, tmp_path):
    again = train(planted[0], tmp_path / "again.pt", **FAST)
    a, b = load_checkpoint(trained), load_checkpoint(again)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in a["curve"]]
    assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in b["curve"]]
    ra = evaluate(trained, planted[0], threads=1, progress=False)
    rb = evaluate(again, planted[0], threads=1, progress=False)
    assert ra["models"] == rb["models"]
    other = train(planted[0], tmp_path / "other.pt", **{**FAST, "seed": 5})
    c = load_checkpoint(other)["state_dict"]
    assert any(not torch.equal(t, c[k]) for k, t in a["state_dict"].items())


def test_checkpoint_records_the_run_and_loads_weights_only(planted, trained):
    raw = torch.load(trained, map_location="cpu", weights_only=True)
    ds = open_patch_set(planted[0])
    assert raw["bands"] == [str(b) for b in ds.band.values]
    np.testing.assert_allclose(raw["band_mean"], ds.attrs["band_mean"], rtol=1e-6)
    np.testing.assert_allclose(raw["band_std"], ds.attrs["band_std"], rtol=1e-6)
    assert raw["classes"] == ["no mine", "mine site"] and raw["task"] == "site"
    assert (raw["patch_size"], raw["crs"], raw["resolution"], raw["seed"]) == (
        32, "EPSG:32719", 10.0, 1117)
    assert raw["lames_cube_version"] and raw["model"]["encoder"] == "tu-mobilenetv3_small_100"
    assert [e["epoch"] for e in raw["curve"]] == [1, 2]
    best = max(raw["curve"], key=lambda e: e["val_macro_f1"])
    assert [e["best"] for e in raw["curve"]] == [e is best for e in raw["curve"]]
    assert raw["best_epoch"] == best["epoch"]
    model, _ = load_model(trained)
    assert not model.training
    rebuilt = build_model(raw["model"], weights=trained).eval()
    x = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


# --------------------------------------------------------------------------------------------
# The test split is never read during training or selection


def test_training_never_reads_the_test_split(planted, tmp_path, monkeypatch):
    store = planted[0]
    test = set(np.flatnonzero(open_patch_set(store).split.values == "test").tolist())
    touched: list[int] = []

    def indices(selection):
        first = selection[0] if isinstance(selection, tuple) else selection
        if isinstance(first, slice):
            return range(*first.indices(10**6))
        return np.atleast_1d(np.asarray(first)).tolist()

    def guard(method):
        def wrapped(self, selection, *args, **kwargs):
            if str(self.path).endswith(("image", "mask")) and str(store) in str(self.store):
                bad = test.intersection(indices(selection))
                if bad:
                    raise RuntimeError(f"test samples {sorted(bad)} were read")
                touched.extend(indices(selection))
            return method(self, selection, *args, **kwargs)
        return wrapped

    for name in ("__getitem__", "get_orthogonal_selection", "get_basic_selection"):
        monkeypatch.setattr(zarr.Array, name, guard(getattr(zarr.Array, name)))
    train(store, tmp_path / "guarded.pt", **FAST)
    assert touched and not test.intersection(touched)
    with pytest.raises(RuntimeError, match="test samples"):  # the guard does see test reads
        evaluate(tmp_path / "guarded.pt", store, split="test", threads=1, progress=False)


def test_validation_runs_in_eval_mode_without_gradients(planted):
    from torch.utils.data import DataLoader

    from lames_cube.ml.data import PatchDataset
    from lames_cube.ml.training import validate

    model = build_model("small", in_channels=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = DataLoader(PatchDataset(planted[0], split="validation"), batch_size=2)
    model.train()
    out = validate(model, loader, n_classes=2, loss_fn=torch.nn.CrossEntropyLoss(),
                   device=torch.device("cpu"))
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():  # BatchNorm running stats untouched
        assert torch.equal(v, before[k]), k
    assert 0 <= out["val_macro_f1"] <= 1 and out["val_loss"] > 0


# --------------------------------------------------------------------------------------------
# Models


def test_lames_unet_resnet50_builds_runs_forward_and_backward():
    import segmentation_models_pytorch as smp  # importable first: lames_cube.ml prepared it

    model = build_model("lames", in_channels=3, classes=2)
    reference = smp.Unet("resnet50", encoder_weights=None, in_channels=3, classes=2)
    n = count_parameters(model)
    print(f"U-Net/ResNet-50, 3 bands, 2 classes: {n:,} parameters")
    assert n == sum(p.numel() for p in reference.parameters()) > 30_000_000
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 2, 64, 64)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_model_settings_and_patch_sizes():
    assert model_spec("small", classes=8).classes == 8
    with pytest.raises(PatchSizeError, match=r"multiples of 16, .*; use 32 or 48 px"):
        train_spec = model_spec("small")
        from lames_cube.ml.models import check_patch_size

        check_patch_size(train_spec, 40)
    with pytest.raises(ModelConfigError, match="not a preset"):
        model_spec("huge")
    with pytest.raises(ModelConfigError, match="decoder_channels"):
        model_spec({"preset": "small", "decoder_channels": [8, 8]})
    with pytest.raises(ModelConfigError, match="cannot build a U-Net with encoder='nonet'"):
        build_model({"encoder": "nonet"})


# --------------------------------------------------------------------------------------------
# Bad input


def test_a_patch_size_the_model_cannot_take(tmp_path):
    store, _, _ = planted_patch_set(tmp_path / "p40.zarr", size=40, rows=1, cols=3)
    with pytest.raises(PatchSizeError, match="patch size 40 px does not fit"):
        train(store, tmp_path / "x.pt", **FAST)
    assert not (tmp_path / "x.pt").exists()


def test_a_read_only_checkpoint_folder_is_refused_before_training(tmp_path, monkeypatch):
    """The checkpoint's folder is checked before the patch set is even opened (it does not
    exist here), not after hours of training. Read-only as in lames_cube.testing.disk: the
    kernel refuses an ordinary user; as root the probe applies the permission bits."""
    from lames_cube.errors import OutputNotWritableError
    from lames_cube.testing.disk import make_read_only

    folder = tmp_path / "ro"
    folder.mkdir()
    try:
        make_read_only(folder, monkeypatch)
        with pytest.raises(OutputNotWritableError, match=r"Cannot write the checkpoint .*x\.pt: "
                           r"the folder .*ro is not writable"):
            train(tmp_path / "no-such-set.zarr", folder / "x.pt", **FAST)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_training_split_without_mine_pixels(tmp_path):
    store, _, _ = planted_patch_set(tmp_path / "empty.zarr", rows=2, cols=3, mines=False)
    with pytest.raises(NoPositivePixelsError, match=r"no pixel of class\(es\) \['mine site'\]"):
        train(store, tmp_path / "x.pt", **FAST)


def test_a_validation_split_without_mine_pixels(tmp_path):
    splits = ["train", "train", "validation"]
    store, _, _ = planted_patch_set(tmp_path / "v.zarr", rows=1, cols=3, splits=splits)


    zarr.open_group(str(store), mode="r+")["mask"][2] = 0  # the validation window: no mine
    with pytest.raises(NoPositivePixelsError, match=r"'validation' split .*\['mine site'\].*model selection scores every class"):
        train(store, tmp_path / "x.pt", class_weights=[1.0, 1.0], **FAST)


def test_statistics_from_other_splits_are_refused(tmp_path):
    from lames_cube.errors import TrainingConfigError as Err

    store, _, _ = planted_patch_set(tmp_path / "s.zarr", rows=1, cols=3)


    group = zarr.open_group(str(store), mode="r+")
    group.attrs.update({"stats_split": None, "stats_from": "all samples"})
    with pytest.raises(Err, match="come from 'all samples', not from the training split"):
        train(store, tmp_path / "x.pt", **FAST)


def test_starting_weights_with_other_bands(trained, tmp_path):
    swapped, _, _ = planted_patch_set(tmp_path / "sw.zarr", bands=("B03", "B02", "B04", "B08",
                                                                  "B11", "B12"))
    with pytest.raises(BandMismatchError, match=r"trained on bands \['B02', 'B03'"):
        train(swapped, tmp_path / "x.pt", weights=trained, **FAST)


def test_training_keeps_the_callers_random_state(planted, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(planted[0], tmp_path / "rng.pt", **{**FAST, "epochs": 1})
    assert torch.equal(torch.rand(3), expected)


def test_class_weights_of_the_wrong_length(planted, tmp_path):
    with pytest.raises(ClassWeightsError, match=r"class_weights=\[1.0, 2.0, 3.0\] must be 2 positive numbers"):
        train(planted[0], tmp_path / "x.pt", class_weights=[1.0, 2.0, 3.0], **FAST)
    with pytest.raises(ClassWeightsError, match="only named rule is 'lames'"):
        train(planted[0], tmp_path / "x.pt", class_weights="inverse", **FAST)


def test_bad_training_settings(planted, tmp_path):
    with pytest.raises(TrainingConfigError, match=r"epochs=0 must be an integer >= 1; lr_range"):
        train(planted[0], tmp_path / "x.pt", lr_range=(1e-3, 1e-4), **{**FAST, "epochs": 0})
    with pytest.raises(TrainingConfigError, match="epochs=0"):
        train(planted[0], tmp_path / "x.pt", **{**FAST, "epochs": 0})
    with pytest.raises(TrainingConfigError, match="torch sees no CUDA"):
        train(planted[0], tmp_path / "x.pt", device="cuda", **FAST)
    with pytest.raises(DatasetSelectionError, match="validation"):
        train(planted[0], tmp_path / "x.pt", validation_split="holdout", **FAST)


def test_a_checkpoint_whose_bands_differ_from_the_data(trained, tmp_path):
    rgb, _, _ = planted_patch_set(tmp_path / "rgb.zarr", rows=1, cols=3,
                                  bands=("B02", "B03", "B04"))
    with pytest.raises(BandMismatchError, match=r"missing \['B08', 'B11', 'B12'\]"):
        evaluate(trained, rgb, progress=False)


def test_a_corrupt_or_foreign_checkpoint(trained, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_checkpoint(cut)
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(2)}, bare)
    with pytest.raises(CheckpointError, match="not a lames_cube checkpoint"):
        load_checkpoint(bare)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(ModelConfigError, match="do not fit this model"):
        build_model("small", in_channels=3, weights=trained)
    with pytest.raises(ModelConfigError, match=r"the weights file .* does not exist; pass a local"):
        build_model("small", weights=tmp_path / "none.pt")
    with pytest.raises(ModelConfigError, match="corrupt, truncated"):
        build_model("small", in_channels=6, weights=cut)


def test_each_epoch_sees_every_site_window_and_fresh_extra_windows():
    from lames_cube.ml.training import _EpochSampler

    s = _EpochSampler(5, 100, 10, seed=3)
    epochs = []
    for e in range(3):
        s.set_epoch(e)
        order = list(s)
        assert len(order) == len(s) == 15 and len(set(order)) == 15
        assert set(range(5)) <= set(order) and all(5 <= i < 105 for i in order if i >= 5)
        epochs.append(order)
    assert epochs[0] != epochs[1]
    s.set_epoch(1)
    assert list(s) == epochs[1]  # a pure function of (seed, epoch)
    every = _EpochSampler(5, 7, None, seed=3)
    assert sorted(every) == list(range(12))
