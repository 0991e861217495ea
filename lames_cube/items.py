"""One normal form for Sentinel-2 L2A STAC items, whatever the provider.

Earth Search v0/v1, Planetary Computer (2021 and current layouts) and CDSE describe the same
product in different ways (see ``../shared/stac/MANIFEST.md`` section 5); lames_cube's synthetic
worlds copy Earth Search v1 and Planetary Computer exactly and are read by the same rules, with
no short cut. :func:`normalize_item` rewrites any of them into one form that the rest of lames_cube
relies on:

* asset keys are canonical band names (``B04``, ``B8A``, ``SCL``; ``visual`` for TCI), one asset
  per band, each recording its provider key in ``lames:source_key``;
* ``proj:code`` (``"EPSG:32719"``) on the item; ``proj:shape`` and a 6-element ``proj:transform``
  on every band asset;
* ``s2:processing_baseline`` (``"04.00"`` or None), ``s2:mgrs_tile`` (``"24MUV"``), lower-case
  ``platform``, ``eo:cloud_cover`` (float or None);
* ``lames:dn_offset`` (the offset still in the digital numbers: reflectance × 1e4 = DN −
  dn_offset) and ``lames:dn_offset_source``; ``lames:provider``; ``lames:solar_day``.

:func:`dedupe_items` and :func:`drop_covered` then remove the duplicates that searches return
(one acquisition in several collections; the same ground in two UTM zones).
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pystac
import shapely
import shapely.geometry
from pyproj import CRS
from pystac.utils import datetime_to_str, make_absolute_href, str_to_datetime

from lames_cube.bands import ASSET_KEY_TO_BAND, BAND_BY_NAME, BANDS, baseline_dn_offset
from lames_cube.errors import InvalidItemError
from lames_cube.grid import geodesic_area

__all__ = [
    "PROVIDERS",
    "dedupe_items",
    "drop_covered",
    "item_band_names",
    "normalize_item",
    "normalize_items",
    "unsupported_reason",
]

#: Values of ``lames:provider``. Detection never assigns ``lames-synthetic``: it is kept for
#: hand-built items that arrive already normalised (``lames_cube.testing.catalogs``).
PROVIDERS: tuple[str, ...] = (
    "earth-search-v1",
    "earth-search-v0",
    "planetary-computer",
    "cdse",
    "lames-synthetic",
    "unknown",
)

PROJ_V2_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"

#: Reflectance bands (those whose DNs carry the baseline-04.00 offset).
_REFLECTANCE = frozenset(b.name for b in BANDS if b.scale == 1e-4 and not b.categorical)
#: Native resolution of every asset that becomes a canonical key.
_NATIVE_RES: dict[str, int] = {b.name: b.resolution for b in BANDS} | {"visual": 10}
#: Canonical key order of the output assets.
_KEY_ORDER: dict[str, int] = {name: i for i, name in enumerate([*_NATIVE_RES])}

_RES_SUFFIX = re.compile(r"^(?P<base>.+?)[_-](?P<res>10|20|60)m$")
_JP2_SUFFIX = "-jp2"
# A 100 km square, optionally refined by an MGRS grid reference (synthetic tiles: "19KEQ20").
_MGRS = re.compile(r"^\d{2}[C-HJ-NP-X][A-HJ-NP-Z]{2}(?:\d\d){0,4}$")
_TILE = r"\d{1,2}[C-HJ-NP-X][A-HJ-NP-Z]{2}(?:\d\d){0,4}"
_TILE_IN_ID = re.compile(rf"_T({_TILE})_")
_ES_TILE_IN_ID = re.compile(rf"^S2[A-D]_({_TILE})_\d{{8}}_")
#: Item ids as each provider writes them (a local mirror keeps ids, even with new hrefs).
_ID_EARTH_SEARCH = re.compile(rf"^S2[A-D]_{_TILE}_\d{{8}}_\d+_L2A$")  # v1 and v0 alike
_ID_EARTH_SEARCH_C1 = re.compile(rf"^S2[A-D]_T{_TILE}_\d{{8}}T\d{{6}}_L2A$")
_ID_PLANETARY = re.compile(
    rf"^S2[A-D]_MSIL2A_\d{{8}}T\d{{6}}_R\d{{3}}_T{_TILE}_\d{{8}}T\d{{6}}$"  # current layout
    rf"|^S2[A-D]_MSIL2A_\d{{8}}T\d{{6}}_N\d{{4}}_R\d{{3}}_T{_TILE}_\d{{8}}T\d{{6}}\.SAFE$"  # 2021
)
_ID_CDSE = re.compile(rf"^S2[A-D]_MSIL2A_\d{{8}}T\d{{6}}_N\d{{4}}_R\d{{3}}_T{_TILE}_\d{{8}}T\d{{6}}$")
#: Earth Search v1 asset keys that no other provider uses (common names).
_EARTH_SEARCH_KEYS = frozenset(
    {"coastal", "blue", "green", "red", "rededge1", "nir", "nir08", "swir16", "swir22", "scl"}
)
_BASELINE_IN_NAME = re.compile(r"_N(\d{2})\.?(\d{2})(?:_|$|\.)")
_GENERATION_IN_NAME = re.compile(r"_(\d{8}T\d{6})(?:\.SAFE)?$")
_SEQUENCE_IN_ID = re.compile(r"_(\d+)_L2A$")
_PLATFORM_IN_ID = re.compile(r"^S2([A-D])_")
_BASELINE_TEXT = re.compile(r"^\d{1,2}(\.\d{1,2})?$")


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def normalize_item(
    item: pystac.Item | Mapping[str, Any], *, href: str | None = None
) -> pystac.Item:
    """Return a new item in lames_cube's normal form; the input is never modified.

    Parameters
    ----------
    item
        A Sentinel-2 L2A item as a :class:`pystac.Item` (read with or without pystac's
        migration, so with ``proj:epsg`` or ``proj:code``) or as a raw STAC JSON dict.
    href
        Where the item's JSON was read from. Relative asset hrefs are resolved against it,
        or, when it is not given, against the item's ``self`` link. Without either they stay
        relative.

    Returns
    -------
    pystac.Item
        A new item. Asset keys are canonical band names (``B02`` … ``B12``, ``B8A``, ``SCL``,
        ``AOT``, ``WVP``; ``visual`` for the true-colour image) with the provider's key in
        ``asset.extra_fields["lames:source_key"]``; other assets keep their keys; ``-jp2``
        twins and per-resolution copies of a band are dropped (the native resolution and an
        http(s)/file href are preferred). Properties carry ``proj:code``,
        ``s2:processing_baseline``, ``s2:mgrs_tile``, lower-case ``platform``,
        ``eo:cloud_cover`` (None when the provider says it is not valid), ``lames:dn_offset``,
        ``lames:dn_offset_source``, ``lames:provider`` and ``lames:solar_day``.

    Raises
    ------
    InvalidItemError
        The item is not a Sentinel-2 L2A item (Sentinel-1, Landsat, Sentinel-2 L1C), has no
        CRS, no asset grid (``proj:shape``/``proj:transform``), no datetime or footprint, or
        contradictory metadata.

    Notes
    -----
    * ``s2:processing_baseline`` comes from ``s2:processing_baseline`` or
      ``sentinel:processing_baseline``; old Earth Search v0 items have neither, and then it is
      read from the product name (``…_N0214_…`` in ``s2:product_uri``/``sentinel:product_id``,
      ``…_N02.14`` in ``s2:datatake_id``), which ESA defines as the baseline.
    * ``lames:dn_offset`` is 1000 when the baseline is 04.00 or later and the provider has not
      removed it (``earthsearch:boa_offset_applied``/``sentinel:boa_offset_applied`` true → 0),
      else 0 (``lames:dn_offset_source`` ``"baseline"``). Without a baseline, the reflectance
      assets' raster offset decides (−0.1 at scale 1e-4 → 1000, unless the applied-flag is
      set; source ``"raster:bands"``); without either, 0 (``"default"``).
    * ``lames:solar_day`` is the date of the UTC datetime shifted by the footprint centroid's
      longitude / 15 hours (antimeridian-safe).
    * The input goes through pystac's migration first (``proj:epsg`` → ``proj:code``, extension
      URIs), so a raw dict and the same item read by ``pystac.Item.from_dict`` give identical
      results; ``proj:code`` is the only CRS field kept (projection extension v2.0.0).

    Examples
    --------
    >>> raw = {"type": "Feature", "stac_version": "1.0.0", "id": "S2B_24MUV_20250731_0_L2A",
    ...        "collection": "sentinel-2-l2a", "bbox": [-40.5, -5.0, -39.5, -4.1],
    ...        "geometry": {"type": "Polygon", "coordinates": [[[-40.5, -5.0], [-39.5, -5.0],
    ...                     [-39.5, -4.1], [-40.5, -4.1], [-40.5, -5.0]]]},
    ...        "properties": {"datetime": "2025-07-31T13:03:27Z", "platform": "sentinel-2b",
    ...                       "proj:epsg": 32724, "grid:code": "MGRS-24MUV",
    ...                       "s2:processing_baseline": "05.11",
    ...                       "earthsearch:boa_offset_applied": True},
    ...        "links": [], "assets": {"nir08": {"href": "https://x/B8A.tif",
    ...            "proj:shape": [5490, 5490], "proj:transform": [20, 0, 300000, 0, -20, 9500020]}}}
    >>> item = normalize_item(raw)
    >>> list(item.assets), item.properties["proj:code"], item.properties["s2:mgrs_tile"]
    (['B8A'], 'EPSG:32724', '24MUV')
    >>> item.properties["lames:dn_offset"], item.properties["lames:solar_day"]
    (0, '2025-07-31')
    """
    if isinstance(item, pystac.Item):
        # transform_hrefs=False: the default walks to the root catalogue, over the network.
        raw = item.to_dict(include_self_link=True, transform_hrefs=False)
        if href is None:
            href = item.get_self_href()
    elif isinstance(item, Mapping):
        raw = copy.deepcopy(dict(item))
    else:
        raise InvalidItemError(
            f"normalize_item expects a pystac.Item or a STAC Item dict, got "
            f"{type(item).__name__}. Read the JSON first, e.g. pystac.Item.from_file(path)."
        )
    reason = unsupported_reason(raw)
    if reason:
        raise InvalidItemError(
            f"Item {raw.get('id')!r} (collection {raw.get('collection')!r}) cannot be "
            f"normalised: {reason}. lames_cube works on Sentinel-2 L2A items only; search with "
            "collections=['sentinel-2-l2a'] (or 'sentinel-2-c1-l2a'), or pass "
            "on_unsupported='skip' to normalize_items."
        )
    d = _migrated(raw)
    return _normalize_dict(d, base_href=href or _self_href(d))


def normalize_items(
    items: Iterable[pystac.Item | Mapping[str, Any]] | pystac.ItemCollection | Mapping[str, Any],
    *,
    on_unsupported: Literal["raise", "skip"] = "raise",
    href: str | None = None,
) -> pystac.ItemCollection:
    """Normalise many items (see :func:`normalize_item`).

    Parameters
    ----------
    items
        Items or item dicts, a :class:`pystac.ItemCollection`, a GeoJSON FeatureCollection
        dict, or a plain JSON array of items (as stac-geoparquet writes).
    on_unsupported
        What to do with items that are not Sentinel-2 L2A (a search without ``collections``
        also returns Sentinel-1 GRD, Sentinel-2 L1C and Landsat items): ``"raise"`` (default)
        raises :class:`~lames_cube.errors.InvalidItemError`; ``"skip"`` leaves them out and
        lists them, with the reason, in ``extra_fields["lames:skipped"]`` of the result.
    href
        Where the items' JSON was read from, for relative asset hrefs.

    Returns
    -------
    pystac.ItemCollection
        The normalised items, in input order.

    Examples
    --------
    >>> fc = {"type": "FeatureCollection", "features": [
    ...     {"type": "Feature", "id": "S1A_IW_GRDH_x", "collection": "sentinel-1-grd",
    ...      "properties": {"platform": "sentinel-1a", "datetime": "2025-07-31T13:57:12Z"},
    ...      "geometry": None, "links": [], "assets": {}}]}
    >>> out = normalize_items(fc, on_unsupported="skip")
    >>> len(out), out.extra_fields["lames:skipped"][0]["id"]
    (0, 'S1A_IW_GRDH_x')
    """
    if on_unsupported not in ("raise", "skip"):
        raise InvalidItemError(
            f"on_unsupported must be 'raise' or 'skip', got {on_unsupported!r}."
        )
    out: list[pystac.Item] = []
    skipped: list[dict[str, Any]] = []
    for it in _iter_items(items):
        raw = (
            it.to_dict(include_self_link=True, transform_hrefs=False)
            if isinstance(it, pystac.Item)
            else it
        )
        reason = unsupported_reason(raw)
        if reason and on_unsupported == "skip":
            skipped.append(
                {"id": raw.get("id"), "collection": raw.get("collection"), "reason": reason}
            )
            continue
        out.append(normalize_item(it, href=href))
    extra = {"lames:skipped": skipped} if skipped else None
    return pystac.ItemCollection(out, extra_fields=extra)


def dedupe_items(
    items: Iterable[pystac.Item], *, collection_order: Sequence[str] | None = None
) -> list[pystac.Item]:
    """Keep one item per acquisition: per (platform, ``s2:mgrs_tile``, ``lames:solar_day``).

    Parameters
    ----------
    items
        Normalised items (the output of :func:`normalize_items`).
    collection_order
        Collection ids, most preferred first, e.g. ``["sentinel-2-c1-l2a", "sentinel-2-l2a"]``.
        Collections not listed rank after the listed ones.

    Returns
    -------
    list of pystac.Item
        The kept items, sorted by (datetime, id). Among duplicates the kept one is, in order:
        the one whose collection comes first in ``collection_order``; the highest processing
        baseline; the latest generation time (``s2:generation_time``, else the one in the
        product name), then the latest ``updated``, then the highest sequence number (Earth
        Search ``_1_`` beats ``_0_``); the smallest id. Items without an MGRS tile are never
        treated as duplicates.

    Raises
    ------
    InvalidItemError
        An item is not in normal form (call :func:`normalize_items` first).

    Examples
    --------
    The same acquisition in Earth Search's two collections (real items, see
    :func:`lames_cube.testing.stac_data_dir`):

    >>> import json
    >>> from lames_cube.testing import stac_data_dir
    >>> es = stac_data_dir() / "earth_search_v1" / "items"
    >>> raws = [json.loads((es / name).read_text()) for name in (
    ...     "sentinel-2-l2a/S2B_24MUV_20250731_0_L2A.json",
    ...     "sentinel-2-c1-l2a/S2B_T24MUV_20250731T130245_L2A.json")]
    >>> items = normalize_items(raws)
    >>> [i.id for i in dedupe_items(items, collection_order=["sentinel-2-c1-l2a"])]
    ['S2B_T24MUV_20250731T130245_L2A']
    >>> [i.id for i in dedupe_items(items, collection_order=["sentinel-2-l2a"])]
    ['S2B_24MUV_20250731_0_L2A']
    """
    items = list(items)
    rank = {c: i for i, c in enumerate(collection_order or ())}
    groups: dict[tuple, list[pystac.Item]] = {}
    for it in items:
        _require_normal(it, "dedupe_items")
        p = it.properties
        tile = p.get("s2:mgrs_tile")
        key = (p.get("platform"), tile, p["lames:solar_day"]) if tile else ("", it.id, "")
        groups.setdefault(key, []).append(it)
    kept = [min(group, key=lambda i: _preference_key(i, rank)) for group in groups.values()]
    return sorted(kept, key=lambda i: (_item_datetime(i.properties), i.id))


def drop_covered(items: Iterable[pystac.Item], *, tolerance: float = 0.99) -> list[pystac.Item]:
    """Drop items whose footprint other items of the same pass already cover.

    The same ground arrives in two UTM zones on one day (Planetary Computer 60VUK lies inside
    59VPE). Within each (platform, ``lames:solar_day``) group, items are visited from the
    largest footprint (geodesic area of the item geometry, the valid-data polygon) to the
    smallest, ties by id; an item is dropped when at least ``tolerance`` of its footprint area
    lies in the union of the items kept before it.

    Parameters
    ----------
    items
        Normalised items.
    tolerance
        Covered fraction, in (0, 1], from which an item is dropped.

    Returns
    -------
    list of pystac.Item
        The kept items, in input order.

    Raises
    ------
    InvalidItemError
        ``tolerance`` out of range, or an item not in normal form.

    Examples
    --------
    Planetary Computer's 60VUK and 59VPE of 2019-01-01 (real items, see
    :func:`lames_cube.testing.stac_data_dir`):

    >>> import json
    >>> from lames_cube.testing import stac_data_dir
    >>> pc = stac_data_dir() / "planetary_computer" / "items" / "sentinel-2-l2a"
    >>> raws = [json.loads(next(pc.glob(f"*_{tile}_*.json")).read_text())
    ...         for tile in ("T60VUK", "T59VPE")]
    >>> kept = drop_covered(normalize_items(raws), tolerance=0.99)
    >>> [i.properties["s2:mgrs_tile"] for i in kept]
    ['59VPE']
    """
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance <= 1):
        raise InvalidItemError(
            f"tolerance must be a fraction in (0, 1], got {tolerance!r}; e.g. 0.99 drops items "
            "99 % covered by others."
        )


    items = list(items)
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        _require_normal(it, "drop_covered")
        groups.setdefault(
            (it.properties.get("platform"), it.properties["lames:solar_day"]), []
        ).append(i)
    dropped: set[int] = set()
    for idx in groups.values():
        shapes = {i: _footprint(items[i]) for i in idx}
        if sum(s is not None for s in shapes.values()) < 2:
            continue
        shapes = _unwrap_antimeridian(shapes)
        areas = {
            i: geodesic_area(s, "EPSG:4326") if s is not None else 0.0
            for i, s in shapes.items()
        }
        order = sorted(idx, key=lambda i: (-areas[i], items[i].id))
        union = None  # of the footprints kept so far
        for i in order:
            shape = shapes[i]
            if shape is None or areas[i] == 0:
                continue
            if union is not None:
                inter = shape.intersection(union)
                covered = geodesic_area(inter, "EPSG:4326")  # 0 when empty
                if covered / areas[i] >= tolerance:
                    dropped.add(i)
                    continue
            union = shape if union is None else shapely.union(union, shape)
    return [it for i, it in enumerate(items) if i not in dropped]


def item_band_names(item: pystac.Item | Mapping[str, Any]) -> list[str]:
    """Return the canonical bands an item holds, in band-table order.

    Works on normalised and raw items (provider keys are mapped, ``-jp2`` twins and
    per-resolution copies count once). ``visual`` and non-band assets are not bands.

    Examples
    --------
    >>> item_band_names({"assets": {"red": {}, "nir08": {}, "red-jp2": {}, "thumbnail": {}}})
    ['B04', 'B8A']
    """
    assets = item.assets if isinstance(item, pystac.Item) else item.get("assets", {})
    found = set()
    for key in assets:
        band = _band_of_key(key)[0]
        if band is not None and band != "visual":
            found.add(band)
    return [b.name for b in BANDS if b.name in found]


def unsupported_reason(item: pystac.Item | Mapping[str, Any]) -> str | None:
    """Return why an item is not a Sentinel-2 L2A item, or None when it is one.

    Examples
    --------
    >>> unsupported_reason({"id": "S2B_24MUV_20250731_0_L1C", "collection": "sentinel-2-l1c",
    ...                     "properties": {"platform": "sentinel-2b"}})
    'it is a Sentinel-2 Level-1C (top-of-atmosphere) product, not L2A'
    """
    d = (
        item.to_dict(include_self_link=False, transform_hrefs=False)
        if isinstance(item, pystac.Item)
        else item
    )
    if not isinstance(d, Mapping) or d.get("type") not in ("Feature", None):
        return (
            f"it is not a STAC Item (type {d.get('type')!r})"
            if isinstance(d, Mapping)
            else "it is not a STAC Item"
        )
    props = d.get("properties") or {}
    platform = str(props.get("platform") or "").lower().replace(" ", "-")
    constellation = str(props.get("constellation") or "").lower().replace(" ", "-")
    ident = str(d.get("id") or "")
    is_s2 = (
        platform.startswith("sentinel-2")
        or (not platform and constellation == "sentinel-2")
        or (not platform and _PLATFORM_IN_ID.match(ident) is not None)
    )
    if not is_s2:
        what = props.get("platform") or props.get("constellation") or "no platform"
        return f"platform {what!r} is not Sentinel-2"
    collection = str(d.get("collection") or "").lower()
    product = " ".join(str(props.get(k) or "") for k in ("s2:product_uri", "sentinel:product_id"))
    if (
        "l1c" in collection
        or props.get("s2:product_type") == "S2MSI1C"
        or ident.endswith("_L1C")
        or "MSIL1C" in product
        or "MSIL1C" in ident
    ):
        return "it is a Sentinel-2 Level-1C (top-of-atmosphere) product, not L2A"
    return None


# --------------------------------------------------------------------------------------------
# the normalisation proper (on plain dicts)
# --------------------------------------------------------------------------------------------


def _migrated(raw: dict[str, Any]) -> dict[str, Any]:
    """Run pystac's migration (``proj:epsg`` → ``proj:code``, extension URIs, STAC version).

    Raw dicts and pystac Items (migrated or not) then start from the same dict, so both
    routes give the same normal form.
    """
    _check_crs_conflict(raw.get("properties") or {}, f"item {raw.get('id')!r}")
    for key, asset in (raw.get("assets") or {}).items():
        _check_crs_conflict(asset, f"asset {key!r} of item {raw.get('id')!r}")
    try:
        with warnings.catch_warnings():
            # pystac's storage-extension migration warns about Earth Search's https hrefs;
            # the storage fields are not used here.
            warnings.filterwarnings(
                "ignore", message="Could not parse bucket", category=UserWarning
            )
            parsed = pystac.Item.from_dict(raw, migrate=True, preserve_dict=True)
    except (KeyError, TypeError, ValueError, pystac.STACError) as err:
        raise InvalidItemError(
            f"Item {raw.get('id')!r} is not a valid STAC Item ({type(err).__name__}: {err}). "
            "Expected a GeoJSON Feature with id, geometry, bbox, properties.datetime, links "
            "and assets."
        ) from err
    return parsed.to_dict(include_self_link=True, transform_hrefs=False)


def _normalize_dict(d: dict[str, Any], *, base_href: str | None) -> pystac.Item:
    ident = d.get("id")
    props: dict[str, Any] = d.setdefault("properties", {})
    provider = _detect_provider(d)

    crs = _item_crs(d)
    props.pop("proj:epsg", None)
    props["proj:code"] = crs

    d["assets"] = _canonical_assets(d, base_href=base_href)

    baseline = _baseline(props, ident)
    props["s2:processing_baseline"] = baseline
    props["s2:mgrs_tile"] = _mgrs_tile(props, ident, crs)
    props["platform"] = _platform(props, ident)
    if str(props.get("constellation") or "").lower().replace(" ", "-") == "sentinel-2":
        props["constellation"] = "sentinel-2"
    props["eo:cloud_cover"] = _cloud_cover(props, ident)
    offset, source = _dn_offset(props, d["assets"], baseline)
    props["lames:dn_offset"] = offset
    props["lames:dn_offset_source"] = source
    props["lames:provider"] = provider
    props["lames:solar_day"] = _solar_day(d)
    for key in _TIMESTAMPS:  # one spelling of UTC whatever the backend ("Z", "+00:00")
        if isinstance(props.get(key), str):
            props[key] = _utc_z(props[key])

    exts = [e for e in d.get("stac_extensions", []) if "/projection/" not in e]
    d["stac_extensions"] = [*exts, PROJ_V2_SCHEMA]
    return pystac.Item.from_dict(d, migrate=False, preserve_dict=False)


def _canonical_assets(d: dict[str, Any], *, base_href: str | None) -> dict[str, dict[str, Any]]:
    props = d["properties"]
    ident = d.get("id")
    candidates: dict[str, list[tuple[tuple, str, dict[str, Any]]]] = {}
    others: dict[str, dict[str, Any]] = {}
    for key, asset in d.get("assets", {}).items():
        asset = dict(asset)
        href = asset.get("href")
        if isinstance(href, str) and base_href and _is_relative(href):
            asset["href"] = make_absolute_href(href, base_href)
        band, res, jp2 = _band_of_key(key)
        by_eo = False
        if band is None:
            band = _band_of_eo(asset)
            by_eo = band is not None
        if band is None:
            others[key] = asset
            continue
        native = res is None or res == _NATIVE_RES[band]
        rank = (
            not native,
            jp2,
            by_eo,
            str(asset.get("href", "")).lower().startswith("s3://"),
            res or 0,
            key,
        )
        candidates.setdefault(band, []).append((rank, key, asset))

    out: dict[str, dict[str, Any]] = {}
    for band in sorted(candidates, key=_KEY_ORDER.__getitem__):
        _, key, asset = min(candidates[band], key=lambda c: c[0])
        asset.setdefault("lames:source_key", key)
        _fill_grid(asset, props, ident, band, required=band != "visual")
        if "proj:epsg" in asset or "proj:code" in asset:
            code = _crs_of(asset)
            asset.pop("proj:epsg", None)
            if code is None:
                asset.pop("proj:code", None)
            else:
                asset["proj:code"] = code
        out[band] = asset
    out.update(others)
    return out


def _band_of_key(key: str) -> tuple[str | None, int | None, bool]:
    """(canonical band or None, resolution from the key suffix or None, is a -jp2 twin)."""
    jp2 = key.endswith(_JP2_SUFFIX)
    base = key[: -len(_JP2_SUFFIX)] if jp2 else key
    band = ASSET_KEY_TO_BAND.get(base)
    res: int | None = None
    if band is None:
        m = _RES_SUFFIX.match(base)
        if m:
            band = ASSET_KEY_TO_BAND.get(m["base"])
            res = int(m["res"])
    elif base not in BAND_BY_NAME and base != "visual":
        m = _RES_SUFFIX.match(base)  # table entries such as "B02_10m" or "SCL-20m"
        res = int(m["res"]) if m else None
    return band, res, jp2


def _band_of_eo(asset: Mapping[str, Any]) -> str | None:
    """The canonical band of a single-band asset named by ``eo:bands``/``bands``, if any."""
    for field in ("eo:bands", "bands"):
        bands = asset.get(field)
        if isinstance(bands, list) and len(bands) == 1 and isinstance(bands[0], Mapping):
            name = bands[0].get("name") or bands[0].get("eo:common_name")
            if isinstance(name, str) and name in BAND_BY_NAME:
                return name
    return None


def _fill_grid(
    asset: dict[str, Any], props: Mapping[str, Any], ident: Any, band: str, *, required: bool
) -> None:
    shape = asset.get("proj:shape", props.get("proj:shape"))
    transform = asset.get("proj:transform", props.get("proj:transform"))
    bbox = asset.get("proj:bbox", props.get("proj:bbox"))
    if transform is None and shape is not None and bbox is not None and len(bbox) == 4:
        rows, cols = shape
        x0, y0, x1, y1 = bbox
        transform = [(x1 - x0) / cols, 0.0, x0, 0.0, -(y1 - y0) / rows, y1]
    if (shape is None or transform is None) and not required:
        return
    if shape is None or transform is None:
        raise InvalidItemError(
            f"Asset {band!r} (provider key {asset.get('lames:source_key')!r}) of item {ident!r} "
            f"has no pixel grid: proj:shape={shape!r}, proj:transform={transform!r}, at asset "
            "and item level. Expected proj:shape [rows, cols] and a 6-element proj:transform "
            "(projection extension). Fix: add them to the item, or use a provider that "
            "publishes them (Earth Search, Planetary Computer)."
        )
    if len(shape) != 2:
        raise InvalidItemError(
            f"proj:shape of asset {band!r} of item {ident!r} is {shape!r}; expected [rows, cols]. "
            "Fix the item metadata."
        )
    transform = list(transform)
    if len(transform) == 9:
        if [float(v) for v in transform[6:]] != [0.0, 0.0, 1.0]:
            raise InvalidItemError(
                f"proj:transform of asset {band!r} of item {ident!r} is {transform!r}: a 3×3 "
                "matrix whose last row is not (0, 0, 1), so not affine. Fix the item metadata."
            )
        transform = transform[:6]
    if len(transform) != 6:
        raise InvalidItemError(
            f"proj:transform of asset {band!r} of item {ident!r} has {len(transform)} "
            f"elements ({transform!r}); expected 6 (a, b, c, d, e, f) or 9 (3×3 with 0, 0, 1)."
        )
    asset["proj:shape"] = [int(v) for v in shape]
    asset["proj:transform"] = transform


# --------------------------------------------------------------------------------------------
# single fields
# --------------------------------------------------------------------------------------------


def _crs_of(fields: Mapping[str, Any]) -> str | None:
    """``"EPSG:n"`` (or another authority code) from proj:code, proj:epsg, proj:wkt2/projjson."""
    code = fields.get("proj:code")
    if isinstance(code, str) and code.strip():
        auth, _, num = code.strip().partition(":")
        return f"{auth.upper()}:{num}" if auth.lower() == "epsg" else code.strip()
    epsg = fields.get("proj:epsg")
    if epsg is not None and str(epsg).strip().isdigit():
        return f"EPSG:{int(epsg)}"
    for field in ("proj:wkt2", "proj:projjson"):
        if fields.get(field):
            found = CRS.from_user_input(fields[field]).to_epsg()
            if found:
                return f"EPSG:{found}"
    return None


def _check_crs_conflict(fields: Mapping[str, Any], where: str) -> None:
    epsg, code = fields.get("proj:epsg"), fields.get("proj:code")
    if epsg is not None and code and _crs_of({"proj:epsg": epsg}) != _crs_of({"proj:code": code}):
        raise InvalidItemError(
            f"The {where} has proj:epsg={epsg!r} and proj:code={code!r}, which disagree. "
            "Expected one CRS; fix the item metadata (keep the correct one)."
        )


def _item_crs(d: Mapping[str, Any]) -> str:
    props = d["properties"]
    crs = _crs_of(props)
    if crs:
        return crs
    found = {c for a in d.get("assets", {}).values() if (c := _crs_of(a))}
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        raise InvalidItemError(
            f"Item {d.get('id')!r} has no item-level CRS and its assets disagree: "
            f"{sorted(found)}. A Sentinel-2 tile has one CRS; fix the item metadata."
        )
    raise InvalidItemError(
        f"Item {d.get('id')!r} has no CRS: no proj:code, proj:epsg, proj:wkt2 or proj:projjson "
        "in its properties or assets. Expected e.g. proj:code 'EPSG:32719' (projection "
        "extension). Fix: add it, or use a provider that publishes it."
    )


def _baseline(props: Mapping[str, Any], ident: Any) -> str | None:
    value = props.get("s2:processing_baseline")
    if value is None:
        value = props.get("sentinel:processing_baseline")
    if value is None:  # the product name says it too: ..._N0214_... / GS2A_..._N02.14
        for key in ("s2:product_uri", "sentinel:product_id", "s2:datatake_id"):
            m = _BASELINE_IN_NAME.search(str(props.get(key) or ""))
            if m:
                return f"{m[1]}.{m[2]}"
        return None
    text = str(value).strip()
    if not _BASELINE_TEXT.match(text):
        raise InvalidItemError(
            f"Item {ident!r} has processing baseline {value!r}; expected a number such as "
            "'04.00'. Fix the item's s2:processing_baseline."
        )
    return f"{float(text):05.2f}"


def _mgrs_tile(props: Mapping[str, Any], ident: Any, crs: str) -> str | None:
    tile = props.get("s2:mgrs_tile")
    # grid:code first: it names the tile even where it refines the 100 km square of the
    # mgrs:* parts (synthetic worlds: grid:code MGRS-19JDL5665, mgrs:grid_square DL).
    grid = str(props.get("grid:code") or "")
    if not tile and grid.upper().startswith("MGRS-"):
        tile = grid[5:]
    if not tile and props.get("mgrs:latitude_band") and props.get("mgrs:grid_square"):
        zone = props.get("mgrs:utm_zone") or _zone_of_crs(crs)
        tile = f"{zone}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}" if zone else None
    if not tile and props.get("sentinel:latitude_band") and props.get("sentinel:grid_square"):
        zone = props.get("sentinel:utm_zone") or _zone_of_crs(crs)
        tile = (
            f"{zone}{props['sentinel:latitude_band']}{props['sentinel:grid_square']}"
            if zone
            else None
        )
    if not tile:
        for text in (
            str(ident or ""),
            str(props.get("s2:product_uri") or ""),
            str(props.get("sentinel:product_id") or ""),
        ):
            m = _TILE_IN_ID.search(text) or _ES_TILE_IN_ID.match(text)
            if m:
                tile = m[1]
                break
    if not tile:
        return None
    tile = str(tile).strip().upper()
    m = re.match(r"^(\d{1,2})([A-Z]{3}\d*)$", tile)
    if m:
        tile = f"{int(m[1]):02d}{m[2]}"
    if not _MGRS.match(tile):
        raise InvalidItemError(
            f"Item {ident!r} has MGRS tile {tile!r}; expected a zone, a latitude band and a "
            "100 km square such as '24MUV'. Fix the item's tile metadata."
        )
    return tile


def _zone_of_crs(crs: str) -> int | None:
    """UTM zone of a WGS 84 / UTM code: EPSG:32601..32660 (north), 32701..32760 (south)."""
    m = re.match(r"^EPSG:(32[67])(\d{2})$", crs)
    return int(m[2]) if m and 1 <= int(m[2]) <= 60 else None


def _platform(props: Mapping[str, Any], ident: Any) -> str:
    platform = props.get("platform")
    if platform:
        return str(platform).strip().lower().replace(" ", "-")
    m = _PLATFORM_IN_ID.match(str(ident or ""))
    if m:
        return f"sentinel-2{m[1].lower()}"
    raise InvalidItemError(
        f"Item {ident!r} has no platform and its id does not name one; expected e.g. "
        "platform 'sentinel-2a'. Fix the item metadata."
    )


def _cloud_cover(props: Mapping[str, Any], ident: Any) -> float | None:
    if props.get("sentinel:valid_cloud_cover") is False:
        return None
    value = props.get("eo:cloud_cover")
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidItemError(
            f"Item {ident!r} has eo:cloud_cover {value!r}; expected a percentage 0..100. Fix "
            "the item metadata (or drop eo:cloud_cover)."
        ) from None
    return value if math.isfinite(value) else None


def _offset_applied(props: Mapping[str, Any]) -> bool:
    return bool(
        props.get("earthsearch:boa_offset_applied") or props.get("sentinel:boa_offset_applied")
    )


def _dn_offset(
    props: Mapping[str, Any], assets: Mapping[str, Mapping[str, Any]], baseline: str | None
) -> tuple[int, str]:
    if baseline is not None:
        return (0 if _offset_applied(props) else baseline_dn_offset(baseline)), "baseline"
    declared = [_raster_dn_offset(a) for name, a in assets.items() if name in _REFLECTANCE]
    votes = Counter(o for o in declared if o is not None)
    if votes:
        offset = max(votes, key=lambda o: (votes[o], o))
        return (0 if _offset_applied(props) else offset), "raster:bands"
    if isinstance(props.get("lames:dn_offset"), int):  # already in normal form
        return props["lames:dn_offset"], str(props.get("lames:dn_offset_source") or "default")
    return 0, "default"


def _raster_dn_offset(asset: Mapping[str, Any]) -> int | None:
    """The DN offset an asset's raster metadata declares (−0.1 at scale 1e-4 → 1000)."""
    pairs = []
    bands = asset.get("raster:bands")
    if isinstance(bands, list) and bands and isinstance(bands[0], Mapping):
        pairs.append((bands[0].get("offset"), bands[0].get("scale")))
    pairs.append((asset.get("raster:offset"), asset.get("raster:scale")))  # STAC 1.1
    bands = asset.get("bands")
    if isinstance(bands, list) and bands and isinstance(bands[0], Mapping):
        pairs.append((bands[0].get("raster:offset"), bands[0].get("raster:scale")))
    for offset, scale in pairs:
        if offset is None:
            continue
        scale = float(scale) if scale else 1e-4
        return round(-float(offset) / scale)
    return None


