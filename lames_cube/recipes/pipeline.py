"""Run a cube recipe end to end: search → build_cube → (composite) → Zarr, with progress.

A LAMES site area on a UTM grid (``grid.crs: utm``) gives one cube per site in its own UTM
zone (one box per site, as LAMES cut its imagery), each written to ``<output>/site-<id>.zarr``.
Any other area (a country, a GeoJSON outline, a bbox) gives one store on the area's mosaic grid
(:func:`lames_cube.grid.mosaic_geobox`, tiles of ``grid.tile_size`` px), laid out first and
filled tile by tile, so that a country-sized run resumes where it stopped.

Stores are Datasets (:func:`store_dataset`): reflectance, SCL and clear counts are separate
variables, so scaling the reflectance never touches classes or counts.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence

import dask.array as da
import geopandas as gpd
import numpy as np
import pystac
import shapely
import shapely.geometry
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.xr import xr_coords
from tqdm.auto import tqdm

from lames_cube._atomic import check_writable
from lames_cube._fs import StorePath, as_store_path
from lames_cube._names import safe_name
from lames_cube.composite import composite, yearly_composites
from lames_cube.cube import build_cube, footprint_in, overlaps, solar_day
from lames_cube.errors import EmptyCubeError
from lames_cube.grid import mosaic_geobox, mosaic_tiles
from lames_cube.io import init_cube_store, regions_written, write_cube
from lames_cube.recipes.cubes import Recipe, RecipeError, load_recipe
from lames_cube.search import site_table


def _site_boxes(recipe: Recipe, data_dir) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(site id, lon/lat bounds) of the recipe's sites."""

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
) -> Iterator[tuple[str, xr.Dataset]]:
    """The lazy cubes (or composites) of a per-site recipe, as ``(name, Dataset)`` pairs.

    Each Dataset holds ``reflectance`` (``scale`` 1e-4) and, apart from it, ``scl`` (scenes)
    or ``clear_count``, ``never_clear`` and ``fallback`` (composites): see
    :func:`store_dataset`. A single-area recipe is built tile by tile instead
    (:func:`tile_plan`, :func:`run_recipe`).
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if not per_site(recipe):
        raise RecipeError(
            f"recipe {recipe.name!r} covers one area ({recipe.area.kind}), which is built tile by "
            "tile on its mosaic grid: use run_recipe() (or tile_plan() and tile_dataset())."
        )
    if items is None:
        items = recipe.search(data_dir=data_dir)
    for site_id, bounds in _site_boxes(recipe, data_dir):
        lon, lat = shapely.box(*bounds).centroid.coords[0]
        gbox = site_geobox(bounds, recipe.grid.crs_for(lon, lat), recipe.grid.resolution,
                           recipe.grid.patch_size)
        # Items touching the whole (patch-padded) grid, not only the site's box.
        mine = [i for i in items if overlaps(gbox, shapely.geometry.shape(i.geometry), name=i.id)]
        if mine:
            # the id becomes a file name: safe_name keeps it inside the output folder
            yield (f"site-{safe_name(site_id, 'site id')}",
                   store_dataset(recipe, _cube(recipe, mine, gbox)))


def _cube(recipe: Recipe, items, gbox: GeoBox, *, whole: bool = False) -> xr.DataArray:
    """The recipe's cube on ``gbox``; ``whole``: a tile with its halo, in chunks of the
    recipe's size unless those span the tile (then one chunk, not a tile and four slivers)."""
    chunks = {"y": recipe.chunks.y, "x": recipe.chunks.x}
    if whole:
        chunks = {d: gbox.shape[k] if c >= recipe.grid.tile_size else c
                  for k, (d, c) in enumerate(chunks.items())}
    return build_cube(items, geobox=gbox, bands=list(recipe.bands), chunks=chunks,
                      engine=recipe.engine, resampling=recipe.grid.resampling)


def _mask_kwargs(recipe: Recipe) -> dict:
    return {"classes": [c for c in recipe.clouds.mask_classes if c not in (1, 11)],
            "snow": 11 in recipe.clouds.mask_classes,
            "saturated": 1 in recipe.clouds.mask_classes,
            "buffer_m": recipe.clouds.buffer_m}


