"""Benchmarks of the synthetic world and search (asv; also run once by tests/test_benchmarks.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lames_cube.search import search
from lames_cube.synthetic import World
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
