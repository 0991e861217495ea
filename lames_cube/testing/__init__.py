"""Fixture builders shared by tests, benchmarks and docs."""

from lames_cube.testing.worlds import (
    SMALL_SPEC,
    FixedBaselineWorld,
    scene_coverage,
    small_world,
    stac_data_dir,
)

__all__ = ["SMALL_SPEC", "FixedBaselineWorld", "scene_coverage", "small_world", "stac_data_dir"]
