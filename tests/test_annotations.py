"""LAMES annotations: loading and cleaning the real files, the class table, metadata, the
Ghana ASM schema, blob-id checks and the typed errors for bad input."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import shapely.geometry

import lames_cube.annotations as ann
from lames_cube.annotations import (
    LAMES_COMMIT,
    LAMES_MANIFEST,
    AnnotationRepairWarning,
    check_annotations,
    download_lames,
    git_blob_sha1,
    load_asm,
    load_footprints,
    load_metadata,
    load_sectors,
    load_sites,
    parse_coordinate,
    verify_lames,
)
from lames_cube.classes import (
    SECTOR_CLASSES,
    SECTOR_MINE_CLASSES,
    LamesClass,
    from_sector_index,
    to_sector_index,
    to_site_label,
)
from lames_cube.errors import (
    AnnotationError,
    DataDirError,
    InvalidQueryError,
    MetadataFormatError,
    VectorFileError,
)
from lames_cube.testing.asm import ASM_FIELDS, asm_records, write_asm_geojson

KML_LEFTOVERS = {"timestamp", "begin", "end", "altitudeMode", "tessellate", "extrude",
                 "visibility", "drawOrder", "icon"}


@pytest.fixture(scope="module")
def raw_sectors(lames_dir):
    """The sector file's features as the json module reads them (the independent truth)."""
    return json.loads((lames_dir / ann.SECTORS_FILE).read_text())["features"]


@pytest.fixture(scope="module")
def sectors(lames_dir):
    return load_sectors(lames_dir, report=True)


@pytest.fixture(scope="module")
def metadata(lames_dir):
    return load_metadata(lames_dir, report=True)


# ---------------------------------------------------------------------------- class table


def test_class_enum_values_codes_and_names():
    # mask values, codes and names: annotations/annotation_doc.pdf (DESIGN.md section 5)
    assert [(int(c), c.code) for c in LamesClass] == [
        (0, "-"), (1, "asm"), (2, "lsm"), (3, "lh"), (4, "mf"), (5, "op"), (6, "pp"), (7, "sy"),
        (8, "tsf"), (9, "wr")]
    assert LamesClass.LH.long_name == "heap leaching"
    assert LamesClass.MF.long_name == "mine facility"
    assert LamesClass.TSF.long_name == "tailings storage facility"
    assert LamesClass.WR.long_name == "waste rock dump"
    assert LamesClass.ASM.long_name == "artisanal and small-scale mining"
    assert LamesClass.LSM.long_name == "large-scale mining site"
    for c in LamesClass:
        assert LamesClass.parse(int(c)) is c
        assert LamesClass.parse(c.long_name.upper()) is c
        assert LamesClass.parse(c.name) is c
    with pytest.raises(AnnotationError, match=r"'quarry' is not a LAMES class"):
        LamesClass.parse("quarry")
    with pytest.raises(AnnotationError, match="10 is not a LAMES class"):
        LamesClass.parse(10)


def test_sector_mapping_and_site_rule():
    # the sector task's 8 classes {0, 3..9} -> 0..7: LAMES repository, DESIGN.md section 5
    assert [c.code for c in SECTOR_CLASSES] == ["-", "lh", "mf", "op", "pp", "sy", "tsf", "wr"]
    assert [int(c) for c in SECTOR_MINE_CLASSES] == [3, 4, 5, 6, 7, 8, 9]
    values = np.array([[0, 3, 4, 5], [6, 7, 8, 9]], dtype=np.uint8)
    idx = to_sector_index(values)
    assert idx.dtype == np.uint8 and idx.shape == values.shape
    assert idx.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert np.array_equal(from_sector_index(idx), values)
    assert to_sector_index(np.array([5.0, 0.0])).tolist() == [3, 0]
    with pytest.raises(AnnotationError, match=r"Mask values \[1, 2\] have no sector index"):
        to_sector_index([0, 1, 2, 3])
    assert to_sector_index([1, 2, 9, 12], unknown=255).tolist() == [255, 255, 7, 255]
    with pytest.raises(AnnotationError, match=r"Sector indices \[8\] are outside 0..7"):
        from_sector_index([8])
    assert to_site_label(np.arange(10)).tolist() == [0] + [1] * 9
    with pytest.raises(AnnotationError, match=r"\[10\] are not LAMES classes"):
        to_site_label([10])


