"""Packaging: pins agree, the import is light, every command has --help."""

from __future__ import annotations

import re
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
     ["stac", "serve"], ["stac", "install"]],
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
    import lames_cube.search  # the module import must not shadow the function
    from lames_cube import annotations, grid, metrics, splits
    from lames_cube.synthetic import World

    for fn in (lames_cube.search, lames_cube.build_cube, lames_cube.rasterize,
               annotations.load_sectors, annotations.load_sites, annotations.load_footprints,
               annotations.load_metadata, grid.lames_tiles, grid.site_boxes,
               splits.isolation_split, metrics.confusion_matrix, metrics.scores, World.to_cube):
        assert callable(fn) and fn.__doc__ and "Examples" in fn.__doc__, fn.__name__
