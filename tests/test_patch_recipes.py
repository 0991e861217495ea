"""The LAMES site-detection patch sets as one command, on the small test world."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from lames_cube.patch_recipes import (
    PatchRecipeError,
    build_patch_sets,
    list_patch_recipes,
    load_patch_recipe,
    parse_patch_recipe,
)


def _recipes(tmp_path, world, n=6):
    from lames_cube.recipes import load_recipe

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
    assert "size: -3" in text and "task: 'pixels'" in text and "extra.rules" in text \
        and "unknown keys ['colour']" in text
    with pytest.raises(PatchRecipeError, match="No patch recipe 'nope'"):
        load_patch_recipe("nope")
    assert load_patch_recipe("lames-site-patches").extra.n == 10_000
