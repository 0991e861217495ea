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

Two failures of the disk become typed errors here, after the temporary is removed:

- a full disk (``ENOSPC``/``EDQUOT`` anywhere in the exception's chain, or GDAL's "No space left
  on device") raises :class:`~lames_cube.errors.DiskFullError` naming the file, the space left
  and the fix (:func:`raise_if_disk_full` does the same for writers that cannot go through
  here, such as the Zarr stores of :mod:`lames_cube.io`);
- a folder the process cannot write to raises
  :class:`~lames_cube.errors.OutputNotWritableError`. :func:`check_writable` finds it *before*
  any work, with a real probe (creating and deleting a file) rather than the permission bits,
  which do not bind root and say nothing of read-only mounts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lames_cube.errors import DiskFullError, OutputNotWritableError, exception_chain

__all__ = [
    "atomic_directory",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable",
    "raise_if_disk_full",
]

# Test seams: each is the os function itself, under a name of this module that tests (and
# lames_cube.testing.disk) replace to simulate a crash, a full disk or a read-only folder.
#: The renaming step, one name so that tests can make it fail (a crash just before the rename).
os_replace = os.replace
#: The low-level write of :func:`atomic_write_bytes`, one name so that tests can fill the disk.
os_write = os.write
#: The creation of the probe file of :func:`check_writable`, one name so that tests can refuse it
#: (as root, which the permission bits do not stop).
probe_open = os.open

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_NO_SPACE_TEXT = "no space left on device"
_DENIED_TEXT = ("permission denied", "read-only file system")


# --------------------------------------------------------------------------- typed disk errors
def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception in its chain) is a full disk or an exceeded quota.

    Examples
    --------
    >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device")), is_disk_full(OSError())
    (True, False)
    """
    return any((isinstance(e, OSError) and e.errno in _DISK_FULL)
               or _NO_SPACE_TEXT in str(e).lower() for e in exception_chain(exc))


def _existing_folder(path: Path) -> Path:
    """``path`` if it is a folder, else its nearest existing ancestor folder."""
    path = Path(os.path.abspath(path))
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def _size_text(n: float) -> str:
    """``n`` bytes in decimal units: ``"0 B"``, ``"1.5 MB"``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} TB"


def free_space(path: str | os.PathLike) -> str:
    """The space left on the disk holding ``path`` (or its nearest existing folder), as text.

    Examples
    --------
    >>> free_space("/").endswith(("B", "KB", "MB", "GB", "TB"))
    True
    """
    try:
        return _size_text(shutil.disk_usage(_existing_folder(Path(path))).free)
    except OSError:
        return "an unknown amount"


