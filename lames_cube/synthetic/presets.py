"""Named synthetic worlds: the demo world that ``world:demo`` catalogues and the demo use.

A preset is a :class:`~lames_cube.synthetic.WorldSpec` plus where its files are cached. The
library core (recipes, the country inference) reads presets from here; the demo command is a
face over them and never imported by the core.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lames_cube.config import cache_dir, find_data_dir
from lames_cube.synthetic.world import World, WorldSpec

__all__ = ["DEMO_SPEC", "demo_spec", "demo_world_dir"]

#: The demo world: four LAMES sites (three train, one test), four years, ten passes of each
#: relative orbit a year (twenty where two swaths overlap): enough clear looks that the yearly
#: composites have no holes inside the site boxes.
DEMO_SPEC = WorldSpec(seed=0, n_sites=4, years=(2020, 2021, 2022, 2023), scenes_per_year=10)


def demo_spec(data_dir=None) -> WorldSpec:
    """The demo's spec: real LAMES sites when the files are there, synthetic ones otherwise.

    Examples
    --------
    >>> demo_spec().years
    (2020, 2021, 2022, 2023)
    """
    if find_data_dir(data_dir, required=False) is None:
        return dataclasses.replace(DEMO_SPEC, use_lames=False)
    return DEMO_SPEC


def demo_world_dir(world: World) -> Path:
    """Where the demo world is cached: named by its digest, so a changed world is rebuilt."""
    return cache_dir() / "worlds" / f"demo-{world.digest()}"
