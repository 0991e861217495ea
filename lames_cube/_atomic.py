"""Atomic file and directory writes: the one way lames_cube puts a file on disk.

Every writer writes under a temporary name in the target's own folder and renames the result
onto the target (:func:`os.replace`, atomic on POSIX and Windows within one file system). A
reader therefore sees the old file or the new one, never a half-written one, and a crash or an
exception leaves at most the old file: the temporary is removed on any error.

- :func:`atomic_write_text` / :func:`atomic_write_bytes`: a whole file from memory.
- :func:`atomic_path`: a temporary path for writers that need one (rasterio, GeoParquet, CSV).
- :func:`atomic_directory`: a temporary directory swapped in for a whole tree (a world).

The writes are atomic against crashes of the process, not made durable against power loss
(no ``fsync``). Append-only logs (the Zarr store's ledger) and lock files are not written
through here: appending is their point.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_directory", "atomic_path", "atomic_write_bytes", "atomic_write_text"]

#: The renaming step, one name so that tests can make it fail (a crash just before the rename).
_replace = os.replace


def _temporary_name(path: Path, kind: str) -> Path:
    """A hidden, unique sibling of ``path`` that keeps its suffix (drivers pick formats by it)."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.{kind}{path.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path``; renamed onto ``path`` when the block succeeds.

    Parameters
    ----------
    path
        The file to write. Its folder must exist.

    Yields
    ------
    pathlib.Path
        A hidden sibling of ``path`` with the same suffix (``.<stem>.<random>.tmp<suffix>``).
        Write the whole file there; on leaving the block it replaces ``path``. On an exception
        it is removed and ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("a,b\\n1,2\\n")
    >>> target.read_text()
    'a,b\\n1,2\\n'
    """
    path = Path(path)
    tmp = _temporary_name(path, "tmp")
    try:
        yield tmp
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path
        The file to write; its folder must exist.
    data
        The whole content.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "xb") as handle:
        handle.write(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path
        The file to write; its folder must exist.
    text
        The whole content.
    encoding
        Text encoding (UTF-8 by default, whatever the locale).

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = atomic_write_text(pathlib.Path(tempfile.mkdtemp()) / "a.json", "{}\\n")
    >>> p.read_text()
    '{}\\n'
    """
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory next to ``path``, swapped in for ``path`` when the block succeeds.

    The swap is two renames (the old tree aside, the new one in) followed by deleting the old
    tree, so a crash leaves the old tree or the new one at ``path`` (and at worst a hidden
    ``.<name>.old-*`` sibling to delete).

    Parameters
    ----------
    path
        The directory to (re)write. Missing parent folders are created. Whether an existing
        ``path`` may be replaced is for the caller to decide before entering.

    Yields
    ------
    pathlib.Path
        A new, empty, hidden sibling directory of ``path``. On an exception it is deleted and
        ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "world"
    >>> with atomic_directory(root) as tmp:
    ...     _ = (tmp / "manifest.json").write_text("{}")
    >>> sorted(p.name for p in root.iterdir())
    ['manifest.json']
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        trash = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:12]}")
        if path.exists():
            path.rename(trash)
        try:
            _replace(tmp, path)
        except BaseException:
            if trash.exists() and not path.exists():
                trash.rename(path)  # put the old tree back
            raise
        shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