# ---------------------------------------------------------------------------- sectors


def test_sector_file_loads_as_1204_valid_polygons_with_the_file_class_counts(sectors, raw_sectors):
    gdf, rep = sectors
    # 1,204 polygons of 139 sites: ../shared/lames/MANIFEST.md (Chile_LSM_sectors.geojson)
    assert len(raw_sectors) == 1204 and len(gdf) == 1204 and rep.n_features == 1204
    assert gdf.crs == "EPSG:4326"
    assert gdf.geometry.is_valid.all()
    assert not gdf.geometry.has_z.any()
    assert set(gdf.geom_type) <= {"Polygon", "MultiPolygon"}
    assert list(gdf.columns) == ["Name", "class", "date", "date2", "system", "site_id", "geometry"]
    assert gdf["class"].dtype == np.int64
    file_counts = collections.Counter(f["properties"]["class"] for f in raw_sectors)
    assert dict(gdf["class"].value_counts()) == dict(file_counts)
    # counted in the raw file with the json module (blob 02333703); MANIFEST.md: "one feature has 0"
    assert file_counts == {4: 414, 9: 320, 7: 158, 5: 143, 6: 79, 8: 58, 3: 31, 0: 1}
    # one site-id type, 139 sites, every Name is <site_id>_<n>
    assert {type(s) for s in gdf.site_id} == {str}
    assert gdf.site_id.nunique() == 139
    assert all(n.startswith(f"{s}_") for n, s in zip(gdf.Name, gdf.site_id, strict=True))
    # padded strings stripped
    for col in ("Name", "system"):
        assert (gdf[col] == gdf[col].str.strip()).all()
    # the distinct `system` values of the raw file, unpadded
    assert set(gdf.system) == {"Maxar Technologies", "CNES / Airbus",
                               "Maxar Technologies, CNES / Airbus"}
    assert KML_LEFTOVERS <= set(rep.dropped_columns)
    assert rep.z_dropped == 1204  # every feature is Polygon Z (MANIFEST.md)


def test_invalid_polygons_are_repaired_and_reported(sectors, raw_sectors):
    gdf, rep = sectors
    raw_invalid = [f["properties"]["Name"] for f in raw_sectors
                   if not shapely.geometry.shape(f["geometry"]).is_valid]
    assert len(raw_invalid) == 10  # MANIFEST.md: "10 geometries are invalid"
    assert rep.repaired_names == raw_invalid
    by_name = gdf.set_index("Name").geometry
    for r in rep.geometry_repairs:
        assert r.reason.startswith("Self-intersection")
        assert r.geom_type_after in ("Polygon", "MultiPolygon")
        assert by_name[r.name].is_valid
        # the repair keeps the polygon: area changes by far less than 1 %
        assert r.area_after_m2 > 0
        assert abs(r.area_change_m2) < 0.01 * r.area_before_m2
    frame = rep.to_frame()
    assert (frame.kind == "geometry").sum() == 10
    assert "10 invalid geometries repaired" in rep.summary()


def test_impossible_dates_become_nat_and_are_reported(sectors, raw_sectors):
    gdf, rep = sectors
    assert gdf["date"].dtype == "datetime64[ns]" and gdf["date2"].dtype == "datetime64[ns]"
    bad = {(r.name, r.column, r.value) for r in rep.bad_dates}
    # the two impossible dates of MANIFEST.md, found in these four features of the raw file
    assert bad == {("2221_21", "date", "2017-13-01"), ("2503_1", "date", "2021-22-07"),
                   ("2504_5", "date2", "2021-22-07"), ("2504_6", "date2", "2021-22-07")}
    g = gdf.set_index("Name")
    for name, col, _ in bad:
        assert pd.isna(g.loc[name, col])
    # every other date parses, as in the file
    raw = {f["properties"]["Name"]: f["properties"] for f in raw_sectors}
    for col in ("date", "date2"):
        present = {n for n, p in raw.items() if p.get(col)}
        parsed = set(g.index[g[col].notna()])
        assert parsed == present - {n for n, c, _ in bad if c == col}
    assert g.loc["817_1", "date"] == pd.Timestamp("2016-01-20")  # raw file, feature 817_1


