"""Store locations: a local :class:`pathlib.Path`, or an fsspec URL (``s3://``, ``gs://``,
``memory://``, ...) behind the few path operations the Zarr writer needs.

:class:`UrlPath` mimics the part of :class:`pathlib.Path` that :mod:`lames_cube.io` uses
(``/``, ``name``, ``parent``, ``exists``, ``is_file``, ``is_dir``, ``iterdir``, ``mkdir``,
``read_text``, ``write_text``, ``unlink``), so the same code writes local and remote stores;
Zarr and xarray receive ``str(path)``, the URL itself.

Examples
--------
>>> p = UrlPath("memory://lames-doc/cube.zarr")
>>> (p / ".lames" / "ledger.jsonl").write_text("{}\\n")
>>> p.exists(), p.is_dir(), [c.name for c in p.iterdir()], p.name
(True, True, ['.lames'], 'cube.zarr')
>>> remove_tree(p); p.exists()
False
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec


class UrlPath:
    """A location on an fsspec filesystem, with the pathlib operations the store code uses."""

    def __init__(self, url: str, *, _fs: Any = None, _root: str | None = None) -> None:
        self.url = url.rstrip("/")
        if _fs is None:
            _fs, _root = fsspec.core.url_to_fs(self.url)
        self.fs, self.root = _fs, _root

    def __truediv__(self, other: str) -> UrlPath:
        other = str(other).strip("/")
        return UrlPath(f"{self.url}/{other}", _fs=self.fs, _root=f"{self.root}/{other}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"UrlPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> UrlPath:
        url, _ = self.url.rsplit("/", 1)
        root = self.root.rsplit("/", 1)[0] if "/" in self.root else ""
        return UrlPath(url, _fs=self.fs, _root=root)

    def exists(self) -> bool:
        return bool(self.fs.exists(self.root))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.root))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.root))

    def iterdir(self) -> Iterator[UrlPath]:
        for entry in sorted(self.fs.ls(self.root, detail=False)):
            yield self / str(entry).rstrip("/").rsplit("/", 1)[-1]

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        self.fs.makedirs(self.root, exist_ok=True)

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.root))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """One object written whole (object stores make each put atomic)."""
        self.fs.pipe_file(self.root, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self) -> None:
        self.fs.rm_file(self.root)


StorePath = Path | UrlPath


def as_store_path(store: Any) -> StorePath:
    """A local path for paths, a :class:`UrlPath` for ``protocol://`` URLs (``file://`` is local).

    Raises
    ------
    TypeError
        Neither a string nor a path-like object (callers turn it into their own typed error).
    """
    if isinstance(store, UrlPath):
        return store
    if isinstance(store, str) and "://" in store:
        if store.startswith("file://"):
            return Path(store[len("file://"):])
        return UrlPath(store)
    if not isinstance(store, str | os.PathLike):
        raise TypeError(type(store).__name__)
    return Path(store)


def remove_tree(path: StorePath) -> None:
    """Delete a directory tree, local or remote."""
    if isinstance(path, UrlPath):
        path.fs.rm(path.root, recursive=True)
    else:
        shutil.rmtree(path)


def append_bytes(path: UrlPath, data: bytes) -> None:
    """Append to a remote file (read and rewrite: object stores have no append)."""
    old = path.read_bytes() if path.exists() else b""
    path.write_bytes(old + data)


def is_empty_dir(path: StorePath) -> bool:
    """An existing folder with nothing in it (local or remote)."""
    return path.is_dir() and not any(path.iterdir())


def returned_path(path: StorePath) -> Path | str:
    """What the public writers return for a store: the local path, or the URL of a remote one."""
    return str(path) if isinstance(path, UrlPath) else path
