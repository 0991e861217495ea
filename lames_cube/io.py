"""Zarr v3 persistence of datacubes: the only module of lames_cube that writes stores.

A cube is a lazy :class:`xarray.DataArray` with dims ``(time, band, y, x)`` (or ``(band, y, x)``,
``(y, x)``) on an odc-geo GeoBox. :func:`write_cube` writes it as a Zarr **v3** store holding one
variable; :func:`open_cube` reads it back lazily, with the CRS visible to both rioxarray
(``.rio.crs``) and odc-geo (``.odc.geobox``) and the coordinates bit for bit.

Writes are resumable (DESIGN.md, "Nothing lost"). A write first records its plan in a ledger,
``<store>/.lames/ledger.jsonl``, then writes the metadata (``to_zarr(..., compute=False)``), then
the pixels one *region* at a time -- a region is one Zarr chunk along y and x and every time step
and band -- and appends one line to the ledger per finished region. A crash leaves a store that
:func:`open_cube` refuses (unless ``allow_incomplete=True``); ``write_cube(cube, store,
mode="resume")`` with the same cube writes only the missing regions and gives the same bytes as an
uninterrupted write.

The ledger holds one JSON object per line::

    {"event": "begin", "job": "3f2a...", "op": "write", "time": [0, 3],
     "grid": {"y": [0, 512, 256], "x": [0, 768, 256]}, "template": {...}, "lames_ledger": 1}
    {"event": "metadata", "job": "3f2a..."}
    {"event": "done", "t": [0, 3], "y": [0, 256], "x": [0, 256]}
    ...
    {"event": "complete", "job": "3f2a..."}

``begin`` declares a job (``op`` is ``write``, ``init`` or ``append``): the time range it fills and
its chunk grid (``[start, stop, chunk]`` per spatial dim); ``template`` describes the cube (name,
dims, shape, chunks, dtype, attrs and a SHA-256 of every coordinate) so that a resume with another
cube is refused. ``done`` records a finished region (absolute index ranges, ``t`` = ``[0, 0]`` for
cubes without time). A job is complete when every region of its grid has a ``done`` line whose
``t`` range contains the job's; the store is complete when every job is. Lines are appended with
one ``write`` call each, so concurrent region writers (one process per tile) can share a ledger on
a local file system. The ledger guards against a crashed *process*; it does not fsync.

Modes (``mode=``), by operation:

* full write -- ``"w-"`` (default) refuses an existing store; ``"w"`` deletes it (only if it looks
  like a store) and writes anew; ``"resume"`` finishes an interrupted write of the same cube (a
  no-op if the store is complete, a plain write if there is no store).
* ``region=`` -- ``"w-"`` refuses regions already written; ``"w"`` overwrites them; ``"resume"``
  skips them.
* ``append_dim="time"`` -- ``"w-"`` appends new time steps (refused while the store is
  incomplete); ``"w"`` is refused; ``"resume"`` finishes an interrupted append of the same cube
  (a no-op if it completed).

The ledger lives in an empty Zarr group, ``<store>/.lames/`` (with its own ``zarr.json``): a
plain file at the store's root makes zarr warn "Object at ... is not recognized as a component of
a Zarr hierarchy" every time xarray lists the root.

Other choices: ``consolidated=False`` everywhere (consolidated metadata is not part of the Zarr v3
specification and every region write would have to rewrite it); ``time`` is stored as int64
``nanoseconds since 1970-01-01`` so every ``datetime64[ns]`` value round-trips exactly and appended
times never need other units; string coordinates are stored as Zarr v3 variable-length ``string``
(fixed-width unicode has no v3 specification and warns) and come back as NumPy fixed-width unicode
(``<U3``); the zarr ``fill_value`` is the dtype's default (0 for integers = nodata, NaN for
floats), so unwritten chunks read as nodata.

A store is a local path or an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...; credentials
come from fsspec's usual settings): the same writes, ledger and resumes. On object stores the
ledger is rewritten whole for each line, so concurrent region writers need a local store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as dsa
import numpy as np
import xarray as xr

from lames_cube._atomic import atomic_write_text, check_writable, raise_if_disk_full
from lames_cube._fs import StorePath, UrlPath, append_bytes, as_store_path, remove_tree
from lames_cube.errors import (  # noqa: F401 (re-exported)
    ChunkError,
    IncompleteStoreError,
    LamesCubeError,
    RegionError,
    StoreError,
    StoreExistsError,
    StoreGridMismatchError,
    StoreNotFoundError,
    TemplateMismatchError,
)

__all__ = [
    "LEDGER_NAME",
    "ChunkError",
    "IncompleteStoreError",
    "RegionError",
    "StoreError",
    "StoreExistsError",
    "StoreGridMismatchError",
    "StoreNotFoundError",
    "TemplateMismatchError",
    "init_cube_store",
    "open_cube",
    "open_store",
    "region_written",
    "regions_written",
    "store_status",
    "write_cube",
]

#: Path of the ledger inside a store. It lives in an empty Zarr group (``.lames/zarr.json``) so
#: that zarr does not warn about an unknown object when xarray lists the store's root.
LEDGER_NAME = ".lames/ledger.jsonl"
_LEDGER_GROUP = {"zarr_format": 3, "node_type": "group",
                 "attributes": {"description": "lames_cube write ledger (ledger.jsonl)"}}
_LEDGER_VERSION = 1
_MODES = ("w-", "w", "resume")
_TIME_ENCODING = {
    "units": "nanoseconds since 1970-01-01",
    "calendar": "proleptic_gregorian",
    "dtype": "int64",
}
_ZARR_KW: dict[str, Any] = {"zarr_format": 3, "consolidated": False}

Mode = Literal["w-", "w", "resume"]


# --------------------------------------------------------------------------------------------
# Errors



class _SimulatedCrash(RuntimeError):
    """Raised by the ``_fail_after`` test hook of :func:`write_cube`."""


# --------------------------------------------------------------------------------------------
# Preparing a cube: one Dataset whose dask chunks are the Zarr chunks


@dataclass
class _Prepared:
    ds: xr.Dataset  # the data variables; dask chunks == Zarr chunks; encodings set
    name: str  # the primary variable (a Dataset's variable with the most dims)
    spatial: tuple[str, str]  # (y dim, x dim)
    gbox: Any  # odc.geo.geobox.GeoBox
    named: bool = True  # False: the cube had no name (the variable is called "data")

    @property
    def var(self) -> xr.DataArray:
        return self.ds[self.name]

    @property
    def names(self) -> list[str]:
        """Every data variable, the primary one first."""
        return [self.name] + [str(n) for n in self.ds.data_vars if n != self.name]

    @property
    def chunks(self) -> dict[Hashable, int]:
        """The Zarr chunks (the dask chunks may start with a partial one, see ``_conform``)."""
        return dict(zip(self.var.dims, self.var.encoding["chunks"], strict=True))

    def replace(self, **kw: Any) -> _Prepared:
        return _Prepared(**{"ds": self.ds, "name": self.name, "spatial": self.spatial,
                            "gbox": self.gbox, "named": self.named, **kw})


def _is_regular(chunks: tuple[int, ...]) -> bool:
    """Equal chunks, except a last one that may be smaller."""
    return all(c == chunks[0] for c in chunks[:-1]) and chunks[-1] <= chunks[0]


def _check_patch_size(patch_size: Any) -> int:
    if isinstance(patch_size, bool) or not isinstance(patch_size, int | np.integer) or patch_size < 1:
        raise ChunkError(f"patch_size must be a positive integer (e.g. 256); got {patch_size!r}.")
    return int(patch_size)


def _default_chunk(dim: Hashable, size: int, spatial: tuple[str, str], patch: int) -> int:
    if dim in spatial:
        return min(size, 4 * patch)
    return 1 if dim == "time" else size


def _rechunk(cube: xr.DataArray, chunks: Mapping[Hashable, int] | None, spatial: tuple[str, str],
             patch: int, check: bool = True) -> xr.DataArray:
    """Apply ``chunks=``, chunk NumPy cubes, make irregular chunks regular and check the patch rule.

    Rule for irregular dask chunks along a dim: rechunk to the largest chunk there, rounded up to
    a multiple of ``patch`` for y and x, and capped at the dim's size.
    """
    if chunks is not None:
        if not isinstance(chunks, Mapping):
            raise ChunkError(f"chunks must be a mapping of dim name to chunk size, e.g. "
                             f"{{'y': 1024, 'x': 1024}}; got {chunks!r}.")
        unknown = [d for d in chunks if d not in cube.dims]
        if unknown:
            raise ChunkError(f"chunks names dims {unknown} that the cube does not have; its dims "
                             f"are {list(cube.dims)}.")
        for d, c in chunks.items():
            if isinstance(c, bool) or not isinstance(c, int | np.integer) or (c < 1 and c != -1):
                raise ChunkError(f"chunks[{d!r}] must be a positive integer or -1; got {c!r}.")
        cube = cube.chunk({d: (cube.sizes[d] if c == -1 else int(c)) for d, c in chunks.items()})
    if cube.chunks is None:
        cube = cube.chunk({d: _default_chunk(d, cube.sizes[d], spatial, patch) for d in cube.dims})
    fix = {}
    for d, c in zip(cube.dims, cube.chunks, strict=True):
        if not _is_regular(c):
            size = max(c)
            if d in spatial:
                size = patch * math.ceil(size / patch)
            fix[d] = min(size, cube.sizes[d])
    if fix:
        cube = cube.chunk(fix)
    for d, c in zip(cube.dims, cube.chunks, strict=True):
        if check and d in spatial and c[0] % patch and len(c) > 1:
            lo = max(patch, c[0] // patch * patch)
            raise ChunkError(
                f"chunks along {d!r} are {c[0]} px, not a multiple of patch_size={patch} (and "
                f"the dim, {cube.sizes[d]} px, spans several chunks). Rechunk, e.g. "
                f"chunks={{{d!r}: {lo}}} or {{{d!r}: {lo + patch}}}, or pass another patch_size."
            )
    return cube


def _crs_coord_name(cube: xr.DataArray, crs: Any) -> str | None:
    """Name of a grid-mapping coordinate whose WKT describes ``crs``, or None."""
    from odc.geo.crs import CRS

    names = [cube.encoding.get("grid_mapping"), cube.attrs.get("grid_mapping"), "spatial_ref"]
    names += [n for n, c in cube.coords.items() if c.ndim == 0 and "crs_wkt" in c.attrs]
    for name in names:
        if not isinstance(name, str) or name not in cube.coords:
            continue
        wkt = cube.coords[name].attrs.get("crs_wkt") or cube.coords[name].attrs.get("spatial_ref")
        try:
            if wkt and CRS(wkt) == crs:
                return name
        except Exception:  # an unparsable WKT: fall back to writing a fresh one
            continue
    return None


def _crs_text(crs: Any) -> str:
    """One spelling of a CRS for attrs: ``EPSG:<code>`` when it has one, else its WKT."""
    return f"EPSG:{crs.epsg}" if crs.epsg is not None else crs.to_wkt()


def _is_text(values: np.ndarray) -> bool:
    if values.dtype.kind in "US" or values.dtype.kind == "T":
        return True
    return values.dtype == object and all(isinstance(v, str) for v in values.ravel())


_CF_ENCODING_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset")


def _numpy_json(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)


def _attrs_json(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    """Attrs as they read back from the store's JSON."""
    return json.loads(json.dumps(dict(attrs), sort_keys=True, default=_numpy_json))


