"""A deterministic synthetic Sentinel-2 L2A world with mines at the real LAMES sites.

Build a :class:`World` from a :class:`WorldSpec`, render any window with :meth:`World.read`, or
write it as COGs plus a STAC catalogue and a stac-geoparquet index with :func:`write_world`.
"""

from lames_cube.synthetic.presets import DEMO_SPEC, demo_spec, demo_world_dir
from lames_cube.synthetic.world import Scene, Tile, World, WorldSpec
from lames_cube.synthetic.write import INDEX, MANIFEST, write_world

__all__ = ["DEMO_SPEC", "INDEX", "MANIFEST", "Scene", "Tile", "World", "WorldSpec",
           "demo_spec", "demo_world_dir", "write_world"]
