"""STAC metadata of the synthetic world, written as each real provider writes it.

Each style of :data:`lames_cube.synthetic.world.STYLE_COLLECTIONS` copies the items of one real
provider, field by field (checked against the real items in ``../shared/stac`` by
``tests/test_providers.py``):

* ``"earth-search"``: Earth Search v1 ``sentinel-2-l2a`` (Element 84's sentinel2-to-stac). Id
  ``S2B_19JDL5665_20220403_0_L2A``; ``platform`` ``sentinel-2b``, ``constellation``
  ``sentinel-2``; ``proj:epsg``; the tile as ``mgrs:utm_zone``/``mgrs:latitude_band``/
  ``mgrs:grid_square`` and ``grid:code``; asset keys ``blue`` … ``swir22``, ``scl`` with
  ``raster:bands``. From baseline 04.00 on Element 84 removed the +1000 offset from the pixels
  and says so with ``earthsearch:boa_offset_applied: true``, while ``raster:bands`` still
  declares ``offset: -0.1`` (0 before 04.00), exactly as the real items do. Scenes acquired
  before 2025-03-06 carry the layout of sentinel2-to-stac 0.1.1 (``s2:granule_id``,
  ``bits_per_sample``), later ones that of 2025.03.06 (``s2:tile_id``, ``proj:centroid``,
  ``view:azimuth``/``view:incidence_angle``).
* ``"earth-search-c1"``: Earth Search ``sentinel-2-c1-l2a``. Id
  ``S2B_T19JDL5665_20220403T143404_L2A`` (the datastrip's sensing start); the offset is in the
  pixels and declared in ``raster:bands`` (−0.1); no applied-flag; ``storage:*``.
* ``"planetary-computer"``: id ``S2B_MSIL2A_<datatake start>_R096_T19JDL5665_<generation>``;
  ``platform`` ``Sentinel-2B``, ``constellation`` ``Sentinel 2``; ``s2:mgrs_tile``,
  ``sat:relative_orbit``, ``sat:orbit_state``; asset keys ``B02`` … ``B12``, ``SCL``; no
  raster extension (no scale, offset or nodata); ``datetime`` is the datatake's sensing start
  (+24 ms), the same for every tile of the datatake, not the granule's time.

Times of one product (:func:`product_times`): a datatake starts where the pass enters the tile's
8° MGRS latitude band; its datastrip opens 4 s earlier; ESA generates the product 1-3 h after
the datatake start (scenes reprocessed to baseline 05.00: during the 2023-2024 campaign); Earth
Search indexes it 20-90 min after generation. The granule's own time is :attr:`Scene.datetime`.

No item says that it is synthetic: only the collection carries ``lames:world``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import TYPE_CHECKING, Any, NamedTuple

from lames_cube.bands import BAND_BY_NAME
from lames_cube.errors import WorldError
from lames_cube.synthetic.acquisitions import DRIFT, cross_track_km, passes, published_baseline

if TYPE_CHECKING:  # type hints only: the world imports this module through lazy
    from lames_cube.synthetic.world import Scene, World

_EXT = "https://stac-extensions.github.io/{}/schema.json"
#: ``stac_extensions`` of each item layout, as the real items list them.
EXTENSIONS: dict[str, list[str]] = {
    "earth-search-0.1.1": [_EXT.format(e) for e in (
        "processing/v1.1.0", "grid/v1.0.0", "raster/v1.1.0", "view/v1.0.0", "projection/v1.1.0",
        "mgrs/v1.0.0", "eo/v1.1.0")],
    "earth-search-2025.03.06": [_EXT.format(e) for e in (
        "view/v1.0.0", "projection/v1.1.0", "grid/v1.1.0", "sentinel-2/v1.0.0", "eo/v1.1.0",
        "processing/v1.1.0", "mgrs/v1.0.0", "raster/v1.1.0")],
    "earth-search-c1": [_EXT.format(e) for e in (
        "eo/v1.1.0", "file/v2.1.0", "grid/v1.1.0", "mgrs/v1.0.0", "processing/v1.1.0", "projection/v1.1.0",
        "raster/v1.1.0", "sentinel-2/v1.0.0", "storage/v1.0.0", "view/v1.0.0")],
    "planetary-computer": [_EXT.format(e) for e in ("eo/v1.0.0", "sat/v1.0.0", "projection/v1.1.0")],
}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Scenes acquired from this day on are indexed by sentinel2-to-stac 2025.03.06 (new layout).
ES_LAYOUT_2025 = dt.date(2025, 3, 6)
#: Collection-1 reprocessing campaign (baseline 05.00): generation times fall in it.
REPROCESSING_START = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
REPROCESSING_DAYS = 540
#: Sentinel-2 orbit height (km), for viewing angles.
ORBIT_KM = 786.0

#: Band → (full width at half maximum, Earth Search title, Planetary Computer description,
#: Earth Search description of the 0.1.1 layout).
_BAND_TEXT = {
    "B02": (0.098, "Blue - 10m", "Band 2 - Blue", "Blue (band 2)"),
    "B03": (0.045, "Green - 10m", "Band 3 - Green", "Green (band 3)"),
    "B04": (0.038, "Red - 10m", "Band 4 - Red", "Red (band 4)"),
    "B08": (0.145, "NIR 1 - 10m", "Band 8 - NIR", "NIR 1 (band 8)"),
    "B11": (0.143, "SWIR 1.6μm - 20m", "Band 11 - SWIR (1.6)", "SWIR 1 (band 11)"),
    "B12": (0.242, "SWIR 2.2μm - 20m", "Band 12 - SWIR (2.2)", "SWIR 2 (band 12)"),
}
#: SCL titles; "classfication" is Planetary Computer's own spelling.
_SCL_TITLE = {"earth-search": "Scene classification map (SCL)",
              "planetary-computer": "Scene classfication map (SCL)"}
#: SCL class → the ``s2:*_percentage`` property of its share of the valid pixels.
SCL_PERCENTAGES = {
    1: "s2:saturated_defective_pixel_percentage", 2: "s2:dark_features_percentage",
    3: "s2:cloud_shadow_percentage", 4: "s2:vegetation_percentage",
    5: "s2:not_vegetated_percentage", 6: "s2:water_percentage",
    7: "s2:unclassified_percentage", 8: "s2:medium_proba_clouds_percentage",
    9: "s2:high_proba_clouds_percentage", 10: "s2:thin_cirrus_percentage",
    11: "s2:snow_ice_percentage",
}
_MGRS_BANDS = "CDEFGHJKLMNPQRSTUVWX"


class ProductTimes(NamedTuple):
    """When one scene's product was sensed, generated and indexed (UTC)."""

    datatake: dt.datetime  #: datatake sensing start (whole seconds)
    datastrip: dt.datetime  #: datastrip sensing start (whole seconds)
    generation: dt.datetime  #: product generation (whole seconds)
    created: dt.datetime  #: Earth Search's ``created``/``updated`` (milliseconds)


