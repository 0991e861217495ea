"""The LAMES site-detection patch sets as one command, on the small test world."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from lames_cube.recipes.patchsets import (
    PatchRecipeError,
    build_patch_sets,
    list_patch_recipes,
    load_patch_recipe,
    parse_patch_recipe,
)


def _recipes(tmp_path, world, n=6):
    from lames_cube.recipes.cubes import load_recipe

    cubes = yaml.safe_load(open(load_recipe("demo").source).read())
    cubes.update({"name": "small", "catalog": str(world), "area": {"sites": ["2203", "2355"]},
                  "period": {"start": "2021-01-01", "end": "2022-12-31"},
                  "bands": ["B04", "B03", "B02", "SCL"],
                  "chunks": {"y": 512, "x": 512, "time": 1}, "output": str(tmp_path / "cubes")})
    (tmp_path / "cubes.yaml").write_text(yaml.safe_dump(cubes))
    patches = yaml.safe_load(open(load_patch_recipe("demo-patches").source).read())
    patches.update({"cubes": str(tmp_path / "cubes.yaml"), "output": str(tmp_path / "sets"),
                    "extra": {"n": n, "rules": ["blind", "checked"], "buffer_m": 500,
                              "seed": 3}})
    path = tmp_path / "patches.yaml"
    path.write_text(yaml.safe_dump(patches))
    return path


@pytest.mark.slow  # builds the demo cubes
def test_patch_sets_hold_the_cubes_windows_with_the_lames_split(tmp_path, world, lames_dir):
    from lames_cube import rasterize
    from lames_cube.annotations import load_sites
    from lames_cube.io import open_store
    from lames_cube.patches import extract_patches, patch_table
    from lames_cube.patchset import open_patch_set
    from lames_cube.sampling import touches

    summary = build_patch_sets(_recipes(tmp_path, world), data_dir=lames_dir, progress=False)
    sites = load_sites("all", data_dir=lames_dir)
    split = dict(zip(sites.site_id, sites.split, strict=True))
    ds = open_patch_set(tmp_path / "sets" / "sites.zarr")
    assert set(ds.site_id.values) == {"2203", "2355"}
    for site in ("2203", "2355"):  # independent: cut the store again, burn the polygons again
        refl = open_store(tmp_path / "cubes" / f"site-{site}.zarr").reflectance.isel(year=-1)
        want = extract_patches(refl, patch_table(refl, size=256),
                               labels=rasterize(sites, like=refl))
        mine = ds.site_id.values == site
        assert np.array_equal(ds.image.values[mine], want.image.values)
        assert np.array_equal(ds.mask.values[mine], want.mask.values)
        (got,) = set(ds.split.values[mine])  # one split per site, never per patch
        assert got == "test" if split[site] == "test" else got in ("train", "validation")
        listed = {"test": summary["test_sites"], "validation": summary["validation_sites"],
                  "train": summary["train_sites"]}
        assert site in listed[got]
    assert ds.mask.values.max() == 1 and 0 < ds.mask.values.mean() < 1
    counts = summary["counts"]
    assert sum(v["windows"] for v in counts["sites"].values()) == ds.sizes["sample"]
    checked = open_patch_set(tmp_path / "sets" / "checked.zarr")
    blind = open_patch_set(tmp_path / "sets" / "blind.zarr")
    assert checked.sizes["sample"] == blind.sizes["sample"] == 6
    assert (checked.mask.values == 0).all() and (checked.image.values > 0).all()
    assert set(checked.split.values) == {"train"} and set(checked.kind.values) == {"checked"}
    assert counts["checked"]["train"]["near a mine or test box"] == 0
    from lames_cube.tables import read_table

    windows = read_table(tmp_path / "sets" / "checked-windows.parquet")
    assert not touches(windows, sites, buffer_m=500).any()
    # A rerun resumes: nothing rewritten, same summary.
    again = build_patch_sets(_recipes(tmp_path, world), data_dir=lames_dir, progress=False)
    assert again == summary


@pytest.mark.slow  # whole patch recipes through the CLI
def test_cli_patches_build_prints_counts(tmp_path, world, lames_dir):
    path = _recipes(tmp_path, world, n=2)
    run = subprocess.run([sys.executable, "-m", "lames_cube.cli", "--data-dir", str(lames_dir),
                          "patches", "build", str(path)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "split" in run.stdout and "checked" in run.stdout and "blind" in run.stdout
    listed = subprocess.run([sys.executable, "-m", "lames_cube.cli", "patches", "list"],
                            capture_output=True, text=True, check=True).stdout
    assert all(name in listed for name in list_patch_recipes())


def test_patch_recipe_mistakes_are_reported_together():
    with pytest.raises(PatchRecipeError, match=r"4 problem\(s\)") as info:
        parse_patch_recipe({"kind": "patches", "name": "x", "cubes": "demo", "size": -3,
                            "task": "pixels", "extra": {"n": 1, "rules": ["shuf"]},
                            "colour": 1})
    text = str(info.value)
    assert "size=-3 is out of range" in text and "task='pixels' is not a known choice" in text \
        and "extra.rules[0]='shuf'" in text and "colour=1 is an unknown key" in text
    with pytest.raises(PatchRecipeError, match="No patch recipe 'nope'"):
        load_patch_recipe("nope")
    assert load_patch_recipe("lames-site-patches").extra.n == 10_000


# ------------------------------------------------------------------ sites_from: world
def _world_recipe(tmp_path, world, name="w", **changes):
    """A world-mode patch recipe over the small test world (only its catalog is used)."""
    from lames_cube.recipes.cubes import load_recipe

    cubes = yaml.safe_load(open(load_recipe("demo").source).read())
    cubes.update({"name": "small", "catalog": str(world), "area": {"sites": ["2203", "2355"]},
                  "output": str(tmp_path / "cubes")})
    (tmp_path / "cubes.yaml").write_text(yaml.safe_dump(cubes))
    patches = {"kind": "patches", "name": name, "cubes": str(tmp_path / "cubes.yaml"),
               "sites_from": "world", "sites": ["2203", "2355"], "task": "site", "size": 256,
               "stride": 256, "bands": ["B04", "B08"], "split": {"validation": 0.4, "seed": 5},
               "output": str(tmp_path / name), **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(patches))
    return path


def _window_geobox(grid, row, col, size):
    """The window's grid: a slice of the source grid stored in the patch set's attrs."""
    from affine import Affine
    from odc.geo.geobox import GeoBox

    whole = GeoBox(tuple(grid["shape"]), Affine(*grid["affine"]), grid["crs"])
    return whole[row:row + size, col:col + size]


def _centres_inside(gbox, polygons_3857):
    """1 where the pixel centre is inside a polygon (the all_touched=False rule), by shapely."""
    import shapely

    ys, xs = np.mgrid[0:gbox.shape[0], 0:gbox.shape[1]] + 0.5
    a = gbox.affine
    x, y = a.c + xs * a.a, a.f + ys * a.e
    union = shapely.union_all(polygons_3857.geometry.values)
    return shapely.contains_xy(union, x, y).astype(np.uint8)


@pytest.mark.slow  # renders every LAMES box
def test_world_mode_renders_the_lames_site_boxes_with_the_split(tmp_path, world, lames_dir):
    import dataclasses

    from lames_cube.annotations import load_sites
    from lames_cube.grid import lames_geobox, site_boxes
    from lames_cube.patches import patch_table
    from lames_cube.patchset import open_patch_set
    from lames_cube.splits import validation_split
    from lames_cube.synthetic import World
    from lames_cube.synthetic.realism import open_world

    # 2203 test, 2355 (k=2) and two small train neighbours the small world does not draw: the
    # world is widened to every LAMES site.
    chosen = ["2203", "2355", "2356", "2219"]
    path = _world_recipe(tmp_path, world, sites=chosen,
                         extra={"n": 2, "rules": ["blind", "checked"], "seed": 3})
    recipe = load_patch_recipe(path)
    summary = build_patch_sets(recipe, data_dir=lames_dir, progress=False)
    sites = load_sites("all", data_dir=lames_dir)
    boxes = site_boxes(sites[sites.site_id.isin(chosen)]).set_index("site_id")
    ds = open_patch_set(tmp_path / "w" / "sites.zarr")
    assert list(ds.band.values) == ["B04", "B08"] and set(ds.kind.values) == {"site"}
    assert ds.sizes["sample"] == int((boxes.k ** 2).sum()) == 7
    # the split: whole sites; test = the isolation split, validation = validation_split
    train_ids = sorted(set(chosen) - {"2203"})
    want_train, want_val = validation_split(train_ids, 0.4, seed=5)
    assert summary["test_sites"] == ["2203"] and summary["validation_sites"] == want_val
    assert summary["train_sites"] == want_train
    want_split = {"2203": "test", **{s: "validation" for s in want_val},
                  **{s: "train" for s in want_train}}
    base = open_world(world)
    drawn = World(dataclasses.replace(base.spec, area="lames", site_ids=None),
                  data_dir=lames_dir)
    assert summary["world"]["widened_to_every_lames_site"] is True
    assert summary["world"]["digest"] == drawn.digest() != base.digest()
    sites_3857 = sites.to_crs("EPSG:3857")
    for source, grid in enumerate(ds.attrs["grids"]):
        pick = ds.source.values == source
        (site,) = set(ds.site_id.values[pick])
        gbox = lames_geobox(boxes.loc[site])  # exactly the LAMES site box's grid
        assert grid["crs"] == "EPSG:3857" and tuple(grid["shape"]) == tuple(gbox.shape)
        assert np.allclose(grid["affine"], tuple(gbox.affine)[:6], rtol=0, atol=1e-9)
        table = patch_table(gbox, size=256)
        assert list(ds.row.values[pick]) == list(table.row)
        assert list(ds.col.values[pick]) == list(table.col)
        assert set(ds.split.values[pick]) == {want_split[site]}
        for i in np.flatnonzero(pick):
            window = _window_geobox(grid, int(ds.row.values[i]), int(ds.col.values[i]), 256)
            mask = _centres_inside(window, sites_3857)
            assert np.array_equal(ds.mask.values[i], mask)
            assert ds.mine_fraction.values[i] == mask.mean()
            pixels = drawn.read(window, None)  # an independent render of the window
            assert np.array_equal(ds.image.values[i], np.stack([pixels["B04"],
                                                                 pixels["B08"]]))
    assert ds.mask.values.max() == 1 and 0 < ds.mask.values.mean() < 1
    blind = open_patch_set(tmp_path / "w" / "blind.zarr")
    assert list(blind.band.values) == ["B04", "B08"] and blind.sizes["sample"] == 2


def test_world_mode_sector_task_masks_are_the_8_class_index(tmp_path, world, lames_dir):
    import rasterio.features

    from lames_cube.annotations import load_sectors
    from lames_cube.classes import to_sector_index
    from lames_cube.patchset import open_patch_set
    from lames_cube.synthetic.realism import open_world

    path = _world_recipe(tmp_path, world, name="s", task="sector", stride=128)
    summary = build_patch_sets(path, data_dir=lames_dir, progress=False)
    base = open_world(world)
    assert summary["world"]["widened_to_every_lames_site"] is False  # it draws both sites
    assert summary["world"]["digest"] == base.digest()
    ds = open_patch_set(tmp_path / "s" / "sites.zarr")
    counts = {s: int((ds.site_id.values == s).sum()) for s in ("2203", "2355")}
    assert counts == {"2203": 1, "2355": 9}  # k = 1 and 2: (2k - 1)^2 windows at stride 128
    assert summary["test_sites"] == ["2203"] and set(ds.split.values) == {"test", "train"}
    sectors = load_sectors(data_dir=lames_dir, report=True)[0].to_crs("EPSG:3857")
    index = to_sector_index(sectors["class"].to_numpy(), unknown=0)
    for i in range(ds.sizes["sample"]):
        grid = ds.attrs["grids"][int(ds.source.values[i])]
        window = _window_geobox(grid, int(ds.row.values[i]), int(ds.col.values[i]), 256)
        want = rasterio.features.rasterize(
            zip(sectors.geometry.values, index.tolist(), strict=True), out_shape=window.shape,
            transform=window.affine, fill=0, all_touched=False, dtype="uint8")
        assert np.array_equal(ds.mask.values[i], want)
        if i in (1, 5):  # windows across the 128-px render chunks: one render of the window
            pixels = base.read(window, None)
            assert np.array_equal(ds.image.values[i][1], pixels["B08"])
    assert ds.mask.values.max() <= 7 and len(np.unique(ds.mask.values)) > 2
    with pytest.raises(PatchRecipeError, match=r"sites: \['nope'\] are not LAMES sites"):
        build_patch_sets(_world_recipe(tmp_path, world, name="bad", sites=["nope"]),
                         data_dir=lames_dir, progress=False)


def test_new_patch_recipe_keys_are_checked_together():
    base = {"kind": "patches", "name": "x", "cubes": "demo"}
    with pytest.raises(PatchRecipeError, match=r"3 problem\(s\)") as info:
        parse_patch_recipe({**base, "sites_from": "mosaic", "bands": [], "sites": "some"})
    text = str(info.value)
    assert "sites_from='mosaic' is not a known choice" in text and "bands=[] is not a " \
        "non-empty list" in text and "sites='some' is not a non-empty list" in text
    with pytest.raises(PatchRecipeError, match=r"3 problem\(s\)") as info:
        parse_patch_recipe({**base, "sites_from": "world", "bands": ["red", "B04", "B04"],
                            "sites": ["2203", None]})
    text = str(info.value)
    assert "lists ['B04'] more than once" in text and "lists ['red'], which the synthetic " \
        "world does not render" in text and "sites[1]=None is a NoneType" in text
    with pytest.raises(PatchRecipeError, match="needs sites_from: world"):
        parse_patch_recipe({**base, "sites": ["2203"]})
    cubes = parse_patch_recipe({**base, "bands": ["SCL"]})  # cubes: any band of the cubes
    assert cubes.band_list == ["SCL"] and cubes.sites_from == "cubes" and cubes.sites is None
    for name, task, stride, n in (("lames-world-site-patches", "site", 256, 10_000),
                                  ("lames-world-sector-patches", "sector", 128, 0)):
        recipe = load_patch_recipe(name)
        assert (recipe.sites_from, recipe.task, recipe.stride, recipe.extra.n, recipe.sites) \
            == ("world", task, stride, n, None)
        assert recipe.cubes == "demo" and recipe.seed == 1117 and recipe.validation == 0.2
