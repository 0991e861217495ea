"""The synthetic world's mines: growth per class, hidden mines, truth, area worlds."""

from __future__ import annotations

import dataclasses
import time

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from odc.geo.geobox import GeoBox
from rasterio.features import rasterize as rio_rasterize

from lames_cube import rasterize
from lames_cube.annotations import load_footprints, load_sectors, load_sites
from lames_cube.errors import WorldError
from lames_cube.synthetic import DEMO_SPEC, World, WorldSpec
from lames_cube.synthetic.mines import MineModel, hidden_mine_sectors, unique_names

YEARS = (2020, 2021, 2022, 2023)


@pytest.fixture(scope="module")
def chile(lames_dir):
    """Every LAMES site and every hidden mine (area='lames')."""
    t0 = time.perf_counter()
    w = World(WorldSpec(area="lames", years=YEARS), data_dir=lames_dir)
    n_tiles = len(w.tiles)
    seconds = time.perf_counter() - t0
    print(f"\narea='lames' world: {len(w.sites)} sites, {len(w.hidden)} hidden mines, "
          f"{n_tiles} tiles, built in {seconds:.2f} s")
    return w


def _by_name(world: World, year: int) -> gpd.GeoDataFrame:
    return world.mines.sectors_in_year(year).set_index("Name")


def _hidden_footprints(lames_dir) -> gpd.GeoDataFrame:
    """The Maus footprints that no LAMES sector touches, computed independently."""
    fp = load_footprints(lames_dir, report=True)[0]
    sectors = load_sectors(lames_dir, report=True)[0]
    touched = fp.geometry.apply(lambda g: bool(sectors.intersects(g).any()))
    return fp[~touched.to_numpy()]


# ------------------------------------------------------------------ growth per class


def test_last_year_is_the_annotation_and_nothing_disappears(chile):
    annotation = chile.sectors.set_index("Name")
    last = _by_name(chile, YEARS[-1])
    assert len(last) == len(annotation) and last.index.is_unique
    assert shapely.equals_exact(last.geometry.values,
                                annotation.geometry.loc[last.index].values, 0).all()
    previous: set[str] = set()
    for year in YEARS:
        now = set(_by_name(chile, year).index)
        assert previous <= now, year
        previous = now
    table = chile.sectors.set_index("Name")
    assert set(table["kind"]) == {"lames", "hidden"}
    assert table["class"].between(3, 9).all()


def test_site_areas_never_fall(chile):
    truth = chile.truth().pivot(index="site_id", columns="year", values="area_m2")
    steps = truth.diff(axis=1).iloc[:, 1:]
    assert (steps >= -1e-6).all().all()
    # almost every mine grows (a floor of this test, not a measured figure)
    assert (truth[YEARS[0]] < truth[YEARS[-1]]).mean() > 0.9
    # and the grown polygons are nested: no pixel is un-mined
    geoms, _ = chile.mines.table
    for k in range(len(YEARS) - 1):
        a, b = geoms[k], geoms[k + 1]
        ok = ~shapely.is_missing(a)
        lost = shapely.area(shapely.difference(a[ok], b[ok]))
        assert lost.max() < 1.0, (YEARS[k], lost.max())


def _fractions(world: World, classes) -> pd.DataFrame:
    full = _by_name(world, YEARS[-1])
    full = full[full["class"].isin(classes)]
    out = {}
    for year in YEARS:
        now = _by_name(world, year).reindex(full.index)
        out[year] = (now["area_m2"].fillna(0.0) / full["area_m2"]).to_numpy()
    return pd.DataFrame(out, index=full.index)


