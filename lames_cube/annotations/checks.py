"""Checks that polygons can be rasterised as given (CRS, coordinates, geometry, burn values).

:func:`check_annotations` refuses, with a message saying how to fix it, what would rasterise
into nonsense: no CRS or another one, coordinates outside the range of the declared CRS (metres
labelled as degrees), null, empty, non-polygonal or invalid geometries, burn values outside
0..255.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from lames_cube.errors import AnnotationError

__all__ = ["check_annotations"]


def _crs_bounds(crs) -> tuple[float, float, float, float] | None:
    """The CRS's valid coordinate range (generously padded) in its own units."""
    if crs.is_geographic:
        return (-180.0, -90.0, 360.0, 90.0)
    aou = crs.area_of_use
    if aou is None:
        return None
    t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    try:
        x0, y0, x1, y1 = t.transform_bounds(*aou.bounds, densify_pts=21)
    except Exception:
        return None
    if not np.all(np.isfinite([x0, y0, x1, y1])):
        return None
    dx, dy = x1 - x0, y1 - y0
    return (x0 - dx, y0 - dy, x1 + dx, y1 + dy)


def check_annotations(
    gdf: Any, *, value: str | float | None = None, crs: Any = "EPSG:4326"
) -> gpd.GeoDataFrame:
    """Check that polygons can be rasterised as given; return them unchanged.

    Parameters
    ----------
    gdf
        The annotations.
    value
        A column name (its values must be whole numbers in 0..255, no missing values) or a
        number in 0..255 to burn; None skips the value check.
    crs
        The CRS the polygons must be in (``gdf.crs`` must equal it); None accepts any CRS.

    Returns
    -------
    geopandas.GeoDataFrame
        ``gdf``.

    Raises
    ------
    AnnotationError
        Not a GeoDataFrame; empty; no CRS; a CRS other than ``crs``; coordinates outside the
        range of the declared CRS (e.g. metres labelled EPSG:4326); null, empty or non-polygonal
        or invalid geometries; a missing or non-integer value column (the message names the
        columns present); a value outside 0..255.

    Examples
    --------
    >>> import shapely
    >>> g = gpd.GeoDataFrame({"class": [5]}, geometry=[shapely.box(-70, -24, -69.9, -23.9)],
    ...                      crs="EPSG:4326")
    >>> len(check_annotations(g, value="class"))
    1
    >>> check_annotations(g, value="kind")
    Traceback (most recent call last):
    ...
    lames_cube.errors.AnnotationError: The annotations have no 'kind' column to burn; columns present: ['class', 'geometry']. Pass value= one of them or a number.
    """
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise AnnotationError(
            f"Annotations must be a geopandas.GeoDataFrame, got {type(gdf).__name__}; read files "
            "with geopandas.read_file or the lames_cube.annotations loaders."
        )
    if len(gdf) == 0:
        raise AnnotationError(
            "The annotations are an empty GeoDataFrame (0 rows): nothing to rasterise. Check the "
            "file and any filter applied before (e.g. site ids or classes)."
        )
    if gdf.crs is None:
        raise AnnotationError(
            "The annotations have no CRS. Declare the one the coordinates are in, e.g. "
            "gdf.set_crs('EPSG:4326') for longitude/latitude."
        )
    if crs is not None:
        want = CRS.from_user_input(crs)
        if not gdf.crs.equals(want):
            raise AnnotationError(
                f"The annotations are in {gdf.crs.to_string()}, expected {want.to_string()}; "
                f"reproject them with gdf.to_crs({want.to_string()!r})."
            )
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        rows = gdf.index[missing].tolist()[:10]
        raise AnnotationError(
            f"{int(missing.sum())} annotation(s) have a null or empty geometry (rows {rows}); drop "
            "them with gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]."
        )
    types = shapely.get_type_id(geoms)
    not_poly = ~np.isin(types, [3, 6])  # Polygon, MultiPolygon
    if not_poly.any():
        found = sorted(set(gdf.geometry[not_poly].geom_type))
        raise AnnotationError(
            f"{int(not_poly.sum())} annotation(s) are {found}, not (Multi)Polygons; only polygons "
            "can be rasterised as areas (buffer points or lines first)."
        )
    bounds = tuple(float(b) for b in shapely.total_bounds(geoms))
    valid_range = _crs_bounds(gdf.crs)
    looks_like_degrees = (
        gdf.crs.is_projected and max(abs(bounds[0]), abs(bounds[2])) <= 180
        and max(abs(bounds[1]), abs(bounds[3])) <= 90
    )
    if looks_like_degrees or (valid_range is not None and (
            bounds[0] < valid_range[0] or bounds[1] < valid_range[1]
            or bounds[2] > valid_range[2] or bounds[3] > valid_range[3])):
        raise AnnotationError(
            f"The annotations' coordinates span {tuple(round(b, 3) for b in bounds)}, outside the "
            f"range of their declared CRS {gdf.crs.to_string()}"
            + (f" {tuple(round(b, 3) for b in valid_range)}" if valid_range else "")
            + ": the polygons are in a CRS other than declared (e.g. metres labelled as degrees). "
            "Declare the right CRS with gdf.set_crs(..., allow_override=True)."
        )
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        rows = gdf.index[invalid].tolist()[:10]
        raise AnnotationError(
            f"{int(invalid.sum())} annotation polygon(s) are invalid (rows {rows}, e.g. "
            f"{shapely.is_valid_reason(geoms[invalid][0])}); repair them with "
            "gdf.geometry.make_valid() or load LAMES files with lames_cube.annotations."
        )
    if isinstance(value, str):
        if value not in gdf.columns or value == gdf.geometry.name:
            raise AnnotationError(
                f"The annotations have no {value!r} column to burn; columns present: "
                f"{list(gdf.columns)}. Pass value= one of them or a number."
            )
        col = pd.to_numeric(gdf[value], errors="coerce")
        bad = col.isna() | (col != col.round()) | (col < 0) | (col > 255)
        if bad.any():
            found = gdf[value][bad].unique().tolist()[:10]
            raise AnnotationError(
                f"Column {value!r} holds {found}; values to burn must be whole numbers 0..255 "
                "(uint8) without missing values."
            )
    elif value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            0 <= float(value) <= 255 and float(value) == round(float(value))
        ):
            raise AnnotationError(
                f"value={value!r} must be a column name or a whole number 0..255 (uint8)."
            )
    return gdf