def test_class_zero_feature_is_kept_and_reported(sectors):
    gdf, rep = sectors
    assert rep.unexpected_class == ("2503_1",)  # the one class-0 feature of the raw file
    assert gdf.loc[gdf.Name == "2503_1", "class"].tolist() == [LamesClass.OTHER]


def test_without_report_the_impossible_dates_are_warned(lames_dir, sectors):
    with pytest.warns(AnnotationRepairWarning, match=r"2221_21 date='2017-13-01'.*2504_6 date2"):
        gdf = load_sectors(lames_dir)
    assert gdf.geometry.equals(sectors[0].geometry)
    # asking for the report instead gives no warning at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_sectors(lames_dir, report=True)


def test_valid_polygons_are_returned_as_in_the_file(sectors, lames_dir):
    """Only the invalid polygons change; the others keep their vertices and orientation."""
    gdf, rep = sectors
    raw = gpd.read_file(lames_dir / ann.SECTORS_FILE)
    flat = shapely.force_2d(raw.geometry.values)
    valid = shapely.is_valid(flat)
    assert valid.sum() == 1194  # 1,204 - the 10 invalid of MANIFEST.md
    assert shapely.equals_exact(gdf.geometry.values[valid], flat[valid], tolerance=0).all()
    repaired = shapely.make_valid(flat[~valid], method="structure", keep_collapsed=False)
    assert shapely.equals_exact(gdf.geometry.values[~valid], repaired, tolerance=0).all()
    assert list(gdf.Name[~valid]) == rep.repaired_names


# ---------------------------------------------------------------------------- sites, footprints