def _as_text_objects(values: np.ndarray) -> np.ndarray:
    """Strings as an object array (written as Zarr v3 variable-length ``string``)."""
    out = np.empty(values.shape, dtype=object)
    out.ravel()[:] = [str(v) for v in values.ravel()]
    return out


def _check_attrs(cube: xr.DataArray) -> None:
    """Refuse attrs that xarray treats as encoding, and values that cannot be stored as JSON."""
    clash = [k for k in _CF_ENCODING_ATTRS if k in cube.attrs]
    if clash:
        raise StoreError(
            f"the cube's attrs hold CF encoding keys {clash}, which xarray would apply when "
            f"writing and reading; remove them (e.g. cube.attrs.pop({clash[0]!r})) and record "
            f"the no-data value as attrs['nodata']."
        )
    for k, v in cube.attrs.items():
        try:
            json.dumps(v, default=_numpy_json)
        except (TypeError, ValueError) as err:
            raise StoreError(f"attrs[{k!r}] = {v!r} cannot be stored as JSON ({err}); convert it "
                             f"to a number, string, list or dict first.") from None


def _prepare(cube: Any, chunks: Mapping[Hashable, int] | None, patch_size: Any,
             check_chunks: bool = True) -> _Prepared:
    """Validate a cube and turn it into the Dataset that is written.

    ``check_chunks=False`` (region and append writes) skips the patch rule: those cubes are
    rechunked to the store's chunks afterwards.
    """
    import odc.geo.xr  # noqa: F401  (registers .odc)

    patch = _check_patch_size(patch_size)
    if isinstance(cube, xr.Dataset):
        return _prepare_dataset(cube, chunks, patch, check_chunks)
    if not isinstance(cube, xr.DataArray):
        raise StoreError(f"write_cube expects an xarray.DataArray or Dataset cube; got "
                         f"{type(cube).__name__}.")
    gbox = cube.odc.geobox
    if gbox is None or gbox.crs is None:
        raise StoreError(
            f"the cube {cube.name!r} (dims {list(cube.dims)}) has no CRS/GeoBox, so the store could "
            f"not say where its pixels are. Assign one, e.g. cube.odc.assign_crs('EPSG:32719')."
        )
    spatial = tuple(str(d) for d in cube.odc.spatial_dims)
    if tuple(cube.dims[-2:]) != spatial:
        raise StoreError(f"the spatial dims {spatial} must be the last two dims of the cube; got "
                         f"{list(cube.dims)}. Use cube.transpose(..., {spatial[0]!r}, "
                         f"{spatial[1]!r}).")
    name = cube.name if cube.name is not None else "data"
    if not isinstance(name, str) or not name or name in cube.coords:
        raise StoreError(f"the cube's name {name!r} cannot name the store's variable (it must be "
                         f"a non-empty string that is not a coordinate name); rename the cube, "
                         f"e.g. cube.rename('reflectance').")
    _check_attrs(cube)
    cube = _rechunk(cube, chunks, spatial, patch, check=check_chunks)

    # Grid mapping: keep a coordinate that already describes the CRS, else write one (rioxarray).
    crs_name = _crs_coord_name(cube, gbox.crs)
    if crs_name is None:
        import rioxarray  # noqa: F401  (registers .rio)

        cube = cube.rio.write_crs(gbox.crs.to_wkt())
        crs_name = cube.rio.grid_mapping

    ds = cube.to_dataset(name=name, promote_attrs=False)
    # Coordinates are small and written with the metadata: load lazy ones now.
    lazy = {k: v.compute() for k, v in ds.coords.items() if v.chunks is not None}
    if lazy:
        ds = ds.assign_coords(lazy)
    # Fresh encodings (a cube read from another store carries that store's chunks and codecs).
    new_coords = {}
    for k, v in ds.coords.items():
        v = v.copy(deep=False)
        v.encoding = {}
        if v.dtype.kind == "M":  # any datetime unit is stored as int64 nanoseconds
            v = v.copy(data=np.asarray(v.values).astype("datetime64[ns]"))
            v.encoding = dict(_TIME_ENCODING)
        elif _is_text(np.asarray(v.values)):
            v = v.copy(data=_as_text_objects(np.asarray(v.values)))
            v.encoding = {}
        if k in spatial and "crs" in v.attrs:  # odc-geo writes str(crs): an EPSG code or WKT,
            v.attrs = {**v.attrs, "crs": _crs_text(gbox.crs)}  # by how the CRS was made
        new_coords[k] = v
    ds = ds.assign_coords(new_coords)
    var = ds[name]
    var.attrs = {k: a for k, a in var.attrs.items() if k not in ("grid_mapping", "coordinates")}
    chunk_sizes = tuple(c[0] for c in var.chunks)
    var.encoding = {"chunks": chunk_sizes, "grid_mapping": crs_name}
    ds[name] = var
    return _Prepared(ds=ds, name=name, spatial=spatial, gbox=gbox,  # type: ignore[arg-type]
                     named=cube.name is not None)


