"""Cube recipes: named cubes as YAML settings, validated on load.

A recipe (``cubes/<name>.yaml``) says which imagery makes a cube and on which grid: where to
search, the area and period, the bands, the grid, the cloud rule, the composite, the chunks and
where to write. It holds settings only, never code. :func:`load_recipe` reads and checks one
and returns a frozen :class:`Recipe`; every mistake raises a :class:`RecipeError` that names the
file, the key path (``grid.resolution``), the value, what is allowed and the fix.

Schema (``*`` = required; defaults in brackets)::

    name*         str, letters, digits, '.', '_', '-'
    description   str [""]
    catalog*      "world:demo" | http(s) STAC API URL | path to a world dir or .parquet index
                  (relative paths are relative to the recipe file's folder)
    collections   [str, ...] ["sentinel-2-l2a"]
    area*         exactly one of:
                    sites: [LAMES site ids]     split: all | train | test
                    bbox: [w, s, e, n]          country: <Natural Earth name or ISO A3>
                    geojson: <path, relative to the recipe file's folder>
    period*       start* + end* (date, "YYYY[-MM[-DD]]" or a year), or datetime: "<interval>"
    bands*        [canonical band names: B02, B03, B04, B08, B8A, B11, B12, SCL, ...]
    grid*         crs* ("EPSG:32719" or "utm": the UTM zone of each site/area)
                  resolution* (m, > 0), resampling of reflectance when the grid differs from
                  the assets' (nearest | bilinear | cubic | average) [bilinear; SCL always
                  nearest], tile_size (px) [2304]: a single-area recipe is written tile by tile
                  on the area's mosaic grid (lames_cube.grid.mosaic_geobox), patch_size (px)
                  [256]; tile_size % patch_size == 0
    clouds        max_cloud (0..100 %) [none], max_nodata (0..100 %) [none],
                  mask (SCL classes) [3, 8, 9, 10], snow (bool) [false], saturated (bool) [true],
                  buffer_m (m, >= 0: masked pixels grow by this radius; 0 = SCL as is) [60]
    composite     method: none | median | least_cloudy [none]; period: all | year [all]
    chunks        int (y = x) or {y, x, time}; y, x multiples of patch_size
                  [y = x = 4 * patch_size, time 1]
    output        Zarr store path, relative to the current directory [<name>.zarr]
    engine        odc | stackstac [odc]

Examples
--------
>>> r = load_recipe("demo")
>>> r.grid.resolution, r.composite.method, r.search_kwargs()["sites"]
(10, 'median', ['2203', '2355', '2504', '2657'])
"""

from __future__ import annotations

import calendar
import datetime as dt
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lames_cube._atomic import atomic_write_text
from lames_cube.errors import (  # noqa: F401 (re-exported)
    InvalidBBoxError,
    InvalidQueryError,
    LamesCubeError,
    RecipeError,
    RecipeNotFoundError,
    VectorFileError,
)

if TYPE_CHECKING:
    from lames_cube._fs import UrlPath

#: Where named recipes live: the package ``lames_cube.cubes``, i.e. the repository's top-level
#: ``cubes/`` folder (editable install) or its copy shipped in the wheel (see pyproject.toml).
CUBES_DIR = Path(files("lames_cube.cubes"))

AREA_KINDS = ("sites", "split", "bbox", "country", "geojson")
SPLITS = ("all", "train", "test")
COMPOSITE_METHODS = ("none", "median", "least_cloudy")
COMPOSITE_PERIODS = ("all", "year")
ENGINES = ("odc", "stackstac")
#: Synthetic worlds a recipe can name as ``catalog: world:<name>``.
WORLDS = ("demo",)
DEFAULT_COLLECTIONS = ("sentinel-2-l2a",)
DEFAULT_MASK = (3, 8, 9, 10)
SNOW_CLASS = 11
SATURATED_CLASS = 1
#: Radius (m) by which masked SCL pixels grow; equals lames_cube.composite.DEFAULT_CLOUD_BUFFER_M
#: (repeated here so that reading a recipe does not import xarray; a test checks they agree).
DEFAULT_BUFFER_M = 60.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: A date as written in a recipe (``YYYY-MM`` or ``YYYY-MM-DD``, maybe followed by a time).
_DATE_RE = re.compile(r"^(\d{4})-(\d{1,2})(?:-(\d{1,2}))?(?:[T ].*)?$")
_NO_VALUE = object()


#: Resampling of reflectance bands when the cube's grid differs from the assets'.
RESAMPLING = ("nearest", "bilinear", "cubic", "average")



# --------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Area:
    """Where to search: one kind of area and its value.

    ``kind`` is one of :data:`AREA_KINDS`; ``value`` is a tuple of site ids (``sites``), a split
    name (``split``), a ``(w, s, e, n)`` tuple (``bbox``), a country name (``country``) or the
    absolute path of a GeoJSON file (``geojson``).
    """

    kind: str
    value: Any


@dataclass(frozen=True)
class Period:
    """The period: ``start`` and ``end``, or one ``datetime`` interval (strings as written)."""

    start: str | None = None
    end: str | None = None
    datetime: str | None = None

    @property
    def interval(self) -> str:
        """The RFC 3339 interval that :func:`lames_cube.search.search` receives."""
        from lames_cube.search import check_datetime

        if self.datetime is not None:
            return check_datetime(self.datetime)
        return check_datetime((self.start, self.end))