def test_pits_widen_about_their_centre(chile):
    frac = _fractions(chile, [5])
    assert len(frac) > 100  # LAMES has 143 open-pit sectors (class 5, raw sector file)
    assert (frac.diff(axis=1).iloc[:, 1:] >= -1e-9).all().all()
    assert (frac[YEARS[-1]] == 1).all()
    first = frac[YEARS[0]]
    # mines.PIT_START: linear scale 0.45..0.75 in the first year, so area 0.20..0.56
    assert 0.15 < first.median() < 0.7 and first.max() < 1
    # a convex pit scaled about its centroid: the first-year pit sits around the centroid
    full = _by_name(chile, YEARS[-1])
    first_pits = _by_name(chile, YEARS[0])
    convex = [n for n in frac.index
              if full.geometry[n].convex_hull.area < 1.02 * full.geometry[n].area]
    assert convex
    for name in convex:
        assert first_pits.geometry[name].contains(full.geometry[name].centroid), name


def test_dumps_extend_from_the_pit(chile):
    frac = _fractions(chile, [8, 9])
    assert len(frac) > 300  # LAMES: 58 tailings + 320 waste rock sectors (raw sector file)
    assert (frac.diff(axis=1).iloc[:, 1:] >= -1e-9).all().all()
    # mines.DUMP_START: first-year radius 0.35..0.70 of the full reach, so most start partial
    assert (frac[YEARS[0]] < 1).mean() > 0.8
    # the first-year part of a dump is near the main pit: it holds the dump's nearest point
    sectors = _by_name(chile, YEARS[-1])
    first = _by_name(chile, YEARS[0])
    site = "2355"
    local = sectors[sectors.site_id == site].to_crs(chile.sites.set_index("site_id").epsg[site])
    pit = local[local["class"] == 5].geometry.area.idxmax()
    dumps = first[(first.site_id == site) & first["class"].isin([8, 9])].to_crs(local.crs)
    assert len(dumps) > 2
    for name, grown in dumps.geometry.items():
        near = shapely.shortest_line(local.geometry[name], local.geometry[pit])
        assert grown.distance(shapely.get_point(near, 0)) < 1.0, name


def test_buildings_and_stockyards_appear_whole(chile):
    annotation = chile.sectors.set_index("Name")
    names = annotation.index[annotation["class"].isin([4, 6, 7])]
    assert len(names) > 500  # LAMES: 414 + 79 + 158 sectors of classes 4, 6, 7 (raw sector file)
    present = pd.DataFrame({y: names.isin(_by_name(chile, y).index) for y in YEARS}, index=names)
    # most exist from the first year: mines.BUILT_FROM_START = 0.75
    assert 0.6 < present[YEARS[0]].mean() < 0.95
    assert present[YEARS[-1]].all()
    for year in YEARS:
        now = _by_name(chile, year)
        here = names[present[year].to_numpy()]
        assert shapely.equals_exact(now.geometry.loc[here].values,
                                    annotation.geometry.loc[here].values, 0).all(), year


def test_leach_pads_grow_row_by_row_along_their_axis(chile):
    full = _by_name(chile, YEARS[-1])
    pads = full[full["class"] == 3].to_crs(32719)
    assert len(pads) > 20  # LAMES has 31 heap-leach sectors (class 3, raw sector file)
    growing = 0
    for name, poly in pads.geometry.items():
        ring = shapely.get_coordinates(shapely.oriented_envelope(poly))
        edges = np.diff(ring[:3], axis=0)
        axis = edges[np.argmax(np.hypot(*edges.T))]
        u = axis / np.hypot(*axis)
        t = shapely.get_coordinates(poly) @ u
        lo, hi = t.min(), t.max()
        ends = []
        for year in YEARS:
            now = _by_name(chile, year)
            grown = gpd.GeoSeries([now.geometry[name]], crs=4326).to_crs(32719).iloc[0]
            tg = shapely.get_coordinates(grown) @ u
            ends.append((tg.min(), tg.max()))
        ends = np.array(ends)
        # one end stays where the pad starts; the other moves towards the far end
        start_lo = np.allclose(ends[:, 0], lo, atol=1.0)
        start_hi = np.allclose(ends[:, 1], hi, atol=1.0)
        assert start_lo or start_hi, name
        moving = ends[:, 1] if start_lo else -ends[:, 0]
        assert (np.diff(moving) >= -1.0).all(), name
        growing += moving[0] < moving[-1] - 50  # at least half a row (mines.LEACH_ROW_M = 100 m)
    assert growing > len(pads) / 3  # floor of this test; mines.LEACH_START: 25..60 % built first


