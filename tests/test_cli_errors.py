"""Bad input on the command line: exit code 2 and ``lames-cube: error: <Type>: <message>``.

``cli(argv)`` runs ``lames-cube`` in this process, checks the exit code and the one error line,
and raises what the line reports as ``cli_error(<Type>)`` so that the tests (and the README's
bad-input table) assert the type and the message the user reads.
"""

from __future__ import annotations

import re

import pytest

from lames_cube.cli import main

_CLASSES: dict[str, type[Exception]] = {}
_LINE = re.compile(r"^lames-cube: error: (?P<type>\w+): (?P<message>.+)$", re.DOTALL)


def cli_error(name: str) -> type[Exception]:
    """The exception class standing for the error type ``name`` printed by the CLI."""
    return _CLASSES.setdefault(name, type(name, (Exception,), {}))


def cli(argv: list[str], capsys) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit code {code} for {argv}; stderr: {err}"
    found = _LINE.match(err.splitlines()[-1] if err else "")
    assert found, f"no 'lames-cube: error:' line for {argv}: {err!r}"
    raise cli_error(found["type"])(found["message"])


def test_an_unknown_cube_recipe(capsys):
    with pytest.raises(cli_error("RecipeNotFoundError"),
                       match=r"No recipe 'no-such-recipe'.*Available recipes"):
        cli(["cube", "build", "no-such-recipe", "--quiet"], capsys)


def test_a_catalogue_that_does_not_exist(capsys, tmp_path):
    with pytest.raises(cli_error("CatalogUnreachableError"),
                       match=r"is neither an http\(s\) STAC API URL"):
        cli(["search", str(tmp_path / "nowhere")], capsys)


def test_a_bbox_west_of_its_east(capsys, world):
    with pytest.raises(cli_error("InvalidBBoxError"), match=r"west >= east"):
        cli(["search", str(world), "--bbox", "-69", "-25", "-70", "-24"], capsys)


def test_an_unknown_site(capsys, world):
    with pytest.raises(cli_error("UnknownSiteError"), match=r"Unknown LAMES site id"):
        cli(["search", str(world), "--sites", "no-such-site"], capsys)


def test_an_unknown_patch_recipe(capsys):
    with pytest.raises(cli_error("PatchRecipeNotFoundError"),
                       match=r"No patch recipe 'nope'.*Shipped patch recipes"):
        cli(["patches", "build", "nope", "--quiet"], capsys)


def test_an_unknown_experiment(capsys):
    with pytest.raises(cli_error("ExperimentNotFoundError"),
                       match=r"no experiment recipe 'nope'; the shipped ones are"):
        cli(["train", "nope"], capsys)


def test_a_checkpoint_that_does_not_exist(capsys, tmp_path):
    with pytest.raises(cli_error("CheckpointError"),
                       match=r"checkpoint '.*missing\.pt' does not exist"):
        cli(["infer", "chile-mosaic", "--checkpoint", str(tmp_path / "missing.pt"),
             "--tiles", "r0c0", "--quiet"], capsys)
