"""Cube recipes: the shipped YAML files load, round-trip, feed search(), and bad ones fail clearly."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
import shapely
import shapely.geometry
import yaml

from lames_cube.annotations import load_sites
from lames_cube.errors import LamesCubeError
from lames_cube.recipes.cubes import (
    CUBES_DIR,
    Area,
    Grid,
    Recipe,
    RecipeError,
    RecipeNotFoundError,
    dump_recipe,
    list_recipes,
    load_recipe,
)
from lames_cube.search import search

SHIPPED = ["chile-mosaic", "chile-sites", "demo", "ghana-asm"]


def _base() -> dict:
    """The demo recipe as a plain mapping, to break one setting at a time."""
    return yaml.safe_load((CUBES_DIR / "demo.yaml").read_text())


def _write(tmp_path, data, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _with(tmp_path, section, **changes):
    """Write the demo recipe with ``section`` (None: top level) updated by ``changes``."""
    data = _base()
    target = data if section is None else data.setdefault(section, {})
    for key, value in changes.items():
        if value is _DROP:
            target.pop(key, None)
        else:
            target[key] = value
    return _write(tmp_path, data)


_DROP = object()


# --------------------------------------------------------------------------- shipped recipes
def test_list_recipes():
    assert list_recipes() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_loads(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.source == CUBES_DIR / f"{name}.yaml"
    assert recipe.grid.tile_size % recipe.grid.patch_size == 0
    assert recipe.chunks.y % recipe.grid.patch_size == 0
    assert recipe.description
    # a path works as well as a name
    assert load_recipe(CUBES_DIR / f"{name}.yaml") == recipe
    assert load_recipe(str(CUBES_DIR / f"{name}.yaml")) == recipe


def test_shipped_recipe_settings():
    demo = load_recipe("demo")
    assert demo.catalog == "world:demo" and demo.catalog_kind == "world"
    assert demo.area == Area("sites", ("2203", "2355", "2504", "2657"))
    assert demo.bands == ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")
    assert demo.grid.is_utm and demo.grid.resolution == 10
    assert (demo.composite.method, demo.composite.period) == ("median", "year")
    assert (demo.chunks.y, demo.chunks.x) == (512, 512)
    assert demo.period.interval == "2020-01-01T00:00:00Z/2023-12-31T23:59:59.999999Z"

    sites = load_recipe("chile-sites")
    assert sites.area == Area("split", "all")
    assert sites.catalog == "https://earth-search.aws.element84.com/v1"
    assert sites.clouds.max_cloud == 15 and sites.composite.method == "least_cloudy"
    assert sites.bands == ("B04", "B03", "B02", "SCL")

    mosaic = load_recipe("chile-mosaic")
    assert mosaic.area.kind == "country" and mosaic.grid.crs == "EPSG:32719"
    assert mosaic.grid.tile_size == 2304 and mosaic.chunks.y == 2304

    ghana = load_recipe("ghana-asm")
    assert ghana.area == Area("bbox", (-2.34, 4.96, -0.46, 6.60))
    assert ghana.grid.crs == "EPSG:32630"
    assert ghana.search_kwargs()["bbox"] == [-2.34, 4.96, -0.46, 6.60]


@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip(tmp_path, name):
    recipe = load_recipe(name)
    path = dump_recipe(recipe, tmp_path / f"{name}.yaml")
    again = load_recipe(path)
    assert again == recipe
    assert again.to_dict() == recipe.to_dict()
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.yaml"]  # no temporary left


def test_round_trip_relative_inputs(tmp_path):
    """A relative geojson area and local catalog resolve against the recipe's folder."""
    (tmp_path / "a").mkdir()
    outline = shapely.box(-69.2, -24.4, -69.0, -24.2)
    (tmp_path / "a" / "aoi.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(outline)}]}))
    data = _base()
    data["area"] = {"geojson": "aoi.geojson"}
    data["catalog"] = "worlds/demo"
    recipe = load_recipe(_write(tmp_path / "a", data, "aoi.yaml"))
    assert recipe.area.value == str((tmp_path / "a" / "aoi.geojson").resolve())
    assert recipe.catalog == str((tmp_path / "a" / "worlds" / "demo").resolve())
    assert recipe.resolve_catalog() == tmp_path.resolve() / "a" / "worlds" / "demo"
    got = shapely.geometry.shape(recipe.search_kwargs()["intersects"])
    assert got.equals(outline)
    # dumped elsewhere, the paths are rewritten relative to the new file and still resolve
    (tmp_path / "b").mkdir()
    path = dump_recipe(recipe, tmp_path / "b" / "copy.yaml")
    assert yaml.safe_load(path.read_text())["area"]["geojson"] == "../a/aoi.geojson"
    assert load_recipe(path) == recipe


def test_defaults(tmp_path):
    data = {"name": "tiny", "catalog": "https://example.com/stac", "area": {"bbox": [0, 0, 1, 1]},
            "period": {"datetime": "2021"}, "bands": ["B04"], "grid": {"crs": "utm", "resolution": 20}}
    recipe = load_recipe(_write(tmp_path, data, "tiny.yaml"))
    assert recipe.collections == ("sentinel-2-l2a",)
    assert recipe.clouds.mask == (3, 8, 9, 10) and recipe.clouds.mask_classes == (1, 3, 8, 9, 10)
    assert recipe.clouds.buffer_m == 60
    assert (recipe.grid.tile_size, recipe.grid.patch_size) == (2304, 256)
    assert (recipe.chunks.y, recipe.chunks.x, recipe.chunks.time) == (1024, 1024, 1)
    assert recipe.composite.method == "none" and recipe.engine == "odc"
    assert recipe.output_path == tmp_path.cwd() / "tiny.zarr"
    kw = recipe.search_kwargs()
    assert kw == {"bbox": [0.0, 0.0, 1.0, 1.0], "datetime": "2021-01-01T00:00:00Z/2021-12-31T23:59:59.999999Z",
                  "collections": ["sentinel-2-l2a"]}
    assert recipe.resolve_catalog() == "https://example.com/stac"


def test_grid_crs_for():
    assert Grid("utm", 10).crs_for(-69.07, -24.27) == "EPSG:32719"
    assert Grid("utm", 10).crs_for(-1.6, 6.2) == "EPSG:32630"
    assert Grid("EPSG:32719", 10).crs_for(-1.6, 6.2) == "EPSG:32719"


# --------------------------------------------------------------------------- search kwargs
def test_chile_sites_search_kwargs_expand_split(lames_dir):
    kw = load_recipe("chile-sites").search_kwargs(data_dir=lames_dir)
    ids = load_sites("all", data_dir=lames_dir)["site_id"].tolist()
    assert len(ids) == 139
    assert kw["sites"] == ids
    assert kw["max_cloud"] == 15
    assert kw["datetime"] == "2021-01-01T00:00:00Z/2022-12-31T23:59:59.999999Z"
    assert kw["collections"] == ["sentinel-2-l2a"]
    assert "bbox" not in kw and "intersects" not in kw


def test_split_train_test(tmp_path, lames_dir):
    path = _with(tmp_path, "area", sites=_DROP, split="test")
    kw = load_recipe(path).search_kwargs(data_dir=lames_dir)
    assert len(kw["sites"]) == 35


def test_chile_mosaic_country_geometry():
    geom = shapely.geometry.shape(load_recipe("chile-mosaic").search_kwargs()["intersects"])
    w, s, e, n = geom.bounds
    assert w == pytest.approx(-75.644, abs=1e-3) and e == pytest.approx(-66.95992, abs=1e-5)
    assert s == pytest.approx(-55.612, abs=1e-3) and n == pytest.approx(-17.580012, abs=1e-5)


def test_demo_search_kwargs_against_small_world(world, lames_dir):
    recipe = load_recipe("demo")
    kw = recipe.search_kwargs()
    assert kw == {"sites": ["2203", "2355", "2504", "2657"],
                  "datetime": "2020-01-01T00:00:00Z/2023-12-31T23:59:59.999999Z",
                  "collections": ["sentinel-2-l2a"]}
    items = search(world, **kw, data_dir=lames_dir)
    assert len(items) > 0
    again = search(world, **recipe.search_kwargs(data_dir=lames_dir))
    assert [i.id for i in again] == [i.id for i in items]
    start, end = dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert all(start <= i.datetime < end for i in items)
    # narrower recipe: one site and one year gives a subset
    data = _base()
    data["area"] = {"sites": ["2203"]}
    data["period"] = {"datetime": "2022"}
    data["clouds"] = {"max_cloud": 50}
    one = Recipe.from_dict(data)
    fewer = search(world, **one.search_kwargs(data_dir=lames_dir))
    assert 0 < len(fewer) < len(items)
    assert all(i.datetime.year == 2022 and i.properties["eo:cloud_cover"] <= 50 for i in fewer)


# --------------------------------------------------------------------------- validation errors
def test_errors_are_value_errors():
    assert issubclass(RecipeError, LamesCubeError) and issubclass(RecipeError, ValueError)
    assert issubclass(RecipeNotFoundError, FileNotFoundError)


def test_missing_recipe_lists_available():
    with pytest.raises(RecipeNotFoundError, match=r"No recipe 'demos'.*Available recipes.*chile-mosaic, "
                       r"chile-sites, demo, ghana-asm.*did you mean 'demo'"):
        load_recipe("demos")
    with pytest.raises(RecipeError, match=r"nowhere\.yaml does not exist.*Available recipes"):
        load_recipe("/tmp/nowhere.yaml")


def test_unknown_key_suggests(tmp_path):
    with pytest.raises(RecipeError, match=r"bad\.yaml: grid\.resolutoin=10 is an unknown key.*"
                       r"did you mean 'grid\.resolution'\?"):
        load_recipe(_with(tmp_path, "grid", resolution=_DROP, resolutoin=10))
    with pytest.raises(RecipeError, match=r"bandz=.* is an unknown key.*did you mean 'bands'\?"):
        load_recipe(_with(tmp_path, None, bandz=["B04"]))
    with pytest.raises(RecipeError, match=r"clouds\.max_clouds=.*did you mean 'clouds\.max_cloud'"):
        load_recipe(_with(tmp_path, "clouds", max_clouds=10))


@pytest.mark.parametrize(("section", "changes", "match"), [
    ("grid", {"resolution": "ten"}, r"grid\.resolution='ten' is a str, not a finite number.*"
                                    r"Allowed: a number > 0 m"),
    ("grid", {"resolution": True}, r"grid\.resolution=True is a bool"),
    ("grid", {"tile_size": 2304.0}, r"grid\.tile_size=2304\.0 is a float, not an integer"),
    ("clouds", {"snow": "yes"}, r"clouds\.snow='yes' is a str, not a boolean.*true or false"),
    ("clouds", {"mask": [3, 12]}, r"clouds\.mask\[1\]=12 is not an SCL class"),
    ("clouds", {"buffer_m": "60m"}, r"clouds\.buffer_m='60m' is a str, not a finite number"),
    (None, {"bands": "B04"}, r"bands='B04' is not a non-empty list"),
    (None, {"name": 7}, r"name=7 is a int, not a non-empty string"),
    (None, {"name": "my cube!"}, r"name='my cube!' has characters.*Fix: use e\.g\. 'my-cube'"),
    (None, {"area": ["2203"]}, r"area=\['2203'\] is a list, not a mapping"),
    ("period", {"start": "last year"}, r"period\.start='last year' is not a date"),
    ("composite", {"method": "medain"}, r"composite\.method='medain' is not a known choice.*"
                                        r"none \| median \| least_cloudy.*did you mean 'median'"),
    (None, {"engine": "gdal"}, r"engine='gdal' is not a known choice.*odc \| stackstac"),
])
def test_wrong_type(tmp_path, section, changes, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(_with(tmp_path, section, **changes))


@pytest.mark.parametrize(("section", "changes", "match"), [
    ("grid", {"resolution": -10}, r"grid\.resolution=-10 is out of range.*a number > 0 m"),
    ("grid", {"resolution": 0}, r"grid\.resolution=0 is out of range"),
    ("grid", {"resampling": "lanczos"}, r"grid\.resampling=.lanczos. is not a resampling method"),
    ("grid", {"patch_size": 0}, r"grid\.patch_size=0 is out of range.*integer >= 1"),
    ("clouds", {"max_cloud": 150}, r"clouds\.max_cloud=150 is out of range.*from 0 to 100 %"),
    ("clouds", {"max_nodata": -1}, r"clouds\.max_nodata=-1 is out of range"),
    ("clouds", {"buffer_m": -30}, r"clouds\.buffer_m=-30 is out of range.*a number >= 0 m"),
    ("chunks", {"time": 0}, r"chunks\.time=0 is out of range"),
])
def test_out_of_range(tmp_path, section, changes, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(_with(tmp_path, section, **changes))


def test_unknown_band(tmp_path):
    with pytest.raises(RecipeError, match=r"bands\[2\]='B13' is an unknown band.*Allowed: .*B8A.*SCL"):
        load_recipe(_with(tmp_path, None, bands=["B02", "B03", "B13"]))
    with pytest.raises(RecipeError, match=r"bands\[0\]='red' is an unknown band.*canonical name 'B04'"):
        load_recipe(_with(tmp_path, None, bands=["red"]))
    with pytest.raises(RecipeError, match=r"bands\[0\]='b8a'.*canonical name 'B8A'"):
        load_recipe(_with(tmp_path, None, bands=["b8a"]))
    with pytest.raises(RecipeError, match=r"bands\[0\]='B8B'.*did you mean 'B8A'"):
        load_recipe(_with(tmp_path, None, bands=["B8B"]))
    with pytest.raises(RecipeError, match=r"bands\[1\]='B04' is listed twice"):
        load_recipe(_with(tmp_path, None, bands=["B04", "B04"]))


def test_two_area_kinds(tmp_path):
    with pytest.raises(RecipeError, match=r"area=.* gives 2 kinds of area at once \(sites, bbox\).*"
                       r"exactly one of sites, split, bbox, country, geojson"):
        load_recipe(_with(tmp_path, "area", bbox=[0, 0, 1, 1]))
    with pytest.raises(RecipeError, match=r"area=\{\} gives no area"):
        load_recipe(_with(tmp_path, "area", sites=_DROP))


def test_bad_area_values(tmp_path):
    with pytest.raises(RecipeError, match=r"area\.bbox=\[1, 0, 0, 1\] is not a valid box.*west >= east"):
        load_recipe(_with(tmp_path, "area", sites=_DROP, bbox=[1, 0, 0, 1]))
    with pytest.raises(RecipeError, match=r"area\.split='dev' is not a known choice.*all \| train \| test"):
        load_recipe(_with(tmp_path, "area", sites=_DROP, split="dev"))
    with pytest.raises(RecipeError, match=r"area\.country='Chilee' is not a country.*did you mean 'Chile'"):
        load_recipe(_with(tmp_path, "area", sites=_DROP, country="Chilee"))
    with pytest.raises(RecipeError, match=r"area\.geojson='missing\.geojson' does not exist.*"
                       r"relative to the recipe's folder"):
        load_recipe(_with(tmp_path, "area", sites=_DROP, geojson="missing.geojson"))
    with pytest.raises(RecipeError, match=r"area\.sites=.* repeats site ids \['817'\]"):
        load_recipe(_with(tmp_path, "area", sites=["817", 817]))
    assert load_recipe(_with(tmp_path, "area", sites=_DROP, country="GHA")).area.value == "GHA"


def test_missing_required(tmp_path):
    with pytest.raises(RecipeError, match=r"bad\.yaml: grid is missing \(required\).*add 'grid'"):
        load_recipe(_with(tmp_path, None, grid=_DROP))
    with pytest.raises(RecipeError, match=r"grid\.crs is missing \(required\)"):
        load_recipe(_with(tmp_path, "grid", crs=_DROP))
    with pytest.raises(RecipeError, match=r"period\.end is missing \(required\)"):
        load_recipe(_with(tmp_path, "period", end=_DROP))
    with pytest.raises(RecipeError, match=r"name is missing"):
        load_recipe(_with(tmp_path, None, name=None))


def test_tile_and_chunks_multiple_of_patch(tmp_path):
    with pytest.raises(RecipeError, match=r"grid\.tile_size=2300 is not a multiple of "
                       r"grid\.patch_size=256.*use 2048 or 2304"):
        load_recipe(_with(tmp_path, "grid", tile_size=2300))
    with pytest.raises(RecipeError, match=r"chunks\.x=500 is not a multiple of grid\.patch_size=256"):
        load_recipe(_with(tmp_path, "chunks", x=500))
    data = _base()
    data["chunks"] = 300
    with pytest.raises(RecipeError, match=r"chunks=300 is not a multiple.*use 256 or 512"):
        load_recipe(_write(tmp_path, data))
    data["chunks"] = 768
    assert load_recipe(_write(tmp_path, data)).chunks.as_dict() == {"time": 1, "y": 768, "x": 768}
    data["grid"]["patch_size"] = 128
    data["grid"]["tile_size"] = 640
    assert load_recipe(_write(tmp_path, data)).grid.tile_size == 640


def test_bad_date_range(tmp_path):
    with pytest.raises(RecipeError, match=r"period\.start='2023-12-31' is after period\.end="
                       r"'2020-01-01': the period starts after it ends.*swap period\.start and period\.end"):
        load_recipe(_with(tmp_path, "period", start=dt.date(2023, 12, 31), end=dt.date(2020, 1, 1)))
    with pytest.raises(RecipeError, match=r"period\.datetime='2022/2021' is not a valid period"):
        load_recipe(_with(tmp_path, "period", start=_DROP, end=_DROP, datetime="2022/2021"))
    with pytest.raises(RecipeError, match=r"gives both datetime and start/end"):
        load_recipe(_with(tmp_path, "period", datetime="2021"))
    # years and months are periods too
    recipe = load_recipe(_with(tmp_path, "period", start=2021, end="2022-06"))
    assert recipe.period.interval == "2021-01-01T00:00:00Z/2022-06-30T23:59:59.999999Z"


def test_impossible_calendar_dates_are_reported_together(tmp_path):
    """Dates YAML reads as dates but no calendar has (PyYAML would raise a bare ValueError):
    each names its key, the value, why and a real date to write; the mistakes of the period
    come in one error."""
    text = (CUBES_DIR / "demo.yaml").read_text()
    assert "  start: 2020-01-01\n  end: 2023-12-31\n" in text

    def period(start, end):
        return _write(tmp_path, text.replace("  start: 2020-01-01\n  end: 2023-12-31\n",
                                             f"  start: {start}\n  end: {end}\n"))

    with pytest.raises(RecipeError, match=r"bad\.yaml: period\.start='2021-02-30' is not a "
                       r"calendar date: February 2021 has 28 days\. Allowed: a real date.*Fix: "
                       r"write e\.g\. start: 2021-02-28\."):
        load_recipe(period("2021-02-30", "2021-12-31"))
    with pytest.raises(RecipeError, match=r"period has 2 problem\(s\):\n  - period\.start="
                       r"'2021-02-29' is not a calendar date: 2021 is not a leap year, so February "
                       r"2021 has 28 days.*\n  - period\.end='2021-13-01' is not a calendar date: "
                       r"month 13 does not exist \(months are 1 to 12\).*end: 2021-12-01"):
        load_recipe(period("2021-02-29", "2021-13-01"))
    with pytest.raises(RecipeError, match=r"period\.end='2021-04-31' is not a calendar date: "
                       r"April 2021 has 30 days"):
        load_recipe(period("'2021-01-01'", "'2021-04-31'"))  # quoted: strings, same check
    with pytest.raises(RecipeError, match=r"period\.datetime='2021-02-30/2022' is not a calendar "
                       r"period: 2021-02-30: February 2021 has 28 days.*'2021-02-28/2022'"):
        load_recipe(_with(tmp_path, "period", start=_DROP, end=_DROP, datetime="2021-02-30/2022"))
    assert load_recipe(period("2024-02-29", "2024-12-31")).period.start == "2024-02-29"  # leap


def test_a_malformed_geojson_area_is_refused_on_load(tmp_path):
    """The area file is read when the recipe is, before any search: a file cut short is a
    RecipeError naming the key, the file, the line and the fix."""
    (tmp_path / "outline.geojson").write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(RecipeError, match=r"area\.geojson='outline\.geojson' is not a readable "
                       r"GeoJSON file \(.*outline\.geojson\): the file ends early \(cut short\?\)"
                       r".* at line 1, column \d+.*Fix: check that the file is complete GeoJSON"):
        load_recipe(_with(tmp_path, "area", sites=_DROP, geojson="outline.geojson"))


def test_bad_catalog_crs_composite(tmp_path):
    with pytest.raises(RecipeError, match=r"catalog='world:moon' names an unknown synthetic world.*world:demo"):
        load_recipe(_with(tmp_path, None, catalog="world:moon"))
    with pytest.raises(RecipeError, match=r"grid\.crs='EPSG:4326' is not a projected CRS in metres"):
        load_recipe(_with(tmp_path, "grid", crs="EPSG:4326"))
    with pytest.raises(RecipeError, match=r"grid\.crs='EPSG:99999999' is not a CRS that pyproj knows"):
        load_recipe(_with(tmp_path, "grid", crs="EPSG:99999999"))
    with pytest.raises(RecipeError, match=r"composite\.period='year' needs a composite method"):
        load_recipe(_with(tmp_path, "composite", method="none"))


def test_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match=r"bad\.yaml: not valid YAML"):
        load_recipe(_write(tmp_path, "name: [demo\n"))
    text = (CUBES_DIR / "demo.yaml").read_text() + "\nbands: [B04]\n"
    with pytest.raises(RecipeError, match=r"not valid YAML.*key 'bands' is given twice"):
        load_recipe(_write(tmp_path, text))
    with pytest.raises(RecipeError, match=r"\(top level\)=\['a'\] is a list, not a mapping"):
        load_recipe(_write(tmp_path, "- a\n"))


def test_from_dict_does_not_mutate():
    data = _base()
    before = copy.deepcopy(data)
    Recipe.from_dict(data)
    assert data == before
