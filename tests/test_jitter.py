"""Radiometric jitter of training windows (issue 24, item 5): the draw, its effect by hand,
nodata, the datasets and the checkpoint's record, the recipes' ablation row."""

from __future__ import annotations

import numpy as np
import pytest

from lames_cube.ml.jitter import (
    HAZE_WEIGHTS,
    Jitter,
    JitterError,
    JitterParams,
    check_jitter_input,
    jitter,
    parse_jitter,
)

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def test_jitter_by_hand_keeps_nodata_and_clips():
    image = np.array([[[0, 1000, 3000], [2000, 65_000, 1]]], np.uint16)
    params = JitterParams(gain=np.array([1.1]), contrast=1.2, haze=np.array([50.0]))
    out = jitter(image, params)
    mean = np.mean([1000, 3000, 2000, 65_000, 1])
    expected = (mean + 1.2 * (image.astype(float) - mean)) * 1.1 + 50.0
    expected = np.clip(expected, 1, 65_535)
    expected[0, 0, 0] = 0  # nodata stays nodata
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert jitter(image, None) is image
    # nodata stays nodata band by band: the other band of that pixel is jittered as the rest
    two = np.stack([image[0], np.full_like(image[0], 500)])
    out = jitter(two, JitterParams(gain=np.ones(2), contrast=1.0, haze=np.array([9.0, 9.0])))
    assert out[0, 0, 0] == 0 and (out[1] == 509).all()
    with pytest.raises(JitterError, match=r"one window \(band, y, x\) of 1 bands; got an array "
                                          r"of shape \(2, 3\)"):
        jitter(image[0], params)


def test_draws_are_seeded_per_window_and_span_the_settings():
    j = Jitter(brightness=0.1, contrast=0.2, band_gain=0.05, haze=0.02, probability=1.0)
    a = j.draw(BANDS, seed=3, epoch=1, key=7)
    b = j.draw(BANDS, seed=3, epoch=1, key=7)
    np.testing.assert_array_equal(a.gain, b.gain)
    assert a.contrast == b.contrast
    others = [j.draw(BANDS, seed=3, epoch=e, key=k) for e in range(3) for k in range(200)]
    gains = np.array([p.gain for p in others])
    assert len({p.contrast for p in others}) == len(others)
    # brightness 1 +- 0.1 times band gain 1 +- 0.05: within (0.855, 1.155), spread over it
    assert 0.855 < gains.min() < 0.88 and 1.13 < gains.max() < 1.155
    contrasts = np.array([p.contrast for p in others])
    assert 0.8 <= contrasts.min() < 0.82 and 1.18 < contrasts.max() <= 1.2
    haze = np.array([p.haze for p in others])
    assert haze.max() <= 200.0 and haze[:, 0].max() > 190  # up to 0.02 reflectance in B02
    # more haze in the blue than in the SWIR, in the ratios of HAZE_WEIGHTS
    np.testing.assert_allclose(haze[:, 5], haze[:, 0] * HAZE_WEIGHTS["B12"])
    assert list(HAZE_WEIGHTS[b] for b in BANDS) == sorted((HAZE_WEIGHTS[b] for b in BANDS),
                                                          reverse=True)


def test_probability_leaves_windows_unchanged():
    never = Jitter(probability=0.0)
    assert all(never.draw(BANDS, seed=0, epoch=0, key=k) is None for k in range(50))
    some = Jitter(probability=0.5)
    share = np.mean([some.draw(BANDS, seed=0, epoch=0, key=k) is None for k in range(2000)])
    assert 0.45 < share < 0.55


def test_bad_settings_raise_with_the_values():
    with pytest.raises(JitterError, match=r"finite numbers >= 0; got brightness=-0.1"):
        Jitter(brightness=-0.1)
    with pytest.raises(JitterError, match=r"brightness, contrast and band_gain must be < 1 "
                                          r"\(got \[\('contrast', 1.5\)\]\)"):
        Jitter(contrast=1.5)
    with pytest.raises(JitterError, match="unknown jitter settings \\['hase'\\]"):
        parse_jitter({"hase": 0.1})
    with pytest.raises(JitterError, match="jitter='yes' must be true, false"):
        parse_jitter("yes")
    with pytest.raises(JitterError, match=r"no haze weight for bands \['SCL'\]"):
        Jitter(probability=1.0).draw(["B02", "SCL"], seed=0, epoch=0, key=0)
    with pytest.raises(JitterError, match="got probability=True"):
        Jitter(probability=True)
    assert parse_jitter(True) == Jitter() and parse_jitter(None) is None
    assert parse_jitter({"haze": 0.0}).to_dict() == {**Jitter().to_dict(), "haze": 0.0}


