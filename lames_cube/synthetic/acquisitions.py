"""When and how the synthetic world's tiles are acquired: the Sentinel-2 constellation as flown.

* **Platforms** (:data:`PLATFORMS`): Sentinel-2A from 2015-06-27, Sentinel-2B from 2017-07-06,
  180° apart on the same orbit, so each relative orbit is flown every 5 days (every 10 days before
  2B). Sentinel-2C took Sentinel-2A's orbital position on 2025-01-21; 2A's later extended
  campaign is not modelled. Sentinel-2B was *not* lost in December 2021: that was Sentinel-1B
  (anomaly of 23 December 2021); Sentinel-2B still acquires.
* **Relative orbits**: 143 per 10-day cycle. Consecutive orbits are one orbital period
  (10 days / 143 ≈ 100.7 min) apart and their tracks 25.17° of longitude apart (westward), so
  the track next door to the west is flown 3 days later (43 orbits on). The swath is 290 km
  wide; neighbouring tracks overlap by some 20-70 km at Chilean latitudes, so tiles there are seen
  from two orbits, on different days. Track positions are anchored on relative orbit 96 over
  Santiago (Sentinel-2B, 2023-01-03 14:37:29 UTC, a real acquisition of tile 19HCC); the track's
  drift with latitude is approximated linearly (0.25° of longitude per degree of latitude).
* **Processing baselines** (:data:`BASELINES`): as ESA published them over time (02.14 from
  2020-01-28, 03.00, 03.01, 04.00 from 2022-01-25 with its +1000 offset, 05.09, 05.10, 05.11). In
  the Earth Search ``sentinel-2-l2a`` and Planetary Computer styles some older scenes come
  reprocessed (05.00); the Collection-1 style (``sentinel-2-c1-l2a``) is reprocessed throughout,
  so none of its scenes is older than 05.00.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

#: Orbital period (days): 143 orbits in the 10-day repeat cycle.
PERIOD_DAYS = 10.0 / 143.0
#: Relative orbits per cycle.
N_ORBITS = 143
#: Swath half-width (km).
HALF_SWATH_KM = 145.0
#: Westward shift of the ground track per orbit (degrees of longitude).
SHIFT_DEG = 360.0 * PERIOD_DAYS
#: Track drift: degrees of longitude per degree of latitude (the track heads south-south-west).
DRIFT = 0.25
#: Anchor: relative orbit 96 over Santiago, flown by Sentinel-2B.
ANCHOR_ORBIT = 96
ANCHOR_LON, ANCHOR_LAT = -70.65, -33.45
ANCHOR_TIME = dt.datetime(2023, 1, 3, 14, 37, 29, tzinfo=dt.UTC)
ANCHOR_ABSOLUTE = 30448  #: Sentinel-2B's absolute orbit then


@dataclass(frozen=True)
class Platform:
    """One satellite: when it acquired and its phase (days after Sentinel-2B on an orbit)."""

    name: str
    start: dt.date
    end: dt.date | None
    phase_days: float
    #: absolute orbit number at the anchor pass (or where it would have been)
    absolute_at_anchor: int


PLATFORMS = (
    Platform("sentinel-2a", dt.date(2015, 6, 27), dt.date(2025, 1, 20), 5.0, 39_390),
    Platform("sentinel-2b", dt.date(2017, 7, 6), None, 0.0, ANCHOR_ABSOLUTE),
    Platform("sentinel-2c", dt.date(2025, 1, 21), None, 5.0, -8_480),
)

#: (first day, baseline) as ESA published them.
BASELINES = (
    (dt.date(2015, 1, 1), "02.04"),
    (dt.date(2018, 5, 23), "02.07"),
    (dt.date(2018, 11, 6), "02.09"),
    (dt.date(2019, 2, 4), "02.11"),
    (dt.date(2019, 5, 6), "02.12"),
    (dt.date(2019, 7, 8), "02.13"),
    (dt.date(2020, 1, 28), "02.14"),
    (dt.date(2021, 6, 30), "03.00"),
    (dt.date(2021, 7, 27), "03.01"),
    (dt.date(2022, 1, 25), "04.00"),
    (dt.date(2022, 12, 6), "05.09"),
    (dt.date(2023, 12, 13), "05.10"),
    (dt.date(2024, 7, 23), "05.11"),
)
#: The first day of baseline 04.00, which adds +1000 to L2A digital numbers.
BASELINE_04_START = next(day for day, name in BASELINES if name == "04.00")
#: Baseline of reprocessed archive scenes (Collection 1).
REPROCESSED = "05.00"


def published_baseline(day: dt.date) -> str:
    """The processing baseline ESA used for scenes acquired on ``day``.

    Examples
    --------
    >>> published_baseline(dt.date(2021, 3, 1)), published_baseline(dt.date(2022, 3, 1))
    ('02.14', '04.00')
    """
    out = BASELINES[0][1]
    for start, name in BASELINES:
        if day >= start:
            out = name
    return out


def scene_baseline(day: dt.date, *, collection1: bool, reprocessed: bool) -> str:
    """Baseline of one scene: as published, or 05.00 when reprocessed (Collection 1).

    Examples
    --------
    >>> scene_baseline(dt.date(2021, 3, 1), collection1=True, reprocessed=False)
    '05.00'
    >>> scene_baseline(dt.date(2023, 3, 1), collection1=True, reprocessed=True)
    '05.09'
    """
    published = published_baseline(day)
    if (collection1 or reprocessed) and float(published) < float(REPROCESSED):
        return REPROCESSED
    return published


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def track_longitude(orbit: int, lat: float) -> float:
    """Longitude (°) of relative orbit ``orbit``'s ground track at latitude ``lat``."""
    return _wrap(ANCHOR_LON - (orbit - ANCHOR_ORBIT) * SHIFT_DEG + DRIFT * (lat - ANCHOR_LAT))


