"""lames_cube.io: Zarr v3 round trips, appends, region writes, resumable writes, laziness.

Cubes are small synthetic dask cubes built here (3 times x 2 bands x 512 x 768 px, 256-px chunks,
random uint16 with about 10 % zeros, on an EPSG:32719 GeoBox at 10 m). Each block is generated
from a seed and its position, so any sub-cube or recomputation gives the same pixels, and every
block generation is recorded, so tests can see what was computed and when.
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import dask.array as dsa
import dask.threaded
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from lames_cube.errors import (
    DiskFullError,
    LamesCubeError,
    OutputNotWritableError,
    SimulatedCrash,
)
from lames_cube.io import (
    LEDGER_NAME,
    ChunkError,
    IncompleteStoreError,
    RegionError,
    StoreError,
    StoreExistsError,
    StoreGridMismatchError,
    StoreNotFoundError,
    TemplateMismatchError,
    init_cube_store,
    open_cube,
    store_status,
    write_cube,
)
from lames_cube.testing.crash import crash_after
from lames_cube.testing.disk import FullDisk, make_read_only

RES = 10
X0, Y0 = 300_000, 7_000_000
BANDS = ["B04", "SCL"]

#: (scheduler call number, array-location of the block) for every generated block.
GENERATED: list[tuple[int, tuple[tuple[int, int], ...]]] = []
_CALL_NO = [0]


def _block(block_info=None, *, seed: int) -> np.ndarray:
    info = block_info[None]
    shape = info["chunk-shape"]
    loc = tuple(tuple(r) for r in info["array-location"])
    GENERATED.append((_CALL_NO[0], loc))
    rng = np.random.default_rng([seed, *(start for start, _ in loc)])
    out = rng.integers(1, 10_000, size=shape, dtype=np.uint16)
    out[rng.random(shape) < 0.1] = 0
    return out


def make_geobox(ny: int = 512, nx: int = 768, *, dx: int = 0, dy: int = 0) -> GeoBox:
    x0, y0 = X0 + dx * RES, Y0 + dy * RES
    return GeoBox.from_bbox((x0, y0, x0 + nx * RES, y0 + ny * RES), crs="EPSG:32719",
                            resolution=RES)


def make_cube(nt: int = 3, ny: int = 512, nx: int = 768, *, seed: int = 0,
              start: str = "2021-01-03T14:38:21.024", chunks: int = 256,
              dims: tuple[str, ...] = ("time", "band", "y", "x"), name: str | None = "reflectance",
              gbox: GeoBox | None = None) -> xr.DataArray:
    """A lazy uint16 cube with per-time coords and attrs."""
    gbox = gbox or make_geobox(ny, nx)
    sizes = {"time": nt, "band": len(BANDS), "y": ny, "x": nx}
    block = {"time": 1, "band": len(BANDS), "y": chunks, "x": chunks}
    data = dsa.map_blocks(_block, seed=seed, dtype=np.uint16,
                          chunks=dsa.core.normalize_chunks(tuple(block[d] for d in dims),
                                                           tuple(sizes[d] for d in dims)),
                          name=f"cube-{seed}-{start}-{'-'.join(dims)}-{ny}-{nx}-{chunks}")
    coords = xr_coords(gbox, "spatial_ref")
    if "time" in dims:
        times = pd.date_range(start, periods=nt, freq="5D").values
        coords["time"] = ("time", times)
        coords["cloud_cover"] = ("time", np.round(np.linspace(1.5, 20.25, nt) + seed, 3))
        coords["dn_offset"] = ("time", np.where(np.arange(nt) % 2, 1000, 0))
        coords["platform"] = ("time", np.array(["sentinel-2a", "sentinel-2b"] * nt)[:nt])
    if "band" in dims:
        coords["band"] = ("band", np.array(BANDS))
    out = xr.DataArray(data, dims=dims, coords=coords,
                       attrs={"nodata": 0, "scale": 1e-4, "seed": seed})
    out.name = name  # (xarray would name it after the dask array)
    return out


def store_files(path: Path) -> dict[str, bytes]:
    """Every file of a store (chunks and zarr.json metadata) except the ledger."""
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*"))
            if f.is_file() and f != path / LEDGER_NAME}


def ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / LEDGER_NAME).read_text().splitlines()]


@pytest.fixture
def cube() -> xr.DataArray:
    return make_cube()


@pytest.fixture
def written(tmp_path, cube) -> Path:
    return write_cube(cube, tmp_path / "ref.zarr")


# --------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # rioxarray
def test_round_trip_is_identical(written, cube):
    out = open_cube(written)
    assert isinstance(out.data, dsa.Array)  # lazy
    assert out.chunks == cube.chunks
    xr.testing.assert_identical(out.compute(), cube.compute())
    assert out.name == "reflectance" and out.dtype == np.uint16
    assert out.attrs == {"nodata": 0, "scale": 1e-4, "seed": 0}
    for k in ("time", "cloud_cover", "dn_offset", "platform", "band", "y", "x", "spatial_ref"):
        assert out[k].dtype == cube[k].dtype, k
        assert out[k].values.tobytes() == cube[k].values.tobytes(), k  # bit-identical
    # CRS and transform through both rioxarray and odc-geo.
    assert out.rio.crs == cube.rio.crs and out.rio.crs.to_epsg() == 32719
    assert out.rio.transform() == cube.odc.geobox.affine
    assert out.odc.geobox == cube.odc.geobox == make_geobox()
    # A Zarr v3 store whose chunks are the dask chunks.
    meta = json.loads((written / "reflectance" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 2, 256, 256]
    assert store_status(written)["complete"]
    assert ledger(written)[-1] == {"event": "complete", "job": ledger(written)[0]["job"]}
    # Plain xarray opens it without warnings (the ledger sits in its own Zarr group).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = xr.open_zarr(written, decode_coords="all", consolidated=False)
    assert list(plain.data_vars) == ["reflectance"] and plain.reflectance.rio.crs.to_epsg() == 32719


@pytest.mark.parametrize("dims", [("band", "y", "x"), ("y", "x")])
def test_round_trip_composites(tmp_path, dims):
    composite = make_cube(dims=dims, name=None)
    out = open_cube(write_cube(composite, tmp_path / "c.zarr"))
    assert out.name == "data"
    xr.testing.assert_identical(out.compute(), composite.rename("data").compute())
    assert out.odc.geobox == composite.odc.geobox and out.rio.crs.to_epsg() == 32719


def test_numpy_cube_and_small_dims(tmp_path):
    """A NumPy cube is chunked for writing; a dim smaller than a patch is one chunk."""
    small = make_cube(nt=1, ny=200, nx=300).compute()
    out = open_cube(write_cube(small, tmp_path / "s.zarr"))
    assert out.chunks == ((1,), (2,), (200,), (300,))
    xr.testing.assert_identical(out.compute(), small)


def test_write_is_lazy_and_region_by_region(tmp_path, cube):
    """No compute of the whole cube: each scheduler call computes the blocks of one region."""
    GENERATED.clear()
    _CALL_NO[0] = 0

    def counting_get(dsk, keys, **kwargs):
        _CALL_NO[0] += 1
        return dask.threaded.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=counting_get):
        path = write_cube(cube, tmp_path / "lazy.zarr")
        calls_after_write = _CALL_NO[0]
        n_generated = len(GENERATED)
        out = open_cube(path)
        assert len(GENERATED) == n_generated  # opening computes no pixel
    assert calls_after_write == 6  # one per region (2 x 3)
    locations = [loc for _, loc in GENERATED]
    assert len(locations) == len(set(locations)) == 3 * 2 * 3  # every block exactly once
    by_call: dict[int, set] = {}
    for call, loc in GENERATED:
        by_call.setdefault(call, set()).add((loc[2], loc[3]))  # (y range, x range)
    assert all(len(regions) == 1 for regions in by_call.values())
    assert len(by_call) == 6
    assert isinstance(out.data, dsa.Array)


def test_progress_bar(tmp_path, capsys):
    write_cube(make_cube(nt=1), tmp_path / "p.zarr", progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err and "region" in err


# --------------------------------------------------------------------------------------------
# Modes, chunks, bad input


def test_modes_for_an_existing_store(tmp_path, written, cube):
    with pytest.raises(StoreExistsError, match="mode='w' to replace"):
        write_cube(cube, written)
    other = make_cube(seed=5)
    write_cube(other, written, mode="w")
    xr.testing.assert_identical(open_cube(written).compute(), other.compute())
    not_a_store = tmp_path / "docs"
    not_a_store.mkdir()
    (not_a_store / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="refusing to delete"):
        write_cube(cube, not_a_store, mode="w")
    assert (not_a_store / "notes.txt").exists()
    with pytest.raises(StoreError, match="mode must be one of"):
        write_cube(cube, tmp_path / "x.zarr", mode="a")  # type: ignore[arg-type]


def test_chunks_must_be_multiples_of_the_patch_size(tmp_path, cube):
    with pytest.raises(ChunkError, match=r"300 px, not a multiple of patch_size=256"):
        write_cube(cube.chunk(y=300), tmp_path / "a.zarr")
    with pytest.raises(ChunkError, match="not a multiple of patch_size=256"):
        write_cube(cube, tmp_path / "b.zarr", chunks={"x": 100})
    with pytest.raises(ChunkError, match="patch_size must be a positive integer"):
        write_cube(cube, tmp_path / "c.zarr", patch_size=0)
    with pytest.raises(ChunkError, match=r"dims .'z'. that the cube does not have"):
        write_cube(cube, tmp_path / "d.zarr", chunks={"z": 256})
    assert not (tmp_path / "a.zarr").exists()
    # Other patch sizes and explicit chunks.
    out = open_cube(write_cube(cube, tmp_path / "e.zarr", chunks={"y": 128, "time": -1},
                               patch_size=128))
    assert out.chunks == ((3,), (2,), (128,) * 4, (256,) * 3)


def test_irregular_chunks_are_made_regular(tmp_path, cube):
    """Rule: the largest chunk, rounded up to a multiple of the patch size (capped at the dim)."""
    irregular = cube.chunk(x=(200, 312, 256), time=(2, 1))
    out = open_cube(write_cube(irregular, tmp_path / "i.zarr"))
    assert out.chunks == ((2, 1), (2,), (256, 256), (512, 256))
    xr.testing.assert_identical(out.compute(), cube.compute())


def test_cube_without_crs_or_not_a_cube(tmp_path, cube):
    bare = xr.DataArray(cube.data, dims=cube.dims, coords={"y": cube.y.values,
                                                            "x": cube.x.values})
    with pytest.raises(StoreError, match="no CRS/GeoBox"):
        write_cube(bare, tmp_path / "a.zarr")
    with pytest.raises(StoreError, match=r"expects an xarray\.DataArray or Dataset cube; got ndarray"):
        write_cube(cube.values, tmp_path / "b.zarr")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no data variables"):
        write_cube(xr.Dataset(), tmp_path / "c.zarr")


def test_attrs_that_cannot_be_stored(tmp_path, cube):
    with pytest.raises(StoreError, match=r"CF encoding keys \['_FillValue'\]"):
        write_cube(cube.assign_attrs(_FillValue=0), tmp_path / "a.zarr")
    with pytest.raises(StoreError, match=r"attrs.'when'. = .* cannot be stored as JSON"):
        write_cube(cube.assign_attrs(when=pd.Timestamp("2021-01-01")), tmp_path / "b.zarr")
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()
    numpy_attrs = cube.assign_attrs(seed=np.int64(3), ids=np.arange(3), gain=np.float32(0.5))
    out = open_cube(write_cube(numpy_attrs, tmp_path / "c.zarr"))
    assert out.attrs == {"nodata": 0, "scale": 1e-4, "seed": 3, "ids": [0, 1, 2], "gain": 0.5}


def test_open_missing_store(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no store at") as info:
        open_cube(tmp_path / "nowhere.zarr")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, LamesCubeError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreNotFoundError, match="not a Zarr v3 store"):
        open_cube(tmp_path / "empty")


def test_a_read_only_folder_is_refused_before_any_work(tmp_path, cube, monkeypatch):
    """The folder is made read-only (0o555). For an ordinary user the kernel refuses the probe
    of check_writable; as root (CI), whom the bits do not stop, make_read_only makes the probe
    apply them as the kernel does for a user (see lames_cube.testing.disk). Nothing is
    computed, nothing is created; once writable again, the same call writes the store."""
    folder = tmp_path / "ro"
    folder.mkdir()
    GENERATED.clear()
    try:
        make_read_only(folder, monkeypatch)
        with pytest.raises(OutputNotWritableError, match=r"Cannot write the store .*ro/cube\.zarr: "
                           r"the folder .*ro is not writable by this process \(permission "
                           r"denied\)\. Nothing was written\. Fix: write to a folder you can write "
                           r"to") as info:
            write_cube(cube, folder / "cube.zarr")
        assert isinstance(info.value, PermissionError) and isinstance(info.value, LamesCubeError)
        with pytest.raises(OutputNotWritableError, match=r"Cannot write the store .*tiles\.zarr"):
            init_cube_store(cube, folder / "new" / "tiles.zarr")
        assert list(folder.iterdir()) == [] and GENERATED == []
    finally:
        folder.chmod(0o755)
    assert store_status(write_cube(cube, folder / "cube.zarr"))["complete"]


def test_a_full_disk_leaves_a_resumable_store_and_no_partial_chunk(tmp_path, written, cube,
                                                                   monkeypatch):
    """A disk with room for half the store: the chunk write that fills it leaves a partial
    temporary (zarr's ``.partial``) when ENOSPC comes. write_cube raises DiskFullError naming
    the store, the space left and the resume; no partial file is left, the store is refused as
    incomplete, and once there is room the resume gives the store of an uninterrupted write."""
    measure = FullDisk().install(monkeypatch)
    write_cube(cube, tmp_path / "measure.zarr")
    monkeypatch.undo()
    path = tmp_path / "full.zarr"
    disk = FullDisk(free=measure.used // 2).install(monkeypatch)
    with pytest.raises(DiskFullError, match=r"The disk is full: writing .*full\.zarr failed "
                       r"\(\[Errno 28\] No space left on device\); [\d.]+ [KMGT]?B free on the "
                       r"disk of .*left incomplete but resumable.*Fix: free space on that disk.*"
                       r"write_cube\(\.\.\., '.*full\.zarr', mode='resume'\)") as info:
        write_cube(cube, path)
    assert disk.failures >= 1 and info.value.errno == 28
    assert [p.name for p in path.rglob("*.partial")] == []
    with pytest.raises(IncompleteStoreError):
        open_cube(path)
    monkeypatch.undo()  # space freed
    write_cube(cube, path, mode="resume")
    assert store_files(path) == store_files(written)


# --------------------------------------------------------------------------------------------
# Resumable writes


def test_killed_write_resumes_to_the_same_store(tmp_path, written, cube):
    path = tmp_path / "crash.zarr"
    with pytest.raises(SimulatedCrash, match="simulated crash after 2 regions"), crash_after(2):
        write_cube(cube, path)
    status = store_status(path)
    assert not status["complete"] and status["regions_done"] == 2
    with pytest.raises(IncompleteStoreError, match=r"2 of 6 regions.*mode='resume'"):
        open_cube(path)
    partial = open_cube(path, allow_incomplete=True).compute()
    assert (partial.isel(y=slice(256, None)) == 0).all()  # unwritten: nodata
    with pytest.raises(StoreExistsError, match="a store already exists"):
        write_cube(cube, path)  # "w-" never touches it
    with pytest.raises(SimulatedCrash, match="simulated crash after 1 regions"), crash_after(1):
        write_cube(cube, path, mode="resume")
    write_cube(cube, path, mode="resume")
    assert store_status(path)["complete"]
    assert store_files(path) == store_files(written)  # bytes of every chunk and zarr.json
    xr.testing.assert_identical(open_cube(path).compute(), cube.compute())
    # Resuming a complete store writes nothing.
    before = (path / LEDGER_NAME).read_text()
    write_cube(cube, path, mode="resume")
    assert (path / LEDGER_NAME).read_text() == before
    # Resuming where there is no store is a plain write.
    write_cube(cube, tmp_path / "fresh.zarr", mode="resume")
    assert store_files(tmp_path / "fresh.zarr") == store_files(written)


def test_resume_after_a_crash_while_writing_metadata(tmp_path, written, cube):
    path = tmp_path / "meta.zarr"
    with pytest.raises(SimulatedCrash, match="simulated crash after 0 regions"), crash_after(0):
        write_cube(cube, path)
    lines = (path / LEDGER_NAME).read_text().splitlines()
    (path / LEDGER_NAME).write_text(lines[0] + "\n" + '{"event": "meta')  # torn line
    for sub in ("time", "reflectance"):
        for f in sorted((path / sub).rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
    with pytest.raises(IncompleteStoreError, match="mode='resume'"):
        open_cube(path)
    write_cube(cube, path, mode="resume")
    assert store_files(path) == store_files(written)


def test_resume_refuses_another_template(tmp_path, cube):
    path = tmp_path / "partial.zarr"
    with pytest.raises(SimulatedCrash, match="simulated crash after 1 regions"), crash_after(1):
        write_cube(cube, path)
    others = {
        "shape": make_cube(nt=2),
        "chunks": cube.chunk(y=512),
        "dtype": cube.astype("int16"),
        "coordinate 'cloud_cover'": cube.assign_coords(cloud_cover=cube.cloud_cover + 1),
        "attrs": cube.assign_attrs(seed=99),
    }
    for what, other in others.items():
        with pytest.raises(TemplateMismatchError, match=f"another cube.*{what}"):
            write_cube(other, path, mode="resume")
    assert store_status(path)["regions_done"] == 1


# --------------------------------------------------------------------------------------------
# Appending time steps


def later_cube(nt: int = 2, start: str = "2021-02-03T10:00:00.5") -> xr.DataArray:
    """New time steps with other pixels and per-time coords, and the same attrs as ``cube``."""
    return make_cube(nt=nt, seed=3, start=start).assign_attrs(seed=0)


def test_append_time_steps(tmp_path, cube):
    later = later_cube()
    path = write_cube(cube, tmp_path / "a.zarr")
    write_cube(later, path, append_dim="time")
    out = open_cube(path)
    xr.testing.assert_identical(out.compute(), xr.concat([cube, later], "time").compute())
    assert out.indexes["time"].is_monotonic_increasing
    assert list(out.platform.values) == ["sentinel-2a", "sentinel-2b", "sentinel-2a"] * 1 + [
        "sentinel-2a", "sentinel-2b"]
    assert out.chunks[0] == (1,) * 5
    assert [j["op"] for j in store_status(path)["jobs"]] == ["write", "append"]
    assert store_status(path)["complete"]


def test_append_killed_then_resumed(tmp_path, cube):
    later = later_cube()
    ref = write_cube(cube, tmp_path / "ref.zarr")
    write_cube(later, ref, append_dim="time")
    path = write_cube(cube, tmp_path / "a.zarr")
    with pytest.raises(SimulatedCrash, match="simulated crash"), crash_after(3):
        write_cube(later, path, append_dim="time")
    with pytest.raises(IncompleteStoreError, match="append_dim='time', mode='resume'"):
        open_cube(path)
    with pytest.raises(IncompleteStoreError, match=r"cannot append: .* 3 of 6 regions"):
        write_cube(later, path, append_dim="time")  # "w-" refuses to append to it
    with pytest.raises(IncompleteStoreError, match="cannot append"):
        write_cube(later_cube(start="2021-03-01"), path, append_dim="time", mode="resume")
    write_cube(later, path, append_dim="time", mode="resume")
    assert store_files(path) == store_files(ref)
    write_cube(later, path, append_dim="time", mode="resume")  # no-op
    assert store_files(path) == store_files(ref)


def test_append_resumes_after_a_crash_while_resizing(tmp_path, cube):
    """A crash between the append's ledger entry and its metadata: the resize is redone."""
    later = later_cube()
    ref = write_cube(cube, tmp_path / "ref.zarr")
    write_cube(later, ref, append_dim="time")
    path = write_cube(cube, tmp_path / "a.zarr")
    with pytest.raises(SimulatedCrash, match="simulated crash after 0 regions"), crash_after(0):
        write_cube(later, path, append_dim="time")
    lines = (path / LEDGER_NAME).read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "metadata"
    (path / LEDGER_NAME).write_text("\n".join(lines[:-1]) + "\n")  # no metadata line
    import zarr  # half-done resize: time and the data grown, platform not

    zarr.open_array(path / "platform", mode="r+").resize((3,))
    write_cube(later, path, append_dim="time", mode="resume")
    assert store_files(path) == store_files(ref)


def test_append_with_time_chunks_not_aligned(tmp_path):
    """Store time chunks of 2 and 3 stored steps: the append starts inside a chunk."""
    first = make_cube().chunk(time=2)
    later = later_cube(nt=3)
    path = write_cube(first, tmp_path / "a.zarr")
    write_cube(later, path, append_dim="time")
    out = open_cube(path)
    assert out.chunks[0] == (2, 2, 2)
    xr.testing.assert_identical(out.compute(), xr.concat([first, later], "time").compute())


def test_append_errors(tmp_path, cube):
    path = write_cube(cube, tmp_path / "a.zarr")
    later = later_cube()
    with pytest.raises(TemplateMismatchError, match=r"1 time label.*already in the store"):
        write_cube(make_cube(nt=2, start="2021-01-13T14:38:21.024"), path, append_dim="time")
    with pytest.raises(TemplateMismatchError, match="must stay increasing"):
        write_cube(make_cube(nt=1, start="2020-12-01"), path, append_dim="time")
    with pytest.raises(TemplateMismatchError, match="coordinate 'band'"):
        write_cube(later.assign_coords(band=["B03", "SCL"]), path, append_dim="time")
    with pytest.raises(StoreGridMismatchError, match=r"store: GeoBox.*\n  cube:  GeoBox"):
        shifted = make_cube(nt=2, start="2021-02-03", gbox=make_geobox(dx=256)).assign_attrs(seed=0)
        write_cube(shifted, path, append_dim="time")
    with pytest.raises(TemplateMismatchError, match="dtype int16"):
        write_cube(later.astype("int16"), path, append_dim="time")
    with pytest.raises(TemplateMismatchError, match=r"attrs .* differ .*\['seed'\]"):
        write_cube(later.assign_attrs(seed=1), path, append_dim="time")
    with pytest.raises(TemplateMismatchError, match=r"only in the store .'platform'."):
        write_cube(later.drop_vars("platform"), path, append_dim="time")
    with pytest.raises(StoreError, match="mode='w' cannot be combined with append_dim"):
        write_cube(later, path, append_dim="time", mode="w")
    with pytest.raises(StoreError, match="append_dim must be 'time'"):
        write_cube(later, path, append_dim="band")
    with pytest.raises(StoreNotFoundError, match="Create it first"):
        write_cube(later, tmp_path / "none.zarr", append_dim="time")
    assert open_cube(path).sizes["time"] == 3  # nothing was appended
    assert len(store_status(path)["jobs"]) == 1


# --------------------------------------------------------------------------------------------
# Region writes


TILES = [(slice(0, 256), slice(0, 512)), (slice(0, 256), slice(512, 768)),
         (slice(256, 512), slice(0, 512)), (slice(256, 512), slice(512, 768))]


def test_region_writes_equal_a_single_write(tmp_path, written, cube):
    path = init_cube_store(cube, tmp_path / "tiles.zarr")
    with pytest.raises(IncompleteStoreError, match=r"0 of 6 regions.*region="):
        open_cube(path)
    for i, (ys, xs) in enumerate(TILES):
        tile = cube.isel(y=ys, x=xs)
        if i % 2:
            tile = tile.chunk(y=64, x=128)  # rechunked to the store's chunks
        write_cube(tile, path, region={"y": ys, "x": xs})
        assert store_status(path)["complete"] == (i == len(TILES) - 1)
    assert store_files(path) == store_files(written)
    xr.testing.assert_identical(open_cube(path).compute(), cube.compute())


def test_concurrent_region_writers(tmp_path, written, cube):
    """Tile writers running at the same time share the ledger; the last one completes it."""
    path = init_cube_store(cube, tmp_path / "tiles.zarr")

    def write(tile):
        ys, xs = tile
        return write_cube(cube.isel(y=ys, x=xs), path, region={"y": ys, "x": xs})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, TILES))
    assert store_status(path) | {"jobs": None} == {
        "complete": True, "ledger": True, "regions_total": 6, "regions_done": 6, "jobs": None}
    assert store_files(path) == store_files(written)


