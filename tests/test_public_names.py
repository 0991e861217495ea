"""Every public entry point of DESIGN.md §7 stays importable as written, with a docstring."""

from __future__ import annotations

import importlib

import pytest

#: DESIGN.md §7, "Public entry points (names fixed; keyword arguments may grow)".
SECTION_7 = [
    "lames_cube.search",
    "lames_cube.build_cube",
    "lames_cube.annotations.load_sectors",
    "lames_cube.annotations.load_sites",
    "lames_cube.annotations.load_footprints",
    "lames_cube.annotations.load_metadata",
    "lames_cube.rasterize",
    "lames_cube.grid.lames_tiles",
    "lames_cube.grid.site_boxes",
    "lames_cube.splits.isolation_split",
    "lames_cube.metrics.confusion_matrix",
    "lames_cube.metrics.scores",
    "lames_cube.ml.train",
    "lames_cube.ml.predict",
    "lames_cube.ml.evaluate",
    "lames_cube.patches.patch_table",
    "lames_cube.patches.lames_patch_table",
    "lames_cube.patches.extract_patches",
    "lames_cube.patches.merge_patches",
    "lames_cube.sampling.sample_background",
    "lames_cube.sampling.sample_blind",
    "lames_cube.sampling.sample_positive",
    "lames_cube.sampling.touches",
    "lames_cube.synthetic.World",
    "lames_cube.synthetic.World.to_cube",
    "lames_cube.timeseries.extent_over_time",
    "lames_cube.timeseries.pixel_area",
    "lames_cube.timeseries.first_mining_year",
    "lames_cube.timeseries.compare_with_truth",
    "lames_cube.io.open_store",
    "lames_cube.io.write_cube",
    "lames_cube.prediction.write_prediction",
    "lames_cube.prediction.open_prediction",
    "lames_cube.prediction.prediction_polygons",
    "lames_cube.prediction.export_cog",
]


def _resolve(dotted: str):
    """``from <module> import <name>`` (then attributes) for the longest importable module."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("dotted", SECTION_7)
def test_public_name_is_importable_and_documented(dotted):
    obj = _resolve(dotted)
    assert callable(obj), f"{dotted} is not callable"
    doc = obj.__doc__ or ""
    assert len(doc.strip()) > 40, f"{dotted} has no real docstring"


def test_the_facade_names_are_the_real_functions():
    import lames_cube
    from lames_cube.cube import build_cube
    from lames_cube.labels import rasterize
    from lames_cube.search import search

    assert lames_cube.build_cube is build_cube
    assert lames_cube.rasterize is rasterize
    assert lames_cube.search is search
