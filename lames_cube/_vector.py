"""Vector files given by users (GeoJSON annotations, recipe areas), refused early when broken.

:func:`check_geojson` reads a GeoJSON file with the standard library only (no GDAL): empty,
not UTF-8, not JSON (a file cut short says so), not GeoJSON, or features whose geometry GDAL
would silently turn into null. :func:`read_vector` runs that check on ``.geojson``/``.json``
files and then reads the file with geopandas, turning any error of the reader into the same
:class:`~lames_cube.errors.VectorFileError`: the path, what is wrong (with line and column, or
the feature) and the fix.

Examples
--------
>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "cut.geojson"
>>> _ = path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feat')
>>> try:
...     check_geojson(path)
... except VectorFileError as exc:
...     print(str(exc).split(": ", 1)[1])  # doctest: +ELLIPSIS
the file ends early (cut short?): Unterminated string starting at line 1, column 53. Fix: ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import geopandas as gpd

from lames_cube.errors import LamesCubeError, VectorFileError

__all__ = ["DEFAULT_FIX", "check_geojson", "geojson_problem", "read_vector"]

#: The fix named when a file given by a user is broken.
DEFAULT_FIX = ("check that the file is complete GeoJSON (a FeatureCollection of Polygon or "
               "MultiPolygon features), e.g. open it in QGIS, or write it again with "
               "geopandas' GeoDataFrame.to_file(path, driver='GeoJSON')")

#: Nesting depth of the ``coordinates`` array of each GeoJSON geometry type (RFC 7946).
_DEPTH = {"Point": 1, "MultiPoint": 2, "LineString": 2, "MultiLineString": 3, "Polygon": 3,
          "MultiPolygon": 4}
_OBJECT_TYPES = ("FeatureCollection", "Feature", *_DEPTH, "GeometryCollection")
_SHOWN_FEATURES = 3


def _kind(value: Any) -> str:
    """The JSON name of a Python value read by :mod:`json`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _positions_problem(coords: Any, depth: int, where: str) -> str | None:
    """The first problem of a ``coordinates`` array ``depth`` levels deep, or None."""
    if depth == 1:
        ok = (isinstance(coords, list) and len(coords) >= 2 and all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in coords))
        return None if ok else (f"{where} is {_kind(coords)} {_show(coords)}, not a position "
                                "[x, y]")
    if not isinstance(coords, list):
        return f"{where} is {_kind(coords)} {_show(coords)}, not an array"
    for i, part in enumerate(coords):
        problem = _positions_problem(part, depth - 1, f"{where}[{i}]")
        if problem:
            return problem
    return None


def _geometry_problem(geom: Any, where: str = "geometry") -> str | None:
    """The first problem of a GeoJSON geometry (null is allowed), or None."""
    if geom is None:
        return None
    if not isinstance(geom, dict):
        return f"{where} is {_kind(geom)}, not a geometry object"
    kind = geom.get("type")
    if kind == "GeometryCollection":
        parts = geom.get("geometries")
        if not isinstance(parts, list):
            return f"{where}.geometries is {_kind(parts)}, not an array"
        for i, part in enumerate(parts):
            problem = _geometry_problem(part, f"{where}.geometries[{i}]")
            if problem:
                return problem
        return None
    if kind not in _DEPTH:
        return (f"{where}.type is {_show(kind)}, not a GeoJSON geometry type "
                f"({', '.join(_DEPTH)}, GeometryCollection)")
    if "coordinates" not in geom:
        return f"{where} (a {kind}) has no 'coordinates'"
    return _positions_problem(geom["coordinates"], _DEPTH[kind], f"{where}.coordinates")


def _feature_problem(feature: Any) -> str | None:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        got = _show(feature.get("type")) if isinstance(feature, dict) else _kind(feature)
        return f"is not a GeoJSON Feature (type {got})"
    props = feature.get("properties")
    if props is not None and not isinstance(props, dict):
        return f"has properties that are {_kind(props)}, not an object"
    return _geometry_problem(feature.get("geometry"))


