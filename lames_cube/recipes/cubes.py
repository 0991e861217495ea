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
import dataclasses
import datetime as dt
import difflib
import importlib.util
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import geopandas as gpd
import pyogrio
import shapely
import shapely.geometry
import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pyproj import CRS
from pyproj.exceptions import CRSError

from lames_cube._atomic import atomic_write_text
from lames_cube._fs import as_store_path
from lames_cube._vector import DEFAULT_FIX, geojson_problem, read_vector
from lames_cube.annotations import load_sites
from lames_cube.bands import ASSET_KEY_TO_BAND, BAND_BY_NAME, SCL_CLASSES
from lames_cube.errors import (  # noqa: F401 (re-exported)
    InvalidBBoxError,
    InvalidQueryError,
    LamesCubeError,
    RecipeError,
    RecipeNotFoundError,
    VectorFileError,
)
from lames_cube.grid import known_regions, region_polygon, utm_epsg
from lames_cube.recipes.schema import (
    NO_VALUE,
    Doc,
    Ge,
    Gt,
    Int,
    Le,
    MinLen,
    Mistake,
    Number,
    Section,
    SiteId,
    Text,
    Written,
    mistake_line,
    read_yaml,
    report,
    settings,
    validate,
)
from lames_cube.search import check_bbox, check_datetime, search
from lames_cube.synthetic import World, demo_spec, demo_world_dir, write_world

if TYPE_CHECKING:
    from lames_cube._fs import UrlPath

#: Where named recipes live: the package ``lames_cube.cubes``, i.e. the repository's top-level
#: ``cubes/`` folder (editable install) or its copy shipped in the wheel (see pyproject.toml).
CUBES_DIR = Path(files("lames_cube.cubes"))

AREA_KINDS = ("sites", "split", "bbox", "country", "geojson")
Split = Literal["all", "train", "test"]
CompositeMethod = Literal["none", "median", "least_cloudy"]
CompositePeriod = Literal["all", "year"]
Engine = Literal["odc", "stackstac"]
#: Resampling of reflectance bands when the cube's grid differs from the assets'.
Resampling = Literal["nearest", "bilinear", "cubic", "average"]
SPLITS, COMPOSITE_METHODS, COMPOSITE_PERIODS, ENGINES, RESAMPLING = (
    typing.get_args(t) for t in (Split, CompositeMethod, CompositePeriod, Engine, Resampling))
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


# --------------------------------------------------------------------------- the schema
# Every section is a frozen pydantic dataclass (lames_cube.recipes.schema): pydantic checks the
# types, ranges, choices and keys; the validators below check what it cannot know.
def _listed(value: Any) -> Any:
    """One item may be written without brackets (``sites: 817``)."""
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def _base_dir(info: ValidationInfo) -> Path:
    """The folder of relative input paths: the recipe file's (or the current directory)."""
    return Path((info.context or {}).get("base_dir") or Path.cwd())


def _multiple(value: int, patch: int, key: str) -> Mistake:
    lower, upper = value // patch * patch, (value // patch + 1) * patch
    return Mistake(f"is not a multiple of grid.patch_size={patch}",
                   f"a multiple of {patch} (patches must tile it exactly)",
                   f"use {f'{lower} or {upper}' if lower else upper}, or change grid.patch_size",
                   key=key, value=value)


@settings
class Area(Section):
    """Where to search: one kind of area and its value.

    ``kind`` is one of :data:`AREA_KINDS`; ``value`` is a tuple of site ids (``sites``), a split
    name (``split``), a ``(w, s, e, n)`` tuple (``bbox``), a country name (``country``) or the
    absolute path of a GeoJSON file (``geojson``).
    """

    kind: str
    value: Any


_AREA_EXAMPLE = "{split: all}, {sites: ['817']}, {bbox: [w, s, e, n]}, {country: Chile}"