def test_region_modes_and_resume(tmp_path, written, cube):
    path = init_cube_store(cube, tmp_path / "tiles.zarr")
    ys, xs = TILES[2]
    tile = cube.isel(y=ys, x=xs)
    with pytest.raises(SimulatedCrash, match="simulated crash"), crash_after(1):
        write_cube(tile, path, region={"y": ys, "x": xs})
    with pytest.raises(StoreError, match=r"1 of the 2 regions .* already written"):
        write_cube(tile, path, region={"y": ys, "x": xs})
    write_cube(tile, path, region={"y": ys, "x": xs}, mode="resume")
    write_cube(tile, path, region={"y": ys, "x": xs}, mode="w")  # overwrite: same bytes
    # The whole cube can finish an initialised store too.
    write_cube(cube, path, mode="resume")
    assert store_files(path) == store_files(written)


def test_region_errors(tmp_path, cube):
    path = init_cube_store(cube, tmp_path / "tiles.zarr")
    tile = cube.isel(y=slice(0, 256), x=slice(0, 256))
    with pytest.raises(RegionError, match=r"slice\(100, 356\) is not aligned .* 256-px chunks"):
        write_cube(cube.isel(y=slice(100, 356), x=slice(0, 256)), path,
                   region={"y": slice(100, 356), "x": slice(0, 256)})
    with pytest.raises(RegionError, match="spans 512 px but the sub-cube has 256"):
        write_cube(tile, path, region={"y": slice(0, 512), "x": slice(0, 256)})
    with pytest.raises(StoreGridMismatchError, match=r"(?s)store: GeoBox.*7002560.*cube:  GeoBox.*7005120"):
        write_cube(tile, path, region={"y": slice(256, 512), "x": slice(0, 256)})
    with pytest.raises(RegionError, match="may only name the spatial dims"):
        write_cube(tile, path, region={"time": slice(0, 1), "y": slice(0, 256)})
    with pytest.raises(RegionError, match="integer slice with step 1"):
        write_cube(tile, path, region={"y": slice(0, 256, 2), "x": slice(0, 256)})
    with pytest.raises(TemplateMismatchError, match="coordinate 'time'"):
        write_cube(tile.isel(time=[0, 2, 1]), path, region={"y": slice(0, 256),
                                                            "x": slice(0, 256)})
    with pytest.raises(StoreNotFoundError, match="init_cube_store"):
        write_cube(tile, tmp_path / "none.zarr", region={"y": slice(0, 256)})
    with pytest.raises(StoreError, match="chunks= cannot be combined with region="):
        write_cube(tile, path, region={"y": slice(0, 256)}, chunks={"y": 256})
    assert store_status(path)["regions_done"] == 0