def geojson_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with the GeoJSON file ``path`` (see :func:`check_geojson`), or None.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "list.geojson"
    >>> _ = path.write_text("[1, 2]")
    >>> geojson_problem(path)
    'it holds an array, not a GeoJSON object'
    """
    data = Path(path).read_bytes()
    if not data.strip():
        return f"it is empty ({len(data)} bytes)"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 text ({exc.reason} at byte {exc.start}); GeoJSON is UTF-8"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{exc.msg.removesuffix(' at')} at line {exc.lineno}, column {exc.colno}"
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            return f"the file ends early (cut short?): {where}"
        return f"it is not valid JSON: {where}"
    if not isinstance(doc, dict):
        return f"it holds {_kind(doc)}, not a GeoJSON object"
    kind = doc.get("type")
    if kind not in _OBJECT_TYPES:
        return (f"its top-level type is {_show(kind)}; GeoJSON files hold a FeatureCollection "
                "(or a Feature or a geometry)")
    if kind == "Feature":
        problem = _feature_problem(doc)
        return f"its feature {problem}" if problem else None
    if kind != "FeatureCollection":
        return _geometry_problem(doc, "the geometry")
    features = doc.get("features")
    if not isinstance(features, list):
        return f"its 'features' is {_kind(features)}, not an array of features"
    bad = [(i, p) for i, f in enumerate(features) if (p := _feature_problem(f))]
    if not bad:
        return None
    shown = "; ".join(f"feature {i}: {p}" for i, p in bad[:_SHOWN_FEATURES])
    more = f"; and {len(bad) - _SHOWN_FEATURES} more" if len(bad) > _SHOWN_FEATURES else ""
    return f"{len(bad)} of its {len(features)} features are broken ({shown}{more})"


def check_geojson(path: str | os.PathLike, *, fix: str = DEFAULT_FIX) -> None:
    """Refuse a GeoJSON file that GDAL cannot read, or would read with null geometries.

    Standard library only (cheap enough for load-time checks of recipes): the file must be
    non-empty UTF-8 JSON whose top level is a FeatureCollection (or a Feature, or a geometry),
    whose features are Feature objects, and whose geometries are null or have coordinates
    nested as their type requires, with numbers [x, y(, z)] at the leaves. Geometries that are
    well formed but invalid (self-intersections) are for
    :func:`lames_cube.annotations.check_annotations`.

    Parameters
    ----------
    path
        The file.
    fix
        The fix named in the message.

    Raises
    ------
    VectorFileError
        The message names the path, what is wrong (line and column, or the broken features)
        and ``fix``.
    FileNotFoundError
        No file at ``path`` (callers check this first, with their own typed errors).
    """
    path = Path(path)
    problem = geojson_problem(path)
    if problem:
        end = "" if fix.endswith(".") else "."
        raise VectorFileError(f"{path} is not a readable GeoJSON file: {problem}. Fix: {fix}{end}")


def read_vector(path: str | os.PathLike, *, fix: str = DEFAULT_FIX, **kwargs: Any):
    """Read a vector file with geopandas, refusing a broken one with a typed error.

    Parameters
    ----------
    path
        A GeoJSON file (checked first by :func:`check_geojson`) or any file GDAL reads.
    fix
        The fix named in the message.
    **kwargs
        Passed to :func:`geopandas.read_file`.

    Returns
    -------
    geopandas.GeoDataFrame

    Raises
    ------
    VectorFileError
        A malformed GeoJSON file, or any error of the reader (named, with its message).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "points.geojson"
    >>> _ = path.write_text('{"type": "Point", "coordinates": [1, 2]}')
    >>> read_vector(path).geometry[0].wkt
    'POINT (1 2)'
    """
    path = Path(path)
    if path.suffix.lower() in (".geojson", ".json"):
        check_geojson(path, fix=fix)

    try:
        return gpd.read_file(path, **kwargs)
    except LamesCubeError:
        raise
    except Exception as exc:
        end = "" if fix.endswith(".") else "."
        raise VectorFileError(f"{path} cannot be read as a vector file ({type(exc).__name__}: "
                              f"{exc}). Fix: {fix}{end}") from exc