def _prepare_dataset(data: xr.Dataset, chunks: Mapping[Hashable, int] | None, patch: int,
                     check_chunks: bool) -> _Prepared:
    """A Dataset of variables on one grid (e.g. reflectance, SCL and clear_count apart, each
    with its own dtype and attrs), written and resumed together, region by region."""
    if not data.data_vars:
        raise StoreError("the Dataset to write has no data variables; add at least one, e.g. "
                         "xr.Dataset({'reflectance': cube}).")
    preps = []
    for name, var in data.data_vars.items():
        if var.ndim < 2:
            raise StoreError(
                f"variable {name!r} of the Dataset has dims {list(var.dims)}, not a grid: every "
                f"variable of a store lies on the grid (..., y, x). Drop it "
                f"(ds.drop_vars({name!r})) or keep its value in ds.attrs."
            )
        sub = chunks if chunks is None else {d: c for d, c in chunks.items() if d in var.dims}
        preps.append(_prepare(var.rename(name), sub, patch, check_chunks))
    unknown = [d for d in (chunks or {}) if d not in data.dims]
    if unknown:
        raise ChunkError(f"chunks names dims {unknown} that the Dataset does not have; its dims "
                         f"are {list(data.dims)}.")
    first = preps[0]
    for p in preps[1:]:
        if p.spatial != first.spatial or p.gbox != first.gbox:
            raise StoreGridMismatchError(
                f"variables {first.name!r} and {p.name!r} are not on one grid:\n"
                f"  {first.name}: {_gbox_text(first.gbox)}\n  {p.name}: {_gbox_text(p.gbox)}\n"
                f"Reproject one onto the other's GeoBox, or write them to separate stores."
            )
        for d in set(first.chunks) & set(p.chunks) if check_chunks else ():
            if p.chunks[d] != first.chunks[d]:
                raise ChunkError(
                    f"variables {first.name!r} and {p.name!r} have different chunks along {d!r} "
                    f"({first.chunks[d]} and {p.chunks[d]} px); a store's regions span every "
                    f"variable. Pass chunks={{{d!r}: {first.chunks[d]}}}."
                )
    primary = max(preps, key=lambda p: p.var.ndim)  # first of the widest
    _check_attrs(data)
    ds = xr.merge([p.ds for p in preps], compat="equals", join="exact", combine_attrs="override")
    for p in preps:
        ds[p.name].encoding = dict(p.var.encoding)
        ds[p.name].attrs = dict(p.var.attrs)
    ds.attrs = dict(data.attrs)
    return _Prepared(ds=ds, name=primary.name, spatial=primary.spatial, gbox=primary.gbox)


def _metadata_template(prep: _Prepared) -> xr.Dataset:
    """The Dataset with the cube's data replaced by cheap zeros: writing it writes metadata only."""
    ds = prep.ds.copy()
    for name in prep.names:
        var = prep.ds[name]
        ds[name] = var.copy(data=dsa.zeros(var.shape, dtype=var.dtype, chunks=var.chunks))
        ds[name].encoding = dict(var.encoding)
    return ds


# --------------------------------------------------------------------------------------------
# Template summaries (what a resume must match)


