"""The exception tree of lames_cube.

Every error the library raises on bad input is a :class:`LamesCubeError`. The leaves also
subclass the matching builtin (``ValueError``, ``KeyError``, ``FileNotFoundError``,
``ConnectionError``), so callers that catch builtins keep working. Messages say what was wrong,
the value given, what was expected and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, each once.

    >>> try:
    ...     try:
    ...         raise OSError("inner")
    ...     except OSError as e:
    ...         raise ValueError("outer") from e
    ... except ValueError as e:
    ...     [str(x) for x in exception_chain(e)]
    ['outer', 'inner']
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


class LamesCubeError(Exception):
    """Base class of every lames_cube error."""

    def __str__(self) -> str:  # KeyError quotes its message; keep messages readable.
        return str(self.args[0]) if self.args else ""


class DataDirError(LamesCubeError, FileNotFoundError):
    """The LAMES data directory is missing or lacks the expected files."""


class UnknownSiteError(LamesCubeError, KeyError):
    """A LAMES site id that is not in the annotations."""


class InvalidBBoxError(LamesCubeError, ValueError):
    """A bounding box that is not ``(west, south, east, north)`` in degrees."""


class InvalidQueryError(LamesCubeError, ValueError):
    """A search argument of the wrong type or range."""


class EmptySearchError(LamesCubeError, ValueError):
    """A search that matched no item."""


class CatalogUnreachableError(LamesCubeError, ConnectionError):
    """A STAC API that does not answer, or a local catalogue that does not exist."""


class UnknownBandError(LamesCubeError, KeyError):
    """An asset key or band name that the band table does not know."""


class WorldError(LamesCubeError, ValueError):
    """A synthetic-world specification that cannot be built."""


class StacServerError(LamesCubeError, RuntimeError):
    """The local STAC API could not be installed, started or loaded."""


class InvalidItemError(InvalidQueryError):
    """A STAC item that cannot be read as Sentinel-2 L2A (no CRS, no grid, not L2A, ...)."""


class InvalidGridError(LamesCubeError, ValueError):
    """A grid (GeoBox, CRS, resolution, chunks) that cannot hold a cube."""


class AssetReadError(LamesCubeError, OSError):
    """An asset that could not be read (after the retries, for a network asset)."""


class EmptyCubeError(LamesCubeError, ValueError):
    """A cube whose area no item covers."""


class MixedCollectionsError(LamesCubeError, ValueError):
    """Items from several collections whose bands cannot be mapped onto one band table."""


class GridMismatchError(LamesCubeError, ValueError):
    """Two grids (GeoBoxes) that should be the same are not; the message prints both."""


class AnnotationError(LamesCubeError, ValueError):
    """Annotation polygons that cannot be used as given (no class column, wrong CRS, empty)."""


class MetadataFormatError(AnnotationError):
    """A LAMES metadata table whose layout differs from the published one."""


class NoOverlapError(LamesCubeError, ValueError):
    """A grid that does not overlap the polygons to rasterise."""


class MetricsError(LamesCubeError, ValueError):
    """Predictions, labels or a confusion matrix that cannot be scored."""


class VectorFileError(AnnotationError):
    """A vector file (GeoJSON, GeoPackage, ...) that cannot be read: empty, not JSON, cut short,
    not GeoJSON, or with features whose geometry is broken."""


class OutputNotWritableError(LamesCubeError, PermissionError):
    """An output path whose folder this process cannot write to (read-only, no permission)."""


class DiskFullError(LamesCubeError, OSError):
    """The disk filled up while writing an output (``errno`` is ``ENOSPC``); the partial
    temporary file was removed."""
