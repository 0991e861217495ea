"""The LAMES Chile files: the sectors, the sites (train and test) and the Maus et al.
footprints, loaded and cleaned (:mod:`lames_cube.annotations.clean`), and sites selected by id.

Pass ``report=True`` to a loader to get the :class:`~lames_cube.annotations.CleaningReport`: the
loader then returns ``(frame, report)`` and emits no warning. With ``report=False`` (the default)
the loader returns the frame alone and, when values were lost (impossible dates), says so in an
:class:`~lames_cube.errors.AnnotationRepairWarning` that lists them: data is never dropped
silently. Library code that loads annotations should pass ``report=True`` (and may ignore the
report).
"""

from __future__ import annotations

import os
from typing import Literal

import geopandas as gpd
import pandas as pd

from lames_cube.annotations.clean import (
    CleaningReport,
    as_site_ids,
    clean_annotations,
    clean_geometry,
    read_annotation_file,
    report_or_warn,
    strip_strings,
)
from lames_cube.annotations.download import data_file
from lames_cube.classes import SECTOR_MINE_CLASSES
from lames_cube.config import find_data_dir
from lames_cube.errors import AnnotationError, InvalidQueryError, UnknownSiteError

__all__ = [
    "FOOTPRINTS_FILE",
    "SECTORS_FILE",
    "SPLITS",
    "load_footprints",
    "load_sectors",
    "load_sites",
    "select_sites",
]

SPLITS = ("all", "train", "test")
SECTORS_FILE = "annotations/Chile_LSM_sectors.geojson"
FOOTPRINTS_FILE = "annotations/Chile_LSM_sites_Maus_et_al_subset.geojson"


def load_sectors(data_dir: str | os.PathLike | None = None, *, report: bool = False):
    """Load the 1,204 LAMES sector polygons of the 139 large-scale mines in Chile, cleaned.

    Parameters
    ----------
    data_dir
        The LAMES data directory; by default ``LAMES_DATA_DIR`` or ``../shared/lames``.
    report
        When True, return ``(sectors, CleaningReport)`` and emit no warning.

    Returns
    -------
    geopandas.GeoDataFrame or (geopandas.GeoDataFrame, CleaningReport)
        Columns ``Name`` (string), ``class`` (int64 LAMES mask value, see
        :class:`~lames_cube.classes.LamesClass`), ``date`` and ``date2`` (``datetime64``, NaT
        where missing or impossible), ``system`` (string), ``site_id`` (str) and a 2-D, valid
        (Multi)Polygon geometry in EPSG:4326. The one feature of class 0 (``2503_1``) is kept
        and named in the report.

    Warns
    -----
    AnnotationRepairWarning
        With ``report=False``: the impossible dates (``2017-13-01``, ``2021-22-07``) that
        became NaT, by feature.

    Examples
    --------
    >>> sectors, rep = load_sectors(report=True)
    >>> len(sectors), sectors.site_id.nunique(), len(rep.geometry_repairs)
    (1204, 139, 10)
    """
    path = data_file(data_dir, SECTORS_FILE)
    gdf, rep = clean_annotations(
        read_annotation_file(path), path.name, expected_classes=SECTOR_MINE_CLASSES
    )
    return report_or_warn(gdf, rep, report)


def load_sites(
    split: Literal["all", "train", "test"] = "all",
    data_dir: str | os.PathLike | None = None,
    *,
    report: bool = False,
):
    """Load the LAMES mine sites (one multipolygon per site, the union of its sectors).

    Parameters
    ----------
    split
        ``"train"`` (104 sites), ``"test"`` (35 sites) or ``"all"`` (139).
    data_dir
        The LAMES data directory; by default ``LAMES_DATA_DIR`` or ``../shared/lames``.
    report
        When True, return ``(sites, CleaningReport)``.

    Returns
    -------
    geopandas.GeoDataFrame or (geopandas.GeoDataFrame, CleaningReport)
        One row per site with ``site_id`` (str), ``split`` and a 2-D valid geometry in
        EPSG:4326 (train sites first, then test sites, in file order).

    Raises
    ------
    InvalidQueryError
        ``split`` is not one of ``"all"``, ``"train"``, ``"test"``.

    Examples
    --------
    >>> load_sites("test").shape[0]
    35
    >>> from lames_cube.annotations import load_metadata
    >>> load_sites().merge(load_metadata(), on="site_id").shape[0]
    136
    """
    if split not in SPLITS:
        raise InvalidQueryError(f"split={split!r} is not one of {SPLITS}; pick one of them.")
    root = find_data_dir(data_dir)
    parts, reps = [], []
    for name in ("train", "test") if split == "all" else (split,):
        path = root / "annotations" / f"{name}_sites.geojson"
        gdf, rep = clean_annotations(read_annotation_file(path), path.name,
                                     expected_classes=None, keep=("site_id", "geometry"))
        gdf["split"] = name
        parts.append(gdf[["site_id", "split", "geometry"]])
        reps.append(rep)
    sites = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry",
                             crs="EPSG:4326")
    rep = reps[0] if len(reps) == 1 else reps[0] + reps[1]
    return report_or_warn(sites, rep, report)


def load_footprints(data_dir: str | os.PathLike | None = None, *, report: bool = False):
    """Load the 227 Chilean mining footprints of Maus et al. (2020) that LAMES builds on.

    Parameters
    ----------
    data_dir
        The LAMES data directory; by default ``LAMES_DATA_DIR`` or ``../shared/lames``.
    report
        When True, return ``(footprints, CleaningReport)``.

    Returns
    -------
    geopandas.GeoDataFrame
        ``site_id`` (str, the Maus ``fid``), ``ISO3_CODE``, ``COUNTRY_NAME``, ``AREA`` (float,
        km²; the 227 sum to 3,759.66 km²) and a 2-D valid geometry in EPSG:4326.

    Examples
    --------
    >>> fp = load_footprints()
    >>> len(fp), round(float(fp.AREA.sum()), 2)
    (227, 3759.66)
    """
    path = data_file(data_dir, FOOTPRINTS_FILE)
    gdf = read_annotation_file(path)
    if "fid" not in gdf.columns:
        raise AnnotationError(
            f"{path.name} has no 'fid' column (columns: {list(gdf.columns)}); it is not the Maus "
            "et al. footprint file."
        )
    cols = ["fid", "ISO3_CODE", "COUNTRY_NAME", "AREA"]
    df = pd.DataFrame(gdf[[c for c in cols if c in gdf.columns]]).rename(columns={"fid": "site_id"})
    df["site_id"], site_id_from = as_site_ids(df["site_id"])
    stripped = strip_strings(df, ["ISO3_CODE", "COUNTRY_NAME"])
    if "AREA" in df:
        df["AREA"] = pd.to_numeric(df["AREA"], errors="coerce").astype("float64")
    geometry, z_dropped, repairs = clean_geometry(gdf, df["site_id"].tolist(),
                                                  df["site_id"].tolist())
    out = gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")
    rep = CleaningReport(
        source=path.name, n_features=len(out), z_dropped=z_dropped, geometry_repairs=repairs,
        stripped=stripped, site_id_from=site_id_from,
        dropped_columns=tuple(c for c in gdf.columns if c not in (*cols, "geometry")),
    )
    return report_or_warn(out, rep, report)


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
