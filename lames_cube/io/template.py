"""What a store write writes: a cube prepared as one Dataset, and the template a resume must match.

:func:`prepare` validates a cube (a DataArray, or a Dataset of variables on one grid) and turns it
into the Dataset that is written: dask chunks equal to the Zarr chunks, fresh encodings, a
grid-mapping coordinate for the CRS, ``time`` as int64 nanoseconds, text coordinates as
variable-length strings. :func:`template_summary` describes it (name, dims, shape, chunks, dtype,
attrs and a SHA-256 of every coordinate) for the ledger's ``begin`` record; a resume compares
summaries (:func:`template_diff`) and job ids (:func:`job_id`).

Encoding choices: ``consolidated=False`` everywhere (:data:`ZARR_KW`; consolidated metadata is not
part of the Zarr v3 specification and every region write would have to rewrite it); ``time`` is
stored as int64 ``nanoseconds since 1970-01-01`` so every ``datetime64[ns]`` value round-trips
exactly and appended times never need other units; string coordinates are stored as Zarr v3
variable-length ``string`` (fixed-width unicode has no v3 specification and warns); the zarr
``fill_value`` is the dtype's default (0 for integers = nodata, NaN for floats), so unwritten
chunks read as nodata.

Examples
--------
>>> from odc.geo.geobox import GeoBox
>>> from odc.geo.xr import xr_zeros
>>> gbox = GeoBox.from_bbox((300000, 7000000, 305120, 7002560), "EPSG:32719", resolution=10)
>>> prep = prepare(xr_zeros(gbox, dtype="uint16", chunks=(256, 256)).rename("b04"), None, 256)
>>> summary = template_summary(prep)
>>> summary["name"], summary["shape"], summary["chunks"], template_diff(summary, summary)
('b04', [256, 512], [256, 256], [])
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as dsa
import numpy as np
import odc.geo.xr  # noqa: F401  (registers .odc)
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from odc.geo.crs import CRS

from lames_cube.errors import ChunkError, StoreError, StoreGridMismatchError

__all__ = [
    "ZARR_KW",
    "Prepared",
    "as_text_objects",
    "attrs_json",
    "gbox_text",
    "hash_values",
    "is_text",
    "job_id",
    "metadata_template",
    "numpy_json",
    "prepare",
    "template_diff",
    "template_summary",
]

#: Keywords of every ``to_zarr`` / ``open_zarr`` call of a store: Zarr v3, not consolidated.
ZARR_KW: dict[str, Any] = {"zarr_format": 3, "consolidated": False}
_TIME_ENCODING = {
    "units": "nanoseconds since 1970-01-01",
    "calendar": "proleptic_gregorian",
    "dtype": "int64",
}
_CF_ENCODING_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset")


# --------------------------------------------------------------------------------------------
# Preparing a cube: one Dataset whose dask chunks are the Zarr chunks


@dataclass
class Prepared:
    """A cube ready to be written.

    Attributes
    ----------
    ds : xarray.Dataset
        The data variables; dask chunks == Zarr chunks; encodings set.
    name : str
        The primary variable (a Dataset's variable with the most dims).
    spatial : tuple of str
        ``(y dim, x dim)``.
    gbox : odc.geo.geobox.GeoBox
        The grid.
    named : bool
        False: the cube had no name (the variable is called ``"data"``).
    """

    ds: xr.Dataset
    name: str
    spatial: tuple[str, str]
    gbox: Any
    named: bool = True

    @property
    def var(self) -> xr.DataArray:
        """The primary variable."""
        return self.ds[self.name]

    @property
    def names(self) -> list[str]:
        """Every data variable, the primary one first."""
        return [self.name] + [str(n) for n in self.ds.data_vars if n != self.name]

    @property
    def chunks(self) -> dict[Hashable, int]:
        """The Zarr chunks (the dask chunks may start with a partial one, see
        :func:`lames_cube.io.jobs.conform`)."""
        return dict(zip(self.var.dims, self.var.encoding["chunks"], strict=True))

    def replace(self, **kw: Any) -> Prepared:
        """A copy with some fields replaced."""
        return Prepared(**{"ds": self.ds, "name": self.name, "spatial": self.spatial,
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


def is_text(values: np.ndarray) -> bool:
    """Text values: a NumPy string dtype, or objects that are all ``str``.

    Examples
    --------
    >>> is_text(np.array(["B04"])), is_text(np.array(["a", 1], dtype=object))
    (True, False)
    """
    if values.dtype.kind in "US" or values.dtype.kind == "T":
        return True
    return values.dtype == object and all(isinstance(v, str) for v in values.ravel())


def numpy_json(obj: Any) -> Any:
    """``default=`` of :func:`json.dumps` for NumPy scalars and arrays (else ``TypeError``).

    Examples
    --------
    >>> json.dumps({"a": np.int64(3), "b": np.arange(2)}, default=numpy_json)
    '{"a": 3, "b": [0, 1]}'
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)


