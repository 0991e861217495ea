"""Benchmarks of the patch kernels, on the cases the tests use (lames_cube.testing.patch_cases)
and on a LAMES-sized raster: extraction throughput against a plain memory copy of the same bytes,
against NumPy fancy indexing and against xbatcher's BatchGenerator for the same windows (ratios
printed). xbatcher is a benchmark reference only (the ``test`` extra), never used by lames_cube."""

from __future__ import annotations

import os
import time

import numpy as np
import xarray as xr
import xbatcher
from odc.geo.geobox import GeoBox
from odc.geo.xr import assign_crs, xr_coords

from lames_cube import _kernels
from lames_cube.patches import extract_patches, patch_table
from lames_cube.testing.patch_cases import CASES

QUICK = bool(os.environ.get("LAMES_BENCH_QUICK"))
#: 4 bands of 4608 x 4608 px (two LAMES tiles a side), 256-px windows every 128 px.
SIDE = 1024 if QUICK else 4608
#: The xbatcher case: 3 bands of 4096 x 4096 px, 256-px windows every 256 px (256 windows).
XB_SIDE = 1024 if QUICK else 4096


def _median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


class KernelCases:
    """The gather kernel on every case of the shared table."""

    params = tuple(c[0] for c in CASES)
    param_names = ("case",)

    def setup(self, name):
        _, shape, size, stride, edge = next(c for c in CASES if c[0] == name)
        self.src = np.random.default_rng(0).integers(1, 10_000, shape).astype(np.uint16)
        g = GeoBox.from_bbox((0, 0, shape[2] * 10, shape[1] * 10), "EPSG:32719", resolution=10)
        t = patch_table(g, size=size, stride=stride, edge=edge)
        self.rows, self.cols = t.row.to_numpy(), t.col.to_numpy()
        self.out = np.empty((len(t), shape[0], size, size), np.uint16)
        _kernels.gather(self.src, self.rows, self.cols, self.out, np.uint16(0))  # compile

    def time_gather(self, name):
        _kernels.gather(self.src, self.rows, self.cols, self.out, np.uint16(0))


class ExtractionThroughput:
    """256-px windows every 128 px from a 4-band raster: the numba gather against a memory copy
    of the same number of bytes (target >= 0.8) and against NumPy fancy indexing (>= 3x)."""

    timeout = 600

    def setup(self):
        self.src = np.random.default_rng(0).integers(1, 10_000, (4, SIDE, SIDE)).astype(np.uint16)
        g = GeoBox.from_bbox((0, 0, SIDE * 10, SIDE * 10), "EPSG:32719", resolution=10)
        t = patch_table(g, size=256, stride=128)
        self.rows, self.cols = t.row.to_numpy(), t.col.to_numpy()
        self.out = np.empty((len(t), 4, 256, 256), np.uint16)
        self.copy_src = np.empty_like(self.out)
        self.copy_dst = np.empty_like(self.out)
        self.copy_src[...] = 1
        _kernels.gather(self.src, self.rows, self.cols, self.out, np.uint16(0))  # compile
        ii = np.arange(256)
        self.index = (slice(None), self.rows[:, None, None] + ii[None, :, None],
                      self.cols[:, None, None] + ii[None, None, :])

    def _gather(self):
        _kernels.gather(self.src, self.rows, self.cols, self.out, np.uint16(0))

    def _copy(self):
        np.copyto(self.copy_dst, self.copy_src)

    def _fancy(self):
        return self.src[self.index]

    def time_gather(self):
        self._gather()

    def track_ratio_to_memory_copy(self):
        gather, copy = _median_time(self._gather), _median_time(self._copy)
        print(f"gather {gather:.3f} s, memory copy of the same bytes {copy:.3f} s: throughput "
              f"ratio {copy / gather:.2f}")
        return copy / gather

    track_ratio_to_memory_copy.unit = "ratio"

    def track_speedup_over_fancy_indexing(self):
        gather, fancy = _median_time(self._gather), _median_time(self._fancy)
        print(f"gather {gather:.3f} s, numpy fancy indexing {fancy:.3f} s: {fancy / gather:.1f}x")
        return fancy / gather

    track_speedup_over_fancy_indexing.unit = "x"


