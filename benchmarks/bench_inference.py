"""Benchmarks of country inference (lames_cube.ml.predict + write_prediction), each printing
its ratio from the same run:

- pipeline throughput against the bare model forward pass over the same windows, on the same
  device, batch and thread count (target >= 0.85);
- peak memory of writing a mosaic 4x larger (target <= 1.15x the smaller one's): tiles are
  computed a few at a time, so memory does not grow with the grid;
- the speed-up of 2 dask workers over 1.

The model is the small U-Net with random weights (the speed does not depend on the weights).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

QUICK = bool(os.environ.get("LAMES_BENCH_QUICK"))
TILE = 384 if QUICK else 1152
PATCH = 64 if QUICK else 256
OVERLAP = PATCH // 4 if not QUICK else 32
ROOT = Path(__file__).resolve().parents[1]
#: Side-by-side runs of the pipeline and of the bare forward in PipelineThroughput.
PIPELINE_REPEATS = 3


def _checkpoint(folder: str, patch: int = PATCH) -> Path:
    from lames_cube.testing.ml_sets import random_checkpoint

    return random_checkpoint(Path(folder) / "small.pt", patch_size=patch, seed=1)


def _cube(tiles_y: int, tiles_x: int, tile: int = TILE):
    """A lazy 6-band uint16 cube made chunk by chunk where it is computed (no pixels in the
    graph, as a store or a STAC cube)."""
    import dask.array as da
    import numpy as np
    import xarray as xr
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    h, w = tiles_y * tile, tiles_x * tile
    gbox = GeoBox.from_bbox((300000, 7000000, 300000 + 10 * w, 7000000 + 10 * h), "EPSG:32719",
                            resolution=10)
    data = da.random.default_rng(0).integers(1, 3000, (6, h, w), chunks=(6, tile, tile),
                                             dtype=np.uint16)
    return xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": ["B02", "B03", "B04", "B08", "B11", "B12"],
                                **xr_coords(gbox)}, attrs={"nodata": 0})


class PipelineThroughput:
    """Mpx/s of predict() on one thread against the bare forward of the same windows."""

    timeout = 1800

    def setup(self):
        import torch

        self.tmp = tempfile.TemporaryDirectory()
        self.ckpt = _checkpoint(self.tmp.name)
        self.cube = _cube(1, 2)
        torch.set_num_threads(1)

    def teardown(self):
        self.tmp.cleanup()

    def track_pipeline_over_bare_forward(self):
        import numpy as np
        import torch

        from lames_cube.ml.inference import ModelHandle, predict, window_layout

        handle = ModelHandle.from_checkpoint(self.ckpt, threads=1)
        model, _ = handle.get()
        batch = max(1, 8 * 256 * 256 // (PATCH * PATCH))
        pred = predict(self.cube, handle, tile=TILE, patch=PATCH, overlap=OVERLAP,
                       batch_size=batch)
        lay = window_layout(tile=TILE, patch=PATCH, overlap=OVERLAP)
        per_tile = len(lay.starts(TILE)) ** 2
        n = 2 * per_tile  # windows of the two tiles, in the pipeline's batches per tile
        sizes = [min(batch, per_tile - k) for k in range(0, per_tile, batch)] * 2
        x = torch.from_numpy(np.random.default_rng(0).normal(
            size=(batch, 6, PATCH, PATCH)).astype(np.float32)).contiguous(
            memory_format=torch.channels_last)

        def run_pipeline():
            pred.compute(scheduler="sync")

        def run_bare():
            with torch.inference_mode():
                for size in sizes:
                    model(x[:size])

        run_pipeline()  # warm-up (numba, oneDNN)
        with torch.inference_mode():
            model(x)
        # side by side (pipeline, bare, pipeline, ...): a load that comes and goes on the
        # machine hits both alike; the ratio of the medians
        times: dict[str, list[float]] = {"pipeline": [], "bare": []}
        for _ in range(PIPELINE_REPEATS):
            for name, fn in (("pipeline", run_pipeline), ("bare", run_bare)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        pipeline, bare = float(np.median(times["pipeline"])), float(np.median(times["bare"]))
        ratio = bare / pipeline
        mpx = self.cube.sizes["y"] * self.cube.sizes["x"] / 1e6
        print(f"pipeline {mpx / pipeline:.2f} Mpx/s of cube ({n} windows of {PATCH} px, batch "
              f"{batch}, 1 thread) in {pipeline:.2f} s; bare forward {bare:.2f} s (medians of "
              f"{PIPELINE_REPEATS} side by side): ratio {ratio:.3f} (target >= 0.85)")
        return ratio

    track_pipeline_over_bare_forward.unit = "ratio"


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {root!r})
    from benchmarks.bench_inference import _cube
    from lames_cube.ml import predict, write_prediction
    import dask
    dask.config.set(num_workers=2)
    cube = _cube({ty}, {tx})
    pred = predict(cube, {ckpt!r}, tile={tile}, patch={patch}, overlap={overlap})
    write_prediction(pred, {store!r}, progress=False, group=2)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


class MosaicMemory:
    """Peak memory (RSS) of writing a 2 x 2 and a 4 x 4 tile mosaic (4x the pixels) from a
    lazy cube, in a fresh process each, 2 tiles per group (so the larger mosaic runs more
    groups than the smaller one)."""

    timeout = 1800

    def setup(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.ckpt = _checkpoint(self.tmp.name)

    def teardown(self):
        self.tmp.cleanup()

    def _peak_mb(self, ty: int, tx: int) -> float:
        script = MEMORY_SCRIPT.format(root=str(ROOT), ty=ty, tx=tx, tile=TILE,
                                      ckpt=str(self.ckpt), patch=PATCH, overlap=OVERLAP,
                                      store=str(Path(self.tmp.name) / f"m{ty}x{tx}.zarr"))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True)
        return int(out.stdout.split()[-1]) / 1024

    def track_peak_memory_ratio_4x_mosaic(self):
        small, large = self._peak_mb(2, 2), self._peak_mb(4, 4)
        ratio = large / small
        print(f"peak RSS: 2 x 2 tiles of {TILE} px {small:.0f} MB, 4 x 4 tiles {large:.0f} MB: "
              f"ratio {ratio:.3f} (target <= 1.15)")
        return ratio

    track_peak_memory_ratio_4x_mosaic.unit = "ratio"


class WorkerSpeedup:
    """Wall time of one prediction on a LocalCluster of 1 and of 2 worker processes."""

    timeout = 1800

    def setup(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.ckpt = _checkpoint(self.tmp.name)
        self.cube = _cube(2, 2)

    def teardown(self):
        self.tmp.cleanup()

    def _seconds(self, workers: int) -> float:
        from lames_cube.cluster import dask_scheduler
        from lames_cube.ml import predict, write_prediction

        pred = predict(self.cube, self.ckpt, tile=TILE, patch=PATCH, overlap=OVERLAP)
        with dask_scheduler("local", workers=workers, quiet=True) as client:
            from lames_cube.ml.inference import warm_up

            client.run(warm_up, str(self.ckpt))  # every worker imports torch, loads the model
            t0 = time.perf_counter()
            write_prediction(pred, Path(self.tmp.name) / f"w{workers}.zarr", progress=False)
            return time.perf_counter() - t0

    def track_speedup_two_workers(self):
        one, two = self._seconds(1), self._seconds(2)
        speedup = one / two
        print(f"LocalCluster: 1 worker {one:.1f} s, 2 workers {two:.1f} s: speed-up "
              f"{speedup:.2f}x on {os.cpu_count()} cores")
        return speedup

    track_speedup_two_workers.unit = "x"