def attrs_json(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    """Attrs as they read back from the store's JSON."""
    return json.loads(json.dumps(dict(attrs), sort_keys=True, default=numpy_json))


def as_text_objects(values: np.ndarray) -> np.ndarray:
    """Strings as an object array (written as Zarr v3 variable-length ``string``)."""
    out = np.empty(values.shape, dtype=object)
    out.ravel()[:] = [str(v) for v in values.ravel()]
    return out


def gbox_text(gbox: Any) -> str:
    """A one-line GeoBox: shape, CRS (EPSG code when there is one), affine and bounds."""
    crs = gbox.crs
    name = f"EPSG:{crs.epsg}" if crs is not None and crs.epsg is not None else str(crs)
    a = gbox.affine
    return (f"GeoBox(shape={tuple(gbox.shape)}, crs={name}, affine=({a.a!r}, {a.b!r}, {a.c!r}, "
            f"{a.d!r}, {a.e!r}, {a.f!r}), bounds={tuple(gbox.extent.boundingbox)})")


def _check_attrs(cube: xr.DataArray | xr.Dataset) -> None:
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
            json.dumps(v, default=numpy_json)
        except (TypeError, ValueError) as err:
            raise StoreError(f"attrs[{k!r}] = {v!r} cannot be stored as JSON ({err}); convert it "
                             f"to a number, string, list or dict first.") from None


def prepare(cube: Any, chunks: Mapping[Hashable, int] | None, patch_size: Any,
            check_chunks: bool = True) -> Prepared:
    """Validate a cube and turn it into the Dataset that is written.

    Parameters
    ----------
    cube : xarray.DataArray or xarray.Dataset
        As for :func:`lames_cube.io.write_cube`.
    chunks : mapping, optional
        ``chunks=`` of :func:`~lames_cube.io.write_cube`.
    patch_size : int
        Chunks along y and x must be multiples of it (unless one chunk spans the dim).
    check_chunks : bool, default True
        False (region and append writes) skips the patch rule: those cubes are rechunked to the
        store's chunks afterwards.

    Returns
    -------
    Prepared

    Raises
    ------
    lames_cube.errors.StoreError, lames_cube.errors.ChunkError
        A cube that cannot be written as it is (the message says how to fix it).
    lames_cube.errors.StoreGridMismatchError
        A Dataset whose variables are not on one grid.
    """
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
        elif is_text(np.asarray(v.values)):
            v = v.copy(data=as_text_objects(np.asarray(v.values)))
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
    return Prepared(ds=ds, name=name, spatial=spatial, gbox=gbox,  # type: ignore[arg-type]
                    named=cube.name is not None)


def _prepare_dataset(data: xr.Dataset, chunks: Mapping[Hashable, int] | None, patch: int,
                     check_chunks: bool) -> Prepared:
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
        preps.append(prepare(var.rename(name), sub, patch, check_chunks))
    unknown = [d for d in (chunks or {}) if d not in data.dims]
    if unknown:
        raise ChunkError(f"chunks names dims {unknown} that the Dataset does not have; its dims "
                         f"are {list(data.dims)}.")
    first = preps[0]
    for p in preps[1:]:
        if p.spatial != first.spatial or p.gbox != first.gbox:
            raise StoreGridMismatchError(
                f"variables {first.name!r} and {p.name!r} are not on one grid:\n"
                f"  {first.name}: {gbox_text(first.gbox)}\n  {p.name}: {gbox_text(p.gbox)}\n"
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
    return Prepared(ds=ds, name=primary.name, spatial=primary.spatial, gbox=primary.gbox)


def metadata_template(prep: Prepared) -> xr.Dataset:
    """The Dataset with the cube's data replaced by cheap zeros: writing it writes metadata only."""
    ds = prep.ds.copy()
    for name in prep.names:
        var = prep.ds[name]
        ds[name] = var.copy(data=dsa.zeros(var.shape, dtype=var.dtype, chunks=var.chunks))
        ds[name].encoding = dict(var.encoding)
    return ds


# --------------------------------------------------------------------------------------------
# Template summaries (what a resume must match)


def hash_values(values: np.ndarray) -> str:
    """SHA-256 of an array's shape and values (text joined, datetimes as int64 nanoseconds).

    Examples
    --------
    >>> hash_values(np.array(["B04", "B08"])) == hash_values(np.array(["B04", "B08"], object))
    True
    """
    h = hashlib.sha256()
    h.update(str(values.shape).encode())
    if is_text(values):
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
        "attrs": attrs_json(var.attrs),
    }


def template_summary(prep: Prepared) -> dict[str, Any]:
    """The cube's template as the ledger records it: name, dims, shape, chunks, dtype, attrs
    and a SHA-256 per coordinate (and, for a Dataset, every other variable and its attrs)."""
    out = {
        "name": prep.name,
        **_var_template(prep.var),
        "coords": {str(k): {"dims": [str(d) for d in c.dims],
                            "sha256": hash_values(np.asarray(c.values))}
                   for k, c in sorted(prep.ds.coords.items(), key=lambda kv: str(kv[0]))},
    }
    if len(prep.names) > 1:  # a Dataset: every variable, and the Dataset's attrs
        out["variables"] = {n: _var_template(prep.ds[n]) for n in prep.names[1:]}
        out["dataset_attrs"] = attrs_json(prep.ds.attrs)
    return out


def template_diff(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """How two template summaries differ, one phrase per difference (``[]``: the same)."""
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


def job_id(template: Mapping[str, Any], time: list[int]) -> str:
    """The id of the job writing ``template`` over the time range ``time``."""
    text = json.dumps({"template": template, "time": time}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