class ExtractionVsXbatcher:
    """The same windows (256 px every 256 px, xbatcher's grid without overlap) of an in-memory
    3-band uint16 cube as one NumPy array: ``extract_patches(cube, table).image.values`` against
    xbatcher's ``BatchGenerator`` (each window's ``.values``, stacked; target >= 10x). Both
    allocate their output on every call."""

    timeout = 1200
    size = 256
    side = XB_SIDE
    repeats = 7

    def _cube(self) -> xr.DataArray:
        side = self.side
        g = GeoBox.from_bbox((0, 0, side * 10, side * 10), "EPSG:32719", resolution=10)
        src = np.random.default_rng(0).integers(1, 10_000, (3, side, side)).astype(np.uint16)
        coords = {"band": ["B02", "B03", "B04"], **xr_coords(g, crs_coord_name="spatial_ref")}
        return assign_crs(xr.DataArray(src, dims=("band", "y", "x"), coords=coords), g.crs)

    def setup(self):
        self.cube = self._cube()
        self.table = patch_table(self.cube, size=self.size, stride=self.size)
        ours = self._extract()  # also compiles the kernel
        # Once: both give the same windows with the same pixels (compared sorted by position).
        ys, xs = self.cube.get_index("y"), self.cube.get_index("x")
        batches = list(self._generator())
        pos = np.array([(ys.get_loc(b.y.values[0]), xs.get_loc(b.x.values[0])) for b in batches])
        theirs = np.stack([b.values for b in batches])
        mine = np.lexsort((self.table.col.to_numpy(), self.table.row.to_numpy()))
        other = np.lexsort((pos[:, 1], pos[:, 0]))
        same_windows = np.array_equal(
            self.table[["row", "col"]].to_numpy()[mine], pos[other])
        if not (same_windows and np.array_equal(ours[mine], theirs[other])):
            raise RuntimeError("extract_patches and xbatcher disagree on the windows or pixels")
        self.n = len(self.table)

    def _generator(self):
        return xbatcher.BatchGenerator(self.cube, input_dims={"y": self.size, "x": self.size},
                                       input_overlap={"y": 0, "x": 0})

    def _extract(self):
        return extract_patches(self.cube, self.table).image.values

    def _xbatcher(self):
        return np.stack([b.values for b in self._generator()])

    def time_extract_patches(self):
        self._extract()

    def time_xbatcher(self):
        self._xbatcher()

    def track_speedup_over_xbatcher(self):
        ours = _median_time(self._extract, self.repeats)
        theirs = _median_time(self._xbatcher, self.repeats)
        print(f"extract_patches {ours:.3f} s, xbatcher BatchGenerator {theirs:.3f} s "
              f"({self.n} windows of {self.size} px, {self.where}): {theirs / ours:.1f}x")
        return theirs / ours

    track_speedup_over_xbatcher.unit = "x"
    where = "in memory"


class ExtractionVsXbatcherStore(ExtractionVsXbatcher):
    """The same comparison on a cube store as the project writes them (``io.write_cube``, one
    Zarr chunk per 2304-px tile, read lazily with ``io.open_cube``): extract_patches reads each
    chunk once per group of windows, xbatcher's generator reads a chunk for every window in it
    (target >= 10x)."""

    side = 1024 if QUICK else 4608
    tile = 512 if QUICK else 2304
    repeats = 1
    where = "from a Zarr cube store"

    def _cube(self) -> xr.DataArray:
        import tempfile

        from lames_cube.io import open_cube, write_cube

        cube = super()._cube()
        cube.values[:] = 1000 + cube.values % 64  # reflectance-like: compresses as imagery does
        self._tmp = tempfile.TemporaryDirectory()
        store = write_cube(cube, f"{self._tmp.name}/cube.zarr",
                           chunks={"y": self.tile, "x": self.tile})
        return open_cube(store)

    def teardown(self):
        self._tmp.cleanup()