@settings
class _AreaKeys(Section):
    """An area as a recipe writes it (``area: {bbox: [w, s, e, n]}``): one of these keys."""

    sites: Annotated[tuple[SiteId, ...], MinLen(1), BeforeValidator(_listed),
                     Doc("['817', '2203']")] | None = None
    split: Split | None = None
    bbox: Any = None
    country: Annotated[Text, Doc("Chile")] | None = None
    geojson: Annotated[Text, Doc("outline.geojson")] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _AreaKeys:
        given = {k: getattr(self, k) for k in AREA_KINDS if getattr(self, k) is not None}
        if len(given) != 1:
            raise Mistake(f"gives {len(given)} kinds of area at once ({', '.join(given)})"
                          if given else "gives no area", f"exactly one of {', '.join(AREA_KINDS)}",
                          "keep one of them" if given else f"add one, e.g. {_AREA_EXAMPLE}",
                          value=given)
        return self

    def area(self) -> Area:
        """The :class:`Area` of the one key given."""
        return next(Area(k, getattr(self, k)) for k in AREA_KINDS if getattr(self, k) is not None)

    @staticmethod
    def written(area: Any) -> Any:
        """An :class:`Area` as a recipe writes it (``{kind: value}``)."""
        return {area.kind: area.value} if isinstance(area, Area) else area

    @field_validator("sites")
    @classmethod
    def _once(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(ids)) != len(ids):
            raise Mistake(f"repeats site ids {sorted({s for s in ids if ids.count(s) > 1})}",
                          "each site once", "remove the repeats")
        return ids

    @field_validator("bbox")
    @classmethod
    def _box(cls, value: Any) -> tuple[float, float, float, float]:
        try:
            return check_bbox(value)
        except InvalidBBoxError as exc:
            raise Mistake("is not a valid box", "[west, south, east, north] in degrees, west < "
                          "east, south < north", str(exc).rstrip(".")) from None

    @field_validator("country")
    @classmethod
    def _country(cls, name: str) -> str:
        names = country_names()
        if (names is not None and name.casefold() not in {n.casefold() for n in names}
                and name.casefold() not in _iso_codes()):
            raise _unknown_country(name, names)
        return name

    @field_validator("geojson")
    @classmethod
    def _geojson(cls, text: str, info: ValidationInfo) -> str:
        path = _base_dir(info) / Path(text).expanduser()
        if not path.is_file():
            raise Mistake(f"does not exist (looked for {path.resolve()})", "a GeoJSON file; "
                          "relative paths are relative to the recipe's folder",
                          "fix the path or create the file")
        problem = geojson_problem(path)
        if problem:
            raise Mistake(f"is not a readable GeoJSON file ({path.resolve()}): {problem}",
                          "a GeoJSON FeatureCollection of polygons", DEFAULT_FIX)
        return str(path.resolve())


_DATES = "a date YYYY-MM-DD, YYYY-MM or a year"


@settings
class Period(Section):
    """The period: ``start`` and ``end``, or one ``datetime`` interval (strings as written)."""

    start: Annotated[str, Doc("2021-01-01", allowed=_DATES)] | None = None
    end: Annotated[str, Doc("2022-12-31", allowed=_DATES)] | None = None
    datetime: Annotated[Text, Doc("'2021-01-01/2022-12-31'")] | None = None

    @property
    def interval(self) -> str:
        """The RFC 3339 interval that :func:`lames_cube.search.search` receives."""

        if self.datetime is not None:
            return check_datetime(self.datetime)
        return check_datetime((self.start, self.end))

    @field_validator("start", "end", "datetime", mode="before")
    @classmethod
    def _as_text(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dt.date | int) and not isinstance(value, bool):
            return value.isoformat() if isinstance(value, dt.date) else str(value)
        if info.field_name == "datetime" or (isinstance(value, str) and value.strip()):
            return value
        raise Mistake("is not a date", fix=f"write e.g. {info.field_name}: 2021-01-01")

    @field_validator("start", "end")
    @classmethod
    def _date(cls, text: str, info: ValidationInfo) -> str:
        text, key = text.strip(), info.field_name
        impossible = _calendar_problem(text)
        if impossible:
            raise Mistake(f"is not a calendar date: {impossible[0]}",
                          "a real date YYYY-MM-DD, YYYY-MM or a year",
                          f"write e.g. {key}: {impossible[1]}", value=text)
        try:
            check_datetime(text)
        except InvalidQueryError:
            raise Mistake("is not a date", fix=f"write e.g. {key}: 2021-01-01") from None
        start = info.data.get("start")
        if key == "end" and start is not None and _bound(start, 0) > _bound(text, 1):
            raise Mistake(f"is after period.end={text!r}: the period starts after it ends",
                          "start <= end", "swap period.start and period.end", key="start",
                          value=start)
        return text

    @field_validator("datetime")
    @classmethod
    def _interval(cls, text: str) -> str:
        parts = text.split("/")
        impossible = {part: found for part in parts if (found := _calendar_problem(part))}
        if impossible:
            fixed = "/".join(impossible[p][1] if p in impossible else p for p in parts)
            raise Mistake("is not a calendar period: " + "; ".join(
                f"{part}: {why}" for part, (why, _) in impossible.items()),
                "real dates 'YYYY-MM-DD', 'YYYY-MM' or 'YYYY', as 'start/end'",
                f"write e.g. datetime: '{fixed}'")
        try:
            check_datetime(text)
        except InvalidQueryError as exc:
            raise Mistake("is not a valid period", "'YYYY', 'YYYY-MM', 'YYYY-MM-DD' or "
                          "'start/end' (RFC 3339)", str(exc).rstrip(".")) from None
        return text

    @model_validator(mode="after")
    def _one_form(self) -> Period:
        example = "add it, e.g. period: {start: 2021-01-01, end: 2022-12-31}"
        if self.datetime is not None and (self.start, self.end) != (None, None):
            raise Mistake("gives both datetime and start/end", "either start and end, or "
                          "datetime", "keep one form", value=dataclasses.asdict(self))
        for key in ("start", "end") if self.datetime is None else ():
            if getattr(self, key) is None:
                raise Mistake("is missing (required)", "start and end dates, or datetime",
                              example, key=f"period.{key}", value=NO_VALUE)
        return self


