"""Small synthetic worlds for tests and benchmarks."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from lames_cube.errors import DataDirError
from lames_cube.synthetic import World, WorldSpec, write_world
from lames_cube.synthetic.landscape import pixel_centres

#: Two real LAMES sites (one test, one train), two years across the 04.00 baseline change,
#: 3 km tiles of 330 px: 5 tiles, 24 scenes (two orbits), written in a few seconds.
SMALL_SPEC = WorldSpec(
    seed=0, site_ids=("2203", "2355"), years=(2021, 2022), scenes_per_year=2, grid_km=3,
    tile_px=330, margin_m=500.0,
)


def small_world(
    path: str | os.PathLike, *, data_dir=None, workers: int = 1, overwrite: bool = False, **changes
) -> Path:
    """Write (or reuse) :data:`SMALL_SPEC`, optionally changed, at ``path``."""
    spec = dataclasses.replace(SMALL_SPEC, **changes)
    return write_world(path, spec, data_dir=data_dir, workers=workers, overwrite=overwrite,
                       progress=False)


def stac_data_dir() -> Path:
    """The folder of real STAC JSON (``LAMES_STAC_DIR`` or ``../shared/stac``).

    Raises
    ------
    DataDirError
        The folder is missing: tests that need it fail loudly, never skip.
    """
    env = os.environ.get("LAMES_STAC_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "stac"
    if not (path / "MANIFEST.md").is_file():
        raise DataDirError(
            f"The real STAC data folder {str(path)!r} is missing (no MANIFEST.md). Set "
            "LAMES_STAC_DIR to the folder holding earth_search_v1/, planetary_computer/ and pixels/."
        )
    return path


class FixedBaselineWorld(World):
    """A world whose every scene has one processing baseline (for baseline-twin tests)."""

    def __init__(self, spec: WorldSpec, baseline: str, **kwargs) -> None:
        super().__init__(spec, **kwargs)
        self.fixed_baseline = baseline

    def baseline(self, tile, date) -> str:
        return self.fixed_baseline

    def digest(self) -> str:
        return f"{super().digest()}-pb{self.fixed_baseline}"


def scene_coverage(scene, gbox) -> np.ndarray:
    """Where a world scene has data on ``gbox`` (a grid in the tile's CRS): inside its tile
    and on the data side of its swath or datastrip edge."""
    xs, ys = pixel_centres(gbox)
    b = scene.tile.geobox(10).boundingbox
    inside = (xs > b.left) & (xs < b.right) & (ys > b.bottom) & (ys < b.top)
    return World.valid_mask(scene, gbox) & inside
