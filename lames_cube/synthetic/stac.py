"""STAC metadata of the synthetic world, in Earth Search or Planetary Computer style."""

from __future__ import annotations

import datetime as dt

from lames_cube.bands import BAND_BY_NAME
from lames_cube.synthetic.world import Scene, World

PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EO_EXT = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
S2_EXT = "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json"
MGRS_EXT = "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json"
GRID_EXT = "https://stac-extensions.github.io/grid/v1.1.0/schema.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

_FWHM = {"B02": 0.098, "B03": 0.045, "B04": 0.038, "B08": 0.145, "B11": 0.143, "B12": 0.242}


def asset_key(band: str, style: str) -> str:
    """The provider's asset key of a canonical band (``red`` or ``B04``)."""
    return BAND_BY_NAME[band].earth_search if style == "earth-search" else band


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _rounded(coords):
    if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float)):
        return [round(float(c), 7) for c in coords]
    return [_rounded(c) for c in coords]


def item_dict(world: World, scene: Scene, stats: dict, hrefs: dict[str, str]) -> dict:
    """The STAC item (a plain dict) of one scene.

    Parameters
    ----------
    world, scene
        The scene to describe.
    stats
        ``cloud_cover`` and ``nodata_percentage`` measured on its SCL.
    hrefs
        Canonical band name → href of the COG.
    """
    style = world.spec.style
    tile = scene.tile
    geom = world.footprint(scene).geom
    geometry = {"type": "Polygon", "coordinates": _rounded(list(map(list, geom.exterior.coords)))}
    geometry["coordinates"] = [geometry["coordinates"]]
    w, s, e, n = (round(v, 7) for v in geom.bounds)
    zone, band_letter, square = tile.tile_id[:2], tile.tile_id[2], tile.tile_id[3:]
    offset = scene.dn_offset
    props: dict = {
        "datetime": _iso(scene.datetime),
        "platform": scene.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": stats["cloud_cover"],
        "proj:code": f"EPSG:{tile.epsg}",
        "s2:mgrs_tile": tile.tile_id,
        "s2:processing_baseline": scene.baseline,
        "s2:nodata_pixel_percentage": stats["nodata_percentage"],
        "s2:product_type": "S2MSI2A",
        "s2:datatake_id": f"G{scene.id[:3]}_{scene.date:%Y%m%d}T144000_{scene.orbit:06d}_N{scene.baseline}",
        "s2:generation_time": _iso(scene.datetime + dt.timedelta(hours=2)),
        "lames:synthetic": True,
        "lames:seed": world.spec.seed,
    }
    if style == "earth-search":
        props.update({
            "mgrs:utm_zone": int(zone), "mgrs:latitude_band": band_letter,
            "mgrs:grid_square": square, "grid:code": f"MGRS-{tile.tile_id}",
            "earthsearch:boa_offset_applied": False,
        })
    else:
        props["platform"] = "Sentinel-2" + scene.platform[-1].upper()
        props["constellation"] = "Sentinel 2"
    assets = {}
    for band, href in hrefs.items():
        info = BAND_BY_NAME[band]
        res = info.resolution
        gbox = tile.geobox(res)
        a = gbox.affine
        asset: dict = {
            "href": href,
            "type": COG_TYPE,
            "title": f"{band} - {res}m",
            "gsd": res,
            "proj:shape": list(gbox.shape),
            "proj:transform": [a.a, a.b, a.c, a.d, a.e, a.f],
            "roles": ["data"] if info.categorical else ["data", "reflectance"],
        }
        if not info.categorical:
            asset["eo:bands"] = [{"name": band, "common_name": info.common_name,
                                  "center_wavelength": info.center_wavelength,
                                  "full_width_half_max": _FWHM[band]}]
        if style == "earth-search":
            raster = {"nodata": 0, "data_type": "uint8" if info.categorical else "uint16",
                      "spatial_resolution": res}
            if not info.categorical:
                raster.update({"scale": 0.0001, "offset": -offset / 10_000})
            asset["raster:bands"] = [raster]
        assets[asset_key(band, style)] = asset
    ext = [PROJ_EXT, EO_EXT, S2_EXT]
    if style == "earth-search":
        ext += [RASTER_EXT, MGRS_EXT, GRID_EXT]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ext,
        "id": scene.id if style == "earth-search" else pc_id(scene),
        "collection": world.spec.collection,
        "geometry": geometry,
        "bbox": [w, s, e, n],
        "properties": props,
        "links": [],
        "assets": assets,
    }


def pc_id(scene: Scene) -> str:
    """Planetary Computer style id: ``S2A_MSIL2A_<sensing>_R<orbit>_T<tile>_<generation>``."""
    gen = scene.datetime + dt.timedelta(hours=2)
    return (f"{scene.id[:3]}_MSIL2A_{scene.datetime:%Y%m%dT%H%M%S}_R{scene.orbit:03d}"
            f"_T{scene.tile.tile_id}_{gen:%Y%m%dT%H%M%S}")


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
        "id": world.spec.collection,
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
