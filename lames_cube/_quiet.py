"""Third-party noise silenced where it arises, for as long as it can arise: never at import.

Importing lames_cube changes no warning filter and no logger. The few warnings and log records
of other libraries that are noise for our users are silenced only around the calls that emit
them, with the two context managers here:

* :func:`ignore_warnings` -- a warning category from one module (e.g. rasterio's spurious
  ``NotGeoreferencedWarning`` "Dataset has no geotransform" from reprojections and burns of
  arrays whose transforms are given, when several threads run them at once);
* :func:`drop_log_records` -- records of one logger whose message starts with a prefix (e.g.
  odc-loader's "Failed to load" errors for reads that lames_cube retries and reports itself).

Both work in threads (dask's threaded scheduler runs many reads at once) and in worker processes
(they are entered where the call runs, inside the task), and both act only on the threads inside
a block: other threads' warnings and records pass. The first block to open installs one filter,
the last to close removes it.

``warnings.catch_warnings`` is not used: it saves and restores the process-wide filter list, so
blocks that overlap in several threads restore each other's lists (a filter is lost, or left
installed for good). rasterio itself does that inside ``reproject`` and ``rasterize`` (it
ignores every warning around its in-memory datasets): racing blocks are why its "no
geotransform" warning escapes in the first place, and they can drop or keep a copy of our
filter too (or leave rasterio's ignore-everything filter installed, which is rasterio's to fix). So the warning filter's category is a class that matches a
warning only in a thread inside a block (a copy left behind matches nothing), and each block
puts the filter back should a racing ``catch_warnings`` have dropped it.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["drop_log_records", "ignore_warnings"]

_LOCK = threading.Lock()
#: (category, module) -> the category of the filter that ignores it inside blocks
_IN_BLOCKS: dict[tuple[type[Warning], str], type] = {}
#: ("warning", category, module) or ("log", logger, prefix) -> open blocks
_OPEN: dict[tuple, int] = {}
#: (logger, prefix) -> the logging.Filter installed while a block is open
_LOG_FILTERS: dict[tuple[str, str], logging.Filter] = {}


@contextmanager
def _counted(key: tuple, install: Callable[[], threading.local],
             remove: Callable[[], None]) -> Iterator[None]:
    """A block of ``key``: ``install()`` (idempotent; it returns the thread-local whose
    ``depth`` marks this thread as inside) runs as the block opens, ``remove()`` as the last
    open block of ``key`` closes; both under the module's lock."""
    with _LOCK:
        _OPEN[key] = _OPEN.get(key, 0) + 1
        inside = install()
    inside.depth = getattr(inside, "depth", 0) + 1
    try:
        yield
    finally:
        inside.depth -= 1
        with _LOCK:
            _OPEN[key] -= 1
            if not _OPEN[key]:
                del _OPEN[key]
                remove()


class _InBlocks(type):
    """Metaclass of the filters' categories: ``issubclass(warning, cls)`` is true only for
    subclasses of ``cls.category`` emitted by a thread inside a block."""

    category: type[Warning]
    inside: threading.local

    def __subclasscheck__(cls, sub: type) -> bool:
        return bool(getattr(cls.inside, "depth", 0)) and issubclass(sub, cls.category)


def _in_blocks(category: type[Warning], module: str) -> type:
    key = (category, module)
    with _LOCK:
        if key not in _IN_BLOCKS:
            _IN_BLOCKS[key] = _InBlocks(f"{category.__name__}InBlocks", (category,), {
                "category": category, "inside": threading.local(), "__module__": __name__,
                "__doc__": f"{category.__name__} from {module} inside an ignore_warnings block."})
        return _IN_BLOCKS[key]


@contextmanager
def ignore_warnings(category: type[Warning], module: str) -> Iterator[None]:
    """Ignore ``category`` warnings emitted from ``module`` by this thread inside the block.

    Parameters
    ----------
    category
        The warning class, e.g. :class:`rasterio.errors.NotGeoreferencedWarning`.
    module
        The module the warning is attributed to (matched as :func:`warnings.filterwarnings`
        matches ``module``), e.g. ``"rasterio.warp"``.

    Notes
    -----
    Safe to nest and to enter from several threads at once: one filter entry is installed
    while any block is open and removed when the last one closes; it ignores only the warnings
    of threads inside a block.

    Examples
    --------
    >>> import warnings
    >>> before = list(warnings.filters)
    >>> with ignore_warnings(UserWarning, "__main__"):
    ...     len(warnings.filters) == len(before) + 1
    True
    >>> warnings.filters == before
    True
    """
    cls = _in_blocks(category, module)
    entry = ("ignore", None, cls, re.compile(module), 0)

    def install() -> threading.local:
        if entry not in warnings.filters:  # the first block, or a racing catch_warnings dropped it
            warnings.filterwarnings("ignore", category=cls, module=module)
        return cls.inside

    def remove() -> None:
        while entry in warnings.filters:
            warnings.filters.remove(entry)

    with _counted(("warning", category, module), install, remove):
        yield


class _DropInBlocks(logging.Filter):
    """Drop records whose message starts with ``prefix`` when the emitting thread is inside a
    :func:`drop_log_records` block."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.inside = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(self.inside, "depth", 0):
            return True
        return not str(record.msg).startswith(self.prefix)


@contextmanager
def drop_log_records(logger: str, prefix: str) -> Iterator[None]:
    """Drop the records of ``logger`` whose message starts with ``prefix``, emitted by this
    thread inside the block.

    Parameters
    ----------
    logger
        The logger's name, e.g. ``"odc.loader._rio"`` (records of its child loggers are not
        dropped: a logger's filters see only its own records).
    prefix
        The start of the unformatted message (``record.msg``), e.g. ``"Failed to load"``.

    Notes
    -----
    Safe to nest and to enter from several threads at once: one filter is attached to the
    logger while any block is open and detached when the last one closes; it drops only the
    records of threads inside a block, so other threads' records pass.

    Examples
    --------
    >>> import logging
    >>> log = logging.getLogger("lames_cube.example")
    >>> with drop_log_records("lames_cube.example", "Noise"):
    ...     log.filter(logging.makeLogRecord({"msg": "Noise here"}))
    False
    >>> log.filters
    []
    """
    key = (logger, prefix)

    def install() -> threading.local:
        drop = _LOG_FILTERS.get(key) or _LOG_FILTERS.setdefault(key, _DropInBlocks(prefix))
        logging.getLogger(logger).addFilter(drop)  # a no-op when it is attached already
        return drop.inside

    def remove() -> None:
        logging.getLogger(logger).removeFilter(_LOG_FILTERS.pop(key))

    with _counted(("log", *key), install, remove):
        yield
