"""lames_cube.grid.geodesic_area, the package's one area rule, checked against pyproj directly:
polygons in EPSG:4326, UTM and EPSG:3857, holes, multipolygons, pixel areas of GeoBoxes, and
the callers (annotation repairs, prediction polygons, pixel_area) that use it."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
import shapely.affinity
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from pyproj import Geod, Transformer
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.polygon import orient

from lames_cube.errors import InvalidGridError
from lames_cube.grid import geodesic_area

GEOD = Geod(ellps="WGS84")
CORNERS = ((0, 0), (1, 0), (1, 1), (0, 1))


def _pyproj(geom_lonlat) -> float:
    """pyproj's own geodesic area of a correctly oriented lon/lat geometry (the truth)."""
    return abs(GEOD.geometry_area_perimeter(geom_lonlat)[0])


def _blob(lon: float, lat: float, radius_deg: float, n: int = 40, seed: int = 0) -> Polygon:
    """An irregular star-shaped lon/lat polygon (a few km across), counter-clockwise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = radius_deg * rng.uniform(0.6, 1.0, n)
    return Polygon(np.c_[lon + r * np.cos(t), lat + r * np.sin(t)])


def _in(geom, crs: str):
    """``geom`` (lon/lat) with its vertices taken to ``crs`` by pyproj (no densifying)."""
    t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return shapely.transform(geom, t.transform, interleaved=False)


BLOB = _blob(-69.1, -24.3, 0.02)
HOLE = orient(Polygon(BLOB.exterior, [_blob(-69.1, -24.3, 0.008, seed=1).exterior.coords]))
MULTI = MultiPolygon([BLOB, _blob(-69.0, -24.25, 0.01, seed=2),
                      shapely.affinity.translate(HOLE, -0.1, -0.05).reverse()])


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32719", "EPSG:32718", "EPSG:3857"])
@pytest.mark.parametrize("name,geom", [("polygon", BLOB), ("hole", HOLE)])
def test_a_polygon_in_any_crs_has_pyprojs_geodesic_area(crs, name, geom):
    """The same vertices in lon/lat, UTM 19S, UTM 18S (far from its meridian) or Web Mercator:
    the area pyproj gives the lon/lat polygon, to rounding."""
    truth = _pyproj(geom)
    got = geodesic_area(_in(geom, crs) if crs != "EPSG:4326" else geom, crs)
    assert isinstance(got, float)
    print(f"{name} in {crs}: {got:.3f} m², pyproj {truth:.3f} m², rel {got / truth - 1:.1e}")
    assert got == pytest.approx(truth, rel=1e-12 if crs == "EPSG:4326" else 1e-9)


def test_a_hole_counts_negative_whichever_way_its_ring_is_drawn():
    shell, hole = BLOB.exterior, _blob(-69.1, -24.3, 0.008, seed=1).exterior
    assert shell.is_ccw and hole.is_ccw  # both counter-clockwise: not the orientation pyproj wants
    drawn = Polygon(shell, [hole])
    expected = _pyproj(Polygon(shell)) - _pyproj(Polygon(hole))
    assert _pyproj(orient(drawn)) == pytest.approx(expected, rel=1e-12)
    # pyproj on the ring order as drawn adds the hole instead (what the old helpers did)
    assert _pyproj(drawn) == pytest.approx(_pyproj(Polygon(shell)) + _pyproj(Polygon(hole)))
    for crs in ("EPSG:4326", "EPSG:32719"):
        geom = drawn if crs == "EPSG:4326" else _in(drawn, crs)
        assert geodesic_area(geom, crs) == pytest.approx(expected, rel=1e-9)


def test_a_multipolygon_is_the_sum_of_its_parts():
    parts = list(MULTI.geoms)
    assert parts[0].exterior.is_ccw and not parts[2].exterior.is_ccw  # drawn both ways
    truth = sum(_pyproj(orient(p)) for p in parts)
    for crs in ("EPSG:4326", "EPSG:32719", "EPSG:3857"):
        geom = MULTI if crs == "EPSG:4326" else _in(MULTI, crs)
        assert geodesic_area(geom, crs) == pytest.approx(truth, rel=1e-9)
    # a collection (make_valid's output) counts its polygons only
    coll = shapely.GeometryCollection([MULTI, shapely.LineString([(-69, -24), (-68, -23)]),
                                       shapely.Point(-69, -24)])
    assert geodesic_area(coll, "EPSG:4326") == pytest.approx(truth, rel=1e-12)


def test_inputs_shapes_missing_and_empty():
    utm = _in(BLOB, "EPSG:32719")
    truth = _pyproj(BLOB)
    series = gpd.GeoSeries([utm, None, Polygon(), shapely.LineString([(0, 0), (1, 1)]), utm],
                           crs="EPSG:32719")
    got = geodesic_area(series)
    assert got.shape == (5,) and np.isnan(got[1]) and got[2] == 0 and got[3] == 0
    np.testing.assert_allclose(got[[0, 4]], truth, rtol=1e-9)
    np.testing.assert_array_equal(geodesic_area(series.to_frame("geometry")), got)
    np.testing.assert_array_equal(geodesic_area(series, "EPSG:32719"), got)
    np.testing.assert_allclose(geodesic_area(series.to_crs(3857)), got, rtol=1e-9)
    assert geodesic_area(np.array([[utm, utm]]), 32719).shape == (1, 2)
    assert geodesic_area([], "EPSG:4326").shape == (0,)
    assert np.isnan(geodesic_area([None], "EPSG:4326")).all()
    assert geodesic_area(shapely.Point(0, 0), "EPSG:4326") == 0.0
    with pytest.raises(InvalidGridError, match="no CRS"):
        geodesic_area([utm])
    with pytest.raises(InvalidGridError, match="differs"):
        geodesic_area(series, "EPSG:4326")
    with pytest.raises(InvalidGridError, match="not a CRS pyproj knows"):
        geodesic_area(utm, "EPSG:nonsense")


# ------------------------------------------------------------------------------ pixel areas
def _corners_lonlat(gbox: GeoBox, rows: np.ndarray, cols: np.ndarray):
    t = gbox.transform
    xs = np.stack([t.c + (cols + dx) * t.a + (rows + dy) * t.b for dx, dy in CORNERS], -1)
    ys = np.stack([t.f + (cols + dx) * t.d + (rows + dy) * t.e for dx, dy in CORNERS], -1)
    if gbox.crs.geographic:
        return xs, ys
    return Transformer.from_crs(gbox.crs.to_wkt(), "EPSG:4326", always_xy=True).transform(xs, ys)


ROTATED = GeoBox((40, 40), Affine.translation(480000, 7301000) @ Affine.rotation(20)
                 @ Affine.scale(10, -10), "EPSG:32719")
GRIDS = {
    "3857": GeoBox.from_bbox((-7740000, -3300000, -7739600, -3299600), "EPSG:3857", resolution=10),
    "utm19": GeoBox.from_bbox((480000, 7300000, 480400, 7300400), "EPSG:32719", resolution=10),
    "utm18 edge": GeoBox.from_bbox((780000, 7300000, 780400, 7300400), "EPSG:32718",
                                   resolution=10),
    "4326": GeoBox.from_bbox((-69.2, -24.4, -69.196, -24.396), "EPSG:4326", resolution=0.0001),
    "utm19 100m": GeoBox.from_bbox((480000, 7300000, 484000, 7304000), "EPSG:32719",
                                   resolution=100),
    "rotated": ROTATED,
}


@pytest.mark.parametrize("name", list(GRIDS))
def test_every_pixel_has_pyprojs_geodesic_area(name):
    """Each pixel of 40 x 40 grids against pyproj's area of its 4 corners in lon/lat. pyproj
    itself is only good to ~5e-7 on 10 m pixels with slanted edges (UTM far from its meridian,
    a rotated grid): there the exact equal-area LAEA projection sides with geodesic_area
    (see the next test)."""
    gbox = GRIDS[name]
    area = geodesic_area(gbox)
    assert area.shape == gbox.shape and area.dtype == np.float64
    rr, cc = np.mgrid[0:gbox.shape[0], 0:gbox.shape[1]]
    lon, lat = _corners_lonlat(gbox, rr, cc)
    truth = np.array([abs(GEOD.polygon_area_perimeter(x, y)[0])
                      for x, y in zip(lon.reshape(-1, 4), lat.reshape(-1, 4), strict=True)])
    rel = np.abs(area.ravel() / truth - 1)
    print(f"{name}: pixel {truth.mean():.3f} m², max relative difference vs pyproj {rel.max():.1e}")
    assert rel.max() < 1e-6


@pytest.mark.parametrize("name", ["utm18 edge", "rotated"])
def test_pixel_area_against_an_exact_equal_area_projection(name):
    """Where pyproj is noisiest, a local ellipsoidal Lambert azimuthal equal-area projection
    (exact areas; straight and geodesic 10 m edges differ by far less than 1e-12) agrees with
    geodesic_area to 1e-9."""
    gbox = GRIDS[name]
    area = geodesic_area(gbox)
    for row, col in ((0, 0), (0, 39), (17, 23), (39, 0), (39, 39)):
        lon, lat = _corners_lonlat(gbox, np.array(row), np.array(col))
        laea = Transformer.from_crs("EPSG:4326", f"+proj=laea +lat_0={lat.mean()} "
                                    f"+lon_0={lon.mean()} +ellps=WGS84", always_xy=True)
        exact = Polygon(np.c_[laea.transform(lon, lat)]).area
        assert area[row, col] == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("name", list(GRIDS))
def test_pixels_add_up_to_the_geodesic_area_of_the_footprint(name):
    """The sum over a grid's pixels is the geodesic area of its outline, densified to one
    pixel side so that it follows the grid's (projected) straight edges."""
    gbox = GRIDS[name]
    t = gbox.transform
    ny, nx = gbox.shape
    outline = Polygon([t @ (0, 0), t @ (nx, 0), t @ (nx, ny), t @ (0, ny)])
    side = min(abs(t.a), abs(t.e)) if not (t.b or t.d) else 10.0
    footprint = geodesic_area(shapely.segmentize(outline, side), gbox.crs)
    total = float(geodesic_area(gbox).sum())
    print(f"{name}: pixels {total:.3f} m², footprint {footprint:.3f} m², "
          f"rel {total / footprint - 1:.1e}")
    assert total == pytest.approx(footprint, rel=5e-8)


