"""Cloud masks from SCL, per-scene clear fractions, and composites (median, least cloudy first).

All functions take and return lazy xarray objects: nothing is computed until asked. The one
exception is :func:`least_cloudy_composite`, which computes the small vector of per-scene clear
fractions to rank the scenes (one ``dask.compute`` that reads the SCL band once).

Cloud masks
    Sen2Cor's scene classification (SCL) misses the thin, semi-transparent edges of clouds and of
    their shadows; left in, they put bright (or dark) rings into every composite. :func:`clear_mask`
    therefore grows the not-clear pixels by a disk of ``buffer_m`` metres
    (:data:`DEFAULT_CLOUD_BUFFER_M`), per time step, lazily per chunk with an overlap, after a
    morphological opening that removes isolated specks (1 px by default when there is a buffer;
    odc-algo's ``mask_cleanup`` does opening then dilation; this is the same model). Nodata (SCL
    0) is never clear and never grown: a swath or tile edge is not a cloud.

Never-clear pixels
    In Atacama mines Sen2Cor often flags bright tailings, leach pads and salt flats as cloud (SCL
    8/9) or snow (11) on most or every date, so a plain composite has a hole exactly on the mine.
    Both composites report such pixels (``never_clear``) and, with ``fallback=True`` (default),
    fill them: from the median of the observations that SCL calls clear but the buffer masked
    when there are at least :data:`MIN_RAW_CLEAR` of them (a cloud rim cannot make that median),
    else from the darkest observation that SCL calls clear or flags as cloud, cirrus or snow
    (:data:`FALLBACK_CLASSES`; never shadow, dark area, saturated or nodata), marked
    ``fallback``: real clouds and their rims are brighter than the ground beneath.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor used for grids)
import pyproj
import xarray as xr
from odc.geo.geobox import GeoBox
from scipy import ndimage

from lames_cube.bands import SATURATED_DN, SCL_CLOUD
from lames_cube.errors import InvalidGridError, InvalidQueryError

#: SCL classes for snow and for saturated/defective pixels (optional in masks).
SCL_SNOW = 11
SCL_SATURATED = 1
SCL_NODATA = 0
#: SCL "dark area pixels": dark ground, but also cloud shadows the classifier missed.
SCL_DARK = 2
METHODS = ("median", "least_cloudy")

#: Default radius (m) by which not-clear SCL pixels are grown. Sen2Cor's SCL (20 m) misses the
#: thin, semi-transparent edges of clouds and of their shadows, typically one to three 20-m pixels
#: wide, which leave bright rings in composites. 60 m is 3 SCL pixels (6 px at 10 m): in line with
#: odc-algo's default ``mask_cleanup`` dilation of 5 px and the 50 m buffer of the s2cloudless
#: recipes, and below Fmask's 3 px at Landsat's 30 m (90 m), whose pixels are coarser.
DEFAULT_CLOUD_BUFFER_M: float = 60.0
#: Radius (px) of the opening that removes isolated not-clear specks before a buffer inflates
#: them (``opening_px=None``, the default, uses it when ``buffer_m > 0`` and 0 when it is 0).
DEFAULT_OPENING_PX: int = 1
#: SCL classes whose observations may fill a never-clear pixel (medium/high cloud, cirrus, snow).
FALLBACK_CLASSES: tuple[int, ...] = (8, 9, 10, SCL_SNOW)
#: Bands whose mean measures brightness when choosing the darkest flagged observation.
VISIBLE_BANDS: tuple[str, ...] = ("B02", "B03", "B04")

_EPS = 1e-9  # relative slack so that a pixel exactly buffer_m away counts as within it


# --------------------------------------------------------------------------- masks
def _require_scl(cube: xr.DataArray) -> xr.DataArray:
    if "band" not in cube.dims or "SCL" not in list(cube.band.values):
        have = list(cube.band.values) if "band" in cube.dims else []
        raise InvalidQueryError(
            f"The cube has no SCL band (bands: {have}); build it with 'SCL' in bands= to mask clouds."
        )
    return cube.sel(band="SCL")


def _check_options(buffer_m: float, opening_px: int | None) -> None:
    if isinstance(buffer_m, bool) or not isinstance(buffer_m, (int, float, np.integer, np.floating)) \
            or not math.isfinite(buffer_m) or buffer_m < 0:
        raise InvalidQueryError(
            f"buffer_m={buffer_m!r} is not a finite number >= 0 (metres by which clouds are "
            f"grown); pass e.g. buffer_m={DEFAULT_CLOUD_BUFFER_M:g}, or buffer_m=0 for no buffer."
        )
    if opening_px is None:
        return
    if isinstance(opening_px, bool) or not isinstance(opening_px, (int, np.integer)) or opening_px < 0:
        raise InvalidQueryError(
            f"opening_px={opening_px!r} is not an integer >= 0 (radius in pixels of the opening "
            "that removes isolated specks); pass e.g. opening_px=1, opening_px=0 for none, or "
            "None for the default (1 with a buffer, 0 without)."
        )


def _opening(opening_px: int | None, buffer_m: float) -> int:
    """The opening radius in use: ``None`` is :data:`DEFAULT_OPENING_PX` with a buffer, else 0."""
    if opening_px is None:
        return DEFAULT_OPENING_PX if buffer_m > 0 else 0
    return int(opening_px)


def pixel_size_m(data: xr.DataArray) -> tuple[float, float]:
    """Ground size ``(dy, dx)`` in metres of one pixel of a georeferenced array.

    A projected CRS gives its resolution in its own linear unit, converted to metres (for
    EPSG:3857 these are projected, not ground, metres). A geographic CRS is converted
    approximately: the geodesic length of one pixel step on the CRS's ellipsoid at the centre of
    the grid (good to well under 1 % over a Sentinel-2 tile; the error grows with the grid's
    north-south extent).

    Raises
    ------
    InvalidGridError
        The array has no ``y``/``x`` grid or no CRS.

    Examples
    --------
    >>> da = xr.DataArray(np.zeros((2, 3)), dims=("y", "x"),
    ...                   coords={"y": [15.0, 5.0], "x": [5.0, 15.0, 25.0]})
    >>> pixel_size_m(da.odc.assign_crs("EPSG:32719"))
    (10.0, 10.0)
    """

    gbox = data.odc.geobox if ("y" in data.dims and "x" in data.dims) else None
    if not isinstance(gbox, GeoBox) or gbox.crs is None:
        what = ("no grid readable from evenly spaced y/x coordinates (two or more per axis)"
                if gbox is None else "no CRS")
        raise InvalidGridError(
            f"The cube has {what} (dims {tuple(data.dims)}), so buffer_m cannot be converted to "
            "pixels. Fix: build it with build_cube() (which carries its grid), assign one with "
            "cube.odc.assign_crs('EPSG:32719') on y/x coordinates, or pass buffer_m=0."
        )

    crs = pyproj.CRS.from_user_input(gbox.crs.to_wkt())
    rx, ry = abs(float(gbox.resolution.x)), abs(float(gbox.resolution.y))
    if crs.is_geographic:
        lon, lat = gbox.geographic_extent.centroid.coords[0]
        geod = crs.get_geod()
        dx = geod.inv(lon - rx / 2, lat, lon + rx / 2, lat)[2]
        dy = geod.inv(lon, lat - ry / 2, lon, lat + ry / 2)[2]
        return float(dy), float(dx)
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return ry * factor, rx * factor


def buffer_disk(buffer_m: float, dy_m: float, dx_m: float) -> np.ndarray:
    """Boolean structuring element: offsets whose pixel centres lie within ``buffer_m`` metres.

    Examples
    --------
    >>> buffer_disk(20, 10, 10).astype(int)
    array([[0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [1, 1, 1, 1, 1],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0]])
    """
    limit = buffer_m * buffer_m * (1 + _EPS)
    ky = math.floor(buffer_m / dy_m * (1 + _EPS))
    kx = math.floor(buffer_m / dx_m * (1 + _EPS))
    oy, ox = np.mgrid[-ky:ky + 1, -kx:kx + 1]
    return (oy * dy_m) ** 2 + (ox * dx_m) ** 2 <= limit


def _pixel_disk(radius: int) -> np.ndarray:
    oy, ox = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return oy * oy + ox * ox <= radius * radius


_CLEAR, _BAD, _NODATA = 0, 1, 2  # pixel states handed to the per-block kernel


def _grow_block(state: np.ndarray, opening: np.ndarray | None, dilation: np.ndarray | None) -> np.ndarray:
    """Not-clear pixels of a block of states ``(..., y, x)`` after an opening and a dilation.

    Each 2-D slice is processed on its own (the structuring elements are flat along the leading
    axes). The opening removes not-clear pixels where the disk does not fit inside the not-clear,
    nodata or off-grid area, i.e. specks surrounded by clear data; clouds running into nodata or
    off the grid keep their edge pixels. The dilation grows what is left; nodata never grows.
    """

    lead = (1,) * (state.ndim - 2)
    bad = state == _BAD
    if opening is not None:
        disk = opening.reshape(lead + opening.shape)
        # Erosion with border_value=1: what lies off the block is not clear data. Inside the
        # overlap this is the true neighbourhood; at the grid's edge it is off-grid.
        core = ndimage.binary_erosion(state != _CLEAR, structure=disk, border_value=1)
        bad &= ndimage.binary_dilation(core, structure=disk)
    if dilation is not None:
        bad = ndimage.binary_dilation(bad, structure=dilation.reshape(lead + dilation.shape))
    return bad


def _grow(state: xr.DataArray, buffer_m: float, opening_px: int) -> xr.DataArray:
    """Not-clear pixels after an opening of ``opening_px`` px and a dilation of ``buffer_m`` m.

    ``state`` is ``_CLEAR`` / ``_BAD`` / ``_NODATA`` per pixel; the result is boolean and lazy.
    """
    opening = _pixel_disk(opening_px) if opening_px > 0 else None
    dilation = None
    if buffer_m > 0:
        disk = buffer_disk(buffer_m, *pixel_size_m(state))
        dilation = disk if disk.size > 1 else None
    if opening is None and dilation is None:
        return state == _BAD
    for dim in ("y", "x"):
        if dim not in state.dims:
            raise InvalidQueryError(
                f"The cube has no {dim!r} dimension (dims {tuple(state.dims)}); cloud buffers and "
                "openings work on (time, y, x) grids. Fix: pass buffer_m=0 and opening_px=0."
            )
    dims = state.dims
    ordered = state.transpose(..., "y", "x")
    # Reach of one output pixel: the opening's radius twice (erosion, then dilation), then the
    # buffer's radius.
    ry = 2 * opening_px + (dilation.shape[0] // 2 if dilation is not None else 0)
    rx = 2 * opening_px + (dilation.shape[1] // 2 if dilation is not None else 0)
    data = ordered.data
    if dask.is_dask_collection(data):
        depth = {i: 0 for i in range(data.ndim - 2)}
        depth.update({data.ndim - 2: min(ry, data.shape[-2]), data.ndim - 1: min(rx, data.shape[-1])})
        grown = da.map_overlap(_grow_block, data, depth=depth, boundary="none", dtype=bool,
                               opening=opening, dilation=dilation)
    else:
        grown = _grow_block(np.asarray(data), opening, dilation)
    return ordered.copy(data=grown).transpose(*dims)


class _Masks(NamedTuple):
    scl: xr.DataArray  #: (time, y, x) SCL classes
    valid: xr.DataArray  #: SCL != 0
    raw_clear: xr.DataArray  #: valid and not in the masked classes (no buffer, no opening)
    clear: xr.DataArray  #: valid and not within the buffer of a masked pixel
    saturated: xr.DataArray | np.bool_  #: SCL 1 or a band at DN 65 535 (False when not masked)


def _bad_classes(classes: Sequence[int], snow: bool, saturated: bool) -> list[int]:
    extra = ([SCL_SNOW] if snow else []) + ([SCL_SATURATED] if saturated else [])
    return sorted({int(c) for c in (*classes, *extra)} - {SCL_NODATA})


def _masks(
    cube: xr.DataArray,
    *,
    classes: Sequence[int] = SCL_CLOUD,
    snow: bool = False,
    saturated: bool = True,
    buffer_m: float = DEFAULT_CLOUD_BUFFER_M,
    opening_px: int | None = None,
) -> _Masks:
    _check_options(buffer_m, opening_px)
    opening_px = _opening(opening_px, buffer_m)
    scl = _require_scl(cube).drop_vars("band")
    valid = scl != SCL_NODATA
    bad = scl.isin(_bad_classes(classes, snow, False))
    sat: xr.DataArray | np.bool_ = np.False_
    if saturated:  # SCL 1, or a band at DN 65 535 whatever SCL says
        refl = [b for b in cube.band.values if b != "SCL"]
        sat = scl == SCL_SATURATED
        if refl:
            sat = sat | (cube.sel(band=refl) == SATURATED_DN).any("band").drop_vars(
                [c for c in ("band",) if c in cube.coords], errors="ignore")
        bad = bad | sat
    raw_clear = valid & ~bad
    if buffer_m == 0 and opening_px == 0:
        clear = raw_clear
    else:
        state = xr.where(valid, bad.astype("uint8"), np.uint8(_NODATA)).astype("uint8")
        clear = valid & ~_grow(state, buffer_m, opening_px)
        if saturated:  # a lone saturated pixel is no speck to open away
            clear = clear & ~sat
    return _Masks(scl, valid, raw_clear, clear, sat)


def clear_mask(
    cube: xr.DataArray,
    *,
    classes: Sequence[int] = SCL_CLOUD,
    snow: bool = False,
    saturated: bool = True,
    buffer_m: float = DEFAULT_CLOUD_BUFFER_M,
    opening_px: int | None = None,
) -> xr.DataArray:
    """True where an observation has data and is clear of clouds (lazy, ``(time, y, x)``).

    The not-clear pixels (SCL in ``classes``, plus snow and saturated when asked) are cleaned of
    isolated specks by an opening of ``opening_px`` pixels, then grown by a disk of ``buffer_m``
    metres, per time step (never across time), chunk by chunk with an overlap of the combined
    radius (twice the opening's plus the buffer's) so that chunk edges change nothing. Nodata
    (SCL 0) is never clear and never grown. ``buffer_m=0`` (and no explicit opening) gives the
    SCL mask unchanged.

    Parameters
    ----------
    cube
        A cube ``(time, band, y, x)`` with an ``SCL`` band and, when ``buffer_m > 0``, a grid with
        a CRS (as :func:`lames_cube.build_cube` makes).
    classes
        SCL classes that are not clear (default shadow 3, medium/high cloud 8/9, cirrus 10).
    snow, saturated
        Also mask snow (11) / saturated or defective pixels (1). ``saturated`` defaults to True
        as in recipes.
    buffer_m
        Radius in metres by which not-clear pixels grow (a pixel is masked when a not-clear pixel
        centre lies within ``buffer_m`` of its centre). Default :data:`DEFAULT_CLOUD_BUFFER_M`
        (60 m): Sen2Cor's SCL misses the thin, semi-transparent edges of clouds and of their
        shadows, which leave bright rings in composites; 60 m is three 20-m SCL pixels (Fmask
        grows clouds by 3 px at 30 m, odc-algo by 5 px). ``0`` gives the SCL mask unchanged.
        Metres are those of the CRS for projected grids; geographic grids are converted at the
        grid centre (see :func:`pixel_size_m`).
    opening_px
        Radius in pixels of a binary opening (a disk) applied before the dilation: it removes
        not-clear specks too narrow to hold the disk (with 1 px, the 3 x 3 cross: every single
        20-m SCL pixel on a 10-m grid) and lets them count as clear. Default ``None``:
        :data:`DEFAULT_OPENING_PX` (1) when ``buffer_m > 0``, 0 when ``buffer_m == 0``. Why: SCL
        flags scattered single pixels of bright ground (roofs, salt, tailings) as cloud, and a
        60 m buffer would turn each 20-m speck into a hole about 13 times its area on that date
        (odc-algo's ``mask_cleanup`` opens with 2 px before dilating for the same reason); an
        isolated 20-m speck is rarely a real cloud. Without a buffer nothing is inflated, so the
        SCL mask stays exactly as it is. ``0`` turns the opening off.

    Returns
    -------
    xarray.DataArray
        Boolean ``(time, y, x)``, lazy.

    Raises
    ------
    InvalidQueryError
        No SCL band, or a negative or non-numeric ``buffer_m`` / ``opening_px``.
    InvalidGridError
        ``buffer_m > 0`` on an array without a CRS.

    Examples
    --------
    >>> scl = xr.DataArray(np.array([[[[0, 4, 9, 3, 11]]]], "uint16"), dims=("time", "band", "y", "x"),
    ...                    coords={"band": ["SCL"]})
    >>> clear_mask(scl, buffer_m=0).values.tolist(), clear_mask(scl, buffer_m=0, snow=True).values.tolist()
    ([[[False, True, False, False, True]]], [[[False, True, False, False, False]]])

    A 10 m buffer on a 10 m grid masks the 4 neighbours of the cloud (9); nodata (0) is not grown.
    By default a buffer comes with a 1-px opening, which drops this lone one-pixel "cloud":

    >>> scl = xr.DataArray(np.array([[[[0, 4, 9, 4, 4], [4, 4, 4, 4, 4]]]], "uint8"),
    ...                    dims=("time", "band", "y", "x"),
    ...                    coords={"band": ["SCL"], "y": [15.0, 5.0], "x": [5.0, 15.0, 25.0, 35.0, 45.0]})
    >>> grid = scl.odc.assign_crs("EPSG:32719")
    >>> clear_mask(grid, buffer_m=10, opening_px=0).values[0].astype(int)
    array([[0, 0, 0, 0, 1],
           [1, 1, 0, 1, 1]])
    >>> clear_mask(grid, buffer_m=10).values[0].astype(int)
    array([[0, 1, 1, 1, 1],
           [1, 1, 1, 1, 1]])
    """
    return _masks(cube, classes=classes, snow=snow, saturated=saturated, buffer_m=buffer_m,
                  opening_px=opening_px).clear


def clear_fraction(cube: xr.DataArray, **mask_kwargs) -> xr.DataArray:
    """Fraction of the grid's pixels that are clear, per time step (lazy, ``(time,)``).

    The denominator is every pixel of the grid (the area of interest), with or without data, so a
    scene that covers half the area scores at most 0.5. ``mask_kwargs`` go to :func:`clear_mask`
    (the buffer included).

    Examples
    --------
    >>> scl = xr.DataArray(np.array([[[[0, 4, 9, 4]]]], "uint8"), dims=("time", "band", "y", "x"),
    ...                    coords={"band": ["SCL"]})
    >>> clear_fraction(scl, buffer_m=0).values.tolist()
    [0.5]
    """
    return clear_mask(cube, **mask_kwargs).mean(("y", "x"))


def valid_fraction(cube: xr.DataArray) -> xr.DataArray:
    """Fraction of the grid's pixels with data (SCL ≠ 0), per time step (lazy, ``(time,)``)."""
    return (_require_scl(cube) != 0).drop_vars("band").mean(("y", "x"))


# --------------------------------------------------------------------------- composites
def _reflectance(cube: xr.DataArray) -> xr.DataArray:
    bands = [b for b in cube.band.values if b != "SCL"]
    if not bands:
        raise InvalidQueryError(
            "The cube has no reflectance band besides SCL; build it with bands such as "
            "['B04', 'B03', 'B02', 'SCL'] to composite it."
        )
    return cube.sel(band=bands)


def _darkest_kernel(refl: np.ndarray, cand: np.ndarray, bright_idx: list[int]):
    """Per pixel, the candidate observation with the lowest mean over ``bright_idx`` bands.

    ``refl`` is ``(..., time, band)``, ``cand`` ``(..., time)``. Returns the values
    ``(..., band)`` (0 where no candidate) and the time index ``(...)`` (-1 where none).
    """
    refl = np.asarray(refl)
    bright = refl[..., bright_idx].astype("float64").mean(-1)
    usable = np.asarray(cand, bool) & (refl > 0).all(-1)  # a band without data is not "dark"
    bright = np.where(usable, bright, np.inf)
    idx = np.argmin(bright, axis=-1)
    found = usable.any(-1)
    values = np.take_along_axis(refl, idx[..., None, None], axis=-2)[..., 0, :]
    values = np.where(found[..., None], values, 0).astype(refl.dtype)
    return values, np.where(found, idx, -1).astype("int64")


def _darkest(refl: xr.DataArray, cand: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Lazy :func:`_darkest_kernel`: values ``(band, y, x)`` and time index ``(y, x)``."""
    names = [str(b) for b in refl.band.values]
    bright_idx = [names.index(b) for b in VISIBLE_BANDS if b in names] or list(range(len(names)))
    refl = refl.drop_vars([c for c in refl.coords if "time" in refl[c].dims and c != "time"])
    if dask.is_dask_collection(refl.data) or dask.is_dask_collection(cand.data):
        refl = refl.chunk({"time": -1, "band": -1})
        cand = cand.chunk({"time": -1})
    values, idx = xr.apply_ufunc(
        _darkest_kernel, refl, cand, kwargs={"bright_idx": bright_idx},
        input_core_dims=[["time", "band"], ["time"]], output_core_dims=[["band"], []],
        dask="parallelized", output_dtypes=[refl.dtype, np.int64],
    )
    return values.transpose("band", ...).assign_coords(band=refl.band.values), idx


def _never_clear(masks: _Masks) -> tuple[xr.DataArray, xr.DataArray]:
    """(clear count, never-clear pixels: data on some date, clear on none)."""
    count = masks.clear.sum("time").astype("uint16")
    never = masks.valid.any("time") & (count == 0)
    return count, never


#: SCL-clear observations a never-clear pixel needs for their median to fill it.
MIN_RAW_CLEAR = 3


def _fallback_sets(masks: _Masks, never: xr.DataArray, *,
                   rare: bool = True) -> tuple[xr.DataArray, xr.DataArray]:
    """How pixels seen clear too rarely are filled: (observations whose median fills them,
    candidates of the darkest-observation fill).

    A pixel seen clear fewer than :data:`MIN_RAW_CLEAR` times (never-clear ones included) with
    at least that many observations that SCL calls clear takes their median (buffered ones
    included): a cloud rim the buffer was there for cannot make a median of three. Otherwise
    the darkest of its observations that SCL calls clear or flags as cloud, cirrus or snow
    (:data:`FALLBACK_CLASSES`) fills it, if SCL flagged it at least once (else its clear looks
    stay): real clouds and their rims are brighter than the ground beneath. Shadows (3), "dark
    area" (2, often a cloud shadow), saturated and nodata never fill. ``rare=False`` limits all
    this to never-clear pixels (the least-cloudy mosaic keeps its ranking elsewhere).
    """
    raw = masks.raw_clear & (masks.scl != SCL_DARK)
    enough = raw.sum("time") >= MIN_RAW_CLEAR
    # Also pixels seen clear fewer than MIN_RAW_CLEAR times: one clear look may be a rim.
    few = (masks.clear.sum("time") < MIN_RAW_CLEAR) if rare else never
    median_set = few & enough & raw
    flagged = masks.valid & masks.scl.isin(FALLBACK_CLASSES) & ~masks.saturated
    cand = few & ~enough & flagged.any("time") & (masks.valid & raw | flagged)
    return median_set, cand


def median_composite(cube: xr.DataArray, *, fallback: bool = True, **mask_kwargs) -> xr.Dataset:
    """Per-pixel median of the clear observations, with the number of clear observations.

    Parameters
    ----------
    cube
        A cube ``(time, band, y, x)`` with reflectance bands and ``SCL``.
    fallback
        Fill pixels seen clear fewer than :data:`MIN_RAW_CLEAR` times (``never_clear`` ones
        and those with one or two clear looks, which may be an unflagged cloud rim): with the
        median of the observations SCL calls clear, the buffered ones included, when there are
        at least :data:`MIN_RAW_CLEAR` of them; else, if SCL flagged the pixel at least once,
        with the darkest observation that SCL calls clear or flags as cloud, cirrus or snow
        (:data:`FALLBACK_CLASSES`; marked ``fallback``). Real clouds and their rims are
        brighter than the ground beneath, so the darkest is the one least likely to be a cloud:
        on bright mine surfaces that SCL flags every time it is the ground (the price: a rarely
        clear pixel takes its darkest look, a little darker than a median). ``False`` keeps the
        median of the clear looks and leaves never-clear pixels 0 (nodata).
    **mask_kwargs
        ``classes``, ``snow``, ``saturated``, ``buffer_m``, ``opening_px``: see :func:`clear_mask`.

    Returns
    -------
    xarray.Dataset
        ``reflectance`` ``(band, y, x)`` uint16 (nodata 0 where nothing fills it),
        ``clear_count`` ``(y, x)`` uint16 (clear observations, buffer included),
        ``never_clear`` ``(y, x)`` bool (data on at least one date, clear on none),
        ``fallback`` ``(y, x)`` bool (filled from a flagged observation), and the lazy 0-d counts
        ``n_never_clear`` and ``n_fallback`` (variables, not attrs, so nothing is computed).

    Examples
    --------
    Three clear looks (SCL 4) and a cloud (SCL 9): the median of the clear ones.

    >>> looks = [(900, 4), (300, 4), (600, 4), (5000, 9)]
    >>> data = np.array([[[[v]], [[c]]] for v, c in looks], "uint16")
    >>> cube = xr.DataArray(data, dims=("time", "band", "y", "x"), coords={"band": ["B04", "SCL"]})
    >>> int(median_composite(cube, buffer_m=0).reflectance.squeeze())
    600

    Two clear looks are too few to trust (one may be a cloud's rim): as SCL flagged the pixel
    once, its darkest look fills it, marked ``fallback``.

    >>> out = median_composite(cube.isel(time=[0, 1, 3]), buffer_m=0)
    >>> int(out.reflectance.squeeze()), bool(out.fallback.squeeze())
    (300, True)
    """
    masks = _masks(cube, **mask_kwargs)
    count, never = _never_clear(masks)
    refl = _reflectance(cube)
    median_set, cand = _fallback_sets(masks, never)
    use = xr.where(median_set.any("time"), median_set, masks.clear) if fallback else masks.clear
    n_use = use.sum("time")
    # Pixels without an observation to use keep their values (no all-NaN medians); set to 0 below.
    masked = refl.where(use | (n_use == 0)).chunk({"time": -1})
    med = masked.median("time", skipna=True)
    out = xr.where(n_use > 0, med.round(), 0).astype("uint16")  # np.round(med) would compute
    if fallback:
        dark, idx = _darkest(refl, cand)
        filled = idx >= 0
        out = xr.where(filled, dark, out).astype("uint16")
    else:
        filled = xr.zeros_like(never)
    ds = _composite_dataset(cube, out, count, "median")
    return _add_markers(ds, never, filled, fallback, mask_kwargs)


def least_cloudy_composite(
    cube: xr.DataArray, *, max_cloud: float | None = None, fallback: bool = True, **mask_kwargs
) -> xr.Dataset:
    """Mosaic "least cloudy first": each pixel from the clearest scene where it is clear.

    Scenes are ranked by their clear fraction over the area of interest
    (:func:`clear_fraction`: clear pixels over all the grid's pixels, with the same mask as the
    mosaic, buffer included), not by the scene-level ``cloud_cover``: a scene 90 % cloudy
    elsewhere but clear over the grid comes first. Ties go to the lower ``cloud_cover`` (unknown
    last), then to the earlier scene. Ranking computes the per-scene fractions with one
    ``dask.compute``, which reads the SCL band once; everything else stays lazy. ``max_cloud``
    still drops scenes whose scene-level ``cloud_cover`` exceeds it first (LAMES kept scenes
    with at most 15 % cloud).

    Parameters
    ----------
    cube
        A cube ``(time, band, y, x)`` with reflectance bands and ``SCL`` (and ``cloud_cover``
        when ``max_cloud`` is given).
    max_cloud
        Scene-level limit (%) on ``cloud_cover``; None keeps every scene.
    fallback
        Fill never-clear pixels as in :func:`median_composite` (first scene in rank order among
        at least :data:`MIN_RAW_CLEAR` that SCL calls clear, else the darkest observation that
        SCL calls clear or flags as cloud, cirrus or snow); ``False`` leaves them 0.
    **mask_kwargs
        ``classes``, ``snow``, ``saturated``, ``buffer_m``, ``opening_px``: see :func:`clear_mask`.

    Returns
    -------
    xarray.Dataset
        As :func:`median_composite`, plus ``source_time`` ``(y, x)`` datetime64 of the scene each
        pixel came from (NaT if none), and the ranking: ``scene_clear_fraction`` and
        ``scene_rank`` (0 = first) along ``scene_time`` (the scenes after ``max_cloud``).

    Raises
    ------
    InvalidQueryError
        ``max_cloud`` without a ``cloud_cover`` coordinate, or no scene under ``max_cloud``.

    Examples
    --------
    >>> data = np.array([[[[900]], [[4]]], [[[300]], [[9]]]], "uint16")
    >>> cube = xr.DataArray(data, dims=("time", "band", "y", "x"), coords={
    ...     "band": ["B04", "SCL"], "time": np.array(["2022-01-01", "2022-02-01"], "datetime64[ns]"),
    ...     "cloud_cover": ("time", [95.0, 1.0])})
    >>> ds = least_cloudy_composite(cube, buffer_m=0)
    >>> int(ds.reflectance.squeeze()), ds.scene_rank.values.tolist()
    (900, [0, 1])
    """
    if max_cloud is not None:
        if "cloud_cover" not in cube.coords:
            raise InvalidQueryError(
                f"max_cloud={max_cloud} needs a cloud_cover coordinate, which the cube lacks; "
                "build it with build_cube(), or drop max_cloud."
            )
        keep = cube.cloud_cover.values <= max_cloud
        if not keep.any():
            raise InvalidQueryError(
                f"No scene has cloud_cover <= max_cloud={max_cloud} (scene values: "
                f"{np.round(cube.cloud_cover.values, 1).tolist()}); raise max_cloud."
            )
        cube = cube.isel(time=np.flatnonzero(keep))
    masks = _masks(cube, **mask_kwargs)
    n = cube.sizes["time"]
    cover = cube.cloud_cover.data if "cloud_cover" in cube.coords else np.full(n, np.nan)
    fractions, cover = dask.compute(masks.clear.mean(("y", "x")).data, cover)
    fractions = np.asarray(fractions, float).reshape(n)
    cover = np.asarray(cover, float).reshape(n)
    times = cube.time.values
    order = np.lexsort((np.argsort(np.argsort(times, kind="stable"), kind="stable"),
                        np.where(np.isnan(cover), np.inf, cover), -fractions))

    count, never = _never_clear(masks)
    median_set, cand = _fallback_sets(masks, never, rare=False)
    use = xr.where(median_set.any("time"), median_set, masks.clear) if fallback else masks.clear
    refl = _reflectance(cube)
    out = filled = source = None
    for k in order:
        take = use.isel(time=k, drop=True)
        value = refl.isel(time=k, drop=True)
        when = times[k].astype("datetime64[ns]")
        if out is None:
            out = xr.where(take, value, 0).astype("uint16")
            source = xr.where(take, when, np.datetime64("NaT", "ns"))
            filled = take
        else:
            take = take & ~filled
            out = xr.where(take, value, out).astype("uint16")
            source = xr.where(take, when, source)
            filled = filled | take
    if fallback:
        dark, idx = _darkest(refl, cand)
        flagged = idx >= 0
        out = xr.where(flagged, dark, out).astype("uint16")
        times_ns = times.astype("datetime64[ns]")
        dark_time = xr.apply_ufunc(
            lambda i: np.where(i >= 0, times_ns[np.clip(i, 0, None)], np.datetime64("NaT", "ns")),
            idx, dask="parallelized", output_dtypes=["datetime64[ns]"])
        source = xr.where(flagged, dark_time, source)
    else:
        flagged = xr.zeros_like(never)
    ds = _composite_dataset(cube, out, count, "least_cloudy")
    ds["source_time"] = _drop_scene_coords(source)
    ds = _add_markers(ds, never, flagged, fallback, mask_kwargs)
    rank = np.empty(n, "int64")
    rank[order] = np.arange(n)
    ds["scene_clear_fraction"] = xr.DataArray(fractions, dims="scene_time",
                                              coords={"scene_time": times})
    ds["scene_rank"] = xr.DataArray(rank, dims="scene_time", coords={"scene_time": times})
    ds.attrs["ranking"] = "aoi_clear_fraction"
    return ds


_SCENE_COORDS = ("time", "solar_day", "cloud_cover", "n_items")


def _drop_scene_coords(da: xr.DataArray) -> xr.DataArray:
    return da.drop_vars([c for c in _SCENE_COORDS if c in da.coords])


def _composite_dataset(cube, refl, count, method) -> xr.Dataset:
    refl = _drop_scene_coords(refl).transpose("band", ...).assign_attrs(cube.attrs)
    count = _drop_scene_coords(count)
    ds = xr.Dataset({"reflectance": refl, "clear_count": count})
    ds.attrs = {"composite": method, "n_scenes": int(cube.sizes["time"])}
    return ds


def _add_markers(ds: xr.Dataset, never, filled, fallback: bool, mask_kwargs: dict) -> xr.Dataset:
    never = _drop_scene_coords(never)
    filled = _drop_scene_coords(filled).astype(bool)
    ds["never_clear"] = never
    ds["fallback"] = filled
    ds["n_never_clear"] = never.sum().astype("int64")
    ds["n_fallback"] = filled.sum().astype("int64")
    buffer_m = float(mask_kwargs.get("buffer_m", DEFAULT_CLOUD_BUFFER_M))
    ds.attrs.update({
        "cloud_buffer_m": buffer_m,
        "opening_px": _opening(mask_kwargs.get("opening_px"), buffer_m),
        "fallback": int(fallback),
    })
    return ds


def composite(cube: xr.DataArray, method: str = "median", **kwargs) -> xr.Dataset:
    """Dispatch to :func:`median_composite` or :func:`least_cloudy_composite`."""
    if method == "median":
        return median_composite(cube, **kwargs)
    if method == "least_cloudy":
        return least_cloudy_composite(cube, **kwargs)
    raise InvalidQueryError(f"method={method!r} is not one of {METHODS}; pick one of them.")


def yearly_composites(cube: xr.DataArray, method: str = "median", **kwargs) -> xr.Dataset:
    """One composite per calendar year (of the local solar day), stacked along ``year``.

    With ``method="least_cloudy"`` and ``max_cloud``, a year without any scene under the limit
    is left out (listed in ``attrs["skipped_years"]``); if every year is, it raises. The
    least-cloudy ranking variables run along the union of the years' ``scene_time`` values
    (``scene_rank`` -1 and ``scene_clear_fraction`` NaN for another year's scenes).
    """
    when = cube.solar_day if "solar_day" in cube.coords else cube.time
    year_of = when.dt.year
    years = sorted(set(year_of.values.tolist()))
    skipped = []
    if method == "least_cloudy" and kwargs.get("max_cloud") is not None:
        ok = {y: bool((cube.cloud_cover.values[year_of.values == y] <= kwargs["max_cloud"]).any())
              for y in years}
        skipped = [y for y in years if not ok[y]]
        years = [y for y in years if ok[y]]
        if not years:
            raise InvalidQueryError(
                f"No year has a scene with cloud_cover <= max_cloud={kwargs['max_cloud']}; "
                "raise max_cloud."
            )
    parts = [composite(cube.isel(time=np.flatnonzero(year_of.values == y)), method, **kwargs)
             for y in years]
    out = xr.concat(parts, dim=xr.DataArray(years, dims="year", name="year"),
                    data_vars="all", coords="different", compat="equals", join="outer",
                    fill_value={"scene_rank": -1, "scene_clear_fraction": np.nan},
                    combine_attrs="drop_conflicts")
    out.attrs["skipped_years"] = skipped
    return out


def to_rgb8(
    data: xr.DataArray, *, bands: Sequence[str] = ("B04", "B03", "B02"), max_reflectance: float = 0.3
) -> xr.DataArray:
    """8-bit true colour (R, G, B) like the LAMES imagery: reflectance 0..max_reflectance → 1..255.

    Nodata (0) stays 0; valid pixels are at least 1.

    Examples
    --------
    >>> da = xr.DataArray(np.array([[0], [1500], [6000]], "uint16"), dims=("band", "x"),
    ...                   coords={"band": ["B04", "B03", "B02"]})
    >>> to_rgb8(da).values.ravel().tolist()
    [0, 128, 255]
    """
    sel = data.sel(band=list(bands))
    scaled = np.clip(np.round(sel.astype("float32") * (255.0 / (max_reflectance * 10_000))), 1, 255)
    out = xr.where(sel == 0, 0, scaled).astype("uint8")
    return out.assign_coords(band=["R", "G", "B"]).assign_attrs(
        {"nodata": 0, "rgb_max_reflectance": max_reflectance})
