"""Mines of the synthetic world: the LAMES sectors and the hidden mines, growing year by year.

A world draws two kinds of mines (column ``kind``):

``"lames"``
    the real LAMES sectors (or synthetic ones with the same schema): what the LAMES labels show;
``"hidden"``
    the Maus et al. (2020) footprints that no LAMES sector touches: real mines that the LAMES
    labels miss. They carry no classes, so :func:`hidden_mine_sectors` lays out plausible ones.

Each sector grows by the rule of its class, from a first-year state drawn from the world seed
and the sector's ``Name`` (no global random state) to the whole annotation in the last year:

* open pits (5) widen: the polygon scaled about its own centroid (or an interior point when the
  centroid lies outside), intersected with itself;
* tailings (8) and waste rock dumps (9) extend from the pit: the polygon intersected with a disc
  centred at the sector's point nearest the mine's main pit, the radius growing;
* heap leach pads (3) are built row by row: the polygon cut by a line that sweeps, in whole rows
  of :data:`LEACH_ROW_M`, along the long axis of its minimum rotated rectangle;
* buildings (4 mine facility, 6 processing plant) and stockyards (7) appear whole in one year
  (most exist from the first year) and never disappear.

Every sector's state is the union of its states of earlier years, so nothing is ever un-mined
and a mine's area never falls. The grown polygons are the truth: their area per mine and year
is known exactly (in the mine's UTM zone), and the same polygons are burnt into the pixels.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import shapely.affinity

from lames_cube.classes import SECTOR_MINE_CLASSES
from lames_cube.errors import WorldError
from lames_cube.grid import utm_epsg
from lames_cube.synthetic.noise import hash_uniform

#: LAMES sector classes drawn by the synthetic world (mask values 3..9, see DESIGN.md §5).
SECTOR_CLASSES = tuple(int(c) for c in SECTOR_MINE_CLASSES)
#: Values of the ``kind`` column: LAMES sectors and hidden (unlabelled) mines.
KINDS = ("lames", "hidden")
#: Prefix of a hidden mine's ``site_id`` (followed by the Maus ``fid``).
HIDDEN_PREFIX = "maus-"

#: Linear scale of an open pit in the first year (its area is about the square of it).
PIT_START = (0.45, 0.75)
#: Radius of a tailings or waste rock disc in the first year, as a fraction of its full reach.
DUMP_START = (0.35, 0.70)
#: Share of a leach pad's length built in the first year.
LEACH_START = (0.25, 0.60)
#: Leach pads grow by whole rows about this long (m) along their long axis.
LEACH_ROW_M = 100.0
#: Share of buildings and stockyards that exist from the first year (the others appear later).
BUILT_FROM_START = 0.75
#: Classes that appear whole in one year.
WHOLE_CLASSES = (4, 6, 7)

#: Hidden mine layout: the footprint is cut into Voronoi cells of about this area (m²), at
#: most ``HIDDEN_MAX_CELLS`` of them and at least two from ``HIDDEN_TWO_CELLS_M2`` on; the cell
#: at the footprint's most interior point is an open pit, the cell farthest from it tailings,
#: and the others draw a class by these shares.
HIDDEN_CELL_M2 = 1.5e6
HIDDEN_MAX_CELLS = 120
HIDDEN_TWO_CELLS_M2 = 4e5
HIDDEN_CLASS_SHARES = ((9, 0.50), (8, 0.16), (3, 0.10), (5, 0.08), (4, 0.07), (6, 0.05), (7, 0.04))


def draw(seed: int, name: str, what: str) -> float:
    """A deterministic uniform number in [0, 1) for (world seed, sector name, purpose).

    Examples
    --------
    >>> draw(0, "2355_1", "pit") == draw(0, "2355_1", "pit") != draw(1, "2355_1", "pit")
    True
    """
    digest = hashlib.blake2b(f"{int(seed)}|{name}|{what}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def unique_names(names: Iterable[str]) -> list[str]:
    """Make sector names unique: repeats get ``#2``, ``#3``, ... in row order.

    The LAMES sector file repeats four names (``1922_3``, ``2108_42``, ``2504_17``, ``3218_1``).

    Examples
    --------
    >>> unique_names(["1_1", "1_2", "1_1", "1_1"])
    ['1_1', '1_2', '1_1#2', '1_1#3']
    """
    names = [str(n) for n in names]
    taken = set(names)
    count: dict[str, int] = {}
    out = []
    for name in names:
        if name not in count:
            count[name] = 1
            out.append(name)
            continue
        k = count[name] + 1
        while f"{name}#{k}" in taken:
            k += 1
        count[name] = k
        taken.add(f"{name}#{k}")
        out.append(f"{name}#{k}")
    return out


def to_local(geoms, epsg: np.ndarray, *, valid: bool = False) -> np.ndarray:
    """Reproject EPSG:4326 geometries to each one's EPSG code (one ``to_crs`` per zone).

    With ``valid=True``, polygons that reprojection made invalid are repaired (polygonal parts
    of ``make_valid``).
    """
    geoms = np.asarray(geoms, dtype=object)
    out = np.empty(len(geoms), dtype=object)
    for code in np.unique(epsg):
        sel = epsg == code
        out[sel] = gpd.GeoSeries(geoms[sel], crs=4326).to_crs(int(code)).values
    return _repair(out) if valid else out


def to_lonlat(geoms, epsg: np.ndarray, *, valid: bool = False) -> np.ndarray:
    """Inverse of :func:`to_local`."""
    geoms = np.asarray(geoms, dtype=object)
    out = np.empty(len(geoms), dtype=object)
    for code in np.unique(epsg):
        sel = epsg == code
        out[sel] = gpd.GeoSeries(geoms[sel], crs=int(code)).to_crs(4326).values
    return _repair(out) if valid else out


def _repair(geoms: np.ndarray) -> np.ndarray:
    """Repair the invalid polygons of ``geoms`` (in place): polygonal parts of make_valid."""
    bad = np.flatnonzero(~shapely.is_valid(geoms) & ~shapely.is_missing(geoms))
    if len(bad):
        geoms[bad] = _polygonal(shapely.make_valid(geoms[bad], method="structure",
                                                   keep_collapsed=False))
    return geoms


def zones(geoms) -> np.ndarray:
    """UTM EPSG code of each EPSG:4326 geometry's centroid (in degrees)."""
    xy = shapely.get_coordinates(shapely.centroid(np.asarray(geoms, dtype=object)))
    return np.array([utm_epsg(x, y) for x, y in xy], dtype=np.int64)