def test_pixel_area_rows_and_lattice_agree_and_step_is_checked():
    """Row-only grids (EPSG:3857) are exact on every row; a UTM grid interpolates between
    every step-th pixel: the default step of 16 is within 1e-9 of an exact evaluation of
    every pixel (step=1)."""
    for bbox, crs in (((-7740000, -3300000, -7735000, -3295000), "EPSG:3857"),
                      ((480000, 7300000, 485000, 7305000), "EPSG:32719")):
        gbox = GeoBox.from_bbox(bbox, crs, resolution=10)
        np.testing.assert_allclose(geodesic_area(gbox), geodesic_area(gbox, step=1),
                                   rtol=1e-9)
    merc = geodesic_area(GRIDS["3857"])
    assert (merc == merc[:, :1]).all()  # the area of a Mercator pixel depends on its row only
    utm = geodesic_area(GRIDS["utm18 edge"])
    assert not (utm == utm[:, :1]).all()  # not so in UTM
    assert geodesic_area(GeoBox((0, 3), Affine.scale(10, -10), "EPSG:32719")).shape == (0, 3)
    with pytest.raises(InvalidGridError, match="step=0"):
        geodesic_area(GRIDS["utm19"], step=0)
    with pytest.raises(InvalidGridError, match="differs"):
        geodesic_area(GRIDS["utm19"], "EPSG:3857")


