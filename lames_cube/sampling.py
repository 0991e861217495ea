"""Sampling windows: the LAMES blind rule, and the geometric test checked sampling builds on.

"Where vs what" (DESIGN.md §4): samplers return window tables (as
:func:`lames_cube.patches.patch_table`) with a ``kind`` column; each table carries its seed and
the rule that made it in ``attrs``, so a draw can be repeated and compared.

Examples
--------
>>> from odc.geo.geobox import GeoBox
>>> from lames_cube.patches import patch_table
>>> g = GeoBox.from_bbox((300_000, 7_000_000, 310_240, 7_010_240), "EPSG:32719", resolution=10)
>>> drawn = sample_blind(patch_table(g, size=256), 3, seed=7)
>>> len(drawn), drawn.attrs["rule"], drawn.attrs["seed"], sorted(set(drawn.kind))
(3, 'blind', 7, ['blind'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from lames_cube.errors import InvalidQueryError


class NotEnoughWindowsError(InvalidQueryError):
    """More windows were asked for than the table or the raster holds."""


def _check_seed(seed: Any, *, allow_none: bool = False) -> int:
    """An integer seed; None draws one (from the OS) and returns it so it can be recorded."""
    if seed is None and allow_none:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InvalidQueryError(f"seed={seed!r} is not an integer; pass e.g. seed=1117 so the draw "
                                "can be repeated.")
    return int(seed)


def _check_n(n: Any, available: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InvalidQueryError(f"n={n!r} must be a non-negative integer number of windows.")
    if n > available:
        raise NotEnoughWindowsError(
            f"asked for n={n} windows but {what} holds only {available}; ask for at most "
            f"{available}, or use a larger area or a smaller window."
        )
    return int(n)


def sample_blind(table: gpd.GeoDataFrame, n: int, seed: int | None = None) -> gpd.GeoDataFrame:
    """The LAMES rule for "no-mine" patches: ``n`` windows drawn uniformly, without replacement,
    from a table, with no check of what they contain (LAMES used ``shuf`` over file names).

    Parameters
    ----------
    table
        Windows to draw from (e.g. :func:`lames_cube.patches.lames_patch_table`).
    n
        How many.
    seed
        An integer; None (as LAMES, unseeded) draws a seed and records it in ``attrs``.

    Returns
    -------
    geopandas.GeoDataFrame
        The drawn rows in table order, with ``kind`` "blind"; ``attrs``: the table's, plus
        ``rule`` "blind", ``seed`` and ``n``.

    Raises
    ------
    NotEnoughWindowsError
        ``n`` is larger than the table.
    InvalidQueryError
        ``seed`` is not an integer (or None).
    """
    seed = _check_seed(seed, allow_none=True)
    n = _check_n(n, len(table), "the table")
    pick = np.sort(np.random.default_rng(seed).choice(len(table), size=n, replace=False))
    out = table.iloc[pick].copy()
    out["kind"] = "blind"
    out.attrs = {**table.attrs, "rule": "blind", "seed": seed, "n": n}
    return out


def _polygons(polygons: Any, crs: Any, buffer_m: float) -> shapely.Geometry:
    """One geometry in ``crs`` from a GeoDataFrame/GeoSeries or a list of them, each buffered
    by ``buffer_m`` metres (in its local UTM zone, so that degrees never stand for metres)."""
    frames: Sequence[Any] = polygons if isinstance(polygons, list | tuple) else [polygons]
    parts = []
    for frame in frames:
        if not isinstance(frame, gpd.GeoDataFrame | gpd.GeoSeries):
            raise InvalidQueryError(
                f"polygons must be GeoDataFrames or GeoSeries (or a list of them); got "
                f"{type(frame).__name__}."
            )
        if frame.crs is None:
            raise InvalidQueryError("a polygon frame has no CRS; set it first (e.g. "
                                    "gdf.set_crs('EPSG:4326')).")
        if len(frame) == 0:
            continue
        series = frame.geometry
        if buffer_m:
            series = series.to_crs(series.estimate_utm_crs()).buffer(float(buffer_m))
        parts.append(shapely.union_all(series.to_crs(crs).values))
    return shapely.union_all(parts) if parts else shapely.GeometryCollection()


def touches(table: gpd.GeoDataFrame, polygons: Any, *, buffer_m: float = 0) -> np.ndarray:
    """True for each window whose box touches (intersects, boundary included) any polygon.

    Parameters
    ----------
    table
        Windows with geometry (any CRS).
    polygons
        A GeoDataFrame/GeoSeries or a list of them, in any CRS.
    buffer_m
        Grow the polygons by this many metres first.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from lames_cube.patches import patch_table
    >>> g = GeoBox.from_bbox((300_000, 7_000_000, 305_120, 7_002_560), "EPSG:32719",
    ...                      resolution=10)
    >>> t = patch_table(g, size=256)  # two windows side by side
    >>> mine = gpd.GeoSeries([shapely.Point(301_000, 7_001_000)], crs="EPSG:32719")
    >>> touches(t, mine).tolist(), touches(t, mine, buffer_m=1600).tolist()
    ([True, False], [True, True])
    """
    if buffer_m < 0:
        raise InvalidQueryError(f"buffer_m={buffer_m!r} must be >= 0 metres.")
    geom = _polygons(polygons, table.crs, buffer_m)
    if geom.is_empty:
        return np.zeros(len(table), bool)
    shapely.prepare(geom)
    return shapely.intersects(geom, table.geometry.values).astype(bool)
