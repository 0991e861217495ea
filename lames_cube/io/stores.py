"""The store API: write a cube (whole, by region, appended), follow a write, open a store.

:func:`write_cube` writes a cube as a Zarr **v3** store; :func:`open_store` / :func:`open_cube`
read it back lazily, with the CRS visible to both rioxarray (``.rio.crs``) and odc-geo
(``.odc.geobox``) and the coordinates bit for bit. :func:`init_cube_store` lays a store out for
region writes by many processes; :func:`region_written`, :func:`regions_written` and
:func:`store_status` read the ledger (:mod:`lames_cube.io.ledger`) to say what is written.

Modes (``mode=``), by operation:

* full write -- ``"w-"`` (default) refuses an existing store; ``"w"`` deletes it (only if it looks
  like a store) and writes anew; ``"resume"`` finishes an interrupted write of the same cube (a
  no-op if the store is complete, a plain write if there is no store).
* ``region=`` -- ``"w-"`` refuses regions already written; ``"w"`` overwrites them; ``"resume"``
  skips them.
* ``append_dim="time"`` -- ``"w-"`` appends new time steps (refused while the store is
  incomplete); ``"w"`` is refused; ``"resume"`` finishes an interrupted append of the same cube
  (a no-op if it completed).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import xarray as xr
import zarr

from lames_cube._fs import StorePath, is_empty_dir, returned_path
from lames_cube.errors import (
    IncompleteStoreError,
    RegionError,
    StoreError,
    StoreNotFoundError,
    TemplateMismatchError,
)
from lames_cube.io.checks import (
    check_coords_equal,
    check_store_grid,
    compatible,
    normalise_region,
    open_dataset,
    open_for_update,
    renamed,
    short,
)
from lames_cube.io.jobs import (
    conform,
    full_grid,
    resume_job,
    start_store,
    time_range,
    write_metadata,
    write_regions,
)
from lames_cube.io.ledger import (
    LEDGER_NAME,
    LEDGER_VERSION,
    Ledger,
    LedgerState,
    describe_incomplete,
    grid_regions,
)
from lames_cube.io.paths import restart_if_killed_before_begin, store_path, store_writer
from lames_cube.io.template import (
    Prepared,
    as_text_objects,
    attrs_json,
    is_text,
    job_id,
    prepare,
    template_summary,
)

__all__ = [
    "Mode",
    "init_cube_store",
    "open_cube",
    "open_store",
    "region_written",
    "regions_written",
    "store_status",
    "write_cube",
]

Mode = Literal["w-", "w", "resume"]
_MODES = ("w-", "w", "resume")


# --------------------------------------------------------------------------------------------
# Writing


@store_writer
def init_cube_store(template: xr.DataArray, store: str | os.PathLike[str], *,
                    chunks: Mapping[Hashable, int] | None = None, patch_size: int = 256,
                    mode: Literal["w-", "w", "resume"] = "w-") -> Path | str:
    """Create a store with the metadata of ``template`` and no pixels, for later region writes.

    Writes the Zarr v3 metadata and every coordinate (nothing of the template's data is computed)
    and records an ``init`` job in the ledger. The store stays incomplete -- :func:`open_cube`
    refuses it -- until every region has been written with ``write_cube(subcube, store,
    region=...)`` (by any number of processes, one per tile) or the whole cube with
    ``write_cube(cube, store, mode="resume")``.

    Parameters
    ----------
    template : xarray.DataArray
        The full cube (lazy; only its metadata is used), as for :func:`write_cube`.
    store : str or path-like
        Local path of the new store.
    chunks : mapping, optional
        Zarr chunks per dim (default: the template's dask chunks, see :func:`write_cube`).
    patch_size : int, default 256
        Chunks along y and x must be multiples of it.
    mode : {"w-", "w", "resume"}, default "w-"
        ``"w-"`` refuses an existing store; ``"w"`` replaces it; ``"resume"`` keeps a store
        laid out for the same template (a no-op), finishes a layout interrupted before its
        metadata was recorded, lays out a missing store, and refuses a store of another
        template (:class:`~lames_cube.errors.TemplateMismatchError`).

    Returns
    -------
    pathlib.Path
        The store's path.

    Raises
    ------
    lames_cube.errors.OutputNotWritableError
        The store's folder cannot be written to (checked before any work).
    lames_cube.errors.DiskFullError
        The disk filled up while laying the store out.

    Examples
    --------
    >>> import tempfile
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> gbox = GeoBox.from_bbox((300000, 7000000, 305120, 7002560), "EPSG:32719", resolution=10)
    >>> cube = (xr_zeros(gbox, dtype="uint16", chunks=(256, 256)) + 7).rename("reflectance")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = init_cube_store(cube, f"{tmp}/tiles.zarr")
    ...     before = store_status(path)["complete"]
    ...     for ys, xs in [(slice(0, 256), slice(0, 256)), (slice(0, 256), slice(256, 512))]:
    ...         _ = write_cube(cube.isel(y=ys, x=xs), path, region={"y": ys, "x": xs})
    ...     before, store_status(path)["complete"], int(open_cube(path).sum())
    (False, True, 917504)
    """
    if mode not in _MODES:
        raise StoreError(f"init_cube_store mode must be 'w-', 'w' or 'resume'; got {mode!r}.")
    path = store_path(store)
    prep = prepare(template, chunks, patch_size)
    restart_if_killed_before_begin(path, mode)
    if mode == "resume" and path.exists() and not is_empty_dir(path):
        state = Ledger(path).read()
        resume_job(prep, path, state, "the store {path} was laid out for another cube ({diff}). "
                   "Pass the same template, or mode='w' to replace the store.")
        return returned_path(path)
    start_store(prep, path, "w-" if mode == "resume" else mode, op="init")
    return returned_path(path)


@store_writer
def write_cube(cube: xr.DataArray, store: str | os.PathLike[str], *, mode: Mode = "w-",
               chunks: Mapping[Hashable, int] | None = None, patch_size: int = 256,
               progress: bool = False, region: Mapping[str, slice] | None = None,
               append_dim: str | None = None, scheduler: str | None = None) -> Path | str:
    """Write a cube to a Zarr v3 store, region by region and resumably.

    The store holds one variable named after ``cube.name`` (``"data"`` if unnamed), with the
    cube's coordinates (including per-time ones such as ``cloud_cover``), attrs and CRS (a
    grid-mapping coordinate readable by rioxarray and odc-geo). Zarr chunks equal the dask chunks;
    the pixels are computed and written one region (one chunk along y and x, every time step and
    band) at a time, so memory holds at most one region's chunks per worker thread and the whole
    cube is never computed at once. The ledger ``<store>/.lames/ledger.jsonl`` records each
    finished region (see :mod:`lames_cube.io.ledger`).

    Parameters
    ----------
    cube : xarray.DataArray
        Dims ``(..., y, x)`` -- ``(time, band, y, x)``, ``(band, y, x)`` or ``(y, x)`` -- with an
        odc-geo GeoBox (``cube.odc.geobox``). Usually dask-backed; a NumPy cube is chunked by
        ``time`` 1, other dims whole and y/x ``4 * patch_size``. A Dataset of variables on one
        grid is written (and resumed) as one store.
    store : str or path-like
        Local path of the store, or an fsspec URL.
    mode : {"w-", "w", "resume"}, default "w-"
        Full write: ``"w-"`` refuses an existing store, ``"w"`` deletes and rewrites it,
        ``"resume"`` finishes an interrupted write of the same cube (refused with
        :class:`~lames_cube.errors.TemplateMismatchError` if the cube's shape, chunks, dtype,
        coords or attrs differ; a no-op if the store is complete). With ``region``: ``"w-"``
        refuses regions already written, ``"w"`` overwrites them, ``"resume"`` skips them. With
        ``append_dim``: ``"w-"`` appends, ``"resume"`` finishes an interrupted append of the
        same cube.
    chunks : mapping of dim to int, optional
        Rechunk before writing (``-1`` = whole dim). Default: the cube's dask chunks. Irregular
        dask chunks along a dim are replaced by the largest chunk there, rounded up to a multiple
        of ``patch_size`` for y/x and capped at the dim's size. Not allowed with ``region`` and
        ``append_dim``: those writes rechunk the cube to the store's chunks.
    patch_size : int, default 256
        Chunks along y and x must be multiples of it unless one chunk spans the whole dim.
    progress : bool, default False
        Show a tqdm progress bar over regions.
    region : mapping of spatial dim to slice, optional
        Write the cube as the sub-cube ``store[..., region[y], region[x]]`` of a store initialised
        with :func:`init_cube_store` (or written before). Slices must start on a chunk edge and end
        on one or at the dim's end; the cube must be on the store's grid there
        (:class:`~lames_cube.errors.StoreGridMismatchError` prints both GeoBoxes), with the
        store's time/band coordinates.
    append_dim : {"time"}, optional
        Append the cube's time steps after the store's. Grid, bands, other coordinates, dtype and
        attrs must match the store; times must be new and later than the store's last one.
    scheduler : str, optional
        With ``region``: the dask scheduler that writes it (default: the active one, e.g.
        a distributed client's workers); ``"sync"`` writes in this process (data computed
        already, a store only this machine sees).

    Returns
    -------
    pathlib.Path
        The store's path.

    Raises
    ------
    lames_cube.errors.StoreExistsError
        ``mode="w-"`` and a store exists.
    lames_cube.errors.ChunkError
        y/x chunks that are not multiples of ``patch_size``.
    lames_cube.errors.TemplateMismatchError, lames_cube.errors.StoreGridMismatchError
        Resume, append or region write with a cube that does not fit the store.
    lames_cube.errors.RegionError
        A malformed or misaligned ``region``.
    lames_cube.errors.IncompleteStoreError
        Appending to a store whose write has not finished.
    lames_cube.errors.OutputNotWritableError
        The store's folder cannot be written to (checked before any work).
    lames_cube.errors.DiskFullError
        The disk filled up; the store stays resumable with ``mode="resume"``.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> gbox = GeoBox.from_bbox((300000, 7000000, 305120, 7002560), "EPSG:32719", resolution=10)
    >>> cube = xr_zeros(gbox, dtype="uint16", chunks=(256, 256)).rename("reflectance")
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_cube(cube, f"{tmp}/demo.zarr")
    ...     open_cube(path).odc.geobox == gbox
    True
    """
    if mode not in _MODES:
        raise StoreError(f"mode must be one of {_MODES}; got {mode!r}.")
    if region is not None and append_dim is not None:
        raise StoreError("pass region= or append_dim=, not both: append first, then write "
                         "regions of the appended store.")
    if chunks is not None and (region is not None or append_dim is not None):
        raise StoreError("chunks= cannot be combined with region= or append_dim=: those writes "
                         "use the store's chunks. Drop chunks=.")
    path = store_path(store)
    if append_dim is not None:
        if append_dim != "time":
            raise StoreError(f"append_dim must be 'time'; got {append_dim!r}.")
        prep = prepare(cube, None, patch_size, check_chunks=False)
        _append(prep, path, mode, progress=progress)
        return returned_path(path)
    if region is not None:
        prep = prepare(cube, None, patch_size, check_chunks=False)
        _write_region(prep, path, region, mode, progress=progress, scheduler=scheduler)
        return returned_path(path)

    prep = prepare(cube, chunks, patch_size)
    t = time_range(prep)
    restart_if_killed_before_begin(path, mode)
    if mode == "resume" and path.exists() and not is_empty_dir(path):
        ledger = Ledger(path)
        if not ledger.exists():
            raise StoreError(f"cannot resume {str(path)!r}: it has no {LEDGER_NAME}, so it was not "
                             f"written by write_cube. Replace it with mode='w'.")
        job = job_id(template_summary(prep), list(t))
        state = resume_job(prep, path, ledger.read(),
                           "cannot resume {path} with this cube: the store was started with "
                           "another cube ({diff}). Resume with the same cube, or replace the "
                           "store with mode='w'.")
        if state.job_complete(job):
            ledger.mark_complete()
            return returned_path(path)
        write_regions(prep, path, state.regions(job), t=t, offset=(0, 0), skip=state,
                      progress=progress)
        return returned_path(path)

    job = start_store(prep, path, "w" if mode == "w" else "w-", op="write")
    state = Ledger(path).read()
    write_regions(prep, path, state.regions(job), t=t, offset=(0, 0), skip=None,
                  progress=progress)
    return returned_path(path)


def _append(prep: Prepared, path: StorePath, mode: str, *, progress: bool) -> None:
    if mode == "w":
        raise StoreError("mode='w' cannot be combined with append_dim (it would delete the store). "
                         "Use mode='w-' to append or mode='resume' to finish an interrupted append.")
    if "time" not in prep.var.dims:
        raise StoreError(f"append_dim='time' needs a cube with a time dim; got dims "
                         f"{list(prep.var.dims)}.")
    ledger = Ledger(path)
    state = ledger.read()
    incomplete = state.incomplete_jobs() if ledger.exists() else []
    if incomplete and mode != "resume":
        raise IncompleteStoreError("cannot append: " + describe_incomplete(path, state))
    for job in incomplete:
        # An append that crashed before its metadata was recorded may have resized some arrays
        # and not others (the store would not even open): shrink them back. No region of that
        # append can have been written yet.
        rec = state.jobs[job]
        if rec["op"] == "append" and job not in state.metadata:
            _rollback_time(path, rec["time"][0])
    stored, chunks = open_for_update(path, prep, "append")
    if stored.name != prep.name:
        prep = renamed(prep, str(stored.name))

    prep = conform(prep, chunks, {"time": stored.sizes["time"]})
    template = template_summary(prep)

    if mode == "resume":
        for job, rec in state.jobs.items():
            if rec["op"] == "append" and rec["template"] == template:
                t = (rec["time"][0], rec["time"][1])
                if state.job_complete(job):
                    ledger.mark_complete()
                    return
                prep = conform(prep, chunks, {"time": t[0]})
                if job not in state.metadata:
                    write_metadata(prep, path, job, append_dim="time")
                    state = ledger.read()
                write_regions(prep, path, state.regions(job), t=t, offset=(0, 0), skip=state,
                              progress=progress, partial_time=t[0] % int(chunks["time"]) != 0)
                return
        if incomplete:
            raise IncompleteStoreError("cannot append: " + describe_incomplete(path, state))
    _check_appendable(prep, stored, path)
    t = (int(stored.sizes["time"]), int(stored.sizes["time"] + prep.var.sizes["time"]))
    job = job_id(template, list(t))
    ledger.append({"event": "begin", "lames_ledger": LEDGER_VERSION, "job": job, "op": "append",
                   "time": list(t), "grid": full_grid(prep), "template": template})
    write_metadata(prep, path, job, append_dim="time")
    state = ledger.read()
    write_regions(prep, path, state.regions(job), t=t, offset=(0, 0), skip=None,
                  progress=progress, partial_time=t[0] % int(chunks["time"]) != 0)


def _check_appendable(prep: Prepared, stored: xr.DataArray, path: StorePath) -> None:
    """Refuse a cube to append that is not on the store's grid, or has other bands,
    coordinates or attrs, or times that are not new and later than the store's."""
    compatible(prep, stored, path, "cube to append")
    check_store_grid(stored.odc.geobox, prep.gbox, path, "cube to append")
    not_time = [k for k, c in prep.ds.coords.items() if "time" not in c.dims]
    check_coords_equal(prep, stored, not_time, path, "cube to append")
    new_attrs = template_summary(prep)["attrs"]
    old_attrs = attrs_json(stored.attrs)
    if new_attrs != old_attrs:
        keys = sorted(k for k in set(new_attrs) | set(old_attrs)
                      if new_attrs.get(k) != old_attrs.get(k))
        raise TemplateMismatchError(
            f"the attrs of the cube to append differ from the store's ({str(path)!r}) in {keys}: "
            f"store {[old_attrs.get(k) for k in keys]}, cube {[new_attrs.get(k) for k in keys]}. "
            f"A store has one set of attrs; align them (cube.attrs = store attrs) or keep "
            f"time-dependent values in per-time coordinates."
        )
    old_t = stored["time"].values
    new_t = prep.ds["time"].values
    dup = np.intersect1d(old_t, new_t)
    if dup.size:
        raise TemplateMismatchError(
            f"cannot append: {dup.size} time label(s) of the cube are already in the store "
            f"{str(path)!r}: {short(dup.astype(str))}. Drop them, e.g. "
            f"cube.drop_sel(time=...), or mode='resume' to finish an interrupted append."
        )
    if (new_t.size > 1 and not (np.diff(new_t) > np.timedelta64(0)).all()) or (
            old_t.size and new_t[0] <= old_t[-1]):
        raise TemplateMismatchError(
            f"cannot append: the store's time index must stay increasing, but its last time is "
            f"{old_t[-1] if old_t.size else None} and the cube's times are {short(new_t.astype(str))}. "
            f"Sort the cube (cube.sortby('time')) and append only later times; rewrite the store "
            f"to insert earlier ones."
        )


def _rollback_time(path: StorePath, length: int) -> None:
    """Shrink every array with a time dim back to ``length`` (undo a half-done append resize)."""
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    for _, arr in group.arrays():
        dims = list(arr.metadata.dimension_names or ())
        if "time" in dims:
            axis = dims.index("time")
            if arr.shape[axis] != length:
                arr.resize((*arr.shape[:axis], length, *arr.shape[axis + 1:]))


def _write_region(prep: Prepared, path: StorePath, region: Mapping[str, slice], mode: str, *,
                  progress: bool, scheduler: str | None = None) -> None:
    ledger = Ledger(path)
    stored, chunks = open_for_update(path, prep, "write a region")
    if not ledger.exists():
        raise StoreError(f"the store {str(path)!r} has no {LEDGER_NAME}; region writes need a "
                         f"store created by init_cube_store or write_cube.")
    if stored.name != prep.name:
        prep = renamed(prep, str(stored.name))
    compatible(prep, stored, path, "sub-cube")

    where = normalise_region(region, stored, prep.spatial, chunks, path)
    ydim, xdim = prep.spatial
    for d in (ydim, xdim):
        want = where[d].stop - where[d].start
        if prep.var.sizes[d] != want:
            raise RegionError(f"region[{d!r}] = slice({where[d].start}, {where[d].stop}) spans "
                              f"{want} px but the sub-cube has {prep.var.sizes[d]} px along "
                              f"{d!r}; pass the slice the sub-cube was cut with.")
    check_store_grid(stored.odc.geobox[where[ydim], where[xdim]], prep.gbox, path, "sub-cube")
    not_spatial = [k for k, c in prep.ds.coords.items() if not set(c.dims) & {ydim, xdim}]
    check_coords_equal(prep, stored, not_spatial, path, "sub-cube")
    prep = conform(prep, chunks, {ydim: where[ydim].start, xdim: where[xdim].start})
    t = (0, stored.sizes["time"]) if "time" in stored.dims else (0, 0)
    grid = {ydim: [where[ydim].start, where[ydim].stop, int(chunks[ydim])],
            xdim: [where[xdim].start, where[xdim].stop, int(chunks[xdim])]}
    regions = grid_regions(grid, (ydim, xdim))
    state = ledger.read()
    if mode == "w-":
        done = [r for r in regions if state.is_done(r, t)]
        if done:
            r = done[0]
            raise StoreError(
                f"{len(done)} of the {len(regions)} regions to write are already written in "
                f"{str(path)!r} (first: y[{r[0]}:{r[1]}] x[{r[2]}:{r[3]}]). Pass mode='w' to "
                f"overwrite them or mode='resume' to skip them."
            )
    write_regions(prep, path, regions, t=t, offset=(where[ydim].start, where[xdim].start),
                  skip=state if mode == "resume" else None, progress=progress,
                  scheduler=scheduler)


# --------------------------------------------------------------------------------------------
# Following a write


def region_written(store: str | os.PathLike[str], region: Mapping[str, slice]) -> bool:
    """True when every chunk of ``region`` (spatial slices, as for ``write_cube(region=)``) of
    ``store`` has been written for all its time steps, by the ledger; False for a missing store.

    Examples
    --------
    >>> region_written("no-such-store.zarr", {"y": slice(0, 256), "x": slice(0, 256)})
    False
    """
    return regions_written(store, [region])[0]


def regions_written(store: str | os.PathLike[str],
                    regions: Iterable[Mapping[str, slice]]) -> list[bool]:
    """:func:`region_written` for many regions, reading the ledger once (a country's tiles).

    Examples
    --------
    >>> regions_written("no-such-store.zarr", [{"y": slice(0, 256), "x": slice(0, 256)}] * 2)
    [False, False]
    """
    regions = list(regions)
    ledger = Ledger(store_path(store))
    state = ledger.read() if ledger.exists() else LedgerState()
    if not state.jobs or any(job not in state.metadata for job in state.jobs):
        return [False] * len(regions)
    out = []
    for region in regions:
        done = True
        for rec in state.jobs.values():  # every job's time range (appends add their own)
            spatial = tuple(rec["template"]["dims"][-2:])
            grid = {d: [region[d].start, region[d].stop, rec["grid"][d][2]] for d in spatial}
            t = tuple(rec["time"])
            if not all(state.is_done(r, t) for r in grid_regions(grid, spatial)):  # type: ignore[arg-type]
                done = False
                break
        out.append(done)
    return out


def store_status(store: str | os.PathLike[str]) -> dict[str, Any]:
    """Progress of the resumable writes of a store, from its ledger.

    Parameters
    ----------
    store : str or path-like
        Local path of a store.

    Returns
    -------
    dict
        ``complete`` (bool), ``ledger`` (bool: the store has one), ``regions_total`` and
        ``regions_done`` (over all jobs) and ``jobs``: one dict per job with ``op``, ``time``,
        ``regions_total``, ``regions_done`` and ``complete``.

    Raises
    ------
    lames_cube.errors.StoreNotFoundError
        No store at ``store``.

    Examples
    --------
    >>> import tempfile
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> gbox = GeoBox.from_bbox((300000, 7000000, 302560, 7002560), "EPSG:32719", resolution=10)
    >>> cube = xr_zeros(gbox, dtype="uint16", chunks=(128, 128)).rename("reflectance")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     status = store_status(write_cube(cube, f"{tmp}/cube.zarr", patch_size=128))
    >>> status["complete"], status["regions_done"], status["regions_total"]
    (True, 4, 4)
    """
    path = store_path(store)
    if not path.exists():
        raise StoreNotFoundError(f"no store at {str(path)!r}; check the path, or write one with "
                                 f"write_cube(cube, {str(path)!r}).")
    ledger = Ledger(path)
    state = ledger.read()
    jobs = []
    for job, rec in state.jobs.items():
        total = len(state.regions(job))
        missing = len(state.missing(job)) if job in state.metadata else total
        jobs.append({"job": job, "op": rec["op"], "time": rec["time"], "regions_total": total,
                     "regions_done": total - missing, "complete": state.job_complete(job)})
    has = ledger.exists()
    return {
        "complete": (not has) or (bool(state.jobs) and not state.incomplete_jobs()),
        "ledger": has,
        "regions_total": sum(j["regions_total"] for j in jobs),
        "regions_done": sum(j["regions_done"] for j in jobs),
        "jobs": jobs,
    }


# --------------------------------------------------------------------------------------------
# Reading


def _checked_store(store: str | os.PathLike[str], allow_incomplete: bool) -> StorePath:
    """The store's path, once it exists and (unless allowed) is complete."""
    path = store_path(store)
    if not path.exists():
        raise StoreNotFoundError(f"no store at {str(path)!r}. Check the path, or write one with "
                                 f"write_cube(cube, {str(path)!r}).")
    ledger = Ledger(path)
    if not (path / "zarr.json").exists():
        if ledger.exists():
            raise IncompleteStoreError(describe_incomplete(path, ledger.read()))
        raise StoreNotFoundError(f"{str(path)!r} is not a Zarr v3 store (no zarr.json). Check "
                                 f"the path.")
    if ledger.exists() and not allow_incomplete:
        state = ledger.read()
        if not state.jobs or state.incomplete_jobs():
            raise IncompleteStoreError(describe_incomplete(path, state))
    return path


def _restore_coords(da: xr.DataArray) -> xr.DataArray:
    """Load the small (0-d and 1-d) coordinates; variable-length strings (StringDType or object)
    become fixed-width unicode, as cubes carry them."""
    small = {k: c for k, c in da.coords.items()
             if c.ndim <= 1 and not (k in da.indexes and c.dtype.kind not in "OT")}
    loaded = dask.compute(*(c.data for c in small.values()))  # one scheduler call
    new = {}
    for (k, c), values in zip(small.items(), loaded, strict=True):
        values = np.asarray(values)
        if values.dtype.kind in "OT" and is_text(values):
            values = np.asarray(as_text_objects(values).tolist(), dtype=str)
        new[k] = c.copy(data=values)
    return da.assign_coords(new) if new else da


def _data_var(ds: xr.Dataset, path: StorePath, variable: str | None) -> str:
    names = [str(n) for n in ds.data_vars]
    if variable is not None:
        if variable not in names:
            raise StoreError(f"the store {str(path)!r} has no variable {variable!r}; it has {names}.")
        return variable
    if len(names) != 1:
        raise StoreError(f"the store {str(path)!r} holds {len(names)} variables {names}, not one "
                         f"cube; pass variable= to pick one.")
    return names[0]


def open_store(store: str | os.PathLike[str], *, allow_incomplete: bool = False) -> xr.Dataset:
    """Open every variable of a store written by :func:`write_cube` as a lazy Dataset.

    A composite store holds ``reflectance`` (with ``scale``), ``clear_count`` and the fallback
    markers apart; a scene store ``reflectance`` and ``scl``: scaling the reflectance never
    touches the others. Coordinates, attrs and the CRS come back as with :func:`open_cube`.

    Parameters
    ----------
    store : str or path-like
        The store.
    allow_incomplete : bool, default False
        Open a store whose write has not finished (unwritten chunks read as 0).

    Returns
    -------
    xarray.Dataset
        The lazy variables.

    Raises
    ------
    lames_cube.errors.StoreNotFoundError, lames_cube.errors.IncompleteStoreError
        As :func:`open_cube`.

    Examples
    --------
    >>> import tempfile
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> gbox = GeoBox.from_bbox((300000, 7000000, 302560, 7002560), "EPSG:32719", resolution=10)
    >>> ds = xr.Dataset({"b04": xr_zeros(gbox, dtype="uint16"), "scl": xr_zeros(gbox, "uint8")})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     opened = open_store(write_cube(ds, f"{tmp}/s.zarr"))
    ...     sorted(opened.data_vars), str(opened.scl.dtype)
    (['b04', 'scl'], 'uint8')
    """
    path = _checked_store(store, allow_incomplete)
    ds = open_dataset(path)
    return xr.Dataset({n: _restore_coords(v) for n, v in ds.data_vars.items()}, attrs=ds.attrs)


def open_cube(store: str | os.PathLike[str], *, allow_incomplete: bool = False,
              variable: str | None = None) -> xr.DataArray:
    """Open a store written by :func:`write_cube` as a lazy cube.

    The result is dask-backed with the Zarr chunks, and has the written name, dims, dtype,
    coordinates (string ones as fixed-width unicode) and attrs. The CRS is decoded from the
    grid-mapping coordinate (``decode_coords="all"``), so ``.rio.crs`` (rioxarray is imported
    here) and ``.odc.geobox`` both work, equal to the written ones.

    Parameters
    ----------
    store : str or path-like
        Local path of the store.
    allow_incomplete : bool, default False
        Open a store whose write has not finished (unwritten chunks read as 0, the nodata value).
    variable : str, optional
        The variable to open when a store holds several.

    Returns
    -------
    xarray.DataArray
        The lazy cube.

    Raises
    ------
    lames_cube.errors.StoreNotFoundError
        No store at ``store``.
    lames_cube.errors.IncompleteStoreError
        The store's write has not finished; the message says how to resume it.

    Examples
    --------
    >>> import tempfile
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> gbox = GeoBox.from_bbox((300000, 7000000, 302560, 7002560), "EPSG:32719", resolution=10)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_cube(xr_zeros(gbox, dtype="uint16").rename("b04"), f"{tmp}/c.zarr")
    ...     cube = open_cube(path)
    ...     str(cube.rio.crs), cube.odc.geobox == gbox, cube.name
    ('EPSG:32719', True, 'b04')
    """
    path = _checked_store(store, allow_incomplete)
    ds = open_dataset(path)
    name = _data_var(ds, path, variable)
    return _restore_coords(ds[name])
