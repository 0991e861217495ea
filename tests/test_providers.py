"""The synthetic world's provider styles are the real providers' items and pixels.

(a) For each style, world items are compared field by field with a real item of the same provider
and layout from ``../shared/stac`` (property names, spellings, extensions, asset fields, raster
metadata, the relations between ids, names and times), and both go through ``_detect_provider``
and ``normalize_item`` to the same provider, canonical bands, CRS fields and offset rule.
(b) For each style, a written world searched and built into a cube equals, pixel for pixel, the
world's truth (``World.scene_arrays(..., harmonised=True)``) where one scene covers a pixel, and
0 where none does.

Expected values come from the real JSON or the world's scenes, never from stored numbers: the
world's pixels change as the generator does.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from lames_cube.cube import build_cube
from lames_cube.items import _detect_provider, normalize_item
from lames_cube.search import search
from lames_cube.synthetic import World
from lames_cube.synthetic.realism import open_world
from lames_cube.synthetic.stac import ES_LAYOUT_2025, item_dict, item_id
from lames_cube.synthetic.world import STYLE_COLLECTIONS
from lames_cube.testing import SMALL_SPEC, scene_coverage, small_world

ES = "earth_search_v1/items/sentinel-2-l2a"
C1 = "earth_search_v1/items/sentinel-2-c1-l2a"
PC = "planetary_computer/items/sentinel-2-l2a"
RKH = "pixels/rio-tiler-pds_S2A_29RKH_20200219_0_L2A_decimated10x"
#: Real item per (style, layout), and the real items of each side of baseline 04.00.
REAL = {
    ("earth-search", "0.1.1"): f"{ES}/S2A_13TDE_20231008_0_L2A.json",
    ("earth-search", "2025.03.06"): f"{ES}/S2B_24MUV_20250731_0_L2A.json",
    ("earth-search-c1", "v2025.06.17"): f"{C1}/S2B_T24MUV_20250731T130245_L2A.json",
    ("planetary-computer", "-"): f"{PC}/S2A_MSIL2A_20230623T013701_R031_T53MMU_20230623T053510.json",
}
REAL_SIDES = {  # style -> {offset still in the real pixels before / from 04.00: real item}
    "earth-search": {False: f"{RKH}/S2A_29RKH_20200219_0_L2A.json", True: REAL[("earth-search", "0.1.1")]},
    "earth-search-c1": {True: REAL[("earth-search-c1", "v2025.06.17")]},
    "planetary-computer": {
        False: f"{PC}/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json",
        True: REAL[("planetary-computer", "-")],
    },
}
BANDS = ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")
HREFS = {b: f"./{b}.tif" for b in BANDS}
FILES = {b: (1000 + i, "1220" + f"{i:x}" * 64) for i, b in enumerate(BANDS)}
STATS = {"cloud_cover": 12.5, "nodata_percentage": 3.25,
         "classes": {3: 1.0, 4: 6.5, 5: 80.0, 8: 2.5, 9: 10.0}}
TILE = r"\d{2}[C-HJ-NP-X][A-HJ-NP-Z]{2}(?:\d\d)*"


def _real(stac_dir: Path, rel: str) -> dict[str, Any]:
    return json.loads((stac_dir / rel).read_text())


def _spec(style: str, **changes):
    """SMALL_SPEC in another style (``collection`` given: ``replace`` keeps the old one)."""
    return dataclasses.replace(SMALL_SPEC, style=style, collection=STYLE_COLLECTIONS[style],
                               **changes)


@pytest.fixture(scope="module")
def worlds(lames_dir) -> dict[str, World]:
    """Unwritten worlds of each style, 2021-2022 (both sides of 04.00) and 2025 (S2C, new layout)."""
    return {style: World(_spec(style, years=(2021, 2022, 2025), scenes_per_year=5),
                         data_dir=lames_dir)
            for style in STYLE_COLLECTIONS}


def _layout(style: str, scene) -> str:
    if style == "earth-search":
        return "2025.03.06" if scene.date >= ES_LAYOUT_2025 else "0.1.1"
    return "v2025.06.17" if style == "earth-search-c1" else "-"


def _short(platform: str) -> str:
    return "S2" + platform[-1].upper()


def _stamp(text: str) -> str:
    """``20230623T053510`` of an ISO time."""
    return re.sub(r"[-:]", "", text)[:15]


def check_relations(raw: dict[str, Any], style: str) -> None:
    """What the real providers' ids, product names and times have in common (see MANIFEST §5)."""
    p, ident = raw["properties"], raw["id"]
    msg = f"{style}: {ident}"
    baseline = p["s2:processing_baseline"]
    m = re.fullmatch(rf"G(S2[A-C])_(\d{{8}}T\d{{6}})_(\d{{6}})_N{re.escape(baseline)}",
                     p["s2:datatake_id"])
    assert m, msg
    short, sensing, absolute = m.groups()
    assert _short(p["platform"]) == short, msg
    m = re.fullmatch(rf"{short}_MSIL2A_{sensing}_N{baseline.replace('.', '')}_R(\d{{3}})"
                     rf"_T({TILE})_(\d{{8}}T\d{{6}})\.SAFE", p["s2:product_uri"])
    assert m, msg
    orbit, tile, generation = m.groups()
    assert _stamp(p["s2:generation_time"]) == generation, msg
    granule = p.get("s2:tile_id") or p["s2:granule_id"]
    assert re.fullmatch(rf"{short}_OPER_MSI_L2A_TL_\w{{4}}_\d{{8}}T\d{{6}}_A{absolute}_T{tile}"
                        rf"_N{re.escape(baseline)}", granule), msg
    m = re.fullmatch(rf"{short}_OPER_MSI_L2A_DS_\w{{4}}_\d{{8}}T\d{{6}}_S(\d{{8}}T\d{{6}})"
                     rf"_N{re.escape(baseline)}", p["s2:datastrip_id"])
    assert m, msg
    datastrip = m[1]
    assert p["instruments"] == ["msi"] and p["s2:product_type"] == "S2MSI2A", msg
    if style == "planetary-computer":
        assert re.fullmatch(r"Sentinel-2[A-C]", p["platform"]), msg
        assert p["constellation"] == "Sentinel 2", msg
        assert ident == f"{short}_MSIL2A_{sensing}_R{orbit}_T{tile}_{generation}", msg
        assert p["s2:mgrs_tile"] == tile and p["sat:relative_orbit"] == int(orbit), msg
        assert p["sat:orbit_state"] == "descending", msg
        # datetime is the datatake's sensing start (a few ms after the whole second)
        assert _stamp(p["datetime"]) == sensing and p["datetime"][19:21] == ".0", msg
        assert not any(k.startswith(("mgrs:", "grid:", "earthsearch:", "view:")) for k in p), msg
        assert all("raster:bands" not in a for a in raw["assets"].values()), msg
        return
    assert re.fullmatch(r"sentinel-2[a-c]", p["platform"]) and p["constellation"] == "sentinel-2"
    zone, letter, square = tile[:2], tile[2], tile[3:5]
    assert p["grid:code"] == f"MGRS-{tile}", msg
    assert (p["mgrs:utm_zone"], p["mgrs:latitude_band"], p["mgrs:grid_square"]) == (
        int(zone), letter, square), msg
    assert "s2:mgrs_tile" not in p and not any(k.startswith("sat:") for k in p), msg
    assert _stamp(p["datetime"]) > sensing, msg  # the granule is sensed after the datatake start
    # raster:bands of the real Earth Search items (../shared/stac MANIFEST.md section 5): scale
    # 1e-4, offset -0.1 (the -1000 DN of baseline 04.00) from 04.00 on, nodata 0
    offset = -0.1 if float(baseline) >= 4 else 0
    for key in ("blue", "green", "red", "nir", "swir16", "swir22"):
        band = raw["assets"][key]["raster:bands"][0]
        assert (band["scale"], band["offset"], band["nodata"]) == (0.0001, offset, 0), msg
    assert "scale" not in raw["assets"]["scl"]["raster:bands"][0], msg
    if style == "earth-search":
        assert ident == f"{short}_{tile}_{p['datetime'][:10].replace('-', '')}_{p['s2:sequence']}_L2A"
        # offset removed from the pixels from 04.00 on, yet still declared in raster:bands
        assert p["earthsearch:boa_offset_applied"] is (float(baseline) >= 4), msg
    else:
        assert ident == f"{short}_T{tile}_{datastrip}_L2A", msg
        assert not any(k in p for k in ("earthsearch:boa_offset_applied", "s2:sequence")), msg
        assert float(baseline) >= 5, msg