def test_sites_load_without_warning(lames_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sites, rep = load_sites("all", lames_dir, report=True)
        train, test = load_sites("train", lames_dir), load_sites("test", lames_dir)
    assert (len(train), len(test), len(sites)) == (104, 35, 139)  # MANIFEST.md, train/test_sites
    assert list(sites.columns) == ["site_id", "split", "geometry"]
    assert sites.site_id.is_unique and {type(s) for s in sites.site_id} == {str}
    assert sites.geometry.is_valid.all() and not sites.geometry.has_z.any()
    assert rep.bad_dates == () and rep.z_dropped == 139  # 139 MultiPolygon Z sites (MANIFEST.md)
    with pytest.raises(InvalidQueryError, match="split='val'"):
        load_sites("val", lames_dir)


def test_footprints(lames_dir):
    raw = json.loads((lames_dir / ann.FOOTPRINTS_FILE).read_text())["features"]
    fp = load_footprints(lames_dir)
    assert len(fp) == 227 == len(raw)  # MANIFEST.md: 227 Maus et al. footprints, AREA sum 3,759.66
    assert list(fp.columns) == ["site_id", "ISO3_CODE", "COUNTRY_NAME", "AREA", "geometry"]
    assert {type(s) for s in fp.site_id} == {str} and fp.site_id.is_unique
    assert fp.AREA.dtype == np.float64
    assert fp.AREA.sum() == pytest.approx(3759.66, abs=0.005)
    assert fp.AREA.sum() == pytest.approx(sum(f["properties"]["AREA"] for f in raw))
    assert fp.geometry.is_valid.all()
    assert set(fp.site_id) == {str(f["properties"]["fid"]) for f in raw}


# ---------------------------------------------------------------------------- metadata


def test_metadata_loads_as_150_typed_rows(metadata):
    meta, rep = metadata
    assert len(meta) == 150 and meta.site_id.is_unique  # MANIFEST.md: 150 rows keyed by ID
    assert {type(s) for s in meta.site_id} == {str}
    floats = ["latitude", "longitude", "rom_mt_per_year"] + [
        f"{k}_{i}" for k in ("grade", "production") for i in range(1, 5)]
    for col in floats:
        assert meta[col].dtype == np.float64, col
    for col in ("mine_name", "status", "company", "commodity_1", "shareholder_1", "source_url_1"):
        assert isinstance(meta[col].dtype, pd.StringDtype), col
        assert (meta[col].dropna() == meta[col].dropna().str.strip()).all()
    row = meta.set_index("site_id").loc["817"]  # expected values: row ID 817 of metadata.csv
    assert row.mine_name == "Mina Invierno" and row.commodity_1 == "Coal"
    assert row.rom_mt_per_year == 6.0  # "6,0" (decimal comma)
    assert row.latitude == pytest.approx(-(52 + 52 / 60 + 35 / 3600))  # 52°52?35?S
    assert row.longitude == pytest.approx(-(71 + 38 / 60 + 28 / 3600))
    assert row.latitude_text == "52°52?35?S"
    assert pd.isna(row.processing_method)  # "N/A"
    # decimal degrees and quantities with units (row ID 3784 of metadata.csv)
    m = meta.set_index("site_id")
    assert m.loc["3784", "latitude"] == pytest.approx(-22.41)
    assert m.loc["3784", "production_1"] == 195485.0
    assert m.loc["3784", "production_1_unit"] == "t/a"
    assert m.loc["3784", "grade_1"] == pytest.approx(0.34)
    assert m.loc["3784", "grade_1_unit"] == "%"
    assert set(meta.grade_3_unit.dropna()) <= {"ppm", "%"}
    assert set(meta.production_3_unit.dropna()) <= {"kg/a", "t/a", "oz"}
    # every coordinate parsed lies in Chile; the unparseable ones are reported
    lat, lon = meta.latitude.dropna(), meta.longitude.dropna()
    assert lat.between(-56, -17).all() and lon.between(-76, -66).all()
    # metadata.csv: 2 rows without coordinates; 11 latitudes and 9 longitudes unparseable (the 20
    # repairs below; 7 rows lose both): 150 - 2 - 11 = 137, 150 - 2 - 9 = 139, 150 - 2 - 13 = 135
    assert meta.latitude.notna().sum() == 137 and meta.longitude.notna().sum() == 139
    assert (meta.latitude.notna() & meta.longitude.notna()).sum() == 135
    bad = {(r.name, r.column, r.value) for r in rep.value_repairs}
    assert ("2254", "latitude", "25° 84' S") in bad and ("2168", "longitude", "70.81°") in bad
    assert len(bad) == 20
    # metadata.csv has 154 lines: 2 header rows, 150 data rows, an empty row, a stray URL cell
    assert rep.dropped_rows == ("line 153 (empty)", "line 154 (orphan cells)")


def test_metadata_joins_to_sites(metadata, lames_dir):
    meta, _ = metadata
    sites = load_sites(data_dir=lames_dir)
    joined = sites.merge(meta, on="site_id")
    assert len(joined) == 136  # 136 of the 139 sites have metadata
    assert sorted(set(sites.site_id) - set(meta.site_id)) == ["2018", "2911", "3219"]
    # the metadata coordinates point at the sites: most within 50 km of the site polygon
    has = joined[joined.latitude.notna() & joined.longitude.notna()]
    pts = gpd.GeoSeries(gpd.points_from_xy(has.longitude, has.latitude), crs=4326)
    dist_km = (gpd.GeoSeries(has.geometry.values, crs=4326).to_crs(32719)
               .distance(pts.to_crs(32719), align=False) / 1000)
    # 124 = the 136 joined sites less those without both coordinates; 50 km, 120 and 5 km are
    # tolerances of this test (coordinates give a mine's location, not its polygon)
    assert len(has) == 124 and (dist_km < 50).sum() >= 120 and dist_km.median() < 5


@pytest.mark.parametrize(
    "text, axis, expected",
    [("52°52?35?S", "lat", -(52 + 52 / 60 + 35 / 3600)),
     ("71°08?24.8? W", "lon", -(71 + 8 / 60 + 24.8 / 3600)),
     ("27° 06' 16'' S", "lat", -(27 + 6 / 60 + 16 / 3600)),
     (" 22°37'52.89\"S", "lat", -(22 + 37 / 60 + 52.89 / 3600)),
     ("28° 18' S", "lat", -(28 + 18 / 60)),
     ("69.32°W", "lon", -69.32),
     ("10°30'N", "lat", 10.5),
     ("12,5°E", "lon", 12.5),
     ("25° 84' S", "lat", np.nan),    # minutes >= 60
     ("70.81°", "lon", np.nan),       # no hemisphere
     ("22.41°S", "lon", np.nan),      # latitude given as longitude
     ("-", "lat", np.nan),
     ("95°S", "lat", np.nan)],
)
def test_parse_coordinate(text, axis, expected):
    got = parse_coordinate(text, axis)
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected)