def asset_key(band: str, style: str) -> str:
    """The provider's asset key of a canonical band (``red`` or ``B04``).

    Examples
    --------
    >>> asset_key("B08", "earth-search-c1"), asset_key("B08", "planetary-computer")
    ('nir', 'B08')
    """
    return BAND_BY_NAME[band].earth_search if style.startswith("earth-search") else band


def _unit(*keys: Any) -> float:
    """A deterministic uniform number in [0, 1) for ``keys``."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _iso(when: dt.datetime, digits: int = 6) -> str:
    """``2025-07-31T13:03:27.058000Z`` (``digits`` decimals of the second)."""
    text = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[: len(text) - 6 + digits] + "Z"


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S")


def _band_north(letter: str) -> float:
    """Northern edge (°) of an MGRS latitude band (X reaches 84° N)."""
    index = _MGRS_BANDS.find(letter.upper())
    if index < 0:
        raise WorldError(f"MGRS latitude band {letter!r} is not one of {_MGRS_BANDS!r}; name "
                         "tiles with lames_cube.synthetic.mgrs.tile_id.")
    return 84.0 if letter.upper() == "X" else -72.0 + 8.0 * index


def product_times(world: World, scene: Scene) -> ProductTimes:
    """Sensing, generation and indexing times of a scene's product.

    Parameters
    ----------
    world, scene
        The scene (one of ``world.scenes``).

    Returns
    -------
    ProductTimes
        The datatake starts when the pass crosses the northern edge of the tile's MGRS
        latitude band (so every tile of that band and pass shares it); the datastrip opens
        4 s before; the product is generated 1-3 h after the datatake start, or during the
        2023-2024 Collection-1 campaign when the scene's baseline is not the one ESA used on
        its date (reprocessed); Earth Search indexes it 20-90 min after generation.

    Raises
    ------
    WorldError
        The scene's platform does not fly its orbit on its date.
    """
    north = _band_north(scene.tile.tile_id[2])
    flown = [p for p in passes(scene.orbit, north, scene.date - dt.timedelta(days=1), scene.date)
             if p.platform == scene.platform and p.when <= scene.datetime]
    if not flown:
        raise WorldError(
            f"Scene {scene.id} (orbit {scene.orbit}, {scene.platform}, {scene.datetime}) has no "
            f"pass over latitude {north}° before it; the scene is not one of the world's scenes."
        )
    datatake = max(flown, key=lambda p: p.when).when.replace(microsecond=0)
    seed = world.spec.seed
    u = _unit(seed, scene.id, scene.orbit, "generation")
    if scene.baseline != published_baseline(scene.date):  # reprocessed (Collection 1)
        campaign = REPROCESSING_START + dt.timedelta(seconds=int(u * REPROCESSING_DAYS * 86400))
        generation = max(campaign, datatake + dt.timedelta(hours=1))
    else:
        generation = datatake + dt.timedelta(seconds=int(3600 + 7200 * u))
    minutes = 20 + 70 * _unit(seed, scene.id, scene.orbit, "created")
    created = generation + dt.timedelta(milliseconds=int(minutes * 60_000))
    return ProductTimes(datatake, datatake - dt.timedelta(seconds=4), generation, created)


def item_datetime(world: World, scene: Scene) -> dt.datetime:
    """The item's ``datetime``: the granule's sensing time (Earth Search), or the datatake
    start + 24 ms shared by the tiles of a pass (Planetary Computer)."""
    if world.spec.style == "planetary-computer":
        return product_times(world, scene).datatake + dt.timedelta(milliseconds=24)
    return scene.datetime


def served_offset(world: World, scene: Scene) -> int:
    """The digital-number offset in the pixels the style serves: Earth Search's
    ``sentinel-2-l2a`` removed it (``earthsearch:boa_offset_applied``), the others keep it."""
    return 0 if world.spec.style == "earth-search" else scene.dn_offset


def item_id(world: World, scene: Scene) -> str:
    """The item id the world's style gives a scene.

    Earth Search: ``S2B_19HCC_20230103_0_L2A`` (:attr:`Scene.id`); Earth Search Collection 1:
    ``S2B_T19HCC_20230103T143725_L2A`` (datastrip sensing start); Planetary Computer:
    ``S2B_MSIL2A_20230103T143729_R096_T19HCC_20230103T163012`` (:func:`pc_id`).
    """
    style = world.spec.style
    if style == "earth-search":
        return scene.id
    if style == "earth-search-c1":
        datastrip = product_times(world, scene).datastrip
        return f"{scene.short_platform}_T{scene.tile.tile_id}_{_stamp(datastrip)}_L2A"
    return pc_id(world, scene)


def pc_id(world: World, scene: Scene) -> str:
    """Planetary Computer style id: ``S2A_MSIL2A_<sensing>_R<orbit>_T<tile>_<generation>``."""
    times = product_times(world, scene)
    return (f"{scene.short_platform}_MSIL2A_{_stamp(times.datatake)}_R{scene.orbit:03d}"
            f"_T{scene.tile.tile_id}_{_stamp(times.generation)}")


def _rounded(coords):
    if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float)):
        return [round(float(c), 7) for c in coords]
    return [_rounded(c) for c in coords]


def _number(value: float) -> int | float:
    """JSON as Earth Search writes grid numbers: integers without ``.0``."""
    value = float(value)
    return int(value) if value.is_integer() else value


def _reflectance_conversion(day: dt.date) -> float:
    """Sun-Earth distance factor 1/d² of ``day`` (d in astronomical units)."""
    doy = day.timetuple().tm_yday
    return 1.0 / (1.0 - 0.01672 * math.cos(2.0 * math.pi * (doy - 4) / 365.25)) ** 2


def _viewing(scene: Scene, lon: float, lat: float) -> tuple[float, float]:
    """Viewing azimuth and incidence angle (°) at a point, from its distance to the track."""
    d = cross_track_km(scene.orbit, lon, lat)  # east positive
    tilt = math.degrees(math.atan(DRIFT * math.cos(math.radians(lat))))
    # seen from east of the track the satellite is to the west (and vice versa); the track
    # heads south-south-west, which turns both directions by the tilt
    azimuth = (270.0 if d > 0 else 90.0) + tilt
    return azimuth, math.degrees(math.atan(abs(d) / ORBIT_KM))


def _layout(world: World, scene: Scene) -> str:
    style = world.spec.style
    if style == "earth-search":
        return "earth-search-2025.03.06" if scene.date >= ES_LAYOUT_2025 else "earth-search-0.1.1"
    return style


def _percentages(stats: dict) -> dict[str, float]:
    classes = stats.get("classes", {})
    return {name: round(float(classes.get(value, 0.0)), 6)
            for value, name in SCL_PERCENTAGES.items()}


def _granule_ids(scene: Scene, times: ProductTimes) -> tuple[str, str]:
    """(granule/tile id, datastrip id) as ESA names them."""
    centre = f"2{scene.platform[-1].upper()}PS"  # ESA's processing centre code: 2APS, 2BPS, 2CPS
    gen, base = _stamp(times.generation), f"N{scene.baseline}"
    granule = (f"{scene.short_platform}_OPER_MSI_L2A_TL_{centre}_{gen}_A{scene.absolute_orbit:06d}"
               f"_T{scene.tile.tile_id}_{base}")
    strip = f"{scene.short_platform}_OPER_MSI_L2A_DS_{centre}_{gen}_S{_stamp(times.datastrip)}_{base}"
    return granule, strip


def item_dict(
    world: World,
    scene: Scene,
    stats: dict,
    hrefs: dict[str, str],
    files: dict[str, tuple[int, str]] | None = None,
) -> dict:
    """The STAC item (a plain dict) of one scene, as the world's provider style writes it.

    Parameters
    ----------
    world, scene
        The scene to describe.
    stats
        Measured on its SCL: ``cloud_cover`` (classes 8, 9, 10, % of the valid pixels),
        ``nodata_percentage`` (% of the tile) and ``classes`` (SCL class → % of the valid
        pixels; missing classes count 0).
    hrefs
        Canonical band name → href of the COG.
    files
        Canonical band name → (size in bytes, sha2-256 multihash ``1220…``) of the COG, for
        the ``file:size``/``file:checksum`` fields of the Collection-1 style.

    Returns
    -------
    dict
        A STAC 1.0.0 Item; see the module docstring for what each style writes.
    """
    style = world.spec.style
    layout = _layout(world, scene)
    tile = scene.tile
    times = product_times(world, scene)
    geom = world.footprint(scene).geom
    coords = _rounded(list(map(list, geom.exterior.coords)))
    geometry = {"type": "Polygon", "coordinates": [coords]}
    w, s, e, n = (round(v, 7) for v in geom.bounds)
    lon, lat = geom.centroid.x, geom.centroid.y
    zone, letter, square = tile.tile_id[:2], tile.tile_id[2], tile.tile_id[3:5]
    zenith, azimuth = (math.degrees(a) for a in world.sun(scene.date))
    short = scene.short_platform
    bb = scene.baseline.replace(".", "")
    gen = _stamp(times.generation)
    product_uri = (f"{short}_MSIL2A_{_stamp(times.datatake)}_N{bb}_R{scene.orbit:03d}"
                   f"_T{tile.tile_id}_{gen}.SAFE")
    datatake_id = (f"G{short}_{_stamp(times.datatake)}_{scene.absolute_orbit:06d}"
                   f"_N{scene.baseline}")
    granule_id, datastrip_id = _granule_ids(scene, times)
    percent = _percentages(stats)
    cloud = round(float(stats["cloud_cover"]), 6)
    nodata = round(float(stats["nodata_percentage"]), 6)
    rcf = _reflectance_conversion(scene.date)

    if style == "planetary-computer":
        props: dict = {
            "datetime": _iso(item_datetime(world, scene)),
            "platform": "Sentinel-2" + scene.platform[-1].upper(),
            "proj:epsg": tile.epsg,
            "instruments": ["msi"],
            "s2:mgrs_tile": tile.tile_id,
            "constellation": "Sentinel 2",
            "s2:granule_id": granule_id,
            "eo:cloud_cover": cloud,
            "s2:datatake_id": datatake_id,
            "s2:product_uri": product_uri,
            "s2:datastrip_id": datastrip_id,
            "s2:product_type": "S2MSI2A",
            "sat:orbit_state": "descending",
            "s2:datatake_type": "INS-NOBS",
            "s2:generation_time": _iso(times.generation + dt.timedelta(
                microseconds=int(1e6 * _unit(world.spec.seed, scene.id, "pc-generation")))),
            "sat:relative_orbit": scene.orbit,
            "s2:mean_solar_zenith": zenith,
            "s2:mean_solar_azimuth": azimuth,
            "s2:processing_baseline": scene.baseline,
            "s2:nodata_pixel_percentage": nodata,
            "s2:degraded_msi_data_percentage": 0.0,
            **percent,
            "s2:reflectance_conversion_factor": rcf,
        }
    else:
        new = layout != "earth-search-0.1.1"
        props = {
            "created": _iso(times.created, 3),
            "platform": scene.platform,
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": cloud,
            "proj:epsg": tile.epsg,
        }
        if new:
            props["proj:centroid"] = {"lat": round(lat, 5), "lon": round(lon, 5)}
        props.update({
            "mgrs:utm_zone": int(zone), "mgrs:latitude_band": letter, "mgrs:grid_square": square,
            "grid:code": f"MGRS-{tile.tile_id}",
        })
        if new:
            view_azimuth, incidence = _viewing(scene, lon, lat)
            props.update({"view:azimuth": view_azimuth, "view:incidence_angle": incidence})
        props.update({"view:sun_azimuth": azimuth, "view:sun_elevation": 90.0 - zenith})
        if new:
            props["s2:tile_id"] = granule_id
        props.update({
            "s2:degraded_msi_data_percentage": 0,
            "s2:nodata_pixel_percentage": nodata,
            **{k: v for k, v in percent.items()
               if not (new and k == "s2:dark_features_percentage")},
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": scene.baseline,
            "s2:product_uri": product_uri,
            "s2:generation_time": _iso(times.generation),
            "s2:datatake_id": datatake_id,
            "s2:datatake_type": "INS-NOBS",
            "s2:datastrip_id": datastrip_id,
        })
        if not new:
            props["s2:granule_id"] = granule_id
        props["s2:reflectance_conversion_factor"] = rcf
        props["datetime"] = _iso(item_datetime(world, scene))
        digest = hashlib.md5(f"{world.spec.seed}/{scene.id}/{style}".encode()).hexdigest()
        if style == "earth-search":
            props.update({
                "s2:sequence": "0",
                "earthsearch:s3_path": (
                    f"s3://sentinel-cogs/sentinel-s2-l2a-cogs/{int(zone)}/{letter}/"
                    f"{tile.tile_id[3:]}/{scene.date.year}/{scene.date.month}/{scene.id}"),
                "earthsearch:payload_id": f"roda-sentinel2/workflow-sentinel2-to-stac/{digest}",
                # Element 84 removed the +1000 offset from the pixels of baseline >= 04.00.
                "earthsearch:boa_offset_applied": bool(scene.dn_offset),
                "processing:software": {"sentinel2-to-stac": "2025.03.06" if new else "0.1.1"},
            })
        else:
            props.update({
                "earthsearch:payload_id": (
                    f"roda-sentinel-2-c1-l2a/workflow-sentinel-2-c1-l2a-to-stac/{digest}"),
                "storage:platform": "AWS", "storage:region": "us-west-2",
                "storage:requester_pays": False,
                "processing:software": {"sentinel-2-c1-l2a-to-stac": "v2025.06.17"},
            })
        props["updated"] = props["created"]

    assets = {}
    for band, href in hrefs.items():
        asset = _asset(scene, band, href, style, layout)
        if style == "earth-search-c1" and files and band in files:
            size, checksum = files[band]
            roles = asset.pop("roles")
            asset.update({"file:checksum": checksum, "file:size": int(size), "roles": roles})
        assets[asset_key(band, style)] = asset
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": list(EXTENSIONS[layout]),
        "id": item_id(world, scene),
        "collection": world.spec.collection_id,
        "geometry": geometry,
        "bbox": [w, s, e, n],
        "properties": props,
        "links": [],
        "assets": assets,
    }


def _asset(scene: Scene, band: str, href: str, style: str, layout: str) -> dict:
    """One band asset as the provider writes it."""
    info = BAND_BY_NAME[band]
    res = info.resolution
    gbox = scene.tile.geobox(res)
    a = gbox.affine
    transform = [a.a, a.b, a.c, a.d, a.e, a.f]
    old_layout = layout == "earth-search-0.1.1"
    eo = None
    if not info.categorical:
        fwhm, _, description, old_description = _BAND_TEXT[band]
        # sentinel2-to-stac 0.1.x named eo:bands by their common name ("red")
        eo = {"name": info.common_name if old_layout else band, "common_name": info.common_name}
        if style == "planetary-computer" or old_layout:
            eo["description"] = description if style == "planetary-computer" else old_description
        eo.update({"center_wavelength": info.center_wavelength, "full_width_half_max": fwhm})
    if style == "planetary-computer":
        left, bottom, right, top = gbox.extent.boundingbox
        title = (_SCL_TITLE[style] if info.categorical
                 else f"{_BAND_TEXT[band][2]} - {res}m")
        asset: dict = {
            "href": href,
            "proj:bbox": [float(left), float(bottom), float(right), float(top)],
            "proj:shape": list(gbox.shape),
            "proj:transform": [float(v) for v in transform],
            "gsd": float(res),
            "type": COG_TYPE,
            "roles": ["data"],
            "title": title,
        }
        if eo is not None:
            asset["eo:bands"] = [eo]
        return asset
    raster: dict = {"nodata": 0, "data_type": "uint8" if info.categorical else "uint16"}
    if not info.categorical and old_layout:
        raster["bits_per_sample"] = 15
    raster["spatial_resolution"] = res
    if not info.categorical:
        # The offset the real items declare: -0.1 from baseline 04.00 on, even where Earth
        # Search has already removed it from the pixels (earthsearch:boa_offset_applied).
        raster.update({"scale": 0.0001, "offset": -0.1 if scene.dn_offset else 0})
    if info.categorical:
        title = _SCL_TITLE["earth-search"]
    else:
        title = f"{_BAND_TEXT[band][3]} - {res}m" if old_layout else _BAND_TEXT[band][1]
    asset = {"href": href, "type": COG_TYPE, "title": title}
    if eo is not None:
        asset["eo:bands"] = [eo]
    if not (old_layout and info.categorical):  # 0.1.x gave SCL no gsd ...
        asset["gsd"] = res
    asset.update({
        "proj:shape": list(gbox.shape),
        "proj:transform": [_number(v) for v in transform],
        "raster:bands": [raster],
        # ... and the reflectance role
        "roles": ["data"] if info.categorical and not old_layout else ["data", "reflectance"],
    })
    return asset


def collection_dict(world: World, items: list[dict]) -> dict:
    """The STAC collection (plain dict) holding ``items``."""
    west = min(i["bbox"][0] for i in items)
    south = min(i["bbox"][1] for i in items)
    east = max(i["bbox"][2] for i in items)
    north = max(i["bbox"][3] for i in items)
    times = sorted(i["properties"]["datetime"] for i in items)
    style = world.spec.style
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": world.spec.collection_id,
        "title": "Synthetic Sentinel-2 L2A (lames_cube)",
        "description": (
            f"A deterministic synthetic Sentinel-2 L2A world (seed {world.spec.seed}, "
            f"{style} style) with mines drawn at LAMES sites. Not real imagery."
        ),
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[west, south, east, north]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "summaries": {
            "platform": sorted({i["properties"]["platform"] for i in items}),
            "s2:processing_baseline": sorted(
                {i["properties"]["s2:processing_baseline"] for i in items}),
        },
        "item_assets": {
            asset_key(b, style): {"type": COG_TYPE, "title": b}
            for b in ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")
        },
        "links": [],
        "lames:world": world.spec.to_dict(),
    }
