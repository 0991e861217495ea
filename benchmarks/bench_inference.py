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


def _checkpoint(folder: str, patch: int = PATCH) -> Path:
    from lames_cube.testing.ml_sets import random_checkpoint

    return random_checkpoint(Path(folder) / "small.pt", patch_size=patch, seed=1)


def _cube(tiles_y: int, tiles_x: int, tile: int = TILE):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_inference import make_cube

    return make_cube(height=tiles_y * tile, width=tiles_x * tile)


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
        pred.compute(scheduler="sync")  # warm-up (numba, oneDNN)
        t0 = time.perf_counter()
        pred.compute(scheduler="sync")
        pipeline = time.perf_counter() - t0
        lay = window_layout(tile=TILE, patch=PATCH, overlap=OVERLAP)
        n = len(lay.starts(TILE)) ** 2 * 2  # windows of the two tiles
        x = torch.from_numpy(np.random.default_rng(0).normal(
            size=(batch, 6, PATCH, PATCH)).astype(np.float32)).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            model(x)
            t0 = time.perf_counter()
            for _ in range(0, n, batch):
                model(x)
        bare = time.perf_counter() - t0
        ratio = bare / pipeline
        mpx = self.cube.sizes["y"] * self.cube.sizes["x"] / 1e6
        print(f"pipeline {mpx / pipeline:.2f} Mpx/s of cube ({n} windows of {PATCH} px, batch "
              f"{batch}, 1 thread) in {pipeline:.2f} s; bare forward {bare:.2f} s: ratio "
              f"{ratio:.3f} (target >= 0.85)")
        return ratio

    track_pipeline_over_bare_forward.unit = "ratio"


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {tests!r})
    from test_inference import make_cube
    from lames_cube.ml import predict, write_prediction
    import dask
    dask.config.set(num_workers=2)
    cube = make_cube(height={ty} * {tile}, width={tx} * {tile}).chunk({{"y": {tile}, "x": {tile}}})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pred = predict(cube, {ckpt!r}, tile={tile}, patch={patch}, overlap={overlap})
    write_prediction(pred, {store!r}, progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


class MosaicMemory:
    """Peak memory (RSS) of writing a 2 x 2 and an 4 x 4 tile mosaic (4x the pixels); the
    cube itself is in memory in both (a lazy source would be read tile by tile), so the
    ratio compares the pipeline's own memory beside it."""

    timeout = 1800

    def setup(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.ckpt = _checkpoint(self.tmp.name)

    def teardown(self):
        self.tmp.cleanup()

    def _peak_mb(self, ty: int, tx: int) -> float:
        script = MEMORY_SCRIPT.format(tests=str(ROOT / "tests"), ty=ty, tx=tx, tile=TILE,
                                      ckpt=str(self.ckpt), patch=PATCH, overlap=OVERLAP,
                                      store=str(Path(self.tmp.name) / f"m{ty}x{tx}.zarr"))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True)
        return int(out.stdout.split()[-1]) / 1024

    def track_peak_memory_ratio_4x_mosaic(self):
        # the cube's own bytes (uint16, 6 bands) differ by 4x: count them apart
        small, large = self._peak_mb(2, 2), self._peak_mb(4, 4)
        cube_mb = 6 * 2 * TILE * TILE / 2**20
        ratio = (large - 16 * cube_mb) / (small - 4 * cube_mb)
        print(f"peak RSS: 2 x 2 tiles {small:.0f} MB, 4 x 4 tiles {large:.0f} MB; without the "
              f"in-memory cube ({4 * cube_mb:.0f} / {16 * cube_mb:.0f} MB): ratio {ratio:.3f} "
              f"(target <= 1.15)")
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
            client.run(lambda: None)
            pred.isel(y=slice(0, TILE), x=slice(0, TILE)).compute()  # load the model, warm up
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
