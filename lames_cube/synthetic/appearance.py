"""Does the synthetic world look like Sentinel-2? Colour and structure measures, per site.

Issue 24 measured a real Sentinel-2 8-bit true-colour patch (one 256-px window of the LAMES
site box of site 821, EPSG:3857, the paper's grid) next to the world rendered on the same
window through :func:`lames_cube.composite.to_rgb8` (reflectance 0..0.3 → 1..255). This module
computes the same measures on any image and on the LAMES site boxes of a world:

``chroma``
    median over pixels of ``(max - min) / max`` of the 8-bit R, G, B;
``red_blue``
    median over pixels of R / B (8-bit);
``slope``
    slope of the radially averaged power spectrum of the grey level (mean of R, G, B; mean
    removed, no window) against the wavenumber, both in logs, over ``k = 4 … 99`` cycles per
    256 px; the rings are ``floor(|k|)`` (this reproduces the issue's −1.86 for the world it
    measured);
``ground_*``, ``mine_*``
    per-class means and standard deviations of the 8-bit R, G, B.

:func:`check_appearance` renders each site's LAMES box cloud-free as the patch recipes cut
their windows (20 m bands as the sensor records them) and reports the median of each measure
over the box's 256-px windows, the per-class statistics of the whole box and the per-pixel
RGB forest of :func:`lames_cube.synthetic.realism.measure`; :data:`REAL_S2` holds the real
figures and :data:`LIMITS` the acceptance bands of issue 24.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox
from scipy import ndimage

from lames_cube._atomic import atomic_write_bytes
from lames_cube._names import safe_name
from lames_cube.errors import WorldError
from lames_cube.grid import lames_geobox, site_boxes
from lames_cube.synthetic.clear import sensor_20m
from lames_cube.synthetic.realism import RGB_BANDS, clear_sky_date, measure, site_row, to_grey

__all__ = [
    "LIMITS",
    "REAL_S2",
    "WINDOW",
    "appearance_failures",
    "check_appearance",
    "class_stats",
    "format_appearance",
    "lames_box",
    "quicklook",
    "render_box",
    "spectrum_slope",
    "window_measures",
]

#: Real Sentinel-2 8-bit true colour of one 256-px window of the LAMES box of site 821
#: (issue 24; the per-class means assume the 0..0.3 stretch of ``to_rgb8``).
REAL_S2: dict[str, object] = {
    "chroma": 0.13, "red_blue": 1.07, "slope": -2.88,
    "ground_mean": (88, 84, 86), "ground_std": (31, 23, 20),
    "mine_mean": (107, 96, 95), "mine_std": (29, 19, 15),
    "f1_rgb": 0.61,
}
#: Acceptance bands of issue 24 (medians over a box's windows; ``f1_rgb`` an upper limit).
LIMITS: dict[str, tuple[float, float]] = {
    "chroma": (0.09, 0.18),
    "red_blue": (0.95, 1.20),
    "slope": (-3.3, -2.4),
    "f1_rgb": (0.0, 0.70),
}
#: Window side (px) of the measures, as the real patch.
WINDOW = 256
#: Wavenumbers (cycles per window) of the spectrum fit: 4 … 99.
K_RANGE = (4, 100)
_SIX = ("B02", "B03", "B04", "B08", "B11", "B12")


# ----------------------------------------------------------------------------------- measures
def spectrum_slope(grey: np.ndarray, k_range: tuple[int, int] = K_RANGE) -> float:
    """Slope of the radially averaged power spectrum of a square image, log power vs log k.

    Parameters
    ----------
    grey
        ``(n, n)`` grey level.
    k_range
        Rings ``k_range[0] <= floor(|k|) < k_range[1]`` (cycles per ``n`` px) in the fit.

    Returns
    -------
    float
        The least-squares slope; NaN for a constant image.

    Raises
    ------
    WorldError
        ``grey`` is not square, or too small for ``k_range``.

    Examples
    --------
    A field whose Fourier amplitudes fall as k^-1.5 (power k^-3) has a slope of -3:

    >>> rng = np.random.default_rng(0)
    >>> k = np.hypot(*np.meshgrid(np.fft.fftfreq(256) * 256, np.fft.fftfreq(256) * 256))
    >>> phase = np.exp(2j * np.pi * rng.random((256, 256)))
    >>> field = np.fft.ifft2(phase * np.where(k > 0, k, 1.0) ** -1.5).real
    >>> round(spectrum_slope(field), 1)
    -3.0
    """
    grey = np.asarray(grey, np.float64)
    n = grey.shape[0]
    if grey.ndim != 2 or grey.shape[1] != n or n < 2 * k_range[1]:
        raise WorldError(f"spectrum_slope needs a square image of at least {2 * k_range[1]} px "
                         f"(got shape {grey.shape}); measure {WINDOW}-px windows.")
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    freq = np.fft.fftfreq(n) * n
    ring = np.floor(np.hypot(freq[:, None], freq[None, :])).astype(np.int64).ravel()
    counts = np.bincount(ring)
    mean = np.bincount(ring, power.ravel()) / np.maximum(counts, 1)
    k = np.arange(*k_range)
    p = mean[k]
    if not (p > 0).all():
        return math.nan
    return float(np.polyfit(np.log(k), np.log(p), 1)[0])


def class_stats(rgb: np.ndarray, mask: np.ndarray) -> tuple[tuple, tuple]:
    """Means and standard deviations of the 8-bit R, G, B over ``mask`` (NaN when empty).

    Examples
    --------
    >>> rgb = np.array([[[10, 30]], [[20, 20]], [[0, 0]]], np.uint8)
    >>> class_stats(rgb, np.array([[True, True]]))
    ((20.0, 20.0, 0.0), (10.0, 0.0, 0.0))
    """
    if not mask.any():
        nan = (math.nan,) * 3
        return nan, nan
    values = rgb[:, mask].astype(np.float64)
    return tuple(values.mean(axis=1).tolist()), tuple(values.std(axis=1).tolist())


def window_measures(rgb: np.ndarray) -> dict:
    """Chroma, R/B and spectrum slope of one window of 8-bit true colour.

    Parameters
    ----------
    rgb
        ``(3, n, n)`` uint8 R, G, B (0 = nodata: such pixels are left out of chroma and R/B).

    Returns
    -------
    dict
        ``chroma``, ``red_blue``, ``slope`` (NaN where the window has no valid pixel).

    Examples
    --------
    >>> grey = np.full((3, 256, 256), 100, np.uint8); grey[0] = 110
    >>> m = window_measures(grey)
    >>> round(m["chroma"], 3), round(m["red_blue"], 2), math.isnan(m["slope"])
    (0.091, 1.1, True)
    """
    r, g, b = (np.asarray(c, np.float64) for c in rgb)
    valid = (r > 0) & (g > 0) & (b > 0)
    if not valid.any():
        return {"chroma": math.nan, "red_blue": math.nan, "slope": math.nan}
    hi = np.maximum(np.maximum(r, g), b)[valid]
    lo = np.minimum(np.minimum(r, g), b)[valid]
    return {"chroma": float(np.median((hi - lo) / hi)),
            "red_blue": float(np.median(r[valid] / b[valid])),
            "slope": spectrum_slope((r + g + b) / 3.0)}


# ----------------------------------------------------------------------------------- worlds
def lames_box(world, site_id: str | int) -> GeoBox:
    """The LAMES site box of one site of ``world`` (EPSG:3857, the paper's grid).

    Raises
    ------
    UnknownSiteError
        The site is not drawn in ``world``.

    Examples
    --------
    >>> from lames_cube.synthetic import World, WorldSpec
    >>> w = World(WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1))
    >>> box = lames_box(w, w.sites.site_id[0])
    >>> box.crs.epsg, box.shape[0] % 256
    (3857, 0)
    """

    row = site_row(world, site_id)
    return lames_geobox(site_boxes(row[["site_id", "geometry"]]).iloc[0])


def render_box(world, gbox: GeoBox, *, year: int | None = None) -> tuple[dict, np.ndarray]:
    """The six reflectance bands of ``gbox`` under a clear sky, as the patch recipes cut their
    windows (20 m bands averaged as the sensor records them), and the mine mask of ``year``
    (default: the world's last year, the year of the clear-sky render)."""

    year, date = clear_sky_date(world, year)
    layers = sensor_20m(lambda g: world.read(g, date, clouds=False), gbox,
                        (gbox.affine.c, gbox.affine.f), list(_SIX))
    return layers, world.mine_classes(gbox, year) > 0


def check_appearance(world, sites: Iterable[str | int] | None = None, *,
                     year: int | None = None, seed: int = 0,
                     png: str | os.PathLike | None = None) -> pd.DataFrame:
    """The colour and structure of each site's LAMES box against real Sentinel-2.

    Parameters
    ----------
    world
        A :class:`lames_cube.synthetic.World`.
    sites
        Site ids (default: every site of the world).
    year
        Year of the mines (default: the last).
    seed
        Seed of the forest's subsamples.
    png
        A folder: also write each box as ``site-<id>.png`` (:func:`quicklook`), listed in
        the table's ``png`` column.

    Returns
    -------
    pandas.DataFrame
        One row per site: ``site_id``, ``n_windows``, ``mine_fraction``, the medians over the
        box's 256-px windows of ``chroma``, ``red_blue`` and ``slope``, ``ground_mean``,
        ``ground_std``, ``mine_mean``, ``mine_std`` (8-bit R, G, B over the whole box),
        ``f1_rgb`` (the per-pixel RGB forest of :func:`~lames_cube.synthetic.realism.measure`
        on the box, one half against the other), ``passes``, ``failed`` and ``seconds``.

    Examples
    --------
    >>> from lames_cube.synthetic import World, WorldSpec
    >>> w = World(WorldSpec(site_ids=("2058",), years=(2021,), scenes_per_year=1, grid_km=1,
    ...                     tile_px=100, margin_m=100, hidden_mines=False))
    >>> t = check_appearance(w)
    >>> t[["site_id", "n_windows"]].values.tolist()
    [['2058', 1]]
    """

    ids = list(world.sites.site_id) if sites is None else [str(s) for s in sites]
    rows = []
    for site_id in ids:
        t0 = time.perf_counter()
        gbox = lames_box(world, site_id)
        layers, mine = render_box(world, gbox, year=year)
        rgb, _ = to_grey(layers)
        n_rows, n_cols = gbox.shape[0] // WINDOW, gbox.shape[1] // WINDOW
        windows = [window_measures(rgb[:, i * WINDOW:(i + 1) * WINDOW, j * WINDOW:(j + 1) * WINDOW])
                   for i in range(n_rows) for j in range(n_cols)]
        row: dict = {"site_id": site_id, "n_windows": len(windows),
                     "mine_fraction": float(mine.mean())}
        for key in ("chroma", "red_blue", "slope"):
            row[key] = float(np.nanmedian([w[key] for w in windows]))
        row["ground_mean"], row["ground_std"] = class_stats(rgb, ~mine & (rgb > 0).all(axis=0))
        row["mine_mean"], row["mine_std"] = class_stats(rgb, mine & (rgb > 0).all(axis=0))
        row["f1_rgb"] = measure({b: layers[b] for b in RGB_BANDS}, mine, seed=seed,
                                forests=("rgb",))["f1_rgb"]
        missed = appearance_failures(row)
        row["passes"], row["failed"] = not missed, ",".join(missed)
        if png is not None:
            row["png"] = str(_write_quicklook(
                rgb, mine, Path(png) / f"site-{safe_name(site_id)}.png",
                _title(site_id, gbox, year or world.spec.years[-1])))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update({"real": dict(REAL_S2), "limits": dict(LIMITS)})
    return out


def quicklook(world, site_id: str | int, path, *, year: int | None = None) -> Path:
    """Write a PNG of a site's LAMES box in true colour (``to_rgb8``), beside the same with the
    mine sectors of ``year`` outlined, and return its path.

    Examples
    --------
    >>> import tempfile
    >>> from lames_cube.synthetic import World, WorldSpec
    >>> w = World(WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     quicklook(w, w.sites.site_id[0], f"{tmp}/site.png").stat().st_size > 10_000
    True
    """

    gbox = lames_box(world, site_id)
    layers, mine = render_box(world, gbox, year=year)
    return _write_quicklook(to_grey(layers)[0], mine, path,
                            _title(site_id, gbox, year or world.spec.years[-1]))


def _title(site_id: str | int, gbox: GeoBox, year: int) -> str:
    return (f"site {site_id}: LAMES box, {gbox.shape[1]} x {gbox.shape[0]} px (EPSG:3857), "
            f"year {year}")


def _write_quicklook(rgb: np.ndarray, mine: np.ndarray, path, title: str) -> Path:
    """``rgb`` (3, y, x) uint8 beside the same with ``mine`` outlined, as a PNG at ``path``."""

    import matplotlib  # local: heavy matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: heavy matplotlib


    image = np.moveaxis(rgb, 0, -1)
    outlined = image.copy()
    outlined[mine & ~ndimage.binary_erosion(mine)] = (255, 0, 255)
    h, w = mine.shape
    fig, axes = plt.subplots(1, 2, figsize=(10.0 * w / h, 5.4), dpi=max(100, h // 5))
    for ax, im, label in zip(axes, (image, outlined),
                             ("true colour (0-0.3 reflectance)", "mine sectors"), strict=True):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def appearance_failures(measures: Mapping[str, float]) -> list[str]:
    """Names of the :data:`LIMITS` that ``measures`` misses (NaN misses; a NaN ``f1_rgb``, a box
    with too few mine pixels to fit a forest, passes).

    Examples
    --------
    >>> appearance_failures({"chroma": 0.2, "red_blue": 1.0, "slope": -2.9, "f1_rgb": 0.5})
    ['chroma']
    """
    out = []
    for key, (lo, hi) in LIMITS.items():
        value = measures.get(key, math.nan)
        if key == "f1_rgb" and math.isnan(value):
            continue
        if not lo <= value <= hi:
            out.append(key)
    return out


def format_appearance(table: pd.DataFrame) -> str:
    """The measures of :func:`check_appearance` as text, with real Sentinel-2 and the limits.

    Examples
    --------
    >>> row = {"site_id": "1", "n_windows": 4, "mine_fraction": 0.2, "chroma": 0.3,
    ...        "red_blue": 1.1, "slope": -2.9, "ground_mean": (88, 84, 86),
    ...        "ground_std": (31, 23, 20), "mine_mean": (107, 96, 95), "mine_std": (29, 19, 15),
    ...        "f1_rgb": 0.6, "failed": "chroma", "passes": False}
    >>> print(format_appearance(pd.DataFrame([row])).splitlines()[1])
           1    4   20.0    0.300*  1.100    -2.90    0.60   88  84  86 (31 23 20) 107  96  95 (29 19 15) FAIL
    """
    def rgb(mean, std) -> str:
        if mean is None or any(math.isnan(v) for v in mean):
            return f"{'-':>11} {'':>10}"
        return (" ".join(f"{v:>3.0f}" for v in mean) + " ("
                + " ".join(f"{v:.0f}" for v in std) + ")").ljust(22)

    head = (f"{'site':>8} {'win':>4} {'mine %':>6} {'chroma':>8} {'R/B':>8} {'slope':>8} "
            f"{'f1 rgb':>7}  {'ground R G B (std)':<22} {'mine R G B (std)':<22} result")
    def cell(row: Mapping, missed: set, key: str, fmt: str, width: int) -> str:
        return f"{format(row[key], fmt):>{width}}{'*' if key in missed else ' '}"

    lines = [head]
    for row in table.to_dict("records"):
        missed = set(filter(None, str(row["failed"]).split(",")))
        lines.append(
            f"{row['site_id']:>8} {row['n_windows']:>4} {100 * row['mine_fraction']:>6.1f} "
            f"{cell(row, missed, 'chroma', '.3f', 8)}{cell(row, missed, 'red_blue', '.3f', 7)}"
            f"{cell(row, missed, 'slope', '.2f', 8)}{cell(row, missed, 'f1_rgb', '.2f', 7)} "
            f"{rgb(row['ground_mean'], row['ground_std'])} "
            f"{rgb(row['mine_mean'], row['mine_std'])} {'PASS' if row['passes'] else 'FAIL'}")
    real = REAL_S2
    lines.append(
        f"{'real S2':>8} {'':>4} {'':>6} {real['chroma']:>8.3f} {real['red_blue']:>8.3f} "
        f"{real['slope']:>8.2f} {real['f1_rgb']:>7.2f}  "
        f"{rgb(real['ground_mean'], real['ground_std'])} {rgb(real['mine_mean'], real['mine_std'])}")
    lim = LIMITS
    lines.append(
        f"{'limits':>8} {'':>4} {'':>6} {lim['chroma'][0]:.2f}-{lim['chroma'][1]:.2f} "
        f"{lim['red_blue'][0]:.2f}-{lim['red_blue'][1]:.2f} {lim['slope'][0]:.1f}/{lim['slope'][1]:.1f} "
        f"{'<=' + format(lim['f1_rgb'][1], '.2f'):>7}")
    n_pass = int(table["passes"].sum()) if len(table) else 0
    lines.append(f"{n_pass}/{len(table)} site boxes look like Sentinel-2 (medians over "
                 f"{WINDOW}-px windows of the LAMES box; * = outside the limits)")
    return "\n".join(lines)