# ------------------------------------------------------------------------------ the callers
def test_pixel_area_is_geodesic_area_on_the_grid():
    from lames_cube.timeseries import pixel_area

    gbox = GRIDS["utm18 edge"]
    cube = xr.DataArray(np.zeros(gbox.shape), dims=("y", "x"),
                        coords=xr_coords(gbox, crs_coord_name="spatial_ref")).chunk(16)
    np.testing.assert_array_equal(pixel_area(gbox).values, geodesic_area(gbox))
    np.testing.assert_allclose(pixel_area(cube).values, geodesic_area(gbox), rtol=1e-9)


def test_prediction_polygons_are_measured_with_geodesic_area():
    from lames_cube.prediction import prediction_polygons

    gbox = GeoBox.from_bbox((-7740000, -3300000, -7738000, -3298000), "EPSG:3857", resolution=10)
    prob = np.zeros(gbox.shape, np.float32)
    prob[20:80, 30:90] = 0.9
    prob[40:50, 50:60] = 0.0  # a hole
    prob[120:170, 100:190] = 0.8
    coords = xr_coords(gbox, crs_coord_name="spatial_ref")
    ds = xr.Dataset({"probability": (("y", "x"), prob),
                     "class": (("y", "x"), (prob > 0.5).astype(np.uint8))}, coords=coords)
    polys = prediction_polygons(ds, min_area_km2=0.0, block=64)
    assert len(polys) == 2
    np.testing.assert_allclose(polys.area_km2, geodesic_area(polys) / 1e6, rtol=1e-12)
    # the same as the pixels' areas (a Mercator pixel is ~83 m² here, not 100)
    area = geodesic_area(gbox)
    by_pixels = sorted([area[20:80, 30:90].sum() - area[40:50, 50:60].sum(),
                        area[120:170, 100:190].sum()])
    np.testing.assert_allclose(sorted(polys.area_km2 * 1e6), by_pixels, rtol=1e-8)