# --------------------------------------------------------------------------------------------
# Datasets: variables of one grid, written and resumed together


def make_dataset(**kw) -> xr.Dataset:
    """Reflectance (with ``scale``), SCL and a clear count apart, as a scene store holds them."""
    cube = make_cube(**kw)
    scl = (cube.sel(band="SCL") % 12).astype("uint8").rename("scl")
    scl.attrs = {"nodata": 0, "classes": "Sen2Cor scene classification"}
    count = (cube.sel(band="B04") % 7).astype("uint16").isel(time=0, drop=True)
    count = count.drop_vars([c for c in count.coords if c not in ("y", "x", "spatial_ref")])
    count.attrs = {"units": "clear observations"}  # not the reflectance's scale
    refl = cube.sel(band=["B04"]).rename("reflectance")
    return xr.Dataset({"reflectance": refl, "scl": scl, "clear_count": count.rename("clear_count")},
                      attrs={"composite": "none"})


def test_a_dataset_round_trips_and_resumes_to_the_same_bytes(tmp_path):
    from lames_cube.io import open_store

    ds = make_dataset()
    ref = write_cube(ds, tmp_path / "ref.zarr")
    back = open_store(ref)
    assert sorted(back.data_vars) == ["clear_count", "reflectance", "scl"]
    for name in ds.data_vars:
        assert back[name].dtype == ds[name].dtype
        assert back[name].attrs == ds[name].attrs
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert back.attrs == {"composite": "none"}
    assert back.reflectance.odc.geobox == ds.reflectance.odc.geobox
    # Only the reflectance carries a scale: applying it leaves SCL and counts as they were.
    scaled = {n: v * v.attrs["scale"] if "scale" in v.attrs else v for n, v in back.items()}
    np.testing.assert_array_equal(scaled["scl"].values, ds.scl.values)
    np.testing.assert_array_equal(scaled["clear_count"].values, ds.clear_count.values)
    assert np.allclose(scaled["reflectance"].values, ds.reflectance.values * 1e-4)

    path = tmp_path / "crash.zarr"
    with pytest.raises(SimulatedCrash, match="simulated crash after 2 regions"), crash_after(2):
        write_cube(ds, path)
    with pytest.raises(IncompleteStoreError, match="resume"):
        open_store(path)
    write_cube(ds, path, mode="resume")
    assert store_files(path) == store_files(ref)
    with pytest.raises(TemplateMismatchError, match="dtype"):
        write_cube(ds.assign(scl=ds.scl.astype("uint16")), path, mode="resume")