def mine_unions(site_ids, geoms) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Group geometries by mine: sorted ids, the union of each mine's geometries, row groups."""
    site_ids = np.asarray(site_ids).astype(str)
    geoms = np.asarray(geoms, dtype=object)
    order = np.argsort(site_ids, kind="stable")
    ids, starts = np.unique(site_ids[order], return_index=True)
    groups = np.split(order, starts[1:]) if len(ids) else []
    unions = np.array([shapely.union_all(geoms[g]) for g in groups], dtype=object)
    return ids, unions, groups


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep the polygonal parts of each geometry (intersections may add lines and points)."""
    geoms = np.asarray(geoms, dtype=object).copy()
    types = shapely.get_type_id(geoms)
    for i in np.flatnonzero(~np.isin(types, (-1, 3, 6))):
        polys = [p for p in shapely.get_parts(geoms[i]) if p.geom_type in ("Polygon", "MultiPolygon")]
        parts = [q for p in polys for q in shapely.get_parts(p)]
        geoms[i] = (parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)) if parts else None
    return geoms


def _slab(ux: float, uy: float, t0: float, t1: float, w0: float, w1: float) -> shapely.Polygon:
    """The rectangle ``t0 <= p·u <= t1``, ``w0 <= p·v <= w1`` with ``v`` = ``u`` turned 90°."""
    vx, vy = -uy, ux
    return shapely.Polygon([(ux * t + vx * w, uy * t + vy * w)
                            for t, w in ((t0, w0), (t1, w0), (t1, w1), (t0, w1))])


def _axis_extent(geom, ux: float, uy: float) -> tuple[float, float, float, float]:
    """Range of a geometry's coordinates along ``u`` and along ``v`` (``u`` turned 90°)."""
    xy = shapely.get_coordinates(geom)
    t = xy @ np.array([ux, uy])
    w = xy @ np.array([-uy, ux])
    return float(t.min()), float(t.max()), float(w.min()), float(w.max())