def _bound(text: str, end: int) -> str:
    return check_datetime(text).split("/")[end]


@settings
class Grid(Section):
    """The output grid: CRS (or ``"utm"``), pixel size, reflectance resampling, tile and patch
    sizes."""

    crs: Annotated[Text, Doc("EPSG:32719")]
    resolution: Annotated[Number, Gt(0), Doc(10, unit="m")]
    resampling: Annotated[Resampling, Doc(
        noun="resampling method",
        fix="write e.g. resampling: bilinear (SCL is always resampled nearest)")] = "bilinear"
    tile_size: Annotated[Int, Ge(1), Doc(2304)] = 2304
    patch_size: Annotated[Int, Ge(1), Doc(256)] = 256

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

        return f"EPSG:{utm_epsg(lon, lat)}"

    @field_validator("crs")
    @classmethod
    def _crs(cls, crs: str) -> str:
        if crs.lower() == "utm":
            return "utm"
        try:
            parsed = CRS.from_user_input(crs)
        except CRSError:
            raise Mistake("is not a CRS that pyproj knows", "'utm' or a projected CRS such as "
                          "'EPSG:32719'", "write e.g. crs: EPSG:32719") from None
        if not parsed.is_projected or not {a.unit_name for a in parsed.axis_info} <= {"metre",
                                                                                       "meter"}:
            raise Mistake("is not a projected CRS in metres", "'utm' or a projected CRS in "
                          "metres such as 'EPSG:32719'",
                          "use 'utm' (the UTM zone of each area) or an EPSG code in metres")
        return crs

    @field_validator("patch_size")
    @classmethod
    def _tiles_whole(cls, patch: int, info: ValidationInfo) -> int:
        tile = info.data.get("tile_size")
        if tile is not None and tile % patch:
            raise _multiple(tile, patch, "tile_size")
        return patch


def _scl_class(value: int) -> int:
    if value not in SCL_CLASSES:
        raise Mistake("is not an SCL class")
    return value


@settings
class Clouds(Section):
    """Scene-level limits and the per-pixel SCL mask."""

    max_cloud: Annotated[Number, Ge(0), Le(100), Doc(20, unit="%")] | None = None
    max_nodata: Annotated[Number, Ge(0), Le(100), Doc(20, unit="%")] | None = None
    mask: Annotated[tuple[Annotated[Int, AfterValidator(_scl_class), Doc(
        allowed=", ".join(f"{k} {v}" for k, v in SCL_CLASSES.items()),
        fix="use SCL class numbers, e.g. [3, 8, 9, 10]")], ...],
        AfterValidator(lambda mask: tuple(sorted(set(mask)))),
        Doc("[3, 8, 9, 10]", allowed="a list of SCL classes (may be empty)")] = DEFAULT_MASK
    snow: Annotated[bool, Strict()] = False
    saturated: Annotated[bool, Strict()] = True
    buffer_m: Annotated[Number, Ge(0), Doc(int(DEFAULT_BUFFER_M), unit="m")] = DEFAULT_BUFFER_M

    @property
    def mask_classes(self) -> tuple[int, ...]:
        """Every SCL class to mask: ``mask`` plus snow (11) and saturated (1) when asked."""
        extra = [SNOW_CLASS] * self.snow + [SATURATED_CLASS] * self.saturated
        return tuple(sorted({*self.mask, *extra}))


