"""Guard: ``sample_background`` with exclusion polygons whose edges lie exactly on pixel edges,
against a brute-force enumeration of every window position.

The documented rule (``sample_background``'s docstring and ``background_index``): a window is
eligible when it holds no mine pixel and touches no excluded polygon, boundary included ("a
window whose box only grazes a polygon's edge is never kept"); the polygon test is
conservative "by at most 1.5 px" (the polygons are grown by 1.5 px before the pixel test).
So, with edges on pixel edges:

- a window overlapping a polygon, or sharing an edge or a corner with it, is never eligible;
- a window 1.5 px or more from every polygon (and without mine pixels) is always eligible;
- windows in between (10 m or 14.1 m away here) may go either way;
- mine pixels have no margin: a window is eligible iff it holds none of them (windows right
  next to a mine pixel are eligible).

All eligible windows are drawn by asking for ``n = available`` of them.
"""

from __future__ import annotations

import math

import geopandas as gpd
import shapely
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from lames_cube.sampling import sample_background

X0, Y0, RES = 300_000, 7_000_000, 10
H, W, S = 44, 48, 8


def _box(gbox, r0, r1, c0, c1):
    """The polygon over pixel rows r0..r1-1 and columns c0..c1-1 (edges on pixel edges)."""
    a = gbox.affine
    return shapely.box(a.c + c0 * RES, a.f - r1 * RES, a.c + c1 * RES, a.f - r0 * RES)


def _distance_px(r, c, r0, r1, c0, c1):
    """Distance in pixels between the closed boxes [r, r+S] x [c, c+S] and [r0, r1] x [c0, c1]."""
    dy = max(r0 - (r + S), r - r1, 0)
    dx = max(c0 - (c + S), c - c1, 0)
    return math.hypot(dx, dy)


def test_exclusion_polygons_on_pixel_edges_against_brute_force():
    g = GeoBox.from_bbox((X0, Y0, X0 + W * RES, Y0 + H * RES), "EPSG:32719", resolution=RES)
    labels = xr_zeros(g, dtype="uint8")
    mines = [(30, 33, 5, 7)]                      # rows 30-32, cols 5-6: mine pixels
    for r0, r1, c0, c1 in mines:
        labels[r0:r1, c0:c1] = 1
    polys = [(10, 16, 12, 17), (3, 5, 36, 44)]    # pixel-aligned exclusion boxes
    exclude = gpd.GeoDataFrame(geometry=[_box(g, *p) for p in polys], crs="EPSG:32719")

    first = sample_background(labels, 1, size=S, exclude=exclude, seed=0)
    available = int(first.attrs["available"])
    table = sample_background(labels, available, size=S, exclude=exclude, seed=0)
    got = set(zip(table.row.tolist(), table.col.tolist(), strict=True))
    assert len(got) == available == len(table)

    must, may, must_not = set(), set(), set()
    for r in range(H - S + 1):
        for c in range(W - S + 1):
            holds_mine = any(r < r1 and r + S > r0 and c < c1 and c + S > c0
                             for r0, r1, c0, c1 in mines)
            d = min(_distance_px(r, c, *p) for p in polys)
            if holds_mine or d == 0:      # overlapping, or sharing an edge or a corner
                must_not.add((r, c))
            elif d >= 1.5:
                must.add((r, c))
            else:
                may.add((r, c))
    # preconditions: the layout has windows of every kind, grazing ones included
    grazing = {(r, c) for r in range(H - S + 1) for c in range(W - S + 1)
               if min(_distance_px(r, c, *p) for p in polys) == 0
               and not any(r < r1 and r + S > r0 and c < c1 and c + S > c0
                           for r0, r1, c0, c1 in polys)}
    assert len(grazing) > 20 and len(may) > 20 and len(must) > 300
    next_to_mine = {(r, c) for r, c in must if any(
        ((r + S == r0 or r == r1) and c < c1 and c + S > c0) or
        ((c + S == c0 or c == c1) and r < r1 and r + S > r0) for r0, r1, c0, c1 in mines)}
    assert len(next_to_mine) > 10

    assert not got & must_not, sorted(got & must_not)[:5]        # touching: never drawn
    assert not must - got, sorted(must - got)[:5]                # clear: always eligible
    assert got <= must | may
    # every drawn window checked once more with shapely, in the polygons' own terms
    assert not table.geometry.intersects(exclude.geometry.union_all()).any()
