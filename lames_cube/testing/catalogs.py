"""Metadata-only STAC items for graph benchmarks: a country covered by Sentinel-2-like tiles."""

from __future__ import annotations

import datetime as dt

import shapely
from odc.geo.geom import Geometry

from lames_cube.grid import region_polygon, utm_epsg
from lames_cube.synthetic.mgrs import tile_id

#: Chile's bounding box (degrees, to 0.01°), from the Natural Earth 1:110m outline.
CHILE_BBOX = tuple(round(v, 2) for v in region_polygon("chile").bounds)


def fake_items(
    bbox: tuple[float, float, float, float] = CHILE_BBOX,
    dates: tuple[dt.date, ...] = (dt.date(2022, 1, 10), dt.date(2022, 1, 15)),
    tile_km: int = 100,
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12", "SCL"),
) -> list[dict]:
    """Normalised item dicts on a grid of ``tile_km`` UTM tiles covering ``bbox``, per date.

    The hrefs point nowhere: these items are for building graphs, never for reading pixels.
    """
    w, s, e, n = bbox
    items = []
    for zone_lon in range(int((w + 180) // 6), int((e + 180) // 6) + 1):
        lon0 = max(w, zone_lon * 6 - 180)
        lon1 = min(e, zone_lon * 6 - 174)
        epsg = utm_epsg((lon0 + lon1) / 2, (s + n) / 2)
        local = Geometry(shapely.box(lon0, s, lon1, n), "EPSG:4326").to_crs(epsg).geom
        x0, y0, x1, y1 = local.bounds
        step = tile_km * 1000
        for x in range(int(x0 // step) * step, int(x1) + 1, step):
            for y in range(int(y0 // step) * step, int(y1) + 1, step):
                tile = shapely.box(x, y, x + step + 9800, y + step + 9800)
                if not tile.intersects(local):
                    continue
                geom = Geometry(tile, f"EPSG:{epsg}").to_crs("EPSG:4326").geom
                tid = tile_id(epsg, x, y, geom.centroid.y)
                for date in dates:
                    when = dt.datetime.combine(date, dt.time(14, 40), dt.UTC)
                    assets = {}
                    for band in bands:
                        res = 20 if band in ("B11", "B12", "SCL") else 10
                        size = (step + 9800) // res
                        assets[band] = {
                            "href": f"/nonexistent/{tid}/{date:%Y%m%d}/{band}.tif",
                            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                            "proj:shape": [size, size],
                            "proj:transform": [res, 0, x, 0, -res, y + step + 9800],
                            "roles": ["data"],
                        }
                    items.append({
                        "type": "Feature", "stac_version": "1.0.0",
                        "stac_extensions": [
                            "https://stac-extensions.github.io/projection/v2.0.0/schema.json"],
                        "id": f"S2A_{tid}_{date:%Y%m%d}_0_L2A", "collection": "sentinel-2-l2a",
                        "geometry": shapely.geometry.mapping(geom), "bbox": list(geom.bounds),
                        "properties": {
                            "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "platform": "sentinel-2a", "proj:code": f"EPSG:{epsg}",
                            "s2:mgrs_tile": tid, "s2:processing_baseline": "04.00",
                            "eo:cloud_cover": 10.0, "lames:dn_offset": 1000,
                            "lames:provider": "lames-synthetic", "lames:solar_day": f"{date}",
                        },
                        "links": [], "assets": assets,
                    })
    return items
