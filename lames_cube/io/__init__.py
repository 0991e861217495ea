"""Zarr v3 persistence of datacubes: the only part of lames_cube that writes stores.

A cube is a lazy :class:`xarray.DataArray` with dims ``(time, band, y, x)`` (or ``(band, y, x)``,
``(y, x)``) on an odc-geo GeoBox, or a Dataset of such variables on one grid.
:func:`write_cube` writes it as a Zarr **v3** store; :func:`open_store` / :func:`open_cube` read
it back lazily, with the CRS visible to both rioxarray (``.rio.crs``) and odc-geo
(``.odc.geobox``) and the coordinates bit for bit.

Writes are resumable (DESIGN.md, "Nothing lost"). A write first records its plan in a ledger,
``<store>/.lames/ledger.jsonl``, then writes the metadata (``to_zarr(..., compute=False)``), then
the pixels one *region* at a time -- a region is one Zarr chunk along y and x and every time step
and band -- and appends one line to the ledger per finished region. A crash leaves a store that
:func:`open_cube` refuses (unless ``allow_incomplete=True``); ``write_cube(cube, store,
mode="resume")`` with the same cube writes only the missing regions and gives the same bytes as an
uninterrupted write. A store is a local path or an fsspec URL (``s3://``, ``gs://``,
``memory://``, ...): the same writes, ledger and resumes.

The modules, one job each:

- :mod:`lames_cube.io.stores` -- the API: write (whole, by region, appended), status, open;
- :mod:`lames_cube.io.jobs` -- a write as a ledger job: begin, metadata, regions;
- :mod:`lames_cube.io.checks` -- opening a store for an update, and whether a cube fits it;
- :mod:`lames_cube.io.template` -- the cube prepared for writing, and the template a resume must
  match;
- :mod:`lames_cube.io.ledger` -- the ledger file and what it says is done (and the tests' crash
  point);
- :mod:`lames_cube.io.paths` -- store locations, safe deletion and the writers' disk guard.

Examples
--------
>>> import tempfile
>>> import numpy as np, xarray as xr
>>> from odc.geo.geobox import GeoBox
>>> from odc.geo.xr import xr_coords
>>> gbox = GeoBox.from_bbox((300000, 7000000, 300640, 7000640), "EPSG:32719", resolution=10)
>>> cube = xr.DataArray(np.full((1, 64, 64), 7, "uint16"), dims=("band", "y", "x"),
...                     coords={"band": ["B04"], **xr_coords(gbox)}, name="b04")
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = write_cube(cube, f"{tmp}/b04.zarr")
...     int(open_store(store).b04.sum()), (store / LEDGER_NAME).is_file()
(28672, True)
"""

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
from lames_cube.io.ledger import LEDGER_NAME, Ledger
from lames_cube.io.paths import store_path
from lames_cube.io.stores import (
    Mode,
    init_cube_store,
    open_cube,
    open_store,
    region_written,
    regions_written,
    store_status,
    write_cube,
)

__all__ = [
    "LEDGER_NAME",
    "ChunkError",
    "IncompleteStoreError",
    "Ledger",
    "Mode",
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
    "store_path",
    "store_status",
    "write_cube",
]
