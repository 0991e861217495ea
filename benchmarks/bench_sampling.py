"""Benchmarks of checked background sampling: 10,000 windows of 256 px on a 40,000 x 40,000 px
mine mask, drawn from the counted clean windows (``sampling.background_index``: summed-area
tables, one bit per window position) against a naive rejection sampler that looks at each
candidate's pixels (target: < 1 s after the index, >= 50x the naive sampler; ratio printed)."""

from __future__ import annotations

import os
import time

import numpy as np
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from lames_cube.sampling import background_index

QUICK = bool(os.environ.get("LAMES_BENCH_QUICK"))
SIDE = 4_000 if QUICK else 40_000
N = 1_000 if QUICK else 10_000
SIZE = 256


def mine_mask(side: int, seed: int = 0):
    """A ``side`` x ``side`` uint8 mask with mines: 1 % of the area in 20-500 px rectangles."""
    g = GeoBox.from_bbox((0, 0, side * 10, side * 10), "EPSG:32719", resolution=10)
    labels = xr_zeros(g, dtype="uint8")
    values = labels.values
    rng = np.random.default_rng(seed)
    target, covered = 0.01 * side * side, 0
    while covered < target:
        h, w = rng.integers(20, 500, 2)
        r, c = rng.integers(0, side - h), rng.integers(0, side - w)
        values[r:r + h, c:c + w] = 1
        covered += h * w
    return labels


def naive_sample(values: np.ndarray, n: int, size: int, seed: int) -> list[tuple[int, int]]:
    """Rejection with a look at every candidate's pixels (what a sampler without tables does)."""
    rng = np.random.default_rng(seed)
    ny, nx = values.shape[0] - size + 1, values.shape[1] - size + 1
    seen: set[tuple[int, int]] = set()
    while len(seen) < n:
        r, c = int(rng.integers(ny)), int(rng.integers(nx))
        if (r, c) not in seen and not values[r:r + size, c:c + size].any():
            seen.add((r, c))
    return sorted(seen)


class CheckedSampling:
    """Drawing 10,000 clean windows from the index, and the naive sampler for the ratio."""

    timeout = 1200

    def setup(self):
        self.labels = mine_mask(SIDE)
        t0 = time.perf_counter()
        self.index = background_index(self.labels, size=SIZE)
        self.index_seconds = time.perf_counter() - t0
        self.index.draw(N, seed=0)  # compile the kernels

    def time_index_draw(self):
        self.index.draw(N, seed=1)

    def time_index_sample_table(self):
        self.index.sample(N, seed=1)

    def track_index_build_seconds(self):
        print(f"\nindex of {SIDE:,} x {SIDE:,} px: {self.index_seconds:.1f} s, "
              f"{self.index.count:,} clean windows")
        return self.index_seconds

    track_index_build_seconds.unit = "s"

    def track_ratio_vs_naive_rejection(self):
        """Both samplers return top-left pixels; the table (shapely boxes) is timed apart."""
        times = []
        for seed in range(5):
            t0 = time.perf_counter()
            got = self.index.draw(N, seed=seed)
            times.append(time.perf_counter() - t0)
        ours = float(np.median(times))
        t0 = time.perf_counter()
        table = self.index.sample(N, seed=1)
        with_table = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = naive_sample(self.labels.values, N, SIZE, seed=1)
        slow = time.perf_counter() - t0
        values = self.labels.values
        assert all(not values[r:r + SIZE, c:c + SIZE].any() for r, c in naive[:200])
        assert all(not values[r:r + SIZE, c:c + SIZE].any() for r, c in got[:200])
        assert len(table) == N
        print(f"\n{N:,} windows of {SIZE} px on {SIDE:,} x {SIDE:,} px: index draw {ours:.4f} s "
              f"(with the table {with_table:.3f} s), naive rejection {slow:.2f} s: "
              f"{slow / ours:.0f}x (target >= 50x, < 1 s)")
        return slow / ours

    track_ratio_vs_naive_rejection.unit = "x"
