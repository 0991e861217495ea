"""Opening a store for an update, and the checks that a cube fits it (appends, region writes).

Each check raises a typed error whose message shows both sides (the store's and the cube's
dims, dtype, coordinates or GeoBox) and how to make the cube fit.

Examples
--------
>>> print(short(np.arange(10)))
[0, 1, 2, '...', 8, 9]
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import odc.geo.xr  # noqa: F401  (registers .odc)
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from lames_cube._fs import StorePath
from lames_cube.errors import (
    IncompleteStoreError,
    RegionError,
    StoreGridMismatchError,
    StoreNotFoundError,
    TemplateMismatchError,
)
from lames_cube.io.template import ZARR_KW, Prepared, gbox_text, hash_values

__all__ = [
    "check_coords_equal",
    "check_store_grid",
    "compatible",
    "normalise_region",
    "open_dataset",
    "open_for_update",
    "renamed",
    "short",
    "store_chunks",
]


def open_dataset(path: StorePath) -> xr.Dataset:
    """The store as xarray opens it (lazy; CRS decoded, ``.rio`` and ``.odc`` registered)."""
    return xr.open_zarr(str(path), decode_coords="all", **ZARR_KW)


def store_chunks(var: xr.DataArray) -> dict[Hashable, int]:
    """The Zarr chunks of a variable opened from a store, by dim."""
    enc = var.encoding.get("chunks") or var.encoding.get("preferred_chunks")
    if isinstance(enc, Mapping):
        return dict(enc)
    return dict(zip(var.dims, enc, strict=True))


def short(values: np.ndarray) -> str:
    """A few values of an array, for messages (the first three and the last two of many)."""
    flat = values.ravel().tolist()
    return repr(flat if len(flat) <= 6 else [*flat[:3], "...", *flat[-2:]])


def check_store_grid(store_gbox: Any, cube_gbox: Any, path: StorePath, what: str) -> None:
    """Refuse a cube (``what``) that is not on the store's grid.

    Raises
    ------
    lames_cube.errors.StoreGridMismatchError
        The GeoBoxes differ (both are printed).
    """
    if store_gbox != cube_gbox:
        raise StoreGridMismatchError(
            f"the {what} is not on the store's grid ({str(path)!r}).\n"
            f"  store: {gbox_text(store_gbox)}\n  cube:  {gbox_text(cube_gbox)}\n"
            f"Reproject or crop the cube onto the store's GeoBox (e.g. cube.odc.reproject(store "
            f"geobox)) or write it to another store."
        )


def check_coords_equal(prep: Prepared, stored: xr.DataArray, names: Iterable[Hashable],
                       path: StorePath, what: str) -> None:
    """Refuse a cube whose coordinates ``names`` differ from the store's.

    Raises
    ------
    lames_cube.errors.TemplateMismatchError
        A coordinate the store lacks, or other values.
    """
    names = sorted(names, key=lambda k: k not in prep.var.dims)  # dimension coordinates first
    for k in names:
        if k not in stored.coords:
            raise TemplateMismatchError(f"the {what} has a coordinate {k!r} that the store "
                                        f"{str(path)!r} lacks; drop it (cube.drop_vars({k!r})).")
        a, b = np.asarray(prep.ds.coords[k].values), np.asarray(stored.coords[k].values)
        if a.shape != b.shape or hash_values(a) != hash_values(b):
            raise TemplateMismatchError(
                f"coordinate {k!r} of the {what} differs from the store's ({str(path)!r}): "
                f"store {short(b)}, cube {short(a)}. Give the cube the store's values (e.g. "
                f"select the same labels) or write it to another store."
            )


def compatible(prep: Prepared, stored: xr.DataArray, path: StorePath, what: str) -> None:
    """Refuse a cube whose dims, dtype or coordinate names differ from the store's variable.

    Raises
    ------
    lames_cube.errors.TemplateMismatchError
        What differs, and how to fix it.
    """
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


def open_for_update(path: StorePath, prep: Prepared,
                    what: str) -> tuple[xr.DataArray, dict[Hashable, int]]:
    """The store's primary variable, and the Zarr chunks of every variable the cube writes.

    Raises
    ------
    lames_cube.errors.StoreNotFoundError
        No store at ``path``.
    lames_cube.errors.IncompleteStoreError
        A store whose layout was interrupted (no variables yet).
    lames_cube.errors.TemplateMismatchError
        Variables (names, dims, dtypes) other than the cube's.
    """
    if not (path / "zarr.json").exists():
        raise StoreNotFoundError(
            f"no Zarr store at {str(path)!r} to {what} into. Create it first with "
            f"write_cube(cube, {str(path)!r})" + (" or init_cube_store(template, path)"
                                                   if what == "write a region" else "") + "."
        )
    ds = open_dataset(path)
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
    chunks = {d: c for n in (name, *prep.names[1:]) for d, c in store_chunks(ds[n]).items()}
    return ds[name], chunks


def renamed(prep: Prepared, name: str) -> Prepared:
    """The prepared cube with its primary variable called ``name`` (an unnamed cube written
    into a store whose variable has a name)."""
    var = prep.var
    ds = prep.ds.drop_vars(prep.name)
    ds[name] = var
    ds[name].encoding = dict(var.encoding)
    return prep.replace(ds=ds, name=name)


def normalise_region(region: Any, stored: xr.DataArray, spatial: tuple[str, str],
                     chunks: Mapping[Hashable, int], path: StorePath) -> dict[str, slice]:
    """``region=`` of a region write as ``{y: slice, x: slice}`` with absolute, chunk-aligned
    bounds.

    Raises
    ------
    lames_cube.errors.RegionError
        Not a mapping of the spatial dims to integer slices, empty, or not on chunk edges (the
        message suggests aligned slices).
    """
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
