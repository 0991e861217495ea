"""Search Sentinel-2 L2A items in a STAC API or a local stac-geoparquet index.

One function, :func:`search`, with the same arguments for both kinds of catalogue: a URL goes to
pystac-client, a path (a ``.parquet`` index or a synthetic world directory) to rustac's DuckDB
search. Both receive the same query (bbox or geometry, RFC 3339 interval, collections, and a
CQL2-JSON filter for cloud and nodata limits); the results are normalised (canonical band keys,
``proj:code``, DN offset), deduplicated and sorted by time and id. This is the only module that
talks to the network.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pystac
import shapely
import shapely.geometry

from lames_cube.errors import (
    CatalogUnreachableError,
    EmptySearchError,
    InvalidBBoxError,
    InvalidQueryError,
)

#: Collection searched when none is given.
DEFAULT_COLLECTIONS = ("sentinel-2-l2a",)
#: Index file of a synthetic world directory.
WORLD_INDEX = "index.parquet"


# --------------------------------------------------------------------------- argument checks
def check_bbox(bbox: Any) -> tuple[float, float, float, float]:
    """Validate a ``(west, south, east, north)`` box in degrees.

    Raises
    ------
    InvalidBBoxError
        Not four finite numbers, out of range, or west ≥ east / south ≥ north.

    Examples
    --------
    >>> check_bbox([-70, -25, -69, -24])
    (-70.0, -25.0, -69.0, -24.0)
    """
    hint = "Give bbox as (west, south, east, north) in degrees (EPSG:4326), e.g. (-70, -25, -69, -24)."
    if isinstance(bbox, (str, bytes, dict)) or not hasattr(bbox, "__len__") or len(bbox) != 4:
        raise InvalidBBoxError(f"bbox={bbox!r} is not four numbers. {hint}")
    try:
        w, s, e, n = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InvalidBBoxError(f"bbox={bbox!r} holds a value that is not a number. {hint}") from None
    if not all(math.isfinite(v) for v in (w, s, e, n)):
        raise InvalidBBoxError(f"bbox={bbox!r} holds a non-finite value. {hint}")
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
        raise InvalidBBoxError(
            f"bbox={bbox!r} is out of range (longitude -180..180, latitude -90..90); were "
            f"projected metres or (lat, lon) given? {hint}"
        )
    if w >= e or s >= n:
        raise InvalidBBoxError(
            f"bbox={bbox!r} has west >= east or south >= north (west={w}, east={e}, south={s}, "
            f"north={n}); boxes across the antimeridian are not supported. {hint}"
        )
    return (w, s, e, n)


def _geometry(intersects: Any) -> dict:
    """A GeoJSON geometry dict from a shapely geometry, GeoJSON dict, or GeoDataFrame/GeoSeries."""
    if hasattr(intersects, "to_crs") and hasattr(intersects, "geometry"):
        if intersects.crs is not None and not intersects.crs.equals("EPSG:4326"):
            intersects = intersects.to_crs("EPSG:4326")
        geom = shapely.union_all(intersects.geometry.values)
    elif isinstance(intersects, dict):
        try:
            geom = shapely.geometry.shape(intersects.get("geometry", intersects))
        except Exception as exc:
            raise InvalidQueryError(
                f"intersects={str(intersects)[:120]!r} is not a GeoJSON geometry ({exc}). Pass a "
                "GeoJSON geometry dict, a shapely geometry or a GeoDataFrame."
            ) from None
    elif isinstance(intersects, shapely.Geometry):
        geom = intersects
    else:
        raise InvalidQueryError(
            f"intersects has type {type(intersects).__name__}; pass a GeoJSON geometry dict, a "
            "shapely geometry or a GeoDataFrame in EPSG:4326."
        )
    if geom.is_empty:
        raise InvalidQueryError("intersects is an empty geometry; pass a non-empty area.")
    w, s, e, n = geom.bounds
    if w < -180 or e > 180 or s < -90 or n > 90:
        raise InvalidQueryError(
            f"intersects has bounds {geom.bounds}, outside longitude/latitude range: give the "
            "geometry in EPSG:4326 degrees."
        )
    return shapely.geometry.mapping(geom)


def site_table(catalog: Any = None, data_dir=None):
    """Site footprints (``site_id``, geometry in EPSG:4326) known for a catalogue.

    The sites of a synthetic world directory (its ``sectors.geojson``, which may hold synthetic
    fallback sites) come first, then the LAMES sites from the data directory. Without a world,
    a missing data directory raises :class:`~lames_cube.errors.DataDirError`.
    """
    import geopandas as gpd  # local: light `import lames_cube`
    import pandas as pd  # local: light `import lames_cube`

    from lames_cube.annotations import load_sites  # local: light `import lames_cube`
    from lames_cube.config import find_data_dir  # local: light `import lames_cube`

    tables = []
    world = _world_dir(catalog) if catalog is not None else None
    if world is not None and (world / "sectors.geojson").is_file():
        sectors = gpd.read_file(world / "sectors.geojson")
        if "kind" in sectors:  # hidden mines are not LAMES sites
            sectors = sectors[sectors["kind"] != "hidden"]
        sectors = sectors[["site_id", "geometry"]].copy()
        sectors["site_id"] = sectors["site_id"].astype(str)
        tables.append(sectors.dissolve(by="site_id", as_index=False))
    if find_data_dir(data_dir, required=not tables) is not None:
        tables.append(load_sites("all", data_dir=data_dir)[["site_id", "geometry"]])
    table = pd.concat(tables, ignore_index=True).drop_duplicates("site_id")
    return gpd.GeoDataFrame(table, geometry="geometry", crs="EPSG:4326")


def _site_area(sites: Sequence[str] | str, catalog: Any, data_dir) -> dict:
    """Union of the bounding boxes of LAMES sites, as a GeoJSON geometry."""
    from lames_cube.annotations import select_sites  # local: light `import lames_cube`

    ids = [sites] if isinstance(sites, (str, int)) else list(sites)
    if not ids:
        raise InvalidQueryError("sites=[] names no site; give LAMES site ids such as ['817'].")
    chosen = select_sites(site_table(catalog, data_dir), [str(i) for i in ids])
    boxes = [shapely.box(*g.bounds) for g in chosen.geometry.values]
    return shapely.geometry.mapping(shapely.union_all(boxes))


def _when(value: Any) -> str:
    """One end of an interval as RFC 3339 (dates: start or end of day filled by the caller)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        text = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return text.removesuffix(".000000") + "Z"
    raise InvalidQueryError(
        f"{value!r} is not a datetime.datetime; pass one, or an ISO 8601 string."
    )


