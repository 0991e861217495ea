"""Packaging: pins agree, the import is light, every command has --help, the wheel ships its data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        deps += extra
    return {d.replace(" ", "") for d in deps}


def test_environment_yml_lists_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert conda_python == ["python=3.11"]
    assert {p for p in pip if not p.startswith("-e")} == _pyproject_pins()


def test_every_dependency_is_pinned_and_torch_is_the_cpu_build():
    pins = _pyproject_pins()
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.\-]*", p) for p in pins), pins
    assert "torch==2.13.0" in pins


def test_import_does_not_load_torch():
    code = "import sys, lames_cube; lames_cube.search; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "args",
    [[], ["demo"], ["world"], ["world", "create"], ["world", "check"], ["search"], ["stac"],
     ["stac", "serve"], ["stac", "install"], ["stac", "check"], ["cube"], ["cube", "build"],
     ["cube", "list"]],
)
def test_every_command_has_help(args):
    out = subprocess.run([sys.executable, "-m", "lames_cube.cli", *args, "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: lames-cube")


def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "lames_cube.cli", "search", str(tmp_path / "x.parquet")],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert "CatalogUnreachableError" in out.stderr and "neither an http" in out.stderr


def test_cli_search_on_a_world(world):
    out = subprocess.run(
        [sys.executable, "-m", "lames_cube.cli", "search", str(world), "--datetime", "2022",
         "--max-cloud", "10"], capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip().endswith("items")
    assert "baseline 04.00" in out.stdout


def test_code_passes_ruff():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "lames_cube", "tests", "benchmarks"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_design_entry_points_are_importable():
    """DESIGN.md §7 names (lames_cube.ml comes with the training issue), also after their
    modules were imported (``lames_cube.search`` is both a module and the function)."""
    import lames_cube
    import lames_cube.ml.evaluation
    import lames_cube.ml.training
    import lames_cube.search  # the module import must not shadow the function
    from lames_cube import annotations, grid, metrics, ml, splits
    from lames_cube.synthetic import World

    for fn in (lames_cube.search, lames_cube.build_cube, lames_cube.rasterize,
               annotations.load_sectors, annotations.load_sites, annotations.load_footprints,
               annotations.load_metadata, grid.lames_tiles, grid.site_boxes,
               splits.isolation_split, metrics.confusion_matrix, metrics.scores, World.to_cube,
               ml.train, ml.evaluate):
        assert callable(fn) and fn.__doc__ and "Examples" in fn.__doc__, fn.__name__


# --------------------------------------------------------------------------- package data
def _shipped_recipes() -> list[str]:
    """The recipe names, from the files in the repository's cubes/ folder (independent truth)."""
    return sorted(p.stem for p in (ROOT / "cubes").glob("*.yaml"))


def test_pyproject_lists_every_subpackage_and_maps_cubes():
    """``packages`` is an explicit list (packages.find cannot map cubes/): a new subpackage of
    lames_cube must be added to it, or the wheel would lack it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lames_cube").rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"lames_cube.cubes"}
    assert setuptools["package-dir"] == {"lames_cube.cubes": "cubes"}
    assert setuptools["package-data"]["lames_cube.cubes"] == [
        "*.yaml", "patches/*.yaml", "experiments/*.yaml"]
    # cubes/ holds settings only: the YAML cube recipes, the patch recipes in patches/, the
    # experiment recipes in experiments/ and the __init__.py the editable install needs.
    assert sorted(p.name for p in (ROOT / "cubes").iterdir() if p.name != "__pycache__") == sorted(
        [f"{n}.yaml" for n in _shipped_recipes()] + ["__init__.py", "patches", "experiments"])
    for folder in ("patches", "experiments"):
        assert {p.suffix for p in (ROOT / "cubes" / folder).iterdir()} == {".yaml"}


def test_editable_install_reads_the_recipes_in_the_checkout():
    """In the editable install the recipes are the files of cubes/ themselves: an edit is seen."""
    import lames_cube
    from lames_cube.recipes.cubes import CUBES_DIR, list_recipes

    assert Path(lames_cube.__file__).resolve().is_relative_to(ROOT), (
        f"lames_cube is imported from {lames_cube.__file__}, not from this checkout ({ROOT}): "
        "run the tests with the editable install of this checkout (pip install -e .)")
    assert CUBES_DIR.resolve() == ROOT / "cubes"
    assert list_recipes() == _shipped_recipes()


_WHEEL_CHECK = r"""
import importlib.resources, json, sys
from pathlib import Path
import lames_cube
from lames_cube.recipes.cubes import CUBES_DIR, list_recipes, load_recipe

names = list_recipes()
loaded = {n: load_recipe(n) for n in names}
print(json.dumps({
    "file": lames_cube.__file__,
    "cubes_dir": str(CUBES_DIR),
    "names": names,
    "recipe_names": {n: r.name for n, r in loaded.items()},
    "sources": [str(r.source) for r in loaded.values()],
    "outline": str(importlib.resources.files("lames_cube") / "data" / "chile_ne110m.geojson"),
}))
"""


def test_wheel_install_ships_the_recipes(tmp_path):
    """``pip install .`` (a wheel, not editable) run from another folder finds and loads the
    recipes of cubes/ (shipped as package lames_cube.cubes) and the package data."""
    import sysconfig
    import zipfile

    # Build the wheel offline from a copy of the sources (no build/ or egg-info in the checkout).
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("lames_cube", "cubes"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp_path / "dist")], check=True, env=env, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("lames_cube-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = _shipped_recipes()
    assert recipes
    patch_recipes = {f"lames_cube/cubes/{folder}/{p.name}" for folder in ("patches", "experiments")
                     for p in (ROOT / "cubes" / folder).glob("*.yaml")}
    assert {n for n in names if n.startswith("lames_cube/cubes/")} == {
        f"lames_cube/cubes/{n}.yaml" for n in recipes} | {"lames_cube/cubes/__init__.py"} | \
        patch_recipes
    assert "lames_cube/data/chile_ne110m.geojson" in names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lames_cube").rglob("*.py")}
    assert modules <= names, modules - names
    assert not any(n.startswith(("cubes/", "tests/")) for n in names)

    # A fresh venv; the main venv's site-packages (the dependencies) through a .pth file, whose
    # own .pth files (the editable install's finder) are not processed.
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True,
                   timeout=120)
    python = fresh / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True, env=env).stdout.strip()
    Path(site, "main-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, env=env, timeout=300)

    # Run from an empty folder, so neither the checkout nor its cubes/ is reachable.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([python, "-c", _WHEEL_CHECK], cwd=elsewhere, capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    fresh = fresh.resolve()
    assert Path(got["file"]).resolve().is_relative_to(fresh), got["file"]
    assert Path(got["cubes_dir"]).resolve().is_relative_to(fresh), got["cubes_dir"]
    assert got["names"] == recipes
    assert got["recipe_names"] == {n: n for n in recipes}
    assert all(Path(s).resolve().is_relative_to(fresh) for s in got["sources"]), got["sources"]
    assert Path(got["outline"]).resolve().is_relative_to(fresh)
    assert Path(got["outline"]).is_file()

    cli = subprocess.run([fresh / "bin" / "lames-cube", "cube", "list"], cwd=elsewhere,
                         capture_output=True, text=True, env=env, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert [line.split()[0] for line in cli.stdout.splitlines() if line.strip()] == recipes