@settings
class Composite(Section):
    """How scenes are combined: ``method`` over each ``period``."""

    method: CompositeMethod = "none"
    period: CompositePeriod = "all"

    @field_validator("period")
    @classmethod
    def _needs_method(cls, period: str, info: ValidationInfo) -> str:
        if info.data.get("method") == "none" and period != "all":
            raise Mistake("needs a composite method (method is none: every scene is kept)",
                          "period: all with method: none",
                          "set composite.method to median or least_cloudy, or drop period")
        return period


@settings
class Chunks(Section):
    """Dask/Zarr chunk sizes: ``y`` and ``x`` in pixels, ``time`` in scenes (or composites)."""

    y: Annotated[Int, Ge(1), Doc(512)]
    x: Annotated[Int, Ge(1), Doc(512)]
    time: Annotated[Int, Ge(1), Doc(1)] = 1

    def as_dict(self) -> dict[str, int]:
        """``{"time": ..., "y": ..., "x": ...}`` for xarray/dask."""
        return {"time": self.time, "y": self.y, "x": self.x}


def _band(band: str) -> str:
    if band not in BAND_BY_NAME:
        alias = ASSET_KEY_TO_BAND.get(band) or ASSET_KEY_TO_BAND.get(band.lower())
        close = difflib.get_close_matches(band.upper(), list(BAND_BY_NAME), n=1)
        raise Mistake("is an unknown band", fix=(
            f"write the canonical name {alias!r} (provider key {band!r})" if alias in BAND_BY_NAME
            else f"did you mean {close[0]!r}?" if close else "use canonical Sentinel-2 band names"))
    return band


