"""Patch recipes: the LAMES patch sets (train/validation/test windows of per-site cubes, plus
no-mine windows from the rest of the country) made by one command.

A patch recipe is a YAML file (shipped ones in ``cubes/``, ``kind: patches``) naming a per-site
cube recipe and saying how to cut it::

    kind: patches
    name: lames-site-detection
    cubes: chile-sites       # the per-site cube recipe (built, or resumed, first)
    task: site               # site: 1 inside any LAMES site polygon | sector: the 8 classes
    size: 256                # window side, px
    stride: 256              # px between windows
    year: null               # which yearly composite (default: the last)
    split: {validation: 0.2, seed: 1117}   # test: the LAMES test sites (isolation split)
    sites_from: cubes        # cubes | world (see below)
    extra: {n: 10000, rules: [blind, checked], buffer_m: 500, seed: 1117}
    output: lames-site-patches

:func:`build_patch_sets` writes ``<output>/sites.zarr`` (every window of every site cube, with
``site_id``, ``split``, ``kind`` "site" and ``mine_fraction``) and one store per extra rule
(``blind.zarr``: the LAMES rule, windows drawn uniformly from all LAMES Chile patches with no
check; ``checked.zarr``: the same draw from the patches that touch no LAMES sector, site polygon,
Maus footprint or test- or validation-site box grown by ``buffer_m``), all in the training split, plus each
window table as GeoParquet and ``summary.json``. Every store is resumable (:mod:`lames_cube.patchset`).

The extra windows' pixels come from the cube recipe's synthetic world, rendered window by
window on the LAMES tile grid (EPSG:3857) under a clear sky (a stand-in for LAMES' least-cloudy
mosaic); a catalog that is not a synthetic world needs ``extra.source``: a country cube store
(e.g. the ``chile-mosaic`` recipe's output), cut on its own grid.

Site windows straight from the synthetic world (``sites_from: world``)
--------------------------------------------------------------------
Building a composite cube per site is slow for all 139 LAMES sites, and the paper itself cut
one 8-bit mosaic on EPSG:3857 site boxes. With ``sites_from: world`` no cube is built: the cube
recipe only names the synthetic world (its ``catalog``), and for each LAMES site (the sites
layer: the LAMES files when present, else the world's) the window grid is the site's LAMES box
(:func:`lames_cube.grid.site_boxes`: EPSG:3857, ``k``·256 px square, the paper's rule),
rendered by the world under a neutral clear sky (``World.read(gbox, None)``: the last year, no
clouds, no noise), chunk by chunk while the store is written::

    sites_from: world        # cubes (default): cut per-site cube composites | world: render
    bands: [B02, B03, B04, B08, B11, B12]   # world: any of these (the default: all of them);
                             # cubes: a selection of the composite's bands (default: all)
    sites: all               # world only: all, or a list of LAMES site ids (small trials)

Masks are rasterised on each site box's grid exactly as for cubes (site task: 1 inside any
site polygon, ``all_touched`` False; sector task: the 8-class index of
:func:`lames_cube.classes.to_sector_index`), and the split is by whole site as for cubes. The
world must draw every LAMES site whose sectors reach into a chosen box; when the cube recipe's
world does not (the ``demo`` world draws four sites), the same world spec with ``area: lames``
(every LAMES site and every hidden mine) renders the windows and the extra windows instead,
and ``summary.json`` (``world``) and each store's ``origin`` name that world's digest. The extra
windows always have the site windows' bands.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
import warnings
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros
from pydantic import AfterValidator, BeforeValidator, Field, Strict, ValidationInfo, field_validator
from tqdm.auto import tqdm

from lames_cube import _kernels, rasterize
from lames_cube._atomic import atomic_write_text, check_writable
from lames_cube.annotations import load_footprints, load_sectors, load_sites
from lames_cube.classes import to_sector_index
from lames_cube.config import find_data_dir
from lames_cube.errors import (
    LamesCubeError,
    NoOverlapError,
    PatchRecipeError,
    PatchRecipeNotFoundError,
)
from lames_cube.grid import geobox_of, lames_geobox, lames_tiles, site_boxes
from lames_cube.io import open_store
from lames_cube.patches import lames_patch_table, patch_table, window_table
from lames_cube.patchset import PatchSource, write_patch_set
from lames_cube.recipes.cubes import CUBES_DIR, load_recipe
from lames_cube.recipes.pipeline import per_site, run_recipe
from lames_cube.recipes.schema import (
    Doc,
    Ge,
    Gt,
    Int,
    Lt,
    MinLen,
    Mistake,
    Number,
    Section,
    SiteId,
    Text,
    read_yaml,
    settings,
    validate,
)
from lames_cube.sampling import sample_blind, sample_checked, touches
from lames_cube.splits import validation_split
from lames_cube.synthetic import World
from lames_cube.synthetic.clear import SKY, clear_sky_cube
from lames_cube.synthetic.mines import SECTOR_CLASSES
from lames_cube.synthetic.realism import open_world
from lames_cube.tables import save_table

#: Where the shipped patch recipes are.
PATCHES_DIR = CUBES_DIR / "patches"
Task = Literal["site", "sector"]
Rule = Literal["blind", "checked"]
#: Where the site windows' pixels come from: per-site cube composites, or the synthetic world.
SitesFrom = Literal["cubes", "world"]
TASKS, RULES, SITES_FROM = (typing.get_args(t) for t in (Task, Rule, SitesFrom))
#: The bands the synthetic world renders (uint16 reflectance x 1e4), the ``bands`` default of
#: ``sites_from: world``.
WORLD_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")



def list_patch_recipes() -> list[str]:
    """Names of the patch recipes shipped in ``cubes/patches/`` (sorted).

    Examples
    --------
    >>> list_patch_recipes()  # doctest: +NORMALIZE_WHITESPACE
    ['demo-lames-patches', 'demo-patches', 'demo-world-patches', 'lames-site-patches',
     'lames-world-sector-patches', 'lames-world-site-patches']
    """
    return sorted(p.stem for p in PATCHES_DIR.glob("*.yaml")) if PATCHES_DIR.is_dir() else []


@settings
class Split(Section):
    """How the training sites are split: a ``validation`` fraction of them, drawn with
    ``seed`` (the test sites are the LAMES test sites)."""

    validation: Annotated[Number, Gt(0), Lt(1), Doc(0.2)] = 0.2
    seed: Annotated[Int, Ge(0), Doc(1117)] = 1117


@settings
class Extra(Section):
    """No-mine windows added to the training split (``seed``: None means the split's)."""

    n: Annotated[Int, Ge(0), Doc(10000)] = 0
    rules: Annotated[tuple[Rule, ...], MinLen(1), AfterValidator(lambda r: tuple(dict.fromkeys(r))),
                     Doc("[blind, checked]")] = RULES
    buffer_m: Annotated[Number, Ge(0), Doc(500, unit="m")] = 500.0
    seed: Annotated[Int, Ge(0), Doc(1117)] | None = None
    source: Annotated[Text, Doc("chile-mosaic.zarr", allowed="the path of a country cube store")
                      ] | None = None


def _all_sites(value: Any) -> Any:
    return None if value == "all" else value


@settings
class PatchRecipe(Section):
    """A validated patch recipe (see the module docstring for its keys).

    Build one with :func:`load_patch_recipe` (a file) or :func:`parse_patch_recipe` (a
    mapping); ``source`` is the file it came from and takes no part in comparisons.
    """

    _INTERNAL: ClassVar[tuple[str, ...]] = ("source",)

    kind: Annotated[Literal["patches"], Doc("patches")]
    name: Annotated[Text, Doc("lames-site-detection")]
    cubes: Annotated[Text, Doc("chile-sites", allowed="a cube recipe name or path")]
    description: Annotated[str, Strict()] = ""
    sites_from: Annotated[SitesFrom, Doc(fix="use cubes (cut the cube recipe's per-site "
                                         "composites) or world (render the LAMES site boxes "
                                         "from its synthetic world)")] = "cubes"
    sites: Annotated[Annotated[tuple[SiteId, ...], MinLen(1)] | None, BeforeValidator(_all_sites),
                     Doc("['2203', '2355']", allowed="all, or a list of LAMES site ids")] = None
    task: Task = "site"
    size: Annotated[Int, Ge(1), Doc(256)] = 256
    stride: Annotated[Int, Ge(1), Doc(256)] = Field(None, validate_default=True)
    year: Annotated[Int, Ge(1), Doc(2022)] | None = None
    bands: Annotated[tuple[Text, ...], MinLen(1), Doc(f"[{', '.join(WORLD_BANDS)}]")] | None = None
    split: Annotated[Split, Doc("{validation: 0.2, seed: 1117}")] = field(default_factory=Split)
    extra: Annotated[Extra, Doc("{n: 10000, rules: [blind, checked], buffer_m: 500}")] = Field(
        default_factory=Extra, validate_default=True)
    output: Annotated[Text, Doc("lames-site-patches")] = Field(None, validate_default=True)
    source: Path | None = field(default=None, compare=False, repr=False)

    @property
    def validation(self) -> float:
        """The fraction of the training sites held out for validation."""
        return self.split.validation

    @property
    def seed(self) -> int:
        """The seed of the validation split."""
        return self.split.seed

    @property
    def output_path(self) -> Path:
        """``output``, relative to the current directory unless absolute."""
        return Path(self.output).expanduser()

    @property
    def band_list(self) -> list[str] | None:
        """The bands of the windows: ``bands``, the world's default bands with
        ``sites_from: world``, or None (every band of the cubes)."""
        if self.bands is not None:
            return list(self.bands)
        return list(WORLD_BANDS) if self.sites_from == "world" else None

    @field_validator("stride", "output", mode="before")
    @classmethod
    def _defaults(cls, value: Any, info: ValidationInfo) -> Any:
        """``stride`` defaults to ``size``, ``output`` to ``name``."""
        source, fallback = {"stride": ("size", 256), "output": ("name", "patches")}[info.field_name]
        return info.data.get(source, fallback) if value is None else value

    @field_validator("sites")
    @classmethod
    def _sites(cls, sites: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        if sites is not None and info.data.get("sites_from") != "world":
            raise Mistake("needs sites_from: world (with cubes the cube recipe's area chooses "
                          "the sites)", "all", "remove it or set sites_from: world")
        return None if sites is None else tuple(dict.fromkeys(sites))

    @field_validator("bands")
    @classmethod
    def _bands(cls, bands: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        repeated = sorted({b for b in bands if bands.count(b) > 1})
        unknown = [b for b in bands if b not in WORLD_BANDS]
        world = info.data.get("sites_from") == "world"
        mistakes = [Mistake(f"lists {repeated} more than once", "each band once",
                            "list each band once")] * bool(repeated) + [
            Mistake(f"lists {unknown}, which the synthetic world does not render (sites_from: "
                    f"world)", f"bands among {list(WORLD_BANDS)}",
                    "use canonical ids, not common names such as 'red'")] * bool(world and unknown)
        if mistakes:
            raise Mistake(parts=mistakes)
        return bands

    @field_validator("extra")
    @classmethod
    def _extra_seed(cls, extra: Extra, info: ValidationInfo) -> Extra:
        """``extra.seed`` defaults to ``split.seed``."""
        if extra.seed is None and "split" in info.data:
            return dataclasses.replace(extra, seed=info.data["split"].seed)
        return extra


def parse_patch_recipe(data: Any, *, where: str = "the patch recipe",
                       source: Path | None = None) -> PatchRecipe:
    """Validate a patch recipe's mapping; every mistake is reported at once.

    Raises
    ------
    PatchRecipeError
        Unknown keys, wrong types or values (all listed, each with the fix).

    Examples
    --------
    >>> r = parse_patch_recipe({"kind": "patches", "name": "t", "cubes": "demo",
    ...                         "extra": {"n": 20}})
    >>> r.task, r.size, r.extra.rules, r.sites_from, r.band_list
    ('site', 256, ('blind', 'checked'), 'cubes', None)
    >>> w = parse_patch_recipe({"kind": "patches", "name": "w", "cubes": "demo",
    ...                         "sites_from": "world", "sites": [2203, "2355"]})
    >>> w.sites, w.band_list
    (('2203', '2355'), ['B02', 'B03', 'B04', 'B08', 'B11', 'B12'])
    """
    return validate(PatchRecipe, data, error=PatchRecipeError, where=where,
                    context={"source": source})


def load_patch_recipe(name_or_path: str | os.PathLike) -> PatchRecipe:
    """Read a patch recipe: a shipped name (``cubes/<name>.yaml``) or a file path.

    Examples
    --------
    >>> load_patch_recipe("lames-site-patches").extra.n
    10000
    """
    text = os.fspath(name_or_path)
    bare = "/" not in text and os.sep not in text and not text.endswith((".yaml", ".yml"))
    path = PATCHES_DIR / f"{text}.yaml" if bare else Path(text).expanduser()
    if not path.is_file():
        names = list_patch_recipes()
        raise PatchRecipeNotFoundError(
            f"No patch recipe {text!r}: {path} does not exist. Shipped patch recipes: "
            f"{', '.join(names) or '(none)'}; give one of these names or the path of a .yaml "
            f"file (cube recipes live in {CUBES_DIR}).")
    return parse_patch_recipe(read_yaml(path, PatchRecipeError), where=str(path), source=path)


# --------------------------------------------------------------------------------- building
def _labels(recipe: PatchRecipe, layers: dict[str, gpd.GeoDataFrame], cube: Any, *,
            lazy: bool | None = None) -> xr.DataArray:
    """The task's mask on ``cube``'s grid (a cube or a GeoBox): 1 inside any site polygon, or
    the 8-class sector index; all 0 where no polygon reaches the grid. ``lazy=True`` burns with
    rasterio per chunk (the EPSG:3857 site boxes: geocube rounds their odd transforms) and
    returns NumPy."""

    if recipe.task == "site":
        polygons, value = layers["sites"], 1
    else:
        polygons = layers["sectors"].copy()
        polygons["index"] = to_sector_index(polygons["class"].to_numpy(), unknown=0)
        value = "index"
    try:
        if not lazy:
            return rasterize(polygons, like=cube, value=value)
        labels = rasterize(polygons, like=cube, value=value, lazy=True, chunks=1024)
        return labels.copy(data=labels.data.compute())
    except NoOverlapError:  # e.g. a sector-less site box: its mask is all background


        return xr_zeros(geobox_of(cube, "cube"), dtype="uint8")


def _composite(store: Any, year: int | None, cubes: str) -> tuple[xr.DataArray, int | None]:
    """A composite store's ``(band, y, x)`` reflectance of ``year`` (default: the last)."""

    refl = open_store(store).reflectance
    if "time" in refl.dims:
        raise PatchRecipeError(f"the cube store {store} holds scenes, not composites; the cube "
                               f"recipe {cubes!r} needs composite.method median or least_cloudy.")
    if "year" not in refl.dims:
        return refl, None
    year = year if year is not None else int(refl.year.values[-1])
    if year not in refl.year.values:
        raise PatchRecipeError(f"year: {year} is not in {store} (years "
                               f"{refl.year.values.tolist()}); pick one of them.")
    return refl.sel(year=year, drop=True), year


def _site_table(recipe: PatchRecipe, like: Any, labels: xr.DataArray, site: str,
                test_ids, val_ids) -> gpd.GeoDataFrame:
    """The windows of one site's grid, with ``site_id``, ``split``, ``kind``, ``mine_fraction``."""

    table = patch_table(like, size=recipe.size, stride=recipe.stride)
    sums = _kernels.window_sums(_kernels.summed_area((labels.values > 0).view(np.uint8)),
                                table.row.to_numpy(), table.col.to_numpy(), recipe.size,
                                recipe.size)
    table["site_id"] = site
    table["split"] = "test" if site in test_ids else "validation" if site in val_ids else "train"
    table["kind"] = "site"
    table["mine_fraction"] = sums / recipe.size ** 2
    return table


def _select_bands(refl: xr.DataArray, bands: list[str] | None, store: Any) -> xr.DataArray:
    if bands is None:
        return refl
    have = [str(b) for b in refl.band.values]
    missing = [b for b in bands if b not in have]
    if missing:
        raise PatchRecipeError(f"bands: {missing} are not in the cube store {store} (bands "
                               f"{have}); list bands the cube recipe makes, or drop 'bands' to "
                               "keep all of them.")
    return refl.sel(band=bands)


def _site_sources(recipe: PatchRecipe, stores: list, layers, test_ids, val_ids):
    sources = []
    for store in stores:
        site = Path(str(store)).name.removesuffix(".zarr").removeprefix("site-")
        refl, year = _composite(store, recipe.year, recipe.cubes)
        refl = _select_bands(refl, recipe.band_list, store)
        labels = _labels(recipe, layers, refl)
        table = _site_table(recipe, refl, labels, site, test_ids, val_ids)
        sources.append(PatchSource(refl, table, labels,
                                   origin=f"{Path(str(store)).resolve()} year={year}"))
    return sources


def _window_cube(world, gbox, bands: list[str], chunk: int | None = None, *,
                 digest: str | None = None) -> xr.DataArray:
    """A lazy (band, y, x) cube of a grid, rendered by the world under a clear sky, one dask
    task per ``chunk``-px square (default: the whole grid in one task); see
    :func:`lames_cube.synthetic.clear.clear_sky_cube`."""

    return clear_sky_cube(world, gbox, bands, chunk, digest=digest)


def _chosen_sites(recipe: PatchRecipe, sites: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The sites layer's rows of ``recipe.sites`` (all of them for None), in the layer's order."""
    ids = sites.site_id.astype(str)
    if recipe.sites is None:
        return sites
    unknown = [i for i in recipe.sites if i not in set(ids)]
    if unknown:
        raise PatchRecipeError(
            f"sites: {unknown} are not LAMES sites of the sites layer ({len(sites)} sites, e.g. "
            f"{sorted(ids)[:5]}); list ids of lames_cube.annotations.load_sites(), or 'all'.")
    return sites[ids.isin(recipe.sites).to_numpy()]


def _drawing_world(world, boxes: gpd.GeoDataFrame, layers: dict[str, gpd.GeoDataFrame],
                   data_dir):
    """``world`` when it draws every LAMES site whose sectors reach into ``boxes``; otherwise
    the same spec with ``area="lames"`` (every LAMES site and hidden mine)."""



    sectors = layers["sectors"]
    drawable = sectors[sectors["class"].isin(SECTOR_CLASSES)]
    near = drawable[drawable.intersects(shapely.union_all(boxes.geometry.values))]
    needed = set(near.site_id.astype(str))
    drawn = set(world.sectors.site_id.astype(str))  # hidden mines too (the world's own layers)
    missing = sorted(needed - drawn)
    if not missing:
        return world
    if not world.spec.use_lames:
        raise PatchRecipeError(
            f"the cube recipe's world draws synthetic sites, not the LAMES sites {missing[:5]} "
            "that the site boxes hold; use a world over the real LAMES sites (a LAMES data "
            "directory) or leave out LAMES_DATA_DIR so that the world's own sites are cut.")
    return World(dataclasses.replace(world.spec, area="lames", site_ids=None),
                 data_dir=data_dir)


def _world_site_sources(recipe: PatchRecipe, world, boxes: gpd.GeoDataFrame, layers,
                        test_ids, val_ids, progress: bool):
    """One source per site box: the world's clear-sky render on the box's EPSG:3857 grid (lazy,
    one task per chunk of ``gcd(size, stride)`` px, at least 128), its mask and windows."""


    bands = recipe.band_list
    chunk = math.gcd(recipe.size, recipe.stride)
    chunk = chunk if chunk >= min(recipe.size, 128) else recipe.size
    digest = world.digest()
    origin = f"world {digest} {SKY}, LAMES site box"
    layers = {k: v.to_crs("EPSG:3857") for k, v in layers.items() if k in ("sites", "sectors")}
    rows = boxes.itertuples(index=False)
    if progress:
        rows = tqdm(rows, total=len(boxes), unit="site", desc="site boxes (masks, windows)")
    sources = []
    for row in rows:
        gbox = lames_geobox(row._asdict())
        labels = _labels(recipe, layers, gbox, lazy=True)
        site = str(row.site_id)
        table = _site_table(recipe, gbox, labels, site, test_ids, val_ids)
        sources.append(PatchSource(_window_cube(world, gbox, bands, chunk, digest=digest),
                                   table, labels, origin=f"{origin} {site}"))
    return sources


def _lames_window_geoboxes(table: gpd.GeoDataFrame, size: int) -> list:
    tiles = lames_tiles("chile").set_index("name")
    out = []
    for tile, row, col in zip(table.tile, table.row, table.col, strict=True):
        x0, dx, _, y0, _, dy = tiles.at[tile, "transform"]
        out.append(GeoBox((size, size), Affine(dx, 0, x0 + col * dx, 0, dy, y0 + row * dy),
                          "EPSG:3857"))
    return out


def _extra_sources(table: gpd.GeoDataFrame, world, bands: list[str], size: int):
    digest = world.digest()  # once: tens of ms for a world of every LAMES site
    origin = f"world {digest} {SKY}"
    sources = []
    for gbox, (_, row) in zip(_lames_window_geoboxes(table, size), table.iterrows(), strict=True):
        one = window_table(gbox, np.array([0]), np.array([0]), size)
        one["tile"], one["tile_row"], one["tile_col"] = row.tile, int(row.row), int(row.col)
        one["split"], one["kind"] = "train", row.kind
        sources.append(PatchSource(_window_cube(world, gbox, bands, digest=digest), one, None,
                                   origin=origin))
    return sources


def _store_sources(table: gpd.GeoDataFrame, refl: xr.DataArray, origin: str):
    out = table.copy()
    out["split"] = "train"
    return [PatchSource(refl, out, None, origin=origin)]


def _layers(world, data_dir) -> dict[str, gpd.GeoDataFrame]:
    """Sites, sectors and Maus footprints: the LAMES files when present, else the world's."""

    if find_data_dir(data_dir, required=False) is not None:
        with warnings.catch_warnings():  # the repairs are reported by load_* themselves
            warnings.simplefilter("ignore")
            return {"sites": load_sites("all", data_dir=data_dir),
                    "sectors": load_sectors(data_dir=data_dir),
                    "footprints": load_footprints(data_dir=data_dir)}
    if world is None:
        raise PatchRecipeError("no LAMES data directory was found and the cube recipe's catalog "
                               "is not a synthetic world; set LAMES_DATA_DIR.")
    return {"sites": world.sites, "sectors": world.sectors, "footprints": world.hidden}


def _write(sources, store: Path, *, overwrite: bool, progress: bool) -> Path:
    mode = "w" if overwrite else ("resume" if store.exists() else "w-")
    return Path(write_patch_set(sources, store, mode=mode, progress=progress))


def build_patch_sets(recipe: PatchRecipe | str | os.PathLike, *, data_dir=None,
                     output: str | os.PathLike | None = None, cubes_output=None,
                     extra_n: int | None = None, overwrite: bool = False,
                     progress: bool = True) -> dict[str, Any]:
    """Make a patch recipe's sets: the per-site cubes first (built or resumed; with
    ``sites_from: world`` none, the site boxes are rendered by the world), then the site
    windows with the LAMES split, then the extra no-mine windows, each rule its own store.

    Parameters
    ----------
    recipe
        A :class:`PatchRecipe`, a shipped name or a path.
    data_dir
        The LAMES data directory (default: ``LAMES_DATA_DIR``).
    output
        Folder of the patch sets (default: the recipe's ``output``).
    cubes_output
        Where the per-site cube stores go (default: the cube recipe's ``output``); not used
        with ``sites_from: world``.
    extra_n
        Override ``extra.n`` (e.g. a small trial).
    overwrite
        Rewrite existing stores instead of resuming them.
    progress
        Bars and counts on the terminal.

    Returns
    -------
    dict
        The summary written to ``<output>/summary.json``: the stores, the counts per split and
        kind, the test and validation site ids, the rules' seeds; with ``sites_from: world``
        also ``world`` (its digest, whether it was widened to every LAMES site, the bands).

    Raises
    ------
    PatchRecipeError
        A cube recipe that is not per-site (cubes) or whose catalog is not a synthetic world
        (world), unknown ``sites`` or ``bands``, extra windows without pixels.
    """

    recipe = recipe if isinstance(recipe, PatchRecipe) else load_patch_recipe(recipe)
    cube_recipe = load_recipe(recipe.cubes)
    from_world = recipe.sites_from == "world"
    if not from_world and not per_site(cube_recipe):
        raise PatchRecipeError(f"cubes: {recipe.cubes!r} is not a per-site recipe (its area is "
                               f"{cube_recipe.area.kind}); name one with sites on UTM grids, "
                               "e.g. chile-sites or demo.")
    out = Path(output) if output is not None else recipe.output_path
    check_writable(out, what="folder of patch sets")
    out.mkdir(parents=True, exist_ok=True)
    world = None
    if cube_recipe.catalog_kind != "api":
        try:
            world = open_world(cube_recipe.resolve_catalog(data_dir=data_dir))
        except LamesCubeError:
            world = None  # a STAC index that is not a world
    if from_world:
        if world is None:
            raise PatchRecipeError(
                f"sites_from: world needs a cube recipe whose catalog is a synthetic world; "
                f"{recipe.cubes!r} has catalog {cube_recipe.catalog!r}. Name one such as 'demo' "
                "(catalog world:demo) or a world directory, or use sites_from: cubes.")

        layers = _layers(world, data_dir)
        sites = layers["sites"]
        boxes = site_boxes(_chosen_sites(recipe, sites))
        base = world
        world = _drawing_world(world, boxes, layers, data_dir)
        ids = boxes.site_id.astype(str).tolist()
    else:
        stores = run_recipe(cube_recipe, data_dir=data_dir, output=cubes_output,
                            progress=progress)
        layers = _layers(world, data_dir)
        sites = layers["sites"]
        ids = [Path(str(s)).name.removesuffix(".zarr").removeprefix("site-") for s in stores]
    split_of = dict(zip(sites.site_id.astype(str), sites.split.astype(str), strict=True))
    test_ids = sorted(i for i in ids if split_of.get(i) == "test")
    train_ids = [i for i in ids if i not in test_ids]
    val_ids: list[str] = []
    if len(train_ids) > 1:
        train_ids, val_ids = validation_split(train_ids, recipe.validation, seed=recipe.seed)
    summary: dict[str, Any] = {"recipe": recipe.name, "task": recipe.task, "cubes": recipe.cubes,
                               "sites_from": recipe.sites_from,
                               "test_sites": test_ids, "validation_sites": val_ids,
                               "train_sites": sorted(train_ids), "stores": {}, "counts": {}}
    if from_world:
        summary["world"] = {"digest": world.digest(), "catalog_digest": base.digest(),
                            "widened_to_every_lames_site": world is not base,
                            "bands": recipe.band_list, "sky": SKY}
        site_sources = _world_site_sources(recipe, world, boxes, layers, set(test_ids),
                                           set(val_ids), progress)
    else:
        site_sources = _site_sources(recipe, stores, layers, set(test_ids), set(val_ids))
    store = _write(site_sources, out / "sites.zarr", overwrite=overwrite, progress=progress)
    tables = pd.concat([s.table for s in site_sources])
    summary["stores"]["sites"] = str(store)
    summary["counts"]["sites"] = {
        split: {"windows": int((tables.split == split).sum()),
                "with mine": int(((tables.split == split) & (tables.mine_fraction > 0)).sum())}
        for split in ("train", "validation", "test")}
    n = recipe.extra.n if extra_n is None else int(extra_n)
    if n:
        if recipe.extra.source is not None:
            refl, year = _composite(recipe.extra.source, recipe.year, recipe.cubes)
            origin = f"{Path(recipe.extra.source).resolve()} year={year}"
            table = patch_table(refl, size=recipe.size, stride=recipe.size)
        elif world is not None:
            table = lames_patch_table("chile", size=recipe.size)
        else:
            raise PatchRecipeError("extra windows need pixels from all of Chile: the cube "
                                   "recipe's catalog is not a synthetic world, so set "
                                   "extra.source to a country cube store (e.g. the chile-mosaic "
                                   "recipe's output).")
        held_out = (sites.split == "test") | sites.site_id.astype(str).isin(val_ids)
        exclude = [layers["sectors"], sites, layers["footprints"], site_boxes(sites[held_out])]
        bands = [str(b) for b in site_sources[0].cube.band.values]
        for rule in recipe.extra.rules:
            drawn = (sample_blind(table, n, seed=recipe.extra.seed) if rule == "blind" else
                     sample_checked(table, n, exclude=exclude, buffer_m=recipe.extra.buffer_m,
                                    seed=recipe.extra.seed))
            save_table(drawn, out / f"{rule}-windows.parquet")
            sources = (_store_sources(drawn, refl, origin) if recipe.extra.source else
                       _extra_sources(drawn, world, bands, recipe.size))
            store = _write(sources, out / f"{rule}.zarr", overwrite=overwrite,
                           progress=progress)
            summary["stores"][rule] = str(store)
            near = touches(drawn, exclude, buffer_m=recipe.extra.buffer_m)
            summary["counts"][rule] = {"train": {"windows": len(drawn),
                                                 "near a mine or test box": int(near.sum())}}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    if progress:
        print(counts_text(summary))
    return summary


def counts_text(summary: dict[str, Any]) -> str:
    """The counts per split and kind of :func:`build_patch_sets`, as a small table."""
    rows = []
    for kind, per in summary["counts"].items():
        for split, counts in per.items():
            rows.append({"set": kind, "split": split, **counts})
    frame = pd.DataFrame(rows).fillna(0)
    for col in frame.columns[2:]:
        frame[col] = frame[col].astype(int)
    text = (f"patch sets of {summary['recipe']!r} ({summary['task']} task; test sites "
            f"{', '.join(summary['test_sites']) or '-'}; validation sites "
            f"{', '.join(summary['validation_sites']) or '-'}):\n" + frame.to_string(index=False))
    world = summary.get("world")
    if world:
        widened = (f" (the catalog's world {world['catalog_digest']} widened to every LAMES "
                   "site)" if world["widened_to_every_lames_site"] else "")
        text += (f"\nsite windows rendered on the LAMES site boxes (EPSG:3857) by world "
                 f"{world['digest']}{widened}, clear sky, bands {', '.join(world['bands'])}")
    return text
