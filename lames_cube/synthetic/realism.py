"""How hard is the synthetic world? The realism measures of issue 7, per site.

Real LAMES imagery is hard: mines are barely brighter than their surroundings, the ground is
textured, and a per-pixel classifier on true colour separates mine from ground only moderately
(F1 about 0.6), while spatial context helps. This module measures the same things on a synthetic
world so that the renderer can be checked against them:

``contrast``
    ``|mean_grey(mine) - mean_grey(ground)| / mean_grey(ground)``, grey = mean of the 8-bit
    true-colour R, G, B (reflectance 0..0.3 → 1..255, as :func:`lames_cube.composite.to_rgb8`).
``texture``
    median, over ground pixels, of the 5 × 5 local standard deviation ÷ the 5 × 5 local mean of
    the grey level.
``f1_rgb``, ``f1_all``
    F1 of the mine class of a random forest trained on pixels of one half of the box and tested
    on pixels of the other half (both ways, averaged), on the 8-bit R, G, B or on the six
    reflectance bands.
``f1_context``
    the same forest on R, G, B plus multi-scale local means and standard deviations (uniform
    windows of 5, 15 and 45 px) of R, G, B and grey; ``context_gain = f1_context - f1_rgb``.

:func:`measure` works on plain arrays; :func:`check_world` renders each site's box
(:func:`site_box`) cloud-free and measures it; :func:`check_path` does so for a written world
(``lames-cube world check PATH``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from scipy import ndimage
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score

from lames_cube.bands import WORLD_BANDS
from lames_cube.composite import to_rgb8
from lames_cube.errors import UnknownSiteError, WorldError
from lames_cube.synthetic.world import World, WorldSpec
from lames_cube.synthetic.write import MANIFEST

__all__ = [
    "CONTEXT_SCALES",
    "FOREST",
    "FORESTS",
    "REAL_LAMES",
    "THRESHOLDS",
    "check_path",
    "check_world",
    "clear_sky_date",
    "failures",
    "format_table",
    "measure",
    "open_world",
    "site_box",
    "site_row",
    "to_grey",
]

#: Acceptance thresholds of issue 7: measure → (comparison, value). NaN never passes.
THRESHOLDS: dict[str, tuple[str, float]] = {
    "contrast": ("<=", 0.35),
    "texture": (">=", 0.04),
    "f1_rgb": ("<=", 0.72),
    "f1_all": ("<=", 0.80),
    "context_gain": (">=", 0.10),
}
#: The same measures on real LAMES imagery (8-bit true colour, 10 m), printed for reference.
REAL_LAMES: dict[str, float] = {"contrast": 0.15, "texture": 0.07, "f1_rgb": 0.6}
#: Window sides (px) of the context features.
CONTEXT_SCALES: tuple[int, ...] = (5, 15, 45)
#: Random forest settings of every separability measure (``random_state`` is the seed).
FOREST: dict = {"n_estimators": 30, "min_samples_leaf": 5, "max_features": "sqrt",
                "max_samples": 0.5, "n_jobs": 1}
#: The forests :func:`measure` fits (features: 8-bit RGB, the six bands, RGB with context, RGB
#: with balanced classes).
FORESTS: tuple[str, ...] = ("rgb", "all", "context", "rgb_balanced")
#: Window side (px) of the texture measure.
TEXTURE_WINDOW = 5
#: Fewest mine pixels a training or test sample needs for a direction to be scored.
MIN_MINE_PX = 20

#: The true-colour bands, red first (the order of quicklooks and the RGB forest)
RGB_BANDS = ("B04", "B03", "B02")
_REFLECTANCE = tuple(b for b in WORLD_BANDS if b != "SCL")


# ---------------------------------------------------------------------------------------- grids
def site_row(world, site_id: str | int):
    """The row of ``world.sites`` of one site (a one-row GeoDataFrame).

    Raises
    ------
    UnknownSiteError
        The site is not drawn in ``world`` (the message lists its sites).

    Examples
    --------
    >>> from lames_cube.synthetic import World, WorldSpec
    >>> w = World(WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1))
    >>> len(site_row(w, w.sites.site_id[0]))
    1
    """
    sites = world.sites
    row = sites[sites.site_id == str(site_id)]
    if len(row) == 0:
        raise UnknownSiteError(
            f"Site {str(site_id)!r} is not in this world (sites: {list(sites.site_id)}); pick one "
            "of them or build the world with it in WorldSpec.site_ids."
        )
    return row


def clear_sky_date(world, year: int | None = None) -> tuple[int, dt.date | None]:
    """The year of the mines to measure (default: the world's last) and the date whose
    ground a clear-sky render of that year shows (None: the world's reference, its last year).

    Raises
    ------
    WorldError
        ``year`` is not one of the world's years.

    Examples
    --------
    >>> from lames_cube.synthetic import World, WorldSpec
    >>> w = World(WorldSpec(use_lames=False, n_sites=1, years=(2020, 2021), scenes_per_year=1))
    >>> clear_sky_date(w)
    (2021, None)
    >>> clear_sky_date(w, 2020)[1].year
    2020
    """
    years = tuple(world.spec.years)
    year = years[-1] if year is None else int(year)
    if year not in years:
        raise WorldError(f"year={year} is not one of the world's years {list(years)}; pick one "
                         "of them.")
    if year == years[-1]:
        return year, None
    return year, next((d for d in world.dates if d.year == year), dt.date(year, 7, 1))


def site_box(world, site_id: str | int, *, margin_m: float = 1000.0, resolution: int = 10) -> GeoBox:
    """A grid over one site: its bounds plus ``margin_m``, in its UTM zone, on whole pixels.

    Edges are snapped outwards to multiples of ``resolution`` metres, so the box's pixels are
    pixels of the world's tiles.

    Parameters
    ----------
    world
        A :class:`lames_cube.synthetic.World`.
    site_id
        One of ``world.sites.site_id``.
    margin_m
        Ground around the site's bounding box, on every side (m).
    resolution
        Pixel size (m).

    Returns
    -------
    odc.geo.geobox.GeoBox

    Raises
    ------
    UnknownSiteError
        The site is not drawn in ``world``.
    WorldError
        ``margin_m`` is negative or ``resolution`` is not positive.

    Examples
    --------
    >>> from lames_cube.synthetic import World, WorldSpec
    >>> w = World(WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1))
    >>> box = site_box(w, w.sites.site_id[0])
    >>> box.resolution.x, box.affine.c % 10, box.affine.f % 10
    (10.0, 0.0, 0.0)
    """
    if not (resolution > 0 and margin_m >= 0):
        raise WorldError(
            f"site_box needs resolution > 0 and margin_m >= 0 (got resolution={resolution!r}, "
            f"margin_m={margin_m!r})."
        )
    row = site_row(world, site_id)
    epsg = int(row.epsg.iloc[0])
    w, s, e, n = row.geometry.to_crs(epsg).total_bounds
    r = float(resolution)
    bbox = (
        math.floor((w - margin_m) / r) * r, math.floor((s - margin_m) / r) * r,
        math.ceil((e + margin_m) / r) * r, math.ceil((n + margin_m) / r) * r,
    )
    return GeoBox.from_bbox(bbox, f"EPSG:{epsg}", resolution=resolution)


# ---------------------------------------------------------------------------------------- pixels
def _check_image(image: Mapping[str, np.ndarray], mine: np.ndarray) -> tuple[np.ndarray, tuple]:
    missing = [b for b in RGB_BANDS if b not in image]
    if missing:
        raise WorldError(
            f"The image lacks the true-colour bands {missing} (it has {sorted(image)}); pass a dict "
            "like World.read() returns, with B04, B03, B02 as reflectance x 10 000."
        )
    mine = np.asarray(mine)
    shape = np.shape(image["B04"])
    if len(shape) != 2 or min(shape) < 2:
        raise WorldError(f"Image bands must be 2-D arrays of at least 2 x 2 pixels (got shape "
                         f"{shape}); pass one date's bands as World.read() returns them.")
    bad = {b: np.shape(a) for b, a in image.items() if b != "SCL" and np.shape(a) != shape}
    if bad or mine.shape != shape:
        raise WorldError(
            f"Image bands and the mine mask must share one shape; B04 is {shape}, the mask "
            f"{mine.shape}, and {bad or 'no band'} differ. Cut the bands and the mask from the "
            "same GeoBox (World.read(gbox, date) and World.mine_classes(gbox, year) > 0)."
        )
    return mine.astype(bool), shape


def to_grey(image: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """8-bit true colour of an image dict and its grey level (mean of R, G, B).

    The 8-bit mapping is :func:`lames_cube.composite.to_rgb8` (reflectance 0..0.3 → 1..255,
    nodata 0 stays 0).

    Returns
    -------
    rgb : ndarray
        ``(3, y, x)`` uint8, R, G, B.
    grey : ndarray
        ``(y, x)`` float32.

    Examples
    --------
    >>> rgb, grey = to_grey({"B04": np.full((1, 1), 3000), "B03": np.full((1, 1), 1500),
    ...                      "B02": np.full((1, 1), 0)})
    >>> rgb.ravel().tolist(), grey.ravel().tolist()
    ([255, 128, 0], [127.66666412353516])
    """
    stack = np.stack([np.asarray(image[b]) for b in RGB_BANDS])
    da = xr.DataArray(stack, dims=("band", "y", "x"), coords={"band": list(RGB_BANDS)})
    rgb = to_rgb8(da).values
    return rgb, rgb.astype(np.float32).mean(axis=0)


def _local_mean_std(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation in ``size`` × ``size`` windows (mirror edges)."""
    x = x.astype(np.float64)
    mean = ndimage.uniform_filter(x, size, mode="reflect")
    sq = ndimage.uniform_filter(x * x, size, mode="reflect")
    return mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))