def disk_full_error(path: Any, exc: BaseException, *, left: str = "",
                    fix: str = "") -> DiskFullError:
    """The :class:`~lames_cube.errors.DiskFullError` for a write of ``path`` that failed with
    ``exc``: the path, the cause, the space left, what was left behind and the fix."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):  # a remote store: no local disk to measure
        space = f"the space left on {text.rsplit('/', 1)[0]} is unknown"
    else:
        folder = _existing_folder(Path(text.removeprefix("file://")))
        space = f"{free_space(folder)} free on the disk of {folder}"
    left = left or (f"The partial temporary file was removed; {Path(str(path)).name} is as it "
                    "was before the write.")
    fix = fix or ("free space on that disk (delete old stores, runs or caches) or write to a "
                  "folder on another disk, then run again.")
    cause = next((f"[Errno {e.errno}] {e.strerror or os.strerror(e.errno)}" for e in exception_chain(exc)
                  if isinstance(e, OSError) and e.errno in _DISK_FULL), str(exc))
    error = DiskFullError(f"The disk is full: writing {path} failed ({cause}); {space}. {left} "
                          f"Fix: {fix}")
    error.errno, error.filename = errno.ENOSPC, str(path)
    return error


def not_writable_error(path: Any, folder: Path, exc: OSError | None, *,
                       what: str = "output") -> OutputNotWritableError:
    """The :class:`~lames_cube.errors.OutputNotWritableError` for ``path`` in ``folder``."""
    read_only = exc is not None and exc.errno == errno.EROFS
    why = ("is on a read-only file system" if read_only
           else "is not writable by this process (permission denied)")
    fix = (f"write to a folder on a writable disk (pass another output path), or remount "
           f"{folder} read-write" if read_only else
           f"write to a folder you can write to (pass another output path), or make {folder} "
           f"writable (e.g. chmod u+w {folder})")
    error = OutputNotWritableError(
        f"Cannot write the {what} {path}: the folder {folder} {why}. Nothing was written. "
        f"Fix: {fix}."
    )
    error.errno = exc.errno if exc is not None else errno.EACCES
    error.filename = str(path)
    return error


def _probe(folder: Path) -> OSError | None:
    """Create a file in ``folder`` and let it go: None if it works, else the error of the try.

    An unnamed file (``O_TMPFILE``) where the file system has them, so that a process killed
    during the probe leaves nothing in a store; else a hidden file deleted at once.
    """
    unnamed = getattr(os, "O_TMPFILE", 0)
    if unnamed:
        try:
            fd = probe_open(folder, unnamed | os.O_WRONLY, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                return exc  # else: no unnamed files here, try a named one
        else:
            os.close(fd)
            return None
    probe = folder / f".lames-write-probe-{uuid.uuid4().hex[:12]}"
    try:
        fd = probe_open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc
    os.close(fd)
    probe.unlink(missing_ok=True)
    return None


def check_writable(path: Any, *, what: str = "output") -> None:
    """Refuse, before any work, an output path whose folder this process cannot write to.

    The folder tried is ``path`` itself when it is an existing folder (a store, a run folder),
    else its nearest existing ancestor (the folder where it, or the folders leading to it, would
    be created). The test is a real probe -- a hidden file created and deleted at once --
    because the permission bits do not bind root and say nothing of read-only mounts. fsspec
    URLs (``s3://...``) are not probed.

    Parameters
    ----------
    path
        The output file, folder or store (a path, or a ``protocol://`` URL).
    what
        What is written there, for the message (``"store"``, ``"checkpoint"``, ...).

    Raises
    ------
    OutputNotWritableError
        Permission denied or a read-only file system; the message names the path, the folder
        and the fix.
    DiskFullError
        Not even an empty file can be created (no inode or quota left).

    Examples
    --------
    >>> import tempfile
    >>> check_writable(f"{tempfile.mkdtemp()}/new/cube.zarr", what="store")  # no error
    """
    if hasattr(path, "fs") or (isinstance(path, str) and "://" in path
                                and not path.startswith("file://")):
        return
    if isinstance(path, str) and path.startswith("file://"):
        path = path[len("file://"):]
    folder = _existing_folder(Path(path))
    exc = _probe(folder)
    if exc is None:
        return
    if exc.errno in _NOT_WRITABLE:
        raise not_writable_error(path, folder, exc, what=what) from exc
    if exc.errno in _DISK_FULL:
        raise disk_full_error(path, exc, left="Nothing was written.") from exc
    # anything else (a file where a folder should be, ...) is for the writer to report


def _about(exc: OSError, path: Path) -> bool:
    """Whether ``exc`` concerns ``path``'s folder (or names no file): a refused input file is
    not the output folder's fault."""
    name = exc.filename
    if not isinstance(name, (str, bytes, os.PathLike)):
        return True
    try:
        return Path(os.fsdecode(name)).resolve().is_relative_to(path.parent.resolve())
    except (OSError, ValueError):
        return True


def _raise_typed(exc: BaseException, path: Path, *, what: str = "file") -> None:
    """Turn a full disk or an unwritable folder behind ``exc`` into its typed error."""
    if not isinstance(exc, Exception) or isinstance(exc, DiskFullError | OutputNotWritableError):
        return
    if is_disk_full(exc):
        raise disk_full_error(path, exc) from exc
    denied = next((e for e in exception_chain(exc) if isinstance(e, OSError)
                   and e.errno in _NOT_WRITABLE and _about(e, path)), None)
    folder = _existing_folder(path.parent)
    io_error = any(isinstance(e, OSError) or any(t in str(e).lower() for t in _DENIED_TEXT)
                   for e in exception_chain(exc))
    if denied is None and io_error and folder == path.parent:  # a library's wrapping: ask
        probe = _probe(folder)
        denied = probe if probe is not None and probe.errno in _NOT_WRITABLE else None
    if denied is not None:
        raise not_writable_error(path, folder, denied, what=what) from exc


@contextlib.contextmanager
def raise_if_disk_full(path: Any, *, left: str, fix: str) -> Iterator[None]:
    """Turn a full disk met inside the block into a
    :class:`~lames_cube.errors.DiskFullError` naming ``path``, the space left, ``left`` (what
    the failed write left behind) and ``fix``; other exceptions pass unchanged.

    Examples
    --------
    >>> try:
    ...     with raise_if_disk_full("/tmp/cube.zarr", left="The store is resumable.",
    ...                             fix="free space, then resume."):
    ...         raise OSError(errno.ENOSPC, "No space left on device")
    ... except DiskFullError as exc:
    ...     print(exc)  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    The disk is full: writing /tmp/cube.zarr failed ([Errno 28] No space left on device); ...
    free on the disk of /tmp. The store is resumable. Fix: free space, then resume.
    """
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full_error(path, exc, left=left, fix=fix) from exc
        raise


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

    Raises
    ------
    DiskFullError
        The disk filled up during the write (the temporary is removed).
    OutputNotWritableError
        The folder of ``path`` cannot be written to.

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
        os_replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        _raise_typed(exc, path)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os_write(fd, view):]


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
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
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

    Raises
    ------
    DiskFullError
        The disk filled up (the temporary tree is deleted).
    OutputNotWritableError
        The folder of ``path`` cannot be written to.

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
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        _raise_typed(exc, path, what="folder")
        raise
    try:
        yield tmp
        trash = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:12]}")
        if path.exists():
            path.rename(trash)
        try:
            os_replace(tmp, path)
        except BaseException:
            if trash.exists() and not path.exists():
                trash.rename(path)  # put the old tree back
            raise
        shutil.rmtree(trash, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_typed(exc, path, what="folder")
        raise