def cross_track_km(orbit: int, lon: float, lat: float) -> float:
    """Signed distance (km, east positive) of a point from the orbit's track centre line."""
    dx = _wrap(lon - track_longitude(orbit, lat)) * 111.32 * math.cos(math.radians(lat))
    tilt = math.atan(DRIFT * math.cos(math.radians(lat)))
    return dx * math.cos(tilt)


def orbits_over(lon: float, lat: float, margin_km: float = 0.0) -> list[int]:
    """Relative orbits whose swath (grown by ``margin_km``) holds the point, ascending."""
    return [r for r in range(1, N_ORBITS + 1)
            if abs(cross_track_km(r, lon, lat)) <= HALF_SWATH_KM + margin_km]


@dataclass(frozen=True)
class Pass:
    """One overflight of a relative orbit by one platform."""

    orbit: int
    platform: str
    when: dt.datetime  #: UTC time over the latitude asked for
    absolute_orbit: int


def passes(orbit: int, lat: float, start: dt.date, end: dt.date) -> list[Pass]:
    """Every pass of relative orbit ``orbit`` over latitude ``lat`` from ``start`` to ``end``
    (inclusive), by the platforms then flying, in time order."""
    # Sentinel-2B over the anchor latitude: ANCHOR_TIME + k·PERIOD_DAYS for the k-th orbit after.
    k = (orbit - ANCHOR_ORBIT) % N_ORBITS
    south = (ANCHOR_LAT - lat) / 360.0 * PERIOD_DAYS  # later further south (descending pass)
    first = ANCHOR_TIME + dt.timedelta(days=k * PERIOD_DAYS + south)
    out = []
    t0 = dt.datetime.combine(start, dt.time(), dt.UTC)
    t1 = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    for p in PLATFORMS:
        base = first + dt.timedelta(days=p.phase_days)
        n0 = math.ceil((t0 - base).total_seconds() / 864_000.0)
        n = n0
        while True:
            when = base + dt.timedelta(days=10 * n)
            if when >= t1:
                break
            day = when.date()
            if p.start <= day and (p.end is None or day <= p.end):
                absolute = p.absolute_at_anchor + k + N_ORBITS * n
                out.append(Pass(orbit, p.name, when.replace(microsecond=0), int(absolute)))
            n += 1
    return sorted(out, key=lambda q: q.when)


def keep_evenly(items: list, n: int | None, phase: float = 0.5) -> list:
    """``n`` of ``items`` spread evenly, starting ``phase`` (0..1) of a step in (all of them
    when ``n`` is None or large).

    Examples
    --------
    >>> keep_evenly(list(range(10)), 3), keep_evenly(list(range(10)), 3, 0.0)
    ([1, 5, 8], [0, 3, 6])
    """
    if n is None or n >= len(items):
        return list(items)
    return [items[min(int((i + phase) * len(items) / n), len(items) - 1)] for i in range(n)]
