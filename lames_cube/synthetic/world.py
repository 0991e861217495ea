"""The synthetic Sentinel-2 L2A world: its specification, tiles, acquisitions and pixels.

A :class:`World` is fully determined by a :class:`WorldSpec` (and the LAMES sectors it draws).
It knows its tiles (MGRS-like squares in the sites' UTM zones), its acquisitions (dates, platform,
processing baseline, clouds, nodata edges) and renders any of them, or any window of any grid, on
demand. :func:`lames_cube.synthetic.write.write_world` turns it into COGs and a STAC catalogue.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from pyproj import Transformer

from lames_cube.annotations import load_footprints, load_sectors, load_sites, select_sites
from lames_cube.bands import SATURATED_DN, WORLD_BANDS, baseline_dn_offset, harmonise_values
from lames_cube.errors import WorldError
from lames_cube.grid import utm_epsg
from lames_cube.synthetic.acquisitions import (
    BASELINE_04_START,
    HALF_SWATH_KM,
    cross_track_km,
    keep_evenly,
    orbits_over,
    passes,
    scene_baseline,
)
from lames_cube.synthetic.kernels import (
    SCL_PRIORITY,
    TRUTH_PRIORITY,
    block_class,
    block_mean,
)
from lames_cube.synthetic.landscape import (
    GAIN_SPREAD,
    REFLECTANCE_BANDS,
    Atmosphere,
    CloudState,
    Landscape,
    check_grid,
    fine_grid,
    pixel_centres,
    rasterize_classes,
    scene_pixels,
    solar_angles,
)
from lames_cube.synthetic.lazy import world_cube
from lames_cube.synthetic.mgrs import tile_id
from lames_cube.synthetic.mines import (
    HIDDEN_PREFIX,
    SECTOR_CLASSES,
    MineModel,
    fallback_sites,
    hidden_mine_sectors,
    mine_unions,
    to_local,
    unique_names,
    zones,
)
from lames_cube.synthetic.noise import hash_uniform

#: Bumped whenever the generator draws different pixels or metadata for the same spec.
GENERATOR_VERSION = 9

#: Provider styles of the items and pixels, and the collection id each one uses.
STYLE_COLLECTIONS = {
    "earth-search": "sentinel-2-l2a",  # Earth Search v1: offset removed from the pixels
    "earth-search-c1": "sentinel-2-c1-l2a",  # Earth Search Collection 1: offset in raster:bands
    "planetary-computer": "sentinel-2-l2a",  # no scale/offset metadata
}
STYLES = tuple(STYLE_COLLECTIONS)


@dataclass(frozen=True)
class WorldSpec:
    """Everything that determines a synthetic world.

    Parameters
    ----------
    seed
        Seed of every random choice and texture.
    site_ids
        LAMES site ids to draw; None picks ``n_sites`` of them (train and test) by seed.
    n_sites
        How many sites when ``site_ids`` is None.
    years
        Years with acquisitions; mines grow across them.
    scenes_per_year
        Passes kept per relative orbit and year, spread evenly over the year's passes (Sentinel-2
        flies each orbit every 5 days: 73 a year); tiles seen from two orbits get twice as many.
    grid_km
        Side of the square each tile is named after (km); tiles overlap their neighbours.
    tile_px
        Tile side in 10 m pixels (``tile_px * 10`` m must be at least ``grid_km`` km).
    margin_m
        Ground around each site that the tiles must cover.
    style
        How the items and pixels are served, exactly as the real providers do:
        ``"earth-search"`` (Earth Search v1 ``sentinel-2-l2a``: asset keys ``red``, ``nir``,
        ``scl``; pixels with the baseline-04.00 offset already removed and
        ``earthsearch:boa_offset_applied: true``), ``"earth-search-c1"`` (Earth Search
        ``sentinel-2-c1-l2a``: Collection-1 reprocessing, so every scene has baseline 05.00 or
        later and its offset declared in ``raster:bands``) or ``"planetary-computer"``
        (``B04``, ``SCL``; no scale/offset metadata, the offset is in the pixels from 04.00).
    collection
        Collection id of the items (default: the style's, see :data:`STYLE_COLLECTIONS`).
    use_lames
        Draw the real LAMES sectors (True) or synthetic ones with the same schema (False).
    area
        None (draw sites by ``site_ids`` / ``n_sites``), a lon/lat box ``(west, south, east,
        north)`` in degrees, or ``"lames"``. With a box the world draws every LAMES site whose
        sectors intersect it and every hidden mine whose footprint does (whole, with tiles
        covering them); with ``"lames"`` every LAMES site and every hidden mine (all of Chile as
        LAMES and Maus et al. know it). ``site_ids`` and ``n_sites`` are then not used.
    hidden_mines
        Also draw the hidden mines: the Maus et al. footprints that no LAMES sector touches
        (mines that the LAMES labels miss), with classes laid out procedurally. An ``area``
        world draws those in its area; a site world those that lie, with ``margin_m``, inside
        the tiles its sites need (so its tiles stay the same). Needs ``use_lames``; ignored
        for synthetic fallback sites.
    """

    seed: int = 0
    site_ids: tuple[str, ...] | None = None
    n_sites: int = 4
    years: tuple[int, ...] = (2020, 2021, 2022, 2023)
    scenes_per_year: int = 2
    grid_km: int = 10
    tile_px: int = 1098
    margin_m: float = 1000.0
    style: Literal["earth-search", "earth-search-c1", "planetary-computer"] = "earth-search"
    collection: str | None = None
    use_lames: bool = True
    area: tuple[float, float, float, float] | Literal["lames"] | None = None
    hidden_mines: bool = True

    def __post_init__(self) -> None:
        self._check_area()
        if not isinstance(self.hidden_mines, bool):
            raise WorldError(f"hidden_mines={self.hidden_mines!r} must be True or False.")
        if self.style not in STYLES:
            raise WorldError(f"style={self.style!r} is not one of {STYLES}; pick one of them.")
        if self.tile_px * 10 < self.grid_km * 1000 or self.grid_km < 1:
            raise WorldError(
                f"tile_px={self.tile_px} (x 10 m) does not cover grid_km={self.grid_km} km; "
                f"use tile_px >= {self.grid_km * 100} or a smaller grid_km."
            )
        if not self.years or not 1 <= self.scenes_per_year <= 74:
            raise WorldError(
                f"years={self.years!r}, scenes_per_year={self.scenes_per_year}: a world needs at "
                "least one year and 1..74 passes per orbit and year (Sentinel-2 flies each orbit "
                "every 5 days)."
            )
        if self.tile_px % 2:
            raise WorldError(f"tile_px={self.tile_px} must be even (20 m bands halve it); use "
                             f"e.g. tile_px={self.tile_px + 1}.")

    def _check_area(self) -> None:
        area = self.area
        if area is None:
            return
        if isinstance(area, str):
            if area != "lames":
                raise WorldError(
                    f"area={area!r} is not a known area; pass 'lames' (every LAMES site), a box "
                    "(west, south, east, north) in degrees, or None."
                )
        else:
            try:
                box = tuple(float(v) for v in area)
            except (TypeError, ValueError):
                box = ()
            if len(box) != 4 or not all(np.isfinite(box)):
                raise WorldError(
                    f"area={area!r} is not a box; pass four finite numbers (west, south, east, "
                    "north) in degrees, e.g. (-69.5, -24.5, -68.5, -23.5), or 'lames'."
                )
            west, south, east, north = box
            if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
                raise WorldError(
                    f"area={area!r} is not a lon/lat box: it needs -180 <= west < east <= 180 and "
                    "-90 <= south < north <= 90 (order: west, south, east, north, in degrees)."
                )
            object.__setattr__(self, "area", box)
        if self.site_ids is not None:
            raise WorldError(
                f"area={self.area!r} and site_ids={self.site_ids!r} both choose the sites; pass "
                "one of them (an area draws every LAMES site within it)."
            )
        default_n = WorldSpec.__dataclass_fields__["n_sites"].default
        if self.n_sites != default_n:
            raise WorldError(
                f"area={self.area!r} draws every LAMES site within it, so n_sites={self.n_sites} "
                f"is not used; leave n_sites at its default ({default_n}) or drop area."
            )
        if not self.use_lames:
            raise WorldError(
                f"area={self.area!r} selects LAMES sites, but use_lames=False draws synthetic "
                "fallback sites; set use_lames=True or drop area."
            )

    @property
    def collection_id(self) -> str:
        """The items' collection id: ``collection``, or the style's (:data:`STYLE_COLLECTIONS`)."""
        return self.collection if self.collection is not None else STYLE_COLLECTIONS[self.style]

    def to_dict(self) -> dict:
        """JSON-serialisable form (recorded in the world's manifest)."""
        d = dataclasses.asdict(self)
        d["site_ids"] = list(self.site_ids) if self.site_ids is not None else None
        d["years"] = list(self.years)
        d["area"] = list(self.area) if isinstance(self.area, tuple) else self.area
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WorldSpec:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        if d.get("site_ids") is not None:
            d["site_ids"] = tuple(str(s) for s in d["site_ids"])
        d["years"] = tuple(d["years"])
        if isinstance(d.get("area"), list):
            d["area"] = tuple(d["area"])
        return cls(**d)


@dataclass(frozen=True)
class Tile:
    """One synthetic tile: a square of the MGRS-like grid in a UTM zone."""

    tile_id: str
    epsg: int
    x0: float  #: west edge (m)
    y0: float  #: north edge (m)
    size_px: int

    def geobox(self, resolution: int = 10) -> GeoBox:
        """The tile's grid at ``resolution`` metres (10 or 20)."""
        n = self.size_px * 10 // resolution
        span = n * resolution
        return GeoBox.from_bbox(
            (self.x0, self.y0 - span, self.x0 + span, self.y0), f"EPSG:{self.epsg}",
            resolution=resolution,
        )


@dataclass(frozen=True)
class Scene:
    """One acquisition of one tile: what a STAC item describes."""

    tile: Tile
    date: dt.date
    datetime: dt.datetime
    platform: str  #: "sentinel-2a", "sentinel-2b" or "sentinel-2c"
    baseline: str  #: processing baseline, e.g. "02.14", "04.00"
    edge: tuple[float, float, float] | None  #: nodata half-plane (x, y, angle) or None
    orbit: int  #: relative orbit (1..143)
    absolute_orbit: int = 0

    @property
    def dn_offset(self) -> int:
        """Offset in the scene's digital numbers (1000 from baseline 04.00 on)."""
        return baseline_dn_offset(self.baseline)

    @property
    def short_platform(self) -> str:
        """``S2A``, ``S2B`` or ``S2C``: the platform as product names spell it."""
        return "S2" + self.platform[-1].upper()

    @property
    def id(self) -> str:
        """Item id, Earth Search style."""
        return f"{self.short_platform}_{self.tile.tile_id}_{self.date:%Y%m%d}_0_L2A"


def _boxes(geoms, epsg: np.ndarray, margin: float) -> np.ndarray:
    """Bounds ``(n, 4)`` of EPSG:4326 geometries in their UTM zones, grown by ``margin``."""
    if len(geoms) == 0:
        return np.zeros((0, 4))
    return shapely.bounds(to_local(geoms, epsg)) + np.array([-margin, -margin, margin, margin])


def _tile_squares(boxes: np.ndarray, epsg: np.ndarray, step: int, span: int) -> set:
    """Grid squares ``(epsg, sx, sy)`` whose tiles cover each box.

    Along each axis: from the square holding the west (north) edge until the box's far edge is
    covered (a tile reaches ``span - step`` beyond its square).
    """
    found = set()
    for (w, s, e, n), code in zip(boxes, epsg, strict=True):
        xs = [int(w // step) * step]
        while xs[-1] + span < e:
            xs.append(xs[-1] + step)
        ys = [int(n // step) * step]  # square whose north edge is at top + step
        while ys[-1] + step - span > s:
            ys.append(ys[-1] - step)
        found.update((int(code), sx, sy) for sx in xs for sy in ys)
    return found


def _covered(boxes: np.ndarray, epsg: np.ndarray, squares: set, step: int, span: int) -> np.ndarray:
    """Which boxes lie inside the tiles of ``squares`` (in the same UTM zone)."""
    out = np.zeros(len(boxes), dtype=bool)
    for code in np.unique(epsg):
        tiles = [shapely.box(sx, sy + step - span, sx + span, sy + step)
                 for c, sx, sy in squares if c == code]
        if tiles:
            sel = epsg == code
            cover = shapely.union_all(tiles)
            out[sel] = shapely.covers(cover, shapely.box(*boxes[sel].T))
    return out


def product_dn(dn: np.ndarray, offset: int) -> np.ndarray:
    """A product's digital numbers from the rendered ones (offset 1000): as they are from
    baseline 04.00 (``offset`` 1000); before it, minus 1000 with negative reflectance clamped
    to 1 (saturated 65 535 kept: ESA's products mark saturation with it in every baseline)."""
    if offset:
        return dn
    return np.where(dn == SATURATED_DN, dn, np.maximum(dn, 1001) - 1000).astype(np.uint16)


def _layer_dict(dn: np.ndarray, scl: np.ndarray, truth: np.ndarray, offset: int | None) -> dict:
    """Harmonised bands (as a cube delivers a product of DN offset ``offset``; None: ``dn``
    is harmonised already), SCL and truth."""
    out = {band: dn[i] if offset is None else harmonise_values(product_dn(dn[i], offset), offset)
           for i, band in enumerate(REFLECTANCE_BANDS)}
    out["SCL"] = scl
    out["CLOUD_TRUTH"] = truth
    return out


def _is_20m(gbox: GeoBox) -> bool:
    res = gbox.resolution
    return not gbox.crs.geographic and abs(res.x) == 20 and abs(res.y) == 20


def _tile_key(tile: Tile) -> int:
    """A key of the tile's position (no two tiles of a world share it)."""
    key = tile.epsg
    for v in (int(tile.x0 // 10), int(tile.y0 // 10)):
        key = (key * 1_000_003 + v) % 2**61
    return key


def _u(seed: int, *keys: int) -> float:
    """One deterministic uniform number for (seed, keys)."""
    key = seed
    for k in keys:
        key = key * 1_000_003 + k
    return float(hash_uniform(np.array([key % 2**62]), np.array([len(keys)]), seed + 99)[0])


class World:
    """A synthetic Sentinel-2 L2A world built from a :class:`WorldSpec`.

    Parameters
    ----------
    spec
        The world's specification.
    sectors
        Sector polygons to draw (``site_id``, ``class``, geometry; optionally ``Name`` and
        ``kind``, ``"lames"`` or ``"hidden"``); by default the LAMES sectors of the sites the
        spec chooses (read through ``data_dir``) plus its hidden mines, or, with
        ``spec.use_lames=False``, the synthetic fallback sites. Repeated names get ``#2``, ...
    data_dir
        LAMES data directory (see :func:`lames_cube.config.find_data_dir`).

    Examples
    --------
    >>> w = World(WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1))
    >>> len(w.scenes) == len(w.tiles)
    True
    """

    def __init__(
        self,
        spec: WorldSpec,
        sectors: gpd.GeoDataFrame | None = None,
        data_dir: str | os.PathLike | None = None,
    ) -> None:
        self.spec = spec
        #: Maus footprints of the hidden mines drawn (``site_id`` = maus-<fid>), when known.
        self._footprints: gpd.GeoDataFrame | None = None
        if sectors is None:
            sectors = self._default_sectors(data_dir)
        sectors = sectors[sectors["class"].isin(SECTOR_CLASSES)]
        if len(sectors) == 0:
            raise WorldError(
                f"The world has no mine sectors (classes {list(SECTOR_CLASSES)}) to draw for "
                f"site_ids={spec.site_ids!r}, area={spec.area!r}; pass site ids or an area that "
                "hold LAMES sectors, or sectors= with such classes."
            )
        sectors = sectors.reset_index(drop=True)
        sectors["site_id"] = sectors["site_id"].astype(str)
        if "kind" not in sectors.columns:
            sectors["kind"] = "lames"
        if "Name" not in sectors.columns:
            sectors["Name"] = sectors["site_id"] + "_" + (
                sectors.groupby("site_id").cumcount() + 1).astype(str)
        sectors["Name"] = unique_names(sectors["Name"])
        self.sectors = sectors
        self.mines = MineModel(self.sectors, tuple(spec.years), seed=spec.seed)
        self._surface_cache: dict = {}
        self._last_scene: tuple | None = None

    def __getstate__(self) -> dict:
        """Pickled without its render caches (a world travels in dask graphs)."""
        state = self.__dict__.copy()
        state["_surface_cache"] = {}
        state["_last_scene"] = None
        return state

    def _default_sectors(self, data_dir) -> gpd.GeoDataFrame:
        spec = self.spec
        if not spec.use_lames:
            sectors = fallback_sites(spec.n_sites, spec.seed)
            if spec.site_ids is not None:
                keep = select_sites(
                    sectors.drop_duplicates("site_id")[["site_id", "geometry"]], spec.site_ids
                )
                sectors = sectors[sectors.site_id.isin(keep.site_id)]
            return sectors.assign(kind="lames")

        sites = load_sites("all", data_dir=data_dir)
        every, _report = load_sectors(data_dir=data_dir, report=True)
        # names made unique over the whole file, so that they do not depend on the sites drawn
        every = every.assign(Name=unique_names(every["Name"]), kind="lames")
        if spec.area is None:
            if spec.site_ids is not None:
                chosen = select_sites(sites, spec.site_ids)
            else:
                chosen = self.pick_sites(sites, spec.n_sites, spec.seed)
        elif spec.area == "lames":
            chosen = sites
        else:
            inside = every.intersects(shapely.box(*spec.area))
            chosen = sites[sites.site_id.isin(set(every.site_id[inside]))]
        sectors = every[every.site_id.isin(set(chosen.site_id))]
        sectors = sectors.merge(chosen[["site_id", "split"]], on="site_id")
        if spec.hidden_mines:
            footprints = self._hidden_footprints(every, sectors, data_dir)
            if len(footprints):
                self._footprints = footprints
                hidden = hidden_mine_sectors(footprints.assign(site_id=footprints.fid), spec.seed)
                sectors = pd.concat([sectors, hidden], ignore_index=True)
        if len(sectors) == 0 and spec.area is not None:
            w, s, e, n = every.total_bounds
            raise WorldError(
                f"area={spec.area!r} holds no LAMES site and no hidden mine: LAMES sectors lie "
                f"within ({w:.2f}, {s:.2f}, {e:.2f}, {n:.2f}); pick a box that overlaps them."
            )
        return gpd.GeoDataFrame(sectors, geometry="geometry", crs="EPSG:4326")

    def _hidden_footprints(self, every, sectors, data_dir) -> gpd.GeoDataFrame:
        """The Maus footprints that no LAMES sector touches and that this world draws.

        An area world draws those that intersect its area (all of them for ``"lames"``); a site
        world those whose box plus ``margin_m`` lies inside the tiles its sites need.
        """

        spec = self.spec
        footprints, _report = load_footprints(data_dir=data_dir, report=True)
        footprints = footprints.reset_index(drop=True)
        touched = shapely.STRtree(every.geometry.values).query(
            footprints.geometry.values, predicate="intersects")[0]
        hidden = footprints.drop(index=np.unique(touched))
        if isinstance(spec.area, tuple):
            hidden = hidden[hidden.intersects(shapely.box(*spec.area))]
        elif spec.area is None and (len(sectors) == 0 or len(hidden) == 0):
            hidden = hidden.iloc[:0]
        elif spec.area is None:
            step, span = spec.grid_km * 1000, spec.tile_px * 10
            drawn = sectors[sectors["class"].isin(SECTOR_CLASSES)]
            _ids, unions, _groups = mine_unions(drawn.site_id, drawn.geometry.values)
            epsg = zones(unions)
            squares = _tile_squares(_boxes(unions, epsg, spec.margin_m), epsg, step, span)
            h_epsg = zones(hidden.geometry.values)
            inside = _covered(_boxes(hidden.geometry.values, h_epsg, spec.margin_m), h_epsg,
                              squares, step, span)
            hidden = hidden[inside]
        fid = hidden["site_id"].astype(str)
        return gpd.GeoDataFrame({"site_id": (HIDDEN_PREFIX + fid).to_numpy(),
                                 "fid": fid.to_numpy()},
                                geometry=list(hidden.geometry.values), crs="EPSG:4326")

    @staticmethod
    def pick_sites(sites: gpd.GeoDataFrame, n: int, seed: int) -> gpd.GeoDataFrame:
        """Pick ``n`` sites, alternating train and test, by seed (smallest sites first skipped)."""
        sites = sites.copy()
        sites["rank"] = [
            _u(seed, int(s)) if s.isdigit() else _u(seed, len(s)) for s in sites.site_id
        ]
        picked = []
        for i in range(n):
            split = "test" if i % 4 == 3 else "train"
            pool = sites[(sites.split == split) & ~sites.site_id.isin(picked)].sort_values("rank")
            if len(pool):
                picked.append(pool.site_id.iloc[0])
        return sites[sites.site_id.isin(picked)].drop(columns="rank")

    def digest(self) -> str:
        """Short hash of what determines the world's bytes: spec, sectors and generator version."""
        h = hashlib.sha256(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        h.update(f"generator-{GENERATOR_VERSION}".encode())
        for value in shapely.to_wkb(self.sectors.geometry.values, hex=True):
            h.update(value.encode())
        h.update(",".join(f"{a}:{b}:{c}" for a, b, c in zip(
            self.sectors.site_id, self.sectors["class"], self.sectors["kind"], strict=True)).encode())
        return h.hexdigest()[:12]

    # ------------------------------------------------------------------ geometry
    @cached_property
    def texture_epsg(self) -> int:
        """EPSG code in which textures are defined: the UTM zone of the sites' centre."""
        lon, lat = shapely.centroid(shapely.union_all(self.sectors.geometry.values)).coords[0]
        return utm_epsg(lon, lat)

    @cached_property
    def sites(self) -> gpd.GeoDataFrame:
        """One row per LAMES site drawn: ``site_id``, ``split``, the full footprint and ``epsg``.

        Hidden mines are not sites (LAMES does not know them): see :attr:`hidden`.
        """
        mines = self.mines.mines
        lames = mines[mines["kind"] == "lames"]
        sites = gpd.GeoDataFrame({"site_id": lames["site_id"].to_numpy()},
                                 geometry=list(lames.geometry.values), crs="EPSG:4326")
        if "split" in self.sectors:
            split = self.sectors.dropna(subset=["split"]).drop_duplicates("site_id")
            sites.insert(1, "split", sites["site_id"].map(split.set_index("site_id")["split"]))
        sites["epsg"] = lames["epsg"].to_numpy()
        return sites.sort_values("site_id").reset_index(drop=True)

    @cached_property
    def hidden(self) -> gpd.GeoDataFrame:
        """One row per hidden mine drawn: ``site_id`` (``maus-<fid>``), ``fid``, ``epsg`` and
        its Maus footprint (EPSG:4326)."""
        mines = self.mines.mines
        hidden = mines[mines["kind"] == "hidden"]
        geoms = list(hidden.geometry.values)
        if self._footprints is not None:
            known = self._footprints.set_index("site_id").geometry
            geoms = [known.get(s, g) for s, g in zip(hidden["site_id"], geoms, strict=True)]
        out = gpd.GeoDataFrame({
            "site_id": hidden["site_id"].to_numpy(),
            "fid": [s.removeprefix(HIDDEN_PREFIX) for s in hidden["site_id"]],
            "epsg": hidden["epsg"].to_numpy(),
        }, geometry=geoms, crs="EPSG:4326")
        return out.sort_values("site_id").reset_index(drop=True)

    @cached_property
    def tiles(self) -> list[Tile]:
        """Tiles covering every LAMES site and hidden mine (plus ``margin_m``), sorted by id.

        The sites' tiles come first; hidden mines add tiles only where those do not cover them.
        """
        spec = self.spec
        step, span = spec.grid_km * 1000, spec.tile_px * 10
        sites, hidden = self.sites, self.hidden
        squares = _tile_squares(_boxes(sites.geometry.values, sites.epsg.to_numpy(), spec.margin_m),
                                sites.epsg.to_numpy(), step, span)
        if len(hidden):
            epsg = hidden.epsg.to_numpy()
            boxes = _boxes(hidden.geometry.values, epsg, spec.margin_m)
            todo = ~_covered(boxes, epsg, squares, step, span)
            squares |= _tile_squares(boxes[todo], epsg[todo], step, span)
        found: dict[str, Tile] = {}
        squares = sorted(squares)
        codes = np.array([c for c, _, _ in squares], dtype=np.int64)
        lats = np.zeros(len(squares))
        for code in np.unique(codes):
            sel = np.flatnonzero(codes == code)
            centres = shapely.points([(squares[i][1] + step / 2, squares[i][2] + step / 2)
                                      for i in sel])
            lats[sel] = gpd.GeoSeries(centres, crs=int(code)).to_crs(4326).y.to_numpy()
        precision = 10_000 if spec.grid_km >= 10 else 1_000  # digits of the tile names
        for (code, sx, sy), lat in zip(squares, lats, strict=True):
            tid = tile_id(code, sx, sy, float(lat), precision_m=precision)
            found[tid] = Tile(tid, code, float(sx), float(sy + step), spec.tile_px)
        return [found[k] for k in sorted(found)]

    # ------------------------------------------------------------------ time
    @cached_property
    def dates(self) -> list[dt.date]:
        """Acquisition dates of any tile, ascending (tiles seen from other orbits differ)."""
        return sorted({scene.date for scene in self.scenes})

    def clouds(self, date: dt.date) -> CloudState:
        """The atmosphere of one date: about half the dates clear, some very cloudy.

        Cloud shadows fall away from the sun, ``height · tan(zenith)`` from their cloud
        (cloud tops 1-4 km).
        """
        seed = self.spec.seed
        k = date.toordinal()
        u = _u(seed, k, 2)
        cover = 0.0 if u < 0.45 else (0.05 + 0.3 * _u(seed, k, 3) if u < 0.8 else 0.5 + 0.4 * _u(seed, k, 3))
        zenith, azimuth = self.sun(date)
        dist = (1000.0 + 3000.0 * _u(seed, k, 5)) * np.tan(zenith)
        return CloudState(
            key=(seed * 7919 + k) % 2**31, cover=cover,
            # the cloud lies sun-ward of its shadow: shadow at p, cloud at p + (dx, dy)
            shadow_dx=float(dist * np.sin(azimuth)), shadow_dy=float(dist * np.cos(azimuth)),
            cirrus=_u(seed, k, 6) < 0.3,
        )

    def sun(self, date: dt.date) -> tuple[float, float]:
        """Solar zenith and azimuth (radians, azimuth clockwise from north) at 10:30 local solar
        time, at the latitude of the world's centre."""

        return solar_angles(date, self.centre[1])

    @cached_property
    def centre(self) -> tuple[float, float]:
        """Lon/lat of the centre of the world's mines."""
        lon, lat = shapely.centroid(shapely.union_all(self.sectors.geometry.values)).coords[0]
        return float(lon), float(lat)

    def baseline(self, tile: Tile, date: dt.date) -> str:
        """Processing baseline of a scene: as published on its date; in the Earth Search and
        Planetary Computer styles 15 % of the scenes before 04.00 come reprocessed (05.00); in
        the Collection-1 style (``earth-search-c1``) every older scene does."""
        reprocessed = (date < BASELINE_04_START and _u(
            self.spec.seed, date.toordinal(), _tile_key(tile), 7) < 0.15)
        return scene_baseline(date, collection1=self.spec.style == "earth-search-c1",
                              reprocessed=reprocessed)

    def _tile_orbits(
        self, tile: Tile
    ) -> tuple[float, list[tuple[int, tuple[float, float, float] | None]]]:
        """The tile centre's latitude, and the relative orbits that see the tile, each with its
        swath edge across the tile (or None)."""

        span = tile.size_px * 10
        xs = np.array([tile.x0, tile.x0 + span, tile.x0, tile.x0 + span, tile.x0 + span / 2])
        ys = np.array([tile.y0, tile.y0, tile.y0 - span, tile.y0 - span, tile.y0 - span / 2])
        lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(xs, ys)
        out = []
        for orbit in orbits_over(float(lon[4]), float(lat[4]), margin_km=span / 1000.0):
            d = np.array([cross_track_km(orbit, a, b) for a, b in zip(lon, lat, strict=True)])
            inside = np.abs(d) <= HALF_SWATH_KM
            if not inside[:4].any():
                continue
            edge = None
            if not inside[:4].all():
                # d is linear across a tile: d = d_c + cx·(x - xc) + cy·(y - yc) (km, x/y in m).
                cx = (d[1] - d[0]) / span
                cy = (d[0] - d[2]) / span
                side = 1.0 if d[4] > 0 else -1.0
                # g = HALF_SWATH - side·d >= 0 inside the swath; its gradient n points inward.
                nx, ny = -side * cx, -side * cy
                g = HALF_SWATH_KM - side * d[4]
                norm2 = nx * nx + ny * ny
                ex, ey = xs[4] - g * nx / norm2, ys[4] - g * ny / norm2
                edge = (float(ex), float(ey), float(np.arctan2(ny, nx)))
            out.append((orbit, edge))
        return float(lat[4]), out

    @cached_property
    def scenes(self) -> list[Scene]:
        """Every acquisition of every tile, sorted by date then tile id.

        Each tile is acquired on the passes of the relative orbits whose swath reaches it (see
        :mod:`lames_cube.synthetic.acquisitions`), by the platforms then flying; of each orbit's
        passes in a year, ``scenes_per_year`` are kept, spread evenly (the same passes for every
        tile of the orbit). A tile at a swath's edge has nodata beyond it; 15 % of the other
        scenes end at a datastrip boundary across the tile.
        """
        seed = self.spec.seed
        years = self.spec.years
        out = []
        for tile in self.tiles:
            t = _tile_key(tile)
            span = tile.size_px * 10
            lat, orbits = self._tile_orbits(tile)
            for orbit, swath_edge in orbits:
                for year in years:
                    flown = passes(orbit, lat, dt.date(year, 1, 1), dt.date(year, 12, 31))
                    phase = _u(seed, orbit, year, 28)
                    for p in keep_evenly(flown, self.spec.scenes_per_year, phase):
                        date = p.when.date()
                        k = date.toordinal()
                        edge = swath_edge
                        if edge is None and _u(seed, k, t, 9) < 0.15:
                            edge = (
                                tile.x0 + span * (0.3 + 0.4 * _u(seed, k, t, 10)),
                                tile.y0 - span / 2,
                                float(np.deg2rad(-100 + 20 * _u(seed, k, t, 11))),
                            )
                        when = p.when + dt.timedelta(milliseconds=int(1000 * _u(seed, k, t, 8)))
                        out.append(Scene(tile, date, when, p.platform, self.baseline(tile, date),
                                         edge, orbit, p.absolute_orbit))
        out.sort(key=lambda s: (s.date, s.tile.tile_id, s.orbit))
        return out

    # ------------------------------------------------------------------ pixels
    def mine_classes(self, gbox: GeoBox, year: int) -> np.ndarray:
        """LAMES class values of the mines of ``year`` on ``gbox`` (the label truth)."""
        return rasterize_classes(self.mines.sectors_in_year(year), gbox)

    @cached_property
    def landscape(self) -> Landscape:
        """The renderer of this world (ground, mines of any year, atmosphere)."""
        return Landscape(self.spec.seed, self.texture_epsg, self.sectors, self.mines.sectors_in_year)

    def _canvas(self, gbox: GeoBox, year: int, cache_key=None):
        if cache_key is not None and (cache_key, year) in self._surface_cache:
            return self._surface_cache[(cache_key, year)]
        out = self.landscape.canvas(gbox, year)
        if cache_key is not None:
            # Keep what shares the key's first part (a tile at all its resolutions and years).
            self._surface_cache = {k: v for k, v in self._surface_cache.items()
                                   if k[0][0] == cache_key[0]}
            self._surface_cache[(cache_key, year)] = out
        return out

    def atmosphere(self, date: dt.date, *, scl_errors: bool = True) -> Atmosphere:
        """The date's sun, haze, vegetation, snow line and classification errors.

        One atmosphere per date for the whole world, taken at the latitude of its centre (so that
        any window of any grid gets the same pixels): a world spanning many degrees of latitude
        has one sun and one snow line (a simplification).

        * sun at 10:30 local solar time at the world's centre (:meth:`sun`);
        * haze: the atmospheric correction's residual in the blue, triangular from -0.0025
          (over-corrected, 35 % of the dates: dark water and shade fall below 0) to +0.0035
          reflectance (standard deviation 0.0012), less at longer wavelengths;
        * vegetation greens up in the altiplanic summer north of 27° S (peak mid-February) and in
          the southern spring further south (peak mid-September);
        * snow line: 5800 m in summer down to 4300 m in winter (100 m lower per degree south of
          30° S), and on storm dates (8 % of summer dates, 30 % of winter ones) down to about
          2400 m at 33° S (180 m higher per degree north).
        """
        seed = self.spec.seed
        k = date.toordinal()
        lat = self.centre[1]
        zenith, azimuth = self.sun(date)
        level = 0.0005 + 0.003 * (_u(seed, k, 20) + _u(seed, k, 27) - 1.0)
        haze = tuple(level * w for w in (1.0, 0.75, 0.55, 0.35, 0.12, 0.06))
        doy = date.timetuple().tm_yday
        peak = 45 if lat > -27 else 260
        vegetation = 0.5 + 0.5 * np.cos(2 * np.pi * (doy - peak) / 365.0)
        winter = 0.5 + 0.5 * np.cos(2 * np.pi * (doy - 200) / 365.0)
        snowline = 5800.0 - 1500.0 * winter + 100.0 * (lat + 30.0)
        if _u(seed, k, 21) < 0.08 + 0.22 * winter:
            snowline = min(snowline, 2400.0 + 180.0 * (lat + 33.0) + 600.0 * _u(seed, k, 22))
        return Atmosphere(zenith, azimuth, haze, float(vegetation), float(snowline),
                          key=int(_u(seed, k, 23) * 2**52), scl_errors=scl_errors)

    def scene_gain(self, scene: Scene) -> float:
        """The scene's own gain: its tile's atmospheric correction differs from its neighbour's."""
        u = _u(self.spec.seed, scene.date.toordinal(), _tile_key(scene.tile), scene.orbit, 24)
        return 1.0 + GAIN_SPREAD * (2.0 * u - 1.0)

    def _noise_key(self, date: dt.date, scene: Scene | None) -> int:
        keys = (date.toordinal(), 25) if scene is None else (
            date.toordinal(), _tile_key(scene.tile), scene.orbit, 26)
        return int(_u(self.spec.seed, *keys) * 2**62)

    def _render(self, gbox: GeoBox, date: dt.date | None, clouds: bool,
                scenes: list[Scene | None], cache_key=None, *,
                harmonised: bool = False) -> list[tuple]:
        """Product digital numbers (6, H, W; offset 1000; ``harmonised``: as harmonise_values
        makes them), SCL and cloud truth on ``gbox``, one triple per entry of ``scenes``
        (None: the date's own noise, gain 1); the ground and sky are rendered once."""
        year = date.year if date is not None else self.spec.years[-1]
        canvas = self._canvas(gbox, year, cache_key)
        if date is None:
            return [self.landscape.render(canvas, None, harmonised=harmonised)] * len(scenes)
        state = self.clouds(date) if (clouds and date in self._date_set) else None
        atm = self.atmosphere(date, scl_errors=clouds)
        if len(scenes) == 1:  # gain and noise in the same pass (as scene_pixels would add them)
            scene = scenes[0]
            gain = self.scene_gain(scene) if scene is not None else 1.0
            return [self.landscape.render(canvas, state, atm, harmonised=harmonised,
                                          noise=(self._noise_key(date, scene), gain))]
        dn, scl, truth = self.landscape.render(canvas, state, atm)
        out = []
        for scene in scenes:
            gain = self.scene_gain(scene) if scene is not None else 1.0
            layer = scene_pixels(dn, scl, *canvas.inner, self._noise_key(date, scene), gain)
            out.append((harmonise_values(layer, 1000) if harmonised else layer, scl, truth))
        return out

    @cached_property
    def _date_set(self) -> frozenset:
        return frozenset(self.dates)

    def _render_any(self, gbox: GeoBox, date, clouds, scenes, cache_key=None, *,
                    keep_fine: bool = False) -> list[tuple]:
        """:meth:`_render` on ``gbox``; a projected 20 m grid is rendered at 10 m and averaged
        over 2 x 2 pixels (reflectance) or classified by majority (SCL, truth), as Sentinel-2's
        20 m bands integrate the ground. ``keep_fine`` adds the 10 m triple to each entry."""
        if not _is_20m(gbox):
            return self._render(gbox, date, clouds, scenes, cache_key)
        h, w = gbox.shape
        out = []
        for fine in self._render(fine_grid(gbox), date, clouds, scenes, cache_key):
            dn10, scl10, truth10 = fine
            dn = np.empty((6, h, w), np.uint16)
            scl = np.empty((h, w), np.uint8)
            truth = np.empty((h, w), np.uint8)
            block_mean(dn10, dn)
            block_class(scl10, scl, SCL_PRIORITY, 1)
            block_class(truth10, truth, TRUTH_PRIORITY, -1)
            out.append(((dn, scl, truth), fine) if keep_fine else (dn, scl, truth))
        return out

    def read_pairs(self, g20: GeoBox, date: dt.date, scenes: list[Scene | None], *,
                   clouds: bool = True) -> list[tuple[dict, dict]]:
        """For each scene (None: the date's own), the pair (on the 10 m grid of ``g20``
        (:func:`~lames_cube.synthetic.landscape.fine_grid`), on the 20 m grid ``g20``) of what :meth:`read_scenes` gives, from
        one render."""
        layers = self._render_any(check_grid(g20), date, clouds, list(scenes), keep_fine=True)
        out = []
        for scene, (coarse, fine) in zip(scenes, layers, strict=True):
            offset = scene.dn_offset if scene is not None else 1000
            out.append((_layer_dict(*fine, offset), _layer_dict(*coarse, offset)))
        return out

    def read_scenes(self, gbox: GeoBox, date: dt.date, scenes: list[Scene], *,
                    clouds: bool = True) -> list[dict[str, np.ndarray]]:
        """:meth:`read` as each of ``scenes`` (all of ``date``) saw ``gbox``: harmonised by the
        scene's own offset (as a cube delivers them), everywhere on the grid (no footprint);
        the ground and sky are rendered once for all of them."""
        layers = self._render_any(check_grid(gbox), date, clouds, list(scenes))
        return [_layer_dict(*layer, scene.dn_offset) for scene, layer in zip(scenes, layers, strict=True)]

    def read(
        self, gbox: GeoBox, date: dt.date | None = None, *, clouds: bool = True,
        scene: Scene | None = None, _cache_key=None,
    ) -> dict[str, np.ndarray]:
        """Render any window of the world procedurally, without files.

        Parameters
        ----------
        gbox
            The grid to render (any CRS, axis-aligned). A projected 20 m grid is rendered at
            10 m and averaged (as the 20 m bands integrate the ground); other grids are rendered
            at their own pixel centres.
        date
            Acquisition date; its year sets the mines and its atmosphere (sun, haze, vegetation,
            snow, sensor noise) the surface; with ``clouds`` True also the classification's
            errors, and, when it is one of :attr:`dates`, its clouds. None renders the last year
            under a neutral sky: no clouds, no noise, the sun of :data:`SUN`.
        clouds
            False renders the date's cloud-free surface with a perfect classification.
        scene
            Render as this scene's tile saw it (its gain and noise; default: the date's own).

        Returns
        -------
        dict
            ``B02`` … ``B12`` as uint16 harmonised reflectance x 10 000 (clamped to at least 1,
            65 535 where saturated), ``SCL`` (uint8) as the processor classifies it and
            ``CLOUD_TRUTH`` (uint8: 0 clear, 1 thin cloud or cirrus, 2 cloud, 3 cloud shadow,
            4 snow) as the sky really was.
        """
        gbox = check_grid(gbox)
        if date is not None and not isinstance(date, dt.date):
            raise WorldError(f"date={date!r} is not a datetime.date; pass e.g. "
                             f"datetime.date({self.dates[0]:%Y, %-m, %-d}) or None.")
        if _is_20m(gbox):
            ((dn, scl, truth),) = self._render_any(gbox, date, clouds, [scene], _cache_key)
            return _layer_dict(dn, scl, truth, 1000)
        ((dn, scl, truth),) = self._render(gbox, date, clouds, [scene], _cache_key,
                                           harmonised=True)  # as harmonise_values makes them
        return _layer_dict(dn, scl, truth, None)

    def to_cube(self, geobox: GeoBox, dates=None, bands=None, chunks=None, *,
                footprints: bool = False):
        """The world as a lazy ``(time, band, y, x)`` cube, rendered chunk by chunk, no files.

        Same conventions as :func:`lames_cube.build_cube` on the world's items (uint16
        harmonised reflectance × 10 000, SCL values carried as is, nodata 0, coords ``time``,
        ``band``, ``solar_day``, ``cloud_cover``, ``n_items``, CRS attached); one dask task per
        chunk and date, the world held once in the graph. See :mod:`lames_cube.synthetic.lazy`
        for the 20 m bands, the time coordinate and where it differs from build_cube.

        Parameters
        ----------
        geobox
            Any axis-aligned grid (e.g. ``tile.geobox(10)``, ``lames_cube.grid.mosaic_geobox()``).
        dates
            None (the dates on which a scene overlaps the grid), a period string (``"2022"``, ``"2021-06/2022-06"``) or a
            list of the world's dates.
        bands
            Band names (default B02, B03, B04, B08, B11, B12, SCL).
        chunks
            y/x chunk size in px (int or ``{"y": .., "x": ..}``), a multiple of 256 (default 1024).
        footprints
            False: every pixel rendered (a procedural world has no tile edges). True: 0 where no
            scene of the date has data (outside tiles, beyond swath edges), as build_cube.

        Returns
        -------
        xarray.DataArray
            Lazy (dask) uint16 ``reflectance`` on ``geobox``.

        Raises
        ------
        UnknownBandError, InvalidGridError, InvalidQueryError, WorldError

        Examples
        --------
        >>> w = World(WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1))
        >>> cube = w.to_cube(w.tiles[0].geobox(10), bands=["B04", "SCL"], chunks=512)
        >>> cube.dims, cube.dtype.name, cube.chunks[1]
        (('time', 'band', 'y', 'x'), 'uint16', (2,))
        >>> window = cube.isel(y=slice(0, 256), x=slice(0, 256)).values  # renders 1 chunk
        """

        return world_cube(self, geobox, dates, bands, chunks, footprints=footprints)

    def scene_arrays(self, scene: Scene, resolution: int, *,
                     harmonised: bool = False) -> dict[str, np.ndarray]:
        """Digital numbers of a scene's bands at ``resolution`` (10: B02-B08, 20: B11, B12, SCL).

        The 20 m bands are 2 x 2 means of the scene's 10 m render (SCL: the majority class).

        Parameters
        ----------
        scene
            One of :attr:`scenes`.
        resolution
            10 or 20.
        harmonised
            False: the L2A product's digital numbers (offset 1000 from baseline 04.00, so dark
            surfaces fall at or below 1000; before 04.00 negative values are clamped to 1).
            True: harmonised reflectance x 10 000, as :func:`lames_cube.build_cube` must
            deliver it (the truth).

        Returns
        -------
        dict
            Band name → array; 0 outside the scene's swath or datastrip edge.
        """
        dn10, scl10, _ = self._scene_render(scene)
        gbox = scene.tile.geobox(resolution)
        if resolution == 20:
            h, w = gbox.shape
            dn = np.empty((6, h, w), np.uint16)
            scl = np.empty((h, w), np.uint8)
            block_mean(dn10, dn)
            block_class(scl10, scl, SCL_PRIORITY, 1)
        else:
            dn, scl = dn10, scl10
        names = [b for b in WORLD_BANDS if (b in ("B11", "B12", "SCL")) == (resolution == 20)]
        valid = self.valid_mask(scene, gbox)
        out = {}
        for name in names:
            if name == "SCL":
                arr = scl
            else:
                arr = product_dn(dn[REFLECTANCE_BANDS.index(name)], scene.dn_offset)
                if harmonised:
                    arr = harmonise_values(arr, scene.dn_offset)
            out[name] = np.where(valid, arr, 0).astype(arr.dtype)
        return out

    def _scene_render(self, scene: Scene):
        """The scene's 10 m render (kept for the next call: 10 m then 20 m bands)."""
        key = (scene.tile.tile_id, scene.date, scene.orbit)
        last = self._last_scene  # read once: another thread may replace it
        if last is not None and last[0] == key:
            return last[1]
        (out,) = self._render(scene.tile.geobox(10), scene.date, True, [scene],
                              cache_key=(scene.tile.tile_id, 10))
        self._last_scene = (key, out)
        return out

    @staticmethod
    def valid_mask(scene: Scene, gbox: GeoBox) -> np.ndarray:
        """True where the scene has data (inside its swath edge)."""
        if scene.edge is None:
            return np.ones(gbox.shape, dtype=bool)
        ex, ey, angle = scene.edge
        xs, ys = pixel_centres(gbox)
        return ((xs - ex) * np.cos(angle) + (ys - ey) * np.sin(angle)) >= 0

    def footprint(self, scene: Scene) -> Geometry:
        """The scene's valid-data footprint in EPSG:4326."""
        gbox = scene.tile.geobox(10)
        poly = gbox.extent.geom
        if scene.edge is not None:
            ex, ey, angle = scene.edge
            nx, ny = np.cos(angle), np.sin(angle)
            far = 1e6
            # Half-plane n·(p - e) >= 0 as a large polygon.
            tx, ty = -ny, nx
            half = shapely.Polygon([
                (ex + tx * far, ey + ty * far), (ex - tx * far, ey - ty * far),
                (ex - tx * far + nx * far, ey - ty * far + ny * far),
                (ex + tx * far + nx * far, ey + ty * far + ny * far),
            ])
            poly = poly.intersection(half)
        return Geometry(poly, crs=gbox.crs).to_crs("EPSG:4326", resolution=2000.0)

    def truth(self) -> pd.DataFrame:
        """True mined area per mine and year, LAMES sites and hidden mines alike.

        Columns ``site_id`` (site id or ``maus-<fid>``), ``kind`` (``"lames"``/``"hidden"``),
        ``year``, ``area_m2`` and ``area_<class>_m2`` (see :meth:`MineModel.truth`).
        """
        return self.mines.truth()