def _world_items(world: World, style: str) -> list[tuple[Any, dict[str, Any]]]:
    """One item per (layout, baseline side, platform) of the world's scenes."""
    picked: dict[tuple, Any] = {}
    for scene in world.scenes:
        picked.setdefault((_layout(style, scene), scene.dn_offset, scene.platform), scene)
    return [(s, item_dict(world, s, STATS, HREFS, FILES)) for s in picked.values()]


# ------------------------------------------------------------------------------------------
# (a) items as the real providers write them
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(REAL), ids=["-".join(k) for k in REAL])
def test_real_items_follow_the_relations(stac_dir, key):
    """The rules the world items are checked by hold for the real items."""
    check_relations(_real(stac_dir, REAL[key]), key[0])
    for rel in REAL_SIDES[key[0]].values():
        check_relations(_real(stac_dir, rel), key[0])


@pytest.mark.parametrize("style", list(STYLE_COLLECTIONS))
def test_world_items_are_written_as_the_provider_writes_them(stac_dir, worlds, style):
    world = worlds[style]
    items = _world_items(world, style)
    layouts = {_layout(style, s) for s, _ in items}
    assert layouts == {lay for st, lay in REAL if st == style}, "a layout is not exercised"
    sides = {bool(s.dn_offset) for s, _ in items}
    assert sides == set(REAL_SIDES[style]), sides
    assert {s.platform for s, _ in items} >= {"sentinel-2a", "sentinel-2b", "sentinel-2c"}
    for scene, raw in items:
        real = _real(stac_dir, REAL[(style, _layout(style, scene))])
        msg = f"{style}: {raw['id']} vs {real['id']}"
        check_relations(raw, style)
        assert raw["collection"] == real["collection"] == STYLE_COLLECTIONS[style], msg
        assert raw["id"] == item_id(world, scene), msg
        assert raw["stac_version"] == real["stac_version"], msg
        assert raw["stac_extensions"] == real["stac_extensions"], msg
        p, rp = raw["properties"], real["properties"]
        assert set(p) == set(rp), f"{msg}: {set(p) ^ set(rp)}"
        assert not any(k.startswith("lames:") for k in p), msg
        for key in p:  # the same JSON types (numbers as numbers, flags as booleans, ...)
            kind = (int, float) if isinstance(rp[key], (int, float)) and not isinstance(
                rp[key], bool) else type(rp[key])
            assert isinstance(p[key], kind), f"{msg}: {key} {p[key]!r} vs {rp[key]!r}"
        for key in ("constellation", "instruments", "s2:product_type", "s2:datatake_type",
                    "sat:orbit_state", "storage:platform", "storage:requester_pays"):
            assert p.get(key) == rp.get(key), f"{msg}: {key}"
        assert p.get("processing:software") == rp.get("processing:software"), msg
        assert p["datetime"].endswith("Z"), msg
        assert len(p["datetime"]) == len(rp["datetime"]), msg  # microseconds, as served
        assert p["eo:cloud_cover"] == STATS["cloud_cover"]
        assert p["s2:nodata_pixel_percentage"] == STATS["nodata_percentage"]
        assert p["s2:high_proba_clouds_percentage"] == STATS["classes"][9]
        assert set(raw["assets"]) <= set(real["assets"]), msg
        for key, asset in raw["assets"].items():
            ra = real["assets"][key]
            assert set(asset) == set(ra), f"{msg}: {key} {set(asset) ^ set(ra)}"
            for field in ("type", "title", "roles", "gsd", "eo:bands"):
                assert asset.get(field) == ra.get(field), f"{msg}: {key}.{field}"
            assert [type(v) for v in asset["proj:transform"]] == [
                type(v) for v in ra["proj:transform"]], f"{msg}: {key}"
            if "raster:bands" in ra:
                band, rband = asset["raster:bands"][0], ra["raster:bands"][0]
                assert set(band) == set(rband), f"{msg}: {key}"
                for field in ("nodata", "data_type", "scale", "bits_per_sample"):
                    assert band.get(field) == rband.get(field), f"{msg}: {key}.{field}"


