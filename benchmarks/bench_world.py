"""Benchmarks of the synthetic world and search (asv; also run once by tests/test_benchmarks.py)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import dask
import geopandas as gpd
import numpy as np
from odc.geo.geobox import GeoBox

from benchmarks import legacy_world_v2 as legacy
from lames_cube.grid import mosaic_tiles
from lames_cube.search import search
from lames_cube.synthetic import DEMO_SPEC, World
from lames_cube.synthetic.world import GENERATOR_VERSION
from lames_cube.testing import SMALL_SPEC, small_world


class WorldGeneration:
    """Writing the small test world (5 tiles, 20 scenes of 330 px) and rendering one tile."""

    timeout = 300

    def setup(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.world = World(SMALL_SPEC)
        self.scene = self.world.scenes[0]

    def teardown(self):
        self.tmp.cleanup()

    def time_write_small_world(self):
        small_world(Path(self.tmp.name) / "w", workers=1, overwrite=True)

    def time_render_tile_10m(self):
        self.world._surface_cache.clear()
        self.world.scene_arrays(self.scene, 10)

    def track_scenes_per_world(self):
        return len(self.world.scenes)

    track_scenes_per_world.unit = "scenes"


class Search:
    """search() on the small world's stac-geoparquet index."""

    timeout = 300

    def setup(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = small_world(Path(self.tmp.name) / "w", workers=1)

    def teardown(self):
        self.tmp.cleanup()

    def time_search_all(self):
        search(self.root)

    def time_search_sites_cloud(self):
        search(self.root, sites=["2203"], max_cloud=20)

    def track_items_found(self):
        return len(search(self.root))

    track_items_found.unit = "items"


#: Side of the rendered tile: a Chile mosaic tile (2304 px) or, for the pytest smoke test, 576.
RENDER_TILE = 576 if os.environ.get("LAMES_BENCH_QUICK") else 2304


def _median_time(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


class RenderSpeed:
    """Rendering all bands of one mosaic tile at 10 m (EPSG:32719), cloudy date, one process.

    Two tiles: one centred on LAMES site 2504 (mines, haul roads, hidden mines) and one 60 km
    east of it (ground only, like most of the country). ``generator2`` is the renderer this
    project had before generator 3, on the same mine tile.
    """

    timeout = 900

    def setup(self):
        self.world = World(DEMO_SPEC)
        site = self.world.sites.set_index("site_id").loc["2504"]
        x, y = gpd.GeoSeries([site.geometry.centroid], crs=4326).to_crs(32719).iloc[0].coords[0]
        half = RENDER_TILE * 5
        x, y = x // 10 * 10, y // 10 * 10
        self.mines = GeoBox.from_bbox((x - half, y - half, x + half, y + half), "EPSG:32719",
                                      resolution=10)
        self.plain = GeoBox.from_bbox((x + 60_000 - half, y - half, x + 60_000 + half, y + half),
                                      "EPSG:32719", resolution=10)
        self.date = next(d for d in self.world.dates if 0.1 < self.world.clouds(d).cover < 0.5)
        self.world.read(self.mines, self.date)  # compile the kernels, project the sectors

    def _render(self, gbox):
        self.world.read(gbox, self.date)

    def _generator2(self):
        state = self.world.clouds(self.date)
        classes = self.world.mine_classes(self.mines, self.date.year)
        refl, scl = legacy.surface(self.mines, texture_epsg=self.world.texture_epsg,
                                   seed=self.world.spec.seed, classes=classes)
        refl, scl = legacy.atmosphere(refl, scl, self.mines, texture_epsg=self.world.texture_epsg,
                                      clouds=legacy.CloudState(**dataclasses.asdict(state)))
        return np.clip(np.rint(refl * 10_000.0), 1, 64_000).astype(np.uint16), scl

    def time_render_tile_mines(self):
        self._render(self.mines)

    def time_render_tile_ground(self):
        self._render(self.plain)

    def time_render_tile_generator2(self):
        self._generator2()

    def track_mpx_per_second(self):
        """Megapixels per second (all bands) on the mine tile and the ground tile; printed."""
        px = self.mines.shape[0] * self.mines.shape[1]
        mines = px / _median_time(lambda: self._render(self.mines)) / 1e6
        ground = px / _median_time(lambda: self._render(self.plain)) / 1e6
        print(f"render speed ({RENDER_TILE} px tile, all bands, one process): mine tile "
              f"{mines:.1f} Mpx/s, ground tile {ground:.1f} Mpx/s (target >= 10)")
        return mines

    track_mpx_per_second.unit = "Mpx/s"

    def track_ratio_vs_generator2(self):
        """Generator 2 time / the current generator's time on the mine tile (the ratio to the
        frozen generator, which does not depend on the machine), and the Chile mosaic
        estimate."""
        new = _median_time(lambda: self._render(self.mines))
        old = _median_time(self._generator2, repeat=1)
        ground = _median_time(lambda: self._render(self.plain))
        tiles = mosaic_tiles()
        active = int(tiles["active"].sum())
        scale = (2304 / RENDER_TILE) ** 2
        print(f"generator {GENERATOR_VERSION} vs generator 2 on a {RENDER_TILE} px mine tile: "
              f"{new:.3f} s vs {old:.3f} s, ratio {old / new:.1f}x")
        print(f"Chile mosaic ({active} active 2304 px tiles, one date, all bands): "
              f"{active * ground * scale / 3600:.2f} h in one process at the ground-tile speed "
              f"({active * new * scale / 3600:.2f} h if every tile were a mine tile); "
              f"generator 2: {active * old * scale / 3600:.1f} h")
        return old / new

    track_ratio_vs_generator2.unit = "ratio"

    def _cube(self, scheduler: str, chunks: int):
        cube = self.world.to_cube(self.mines, dates=[self.date], chunks=chunks)
        with dask.config.set(scheduler=scheduler):
            return cube.values

    def time_to_cube_tile_threads(self):
        self._cube("threads", 768)

    def track_to_cube_mpx_per_second(self):
        """World.to_cube on the mine tile (7 bands at 10 m; the 20 m bands are 2 x 2 means of the
        same 10 m render, as in the COGs): dask's threaded scheduler on 768 px chunks, and one
        thread; printed."""
        px = self.mines.shape[0] * self.mines.shape[1]
        chunks = min(768, RENDER_TILE)
        threads = px / _median_time(lambda: self._cube("threads", chunks)) / 1e6
        one = px / _median_time(lambda: self._cube("sync", RENDER_TILE)) / 1e6
        print(f"World.to_cube ({RENDER_TILE} px tile, all bands, one process): "
              f"{threads:.1f} Mpx/s with dask threads ({chunks} px chunks), {one:.1f} Mpx/s "
              "in one thread (target >= 10)")
        return threads

    track_to_cube_mpx_per_second.unit = "Mpx/s"
