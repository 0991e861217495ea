"""Guards on lames_cube.ml.training:

- the loss the trainer minimises (and validates with) is the cross-entropy weighted by the class
  weights it records in the checkpoint: ``train_loss`` of a one-step run and ``val_loss`` equal
  a weighted cross-entropy computed by hand (numpy, float64) from the model's logits;
- model selection keeps the epoch of the highest validation macro F1 (not the lowest
  validation loss, not the last epoch), both in the recorded ``best_epoch`` and in the weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import lames_cube.ml.training as training
from lames_cube.ml.checkpoint import load_checkpoint, load_model
from lames_cube.ml.data import PatchDataset
from lames_cube.ml.models import build_model, model_spec
from lames_cube.testing.ml_sets import planted_patch_set

SIZE = 32
# 3 x 4 windows: columns 0-1 train (6 samples), column 2 validation (3), column 3 test (3)
ONE_STEP = {"epochs": 1, "batch_size": 8, "threads": 1, "progress": False, "augment": False,
            "jitter": False, "step_size": 3}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_patch_set(tmp_path_factory.mktemp("guards-ml") / "sites.zarr", size=SIZE)


def _all(data: PatchDataset) -> tuple[torch.Tensor, np.ndarray]:
    items = [data[i] for i in range(len(data))]
    return (torch.stack([im for im, _ in items]),
            np.stack([m.numpy() for _, m in items]).astype(np.int64))


def _weighted_ce(logits: torch.Tensor, mask: np.ndarray, weight) -> float:
    """sum_i w[y_i] * -log softmax(z_i)[y_i] / sum_i w[y_i], in float64 numpy."""
    z = logits.detach().double().numpy()                       # (N, K, H, W)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    picked = np.take_along_axis(logp, mask[:, None], axis=1)[:, 0]
    w = np.asarray(weight, np.float64)[mask]
    return float((w * -picked).sum() / w.sum())


@pytest.mark.parametrize("class_weights", [[0.25, 1.0], "lames"])
def test_the_loss_is_the_cross_entropy_weighted_by_the_recorded_weights(planted, tmp_path,
                                                                         class_weights):
    store = planted[0]
    path = training.train(store, tmp_path / "one-step.pt", class_weights=class_weights,
                          **ONE_STEP)
    meta = load_checkpoint(path)
    weight = np.asarray(meta["class_weights"], np.float64)
    if class_weights != "lames":
        assert weight.tolist() == class_weights  # recorded as given
    train_data = PatchDataset(store, split="train", augment=False)
    images, masks = _all(train_data)
    assert len(train_data) == 6 and len(meta["curve"]) == 1  # precondition: one batch, one step
    assert meta["curve"][0]["step"] == 1
    counts = np.bincount(masks.ravel(), minlength=2)
    assert counts.min() > 0 and abs(weight[0] - weight[1]) > 0.1  # weighting can matter

    # train_loss: the loss of the one step, i.e. of the initial model (seeded as train()
    # seeds it) on the whole training batch in train mode (BatchNorm on batch statistics,
    # which the order of the batch does not change)
    spec = model_spec("small", in_channels=images.shape[1], classes=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(meta["seed"])
        net = build_model(spec)
    net.train()
    with torch.no_grad():
        logits = net(images)
    hand = _weighted_ce(logits, masks, weight)
    plain = _weighted_ce(logits, masks, [1.0, 1.0])
    assert abs(hand - plain) > 1e-3 * plain  # precondition: the weights change the number
    assert meta["curve"][0]["train_loss"] == pytest.approx(hand, rel=1e-4)

    # val_loss: the weighted loss of the saved (best = only) model over the validation split
    model, _ = load_model(meta)
    val = PatchDataset(store, split="validation", stats=(meta["band_mean"], meta["band_std"]))
    vimages, vmasks = _all(val)
    with torch.no_grad():
        vlogits = model(vimages)
    vhand = _weighted_ce(vlogits, vmasks, weight)
    assert abs(vhand - _weighted_ce(vlogits, vmasks, [1.0, 1.0])) > 1e-3 * vhand
    assert meta["curve"][0]["val_loss"] == pytest.approx(vhand, rel=1e-4)


def test_the_checkpoint_is_the_epoch_of_the_best_validation_macro_f1(planted, tmp_path,
                                                                      monkeypatch):
    """A scripted validation: macro F1 peaks at epoch 2 while the loss keeps falling to the
    last epoch; the checkpoint must be epoch 2's, weights included."""
    f1 = [0.30, 0.80, 0.60, 0.70]
    loss = [0.90, 0.70, 0.20, 0.10]  # lowest (and last) at epoch 4
    seen: list[dict] = []

    def scripted(model, loader, *, n_classes, loss_fn, device):
        k = len(seen)
        seen.append(copy.deepcopy(model.state_dict()))
        return {"val_loss": loss[k], "val_macro_f1": f1[k], "val_micro_accuracy": 0.5,
                "val_mean_iou": 0.5}

    monkeypatch.setattr(training, "validate", scripted)
    path = training.train(planted[0], tmp_path / "selected.pt",
                          **{**ONE_STEP, "epochs": len(f1)})
    meta = load_checkpoint(path)
    assert len(seen) == len(f1)  # precondition: validated once per epoch
    best = int(np.argmax(f1)) + 1
    assert best not in (int(np.argmin(loss)) + 1, len(f1))  # the script separates the rules
    assert meta["best_epoch"] == best
    assert meta["best_val_macro_f1"] == pytest.approx(max(f1))
    assert [e["best"] for e in meta["curve"]] == [e == best for e in range(1, len(f1) + 1)]
    assert [e["val_macro_f1"] for e in meta["curve"]] == f1
    # the weights saved are those the model had when epoch 2 was validated
    last = seen[-1]
    assert any(not torch.equal(seen[best - 1][k], last[k]) for k in last)  # epochs differ
    for key, tensor in meta["state_dict"].items():
        assert torch.equal(tensor, seen[best - 1][key]), key
