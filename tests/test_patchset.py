"""Patch sets on Zarr: pixels against extract_patches and NumPy slices, resumable writes, exact
training statistics, typed errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from lames_cube import io
from lames_cube.errors import InvalidGridError, InvalidQueryError, SimulatedCrash
from lames_cube.patches import extract_patches, patch_table
from lames_cube.patchset import (
    PatchSetError,
    PatchSetGridError,
    PatchSource,
    SourceMismatchError,
    StatsSplitError,
    open_patch_set,
    patch_set_windows,
    write_patch_set,
)
from lames_cube.sampling import sample_blind
from lames_cube.testing.crash import crash_after

BANDS = ["B02", "B03", "B04"]


def grid(height: int, width: int, x0: float = 300_000, y0: float = 7_000_000) -> GeoBox:
    return GeoBox.from_bbox((x0, y0, x0 + width * 10, y0 + height * 10), "EPSG:32719",
                            resolution=10)


def make_cube(g: GeoBox, *, seed: int = 0, bands=BANDS, nodata_fraction: float = 0.05,
              dtype="uint16") -> xr.DataArray:
    """Random reflectance on ``g`` with some nodata (0) pixels, built on odc-geo's xr_zeros."""
    rng = np.random.default_rng(seed)
    layers = []
    for _ in bands:
        layer = xr_zeros(g, dtype=dtype)
        values = rng.integers(1, 10_000, layer.shape).astype(dtype)
        values[rng.random(layer.shape) < nodata_fraction] = 0
        layers.append(layer.copy(data=values))
    out = xr.concat(layers, "band").assign_coords(band=list(bands))
    out.attrs["nodata"] = 0
    return out


def make_labels(g: GeoBox, seed: int = 1) -> xr.DataArray:
    labels = xr_zeros(g, dtype="uint8")
    return labels.copy(data=np.random.default_rng(seed).integers(0, 4, labels.shape)
                       .astype(np.uint8))


def with_split(table, test_every: int = 3):
    table = table.copy()
    table["split"] = np.where(np.arange(len(table)) % test_every == 0, "test", "train")
    table["kind"] = "site"
    return table