def _write_metadata(tmp_path: Path, lames_dir: Path, edit) -> Path:
    text = (lames_dir / ann.METADATA_FILE).read_bytes().decode("latin-1")
    lines = text.split("\n")
    path = tmp_path / "metadata.csv"
    path.write_bytes("\n".join(edit(lines)).encode("latin-1"))
    return path


def test_metadata_with_changed_header_raises(tmp_path, lames_dir):
    renamed = _write_metadata(tmp_path, lames_dir,
                              lambda ls: [ls[0], ls[1].replace("Latitude", "Lat"), *ls[2:]])
    with pytest.raises(MetadataFormatError,
                       match=r"Expected the columns.*Differences: column 7: expected 'Latitude', found 'Lat'"):
        load_metadata(path=renamed)
    one_header = _write_metadata(tmp_path, lames_dir, lambda ls: ls[1:])
    with pytest.raises(MetadataFormatError, match=r"column 1: expected 'ID', found '817'"):
        load_metadata(path=one_header)
    extra = _write_metadata(tmp_path, lames_dir,
                            lambda ls: [ls[0], ls[1].replace(";;", ";Comment;", 1), *ls[2:]])
    with pytest.raises(MetadataFormatError, match="extra columns"):
        load_metadata(path=extra)
    no_groups = _write_metadata(tmp_path, lames_dir, lambda ls: [";" * 40, *ls[1:]])
    with pytest.raises(MetadataFormatError, match=r"group header \(row 1\).*found \{\}"):
        load_metadata(path=no_groups)
    # the published layout saved as UTF-8 still loads the same
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text((lames_dir / ann.METADATA_FILE).read_bytes().decode("latin-1"),
                    encoding="utf-8")
    pd.testing.assert_frame_equal(load_metadata(path=utf8), load_metadata(lames_dir))


def test_metadata_missing_file_is_a_data_dir_error(tmp_path, lames_dir):
    for rel in ("annotations/Chile_LSM_sectors.geojson", "annotations/train_sites.geojson",
                "annotations/test_sites.geojson"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lames_dir / rel, tmp_path / rel)
    with pytest.raises(DataDirError, match=r"has no annotations/metadata\.csv.*download_lames"):
        load_metadata(tmp_path)
    with pytest.raises(DataDirError, match=r"Maus_et_al_subset\.geojson"):
        load_footprints(tmp_path)


# ---------------------------------------------------------------------------- Ghana ASM


