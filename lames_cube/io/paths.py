"""Store folders: the path a store argument names, what may be deleted, and the writers' guard.

A store is a local path or an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...; credentials
come from fsspec's usual settings). :func:`store_path` turns the argument into a
:class:`pathlib.Path` or a :class:`lames_cube._fs.UrlPath`; :func:`remove_store` and
:func:`clear_except_ledger` delete only what looks like a store; :func:`store_writer` wraps every
store writer (cubes, patch sets) with the writable-folder check and the full-disk message.

Examples
--------
>>> store_path("cube.zarr"), store_path("memory://bucket/cube.zarr")
(PosixPath('cube.zarr'), UrlPath('memory://bucket/cube.zarr'))
"""

from __future__ import annotations

import functools
from typing import Any

from lames_cube._atomic import check_writable, raise_if_disk_full
from lames_cube._fs import StorePath, UrlPath, as_store_path, is_empty_dir, remove_tree
from lames_cube.errors import StoreError, StoreExistsError
from lames_cube.io.ledger import LEDGER_NAME, Ledger

__all__ = [
    "claim_folder",
    "clear_except_ledger",
    "remove_store",
    "restart_if_killed_before_begin",
    "store_path",
    "store_writer",
]

_LEDGER_DIR = LEDGER_NAME.split("/")[0]


def store_path(store: Any) -> StorePath:
    """The location of a store: a local path, or a :class:`~lames_cube._fs.UrlPath` for an
    fsspec URL (``file://`` URLs are local).

    Raises
    ------
    lames_cube.errors.StoreError
        ``store`` is neither a path nor a URL.
    """
    try:
        return as_store_path(store)
    except TypeError:
        raise StoreError(f"store must be a path (str or pathlib.Path) or an fsspec URL such as "
                         f"'s3://bucket/cube.zarr'; got {type(store).__name__}.") from None


def remove_store(path: StorePath) -> None:
    """Delete a store (only something that looks like one: a safety net against typos).

    Raises
    ------
    lames_cube.errors.StoreError
        ``path`` is a file, or a non-empty folder with neither ``zarr.json`` nor a ledger.
    """
    if path.is_file() or (not (path / "zarr.json").exists() and not (path / LEDGER_NAME).exists()
                          and not is_empty_dir(path)):
        raise StoreError(f"refusing to delete {str(path)!r}: it is not a Zarr store (no zarr.json "
                         f"nor {LEDGER_NAME}). Pick another path or remove it yourself.")
    remove_tree(path)


def claim_folder(path: StorePath, mode: str, same: str) -> None:
    """Make ``path`` the folder of a new store: a store there is replaced with ``mode="w"`` and
    refused otherwise (``same`` names what a resume would need: "the same cube"); the folder is
    created.

    Raises
    ------
    lames_cube.errors.StoreExistsError
        A store exists and ``mode`` is not ``"w"``.
    """
    if path.exists() and not is_empty_dir(path):
        if mode == "w":
            remove_store(path)
        else:
            raise StoreExistsError(
                f"a store already exists at {str(path)!r}. Pass mode='w' to replace it, "
                f"mode='resume' to finish an interrupted write of {same}, or another path."
            )
    path.mkdir(parents=True, exist_ok=True)


def clear_except_ledger(path: StorePath) -> None:
    """Delete everything in a store but its ledger's folder (to lay a store out again)."""
    for child in path.iterdir():
        if child.name == _LEDGER_DIR:
            continue
        if child.is_dir():
            remove_tree(child)
        else:
            child.unlink()


def restart_if_killed_before_begin(path: StorePath, mode: str) -> bool:
    """Before a resume: a store whose creation was killed before its job was recorded holds
    nothing but the ledger's folder (empty, or with its ``zarr.json`` and an empty or torn
    ledger). Drop that folder -- only it: the store's folder may be the user's, with its own
    permissions -- so that the write starts anew. Returns whether it was dropped."""
    if mode != "resume" or not path.is_dir() or is_empty_dir(path):
        return False
    if {c.name for c in path.iterdir()} <= {_LEDGER_DIR} and not Ledger(path).records():
        remove_tree(path / _LEDGER_DIR)
        return True
    return False


def store_writer(func: Any) -> Any:
    """Wrap a writer ``func(data, store, ...)`` of a local or remote store: before any work, a
    local store's folder must be writable (:func:`~lames_cube._atomic.check_writable`); a disk
    that fills up during the write raises :class:`~lames_cube.errors.DiskFullError` naming the
    store, the space left and how to finish (the store keeps its ledger: a rerun with
    ``mode="resume"`` writes only what is missing)."""

    @functools.wraps(func)
    def wrapper(data: Any, store: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            path = as_store_path(store)
        except TypeError:  # func raises its typed error
            return func(data, store, *args, **kwargs)
        if not isinstance(path, UrlPath):
            check_writable(path, what="store")
        left = (f"The store is left incomplete but resumable ({func.__name__} records each "
                f"finished part in {LEDGER_NAME}; a half-written chunk is never recorded).")
        fix = (f"free space on that disk (or pass a store on another disk), then run the same "
               f"write again to finish it: {func.__name__}(..., {str(path)!r}, mode='resume') "
               f"with the same input (run_recipe, write_prediction and the lames-cube commands "
               f"resume by themselves).")
        with raise_if_disk_full(path, left=left, fix=fix):
            return func(data, store, *args, **kwargs)

    return wrapper
