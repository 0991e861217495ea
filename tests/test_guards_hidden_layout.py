"""Guard: where the open pit and the tailings sit in a hidden mine.

Documented rule (``lames_cube.synthetic.mines.hidden_mine_sectors`` and the module's
``HIDDEN_*`` comment): the footprint is cut into Voronoi cells; "the cell holding the
footprint's most interior point is an open pit (5); the cell farthest from it is tailings (8)".

The footprints are "keyholes": a disc of radius R with a straight arm of width 2a < R
attached, so by construction the most interior point (the centre of the largest inscribed
circle) is the disc's centre C, with no second candidate. The cell containing C must be class
5 and the cell farthest from C (shapely distance from C to the cell) class 8. The library
locates its interior point to a tolerance of sqrt(area) / 200 (< 25 m here), so cells within
25 m of the decisive position are accepted as ties.
"""

from __future__ import annotations

import geopandas as gpd
import shapely
import shapely.affinity

from lames_cube.synthetic.mines import hidden_mine_sectors

CRS = "EPSG:32719"
TOL = 25.0  # m: the library's inscribed-circle tolerance is sqrt(area) / 200 < 25 m here


def _keyhole(cx, cy, radius, arm_len, arm_half, angle_deg):
    disc = shapely.Point(cx, cy).buffer(radius, quad_segs=32)
    arm = shapely.box(0, -arm_half, radius + arm_len, arm_half)
    arm = shapely.affinity.rotate(arm, angle_deg, origin=(0, 0))
    arm = shapely.affinity.translate(arm, cx, cy)
    return shapely.union(disc, arm)


def test_hidden_mines_put_the_pit_at_the_centre_and_tailings_farthest():
    specs = [  # (id, radius, arm length, arm half-width, arm angle); areas 1.7-13 km²
        ("k1", 900, 2500, 150, 0), ("k2", 1500, 3000, 250, 70), ("k3", 2000, 4000, 300, 200),
        ("k4", 750, 3500, 120, 300), ("k5", 1200, 2000, 200, 135), ("k6", 1800, 5000, 350, 20),
    ]
    centres, polys = {}, []
    for k, (fid, radius, length, half, angle) in enumerate(specs):
        cx, cy = 400_000 + 20_000 * k, 7_300_000 + 5_000 * (k % 2)
        centres[f"maus-{fid}"] = shapely.Point(cx, cy)
        polys.append(_keyhole(cx, cy, radius, length, half, angle))
    fp = gpd.GeoDataFrame({"site_id": [s[0] for s in specs]}, geometry=polys,
                          crs=CRS).to_crs(4326)
    checked_far = 0
    for seed in (0, 1, 2):
        cells = hidden_mine_sectors(fp, seed=seed).to_crs(CRS)
        assert set(cells.site_id) == set(centres)
        for site_id, centre in centres.items():
            mine = cells[cells.site_id == site_id]
            assert len(mine) >= 2, site_id  # precondition: every keyhole is cut (area > 4e5 m²)
            d = mine.geometry.distance(centre).to_numpy()
            cls = mine["class"].to_numpy()
            # the pit: a cell holding C (distance 0), or within the tolerance of it
            near = d <= d.min() + TOL
            assert d.min() < 1e-6, site_id
            assert (cls[near] == 5).any(), (seed, site_id, d.round(1), cls)
            # the tailings: the farthest cell from C (ties within the tolerance accepted)
            far = d >= d.max() - TOL
            assert (cls[far] == 8).any(), (seed, site_id, d.round(1), cls)
            checked_far += int(len(mine) >= 3)
    assert checked_far >= 6  # most keyholes have 3+ cells: pit and tailings are not forced apart
