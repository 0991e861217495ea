"""Lazy Sentinel-2 L2A datacubes from STAC items (odc-stac, or stackstac as a second engine).

:func:`build_cube` turns items into a lazy ``(time, band, y, x)`` uint16 DataArray of harmonised
reflectance × 10 000 (nodata 0) on one GeoBox: band keys normalised across providers, the
processing-baseline offset removed per item (from ``lames:dn_offset``, decided by
``s2:processing_baseline``, never by date), and one time step per solar day with overlapping tiles
and UTM zones fused (first valid pixel), never double-counted. Nothing is read until asked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import odc.stac
import pystac
import rasterio
import rasterio.enums
import shapely
import shapely.geometry
import stackstac
import xarray as xr
from dask import _task_spec as task_spec
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.roi import roi_is_empty
from odc.geo.xr import assign_crs
from odc.loader import RioDriver, RioReader
from odc.loader._builder import _dask_loader_tyx
from odc.loader._rio import GDAL_CLOUD_DEFAULTS

# odc-stac's STAC metadata parser is not exported; pinned in pyproject (odc-stac 0.5.3).
from odc.stac._mdtools import StacAuxReader, StacMDParser
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError

from lames_cube._quiet import drop_log_records, ignore_warnings
from lames_cube.bands import BAND_BY_NAME, WORLD_BANDS, canonical_band, harmonise_values
from lames_cube.errors import (
    AssetReadError,
    EmptyCubeError,
    InvalidGridError,
    InvalidItemError,
    InvalidQueryError,
    MixedCollectionsError,
    UnknownBandError,
    exception_chain,
)
from lames_cube.items import normalize_item, unsupported_reason
from lames_cube.retry import RetryPolicy, check_policy, gdal_retry_env, retry_call

#: Default y/x chunk (px): a multiple of the 256-px patch size.
DEFAULT_CHUNK = 1024
#: Patch size that chunks must be multiples of.
PATCH_SIZE = 256
ENGINES = ("odc", "stackstac")
_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- items
def prepare_items(
    items: Iterable[pystac.Item | Mapping[str, Any]],
    *,
    band_map: Mapping[str, Mapping[str, str]] | None = None,
) -> list[pystac.Item]:
    """Normalise items for a cube, refusing collections whose bands cannot be mapped.

    Parameters
    ----------
    items
        STAC items (pystac or dicts), normalised or raw, from any supported provider.
    band_map
        Per collection, asset key → canonical band, for collections the band table does not know.

    Raises
    ------
    MixedCollectionsError
        Items of several collections where some cannot be read as Sentinel-2 L2A.
    InvalidItemError
        A single-collection set of items that cannot be read.
    """

    items = list(items)
    if not band_map and items and all(
        isinstance(i, pystac.Item) and i.properties.get("lames:provider") for i in items
    ):
        return items  # already normalised (search() results): no round trip through dicts
    raw = []
    for item in items:
        d = item.to_dict(transform_hrefs=False) if isinstance(item, pystac.Item) else dict(item)
        if isinstance(item, pystac.Item) and item.get_self_href():
            d.setdefault("links", []).append({"rel": "self", "href": item.get_self_href()})
        mapping = (band_map or {}).get(d.get("collection", ""))
        if mapping:
            d["assets"] = {mapping.get(k, k): v for k, v in d.get("assets", {}).items()}
        raw.append(d)
    if not raw:
        raise EmptyCubeError("No items were given; search first (lames_cube.search) and pass its result.")
    if all(d.get("properties", {}).get("lames:provider") for d in raw):
        return [pystac.Item.from_dict(d, preserve_dict=False) for d in raw]
    collections = sorted({str(d.get("collection")) for d in raw})
    problems = {}
    for d in raw:
        reason = unsupported_reason(d)
        if reason is not None:
            problems.setdefault(str(d.get("collection")), reason)
    if problems and len(collections) > 1:
        raise MixedCollectionsError(
            f"Items come from {len(collections)} collections {collections}, and these cannot be "
            f"mapped onto the Sentinel-2 band table: {problems}. Search one Sentinel-2 L2A "
            "collection (collections=['sentinel-2-l2a']), or pass band_map={collection: "
            "{asset_key: 'B04', ...}} for the others."
        )
    return [normalize_item(d) for d in raw]


def _check_bands(items: Sequence[pystac.Item], bands: Sequence[str] | None) -> list[str]:
    wanted = list(bands) if bands is not None else [b for b in WORLD_BANDS]
    names = []
    for band in wanted:
        name = canonical_band(band)
        if name not in BAND_BY_NAME:
            raise UnknownBandError(f"{band!r} is not a Sentinel-2 band; use one of {list(BAND_BY_NAME)}.")
        names.append(name)
    for name in names:
        lacking = [i.id for i in items if name not in i.assets]
        if lacking:
            have = sorted(set.intersection(*(set(i.assets) for i in items)) & set(BAND_BY_NAME))
            raise UnknownBandError(
                f"Band {name!r} is missing from {len(lacking)} of {len(items)} items (e.g. "
                f"{lacking[:3]}). All items have {have}; request only those, or search a "
                "collection that has the band."
            )
    return names


# --------------------------------------------------------------------------- grid
def cube_geobox(
    items: Sequence[pystac.Item],
    *,
    crs: str | int | None = None,
    resolution: float | None = None,
    geobox: GeoBox | None = None,
    bbox: Sequence[float] | None = None,
) -> GeoBox:
    """The cube's grid: ``geobox`` as given, or the items' union footprint (or ``bbox``, in
    degrees) in ``crs`` (default: the most common item CRS) at ``resolution`` (default 10 m).

    Raises
    ------
    InvalidGridError
        Zero-size grid, a non-positive resolution or an unknown CRS.
    EmptyCubeError
        The grid does not overlap any item.
    """

    footprints = [shapely.geometry.shape(i.geometry) for i in items]
    if geobox is None:
        if resolution is not None and not resolution > 0:
            raise InvalidGridError(f"resolution={resolution!r} must be a positive number of CRS units (e.g. 10).")
        if crs is None:
            codes = [i.properties.get("proj:code") for i in items]
            crs = max(set(codes), key=lambda c: (codes.count(c), c))
        try:
            area = shapely.box(*bbox) if bbox is not None else shapely.union_all(footprints)
            geobox = GeoBox.from_geopolygon(
                Geometry(area, "EPSG:4326").to_crs(crs), resolution=resolution or 10
            )
        except Exception as exc:
            if isinstance(exc, (InvalidGridError, EmptyCubeError)):
                raise
            raise InvalidGridError(f"Cannot build a grid in crs={crs!r} at resolution={resolution!r}: {exc}. "
                                   "Pass a projected CRS such as 'EPSG:32719' and a resolution in "
                                   "its units.") from exc
    if not isinstance(geobox, GeoBox):
        raise InvalidGridError(f"geobox has type {type(geobox).__name__}; pass an odc.geo GeoBox.")
    if 0 in geobox.shape:
        raise InvalidGridError(
            f"The grid has zero size (shape {tuple(geobox.shape)}): {geobox!r}. Give an area and a "
            "resolution that leave at least one pixel."
        )
    if not any(overlaps(geobox, f, name=i.id) for f, i in zip(footprints, items, strict=True)):
        extent = geobox.extent.to_crs("EPSG:4326").geom
        bounds = tuple(round(v, 5) for v in extent.bounds)
        items_bounds = tuple(round(v, 5) for v in shapely.union_all(footprints).bounds)
        raise EmptyCubeError(
            f"The grid (lon/lat bounds {bounds}) lies outside every item (their union: "
            f"{items_bounds}). Search the grid's area, or pass a grid inside the items."
        )
    return geobox


def overlaps(geobox: GeoBox, footprint, *, name: str | None = None) -> bool:
    """True when a lon/lat footprint overlaps the grid, tested in the grid's CRS (safe where a
    grid's lon/lat outline would wrap the antimeridian).

    An invalid footprint (a self-intersecting ring, as some providers write them) is repaired
    (``shapely.make_valid``), never dropped; one that cannot be projected into the grid's CRS
    raises instead of being left out silently.

    Raises
    ------
    InvalidItemError
        The footprint cannot be projected into the grid's CRS (or has non-finite coordinates);
        the message names ``name`` (the item id).

    Examples
    --------
    >>> g = GeoBox.from_bbox((300_000, 7_300_000, 310_000, 7_310_000), "EPSG:32719", resolution=10)
    >>> bowtie = shapely.Polygon([(-71, -24.5), (-70, -23.5), (-70, -24.5), (-71, -23.5)])
    >>> overlaps(g, bowtie)  # not valid, repaired, still overlapping
    True
    """
    return bool(geobox.extent.geom.intersects(footprint_in(geobox.crs, footprint, name=name)))


def footprint_in(crs: Any, footprint, *, name: str | None = None):
    """A lon/lat footprint projected into ``crs`` (a shapely geometry), repaired when invalid.

    Raises
    ------
    InvalidItemError
        The footprint cannot be projected into ``crs`` or has no finite outline there; the
        message names ``name`` (the item id).

    Examples
    --------
    >>> footprint_in("EPSG:32719", shapely.box(-69.01, -24.01, -69.0, -24.0)).area > 1e6
    True
    """

    what = f"item {name!r}" if name else "an item"
    try:
        local = Geometry(footprint, "EPSG:4326").to_crs(crs).geom
        finite = bool(np.isfinite(shapely.get_coordinates(local)).all())
    except Exception as exc:
        raise InvalidItemError(
            f"The footprint of {what} ({shapely.to_wkt(footprint, rounding_precision=4)[:120]}) "
            f"cannot be projected into the grid's CRS {crs}: {exc}. Fix the item's "
            "geometry (lon/lat, EPSG:4326) or build the cube in a CRS that covers it."
        ) from exc
    if not finite or local.is_empty:
        raise InvalidItemError(
            f"The footprint of {what} ({shapely.to_wkt(footprint, rounding_precision=4)[:120]}) "
            f"has no finite outline in the grid's CRS {crs}. Fix the item's geometry "
            "(lon/lat, EPSG:4326) or build the cube in a CRS that covers it."
        )
    return local if local.is_valid else shapely.make_valid(local)


def check_chunks(chunks: int | Mapping[str, int] | None, geobox: GeoBox) -> dict[str, int]:
    """The y/x chunk sizes of a cube on ``geobox``: ``build_cube``'s ``chunks=`` checked.

    Parameters
    ----------
    chunks
        None (:data:`DEFAULT_CHUNK` both ways), one size for y and x, or ``{"y": .., "x": ..}``
        (a missing dim takes the default). Each a positive multiple of :data:`PATCH_SIZE`, or
        at least the grid's size along that dim (one chunk).
    geobox
        The cube's grid.

    Returns
    -------
    dict
        ``{"y": int, "x": int}``.

    Raises
    ------
    InvalidGridError
        A size that is not positive, or not a multiple of the patch size and smaller than the
        grid.

    Examples
    --------
    >>> g = GeoBox.from_bbox((0, 0, 5120, 2560), "EPSG:32719", resolution=10)  # 256 x 512 px
    >>> check_chunks(None, g), check_chunks({"x": 256}, g), check_chunks(600, g)  # 600: one chunk
    ({'y': 1024, 'x': 1024}, {'y': 1024, 'x': 256}, {'y': 600, 'x': 600})
    """
    if chunks is None:
        size = {"y": DEFAULT_CHUNK, "x": DEFAULT_CHUNK}
    elif isinstance(chunks, int):
        size = {"y": chunks, "x": chunks}
    else:
        size = {"y": int(chunks.get("y", DEFAULT_CHUNK)), "x": int(chunks.get("x", DEFAULT_CHUNK))}
    for dim, n in size.items():
        full = geobox.shape[0 if dim == "y" else 1]
        if n <= 0 or (n % PATCH_SIZE and n < full):
            raise InvalidGridError(
                f"chunks[{dim!r}]={n} is not a positive multiple of the {PATCH_SIZE}-px patch "
                f"size; use e.g. {max(PATCH_SIZE, n // PATCH_SIZE * PATCH_SIZE)}."
            )
    return size


# --------------------------------------------------------------------------- harmonisation
def solar_day(item: pystac.Item) -> dt.date:
    """The item's local solar date (``lames:solar_day``)."""
    return dt.date.fromisoformat(item.properties["lames:solar_day"])


