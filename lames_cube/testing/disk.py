"""A full disk and a read-only folder, for tests that must not need root tricks or a real full disk.

:class:`FullDisk` gives the writers of lames_cube a byte budget: the low-level writes that put
bytes on disk -- Zarr's local store (``zarr.storage._local._put``, which writes a
``.partial`` temporary and renames it) and :mod:`lames_cube._atomic`'s ``os_write`` -- count
what they write, and the write that would go past the budget writes what still fits and then
fails with ``OSError(ENOSPC)``, as a real full disk does (a partial file is on disk when the
error is raised). :func:`make_read_only` makes a folder read-only for the writability probe of
:func:`lames_cube._atomic.check_writable`, also when the tests run as root, whom the permission
bits do not stop.

Examples
--------
>>> import pytest, tempfile, pathlib
>>> from lames_cube._atomic import atomic_write_text
>>> from lames_cube.errors import DiskFullError
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with pytest.MonkeyPatch.context() as mp:
...     disk = FullDisk(free=10).install(mp)
...     try:
...         atomic_write_text(folder / "a.txt", "more than ten bytes")
...     except DiskFullError as exc:
...         print(exc.errno, sorted(folder.iterdir()))
28 []
"""

from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path
from typing import Any

import zarr.storage._local as zarr_local

from lames_cube import _atomic

__all__ = ["FullDisk", "make_read_only"]


class FullDisk:
    """A disk with ``free`` bytes left for the writes of lames_cube (``math.inf``: measure only).

    Attributes
    ----------
    free
        Bytes left; lower it to fill the disk.
    used
        Bytes written so far through the patched writes.
    failures
        How many writes failed with ``ENOSPC``.
    """

    def __init__(self, free: float = math.inf) -> None:
        self.free = free
        self.used = 0
        self.failures = 0

    def _take(self, n: int) -> int:
        """How many of ``n`` bytes fit; the rest is a full disk."""
        fits = int(min(n, max(self.free - self.used, 0)))
        self.used += fits
        return fits

    def _full(self, *path: Any) -> OSError:
        self.failures += 1
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *map(str, path))

    def install(self, monkeypatch: Any) -> FullDisk:
        """Patch the low-level writes with ``monkeypatch`` (undone when it is)."""


        real_write = _atomic.os_write

        def os_write(fd: int, data: Any) -> int:
            data = bytes(data)
            fits = self._take(len(data))
            if fits < len(data):
                if fits:
                    real_write(fd, data[:fits])
                raise self._full()
            return real_write(fd, data)

        def put(path: Path, value: Any, exclusive: bool = False) -> int:
            data = bytes(value.as_buffer_like())
            fits = self._take(len(data))
            if fits == len(data):
                return real_put(path, value, exclusive=exclusive)
            path.parent.mkdir(parents=True, exist_ok=True)
            with zarr_local._atomic_write(path, "wb", exclusive=exclusive) as handle:
                handle.write(data[:fits])  # on disk until zarr removes its temporary
                raise self._full(path)

        real_put = zarr_local._put
        monkeypatch.setattr(_atomic, "os_write", os_write)
        monkeypatch.setattr(zarr_local, "_put", put)
        return self


def make_read_only(folder: str | os.PathLike, monkeypatch: Any) -> bool:
    """Make ``folder`` read-only (mode 0o555) for :func:`lames_cube._atomic.check_writable`.

    For an ordinary user the kernel then refuses the probe file itself. Root ignores the
    permission bits, so as root the probe's ``open`` is replaced by one that applies them as the
    kernel does for an ordinary user (no write bit on the folder: ``EACCES``); every other call
    goes to the real ``os.open``. Give the folder its mode back (``chmod(0o755)``) after the test.

    Returns
    -------
    bool
        True when the refusal is simulated (running as root), False when the kernel refuses.
    """

    folder = Path(folder)
    folder.chmod(0o555)
    if os.name != "posix" or os.geteuid() != 0:
        return False
    real_open = _atomic.probe_open

    def open_as_a_user(path: Any, flags: int, mode: int = 0o777) -> int:
        unnamed = getattr(os, "O_TMPFILE", 0)
        parent = Path(path) if unnamed and flags & unnamed == unnamed else Path(path).parent
        if not os.stat(parent).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(_atomic, "probe_open", open_as_a_user)
    return True