def _hash_values(values: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(values.shape).encode())
    if _is_text(values):
        h.update("\x1f".join(str(v) for v in values.ravel()).encode())
    elif values.dtype.kind in "mM":
        h.update(values.astype("datetime64[ns]" if values.dtype.kind == "M" else "timedelta64[ns]")
                 .view("int64").tobytes())
    else:
        h.update(values.dtype.str.encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def _var_template(var: xr.DataArray) -> dict[str, Any]:
    return {
        "dims": [str(d) for d in var.dims],
        "shape": list(var.shape),
        "chunks": [int(c) for c in var.encoding["chunks"]],
        "dtype": var.dtype.str,
        "attrs": _attrs_json(var.attrs),
    }


def _template(prep: _Prepared) -> dict[str, Any]:
    out = {
        "name": prep.name,
        **_var_template(prep.var),
        "coords": {str(k): {"dims": [str(d) for d in c.dims],
                            "sha256": _hash_values(np.asarray(c.values))}
                   for k, c in sorted(prep.ds.coords.items(), key=lambda kv: str(kv[0]))},
    }
    if len(prep.names) > 1:  # a Dataset: every variable, and the Dataset's attrs
        out["variables"] = {n: _var_template(prep.ds[n]) for n in prep.names[1:]}
        out["dataset_attrs"] = _attrs_json(prep.ds.attrs)
    return out


def _template_diff(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in ("name", "dims", "shape", "chunks", "dtype", "attrs", "variables", "dataset_attrs"):
        if stored.get(key) != new.get(key):
            out.append(f"{key}: store {stored.get(key)!r}, cube {new.get(key)!r}")
    sc, nc = stored.get("coords", {}), new.get("coords", {})
    for k in sorted(set(sc) | set(nc)):
        if k not in sc:
            out.append(f"coordinate {k!r}: only in the cube")
        elif k not in nc:
            out.append(f"coordinate {k!r}: only in the store")
        elif sc[k] != nc[k]:
            out.append(f"coordinate {k!r}: different values")
    return out


def _job_id(template: Mapping[str, Any], time: list[int]) -> str:
    text = json.dumps({"template": template, "time": time}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The ledger

_Region = tuple[int, int, int, int]  # y0, y1, x0, x1


def _grid_regions(grid: Mapping[str, list[int]], spatial: tuple[str, str]) -> list[_Region]:
    (y0, y1, cy), (x0, x1, cx) = grid[spatial[0]], grid[spatial[1]]
    return [(ya, min(ya + cy, y1), xa, min(xa + cx, x1))
            for ya in range(y0, y1, cy) for xa in range(x0, x1, cx)]


@dataclass
class _LedgerState:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: set[str] = field(default_factory=set)
    done: dict[_Region, list[tuple[int, int]]] = field(default_factory=dict)
    complete: set[str] = field(default_factory=set)

    def is_done(self, region: _Region, t: tuple[int, int]) -> bool:
        return any(a <= t[0] and t[1] <= b for a, b in self.done.get(region, ()))

    def regions(self, job: str) -> list[_Region]:
        rec = self.jobs[job]
        return _grid_regions(rec["grid"], tuple(rec["template"]["dims"][-2:]))  # type: ignore[arg-type]

    def missing(self, job: str) -> list[_Region]:
        t = tuple(self.jobs[job]["time"])
        return [r for r in self.regions(job) if not self.is_done(r, t)]  # type: ignore[arg-type]

    def job_complete(self, job: str) -> bool:
        return job in self.complete or (job in self.metadata and not self.missing(job))

    def incomplete_jobs(self) -> list[str]:
        return [j for j in self.jobs if not self.job_complete(j)]


class _Ledger:
    def __init__(self, store: StorePath) -> None:
        self.path = store / LEDGER_NAME

    def exists(self) -> bool:
        return self.path.is_file()

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":"))
        data = (line + "\n").encode()
        group = self.path.parent / "zarr.json"
        if not group.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(group, UrlPath):
                group.write_text(json.dumps(_LEDGER_GROUP, indent=2))
            else:
                atomic_write_text(group, json.dumps(_LEDGER_GROUP, indent=2))
        if isinstance(self.path, UrlPath):  # no concurrent writers on object stores
            old = self.path.read_bytes() if self.path.exists() else b""
            append_bytes(self.path, (b"\n" if old and not old.endswith(b"\n") else b"") + data)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:  # a crash may have left a torn last line: start on a fresh one
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            os.write(fd, data)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every whole record of the ledger, in order, whatever its event (lines torn by a
        crash are skipped); ``[]`` without a ledger. Other writers (patch sets) keep their own
        events here and read them back with this."""
        if not self.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a line torn by a crash
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def read(self) -> _LedgerState:
        state = _LedgerState()
        if not self.exists():
            return state
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a line torn by a crash
                continue
            event = rec.get("event")
            if event == "begin":
                if rec.get("lames_ledger") != _LEDGER_VERSION:
                    raise StoreError(f"the ledger {self.path} has version "
                                     f"{rec.get('lames_ledger')!r}; this lames_cube reads version "
                                     f"{_LEDGER_VERSION}. Rewrite the store with mode='w'.")
                state.jobs[rec["job"]] = rec
            elif event == "metadata":
                state.metadata.add(rec["job"])
            elif event == "done":
                region = (*rec["y"], *rec["x"])
                state.done.setdefault(region, []).append(tuple(rec["t"]))  # type: ignore[arg-type]
            elif event == "complete":
                state.complete.add(rec["job"])
        return state

    def mark_complete(self) -> _LedgerState:
        state = self.read()
        for job in state.jobs:
            if job not in state.complete and state.job_complete(job):
                self.append({"event": "complete", "job": job})
                state.complete.add(job)
        return state


def _describe_incomplete(path: StorePath, state: _LedgerState) -> str:
    if not state.jobs:
        return (f"the store {str(path)!r} is incomplete: its creation was interrupted before any "
                f"job was recorded. Rewrite it with write_cube(cube, {str(path)!r}, mode='w').")
    parts = []
    for job in state.incomplete_jobs():
        rec = state.jobs[job]
        total = len(state.regions(job))
        missing = state.missing(job) if job in state.metadata else state.regions(job)
        shape = tuple(rec["template"]["shape"])
        first = ", ".join(f"y[{r[0]}:{r[1]}] x[{r[2]}:{r[3]}]" for r in missing[:3])
        more = ", ..." if len(missing) > 3 else ""
        if rec["op"] == "init":
            how = (f"write the missing regions with write_cube(subcube, {str(path)!r}, "
                   f"region={{...}}), or the whole cube with mode='resume'")
        elif rec["op"] == "append":
            how = (f"finish it with write_cube(new_cube, {str(path)!r}, append_dim='time', "
                   f"mode='resume') using the same new cube")
        else:
            how = (f"finish it with write_cube(cube, {str(path)!r}, mode='resume') using the same "
                   f"cube")
        parts.append(f"the {rec['op']} of a cube of shape {shape} (time index "
                     f"{rec['time'][0]}:{rec['time'][1]}) has {total - len(missing)} of {total} "
                     f"regions written (missing: {first}{more}); {how}")
    return (f"the store {str(path)!r} is incomplete: " + "; ".join(parts) +
            ". Or pass allow_incomplete=True to read it anyway (unwritten chunks read as the fill "
            "value: 0 for integer cubes, NaN for float ones).")


# --------------------------------------------------------------------------------------------
# Store helpers


def _as_path(store: Any) -> StorePath:
    try:
        return as_store_path(store)
    except TypeError:
        raise StoreError(f"store must be a path (str or pathlib.Path) or an fsspec URL such as "
                         f"'s3://bucket/cube.zarr'; got {type(store).__name__}.") from None


def _returned(path: StorePath) -> Path | str:
    """What the public functions return: the local path, or the URL of a remote store."""
    return str(path) if isinstance(path, UrlPath) else path


def _is_empty_dir(path: StorePath) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _remove_store(path: StorePath) -> None:
    """Delete a store (only something that looks like one: a safety net against typos)."""
    if path.is_file() or (not (path / "zarr.json").exists() and not (path / LEDGER_NAME).exists()
                          and not _is_empty_dir(path)):
        raise StoreError(f"refusing to delete {str(path)!r}: it is not a Zarr store (no zarr.json "
                         f"nor {LEDGER_NAME}). Pick another path or remove it yourself.")
    remove_tree(path)


def _clear_except_ledger(path: StorePath) -> None:
    for child in path.iterdir():
        if child.name == LEDGER_NAME.split("/")[0]:
            continue
        if child.is_dir():
            remove_tree(child)
        else:
            child.unlink()


def _open_dataset(path: StorePath) -> xr.Dataset:
    import odc.geo.xr  # noqa: F401  (registers .odc)
    import rioxarray  # noqa: F401  (registers .rio)

    return xr.open_zarr(str(path), decode_coords="all", **_ZARR_KW)


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


def _store_chunks(var: xr.DataArray) -> dict[Hashable, int]:
    enc = var.encoding.get("chunks") or var.encoding.get("preferred_chunks")
    if isinstance(enc, Mapping):
        return dict(enc)
    return dict(zip(var.dims, enc, strict=True))


def _restore_coords(da: xr.DataArray) -> xr.DataArray:
    """Load the small (0-d and 1-d) coordinates; variable-length strings (StringDType or object)
    become fixed-width unicode, as cubes carry them."""
    small = {k: c for k, c in da.coords.items()
             if c.ndim <= 1 and not (k in da.indexes and c.dtype.kind not in "OT")}
    loaded = dask.compute(*(c.data for c in small.values()))  # one scheduler call
    new = {}
    for (k, c), values in zip(small.items(), loaded, strict=True):
        values = np.asarray(values)
        if values.dtype.kind in "OT" and _is_text(values):
            values = np.asarray(_as_text_objects(values).tolist(), dtype=str)
        new[k] = c.copy(data=values)
    return da.assign_coords(new) if new else da


def _gbox_text(gbox: Any) -> str:
    """A one-line GeoBox: shape, CRS (EPSG code when there is one), affine and bounds."""
    crs = gbox.crs
    name = f"EPSG:{crs.epsg}" if crs is not None and crs.epsg is not None else str(crs)
    a = gbox.affine
    return (f"GeoBox(shape={tuple(gbox.shape)}, crs={name}, affine=({a.a!r}, {a.b!r}, {a.c!r}, "
            f"{a.d!r}, {a.e!r}, {a.f!r}), bounds={tuple(gbox.extent.boundingbox)})")


def _check_store_grid(store_gbox: Any, cube_gbox: Any, path: StorePath, what: str) -> None:
    if store_gbox != cube_gbox:
        raise StoreGridMismatchError(
            f"the {what} is not on the store's grid ({str(path)!r}).\n"
            f"  store: {_gbox_text(store_gbox)}\n  cube:  {_gbox_text(cube_gbox)}\n"
            f"Reproject or crop the cube onto the store's GeoBox (e.g. cube.odc.reproject(store "
            f"geobox)) or write it to another store."
        )


def _check_coords_equal(prep: _Prepared, stored: xr.DataArray, names: Iterable[Hashable],
                        path: StorePath, what: str) -> None:
    names = sorted(names, key=lambda k: k not in prep.var.dims)  # dimension coordinates first
    for k in names:
        if k not in stored.coords:
            raise TemplateMismatchError(f"the {what} has a coordinate {k!r} that the store "
                                        f"{str(path)!r} lacks; drop it (cube.drop_vars({k!r})).")
        a, b = np.asarray(prep.ds.coords[k].values), np.asarray(stored.coords[k].values)
        if a.shape != b.shape or _hash_values(a) != _hash_values(b):
            raise TemplateMismatchError(
                f"coordinate {k!r} of the {what} differs from the store's ({str(path)!r}): "
                f"store {_short(b)}, cube {_short(a)}. Give the cube the store's values (e.g. "
                f"select the same labels) or write it to another store."
            )


def _short(values: np.ndarray) -> str:
    flat = values.ravel().tolist()
    return repr(flat if len(flat) <= 6 else [*flat[:3], "...", *flat[-2:]])


def _compatible(prep: _Prepared, stored: xr.DataArray, path: StorePath, what: str) -> None:
    """Same dims, dtype and coordinate names as the store's variable."""
    if tuple(stored.dims) != tuple(prep.var.dims):
        raise TemplateMismatchError(f"the {what} has dims {list(prep.var.dims)}; the store "
                                    f"{str(path)!r} has {list(stored.dims)}. Transpose the cube.")
    if stored.dtype != prep.var.dtype:
        raise TemplateMismatchError(f"the {what} has dtype {prep.var.dtype}; the store "
                                    f"{str(path)!r} holds {stored.dtype}. Cast it, e.g. "
                                    f"cube.astype({str(stored.dtype)!r}).")
    extra = set(prep.ds.coords) - set(stored.coords)
    lacking = {k for k in stored.coords if k not in prep.ds.coords}
    if extra or lacking:
        raise TemplateMismatchError(
            f"the {what}'s coordinates differ from the store's ({str(path)!r}): only in the cube "
            f"{sorted(map(str, extra))}, only in the store {sorted(map(str, lacking))}. Add or "
            f"drop coordinates to match."
        )


# --------------------------------------------------------------------------------------------
# Writing regions


def _aligned_chunks(offset: int, length: int, chunk: int) -> tuple[int, ...]:
    """Chunks of ``length`` items starting at ``offset`` whose edges fall on multiples of chunk."""
    out, pos, end = [], offset, offset + length
    while pos < end:
        nxt = min((pos // chunk + 1) * chunk, end)
        out.append(nxt - pos)
        pos = nxt
    return tuple(out)


def _conform(prep: _Prepared, store_chunks: Mapping[Hashable, int],
             offsets: Mapping[Hashable, int]) -> _Prepared:
    """Rechunk to the store's Zarr chunks, aligned with where the cube lands in the store."""
    ds = prep.ds.copy()
    for name in prep.names:
        var = prep.ds[name]
        chunks = {d: _aligned_chunks(offsets.get(d, 0), var.sizes[d], int(store_chunks[d]))
                  for d in var.dims}
        enc = dict(var.encoding)
        ds[name] = var.chunk(chunks)
        enc["chunks"] = tuple(int(store_chunks[d]) for d in var.dims)
        ds[name].encoding = enc
    return prep.replace(ds=ds)


def _write_regions(prep: _Prepared, path: StorePath, regions: list[_Region], *, t: tuple[int, int],
                   offset: tuple[int, int], skip: _LedgerState | None, progress: bool,
                   fail_after: int | None, partial_time: bool = False,
                   scheduler: str | None = None) -> None:
    """Write ``regions`` (absolute indices) of the prepared cube, one ``to_zarr`` call each
    (computed by ``scheduler``, default the active one)."""
    ledger = _Ledger(path)
    data = prep.ds[prep.names].drop_vars(list(prep.ds.coords))
    sizes = {d: n for name in prep.names for d, n in prep.ds[name].sizes.items()}
    ydim, xdim = prep.spatial
    todo = [r for r in regions if skip is None or not skip.is_done(r, t)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(regions), initial=len(regions) - len(todo), unit="region",
                   desc=f"write_cube {path.name}")
    written = 0
    try:
        for y0, y1, x0, x1 in todo:
            if fail_after is not None and written >= fail_after:
                raise _SimulatedCrash(f"simulated crash after {written} regions (_fail_after)")
            part = data.isel({ydim: slice(y0 - offset[0], y1 - offset[0]),
                              xdim: slice(x0 - offset[1], x1 - offset[1])})
            where: dict[Hashable, slice] = {d: slice(0, n) for d, n in sizes.items()}
            if "time" in sizes:
                where["time"] = slice(*t)
            where[ydim], where[xdim] = slice(y0, y1), slice(x0, x1)
            mode = "a" if partial_time else "r+"
            if scheduler is None:
                part.to_zarr(str(path), region=where, mode=mode, **_ZARR_KW)
            else:
                part.to_zarr(str(path), region=where, mode=mode, compute=False,
                             **_ZARR_KW).compute(scheduler=scheduler)
            ledger.append({"event": "done", "t": list(t), "y": [y0, y1], "x": [x0, x1]})
            written += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    ledger.mark_complete()


def _time_range(prep: _Prepared) -> tuple[int, int]:
    """The job's time range: all of the cube's time steps, or ``(0, 0)`` without a time dim."""
    return (0, prep.var.sizes["time"]) if "time" in prep.var.dims else (0, 0)


def _grid(prep: _Prepared) -> dict[str, list[int]]:
    """``[start, stop, chunk]`` per spatial dim, for a job covering the whole cube."""
    ydim, xdim = prep.spatial
    return {ydim: [0, prep.var.sizes[ydim], int(prep.chunks[ydim])],
            xdim: [0, prep.var.sizes[xdim], int(prep.chunks[xdim])]}


def _begin(path: StorePath, prep: _Prepared, op: str, t: tuple[int, int]) -> str:
    template = _template(prep)
    job = _job_id(template, list(t))
    _Ledger(path).append({"event": "begin", "lames_ledger": _LEDGER_VERSION, "job": job, "op": op,
                          "time": list(t), "grid": _grid(prep), "template": template})
    return job


def _check_fail_after(fail_after: Any) -> int | None:
    if fail_after is None:
        return None
    if isinstance(fail_after, bool) or not isinstance(fail_after, int) or fail_after < 0:
        raise StoreError(f"_fail_after must be None or an integer >= 0; got {fail_after!r}.")
    return fail_after


def _store_writer(func: Any) -> Any:
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


# --------------------------------------------------------------------------------------------
# Public API


@_store_writer
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
        template (:class:`TemplateMismatchError`).

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
    if mode not in ("w-", "w", "resume"):
        raise StoreError(f"init_cube_store mode must be 'w-', 'w' or 'resume'; got {mode!r}.")
    path = _as_path(store)
    prep = _prepare(template, chunks, patch_size)
    _restart_if_killed_before_begin(path, mode)
    if mode == "resume" and path.exists() and not _is_empty_dir(path):
        ledger = _Ledger(path)
        state = ledger.read()
        _resume_job(prep, path, state, "the store {path} was laid out for another cube ({diff}). "
                    "Pass the same template, or mode='w' to replace the store.")
        return _returned(path)
    _start_store(prep, path, "w-" if mode == "resume" else mode, op="init")
    return _returned(path)


def _restart_if_killed_before_begin(path: StorePath, mode: str) -> None:
    """Before a resume: a store whose creation was killed before its job was recorded holds
    nothing but the ledger's folder (empty, or with its ``zarr.json`` and an empty or torn
    ledger). Drop that folder -- only it: the store's folder may be the user's, with its own
    permissions -- so that the write starts anew."""
    if mode != "resume" or not path.is_dir() or _is_empty_dir(path):
        return
    ledger_dir = LEDGER_NAME.split("/")[0]
    if {c.name for c in path.iterdir()} <= {ledger_dir} and not _Ledger(path).records():
        remove_tree(path / ledger_dir)


def _resume_job(prep: _Prepared, path: StorePath, state: _LedgerState,
                mismatch: str) -> _LedgerState:
    """Find the ledger's job for ``prep`` (refusing another cube's store with ``mismatch``,
    formatted with ``path`` and ``diff``) and redo its metadata if a crash cut it short."""
    template = _template(prep)
    job = _job_id(template, list(_time_range(prep)))
    if job not in state.jobs:
        known = [j for j in state.jobs.values() if j["op"] in ("write", "init")]
        diff = _template_diff(known[0]["template"], template) if known else []
        raise TemplateMismatchError(mismatch.format(
            path=repr(str(path)), diff="; ".join(diff) or "no matching job in the ledger"))
    if job not in state.metadata:  # crashed while writing the metadata: redo it
        _clear_except_ledger(path)
        _write_metadata(prep, path, job)
        state = _Ledger(path).read()
    return state


def _start_store(prep: _Prepared, path: StorePath, mode: str, op: str) -> str:
    """Check the path for ``mode``, record the job and write the metadata. Returns the job id."""
    if path.exists() and not _is_empty_dir(path):
        if mode == "w":
            _remove_store(path)
        else:
            raise StoreExistsError(
                f"a store already exists at {str(path)!r}. Pass mode='w' to replace it, "
                f"mode='resume' to finish an interrupted write of the same cube, or another path."
            )
    path.mkdir(parents=True, exist_ok=True)
    t = _time_range(prep)
    job = _begin(path, prep, op, t)
    _write_metadata(prep, path, job)
    return job


def _write_metadata(prep: _Prepared, path: StorePath, job: str) -> None:
    # mode="a": the directory already holds the ledger, which mode="w" would delete.
    _metadata_template(prep).to_zarr(str(path), mode="a", compute=False, **_ZARR_KW)
    _Ledger(path).append({"event": "metadata", "job": job})


@_store_writer
def write_cube(cube: xr.DataArray, store: str | os.PathLike[str], *, mode: Mode = "w-",
               chunks: Mapping[Hashable, int] | None = None, patch_size: int = 256,
               progress: bool = False, region: Mapping[str, slice] | None = None,
               append_dim: str | None = None, scheduler: str | None = None,
               _fail_after: int | None = None) -> Path | str:
    """Write a cube to a Zarr v3 store, region by region and resumably.

    The store holds one variable named after ``cube.name`` (``"data"`` if unnamed), with the
    cube's coordinates (including per-time ones such as ``cloud_cover``), attrs and CRS (a
    grid-mapping coordinate readable by rioxarray and odc-geo). Zarr chunks equal the dask chunks;
    the pixels are computed and written one region (one chunk along y and x, every time step and
    band) at a time, so memory holds at most one region's chunks per worker thread and the whole
    cube is never computed at once. The ledger ``<store>/.lames/ledger.jsonl`` records each
    finished region (see the module docstring).

    Parameters
    ----------
    cube : xarray.DataArray
        Dims ``(..., y, x)`` -- ``(time, band, y, x)``, ``(band, y, x)`` or ``(y, x)`` -- with an
        odc-geo GeoBox (``cube.odc.geobox``). Usually dask-backed; a NumPy cube is chunked by
        ``time`` 1, other dims whole and y/x ``4 * patch_size``.
    store : str or path-like
        Local path of the store.
    mode : {"w-", "w", "resume"}, default "w-"
        Full write: ``"w-"`` refuses an existing store, ``"w"`` deletes and rewrites it,
        ``"resume"`` finishes an interrupted write of the same cube (refused with
        :class:`TemplateMismatchError` if the cube's shape, chunks, dtype, coords or attrs differ;
        a no-op if the store is complete). With ``region``: ``"w-"`` refuses regions already
        written, ``"w"`` overwrites them, ``"resume"`` skips them. With ``append_dim``: ``"w-"``
        appends, ``"resume"`` finishes an interrupted append of the same cube.
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
        (:class:`~lames_cube.errors.StoreGridMismatchError` prints both GeoBoxes), with the store's time/band coordinates.
    append_dim : {"time"}, optional
        Append the cube's time steps after the store's. Grid, bands, other coordinates, dtype and
        attrs must match the store; times must be new and later than the store's last one.
    scheduler : str, optional
        With ``region``: the dask scheduler that writes it (default: the active one, e.g.
        a distributed client's workers); ``"sync"`` writes in this process (data computed
        already, a store only this machine sees).
    _fail_after : int, optional
        Test hook: raise ``RuntimeError`` after writing this many regions (a simulated crash).

    Returns
    -------
    pathlib.Path
        The store's path.

    Raises
    ------
    StoreExistsError
        ``mode="w-"`` and a store exists.
    ChunkError
        y/x chunks that are not multiples of ``patch_size``.
    TemplateMismatchError, StoreGridMismatchError
        Resume, append or region write with a cube that does not fit the store.
    RegionError
        A malformed or misaligned ``region``.
    IncompleteStoreError
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
    fail_after = _check_fail_after(_fail_after)
    if region is not None and append_dim is not None:
        raise StoreError("pass region= or append_dim=, not both: append first, then write "
                         "regions of the appended store.")
    if chunks is not None and (region is not None or append_dim is not None):
        raise StoreError("chunks= cannot be combined with region= or append_dim=: those writes "
                         "use the store's chunks. Drop chunks=.")
    path = _as_path(store)
    if append_dim is not None:
        if append_dim != "time":
            raise StoreError(f"append_dim must be 'time'; got {append_dim!r}.")
        prep = _prepare(cube, None, patch_size, check_chunks=False)
        _append(prep, path, mode, progress=progress, fail_after=fail_after)
        return _returned(path)
    if region is not None:
        prep = _prepare(cube, None, patch_size, check_chunks=False)
        _write_region(prep, path, region, mode, progress=progress, fail_after=fail_after,
                      scheduler=scheduler)
        return _returned(path)

    prep = _prepare(cube, chunks, patch_size)
    template = _template(prep)
    t = _time_range(prep)
    _restart_if_killed_before_begin(path, mode)
    if mode == "resume" and path.exists() and not _is_empty_dir(path):
        ledger = _Ledger(path)
        if not ledger.exists():
            raise StoreError(f"cannot resume {str(path)!r}: it has no {LEDGER_NAME}, so it was not "
                             f"written by write_cube. Replace it with mode='w'.")
        state = ledger.read()
        job = _job_id(template, list(t))
        state = _resume_job(prep, path, state,
                            "cannot resume {path} with this cube: the store was started with "
                            "another cube ({diff}). Resume with the same cube, or replace the "
                            "store with mode='w'.")
        if state.job_complete(job):
            ledger.mark_complete()
            return _returned(path)
        _write_regions(prep, path, state.regions(job), t=t, offset=(0, 0), skip=state,
                       progress=progress, fail_after=fail_after)
        return _returned(path)

    job = _start_store(prep, path, "w" if mode == "w" else "w-", op="write")
    state = _Ledger(path).read()
    _write_regions(prep, path, state.regions(job), t=t, offset=(0, 0), skip=None,
                   progress=progress, fail_after=fail_after)
    return _returned(path)


def _open_for_update(path: StorePath, prep: _Prepared,
                     what: str) -> tuple[xr.DataArray, dict[Hashable, int]]:
    """The store's primary variable, and the Zarr chunks of every variable the cube writes."""
    if not (path / "zarr.json").exists():
        raise StoreNotFoundError(
            f"no Zarr store at {str(path)!r} to {what} into. Create it first with "
            f"write_cube(cube, {str(path)!r})" + (" or init_cube_store(template, path)"
                                                   if what == "write a region" else "") + "."
        )
    ds = _open_dataset(path)
    names = [str(n) for n in ds.data_vars]
    if not names:
        raise IncompleteStoreError(
            f"the store {str(path)!r} has no variables yet (its layout was interrupted): "
            f"lay it out again with init_cube_store(template, {str(path)!r}, mode='resume') "
            f"or write it whole with mode='w'."
        )
    if len(names) > 1 and sorted(names) != sorted(prep.names):
        raise TemplateMismatchError(
            f"the store {str(path)!r} holds the variables {sorted(names)}; the cube to {what} "
            f"has {sorted(prep.names)}. Pass a Dataset with exactly the store's variables (a "
            f"region or append covers every variable, or the store would be marked complete "
            f"with some of them unwritten)."
        )
    if prep.name not in ds.data_vars:
        if len(names) == 1 and not prep.named:
            name = names[0]
        else:
            raise TemplateMismatchError(f"the cube is named {prep.name!r} but the store "
                                        f"{str(path)!r} holds {names}; rename the cube, e.g. "
                                        f"cube.rename({names[0]!r}).")
    else:
        name = prep.name
    for other in prep.names[1:]:
        var = prep.ds[other]
        if other not in ds.data_vars or tuple(ds[other].dims) != tuple(var.dims) \
                or ds[other].dtype != var.dtype:
            have = {str(n): (list(v.dims), str(v.dtype)) for n, v in ds.data_vars.items()}
            raise TemplateMismatchError(
                f"the Dataset's variable {other!r} (dims {list(var.dims)}, {var.dtype}) is not "
                f"in the store {str(path)!r} as such; the store holds {have}. Write the same "
                f"variables as the store, or another store."
            )
    chunks = {d: c for n in (name, *prep.names[1:]) for d, c in _store_chunks(ds[n]).items()}
    return ds[name], chunks


def _append(prep: _Prepared, path: StorePath, mode: str, *, progress: bool,
            fail_after: int | None) -> None:
    if mode == "w":
        raise StoreError("mode='w' cannot be combined with append_dim (it would delete the store). "
                         "Use mode='w-' to append or mode='resume' to finish an interrupted append.")
    if "time" not in prep.var.dims:
        raise StoreError(f"append_dim='time' needs a cube with a time dim; got dims "
                         f"{list(prep.var.dims)}.")
    ledger = _Ledger(path)
    state = ledger.read()
    incomplete = state.incomplete_jobs() if ledger.exists() else []
    if incomplete and mode != "resume":
        raise IncompleteStoreError("cannot append: " + _describe_incomplete(path, state))
    for job in incomplete:
        # An append that crashed before its metadata was recorded may have resized some arrays
        # and not others (the store would not even open): shrink them back. No region of that
        # append can have been written yet.
        rec = state.jobs[job]
        if rec["op"] == "append" and job not in state.metadata:
            _rollback_time(path, rec["time"][0])
    stored, store_chunks = _open_for_update(path, prep, "append")
    if stored.name != prep.name:
        prep = _rename(prep, str(stored.name))

    prep = _conform(prep, store_chunks, {"time": stored.sizes["time"]})
    template = _template(prep)

    if mode == "resume":
        for job, rec in state.jobs.items():
            if rec["op"] == "append" and rec["template"] == template:
                t = (rec["time"][0], rec["time"][1])
                if state.job_complete(job):
                    ledger.mark_complete()
                    return
                prep = _conform(prep, store_chunks, {"time": t[0]})
                if job not in state.metadata:
                    _metadata_template(prep).to_zarr(str(path), append_dim="time", mode="a",
                                                     compute=False, **_ZARR_KW)
                    ledger.append({"event": "metadata", "job": job})
                    state = ledger.read()
                _write_regions(prep, path, state.regions(job), t=t, offset=(0, 0), skip=state,
                               progress=progress, fail_after=fail_after,
                               partial_time=t[0] % int(store_chunks["time"]) != 0)
                return
        if incomplete:
            raise IncompleteStoreError("cannot append: " + _describe_incomplete(path, state))
    _compatible(prep, stored, path, "cube to append")
    _check_store_grid(stored.odc.geobox, prep.gbox, path, "cube to append")
    not_time = [k for k, c in prep.ds.coords.items() if "time" not in c.dims]
    _check_coords_equal(prep, stored, not_time, path, "cube to append")
    new_attrs = _template(prep)["attrs"]
    old_attrs = _attrs_json(stored.attrs)
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
            f"{str(path)!r}: {_short(dup.astype(str))}. Drop them, e.g. "
            f"cube.drop_sel(time=...), or mode='resume' to finish an interrupted append."
        )
    if (new_t.size > 1 and not (np.diff(new_t) > np.timedelta64(0)).all()) or (
            old_t.size and new_t[0] <= old_t[-1]):
        raise TemplateMismatchError(
            f"cannot append: the store's time index must stay increasing, but its last time is "
            f"{old_t[-1] if old_t.size else None} and the cube's times are {_short(new_t.astype(str))}. "
            f"Sort the cube (cube.sortby('time')) and append only later times; rewrite the store "
            f"to insert earlier ones."
        )
    t = (int(old_t.size), int(old_t.size + new_t.size))
    template = _template(prep)
    job = _job_id(template, list(t))
    ledger.append({"event": "begin", "lames_ledger": _LEDGER_VERSION, "job": job, "op": "append",
                   "time": list(t), "grid": _grid(prep), "template": template})
    _metadata_template(prep).to_zarr(str(path), append_dim="time", mode="a", compute=False, **_ZARR_KW)
    ledger.append({"event": "metadata", "job": job})
    state = ledger.read()
    _write_regions(prep, path, state.regions(job), t=t, offset=(0, 0), skip=None,
                   progress=progress, fail_after=fail_after,
                   partial_time=t[0] % int(store_chunks["time"]) != 0)


def _rename(prep: _Prepared, name: str) -> _Prepared:
    var = prep.var
    ds = prep.ds.drop_vars(prep.name)
    ds[name] = var
    ds[name].encoding = dict(var.encoding)
    return prep.replace(ds=ds, name=name)


def _rollback_time(path: StorePath, length: int) -> None:
    """Shrink every array with a time dim back to ``length`` (undo a half-done append resize)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    for _, arr in group.arrays():
        dims = list(arr.metadata.dimension_names or ())
        if "time" in dims:
            axis = dims.index("time")
            if arr.shape[axis] != length:
                arr.resize((*arr.shape[:axis], length, *arr.shape[axis + 1:]))


def _normalise_region(region: Any, stored: xr.DataArray, spatial: tuple[str, str],
                      chunks: Mapping[Hashable, int], path: StorePath) -> dict[str, slice]:
    if not isinstance(region, Mapping):
        raise RegionError(f"region must be a mapping like {{'y': slice(0, 512), 'x': slice(256, "
                          f"768)}}; got {region!r}.")
    extra = [k for k in region if k not in spatial]
    if extra:
        raise RegionError(f"region may only name the spatial dims {list(spatial)}; got {extra}. "
                          f"Region writes always cover every time step and band.")
    out = {}
    for d in spatial:
        size = stored.sizes[d]
        s = region.get(d, slice(None))
        if not isinstance(s, slice) or s.step not in (None, 1) or any(
                v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer))
                for v in (s.start, s.stop)):
            raise RegionError(f"region[{d!r}] must be an integer slice with step 1, e.g. "
                              f"slice(0, 512); got {s!r}.")
        start, stop, _ = s.indices(size)
        c = int(chunks[d])
        if stop <= start:
            raise RegionError(f"region[{d!r}] = {s!r} is empty for the store's {d} size {size}.")
        if start % c or (stop % c and stop != size):
            raise RegionError(
                f"region[{d!r}] = slice({start}, {stop}) is not aligned with the store's "
                f"{c}-px chunks along {d!r} ({str(path)!r}): start must be a multiple of {c} and "
                f"stop a multiple of {c} or the dim's end ({size}). Try slice({start // c * c}, "
                f"{min(size, -(-stop // c) * c)})."
            )
        out[d] = slice(start, stop)
    return out


def _write_region(prep: _Prepared, path: StorePath, region: Mapping[str, slice], mode: str, *,
                  progress: bool, fail_after: int | None, scheduler: str | None = None) -> None:
    ledger = _Ledger(path)
    stored, store_chunks = _open_for_update(path, prep, "write a region")
    if not ledger.exists():
        raise StoreError(f"the store {str(path)!r} has no {LEDGER_NAME}; region writes need a "
                         f"store created by init_cube_store or write_cube.")
    if stored.name != prep.name:
        prep = _rename(prep, str(stored.name))
    _compatible(prep, stored, path, "sub-cube")

    where = _normalise_region(region, stored, prep.spatial, store_chunks, path)
    ydim, xdim = prep.spatial
    for d in (ydim, xdim):
        want = where[d].stop - where[d].start
        if prep.var.sizes[d] != want:
            raise RegionError(f"region[{d!r}] = slice({where[d].start}, {where[d].stop}) spans "
                              f"{want} px but the sub-cube has {prep.var.sizes[d]} px along "
                              f"{d!r}; pass the slice the sub-cube was cut with.")
    _check_store_grid(stored.odc.geobox[where[ydim], where[xdim]], prep.gbox, path, "sub-cube")
    not_spatial = [k for k, c in prep.ds.coords.items() if not set(c.dims) & {ydim, xdim}]
    _check_coords_equal(prep, stored, not_spatial, path, "sub-cube")
    prep = _conform(prep, store_chunks, {ydim: where[ydim].start, xdim: where[xdim].start})
    t = (0, stored.sizes["time"]) if "time" in stored.dims else (0, 0)
    grid = {ydim: [where[ydim].start, where[ydim].stop, int(store_chunks[ydim])],
            xdim: [where[xdim].start, where[xdim].stop, int(store_chunks[xdim])]}
    regions = _grid_regions(grid, (ydim, xdim))
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
    _write_regions(prep, path, regions, t=t, offset=(where[ydim].start, where[xdim].start),
                   skip=state if mode == "resume" else None, progress=progress,
                   fail_after=fail_after, scheduler=scheduler)


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
    """:func:`region_written` for many regions, reading the ledger once (a country's tiles)."""
    regions = list(regions)
    ledger = _Ledger(_as_path(store))
    state = ledger.read() if ledger.exists() else _LedgerState()
    if not state.jobs or any(job not in state.metadata for job in state.jobs):
        return [False] * len(regions)
    out = []
    for region in regions:
        done = True
        for rec in state.jobs.values():  # every job's time range (appends add their own)
            spatial = tuple(rec["template"]["dims"][-2:])
            grid = {d: [region[d].start, region[d].stop, rec["grid"][d][2]] for d in spatial}
            t = tuple(rec["time"])
            if not all(state.is_done(r, t) for r in _grid_regions(grid, spatial)):  # type: ignore[arg-type]
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
    path = _as_path(store)
    if not path.exists():
        raise StoreNotFoundError(f"no store at {str(path)!r}; check the path, or write one with "
                                 f"write_cube(cube, {str(path)!r}).")
    ledger = _Ledger(path)
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
    StoreNotFoundError, IncompleteStoreError
        As :func:`open_cube`.
    """
    path = _checked_store(store, allow_incomplete)
    ds = _open_dataset(path)
    out = xr.Dataset({n: _restore_coords(v) for n, v in ds.data_vars.items()}, attrs=ds.attrs)
    return out


def _checked_store(store: str | os.PathLike[str], allow_incomplete: bool) -> StorePath:
    """The store's path, once it exists and (unless allowed) is complete."""
    path = _as_path(store)
    if not path.exists():
        raise StoreNotFoundError(f"no store at {str(path)!r}. Check the path, or write one with "
                                 f"write_cube(cube, {str(path)!r}).")
    ledger = _Ledger(path)
    if not (path / "zarr.json").exists():
        if ledger.exists():
            raise IncompleteStoreError(_describe_incomplete(path, ledger.read()))
        raise StoreNotFoundError(f"{str(path)!r} is not a Zarr v3 store (no zarr.json). Check "
                                 f"the path.")
    if ledger.exists() and not allow_incomplete:
        state = ledger.read()
        if not state.jobs or state.incomplete_jobs():
            raise IncompleteStoreError(_describe_incomplete(path, state))
    return path


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
    StoreNotFoundError
        No store at ``store``.
    IncompleteStoreError
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
    ds = _open_dataset(path)
    name = _data_var(ds, path, variable)
    return _restore_coords(ds[name])
