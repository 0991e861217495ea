"""The LAMES annotation files, loaded, cleaned and checked.

The files are read from a data directory (see :func:`lames_cube.config.find_data_dir`), never
copied into the package; :func:`download_lames` fetches them from the paper's repository and
checks each against its git blob id.

Cleaning on load (every loader)
-------------------------------
- Z coordinates dropped (the files are ``Polygon Z`` with z = 0);
- invalid polygons repaired with ``shapely.make_valid(method="structure")``, keeping the
  polygonal parts (the sector file has 10 self-intersecting polygons);
- padded strings stripped (``" 2016-01-20 "``, ``" Maxar Technologies "``);
- ``date``/``date2`` parsed to ``datetime64``; impossible dates (``2017-13-01``,
  ``2021-22-07``) become ``NaT``;
- ``site_id`` always a ``str`` (the Maus ``fid`` and the metadata ``ID`` are numbers in the
  files); ``class`` an ``int64`` LAMES mask value (:class:`lames_cube.classes.LamesClass`);
- KML leftovers (``timestamp``, ``begin``, ``tessellate``, ...) dropped.

What was repaired is described by a :class:`CleaningReport`. Pass ``report=True`` to get it:
the loader then returns ``(frame, report)`` and emits no warning. With ``report=False`` (the
default) the loader returns the frame alone and, when values were lost (impossible dates), says
so in an :class:`AnnotationRepairWarning` that lists them: data is never dropped silently.
Library code that loads annotations should pass ``report=True`` (and may ignore the report).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from lames_cube._atomic import atomic_write_bytes
from lames_cube._vector import DEFAULT_FIX, read_vector
from lames_cube.classes import SECTOR_MINE_CLASSES, LamesClass
from lames_cube.config import find_data_dir
from lames_cube.errors import (
    AnnotationError,
    AnnotationRepairWarning,
    DataDirError,
    InvalidQueryError,
    MetadataFormatError,
    UnknownSiteError,
)

__all__ = [
    "LAMES_COMMIT",
    "LAMES_MANIFEST",
    "LAMES_REPOSITORY",
    "SPLITS",
    "AnnotationRepairWarning",
    "CleaningReport",
    "GeometryRepair",
    "ValueRepair",
    "check_annotations",
    "download_lames",
    "git_blob_sha1",
    "load_asm",
    "load_footprints",
    "load_metadata",
    "load_sectors",
    "load_sites",
    "parse_coordinate",
    "select_sites",
    "verify_lames",
]

SPLITS = ("all", "train", "test")

_KEEP = ["Name", "class", "date", "date2", "system", "site_id", "geometry"]
_STRINGS = ("Name", "system")
_DATES = ("date", "date2")

SECTORS_FILE = "annotations/Chile_LSM_sectors.geojson"
FOOTPRINTS_FILE = "annotations/Chile_LSM_sites_Maus_et_al_subset.geojson"
METADATA_FILE = "annotations/metadata.csv"


# --------------------------------------------------------------------------------------------
# Cleaning report
# --------------------------------------------------------------------------------------------



@dataclass(frozen=True)
class GeometryRepair:
    """One invalid polygon and what ``make_valid`` made of it.

    Areas are true ground areas in m² (:func:`lames_cube.grid.geodesic_area`: geodesic on the
    WGS84 ellipsoid, in whatever CRS the file is); an invalid polygon's rings are measured as
    drawn (the lobes of a self-crossing ring cancel) and the absolute value is kept.
    """

    name: str
    site_id: str
    reason: str
    geom_type_before: str
    geom_type_after: str
    area_before_m2: float
    area_after_m2: float

    @property
    def area_change_m2(self) -> float:
        """``area_after_m2 - area_before_m2``."""
        return self.area_after_m2 - self.area_before_m2


@dataclass(frozen=True)
class ValueRepair:
    """One cell that was changed (or could not be parsed) on load."""

    name: str
    column: str
    value: str
    result: str
    reason: str


@dataclass(frozen=True)
class CleaningReport:
    """What a loader repaired in one LAMES file (or several, for :func:`load_sites`).

    Attributes
    ----------
    source
        File name(s) read.
    n_features
        Rows returned.
    z_dropped
        Geometries that had Z coordinates (dropped).
    geometry_repairs
        The invalid polygons repaired, with names and area change.
    stripped
        Column → number of values whose padding was stripped.
    bad_dates
        Date cells that are not real dates (now ``NaT``).
    unexpected_class
        Names of features kept whose class is not expected in the file (the sector file has
        one feature of class 0, "other").
    site_id_from
        The type ``site_id`` had in the file (``"str"``, ``"int"``); it is ``str`` on return.
    dropped_columns
        Columns of the file not returned (KML leftovers).
    dropped_rows
        Rows not returned (e.g. empty rows of the metadata table), by row label.
    value_repairs
        Other cells that could not be parsed (metadata coordinates and numbers): now missing.

    Examples
    --------
    >>> _, rep = load_sectors(report=True)
    >>> len(rep.geometry_repairs), [r.value for r in rep.bad_dates]
    (10, ['2017-13-01', '2021-22-07', '2021-22-07', '2021-22-07'])
    """

    source: str
    n_features: int
    z_dropped: int = 0
    geometry_repairs: tuple[GeometryRepair, ...] = ()
    stripped: Mapping[str, int] = field(default_factory=dict)
    bad_dates: tuple[ValueRepair, ...] = ()
    unexpected_class: tuple[str, ...] = ()
    site_id_from: str = "str"
    dropped_columns: tuple[str, ...] = ()
    dropped_rows: tuple[str, ...] = ()
    value_repairs: tuple[ValueRepair, ...] = ()

    @property
    def repaired_names(self) -> list[str]:
        """Names of the repaired geometries."""
        return [r.name for r in self.geometry_repairs]

    def to_frame(self) -> pd.DataFrame:
        """One row per repaired feature or cell: ``kind``, ``name``, ``column``, ``before``,
        ``after``, ``reason``."""
        rows = [
            {"kind": "geometry", "name": r.name, "column": "geometry",
             "before": f"{r.geom_type_before}, {r.area_before_m2:.1f} m²",
             "after": f"{r.geom_type_after}, {r.area_after_m2:.1f} m²", "reason": r.reason}
            for r in self.geometry_repairs
        ]
        for kind, items in (("date", self.bad_dates), ("value", self.value_repairs)):
            rows += [{"kind": kind, "name": r.name, "column": r.column, "before": r.value,
                      "after": r.result, "reason": r.reason} for r in items]
        rows += [{"kind": "class", "name": n, "column": "class", "before": "", "after": "kept",
                  "reason": "class not expected in this file"} for n in self.unexpected_class]
        return pd.DataFrame(rows, columns=["kind", "name", "column", "before", "after", "reason"])

    def summary(self) -> str:
        """A few lines for people."""
        lines = [f"{self.source}: {self.n_features} rows"]
        if self.z_dropped:
            lines.append(f"  Z coordinates dropped from {self.z_dropped} geometries")
        if self.geometry_repairs:
            change = sum(r.area_change_m2 for r in self.geometry_repairs)
            lines.append(
                f"  {len(self.geometry_repairs)} invalid geometries repaired "
                f"({', '.join(self.repaired_names)}; total area change {change:+.1f} m²)"
            )
        if any(self.stripped.values()):
            lines.append("  padding stripped: " + ", ".join(
                f"{c} ({n})" for c, n in self.stripped.items() if n))
        if self.bad_dates:
            lines.append("  impossible dates set to NaT: " + ", ".join(
                f"{r.name} {r.column}={r.value!r}" for r in self.bad_dates))
        if self.unexpected_class:
            lines.append(f"  kept with an unexpected class: {', '.join(self.unexpected_class)}")
        if self.site_id_from != "str":
            lines.append(f"  site_id converted from {self.site_id_from} to str")
        if self.dropped_columns:
            lines.append(f"  columns dropped: {', '.join(self.dropped_columns)}")
        if self.dropped_rows:
            lines.append(f"  rows dropped: {', '.join(self.dropped_rows)}")
        if self.value_repairs:
            lines.append(f"  {len(self.value_repairs)} unparseable cells set to missing")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __add__(self, other: CleaningReport) -> CleaningReport:
        stripped = dict(self.stripped)
        for k, v in other.stripped.items():
            stripped[k] = stripped.get(k, 0) + v
        return CleaningReport(
            source=f"{self.source} + {other.source}",
            n_features=self.n_features + other.n_features,
            z_dropped=self.z_dropped + other.z_dropped,
            geometry_repairs=self.geometry_repairs + other.geometry_repairs,
            stripped=stripped,
            bad_dates=self.bad_dates + other.bad_dates,
            unexpected_class=self.unexpected_class + other.unexpected_class,
            site_id_from=self.site_id_from if self.site_id_from == other.site_id_from
            else f"{self.site_id_from}/{other.site_id_from}",
            dropped_columns=tuple(dict.fromkeys(self.dropped_columns + other.dropped_columns)),
            dropped_rows=self.dropped_rows + other.dropped_rows,
            value_repairs=self.value_repairs + other.value_repairs,
        )


def _finish(frame, rep: CleaningReport, report: bool, stacklevel: int = 3):
    """Return ``(frame, rep)`` when asked; otherwise warn about lost values and return frame."""
    if report:
        return frame, rep
    if rep.bad_dates:
        listed = ", ".join(f"{r.name} {r.column}={r.value!r}" for r in rep.bad_dates)
        warnings.warn(
            f"{len(rep.bad_dates)} impossible date(s) in {rep.source} became NaT: {listed}. "
            "Pass report=True to get the full CleaningReport instead of this warning.",
            AnnotationRepairWarning,
            stacklevel=stacklevel,
        )
    return frame


# --------------------------------------------------------------------------------------------
# Cleaning steps
# --------------------------------------------------------------------------------------------


#: The fix for a broken file of the LAMES data directory.
_LAMES_FIX = ("find the changed LAMES files with lames_cube.annotations.verify_lames() and fetch "
              "them again with download_lames(data_dir)")


def _read_vector(path: Path, *, fix: str = _LAMES_FIX) -> gpd.GeoDataFrame:
    """Read an annotation file; a missing one is a DataDirError, a broken one a
    VectorFileError naming the path, what is wrong and ``fix``."""
    if not Path(path).is_file():
        raise DataDirError(f"{path} does not exist; check data_dir (or run download_lames).")
    kwargs = {"DATE_AS_STRING": "YES"} if Path(path).suffix.lower() in (".geojson", ".json") else {}
    return read_vector(path, fix=fix, **kwargs)


def _polygonal(geom):
    """The polygonal parts of a geometry (a GeometryCollection from make_valid) or None."""
    if geom is None or geom.is_empty:
        return geom
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    polys = [p for g in parts for p in shapely.get_parts(g)]
    if not polys:
        return shapely.MultiPolygon()
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def _clean_geometry(gdf: gpd.GeoDataFrame, names: Sequence[str], site_ids: Sequence[str]):
    """Drop Z, repair invalid polygons; return (GeoSeries in EPSG:4326, z_dropped, repairs)."""
    from lames_cube.grid import geodesic_area

    if gdf.crs is None:
        raise AnnotationError(
            f"The file's {len(gdf)} features have no CRS; LAMES files are in EPSG:4326 (CRS84). "
            "Use the published files, or declare it with gdf.set_crs('EPSG:4326')."
        )
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    z_dropped = int(shapely.has_z(geoms).sum())
    geoms = shapely.force_2d(geoms)
    repairs = []
    invalid = np.flatnonzero(~shapely.is_valid(geoms) & ~shapely.is_missing(geoms))
    for i in invalid:
        before = geoms[i]
        after = _polygonal(shapely.make_valid(before, method="structure", keep_collapsed=False))
        area_before, area_after = geodesic_area([before, after], gdf.crs)
        repairs.append(GeometryRepair(
            name=str(names[i]), site_id=str(site_ids[i]), reason=shapely.is_valid_reason(before),
            geom_type_before=before.geom_type, geom_type_after=after.geom_type,
            area_before_m2=float(area_before), area_after_m2=float(area_after),
        ))
        geoms[i] = after
    series = gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs).to_crs("EPSG:4326")
    return series, z_dropped, tuple(repairs)


def _strip_strings(df: pd.DataFrame, columns: Iterable[str]) -> dict[str, int]:
    counts = {}
    for col in columns:
        if col not in df or not (df[col].dtype == object
                                 or isinstance(df[col].dtype, pd.StringDtype)):
            continue
        values = df[col].astype("string")
        stripped = values.str.strip()
        counts[col] = int((values != stripped).fillna(False).sum())
        df[col] = stripped
    return counts


def _parse_dates(df: pd.DataFrame, names: Sequence[str]) -> tuple[ValueRepair, ...]:
    bad = []
    for col in _DATES:
        if col not in df:
            continue
        if pd.api.types.is_datetime64_any_dtype(df[col]):
            df[col] = df[col].astype("datetime64[ns]")
            continue
        text = df[col].astype("string").str.strip().fillna("")
        text = text.mask(text == "")
        parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
        lost = text.notna() & parsed.isna()
        bad += [
            ValueRepair(name=str(names[i]), column=col, value=str(text.iloc[i]), result="NaT",
                        reason="not a calendar date (YYYY-MM-DD)")
            for i in np.flatnonzero(lost.to_numpy())
        ]
        df[col] = parsed.astype("datetime64[ns]")
    return tuple(bad)


def _site_ids(values: pd.Series) -> tuple[pd.Series, str]:
    kind = "int" if pd.api.types.is_integer_dtype(values) else (
        "float" if pd.api.types.is_float_dtype(values) else "str")
    if kind == "float":
        values = values.astype("Int64")
    return values.astype(str).str.strip().astype(object), kind


def _clean_annotations(
    gdf: gpd.GeoDataFrame,
    source: str,
    *,
    expected_classes: Iterable[int] | None,
    keep: Sequence[str] = tuple(_KEEP),
) -> tuple[gpd.GeoDataFrame, CleaningReport]:
    """The cleaning shared by the sector and site files (sector schema).

    Only the columns in ``keep`` are cleaned and returned (so that a loader reports, and warns
    about, only what it returns); ``class`` and ``site_id`` must be present.
    """
    missing = [c for c in ("class", "site_id") if c not in gdf.columns]
    if missing:
        raise AnnotationError(
            f"{source} has no {' or '.join(repr(c) for c in missing)} column "
            f"(columns: {list(gdf.columns)}); it is not a LAMES sector/site file."
        )
    keep = [c for c in _KEEP if c in keep or c in ("class", "site_id")]
    dropped = tuple(c for c in gdf.columns if c not in keep)
    df = pd.DataFrame(gdf[[c for c in keep if c in gdf.columns and c != "geometry"]])
    stripped = _strip_strings(df, [c for c in (*_STRINGS, *_DATES) if c in df])
    names = df["Name"].tolist() if "Name" in df else [str(i) for i in df.index]
    df["site_id"], site_id_from = _site_ids(df["site_id"])
    bad_dates = _parse_dates(df, names)
    classes = pd.to_numeric(df["class"], errors="coerce")
    not_lames = ~classes.isin([int(c) for c in LamesClass])
    if not_lames.any():
        raise AnnotationError(
            f"{source}: class values {sorted(set(df['class'][not_lames].astype(str)))} are not "
            "LAMES mask values 0..9 (see lames_cube.classes.LamesClass)."
        )
    df["class"] = classes.astype("int64")
    unexpected: tuple[str, ...] = ()
    if expected_classes is not None:
        odd = ~df["class"].isin([int(c) for c in expected_classes])
        unexpected = tuple(str(names[i]) for i in np.flatnonzero(odd.to_numpy()))
    geometry, z_dropped, repairs = _clean_geometry(gdf, names, df["site_id"].tolist())
    out = gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")
    rep = CleaningReport(
        source=source, n_features=len(out), z_dropped=z_dropped, geometry_repairs=repairs,
        stripped=stripped, bad_dates=bad_dates, unexpected_class=unexpected,
        site_id_from=site_id_from, dropped_columns=dropped,
    )
    return out, rep


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _data_file(data_dir, relative: str) -> Path:
    root = find_data_dir(data_dir)
    path = root / relative
    if not path.is_file():
        raise DataDirError(
            f"The LAMES data directory {str(root)!r} has no {relative}. Copy it from "
            f"github.com/{LAMES_REPOSITORY} or run lames_cube.annotations.download_lames(dest)."
        )
    return path


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
    path = _data_file(data_dir, SECTORS_FILE)
    gdf, rep = _clean_annotations(
        _read_vector(path), path.name, expected_classes=SECTOR_MINE_CLASSES
    )
    return _finish(gdf, rep, report)


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
    >>> load_sites().merge(load_metadata(), on="site_id").shape[0]
    136
    """
    if split not in SPLITS:
        raise InvalidQueryError(f"split={split!r} is not one of {SPLITS}; pick one of them.")
    root = find_data_dir(data_dir)
    parts, reps = [], []
    for name in ("train", "test") if split == "all" else (split,):
        path = root / "annotations" / f"{name}_sites.geojson"
        gdf, rep = _clean_annotations(_read_vector(path), path.name, expected_classes=None,
                                      keep=("site_id", "geometry"))
        gdf["split"] = name
        parts.append(gdf[["site_id", "split", "geometry"]])
        reps.append(rep)
    sites = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry",
                             crs="EPSG:4326")
    rep = reps[0] if len(reps) == 1 else reps[0] + reps[1]
    return _finish(sites, rep, report)


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
    path = _data_file(data_dir, FOOTPRINTS_FILE)
    gdf = _read_vector(path)
    if "fid" not in gdf.columns:
        raise AnnotationError(
            f"{path.name} has no 'fid' column (columns: {list(gdf.columns)}); it is not the Maus "
            "et al. footprint file."
        )
    cols = ["fid", "ISO3_CODE", "COUNTRY_NAME", "AREA"]
    df = pd.DataFrame(gdf[[c for c in cols if c in gdf.columns]]).rename(columns={"fid": "site_id"})
    df["site_id"], site_id_from = _site_ids(df["site_id"])
    stripped = _strip_strings(df, ["ISO3_CODE", "COUNTRY_NAME"])
    if "AREA" in df:
        df["AREA"] = pd.to_numeric(df["AREA"], errors="coerce").astype("float64")
    geometry, z_dropped, repairs = _clean_geometry(gdf, df["site_id"].tolist(),
                                                   df["site_id"].tolist())
    out = gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")
    rep = CleaningReport(
        source=path.name, n_features=len(out), z_dropped=z_dropped, geometry_repairs=repairs,
        stripped=stripped, site_id_from=site_id_from,
        dropped_columns=tuple(c for c in gdf.columns if c not in (*cols, "geometry")),
    )
    return _finish(out, rep, report)


