"""Where lames_cube finds its data: the LAMES annotation directory and its cache.

The LAMES files are never copied into the package. They are found, in this order, at
``data_dir=`` passed to a function, the ``LAMES_DATA_DIR`` environment variable, or a
``shared/lames`` folder beside the repository checkout (the development layout).
"""

from __future__ import annotations

import os
from pathlib import Path

from lames_cube.errors import DataDirError

#: Files that make a directory a LAMES annotation directory.
LAMES_FILES = (
    "annotations/Chile_LSM_sectors.geojson",
    "annotations/train_sites.geojson",
    "annotations/test_sites.geojson",
)

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _candidates() -> list[Path]:
    return [_REPO_ROOT.parent / "shared" / "lames", Path.cwd().parent / "shared" / "lames"]


def find_data_dir(data_dir: str | os.PathLike | None = None, *, required: bool = True) -> Path | None:
    """Return the LAMES annotation directory.

    Parameters
    ----------
    data_dir
        An explicit directory. When None, ``LAMES_DATA_DIR`` is used, then ``../shared/lames``
        beside the repository.
    required
        When True, a missing or incomplete directory raises; when False it returns None.

    Returns
    -------
    pathlib.Path or None
        The directory that holds ``annotations/*.geojson``.

    Raises
    ------
    DataDirError
        The directory given (or found) lacks the LAMES files; the message lists what is missing.

    Examples
    --------
    >>> find_data_dir("/nonexistent", required=False) is None
    True
    """
    explicit = data_dir if data_dir is not None else os.environ.get("LAMES_DATA_DIR")
    if explicit:
        path = Path(explicit).expanduser()
        missing = [f for f in LAMES_FILES if not (path / f).is_file()]
        if not missing:
            return path.resolve()
        if not required:
            return None
        source = "data_dir" if data_dir is not None else "LAMES_DATA_DIR"
        raise DataDirError(
            f"{source}={str(path)!r} is not a LAMES data directory: missing {', '.join(missing)}. "
            "Point it at the folder that holds annotations/Chile_LSM_sectors.geojson "
            "(e.g. export LAMES_DATA_DIR=../shared/lames)."
        )
    for path in _candidates():
        if all((path / f).is_file() for f in LAMES_FILES):
            return path.resolve()
    if not required:
        return None
    raise DataDirError(
        "No LAMES data directory found: LAMES_DATA_DIR is not set and no shared/lames folder lies "
        f"beside the repository (looked in {', '.join(str(p) for p in _candidates())}). "
        "Set LAMES_DATA_DIR to the folder that holds annotations/Chile_LSM_sectors.geojson."
    )


def cache_dir() -> Path:
    """Return lames_cube's cache directory (``LAMES_CACHE_DIR`` or ``~/.cache/lames_cube``)."""
    path = Path(os.environ.get("LAMES_CACHE_DIR", Path.home() / ".cache" / "lames_cube"))
    path.mkdir(parents=True, exist_ok=True)
    return path
