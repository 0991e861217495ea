"""Shared fixtures: the LAMES data directory and small synthetic worlds (written once per run)."""

from __future__ import annotations

import pytest

from lames_cube.config import find_data_dir
from lames_cube.testing import small_world, stac_data_dir


@pytest.fixture(scope="session")
def lames_dir():
    """The LAMES annotation directory; a missing one fails the tests that need it."""
    return find_data_dir()


@pytest.fixture(scope="session")
def stac_dir():
    """The folder of real STAC item JSON and the real L2A tile."""
    return stac_data_dir()


@pytest.fixture(scope="session")
def world(tmp_path_factory, lames_dir):
    """A small Earth Search style world over two real LAMES sites."""
    return small_world(tmp_path_factory.mktemp("worlds") / "es", data_dir=lames_dir, workers=2)


@pytest.fixture(scope="session")
def world_pc(tmp_path_factory, lames_dir):
    """The same world in Planetary Computer style."""
    return small_world(tmp_path_factory.mktemp("worlds") / "pc", data_dir=lames_dir, workers=2,
                       style="planetary-computer")


@pytest.fixture(scope="session")
def stac_server_env():
    """The STAC API server venv of a host prepared by ``lames-cube stac install``.

    Only checks (apt-get, useradd and pip are never run from the tests): an unprepared host
    fails every test that uses it, loudly, with the command to run; it never skips.
    """
    from lames_cube.errors import StacServerError
    from lames_cube.services import check_server_env

    try:
        return check_server_env()
    except StacServerError as exc:
        problem = str(exc)
    pytest.fail(f"The STAC API tests need a prepared host. {problem}", pytrace=False)