@pytest.mark.parametrize("style", list(STYLE_COLLECTIONS))
def test_world_and_real_items_normalise_alike(stac_dir, worlds, style):
    """Same provider, canonical bands, CRS fields and offset rule for world and real items."""
    world = worlds[style]
    items = _world_items(world, style)
    assert items, "precondition: the world has scenes"
    for scene, raw in items:
        side = bool(scene.dn_offset)
        real = _real(stac_dir, REAL_SIDES[style][side])
        msg = f"{style}: {raw['id']} vs {real['id']}"
        assert _detect_provider(raw) == _detect_provider(real), msg
        for d in (raw, real):  # the CRS as the providers write it
            assert isinstance(d["properties"]["proj:epsg"], int), msg
            assert "proj:code" not in d["properties"], msg
        ours, theirs = normalize_item(raw), normalize_item(real)
        p, rp = ours.properties, theirs.properties
        assert p["lames:provider"] == rp["lames:provider"] == _detect_provider(raw), msg
        assert set(ours.assets) <= set(theirs.assets), msg
        for band in BANDS:
            assert (ours.assets[band].extra_fields["lames:source_key"]
                    == theirs.assets[band].extra_fields["lames:source_key"]), f"{msg}: {band}"
        assert p["proj:code"] == f"EPSG:{scene.tile.epsg}" and "proj:epsg" not in p, msg
        assert rp["proj:code"] == f"EPSG:{real['properties']['proj:epsg']}", msg
        assert p["s2:mgrs_tile"] == scene.tile.tile_id, msg
        assert p["platform"] == scene.platform, msg
        assert p["s2:processing_baseline"] == scene.baseline, msg
        # The offset rule: Earth Search l2a removed it (0), Collection 1 and Planetary Computer
        # keep it from 04.00 on (1000); the world's item gets what the real item of its side gets.
        assert p["lames:dn_offset"] == rp["lames:dn_offset"], msg
        assert p["lames:dn_offset_source"] == rp["lames:dn_offset_source"] == "baseline", msg
        expected = 1000 if side and style != "earth-search" else 0  # +1000 DN from 04.00 (ESA)
        assert p["lames:dn_offset"] == expected, msg
        assert p["lames:solar_day"] == scene.date.isoformat(), msg


