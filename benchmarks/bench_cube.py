"""Benchmarks of cube building: load throughput vs rasterio, and the Chile mosaic graph."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import rasterio

from lames_cube.cube import build_cube, prepare_items
from lames_cube.search import search
from lames_cube.synthetic import World, WorldSpec, write_world
from lames_cube.testing.catalogs import CHILE_BBOX, fake_items

#: One real LAMES site, two dates, 4392-px tiles (40 km at 10 m): per-file overheads matter
#: little at this size, as with real 10980-px tiles. LAMES_BENCH_QUICK=1 (the pytest smoke
#: test) uses 1098-px tiles instead.
LOAD_SPEC = (
    WorldSpec(seed=0, site_ids=("2657",), years=(2021,), scenes_per_year=2)
    if os.environ.get("LAMES_BENCH_QUICK")
    else WorldSpec(seed=0, site_ids=("2657",), years=(2021,), scenes_per_year=2, grid_km=40,
                   tile_px=4392)
)
BANDS = ("B02", "B03", "B04", "B08")
#: Side-by-side runs of the cube and of rasterio in CubeLoad.track_throughput_ratio.
LOAD_REPEATS = 5


def _temporary_world(spec: WorldSpec) -> str:
    """Write ``spec`` into a fresh temporary folder (asv's setup_cache) and return its path."""
    root = Path(tempfile.mkdtemp(prefix="lames-bench-")) / "world"
    write_world(root, spec, progress=False)
    return str(root)


class CubeLoad:
    """Loading a tile's 10 m bands through build_cube vs plain rasterio reads of the same COGs."""

    timeout = 600

    def setup_cache(self):
        return _temporary_world(LOAD_SPEC)

    def setup(self, root):
        world = World(LOAD_SPEC)
        self.tile = world.tiles[0]
        self.items = [i for i in search(root) if i.properties["s2:mgrs_tile"] == self.tile.tile_id]
        self.gbox = self.tile.geobox(10)
        self.cube = build_cube(self.items, geobox=self.gbox, bands=list(BANDS), chunks=2304)

    def _cube(self):
        with dask.config.set(scheduler="threads"):
            return self.cube.values

    def _rasterio(self):
        out = []
        for item in self.items:
            for band in BANDS:
                with rasterio.open(item.assets[band].href) as src:
                    out.append(src.read(1))
        return out

    def time_cube_load(self, root):
        self._cube()

    def time_rasterio_read(self, root):
        self._rasterio()

    def track_throughput_ratio(self, root):
        """rasterio time / cube compute time over the same pixels (target >= 0.8); printed.

        The graph is built in setup: graph construction is measured by ChileMosaicGraph. One
        untimed run of each first, then LOAD_REPEATS runs of each side by side (cube, rasterio,
        cube, ...): a load that comes and goes on the machine hits both alike.
        """
        self._cube(), self._rasterio()
        times: dict[str, list[float]] = {"cube": [], "rasterio": []}
        for _ in range(LOAD_REPEATS):
            for name, fn in (("cube", self._cube), ("rasterio", self._rasterio)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        best = {name: float(np.median(t)) for name, t in times.items()}
        ratio = best["rasterio"] / best["cube"]
        print(f"cube load throughput ratio (rasterio/cube, median of {LOAD_REPEATS} side by "
              f"side): {ratio:.2f} (cube {best['cube']:.3f} s, rasterio {best['rasterio']:.3f} "
              "s; target >= 0.8)")
        return ratio

    track_throughput_ratio.unit = "ratio"


#: One real LAMES site in Planetary Computer style over 2021-2022: items of both DN offsets
#: (0 before baseline 04.00 and for reprocessed scenes' twins, 1000 after) in one cube.
OFFSETS_SPEC = WorldSpec(seed=0, site_ids=("2203",), years=(2021, 2022), scenes_per_year=4,
                         style="planetary-computer",
                         **({"grid_km": 3, "tile_px": 330} if os.environ.get("LAMES_BENCH_QUICK")
                            else {}))
#: Alternating computes per engine in track_time_ratio (1 for the pytest smoke test).
REPEATS = 1 if os.environ.get("LAMES_BENCH_QUICK") else 5
GRAPH_BANDS = ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]


class CubeVsBareLoad:
    """build_cube against a bare ``odc.stac.load`` of the same items, GeoBox and chunks: the
    graph's size (target <= 2x) and the compute time (target <= 1.05x); both printed."""

    timeout = 900

    def setup_cache(self):
        return _temporary_world(OFFSETS_SPEC)

    def setup(self, root):
        import odc.stac

        from lames_cube.cube import solar_day_key

        self.items = search(root)
        self.cube = build_cube(self.items, bands=GRAPH_BANDS, chunks=512)
        self.bare = odc.stac.load(self.items, bands=GRAPH_BANDS, geobox=self.cube.odc.geobox,
                                  chunks={"x": 512, "y": 512}, groupby=solar_day_key)

    def track_task_ratio(self, root):
        ours, bare = len(self.cube.__dask_graph__()), len(self.bare.__dask_graph__())
        offsets = sorted({i.properties["lames:dn_offset"] for i in self.items})
        print(f"build_cube graph: {ours} tasks, bare odc.stac.load: {bare} (DN offsets "
              f"{offsets}): ratio {ours / bare:.2f}")
        return ours / bare

    track_task_ratio.unit = "ratio"

    def track_time_ratio(self, root):
        """Median of REPEATS alternating computes (threads)."""
        times = {"cube": [], "bare": []}
        with dask.config.set(scheduler="threads"):
            for _ in range(REPEATS):
                for name, obj in (("cube", self.cube), ("bare", self.bare)):
                    t0 = time.perf_counter()
                    obj.compute()
                    times[name].append(time.perf_counter() - t0)
        cube, bare = float(np.median(times["cube"])), float(np.median(times["bare"]))
        print(f"build_cube compute {cube:.3f} s, bare odc.stac.load {bare:.3f} s: ratio "
              f"{cube / bare:.3f}")
        return cube / bare

    track_time_ratio.unit = "ratio"


class ChileMosaicGraph:
    """Graphs on the chile-mosaic grid itself (``grid.mosaic_geobox()``: EPSG:32719, 10 m,
    2304-px tiles, 1,826 active of 5,888), from fake items covering Chile on two dates: the
    whole country as one lazy cube (what country inference maps over), and one tile's cube as
    the tiled recipe writer builds it."""

    timeout = 600

    def setup(self):
        from lames_cube.grid import mosaic_geobox, mosaic_tiles

        self.items = fake_items(CHILE_BBOX)
        self.gbox = mosaic_geobox("chile")
        tile = mosaic_tiles("chile", active_only=True).iloc[900]
        self.tile = self.gbox[int(tile.y_off):int(tile.y_off + tile.height),
                              int(tile.x_off):int(tile.x_off + tile.width)]

    def _build(self):
        return build_cube(self.items, geobox=self.gbox, chunks=2304, bands=["B04", "B08", "SCL"])

    def time_build_graph(self):
        self._build()

    def time_build_one_tile(self):
        build_cube(self.items, geobox=self.tile, chunks=2304, bands=["B04", "B08", "SCL"])

    def time_items_of_every_active_tile(self):
        """Which items touch each of the 1,826 active tiles (the tiled writer's lookup)."""
        from lames_cube.grid import mosaic_tiles
        from lames_cube.recipes.pipeline import ItemIndex

        index = ItemIndex(prepare_items(self.items), self.gbox.crs)
        for _, tile in mosaic_tiles("chile", active_only=True).iterrows():
            index.touching(self.gbox[int(tile.y_off):int(tile.y_off + tile.height),
                                     int(tile.x_off):int(tile.x_off + tile.width)])

    def track_tasks_per_tile(self):
        """Tasks per 2304-px tile of the whole-country cube (2 dates, 3 bands); printed."""
        cube = self._build()
        tiles = len(cube.chunks[2]) * len(cube.chunks[3])
        tasks = len(cube.__dask_graph__())
        print(f"chile-mosaic graph: {tasks} tasks for {tiles} tiles = {tasks / tiles:.2f} per tile")
        return tasks / tiles

    track_tasks_per_tile.unit = "tasks/tile"