def store_dataset(recipe: Recipe, cube: xr.DataArray) -> xr.Dataset:
    """What a recipe stores for a cube: reflectance, SCL and counts as separate variables.

    Scenes (``composite.method: none``): ``reflectance`` ``(time, band, y, x)`` uint16 with
    ``scale`` 1e-4, and ``scl`` ``(time, y, x)`` uint8. Composites: ``reflectance``, and
    ``clear_count`` (uint16), ``never_clear`` and ``fallback`` (bool) per pixel. Only the
    reflectance carries ``scale``, so scaling it never touches classes or counts.
    """
    method = recipe.composite.method
    attrs = {"recipe": recipe.name, "composite": method, "composite_period": recipe.composite.period,
             "cloud_buffer_m": float(recipe.clouds.buffer_m),
             "resampling": recipe.grid.resampling}
    if method == "none":
        bands = [b for b in cube.band.values if b != "SCL"]
        out = xr.Dataset({"reflectance": cube.sel(band=bands)}, attrs=attrs)
        if "SCL" in cube.band.values:
            scl = cube.sel(band="SCL", drop=True).astype("uint8")
            scl.attrs = {"nodata": 0, "long_name": "Sen2Cor scene classification (SCL)"}
            out["scl"] = scl
        return out
    kwargs = _mask_kwargs(recipe)
    if method == "least_cloudy" and recipe.clouds.max_cloud is not None:
        kwargs["max_cloud"] = recipe.clouds.max_cloud
    if recipe.composite.period == "year":
        ds = yearly_composites(cube, method, **kwargs)
    else:
        ds = composite(cube, method, **kwargs)
    refl = ds.reflectance
    refl.attrs = dict(cube.attrs)
    count = ds.clear_count.astype("uint16")
    count.attrs = {"units": "clear observations", "long_name": "clear observations per pixel"}
    out = xr.Dataset({"reflectance": refl, "clear_count": count}, attrs=attrs)
    for name, meaning in (("never_clear", "no clear observation in the period"),
                          ("fallback", "filled from flagged scenes (never clear)")):
        if name in ds:  # attrs anew: xarray carries the reflectance's (scale!) through masks
            out[name] = ds[name].astype(bool).drop_attrs(deep=False).assign_attrs(long_name=meaning)
    return out


# --------------------------------------------------------------------------- tiled recipes
def tile_plan(recipe: Recipe, *, data_dir: str | os.PathLike | None = None,
              tiles: Sequence[str] | None = None) -> tuple[GeoBox, gpd.GeoDataFrame]:
    """The mosaic grid of a single-area recipe and its tiles.

    The grid is :func:`lames_cube.grid.mosaic_geobox` of the recipe's area (country outline,
    GeoJSON or bbox) in ``grid.crs`` (``utm``: the zone of the area's centre) at
    ``grid.resolution``, in tiles of ``grid.tile_size`` px; for ``country: chile`` with the
    chile-mosaic settings it is the LAMES country grid. Tiles that do not touch the area
    (``active`` False) are written as nodata.

    Parameters
    ----------
    tiles
        Build only these tile ids (``r<row>c<col>``), e.g. for a trial run: the grid is then the
        smallest block of the mosaic's tiles that holds them (pixel-aligned with the mosaic),
        and only these are built (the others in the block are nodata).

    Returns
    -------
    (GeoBox, GeoDataFrame)
        The grid, and its tiles as :func:`lames_cube.grid.mosaic_tiles` lists them (``x_off``
        and ``y_off`` relative to this grid; ``active`` False for tiles left nodata).

    Raises
    ------
    RecipeError
        A per-site recipe, tile ids that are not active tiles of the grid, or chunks that do
        not divide the tile size.
    """

    if per_site(recipe):
        raise RecipeError(f"recipe {recipe.name!r} makes one cube per site; it has no mosaic grid.")
    area = area_geometry(recipe, data_dir)
    lon, lat = area.centroid.coords[0]
    crs = recipe.grid.crs_for(lon, lat)
    args = (area, crs, recipe.grid.resolution, recipe.grid.tile_size)
    for dim, chunk in (("y", recipe.chunks.y), ("x", recipe.chunks.x)):
        if recipe.grid.tile_size % chunk:
            raise RecipeError(
                f"recipe {recipe.name!r}: chunks.{dim}={chunk} does not divide grid.tile_size="
                f"{recipe.grid.tile_size}; tiles are written whole chunks at a time. Use e.g. "
                f"chunks.{dim}: {recipe.grid.tile_size}."
            )
    gbox = mosaic_geobox(*args)
    table = mosaic_tiles(*args)
    if tiles is not None:
        wanted = [str(t) for t in tiles]
        active = table[table.active]
        unknown = sorted(set(wanted) - set(active.tile_id))
        if unknown:
            raise RecipeError(
                f"tiles {unknown} are not active tiles of recipe {recipe.name!r}'s grid "
                f"({len(active)} active, e.g. {active.tile_id.iloc[:3].tolist()}); list them "
                "with lames_cube.recipes.pipeline.tile_plan(recipe)."
            )
        chosen = table[table.tile_id.isin(wanted)]
        rows = slice(int(chosen.row.min()), int(chosen.row.max()) + 1)
        cols = slice(int(chosen.col.min()), int(chosen.col.max()) + 1)
        table = table[table.row.between(rows.start, rows.stop - 1)
                      & table.col.between(cols.start, cols.stop - 1)].copy()
        y0, x0 = int(table.y_off.min()), int(table.x_off.min())
        gbox = gbox[y0:int((table.y_off + table.height).max()), x0:int((table.x_off + table.width).max())]
        table["y_off"] -= y0
        table["x_off"] -= x0
        table["active"] = table.tile_id.isin(wanted)
    return gbox, table.reset_index(drop=True)