@pytest.mark.parametrize("style", list(STYLE_COLLECTIONS))
def test_detection_survives_a_local_mirror(stac_dir, worlds, style):
    """World and real items alike are recognised from what a mirror keeps (no links, local
    hrefs), and still when the id or the provider's own properties are lost as well."""
    world = worlds[style]
    want = "planetary-computer" if style == "planetary-computer" else "earth-search-v1"
    own = ("earthsearch:", "storage:", "sat:", "s2:mgrs_tile")
    for item in (item_dict(world, world.scenes[0], STATS, HREFS),
                 _real(stac_dir, REAL_SIDES[style][True])):
        bare = copy.deepcopy(item)
        bare["links"] = []
        for key, asset in bare["assets"].items():
            asset["href"] = f"/mirror/{item['id']}/{key}.tif"
        renamed = {**copy.deepcopy(bare), "id": "scene-0001"}
        stripped = copy.deepcopy(bare)
        stripped["properties"] = {k: v for k, v in bare["properties"].items()
                                  if not k.startswith(own)}
        both = {**stripped, "id": "scene-0001"}
        for variant in (bare, renamed, stripped, both):
            assert _detect_provider(variant) == want, (item["id"], variant["id"])


# ------------------------------------------------------------------------------------------
# (b) pixels as the real providers serve them: cubes equal the world's truth
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_c1(tmp_path_factory, lames_dir):
    """A small Collection-1 world: one year, one pass per orbit."""
    return small_world(tmp_path_factory.mktemp("worlds") / "c1", data_dir=lames_dir, workers=2,
                       style="earth-search-c1", collection="sentinel-2-c1-l2a",
                       years=(2022,), scenes_per_year=1)