def test_growth_is_deterministic_from_seed_and_names(lames_dir):
    sectors = World(DEMO_SPEC, data_dir=lames_dir).sectors
    a = MineModel(sectors, YEARS, seed=3).sectors_in_year(2021)
    b = MineModel(sectors.iloc[::-1], YEARS, seed=3).sectors_in_year(2021)
    c = MineModel(sectors, YEARS, seed=4).sectors_in_year(2021)
    assert list(a.Name) == list(b.Name)
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, 0).all()
    assert not (len(a) == len(c)
                and shapely.equals_exact(a.geometry.values, c.geometry.values, 0).all())


def test_sector_names_are_unique(lames_dir):
    raw = load_sectors(lames_dir, report=True)[0]
    assert not raw.Name.is_unique
    names = unique_names(raw.Name)
    assert len(set(names)) == len(names) and names[:5] == list(raw.Name[:5])


# ------------------------------------------------------------------ hidden mines


def test_hidden_mines_are_drawn_but_not_labelled(chile, lames_dir):
    hidden = _hidden_footprints(lames_dir)
    area_km2 = chile.hidden.to_crs(32719).area.sum() / 1e6
    print(f"\nhidden mines drawn: {len(chile.hidden)} of {len(load_footprints(lames_dir))} Maus "
          f"footprints, {area_km2:,.0f} km²")
    # 92 of the 227 Maus footprints (2,805 km² of 3,759.66) touch no LAMES sector: counted by
    # _hidden_footprints from the raw files; the bounds leave room for validity repairs
    assert 85 <= len(chile.hidden) <= 100
    assert 2500 < area_km2 < 3100
    assert set(chile.hidden.fid) == set(hidden.site_id)
    assert (chile.hidden.site_id == "maus-" + chile.hidden.fid).all()
    assert set(chile.truth().query("kind == 'hidden'").site_id) == set(chile.hidden.site_id)
    assert not set(chile.hidden.site_id) & set(chile.sites.site_id)
    # No hidden mine touches a LAMES site polygon, so no LAMES label can hold one.
    sites = load_sites("all", data_dir=lames_dir)
    hidden = np.asarray(chile.hidden.geometry.values, dtype=object)
    assert not shapely.intersects(hidden[:, None],
                                  np.asarray(sites.geometry.values, dtype=object)[None, :]).any()

    # a 20 m grid over a few hidden mines next to LAMES site 2203
    fp = chile.hidden.set_index("fid").loc[["2210"]].to_crs(32719)
    near = chile.sites.set_index("site_id").loc[["2203"]].to_crs(32719)
    w, s, e, n = pd.concat([fp.geometry, near.geometry]).total_bounds
    gbox = GeoBox.from_bbox((w - 400, s - 400, e + 400, n + 400), "EPSG:32719", resolution=20)
    labels = rasterize(load_sites("all", data_dir=lames_dir), like=gbox).values
    inside = rio_rasterize(fp.geometry, out_shape=gbox.shape, transform=gbox.affine, fill=0,
                           default_value=1, dtype="uint8").astype(bool)
    assert inside.sum() > 100  # precondition: the footprint covers enough 20 m pixels
    assert labels.any() and not labels[inside].any()
    classes = chile.mine_classes(gbox, YEARS[-1])
    assert (classes[inside] > 0).mean() > 0.99  # tolerance: rasterisation at the rim
    assert set(np.unique(classes[inside])) <= {3, 4, 5, 6, 7, 8, 9}


