"""MGRS-like tile ids and UTM zones for the synthetic world's tiles."""

from __future__ import annotations

import math

_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # indexed by zone % 3
_ROWS = "ABCDEFGHJKLMNPQRSTUV"


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone that contains ``(lon, lat)``.

    Examples
    --------
    >>> utm_epsg(-69.07, -24.27), utm_epsg(-1.6, 6.2)
    (32719, 32630)
    """
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def latitude_band(lat: float) -> str:
    """MGRS latitude band letter (C..X) of a latitude."""
    index = min(max(math.floor((lat + 80.0) / 8.0), 0), len(_BANDS) - 1)
    return _BANDS[index]


def square_100km(zone: int, easting: float, northing: float) -> str:
    """The two-letter MGRS 100 km square id (AA scheme) of a UTM coordinate.

    Examples
    --------
    >>> square_100km(29, 200000.0, 2700000.0), square_100km(19, 499980.0, 7300000.0)
    ('KH', 'DP')
    """
    column = _COLUMN_SETS[zone % 3][int(easting // 100_000) - 1]
    row_index = int(northing // 100_000) % 20
    if zone % 2 == 0:
        row_index = (row_index + 5) % 20
    return column + _ROWS[row_index]


def tile_id(epsg: int, easting: float, northing: float, lat: float) -> str:
    """An MGRS reference at 10 km precision, e.g. ``"19JDM0703"``, naming a synthetic tile.

    ``easting``/``northing`` is the tile's south-west corner of its 10 km square.
    """
    zone = epsg % 100
    square = square_100km(zone, easting, northing)
    e10 = int(easting % 100_000 // 10_000)
    n10 = int(northing % 100_000 // 10_000)
    return f"{zone:02d}{latitude_band(lat)}{square}{e10}{n10}"