@settings
class Recipe(Section):
    """A validated cube recipe (see the module docstring for the schema).

    Build one with :func:`load_recipe` (a file) or :meth:`from_dict` (a mapping); both validate.
    ``source`` is the file it came from and takes no part in comparisons.
    """

    _INTERNAL: ClassVar[tuple[str, ...]] = ("source",)

    name: Annotated[Text, Doc("my-cube")]
    catalog: Annotated[Text, Doc("https://earth-search.aws.element84.com/v1")]
    area: Annotated[Area, Written(_AreaKeys, _AreaKeys.area, _AreaKeys.written),
                    Doc(_AREA_EXAMPLE)]
    period: Annotated[Period, Doc("{start: 2021-01-01, end: 2022-12-31}")]
    bands: Annotated[tuple[Annotated[Text, AfterValidator(_band), Doc(
        allowed=", ".join(BAND_BY_NAME), fix="quote band names as strings, e.g. B04")], ...],
        MinLen(1), Doc("[B04, B03, B02, SCL]")]
    grid: Annotated[Grid, Doc("{crs: utm, resolution: 10}")]
    description: Annotated[str, Strict()] = ""
    collections: Annotated[tuple[Annotated[Text, Doc("sentinel-2-l2a")], ...], MinLen(1),
                           BeforeValidator(_listed), Doc("[sentinel-2-l2a]")] = DEFAULT_COLLECTIONS
    clouds: Annotated[Clouds, Doc("{max_cloud: 15}")] = field(default_factory=Clouds)
    composite: Annotated[Composite, Doc("{method: median, period: year}")] = field(
        default_factory=Composite)
    chunks: Annotated[Chunks | None, Doc("512 or {y: 512, x: 512}")] = Field(
        default=None, validate_default=True)
    output: Annotated[Text, Doc("cubes-out/my-cube.zarr")] | None = None
    engine: Engine = "odc"
    source: Path | None = field(default=None, compare=False, repr=False)

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise Mistake("has characters that do not fit a file name", "letters, digits, '.', "
                          "'_' and '-', starting with a letter or digit", "use e.g. "
                          f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-._') or 'my-cube'!r}")
        return name

    @field_validator("catalog")
    @classmethod
    def _catalog(cls, text: str, info: ValidationInfo) -> str:
        kind = _catalog_kind(text)
        if kind == "world" and text.split(":", 1)[1] not in WORLDS:
            raise Mistake("names an unknown synthetic world",
                          ", ".join(f"world:{w}" for w in WORLDS),
                          "use world:demo, a STAC API URL or the path of a world directory")
        if kind == "path":
            path = Path(text).expanduser()
            return str(path if path.is_absolute() else (_base_dir(info) / path).resolve())
        return text.rstrip("/") if kind == "api" else text

    @field_validator("bands")
    @classmethod
    def _once(cls, bands: tuple[str, ...]) -> tuple[str, ...]:
        for i, band in enumerate(bands):
            if band in bands[:i]:
                raise Mistake("is listed twice", "each band once", "remove the repeat",
                              key=f"bands[{i}]", value=band)
        return bands

    @field_validator("chunks", mode="wrap")
    @classmethod
    def _chunks(cls, value: Any, handler: Any, info: ValidationInfo) -> Chunks:
        """Default ``4 * patch_size``; an integer means ``y = x``; ``y`` and ``x`` are
        multiples of ``grid.patch_size``."""
        patch = info.data["grid"].patch_size if "grid" in info.data else None
        shorthand = type(value) is int and value >= 1
        value = {"y": value, "x": value} if shorthand else {} if value is None else value
        if isinstance(value, Mapping):
            default = 4 * (patch or Grid.__dataclass_fields__["patch_size"].default)
            value = {"y": default, "x": default,
                     **{k: v for k, v in value.items() if v is not None}}
        chunks = handler(value)
        for key in ("y", "x") if patch else ():
            if getattr(chunks, key) % patch:
                raise _multiple(getattr(chunks, key), patch,
                                "chunks" if shorthand else f"chunks.{key}")
        return chunks

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
            Every key, type, range or consistency problem, all in one message.
        """
        src = Path(source) if source is not None else None
        base = src.parent if src is not None else Path(base_dir or Path.cwd())
        return validate(cls, data, error=RecipeError, where=str(src or "recipe"),
                        context={"base_dir": base.resolve(), "source": src})

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

        world = World(demo_spec(data_dir), data_dir=data_dir)
        root = demo_world_dir(world)
        return write_world(root, world=world, workers=workers, progress=False)

    def search(self, *, data_dir: str | os.PathLike | None = None, **overrides: Any):
        """Run :func:`lames_cube.search.search` with this recipe's catalog and arguments.

        ``overrides`` replace or add search keyword arguments (e.g. ``max_items=10``).
        """

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


def replace_recipe(recipe: Recipe, *, where: str = "the changed recipe", **changes: Any) -> Recipe:
    """A copy of ``recipe`` with ``changes`` (top-level keys), checked like a recipe file.

    Raises
    ------
    RecipeError
        A changed value that a recipe file could not hold; ``where`` starts the message
        (e.g. ``"--catalog"``).

    Examples
    --------
    >>> replace_recipe(load_recipe("demo"), catalog="world:demo").catalog
    'world:demo'
    >>> replace_recipe(load_recipe("demo"), where="--catalog", catalog="world:moon")
    Traceback (most recent call last):
    ...
    lames_cube.errors.RecipeError: --catalog: catalog='world:moon' names an unknown synthetic world. ...
    """
    try:
        return dataclasses.replace(recipe, **changes)
    except ValidationError as exc:
        raise RecipeError(report(exc, Recipe, where)) from None


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
    return Recipe.from_dict(read_yaml(path, RecipeError), source=path.resolve())


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


    if name.strip().casefold() in known_regions():  # the outline shipped in lames_cube/data
        return shapely.geometry.mapping(region_polygon(name))
    path = _outlines_path()
    if path is None:
        raise RecipeError(
            f"{where}={name!r}: the Natural Earth 1:110m country outlines were not found (looked "
            "in lames_cube/data and in the pyogrio package's tests/fixtures/naturalearth_lowres). "
            "Fix: install the pinned pyogrio wheel, or use area.geojson with an outline file."
        )

    table = gpd.read_file(path).to_crs("EPSG:4326")
    wanted = name.strip().casefold()
    rows = table[(table["name"].str.casefold() == wanted)
                 | (table.get("iso_a3", table["name"]).astype(str).str.casefold() == wanted)]
    if rows.empty:
        raise RecipeError(mistake_line(_unknown_country(name, list(table["name"])), where, name))
    return shapely.geometry.mapping(shapely.union_all(rows.geometry.values))


def _unknown_country(name: str, names: list[str]) -> Mistake:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    close += [n for n in names if n.casefold().startswith(name.casefold()[:3])][:3]
    hint = f"did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?" if close else (
        "use a name as Natural Earth spells it (e.g. 'Chile', 'Ghana') or an ISO A3 code.")
    return Mistake("is not a country of the Natural Earth 1:110m outlines", f"one of {len(names)} "
                   f"names such as {', '.join(sorted(names)[:5])}, or an ISO A3 code", hint)


def _geojson_geometry(path: str, *, where: str) -> dict:
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


def _iso_codes() -> set[str]:
    path = _outlines_path()
    if path is None:
        return set()

    table = pyogrio.read_dataframe(path, columns=["iso_a3"], read_geometry=False)
    return {str(c).casefold() for c in table["iso_a3"]}
