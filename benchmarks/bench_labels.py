"""Benchmarks of rasterize: eager (geocube) vs lazy (per chunk) for all 1,204 LAMES sectors.

The grid is the Chile mosaic's extent (CHILE_BBOX in EPSG:32719) at 100 m (9,225 × 42,379 px,
391 Mpx) and, to show how memory scales, at 50 m (4× the pixels). The lazy path is computed
chunk by chunk into a reduction (the number of labelled pixels), so nothing grid-sized is held:
its peak memory must not grow with the grid, while the eager path's grows with it.
LAMES_BENCH_QUICK=1 (the pytest smoke test) uses 2 km / 1 km grids and 256-px chunks.
"""

from __future__ import annotations

import contextlib
import os
import time
import tracemalloc
import warnings

import dask
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox
from rasterio.errors import NotGeoreferencedWarning

from lames_cube.labels import rasterize
from lames_cube.testing.catalogs import CHILE_BBOX

QUICK = bool(os.environ.get("LAMES_BENCH_QUICK"))
#: Resolution (m) of the base grid and of the 4× grid.
RESOLUTIONS = (2000, 1000) if QUICK else (100, 50)
#: Chunk side of the lazy path (the LAMES / chile-mosaic tile).
CHUNK = 256 if QUICK else 2304


def chile_grid(resolution: float) -> GeoBox:
    """The Chile mosaic extent in UTM 19S at ``resolution`` metres."""
    bbox = BoundingBox(*CHILE_BBOX, crs="EPSG:4326").to_crs("EPSG:32719")
    return GeoBox.from_bbox(bbox, resolution=resolution, tight=False)


@contextlib.contextmanager
def _no_rasterio_thread_warning():
    """rasterio's first rasterize calls in fresh threads may warn "no geotransform" spuriously."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def _load_sectors():
    from lames_cube.annotations import load_sectors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader's repair report
        return load_sectors()


class RasterizeSectors:
    """All 1,204 sectors (value = class) onto a Chile-sized grid, eager vs lazy."""

    timeout = 1200

    def setup_cache(self):
        return _load_sectors()

    def setup(self, sectors):
        self.grid = chile_grid(RESOLUTIONS[0])
        self.grid4 = chile_grid(RESOLUTIONS[1])

    # -- the paths --------------------------------------------------------------------------------

    def _eager(self, sectors, grid):
        return rasterize(sectors, like=grid, value="class", lazy=False)

    def _lazy(self, sectors, grid):
        return rasterize(sectors, like=grid, value="class", lazy=True, chunks=CHUNK)

    def _lazy_count(self, sectors, grid):
        """Labelled pixels, computed chunk by chunk (threads): no grid-sized array is held."""
        lazy = self._lazy(sectors, grid)
        with dask.config.set(scheduler="threads"), _no_rasterio_thread_warning():
            return int((lazy.data > 0).sum().compute())

    # -- time -------------------------------------------------------------------------------------

    def time_eager(self, sectors):
        """geocube over the whole grid (one array)."""
        self._eager(sectors, self.grid)

    def time_lazy_build(self, sectors):
        """Plan and graph of the lazy path (reprojection, burn order, STRtree per chunk)."""
        self._lazy(sectors, self.grid)

    def time_lazy_compute(self, sectors):
        """The lazy path computed into one array (like for like with time_eager)."""
        with dask.config.set(scheduler="threads"), _no_rasterio_thread_warning():
            self._lazy(sectors, self.grid).compute()

    def time_lazy_count(self, sectors):
        """The lazy path reduced chunk by chunk."""
        self._lazy_count(sectors, self.grid)

    # -- peak memory (process RSS, setup included) ------------------------------------------------

    def peakmem_eager(self, sectors):
        self._eager(sectors, self.grid)

    def peakmem_eager_4x(self, sectors):
        self._eager(sectors, self.grid4)

    def peakmem_lazy_count(self, sectors):
        self._lazy_count(sectors, self.grid)

    def peakmem_lazy_count_4x(self, sectors):
        self._lazy_count(sectors, self.grid4)

    # -- the growth ratio, measured in one process --------------------------------------------------

    def track_lazy_peak_growth(self, sectors):
        """Peak traced allocation of the lazy count on the 4× grid / on the base grid (~1).

        Measured with tracemalloc (numpy buffers included), so the process baseline does not
        dilute the ratio; the eager ratio is printed for contrast (~4).
        """
        peaks = {}
        for name, fn in (("lazy", self._lazy_count), ("eager", self._eager)):
            for grid in (self.grid, self.grid4):
                tracemalloc.start()
                t0 = time.perf_counter()
                result = fn(sectors, grid)
                seconds = time.perf_counter() - t0
                del result
                peaks[(name, grid.shape.x)] = (tracemalloc.get_traced_memory()[1], seconds)
                tracemalloc.stop()
        w1, w4 = self.grid.shape.x, self.grid4.shape.x
        for name in ("lazy", "eager"):
            (p1, s1), (p4, s4) = peaks[(name, w1)], peaks[(name, w4)]
            print(f"{name:5s} peak {p1 / 2**20:8.1f} MiB ({s1:.2f} s) on {self.grid.shape.y}x{w1} px, "
                  f"{p4 / 2**20:8.1f} MiB ({s4:.2f} s) on {self.grid4.shape.y}x{w4} px: "
                  f"ratio {p4 / p1:.2f}")
        return peaks[("lazy", w4)][0] / peaks[("lazy", w1)][0]

    track_lazy_peak_growth.unit = "ratio"

    def track_lazy_tasks(self, sectors):
        """Tasks of the lazy graph per chunk (1 + one burn list); printed with the chunk count."""
        lazy = self._lazy(sectors, self.grid)
        chunks = lazy.data.npartitions
        tasks = len(lazy.data.__dask_graph__())
        print(f"lazy rasterize graph: {tasks} tasks for {chunks} chunks of {CHUNK} px")
        return tasks / chunks

    track_lazy_tasks.unit = "tasks/chunk"
