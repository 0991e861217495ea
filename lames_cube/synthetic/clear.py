"""The synthetic world under a clear sky as a lazy ``(band, y, x)`` cube, on any grid.

:func:`clear_sky_cube` is the pixels the site windows of the patch recipes are cut from
(``World.read(gbox, None)``: the last year, no clouds, no noise), as one dask task per chunk,
so a country's grid (the Chile mosaic: 9.7 Gpx) builds its graph in a blink and renders only
what is computed. Chunks can be given per dim (any sizes), so that a consumer's own block
pattern (the halo strips of :func:`lames_cube.ml.predict`) renders every pixel once; chunks
outside ``region`` are lazy zeros (nodata) and pixels outside it are set to 0.

The 20 m bands (B11, B12) look as in a cube built from Sentinel-2's files: averaged over 20 m
pixels and resampled bilinearly onto the 10 m grid (:func:`sensor_20m`). Rendered at 10 m
instead they carry detail no Sentinel-2 SWIR band has, and a model trained on them calls
large areas of real composites mining (measured: a small U-Net predicted 64 % of the demo's
site 2355 mining on its composite against 26 % on 10 m-detail renders).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import shapely
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import geometry_mask
from rasterio.warp import reproject

from lames_cube._quiet import ignore_warnings
from lames_cube.bands import BAND_BY_NAME
from lames_cube.errors import WorldError

__all__ = ["SKY", "clear_sky_cube", "sensor_20m"]

#: How :func:`clear_sky_cube` renders (recorded by the patch sets cut from it: sets rendered
#: otherwise are rebuilt, not reused).
SKY = "clear sky (World.read(gbox, None)), 20 m bands as recorded (sensor_20m)"


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


def sensor_20m(render, part: GeoBox, anchor: tuple[float, float],
               bands: Sequence[str]) -> dict[str, np.ndarray]:
    """Render ``part`` (a grid of about 10 m: pixels under 15 m) with its 20 m bands as the
    sensor records them.

    ``render(gbox)`` returns the band arrays of a grid. ``part`` is rendered with a margin of
    4 px on a grid whose 2 x 2 blocks fall on a lattice anchored at ``anchor`` (the whole
    grid's top-left corner, so that every chunk of it sees the same lattice; the LAMES
    EPSG:3857 boxes' 10.7 m pixels make 21 m blocks); the 20 m bands are averaged over those
    blocks and resampled bilinearly back onto ``part``. Other grids render as they are.
    """


    coarse = [b for b in bands if BAND_BY_NAME[b].resolution == 20
              and not BAND_BY_NAME[b].categorical]  # SCL classes are never averaged
    t = part.affine
    if (not coarse or part.crs.geographic or abs(t.a) >= 15 or abs(t.e) >= 15
            or t.b or t.d):
        return render(part)
    ax, ay = anchor
    col = round((t.c - ax) / t.a)
    row = round((t.f - ay) / t.e)
    c0, r0 = 2 * ((col - 4) // 2), 2 * ((row - 4) // 2)  # >= 40 m margin, on the lattice
    h, w = part.shape
    c1, r1 = col + w + 4 + (col + w) % 2, row + h + 4 + (row + h) % 2
    big = GeoBox((r1 - r0, c1 - c0), t @ Affine.translation(c0 - col, r0 - row), part.crs)
    layers = render(big)
    out = {b: layers[b][row - r0:row - r0 + h, col - c0:col - c0 + w] for b in bands
           if b not in coarse}
    g20 = big.zoom_out(2)
    for b in coarse:
        src = layers[b].astype(np.float32)
        src = src.reshape(src.shape[0] // 2, 2, src.shape[1] // 2, 2).mean(axis=(1, 3))
        dst = np.zeros(part.shape, np.float32)
        # rasterio may warn that the arrays have no geotransform although the transforms are
        # passed and used (its own silencing of it races between threads): noise
        with ignore_warnings(NotGeoreferencedWarning, "rasterio.warp"):
            reproject(src, dst, src_transform=g20.affine, src_crs=part.crs.to_wkt(),
                      dst_transform=part.affine, dst_crs=part.crs.to_wkt(),
                      resampling=Resampling.bilinear)
        out[b] = np.clip(np.rint(dst), 1, 65535).astype(layers[b].dtype)
    return out


def clear_sky_cube(world: Any, gbox: GeoBox, bands: Sequence[str],
                   chunks: int | tuple[Any, Any] | None = None, *, digest: str | None = None,
                   region: Any = None, native_20m: bool = True) -> xr.DataArray:
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
    native_20m
        The 20 m bands as Sentinel-2 records them (:func:`sensor_20m`, default) on 10 m grids;
        False renders every band at the grid's own pixels.

    Returns
    -------
    xarray.DataArray
        ``nodata=0`` in attrs; the world renders each pixel at its own centre, so any chunking
        gives the same pixels.
    """

    bands = list(bands)
    digest = world.digest() if digest is None else digest
    h, w = (int(v) for v in gbox.shape)
    if isinstance(chunks, tuple) and len(chunks) == 2:
        ych, xch = _chunk_sizes(chunks[0], h), _chunk_sizes(chunks[1], w)
    else:
        ych, xch = _chunk_sizes(chunks, h), _chunk_sizes(chunks, w)
    if region is not None:
        shapely.prepare(region)

    anchor = (gbox.affine.c, gbox.affine.f)

    def render(part: GeoBox) -> np.ndarray:
        if native_20m:
            layers = sensor_20m(lambda g: world.read(g, None), part, anchor, bands)
        else:
            layers = world.read(part, None)
        out = np.stack([layers[b] for b in bands])
        if region is not None and not region.contains(shapely.box(*part.boundingbox)):
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
                                                          None if region is None else region.wkb,
                                                          native_20m, anchor)
                task = dask.delayed(render, pure=False)(part, dask_key_name=key)
                row.append(da.from_delayed(task, shape, np.uint16, name=f"window-{key}"))
            x += wx
        rows.append(row)
        y += hy
    data = da.block(rows) if len(rows) * len(rows[0]) > 1 else rows[0][0]
    cube = xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": bands, **xr_coords(gbox, crs_coord_name="spatial_ref")})
    return cube.assign_attrs(nodata=0)
