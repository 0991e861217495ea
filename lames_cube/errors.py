"""The exception tree of lames_cube.

Every error the library raises on bad input is a :class:`LamesCubeError`. The leaves also
subclass the matching builtin (``ValueError``, ``KeyError``, ``FileNotFoundError``,
``ConnectionError``), so callers that catch builtins keep working. Messages say what was wrong,
the value given, what was expected and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_NOT_GIVEN: Any = object()  # RecipeMistake: no value passed


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


class MissingDependencyError(LamesCubeError, ImportError):
    """An optional dependency that is not installed (``pip install 'lames-cube[ml]'``)."""


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


# ---------------------------------------------------------------- _names

class UnsafeNameError(LamesCubeError, ValueError):
    """A name that cannot become a file name (empty, or not a string)."""


# ---------------------------------------------------------------- annotations

class AnnotationRepairWarning(UserWarning):
    """Values of a LAMES file that could not be kept as given (e.g. impossible dates → NaT).

    Emitted only when the caller did not ask for the :class:`CleaningReport` (``report=True``).
    """


# ---------------------------------------------------------------- baselines

class BaselineError(LamesCubeError, ValueError):
    """A baseline request that cannot be fitted or applied: an empty split, a task the baseline
    does not handle, no usable index, an image of the wrong shape, ..."""


# ---------------------------------------------------------------- cluster

class SchedulerError(LamesCubeError, ValueError):
    """A scheduler setting that is not one of the known kinds."""


class SchedulerUnreachableError(LamesCubeError, ConnectionError):
    """No dask scheduler answers at the given address."""


# ---------------------------------------------------------------- html_report

class HtmlReportError(LamesCubeError, ValueError):
    """Report input of the wrong kind (an image that is not PNG, a table that is not one)."""


# ---------------------------------------------------------------- io

class StoreError(LamesCubeError, ValueError):
    """A store or a write request that cannot be honoured (bad mode, chunks, region, ...)."""


class StoreNotFoundError(LamesCubeError, FileNotFoundError):
    """No store at the given path."""


class StoreExistsError(LamesCubeError, FileExistsError):
    """A store already exists where ``mode="w-"`` was asked to create one."""


class IncompleteStoreError(StoreError):
    """A store whose resumable write has not finished."""


class TemplateMismatchError(StoreError):
    """A cube that does not match the store it should resume, append to or fill."""


class StoreGridMismatchError(TemplateMismatchError, GridMismatchError):
    """A cube whose GeoBox differs from the store's (the message prints both)."""


class ChunkError(StoreError):
    """Chunks that are not multiples of the patch size, or an invalid ``chunks=``/``patch_size=``."""


class RegionError(StoreError):
    """A ``region=`` that is malformed, not chunk-aligned or does not fit the sub-cube."""


# ---------------------------------------------------------------- ml.data

class DatasetSelectionError(LamesCubeError, ValueError):
    """A dataset request that selects nothing or what the data lacks (split, kind, time,
    statistics, augmentation index)."""


# ---------------------------------------------------------------- ml

class ModelConfigError(LamesCubeError, ValueError):
    """A model specification that cannot be built (unknown architecture or encoder, bad
    channel or class counts, an unreadable weights file)."""


class PatchSizeError(LamesCubeError, ValueError):
    """A patch size the model cannot take (its encoder halves it ``depth`` times)."""


class CheckpointError(LamesCubeError, ValueError):
    """A checkpoint file that is missing, corrupt, or not a lames_cube checkpoint."""


class BandMismatchError(LamesCubeError, ValueError):
    """Data whose bands differ from the bands a model was trained on."""


class ClassWeightsError(LamesCubeError, ValueError):
    """Class weights of the wrong length or with values that are not positive numbers."""


class NoPositivePixelsError(LamesCubeError, ValueError):
    """A split in which a class never occurs, so its LAMES weight or its scores are undefined."""


class TrainingConfigError(LamesCubeError, ValueError):
    """Training settings that cannot work (epochs, batch size, learning rates, device...)."""


# ---------------------------------------------------------------- ml.inference

class InferenceConfigError(LamesCubeError, ValueError):
    """Inference settings that cannot work: tile, patch, overlap, halo, blend, batch size."""


class MissingCRSError(LamesCubeError, ValueError):
    """A cube without a coordinate reference system (no GeoBox): a prediction needs its grid."""


# ---------------------------------------------------------------- ml.jitter

class JitterError(LamesCubeError, ValueError):
    """Jitter settings that cannot be used (negative spreads, unknown keys)."""


# ---------------------------------------------------------------- patchset

class PatchSetError(StoreError):
    """Sources or a request that cannot make a patch set (no sources, bad block, ...)."""


class SourceMismatchError(PatchSetError):
    """Patch sources that do not fit together (bands, dtype, window size or table columns)."""


