"""Generator 2 of the synthetic world (lames_cube <= issue 7), frozen for the render-speed ratio.

Only ``benchmarks/bench_world.py`` uses it: it times this renderer against the current one on the
same grid. It is not part of the package and is never changed (its hash, cloud state and pixel
centres are the package's, unchanged since generator 2).
"""

import numpy as np
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from lames_cube.synthetic.landscape import CloudState, pixel_centres
from lames_cube.synthetic.noise import hash_uniform


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1) with feature size ``scale`` (same units as x, y).

    ``x`` and ``y`` broadcast against each other (e.g. a row of x and a column of y). Only the
    lattice points that the coordinates touch are hashed, then gathered and interpolated.
    """
    fx = np.asarray(x, dtype=np.float64) / scale
    fy = np.asarray(y, dtype=np.float64) / scale
    x0 = np.floor(fx)
    y0 = np.floor(fy)
    tx = fx - x0
    ty = fy - y0
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    xmin, ymin = int(ix.min()), int(iy.min())
    lx = np.arange(xmin, int(ix.max()) + 2, dtype=np.int64)
    ly = np.arange(ymin, int(iy.max()) + 2, dtype=np.int64)
    lattice = hash_uniform(lx[None, :], ly[:, None], key)
    ix, iy = np.broadcast_arrays(ix - xmin, iy - ymin)
    tx, ty = np.broadcast_arrays(tx, ty)
    v00 = lattice[iy, ix]
    v10 = lattice[iy, ix + 1]
    v01 = lattice[iy + 1, ix]
    v11 = lattice[iy + 1, ix + 1]
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def fbm(x: np.ndarray, y: np.ndarray, scale: float, key: int, octaves: int = 4) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1); the coarsest feature is ``scale``."""
    total = 0.0
    norm = 0.0
    amp = 1.0
    for octave in range(octaves):
        total = total + amp * value_noise(x, y, scale / 2**octave, key * 131 + octave)
        norm += amp
        amp *= 0.5
    return total / norm



#: Reflectance bands the world simulates, in this order.
REFLECTANCE_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")

# Reflectance spectra (B02, B03, B04, B08, B11, B12).
_SPECTRA = {
    "soil": (0.090, 0.125, 0.165, 0.195, 0.255, 0.225),
    "grey_soil": (0.120, 0.140, 0.155, 0.180, 0.230, 0.215),
    "vegetation": (0.035, 0.070, 0.040, 0.340, 0.180, 0.090),
    "water": (0.060, 0.050, 0.030, 0.020, 0.010, 0.008),
    "salt": (0.560, 0.585, 0.600, 0.615, 0.450, 0.350),
    "dry_lake": (0.290, 0.320, 0.350, 0.380, 0.420, 0.360),
    "asphalt": (0.070, 0.075, 0.080, 0.090, 0.110, 0.100),
    "gravel_road": (0.220, 0.240, 0.260, 0.280, 0.330, 0.300),
    "pit": (0.100, 0.110, 0.125, 0.145, 0.205, 0.185),
    "waste_rock": (0.215, 0.230, 0.265, 0.285, 0.345, 0.300),
    "tailings_water": (0.100, 0.135, 0.090, 0.040, 0.020, 0.012),
    "tailings_beach": (0.300, 0.330, 0.350, 0.360, 0.380, 0.330),
    "leach": (0.255, 0.285, 0.310, 0.330, 0.430, 0.365),
    "roof_bright": (0.350, 0.370, 0.385, 0.400, 0.420, 0.400),
    "roof_dark": (0.060, 0.062, 0.068, 0.080, 0.090, 0.082),
    "roof_blue": (0.150, 0.180, 0.200, 0.220, 0.250, 0.220),
    "stockpile": (0.060, 0.065, 0.070, 0.080, 0.100, 0.090),
    "cloud": (0.640, 0.655, 0.670, 0.690, 0.500, 0.400),
}
SPECTRA = {k: np.asarray(v, dtype=np.float64)[:, None, None] for k, v in _SPECTRA.items()}


