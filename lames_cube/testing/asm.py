"""Small files with the schema of LAMES ``Ghana_ASM.geojson`` (KML-derived), for tests and docs.

The published file (not available offline) holds 1,288 ``Polygon Z`` features in EPSG:4326
(lon -2.34..-0.46, lat 4.96..6.60) with the KML fields ``Name``, ``description``,
``timestamp``, ``begin``, ``end``, ``altitudeMode``, ``tessellate``, ``extrude``,
``visibility``, ``drawOrder``, ``icon``; the imagery date and the ASM flag are only in the
``description`` text. :func:`asm_records` says what a file should load as (the truth);
:func:`write_asm_geojson` writes it.
"""

from __future__ import annotations

import json
import os
import random
from datetime import date, timedelta
from pathlib import Path

from lames_cube._atomic import atomic_write_text

__all__ = ["ASM_FIELDS", "asm_records", "write_asm_geojson"]

#: The property names of the published file, in order.
ASM_FIELDS = ("Name", "description", "timestamp", "begin", "end", "altitudeMode", "tessellate",
              "extrude", "visibility", "drawOrder", "icon")

_HTML = (
    '<html xmlns:fo="http://www.w3.org/1999/XSL/Format" '
    'xmlns:msxsl="urn:schemas-microsoft-com:xslt">\n<head>\n<META http-equiv="Content-Type" '
    'content="text/html">\n<meta http-equiv="content-type" content="text/html; charset=UTF-8">\n'
    '</head>\n<body style="margin:0px 0px 0px 0px;overflow:auto;background:#FFFFFF;">\n'
    '<table style="font-family:Arial,Verdana,Times;font-size:12px;text-align:left;width:100%;'
    'border-collapse:collapse;padding:3px 3px 3px 3px">\n<tr style="text-align:center;'
    'font-weight:bold;background:#9CBCE2">\n<td>{name}</td>\n</tr>\n<tr>\n<td>\n<table style='
    '"font-family:Arial,Verdana,Times;font-size:12px;text-align:left;width:100%;border-spacing:'
    '0px; padding:3px 3px 3px 3px">\n<tr>\n<td>date</td>\n<td>{date}</td>\n</tr>\n'
    '<tr bgcolor="#D4E4F3">\n<td>asm</td>\n<td>{flag}</td>\n</tr>\n</table>\n</td>\n</tr>\n'
    "</table>\n</body>\n</html>"
)


def asm_records(
    n: int = 5,
    *,
    seed: int = 0,
    impossible_date_at: tuple[int, ...] = (),
    other_at: tuple[int, ...] = (),
    plain_at: tuple[int, ...] = (),
    no_flag_at: tuple[int, ...] = (),
    bowtie_at: tuple[int, ...] = (),
) -> list[dict]:
    """The features of a generated ASM file and what each should load as.

    Parameters
    ----------
    n
        Number of polygons.
    seed
        Seed of positions, sizes and dates.
    impossible_date_at
        Indices whose description date is ``YYYY-13-01`` (must load as NaT).
    other_at
        Indices with ``asm 0`` (class 0).
    plain_at
        Indices whose description is plain ``date: ...<br>asm: ...`` text instead of HTML.
    no_flag_at
        Indices whose description has no ``asm`` entry.
    bowtie_at
        Indices whose polygon self-intersects (a bow tie; must be repaired).

    Returns
    -------
    list of dict
        ``feature`` (the GeoJSON feature), ``Name``, ``class`` (expected; None if no flag),
        ``date`` (expected ISO date or None).

    Examples
    --------
    >>> [r["class"] for r in asm_records(3, other_at=(1,))]
    [1, 0, 1]
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = f"asm_{i}"
        day = date(2019, 1, 1) + timedelta(days=rng.randrange(0, 3 * 365))
        text = f"{day.year}-13-01" if i in impossible_date_at else day.isoformat()
        flag = 0 if i in other_at else 1
        if i in plain_at:
            desc = f"date: {text}<br>asm: {flag}"
        else:
            desc = _HTML.format(name=name, date=text, flag=flag)
        if i in no_flag_at:
            desc = desc.replace(f"<td>asm</td>\n<td>{flag}</td>", "").replace(f"asm: {flag}", "")
        lon = rng.uniform(-2.34, -0.5)
        lat = rng.uniform(4.96, 6.55)
        d = rng.uniform(0.001, 0.01)
        if i in bowtie_at:
            ring = [(lon, lat), (lon + d, lat + d), (lon + d, lat), (lon, lat + d), (lon, lat)]
        else:
            ring = [(lon, lat), (lon + d, lat), (lon + d, lat + d), (lon, lat + d), (lon, lat)]
        props = {
            "Name": f" {name} " if i % 2 else name,  # some padded, like the LAMES files
            "description": desc,
            "timestamp": None, "begin": None, "end": None, "altitudeMode": "clampToGround",
            "tessellate": -1, "extrude": 0, "visibility": -1, "drawOrder": None, "icon": None,
        }
        feature = {
            "type": "Feature",
            "properties": props,
            "geometry": {"type": "Polygon",
                         "coordinates": [[[x, y, 0.0] for x, y in ring]]},
        }
        out.append({
            "feature": feature,
            "Name": name,
            "class": None if i in no_flag_at else flag,
            "date": None if i in impossible_date_at else day.isoformat(),
        })
    return out


def write_asm_geojson(path: str | os.PathLike, n: int = 5, **kwargs) -> Path:
    """Write a GeoJSON with the Ghana ASM schema (see :func:`asm_records` for ``kwargs``).

    Examples
    --------
    >>> import tempfile
    >>> p = write_asm_geojson(Path(tempfile.mkdtemp()) / "asm.geojson", n=2)
    >>> json.loads(p.read_text())["features"][0]["geometry"]["type"]
    'Polygon'
    """
    path = Path(path)
    records = asm_records(n, **kwargs)
    doc = {
        "type": "FeatureCollection",
        "name": path.stem,
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [r["feature"] for r in records],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1))
    return path