def area_geometry(recipe: Recipe, data_dir: str | os.PathLike | None = None) -> shapely.Geometry:
    """The area a single-area recipe covers, in lon/lat (EPSG:4326): what its search asks for.

    Parameters
    ----------
    recipe
        A single-area recipe: its ``area`` a ``bbox``, a ``country`` or a ``geojson`` file
        (:meth:`Recipe.search_kwargs` turns it into ``bbox`` or ``intersects``).
    data_dir
        The LAMES data directory, passed on to :meth:`Recipe.search_kwargs`.

    Returns
    -------
    shapely.Geometry
        The search's ``bbox`` as a box, or its ``intersects`` geometry.
    """
    kwargs = recipe.search_kwargs(data_dir=data_dir)
    if "bbox" in kwargs:
        return shapely.box(*kwargs["bbox"])
    return shapely.geometry.shape(kwargs["intersects"])


def _steps(recipe: Recipe, items) -> xr.DataArray | None:
    """The store's time axis: every year of the period (yearly composites) or every solar day
    of the items (scenes); None for one composite over the period."""

    if recipe.composite.method == "none":
        days = sorted({solar_day(i) for i in items})
        return xr.DataArray(np.array([np.datetime64(d, "ns") for d in days]), dims="time",
                            name="time")
    if recipe.composite.period == "year":
        start, end = recipe.period.interval.split("/")
        seen = [solar_day(i).year for i in items]
        if not seen and ".." in (start, end):
            raise EmptyCubeError(f"recipe {recipe.name!r}: the search found no item, so the "
                                 f"open period {recipe.period.interval!r} has no years.")
        first = min(seen) if start == ".." else int(start[:4])
        last = max(seen) if end == ".." else int(end[:4])
        return xr.DataArray(np.arange(first, last + 1), dims="year", name="year")
    return None


def _conform(ds: xr.Dataset, steps: xr.DataArray | None) -> xr.Dataset:
    """A tile's Dataset on the store's time axis, with only the coordinates every tile shares."""
    if steps is not None and steps.name == "time":
        day = ds.solar_day.values.astype("datetime64[D]").astype("datetime64[ns]")
        ds = ds.drop_vars([c for c in ds.coords if "time" in ds[c].dims and c != "time"])
        ds = ds.assign_coords(time=day)
    keep = {"band", "y", "x", "spatial_ref"} | ({str(steps.name)} if steps is not None else set())
    ds = ds.drop_vars([c for c in ds.coords if c not in keep])
    if steps is not None:
        dtypes = {n: v.dtype for n, v in ds.data_vars.items()}
        # Nodata where a tile had no scene that year (never_clear too: no data, nothing to see).
        fills = {n: np.zeros((), dtypes[n]).item() for n in ds.data_vars}
        ds = ds.reindex({steps.name: steps.values}, fill_value=fills)
        ds = ds.assign({n: ds[n].astype(dtypes[n]) for n in ds.data_vars})
    return ds


