"""The ``.lames`` accessor on xarray objects: a shortcut to the public functions, nothing more.

Every method forwards to a plain function with the object as its first argument (or as
``like=`` for rasterising) and adds no behaviour of its own: the functions are the API, the
accessor saves typing in a notebook. Importing :mod:`lames_cube` registers it.

========================  =========================================================
``.lames.clear_mask()``   :func:`lames_cube.composite.clear_mask`
``.lames.composite()``    :func:`lames_cube.composite.composite`
``.lames.rasterize(p)``   :func:`lames_cube.labels.rasterize` with ``like=`` the object
``.lames.patch_table()``  :func:`lames_cube.patches.patch_table`
``.lames.patches(t)``     :func:`lames_cube.patches.extract_patches`
``.lames.predict(c)``     :func:`lames_cube.ml.predict` (needs torch)
``.lames.extent()``       :func:`lames_cube.timeseries.extent_over_time`
``.lames.first_year()``   :func:`lames_cube.timeseries.first_mining_year`
``.lames.pixel_area()``   :func:`lames_cube.timeseries.pixel_area`
========================  =========================================================

Examples
--------
>>> import numpy as np, xarray as xr
>>> import lames_cube  # registers .lames
>>> from odc.geo.geobox import GeoBox
>>> from odc.geo.xr import xr_coords
>>> gbox = GeoBox.from_bbox((480000, 7300000, 480200, 7300200), "EPSG:32719", resolution=10)
>>> mask = xr.DataArray(np.ones((20, 20), np.uint8), dims=("y", "x"), coords=xr_coords(gbox))
>>> round(float(mask.lames.extent().area_km2.iloc[0]), 4)      # 400 px of ~100 m²
0.04
>>> len(mask.lames.patch_table(size=10))
4
"""

from __future__ import annotations

from typing import Any

import xarray as xr

__all__ = ["LamesAccessor"]


class LamesAccessor:
    """``obj.lames``: the lames_cube functions that take a cube (or labels, or a prediction)."""

    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def clear_mask(self, **kwargs: Any) -> xr.DataArray:
        """:func:`lames_cube.composite.clear_mask` of this cube."""
        from lames_cube.composite import clear_mask  # local: light `import lames_cube`

        return clear_mask(self._obj, **kwargs)

    def composite(self, method: str = "median", **kwargs: Any) -> xr.Dataset:
        """:func:`lames_cube.composite.composite` of this cube."""
        from lames_cube.composite import composite  # local: light `import lames_cube`

        return composite(self._obj, method, **kwargs)

    def rasterize(self, polygons: Any, **kwargs: Any) -> xr.DataArray:
        """:func:`lames_cube.labels.rasterize` of ``polygons`` onto this object's grid.

        Examples
        --------
        >>> import geopandas as gpd, numpy as np, shapely, xarray as xr
        >>> from odc.geo.geobox import GeoBox
        >>> from odc.geo.xr import xr_coords
        >>> g = GeoBox.from_bbox((0, 0, 100, 100), "EPSG:32719", resolution=10)
        >>> cube = xr.DataArray(np.zeros((10, 10)), dims=("y", "x"), coords=xr_coords(g))
        >>> poly = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 50, 100)], crs="EPSG:32719")
        >>> int(cube.lames.rasterize(poly).sum())
        50
        """
        from lames_cube.labels import rasterize  # local: light `import lames_cube`

        return rasterize(polygons, like=self._obj, **kwargs)

    def patch_table(self, **kwargs: Any):
        """:func:`lames_cube.patches.patch_table` of this object's grid."""
        from lames_cube.patches import patch_table  # local: light `import lames_cube`

        return patch_table(self._obj, **kwargs)

    def patches(self, table: Any, **kwargs: Any):
        """:func:`lames_cube.patches.extract_patches` of this cube at ``table``'s windows."""
        from lames_cube.patches import extract_patches  # local: light `import lames_cube`

        return extract_patches(self._obj, table, **kwargs)

    def predict(self, checkpoint: Any, **kwargs: Any) -> xr.Dataset:
        """:func:`lames_cube.ml.predict` of this cube (imports torch)."""
        from lames_cube.ml import predict  # local: ml needs optional torch

        return predict(self._obj, checkpoint, **kwargs)

    def extent(self, **kwargs: Any):
        """:func:`lames_cube.timeseries.extent_over_time` of this prediction or labels."""
        from lames_cube.timeseries import extent_over_time  # local: light `import lames_cube`

        return extent_over_time(self._obj, **kwargs)

    def first_year(self, **kwargs: Any) -> xr.DataArray:
        """:func:`lames_cube.timeseries.first_mining_year` of this prediction or labels."""
        from lames_cube.timeseries import first_mining_year  # local: light `import lames_cube`

        return first_mining_year(self._obj, **kwargs)

    def pixel_area(self, **kwargs: Any) -> xr.DataArray:
        """:func:`lames_cube.timeseries.pixel_area` of this object's grid."""
        from lames_cube.timeseries import pixel_area  # local: light `import lames_cube`

        return pixel_area(self._obj, **kwargs)


def register() -> None:
    """Register ``.lames`` on DataArray and Dataset (once; later calls do nothing)."""
    if "lames" not in getattr(xr.DataArray, "__dict__", {}):
        xr.register_dataarray_accessor("lames")(LamesAccessor)
    if "lames" not in getattr(xr.Dataset, "__dict__", {}):
        xr.register_dataset_accessor("lames")(LamesAccessor)


register()