def fuse_first(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """Per pixel, ``a`` where it has data (non-zero), else ``b`` (lazy)."""
    return xr.where(a != 0, a, b).astype(a.dtype)


#: odc-stac settings: nodata 0; SCL read as uint16 so that every band stacks without a cast.
_STAC_CFG = {"*": {"assets": {"*": {"nodata": 0, "data_type": "uint16"}}}}


def solar_day_key(item: pystac.Item, parsed: Any, idx: int) -> str:
    """odc-stac's ``groupby`` callable that groups items as :func:`build_cube` does: by our
    ``lames:solar_day`` (odc's own ``"solar_day"`` uses the grid's longitude).

    Parameters
    ----------
    item
        A normalised item (:func:`prepare_items`).
    parsed, idx
        What odc-stac passes too (its parsed item, the item's position); unused.

    Returns
    -------
    str
        The item's solar day, ``"YYYY-MM-DD"``.

    Examples
    --------
    >>> item = pystac.Item("x", None, None, dt.datetime(2021, 1, 18, 14, 40),
    ...                    {"lames:solar_day": "2021-01-18"})
    >>> solar_day_key(item, None, 0)
    '2021-01-18'
    """
    return item.properties["lames:solar_day"]


class _OffsetParser(StacMDParser):
    """odc-stac metadata parser that hands each asset ``(DN offset, item id, asset key, tag)``:
    the offset to remove (0 for categorical bands), the names to report a failed read with,
    and ``tag``. odc names its tasks from the sources (this included), the grid and the GDAL
    settings, not from the driver: a cube read with ``on_error="nodata"`` tags its sources
    with its run, so that no other cube's tasks stand in for its own."""

    tag = ""

    def driver_data(self, md: Any, band_key: Any) -> Any:
        name = band_key[0]
        band = BAND_BY_NAME.get(name)
        offset = 0
        if band is not None and not band.categorical:
            offset = int(md.properties.get("lames:dn_offset", 0) or 0)
        return offset, str(md.id), str(name), self.tag


#: What :func:`build_cube` does with an asset that cannot be read.
ON_ERROR = ("raise", "nodata")
# Network answers no retry can mend: the server refused or has no such file. (A remote file
# that "is not recognized as a supported format" may only have had its header read fail, so
# it is retried; local files never are.)
_PERMANENT = re.compile(r"HTTP response code:? (40[0-7]|409|41\d)", re.IGNORECASE)
_REMOTE = re.compile(r"^(/vsicurl/|/vsis3/|/vsigs/|/vsiaz/|https?://|s3://|gs://|az://)",
                     re.IGNORECASE)
# GDAL's network file systems, none of them cached during a re-read (the option is a
# colon-separated list of prefixes, thread-local while set)
_NON_CACHED = "/vsicurl/:/vsis3/:/vsigs/:/vsiaz/"
#: Errors of a read that ``on_error="nodata"`` may turn into nodata (anything else is a bug
#: and raises).
_READ_ERRORS: tuple[type[BaseException], ...] = (RasterioError, CPLE_BaseError, OSError)


@contextmanager
def _quiet_read() -> Iterator[None]:
    """Around one odc-loader read, in the thread (or worker process) that reads, silence:

    * odc-loader's "Failed to load" errors: the reader below retries such reads and reports
      the ones that stay broken itself (typed error, or the skip log);
    * rasterio's NotGeoreferencedWarning from ``rasterio.warp``: odc-loader reprojects numpy
      windows with it when a grid is not pixel-aligned with an asset (e.g. 20 m bands on a 10 m
      grid offset by one pixel), and rasterio may then warn that the array has no geotransform
      although the transforms are passed (its own silencing of that warning races between
      threads). Values are right (tests/test_cube.py); the warning is noise for users.
    """
    with drop_log_records("odc.loader._rio", "Failed to load"), \
            ignore_warnings(NotGeoreferencedWarning, "rasterio.warp"):
        yield


def _chain(exc: BaseException) -> str:
    """The messages of an error and of its causes (GDAL's HTTP code is often in a cause)."""
    return " | ".join(str(e) for e in exception_chain(exc))


def _transient(uri: str, exc: BaseException) -> bool:
    """A failed read worth retrying: a network asset, and not a refusal (4xx but 408/429)."""
    return (bool(_REMOTE.match(uri)) and isinstance(exc, _READ_ERRORS)
            and not _PERMANENT.search(_chain(exc)))


_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def _public(text: str) -> str:
    """``text`` with the query of every URL in it cut (signatures such as SAS tokens stay out
    of messages and logs)."""
    return _QUERY.sub(r"\1?…", text)


class _HarmonisingReader(RioReader):
    """odc-loader's rasterio reader that removes the item's DN offset from what it read, before
    odc fuses the day's items: harmonised per item, inside the one load (no extra tasks).

    A failed read of a network asset is retried under the driver's policy, each retry without
    GDAL's cache of that file (which would otherwise repeat the failure: a body cut short is
    remembered). What stays broken raises :class:`AssetReadError`, or, with
    ``on_error="nodata"``, reads as nodata and is written to the driver's skip log."""

    def __init__(self, src, ctx, driver: HarmonisingDriver) -> None:
        super().__init__(src, ctx)
        self._driver = driver

    def read(self, cfg, dst_geobox, *, dst=None, selection=None):
        driver, uri = self._driver, self._src.uri
        data = self._src.driver_data
        offset, item, asset = data[:3] if isinstance(data, tuple) else (0, "?", str(self._src.band))
        env: dict[str, str] = {}

        def attempt():
            try:
                with _quiet_read(), rasterio.Env(**env):
                    return super(_HarmonisingReader, self).read(cfg, dst_geobox, dst=dst,
                                                                selection=selection)
            except AssertionError as exc:
                # odc-geo asserts that the opened file has a CRS: a header that came cut short
                # over the network is opened by GDAL without one (seen with truncated bodies)
                raise RasterioIOError(
                    f"{_public(uri)}: the file opened without a CRS or grid (a header read cut "
                    "short?)"
                ) from exc

        def uncached(_retry: int) -> None:
            env["CPL_VSIL_CURL_NON_CACHED"] = _NON_CACHED

        try:
            roi, pix = retry_call(attempt, policy=driver.policy,
                                  transient=lambda e: _transient(uri, e),
                                  what=f"reading asset {asset!r} of item {item!r}",
                                  kind="read", before_retry=uncached)
        except _READ_ERRORS as exc:
            if driver.on_error == "raise":
                refused = _PERMANENT.search(_chain(exc))
                fix = ("the server refused it: re-sign the item (sign=) or check your access"
                       if refused and refused[1] in ("401", "403") else
                       "check that the file exists and is a readable GeoTIFF (for a network "
                       "asset: the URL, its signature and your network; retries are set by "
                       "retry=RetryPolicy(...))")
                raise AssetReadError(
                    f"Could not read asset {asset!r} of item {item!r} ({_public(uri)}): "
                    f"{type(exc).__name__}: {_public(_chain(exc))[:300]}. Fix: {fix}. To carry on "
                    "with nodata where such assets are, build the cube with "
                    "on_error='nodata' and read what was skipped with read_skipped()."
                ) from exc
            driver.skip(item, asset, uri, exc)
            empty = dst[0:0, 0:0] if dst is not None else np.zeros((0, 0), dtype=cfg.dtype)
            return np.s_[0:0, 0:0], empty
        if offset and pix.size:
            pix[...] = harmonise_values(pix, offset)
        return roi, pix


class HarmonisingDriver(RioDriver):
    """odc-loader reader driver: :class:`RioDriver` whose readers harmonise each item's pixels
    (``lames:dn_offset``) as they are read, and retry failed network reads. Picklable, so it
    runs on Dask workers too.

    Parameters
    ----------
    policy
        Retries of network reads (GDAL's own, and re-reads without its cache).
    on_error
        ``"raise"``: an asset that stays unreadable raises :class:`AssetReadError`;
        ``"nodata"``: it reads as nodata and is appended to ``skipped``.
    skipped
        The skip log (JSON lines), for ``on_error="nodata"``.
    run
        Marks this cube's records in the skip log (several cubes may share one log).
    """

    def __init__(self, policy: RetryPolicy | None = None, on_error: str = "raise",
                 skipped: str | None = None, run: str = "") -> None:
        super().__init__(md_parser=_OffsetParser(_STAC_CFG), aux_reader=StacAuxReader())
        self.policy = check_policy(policy)
        self.on_error = on_error
        self.skipped = skipped
        self.run = run
        if on_error != "raise":
            self._md_parser.tag = f"{on_error}:{run}"

    def capture_env(self) -> dict[str, Any]:
        """The caller's GDAL settings over our retry settings (the caller's win), or our
        retry settings over odc's cloud defaults when the caller set none."""

        env = super().capture_env()
        if env == GDAL_CLOUD_DEFAULTS:  # nothing configured: odc's defaults (10 retries ...)
            env = {**env, **gdal_retry_env(self.policy)}
        else:
            env = {**gdal_retry_env(self.policy), **env}
        return env

    def open(self, src, ctx) -> _HarmonisingReader:
        return _HarmonisingReader(src, ctx, self)

    def skip(self, item: str, asset: str, uri: str, exc: BaseException) -> None:
        """Record an asset read as nodata (a JSON line in the skip log, and a warning)."""
        record = {"run": self.run, "item": item, "asset": asset, "href": _public(uri),
                  "error": f"{type(exc).__name__}: {_public(_chain(exc))[:500]}",
                  "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        _log.warning("asset %r of item %r read as nodata: %s", asset, item, record["error"])
        if self.skipped:
            line = (json.dumps(record) + "\n").encode()
            try:
                fd = os.open(self.skipped, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, line)  # one write of one line: whole lines, even from processes
                finally:
                    os.close(fd)
            except OSError as log_exc:
                raise AssetReadError(
                    f"Asset {asset!r} of item {item!r} could not be read, and the skip log "
                    f"{self.skipped!r} could not record it ({log_exc}). Fix: pass "
                    "skipped= a writable file on a disk every Dask worker shares."
                ) from exc


def read_skipped(source: xr.DataArray | str | os.PathLike) -> list[dict]:
    """The assets a cube built with ``on_error="nodata"`` read as nodata, so far.

    Parameters
    ----------
    source
        The cube (its ``skipped_log`` attribute names the log) or the log's path.

    Returns
    -------
    list of dict
        One record per failed read (a read is one asset over one chunk; computing the cube
        again reads, and records, again): ``run``, ``item``, ``asset``, ``href`` (without its
        query), ``error``, ``time``. Given the cube, only its own records. Empty when nothing
        was skipped (or nothing has been computed yet: the log fills as the cube is read).
        The log is a local file: on a cluster of several machines, give ``skipped=`` a path
        that every worker shares.
    """
    run = None
    if isinstance(source, xr.DataArray):
        path, run = source.attrs.get("skipped_log"), source.attrs.get("skipped_run")
        if not path:
            raise InvalidQueryError(
                "This cube has no 'skipped_log' attribute: it was built with on_error='raise' "
                "(failed reads raise AssetReadError), or an operation dropped its attrs. Pass "
                "the log's path (build_cube's skipped=), or build with on_error='nodata'."
            )
    else:
        path = source
    path = Path(path)
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if run is None or r.get("run") == run]


def _sign_items(items: list[pystac.Item], sign: Callable | str | None) -> list[pystac.Item]:
    """Apply a signing hook (e.g. ``planetary_computer.sign``) to every item."""
    if sign is None:
        return items
    if isinstance(sign, str):
        if sign != "planetary-computer":
            raise InvalidQueryError(
                f"sign={sign!r} is not a known signer; pass a callable (item -> signed item) or "
                "sign='planetary-computer' (needs `pip install planetary-computer`)."
            )
        try:
            import planetary_computer  # local: optional, guarded
        except ImportError as exc:
            raise InvalidQueryError(
                "sign='planetary-computer' needs the planetary-computer package; install it "
                "(`pip install planetary-computer`) or pass your own signing callable."
            ) from exc
        sign = planetary_computer.sign
    if not callable(sign):
        raise InvalidQueryError(
            f"sign={sign!r} is not callable; pass a function item -> signed item (e.g. "
            "planetary_computer.sign) or sign='planetary-computer'."
        )
    signed = []
    for item in items:
        out = sign(item)
        if not isinstance(out, pystac.Item):
            raise InvalidQueryError(
                f"sign returned {type(out).__name__} for item {item.id!r}; a signing hook must "
                "return the signed pystac.Item (as planetary_computer.sign does)."
            )
        signed.append(out)
    return signed


def _stack_bands(*blocks: np.ndarray) -> np.ndarray:
    return np.stack(blocks, axis=1)


def _read_chunk(gbt, iyx, rdr, env, load_state, cfgs, sources, selections) -> np.ndarray:
    """One ``(time, band, y, x)`` chunk of every band, read in one task under one GDAL
    environment: each band's first item of a day is read straight into its slice of the
    block, the day's later items fused in where the block is still nodata (odc's rule, first
    valid pixel). Per band: its load parameters, its readers per time step and its selection,
    as odc's own chunk task would get them."""
    gbox = gbt[tuple(iyx)]
    out = np.zeros((len(sources[0]), len(sources), *gbox.shape.yx), dtype=np.uint16)
    with rdr.restore_env(env, load_state):
        for b, (cfg, layers, selection) in enumerate(zip(cfgs, sources, selections,
                                                         strict=True)):
            fill = cfg.fill_value or 0
            for t, readers in enumerate(layers):
                dst = out[t, b]
                if fill:
                    dst[...] = fill
                for k, reader in enumerate(readers):
                    if k == 0:
                        roi, _ = reader.read(cfg, gbox, dst=dst, selection=selection)
                        if roi_is_empty(roi):  # skipped (on_error="nodata"): no partial pixels
                            dst[...] = fill
                    else:
                        roi, pix = reader.read(cfg, gbox, selection=selection)
                        view = dst[roi]
                        np.copyto(view, pix, where=view == fill)
    return out


def _gather_bands(ds: xr.Dataset, bands: Sequence[str]):
    """The bands of odc's lazy load as one ``(time, band, y, x)`` dask array with one task per
    (time, y, x) chunk (:func:`_read_chunk`) in place of odc's per-band tasks: no block per
    band to allocate, fill, fuse and stack again, one GDAL environment per chunk. odc's
    sources and load parameters are kept as they are (the tasks' names, made from them, too).
    None when odc's graph is not the one this expects (odc-loader 0.6.5, "mem" mode)."""

    arrays = [ds[b].data for b in bands]
    # uint8 bands (SCL of some catalogues) are read into the uint16 block as they are
    if any(a.dtype not in (np.uint8, np.uint16) or a.ndim != 3 or a.chunks != arrays[0].chunks
           for a in arrays):
        return None
    name = f"reflectance-{tokenize(*(a.name for a in arrays))}"
    layers: dict[str, Any] = {}
    deps: dict[str, set] = {}
    sources: dict[tuple, list] = {}
    grid: dict[tuple, tuple] = {}
    common = None  # the grid, driver, GDAL settings and load state: one odc load's
    cfgs, selections = [], []
    for a in arrays:
        graph = a.dask
        for layer_name, layer in graph.layers.items():
            if layer_name != a.name:  # odc's load parameters and its readers of each source
                layers[layer_name] = layer
                deps[layer_name] = set(graph.dependencies[layer_name])
        band_layer = graph.layers.get(a.name, {})
        if len(band_layer) != a.npartitions:
            return None
        band = None
        for key, task in band_layer.items():
            if not (isinstance(task, task_spec.Task) and task.func is _dask_loader_tyx
                    and len(task.args) == 10 and task.args[3] == () and task.args[4] == ()):
                return None
            srcs, gbt, iyx, _, _, cfg, rdr, env, load_state, selection = task.args
            common = common or (gbt, rdr, env, load_state)
            band = band or (cfg, selection)
            if (gbt, rdr, env, load_state) != common or (cfg, selection) != band \
                    or grid.setdefault(key[1:], iyx) != iyx:
                return None
            sources.setdefault(key[1:], []).append(srcs)
        cfgs.append(band[0])
        selections.append(band[1])
    if common is None or any(len(srcs) != len(arrays) for srcs in sources.values()):
        return None
    gbt, rdr, env, load_state = common
    cfgs = task_spec.List(cfgs)  # one node for every task
    tasks = {}
    for (t, y, x), srcs in sources.items():
        key = (name, t, 0, y, x)
        tasks[key] = task_spec.Task(key, _read_chunk, gbt, grid[(t, y, x)], rdr, env,
                                    load_state, cfgs, task_spec.List(srcs), tuple(selections),
                                    _data_producer=True)
    layers[name] = tasks
    deps[name] = set(layers) - {name}
    first = arrays[0]
    return da.Array(HighLevelGraph(layers, deps), name,
                    (first.chunks[0], (len(arrays),), *first.chunks[1:]), dtype=np.uint16)


def _load_odc(items, bands, geobox, chunks, resampling, driver) -> xr.DataArray:
    """One odc-stac load of every item, harmonised per item by the reader, fused per solar day
    by odc (first valid pixel in (time, id) order); ``(time, band, y, x)`` uint16."""

    ds = odc.stac.load(
        items, bands=bands, geobox=geobox, chunks={"x": chunks["x"], "y": chunks["y"]},
        groupby=solar_day_key, resampling={"SCL": "nearest", "*": resampling},
        fail_on_error=True, driver=driver,
    )
    first = ds[bands[0]]
    # One task per (time, y, x) chunk reads every band into one block; should odc's graph
    # differ from the one expected, one task per chunk stacks odc's per-band blocks.
    data = _gather_bands(ds, bands)
    if data is None:
        data = da.blockwise(_stack_bands, "tbyx",
                            *[a for b in bands for a in (ds[b].data, "tyx")],
                            new_axes={"b": len(bands)}, dtype=np.uint16)
    return xr.DataArray(data, dims=("time", "band", *first.dims[1:]),
                        coords={k: v for k, v in first.coords.items() if k != "time"})


def _load_stackstac(items, bands, geobox, chunks, resampling, driver) -> xr.DataArray:
    """One stackstac stack of every item, harmonised per item (one elementwise layer) and
    fused per solar day in (time, id) order; ``(time, band, y, x)`` uint16."""
    epsg = geobox.crs.epsg
    dicts = []
    for item in items:
        d = item.to_dict(transform_hrefs=False)
        d["properties"]["proj:epsg"] = int(str(d["properties"]["proj:code"]).split(":")[1])
        for asset in d["assets"].values():
            asset.pop("proj:code", None)
        dicts.append(d)
    a = geobox.affine
    stack = stackstac.stack(
        dicts, assets=list(bands), epsg=epsg, resolution=(a.a, -a.e),
        bounds=tuple(geobox.boundingbox), dtype="uint16", fill_value=np.uint16(0),
        rescale=False, xy_coords="topleft", snap_bounds=False,
        resampling=getattr(rasterio.enums.Resampling, resampling),
        chunksize=(1, 1, chunks["y"], chunks["x"]),
        sortby_date=False,  # ours, (time, id): stackstac sorts datetime strings, not times
        gdal_env=stackstac.DEFAULT_GDAL_ENV.updated(always=gdal_retry_env(driver.policy)),
    )
    if stack.shape[-2:] != tuple(geobox.shape):
        raise InvalidGridError(
            f"stackstac built a {stack.shape[-2:]} grid for the {tuple(geobox.shape)} GeoBox; use "
            "engine='odc' for this grid."
        )
    out = stack.drop_vars([c for c in stack.coords if c not in ("time", "band")])
    out = out.assign_coords(band=list(bands))
    offsets = np.array([int(i.properties.get("lames:dn_offset", 0) or 0) for i in items], "uint16")
    refl = np.array([not BAND_BY_NAME[b].categorical for b in bands])
    if offsets.any() and refl.any():
        per = offsets[:, None, None, None] * refl[None, :, None, None].astype("uint16")
        out = out.copy(data=harmonise_values(out.data, per))
    days = [solar_day(i) for i in items]
    return _fuse_days(out, days) if len(set(days)) != len(days) else out


def _fuse_days(cube: xr.DataArray, days: list[dt.date]) -> xr.DataArray:
    """Fuse time slices that share a solar day (first valid pixel), in slice order."""
    cube = cube.drop_vars("time")
    slices = []
    for day in sorted(set(days)):
        idx = [k for k, d in enumerate(days) if d == day]
        fused = cube.isel(time=idx[0])
        for k in idx[1:]:
            fused = fuse_first(fused, cube.isel(time=k))
        slices.append(fused)
    return xr.concat(slices, dim="time")


def build_cube(
    items: Iterable[pystac.Item | Mapping[str, Any]],
    *,
    bands: Sequence[str] | None = None,
    crs: str | int | None = None,
    resolution: float | None = None,
    geobox: GeoBox | None = None,
    bbox: Sequence[float] | None = None,
    chunks: int | Mapping[str, int] | None = None,
    engine: str = "odc",
    resampling: str = "nearest",
    band_map: Mapping[str, Mapping[str, str]] | None = None,
    sign: Callable[[pystac.Item], pystac.Item] | str | None = None,
    retry: RetryPolicy | int | None = None,
    on_error: str = "raise",
    skipped: str | os.PathLike | None = None,
) -> xr.DataArray:
    """Build a lazy Sentinel-2 L2A datacube from STAC items.

    Parameters
    ----------
    items
        Items from :func:`lames_cube.search` (or raw items of Earth Search, Planetary Computer,
        CDSE; they are normalised here).
    bands
        Canonical band names or provider keys (default B02, B03, B04, B08, B11, B12, SCL).
    crs, resolution
        Output CRS (default: the items' most common CRS) and pixel size (default 10).
    geobox
        An explicit output grid (overrides ``crs``, ``resolution``, ``bbox``).
    bbox
        Area in degrees (default: the union of the item footprints).
    chunks
        y/x chunk size in px (int or ``{"y": .., "x": ..}``), a multiple of 256 (default 1024).
    engine
        ``"odc"`` (odc-stac) or ``"stackstac"``; both give the same pixels.
    resampling
        Resampling of reflectance bands when the grid differs from the assets' (SCL is always
        ``nearest``).
    band_map
        Per collection, asset key → canonical band, for collections the band table lacks.
    sign
        A signing hook applied to every item before reading, item → signed item (e.g.
        ``planetary_computer.sign`` for Planetary Computer's SAS tokens), or
        ``"planetary-computer"`` to use that package (optional dependency).
    retry
        Retries of network reads (:class:`lames_cube.retry.RetryPolicy`, or a number of
        attempts; default 5 tries with backoff from 0.5 s): GDAL retries 429/5xx answers,
        resets and stalls, and the reader re-reads without GDAL's cache what GDAL gives up
        on (a body cut short). Your own ``rasterio.Env``/``odc.stac.configure_rio`` GDAL
        settings win over these.
    on_error
        ``"raise"`` (default): an asset that stays unreadable raises
        :class:`~lames_cube.errors.AssetReadError` naming the item and asset when the cube
        is computed. ``"nodata"`` (odc engine): it reads as nodata, and each such read is
        logged (a warning) and appended to the skip log; :func:`read_skipped` lists them.
    skipped
        The skip log (JSON lines) for ``on_error="nodata"``; default a new file in the
        temporary folder. Its path is the cube's ``skipped_log`` attribute.

    Returns
    -------
    xarray.DataArray
        ``(time, band, y, x)`` uint16, harmonised reflectance × 10 000, nodata 0, lazy (dask),
        one time step per solar day; coords ``solar_day``, ``n_items``, ``cloud_cover`` (mean
        of the day's items); attrs ``nodata``, ``scale``, ``engine``; on ``geobox``.

    Raises
    ------
    UnknownBandError, InvalidGridError, EmptyCubeError, MixedCollectionsError, InvalidQueryError
        (an unknown ``engine`` or ``on_error``), RetryPolicyError
    AssetReadError
        Later, when the cube is computed: an asset that stays unreadable (``on_error="raise"``;
        with ``engine="stackstac"`` stackstac's own error instead).

    Examples
    --------
    A tiny synthetic world (one LAMES site, one scene a year, 1 km tiles):

    >>> import tempfile
    >>> from lames_cube.search import search
    >>> from lames_cube.synthetic import WorldSpec, write_world
    >>> spec = WorldSpec(site_ids=("2058",), years=(2021,), scenes_per_year=1, grid_km=1,
    ...                  tile_px=100, margin_m=100, hidden_mines=False)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     items = search(write_world(f"{tmp}/w", spec, workers=1, progress=False))
    ...     cube = build_cube(items, bands=["B04", "B03", "B02", "SCL"], resolution=10)
    ...     values = cube.values  # read while the files exist
    >>> cube.dims, cube.dtype, cube.attrs["scale"]
    (('time', 'band', 'y', 'x'), dtype('uint16'), 0.0001)
    >>> bool((values[:, :3] > 0).any()), sorted(set(values[:, 3].ravel().tolist()) - {0}) != []
    (True, True)
    """
    if engine not in ENGINES:
        raise InvalidQueryError(
            f"engine={engine!r} is not one of {ENGINES}; pass engine='odc' (odc-stac, the "
            "default) or engine='stackstac'."
        )
    if on_error not in ON_ERROR:
        raise InvalidQueryError(
            f"on_error={on_error!r} is not one of {ON_ERROR}; pass 'raise' (an unreadable asset "
            "raises AssetReadError) or 'nodata' (it reads as nodata and is logged)."
        )
    if on_error == "nodata" and engine != "odc":
        raise InvalidQueryError(
            f"on_error='nodata' needs engine='odc' (engine={engine!r} cannot report what it "
            "skipped); use engine='odc', or on_error='raise'."
        )
    policy = check_policy(retry)
    items = _sign_items(prepare_items(items, band_map=band_map), sign)
    names = _check_bands(items, bands)
    gbox = cube_geobox(items, crs=crs, resolution=resolution, geobox=geobox, bbox=bbox)
    size = check_chunks(chunks, gbox)
    items = [i for i in items if overlaps(gbox, shapely.geometry.shape(i.geometry), name=i.id)]
    # (time, id): odc-stac's order within a group, so both engines fuse a day alike.
    items.sort(key=lambda i: (i.datetime, i.id))
    log_path = None
    if on_error == "nodata":
        log_path = str(Path(skipped) if skipped is not None else
                       Path(tempfile.gettempdir()) / f"lames_cube-skipped-{uuid.uuid4().hex}.jsonl")
    run = uuid.uuid4().hex[:12]
    driver = HarmonisingDriver(policy, on_error, log_path, run)
    load = _load_odc if engine == "odc" else _load_stackstac
    stacked = load(items, names, gbox, size, resampling, driver)
    days = sorted({solar_day(i) for i in items})
    if stacked.sizes["time"] != len(days):
        raise InvalidItemError(
            f"The {engine} loader returned {stacked.sizes['time']} time steps for {len(days)} "
            "solar days; check the items' lames:solar_day (normalize_item sets it)."
        )
    first = {d: min(i.datetime for i in items if solar_day(i) == d) for d in days}

    def _cover(item):
        value = item.properties.get("eo:cloud_cover")
        return np.nan if value is None else float(value)

    # Unknown cloud cover stays NaN: least-cloudy ranks such scenes last, max_cloud drops them.
    cover = {d: float(np.mean([_cover(i) for i in items if solar_day(i) == d])) for d in days}
    count = {d: sum(1 for i in items if solar_day(i) == d) for d in days}
    stacked = stacked.assign_coords(
        time=np.array([np.datetime64(first[d].replace(tzinfo=None), "ns") for d in days]),
        band=names,
    ).assign_coords(
        solar_day=("time", np.array([np.datetime64(d, "D") for d in days]).astype("datetime64[ns]")),
        cloud_cover=("time", np.array([cover[d] for d in days])),
        n_items=("time", np.array([count[d] for d in days])),
    )
    stacked = stacked.transpose("time", "band", "y", "x")
    stacked.attrs = {"nodata": 0, "scale": 1e-4, "units": "reflectance x 10000",
                     "engine": engine, "harmonised": "baseline offset removed per item"}
    if log_path is not None:
        stacked.attrs["skipped_log"] = log_path
        stacked.attrs["skipped_run"] = run
    stacked.name = "reflectance"

    return assign_crs(stacked, gbox.crs)