class ItemIndex:
    """Items with their footprints projected once into a grid's CRS, in an STR-tree: which
    items touch a tile is a tree query, not a reprojection of every footprint per tile (a
    country holds thousands of tiles and items).

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> import pystac, datetime
    >>> item = pystac.Item("a", shapely.geometry.mapping(shapely.box(-69.01, -24.01, -69.0, -24.0)),
    ...                    None, datetime.datetime(2022, 1, 1), {})
    >>> index = ItemIndex([item], "EPSG:32719")
    >>> far = GeoBox.from_bbox((300_000, 7_300_000, 310_000, 7_310_000), "EPSG:32719",
    ...                        resolution=10)
    >>> [i.id for i in index.touching(far)]
    []
    """

    def __init__(self, items, crs) -> None:
        self.items = list(items)
        self.crs = crs
        self.tree = shapely.STRtree([footprint_in(crs, shapely.geometry.shape(i.geometry),
                                                  name=i.id) for i in self.items])

    def touching(self, gbox: GeoBox) -> list:
        """The items whose footprints intersect ``gbox`` (in the order given)."""
        if gbox.crs != self.crs:
            raise RecipeError(f"the index is in {self.crs}, the tile in {gbox.crs}; build the "
                              "index in the tiles' CRS.")
        return [self.items[k] for k in sorted(self.tree.query(gbox.extent.geom,
                                                              predicate="intersects"))]


def tile_dataset(recipe: Recipe, items, gbox: GeoBox,
                 steps: xr.DataArray | None) -> xr.Dataset | None:
    """The lazy Dataset of one tile (``gbox``) on the store's time axis ``steps``, or None when
    no item touches the tile.

    The tile is built with a halo as wide as the cloud buffer (and the opening before it), then
    cropped: a cloud just across the tile's edge grows into it as in one seamless cube, so the
    tiles of a store equal one composite of the whole area (least-cloudy composites excepted:
    they rank scenes by each tile's clear fraction).
    """
    halo = _halo_px(recipe)
    grown = gbox.pad(halo) if halo else gbox
    if isinstance(items, ItemIndex):
        mine = items.touching(grown)
    else:
        mine = [i for i in items if overlaps(grown, shapely.geometry.shape(i.geometry), name=i.id)]
    if not mine:
        return None
    data = store_dataset(recipe, _cube(recipe, mine, grown, whole=bool(halo)))
    if halo:

        # Cropped, with the tile's own coordinates (a crop of the grown grid's may differ in
        # the last bits on grids whose resolution is not a whole number).
        data = data.isel(y=slice(halo, -halo), x=slice(halo, -halo))
        own = xr_coords(gbox, crs_coord_name="spatial_ref")
        data = data.assign_coords(y=own["y"], x=own["x"])
    return _conform(data, steps)


def _halo_px(recipe: Recipe) -> int:
    """Pixels a composite's value depends on beyond its own: the cloud buffer and the 1 px
    opening before it (none for scenes)."""
    if recipe.composite.method == "none":
        return 0
    buffer_m = float(recipe.clouds.buffer_m)
    if buffer_m == 0:
        return 0
    return math.ceil(buffer_m / float(recipe.grid.resolution)) + 2


def _template(example: xr.Dataset, gbox: GeoBox, recipe: Recipe) -> xr.Dataset:
    """The whole grid's Dataset, lazy constants (nodata), shaped like a tile's ``example``."""

    coords = xr_coords(gbox, crs_coord_name="spatial_ref")
    chunk = {"y": recipe.chunks.y, "x": recipe.chunks.x}
    out = xr.Dataset(attrs=example.attrs)
    for name, var in example.data_vars.items():
        dims = var.dims
        sizes = {**var.sizes, "y": gbox.shape[0], "x": gbox.shape[1]}
        chunks = tuple(chunk.get(d, recipe.chunks.time if d in ("time", "year") else sizes[d])
                       for d in dims)
        data = da.zeros(tuple(sizes[d] for d in dims), dtype=var.dtype, chunks=chunks)
        extra = {k: c for k, c in var.coords.items() if k not in ("y", "x", "spatial_ref")}
        out[name] = xr.DataArray(data, dims=dims, coords={**extra, **{k: coords[k] for k in
                                 ("y", "x", "spatial_ref")}}, attrs=var.attrs)
    return out