def check_datetime(datetime: Any) -> str | None:
    """Normalise a date, datetime, ``"YYYY[-MM[-DD]]"`` or interval into an RFC 3339 interval.

    Raises
    ------
    InvalidQueryError
        Unparseable, or the start comes after the end.

    Examples
    --------
    >>> check_datetime("2021")
    '2021-01-01T00:00:00Z/2021-12-31T23:59:59.999999Z'
    >>> check_datetime(("2021-03-01", "2021-03-31"))
    '2021-03-01T00:00:00Z/2021-03-31T23:59:59.999999Z'
    """
    if datetime is None:
        return None
    hint = ("Use 'YYYY', 'YYYY-MM', 'YYYY-MM-DD', an RFC 3339 interval 'start/end' (open ends "
            "'..'), a datetime, or a (start, end) pair.")
    if isinstance(datetime, str):
        parts = datetime.split("/")
        if len(parts) == 1:
            parts = [parts[0], parts[0]]
        elif len(parts) != 2:
            raise InvalidQueryError(f"datetime={datetime!r} has more than one '/'. {hint}")
    elif isinstance(datetime, (dt.date, dt.datetime)):
        parts = [datetime, datetime]
    elif isinstance(datetime, Sequence) and len(datetime) == 2:
        parts = list(datetime)
    else:
        raise InvalidQueryError(f"datetime={datetime!r} is not understood. {hint}")
    out = []
    for k, part in enumerate(parts):
        end = k == 1
        if part in (None, "", ".."):
            out.append("..")
            continue
        try:
            out.append(_bound(part, end))
        except (TypeError, ValueError):
            raise InvalidQueryError(f"datetime={datetime!r}: cannot read {part!r}. {hint}") from None
    if ".." not in out and out[0] > out[1]:
        raise InvalidQueryError(
            f"datetime={datetime!r} starts after it ends ({out[0]} > {out[1]}); swap the two ends."
        )
    return "/".join(out)