@pytest.mark.parametrize("style", list(STYLE_COLLECTIONS))
def test_cube_equals_the_worlds_truth(request, style):
    root = request.getfixturevalue(
        {"earth-search": "world", "earth-search-c1": "world_c1",
         "planetary-computer": "world_pc"}[style])
    w = open_world(root)
    assert w.spec.style == style
    assert len({t.epsg for t in w.tiles}) == 1  # _covered compares coordinates of one CRS
    items = search(root, collections=[STYLE_COLLECTIONS[style]])
    by_id = {i.id: i for i in items}
    day_of = {}
    for scene in w.scenes:
        item = by_id[item_id(w, scene)]  # every scene is found, none deduplicated away
        day_of[scene] = np.datetime64(item.properties["lames:solar_day"], "D")
        assert item.properties["lames:dn_offset"] == (
            0 if style == "earth-search" else scene.dn_offset)
    # the tile with the most scenes of both offsets (or of the one offset the style has)
    tile = max(w.tiles, key=lambda t: (len({s.dn_offset for s in w.scenes if s.tile == t}),
                                       sum(s.tile == t for s in w.scenes)))
    compared: dict[int, int] = {}
    for res, bands in ((10, ["B02", "B03", "B04", "B08"]), (20, ["B11", "B12", "SCL"])):
        gbox = tile.geobox(res)
        cube = build_cube(items, geobox=gbox, bands=bands, chunks=512).compute()
        days = cube.solar_day.values.astype("datetime64[D]")
        for t, day in enumerate(days):
            scenes = [s for s in w.scenes if day_of[s] == day]
            cover = {s: scene_coverage(s, gbox) for s in scenes}
            count = sum((c.astype(int) for c in cover.values()), np.zeros(gbox.shape, int))
            got = cube.values[t]
            assert (got[:, count == 0] == 0).all(), f"{style} {day}: data where no scene is"
            for scene in (s for s in scenes if s.tile == tile):
                alone = cover[scene] & (count == 1)
                truth = w.scene_arrays(scene, res, harmonised=True)
                for i, band in enumerate(bands):
                    np.testing.assert_array_equal(
                        got[i][alone], truth[band][alone], err_msg=f"{style} {scene.id} {band}")
                # floor of this test: most of a scene is covered by it alone
                assert alone.sum() > 0.3 * cover[scene].sum(), f"{style} {scene.id}"
                compared[scene.dn_offset] = compared.get(scene.dn_offset, 0) + int(alone.sum())
    assert set(compared) == ({1000} if style == "earth-search-c1" else {0, 1000}), compared
    # The COGs hold what the provider serves: harmonised values in Earth Search l2a from 04.00,
    # the product's digital numbers (offset included) in Collection 1 and Planetary Computer.
    scene = next(s for s in w.scenes if s.tile == tile and s.dn_offset)
    with rasterio.open(by_id[item_id(w, scene)].assets["B04"].href) as src:
        cog = src.read(1)
    served = w.scene_arrays(scene, 10, harmonised=style == "earth-search")["B04"]
    np.testing.assert_array_equal(cog, served)
    assert (served != w.scene_arrays(scene, 10, harmonised=style != "earth-search")["B04"]).any()