def _write_tiled(recipe: Recipe, items, store: StorePath, *, data_dir, overwrite: bool,
                 progress: bool, tiles: Sequence[str] | None) -> StorePath:
    """Lay the store out over the whole mosaic grid, then fill it tile by tile (resumable)."""

    gbox, table = tile_plan(recipe, data_dir=data_dir, tiles=tiles)
    steps = _steps(recipe, items)
    items = ItemIndex(items, gbox.crs)
    example = None
    built: dict[str, xr.Dataset | None] = {}  # tiles looked at for the example: not built twice
    for _, tile in table[table.active].iterrows():
        example = built[tile.tile_id] = tile_dataset(recipe, items, gbox[_tile_slices(tile)],
                                                     steps)
        if example is not None:
            break
    if example is None:
        raise EmptyCubeError(
            f"no item of the search touches any of the {len(table)} tiles of recipe "
            f"{recipe.name!r}; check the recipe's catalog, area and period."
        )
    template = _template(example, gbox, recipe)
    # The tiles this store is built from belong to its template: widening a trial run's
    # tiles within the same block is another store, not a resume that skips them.
    active = sorted(table.tile_id[table.active])
    template.attrs["tiles_built"] = len(active)
    template.attrs["tiles_sha256"] = hashlib.sha256(" ".join(active).encode()).hexdigest()
    # "resume": keep the layout of this template, finish one a crash interrupted, refuse
    # another template's store (another recipe, tile block or period: TemplateMismatchError).
    init_cube_store(template, store, mode="w" if overwrite else "resume",
                    patch_size=recipe.grid.patch_size)
    bar = None
    if progress:
        bar = tqdm(total=len(table), unit="tile", desc=f"{recipe.name} tiles")
    regions = [dict(zip(("y", "x"), _tile_slices(tile), strict=True))
               for _, tile in table.iterrows()]
    written = regions_written(store, regions)  # the ledger read once, not once per tile
    try:
        for (_, tile), region, done in zip(table.iterrows(), regions, written, strict=True):
            ys, xs = region["y"], region["x"]
            if not done:
                part = None
                if tile.active:
                    part = (built.pop(tile.tile_id) if tile.tile_id in built
                            else tile_dataset(recipe, items, gbox[ys, xs], steps))
                if part is None:  # no scene here: write the nodata the store was laid out with
                    part = template.isel(region)
                elif _halo_px(recipe):  # computed once, not once per chunk it is written in
                    part = part.persist()
                write_cube(part, store, region=region, mode="resume")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return store


def _tile_slices(tile) -> tuple[slice, slice]:
    return (slice(int(tile.y_off), int(tile.y_off + tile.height)),
            slice(int(tile.x_off), int(tile.x_off + tile.width)))


def run_recipe(
    recipe: Recipe | str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    items: pystac.ItemCollection | None = None,
    tiles: Sequence[str] | None = None,
) -> list[StorePath]:
    """Build every cube of a recipe and write it to Zarr (resumable).

    A per-site recipe writes ``<output>/site-<id>.zarr`` for each site. A single-area recipe
    (a country, GeoJSON or bbox) writes one store at ``output`` (default: the recipe's
    ``output``) on the area's mosaic grid (:func:`tile_plan`): laid out first, then filled tile
    by tile, each tile built from the items that touch it; tiles outside the area stay nodata.

    A rerun after an interruption finishes what is missing only (whole tiles, or the missing
    chunks of a site); ``overwrite`` rewrites.

    Parameters
    ----------
    tiles
        Single-area recipes: build only these tile ids (e.g. a trial run of chile-mosaic).

    Returns
    -------
    list of pathlib.Path (or fsspec URL paths)
        The Zarr stores written; ``output`` may be an fsspec URL (``s3://...``).
    """

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    root = as_store_path(output) if output is not None else recipe.output_path
    check_writable(root, what="store" if not per_site(recipe) else "folder of stores")
    if items is None:
        items = recipe.search(data_dir=data_dir)
    if not per_site(recipe):
        root.parent.mkdir(parents=True, exist_ok=True)
        return [_write_tiled(recipe, items, root, data_dir=data_dir, overwrite=overwrite,
                             progress=progress, tiles=tiles)]
    if tiles is not None:
        raise RecipeError(f"tiles= applies to single-area recipes; {recipe.name!r} is per site.")
    stores = []
    for name, data in recipe_cubes(recipe, items=items, data_dir=data_dir):
        store = root / f"{name}.zarr"
        store.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            mode = "w"
        elif store.exists():
            mode = "resume"
        else:
            mode = "w-"
        if progress:
            print(f"{name}: {dict(data.sizes)} -> {store}")
        write_cube(data, store, mode=mode, progress=progress, chunks=_chunks(recipe, data))
        stores.append(store)
    return stores


def _chunks(recipe: Recipe, data: xr.Dataset) -> dict[str, int]:
    """The recipe's Zarr chunks: ``chunks.y``/``x`` (capped at the grid), ``chunks.time`` along
    time (scenes) or year (yearly composites)."""
    out = {"y": min(recipe.chunks.y, data.sizes["y"]), "x": min(recipe.chunks.x, data.sizes["x"])}
    for dim in ("time", "year"):
        if dim in data.dims:
            out[dim] = min(recipe.chunks.time, data.sizes[dim])
    return out
