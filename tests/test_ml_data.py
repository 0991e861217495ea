"""torch Datasets over patch sets and cube stores: values against the stores, joint dihedral
augmentation, multi-worker DataLoaders that yield what a single process yields."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros
from torch.utils.data import DataLoader

from lames_cube import io
from lames_cube.errors import InvalidGridError, SimulatedCrash, UnknownBandError
from lames_cube.ml import (
    CubeWindowDataset,
    DatasetSelectionError,
    PatchDataset,
    dihedral,
    dihedral_index,
)
from lames_cube.patches import patch_table
from lames_cube.patchset import PatchSource, open_patch_set, write_patch_set
from lames_cube.testing.crash import crash_after

BANDS = ["B02", "B03", "B04", "B08"]


def grid(height: int, width: int, x0: float = 300_000) -> GeoBox:
    return GeoBox.from_bbox((x0, 7_000_000, x0 + width * 10, 7_000_000 + height * 10),
                            "EPSG:32719", resolution=10)


def make_cube(g: GeoBox, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    base = xr_zeros(g, dtype="uint16")
    layers = [base.copy(data=rng.integers(0, 5_000, base.shape).astype(np.uint16))
              for _ in BANDS]
    out = xr.concat(layers, "band").assign_coords(band=BANDS)
    out.attrs["nodata"] = 0
    return out


def make_labels(g: GeoBox, seed: int = 1) -> xr.DataArray:
    base = xr_zeros(g, dtype="uint8")
    return base.copy(data=np.random.default_rng(seed).integers(0, 3, base.shape).astype(np.uint8))


@pytest.fixture(scope="module")
def patch_set(tmp_path_factory):
    """12 windows of 16 px over a 4-band cube: 8 train, 4 test; kinds site/background."""
    g = grid(48, 64)
    cube, labels = make_cube(g), make_labels(g)
    table = patch_table(g, size=16)
    table["split"] = ["test" if i % 3 == 0 else "train" for i in range(len(table))]
    table["kind"] = ["site" if i % 2 else "background" for i in range(len(table))]
    store = write_patch_set(PatchSource(cube, table, labels),
                            tmp_path_factory.mktemp("ml") / "p.zarr", block=5, progress=False)
    return store, cube, labels, table


# --------------------------------------------------------------------------------------------
# Dihedral transforms


def test_dihedral_transforms_are_distinct_joint_and_match_numpy():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, (3, 6, 6))
    mask = np.zeros((6, 6), np.int64)
    mask[1, 4] = 1  # marks one pixel of the image
    marked = image[:, 1, 4].copy()
    seen = set()
    for k in range(8):
        out_i, out_m = dihedral(image, mask, k)
        seen.add(out_i.tobytes())
        assert out_m.sum() == 1
        np.testing.assert_array_equal(out_i[:, out_m == 1][:, 0], marked)  # still aligned
        # independent truth: NumPy's rot90 / fliplr on each band
        ref = np.rot90(np.flip(image, -1) if k >= 4 else image, k % 4, axes=(1, 2))
        np.testing.assert_array_equal(out_i, ref)
        t_i, t_m = dihedral(torch.from_numpy(image), torch.from_numpy(mask), k)
        assert isinstance(t_i, torch.Tensor)
        np.testing.assert_array_equal(t_i.numpy(), out_i)
        np.testing.assert_array_equal(t_m.numpy(), out_m)
    assert len(seen) == 8
    np.testing.assert_array_equal(dihedral(image, mask, 0)[0], image)
    for bad in (-1, 8, 1.0, True):
        with pytest.raises(DatasetSelectionError, match="integer from 0 to 7"):
            dihedral(image, mask, bad)
    with pytest.raises(DatasetSelectionError, match="image's last two dims"):
        dihedral(image, mask[:5], 1)


def test_dihedral_index_is_deterministic_and_uses_all_eight():
    draws = [dihedral_index(7, 0, i) for i in range(400)]
    assert draws == [dihedral_index(7, 0, i) for i in range(400)]
    assert set(draws) == set(range(8))
    assert draws != [dihedral_index(7, 1, i) for i in range(400)]


# --------------------------------------------------------------------------------------------
# PatchDataset


def test_patch_dataset_standardises_with_the_training_statistics(patch_set):
    store, cube, labels, table = patch_set
    ds = open_patch_set(store)
    data = PatchDataset(store)
    assert len(data) == len(table) and data.bands == BANDS
    mean = np.asarray(ds.attrs["band_mean"])[:, None, None]
    std = np.asarray(ds.attrs["band_std"])[:, None, None]
    for i in (0, 5, 11):
        image, mask = data[i]
        assert image.dtype == torch.float32 and mask.dtype == torch.int64
        assert tuple(image.shape) == (4, 16, 16) and tuple(mask.shape) == (16, 16)
        r, c = int(table.row.iloc[i]), int(table.col.iloc[i])
        raw = cube.values[:, r:r + 16, c:c + 16]
        np.testing.assert_allclose(image.numpy(), (raw - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(mask.numpy(), labels.values[r:r + 16, c:c + 16])
    raw_image, _ = PatchDataset(store, normalise=False)[3]
    r, c = int(table.row.iloc[3]), int(table.col.iloc[3])
    np.testing.assert_array_equal(raw_image.numpy(), cube.values[:, r:r + 16, c:c + 16])
    # the train split's pixels, standardised, have mean 0 and std 1 per band (valid pixels)
    train = PatchDataset(store, split="train", normalise=False)
    stacked = torch.stack([train[i][0] for i in range(len(train))]).numpy()
    for b in range(4):
        valid = stacked[:, b][stacked[:, b] != 0]
        z = (valid - ds.attrs["band_mean"][b]) / ds.attrs["band_std"][b]
        assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-6


def test_patch_dataset_selects_splits_kinds_and_bands(patch_set):
    store, cube, _, table = patch_set
    train = PatchDataset(store, split="train")
    assert train.indices.tolist() == [i for i in range(len(table)) if i % 3]
    sites = PatchDataset(store, split=["train", "test"], kinds="site")
    assert sites.indices.tolist() == [i for i in range(len(table)) if i % 2]
    both = PatchDataset(store, split="test", kinds=["site", "background"])
    assert both.indices.tolist() == [0, 3, 6, 9]
    nir = PatchDataset(store, bands=["B08", "B02"], normalise=False)
    image, _ = nir[1]
    r, c = int(table.row.iloc[1]), int(table.col.iloc[1])
    np.testing.assert_array_equal(image.numpy(), cube.values[[3, 0], r:r + 16, c:c + 16])
    with pytest.raises(UnknownBandError, match=r"\['nir'\] are not in .*\['B02', 'B03', 'B04', 'B08'\]"):
        PatchDataset(store, bands=["nir"])
    with pytest.raises(DatasetSelectionError, match=r"split \['val'\]; its split values are \['test', 'train'\]"):
        PatchDataset(store, split="val")
    with pytest.raises(IndexError):
        train[len(train)]
    assert torch.equal(train[-1][0], train[len(train) - 1][0])


def test_patch_dataset_without_a_kind_column(tmp_path):
    g = grid(32, 32)
    store = write_patch_set(PatchSource(make_cube(g), patch_table(g, size=16)),
                            tmp_path / "p.zarr", progress=False)
    with pytest.raises(DatasetSelectionError, match="has no 'kind' column"):
        PatchDataset(store, kinds="site")


def test_augmentation_is_joint_and_reproducible(patch_set):
    store, *_ = patch_set
    plain = PatchDataset(store)
    aug = PatchDataset(store, augment=True, seed=3)
    ks = []
    for i in range(len(aug)):
        image, mask = aug[i]
        k = dihedral_index(3, 0, int(aug.indices[i]))
        ks.append(k)
        base_i, base_m = plain[i]
        ref_i, ref_m = dihedral(base_i, base_m, k)
        assert torch.equal(image, ref_i) and torch.equal(mask, ref_m)  # same transform, jointly
    assert len(set(ks)) > 1
    again = PatchDataset(store, augment=True, seed=3)
    assert all(torch.equal(again[i][0], aug[i][0]) for i in range(len(aug)))
    aug.set_epoch(1)
    assert any(not torch.equal(again[i][0], aug[i][0]) for i in range(len(aug)))


def _loader_items(data, workers):
    loader = DataLoader(data, batch_size=3, shuffle=False, num_workers=workers)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_dataloader_with_two_workers_yields_what_one_process_yields(patch_set):
    store, *_ = patch_set
    data = PatchDataset(store, augment=True, seed=5)
    data[0]  # open the arrays in this process: workers must not inherit the handles
    pickle.loads(pickle.dumps(data))  # picklable, with no open handle
    assert pickle.loads(pickle.dumps(data))._handles is None
    data.set_epoch(2)
    single, multi = _loader_items(data, 0), _loader_items(data, 2)
    assert len(single) == len(multi) == 4
    for (a, b), (c, d) in zip(single, multi, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_incomplete_patch_set_is_refused(tmp_path):
    g = grid(32, 32)
    store = tmp_path / "p.zarr"
    with pytest.raises(SimulatedCrash), crash_after(1):
        write_patch_set(PatchSource(make_cube(g), patch_table(g, size=16)), store, block=2,
                        progress=False)
    with pytest.raises(io.IncompleteStoreError, match="1 of 2 blocks are missing"):
        PatchDataset(store)


# --------------------------------------------------------------------------------------------
# CubeWindowDataset


@pytest.fixture(scope="module")
def cube_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cubes")
    g = grid(64, 96)
    cube = make_cube(g, seed=4).rename("reflectance")
    plain = io.write_cube(cube.chunk({"y": 32, "x": 32}), root / "c.zarr", patch_size=32)
    times = pd.to_datetime(["2022-01-05", "2022-02-04", "2022-03-06"]).values
    series = xr.concat([cube + 0, cube // 2, cube // 3], "time").assign_coords(time=times)
    series.attrs = cube.attrs
    timed = io.write_cube(series.rename("reflectance").chunk({"time": 1, "y": 32, "x": 32}),
                          root / "t.zarr", patch_size=32)
    return g, cube, plain, series, timed


def test_cube_windows_equal_the_store(cube_stores):
    g, cube, plain, _, _ = cube_stores
    table = patch_table(g, size=24, stride=20, edge="pad")  # windows across chunks and the edge
    labels = make_labels(g, seed=8)
    data = CubeWindowDataset(plain, table, labels=labels)
    stored = io.open_cube(plain).values
    src = np.pad(stored, ((0, 0), (0, 24), (0, 24)))
    lab = np.pad(labels.values, ((0, 24), (0, 24)))
    assert len(data) == len(table)
    for i, (r, c) in enumerate(zip(table.row, table.col, strict=True)):
        image, mask = data[i]
        np.testing.assert_array_equal(image.numpy(), src[:, r:r + 24, c:c + 24])
        np.testing.assert_array_equal(mask.numpy(), lab[r:r + 24, c:c + 24])
    np.testing.assert_array_equal(stored, cube.values)

    sub = CubeWindowDataset(plain, table, bands=["B04", "B02"])
    r, c = int(table.row.iloc[4]), int(table.col.iloc[4])
    np.testing.assert_array_equal(sub[4][0].numpy(), src[[2, 0], r:r + 24, c:c + 24])
    assert not sub[4][1].any()  # no labels: all 0


def test_cube_windows_from_a_time_series(cube_stores):
    g, _, _, series, timed = cube_stores
    table = patch_table(g, size=32)
    by_pos = CubeWindowDataset(timed, table, time=1)
    by_label = CubeWindowDataset(timed, table, time="2022-02-04")
    expected = series.isel(time=1).values[:, 32:64, 32:64]
    assert torch.equal(by_pos[4][0], by_label[4][0])
    np.testing.assert_array_equal(by_pos[4][0].numpy(), expected)
    with pytest.raises(DatasetSelectionError, match="holds 3 time steps; pass time="):
        CubeWindowDataset(timed, table)
    with pytest.raises(DatasetSelectionError, match="'2021-01-01' is not a time of the store"):
        CubeWindowDataset(timed, table, time="2021-01-01")
    with pytest.raises(DatasetSelectionError, match="time=5 is out of range"):
        CubeWindowDataset(timed, table, time=5)


def test_cube_windows_match_the_patch_set_with_its_statistics(cube_stores, tmp_path):
    g, _, plain, _, _ = cube_stores
    table = patch_table(g, size=32)
    table["split"] = ["train", "train", "train", "test", "test", "train"]
    labels = make_labels(g, seed=2)
    store = write_patch_set(PatchSource(io.open_cube(plain), table, labels), tmp_path / "p.zarr",
                            progress=False)
    patches = PatchDataset(store, augment=True, seed=1)
    windows = CubeWindowDataset(plain, table, labels=labels, stats=store, augment=True, seed=1)
    same_stats = CubeWindowDataset(plain, table, stats=open_patch_set(store).attrs)
    for i in range(len(table)):
        patches.set_epoch(0)
        assert torch.equal(patches[i][0], windows[i][0])  # key = sample = table row here
        assert torch.equal(patches[i][1], windows[i][1])
    assert torch.equal(same_stats[0][0], PatchDataset(store)[0][0])
    with pytest.raises(DatasetSelectionError, match="give one of each per band"):
        CubeWindowDataset(plain, table, stats=([1.0], [2.0]))
    with pytest.raises(UnknownBandError, match="no statistics for bands"):
        CubeWindowDataset(plain, table, stats={"band_mean": [1.0], "band_std": [1.0],
                                               "stats_bands": ["B02"]})


def test_cube_window_dataloader_two_workers(cube_stores):
    g, _, plain, _, _ = cube_stores
    table = patch_table(g, size=16, stride=12, edge="pad")
    data = CubeWindowDataset(plain, table, labels=make_labels(g), stats=([1e3] * 4, [5e2] * 4),
                             augment=True, seed=9)
    single, multi = _loader_items(data, 0), _loader_items(data, 2)
    assert len(single) == len(multi)
    for (a, b), (c, d) in zip(single, multi, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_cube_window_bad_inputs(cube_stores):
    g, _, plain, _, _ = cube_stores
    table = patch_table(g, size=32)
    with pytest.raises(InvalidGridError, match="another grid"):
        CubeWindowDataset(plain, patch_table(grid(64, 96, x0=310_000), size=32))
    with pytest.raises(InvalidGridError, match="labels are not on the store's grid"):
        CubeWindowDataset(plain, table, labels=make_labels(grid(32, 32)))
    with pytest.raises(UnknownBandError, match=r"\['SCL'\] are not in the store"):
        CubeWindowDataset(plain, table, bands=["SCL"])
    with pytest.raises(DatasetSelectionError, match="has no time dim"):
        CubeWindowDataset(plain, table, time=0)
    with pytest.raises(io.StoreNotFoundError):
        CubeWindowDataset(plain.parent / "missing.zarr", table)
