"""Inference: tiled halo-blended predictions against whole-image references, lazy graphs,
nodata skipped, bad inputs, and the resumable prediction store (crash, kill -9, LocalCluster)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
import xarray as xr

from lames_cube.cluster import SchedulerUnreachableError, dask_scheduler
from lames_cube.errors import BandMismatchError, PatchSizeError, SimulatedCrash
from lames_cube.ml import inference
from lames_cube.ml.checkpoint import load_model
from lames_cube.ml.inference import (
    InferenceConfigError,
    MissingCRSError,
    ModelHandle,
    predict,
    taper,
    window_layout,
)
from lames_cube.prediction import (
    NODATA_CLASS,
    PredictionStoreMismatchError,
    export_cog,
    open_prediction,
    write_prediction,
)
from lames_cube.testing.crash import crash_after, demo_image
from lames_cube.testing.ml_sets import BANDS, pointwise_checkpoint, random_checkpoint
from lames_cube.testing.schedulers import CountingScheduler

MEAN, STD = 1000.0, 500.0


def make_cube(height=384, width=448, bands=BANDS, seed=0, crs="EPSG:32719"):
    """Smooth structure plus noise, so that a model with context sees real spatial variation."""
    return demo_image(height=height, width=width, bands=bands, seed=seed, crs=crs)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {"pixel": pointwise_checkpoint(root / "pixel.pt", patch_size=64),
            "unet": random_checkpoint(root / "unet.pt", patch_size=64, seed=3)}


def whole_image_windows(cube, ckpt, patch, overlap, edge="nodata"):
    """The reference: every window of one grid over the whole image (mirrored by half a
    window with numpy's ``symmetric`` pad for ``edge="reflect"``; nodata beyond), blended with
    ``taper`` weights in a plain loop -- no tiles, no halo, no dask."""
    net, _ = load_model(ckpt)
    h, (height, width) = patch // 2, cube.shape[1:]
    values = cube.values.astype(np.float32)
    if edge == "reflect":
        values = np.pad(values, ((0, 0), (h, h), (h, h)), mode="symmetric")
    x = (torch.from_numpy(values) - MEAN) / STD
    stride = patch - overlap
    if edge == "reflect":  # mirrored half windows in place; nodata only past them
        pad = torch.nn.functional.pad(x, (0, patch, 0, patch))
    else:
        pad = torch.nn.functional.pad(x, (h, h + patch, h, h + patch))
    rows = np.arange(0, h + height, stride)  # every window that reaches the image
    cols = np.arange(0, h + width, stride)
    weights = taper(patch, overlap).astype(np.float64)
    total = np.zeros(pad.shape[1:])
    count = np.zeros(pad.shape[1:])
    with torch.no_grad():
        for r in rows:
            wins = torch.stack([pad[:, r:r + patch, c:c + patch] for c in cols])
            p = torch.softmax(net(wins), 1)[:, 1].numpy()
            for c, pc in zip(cols, p, strict=True):
                total[r:r + patch, c:c + patch] += weights * pc
                count[r:r + patch, c:c + patch] += weights
    return total[h:h + height, h:h + width] / count[h:h + height, h:h + width]


# --------------------------------------------------------------------------- blending
def test_taper_sums_to_one_between_windows():
    for patch, overlap in ((64, 32), (64, 16), (256, 64)):
        edge = np.sqrt(np.diag(taper(patch, overlap)).astype(np.float64))
        stride = patch - overlap
        total = np.zeros(3 * stride + patch)
        for k in range(4):
            total[k * stride:k * stride + patch] += edge
        inner = total[patch:3 * stride]
        np.testing.assert_allclose(inner, 1.0, atol=1e-6)
    # overlap = patch/2 is the plain Hann window of merge_patches
    from lames_cube._kernels import hann

    np.testing.assert_allclose(taper(64, 32), hann(64), atol=1e-6)


def test_pointwise_model_tiled_equals_whole_image(ckpts):
    """A translation-equivariant model: the tiled, halo-blended prediction is the model run
    on the whole image at once."""
    cube = make_cube(bands=BANDS)
    pred = predict(cube, ckpts["pixel"], tile=192, patch=64, probability="float32").compute()
    net, _ = load_model(ckpts["pixel"])
    x = (torch.from_numpy(cube.values.astype(np.float32)) - MEAN) / STD
    with torch.no_grad():
        p = torch.softmax(net(x[None]), 1)[0].numpy()
    assert np.abs(pred.probability.values - (1 - p[0])).max() < 1e-5
    assert (pred["class"].values == p.argmax(0)).mean() > 0.9999


@pytest.mark.parametrize("overlap", [32, 16])
def test_unet_tiled_equals_whole_image_windows_and_seams_without_halo(ckpts, overlap):
    """Any model: the tiles (here 192 px, the last ones 64 px) with the full halo equal the
    whole image's windows; with a partial halo only the tile edges differ; without one the
    seams show."""
    cube = make_cube(height=448, width=448)
    ref = whole_image_windows(cube, ckpts["unet"], 64, overlap, edge="nodata")
    kw = {"tile": 192, "patch": 64, "overlap": overlap, "probability": "float32",
          "edge": "nodata"}
    tiled = predict(cube, ckpts["unet"], **kw).probability.values
    err = np.abs(tiled - ref)
    print(f"overlap {overlap}: max |tiled - whole| = {err.max():.2e}")
    assert err.max() < 1e-5
    near = np.zeros(ref.shape, bool)  # within 8 px of an inner tile edge
    far = np.ones(ref.shape, bool)  # farther than a window from every inner tile edge
    for edge in (192, 384):
        near[edge - 8:edge + 8, :] = near[:, edge - 8:edge + 8] = True
        far[edge - 64:edge + 64, :] = far[:, edge - 64:edge + 64] = False
    seams = np.abs(predict(cube, ckpts["unet"], halo=0, **kw).probability.values - ref)
    print(f"no halo: mean |diff| near tile edges {seams[near].mean():.4f}, more than a "
          f"window away {seams[far].max():.1e}")
    assert seams[near].mean() > 1e-3 and seams[far].max() < 1e-5  # seams at the edges only
    part = np.abs(predict(cube, ckpts["unet"], halo=16, **kw).probability.values - ref)
    assert part[far].max() < 1e-5 < part[near].max()


def test_mirrored_edges_equal_the_whole_image_mirrored_and_lose_the_edge_frame(ckpts):
    """``edge="reflect"`` (the default): tiled equals the whole image's windows over the image
    mirrored by numpy; at the cube's edges it differs from nodata padding, inside it does
    not."""
    cube = make_cube(height=448, width=320)
    ref = whole_image_windows(cube, ckpts["unet"], 64, 32, edge="reflect")
    kw = {"tile": 192, "patch": 64, "overlap": 32, "probability": "float32"}
    tiled = predict(cube, ckpts["unet"], **kw)
    assert tiled.attrs["edge"] == "reflect"
    err = np.abs(tiled.probability.values - ref)
    print(f"reflect: max |tiled - whole mirrored| = {err.max():.2e}")
    assert err.max() < 1e-5
    nodata = predict(cube, ckpts["unet"], edge="nodata", **kw).probability.values
    diff = np.abs(nodata - ref)
    rim = np.zeros(ref.shape, bool)
    rim[:16], rim[-16:], rim[:, :16], rim[:, -16:] = True, True, True, True
    inner = np.zeros(ref.shape, bool)
    inner[64:-64, 64:-64] = True
    assert diff[rim].mean() > 1e-3 and diff[inner].max() < 1e-5
    with pytest.raises(InferenceConfigError, match="edge='wrap' must be one of"):
        predict(cube, ckpts["unet"], edge="wrap", **kw)


def test_graph_build_computes_nothing_and_tasks_per_tile_are_bounded(ckpts):
    cube = make_cube(height=768, width=960)
    lazy = cube.chunk({"y": 192, "x": 192})
    counter = CountingScheduler()
    with dask.config.set(scheduler=counter):
        pred = predict(lazy, ckpts["unet"], tile=192, patch=64)
    assert counter.calls == 0
    tiles = len(pred.chunks["y"]) * len(pred.chunks["x"])
    tasks = len(dict(pred.__dask_graph__()))
    print(f"{tasks} tasks for {tiles} tiles: {tasks / tiles:.1f} per tile")
    assert tasks / tiles <= 30
    # doubling the grid doubles the tasks (per-tile cost, not per-grid)
    big = predict(make_cube(height=768, width=1920).chunk({"y": 192, "x": 192}), ckpts["unet"],
                  tile=192, patch=64)
    ratio = len(dict(big.__dask_graph__())) / tasks
    assert 1.8 < ratio < 2.2


def test_nodata_tiles_are_not_scored(ckpts):
    cube = make_cube()
    cube[:, :192, :192] = 0  # the first tile has no data
    handle = ModelHandle.from_checkpoint(ckpts["unet"])
    model, _ = handle.get()
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        pred = predict(cube, handle, tile=192, patch=64, overlap=32).compute(scheduler="sync")
    finally:
        hook.remove()
    assert (pred["class"].values[:192, :192] == NODATA_CLASS).all()
    assert (pred.probability.values[:192, :192] == 0).all()
    assert (pred["class"].values[192:, 192:] != NODATA_CLASS).all()
    # windows of 64 px, 32 apart: 7 x 7 per 192-px tile, 7 x 3 for the 64-px last column;
    # the empty tile costs no forward pass at all
    assert sum(calls) == 3 * 49 + 2 * 21


def test_time_dim_is_scored_per_step(ckpts):
    one = make_cube(height=192, width=384, seed=1)
    two = make_cube(height=192, width=384, seed=2)
    cube = xr.concat([one, two], dim="time").assign_coords(time=[2021, 2022])
    pred = predict(cube, ckpts["unet"], tile=192, patch=64).compute()
    assert pred["class"].dims == ("time", "y", "x")
    for k, single in enumerate((one, two)):
        alone = predict(single, ckpts["unet"], tile=192, patch=64).compute()
        np.testing.assert_array_equal(pred.probability.isel(time=k).values,
                                      alone.probability.values)
    assert (pred.probability.isel(time=0) != pred.probability.isel(time=1)).any()


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_typed_errors(ckpts, tmp_path):
    cube = make_cube(height=192, width=192)
    with pytest.raises(BandMismatchError, match=r"trained on bands .*missing \['B11', 'B12'\]"):
        predict(cube.sel(band=["B02", "B03", "B04", "B08"]), ckpts["unet"], tile=192, patch=64)
    bare = xr.DataArray(cube.values, dims=("band", "y", "x"), coords={"band": cube.band.values})
    with pytest.raises(MissingCRSError, match=r"has no CRS.*write_crs"):
        predict(bare, ckpts["unet"], tile=192, patch=64)
    with pytest.raises(InferenceConfigError, match=r"tile=200 px is not a multiple of the "
                                                   r"window stride 48"):
        predict(cube, ckpts["unet"], tile=200, patch=64, overlap=16)
    with pytest.raises(PatchSizeError, match="multiples of 16"):
        predict(cube, ckpts["unet"], tile=192, patch=40, overlap=16)
    with pytest.raises(InferenceConfigError, match="overlap=40 must be"):
        window_layout(tile=192, patch=64, overlap=40)
    with pytest.raises(InferenceConfigError, match="blend='max'"):
        window_layout(tile=192, patch=64, blend="max")
    with pytest.raises(InferenceConfigError, match="device='cuda' but torch sees no CUDA"):
        if torch.cuda.is_available():  # pragma: no cover - CPU machines only
            raise InferenceConfigError("device='cuda' but torch sees no CUDA")
        predict(cube, ckpts["unet"], tile=192, patch=64, device="cuda")


def test_unreachable_scheduler_is_a_typed_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SchedulerUnreachableError, match=f"tcp://127.0.0.1:{port}.*start one"), \
            dask_scheduler(f"tcp://127.0.0.1:{port}", timeout=1, quiet=True):
        pass


def test_store_of_another_model_or_grid_is_refused(ckpts, tmp_path):
    cube = make_cube(height=192, width=384)
    store = tmp_path / "p.zarr"
    write_prediction(predict(cube, ckpts["pixel"], tile=192, patch=64), store, progress=False)
    with pytest.raises(PredictionStoreMismatchError, match=r"another model.*--overwrite"):
        write_prediction(predict(cube, ckpts["unet"], tile=192, patch=64), store,
                         progress=False)
    moved = make_cube(height=192, width=384).assign_coords(x=cube.x + 1920)
    moved = moved.odc.assign_crs("EPSG:32719")
    with pytest.raises(PredictionStoreMismatchError, match="grid"):
        write_prediction(predict(moved, ckpts["pixel"], tile=192, patch=64), store,
                         progress=False)
    # overwrite replaces it
    write_prediction(predict(cube, ckpts["unet"], tile=192, patch=64), store, progress=False,
                     overwrite=True)
    assert open_prediction(store).attrs["model_sha256"] == inference.file_digest(ckpts["unet"])


# --------------------------------------------------------------------------- the store
def _store_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and ".lames" not in p.parts}


def test_write_prediction_resumes_after_a_crash_with_the_same_bytes(ckpts, tmp_path,
                                                                    monkeypatch):
    cube = make_cube(height=384, width=576)
    pred = predict(cube, ckpts["unet"], tile=192, patch=64)
    whole = write_prediction(pred, tmp_path / "whole.zarr", progress=False)
    np.testing.assert_array_equal(open_prediction(whole).probability.values,
                                  pred.probability.values)
    calls = []
    real = inference.predict_array
    monkeypatch.setattr(inference, "predict_array",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    crashed = tmp_path / "crashed.zarr"
    with pytest.raises(SimulatedCrash, match="simulated crash"), crash_after(2):
        write_prediction(pred, crashed, progress=False, group=1)
    with pytest.raises(Exception, match="incomplete"):
        open_prediction(crashed)
    calls.clear()
    write_prediction(pred, crashed, progress=False, group=1)
    assert len(calls) == 6 - 2  # each unfinished tile once, the finished ones never
    assert _store_bytes(crashed) == _store_bytes(whole)


def test_resume_with_another_tile_selection_is_refused(ckpts, tmp_path):
    import geopandas as gpd

    pred = predict(make_cube(height=192, width=384), ckpts["pixel"], tile=192, patch=64)

    def table(active):
        return gpd.GeoDataFrame({"y_off": [0, 0], "x_off": [0, 192], "active": active},
                                geometry=[None, None])

    store = tmp_path / "sel.zarr"
    write_prediction(pred, store, tiles=table([True, False]), progress=False)
    with pytest.raises(PredictionStoreMismatchError, match=r"started scoring 1 tiles, this run "
                                                           r"scores 2"):
        write_prediction(pred, store, tiles=table([True, True]), progress=False)
    write_prediction(pred, store, tiles=table([True, True]), progress=False, overwrite=True)
    assert (open_prediction(store)["class"].values != NODATA_CLASS).all()


def test_only_active_tiles_are_scored(ckpts, tmp_path):
    import geopandas as gpd

    cube = make_cube(height=384, width=384)
    pred = predict(cube, ckpts["pixel"], tile=192, patch=64)
    tiles = gpd.GeoDataFrame({"y_off": [0, 0, 192, 192], "x_off": [0, 192, 0, 192],
                              "active": [True, False, False, True]}, geometry=[None] * 4)
    out = open_prediction(write_prediction(pred, tmp_path / "a.zarr", tiles=tiles,
                                           progress=False)).compute()
    full = pred.compute()
    assert (out["class"].values[:192, 192:] == NODATA_CLASS).all()
    np.testing.assert_array_equal(out["class"].values[:192, :192], full["class"].values[:192, :192])


KILL_SCRIPT = textwrap.dedent("""
    import sys, time, json
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_inference import make_cube
    from lames_cube.ml import inference, predict, write_prediction
    real = inference.predict_array
    log = open({log!r}, "a")
    def slow(*a, **k):
        out = real(*a, **k)
        log.write("computed\\n"); log.flush()
        time.sleep({sleep})
        return out
    inference.predict_array = slow
    pred = predict(make_cube(height=384, width=576), {ckpt!r}, tile=192, patch=64)
    write_prediction(pred, {store!r}, progress=False, group=1)
    print("done")
""")


def _ledger_done(store: Path) -> int:
    path = store / ".lames" / "ledger.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"event":"done"' in line)


@pytest.mark.slow  # kill trial
def test_kill_minus_9_then_rerun_gives_the_same_store(ckpts, tmp_path):
    cube = make_cube(height=384, width=576)
    reference = write_prediction(predict(cube, ckpts["unet"], tile=192, patch=64),
                                 tmp_path / "ref.zarr", progress=False)
    store = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}

    def script(sleep, log):
        return KILL_SCRIPT.format(tests=str(Path(__file__).parent), log=str(log), sleep=sleep,
                                  ckpt=str(ckpts["unet"]), store=str(store))

    first = subprocess.Popen([sys.executable, "-c", script(1.0, tmp_path / "first.log")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _ledger_done(store) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = _ledger_done(store)
    assert 2 <= done < 6, f"killed after {done} tiles"
    second = subprocess.run([sys.executable, "-c", script(0, tmp_path / "second.log")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    recomputed = (tmp_path / "second.log").read_text().count("computed")
    print(f"killed with {done} of 6 tiles recorded; the rerun computed {recomputed}")
    assert recomputed == 6 - done
    assert _store_bytes(store) == _store_bytes(reference)


@pytest.mark.slow  # starts a LocalCluster
def test_local_cluster_equals_threads(ckpts, tmp_path):
    cube = make_cube(height=384, width=384)
    pred = predict(cube, ckpts["unet"], tile=192, patch=64)
    threads = write_prediction(pred, tmp_path / "threads.zarr", progress=False)
    with dask_scheduler("local", workers=2, quiet=True) as client:
        assert "MALLOC_TRIM_THRESHOLD_" not in dask.config.get(
            "distributed.nanny.pre-spawn-environ")
        cluster = write_prediction(pred, tmp_path / "cluster.zarr", progress=False)
        loads = client.run(lambda: inference.LOADS["count"])
    assert _store_bytes(threads) == _store_bytes(cluster)
    assert sorted(loads.values()) == [1, 1]  # each worker process loaded the model once


def test_export_cog_of_a_region(ckpts, tmp_path):
    import rasterio

    cube = make_cube(height=384, width=384)
    store = write_prediction(predict(cube, ckpts["pixel"], tile=192, patch=64),
                             tmp_path / "p.zarr", progress=False)
    ds = open_prediction(store)
    x0, y1 = float(ds.x[100] - 5), float(ds.y[50] + 5)
    bbox = (x0, y1 - 1000, x0 + 2000, y1)  # 200 x 100 px
    path = export_cog(store, tmp_path / "p.tif", variable="class", bbox=bbox)
    with rasterio.open(path) as src:
        data = src.read(1)
        assert src.crs.to_epsg() == 32719 and src.nodata == NODATA_CLASS
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert tuple(src.bounds) == pytest.approx(bbox)
    np.testing.assert_array_equal(data, ds["class"].values[50:150, 100:300])


def test_handle_is_light_and_loads_once_per_process(ckpts):
    import pickle

    handle = ModelHandle.from_checkpoint(ckpts["unet"])
    assert len(pickle.dumps(handle)) < 5000  # path, digest, settings: no weights
    before = inference.LOADS["count"]
    handle.get()
    handle.get()
    assert inference.LOADS["count"] - before <= 1
    json.dumps({k: v for k, v in handle.meta.items() if k != "state_dict"}, default=str)


def test_batch_size_defaults(ckpts):
    handle = ModelHandle.from_checkpoint(ckpts["unet"], device="cpu")
    model, _ = handle.get()
    assert inference._batch(handle, model, 6, 256, None) == 8  # 8 windows of 256 px
    assert inference._batch(handle, model, 6, 64, None) == 128
    assert inference._batch(handle, model, 6, 64, 5) == 5
    assert inference.gpu_batch_size(16e9, 100e6) == 80


@pytest.mark.gpu
def test_cuda_prediction_matches_the_cpu(ckpts):  # pragma: no cover - needs CUDA
    cube = make_cube()
    cpu = predict(cube, ckpts["unet"], tile=192, patch=64, device="cpu",
                  probability="float32").compute()
    gpu = predict(cube, ckpts["unet"], tile=192, patch=64, device="cuda",
                  probability="float32").compute()
    assert np.abs(gpu.probability.values - cpu.probability.values).max() < 1e-2  # float16
    handle = ModelHandle.from_checkpoint(ckpts["unet"], device="cuda")
    model, _ = handle.get()
    assert inference._batch(handle, model, 6, 64, None) >= 1
