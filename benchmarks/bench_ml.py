"""Benchmarks of the torch data path: DataLoader throughput (patches/s) over a patch set of
256-px 3-band patches, read sample by sample from Zarr shards, standardised and augmented, with
0 and 2 worker processes (figures printed)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from lames_cube.patches import patch_table
from lames_cube.patchset import PatchSource, write_patch_set

QUICK = bool(os.environ.get("LAMES_BENCH_QUICK"))
#: 2560 px a side with 256-px windows every 128 px: 361 patches (25 when quick).
SIDE = 768 if QUICK else 2560
BATCH = 16


class DataLoaderThroughput:
    """Patches per second through ``DataLoader(PatchDataset(store, augment=True))``, one epoch
    after a warm-up epoch (workers started, Zarr arrays open), shuffled, batches of 16."""

    timeout = 900

    def setup(self):
        from lames_cube.ml import PatchDataset

        self.tmp = tempfile.mkdtemp(prefix="lames-bench-ml-")
        g = GeoBox.from_bbox((300_000, 7_000_000, 300_000 + SIDE * 10, 7_000_000 + SIDE * 10),
                             "EPSG:32719", resolution=10)
        rng = np.random.default_rng(0)
        base = xr_zeros(g, dtype="uint16")
        cube = xr.concat([base.copy(data=rng.integers(200, 4_000, base.shape, dtype=np.uint16))
                          for _ in range(3)], "band").assign_coords(band=["B04", "B03", "B02"])
        labels = xr_zeros(g, dtype="uint8")
        labels.values[SIDE // 4:SIDE // 2, SIDE // 4:SIDE // 2] = 1
        table = patch_table(g, size=256, stride=128)
        table["split"] = "train"
        store = write_patch_set(PatchSource(cube, table, labels), f"{self.tmp}/patches.zarr",
                                progress=False)
        self.n = len(table)
        self.data = PatchDataset(store, augment=True, seed=0)

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _patches_per_second(self, workers: int) -> float:
        import torch
        from torch.utils.data import DataLoader

        loader = DataLoader(self.data, batch_size=BATCH, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0,
                            generator=torch.Generator().manual_seed(0))
        for _ in loader:  # warm-up epoch
            pass
        t0 = time.perf_counter()
        seen = sum(len(images) for images, _ in loader)
        rate = seen / (time.perf_counter() - t0)
        print(f"DataLoader num_workers={workers}: {rate:.0f} patches/s ({seen} patches of "
              f"3 x 256 x 256 uint16, batch {BATCH})")
        return rate

    def track_patches_per_second_0_workers(self):
        return self._patches_per_second(0)

    track_patches_per_second_0_workers.unit = "patches/s"

    def track_patches_per_second_2_workers(self):
        return self._patches_per_second(2)

    track_patches_per_second_2_workers.unit = "patches/s"
