"""Mining extent over time: area per site (or region) and year, growth, the first year of mining.

Every area here is **true ground area** on the WGS84 ellipsoid, whatever the grid's projection:
:func:`pixel_area` gives each pixel's m² (an EPSG:3857 pixel of "10 m" covers about 83 m² at
24° S, a UTM pixel about 100 m²), so the same polygons measure the same on any grid.

- :func:`pixel_area`: m² per pixel of a grid (lazy when the grid's cube is);
- :func:`extent_over_time`: from a prediction (:func:`lames_cube.ml.predict`: ``class`` and
  ``probability``) or from labels alone (a 0/1 or class mask), with or without a ``year``
  dim: mining km² per site and year, the growth per year and a confidence band from the
  probability layer, plus a ``total`` row per year;
- :func:`first_mining_year`: the new-mining map (the first year each pixel is mining);
- :func:`compare_with_truth`: the error against a truth table (the synthetic world's
  ``truth.csv``: ``site_id``, ``year``, ``area_m2``).

Examples
--------
>>> import numpy as np, xarray as xr
>>> from odc.geo.geobox import GeoBox
>>> from odc.geo.xr import xr_coords
>>> gbox = GeoBox.from_bbox((300000, 7300000, 301000, 7301000), "EPSG:32719", resolution=10)
>>> mask = np.zeros((2, 100, 100), np.uint8)
>>> mask[0, :10, :10] = 1                     # 100 px in 2020
>>> mask[1, :20, :10] = 1                     # 200 px in 2021
>>> labels = xr.DataArray(mask, dims=("year", "y", "x"),
...                       coords={"year": [2020, 2021], **xr_coords(gbox)})
>>> table = extent_over_time(labels)
>>> table[["site_id", "year", "area_km2", "growth_km2"]].round(4).to_numpy().tolist()
[['total', 2020, 0.01, nan], ['total', 2021, 0.02, 0.01]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from rasterio.features import geometry_mask

from lames_cube.errors import (
    ExtentError,
)
from lames_cube.grid import geodesic_area

__all__ = ["ExtentError", "compare_with_truth", "extent_over_time", "first_mining_year",
           "pixel_area"]

#: Classes that are not mining in a prediction or label mask: background and no data.
_NOT_MINING = (0, 255)



# ------------------------------------------------------------------------------ pixel area
def _geobox(like: Any) -> GeoBox:
    if isinstance(like, GeoBox):
        return like
    gbox = getattr(getattr(like, "odc", None), "geobox", None)
    if gbox is None or gbox.crs is None:
        raise ExtentError("the grid has no CRS: pixel areas need one. Assign it first, e.g. "
                          "cube.odc.assign_crs('EPSG:32719') or cube.rio.write_crs(...).")
    return gbox


def pixel_area(like: Any, *, step: int = 16) -> xr.DataArray:
    """True ground area of every pixel of a grid, in m² (:func:`lames_cube.grid.geodesic_area`).

    Parameters
    ----------
    like
        A cube (``xarray`` object with a CRS) or an odc-geo ``GeoBox``. A dask-backed
        DataArray gives a lazy result chunked like its y/x.
    step
        Pixels between exact evaluations; the area is bilinear in between (the error is far
        below 1e-6 for any projection at 10 m). Grids whose pixel area depends on the row only
        (north-up lon/lat, EPSG:3857 and other cylindrical projections) are exact on every row.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` float64 m² on the grid's coordinates.

    Examples
    --------
    >>> g = GeoBox.from_bbox((-7696000, -2800000, -7695000, -2799000), "EPSG:3857",
    ...                      resolution=10)
    >>> a = pixel_area(g)                 # 10 m Web Mercator pixels near 24.4° S
    >>> round(float(a.mean()), 1)         # ~ 100 m² x cos²(lat)
    82.6
    """

    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ExtentError(f"step={step!r} must be a positive number of pixels, e.g. 16.")
    gbox = _geobox(like)
    coords = xr_coords(gbox, crs_coord_name="spatial_ref")
    ydim, xdim = gbox.dimensions
    data = getattr(like, "data", None) if not isinstance(like, GeoBox) else None
    chunks = getattr(data, "chunks", None)
    if chunks is not None and isinstance(like, xr.DataArray):
        ychunks = chunks[like.get_axis_num(ydim)]
        xchunks = chunks[like.get_axis_num(xdim)]

        def block(block_info=None):
            (y0, y1), (x0, x1) = block_info[None]["array-location"]
            return geodesic_area(gbox[y0:y1, x0:x1], step=step)

        arr = da.map_blocks(block, chunks=(ychunks, xchunks), dtype=np.float64,
                            meta=np.array((), np.float64))
    else:
        arr = geodesic_area(gbox, step=step)
    return xr.DataArray(arr, dims=(ydim, xdim), coords=coords, name="pixel_area",
                        attrs={"units": "m2", "long_name": "true ground area of the pixel"})


# --------------------------------------------------------------------------------- extent
def _mining_layers(source: Any, threshold: float, band: tuple[float, float]):
    """``(mining, low, high, expected, valid)`` DataArrays from a prediction or a mask."""
    if isinstance(source, xr.Dataset):
        if "class" not in source or "probability" not in source:
            raise ExtentError(f"a prediction Dataset needs 'class' and 'probability' (the "
                              f"output of lames_cube.ml.predict); it has "
                              f"{sorted(map(str, source.data_vars))}.")
        cls, prob = source["class"], source["probability"]
        valid = cls != 255
        if prob.dtype == np.uint8:
            prob = prob.astype(np.float32) / 255
        prob = prob.where(valid, 0)
        if threshold == 0.5 and source.attrs.get("model_task", "site") in ("site", "mining"):
            mining = (cls == 1) & valid   # the predicted class (argmax): p >= 0.5 in 2 classes
        else:
            mining = (prob >= threshold) & valid
        return mining, (prob >= band[1]) & valid, (prob >= band[0]) & valid, prob, valid
    if isinstance(source, xr.DataArray):
        if source.dtype == bool:
            mining = source
        else:
            mining = ~source.isin(list(_NOT_MINING)) & source.notnull()
        valid = ((source != 255) & source.notnull() if source.dtype != bool
                 else xr.ones_like(source, dtype=bool))
        return mining, mining, mining, mining.astype(np.float32), valid
    raise ExtentError(f"source must be a prediction Dataset (lames_cube.ml.predict) or a "
                      f"label DataArray (lames_cube.rasterize); got {type(source).__name__}.")


def _site_masks(like: xr.DataArray, sites: Any, id_column: str,
                buffer_m: float) -> dict[str, tuple[dict[str, slice], np.ndarray]]:
    """Per site: the window of the grid around its polygons (buffered by ``buffer_m``) as
    ``isel`` slices, and the boolean mask of the polygons in that window (never a whole
    country-sized mask per site)."""

    if not isinstance(sites, gpd.GeoDataFrame) or id_column not in sites:
        raise ExtentError(f"sites must be a GeoDataFrame with a {id_column!r} column (e.g. "
                          f"lames_cube.annotations.load_sites()); got "
                          f"{type(sites).__name__}.")
    gbox = _geobox(like)
    ydim, xdim = gbox.dimensions
    local = sites.to_crs(gbox.crs.to_wkt())
    if buffer_m:
        metric = sites.to_crs(sites.estimate_utm_crs()).buffer(buffer_m)
        local = local.set_geometry(metric.to_crs(gbox.crs.to_wkt()).values)
    inverse = ~gbox.transform
    out = {}
    for site_id, group in local.groupby(id_column, sort=True):
        w, s, e, n = group.total_bounds
        cols, rows = zip(*(inverse @ (x, y) for x, y in ((w, s), (w, n), (e, s), (e, n))),
                         strict=True)
        r0, r1 = max(0, int(np.floor(min(rows)))), min(gbox.shape[0], int(np.ceil(max(rows))))
        c0, c1 = max(0, int(np.floor(min(cols)))), min(gbox.shape[1], int(np.ceil(max(cols))))
        if r0 >= r1 or c0 >= c1:
            continue  # the site is off this grid
        window = gbox[r0:r1, c0:c1]
        inside = ~geometry_mask(list(group.geometry), out_shape=window.shape,
                                transform=window.transform, all_touched=False)
        if inside.any():
            out[str(site_id)] = ({ydim: slice(r0, r1), xdim: slice(c0, c1)}, inside)
    return out


def extent_over_time(
    source: xr.Dataset | xr.DataArray | Mapping[str, xr.Dataset | xr.DataArray],
    *,
    sites: Any = None,
    id_column: str = "site_id",
    buffer_m: float = 250.0,
    threshold: float = 0.5,
    band: tuple[float, float] = (0.3, 0.7),
    total: bool = True,
) -> pd.DataFrame:
    """Mining area per site and year, in km² of true ground area.

    Parameters
    ----------
    source
        A prediction (:func:`lames_cube.ml.predict` or a store of
        :func:`lames_cube.ml.write_prediction`: ``class`` and ``probability``), or labels
        alone (:func:`lames_cube.rasterize`: 0 background, any other class mining, 255 no
        data; or booleans), with an optional ``year`` (or ``time``) dim; or a mapping
        ``{site_id: prediction or labels}`` of per-site cubes on their own grids (the demo's
        per-site UTM cubes), each measured whole unless ``sites`` is given too.
    sites
        Polygons (a GeoDataFrame with ``id_column``): the area is counted inside each site's
        polygons grown by ``buffer_m`` (mines grow past their labels; sites that miss the grid
        get no row, and each site is measured on a window around it). None: the whole grid
        (one row per year named ``total``, or the mapping's keys).
    id_column, buffer_m
        The site id column, and how far around its polygons mining still counts as the site's.
    threshold
        Mine probability from which a pixel is mining (0.5: the predicted class of a binary
        model).
    band
        ``(low, high)`` probabilities: the confidence band is the area with ``p >= high``
        (``low_km2``, only confident pixels) to ``p >= low`` (``high_km2``, every plausible
        one). Labels give a band of zero width.
    total
        Add a ``total`` row per year: the whole grid for a single cube; for a mapping, the
        sum over its rows (with ``sites``: over the sites, so land within the buffers of two
        sites counts twice).

    Returns
    -------
    pandas.DataFrame
        ``site_id``, ``year`` (None without a year dim), ``area_km2`` (mining), ``low_km2``,
        ``high_km2``, ``expected_km2`` (the sum of probability x area), ``scored_km2`` (pixels
        with data), ``growth_km2`` (the change since the previous year, NaN in the first).

    Raises
    ------
    ExtentError
        A source that is neither, a grid without a CRS, bad threshold or band, sites without
        ``id_column``.
    """
    lo, hi = band if isinstance(band, Sequence) and len(band) == 2 else (None, None)
    if lo is None or not (0 < lo <= threshold <= hi < 1 + 1e-9):
        raise ExtentError(f"band={band!r} and threshold={threshold!r} must satisfy "
                          f"0 < low <= threshold <= high <= 1, e.g. band=(0.3, 0.7), "
                          f"threshold=0.5.")
    if isinstance(source, Mapping) and not isinstance(source, xr.Dataset):
        parts = []
        for name, part in source.items():
            sub = extent_over_time(part, sites=sites, id_column=id_column, buffer_m=buffer_m,
                                   threshold=threshold, band=band, total=sites is None)
            if sites is None:
                sub["site_id"] = str(name)
            parts.append(sub)
        for k, part in enumerate(parts):
            part["_cube"] = k
        table = pd.concat(parts, ignore_index=True)
        if sites is not None:  # a site seen by two cubes: all its years from the cube that
            table = table[table.site_id != "total"]  # covers most of it
            scored = table.groupby(["site_id", "_cube"])["scored_km2"].sum().reset_index()
            best = scored.sort_values(["scored_km2", "_cube"], ascending=[False, True])
            best = best.drop_duplicates("site_id")
            table = table.merge(best[["site_id", "_cube"]], on=["site_id", "_cube"])
        return _finish(table.drop(columns="_cube"), total)

    mining, low, high, expected, valid = _mining_layers(source, threshold, band)
    area = pixel_area(mining)  # m²; km² below
    time_dim = next((d for d in ("year", "time") if d in mining.dims), None)
    regions = ({"total": None} if sites is None
               else _site_masks(mining, sites, id_column, buffer_m))
    if sites is not None and total:
        regions["total"] = None
    rows = []
    layers = {"area_km2": mining, "low_km2": low, "high_km2": high,
              "expected_km2": expected, "scored_km2": valid}
    ydim, xdim = _geobox(mining).dimensions
    for name, region in regions.items():
        if region is None:
            window, weight = {}, area.variable
        else:
            window, inside = region
            weight = area.isel(window).variable * inside
        sums = {k: (v.isel(window).variable.astype(np.float64) * weight).sum((ydim, xdim)) / 1e6
                for k, v in layers.items()}
        sums = xr.Dataset(sums, coords={time_dim: mining[time_dim]} if time_dim else None)
        sums = sums.compute()
        years = sums[time_dim].values if time_dim else [None]
        for i, year in enumerate(years):
            row = {"site_id": name,
                   "year": (int(year) if time_dim == "year" else year) if time_dim else None}
            for k in layers:
                v = sums[k].values
                row[k] = float(v[i] if time_dim else v)
            rows.append(row)
    return _finish(pd.DataFrame(rows), total=False)


def _finish(table: pd.DataFrame, total: bool) -> pd.DataFrame:
    cols = ["area_km2", "low_km2", "high_km2", "expected_km2", "scored_km2"]
    table = table[table.site_id != "total"] if total else table
    if total and len(table):
        sums = table.groupby("year", dropna=False, sort=True)[cols].sum().reset_index()
        if table.year.isna().all():  # no year dim: None, as in the sites' rows
            sums["year"] = None
        table = pd.concat([table, sums.assign(site_id="total")], ignore_index=True)
    table = table.sort_values(["site_id", "year"], kind="stable").reset_index(drop=True)
    table["growth_km2"] = table.groupby("site_id", sort=False)["area_km2"].diff()
    return table[["site_id", "year", *cols, "growth_km2"]]


def first_mining_year(source: xr.Dataset | xr.DataArray, *, threshold: float = 0.5,
                      persistent: bool = True) -> xr.DataArray:
    """The new-mining map: the first year each pixel is mining (0 where it never is).

    Parameters
    ----------
    source
        A prediction or labels with a ``year`` dim (see :func:`extent_over_time`).
    threshold
        Mine probability from which a pixel is mining.
    persistent
        Count a pixel from the first year after which it stays mining (mines do not heal in
        a few years: a one-year flicker of the model is not new mining). False: the first year
        it is mining at all. A year without data at a pixel keeps the year before's state.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` uint16 years, 0 = never mining (computed: pass a site's or a tile's window
        of a country-sized prediction).

    Examples
    --------
    >>> m = xr.DataArray(np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], np.uint8)[:, None, :],
    ...                  dims=("year", "y", "x"), coords={"year": [2020, 2021, 2022]})
    >>> first_mining_year(m).values.tolist(), first_mining_year(m, persistent=False).values.tolist()
    ([[2022, 2020, 2021]], [[2020, 2020, 2021]])
    """
    if "year" not in source.dims:
        raise ExtentError(f"first_mining_year needs a 'year' dim; the source has dims "
                          f"{tuple(source.dims)}. Use yearly composites (composite.period: "
                          f"year).")
    source = source.sortby("year")
    mining, *_, valid = _mining_layers(source, threshold, (threshold, threshold))
    mining, valid = mining.transpose("year", ...), valid.transpose("year", ...)
    # a year without data (a cloud hole) keeps the state of the year before it
    m = np.asarray(mining.values, dtype=bool).copy()
    ok = np.asarray(valid.values, dtype=bool)
    for k in range(1, m.shape[0]):
        m[k] = np.where(ok[k], m[k], m[k - 1])
    if persistent:  # mining in this year and every later one
        m = np.flip(np.cumprod(np.flip(m, 0), axis=0), 0).astype(bool)
    years = mining["year"].values.astype(np.uint16)
    first = np.where(m.any(axis=0), years[np.argmax(m, axis=0)], 0).astype(np.uint16)
    out = xr.DataArray(first, dims=mining.dims[1:],
                       coords={k: v for k, v in mining.coords.items() if "year" not in v.dims},
                       name="first_mining_year",
                       attrs={"long_name": "first year of mining", "nodata": 0,
                              "persistent": int(persistent)})
    return out


def compare_with_truth(extent: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Measured against true area per site and year (the synthetic world's ``truth.csv``).

    Parameters
    ----------
    extent
        The table of :func:`extent_over_time`.
    truth
        ``site_id``, ``year``, ``area_m2`` (:meth:`lames_cube.synthetic.World.truth`).

    Returns
    -------
    pandas.DataFrame
        The extent's rows that have a truth, with ``truth_km2``, ``error_km2`` (measured −
        true), ``relative_error`` (of the truth) and ``in_band`` (truth within the band).

    Examples
    --------
    >>> ext = pd.DataFrame({"site_id": ["1"], "year": [2020], "area_km2": [1.1],
    ...                     "low_km2": [0.9], "high_km2": [1.3]})
    >>> out = compare_with_truth(ext, pd.DataFrame({"site_id": ["1"], "year": [2020],
    ...                                             "area_m2": [1.0e6]}))
    >>> out[["error_km2", "relative_error", "in_band"]].round(3).to_numpy().tolist()
    [[0.1, 0.1, True]]
    """
    missing = {"site_id", "year", "area_m2"} - set(truth.columns)
    if missing:
        raise ExtentError(f"the truth table lacks columns {sorted(missing)} (it has "
                          f"{list(truth.columns)}); pass World.truth() or truth.csv.")
    years = pd.to_numeric(extent.year, errors="coerce")
    if years.isna().any() or (years % 1 != 0).any():
        raise ExtentError(f"the extent's years must be whole years to meet the truth's; got "
                          f"{extent.year.unique()[:5].tolist()}. Measure a source with a 'year' "
                          f"dim (yearly composites).")
    extent = extent.assign(year=years.astype(int))
    t = truth[["site_id", "year", "area_m2"]].assign(
        site_id=truth.site_id.astype(str), year=truth.year.astype(int),
        truth_km2=truth.area_m2 / 1e6).drop(columns="area_m2")
    out = extent.assign(site_id=extent.site_id.astype(str)).merge(t, on=["site_id", "year"])
    out["error_km2"] = out.area_km2 - out.truth_km2
    out["relative_error"] = out.error_km2 / out.truth_km2.where(out.truth_km2 > 0)
    out["in_band"] = (out.low_km2 <= out.truth_km2) & (out.truth_km2 <= out.high_km2)
    return out
