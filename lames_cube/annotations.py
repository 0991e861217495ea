"""The LAMES annotation files, loaded and cleaned.

The files are read from a data directory (see :func:`lames_cube.config.find_data_dir`), never
copied into the package. Cleaning on load: Z coordinates dropped, invalid polygons repaired,
padded strings stripped, ``site_id`` as a string, ``class`` as an integer.
"""

from __future__ import annotations

import os
from typing import Literal

import geopandas as gpd
import pandas as pd
import shapely

from lames_cube.config import find_data_dir
from lames_cube.errors import InvalidQueryError, UnknownSiteError

SPLITS = ("all", "train", "test")

_KEEP = ["Name", "class", "date", "date2", "system", "site_id", "geometry"]


def _read(path: os.PathLike) -> gpd.GeoDataFrame:
    gdf = gpd.read_file(path)
    gdf = gdf[[c for c in _KEEP if c in gdf.columns]].copy()
    for col in ("Name", "system", "date", "date2"):
        if col in gdf and gdf[col].dtype == object:
            gdf[col] = gdf[col].astype("string").str.strip()
    gdf["site_id"] = gdf["site_id"].astype(str).str.strip()
    if "class" in gdf:
        gdf["class"] = gdf["class"].astype("int64")
    geoms = shapely.force_2d(gdf.geometry.values)
    geoms = shapely.make_valid(geoms, method="structure", keep_collapsed=False)
    gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs or "EPSG:4326"))
    return gdf.to_crs("EPSG:4326")


def load_sectors(data_dir: str | os.PathLike | None = None) -> gpd.GeoDataFrame:
    """Load the 1,204 LAMES sector polygons of the 139 large-scale mines in Chile.

    Parameters
    ----------
    data_dir
        The LAMES data directory; by default ``LAMES_DATA_DIR`` or ``../shared/lames``.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``Name``, ``class`` (int, LAMES mask value), ``date``, ``date2``, ``system``,
        ``site_id`` (str) and a 2-D, valid geometry in EPSG:4326.

    Examples
    --------
    >>> sectors = load_sectors()  # doctest: +SKIP
    >>> len(sectors), sectors.site_id.nunique()  # doctest: +SKIP
    (1204, 139)
    """
    root = find_data_dir(data_dir)
    return _read(root / "annotations" / "Chile_LSM_sectors.geojson")


def load_sites(
    split: Literal["all", "train", "test"] = "all", data_dir: str | os.PathLike | None = None
) -> gpd.GeoDataFrame:
    """Load the LAMES mine sites (one multipolygon per site, the union of its sectors).

    Parameters
    ----------
    split
        ``"train"`` (104 sites), ``"test"`` (35 sites) or ``"all"`` (139).
    data_dir
        The LAMES data directory; by default ``LAMES_DATA_DIR`` or ``../shared/lames``.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per site with ``site_id`` (str), ``split`` and geometry in EPSG:4326.

    Raises
    ------
    InvalidQueryError
        ``split`` is not one of ``"all"``, ``"train"``, ``"test"``.

    Examples
    --------
    >>> load_sites("test").shape[0]  # doctest: +SKIP
    35
    """
    if split not in SPLITS:
        raise InvalidQueryError(f"split={split!r} is not one of {SPLITS}; pick one of them.")
    root = find_data_dir(data_dir)
    parts = []
    for name in ("train", "test") if split == "all" else (split,):
        gdf = _read(root / "annotations" / f"{name}_sites.geojson")
        gdf["split"] = name
        parts.append(gdf[["site_id", "split", "geometry"]])
    sites = pd.concat(parts, ignore_index=True)
    return gpd.GeoDataFrame(sites, geometry="geometry", crs="EPSG:4326")


def select_sites(sites: gpd.GeoDataFrame, site_ids: list[str] | tuple[str, ...]) -> gpd.GeoDataFrame:
    """Return the rows of ``sites`` for ``site_ids``, in that order.

    Raises
    ------
    UnknownSiteError
        A site id is not in ``sites``; the message lists the unknown ids and some known ones.

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> s = gpd.GeoDataFrame({"site_id": ["1", "2"]}, geometry=[shapely.box(0, 0, 1, 1)] * 2)
    >>> list(select_sites(s, ["2"]).site_id)
    ['2']
    """
    wanted = [str(s).strip() for s in site_ids]
    known = list(sites["site_id"])
    unknown = [s for s in wanted if s not in set(known)]
    if unknown:
        raise UnknownSiteError(
            f"Unknown LAMES site id(s) {unknown}: there are {len(known)} sites, e.g. "
            f"{sorted(known)[:5]}. Use lames_cube.annotations.load_sites() to list them."
        )
    return sites.set_index("site_id").loc[wanted].reset_index()