def test_hidden_layout_partitions_each_footprint(lames_dir):
    fp = _hidden_footprints(lames_dir)
    parts = hidden_mine_sectors(fp, seed=0)
    assert set(parts["class"]) == {3, 4, 5, 6, 7, 8, 9} and set(parts["kind"]) == {"hidden"}
    assert parts.Name.is_unique and shapely.is_valid(parts.geometry.values).all()
    local = parts.to_crs(32719)
    local["geometry"] = local.geometry.make_valid()  # reprojection may break validity
    with_tailings = 0
    for fid, poly in fp.set_index("site_id").to_crs(32719).geometry.items():
        mine = local[local.site_id == f"maus-{fid}"]
        assert 5 in set(mine["class"]), fid
        union = shapely.union_all(mine.geometry.values)
        assert abs(union.area - poly.area) < 1e-6 * poly.area + 1, fid
        assert mine.geometry.area.sum() == pytest.approx(union.area, rel=1e-6), fid
        if poly.area > 5e5:  # >= 2 cells from mines.HIDDEN_TWO_CELLS_M2 = 4e5 m²; the farthest is tailings
            assert 8 in set(mine["class"]), fid
            with_tailings += 1
    assert with_tailings > 0, "precondition: some hidden footprint is large enough for tailings"
    again = hidden_mine_sectors(fp, seed=0)
    assert shapely.equals_exact(parts.geometry.values, again.geometry.values, 0).all()


def test_site_worlds_draw_the_hidden_mines_inside_their_tiles(lames_dir):
    with_hidden = World(DEMO_SPEC, data_dir=lames_dir)
    without = World(dataclasses.replace(DEMO_SPEC, hidden_mines=False), data_dir=lames_dir)
    assert list(with_hidden.sites.site_id) == list(without.sites.site_id)  # same sites picked
    assert [t.tile_id for t in with_hidden.tiles] == [t.tile_id for t in without.tiles]
    assert len(with_hidden.hidden) >= 1 and len(without.hidden) == 0
    assert with_hidden.digest() != without.digest()
    _assert_tiles_cover(with_hidden)


def _assert_tiles_cover(world: World) -> None:
    margin = world.spec.margin_m
    rows = pd.concat([world.sites[["site_id", "epsg", "geometry"]],
                      world.hidden[["site_id", "epsg", "geometry"]]])
    for epsg, group in rows.groupby("epsg"):
        cover = shapely.union_all([shapely.box(*t.geobox(10).extent.boundingbox)
                                   for t in world.tiles if t.epsg == epsg])
        local = gpd.GeoSeries(group.geometry.values, crs=4326).to_crs(int(epsg))
        need = shapely.buffer(shapely.box(*shapely.bounds(local.values).T), margin - 1e-6,
                              join_style="mitre")
        missing = ~shapely.covers(cover, need)
        assert not missing.any(), list(group.site_id[missing])


# ------------------------------------------------------------------ truth


def test_truth_lists_sites_and_hidden_mines(chile):
    truth = chile.truth()
    classes = [f"area_{c}_m2" for c in range(3, 10)]
    assert list(truth.columns) == ["site_id", "kind", "year", "area_m2", *classes]
    assert len(truth) == (len(chile.sites) + len(chile.hidden)) * len(YEARS)
    assert set(truth.kind) == {"lames", "hidden"}
    table = truth.set_index(["site_id", "year"])
    epsg = pd.concat([chile.sites, chile.hidden]).set_index("site_id").epsg
    for site_id in ("2355", chile.hidden.sort_values("site_id").site_id.iloc[-1]):
        for year in (YEARS[0], YEARS[-1]):
            sectors = chile.mines.sectors_in_year(year)
            local = sectors[sectors.site_id == site_id].to_crs(int(epsg[site_id]))
            row = table.loc[(site_id, year)]
            assert row["area_m2"] == pytest.approx(
                shapely.union_all(local.geometry.values).area, rel=1e-6)
            for cls in range(3, 10):
                sel = local[local["class"] == cls].geometry.values
                want = shapely.union_all(sel).area if len(sel) else 0.0
                assert row[f"area_{cls}_m2"] == pytest.approx(want, rel=1e-6, abs=1e-3)
    # the last year of a hidden mine is its footprint
    last = table.xs(YEARS[-1], level="year")
    footprints = chile.hidden.set_index("site_id").to_crs(32719).area
    np.testing.assert_allclose(last.loc[footprints.index, "area_m2"], footprints, rtol=1e-6)