def _cell_class(u: float) -> int:
    total = 0.0
    for cls, share in HIDDEN_CLASS_SHARES:
        total += share
        if u < total:
            return cls
    return HIDDEN_CLASS_SHARES[0][0]


def _voronoi_cells(poly, n: int, rng: np.random.Generator) -> list:
    """``n`` Voronoi cells of points drawn inside ``poly``, clipped to it (covering it)."""
    if n <= 1:
        return [poly]
    minx, miny, maxx, maxy = poly.bounds
    pts = np.zeros((0, 2))
    while len(pts) < n:
        xy = rng.uniform((minx, miny), (maxx, maxy), size=(4 * n, 2))
        pts = np.concatenate([pts, xy[shapely.contains_xy(poly, xy[:, 0], xy[:, 1])]])
    cells = shapely.voronoi_polygons(shapely.MultiPoint(pts[:n]), extend_to=poly)
    clipped = _polygonal(shapely.intersection(np.asarray(cells.geoms, dtype=object), poly))
    return [c for c in clipped if c is not None and not c.is_empty and c.area > 1.0]


def hidden_mine_sectors(footprints: gpd.GeoDataFrame, seed: int = 0) -> gpd.GeoDataFrame:
    """Lay out classes for mine footprints that have none (the hidden mines).

    Each footprint is cut into Voronoi cells of about :data:`HIDDEN_CELL_M2` (at most
    :data:`HIDDEN_MAX_CELLS`, at least two from :data:`HIDDEN_TWO_CELLS_M2` on), so that a large footprint becomes many sectors of mixed classes,
    as a real mine is. The cell holding the footprint's most interior point is an open pit (5);
    the cell farthest from it is tailings (8); the others draw a class by
    :data:`HIDDEN_CLASS_SHARES`. The cells do not overlap and their union is the footprint.
    Points, cells and classes are drawn from ``seed`` and the footprint id.

    Parameters
    ----------
    footprints
        ``site_id`` (the Maus ``fid``) and polygons in EPSG:4326 (as
        :func:`lames_cube.annotations.load_footprints` returns them).
    seed
        The world seed.

    Returns
    -------
    geopandas.GeoDataFrame
        ``Name`` (``maus-<fid>_<n>``), ``class``, ``site_id`` (``maus-<fid>``), ``kind``
        (``"hidden"``) and geometry (EPSG:4326).

    Examples
    --------
    >>> import shapely
    >>> fp = gpd.GeoDataFrame({"site_id": ["7"]}, geometry=[shapely.box(-69.06, -24.06, -69, -24)],
    ...                       crs="EPSG:4326")
    >>> s = hidden_mine_sectors(fp)
    >>> len(s) > 5, int(s["class"].iloc[0]), s.site_id.iloc[0]
    (True, 5, 'maus-7')
    """
    geoms = np.asarray(footprints.geometry.values, dtype=object)
    epsg = zones(geoms)
    local = to_local(geoms, epsg, valid=True)
    rows = []
    for fid, poly, code in zip(footprints["site_id"].astype(str), local, epsg, strict=True):
        site_id = f"{HIDDEN_PREFIX}{fid}"
        area = float(poly.area)
        if area <= 0:
            continue
        rng = np.random.default_rng(int(draw(seed, site_id, "cells") * 2**63))
        least = 2 if area >= HIDDEN_TWO_CELLS_M2 else 1
        n = int(min(max(math.ceil(area / HIDDEN_CELL_M2), least), HIDDEN_MAX_CELLS))
        cells = _voronoi_cells(poly, n, rng)
        centre = shapely.get_coordinates(
            shapely.maximum_inscribed_circle(poly, max(0.5, math.sqrt(area) / 200)))[0]
        dist = np.array([shapely.distance(c, shapely.Point(centre)) for c in cells])
        pit, far = int(np.argmin(dist)), int(np.argmax(dist))
        xy = shapely.get_coordinates(shapely.centroid(np.asarray(cells, dtype=object)))
        order = np.lexsort((xy[:, 0], xy[:, 1]))
        order = [pit] + [k for k in order if k != pit]
        for n_, k in enumerate(order, start=1):
            if k == pit:
                cls = 5
            elif k == far:
                cls = 8
            else:
                cls = _cell_class(draw(seed, f"{site_id}_{n_}", "class"))
            rows.append({"Name": f"{site_id}_{n_}", "class": cls, "site_id": site_id,
                         "kind": "hidden", "_epsg": int(code), "geometry": cells[k]})
    if not rows:
        return gpd.GeoDataFrame({"Name": [], "class": [], "site_id": [], "kind": []},
                                geometry=[], crs="EPSG:4326")
    frame = pd.DataFrame(rows)
    lonlat = to_lonlat(frame.geometry.values, frame["_epsg"].to_numpy(), valid=True)
    return gpd.GeoDataFrame(frame.drop(columns=["_epsg", "geometry"]), geometry=list(lonlat),
                            crs="EPSG:4326")


