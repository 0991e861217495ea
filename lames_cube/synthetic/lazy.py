"""A synthetic world as a lazy datacube: :meth:`World.to_cube` without files.

:func:`world_cube` gives the ``(time, band, y, x)`` uint16 cube that :func:`lames_cube.build_cube`
would build from the world's written items, rendered chunk by chunk by :meth:`World.read`, so a
country-sized grid needs no files and its graph builds in a blink.

The plan (metadata) is made once, at build time: the dates, their time coordinate and the scenes
that overlap the grid. The graph then holds one :class:`CubePlan` (which holds the world) under a
single key, and one small task per chunk and date that names that key and its pixel window.
Pixels are only made inside :meth:`CubePlan.render`.

Conventions shared with :func:`lames_cube.build_cube`
-----------------------------------------------------
- Reflectance bands are uint16 harmonised reflectance x 10 000 (each scene's digital numbers
  harmonised by its own offset, as build_cube does: dark pixels clamp to 1, 65 535 stays
  saturated); SCL is carried in the uint16 cube with its uint8 class values, as build_cube
  carries it.
- 20 m bands (B11, B12, SCL) on a grid finer than 20 m: the world writes them on 20 m grids
  anchored on multiples of 20 m, as 2 x 2 means of its 10 m ground (SCL: the majority class), and
  build_cube puts them on a 10 m grid with nearest resampling. Here each chunk renders the 20 m
  grid anchored on multiples of 20 m (in the cube's CRS) that contains the chunk, at 10 m, and
  averages it; each output pixel takes the 20 m pixel that contains its centre. When the chunk
  lies on that 10 m grid (grids anchored on multiples of 10 m), the same render gives the 10 m
  bands. On a grid of 20 m or coarser (or in a geographic CRS) every band is rendered at the
  grid's own pixels (a projected 20 m grid as 2 x 2 means).
- Dimensions ``(time, band, y, x)``; on a geographic grid the spatial ones are ``latitude`` and
  ``longitude``, as odc (and so build_cube) names them.
- ``time`` is the earliest acquisition time, at millisecond precision as the items carry it, of
  the date's scenes that overlap the grid (as build_cube's time is the first item time of the
  solar day); for a grid that no scene overlaps, the date's earliest scene anywhere.
  ``solar_day`` is the acquisition date; ``n_items`` counts the date's scenes that overlap the
  grid. ``cloud_cover`` is the date's nominal cloud cover (``World.clouds(date).cover`` x 100):
  the items' ``eo:cloud_cover`` is measured on each tile's SCL, which this cube cannot know
  without rendering.

Where the cube differs from build_cube
--------------------------------------
A procedural world has no tile edges: by default (``footprints=False``) every pixel of the grid is
rendered, also outside the world's tiles and beyond a scene's swath edge, where build_cube gives 0
(nodata), as the date saw it (its sun, haze and noise) but without any tile's own gain and noise.
With ``footprints=True`` each pixel comes from the first of the date's scenes that has data there,
in build_cube's fusion order (:func:`fusion_key`), with that scene's own gain and noise, and
pixels that no scene of the date covers (outside every tile, or beyond the swath edge of every tile that holds them) are 0, as in build_cube; 20 m bands take the
coverage of their 20 m pixel, as the 20 m assets do. Where a pixel is covered only by a tile in
another UTM zone, build_cube reprojects that tile's pixels (nearest) while this cube renders the
pixel itself, and the coverage there is the scene's footprint polygon (its lon/lat outline, as the
item's geometry); in the tiles' own CRS, on a grid aligned with theirs, the two cubes are equal
pixel for pixel (tests/test_world_cube.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import rasterio.features
import xarray as xr
from affine import Affine
from dask.array import Array
from dask.highlevelgraph import HighLevelGraph
from odc.geo.geobox import GeoBox
from odc.geo.xr import assign_crs, xr_coords
from pyproj import Transformer

from lames_cube.bands import WORLD_BANDS, canonical_band
from lames_cube.cube import check_chunks, overlaps
from lames_cube.errors import InvalidQueryError, UnknownBandError, WorldError
from lames_cube.search import check_datetime
from lames_cube.synthetic.landscape import check_grid, fine_grid, pixel_centres
from lames_cube.synthetic.stac import item_datetime, item_id

if TYPE_CHECKING:
    from lames_cube.synthetic.world import Scene, World

#: Native pixel size (m) of the world's 20 m bands.
COARSE_RES = 20
#: Bands the world writes at 20 m.
COARSE_BANDS = ("B11", "B12", "SCL")


# --------------------------------------------------------------------------- checks
def check_world_bands(bands: str | Sequence[str] | None) -> tuple[str, ...]:
    """Canonical names of ``bands`` (default: every band the world renders).

    Raises
    ------
    UnknownBandError
        A name that is not a Sentinel-2 band, or a band the world does not render.
    InvalidQueryError
        An empty list, or a band listed twice.

    Examples
    --------
    >>> check_world_bands(["red", "SCL"])
    ('B04', 'SCL')
    """
    if bands is None:
        return tuple(WORLD_BANDS)
    wanted = [bands] if isinstance(bands, str) else list(bands)
    if not wanted:
        raise InvalidQueryError(
            f"bands={bands!r} is empty; pass some of {list(WORLD_BANDS)} or None for all of them."
        )
    names = []
    for band in wanted:
        try:
            name = canonical_band(str(band))
        except UnknownBandError:
            name = None
        if name not in WORLD_BANDS:
            raise UnknownBandError(
                f"Band {band!r} is not rendered by a synthetic world; use some of "
                f"{list(WORLD_BANDS)} (or provider keys of them, e.g. 'red', 'scl')."
            )
        if name in names:
            raise InvalidQueryError(
                f"bands={wanted!r} lists {name!r} twice; list each band once."
            )
        names.append(name)
    return tuple(names)


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, (np.datetime64, pd.Timestamp)):
        return pd.Timestamp(value).date()
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip()[:10])
    raise InvalidQueryError(
        f"{value!r} ({type(value).__name__}) is not a date; pass a datetime.date or 'YYYY-MM-DD'."
    )


def select_dates(world: World, dates: Any = None) -> list[dt.date]:
    """The world's acquisition dates that ``dates`` asks for, ascending.

    Parameters
    ----------
    world
        The world.
    dates
        None (every date of ``world.dates``); a period string as :func:`lames_cube.search` takes
        it (``"2022"``, ``"2021-06"``, ``"2021-06-01/2022-06-30"``, open ends ``".."``): the dates
        whose day lies in it; or a date (``datetime.date``, ``datetime``, ``numpy.datetime64``,
        ``"YYYY-MM-DD"`` inside a list) or a list of them, each one of the world's dates.

    Raises
    ------
    WorldError
        A date that is not an acquisition date of the world, or a period that holds none.
    InvalidQueryError
        A period or date that cannot be read.
    """
    known = list(world.dates)
    if dates is None:
        return known
    shown = [d.isoformat() for d in known]
    if isinstance(dates, str):
        start, end = check_datetime(dates).split("/")
        lo = dt.date.min if start == ".." else dt.date.fromisoformat(start[:10])
        hi = dt.date.max if end == ".." else dt.date.fromisoformat(end[:10])
        out = [d for d in known if lo <= d <= hi]
        if not out:
            raise WorldError(
                f"dates={dates!r} holds none of the world's acquisition dates {shown}; pass a "
                "period that contains some of them, or None for all."
            )
        return out
    values = [dates] if isinstance(dates, (dt.date, np.datetime64, pd.Timestamp)) else dates
    if not isinstance(values, Iterable):
        raise InvalidQueryError(
            f"dates={dates!r} is not understood; pass None, a period string such as '2022', a "
            "date, or a list of the world's dates."
        )
    out = set()
    for value in values:
        try:
            day = _as_date(value)
        except (TypeError, ValueError):
            raise InvalidQueryError(
                f"dates: cannot read {value!r} as a date; pass datetime.date objects or "
                "'YYYY-MM-DD' strings (or one period string such as '2022')."
            ) from None
        if day not in known:
            raise WorldError(
                f"{day.isoformat()} is not an acquisition date of the world; its dates are "
                f"{shown}. Pick some of them, or pass a period string (e.g. '{known[0].year}')."
            )
        out.add(day)
    if not out:
        raise WorldError(f"dates={dates!r} is empty; pass some of {shown} or None for all.")
    return sorted(out)


# --------------------------------------------------------------------------- geometry helpers
def coarse_window(gbox: GeoBox, res: float = COARSE_RES) -> tuple[GeoBox, np.ndarray, np.ndarray]:
    """The ``res`` grid anchored on multiples of ``res`` that contains ``gbox``, and for each
    output row and column the row and column of the coarse pixel holding its centre.

    Examples
    --------
    >>> g = GeoBox((4, 4), Affine(10, 0, 1000, 0, -10, 2000), "EPSG:32719")
    >>> g20, rows, cols = coarse_window(g)
    >>> g20.shape, rows.tolist(), cols.tolist()
    (Shape2d(x=2, y=2), [0, 0, 1, 1], [0, 0, 1, 1])
    """
    xs, ys = (c.ravel() for c in pixel_centres(gbox))
    cx = np.floor(xs / res).astype(np.int64)
    cy = np.floor(ys / res).astype(np.int64)
    c0, c1, r0, r1 = cx.min(), cx.max(), cy.min(), cy.max()
    coarse = GeoBox((int(r1 - r0 + 1), int(c1 - c0 + 1)),
                    Affine(res, 0, float(c0 * res), 0, -res, float((r1 + 1) * res)), gbox.crs)
    return coarse, (r1 - cy).astype(np.intp), (cx - c0).astype(np.intp)


def _renders_coarse(gbox: GeoBox) -> bool:
    """True when 20 m bands are rendered at 20 m and picked (a projected grid finer than 20 m)."""
    a = gbox.affine
    return bool(gbox.crs.projected) and max(abs(a.a), abs(a.e)) < COARSE_RES


def tile_bounds(tiles: Sequence, crs) -> np.ndarray:
    """Bounds ``(n, 4)`` of tiles in ``crs`` (exact in their own CRS, densified elsewhere)."""

    out = np.full((len(tiles), 4), np.nan)
    epsg = crs.epsg
    codes = np.array([t.epsg for t in tiles], dtype=np.int64)
    for code in np.unique(codes):
        sel = np.flatnonzero(codes == code)
        boxes = np.array([(t.x0, t.y0 - t.size_px * 10, t.x0 + t.size_px * 10, t.y0)
                          for t in (tiles[i] for i in sel)])
        if code == epsg:
            out[sel] = boxes
            continue
        f = np.linspace(0, 1, 17)
        w, s, e, n = (boxes[:, k, None] for k in range(4))
        xs = np.concatenate([w + (e - w) * f, e + 0 * f, w + (e - w) * f, w + 0 * f], axis=1)
        ys = np.concatenate([s + 0 * f, s + (n - s) * f, n + 0 * f, s + (n - s) * f], axis=1)
        try:
            tx, ty = Transformer.from_crs(int(code), crs.to_wkt(), always_xy=True).transform(xs, ys)
        except Exception:  # a CRS the tiles cannot be projected into: treat them as overlapping
            continue
        tx, ty = np.asarray(tx), np.asarray(ty)
        ok = np.isfinite(tx).all(axis=1) & np.isfinite(ty).all(axis=1)
        out[sel[ok]] = np.stack([tx.min(1), ty.min(1), tx.max(1), ty.max(1)], axis=1)[ok]
    return out


def _scenes_on_grid(world: World, gbox: GeoBox, dates: Sequence[dt.date],
                    bounds: np.ndarray) -> dict[dt.date, list[Scene]]:
    """Per date, the scenes whose footprint overlaps the grid (as build_cube selects items)."""

    index = {t.tile_id: k for k, t in enumerate(world.tiles)}
    left, bottom, right, top = gbox.boundingbox
    span = max(right - left, top - bottom)
    # beyond this distance (1 m, or about 1 m in degrees) the bounds test is certain
    tol = 1e-6 * span + (1.0 if gbox.crs.projected else 1e-5)
    wanted = set(dates)
    out: dict[dt.date, list[Scene]] = {d: [] for d in dates}
    for scene in world.scenes:
        if scene.date not in wanted:
            continue
        w, s, e, n = bounds[index[scene.tile.tile_id]]
        if np.isnan(w):
            hit = overlaps(gbox, world.footprint(scene).geom)
        elif w > right + tol or e < left - tol or s > top + tol or n < bottom - tol:
            hit = False
        elif (scene.edge is None and w < right - tol and e > left + tol and s < top - tol
              and n > bottom + tol):
            hit = True  # a full tile that surely overlaps
        else:  # grazing, or cut by its swath edge: the items' own test on their footprint
            hit = overlaps(gbox, world.footprint(scene).geom)
        if hit:
            out[scene.date].append(scene)
    return out


def _ms(when: dt.datetime) -> np.datetime64:
    """A scene time as the items carry it (UTC, milliseconds), in ns."""
    naive = when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when
    return np.datetime64(naive.replace(microsecond=naive.microsecond // 1000 * 1000), "ns")


# --------------------------------------------------------------------------- the plan
class CubePlan:
    """What every chunk of a world cube needs: the world, the grid, the bands and the dates.

    One instance sits in the graph under one key; each task asks it for one window of one date.
    Pickling drops the world's per-tile canvas cache, so the graph stays light.

    Parameters
    ----------
    world
        The world.
    geobox
        The cube's grid.
    bands
        Canonical band names, in the cube's order.
    dates
        The cube's dates, in time order.
    footprints
        Apply the coverage of the date's scenes (0 where none covers a pixel).
    scenes
        Per date, the scenes overlapping the grid (used by ``footprints``).
    bounds
        Bounds of the world's tiles in the grid's CRS (``tile_bounds``), for ``footprints``.
    """

    def __init__(self, world: World, geobox: GeoBox, bands: Sequence[str],
                 dates: Sequence[dt.date], *, footprints: bool = False,
                 scenes: Mapping[dt.date, list[Scene]] | None = None,
                 bounds: np.ndarray | None = None) -> None:
        self.world = world
        self.geobox = geobox
        self.bands = tuple(bands)
        self.dates = tuple(dates)
        self.footprints = bool(footprints)
        self.scenes = {d: list((scenes or {}).get(d, [])) for d in self.dates}
        self.bounds = bounds
        self.coarse = _renders_coarse(geobox)

    def render(self, t: int, rows: slice, cols: slice) -> np.ndarray:
        """Pixels ``(band, y, x)`` uint16 of date ``t`` on the grid window ``[rows, cols]``."""
        win = self.geobox[rows, cols]
        date = self.dates[t]
        out = np.zeros((len(self.bands), *win.shape), dtype=np.uint16)
        fine = [k for k, b in enumerate(self.bands) if not (self.coarse and b in COARSE_BANDS)]
        picked = [k for k, b in enumerate(self.bands) if self.coarse and b in COARSE_BANDS]
        g20 = rows20 = cols20 = None
        if picked:
            g20, rows20, cols20 = coarse_window(win)
        # One 10 m render serves both the 10 m bands and the 20 m means when the window sits on
        # the 10 m grid of its 20 m window (the usual case: grids anchored on multiples of 20 m).
        at = _inside_fine(win, g20) if (fine and picked) else None
        if not self.footprints:
            if at is not None:
                ((f10, c20),) = self.world.read_pairs(g20, date, [None])
                data, data20 = _crop(f10, at, win.shape), c20
            else:
                data = self.world.read(win, date) if fine else None
                data20 = self.world.read(g20, date) if picked else None
            for k in fine:
                out[k] = data[self.bands[k]]
            for k in picked:
                out[k] = data20[self.bands[k]][rows20[:, None], cols20[None, :]]
            return out
        # As build_cube fuses a solar day: each pixel from the first scene that has data there.
        scenes = sorted((s for s in self.scenes[date] if self._touches(s, win)),
                        key=lambda s: fusion_key(self.world, s))
        if not scenes:
            return out
        if at is not None:
            pairs = self.world.read_pairs(g20, date, scenes)
            layers = [_crop(f10, at, win.shape) for f10, _ in pairs]
            layers20 = [c20 for _, c20 in pairs]
        else:
            layers = self.world.read_scenes(win, date, scenes) if fine else None
            layers20 = self.world.read_scenes(g20, date, scenes) if picked else None
        todo10 = np.ones(win.shape, dtype=bool)
        todo20 = np.ones(win.shape, dtype=bool)
        for i, scene in enumerate(scenes):
            m10, m20 = self._scene_coverage(scene, win, g20, rows20, cols20)
            take10, take20 = m10 & todo10, m20 & todo20
            for k in fine:
                out[k][take10] = layers[i][self.bands[k]][take10]
            for k in picked:
                out[k][take20] = layers20[i][self.bands[k]][rows20[:, None], cols20[None, :]][take20]
            todo10 &= ~m10
            todo20 &= ~m20
        return out

    def _touches(self, scene: Scene, win: GeoBox) -> bool:
        index = self._tile_index
        w, s, e, n = self.bounds[index[scene.tile.tile_id]]
        left, bottom, right, top = win.boundingbox
        return not (w >= right or e <= left or s >= top or n <= bottom)

    @cached_property
    def _tile_index(self) -> dict[str, int]:
        return {t.tile_id: k for k, t in enumerate(self.world.tiles)}

    def _scene_coverage(self, scene, win, g20, rows20, cols20) -> tuple[np.ndarray, np.ndarray]:
        """Where one scene has data on ``win``: at its pixels and at its 20 m pixels."""

        tile = scene.tile
        if win.crs.epsg == tile.epsg:
            xs, ys = (c.ravel() for c in pixel_centres(win))
            span = tile.size_px * 10
            inside = (((ys > tile.y0 - span) & (ys < tile.y0))[:, None]
                      & ((xs > tile.x0) & (xs < tile.x0 + span))[None, :])
            m10 = inside & self.world.valid_mask(scene, win)
            if g20 is not None:
                valid20 = self.world.valid_mask(scene, g20)[rows20[:, None], cols20[None, :]]
                m20 = inside & valid20
            else:
                m20 = m10
            return m10, m20
        geom = self.world.footprint(scene).to_crs(win.crs).geom
        hit = rasterio.features.geometry_mask(
            [geom], out_shape=win.shape, transform=win.affine, invert=True)
        return hit, hit


def _inside_fine(win: GeoBox, g20: GeoBox) -> tuple[int, int] | None:
    """Row and column of ``win`` in the 10 m grid of ``g20``, when it lies on it (else None)."""

    a, b = win.affine, fine_grid(g20).affine
    if (a.a, a.b, a.d, a.e) != (b.a, b.b, b.d, b.e):
        return None
    col, row = (a.c - b.c) / a.a, (a.f - b.f) / a.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col)


def _crop(layer: dict, at: tuple[int, int], shape) -> dict:
    r, c = at
    h, w = shape
    return {k: v[r:r + h, c:c + w] for k, v in layer.items()}


def fusion_key(world: World, scene: Scene) -> tuple:
    """The order in which :func:`lames_cube.build_cube` fuses a solar day's items: by item
    time, then id (odc-stac's order; each item is harmonised as it is read)."""

    return (item_datetime(world, scene), item_id(world, scene))


def _render_block(plan: CubePlan, t: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    return plan.render(t, slice(y0, y1), slice(x0, x1))[None]


def _token(world: World, geobox: GeoBox, bands, dates, footprints: bool, chunks) -> str:
    h = hashlib.sha256()
    for part in (type(world).__module__, type(world).__qualname__, world.digest(),
                 geobox.crs.to_wkt(), tuple(geobox.affine), tuple(geobox.shape), bands,
                 tuple(d.isoformat() for d in dates), footprints, chunks):
        h.update(repr(part).encode())
    return h.hexdigest()[:16]


def _splits(n: int, size: int) -> tuple[int, ...]:
    return (size,) * (n // size) + ((n % size,) if n % size else ())


# --------------------------------------------------------------------------- the cube
def world_cube(
    world: World,
    geobox: GeoBox,
    dates: Any = None,
    bands: str | Sequence[str] | None = None,
    chunks: int | Mapping[str, int] | None = None,
    *,
    footprints: bool = False,
) -> xr.DataArray:
    """The world as a lazy ``(time, band, y, x)`` cube with :func:`lames_cube.build_cube`'s
    conventions, rendered chunk by chunk (see :meth:`World.to_cube`, which forwards here).

    Parameters
    ----------
    world
        The synthetic world.
    geobox
        Any axis-aligned grid (a tile's ``tile.geobox(10)``, ``lames_cube.grid.mosaic_geobox()``).
    dates
        None: the dates on which a scene overlaps the grid (all of ``world.dates`` if none
        does); a period string (``"2022"``, ``"2021-06/2022-06"``): those of the period; or a
        list of the world's dates, kept as given.
    bands
        Band names (default :data:`lames_cube.bands.WORLD_BANDS`).
    chunks
        y/x chunk size in px (int or ``{"y": .., "x": ..}``), a multiple of 256 (default 1024),
        checked as by :func:`lames_cube.build_cube`.
    footprints
        False (default): every pixel rendered. True: 0 where no scene of the date has data, as
        build_cube gives (tile coverage and swath edges).

    Returns
    -------
    xarray.DataArray
        ``(time, band, y, x)`` named ``reflectance``, uint16, dask-backed with chunks
        ``(1, n_bands, y, x)``: one task per chunk and date. Coords ``time``, ``band``,
        ``solar_day``, ``cloud_cover``, ``n_items``, ``y``, ``x`` (``latitude``, ``longitude`` on a
        geographic grid), ``spatial_ref``; attrs ``nodata``, ``scale``, ``units``,
        ``engine`` (``"world"``), ``harmonised``, ``coverage``, ``seed``, ``world``.

    Raises
    ------
    UnknownBandError, InvalidQueryError, InvalidGridError, WorldError
    """


    gbox = check_grid(geobox)
    names = check_world_bands(bands)
    days = select_dates(world, dates)
    if footprints not in (True, False):
        raise InvalidQueryError(f"footprints={footprints!r} must be True or False.")
    size = check_chunks(chunks, gbox)
    ny, nx = gbox.shape
    ychunks, xchunks = _splits(ny, min(size["y"], ny)), _splits(nx, min(size["x"], nx))

    bounds = tile_bounds(world.tiles, gbox.crs)
    scenes = _scenes_on_grid(world, gbox, days, bounds)
    if (dates is None or isinstance(dates, str)) and any(scenes.values()):
        # As build_cube on the world's items: only the dates on which a scene sees the grid
        # (tiles seen from other orbits are acquired on other dates).
        days = [d for d in days if scenes[d]]
    everywhere: dict[dt.date, list] = {}
    for scene in world.scenes:
        everywhere.setdefault(scene.date, []).append(scene)

    times = np.array([_ms(min(item_datetime(world, s) for s in (scenes[d] or everywhere[d])))
                      for d in days])


    plan = CubePlan(world, gbox, names, days, footprints=footprints, scenes=scenes, bounds=bounds)
    token = _token(world, gbox, names, days, bool(footprints), (size["y"], size["x"]))
    name = f"world-cube-{token}"
    plan_key = f"world-cube-plan-{token}"
    layer: dict = {plan_key: plan}
    ystarts = np.cumsum((0, *ychunks))
    xstarts = np.cumsum((0, *xchunks))
    for t in range(len(days)):
        for i in range(len(ychunks)):
            y0, y1 = int(ystarts[i]), int(ystarts[i + 1])
            for j in range(len(xchunks)):
                layer[(name, t, 0, i, j)] = (
                    _render_block, plan_key, t, y0, y1, int(xstarts[j]), int(xstarts[j + 1]))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    data = Array(graph, name, chunks=((1,) * len(days), (len(names),), ychunks, xchunks),
                 dtype=np.uint16, meta=np.empty((0, 0, 0, 0), dtype=np.uint16))

    coords: dict = {
        "time": times,
        "band": list(names),
        "solar_day": ("time", np.array([np.datetime64(d, "D") for d in days]).astype("datetime64[ns]")),
        "cloud_cover": ("time", np.array([round(100.0 * world.clouds(d).cover, 4) for d in days], dtype=float)),
        "n_items": ("time", np.array([len(scenes[d]) for d in days], dtype=np.int64)),
    }
    coords.update(xr_coords(gbox, crs_coord_name="spatial_ref"))
    ydim, xdim = gbox.dimensions  # ("y", "x"); ("latitude", "longitude") on a geographic grid
    cube = xr.DataArray(data, dims=("time", "band", ydim, xdim), coords=coords, name="reflectance")
    cube.attrs = {
        "nodata": 0, "scale": 1e-4, "units": "reflectance x 10000", "engine": "world",
        "harmonised": "baseline offset removed per scene",
        "coverage": "scene footprints" if footprints else "everywhere",
        "seed": int(world.spec.seed), "world": world.digest(),
    }
    return assign_crs(cube, gbox.crs)