@dataclass(frozen=True)
class Grid:
    """The output grid: CRS (or ``"utm"``), pixel size, reflectance resampling, tile and patch
    sizes."""

    crs: str
    resolution: float
    resampling: str = "bilinear"
    tile_size: int = 2304
    patch_size: int = 256

    @property
    def is_utm(self) -> bool:
        """True when the CRS is the UTM zone of each site or area (``crs: utm``)."""
        return self.crs == "utm"

    def crs_for(self, lon: float, lat: float) -> str:
        """The CRS for an area centred at ``(lon, lat)``: the fixed CRS, or its UTM zone.

        Examples
        --------
        >>> Grid("utm", 10).crs_for(-69.07, -24.27)
        'EPSG:32719'
        >>> Grid("EPSG:3857", 10).crs_for(-69.07, -24.27)
        'EPSG:3857'
        """
        if not self.is_utm:
            return self.crs
        from lames_cube.grid import utm_epsg

        return f"EPSG:{utm_epsg(lon, lat)}"


@dataclass(frozen=True)
class Clouds:
    """Scene-level limits and the per-pixel SCL mask."""

    max_cloud: float | None = None
    max_nodata: float | None = None
    mask: tuple[int, ...] = DEFAULT_MASK
    snow: bool = False
    saturated: bool = True
    buffer_m: float = DEFAULT_BUFFER_M

    @property
    def mask_classes(self) -> tuple[int, ...]:
        """Every SCL class to mask: ``mask`` plus snow (11) and saturated (1) when asked."""
        extra = [SNOW_CLASS] * self.snow + [SATURATED_CLASS] * self.saturated
        return tuple(sorted({*self.mask, *extra}))


@dataclass(frozen=True)
class Composite:
    """How scenes are combined: ``method`` over each ``period``."""

    method: str = "none"
    period: str = "all"


@dataclass(frozen=True)
class Chunks:
    """Dask/Zarr chunk sizes: ``y`` and ``x`` in pixels, ``time`` in scenes (or composites)."""

    y: int
    x: int
    time: int = 1

    def as_dict(self) -> dict[str, int]:
        """``{"time": ..., "y": ..., "x": ...}`` for xarray/dask."""
        return {"time": self.time, "y": self.y, "x": self.x}