# --------------------------------------------------------------------------------------------
# Metadata table
# --------------------------------------------------------------------------------------------

#: The published metadata.csv layout: (header cell, returned column, kind). Header cells are
#: compared with surrounding and repeated spaces collapsed.
METADATA_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ID", "site_id", "id"),
    ("ID Name", "id_name", "str"),
    ("Name_Mine", "mine_name", "str"),
    ("Status", "status", "str"),
    ("Type [OP/UG]", "mine_type", "str"),
    ("Processing Method", "processing_method", "str"),
    ("Latitude", "latitude", "lat"),
    ("Longitude", "longitude", "lon"),
    ("Name_Mining Company", "company", "str"),
    ("ROM [Mt/a]", "rom_mt_per_year", "num"),
    ("Metal/Commodity", "commodity_1", "str"),
    ("Avg. grade", "grade_1", "grade"),
    ("Production [t/a]", "production_1", "prod:t/a"),
    ("Metal2", "commodity_2", "str"),
    ("Avg. Grade2", "grade_2", "grade"),
    ("Production [t/a]4", "production_2", "prod:t/a"),
    ("Metal_3", "commodity_3", "str"),
    ("Avg. Grade3", "grade_3", "grade"),
    ("Production [kg/a]", "production_3", "prod:kg/a"),
    ("Metal_4", "commodity_4", "str"),
    ("Avg. Grade_Metal_4", "grade_4", "grade"),
    ("Production [kg/a]2", "production_4", "prod:kg/a"),
    ("Name_Main Shareholder_1", "shareholder_1", "str"),
    ("Name_Main Shareholder_2", "shareholder_2", "str"),
    ("Name_Main Shareholder_3", "shareholder_3", "str"),
    ("Name_Main Shareholder_4", "shareholder_4", "str"),
    ("Name_Main Shareholder_5", "shareholder_5", "str"),
    ("Source_URL_1", "source_url_1", "str"),
    ("Source_URL_2", "source_url_2", "str"),
    ("Source_URL_3", "source_url_3", "str"),
    ("Source_URL_4", "source_url_4", "str"),
)