def test_asm_file_schema_is_parsed(tmp_path):
    opts = dict(seed=3, impossible_date_at=(2,), other_at=(4,), plain_at=(1, 4), bowtie_at=(5,))
    path = write_asm_geojson(tmp_path / "Ghana_ASM.geojson", n=8, **opts)
    raw = json.loads(path.read_text())["features"]
    assert list(raw[0]["properties"]) == list(ASM_FIELDS)
    assert len(raw[0]["geometry"]["coordinates"][0][0]) == 3  # PolygonZ
    truth = asm_records(8, **opts)
    gdf, rep = load_asm(path, report=True)
    assert list(gdf.columns) == ["Name", "class", "date", "geometry"]
    assert gdf.Name.tolist() == [t["Name"] for t in truth]  # padding stripped
    assert gdf["class"].tolist() == [t["class"] for t in truth]
    assert gdf["class"].tolist() == [1, 1, 1, 1, 0, 1, 1, 1]  # "asm 0" written at other_at=(4,)
    expected_dates = pd.to_datetime(pd.Series([t["date"] for t in truth]))
    pd.testing.assert_series_equal(gdf["date"], expected_dates, check_names=False)
    assert [(r.name, r.value) for r in rep.bad_dates] == [("asm_2", "2021-13-01")]  # impossible_date_at
    assert rep.repaired_names == ["asm_5"] and gdf.geometry.is_valid.all()  # bowtie_at=(5,)
    assert not gdf.has_z.any() and gdf.crs == "EPSG:4326"
    assert {"description", "altitudeMode", "icon"} <= set(rep.dropped_columns)
    with pytest.warns(AnnotationRepairWarning, match=r"asm_2 date='2021-13-01'"):
        load_asm(path)


def test_asm_without_flag_or_description(tmp_path):
    path = write_asm_geojson(tmp_path / "a.geojson", n=3, no_flag_at=(1,))
    with pytest.raises(AnnotationError, match=r"have no 'asm <0\|1>'.*\['asm_1'\].*default_class"):
        load_asm(path)
    assert load_asm(path, default_class=1)["class"].tolist() == [1, 1, 1]
    gdf = gpd.read_file(path).drop(columns="description")
    gdf.to_file(tmp_path / "b.geojson")
    with pytest.raises(AnnotationError, match=r"no 'description' column.*columns: \['Name'"):
        load_asm(tmp_path / "b.geojson")