def _detect_provider(d: Mapping[str, Any]) -> str:
    """The provider whose layout an item follows (see :data:`PROVIDERS`).

    Decided from what a local mirror keeps of an item: its collection id, property names and
    values, asset keys and id pattern. Hrefs and links, which a mirror rewrites, only count as
    a last resort. In order:

    1. ``lames:provider`` of an item already in normal form;
    2. Earth Search v0: collection ``sentinel-s2-l2a-cogs``/``sentinel-s2-l2a`` or
       ``sentinel:*`` properties;
    3. Earth Search v1 (``sentinel-2-l2a`` and ``sentinel-2-c1-l2a``): collection
       ``sentinel-2-c1-l2a``, ``earthsearch:*`` properties, an Earth Search id
       (``S2B_24MUV_20250731_0_L2A``, ``S2B_T24MUV_20250731T130245_L2A``), or ``mgrs:*``/
       ``grid:code`` properties with common-name asset keys (``red``, ``nir``, ``scl``);
    4. CDSE: per-resolution asset keys (``B04_10m``), ``s3://eodata/`` hrefs, or a product
       name as id without ``.SAFE`` (``S2C_MSIL2A_…_N0511_R122_T33UWP_…``);
    5. Planetary Computer: its id (``S2B_MSIL2A_<sensing>_R096_T19HCC_<generation>``, or the
       2021 ``…_N0212_…_<generation>.SAFE``), or ``s2:mgrs_tile`` with ``sat:relative_orbit``, or its
       spelling of the platform (``Sentinel-2A``, constellation ``Sentinel 2``);
    6. hrefs naming a provider's host; else ``"unknown"``.
    """
    props = d.get("properties") or {}
    known = props.get("lames:provider")
    if known in PROVIDERS and known != "unknown":
        return str(known)
    collection = str(d.get("collection") or "").lower()
    ident = str(d.get("id") or "")
    keys = {str(k) for k in d.get("assets", {})}
    bases = {k.removesuffix(_JP2_SUFFIX) for k in keys}
    hrefs = " ".join(
        [str(link.get("href", "")) for link in d.get("links", [])]
        + [str(a.get("href", "")) for a in d.get("assets", {}).values()]
    ).lower()
    if collection in ("sentinel-s2-l2a-cogs", "sentinel-s2-l2a") or any(
        k.startswith("sentinel:") for k in props
    ):
        return "earth-search-v0"
    mgrs_fields = "grid:code" in props or "mgrs:grid_square" in props
    if (
        collection == "sentinel-2-c1-l2a"
        or any(k.startswith("earthsearch:") for k in props)
        or _ID_EARTH_SEARCH.match(ident)
        or _ID_EARTH_SEARCH_C1.match(ident)
        or (mgrs_fields and bases & _EARTH_SEARCH_KEYS)
    ):
        return "earth-search-v1"
    if (
        {"B02_10m", "B04_10m", "SCL_20m"} & keys
        or "s3://eodata/" in hrefs
        or "dataspace.copernicus.eu" in hrefs
        or _ID_CDSE.match(ident)
    ):
        return "cdse"
    platform = str(props.get("platform") or "")
    if (
        _ID_PLANETARY.match(ident)
        or ("s2:mgrs_tile" in props and "sat:relative_orbit" in props)
        or re.fullmatch(r"Sentinel-2[A-D]", platform)
        or props.get("constellation") == "Sentinel 2"
    ):
        return "planetary-computer"
    if "earth-search.aws.element84.com/v0" in hrefs:
        return "earth-search-v0"
    if "earth-search.aws.element84.com/v1" in hrefs:
        return "earth-search-v1"
    if "planetarycomputer.microsoft.com" in hrefs or ".blob.core.windows.net" in hrefs:
        return "planetary-computer"
    if bases & _EARTH_SEARCH_KEYS:
        return "earth-search-v1"
    return "unknown"


