"""Cleaning on load: the repairs every LAMES loader makes, and the report that lists them.

- Z coordinates dropped (the files are ``Polygon Z`` with z = 0);
- invalid polygons repaired with ``shapely.make_valid(method="structure")``, keeping the
  polygonal parts (the sector file has 10 self-intersecting polygons);
- padded strings stripped (``" 2016-01-20 "``, ``" Maxar Technologies "``);
- ``date``/``date2`` parsed to ``datetime64``; impossible dates (``2017-13-01``,
  ``2021-22-07``) become ``NaT``;
- ``site_id`` always a ``str`` (the Maus ``fid`` and the metadata ``ID`` are numbers in the
  files); ``class`` an ``int64`` LAMES mask value (:class:`lames_cube.classes.LamesClass`);
- KML leftovers (``timestamp``, ``begin``, ``tessellate``, ...) dropped.

What was repaired is described by a :class:`CleaningReport`; :func:`report_or_warn` returns it
when asked, and otherwise warns about lost values (:class:`AnnotationRepairWarning`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from lames_cube._vector import read_vector
from lames_cube.classes import LamesClass
from lames_cube.errors import AnnotationError, AnnotationRepairWarning, DataDirError
from lames_cube.grid import geodesic_area

__all__ = [
    "CleaningReport",
    "GeometryRepair",
    "ValueRepair",
    "as_site_ids",
    "clean_annotations",
    "clean_geometry",
    "parse_dates",
    "read_annotation_file",
    "report_or_warn",
    "strip_strings",
]

_KEEP = ["Name", "class", "date", "date2", "system", "site_id", "geometry"]
_STRINGS = ("Name", "system")
_DATES = ("date", "date2")


# --------------------------------------------------------------------------------------------
# Cleaning report


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
    >>> from lames_cube.annotations import load_sectors
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


def report_or_warn(frame, rep: CleaningReport, report: bool, stacklevel: int = 3):
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


#: The fix for a broken file of the LAMES data directory.
_LAMES_FIX = ("find the changed LAMES files with lames_cube.annotations.verify_lames() and fetch "
              "them again with download_lames(data_dir)")


def read_annotation_file(path: Path, *, fix: str = _LAMES_FIX) -> gpd.GeoDataFrame:
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


def clean_geometry(gdf: gpd.GeoDataFrame, names: Sequence[str], site_ids: Sequence[str]):
    """Drop Z, repair invalid polygons; return (GeoSeries in EPSG:4326, z_dropped, repairs)."""
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


def strip_strings(df: pd.DataFrame, columns: Iterable[str]) -> dict[str, int]:
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


def parse_dates(df: pd.DataFrame, names: Sequence[str]) -> tuple[ValueRepair, ...]:
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


def as_site_ids(values: pd.Series) -> tuple[pd.Series, str]:
    kind = "int" if pd.api.types.is_integer_dtype(values) else (
        "float" if pd.api.types.is_float_dtype(values) else "str")
    if kind == "float":
        values = values.astype("Int64")
    return values.astype(str).str.strip().astype(object), kind


def clean_annotations(
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
    stripped = strip_strings(df, [c for c in (*_STRINGS, *_DATES) if c in df])
    names = df["Name"].tolist() if "Name" in df else [str(i) for i in df.index]
    df["site_id"], site_id_from = as_site_ids(df["site_id"])
    bad_dates = parse_dates(df, names)
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
    geometry, z_dropped, repairs = clean_geometry(gdf, names, df["site_id"].tolist())
    out = gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")
    rep = CleaningReport(
        source=source, n_features=len(out), z_dropped=z_dropped, geometry_repairs=repairs,
        stripped=stripped, bad_dates=bad_dates, unexpected_class=unexpected,
        site_id_from=site_id_from, dropped_columns=dropped,
    )
    return out, rep