#: The group row above the column row: position → group name.
METADATA_GROUPS: Mapping[int, str] = {
    0: "General Information", 3: "General Information", 10: "Metal/Commodity 1",
    13: "Metal/Commodity 2", 16: "Metal/Commodity 3", 19: "Metal/Commodity 4",
    22: "Shareholder data", 27: "Sources",
}

_MISSING = {"", "-", "N/A", "n/a", "NA", "--"}
_NUMBER = re.compile(r"^[-+]?\d+(?:[.,]\d+)?")
_UNITS = {"%": "%", "%%": "%", "ppm": "ppm", "t/a": "t/a", "t/a0": "t/a", "kg/a": "kg/a",
          "oz": "oz"}


def _norm(cell: str) -> str:
    return " ".join(cell.split())


def _decode(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def _check_metadata_header(groups: list[str], columns: list[str], source: str) -> None:
    expected = [c for c, _, _ in METADATA_COLUMNS]
    found = [_norm(c) for c in columns]
    while found and not found[-1]:
        found.pop()
    if found != expected:
        diffs = [
            f"column {i + 1}: expected {e!r}, found {f!r}"
            for i, (e, f) in enumerate(zip(expected, found + [""] * len(expected), strict=False))
            if e != f
        ]
        extra = found[len(expected):]
        raise MetadataFormatError(
            f"{source} does not have the published LAMES metadata header (row 2). Expected the "
            f"columns {expected}, found {found}. Differences: "
            + "; ".join(diffs + ([f"extra columns {extra}"] if extra else []))
            + ". Use the file from github.com/chenzhaiyu/mineseg (annotations/metadata.csv) or "
            "restore its two header rows."
        )
    found_groups = {i: _norm(g) for i, g in enumerate(groups) if _norm(g)}
    if found_groups != dict(METADATA_GROUPS):
        raise MetadataFormatError(
            f"{source} does not have the published LAMES group header (row 1): expected "
            f"{dict(METADATA_GROUPS)} (position → group), found {found_groups}. The file needs "
            "both header rows: the group row, then the column row."
        )


def parse_coordinate(text: Any, axis: Literal["lat", "lon"]) -> float:
    """Parse one LAMES metadata coordinate into signed decimal degrees (NaN if unparseable).

    Accepts degrees-minutes-seconds with ``°``, ``'``/``′``, ``"``/``''``/``″`` or the ``?``
    the published CSV has in place of the lost ``′ ″`` symbols, degrees-minutes, and decimal
    degrees (``22.41°S``); decimal commas are accepted. S and W are negative. Unparseable:
    missing hemisphere letter, a hemisphere of the other axis, minutes or seconds ≥ 60 (e.g.
    ``25° 84' S``), degrees out of range, ``-``/``N/A``.

    Examples
    --------
    >>> parse_coordinate("52°52?35?S", "lat")
    -52.87638888888889
    >>> parse_coordinate("70° 17' 40'' W", "lon")
    -70.29444444444444
    >>> parse_coordinate("22.41°S", "lat"), parse_coordinate("25° 84' S", "lat")
    (-22.41, nan)
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return float("nan")
    s = str(text).strip().replace(",", ".").replace("''", '"')
    m = re.fullmatch(
        r"(\d+(?:\.\d+)?)\s*°\s*"
        r"(?:(\d+(?:\.\d+)?)\s*['′?]\s*"
        r"(?:(\d+(?:\.\d+)?)\s*[\"″?]\s*)?)?"
        r"([NSEWnsew])?",
        s,
    )
    if not m or not m.group(4):
        return float("nan")
    deg, minutes, seconds, hemi = m.groups()
    hemi = hemi.upper()
    if (axis == "lat") != (hemi in "NS"):
        return float("nan")
    d = float(deg)
    mi = float(minutes) if minutes else 0.0
    se = float(seconds) if seconds else 0.0
    if mi >= 60 or se >= 60 or ("." in deg and (minutes or seconds)):
        return float("nan")
    value = d + mi / 60 + se / 3600
    if value > (90 if axis == "lat" else 180):
        return float("nan")
    return -value if hemi in "SW" else value


def _parse_quantity(text: str, default_unit: str | None) -> tuple[float, str | None, bool]:
    """(value, unit, ok) of a cell such as ``' 432220 t/a '``, ``'0,84%'``, ``'2175 oz'``."""
    s = text.strip()
    if s in _MISSING:
        return float("nan"), None, True
    m = _NUMBER.match(s)
    if not m:
        return float("nan"), None, False
    value = float(m.group(0).replace(",", "."))
    rest = s[m.end():].strip()
    unit_text = rest.split()[0] if rest else ""
    if unit_text in _UNITS:
        return value, _UNITS[unit_text], True
    if rest and not rest.startswith("("):
        return float("nan"), None, False
    return value, default_unit, True


def load_metadata(data_dir: str | os.PathLike | None = None, *, path: str | os.PathLike | None = None,
                  report: bool = False):
    """Load the LAMES site metadata table (150 mines) as typed columns keyed by ``site_id``.

    The published ``metadata.csv`` is Latin-1, ``;``-separated, with two header rows (a group
    row, then the column row), decimal commas, and DMS coordinates whose ′ ″ became ``?``.

    Parameters
    ----------
    data_dir
        The LAMES data directory; by default ``LAMES_DATA_DIR`` or ``../shared/lames``.
    path
        A metadata file to read instead of ``<data_dir>/annotations/metadata.csv``.
    report
        When True, return ``(metadata, CleaningReport)``: the empty rows dropped and the cells
        that could not be parsed (now missing).

    Returns
    -------
    pandas.DataFrame
        One row per mine. ``site_id`` (str, the ``ID`` = Maus ``fid``); text columns
        ``id_name``, ``mine_name``, ``status``, ``mine_type``, ``processing_method``,
        ``company``, ``commodity_1..4``, ``shareholder_1..5``, ``source_url_1..4`` (stripped;
        ``-``, ``N/A`` and empty cells are missing); ``latitude``/``longitude`` (float decimal
        degrees, NaN where unparseable) with the original text in ``latitude_text`` /
        ``longitude_text``; ``rom_mt_per_year`` (float); ``grade_1..4`` (float) with
        ``grade_N_unit`` (``"%"``, ``"ppm"`` or missing when the cell gives none) and
        ``production_1..4`` (float) with ``production_N_unit`` (``"t/a"``, ``"kg/a"``, ``"oz"``;
        the header's unit when the cell gives none). Numbers are converted as written (``.`` and
        ``,`` are both decimal separators); no unit conversion.

    Raises
    ------
    MetadataFormatError
        The header rows differ from the published layout (the message lists the expected and
        found columns), or ``ID`` values are repeated.

    Examples
    --------
    >>> meta = load_metadata()
    >>> len(meta), meta.site_id.is_unique
    (150, True)
    """
    file = Path(path) if path is not None else _data_file(data_dir, METADATA_FILE)
    if not file.is_file():
        raise DataDirError(
            f"{file} does not exist; pass path= to the LAMES metadata.csv, or fetch it with "
            "lames_cube.annotations.download_lames(dest)."
        )
    rows = list(csv.reader(io.StringIO(_decode(file.read_bytes())), delimiter=";"))
    if len(rows) < 2:
        raise MetadataFormatError(
            f"{file.name} has {len(rows)} row(s); expected two header rows and the data rows. "
            "Use the file from github.com/chenzhaiyu/mineseg (annotations/metadata.csv)."
        )
    _check_metadata_header(rows[0], rows[1], file.name)
    n = len(METADATA_COLUMNS)
    records, dropped, repairs = [], [], []
    for lineno, row in enumerate(rows[2:], start=3):
        cells = (row + [""] * n)[:n]
        if not cells[0].strip():
            dropped.append(f"line {lineno}" + (" (orphan cells)" if any(c.strip() for c in row)
                                               else " (empty)"))
            continue
        rec: dict[str, Any] = {}
        site = cells[0].strip()
        for (_, name, kind), cell in zip(METADATA_COLUMNS, cells, strict=True):
            text = cell.strip()
            if kind == "id":
                rec[name] = text
            elif kind == "str":
                rec[name] = None if text in _MISSING else _norm(text)
            elif kind in ("lat", "lon"):
                value = parse_coordinate(text, kind)
                rec[name] = value
                rec[f"{name}_text"] = None if text in _MISSING else text
                if np.isnan(value) and text not in _MISSING:
                    repairs.append(ValueRepair(site, name, text, "NaN",
                                               "not a valid degree/minute/second coordinate"))
            else:
                default = kind.split(":", 1)[1] if kind.startswith("prod:") else None
                value, unit, ok = _parse_quantity(text, default)
                rec[name] = value
                if kind != "num":
                    rec[f"{name}_unit"] = unit
                if not ok:
                    repairs.append(ValueRepair(site, name, text, "NaN", "not a number"))
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    for col in df.columns:
        if df[col].dtype == object and col != "site_id":
            df[col] = df[col].astype("string")
    df["site_id"] = df["site_id"].astype(object)
    dup = df["site_id"][df["site_id"].duplicated()].tolist()
    if dup:
        raise MetadataFormatError(
            f"{file.name}: the ID column repeats {sorted(set(dup))}; each mine must appear once."
        )
    rep = CleaningReport(source=file.name, n_features=len(df), dropped_rows=tuple(dropped),
                         value_repairs=tuple(repairs), site_id_from="int")
    return _finish(df, rep, report)


# --------------------------------------------------------------------------------------------
# Ghana ASM (KML-derived schema)
# --------------------------------------------------------------------------------------------

_ASM_FIELDS = ("Name", "description")
_TAG = re.compile(r"<[^>]*>")
_DESC_DATE = re.compile(r"\bdate\b\W*?(\d{4}-\d{1,2}-\d{1,2})", re.IGNORECASE)
_DESC_ASM = re.compile(r"\basm\b\W*?(\d+)\b", re.IGNORECASE)


def _cell_after(html: str, key: str) -> str | None:
    """The text of the table cell that follows a ``<td>key</td>`` cell, if any."""
    m = re.search(rf"<td[^>]*>\s*{key}\s*</td>\s*<td[^>]*>\s*([^<]*?)\s*</td>", html,
                  re.IGNORECASE)
    return m.group(1) if m else None


def _parse_description(text: Any) -> tuple[str | None, int | None]:
    """(date text, asm flag) from a KML description (HTML table or ``key: value`` text)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None, None
    html = str(text)
    plain = " ".join(_TAG.sub(" ", html).replace("&nbsp;", " ").split())
    date_cell, flag_cell = _cell_after(html, "date"), _cell_after(html, "asm")
    m_date = re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", date_cell or "") or _DESC_DATE.search(plain)
    m_flag = re.fullmatch(r"\d+", flag_cell or "") or _DESC_ASM.search(plain)
    date = (m_date.group(1) if m_date.groups() else m_date.group(0)) if m_date else None
    flag = int(m_flag.group(1) if m_flag.groups() else m_flag.group(0)) if m_flag else None
    return date, flag


def load_asm(path: str | os.PathLike, *, default_class: int | None = None, report: bool = False):
    """Load a LAMES Ghana ASM file (KML-derived schema) as class-labelled polygons.

    The published ``Ghana_ASM.geojson`` (1,288 PolygonZ in EPSG:4326) has the KML fields
    ``Name``, ``description``, ``timestamp``, ``begin``, ``end``, ``altitudeMode``,
    ``tessellate``, ``extrude``, ``visibility``, ``drawOrder``, ``icon``; the imagery date and the
    ASM flag live in ``description`` (e.g. an HTML table with rows ``date | 2021-03-04`` and
    ``asm | 1``).

    Parameters
    ----------
    path
        The GeoJSON (or any OGR-readable file of that schema).
    default_class
        Class for features whose description has no ``asm`` flag. When None (default) such
        features raise.
    report
        When True, return ``(asm, CleaningReport)`` and emit no warning.

    Returns
    -------
    geopandas.GeoDataFrame
        ``Name`` (string), ``class`` (int64: 1 = ASM for flag 1, 0 = other for flag 0),
        ``date`` (``datetime64``; from the description, else ``timestamp``/``begin``; NaT if
        none or impossible) and a 2-D valid geometry in EPSG:4326.

    Raises
    ------
    DataDirError
        No file at ``path``.
    VectorFileError
        A malformed file (empty, cut short, not GeoJSON, broken geometries): the message names
        the path, what is wrong and the fix.
    AnnotationError
        The file lacks ``Name``/``description`` (the message lists the columns), a feature has
        no ``asm`` flag and no ``default_class`` was given, or a flag other than 0/1.

    Warns
    -----
    AnnotationRepairWarning
        With ``report=False``: impossible dates that became NaT.

    Examples
    --------
    >>> from lames_cube.testing.asm import write_asm_geojson
    >>> import tempfile, pathlib
    >>> p = write_asm_geojson(pathlib.Path(tempfile.mkdtemp()) / "asm.geojson", n=3)
    >>> load_asm(p)[["Name", "class"]].to_dict("list")
    {'Name': ['asm_0', 'asm_1', 'asm_2'], 'class': [1, 1, 1]}
    """
    path = Path(path)
    gdf = _read_vector(path, fix=DEFAULT_FIX)
    missing = [c for c in _ASM_FIELDS if c not in gdf.columns]
    if missing:
        raise AnnotationError(
            f"{path.name} has no {', '.join(repr(c) for c in missing)} column(s) (columns: "
            f"{list(gdf.columns)}); a LAMES ASM file has the KML fields Name and description."
        )
    df = pd.DataFrame({"Name": gdf["Name"]})
    stripped = _strip_strings(df, ["Name"])
    names = df["Name"].fillna("").tolist()
    parsed = [_parse_description(t) for t in gdf["description"]]
    dates = pd.Series([d for d, _ in parsed], index=gdf.index, dtype="string")
    for fallback in ("timestamp", "begin"):
        if fallback in gdf.columns:
            alt = pd.to_datetime(gdf[fallback], errors="coerce", utc=True)
            alt_text = alt.dt.strftime("%Y-%m-%d").astype("string")
            dates = dates.fillna(alt_text)
    flags = [f for _, f in parsed]
    no_flag = [names[i] for i, f in enumerate(flags) if f is None]
    if no_flag and default_class is None:
        raise AnnotationError(
            f"{len(no_flag)} feature(s) of {path.name} have no 'asm <0|1>' in their description "
            f"(e.g. {no_flag[:5]}); pass default_class=1 to label them ASM, or fix the file."
        )
    bad_flag = sorted({f for f in flags if f not in (None, 0, 1)})
    if bad_flag:
        raise AnnotationError(
            f"{path.name}: asm flags {bad_flag} in the description; expected 0 or 1. Fix the "
            "descriptions ('asm 0' or 'asm 1')."
        )
    default = int(LamesClass.parse(default_class)) if default_class is not None else 0
    df["class"] = np.array(
        [default if f is None else int(LamesClass.ASM if f == 1 else LamesClass.OTHER)
         for f in flags], dtype="int64")
    df["date"] = dates
    bad_dates = _parse_dates(df, names)
    geometry, z_dropped, repairs = _clean_geometry(gdf, names, [""] * len(gdf))
    out = gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")
    rep = CleaningReport(
        source=path.name, n_features=len(out), z_dropped=z_dropped, geometry_repairs=repairs,
        stripped=stripped, bad_dates=bad_dates,
        dropped_columns=tuple(c for c in gdf.columns if c not in ("Name", "geometry")),
    )
    return _finish(out, rep, report)


# --------------------------------------------------------------------------------------------
# Download and checksums
# --------------------------------------------------------------------------------------------

LAMES_REPOSITORY = "chenzhaiyu/mineseg"
LAMES_COMMIT = "078fee6820f7d907d9c0bd1a95e4ddb0b2d2aabc"

#: The LAMES files at :data:`LAMES_COMMIT`: path → (git blob id prefix, size in bytes), as in
#: ``shared/lames/MANIFEST.md``. (``annotations/Ghana_ASM.geojson`` is in the repository but has
#: no recorded blob id, so it is not downloaded.)
LAMES_MANIFEST: Mapping[str, tuple[str, int]] = {
    "annotations/Chile_LSM_sectors.geojson": ("02333703", 2_945_808),
    "annotations/Chile_LSM_sites_Maus_et_al_subset.geojson": ("2e91f2be", 398_585),
    "annotations/train_sites.geojson": ("74fc7a87", 1_920_653),
    "annotations/test_sites.geojson": ("1431cd36", 615_874),
    "annotations/metadata.csv": ("5757a0c7", 56_986),
    "annotations/metadata_stats.xlsx": ("8da7fbdf", 64_185),
    "annotations/metadata-sources.txt": ("bd20f740", 1_054),
    "annotations/annotation_doc.pdf": ("4bb67d1f", 106_886),
    "SectorDetection/MiningSiteSector_TrainValidTestSplit.xlsx": ("f183bca9", 9_943),
}


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (what ``git hash-object FILE`` prints).

    Examples
    --------
    >>> git_blob_sha1(b"")
    'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
    >>> git_blob_sha1(b"hello\\n")
    'ce013625030ba8dba906f756967f9e9ca394464a'
    """
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _check_blob(relative: str, data: bytes, where: str) -> str:
    prefix, size = LAMES_MANIFEST[relative]
    blob = git_blob_sha1(data)
    if not blob.startswith(prefix) or len(data) != size:
        raise DataDirError(
            f"{where} is not the LAMES file {relative} of {LAMES_REPOSITORY}@{LAMES_COMMIT[:7]}: "
            f"git blob {blob[:8]} and {len(data):,} bytes, expected blob {prefix} and {size:,} "
            "bytes. Download it again with lames_cube.annotations.download_lames(dest)."
        )
    return blob


def _manifest_files(files: Iterable[str] | None) -> list[str]:
    wanted = list(LAMES_MANIFEST) if files is None else [str(f) for f in files]
    unknown = [f for f in wanted if f not in LAMES_MANIFEST]
    if unknown:
        raise InvalidQueryError(
            f"{unknown} are not LAMES files with a known blob id; choose from {list(LAMES_MANIFEST)}."
        )
    return wanted


def verify_lames(data_dir: str | os.PathLike | None = None, files: Iterable[str] | None = None,
                 *, missing_ok: bool = False) -> dict[str, str]:
    """Check LAMES files in a data directory against their git blob ids.

    Parameters
    ----------
    data_dir
        The directory to check (it may hold only some of the files); by default the LAMES
        data directory (``LAMES_DATA_DIR`` or ``../shared/lames``).
    files
        Paths relative to the directory (keys of :data:`LAMES_MANIFEST`); default all.
    missing_ok
        Skip files that are absent instead of raising.

    Returns
    -------
    dict
        Path → full git blob id, for the files checked.

    Raises
    ------
    DataDirError
        A file is missing (unless ``missing_ok``) or differs from the published one.

    Examples
    --------
    >>> verify_lames(files=["annotations/metadata.csv"])  # doctest: +ELLIPSIS
    {'annotations/metadata.csv': '5757a0c7...'}
    """
    root = Path(data_dir) if data_dir is not None else find_data_dir(None)
    out = {}
    for relative in _manifest_files(files):
        path = root / relative
        if not path.is_file():
            if missing_ok:
                continue
            raise DataDirError(f"{path} is missing; run download_lames({str(root)!r}).")
        out[relative] = _check_blob(relative, path.read_bytes(), str(path))
    return out


def download_lames(
    dest: str | os.PathLike,
    *,
    commit: str = LAMES_COMMIT,
    files: Iterable[str] | None = None,
    overwrite: bool = False,
    timeout: float = 60.0,
    session: Any = None,
) -> Path:
    """Download the LAMES annotation files from the paper's repository, checked by blob id.

    Each file is fetched from ``raw.githubusercontent.com/chenzhaiyu/mineseg/<commit>/<path>``,
    checked against :data:`LAMES_MANIFEST` (git blob id and size) and written atomically (a
    temporary name, then a rename). Files already present with the right blob id are kept.

    Parameters
    ----------
    dest
        The data directory to fill (created if needed); afterwards usable as ``data_dir=``.
    commit
        The repository commit. Blob ids are known only for :data:`LAMES_COMMIT`.
    files
        Paths to fetch (keys of :data:`LAMES_MANIFEST`); default all.
    overwrite
        Download even files that are present and correct.
    timeout
        Seconds per request.
    session
        A ``requests.Session``-like object (``.get(url, timeout=...)``); default a new session.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    InvalidQueryError
        ``commit`` is not :data:`LAMES_COMMIT` (no blob ids to check against), or unknown files.
    DataDirError
        A download failed or its content does not match the blob id; nothing is written then.

    Examples
    --------
    Needs the internet (raw.githubusercontent.com), so it is shown, not run as a doctest::

        download_lames("data/lames")  # -> PosixPath('data/lames')
    """
    if commit != LAMES_COMMIT:
        raise InvalidQueryError(
            f"commit={commit!r}: blob ids are known only for {LAMES_COMMIT}; download that commit "
            "(the default) so that the files can be checked."
        )
    wanted = _manifest_files(files)
    dest = Path(dest)
    if session is None:
        import requests

        session = requests.Session()
    for relative in wanted:
        target = dest / relative
        if target.is_file() and not overwrite:
            try:
                _check_blob(relative, target.read_bytes(), str(target))
                continue
            except DataDirError:
                pass
        url = f"https://raw.githubusercontent.com/{LAMES_REPOSITORY}/{commit}/{relative}"
        try:
            response = session.get(url, timeout=timeout)
            response.raise_for_status()
        except Exception as exc:
            raise DataDirError(
                f"Could not download {url}: {exc}. Check the connection, or copy the files from "
                f"github.com/{LAMES_REPOSITORY} into {dest} by hand."
            ) from exc
        data = response.content
        _check_blob(relative, data, url)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return dest


# --------------------------------------------------------------------------------------------
# Validation and selection
# --------------------------------------------------------------------------------------------


def _crs_bounds(crs) -> tuple[float, float, float, float] | None:
    """The CRS's valid coordinate range (generously padded) in its own units."""
    if crs.is_geographic:
        return (-180.0, -90.0, 360.0, 90.0)
    aou = crs.area_of_use
    if aou is None:
        return None
    from pyproj import Transformer

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
        from pyproj import CRS

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