def test_windows_jitter_cannot_apply_to_are_refused_before_training():
    float_set = "float32 with nodata 0; train with jitter=False or rebuild it as uint16"
    with pytest.raises(JitterError, match=float_set):
        check_jitter_input(Jitter(), BANDS, np.float32, 0, "s.zarr")
    with pytest.raises(JitterError, match="holds uint16 with nodata 65535"):
        check_jitter_input(Jitter(), BANDS, np.uint16, 65535, "s.zarr")
    with pytest.raises(JitterError, match=r"no haze weight for bands \['SCL'\] of s.zarr"):
        check_jitter_input(Jitter(), ["B02", "SCL"], np.uint16, 0, "s.zarr")
    check_jitter_input(None, ["SCL"], np.float32, -1, "s.zarr")  # no jitter: anything goes
    check_jitter_input(Jitter(), BANDS, np.int16, None, "s.zarr")


def test_patch_dataset_jitters_each_item_as_drawn(tmp_path):
    from lames_cube.ml.data import PatchDataset
    from lames_cube.testing.ml_sets import planted_patch_set

    store, _, _ = planted_patch_set(tmp_path / "p.zarr", size=32)
    plain = PatchDataset(store, split="train", normalise=False)
    shaken = PatchDataset(store, split="train", normalise=False,
                          jitter={"probability": 1.0}, seed=5)
    for i in range(len(plain)):
        raw, mask = plain[i]
        image, mask2 = shaken[i]
        assert (mask == mask2).all()
        params = Jitter(probability=1.0).draw(plain.bands, seed=5, epoch=0,
                                               key=int(plain.indices[i]))
        np.testing.assert_allclose(image.numpy(), jitter(raw.numpy().astype(np.uint16), params),
                                   rtol=1e-6)
    shaken.set_epoch(1)  # another epoch, other draws
    assert not np.allclose(shaken[0][0].numpy(), PatchDataset(
        store, split="train", normalise=False, jitter={"probability": 1.0}, seed=5)[0][0].numpy())


@pytest.mark.parametrize("setting", [True, False, {"haze": 0.0, "probability": 1.0}])
def test_train_records_the_jitter_in_the_checkpoint(tmp_path, setting):
    from lames_cube.ml import train
    from lames_cube.ml.checkpoint import load_checkpoint
    from lames_cube.testing.ml_sets import planted_patch_set

    store, _, _ = planted_patch_set(tmp_path / "p.zarr", size=32)
    path = train(store, tmp_path / "c.pt", epochs=1, batch_size=4, threads=1, progress=False,
                 jitter=setting)
    recorded = load_checkpoint(path)["settings"]["jitter"]
    expected = parse_jitter(setting)
    assert recorded == (None if expected is None else expected.to_dict())


def test_recipes_jitter_by_default_with_a_no_jitter_ablation_row():
    from lames_cube.recipes.experiments import (
        ExperimentRecipeError,
        load_experiment,
        parse_experiment,
    )

    for name in ("demo-site-detection", "site-detection"):
        recipe = load_experiment(name)
        assert recipe.train.get("jitter", True) is not False  # train()'s default: on
        ablation = [v for v, t in recipe.variant_train.items() if t.get("jitter") is False]
        assert ablation, f"{name} has no no-jitter variant"
        for variant in ablation:  # the same extra windows as a jittered variant
            assert any(recipe.variants[v] == recipe.variants[variant]
                       for v in recipe.variants if v not in ablation)
    with pytest.raises(ExperimentRecipeError, match=r"variants.b.train.jitter spreads must be"):
        parse_experiment({"kind": "experiment", "name": "x", "patches": "p",
                          "variants": {"b": {"train": {"jitter": {"haze": -1}}}}})
