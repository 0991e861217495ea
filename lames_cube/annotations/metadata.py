"""The LAMES site metadata table (``annotations/metadata.csv``, 150 mines) as typed columns.

The published file is Latin-1, ``;``-separated, with two header rows (a group row, then the
column row; :data:`METADATA_GROUPS`, :data:`METADATA_COLUMNS`), decimal commas, and DMS
coordinates whose ′ ″ became ``?`` (:func:`parse_coordinate`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lames_cube.annotations.clean import CleaningReport, ValueRepair, report_or_warn
from lames_cube.annotations.download import data_file
from lames_cube.errors import DataDirError, MetadataFormatError

__all__ = ["METADATA_COLUMNS", "METADATA_FILE", "METADATA_GROUPS", "load_metadata",
           "parse_coordinate"]

METADATA_FILE = "annotations/metadata.csv"

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
    file = Path(path) if path is not None else data_file(data_dir, METADATA_FILE)
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
    return report_or_warn(df, rep, report)
