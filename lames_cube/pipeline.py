"""Run a cube recipe end to end: search → build_cube → (composite) → Zarr, with progress.

One recipe can yield several cubes: for a LAMES site area on a UTM grid (``grid.crs: utm``),
each site gets its own cube in its own UTM zone (one box per site, as LAMES cut its imagery);
any other area gives one cube. Each is written to ``<output>/<name>.zarr``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import pystac
import shapely
import shapely.geometry
import xarray as xr
from odc.geo.geobox import GeoBox

from lames_cube.composite import composite, yearly_composites
from lames_cube.cube import build_cube, overlaps
from lames_cube.recipes import Recipe, load_recipe


def _site_boxes(recipe: Recipe, data_dir) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(site id, lon/lat bounds) of the recipe's sites."""
    from lames_cube.search import site_table

    ids = [str(s) for s in recipe.search_kwargs(data_dir=data_dir)["sites"]]
    table = site_table(recipe.resolve_catalog(data_dir=data_dir), data_dir).set_index("site_id")
    return [(i, tuple(table.loc[i].geometry.bounds)) for i in ids if i in table.index]


def site_geobox(bounds, crs: str, resolution: float, patch_size: int) -> GeoBox:
    """A grid centred on a site, at least one patch and a whole number of patches wide.

    Examples
    --------
    >>> g = site_geobox((-69.1, -24.3, -69.09, -24.29), "EPSG:32719", 10, 256)
    >>> tuple(g.shape)
    (256, 256)
    """
    from odc.geo.geom import Geometry

    local = Geometry(shapely.box(*bounds), "EPSG:4326").to_crs(crs).geom
    w, s, e, n = local.bounds
    step = patch_size * resolution
    nx = max(1, math.ceil((e - w) / step))
    ny = max(1, math.ceil((n - s) / step))
    cx = round((w + e) / 2 / resolution) * resolution
    cy = round((s + n) / 2 / resolution) * resolution
    x0 = cx - nx * step / 2
    y1 = cy + ny * step / 2
    return GeoBox.from_bbox((x0, y1 - ny * step, x0 + nx * step, y1), crs, resolution=resolution)


def per_site(recipe: Recipe) -> bool:
    """True when the recipe makes one cube per LAMES site (site area on a UTM grid)."""
    return recipe.area.kind in ("sites", "split") and recipe.grid.is_utm


def recipe_cubes(
    recipe: Recipe | str | os.PathLike,
    *,
    items: pystac.ItemCollection | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Iterator[tuple[str, xr.DataArray]]:
    """The lazy cubes (or composites) a recipe describes, as ``(name, DataArray)`` pairs.

    Composites are DataArrays ``(band, y, x)`` (or ``(year, band, y, x)`` for yearly ones)
    whose last band is ``clear_count``.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if items is None:
        items = recipe.search(data_dir=data_dir)
    common = {"bands": list(recipe.bands), "resolution": recipe.grid.resolution,
              "chunks": {"y": recipe.chunks.y, "x": recipe.chunks.x}, "engine": recipe.engine}
    if per_site(recipe):
        for site_id, bounds in _site_boxes(recipe, data_dir):
            lon, lat = shapely.box(*bounds).centroid.coords[0]
            gbox = site_geobox(bounds, recipe.grid.crs_for(lon, lat), recipe.grid.resolution,
                               recipe.grid.patch_size)
            # Items touching the whole (patch-padded) grid, not only the site's box.
            mine = [i for i in items
                    if overlaps(gbox, shapely.geometry.shape(i.geometry), name=i.id)]
            if not mine:
                continue
            common_site = {k: v for k, v in common.items() if k != "resolution"}
            cube = build_cube(mine, geobox=gbox, **common_site)
            yield f"site-{site_id}", _finish(recipe, cube)
    else:
        crs = None if recipe.grid.is_utm else recipe.grid.crs
        kwargs = recipe.search_kwargs(data_dir=data_dir)
        if "bbox" in kwargs:
            bbox = tuple(kwargs["bbox"])
        elif "intersects" in kwargs:
            bbox = shapely.geometry.shape(kwargs["intersects"]).bounds
        else:
            bbox = None
        cube = build_cube(items, crs=crs, bbox=bbox, **common)
        yield recipe.name, _finish(recipe, cube)


def _finish(recipe: Recipe, cube: xr.DataArray) -> xr.DataArray:
    method = recipe.composite.method
    if method == "none":
        return cube
    kwargs = {"classes": [c for c in recipe.clouds.mask_classes if c not in (1, 11)],
              "snow": 11 in recipe.clouds.mask_classes,
              "saturated": 1 in recipe.clouds.mask_classes,
              "buffer_m": recipe.clouds.buffer_m}
    if method == "least_cloudy" and recipe.clouds.max_cloud is not None:
        kwargs["max_cloud"] = recipe.clouds.max_cloud
    if recipe.composite.period == "year":
        ds = yearly_composites(cube, method, **kwargs)
    else:
        ds = composite(cube, method, **kwargs)
    count = ds.clear_count.expand_dims(band=["clear_count"]).transpose(*ds.reflectance.dims)
    out = xr.concat([ds.reflectance, count.astype("uint16")], dim="band")
    out.attrs = {**cube.attrs, "composite": method, "composite_period": recipe.composite.period,
                 "cloud_buffer_m": float(recipe.clouds.buffer_m)}
    out.name = "composite"
    return out


def run_recipe(
    recipe: Recipe | str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    items: pystac.ItemCollection | None = None,
) -> list[Path]:
    """Build every cube of a recipe and write it to Zarr (resumable).

    A single-area recipe writes one store at ``output`` (default: the recipe's ``output``); a
    per-site recipe writes ``<output>/site-<id>.zarr`` for each site.

    A rerun after an interruption finishes the missing chunks only; ``overwrite`` rewrites.

    Returns
    -------
    list of pathlib.Path
        The Zarr stores written.
    """
    from lames_cube.io import write_cube

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    root = Path(output) if output is not None else recipe.output_path
    stores = []
    for name, cube in recipe_cubes(recipe, items=items, data_dir=data_dir):
        store = root / f"{name}.zarr" if per_site(recipe) else root
        store.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            mode = "w"
        elif store.exists():
            mode = "resume"
        else:
            mode = "w-"
        if progress:
            print(f"{name}: {dict(cube.sizes)} -> {store}")
        write_cube(cube, store, mode=mode, progress=progress)
        stores.append(store)
    return stores
