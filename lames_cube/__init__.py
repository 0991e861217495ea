"""lames_cube: find and measure mines in Sentinel-2 imagery, from one site to a whole country.

The public entry points are plain functions (see ``../shared/DESIGN.md`` §7). Importing the
package is cheap and never imports torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Imported eagerly: ``accessor`` registers ``.lames`` on xarray objects (it only forwards to the
# functions); ``search`` shares its name with its module, and a lazy attribute would be
# replaced by the module as soon as anything imported ``lames_cube.search``.
from lames_cube import accessor  # noqa: F401
from lames_cube.search import search  # noqa: F401 (re-exported)

# Lazy attributes: heavy modules load on first use, so ``import lames_cube`` stays light.
_LAZY = {
    "build_cube": ("lames_cube.cube", "build_cube"),
    "errors": ("lames_cube.errors", None),
    "annotations": ("lames_cube.annotations", None),
    "synthetic": ("lames_cube.synthetic", None),
    "bands": ("lames_cube.bands", None),
    "items": ("lames_cube.items", None),
    "classes": ("lames_cube.classes", None),
    "grid": ("lames_cube.grid", None),
    "splits": ("lames_cube.splits", None),
    "labels": ("lames_cube.labels", None),
    "metrics": ("lames_cube.metrics", None),
    "rasterize": ("lames_cube.labels", "rasterize"),
    "timeseries": ("lames_cube.timeseries", None),
    "extent_over_time": ("lames_cube.timeseries", "extent_over_time"),
}

if TYPE_CHECKING:  # pragma: no cover
    from lames_cube import (  # noqa: F401
        annotations,
        bands,
        classes,
        errors,
        grid,
        items,
        labels,
        metrics,
        splits,
        synthetic,
        timeseries,
    )
    from lames_cube.cube import build_cube  # noqa: F401
    from lames_cube.labels import rasterize  # noqa: F401
    from lames_cube.timeseries import extent_over_time  # noqa: F401

__all__ = sorted([*_LAZY, "accessor", "search"])


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lames_cube' has no attribute {name!r}") from None
    module = import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value