@dataclass(frozen=True)
class Recipe:
    """A validated cube recipe (see the module docstring for the schema).

    Build one with :func:`load_recipe` (a file) or :meth:`from_dict` (a mapping); both validate.
    ``source`` is the file it came from and takes no part in comparisons.
    """

    name: str
    catalog: str
    area: Area
    period: Period
    bands: tuple[str, ...]
    grid: Grid
    description: str = ""
    collections: tuple[str, ...] = DEFAULT_COLLECTIONS
    clouds: Clouds = field(default_factory=Clouds)
    composite: Composite = field(default_factory=Composite)
    chunks: Chunks | None = None
    output: str | None = None
    engine: str = "odc"
    source: Path | None = field(default=None, compare=False, repr=False)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_dict(
        cls, data: Any, *, source: str | os.PathLike | None = None, base_dir: str | os.PathLike | None = None
    ) -> Recipe:
        """Validate a mapping (as read from YAML) into a :class:`Recipe`.

        Parameters
        ----------
        data
            The recipe mapping.
        source
            The file it came from (named in errors; its folder resolves relative input paths).
        base_dir
            Folder for relative input paths when there is no ``source`` (default: current dir).

        Raises
        ------
        RecipeError
            Any key, type, range or consistency problem.
        """
        src = Path(source) if source is not None else None
        base = src.parent if src is not None else Path(base_dir or Path.cwd())
        return _Validator(src, base.resolve()).recipe(data)

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        """Plain, YAML-safe mapping; ``Recipe.from_dict(r.to_dict()) == r``.

        Input paths (a local catalog, a GeoJSON area) are absolute.
        """
        area = self.area.value
        if isinstance(area, tuple):
            area = list(area)
        period = ({"datetime": self.period.datetime} if self.period.datetime is not None
                  else {"start": self.period.start, "end": self.period.end})
        grid = {"crs": self.grid.crs, "resolution": self.grid.resolution,
                "resampling": self.grid.resampling}
        grid.update(tile_size=self.grid.tile_size, patch_size=self.grid.patch_size)
        chunks = self.chunks or _default_chunks(self.grid.patch_size)
        return {
            "name": self.name,
            "description": self.description,
            "catalog": self.catalog,
            "collections": list(self.collections),
            "area": {self.area.kind: area},
            "period": period,
            "bands": list(self.bands),
            "grid": grid,
            "clouds": {
                "max_cloud": self.clouds.max_cloud,
                "max_nodata": self.clouds.max_nodata,
                "mask": list(self.clouds.mask),
                "snow": self.clouds.snow,
                "saturated": self.clouds.saturated,
                "buffer_m": self.clouds.buffer_m,
            },
            "composite": {"method": self.composite.method, "period": self.composite.period},
            "chunks": {"y": chunks.y, "x": chunks.x, "time": chunks.time},
            "output": self.output_name,
            "engine": self.engine,
        }

    # ----------------------------------------------------------------- derived settings
    @property
    def output_name(self) -> str:
        """The output store as written (default ``<name>.zarr``)."""
        return self.output if self.output is not None else f"{self.name}.zarr"

    @property
    def output_path(self) -> Path | UrlPath:
        """The output Zarr store: an fsspec URL as given (``s3://…``), else a path resolved
        against the current directory unless absolute."""
        from lames_cube._fs import as_store_path

        if "://" in self.output_name:
            return as_store_path(self.output_name)
        path = Path(self.output_name).expanduser()
        return path if path.is_absolute() else Path.cwd() / path

    @property
    def catalog_kind(self) -> str:
        """``"world"`` (a named synthetic world), ``"api"`` (a STAC API URL) or ``"path"``."""
        return _catalog_kind(self.catalog)

    def search_kwargs(self, *, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """Keyword arguments for ``lames_cube.search.search(catalog, **kwargs)``.

        The area becomes ``bbox``, ``sites`` or ``intersects``: a ``split`` expands to the ids of
        its LAMES sites (one box per site), a ``country`` to its Natural Earth 1:110m outline and
        a ``geojson`` file to the union of its features, both as GeoJSON geometries in
        EPSG:4326. Only limits that are set are included.

        Parameters
        ----------
        data_dir
            LAMES data directory (for ``split``; passed on to search for ``sites``).

        Raises
        ------
        RecipeError
            The country outlines or the GeoJSON file cannot be read.
        DataDirError
            ``split`` without the LAMES files.

        Examples
        --------
        >>> load_recipe("ghana-asm").search_kwargs()["bbox"]
        [-2.34, 4.96, -0.46, 6.6]
        """
        kw: dict[str, Any] = {}
        kind, value = self.area.kind, self.area.value
        if kind == "sites":
            kw["sites"] = list(value)
        elif kind == "split":
            from lames_cube.annotations import load_sites

            kw["sites"] = load_sites(value, data_dir=data_dir)["site_id"].tolist()
        elif kind == "bbox":
            kw["bbox"] = list(value)
        elif kind == "country":
            kw["intersects"] = country_geometry(value, where=f"{self._where()}: area.country")
        else:
            kw["intersects"] = _geojson_geometry(value, where=f"{self._where()}: area.geojson")
        kw["datetime"] = self.period.interval
        kw["collections"] = list(self.collections)
        if self.clouds.max_cloud is not None:
            kw["max_cloud"] = self.clouds.max_cloud
        if self.clouds.max_nodata is not None:
            kw["max_nodata"] = self.clouds.max_nodata
        if data_dir is not None and "sites" in kw:
            kw["data_dir"] = data_dir
        return kw

    def resolve_catalog(self, *, data_dir: str | os.PathLike | None = None,
                        workers: int | None = None) -> str | Path:
        """The ``catalog`` argument for search: a URL, a path, or a generated world's folder.

        ``world:demo`` generates the demo world (:data:`lames_cube.synthetic.DEMO_SPEC`) into the
        cache directory on first use and reuses it afterwards; this writes files.
        """
        kind = self.catalog_kind
        if kind == "api":
            return self.catalog
        if kind == "path":
            return Path(self.catalog)
        from lames_cube.synthetic import World, demo_spec, demo_world_dir, write_world

        world = World(demo_spec(data_dir), data_dir=data_dir)
        root = demo_world_dir(world)
        return write_world(root, world=world, workers=workers, progress=False)

    def search(self, *, data_dir: str | os.PathLike | None = None, **overrides: Any):
        """Run :func:`lames_cube.search.search` with this recipe's catalog and arguments.

        ``overrides`` replace or add search keyword arguments (e.g. ``max_items=10``).
        """
        from lames_cube.search import search

        kwargs = self.search_kwargs(data_dir=data_dir)
        if {"bbox", "sites", "intersects"} & set(overrides):
            for key in ("bbox", "sites", "intersects"):
                kwargs.pop(key, None)
        kwargs.update(overrides)
        return search(self.resolve_catalog(data_dir=data_dir), **kwargs)

    def _where(self) -> str:
        return str(self.source) if self.source is not None else f"recipe {self.name!r}"


def _default_chunks(patch_size: int) -> Chunks:
    return Chunks(y=4 * patch_size, x=4 * patch_size, time=1)


def _catalog_kind(catalog: str) -> str:
    if catalog.startswith("world:"):
        return "world"
    if catalog.split("://", 1)[0].lower() in ("http", "https"):
        return "api"
    return "path"


# --------------------------------------------------------------------------- loading
class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode):
    """A YAML date, or the text as written when it names no calendar day (``2021-02-30``): PyYAML
    would raise a bare ``ValueError``; the validator reports it with the key and a fix."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _calendar_problem(text: str) -> tuple[str, str] | None:
    """``(what is wrong, a real date to write instead)`` when ``text`` looks like a date
    (``YYYY-MM[-DD]``) but names no calendar month or day; None otherwise.

    Examples
    --------
    >>> _calendar_problem("2021-02-30")
    ('February 2021 has 28 days', '2021-02-28')
    >>> _calendar_problem("2021-13"), _calendar_problem("2021-02-28")
    (('month 13 does not exist (months are 1 to 12)', '2021-12'), None)
    """
    match = _DATE_RE.match(text.strip())
    if match is None:
        return None
    year, month = int(match[1]), int(match[2])
    day = None if match[3] is None else int(match[3])
    if not 1 <= month <= 12:
        near = min(max(month, 1), 12)
        example = f"{year}-{near:02d}" + ("" if day is None else f"-{min(max(day, 1), 28):02d}")
        return f"month {month} does not exist (months are 1 to 12)", example
    if day is None:
        return None
    last = calendar.monthrange(year, month)[1]
    if 1 <= day <= last:
        return None
    name = calendar.month_name[month]
    example = f"{year}-{month:02d}-{last if day > last else 1:02d}"
    if day == 29 and month == 2:
        return f"{year} is not a leap year, so February {year} has 28 days", example
    if day < 1:
        return f"day {day} does not exist (days start at 1)", example
    return f"{name} {year} has {last} days", example


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``cubes/`` (sorted).

    Examples
    --------
    >>> "demo" in list_recipes()
    True
    """
    if not CUBES_DIR.is_dir():
        return []
    return sorted(p.stem for p in CUBES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | os.PathLike) -> Path:
    """The file of a recipe: ``cubes/<name>.yaml`` for a bare name, else the path itself.

    Raises
    ------
    RecipeNotFoundError
        No such file; the message lists the available recipes.
    """
    text = os.fspath(name_or_path)
    bare = (not isinstance(name_or_path, Path) and "/" not in text and os.sep not in text
            and not text.endswith((".yaml", ".yml")))
    path = CUBES_DIR / f"{text}.yaml" if bare else Path(text).expanduser()
    if path.is_file():
        return path
    names = list_recipes()
    close = difflib.get_close_matches(Path(text).stem, names, n=1)
    hint = f"did you mean {close[0]!r}? Or " if close else ""
    raise RecipeNotFoundError(
        f"No recipe {text!r}: {path} does not exist. Available recipes in {CUBES_DIR}: "
        f"{', '.join(names) or '(none)'}. Fix: {hint}give one of these names or the path of a "
        "recipe .yaml file."
    )


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """Read and validate a cube recipe.

    Parameters
    ----------
    name_or_path
        A bare name (``"demo"`` → ``<repo>/cubes/demo.yaml``) or the path of a YAML file.

    Returns
    -------
    Recipe

    Raises
    ------
    RecipeNotFoundError
        The recipe does not exist (the message lists the available ones).
    RecipeError
        The YAML is malformed or a setting is invalid; the message names the file, the key path,
        the value, what is allowed and the fix.

    Examples
    --------
    >>> recipe = load_recipe("chile-sites")
    >>> recipe.area, recipe.bands
    (Area(kind='split', value='all'), ('B04', 'B03', 'B02', 'SCL'))
    """
    path = recipe_path(name_or_path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise RecipeError(
            f"{path}: not valid YAML: {exc}. Fix: correct the syntax at the line shown."
        ) from None
    return Recipe.from_dict(data, source=path.resolve())


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Write ``recipe`` as YAML at ``path`` so that ``load_recipe(path) == recipe``.

    Input paths (a local catalog, a GeoJSON area) are written relative to ``path``'s folder.
    The file is written under a temporary name and renamed.
    """
    path = Path(path)
    data = recipe.to_dict()
    folder = path.resolve().parent
    if recipe.catalog_kind == "path":
        data["catalog"] = _relative(recipe.catalog, folder)
    if recipe.area.kind == "geojson":
        data["area"] = {"geojson": _relative(recipe.area.value, folder)}
    text = f"# Cube recipe {recipe.name!r}, written by lames_cube.recipes.dump_recipe.\n"
    text += yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
    return path


def _relative(target: str, folder: Path) -> str:
    try:
        return os.path.relpath(target, folder)
    except ValueError:  # another drive
        return target


# --------------------------------------------------------------------------- areas
def _outlines_path() -> Path | None:
    """Natural Earth 1:110m countries: package data if shipped, else the pyogrio test fixture."""
    import importlib.util

    here = Path(__file__).resolve().parents[1] / "data"
    for pattern in ("naturalearth_lowres*.shp", "*countries*.geojson", "*countries*.parquet",
                    "*countries*.shp"):
        found = sorted(here.glob(pattern))
        if found:
            return found[0]
    spec = importlib.util.find_spec("pyogrio")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "tests" / "fixtures" / "naturalearth_lowres" / "naturalearth_lowres.shp"
        if path.is_file():
            return path
    return None


def country_names() -> list[str] | None:
    """Country names of the Natural Earth 1:110m outlines, or None when they are not found."""
    path = _outlines_path()
    if path is None:
        return None
    import pyogrio

    table = pyogrio.read_dataframe(path, columns=["name"], read_geometry=False)
    return [str(n) for n in table["name"]]


def country_geometry(name: str, *, where: str = "country") -> dict:
    """The Natural Earth 1:110m outline of a country (name or ISO A3 code) as GeoJSON, EPSG:4326.

    Raises
    ------
    RecipeError
        The outlines are not installed or the country is unknown.

    Examples
    --------
    >>> country_geometry("Chile")["type"]
    'MultiPolygon'
    """
    import shapely
    import shapely.geometry

    from lames_cube.grid import known_regions, region_polygon

    if name.strip().casefold() in known_regions():  # the outline shipped in lames_cube/data
        return shapely.geometry.mapping(region_polygon(name))
    path = _outlines_path()
    if path is None:
        raise RecipeError(
            f"{where}={name!r}: the Natural Earth 1:110m country outlines were not found (looked "
            "in lames_cube/data and in the pyogrio package's tests/fixtures/naturalearth_lowres). "
            "Fix: install the pinned pyogrio wheel, or use area.geojson with an outline file."
        )
    import geopandas as gpd

    table = gpd.read_file(path).to_crs("EPSG:4326")
    wanted = name.strip().casefold()
    rows = table[(table["name"].str.casefold() == wanted)
                 | (table.get("iso_a3", table["name"]).astype(str).str.casefold() == wanted)]
    if rows.empty:
        raise RecipeError(_unknown_country(where, name, list(table["name"])))
    return shapely.geometry.mapping(shapely.union_all(rows.geometry.values))


def _unknown_country(where: str, name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    close += [n for n in names if n.casefold().startswith(name.casefold()[:3])][:3]
    hint = f"did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?" if close else (
        "use a name as Natural Earth spells it (e.g. 'Chile', 'Ghana') or an ISO A3 code.")
    return (f"{where}={name!r} is not a country of the Natural Earth 1:110m outlines. Allowed: one "
            f"of {len(names)} names such as {', '.join(sorted(names)[:5])}, or an ISO A3 code. "
            f"Fix: {hint}")


def _geojson_geometry(path: str, *, where: str) -> dict:
    import shapely
    import shapely.geometry

    from lames_cube._vector import read_vector

    try:
        gdf = read_vector(path)
    except VectorFileError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    except OSError as exc:
        raise RecipeError(
            f"{where}={path!r} cannot be read ({exc}). Fix: point it at a GeoJSON file of "
            "polygons."
        ) from None
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs("EPSG:4326")
    geom = shapely.union_all(gdf.geometry.values)
    if geom is None or geom.is_empty:
        raise RecipeError(f"{where}={path!r} holds no geometry. Fix: give a file with polygons.")
    return shapely.geometry.mapping(geom)


# --------------------------------------------------------------------------- validation
def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class _Validator:
    """Checks a recipe mapping key by key; every failure names file, key, value and fix."""

    def __init__(self, source: Path | None, base_dir: Path) -> None:
        self.source = source
        self.where = str(source) if source is not None else "recipe"
        self.base_dir = base_dir

    # ---------------------------------------------------------------- primitives
    @staticmethod
    def problem(key: str, value: Any, problem: str, allowed: str, fix: str) -> str:
        """One mistake: key, value, what is wrong, what is allowed and the fix."""
        shown = "" if value is _NO_VALUE else f"={_show(value)}"
        end = "" if fix.endswith((".", "?", "!")) else "."
        return f"{key}{shown} {problem}. Allowed: {allowed}. Fix: {fix}{end}"

    def fail(self, key: str, value: Any, problem: str, allowed: str, fix: str) -> RecipeError:
        return RecipeError(f"{self.where}: {self.problem(key, value, problem, allowed, fix)}")

    def fail_all(self, section: str, problems: list[str]) -> RecipeError:
        """Every mistake of one section at once (one mistake reads as :meth:`fail`)."""
        if len(problems) == 1:
            return RecipeError(f"{self.where}: {problems[0]}")
        return RecipeError(f"{self.where}: {section} has {len(problems)} problem(s):\n  - "
                           + "\n  - ".join(problems))

    def mapping(self, value: Any, key: str, known: Iterable[str], required: Iterable[str] = (),
                example: str = "") -> dict:
        label = key or "the recipe"
        if not isinstance(value, Mapping):
            raise self.fail(key or "(top level)", value, f"is a {type(value).__name__}, not a mapping",
                            f"a mapping with keys {', '.join(known)}",
                            f"write {label} as 'key: value' lines" + (f", e.g. {example}" if example else ""))
        known = list(known)
        for k in value:
            if not isinstance(k, str) or k not in known:
                path = f"{key}.{k}" if key else str(k)
                close = difflib.get_close_matches(str(k), known, n=1)
                fix = (f"did you mean '{(key + '.') if key else ''}{close[0]}'?" if close
                       else "remove it or rename it to a known key")
                raise self.fail(path, value[k], "is an unknown key",
                                f"keys in {label}: {', '.join(known)}", fix)
        for k in required:
            if k not in value or value[k] is None:
                path = f"{key}.{k}" if key else k
                raise self.fail(path, _NO_VALUE, "is missing (required)",
                                f"keys in {label}: {', '.join(known)}",
                                f"add '{path}'" + (f", e.g. {example}" if example else ""))
        return dict(value)

    def string(self, value: Any, key: str, example: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, value, f"is a {type(value).__name__}, not a non-empty string",
                            "a string", f"write e.g. {key.rsplit('.', 1)[-1]}: {example}")
        return value.strip()

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(choices)}"
            raise self.fail(key, value, "is not a known choice", " | ".join(choices), fix)
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value, f"is a {type(value).__name__}, not a boolean",
                            "true or false", f"write {key.rsplit('.', 1)[-1]}: true or false")
        return value

    def number(self, value: Any, key: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, unit: str = "", example: Any = 10) -> float:
        rng = _range_text(low, high, low_open, unit)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(key, value, f"is a {type(value).__name__}, not a finite number",
                            rng, f"write e.g. {key.rsplit('.', 1)[-1]}: {example}")
        if ((low is not None and (value < low or (low_open and value == low)))
                or (high is not None and value > high)):
            raise self.fail(key, value, "is out of range", rng,
                            f"set {key} within that range, e.g. {example}")
        return value

    def integer(self, value: Any, key: str, *, low: int = 1, example: int = 256) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, value, f"is a {type(value).__name__}, not an integer",
                            f"an integer >= {low}", f"write e.g. {key.rsplit('.', 1)[-1]}: {example}")
        if value < low:
            raise self.fail(key, value, "is out of range", f"an integer >= {low}",
                            f"set {key} to e.g. {example}")
        return value

    def sequence(self, value: Any, key: str, example: str, *, allow_scalar: bool = False) -> list:
        if allow_scalar and isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail(key, value, "is not a non-empty list", "a YAML list",
                            f"write e.g. {key.rsplit('.', 1)[-1]}: {example}")
        return value

    def multiple(self, value: int, key: str, patch: int) -> None:
        if value % patch:
            lower, upper = value // patch * patch, (value // patch + 1) * patch
            near = f"{lower} or {upper}" if lower else str(upper)
            raise self.fail(key, value, f"is not a multiple of grid.patch_size={patch}",
                            f"a multiple of {patch} (patches must tile it exactly)",
                            f"use {near}, or change grid.patch_size")

    # ---------------------------------------------------------------- sections
    def recipe(self, data: Any) -> Recipe:
        known = ("name", "description", "catalog", "collections", "area", "period", "bands",
                 "grid", "clouds", "composite", "chunks", "output", "engine")
        data = self.mapping(data, "", known, ("name", "catalog", "area", "period", "bands", "grid"),
                            example="see cubes/demo.yaml")
        name = self.string(data["name"], "name", "my-cube")
        if not _NAME_RE.match(name):
            raise self.fail("name", name, "has characters that do not fit a file name",
                            "letters, digits, '.', '_' and '-', starting with a letter or digit",
                            f"use e.g. {re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-._') or 'my-cube'!r}")
        description = data.get("description")
        description = "" if description is None else self.string(description, "description", "'...'")
        grid = self.grid(data["grid"])
        collections = data.get("collections")
        if collections is None:
            collections = DEFAULT_COLLECTIONS
        else:
            items = self.sequence(collections, "collections", "[sentinel-2-l2a]", allow_scalar=True)
            collections = tuple(self.string(c, f"collections[{i}]", "sentinel-2-l2a")
                                for i, c in enumerate(items))
        engine = data.get("engine")
        return Recipe(
            name=name,
            description=description,
            catalog=self.catalog(data["catalog"]),
            collections=collections,
            area=self.area(data["area"]),
            period=self.period(data["period"]),
            bands=self.bands(data["bands"]),
            grid=grid,
            clouds=self.clouds(data.get("clouds")),
            composite=self.composite(data.get("composite")),
            chunks=self.chunks(data.get("chunks"), grid.patch_size),
            output=(None if data.get("output") is None
                    else self.string(data["output"], "output", "cubes-out/my-cube.zarr")),
            engine="odc" if engine is None else self.choice(engine, "engine", ENGINES),
            source=self.source,
        )

    def catalog(self, value: Any) -> str:
        text = self.string(value, "catalog", "https://earth-search.aws.element84.com/v1")
        kind = _catalog_kind(text)
        if kind == "world":
            world = text.split(":", 1)[1]
            if world not in WORLDS:
                raise self.fail("catalog", text, "names an unknown synthetic world",
                                ", ".join(f"world:{w}" for w in WORLDS),
                                "use world:demo, a STAC API URL or the path of a world directory")
            return text
        if kind == "api":
            return text.rstrip("/")
        path = Path(text).expanduser()
        return str(path if path.is_absolute() else (self.base_dir / path).resolve())

    def area(self, value: Any) -> Area:
        example = "{split: all}, {sites: ['817']}, {bbox: [w, s, e, n]}, {country: Chile}"
        data = self.mapping(value, "area", AREA_KINDS, example=example)
        given = [k for k in AREA_KINDS if k in data]
        if len(given) != 1:
            problem = ("gives no area" if not given
                       else f"gives {len(given)} kinds of area at once ({', '.join(given)})")
            raise self.fail("area", value, problem, f"exactly one of {', '.join(AREA_KINDS)}",
                            "keep one of them" if given else f"add one, e.g. {example}")
        kind = given[0]
        key = f"area.{kind}"
        raw = data[kind]
        if kind == "sites":
            ids = self.sequence(raw, key, "['817', '2203']", allow_scalar=True)
            out = []
            for i, s in enumerate(ids):
                if isinstance(s, bool) or not isinstance(s, (str, int)) or not str(s).strip():
                    raise self.fail(f"{key}[{i}]", s, "is not a site id", "LAMES site ids as "
                                    "strings or integers", "write e.g. sites: ['817', '2203']")
                out.append(str(s).strip())
            if len(set(out)) != len(out):
                dup = sorted({s for s in out if out.count(s) > 1})
                raise self.fail(key, raw, f"repeats site ids {dup}", "each site once",
                                "remove the repeats")
            return Area("sites", tuple(out))
        if kind == "split":
            return Area("split", self.choice(raw, key, SPLITS))
        if kind == "bbox":
            from lames_cube.search import check_bbox

            try:
                return Area("bbox", check_bbox(raw))
            except InvalidBBoxError as exc:
                raise self.fail(key, raw, "is not a valid box", "[west, south, east, north] in "
                                "degrees, west < east, south < north", str(exc).rstrip(".")) from None
        if kind == "country":
            name = self.string(raw, key, "Chile")
            names = country_names()
            if names is not None and name.casefold() not in {n.casefold() for n in names}:
                codes = _iso_codes()
                if name.casefold() not in codes:
                    raise RecipeError(_unknown_country(f"{self.where}: {key}", name, names))
            return Area("country", name)
        text = self.string(raw, key, "outline.geojson")
        path = Path(text).expanduser()
        path = path if path.is_absolute() else self.base_dir / path
        if not path.is_file():
            raise self.fail(key, text, f"does not exist (looked for {path.resolve()})",
                            "a GeoJSON file; relative paths are relative to the recipe's folder",
                            "fix the path or create the file")
        from lames_cube._vector import DEFAULT_FIX, geojson_problem

        problem = geojson_problem(path)
        if problem:
            raise self.fail(key, text, f"is not a readable GeoJSON file ({path.resolve()}): "
                            f"{problem}", "a GeoJSON FeatureCollection of polygons", DEFAULT_FIX)
        return Area("geojson", str(path.resolve()))

    def period(self, value: Any) -> Period:
        example = "{start: 2021-01-01, end: 2022-12-31}"
        data = self.mapping(value, "period", ("start", "end", "datetime"), example=example)
        from lames_cube.search import check_datetime

        if "datetime" in data:
            if "start" in data or "end" in data:
                raise self.fail("period", value, "gives both datetime and start/end",
                                "either start and end, or datetime", "keep one form")
            text = data["datetime"]
            if isinstance(text, (dt.date, int)) and not isinstance(text, bool):
                text = str(text)
            text = self.string(text, "period.datetime", "'2021-01-01/2022-12-31'")
            impossible = [(part, *found) for part in text.split("/")
                          if (found := _calendar_problem(part))]
            if impossible:
                what = "; ".join(f"{part}: {why}" for part, why, _ in impossible)
                fixed = "/".join(next((ok for part, _, ok in impossible if part == p), p)
                                 for p in text.split("/"))
                raise self.fail("period.datetime", text, f"is not a calendar period: {what}",
                                "real dates 'YYYY-MM-DD', 'YYYY-MM' or 'YYYY', as 'start/end'",
                                f"write e.g. datetime: '{fixed}'")
            try:
                check_datetime(text)
            except InvalidQueryError as exc:
                raise self.fail("period.datetime", text, "is not a valid period",
                                "'YYYY', 'YYYY-MM', 'YYYY-MM-DD' or 'start/end' (RFC 3339)",
                                str(exc).rstrip(".")) from None
            return Period(datetime=text)
        for k in ("start", "end"):
            if data.get(k) is None:
                raise self.fail(f"period.{k}", _NO_VALUE, "is missing (required)",
                                "start and end dates, or datetime", f"add it, e.g. period: {example}")
        # every mistake of the period is reported at once (both ends, then their order)
        problems: list[str] = []
        ends = {}
        for k in ("start", "end"):
            raw = data[k]
            if isinstance(raw, dt.datetime):
                text = raw.isoformat()
            elif isinstance(raw, (dt.date, int)) and not isinstance(raw, bool):
                text = str(raw) if not isinstance(raw, dt.date) else raw.isoformat()
            elif isinstance(raw, str) and raw.strip():
                text = raw.strip()
            else:
                problems.append(self.problem(f"period.{k}", raw, "is not a date", "a date "
                                             "YYYY-MM-DD, YYYY-MM or a year",
                                             f"write e.g. {k}: 2021-01-01"))
                continue
            impossible = _calendar_problem(text)
            if impossible:
                why, example = impossible
                problems.append(self.problem(f"period.{k}", text, f"is not a calendar date: "
                                             f"{why}", "a real date YYYY-MM-DD, YYYY-MM or a "
                                             "year", f"write e.g. {k}: {example}"))
                continue
            try:
                bound = check_datetime(text).split("/")[0 if k == "start" else 1]
            except InvalidQueryError:
                problems.append(self.problem(f"period.{k}", raw, "is not a date", "a date "
                                             "YYYY-MM-DD, YYYY-MM or a year",
                                             f"write e.g. {k}: 2021-01-01"))
                continue
            ends[k] = (text, bound)
        if len(ends) == 2 and ends["start"][1] > ends["end"][1]:
            problems.append(self.problem("period.start", ends["start"][0], f"is after period."
                                         f"end={ends['end'][0]!r}: the period starts after it "
                                         "ends", "start <= end",
                                         "swap period.start and period.end"))
        if problems:
            raise self.fail_all("period", problems)
        return Period(start=ends["start"][0], end=ends["end"][0])

    def bands(self, value: Any) -> tuple[str, ...]:
        from lames_cube.bands import ASSET_KEY_TO_BAND, BAND_BY_NAME

        items = self.sequence(value, "bands", "[B04, B03, B02, SCL]")
        known = list(BAND_BY_NAME)
        out = []
        for i, band in enumerate(items):
            key = f"bands[{i}]"
            if not isinstance(band, str):
                raise self.fail(key, band, "is not a band name", ", ".join(known),
                                "quote band names as strings, e.g. B04")
            if band not in BAND_BY_NAME:
                alias = ASSET_KEY_TO_BAND.get(band) or ASSET_KEY_TO_BAND.get(band.lower())
                close = difflib.get_close_matches(band.upper(), known, n=1)
                if alias in BAND_BY_NAME:
                    fix = f"write the canonical name {alias!r} (provider key {band!r})"
                elif close:
                    fix = f"did you mean {close[0]!r}?"
                else:
                    fix = "use canonical Sentinel-2 band names"
                raise self.fail(key, band, "is an unknown band", ", ".join(known), fix)
            if band in out:
                raise self.fail(key, band, "is listed twice", "each band once",
                                "remove the repeat")
            out.append(band)
        return tuple(out)

    def grid(self, value: Any) -> Grid:
        known = ("crs", "resolution", "resampling", "tile_size", "patch_size")
        data = self.mapping(value, "grid", known, ("crs", "resolution"),
                            example="{crs: utm, resolution: 10}")
        crs = self.string(data["crs"], "grid.crs", "EPSG:32719")
        if crs.lower() == "utm":
            crs = "utm"
        else:
            self._check_crs(crs)
        resolution = self.number(data["resolution"], "grid.resolution", low=0, low_open=True,
                                 unit="m", example=10)
        resampling = data.get("resampling")
        if resampling is None:
            resampling = "bilinear"
        elif resampling not in RESAMPLING:
            raise self.fail("grid.resampling", resampling, "is not a resampling method",
                            f"one of {list(RESAMPLING)}",
                            "write e.g. resampling: bilinear (SCL is always resampled nearest)")
        patch = data.get("patch_size")
        patch = 256 if patch is None else self.integer(patch, "grid.patch_size", example=256)
        tile = data.get("tile_size")
        tile = 2304 if tile is None else self.integer(tile, "grid.tile_size", example=2304)
        self.multiple(tile, "grid.tile_size", patch)
        return Grid(crs=crs, resolution=resolution, resampling=resampling, tile_size=tile,
                    patch_size=patch)

    def _check_crs(self, crs: str) -> None:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            parsed = CRS.from_user_input(crs)
        except CRSError:
            raise self.fail("grid.crs", crs, "is not a CRS that pyproj knows",
                            "'utm' or a projected CRS such as 'EPSG:32719'",
                            "write e.g. crs: EPSG:32719") from None
        units = {a.unit_name for a in parsed.axis_info}
        if not parsed.is_projected or not units <= {"metre", "meter"}:
            raise self.fail("grid.crs", crs, "is not a projected CRS in metres",
                            "'utm' or a projected CRS in metres such as 'EPSG:32719'",
                            "use 'utm' (the UTM zone of each area) or an EPSG code in metres")

    def clouds(self, value: Any) -> Clouds:
        if value is None:
            return Clouds()
        known = ("max_cloud", "max_nodata", "mask", "snow", "saturated", "buffer_m")
        data = self.mapping(value, "clouds", known, example="{max_cloud: 15}")
        limits = {}
        for k in ("max_cloud", "max_nodata"):
            v = data.get(k)
            limits[k] = None if v is None else self.number(v, f"clouds.{k}", low=0, high=100,
                                                           unit="%", example=20)
        mask = data.get("mask")
        if mask is None:
            mask = DEFAULT_MASK
        else:
            from lames_cube.bands import SCL_CLASSES

            if not isinstance(mask, list):
                raise self.fail("clouds.mask", mask, "is not a list", "a list of SCL classes "
                                "(may be empty)", "write e.g. mask: [3, 8, 9, 10]")
            allowed = ", ".join(f"{k} {v}" for k, v in SCL_CLASSES.items())
            for i, c in enumerate(mask):
                if isinstance(c, bool) or not isinstance(c, int) or c not in SCL_CLASSES:
                    raise self.fail(f"clouds.mask[{i}]", c, "is not an SCL class", allowed,
                                    "use SCL class numbers, e.g. [3, 8, 9, 10]")
            mask = tuple(sorted(set(mask)))
        snow = data.get("snow")
        saturated = data.get("saturated")
        buffer_m = data.get("buffer_m")
        buffer_m = DEFAULT_BUFFER_M if buffer_m is None else self.number(
            buffer_m, "clouds.buffer_m", low=0, unit="m", example=int(DEFAULT_BUFFER_M))
        return Clouds(
            max_cloud=limits["max_cloud"], max_nodata=limits["max_nodata"], mask=mask,
            snow=False if snow is None else self.boolean(snow, "clouds.snow"),
            saturated=True if saturated is None else self.boolean(saturated, "clouds.saturated"),
            buffer_m=buffer_m,
        )

    def composite(self, value: Any) -> Composite:
        if value is None:
            return Composite()
        data = self.mapping(value, "composite", ("method", "period"),
                            example="{method: median, period: year}")
        method = data.get("method")
        method = "none" if method is None else self.choice(method, "composite.method",
                                                           COMPOSITE_METHODS)
        period = data.get("period")
        period = "all" if period is None else self.choice(period, "composite.period",
                                                          COMPOSITE_PERIODS)
        if method == "none" and period != "all":
            raise self.fail("composite.period", period, "needs a composite method (method is "
                            "none: every scene is kept)", "period: all with method: none",
                            "set composite.method to median or least_cloudy, or drop period")
        return Composite(method=method, period=period)

    def chunks(self, value: Any, patch: int) -> Chunks:
        if value is None:
            return _default_chunks(patch)
        shorthand = isinstance(value, int) and not isinstance(value, bool)
        if shorthand:
            value = {"y": value, "x": value}
        data = self.mapping(value, "chunks", ("y", "x", "time"), example="512 or {y: 512, x: 512}")
        default = 4 * patch
        key_y, key_x = ("chunks", "chunks") if shorthand else ("chunks.y", "chunks.x")
        y = default if data.get("y") is None else self.integer(data["y"], key_y, example=512)
        x = default if data.get("x") is None else self.integer(data["x"], key_x, example=512)
        time = 1 if data.get("time") is None else self.integer(data["time"], "chunks.time", example=1)
        self.multiple(y, key_y, patch)
        self.multiple(x, key_x, patch)
        return Chunks(y=y, x=x, time=time)


def _range_text(low, high, low_open, unit) -> str:
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"a number from {low} to {high}{unit}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {low}{unit}"
    return "a number"


def _iso_codes() -> set[str]:
    path = _outlines_path()
    if path is None:
        return set()
    import pyogrio

    table = pyogrio.read_dataframe(path, columns=["iso_a3"], read_geometry=False)
    return {str(c).casefold() for c in table["iso_a3"]}