def test_annotation_repairs_are_geodesic_in_any_crs(tmp_path):
    """A self-crossing polygon in a UTM file and in a lon/lat file: the same geodesic area
    before the repair (the old code took the planar UTM area, off by the UTM scale)."""
    from lames_cube.annotations import load_asm

    x0, y0 = 480000, 7300000
    crossing = Polygon([(x0, y0), (x0 + 1000, y0), (x0 + 1000, y0 + 1000), (x0 + 400, y0 + 1000),
                        (x0 + 600, y0 - 200), (x0, y0 + 1000)])
    gdf = gpd.GeoDataFrame({"Name": ["a"], "description": ["asm 1"]}, geometry=[crossing],
                           crs="EPSG:32719")
    repairs = {}
    for crs in ("EPSG:32719", "EPSG:4326"):
        path = tmp_path / f"asm_{crs[5:]}.gpkg"
        gdf.to_crs(crs).to_file(path)
        _, rep = load_asm(path, report=True)
        (repairs[crs],) = rep.geometry_repairs
    lonlat = gdf.to_crs(4326).geometry.iloc[0]
    truth = abs(GEOD.geometry_area_perimeter(lonlat)[0])  # one ring: its signed area, as drawn
    for r in repairs.values():
        assert r.area_before_m2 == pytest.approx(truth, rel=1e-9)
    assert abs(truth / crossing.area - 1) > 5e-4  # the planar UTM area is not it
    # make_valid cuts straight lines in each file's own CRS: the repaired areas agree to 1e-5
    assert repairs["EPSG:32719"].area_after_m2 == pytest.approx(
        repairs["EPSG:4326"].area_after_m2, rel=1e-5)