# ------------------------------------------------------------------ area worlds and specs


def test_a_box_draws_exactly_the_sites_and_hidden_mines_in_it(lames_dir):
    box = (-69.5, -24.5, -68.9, -22.0)
    w = World(WorldSpec(area=box, years=(2021, 2022), grid_km=10), data_dir=lames_dir)
    sites = load_sites("all", data_dir=lames_dir)
    want = set(sites.site_id[sites.intersects(shapely.box(*box))])
    assert len(want) >= 3  # precondition: the box was picked to hold several LAMES sites
    assert set(w.sites.site_id) == want
    hidden = _hidden_footprints(lames_dir)
    assert set(w.hidden.fid) == set(hidden.site_id[hidden.intersects(shapely.box(*box))])
    # sites crossing the box are drawn whole
    drawn = w.sectors[w.sectors.kind == "lames"]
    every = load_sectors(lames_dir, report=True)[0]
    assert len(drawn) == (every.site_id.isin(want) & (every["class"] > 0)).sum()
    _assert_tiles_cover(w)
    again = World(WorldSpec.from_dict(w.spec.to_dict()), data_dir=lames_dir)
    assert again.spec == w.spec and again.digest() == w.digest()


def test_chile_tiles_cover_every_mine(chile):
    assert 150 < len(chile.tiles) < 500  # bounds of this test around the count it prints (10 km tiles)
    _assert_tiles_cover(chile)


@pytest.mark.parametrize("changes, match", [
    ({"area": "chile"}, r"area='chile' is not a known area"),
    ({"area": (1, 2, 3)}, r"area=\(1, 2, 3\) is not a box"),
    ({"area": (-68, -24, -69, -23)}, r"area=\(-68, -24, -69, -23\) is not a lon/lat box"),
    ({"area": "lames", "site_ids": ("2355",)}, r"site_ids=\('2355',\) both choose"),
    ({"area": "lames", "n_sites": 7}, r"n_sites=7 is not used"),
    ({"area": "lames", "use_lames": False}, r"use_lames=False"),
    ({"hidden_mines": "yes"}, r"hidden_mines='yes'"),
])
def test_bad_area_specs(changes, match):
    with pytest.raises(WorldError, match=match):
        WorldSpec(**changes)


def test_a_box_without_mines(lames_dir):
    with pytest.raises(WorldError, match=r"area=\(-80\.0, -30\.0, -79\.0, -29\.0\) holds no LAMES"):
        World(WorldSpec(area=(-80, -30, -79, -29)), data_dir=lames_dir)


def test_written_sectors_keep_hidden_mines_out_of_the_site_table(tmp_path, lames_dir):
    """sectors.geojson holds both kinds; search's site table only knows the LAMES sites."""
    from lames_cube.search import site_table

    w = World(DEMO_SPEC, data_dir=lames_dir)
    w.sectors.to_file(tmp_path / "sectors.geojson", driver="GeoJSON")
    back = gpd.read_file(tmp_path / "sectors.geojson")
    assert set(back.kind) == {"lames", "hidden"} and back.Name.is_unique
    table = site_table(tmp_path, data_dir=lames_dir)
    assert set(w.sites.site_id) <= set(table.site_id)
    assert not table.site_id.str.startswith("maus-").any()