def _bound(part: Any, end: bool) -> str:
    if isinstance(part, dt.datetime):
        return _when(part)
    if isinstance(part, dt.date):
        day = part
    else:
        text = str(part).strip()
        if "T" in text or " " in text:
            return _when(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        pieces = [int(p) for p in text.split("-")]
        if len(pieces) == 1:
            day = dt.date(pieces[0], 12, 31) if end else dt.date(pieces[0], 1, 1)
        elif len(pieces) == 2:
            first = dt.date(pieces[0], pieces[1], 1)
            nxt = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
            day = nxt - dt.timedelta(days=1) if end else first
        elif len(pieces) == 3:
            day = dt.date(*pieces)
        else:
            raise InvalidQueryError(
                f"{text!r} is not a date; write it as YYYY, YYYY-MM or YYYY-MM-DD."
            )
    clock = dt.time(23, 59, 59, 999_999) if end else dt.time(0, 0, 0)
    return _when(dt.datetime.combine(day, clock, dt.UTC))


def _limit(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidQueryError(f"{name}={value!r} is not a number; give a percentage 0..100.") from None
    if not 0 <= v <= 100:
        raise InvalidQueryError(f"{name}={value!r} is outside 0..100; give a percentage.")
    return v


def cql2_filter(max_cloud: float | None, max_nodata: float | None) -> dict | None:
    """The CQL2-JSON filter for cloud and nodata limits (None when there is none).

    Examples
    --------
    >>> cql2_filter(20, None)
    {'op': '<=', 'args': [{'property': 'eo:cloud_cover'}, 20.0]}
    """
    parts = []
    if max_cloud is not None:
        parts.append({"op": "<=", "args": [{"property": "eo:cloud_cover"}, float(max_cloud)]})
    if max_nodata is not None:
        parts.append(
            {"op": "<=", "args": [{"property": "s2:nodata_pixel_percentage"}, float(max_nodata)]}
        )
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"op": "and", "args": parts}


# --------------------------------------------------------------------------- backends
def _is_url(catalog: Any) -> bool:
    return isinstance(catalog, str) and catalog.split("://", 1)[0].lower() in ("http", "https")


def _world_dir(catalog: Any) -> Path | None:
    if _is_url(catalog):
        return None
    path = Path(catalog)
    if path.is_dir():
        return path
    if path.name == WORLD_INDEX:
        return path.parent
    return None


def _index_path(catalog: str | os.PathLike) -> Path:
    path = Path(catalog).expanduser()
    if path.is_dir():
        path = path / WORLD_INDEX
    if not path.is_file():
        raise CatalogUnreachableError(
            f"catalog={str(catalog)!r} is neither an http(s) STAC API URL nor an existing "
            "stac-geoparquet file (or a world directory holding index.parquet). Give a STAC API "
            "URL such as https://earth-search.aws.element84.com/v1, or create a world with "
            "`lames-cube world create PATH`."
        )
    return path


def _search_index(path: Path, query: dict) -> list[dict]:
    import rustac  # local: light `import lames_cube`
    import rustac_duckdb_extensions  # local: light `import lames_cube`

    client = rustac.DuckdbClient(
        extension_directory=str(rustac_duckdb_extensions.extension_directory()),
        install_extensions=False,
    )
    args = {k: v for k, v in query.items() if v is not None}
    if "filter" in args:
        args["filter_lang"] = "cql2-json"
    try:
        return client.search(str(path), **args)
    except Exception as exc:  # rustac raises its own errors for unreadable files
        raise CatalogUnreachableError(
            f"Could not search the stac-geoparquet index {str(path)!r}: {exc}. Rewrite it with "
            "`lames-cube world create --overwrite` or check that it is a stac-geoparquet file."
        ) from exc


_TRANSIENT_STATUS = (408, 425, 429, 500, 502, 503, 504)


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: wait the policy's own time
        return None


def _transient_api_error(exc: BaseException) -> bool:
    """A failed STAC API request worth retrying: 408/429/5xx, or the network failed."""
    import requests  # local: light `import lames_cube`
    from pystac_client.exceptions import APIError  # local: light `import lames_cube`

    if not isinstance(exc, APIError):
        return False
    status = getattr(exc, "status_code", None)
    if status is not None:
        return status in _TRANSIENT_STATUS
    cause = exc.__cause__ or exc.__context__
    permanent = (requests.exceptions.SSLError, requests.exceptions.InvalidURL,
                 requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                 requests.exceptions.TooManyRedirects)
    return (isinstance(cause, (requests.exceptions.RequestException, OSError))
            and not isinstance(cause, permanent))


def _stac_io(timeout: float, policy):
    """pystac-client's StacApiIO, retrying each request (pages included) under ``policy``."""
    from pystac_client.stac_api_io import StacApiIO  # local: light `import lames_cube`

    from lames_cube.retry import retry_call  # local: light `import lames_cube`

    class RetryingStacApiIO(StacApiIO):
        def __init__(self) -> None:
            super().__init__(timeout=timeout, max_retries=None)  # retries are ours, counted
            self._last = threading.local()  # the last answer, for its Retry-After
            self.session.hooks["response"].append(self._keep)

        def _keep(self, response, *args, **kwargs):
            self._last.retry_after = response.headers.get("Retry-After")

        def request(self, href, method=None, headers=None, parameters=None):
            def once():
                self._last.retry_after = None
                try:
                    return StacApiIO.request(self, href, method, headers, parameters)
                except Exception as exc:
                    exc.retry_after = self._last.retry_after
                    raise

            return retry_call(once, policy=policy, transient=_transient_api_error,
                              retry_after=_retry_after, kind="search",
                              what=f"{(method or 'GET').upper()} {href}")

    return RetryingStacApiIO()


def _search_api(url: str, query: dict, timeout: float, policy) -> list[dict]:
    from pystac_client import Client  # local: light `import lames_cube`
    from pystac_client.exceptions import APIError  # local: light `import lames_cube`

    try:
        client = Client.open(url, stac_io=_stac_io(timeout, policy), timeout=timeout)
        search = client.search(**{k: v for k, v in query.items() if v is not None})
        return [item.to_dict(transform_hrefs=False) for item in search.items()]
    except APIError as exc:
        if _transient_api_error(exc):
            raise CatalogUnreachableError(
                f"The STAC API at {url!r} does not answer: it still failed after "
                f"{policy.attempts} tries: "
                f"{str(exc)[:200]}. Check the URL and your network, or try harder with "
                "retry=RetryPolicy(attempts=..., backoff_s=...); offline, search a local index "
                "instead (a world directory or .parquet file)."
            ) from exc
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):  # requests' errors are OSErrors: SSL, bad URL, ...
            raise CatalogUnreachableError(
                f"The STAC API at {url!r} does not answer: {type(cause).__name__}: "
                f"{str(cause)[:200]}. Check the URL (scheme, host) and its certificate; "
                "retrying would not help."
            ) from exc
        raise CatalogUnreachableError(
            f"The STAC API at {url!r} refused the search: {str(exc)[:300]}. Check the "
            "collection names and that the API supports the CQL2 filter extension."
        ) from exc