def _texture(grey: np.ndarray, ground: np.ndarray) -> float:
    mean, std = _local_mean_std(grey, TEXTURE_WINDOW)
    sel = ground & (mean > 0)
    return float(np.median(std[sel] / mean[sel])) if sel.any() else math.nan


def _halves(shape: tuple[int, int], valid: np.ndarray, axis: int):
    """Flat indices of the valid pixels of the two halves (west/east or north/south)."""
    h, w = shape
    cut = (w if axis == 1 else h) // 2
    index = np.indices(shape)[1 if axis == 1 else 0]
    first = np.flatnonzero((valid & (index < cut)).ravel())
    second = np.flatnonzero((valid & (index >= cut)).ravel())
    return first, second


def _sample(idx: np.ndarray, is_mine: np.ndarray, n: int, rng: np.random.Generator):
    """A sample of ``n`` of the pixels ``idx``: up to half mine pixels, the rest ground.

    Returns the sampled flat indices and their weights (pixels each sampled one stands for),
    so that weighted counts are those of the whole half: the forests see enough mine pixels
    even where mines are rare, and fit and score with the half's real class balance.
    """
    mine_idx, ground_idx = idx[is_mine[idx]], idx[~is_mine[idx]]
    k_mine = min(len(mine_idx), n // 2)
    k_ground = min(len(ground_idx), n - k_mine)
    parts, weights = [], []
    for pool, k in ((mine_idx, k_mine), (ground_idx, k_ground)):
        pick = pool if k == len(pool) else rng.choice(pool, k, replace=False)
        parts.append(np.sort(pick))
        weights.append(np.full(k, len(pool) / k if k else 0.0))
    return np.concatenate(parts), np.concatenate(weights)


def _forest_f1(features: np.ndarray, y: np.ndarray, train: tuple, test: tuple, seed: int,
               balanced: bool = False) -> float:
    """F1 of the mine class of one forest; ``train``/``test`` are (rows, weights).

    ``balanced`` fits with both classes weighing the same (scores keep the real balance).
    """

    (rows_train, w_train), (rows_test, w_test) = train, test
    n_mine = (y[rows_train].sum(), y[rows_test].sum(), (~y[rows_train]).sum())
    if min(n_mine) < MIN_MINE_PX:
        return math.nan
    if balanced:
        labels = y[rows_train]
        w_train = w_train / np.where(labels, w_train[labels].sum(), w_train[~labels].sum())
    forest = RandomForestClassifier(random_state=seed, **FOREST)
    forest.fit(features[rows_train], y[rows_train], sample_weight=w_train / w_train.mean())
    return float(f1_score(y[rows_test], forest.predict(features[rows_test]),
                          sample_weight=w_test, zero_division=0.0))


def measure(
    image: Mapping[str, np.ndarray],
    mine: np.ndarray,
    *,
    seed: int = 0,
    n_train: int = 10_000,
    n_test: int = 30_000,
    forests: Iterable[str] = FORESTS,
) -> dict:
    """The realism measures of one image and its mine mask.

    Parameters
    ----------
    image
        Bands as :meth:`World.read` returns them: ``B04``, ``B03``, ``B02`` (required) and
        ``B08``, ``B11``, ``B12`` (for ``f1_all``), uint16 reflectance × 10 000, 0 = nodata.
        Pixels with nodata in any of these bands are left out.
    mine
        ``(y, x)`` mask, True (non-zero) on mine pixels.
    seed
        Seed of the pixel subsamples and of the forests.
    n_train, n_test
        Pixels drawn at random from the training and the test half (all if fewer): up to
        half of them mine pixels, weighted back to the half's real class balance.
    forests
        Which forests to fit: names of :data:`FORESTS`, or one name (the others are NaN; an
        unknown name raises :class:`~lames_cube.errors.WorldError`).

    Returns
    -------
    dict
        ``n_px``, ``n_valid``, ``mine_fraction`` (of the valid pixels), ``grey_mine``,
        ``grey_ground``, ``contrast``, ``texture``, ``f1_rgb``, ``f1_all``, ``f1_context``,
        ``context_gain``, ``halves`` (``"west|east"``, or ``"north|south"`` when the west/east
        split leaves a half with fewer than :data:`MIN_MINE_PX` mine pixels) and, per forest,
        both directions ``f1_*_ab`` (train on the first half, test on the second) and
        ``f1_*_ba``. ``f1_rgb_balanced``: the RGB forest fitted with both classes weighing
        the same (not a threshold; it tells rare from inseparable mines where ``f1_rgb`` is
        near 0). A direction whose training or test half holds fewer than
        :data:`MIN_MINE_PX` mine pixels is NaN; each F1 is the mean of the other directions.
        ``f1_all`` is NaN unless all six reflectance bands are given.

    Raises
    ------
    WorldError
        Missing true-colour bands, or bands and mask of different shapes.

    Notes
    -----
    Grey is the mean of the 8-bit R, G, B of :func:`to_grey`. Texture windows are
    :data:`TEXTURE_WINDOW` px, mirrored at the edges; ground pixels next to mines count too.

    Halves: columns ``< width // 2`` (west) and the rest (east). From each half two stratified
    random samples are drawn, ``n_train`` pixels to train on and ``n_test`` to test on: all
    mine pixels up to half the sample, ground pixels for the rest; each pixel is weighted by
    the number of pixels of its class in the half it stands for, in the fit
    (``sample_weight``) and in the F1, so the scores estimate those of a forest fitted and
    scored on whole halves, with less variance where mines are rare. Features: 8-bit R, G, B
    (``rgb``); the six reflectance bands (``all``); R, G, B plus the local mean and standard
    deviation of R, G, B and grey in windows of :data:`CONTEXT_SCALES` px (``context``, 27
    features, computed on the whole box before sampling). Forest: scikit-learn's
    ``RandomForestClassifier(**FOREST, random_state=seed)``, mine predicted where the
    (weighted) vote exceeds one half.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ground = rng.integers(1000, 1400, (3, 60, 60))
    >>> mine = np.zeros((60, 60), bool); mine[20:40, 20:40] = True
    >>> bands = dict(zip(("B04", "B03", "B02"), np.where(mine, ground + 1500, ground)))
    >>> m = measure(bands, mine)
    >>> round(m["contrast"], 2), m["f1_rgb"] > 0.95
    (1.25, True)
    """
    mine, shape = _check_image(image, mine)
    rgb, grey = to_grey(image)
    all_bands = [b for b in _REFLECTANCE if b in image]
    valid = (rgb > 0).all(axis=0)
    for b in all_bands:
        valid &= np.asarray(image[b]) > 0
    ground = valid & ~mine
    is_mine = valid & mine
    n_valid = int(valid.sum())
    out: dict = {"n_px": int(np.prod(shape)), "n_valid": n_valid,
                 "mine_fraction": float(is_mine.sum() / n_valid) if n_valid else math.nan}
    g_mine = float(grey[is_mine].mean()) if is_mine.any() else math.nan
    g_ground = float(grey[ground].mean()) if ground.any() else math.nan
    out["grey_mine"], out["grey_ground"] = g_mine, g_ground
    out["contrast"] = abs(g_mine - g_ground) / g_ground if g_ground > 0 else math.nan
    out["texture"] = _texture(grey, ground)

    rng = np.random.default_rng(seed)
    flat_mine = mine.ravel()
    best = None
    for axis, name in ((1, "west|east"), (0, "north|south")):
        first, second = _halves(shape, valid, axis)
        fewest = min(flat_mine[first].sum(), flat_mine[second].sum())
        if best is None or fewest > best[0]:
            best = (fewest, name, first, second)
        if fewest >= MIN_MINE_PX:
            break
    _, out["halves"], first, second = best
    samples = [_sample(half, flat_mine, n, rng)
               for half in (first, second) for n in (n_train, n_test)]
    rows = np.concatenate([idx for idx, _ in samples])  # feature rows, sample after sample
    y = flat_mine[rows]
    starts = np.cumsum([0] + [len(idx) for idx, _ in samples])
    parts = [(np.arange(starts[k], starts[k + 1]), samples[k][1]) for k in range(4)]
    directions = {"ab": (parts[0], parts[3]), "ba": (parts[2], parts[1])}

    def gather(arr: np.ndarray) -> np.ndarray:
        return np.asarray(arr).ravel()[rows].astype(np.float32)

    asked = [forests] if isinstance(forests, str) else list(forests)
    unknown = [f for f in asked if f not in FORESTS]
    if unknown:
        raise WorldError(f"measure(forests=...) takes names of {list(FORESTS)}; got {unknown} "
                         f"in {forests!r}.")
    forests = [f for f in FORESTS if f in asked]
    px_rgb = np.stack([gather(c) for c in rgb], axis=1)
    feature_sets = {"rgb": px_rgb, "rgb_balanced": px_rgb}
    if "context" in forests:
        context = [px_rgb]
        for channel in (*rgb, grey):
            for size in CONTEXT_SCALES:
                mean, std = _local_mean_std(channel, size)
                context.append(np.stack([gather(mean), gather(std)], axis=1))
        feature_sets["context"] = np.concatenate(context, axis=1)
    if len(all_bands) == len(_REFLECTANCE) and "all" in forests:
        feature_sets["all"] = np.stack([gather(image[b]) for b in all_bands], axis=1)
    for key in FORESTS:
        scores = []
        for d, (train, test) in directions.items():
            f1 = (_forest_f1(feature_sets[key], y, train, test, seed,
                             balanced=key.endswith("balanced"))
                  if key in feature_sets and key in forests else math.nan)
            out[f"f1_{key}_{d}"] = f1
            scores.append(f1)
        out[f"f1_{key}"] = float(np.nanmean(scores)) if not np.isnan(scores).all() else math.nan
    out["context_gain"] = out["f1_context"] - out["f1_rgb"]
    return out


def failures(measures: Mapping[str, float]) -> list[str]:
    """Names of the :data:`THRESHOLDS` that ``measures`` misses (NaN misses).

    Examples
    --------
    >>> failures({"contrast": 0.2, "texture": 0.01, "f1_rgb": 0.5, "f1_all": 0.6,
    ...           "context_gain": float("nan")})
    ['texture', 'context_gain']
    """
    out = []
    for key, (op, limit) in THRESHOLDS.items():
        value = measures.get(key, math.nan)
        ok = value <= limit if op == "<=" else value >= limit
        if not (ok and not math.isnan(value)):
            out.append(key)
    return out


# ---------------------------------------------------------------------------------------- worlds
def check_world(
    world,
    sites: Iterable[str | int] | None = None,
    *,
    year: int | None = None,
    margin_m: float = 1000.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Render each site's box cloud-free and measure how hard it is (see :func:`measure`).

    Parameters
    ----------
    world
        A :class:`lames_cube.synthetic.World`.
    sites
        Site ids to check (default: all of ``world.sites``).
    year
        Year whose mines are rendered (default: the world's last year).
    margin_m
        Ground around each site (see :func:`site_box`).
    seed
        Seed of the subsamples and forests.

    Returns
    -------
    pandas.DataFrame
        One row per site: ``site_id``, ``split``, ``year``, the measures of :func:`measure`,
        ``passes`` (every :data:`THRESHOLDS` met), ``failed`` (names of those missed, comma
        separated) and ``seconds`` (render + measure).

    Raises
    ------
    WorldError
        ``year`` is not one of the world's years.
    UnknownSiteError
        A site is not in the world.

    Examples
    --------
    One small LAMES site (2058, about 14 × 10 px of sectors), 100 m of ground around it:

    >>> from lames_cube.synthetic import World, WorldSpec
    >>> w = World(WorldSpec(site_ids=("2058",), years=(2021,), scenes_per_year=1, grid_km=1,
    ...                     tile_px=100, margin_m=100, hidden_mines=False))
    >>> check_world(w, margin_m=100)[["site_id", "split", "n_px", "contrast", "passes"]].round(2)
      site_id split  n_px  contrast  passes
    0    2058  test  1120      0.19    True
    """
    year, date = clear_sky_date(world, year)
    ids = list(world.sites.site_id) if sites is None else [str(s) for s in sites]
    split = dict(zip(world.sites.site_id, world.sites.get("split", [None] * len(world.sites)),
                     strict=True))
    rows = []
    for site_id in ids:
        t0 = time.perf_counter()
        gbox = site_box(world, site_id, margin_m=margin_m)
        image = world.read(gbox, date, clouds=False)
        mine = world.mine_classes(gbox, year) > 0
        row = {"site_id": site_id, "split": split.get(site_id), "year": year,
               **measure(image, mine, seed=seed)}
        missed = failures(row)
        row["passes"] = not missed
        row["failed"] = ",".join(missed)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update({"thresholds": dict(THRESHOLDS), "real_lames": dict(REAL_LAMES),
                      "margin_m": margin_m})
    return out


def open_world(path: str | os.PathLike):
    """Rebuild the :class:`World` of a written world directory from its manifest and sectors.

    No LAMES data directory is needed: the sectors drawn are in ``sectors.geojson``. The
    pixels are those of the installed generator: a world written by an older generator
    version is measured as this version would render it (its ``digest()`` then differs from
    the manifest's).

    Raises
    ------
    WorldError
        ``path`` is not a complete world directory.

    Examples
    --------
    >>> import tempfile
    >>> from lames_cube.synthetic import World, WorldSpec, write_world
    >>> spec = WorldSpec(site_ids=("2058",), years=(2021,), scenes_per_year=1, grid_km=1,
    ...                  tile_px=100, margin_m=100, hidden_mines=False)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     world = open_world(write_world(f"{tmp}/w", spec, workers=1, progress=False))
    >>> list(world.sites.site_id), world.spec == spec, world.digest() == World(spec).digest()
    (['2058'], True, True)
    """


    root = Path(path).expanduser().resolve()
    manifest_path = root / MANIFEST
    if not manifest_path.is_file() or not (root / "sectors.geojson").is_file():
        raise WorldError(
            f"{root} is not a complete lames_cube world (no {MANIFEST} or sectors.geojson); "
            "create one with `lames-cube world create PATH`."
        )
    manifest = json.loads(manifest_path.read_text())
    sectors = gpd.read_file(root / "sectors.geojson")
    sectors["site_id"] = sectors["site_id"].astype(str)
    if "split" in sectors:
        sectors["split"] = sectors["split"].astype(str)
    return World(WorldSpec.from_dict(manifest["spec"]), sectors=sectors)


def check_path(
    path: str | os.PathLike,
    sites: Iterable[str | int] | None = None,
    *,
    year: int | None = None,
    margin_m: float = 1000.0,
) -> pd.DataFrame:
    """:func:`check_world` on a written world directory (``lames-cube world check PATH``).

    Raises
    ------
    WorldError
        ``path`` is not a world directory (make one with ``lames-cube world create PATH``).

    Examples
    --------
    >>> check_path("/tmp/not-a-world")
    Traceback (most recent call last):
    ...
    lames_cube.errors.WorldError: /tmp/not-a-world is not a complete lames_cube world (no manifest.json or sectors.geojson); create one with `lames-cube world create PATH`.
    """
    return check_world(open_world(path), sites, year=year, margin_m=margin_m)


def format_table(table: pd.DataFrame) -> str:
    """The measures of :func:`check_world` as text, with real LAMES and the thresholds beside.

    Missed thresholds are marked ``*``; ``f1 rgb=w`` is ``f1_rgb_balanced`` (no threshold).

    Examples
    --------
    >>> row = {"site_id": "1", "split": "train", "n_px": 100, "mine_fraction": 0.1,
    ...        "contrast": 0.5, "texture": 0.05, "f1_rgb": 0.6, "f1_all": 0.7,
    ...        "f1_context": 0.8, "context_gain": 0.2, "f1_rgb_balanced": 0.6,
    ...        "failed": "contrast", "passes": False}
    >>> print(format_table(pd.DataFrame([row])).splitlines()[1])
           1  train       100    10.0    0.500*    0.050     0.600     0.700     0.800     0.200     0.600   FAIL
    """
    cols = [("contrast", "contrast"), ("texture", "texture"), ("f1_rgb", "f1 rgb"),
            ("f1_all", "f1 all"), ("f1_context", "f1 ctx"), ("context_gain", "ctx gain"),
            ("f1_rgb_balanced", "f1 rgb=w")]
    head = f"{'site':>8} {'split':>6} {'pixels':>9} {'mine %':>7}" + "".join(
        f" {label:>9}" for _, label in cols) + "  result"
    lines = [head]
    for row in table.to_dict("records"):
        missed = set(filter(None, row["failed"].split(",")))
        cells = "".join(
            f" {row[key]:>8.3f}{'*' if key in missed else ' '}" for key, _ in cols
        )
        lines.append(f"{row['site_id']:>8} {row.get('split') or '':>6} {row['n_px']:>9} "
                     f"{100 * row['mine_fraction']:>7.1f}{cells}  {'PASS' if row['passes'] else 'FAIL'}")
    ref = "".join(f" {REAL_LAMES[k]:>8.2f} " if k in REAL_LAMES else f" {'':>9}" for k, _ in cols)
    lim = "".join(f" {THRESHOLDS[k][0] + format(THRESHOLDS[k][1], '.2f'):>8} " if k in THRESHOLDS
                  else f" {'':>9}" for k, _ in cols)
    lines.append(f"{'real LAMES':>33}{ref}")
    lines.append(f"{'threshold':>33}{lim}")
    lines.append(f"{'':>33} f1 rgb=w: the RGB forest fitted with equal class weights (no threshold)")
    n_pass = int(table["passes"].sum()) if len(table) else 0
    lines.append(f"{n_pass}/{len(table)} sites pass (* = threshold missed)")
    return "\n".join(lines)
