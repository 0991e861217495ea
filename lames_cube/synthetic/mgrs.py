"""MGRS tile ids: the names of the synthetic world's tiles (UTM zones: ``lames_cube.grid``)."""

from __future__ import annotations

import math

from lames_cube.errors import WorldError

_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # indexed by zone % 3
_ROWS = "ABCDEFGHJKLMNPQRSTUV"


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


def tile_id(epsg: int, easting: float, northing: float, lat: float, *,
            precision_m: int = 10_000) -> str:
    """The MGRS reference of a tile's south-west corner, e.g. ``"19JDM0703"``: the tile's name.

    Parameters
    ----------
    epsg
        The tile's WGS 84 / UTM EPSG code (326zz or 327zz; see :func:`lames_cube.grid.utm_epsg`).
    easting, northing
        The south-west corner of the tile in that zone (metres).
    lat
        A latitude inside the tile (degrees), for the latitude band letter.
    precision_m
        Precision of the reference: 10 000 (one digit each for easting and northing) or 1 000
        (two digits each).

    Returns
    -------
    str
        Zone (two digits), latitude band, 100 km square and the digits, e.g. ``"19JDM0703"``.

    Raises
    ------
    WorldError
        A precision other than 10 000 or 1 000 m.

    Examples
    --------
    >>> tile_id(32719, 507000.0, 7230000.0, -25.0), tile_id(32719, 507000.0, 7233000.0, -25.0,
    ...                                                     precision_m=1000)
    ('19JEN03', '19JEN0733')
    """
    digits = {10_000: 1, 1_000: 2}.get(precision_m)
    if digits is None:
        raise WorldError(
            f"precision_m={precision_m!r} is not a precision of the tile names; pass 10000 "
            "(10 km tiles and larger) or 1000."
        )
    zone = epsg % 100
    square = square_100km(zone, easting, northing)
    e = int(easting % 100_000 // precision_m)
    n = int(northing % 100_000 // precision_m)
    return f"{zone:02d}{latitude_band(lat)}{square}{e:0{digits}d}{n:0{digits}d}"
