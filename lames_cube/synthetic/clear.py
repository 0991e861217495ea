"""The synthetic world under a clear sky as a lazy ``(band, y, x)`` cube, on any grid.

:func:`clear_sky_cube` is the pixels the site windows of the patch recipes are cut from
(``World.read(gbox, None)``: the last year, no clouds, no noise), as one dask task per chunk,
so a country's grid (the Chile mosaic: 9.7 Gpx) builds its graph in a blink and renders only
what is computed. Chunks can be given per dim (any sizes), so that a consumer's own block
pattern (the halo strips of :func:`lames_cube.ml.predict`) renders every pixel once; chunks
outside ``region`` are lazy zeros (nodata) and pixels outside it are set to 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from lames_cube.errors import WorldError

__all__ = ["clear_sky_cube"]


def _chunk_sizes(chunks: int | Sequence[int] | None, size: int) -> tuple[int, ...]:
    if chunks is None:
        return (size,)
    if isinstance(chunks, int | np.integer):
        step = int(chunks)
        return tuple(min(step, size - s) for s in range(0, size, step))
    out = tuple(int(c) for c in chunks)
    if sum(out) != size or min(out) < 1:
        raise WorldError(f"chunks {out[:5]}... sum to {sum(out)} px, not the grid's {size} px; "
                         "give chunk sizes that add up to the grid's size, or one size.")
    return out


def clear_sky_cube(world: Any, gbox: GeoBox, bands: Sequence[str],
                   chunks: int | tuple[Any, Any] | None = None, *, digest: str | None = None,
                   region: Any = None) -> xr.DataArray:
    """A lazy ``(band, y, x)`` uint16 cube of ``world`` under a clear sky on ``gbox``.

    Parameters
    ----------
    world
        A :class:`lames_cube.synthetic.World`.
    gbox
        The grid.
    bands
        Bands the world renders (``B02`` ... ``B12``).
    chunks
        One task per chunk: None (the whole grid), a square size, or ``(y_chunks, x_chunks)``
        each an int or a sequence of sizes.
    digest
        ``world.digest()`` when known (tens of ms for a world of every LAMES site).
    region
        A shapely geometry in the grid's CRS: chunks that miss it are zeros without rendering,
        pixels outside it are 0 (nodata).

    Returns
    -------
    xarray.DataArray
        ``nodata=0`` in attrs; the world renders each pixel at its own centre, so any chunking
        gives the same pixels.
    """
    import dask
    import dask.array as da
    import shapely
    from odc.geo.xr import xr_coords

    bands = list(bands)
    digest = world.digest() if digest is None else digest
    h, w = (int(v) for v in gbox.shape)
    if isinstance(chunks, tuple) and len(chunks) == 2:
        ych, xch = _chunk_sizes(chunks[0], h), _chunk_sizes(chunks[1], w)
    else:
        ych, xch = _chunk_sizes(chunks, h), _chunk_sizes(chunks, w)
    if region is not None:
        shapely.prepare(region)

    def render(part: GeoBox) -> np.ndarray:
        layers = world.read(part, None)
        out = np.stack([layers[b] for b in bands])
        if region is not None and not region.contains(shapely.box(*part.boundingbox)):
            from rasterio.features import geometry_mask

            outside = geometry_mask([region], out_shape=tuple(part.shape), transform=part.affine)
            out[:, outside] = 0
        return out

    rows, y = [], 0
    for hy in ych:
        row, x = [], 0
        for wx in xch:
            part = gbox[y:y + hy, x:x + wx]
            shape = (len(bands), hy, wx)
            if region is not None and not region.intersects(shapely.box(*part.boundingbox)):
                row.append(da.zeros(shape, dtype=np.uint16, chunks=shape))
            else:
                key = "world-clear-" + dask.base.tokenize(digest, str(part.crs), tuple(part.shape),
                                                          tuple(part.affine)[:6], bands,
                                                          None if region is None else region.wkb)
                task = dask.delayed(render, pure=False)(part, dask_key_name=key)
                row.append(da.from_delayed(task, shape, np.uint16, name=f"window-{key}"))
            x += wx
        rows.append(row)
        y += hy
    data = da.block(rows) if len(rows) * len(rows[0]) > 1 else rows[0][0]
    cube = xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": bands, **xr_coords(gbox, crs_coord_name="spatial_ref")})
    return cube.assign_attrs(nodata=0)