def search(
    catalog: str | os.PathLike,
    *,
    bbox: Sequence[float] | None = None,
    intersects: Any = None,
    sites: Sequence[str] | str | None = None,
    datetime: Any = None,
    collections: Sequence[str] | str | None = None,
    max_cloud: float | None = None,
    max_nodata: float | None = None,
    max_items: int | None = None,
    data_dir: str | os.PathLike | None = None,
    timeout: float = 30.0,
    retry: Any = None,
) -> pystac.ItemCollection:
    """Search Sentinel-2 L2A items in a STAC API or a local stac-geoparquet index.

    Parameters
    ----------
    catalog
        An http(s) STAC API URL (Earth Search, Planetary Computer, a local pgstac server), a
        stac-geoparquet file, or a synthetic world directory.
    bbox
        ``(west, south, east, north)`` in degrees.
    intersects
        A geometry in EPSG:4326: GeoJSON dict, shapely geometry, GeoDataFrame or GeoSeries.
    sites
        LAMES site ids; the area is the union of the sites' bounding boxes.
    datetime
        ``"2021"``, ``"2021-03"``, ``"2021-03-01/2021-06-30"``, a date or a (start, end) pair.
    collections
        Collection ids, in order of preference for duplicates (default ``sentinel-2-l2a``).
    max_cloud, max_nodata
        Upper limits (percent) on ``eo:cloud_cover`` and ``s2:nodata_pixel_percentage``.
    max_items
        Stop after this many raw results.
    data_dir
        LAMES data directory, for ``sites``.
    timeout
        Seconds to wait for a STAC API.
    retry
        How often to retry a STAC API request (each page on its own) that failed with 408,
        429 (honouring ``Retry-After``), 5xx, a reset, a timeout or a body cut short: a
        :class:`lames_cube.retry.RetryPolicy`, a number of attempts, or None (5 tries,
        backoff from 0.5 s with jitter). Retries are logged on ``lames_cube.retry``.

    Returns
    -------
    pystac.ItemCollection
        Normalised items (see :func:`lames_cube.items.normalize_item`), one per acquisition and
        tile, sorted by datetime then id.

    Raises
    ------
    InvalidBBoxError, InvalidQueryError
        Malformed area, period or limits.
    UnknownSiteError
        A site id that LAMES does not have.
    CatalogUnreachableError
        The API does not answer (after the retries), or the local index does not exist.
    RetryPolicyError
        A malformed ``retry``.
    EmptySearchError
        Nothing matched; the message repeats the query.

    Examples
    --------
    A local search, in a tiny synthetic world over LAMES site 2058 (a STAC API URL works the
    same way):

    >>> import tempfile
    >>> from lames_cube.synthetic import WorldSpec, write_world
    >>> spec = WorldSpec(site_ids=("2058",), years=(2021,), scenes_per_year=1, grid_km=1,
    ...                  tile_px=100, margin_m=100, hidden_mines=False)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = write_world(f"{tmp}/w", spec, workers=1, progress=False)
    ...     items = search(root, sites=["2058"], datetime="2021", max_cloud=20)
    >>> sorted({i.properties["s2:mgrs_tile"] for i in items})
    ['19HCE8604', '19HCE8704']
    """
    from lames_cube.items import (  # local: light `import lames_cube`
        dedupe_items,
        drop_covered,
        normalize_item,
        unsupported_reason,
    )

    areas = [a is not None for a in (bbox, intersects, sites)]
    if sum(areas) > 1:
        given = [name for name, a in zip(("bbox", "intersects", "sites"), areas, strict=True) if a]
        raise InvalidQueryError(
            f"{' and '.join(f'{g}=' for g in given)} are all given; give at most one of bbox=, "
            "intersects= and sites= (they each choose the search area)."
        )
    geometry = None
    if bbox is not None:
        bbox = check_bbox(bbox)
    elif intersects is not None:
        geometry = _geometry(intersects)
    elif sites is not None:
        geometry = _site_area(sites, catalog, data_dir)
    if isinstance(collections, str):
        collections = [collections]
    collections = list(collections) if collections is not None else list(DEFAULT_COLLECTIONS)
    if not collections or not all(isinstance(c, str) and c for c in collections):
        raise InvalidQueryError(f"collections={collections!r}: give collection ids as strings.")
    if max_items is not None and (not isinstance(max_items, int) or max_items < 1):
        raise InvalidQueryError(f"max_items={max_items!r}: give a positive integer or None.")
    from lames_cube.retry import check_policy  # local: light `import lames_cube`

    policy = check_policy(retry)
    query = {
        "bbox": list(bbox) if bbox is not None else None,
        "intersects": geometry,
        "datetime": check_datetime(datetime),
        "collections": collections,
        "filter": cql2_filter(_limit("max_cloud", max_cloud), _limit("max_nodata", max_nodata)),
        "max_items": max_items,
    }
    if _is_url(catalog):
        raw = _search_api(str(catalog), query, timeout, policy)
    else:
        raw = _search_index(_index_path(catalog), query)
    usable = [d for d in raw if unsupported_reason(d) is None]
    items = [normalize_item(d) for d in usable]
    items = drop_covered(dedupe_items(items, collection_order=collections))
    items.sort(key=lambda i: (i.datetime or i.common_metadata.start_datetime, i.id))
    if not items:
        shown = {k: v for k, v in query.items() if v is not None and k != "intersects"}
        if geometry is not None:
            shown["area"] = f"geometry with bounds {shapely.geometry.shape(geometry).bounds}"
        skipped = f" ({len(raw) - len(usable)} results were not Sentinel-2 L2A)" if raw else ""
        raise EmptySearchError(
            f"No items matched in {str(catalog)!r}{skipped}: {shown}. Widen the period or area, "
            "raise max_cloud/max_nodata, or check the collection ids."
        )
    return pystac.ItemCollection(items)