def files(root: Path) -> dict[str, bytes]:
    """Every file of a store but the ledger, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".lames" not in p.parts}


def block_records(store: Path) -> list[dict]:
    return [r for r in io.Ledger(store).records() if r["event"] == "patchset_block"]


# --------------------------------------------------------------------------------------------
# Pixels


def test_patches_equal_extract_patches_and_numpy_slices(tmp_path):
    g1, g2 = grid(96, 160), grid(80, 80, x0=400_000)
    cube1, labels1 = make_cube(g1, seed=1), make_labels(g1)
    cube2 = make_cube(g2, seed=2).chunk({"band": 1, "y": 48, "x": 48})  # lazy dask source
    t1 = with_split(patch_table(g1, size=32, stride=24, edge="pad"))  # windows past the edge
    t2 = sample_blind(patch_table(g2, size=32, stride=16), 5, seed=3)
    t2["split"] = "train"
    labels2 = make_labels(g2, seed=4).chunk({"y": 40, "x": 40})  # lazy labels
    store = write_patch_set([PatchSource(cube1, t1, labels1), PatchSource(cube2, t2, labels2)],
                            tmp_path / "p.zarr", block=7, progress=False)
    ds = open_patch_set(store)
    n1 = len(t1)
    assert ds.image.shape == (n1 + len(t2), 3, 32, 32) and ds.image.dtype == np.uint16
    assert ds.mask.dtype == np.uint8 and ds.band.values.tolist() == BANDS
    image, mask = ds.image.values, ds.mask.values

    ref1 = extract_patches(cube1, t1, labels=labels1)
    ref2 = extract_patches(cube2, t2, labels=labels2)
    np.testing.assert_array_equal(image[:n1], ref1.image.values)
    np.testing.assert_array_equal(mask[:n1], ref1.mask.values)
    np.testing.assert_array_equal(image[n1:], ref2.image.values)
    np.testing.assert_array_equal(mask[n1:], ref2.mask.values)

    # independent truth: direct slices of the arrays (zero padding past the edge)
    src = np.pad(cube1.values, ((0, 0), (0, 32), (0, 32)))
    lab = np.pad(labels1.values, ((0, 32), (0, 32)))
    for k, (r, c) in enumerate(zip(t1.row, t1.col, strict=True)):
        np.testing.assert_array_equal(image[k], src[:, r:r + 32, c:c + 32])
        np.testing.assert_array_equal(mask[k], lab[r:r + 32, c:c + 32])
    raw2, lab2 = cube2.values, labels2.values
    for k, (r, c) in enumerate(zip(t2.row, t2.col, strict=True)):
        np.testing.assert_array_equal(image[n1 + k], raw2[:, r:r + 32, c:c + 32])
        np.testing.assert_array_equal(mask[n1 + k], lab2[r:r + 32, c:c + 32])

    # table columns as sample coordinates, plus the source index
    assert ds.row.values.tolist() == [*t1.row, *t2.row]
    assert ds.split.values.tolist() == [*t1.split, *t2.split]
    assert ds.kind.values.tolist() == ["site"] * n1 + ["blind"] * len(t2)
    assert ds.source.values.tolist() == [0] * n1 + [1] * len(t2)
    assert ds.attrs["grids"] == [t1.attrs["grid"], t2.attrs["grid"]]
    assert ds.attrs["tables"][1]["rule"] == "blind" and ds.attrs["tables"][1]["seed"] == 3
    assert ds.attrs["labels"] == [True, True]

    # windows as GeoParquet in EPSG:4326
    w = patch_set_windows(store)
    assert w.crs.to_epsg() == 4326 and w["sample"].tolist() == list(range(len(w)))
    assert w[["source", "row", "col"]].values.tolist() == [
        [0, r, c] for r, c in zip(t1.row, t1.col, strict=True)] + [
        [1, r, c] for r, c in zip(t2.row, t2.col, strict=True)]
    expected = np.concatenate([t1.to_crs(4326).geometry.values, t2.to_crs(4326).geometry.values])
    assert shapely.equals_exact(w.geometry.values, expected, tolerance=1e-9).all()
    assert w.attrs["grids"] == ds.attrs["grids"] and "grid" not in w.attrs


def test_single_source_windows_carry_the_grid(tmp_path):
    g = grid(64, 64)
    table = patch_table(g, size=32)
    store = write_patch_set(PatchSource(make_cube(g), table), tmp_path / "p.zarr",
                            progress=False)
    assert not open_patch_set(store).mask.values.any()  # no labels: all-0 masks
    w = patch_set_windows(store)
    assert w.attrs["grid"] == table.attrs["grid"] and w.attrs["size"] == 32
    from lames_cube.patches import table_geobox

    assert table_geobox(w) == g


# --------------------------------------------------------------------------------------------
# Resumable writes


def test_resume_after_a_crash_is_byte_identical_and_writes_only_missing_blocks(tmp_path):
    g = grid(96, 128)
    cube, labels = make_cube(g, seed=5), make_labels(g, seed=6)
    table = with_split(patch_table(g, size=16))  # 48 windows, 6 blocks of 8
    sources = [PatchSource(cube, table, labels)]
    whole = write_patch_set(sources, tmp_path / "whole.zarr", block=8, progress=False)

    store = tmp_path / "crashed.zarr"
    with pytest.raises(SimulatedCrash), crash_after(2):
        write_patch_set(sources, store, block=8, progress=False)
    with pytest.raises(io.IncompleteStoreError, match=r"4 of 6 blocks are missing .*mode='resume'"):
        open_patch_set(store)
    partial = open_patch_set(store, allow_incomplete=True)
    assert "band_mean" not in partial.attrs and int(partial.image[16:].max()) == 0
    first = {p: os.stat(p).st_mtime_ns for p in (store / "image" / "c").rglob("*") if p.is_file()}
    assert sorted(Path(p).parts[-4] for p in first) == ["0", "1"]

    with pytest.raises(SimulatedCrash), crash_after(1):  # a second crash during the resume
        write_patch_set(sources, store, mode="resume", block=8, progress=False)
    write_patch_set(sources, store, mode="resume", block=8, progress=False)

    blocks = [r["block"] for r in block_records(store)]
    assert blocks == [0, 1, 2, 3, 4, 5]  # each block written once, the missing ones by resume
    assert {p: os.stat(p).st_mtime_ns for p in first} == first  # finished blocks untouched
    assert files(store) == files(whole)  # byte for byte: chunks, metadata, attrs, windows
    xr.testing.assert_identical(open_patch_set(store).load(), open_patch_set(whole).load())

    before = (store / io.LEDGER_NAME).read_bytes()
    write_patch_set(sources, store, mode="resume", block=8, progress=False)  # complete: no-op
    assert (store / io.LEDGER_NAME).read_bytes() == before


def test_resume_before_any_block_and_of_a_missing_store(tmp_path):
    g = grid(64, 64)
    sources = [PatchSource(make_cube(g), patch_table(g, size=16))]
    whole = write_patch_set(sources, tmp_path / "whole.zarr", block=4, progress=False)
    store = tmp_path / "p.zarr"
    with pytest.raises(SimulatedCrash), crash_after(0):
        write_patch_set(sources, store, block=4, progress=False)
    with pytest.raises(io.IncompleteStoreError, match="4 of 4 blocks are missing"):
        open_patch_set(store)
    write_patch_set(sources, store, mode="resume", block=4, progress=False)
    assert files(store) == files(whole)
    fresh = write_patch_set(sources, tmp_path / "new.zarr", mode="resume", block=4,
                            progress=False)
    assert files(fresh) == files(whole)


def test_resume_with_other_sources_is_refused(tmp_path):
    g = grid(64, 64)
    cube, table = make_cube(g), with_split(patch_table(g, size=16))
    store = tmp_path / "p.zarr"
    with pytest.raises(SimulatedCrash), crash_after(1):
        write_patch_set(PatchSource(cube, table), store, block=4, progress=False)
    other = table.copy()
    other["split"] = "train"
    with pytest.raises(io.TemplateMismatchError, match="source 0: table column values differ"):
        write_patch_set(PatchSource(cube, other), store, mode="resume", block=4, progress=False)
    with pytest.raises(io.TemplateMismatchError, match="windows"):
        write_patch_set(PatchSource(cube, table.iloc[1:]), store, mode="resume", block=4,
                        progress=False)
    with pytest.raises(io.TemplateMismatchError, match="block: store 4, sources 8"):
        write_patch_set(PatchSource(cube, table), store, mode="resume", block=8, progress=False)
    with pytest.raises(io.TemplateMismatchError, match="bands"):
        write_patch_set(PatchSource(cube.isel(band=[0, 1]), table), store, mode="resume",
                        block=4, progress=False)


def test_modes(tmp_path):
    g = grid(64, 64)
    source = PatchSource(make_cube(g), patch_table(g, size=32))
    store = write_patch_set(source, tmp_path / "p.zarr", progress=False)
    with pytest.raises(io.StoreExistsError, match="mode='w' to replace it"):
        write_patch_set(source, store, progress=False)
    other = PatchSource(make_cube(g, seed=9), patch_table(g, size=16))
    write_patch_set(other, store, mode="w", progress=False)
    assert open_patch_set(store).sizes["sample"] == 16
    with pytest.raises(io.StoreError, match="mode must be one of"):
        write_patch_set(source, store, mode="a", progress=False)
    with pytest.raises(io.StoreNotFoundError, match="no patch set"):
        open_patch_set(tmp_path / "missing.zarr")


def test_a_cube_store_is_not_a_patch_set(tmp_path):
    g = grid(64, 64)
    cube_store = io.write_cube(make_cube(g).rename("reflectance"), tmp_path / "c.zarr",
                               patch_size=32)
    with pytest.raises(PatchSetError, match="is not a patch set"):
        open_patch_set(cube_store)
    with pytest.raises(io.TemplateMismatchError, match="not a patch set"):
        write_patch_set(PatchSource(make_cube(g), patch_table(g, size=32)), cube_store,
                        mode="resume", progress=False)


# --------------------------------------------------------------------------------------------
# Statistics


def test_statistics_are_exact_and_come_only_from_the_training_split(tmp_path):
    g = grid(96, 96)
    cube = make_cube(g, seed=11, nodata_fraction=0.2)
    table = with_split(patch_table(g, size=32))  # 9 disjoint windows, 3 of them test
    source = PatchSource(cube, table)
    ds = open_patch_set(write_patch_set(source, tmp_path / "a.zarr", block=2, progress=False))

    train = table[table.split == "train"]
    pixels = np.stack([cube.values[:, r:r + 32, c:c + 32] for r, c in zip(train.row, train.col,
                                                                          strict=True)])
    for b in range(3):
        values = pixels[:, b][pixels[:, b] != 0].astype(np.float64)
        assert ds.attrs["stats_count"][b] == values.size
        np.testing.assert_allclose(ds.attrs["band_mean"][b], values.mean(), rtol=1e-13)
        np.testing.assert_allclose(ds.attrs["band_std"][b], values.std(), rtol=1e-12)
    assert ds.attrs["stats_from"] == "split == 'train'" and ds.attrs["stats_samples"] == 6

    # change every test pixel: the statistics stay bit for bit
    changed = cube.copy(deep=True)
    for r, c in zip(table.row[table.split == "test"], table.col[table.split == "test"],
                    strict=True):
        changed.values[:, r:r + 32, c:c + 32] = 7
    ds2 = open_patch_set(write_patch_set(PatchSource(changed, table), tmp_path / "b.zarr",
                                         block=2, progress=False))
    assert not np.array_equal(ds2.image.values, ds.image.values)
    for key in ("band_mean", "band_std", "stats_count"):
        assert ds2.attrs[key] == ds.attrs[key]

    # another split: other statistics
    ds3 = open_patch_set(write_patch_set(source, tmp_path / "c.zarr", stats_split="test",
                                         progress=False))
    assert ds3.attrs["stats_from"] == "split == 'test'"
    assert ds3.attrs["band_mean"] != ds.attrs["band_mean"]


def test_statistics_without_a_split_column_use_every_sample(tmp_path):
    g = grid(64, 64)
    cube = make_cube(g, seed=4)
    ds = open_patch_set(write_patch_set(PatchSource(cube, patch_table(g, size=32)),
                                        tmp_path / "p.zarr", progress=False))
    assert "no 'split' column" in ds.attrs["stats_from"]
    values = cube.values[0][cube.values[0] != 0]
    np.testing.assert_allclose(ds.attrs["band_mean"][0], values.mean(), rtol=1e-13)


def test_stats_split_that_selects_nothing(tmp_path):
    g = grid(64, 64)
    table = with_split(patch_table(g, size=32))
    with pytest.raises(StatsSplitError, match=r"no sample has split 'training'.*\['test', 'train'\]"):
        write_patch_set(PatchSource(make_cube(g), table), tmp_path / "p.zarr",
                        stats_split="training", progress=False)
    assert not (tmp_path / "p.zarr").exists()  # refused before anything was written


# --------------------------------------------------------------------------------------------
# Bad inputs


def test_bad_sources_raise_typed_errors(tmp_path):
    g = grid(64, 64)
    cube, table = make_cube(g), patch_table(g, size=32)
    store = tmp_path / "p.zarr"

    def write(sources, **kw):
        return write_patch_set(sources, store, progress=False, **kw)

    with pytest.raises(PatchSetError, match="sources is empty"):
        write([])
    with pytest.raises(PatchSetError, match=r"sources\[0\] is a DataArray"):
        write([cube])
    with pytest.raises(SourceMismatchError, match=r"source 1 has bands \['B02', 'B03'\]"):
        write([PatchSource(cube, table), PatchSource(cube.isel(band=[0, 1]), table)])
    with pytest.raises(SourceMismatchError, match="source 1 has dtype int16"):
        write([PatchSource(cube, table), PatchSource(cube.astype("int16"), table)])
    with pytest.raises(SourceMismatchError, match="source 1's windows are 16 px"):
        write([PatchSource(cube, table), PatchSource(cube, patch_table(g, size=16))])
    extra = table.copy()
    extra["kind"] = "x"
    with pytest.raises(SourceMismatchError, match=r"table\['kind'\] = 'background'"):
        write([PatchSource(cube, table), PatchSource(cube, extra)])
    reserved = table.copy()
    reserved["source"] = 1
    with pytest.raises(SourceMismatchError, match=r"columns \['source'\]"):
        write([PatchSource(cube, reserved)])
    mixed = table.copy()
    mixed["site_id"] = ["a", None, "b", "c"]
    with pytest.raises(SourceMismatchError, match=r"column 'site_id'.*non-text values"):
        write([PatchSource(cube, mixed)])
    with pytest.raises(PatchSetGridError, match="source 0: the table was cut from another grid"):
        write([PatchSource(cube, patch_table(grid(64, 64, x0=300_010), size=32))])
    with pytest.raises(InvalidGridError, match="labels are not on the cube's grid"):
        write([PatchSource(cube, table, make_labels(grid(64, 48)))])
    with pytest.raises(PatchSetError, match="labels have dtype float32"):
        write([PatchSource(cube, table, make_labels(g).astype("float32"))])
    with pytest.raises(InvalidQueryError, match="source 0: the cube has dims"):
        write([PatchSource(cube.expand_dims(time=2), table)])
    with pytest.raises(PatchSetError, match="block=0 must be a positive integer"):
        write([PatchSource(cube, table)], block=0)
    with pytest.raises(PatchSetError, match="hold no window"):
        write([PatchSource(cube, table.iloc[:0])])
    assert not store.exists()


def test_labels_out_of_uint8_range(tmp_path):
    g = grid(64, 64)
    labels = make_labels(g).astype("int32")
    labels.values[0, 0] = 300
    with pytest.raises(PatchSetError, match="masks are uint8"):
        write_patch_set(PatchSource(make_cube(g), patch_table(g, size=32), labels),
                        tmp_path / "p.zarr", progress=False)


def test_the_ledger_records_are_json_lines(tmp_path):
    g = grid(64, 64)
    store = write_patch_set(PatchSource(make_cube(g), patch_table(g, size=32)),
                            tmp_path / "p.zarr", block=3, progress=False)
    lines = [json.loads(x) for x in (store / io.LEDGER_NAME).read_text().splitlines()]
    assert [r["event"] for r in lines] == ["patchset_begin", "patchset_metadata",
                                           "patchset_block", "patchset_block",
                                           "patchset_complete"]
    assert [r["samples"] for r in lines if r["event"] == "patchset_block"] == [[0, 3], [3, 4]]


def test_resume_with_pixels_of_another_origin_is_refused(tmp_path):
    """The pixels are not hashed: the origin a source declares is, so a resume from another
    store or year on the same grid is refused instead of mixing two cubes in one set."""
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_zeros

    from lames_cube.io import TemplateMismatchError
    from lames_cube.patches import patch_table
    from lames_cube.patchset import PatchSource, write_patch_set

    g = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719", resolution=10)
    table = patch_table(g, size=16)
    old = PatchSource((xr_zeros(g, dtype="uint16") + 100).expand_dims(band=["B04"]), table,
                      origin="a.zarr year=2021")
    new = PatchSource((xr_zeros(g, dtype="uint16") + 500).expand_dims(band=["B04"]), table,
                      origin="a.zarr year=2022")
    store = tmp_path / "p.zarr"
    with pytest.raises(SimulatedCrash, match="simulated"), crash_after(2):
        write_patch_set([old], store, block=4, progress=False)
    with pytest.raises(TemplateMismatchError, match="origin"):
        write_patch_set([new], store, mode="resume", block=4, progress=False)
    write_patch_set([old], store, mode="resume", block=4, progress=False)