def test_a_dataset_of_mixed_chunks_or_non_grid_variables_is_refused(tmp_path):
    from lames_cube.io import ChunkError

    ds = make_dataset()
    with pytest.raises(ChunkError, match="different chunks along 'y'"):
        write_cube(ds.assign(scl=ds.scl.chunk({"y": 512})), tmp_path / "b.zarr")
    with pytest.raises(StoreError, match="not a grid"):
        write_cube(ds.assign(n=ds.clear_count.sum()), tmp_path / "c.zarr")


def test_stores_take_fsspec_urls(tmp_path, cube, written):
    """memory:// (fsspec's in-memory filesystem) behaves as a local path: writes, crashes,
    resumes, opens, and gives the same bytes."""
    import uuid

    import fsspec

    from lames_cube.io import open_store, region_written

    url = f"memory://lames-test-{uuid.uuid4().hex}/cube.zarr"
    fs = fsspec.filesystem("memory")
    try:
        with pytest.raises(SimulatedCrash, match="simulated crash after 2 regions"), crash_after(2):
            write_cube(cube, url)
        assert not store_status(url)["complete"]
        with pytest.raises(IncompleteStoreError, match="mode='resume'"):
            open_cube(url)
        assert write_cube(cube, url, mode="resume") == url
        xr.testing.assert_identical(open_cube(url).compute(), cube.compute())
        root = url.removeprefix("memory://")
        remote = {p.removeprefix(f"/{root}/"): fs.cat_file(p) for p in fs.find(f"/{root}")
                  if not p.endswith("ledger.jsonl")}
        assert remote == store_files(written)
        assert region_written(url, {"y": slice(0, 256), "x": slice(0, 256)})
        ds = make_dataset()
        durl = url.replace("cube.zarr", "ds.zarr")
        write_cube(ds, durl)
        assert sorted(open_store(durl).data_vars) == ["clear_count", "reflectance", "scl"]
        with pytest.raises(StoreExistsError, match="a store already exists"):
            write_cube(cube, url)
        write_cube(cube.isel(time=[0]), url, mode="w")  # replaces the remote store
        assert open_cube(url).sizes["time"] == 1
    finally:
        fs.rm(f"/{url.removeprefix('memory://').split('/')[0]}", recursive=True)
    with pytest.raises(StoreError, match=r"or an fsspec URL such as 's3://bucket/cube\.zarr'"):
        write_cube(cube, 42)  # type: ignore[arg-type]