class StatsSplitError(PatchSetError):
    """No sample of the split the normalisation statistics should come from."""


class PatchSetGridError(PatchSetError, InvalidGridError):
    """A table or labels not on their source cube's grid."""


# ---------------------------------------------------------------- prediction

class PredictionError(LamesCubeError, ValueError):
    """A prediction (or store) that is not what a function expects."""


class PredictionStoreMismatchError(TemplateMismatchError):
    """A prediction store written by another model, with other settings or on another grid."""


# ---------------------------------------------------------------- recipes.country

class InferenceRunError(LamesCubeError, ValueError):
    """A country inference run that cannot start (source, recipe, checkpoint)."""


# ---------------------------------------------------------------- recipes.cubes

class RecipeMistake(ValueError):
    """One mistake in a recipe, raised by a schema validator and turned into a line of the
    recipe's error (:func:`lames_cube.recipes.schema.validate`): ``what`` is wrong, what is
    ``allowed``, the ``fix`` (by default the field's documentation).

    ``key`` replaces the last part of the key path (a sibling: ``start`` for ``period.end``,
    or ``chunks.y`` for ``chunks``), ``value`` the value shown (``value_given`` is False when
    none was passed: the field's own value is shown; :data:`lames_cube.recipes.schema.NO_VALUE`
    shows none); ``parts`` are several mistakes of one value, ``lines`` finished texts put after
    the key path (the problems of another check). Not a :class:`LamesCubeError`: users see the
    recipe's error, never this.
    """

    def __init__(self, what: str = "", allowed: str = "", fix: str = "", *, key: str | None = None,
                 value: Any = _NOT_GIVEN,
                 parts: tuple[RecipeMistake, ...] | list[RecipeMistake] = (),
                 lines: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(what or "; ".join([*lines, *map(str, parts)]))
        self.what, self.allowed, self.fix = what, allowed, fix
        self.value_given = value is not _NOT_GIVEN
        self.key, self.value = key, value if self.value_given else None
        self.parts, self.lines = tuple(parts), tuple(lines)


class RecipeError(LamesCubeError, ValueError):
    """A cube recipe that cannot be read or does not validate."""


class RecipeNotFoundError(RecipeError, FileNotFoundError):
    """A recipe name or path that does not exist."""


# ---------------------------------------------------------------- recipes.experiments

class ExperimentRecipeError(LamesCubeError, ValueError):
    """An experiment recipe that cannot be run; the message lists every mistake."""


class ExperimentNotFoundError(ExperimentRecipeError, FileNotFoundError):
    """No experiment recipe of that name or path."""


class RunExistsError(ExperimentRecipeError, FileExistsError):
    """A run folder holding a checkpoint trained with other settings."""


# ---------------------------------------------------------------- recipes.patchsets

class PatchRecipeError(LamesCubeError, ValueError):
    """A patch recipe that cannot be used; the message lists every mistake."""


class PatchRecipeNotFoundError(PatchRecipeError, FileNotFoundError):
    """No patch recipe of that name or path."""


# ---------------------------------------------------------------- report

class ReportError(LamesCubeError, ValueError):
    """Inputs of a table, figure or report that do not fit together (shapes, class names,
    tasks, missing files)."""


# ---------------------------------------------------------------- retry

class RetryPolicyError(LamesCubeError, ValueError):
    """A retry policy with settings out of range."""


# ---------------------------------------------------------------- sampling

class NotEnoughWindowsError(InvalidQueryError):
    """More windows were asked for than the table or the raster holds."""


# ---------------------------------------------------------------- splits

class SplitLeakageError(LamesCubeError, ValueError):
    """A site or a patch window that appears in two splits."""


# ---------------------------------------------------------------- tables

class TableNotFoundError(LamesCubeError, FileNotFoundError):
    """A table file that does not exist."""


class NotAWindowTableError(InvalidQueryError):
    """A frame or file that is not a window table (no ``row``, ``col`` or geometry)."""


class TableMismatchError(GridMismatchError):
    """Two tables on different grids or with different window sizes."""


# ---------------------------------------------------------------- testing.browser

class BrowserError(LamesCubeError, RuntimeError):
    """Chromium is missing, or did not start or load the page."""


# ---------------------------------------------------------------- testing.crash

class SimulatedCrash(RuntimeError):
    """A crash a test asked for (:func:`lames_cube.testing.crash.crash_after`): a resumable
    writer stopped between two recorded units (regions, blocks, tiles). Not a
    :class:`LamesCubeError`: nothing was wrong with the input."""


# ---------------------------------------------------------------- testing.faults

class FaultyServerError(LamesCubeError, ValueError):
    """Bad settings for the fault-injecting server."""


# ---------------------------------------------------------------- timeseries

class ExtentError(LamesCubeError, ValueError):
    """Input that extent over time cannot measure (no grid, bad threshold, sites without ids,
    years that are not years)."""