def texture_coords(gbox: GeoBox, texture_epsg: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of ``gbox`` in the texture CRS (broadcastable arrays)."""
    xs, ys = pixel_centres(gbox)
    if gbox.crs.epsg == texture_epsg:
        return xs, ys
    xx, yy = np.broadcast_arrays(xs, ys)
    tr = Transformer.from_crs(gbox.crs.epsg, texture_epsg, always_xy=True)
    tx, ty = tr.transform(xx, yy)
    return np.asarray(tx), np.asarray(ty)


def _blend(refl: np.ndarray, mask: np.ndarray, spectrum: np.ndarray, scale=1.0) -> None:
    """Replace ``refl`` by ``spectrum * scale`` where ``mask`` is true (in place)."""
    value = np.broadcast_to(spectrum * scale, refl.shape)
    np.copyto(refl, value, where=np.broadcast_to(mask, refl.shape))


def ground(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Static ground reflectance (6, H, W) and SCL (H, W) without mines or clouds."""
    shape = np.broadcast_shapes(np.shape(x), np.shape(y))
    large = fbm(x, y, 2500.0, seed * 7 + 1, 4)
    detail = fbm(x, y, 90.0, seed * 7 + 2, 3)
    hue = value_noise(x, y, 6000.0, seed * 7 + 3)
    albedo = 0.75 + 0.55 * (large - 0.5) + 0.22 * (detail - 0.5)
    refl = SPECTRA["soil"] * (1 - hue) + SPECTRA["grey_soil"] * hue
    refl = refl * albedo
    scl = np.full(shape, 5, dtype=np.uint8)
    # Salt flats and dry lakes: as bright as mines, but natural.
    basin = fbm(x, y, 7000.0, seed * 7 + 4, 3)
    salty = value_noise(x, y, 15000.0, seed * 7 + 5) > 0.5
    crust = 0.9 + 0.2 * detail
    _blend(refl, (basin > 0.70) & salty, SPECTRA["salt"], crust)
    _blend(refl, (basin > 0.70) & ~salty, SPECTRA["dry_lake"], crust)
    # Vegetation along moist valleys, and small lakes.
    veg = fbm(x, y, 1800.0, seed * 7 + 6, 3)
    _blend(refl, veg > 0.80, SPECTRA["vegetation"], 0.8 + 0.4 * detail)
    scl[np.broadcast_to(veg > 0.80, shape)] = 4
    lake = fbm(x, y, 3000.0, seed * 7 + 7, 3)
    _blend(refl, lake > 0.80, SPECTRA["water"])
    scl[np.broadcast_to(lake > 0.80, shape)] = 6
    # Roads: contour lines of a smooth field, paved or gravel.
    road_field = fbm(x, y, 4000.0, seed * 7 + 8, 2)
    road = (np.abs(road_field - 0.5) < 0.0025) & ~(lake > 0.80)
    paved = value_noise(x, y, 20000.0, seed * 7 + 9) > 0.6
    _blend(refl, road & paved, SPECTRA["asphalt"])
    _blend(refl, road & ~paved, SPECTRA["gravel_road"])
    return refl, scl


def paint_mines(
    refl: np.ndarray, scl: np.ndarray, classes: np.ndarray, x: np.ndarray, y: np.ndarray, seed: int
) -> None:
    """Draw mine sectors (LAMES class values in ``classes``) into ``refl`` and ``scl`` in place."""
    if not classes.any():
        return
    texture = fbm(x, y, 60.0, seed * 11 + 1, 2)
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * value_noise(x, y, 900.0, seed * 11 + 2) * 4.0)
    cells = hash_uniform(np.floor(x / 25.0).astype(np.int64), np.floor(y / 25.0).astype(np.int64),
                         seed * 11 + 3)
    stripes = (np.floor(x / 50.0) + np.floor(y / 50.0)) % 2
    pond = fbm(x, y, 500.0, seed * 11 + 4, 3) > 0.52
    _blend(refl, classes == 5, SPECTRA["pit"], 0.8 + 0.4 * rings)
    _blend(refl, classes == 9, SPECTRA["waste_rock"], 0.85 + 0.3 * texture)
    _blend(refl, (classes == 8) & pond, SPECTRA["tailings_water"])
    _blend(refl, (classes == 8) & ~pond, SPECTRA["tailings_beach"], 0.9 + 0.2 * texture)
    _blend(refl, classes == 3, SPECTRA["leach"], 0.88 + 0.24 * stripes)
    build = (classes == 4) | (classes == 6)
    _blend(refl, build & (cells < 0.4), SPECTRA["roof_bright"])
    _blend(refl, build & (cells >= 0.4) & (cells < 0.75), SPECTRA["roof_dark"])
    _blend(refl, build & (cells >= 0.75), SPECTRA["roof_blue"])
    _blend(refl, classes == 7, SPECTRA["stockpile"], 0.85 + 0.3 * texture)
    scl[classes > 0] = 5
    scl[np.broadcast_to((classes == 8) & pond, scl.shape)] = 6