def test_region_writes_of_a_dataset_cover_every_variable(tmp_path):
    """A region write with only some of a store's variables is refused: the ledger would call
    the region done with the others unwritten."""
    ds = make_dataset()
    path = tmp_path / "tiles.zarr"
    init_cube_store(ds, path)
    region = {"y": slice(0, 256), "x": slice(0, 256)}
    with pytest.raises(TemplateMismatchError, match=r"holds the variables \['clear_count', "
                       r"'reflectance', 'scl'\]"):
        write_cube(ds[["reflectance"]].isel(region), path, region=region)
    with pytest.raises(TemplateMismatchError, match="holds the variables"):
        write_cube(ds.reflectance.isel(region), path, region=region)
    from lames_cube.io import region_written

    assert not region_written(path, region)
    write_cube(ds.isel(region), path, region=region)
    assert region_written(path, region) and not store_status(path)["complete"]


def test_an_interrupted_layout_is_finished_and_another_template_refused(tmp_path):
    from lames_cube.io import open_store, region_written

    ds = make_dataset()
    path = tmp_path / "tiles.zarr"
    init_cube_store(ds, path)
    # A kill between the arrays and the ledger's "metadata" line: the layout is not recorded.
    lines = [x for x in (path / LEDGER_NAME).read_text().splitlines() if '"metadata"' not in x]
    (path / LEDGER_NAME).write_text("\n".join(lines) + "\n")
    region = {"y": slice(0, 256), "x": slice(0, 256)}
    assert not region_written(path, region)  # never "written" before the layout is recorded
    with pytest.raises(TemplateMismatchError, match="laid out for another cube"):
        init_cube_store(ds.assign(scl=ds.scl.astype("uint16")), path, mode="resume")
    init_cube_store(ds, path, mode="resume")  # finishes the layout
    init_cube_store(ds, path, mode="resume")  # and then is a no-op
    for y0 in (0, 256):
        for x0 in (0, 256, 512):
            r = {"y": slice(y0, y0 + 256), "x": slice(x0, x0 + 256)}
            write_cube(ds.isel(r), path, region=r)
    xr.testing.assert_identical(open_store(path).compute(), ds.compute())