@dataclass
class MineModel:
    """The sectors of the world's mines and how they grow.

    Parameters
    ----------
    sectors
        Sector polygons (EPSG:4326) with ``Name`` (unique), ``site_id``, ``class`` and,
        optionally, ``kind`` (``"lames"`` when absent).
    years
        The years the world covers (sorted on input).
    seed
        The world seed: with the sector names it draws every growth parameter.

    Attributes
    ----------
    mines
        One row per mine (``site_id`` sorted): ``site_id``, ``kind``, ``epsg`` (the UTM zone
        of the mine's centroid, where areas are measured) and the union of its sectors.

    Examples
    --------
    >>> from lames_cube.synthetic.mines import fallback_sites
    >>> m = MineModel(fallback_sites(1), (2020, 2021, 2022))
    >>> a = m.truth().area_m2.to_numpy()
    >>> bool(a[0] < a[1] < a[2])
    True
    """

    sectors: gpd.GeoDataFrame
    years: tuple[int, ...]
    seed: int = 0
    _grown: dict[int, gpd.GeoDataFrame] = field(default_factory=dict, init=False, repr=False)
    _table: tuple | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        sectors = self.sectors.reset_index(drop=True)
        missing = [c for c in ("Name", "site_id", "class") if c not in sectors.columns]
        if missing:
            raise WorldError(f"The sectors have no {missing} column(s); columns present: "
                             f"{list(sectors.columns)}. Pass sectors with Name, site_id and class "
                             "columns, as lames_cube.annotations.load_sectors() returns them.")
        sectors = sectors.assign(site_id=sectors["site_id"].astype(str))
        if "kind" not in sectors.columns:
            sectors = sectors.assign(kind="lames")
        bad = sorted(set(sectors["kind"]) - set(KINDS))
        if bad:
            raise WorldError(f"Sector kind(s) {bad} are not one of {KINDS}; set the kind column "
                             "to 'lames' (labelled sectors) or 'hidden' (unlabelled mines).")
        if not sectors["Name"].is_unique:
            repeated = sorted(set(sectors["Name"][sectors["Name"].duplicated()]))[:5]
            raise WorldError(f"Sector names repeat ({repeated}); make them unique with "
                             "lames_cube.synthetic.mines.unique_names.")
        if sectors.crs is None or not sectors.crs.equals("EPSG:4326"):
            sectors = sectors.set_crs(4326) if sectors.crs is None else sectors.to_crs(4326)
        self.sectors = sectors
        self.years = tuple(sorted(set(int(y) for y in self.years)))
        if not self.years:
            raise WorldError(f"years={self.years!r} is empty; a mine model needs at least one "
                             "year, e.g. years=(2021, 2022).")

        site_ids = sectors["site_id"].astype(str).to_numpy()
        geoms = np.asarray(sectors.geometry.values, dtype=object)
        ids, unions, groups = mine_unions(site_ids, geoms)
        self._groups = groups
        mine_epsg = zones(unions)
        kinds = [sectors["kind"].iloc[g[0]] for g in groups]
        self.mines = gpd.GeoDataFrame({"site_id": ids, "kind": kinds, "epsg": mine_epsg},
                                      geometry=list(unions), crs="EPSG:4326")
        self._epsg = pd.Series(mine_epsg, index=ids).loc[site_ids].to_numpy()
        self._local = to_local(geoms, self._epsg, valid=True)
        self._site_ids = site_ids
        self._classes = sectors["class"].to_numpy().astype(np.int64)
        # each mine's main pit (its largest open pit; else its largest sector's centroid)
        area = np.nan_to_num(shapely.area(self._local), nan=-1.0)
        anchors = {}
        for site_id, g in zip(ids, groups, strict=True):
            pits = g[self._classes[g] == 5]
            if len(pits):
                anchors[site_id] = self._local[pits[np.argmax(area[pits])]]
            else:
                anchors[site_id] = shapely.centroid(self._local[g[np.argmax(area[g])]])
        self._anchor = np.array([anchors[s] for s in site_ids], dtype=object)

    @property
    def site_ids(self) -> list[str]:
        """Mine ids (LAMES site ids and ``maus-<fid>``), sorted."""
        return list(self.mines.site_id)

    def progress(self, year: int) -> float:
        """Share of the way from the first year (0) to the last (1); clipped outside the span."""
        years = self.years
        if len(years) == 1 or year >= years[-1]:
            return 1.0
        if year <= years[0]:
            return 0.0
        return (year - years[0]) / (years[-1] - years[0])

    def _index(self, year: int) -> int:
        """Index of the model year whose state ``year`` shows (the latest one not after it)."""
        return max(0, int(np.searchsorted(self.years, year, side="right")) - 1)

    def _u(self, what: str, rows: np.ndarray) -> np.ndarray:
        names = self.sectors["Name"].to_numpy()
        return np.array([draw(self.seed, str(names[i]), what) for i in rows])

    def _grow(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Local geometries of every sector in every model year, and where they are whole."""
        n = len(self.years)
        whole_geom = self._local
        cls = self._classes
        p = np.array([self.progress(y) for y in self.years])
        geoms = [np.empty(len(whole_geom), dtype=object) for _ in range(n)]
        whole = [np.zeros(len(whole_geom), dtype=bool) for _ in range(n)]
        for k in range(n):
            geoms[k][:] = whole_geom
            whole[k][:] = True

        # open pits: scaled about their centroid (an interior point if it lies outside)
        rows = np.flatnonzero(cls == 5)
        start = PIT_START[0] + (PIT_START[1] - PIT_START[0]) * self._u("pit", rows)
        for i, s0 in zip(rows, start, strict=True):
            poly = whole_geom[i]
            if poly is None or poly.is_empty:
                continue
            origin = shapely.centroid(poly)
            if not shapely.contains(poly, origin):
                origin = shapely.point_on_surface(poly)
            previous = None
            for k in range(n - 1):
                s = s0 + (1 - s0) * p[k]
                grown = shapely.intersection(
                    shapely.affinity.scale(poly, s, s, origin=origin), poly)
                grown = _polygonal(np.array([grown]))[0]
                if previous is not None:
                    grown = previous if grown is None else shapely.union(previous, grown)
                geoms[k][i], whole[k][i] = grown, False
                previous = grown

        # tailings and waste rock: a disc from the sector's point nearest the main pit
        rows = np.flatnonzero(np.isin(cls, (8, 9)))
        if len(rows):
            f0 = DUMP_START[0] + (DUMP_START[1] - DUMP_START[0]) * self._u("dump", rows)
            centre = shapely.get_point(shapely.shortest_line(whole_geom[rows], self._anchor[rows]), 0)
            reach = shapely.hausdorff_distance(centre, whole_geom[rows]) + 1.0
            for k in range(n - 1):
                disc = shapely.buffer(centre, reach * (f0 + (1 - f0) * p[k]), quad_segs=32)
                geoms[k][rows] = _polygonal(shapely.intersection(whole_geom[rows], disc))
                whole[k][rows] = False

        # heap leach pads: whole rows along the long axis of the minimum rotated rectangle
        rows = np.flatnonzero(cls == 3)
        g0 = LEACH_START[0] + (LEACH_START[1] - LEACH_START[0]) * self._u("leach", rows)
        flip = self._u("leach-end", rows) < 0.5
        for i, g_start, backwards in zip(rows, g0, flip, strict=True):
            poly = whole_geom[i]
            if poly is None or poly.is_empty:
                continue
            ring = shapely.get_coordinates(shapely.oriented_envelope(poly))
            edges = np.diff(ring[:3], axis=0)
            if len(edges) < 2:
                continue
            axis = edges[np.argmax(np.hypot(*edges.T))]
            length = float(np.hypot(*axis))
            if length == 0:
                continue
            ux, uy = (axis / length) * (-1 if backwards else 1)
            t0, t1, w0, w1 = _axis_extent(poly, ux, uy)
            n_rows = max(1, math.ceil((t1 - t0) / LEACH_ROW_M - 1e-9))
            for k in range(n - 1):
                built = math.ceil((g_start + (1 - g_start) * p[k]) * n_rows - 1e-9)
                if built >= n_rows:
                    continue
                cut = t0 + max(built, 1) * (t1 - t0) / n_rows
                part = shapely.intersection(poly, _slab(ux, uy, t0 - 1, cut, w0 - 1, w1 + 1))
                geoms[k][i], whole[k][i] = _polygonal(np.array([part]))[0], False

        # buildings and stockyards: whole from a year drawn by seed on
        rows = np.flatnonzero(np.isin(cls, WHOLE_CLASSES))
        u = self._u("appear", rows)
        later = (u - BUILT_FROM_START) / (1 - BUILT_FROM_START)
        appear = np.where(u < BUILT_FROM_START, 0,
                          np.minimum(1 + np.floor(later * max(n - 1, 0)), n - 1)).astype(int)
        for k in range(n):
            gone = rows[appear > k]
            geoms[k][gone] = None
            whole[k][gone] = False
        return geoms, whole

    @property
    def table(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(local geometries, whole flags) per model year: computed once, then cached."""
        if self._table is None:
            self._table = self._grow()
        return self._table

    def appear_year(self) -> pd.Series:
        """The first year each sector is drawn in (by ``Name``; NaN-free: every sector shows)."""
        geoms, _ = self.table
        first = np.full(len(self.sectors), self.years[-1])
        for k in reversed(range(len(self.years))):
            present = ~(shapely.is_missing(geoms[k]) | shapely.is_empty(geoms[k]))
            first[present] = self.years[k]
        return pd.Series(first, index=self.sectors["Name"].to_numpy(), name="year")

    def sectors_in_year(self, year: int) -> gpd.GeoDataFrame:
        """The grown sectors of ``year`` in EPSG:4326, in burn order.

        Years between the model's years show the state of the latest model year before them;
        years outside the span show the first or the last state.

        Returns
        -------
        geopandas.GeoDataFrame
            The sector columns (``Name``, ``site_id``, ``class``, ``kind``, ...), ``area_m2``
            (grown area in the mine's UTM zone) and geometry; largest area first, ties by
            ``Name``. Sectors not yet built are left out; whole sectors keep the annotation's
            geometry exactly.
        """
        k = self._index(year)
        key = self.years[k]
        if key not in self._grown:
            geoms, whole = self.table
            local = geoms[k]
            keep = ~(shapely.is_missing(local) | shapely.is_empty(local))
            out = self.sectors[keep].copy()
            out["area_m2"] = shapely.area(local[keep])
            lonlat = np.asarray(self.sectors.geometry.values, dtype=object)[keep].copy()
            grown = keep & ~whole[k]
            lonlat[~whole[k][keep]] = to_lonlat(local[grown], self._epsg[grown], valid=True)
            out = out.set_geometry(gpd.GeoSeries(lonlat, index=out.index, crs="EPSG:4326"))
            out = out.sort_values(["area_m2", "Name"], ascending=[False, True], kind="stable")
            self._grown[key] = gpd.GeoDataFrame(out.reset_index(drop=True), geometry="geometry",
                                                crs="EPSG:4326")
        return self._grown[key]

    def truth(self) -> pd.DataFrame:
        """True mined area per mine and year (m², in the mine's UTM zone).

        Returns
        -------
        pandas.DataFrame
            ``site_id`` (LAMES site id or ``maus-<fid>``), ``kind``, ``year``, ``area_m2``
            (the union of the grown sectors) and ``area_<class>_m2`` per sector class; by year,
            then ``site_id``.
        """
        geoms, _ = self.table

        def union_area(rows: np.ndarray, area: np.ndarray, k: int) -> float:
            if len(rows) == 0:
                return 0.0
            if len(rows) == 1:
                return float(area[rows[0]])
            return float(shapely.union_all(geoms[k][rows]).area)

        rows_out = []
        for k, year in enumerate(self.years):
            present = ~(shapely.is_missing(geoms[k]) | shapely.is_empty(geoms[k]))
            area = np.where(present, shapely.area(geoms[k]), 0.0)
            for site_id, kind, group in zip(self.mines.site_id, self.mines.kind, self._groups,
                                            strict=True):
                rows = group[present[group]]
                row = {"site_id": site_id, "kind": kind, "year": year,
                       "area_m2": union_area(rows, area, k)}
                for cls in SECTOR_CLASSES:
                    row[f"area_{cls}_m2"] = union_area(rows[self._classes[rows] == cls], area, k)
                rows_out.append(row)
        return pd.DataFrame(rows_out)


def fallback_sites(n_sites: int = 4, seed: int = 0) -> gpd.GeoDataFrame:
    """Synthetic sectors with the LAMES schema, for when the LAMES files are not at hand.

    Sites sit in the Atacama (around 24° S, 69° W); each has an open pit ringed by waste rock,
    a tailings pond, a leach pad, a processing plant and a stockyard.

    Examples
    --------
    >>> s = fallback_sites(2)
    >>> sorted(s.site_id.unique()), sorted(s["class"].unique().tolist())
    (['90001', '90002'], [3, 5, 6, 7, 8, 9])
    """
    rows = []
    for i in range(n_sites):
        u = hash_uniform(np.array([i, i]), np.array([0, 1]), seed + 17)
        lon = -69.6 + 0.9 * float(u[0])
        lat = -25.0 + 1.6 * float(u[1])
        epsg = utm_epsg(lon, lat)
        cx, cy = gpd.GeoSeries([shapely.Point(lon, lat)], crs=4326).to_crs(epsg).iloc[0].coords[0]
        pit = shapely.Point(cx, cy).buffer(900)
        shapes = [
            (5, pit),
            (9, shapely.Point(cx, cy).buffer(2000).difference(pit.buffer(150)).intersection(
                shapely.box(cx - 2000, cy - 2000, cx + 2000, cy))),
            (8, shapely.Point(cx + 2600, cy + 1800).buffer(1000)),
            (3, shapely.box(cx - 3000, cy + 1000, cx - 1800, cy + 1900)),
            (6, shapely.box(cx + 1200, cy + 300, cx + 1700, cy + 800)),
            (7, shapely.box(cx + 1800, cy + 300, cx + 2100, cy + 600)),
        ]
        site_id = str(90001 + i)
        size = 0.5 + float(hash_uniform(np.array([i]), np.array([2]), seed + 17)[0])
        scaled = [shapely.affinity.scale(g, size, size, origin=(cx, cy)) for _, g in shapes]
        geoms = gpd.GeoSeries(scaled, crs=epsg).to_crs(4326)
        for n, ((cls, _), geom) in enumerate(zip(shapes, geoms, strict=True), start=1):
            rows.append({"Name": f"{site_id}_{n}", "class": cls, "date": pd.NA, "date2": pd.NA,
                         "system": "synthetic", "site_id": site_id, "geometry": geom})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    gdf["split"] = np.where(np.arange(len(gdf)) // 6 % 4 == 3, "test", "train")
    return gdf