def cloud_opacity(x: np.ndarray, y: np.ndarray, state: CloudState) -> np.ndarray:
    """Cloud opacity in [0, 1]; about ``state.cover`` of the area has opacity > 0.3."""
    if state.cover <= 0:
        return np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)))
    field = fbm(x, y, 5000.0, state.key, 5)
    threshold = 0.5 + 0.36 * (0.5 - state.cover)  # fbm ~ N(0.5, 0.12): a rough quantile
    return np.clip((field - threshold) / 0.08 + 0.3, 0.0, 1.0) * (field > threshold - 0.024)


def surface(
    gbox: GeoBox, *, texture_epsg: int, seed: int, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cloud-free surface reflectance (6, H, W) float64 and SCL (H, W) uint8 on ``gbox``.

    Parameters
    ----------
    gbox
        Output grid (axis-aligned).
    texture_epsg
        EPSG code in which the world's textures are defined.
    seed
        The world's seed.
    classes
        LAMES class values of the mines on ``gbox`` for the date's year (0 = no mine).
    """
    x, y = texture_coords(gbox, texture_epsg)
    refl, scl = ground(x, y, seed)
    paint_mines(refl, scl, classes, x, y, seed)
    return refl, scl


def atmosphere(
    refl: np.ndarray, scl: np.ndarray, gbox: GeoBox, *, texture_epsg: int, clouds: CloudState | None
) -> tuple[np.ndarray, np.ndarray]:
    """Add the date's clouds, cirrus and cloud shadows to a surface; returns new arrays."""
    scl = scl.copy()
    if clouds is None or clouds.cover <= 0:
        return refl.astype(np.float32), scl
    x, y = texture_coords(gbox, texture_epsg)
    opacity = cloud_opacity(x, y, clouds)
    shadow = cloud_opacity(x + clouds.shadow_dx, y + clouds.shadow_dy, clouds)
    # A shadow is marked (and darkens) only where no cloud lies over it.
    shade = (shadow > 0.3) & (opacity < 0.02)
    refl = np.where(shade, refl * (1.0 - 0.65 * shadow), refl)
    scl[shade] = 3
    if clouds.cirrus:
        thin = np.clip((fbm(x, y, 12000.0, clouds.key + 5, 3) - 0.62) * 3.0, 0.0, 0.25)
        thin = np.where(shade, 0.0, thin)
        refl = refl + thin * 0.12
        scl[(thin > 0.05) & (opacity <= 0.3) & ~shade] = 10
    refl = refl * (1 - opacity) + SPECTRA["cloud"] * opacity
    scl[opacity > 0.3] = 8
    scl[opacity > 0.6] = 9
    return refl.astype(np.float32), scl


def render(
    gbox: GeoBox,
    *,
    texture_epsg: int,
    seed: int,
    classes: np.ndarray,
    clouds: CloudState | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance (6, H, W) float32 and SCL (H, W) uint8 of one date on ``gbox``.

    The surface of :func:`surface` seen through the date's :func:`atmosphere`.
    """
    refl, scl = surface(gbox, texture_epsg=texture_epsg, seed=seed, classes=classes)
    return atmosphere(refl, scl, gbox, texture_epsg=texture_epsg, clouds=clouds)
