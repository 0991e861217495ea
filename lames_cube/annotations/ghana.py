"""The LAMES Ghana ASM file (artisanal and small-scale mining; a KML-derived schema) as
class-labelled polygons.

The imagery date and the ASM flag live in each feature's KML ``description`` (an HTML table or
``key: value`` text); :func:`load_asm` parses them and cleans the polygons as the Chile loaders
do (:mod:`lames_cube.annotations.clean`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from lames_cube._vector import DEFAULT_FIX
from lames_cube.annotations.clean import (
    CleaningReport,
    clean_geometry,
    parse_dates,
    read_annotation_file,
    report_or_warn,
    strip_strings,
)
from lames_cube.classes import LamesClass
from lames_cube.errors import AnnotationError

__all__ = ["load_asm"]

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
    gdf = read_annotation_file(path, fix=DEFAULT_FIX)
    missing = [c for c in _ASM_FIELDS if c not in gdf.columns]
    if missing:
        raise AnnotationError(
            f"{path.name} has no {', '.join(repr(c) for c in missing)} column(s) (columns: "
            f"{list(gdf.columns)}); a LAMES ASM file has the KML fields Name and description."
        )
    df = pd.DataFrame({"Name": gdf["Name"]})
    stripped = strip_strings(df, ["Name"])
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
    bad_dates = parse_dates(df, names)
    geometry, z_dropped, repairs = clean_geometry(gdf, names, [""] * len(gdf))
    out = gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")
    rep = CleaningReport(
        source=path.name, n_features=len(out), z_dropped=z_dropped, geometry_repairs=repairs,
        stripped=stripped, bad_dates=bad_dates,
        dropped_columns=tuple(c for c in gdf.columns if c not in ("Name", "geometry")),
    )
    return report_or_warn(out, rep, report)