def test_datatake_start_is_shared_by_the_tiles_of_a_pass(worlds):
    """Planetary Computer's datetime is the datatake start: one value for the tiles of a pass
    in one latitude band, before each granule's own time."""
    world = worlds["planetary-computer"]
    by_pass: dict[tuple, set[str]] = {}
    for scene in world.scenes:
        raw = item_dict(world, scene, STATS, HREFS)
        when = dt.datetime.fromisoformat(raw["properties"]["datetime"].replace("Z", "+00:00"))
        assert when <= scene.datetime
        key = (scene.orbit, scene.date, scene.tile.tile_id[:3])
        by_pass.setdefault(key, set()).add(raw["properties"]["datetime"])
    assert all(len(v) == 1 for v in by_pass.values())
    assert any(len({s.tile for s in world.scenes if (s.orbit, s.date) == k[:2]}) > 1
               for k in by_pass)


@pytest.mark.parametrize("style", ["earth-search-c1", "planetary-computer"])
def test_dark_pixels_past_baseline_04_clamp_to_1_and_never_wrap(request, style):
    """Over-corrected water and shade fall at or below DN 1000 from baseline 04.00: the cube
    clamps them to reflectance 1e-4 (1), never wraps them to ~65 000, and keeps nodata 0."""
    root = request.getfixturevalue({"earth-search-c1": "world_c1",
                                    "planetary-computer": "world_pc"}[style])
    w = open_world(root)
    items = search(root, collections=[STYLE_COLLECTIONS[style]])
    found = []
    for scene in (s for s in w.scenes if s.dn_offset == 1000):
        raw = w.scene_arrays(scene, 20)
        dark = sum(int(((raw[b] > 0) & (raw[b] <= 1000)).sum()) for b in ("B11", "B12"))
        found.append((dark, scene))
    dark, scene = max(found, key=lambda f: f[0])
    assert dark > 20, "the world has no dark pixels past baseline 04.00"  # precondition
    gbox = scene.tile.geobox(20)
    day = np.datetime64(scene.date, "D")
    cube = build_cube(items, geobox=gbox, bands=["B11", "B12"], chunks=512).compute()
    t = int(np.flatnonzero(cube.solar_day.values.astype("datetime64[D]") == day)[0])
    others = [s for s in w.scenes if s.date == scene.date and s is not scene]
    covers = [scene_coverage(s, gbox) for s in others] or [False]
    alone = scene_coverage(scene, gbox) & ~np.any(covers, axis=0)
    raw, truth = w.scene_arrays(scene, 20), w.scene_arrays(scene, 20, harmonised=True)
    for i, band in enumerate(("B11", "B12")):
        got = cube.values[t, i]
        below = alone & (raw[band] > 0) & (raw[band] <= 1000)
        assert below.sum() > 0, band
        assert (got[below] == 1).all() and (truth[band][below] == 1).all()
        np.testing.assert_array_equal(got[alone], truth[band][alone])
        # a wrapped value would be 65,536 - (1000 - DN), above 64,500; 65,535 is saturated
        assert got[alone].max() < 60_000 or (raw[band][alone] == 65_535).any()
    nowhere = ~np.any([scene_coverage(s, gbox) for s in [scene, *others]], axis=0)
    assert (cube.values[t][:, nowhere] == 0).all()
