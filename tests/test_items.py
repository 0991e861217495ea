"""lames_cube.items against the real STAC metadata in ../shared/stac (see its MANIFEST.md).

Expected values are worked out here from the raw JSON, independently of lames_cube.items.
The folder is found through ``LAMES_STAC_DIR`` (default ``<repo>/../shared/stac``); when it is
missing the tests fail, they never skip.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pystac
import pytest
import shapely
import shapely.geometry

from lames_cube.errors import InvalidItemError
from lames_cube.items import (
    dedupe_items,
    drop_covered,
    item_band_names,
    normalize_item,
    normalize_items,
    unsupported_reason,
)

REPO = Path(__file__).resolve().parent.parent

#: Earth Search v1 asset key → band id (from the eo:bands of the real items, not bands.py).
ES_KEYS = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
    "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
    "swir16": "B11", "swir22": "B12", "scl": "SCL", "aot": "AOT", "wvp": "WVP", "visual": "visual",
}  # fmt: skip
BAND_IDS = {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
            "B11", "B12", "SCL", "AOT", "WVP"}  # fmt: skip
#: Native resolution (m) of each asset of a Sentinel-2 L2A product (ESA product spec).
NATIVE = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
          "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20, "SCL": 20, "AOT": 20,
          "WVP": 10, "visual": 10}  # fmt: skip
#: Folders of single-item files, with the provider every item in them must get.
ITEM_DIRS = {
    "earth_search_v1/items/sentinel-2-l2a": "earth-search-v1",
    "earth_search_v1/items/sentinel-2-c1-l2a": "earth-search-v1",
    "earth_search_v0/items/sentinel-s2-l2a-cogs": "earth-search-v0",
    "planetary_computer/items/sentinel-2-l2a": "planetary-computer",
    "pixels/rio-tiler-pds_S2A_29RKH_20200219_0_L2A_decimated10x": "earth-search-v1",
}
COLLECTION_DIRS = {
    "earth_search_v1/itemcollections": "earth-search-v1",
    "planetary_computer/itemcollections": "planetary-computer",
}
PIXELS = "pixels/rio-tiler-pds_S2A_29RKH_20200219_0_L2A_decimated10x"
PC_ITEMS = "planetary_computer/items/sentinel-2-l2a"


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stac_dir() -> Path:
    path = Path(os.environ.get("LAMES_STAC_DIR", REPO.parent / "shared" / "stac"))
    if not (path / "MANIFEST.md").is_file():
        pytest.fail(
            f"The real STAC metadata folder {path} is missing (no MANIFEST.md). These tests "
            "need it: set LAMES_STAC_DIR to the folder (normally <repo>/../shared/stac)."
        )
    return path


def json_files(stac_dir: Path, sub: str) -> list[Path]:
    files = sorted((stac_dir / sub).glob("*.json")) + sorted((stac_dir / sub).glob("*.geojson"))
    if not files:
        pytest.fail(f"No JSON files in {stac_dir / sub}; the STAC folder is incomplete.")
    return files


def raw_items(path: Path) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text())
    if isinstance(doc, list):  # stac-geoparquet's plain array
        return doc
    if doc.get("type") == "FeatureCollection":
        return doc["features"]
    assert doc.get("type") == "Feature", f"{path} is neither an Item nor a FeatureCollection"
    return [doc]


def find(stac_dir: Path, sub: str, pattern: str) -> Path:
    hits = [p for p in json_files(stac_dir, sub) if re.search(pattern, p.name)]
    assert len(hits) == 1, f"expected one file matching {pattern!r} in {sub}, got {hits}"
    return hits[0]


def via_pystac(raw: dict[str, Any], migrate: bool = True) -> pystac.Item:
    """The item as pystac reads it (migration rewrites proj:epsg as proj:code)."""
    with warnings.catch_warnings():  # pystac's storage migration warns on Earth Search items
        warnings.simplefilter("ignore")
        return pystac.Item.from_dict(copy.deepcopy(raw), migrate=migrate)


def is_s2_l2a(raw: dict[str, Any]) -> bool:
    p = raw["properties"]
    return str(p.get("platform", "")).lower().startswith("sentinel-2") and not (
        "l1c" in raw.get("collection", "") or raw["id"].endswith("_L1C")
    )


def expected_baseline(p: dict[str, Any]) -> str | None:
    value = p.get("s2:processing_baseline", p.get("sentinel:processing_baseline"))
    if value is not None:
        return value
    m = re.search(
        r"_N(\d\d)(\d\d)_", p.get("sentinel:product_id", "") + p.get("s2:product_uri", "")
    )
    return f"{m[1]}.{m[2]}" if m else None


def expected_tile(p: dict[str, Any]) -> str:
    if "s2:mgrs_tile" in p:
        return p["s2:mgrs_tile"]
    if "grid:code" in p:
        return p["grid:code"].removeprefix("MGRS-")
    zone = p.get("sentinel:utm_zone") or int(str(p["proj:epsg"])[-2:])
    return f"{int(zone):02d}{p['sentinel:latitude_band']}{p['sentinel:grid_square']}"


def expected_dn_offset(p: dict[str, Any]) -> int:
    baseline = expected_baseline(p)
    applied = p.get("earthsearch:boa_offset_applied") or p.get("sentinel:boa_offset_applied")
    return 1000 if baseline and float(baseline) >= 4.0 and not applied else 0


def expected_solar_day(raw: dict[str, Any]) -> str:
    lon = shapely.geometry.shape(raw["geometry"]).centroid.x
    when = datetime.fromisoformat(raw["properties"]["datetime"].replace("Z", "+00:00"))
    return (when + timedelta(hours=lon / 15)).date().isoformat()


def canonical_of(key: str) -> str | None:
    """Band id of a raw asset key (Earth Search names, band ids, per-resolution keys)."""
    base = re.sub(r"[_-](10|20|60)m$", "", key.removesuffix("-jp2"))
    if base in ES_KEYS:
        return ES_KEYS[base]
    return base if base in BAND_IDS or base == "visual" else None


def check_normal_form(raw: dict[str, Any], item: pystac.Item, provider: str, where: str) -> None:
    """Every field of the normal form, against values read from the raw JSON."""
    p, out = raw["properties"], item.properties
    msg = f"{where}: {raw['id']}"
    raw_bands = {b for k in raw["assets"] if (b := canonical_of(k))}
    non_band = {k for k in raw["assets"] if canonical_of(k) is None}
    assert set(item.assets) == raw_bands | non_band, msg
    assert not any(k.endswith("-jp2") for k in item.assets), msg
    assert ("B04" in item.assets) == ("red" in raw["assets"] or "B04" in raw["assets"]), msg
    epsg = p.get("proj:epsg") or int(p["proj:code"].split(":")[1])
    assert out["proj:code"] == f"EPSG:{epsg}" and "proj:epsg" not in out, msg
    for band in raw_bands:
        asset = item.assets[band].to_dict()
        source = asset["lames:source_key"]
        assert canonical_of(source) == band, msg
        src = raw["assets"][source]
        if src["href"].startswith(("http", "s3://", "/")):
            assert asset["href"] == src["href"], msg
        name = asset["href"].rsplit("/", 1)[-1]
        assert ("TCI" if band == "visual" else band) in name, f"{msg} {band} → {name}"
        assert asset["proj:shape"] == src["proj:shape"], msg
        assert len(asset["proj:transform"]) == 6, msg
        assert asset["proj:transform"] == src["proj:transform"][:6], msg
    if "nir" in raw["assets"]:  # Earth Search: nir is B08 (10 m), nir08 is B8A (20 m)
        assert item.assets["B08"].extra_fields["lames:source_key"] == "nir", msg
        assert "B08" in item.assets["B08"].href.rsplit("/", 1)[-1], msg
        assert item.assets["B8A"].extra_fields["lames:source_key"] == "nir08", msg
        assert "B8A" in item.assets["B8A"].href.rsplit("/", 1)[-1], msg
    for key in non_band:
        assert item.assets[key].href == raw["assets"][key]["href"], msg
    assert out["s2:processing_baseline"] == expected_baseline(p), msg
    assert out["s2:mgrs_tile"] == expected_tile(p), msg
    assert out["platform"] == p["platform"].lower(), msg
    if p.get("sentinel:valid_cloud_cover") is False:
        assert out["eo:cloud_cover"] is None, msg
    else:
        assert out["eo:cloud_cover"] == float(p["eo:cloud_cover"]), msg
        assert isinstance(out["eo:cloud_cover"], float), msg
    assert out["lames:dn_offset"] == expected_dn_offset(p), msg
    assert out["lames:dn_offset_source"] == "baseline", msg
    assert out["lames:provider"] == provider, msg
    assert out["lames:solar_day"] == expected_solar_day(raw), msg
    assert item.id == raw["id"] and item.collection_id == raw.get("collection"), msg


def all_s2_items(stac_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for sub in [*ITEM_DIRS, *COLLECTION_DIRS]:
        for path in json_files(stac_dir, sub):
            out += [(path.name, r) for r in raw_items(path) if is_s2_l2a(r)]
    return out


# ------------------------------------------------------------------------------------------
# normal form of every real item
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", list(ITEM_DIRS))
def test_every_item_normalises(stac_dir, sub):
    n = 0
    for path in json_files(stac_dir, sub):
        for raw in raw_items(path):
            before = copy.deepcopy(raw)
            item = normalize_item(raw, href=str(path))
            assert raw == before, f"{path.name}: normalize_item changed its input"
            check_normal_form(raw, item, ITEM_DIRS[sub], path.name)
            n += 1
    assert n >= 2


@pytest.mark.parametrize("sub", list(COLLECTION_DIRS))
def test_every_itemcollection_normalises(stac_dir, sub):
    for path in json_files(stac_dir, sub):
        raws = raw_items(path)
        out = normalize_items(json.loads(path.read_text()), on_unsupported="skip")
        wanted = [r for r in raws if is_s2_l2a(r)]
        assert [i.id for i in out] == [r["id"] for r in wanted], path.name
        for raw, item in zip(wanted, out, strict=True):
            check_normal_form(raw, item, COLLECTION_DIRS[sub], path.name)
        skipped = out.extra_fields.get("lames:skipped", [])
        assert [s["id"] for s in skipped] == [r["id"] for r in raws if not is_s2_l2a(r)]


def test_plain_json_array_of_items(stac_dir):
    path = find(stac_dir, PC_ITEMS, "ARRAY")
    doc = json.loads(path.read_text())
    assert isinstance(doc, list)
    out = normalize_items(doc)
    # MANIFEST.md: "a JSON ARRAY ... of 4 PC items"; the tiles are those of the file
    assert isinstance(out, pystac.ItemCollection) and len(out) == len(doc) == 4
    assert {i.properties["s2:mgrs_tile"] for i in out} == {"46XER", "46XES", "47XMJ", "47XML"}


def test_mixed_search_rejects_or_skips_non_s2_l2a(stac_dir):
    path = find(stac_dir, "earth_search_v1/itemcollections", "mixed_S1_S2")
    doc = json.loads(path.read_text())
    with pytest.raises(InvalidItemError, match=r"S1A_IW_GRDH.*sentinel-1-grd.*not Sentinel-2"):
        normalize_items(doc)
    out = normalize_items(doc, on_unsupported="skip")
    reasons = {s["id"]: s["reason"] for s in out.extra_fields["lames:skipped"]}
    s1 = [f["id"] for f in doc["features"] if f["collection"] == "sentinel-1-grd"]
    l1c = [f["id"] for f in doc["features"] if f["collection"] == "sentinel-2-l1c"]
    assert len(s1) == 3 and len(l1c) == 2  # counted in the file (MANIFEST.md: "mixed_S1_S2")
    assert all("not Sentinel-2" in reasons[i] for i in s1)
    assert all("Level-1C" in reasons[i] for i in l1c)
    assert {i.collection_id for i in out} == {"sentinel-2-l2a", "sentinel-2-c1-l2a"}


def test_l1c_and_landsat_items_are_rejected(stac_dir):
    for path in json_files(stac_dir, "earth_search_v1/items/sentinel-2-l1c"):
        with pytest.raises(InvalidItemError, match=r"Level-1C.*L2A"):
            normalize_item(raw_items(path)[0])
    path = find(stac_dir, "earth_search_v1/itemcollections", "landsat")
    landsat = next(r for r in raw_items(path) if r["collection"] == "landsat-c2-l2")
    assert "landsat" in unsupported_reason(landsat)
    with pytest.raises(InvalidItemError, match="LC08"):
        normalize_item(landsat)


# ------------------------------------------------------------------------------------------
# specific facts from the brief and the MANIFEST
# ------------------------------------------------------------------------------------------


def test_dn_offset_by_provider_and_baseline(stac_dir):
    for path in json_files(stac_dir, "earth_search_v1/items/sentinel-2-l2a"):
        raw = raw_items(path)[0]
        assert raw["properties"]["earthsearch:boa_offset_applied"] is True
        assert normalize_item(raw).properties["lames:dn_offset"] == 0, path.name
    for path in json_files(stac_dir, "earth_search_v1/items/sentinel-2-c1-l2a"):
        raw = raw_items(path)[0]
        assert raw["properties"]["s2:processing_baseline"].startswith("05.")
        assert normalize_item(raw).properties["lames:dn_offset"] == 1000, path.name
    # baselines: MANIFEST.md section 3a (and the files); offset +1000 from 04.00 (ESA)
    pc = {"T24XWR": ("04.00", 1000), "T53MMU": ("05.09", 1000), "T06VVN": ("02.12", 0),
          "T35XQA": ("02.12", 0)}  # fmt: skip
    for tile, (baseline, offset) in pc.items():
        raw = raw_items(find(stac_dir, PC_ITEMS, tile))[0]
        assert raw["properties"]["s2:processing_baseline"] == baseline
        out = normalize_item(raw).properties
        assert (out["lames:dn_offset"], out["s2:processing_baseline"]) == (offset, baseline)
    for name in ("S2A_29RKH_20200219_0_L2A.json", "S2A_29RKH_20200219_0_L2A.LOCAL_DERIVED.json"):
        raw = json.loads((stac_dir / PIXELS / name).read_text())
        assert raw["properties"]["s2:processing_baseline"] == "02.14"  # MANIFEST.md section 1a
        assert normalize_item(raw).properties["lames:dn_offset"] == 0


def test_earth_search_v0_quirks(stac_dir):
    sub = "earth_search_v0/items/sentinel-s2-l2a-cogs"
    raw = raw_items(find(stac_dir, sub, "28QCH"))[0]
    assert "sentinel:utm_zone" not in raw["properties"]
    assert len(raw["assets"]["B04"]["proj:transform"]) == 9
    item = normalize_item(raw)
    assert item.properties["s2:mgrs_tile"] == "28QCH"
    # the first 6 of the file's 9-element transform
    assert item.assets["B04"].extra_fields["proj:transform"] == [
        10.0, 0.0, 300000.0, 0.0, -10.0, 2300040.0,
    ]  # fmt: skip
    # no baseline field: read from the product id ..._N0214_...
    assert "_N0214_" in raw["properties"]["sentinel:product_id"]
    assert item.properties["s2:processing_baseline"] == "02.14"
    raw = raw_items(find(stac_dir, sub, "24XWF_20230506_1"))[0]
    assert raw["properties"]["sentinel:valid_cloud_cover"] is False
    assert raw["properties"]["eo:cloud_cover"] == 0
    assert normalize_item(raw).properties["eo:cloud_cover"] is None


def test_platform_is_lower_case(stac_dir):
    raw = raw_items(find(stac_dir, PC_ITEMS, "T60VUK"))[0]
    assert raw["properties"]["platform"] == "Sentinel-2A"
    out = normalize_item(raw).properties
    assert out["platform"] == "sentinel-2a" and out["constellation"] == "sentinel-2"


def test_planetary_computer_2021_layout_keeps_native_resolution(stac_dir):
    raws = raw_items(find(stac_dir, "planetary_computer/itemcollections", "page4of4"))
    assert "B02_20m" in raws[0]["assets"] and raws[0]["id"].endswith(".SAFE")
    for raw, item in zip(raws, normalize_items(raws), strict=True):
        assert not any(re.search(r"[_-](10|20|60)m$", k) for k in item.assets)
        for band, asset in item.assets.items():
            if band in NATIVE:
                assert asset.extra_fields["proj:transform"][0] == NATIVE[band], (raw["id"], band)
        src = {b: item.assets[b].extra_fields["lames:source_key"] for b in ("B02", "SCL", "AOT")}
        assert src == {"B02": "B02", "SCL": "SCL-20m", "AOT": "AOT-20m"}
        assert item.assets["WVP"].extra_fields["lames:source_key"] == "WVP-10m"
        assert item.assets["visual"].extra_fields["lames:source_key"] == "visual-10m"
        assert item.assets["B02"].href.endswith("_B02_10m.tif")


def test_earth_search_jp2_twins_are_dropped(stac_dir):
    raw = raw_items(find(stac_dir, "earth_search_v1/items/sentinel-2-l2a", "24MUV"))[0]
    assert raw["assets"]["red-jp2"]["href"].startswith("s3://")
    item = normalize_item(raw)
    assert item.assets["B04"].href == raw["assets"]["red"]["href"]
    assert item.assets["B04"].href.startswith("https://")
    assert item.assets["cloud"].href == raw["assets"]["cloud"]["href"]  # non-band, s3 only
    # the L2A band set of the file's assets (its eo:bands), B10 absent from L2A (ESA)
    expected = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
                "B12", "SCL", "AOT", "WVP"]  # fmt: skip
    assert item_band_names(raw) == item_band_names(item) == expected


def test_relative_hrefs_are_resolved(stac_dir):
    path = stac_dir / PIXELS / "S2A_29RKH_20200219_0_L2A.LOCAL_DERIVED.json"
    raw = json.loads(path.read_text())
    assert raw["assets"]["red"]["href"] == "./B04.tif"
    from_file = normalize_item(pystac.Item.from_file(str(path)))
    from_dict = normalize_item(raw, href=str(path))
    for item in (from_file, from_dict):
        href = item.assets["B04"].href
        assert Path(href).is_absolute() and Path(href).is_file(), href
        assert Path(href) == path.parent / "B04.tif"
    assert from_file.assets["SCL"].href == from_dict.assets["SCL"].href
    # no self link and no href: nothing to resolve against, hrefs stay as they are
    assert normalize_item(raw).assets["B04"].href == "./B04.tif"


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # odc-geo's Affine use
@pytest.mark.filterwarnings("ignore:.*shapely.ops.transform:DeprecationWarning")
def test_normal_form_loads_with_odc_stac(stac_dir):
    import odc.stac as odc_stac

    path = stac_dir / PIXELS / "S2A_29RKH_20200219_0_L2A.LOCAL_DERIVED.json"
    item = normalize_item(json.loads(path.read_text()), href=str(path))
    ds = odc_stac.load([item], bands=["B04", "SCL"], resolution=600)
    assert ds.odc.crs == "EPSG:32629"  # MANIFEST.md section 1a
    assert int(ds.B04.max()) > 0 and set(int(v) for v in ds.SCL.values.ravel()) <= {0, *range(12)}


# ------------------------------------------------------------------------------------------
# both routes give one normal form
# ------------------------------------------------------------------------------------------


def test_raw_dict_and_pystac_item_give_the_same_normal_form(stac_dir):
    items = all_s2_items(stac_dir)
    assert len(items) > 100  # precondition: the item collections of MANIFEST.md hold over 100
    for name, raw in items:
        migrated = via_pystac(raw)
        epsg = raw["properties"]["proj:epsg"]
        assert "proj:epsg" not in migrated.properties, "pystac no longer migrates proj:epsg?"
        assert migrated.properties["proj:code"] == f"EPSG:{epsg}"
        before = migrated.to_dict(transform_hrefs=False)
        want = normalize_item(raw).to_dict(transform_hrefs=False)
        assert normalize_item(migrated).to_dict(transform_hrefs=False) == want, name
        assert migrated.to_dict(transform_hrefs=False) == before, "input Item was modified"
        unmigrated = normalize_item(via_pystac(raw, migrate=False))
        assert unmigrated.to_dict(transform_hrefs=False) == want, name
        again = normalize_item(normalize_item(raw))
        assert again.to_dict(transform_hrefs=False) == want, f"not idempotent: {name}"


# ------------------------------------------------------------------------------------------
# dedupe_items, drop_covered
# ------------------------------------------------------------------------------------------


def _items_2025_07_31(stac_dir: Path) -> list[dict[str, Any]]:
    raws = []
    for path in json_files(stac_dir, "earth_search_v1/itemcollections"):
        if "2025-07-31" in path.name:
            raws += raw_items(path)
    for sub in ("earth_search_v1/items/sentinel-2-l2a", "earth_search_v1/items/sentinel-2-c1-l2a",
                "earth_search_v0/items/sentinel-s2-l2a-cogs"):  # fmt: skip
        raws += [r for p in json_files(stac_dir, sub) if "20250731" in p.name for r in raw_items(p)]
    return [r for r in raws if is_s2_l2a(r)]


def test_dedupe_keeps_one_item_per_acquisition(stac_dir):
    raws = _items_2025_07_31(stac_dir)
    assert {r["collection"] for r in raws} == {
        "sentinel-2-l2a", "sentinel-2-c1-l2a", "sentinel-s2-l2a-cogs",
    }  # fmt: skip
    acquisitions = {(r["properties"]["platform"], expected_tile(r["properties"]),
                     expected_solar_day(r)) for r in raws}  # fmt: skip
    assert len(acquisitions) == 6 < len(raws)  # counted from the raw JSON above
    items = list(normalize_items(raws))
    order = ["sentinel-2-c1-l2a", "sentinel-2-l2a", "sentinel-s2-l2a-cogs"]
    kept = dedupe_items(items, collection_order=order)
    assert len(kept) == 6
    assert {i.collection_id for i in kept} == {"sentinel-2-c1-l2a"}
    assert {i.properties["s2:mgrs_tile"] for i in kept} == {a[1] for a in acquisitions}
    assert [(i.datetime, i.id) for i in kept] == sorted((i.datetime, i.id) for i in kept)
    # v0 first: 20EPT is the only acquisition it has; the rest fall to the next collection
    kept = dedupe_items(items, collection_order=["sentinel-s2-l2a-cogs", "sentinel-2-l2a"])
    by_tile = {i.properties["s2:mgrs_tile"]: i.collection_id for i in kept}
    assert by_tile.pop("20EPT") == "sentinel-s2-l2a-cogs"
    assert set(by_tile.values()) == {"sentinel-2-l2a"}
    # without an order the choice is deterministic, whatever the input order
    first = [i.id for i in dedupe_items(items)]
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    assert [i.id for i in dedupe_items(shuffled)] == first and len(first) == 6


def test_dedupe_prefers_higher_baseline_then_later_product(stac_dir):
    raw = raw_items(find(stac_dir, "earth_search_v0/items/sentinel-s2-l2a-cogs", "24XWF"))[0]
    assert raw["id"] == "S2A_24XWF_20230506_1_L2A"
    older = copy.deepcopy(raw)  # the same product as sequence 0 (ids differ only there)
    older["id"] = "S2A_24XWF_20230506_0_L2A"
    older["properties"]["sentinel:sequence"] = "0"
    kept = dedupe_items(normalize_items([older, raw]))
    assert [i.id for i in kept] == ["S2A_24XWF_20230506_1_L2A"]

    raw = raw_items(find(stac_dir, PC_ITEMS, "T35XQA"))[0]  # 2015 scene, pb 02.12
    reprocessed = copy.deepcopy(raw)
    reprocessed["id"] = raw["id"].replace("_N0212_", "_N0500_") + "_reprocessed"
    reprocessed["properties"]["s2:processing_baseline"] = "05.00"
    kept = dedupe_items(normalize_items([raw, reprocessed]))
    assert [i.id for i in kept] == [reprocessed["id"]]
    assert kept[0].properties["lames:dn_offset"] == 1000
    # an explicit collection order wins over the baseline
    raw["collection"] = "first-choice"
    kept = dedupe_items(normalize_items([raw, reprocessed]), collection_order=["first-choice"])
    assert [i.id for i in kept] == [raw["id"]]


def test_dedupe_keeps_distinct_acquisitions(stac_dir):
    sub = "earth_search_v1/itemcollections"
    raws = [r for p in json_files(stac_dir, sub) if "2023-11-10" in p.name for r in raw_items(p)]
    items = list(normalize_items(raws, on_unsupported="skip"))
    assert len(items) == 10  # the S2 L2A items of the two 2023-11-10 pages (counted in the files)
    assert sorted(i.id for i in dedupe_items(items)) == sorted(i.id for i in items)


def test_drop_covered_same_ground_in_two_utm_zones(stac_dir):
    sub = "planetary_computer/itemcollections"
    raws = [r for p in json_files(stac_dir, sub) if "2019-01-01" in p.name for r in raw_items(p)]
    assert len(raws) == 33  # the four pages of MANIFEST.md's pc_search_2019-01-01 (10+10+10+3)
    tile = {r["id"]: r["properties"]["s2:mgrs_tile"] for r in raws}
    shape = {tile[r["id"]]: shapely.geometry.shape(r["geometry"]) for r in raws}
    # independent: 60VUK (EPSG:32660) lies inside 59VPE (EPSG:32659)
    inside = shape["60VUK"].intersection(shape["59VPE"]).area / shape["60VUK"].area
    assert inside >= 0.99
    items = list(normalize_items(raws))
    kept = drop_covered(items)
    kept_tiles = {i.properties["s2:mgrs_tile"] for i in kept}
    dropped = set(tile.values()) - kept_tiles
    assert "60VUK" in dropped and "59VPE" in kept_tiles
    assert [i.id for i in kept] == [
        i.id for i in items if i.properties["s2:mgrs_tile"] in kept_tiles
    ]
    union = shapely.union_all([shape[t] for t in kept_tiles])
    for t in dropped:  # every dropped footprint really is covered by the kept ones
        assert shape[t].intersection(union).area / shape[t].area >= 0.98, t
    assert len(kept) >= 25  # neighbours in one zone overlap by ~10 %, they are kept (floor)
    # the current-layout copies of the same two items
    pair = [normalize_item(raw_items(find(stac_dir, PC_ITEMS, t))[0]) for t in ("T60VUK", "T59VPE")]
    assert [i.properties["s2:mgrs_tile"] for i in drop_covered(pair)] == ["59VPE"]
    assert drop_covered(pair[:1]) == pair[:1]
    assert len(drop_covered(pair, tolerance=1.0)) == 1 + (inside < 1.0)


def test_drop_covered_keeps_other_days(stac_dir):
    pair = [normalize_item(raw_items(find(stac_dir, PC_ITEMS, t))[0]) for t in ("T60VUK", "T59VPE")]
    other_day = pair[0].clone()
    other_day.properties["lames:solar_day"] = "2019-01-02"
    assert len(drop_covered([other_day, pair[1]])) == 2


# ------------------------------------------------------------------------------------------
# edge cases built from real items, and errors
# ------------------------------------------------------------------------------------------


def _es_v1(stac_dir: Path) -> dict[str, Any]:
    return raw_items(find(stac_dir, "earth_search_v1/items/sentinel-2-l2a", "24MUV"))[0]


def test_crs_only_on_assets(stac_dir):
    raw = _es_v1(stac_dir)
    del raw["properties"]["proj:epsg"]
    for asset in raw["assets"].values():
        if "proj:shape" in asset:
            asset["proj:code"] = "epsg:32724"
    item = normalize_item(raw)
    assert item.properties["proj:code"] == "EPSG:32724"
    assert item.assets["B04"].extra_fields["proj:code"] == "EPSG:32724"


def test_no_crs_anywhere_is_an_error(stac_dir):
    raw = _es_v1(stac_dir)
    del raw["properties"]["proj:epsg"]
    with pytest.raises(InvalidItemError, match=r"S2B_24MUV_20250731_0_L2A.*has no CRS.*proj:code"):
        normalize_item(raw)


def test_conflicting_crs_is_an_error(stac_dir):
    raw = _es_v1(stac_dir)
    raw["properties"]["proj:code"] = "EPSG:32723"
    with pytest.raises(InvalidItemError, match=r"32724.*32723.*disagree"):
        normalize_item(raw)


def test_grid_filled_from_item_level(stac_dir):
    raw = raw_items(find(stac_dir, PC_ITEMS, "T24XWR"))[0]
    b04 = copy.deepcopy(raw["assets"]["B04"])
    raw["properties"]["proj:shape"] = b04["proj:shape"]
    raw["properties"]["proj:transform"] = b04["proj:transform"]
    for asset in raw["assets"].values():
        asset.pop("proj:shape", None)
        asset.pop("proj:transform", None)
        asset.pop("proj:bbox", None)
    item = normalize_item(raw)
    for band in item_band_names(item):
        assert item.assets[band].extra_fields["proj:shape"] == b04["proj:shape"]
        assert item.assets[band].extra_fields["proj:transform"] == b04["proj:transform"]
    del raw["properties"]["proj:transform"]
    with pytest.raises(InvalidItemError, match=r"no pixel grid.*proj:transform"):
        normalize_item(raw)


def test_cdse_style_per_resolution_keys(stac_dir):
    raw = raw_items(find(stac_dir, PC_ITEMS, "T24XWR"))[0]
    raw["links"] = []
    raw["properties"].pop("proj:epsg")
    assets = {}
    for key, asset in raw["assets"].items():
        if key in NATIVE and key != "visual":
            res = NATIVE[key]
            for r in (10, 20, 60):
                if r < res and key not in ("AOT", "WVP", "SCL"):
                    continue
                a = copy.deepcopy(asset)
                a["href"] = f"s3://eodata/Sentinel-2/MSI/L2A/R{r}m/T24XWR_{key}_{r}m.jp2"
                a["proj:code"] = "EPSG:32624"
                t = a["proj:transform"]
                a["proj:transform"] = [r, 0, t[2], 0, -r, t[5]]
                a["proj:shape"] = [109800 // r, 109800 // r]  # a 109.8 km Sentinel-2 tile
                assets[f"{key}_{r}m"] = a
    raw["assets"] = assets
    item = normalize_item(raw)
    assert item.properties["lames:provider"] == "cdse"
    assert item.properties["proj:code"] == "EPSG:32624"
    for band in item_band_names(item):
        asset = item.assets[band]
        assert asset.extra_fields["lames:source_key"] == f"{band}_{NATIVE[band]}m"
        assert asset.href.endswith(f"_{band}_{NATIVE[band]}m.jp2")
    assert "SCL_60m" not in item.assets


def test_https_preferred_over_s3_at_native_resolution(stac_dir):
    raw = _es_v1(stac_dir)
    raw["assets"]["B04_10m"] = raw["assets"].pop("red")
    raw["assets"]["B04"] = copy.deepcopy(raw["assets"]["red-jp2"])  # s3://, same grid
    item = normalize_item(raw)
    assert item.assets["B04"].extra_fields["lames:source_key"] == "B04_10m"
    assert item.assets["B04"].href.startswith("https://")


def test_dn_offset_falls_back_on_raster_bands(stac_dir):
    def strip(raw):
        for key in ("s2:processing_baseline", "s2:product_uri", "s2:datatake_id"):
            raw["properties"].pop(key, None)
        return raw

    c1 = strip(raw_items(find(stac_dir, "earth_search_v1/items/sentinel-2-c1-l2a", "24MUV"))[0])
    assert c1["assets"]["red"]["raster:bands"][0]["offset"] == -0.1
    out = normalize_item(c1).properties
    assert (out["lames:dn_offset"], out["lames:dn_offset_source"]) == (1000, "raster:bands")
    assert out["s2:processing_baseline"] is None
    es = strip(_es_v1(stac_dir))  # offset −0.1 declared, but boa_offset_applied: true
    out = normalize_item(es).properties
    assert (out["lames:dn_offset"], out["lames:dn_offset_source"]) == (0, "raster:bands")
    pc = strip(raw_items(find(stac_dir, PC_ITEMS, "T24XWR"))[0])  # no raster:bands at all
    out = normalize_item(pc).properties
    assert (out["lames:dn_offset"], out["lames:dn_offset_source"]) == (0, "default")


def test_a_local_mirror_is_read_like_the_provider(stac_dir):
    """Provider and offset come from what a local mirror keeps (collection, properties, asset
    keys, ids), not from links or hrefs; no lames:* property short-cuts the detection."""
    items = all_s2_items(stac_dir) + [
        (p.name, raw_items(p)[0]) for p in json_files(stac_dir, PIXELS)
    ]
    providers = set()
    for name, raw in items:
        want = normalize_item(raw).properties
        mirror = copy.deepcopy(raw)
        mirror["links"] = []
        for key, asset in mirror["assets"].items():
            asset["href"] = f"/mirror/{raw['id']}/{key}.tif"
        mirror["properties"]["lames:synthetic"] = True  # an old world's flag: ignored
        got = normalize_item(mirror).properties
        for key in ("lames:provider", "lames:dn_offset", "lames:dn_offset_source",
                    "s2:mgrs_tile", "proj:code"):
            assert got[key] == want[key], (name, key)
        providers.add(got["lames:provider"])
    assert providers == {"earth-search-v1", "earth-search-v0", "planetary-computer"}


def test_bad_inputs_raise_clear_errors(stac_dir):
    with pytest.raises(InvalidItemError, match=r"pystac\.Item or a STAC Item dict, got int"):
        normalize_item(42)  # type: ignore[arg-type]
    raw = _es_v1(stac_dir)
    raw["properties"]["s2:processing_baseline"] = "latest"
    with pytest.raises(InvalidItemError, match=r"'latest'.*'04\.00'"):
        normalize_item(raw)
    with pytest.raises(InvalidItemError, match="normalize_items"):
        dedupe_items([via_pystac(_es_v1(stac_dir))])
    with pytest.raises(InvalidItemError, match="normalize_items"):
        drop_covered([_es_v1(stac_dir)])  # type: ignore[list-item]
    with pytest.raises(InvalidItemError, match=r"tolerance.*\(0, 1\].*1.5"):
        drop_covered([], tolerance=1.5)
    with pytest.raises(InvalidItemError, match="'raise' or 'skip'"):
        normalize_items([], on_unsupported="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidItemError, match="not a string"):
        normalize_items("items.json")