def _solar_day(d: Mapping[str, Any]) -> str:
    when = _item_datetime(d["properties"], ident=d.get("id"))
    lon = _centroid_lon(d)
    return (when + timedelta(hours=lon / 15.0)).date().isoformat()


#: Timestamp properties other than ``datetime`` (which pystac parses) written as ``...Z``.
_TIMESTAMPS = ("created", "updated", "start_datetime", "end_datetime")


def _utc_z(value: str) -> str:
    """``value`` as ISO 8601 UTC ending in ``Z`` (unchanged if it cannot be read as a time)."""
    try:
        when = str_to_datetime(value)
    except (ValueError, TypeError):
        return value
    if when.tzinfo is None:
        return value
    return datetime_to_str(when.astimezone(UTC))


def _item_datetime(props: Mapping[str, Any], ident: Any = None) -> datetime:
    value = props.get("datetime")
    if value is None and props.get("start_datetime") and props.get("end_datetime"):
        start = str_to_datetime(props["start_datetime"])
        return start + (str_to_datetime(props["end_datetime"]) - start) / 2
    if value is None:
        raise InvalidItemError(
            f"Item {ident!r} has no datetime (nor start_datetime/end_datetime); expected an "
            "ISO 8601 UTC time such as '2025-07-31T13:03:27Z'. Fix the item metadata."
        )
    return value if isinstance(value, datetime) else str_to_datetime(str(value))


