"""Cloud masks from SCL, per-scene clear fractions, and composites (median, least cloudy first).

All functions take and return lazy xarray objects: nothing is computed until asked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from lames_cube.bands import SCL_CLOUD
from lames_cube.errors import InvalidQueryError

#: SCL classes for snow and for saturated/defective pixels (optional in masks).
SCL_SNOW = 11
SCL_SATURATED = 1
METHODS = ("median", "least_cloudy")


def _require_scl(cube: xr.DataArray) -> xr.DataArray:
    if "band" not in cube.dims or "SCL" not in list(cube.band.values):
        have = list(cube.band.values) if "band" in cube.dims else []
        raise InvalidQueryError(
            f"The cube has no SCL band (bands: {have}); build it with 'SCL' in bands= to mask clouds."
        )
    return cube.sel(band="SCL")


def clear_mask(
    cube: xr.DataArray,
    *,
    classes: Sequence[int] = SCL_CLOUD,
    snow: bool = False,
    saturated: bool = False,
) -> xr.DataArray:
    """True where an observation has data and is clear of clouds (lazy, ``(time, y, x)``).

    Parameters
    ----------
    cube
        A cube with an ``SCL`` band.
    classes
        SCL classes that are not clear (default shadow 3, medium/high cloud 8/9, cirrus 10).
    snow, saturated
        Also mask snow (11) / saturated or defective pixels (1).

    Examples
    --------
    >>> scl = xr.DataArray(np.array([[[0, 4, 9, 3, 11]]], "uint16"), dims=("band", "time", "x"),
    ...                    coords={"band": ["SCL"]}).transpose("time", "band", "x")
    >>> clear_mask(scl).values.tolist(), clear_mask(scl, snow=True).values.tolist()
    ([[False, True, False, False, True]], [[False, True, False, False, False]])
    """
    scl = _require_scl(cube)
    bad = list(classes) + ([SCL_SNOW] if snow else []) + ([SCL_SATURATED] if saturated else [])
    return ((scl != 0) & ~scl.isin(bad)).drop_vars("band")


def clear_fraction(cube: xr.DataArray, **mask_kwargs) -> xr.DataArray:
    """Fraction of the grid's pixels that are clear, per time step (lazy, ``(time,)``)."""
    return clear_mask(cube, **mask_kwargs).mean(("y", "x"))


def valid_fraction(cube: xr.DataArray) -> xr.DataArray:
    """Fraction of the grid's pixels with data (SCL ≠ 0), per time step (lazy, ``(time,)``)."""
    return (_require_scl(cube) != 0).drop_vars("band").mean(("y", "x"))


def _reflectance(cube: xr.DataArray) -> xr.DataArray:
    bands = [b for b in cube.band.values if b != "SCL"]
    if not bands:
        raise InvalidQueryError(
            "The cube has no reflectance band besides SCL; build it with bands such as "
            "['B04', 'B03', 'B02', 'SCL'] to composite it."
        )
    return cube.sel(band=bands)


def median_composite(cube: xr.DataArray, **mask_kwargs) -> xr.Dataset:
    """Per-pixel median of the clear observations, with the number of clear observations.

    Returns
    -------
    xarray.Dataset
        ``reflectance`` ``(band, y, x)`` uint16 (nodata 0 where no clear observation) and
        ``clear_count`` ``(y, x)`` uint16.
    """
    clear = clear_mask(cube, **mask_kwargs)
    count = clear.sum("time").astype("uint16")
    # Pixels never clear keep their values (no all-NaN medians); they are set to 0 below.
    masked = _reflectance(cube).where(clear | (count == 0)).chunk({"time": -1})
    med = masked.median("time", skipna=True)
    out = xr.where(count > 0, np.round(med), 0).astype("uint16")
    return _composite_dataset(cube, out, count, "median")


def least_cloudy_composite(
    cube: xr.DataArray, *, max_cloud: float | None = None, **mask_kwargs
) -> xr.Dataset:
    """Mosaic "least cloudy first": each pixel from the clearest scene where it is clear.

    Scenes are ordered by their scene-level ``cloud_cover`` coordinate (as LAMES did, which
    kept scenes with at most 15 % cloud); ``max_cloud`` drops cloudier scenes first.

    Returns
    -------
    xarray.Dataset
        ``reflectance`` ``(band, y, x)`` uint16, ``clear_count`` ``(y, x)`` uint16, and
        ``source_time`` ``(y, x)`` datetime64 of the scene each pixel came from (NaT if none).
    """
    if "cloud_cover" not in cube.coords:
        raise InvalidQueryError("The cube has no cloud_cover coordinate; build it with build_cube().")
    keep = cube.cloud_cover.values <= max_cloud if max_cloud is not None else np.ones(cube.sizes["time"], bool)
    if not keep.any():
        raise InvalidQueryError(
            f"No scene has cloud_cover <= max_cloud={max_cloud} (scene values: "
            f"{np.round(cube.cloud_cover.values, 1).tolist()}); raise max_cloud."
        )
    cube = cube.isel(time=np.flatnonzero(keep))
    order = np.argsort(cube.cloud_cover.values, kind="stable")
    clear = clear_mask(cube, **mask_kwargs)
    refl = _reflectance(cube)
    out = None
    source = None
    for k in order:
        value = xr.where(clear.isel(time=k), refl.isel(time=k), 0).astype("uint16")
        when = xr.where(clear.isel(time=k), cube.time.values[k], np.datetime64("NaT", "ns"))
        if out is None:
            out, source = value, when
        else:
            take = (out.isel(band=0) == 0) & clear.isel(time=k)
            out = xr.where(take, value, out).astype("uint16")
            source = xr.where(take, when, source)
    count = clear.sum("time").astype("uint16")
    ds = _composite_dataset(cube, out.drop_vars("time", errors="ignore"), count, "least_cloudy")
    ds["source_time"] = source.drop_vars("time", errors="ignore")
    return ds


def _composite_dataset(cube, refl, count, method) -> xr.Dataset:
    drop = [c for c in ("time", "solar_day", "cloud_cover", "n_items") if c in refl.coords]
    refl = refl.drop_vars(drop).transpose("band", ...).assign_attrs(cube.attrs)
    count = count.drop_vars([c for c in drop if c in count.coords])
    ds = xr.Dataset({"reflectance": refl, "clear_count": count})
    ds.attrs = {"composite": method, "n_scenes": int(cube.sizes["time"])}
    return ds


def composite(cube: xr.DataArray, method: str = "median", **kwargs) -> xr.Dataset:
    """Dispatch to :func:`median_composite` or :func:`least_cloudy_composite`."""
    if method == "median":
        return median_composite(cube, **kwargs)
    if method == "least_cloudy":
        return least_cloudy_composite(cube, **kwargs)
    raise InvalidQueryError(f"method={method!r} is not one of {METHODS}.")


def yearly_composites(cube: xr.DataArray, method: str = "median", **kwargs) -> xr.Dataset:
    """One composite per calendar year (of the local solar day), stacked along ``year``.

    With ``method="least_cloudy"`` and ``max_cloud``, a year without any scene under the limit
    is left out (listed in ``attrs["skipped_years"]``); if every year is, it raises.
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