def test_a_malformed_geojson_file_is_refused_with_what_is_wrong(tmp_path, lames_dir):
    """A file cut short, an empty one, JSON that is not GeoJSON, and a feature whose geometry
    GDAL would silently read as null: each is a VectorFileError naming the path, the problem
    (with line and column, or the feature) and the fix, never a raw pyogrio error."""
    good = write_asm_geojson(tmp_path / "asm.geojson", n=2).read_text()
    cut = tmp_path / "cut.geojson"
    cut.write_text(good[: len(good) // 2])
    with pytest.raises(VectorFileError, match=r"cut\.geojson is not a readable GeoJSON file: the "
                       r"file ends early \(cut short\?\): .* at line \d+, column \d+\. Fix: "
                       r"check that the file is complete GeoJSON") as info:
        load_asm(cut)
    assert isinstance(info.value, AnnotationError) and isinstance(info.value, ValueError)
    (tmp_path / "empty.geojson").write_text("")
    with pytest.raises(VectorFileError, match=r"empty\.geojson .*it is empty \(0 bytes\)"):
        load_asm(tmp_path / "empty.geojson")
    (tmp_path / "list.geojson").write_text("[1, 2]")
    with pytest.raises(VectorFileError, match=r"it holds an array, not a GeoJSON object"):
        load_asm(tmp_path / "list.geojson")
    doc = json.loads(good)
    doc["features"][1]["geometry"]["coordinates"] = "oops"
    (tmp_path / "geom.geojson").write_text(json.dumps(doc))
    with pytest.raises(VectorFileError, match=r"1 of its 2 features are broken \(feature 1: "
                       r"geometry\.coordinates is a string \"oops\", not an array\)"):
        load_asm(tmp_path / "geom.geojson")
    # a LAMES file of the data directory: the fix is to verify and fetch it again
    data = tmp_path / "lames"
    shutil.copytree(lames_dir / "annotations", data / "annotations")
    sectors = data / ann.SECTORS_FILE
    sectors.chmod(0o644)
    sectors.write_bytes(sectors.read_bytes()[:5000])
    with pytest.raises(VectorFileError, match=r"Chile_LSM_sectors\.geojson is not a readable "
                       r"GeoJSON file: the file ends early.*verify_lames\(\).*download_lames"):
        load_sectors(data)


# ---------------------------------------------------------------------------- blob ids, download


def _manifest_table() -> dict[str, tuple[str, int]]:
    text = (Path(__file__).resolve().parents[2] / "shared" / "lames" / "MANIFEST.md").read_text()
    rows = re.findall(r"^\| (\S+) \| ([0-9a-f]{8}) \| ([\d,]+) \|", text, flags=re.M)
    return {p: (b, int(n.replace(",", ""))) for p, b, n in rows}


def test_git_blob_sha1_matches_git():
    # `printf 'hello\n' | git hash-object --stdin` and `git hash-object /dev/null`
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_local_files_match_the_manifest_blob_ids(lames_dir):
    table = _manifest_table()
    assert table == dict(LAMES_MANIFEST)
    blobs = verify_lames(lames_dir)
    assert set(blobs) == set(LAMES_MANIFEST)
    for rel, blob in blobs.items():
        assert blob.startswith(table[rel][0])
    assert shutil.which("git"), "precondition: git is on PATH (to cross-check the blob ids)"
    rel = "annotations/metadata.csv"
    out = subprocess.run(["git", "hash-object", str(lames_dir / rel)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == blobs[rel]


def test_verify_detects_a_changed_file(tmp_path, lames_dir):
    shutil.copytree(lames_dir / "annotations", tmp_path / "annotations")
    (tmp_path / "annotations" / "metadata.csv").chmod(0o644)
    with open(tmp_path / "annotations" / "metadata.csv", "ab") as f:
        f.write(b"\n")
    # blob 5757a0c7: MANIFEST.md
    with pytest.raises(DataDirError, match=r"metadata\.csv.*expected blob 5757a0c7"):
        verify_lames(tmp_path, files=["annotations/metadata.csv"])
    with pytest.raises(InvalidQueryError, match=r"Ghana_ASM.geojson"):
        verify_lames(tmp_path, files=["annotations/Ghana_ASM.geojson"])


class _FakeResponse:
    def __init__(self, content: bytes | None):
        self.content = content or b""
        self.status_code = 200 if content is not None else 404

    def raise_for_status(self):
        if self.status_code != 200:
            raise OSError(f"{self.status_code} Not Found")


class _FakeSession:
    """Serves the local LAMES files at their raw.githubusercontent.com URLs."""

    def __init__(self, root: Path, corrupt: str | None = None):
        self.root, self.corrupt, self.urls = root, corrupt, []

    def get(self, url, timeout):
        self.urls.append(url)
        rel = url.split(f"/{LAMES_COMMIT}/", 1)[1]
        path = self.root / rel
        data = path.read_bytes() if path.is_file() else None
        if data is not None and rel == self.corrupt:
            data = data[:-1]
        return _FakeResponse(data)


def test_download_checks_blob_ids_and_writes_atomically(tmp_path, lames_dir):
    files = ["annotations/metadata.csv", "annotations/test_sites.geojson"]
    session = _FakeSession(lames_dir)
    dest = download_lames(tmp_path / "lames", files=files, session=session)
    assert session.urls[0] == ("https://raw.githubusercontent.com/chenzhaiyu/mineseg/"
                               f"{LAMES_COMMIT}/annotations/metadata.csv")
    assert set(verify_lames(dest, files=files)) == set(files)
    for rel in files:
        assert (dest / rel).read_bytes() == (lames_dir / rel).read_bytes()
    download_lames(dest, files=files, session=session)  # present and correct: not fetched again
    assert len(session.urls) == 2  # the two files, fetched once
    bad = _FakeSession(lames_dir, corrupt="annotations/metadata_stats.xlsx")
    # blob 8da7fbdf: MANIFEST.md
    with pytest.raises(DataDirError, match=r"metadata_stats\.xlsx.*expected blob 8da7fbdf"):
        download_lames(dest, files=["annotations/metadata_stats.xlsx"], session=bad)
    assert not (dest / "annotations" / "metadata_stats.xlsx").exists()
    assert not list(dest.rglob("*.part"))
    with pytest.raises(DataDirError, match="Could not download"):
        download_lames(tmp_path / "x", files=files, session=_FakeSession(tmp_path / "nothing"))
    with pytest.raises(InvalidQueryError, match="blob ids are known only for"):
        download_lames(dest, commit="main")


@pytest.mark.network
def test_download_from_github(tmp_path):
    files = ["annotations/metadata-sources.txt", "annotations/metadata.csv"]
    dest = download_lames(tmp_path, files=files)
    assert set(verify_lames(dest, files=files)) == set(files)


# ---------------------------------------------------------------------------- bad input


def _box_gdf(crs="EPSG:4326", **cols):
    return gpd.GeoDataFrame(cols or {"class": [5]}, geometry=[shapely.box(-70, -24, -69.9, -23.9)],
                            crs=crs)


def test_check_annotations_accepts_the_sectors(sectors):
    gdf = sectors[0]
    assert check_annotations(gdf, value="class") is gdf
    assert check_annotations(gdf, value=1) is gdf
    check_annotations(gdf.to_crs(32719), crs="EPSG:32719", value="class")
    check_annotations(gdf.to_crs(32719), crs=None)


def test_check_annotations_bad_input():
    good = _box_gdf()
    with pytest.raises(AnnotationError, match="empty GeoDataFrame"):
        check_annotations(good.iloc[:0])
    with pytest.raises(AnnotationError, match=r"no 'class' column.*columns present: \['kind', "
                                              r"'geometry'\]"):
        check_annotations(_box_gdf(kind=[5]), value="class")
    with pytest.raises(AnnotationError, match=r"no CRS.*set_crs"):
        check_annotations(good.set_crs(None, allow_override=True))
    metres = gpd.GeoDataFrame({"class": [5]}, crs="EPSG:4326",
                              geometry=[shapely.box(400000, 7300000, 401000, 7301000)])
    with pytest.raises(AnnotationError, match=r"declared CRS EPSG:4326.*a CRS other than declared"):
        check_annotations(metres, value="class")
    degrees_as_utm = good.set_crs("EPSG:32719", allow_override=True)
    with pytest.raises(AnnotationError, match=r"declared CRS EPSG:32719.*a CRS other than declared"):
        check_annotations(degrees_as_utm, crs=None)
    with pytest.raises(AnnotationError, match=r"in EPSG:32719, expected EPSG:4326.*to_crs"):
        check_annotations(good.to_crs(32719))
    with pytest.raises(AnnotationError, match="not \\(Multi\\)Polygons"):
        check_annotations(gpd.GeoDataFrame(geometry=[shapely.Point(-70, -24)], crs=4326))
    with pytest.raises(AnnotationError, match="null or empty geometry"):
        check_annotations(gpd.GeoDataFrame(geometry=[None], crs=4326))
    bowtie = shapely.Polygon([(-70, -24), (-69, -23), (-69, -24), (-70, -23)])
    with pytest.raises(AnnotationError, match=r"invalid.*Self-intersection"):
        check_annotations(gpd.GeoDataFrame(geometry=[bowtie], crs=4326))
    with pytest.raises(AnnotationError, match=r"Column 'class' holds \[300\]"):
        check_annotations(_box_gdf(**{"class": [300]}), value="class")
    with pytest.raises(AnnotationError, match="value=-1"):
        check_annotations(good, value=-1)
    with pytest.raises(AnnotationError, match="GeoDataFrame, got DataFrame"):
        check_annotations(pd.DataFrame({"class": [1]}))


def test_sector_file_without_class_column(tmp_path, lames_dir):
    for rel in ("annotations/train_sites.geojson", "annotations/test_sites.geojson"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lames_dir / rel, tmp_path / rel)
    raw = gpd.read_file(lames_dir / ann.SECTORS_FILE).head(3).drop(columns="class")
    raw.to_file(tmp_path / ann.SECTORS_FILE)
    with pytest.raises(AnnotationError, match=r"no 'class' column \(columns: \['Name'"):
        load_sectors(tmp_path)