def _centroid_lon(d: Mapping[str, Any]) -> float:
    geometry = d.get("geometry")
    if geometry:
        shape = _unwrap_antimeridian({0: shapely.geometry.shape(geometry)})[0]
        lon = shape.centroid.x
        return (lon + 180.0) % 360.0 - 180.0
    bbox = d.get("bbox")
    if bbox and len(bbox) >= 4:
        west, east = bbox[0], bbox[len(bbox) // 2]
        if east < west:  # crosses the antimeridian
            east += 360.0
        return ((west + east) / 2 + 180.0) % 360.0 - 180.0
    centroid = (d.get("properties") or {}).get("proj:centroid")
    if isinstance(centroid, Mapping) and "lon" in centroid:
        return float(centroid["lon"])
    raise InvalidItemError(
        f"Item {d.get('id')!r} has no geometry, bbox or proj:centroid, so its solar day is "
        "unknown. Expected a GeoJSON footprint in longitude/latitude; add it to the item."
    )


# --------------------------------------------------------------------------------------------
# helpers for dedupe/drop_covered
# --------------------------------------------------------------------------------------------


def _require_normal(item: Any, caller: str) -> None:
    if not isinstance(item, pystac.Item) or "lames:solar_day" not in item.properties:
        ident = getattr(item, "id", None) or (item.get("id") if isinstance(item, Mapping) else None)
        raise InvalidItemError(
            f"{caller} expects normalised pystac Items, but item {ident!r} "
            f"({type(item).__name__}) has no 'lames:solar_day'. Fix: pass the items through "
            "lames_cube.items.normalize_items() first."
        )


def _preference_key(item: pystac.Item, rank: Mapping[str, int]) -> tuple:
    """Smaller is better (see dedupe_items)."""
    p = item.properties
    baseline = p.get("s2:processing_baseline")
    return (
        rank.get(item.collection_id or "", len(rank)),
        -float(baseline) if baseline else math.inf,
        _neg_time(_generation_time(p)),
        _neg_time(p.get("updated")),
        -_sequence(item),
        item.id,
    )


def _generation_time(props: Mapping[str, Any]) -> str | None:
    if props.get("s2:generation_time"):
        return str(props["s2:generation_time"])
    for key in ("s2:product_uri", "sentinel:product_id"):
        m = _GENERATION_IN_NAME.search(str(props.get(key) or ""))
        if m:
            return datetime.strptime(m[1], "%Y%m%dT%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def _neg_time(value: Any) -> float:
    if not value:
        return math.inf
    try:
        return -str_to_datetime(str(value)).timestamp()
    except ValueError:
        return math.inf


def _sequence(item: pystac.Item) -> int:
    for key in ("s2:sequence", "sentinel:sequence"):
        value = item.properties.get(key)
        if value is not None and str(value).isdigit():
            return int(value)
    m = _SEQUENCE_IN_ID.search(item.id)
    return int(m[1]) if m else 0


def _footprint(item: pystac.Item) -> Any:
    if not item.geometry:
        return None

    shape = shapely.geometry.shape(item.geometry)
    if not shape.is_valid:
        shape = shape.buffer(0)
    return None if shape.is_empty else shape


def _unwrap_antimeridian(shapes: dict[Any, Any]) -> dict[Any, Any]:
    """Shift western longitudes by +360° when the shapes straddle the antimeridian."""

    present = [s for s in shapes.values() if s is not None]
    if not present:
        return shapes
    west = min(s.bounds[0] for s in present)
    east = max(s.bounds[2] for s in present)
    if east - west <= 180:
        return shapes

    def shift(coords: Any) -> Any:
        coords = coords.copy()
        coords[:, 0] = [x + 360.0 if x < 0 else x for x in coords[:, 0]]
        return coords

    return {k: (shapely.transform(s, shift) if s is not None else None) for k, s in shapes.items()}


# --------------------------------------------------------------------------------------------
# input plumbing
# --------------------------------------------------------------------------------------------


def _iter_items(items: Any) -> Iterable[pystac.Item | Mapping[str, Any]]:
    if isinstance(items, pystac.ItemCollection):
        return list(items)
    if isinstance(items, pystac.Item):
        return [items]
    if isinstance(items, Mapping):
        if items.get("type") == "FeatureCollection":
            return list(items.get("features", []))
        if items.get("type") == "Feature":
            return [items]
        raise InvalidItemError(
            f"Expected a STAC FeatureCollection or Item dict, got a dict of type "
            f"{items.get('type')!r}; pass a FeatureCollection, an Item or a list of Items."
        )
    if isinstance(items, (str, bytes)):
        raise InvalidItemError(
            "normalize_items expects items, not a string; read the file first, e.g. "
            "pystac.ItemCollection.from_file(path)."
        )
    return list(items)


def _self_href(d: Mapping[str, Any]) -> str | None:
    for link in d.get("links", []):
        if link.get("rel") == "self" and link.get("href") and not _is_relative(link["href"]):
            return str(link["href"])
    return None


def _is_relative(href: str) -> bool:
    return "://" not in href and not href.startswith("/")
