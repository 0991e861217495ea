"""The procedural Sentinel-2 landscape: reflectance and scene classification for any window.

:class:`Landscape` renders the world on any axis-aligned grid (an odc-geo GeoBox) for one date.
The COG writer and the window-by-window source both call it, so a window read procedurally
equals the same window of the written scene.

What it draws (generator 9; issue 24 calibrated its look to real Sentinel-2):

- **ground**: geological units (grey, blue-grey, dull brown, reddish rock, dark lavas, light
  tuff, pale ochre) in domain-warped cells with sharp boundaries, their strata cropping out
  along the relief; hills with relief shading (sun from the north-east), winding ravines and
  rills with sharp creases; bright alluvial fans, salt flats and dry clay lakes; dry river beds
  with sparse vegetation, rare lakes, roads; sharp-edged patches of gravel, a 10 m grain and
  each pixel's own mixture of stones. Spectra: :data:`GEOLOGY`, :data:`OVERLAYS` and
  :data:`LOOKS`, with their sources (:data:`DESERT_RATIOS`: the real L2A tile's band ratios);
- **mines**, drawn from the local rock rather than in a colour of their own: open pits as
  dark depressions of fresh rock with a lit and a shadowed wall (faint benches only on the
  largest, some with a pit lake), waste-rock dumps of fresh rock with flat tops, steep gullied
  faces and haul roads, smooth light tailings with wet zones and a pond, pale heap-leach pads
  in cells, facilities with roofs and their shadows, stockyards with rows of piles, and haul
  roads that link a site's sectors and lead out of it;
- **time**: the sun of each date (elevation and azimuth at 10:30 local solar time, so relief and
  roofs are lit differently through the year), vegetation that greens up and dries, snow on high
  ground when the date's snow line is low, a residual haze (or over-correction) of the
  atmospheric correction, and each scene's own gain and sensor noise (:func:`scene_pixels`);
- **atmosphere**: the date's clouds, cirrus and cloud shadows (cast away from the sun), with
  their truth kept beside the scene classification, and the classification's own errors at
  :data:`SCL_ERRORS` rates: bright tailings, leach pads and salt read as cloud or snow, dark
  water and shadows as "dark area" (2), thin cloud edges and a few other pixels unclassified (7),
  a few bright pixels saturated (1).

The smooth part of the ground is evaluated on a global 80 m node lattice and interpolated; the
rest per pixel, in the numba kernels of :mod:`lames_cube.synthetic.kernels`, which also blur the
pixels by the sensor's point spread function (:data:`PSF`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from scipy import ndimage

import lames_cube.synthetic.kernels as K
from lames_cube.errors import InvalidGridError
from lames_cube.synthetic.mines import draw

#: Reflectance bands the world simulates, in this order.
REFLECTANCE_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")

#: Spacing (m) of the lattice on which the smooth ground is evaluated.
NODE_SPACING = 80.0
#: How far (m) beyond a window mine structure is looked at (benches follow the pit outline
#: up to this distance from its edge).
MINE_HALO_M = 600.0

#: Smooth ground fields: name, coarsest feature size (m), octaves (order used by the kernel).
GROUND_FIELDS = (
    ("elevation", 6000.0, 5),
    ("relief", 700.0, 3),
    ("warp_x", 2600.0, 2),
    ("warp_y", 2600.0, 2),
    ("albedo", 1500.0, 3),
    ("fan", 1700.0, 3),
    ("basin", 9000.0, 3),
    ("salty", 15000.0, 1),
    ("channel", 2400.0, 3),
    ("road", 5000.0, 2),
    ("paved", 20000.0, 1),
    ("lake", 3000.0, 3),
    ("vegetation", 1500.0, 2),
    ("warp_fine_x", 500.0, 2),
    ("warp_fine_y", 500.0, 2),
    ("dip", 6000.0, 2),
    ("ravine", 260.0, 1),
)
if tuple(name for name, _, _ in GROUND_FIELDS) != K.FIELDS:  # pragma: no cover - a code error
    raise ImportError("GROUND_FIELDS and kernels.FIELDS list the fields in different orders")
#: Per-pixel octaves (m): small ravines and rills (ridged, with slopes), texture patches and hue.
FINE_SCALES = (110.0, 45.0, 55.0)

#: Band ratios of real hyper-arid ground: the 5th, 25th, 50th, 75th and 95th percentiles over
#: the 289,159 clear pixels (SCL 4, 5; 10 m bands averaged to the 20 m bands' 200 m grid) of the
#: real L2A tile in ``../shared/stac/pixels`` (S2A 29RKH 2020-02-19, processing baseline 02.14,
#: Western Sahara: a desert analogue of the Atacama). ``tests/test_appearance.py`` recomputes
#: them from the files. The units' near-infrared and SWIR follow from their red band by these.
DESERT_RATIOS = {
    "B08/B04": (1.10, 1.13, 1.14, 1.16, 1.18),
    "B11/B08": (1.15, 1.20, 1.23, 1.26, 1.32),
    "B12/B11": (0.89, 0.93, 0.96, 0.97, 0.99),
}


def desert_spectrum(blue: float, green: float, red: float, q: int = 2,
                    b12_b11: float | None = None) -> tuple[float, ...]:
    """Six-band reflectance (B02, B03, B04, B08, B11, B12) of a ground material from its
    visible bands, with the near infrared and SWIR of real desert ground
    (:data:`DESERT_RATIOS`, percentile ``q``: 0 = 5th … 4 = 95th); ``b12_b11`` replaces the
    B12/B11 ratio (clay-bearing materials absorb at 2.2 µm, in B12).

    Examples
    --------
    >>> [round(v, 4) for v in desert_spectrum(0.10, 0.10, 0.10)]
    [0.1, 0.1, 0.1, 0.114, 0.1402, 0.1346]
    """
    nir = red * DESERT_RATIOS["B08/B04"][q]
    swir1 = nir * DESERT_RATIOS["B11/B08"][q]
    swir2 = swir1 * (DESERT_RATIOS["B12/B11"][q] if b12_b11 is None else b12_b11)
    return (blue, green, red, nir, swir1, swir2)


# The visible bands of the ground below were fitted so that the world's ground, with its relief
# shading, texture and strata, reproduces the real Sentinel-2 figures of issue 24 (8-bit true
# colour through to_rgb8, the LAMES box of site 821: ground mean R, G, B 88, 84, 86, standard
# deviations 31, 23, 20, median R/B 1.07, median chroma 0.13): grey, blue-grey and dull brown
# ground, some reddish rock. `lames-cube world check` prints the same figures for any world.
#: Geological units: reflectance (B02, B03, B04, B08, B11, B12), share, layering (relative
#: brightness spread of a unit's strata).
GEOLOGY = {
    # andesitic and granitic regolith, neutral grey
    "grey": (desert_spectrum(0.100, 0.099, 0.103, 2), 0.24, 0.22),
    # fresh volcanic gravels and basaltic andesite, blue-grey
    "blue_grey": (desert_spectrum(0.096, 0.091, 0.090, 1), 0.16, 0.15),
    # varnished alluvium and older fans, dull brown
    "dull_brown": (desert_spectrum(0.096, 0.102, 0.114, 3), 0.22, 0.28),
    # iron-stained red beds and oxidised volcanics: the colourful rock the Atacama has
    "red_rock": (desert_spectrum(0.090, 0.101, 0.126, 4), 0.10, 0.30),
    # dark lavas and volcanic ash beds
    "dark_volcanic": (desert_spectrum(0.070, 0.069, 0.071, 0), 0.10, 0.20),
    # light rhyolitic tuff and ignimbrite
    "light_tuff": (desert_spectrum(0.136, 0.138, 0.146, 2), 0.10, 0.30),
    # pale ochre sediments and gypsum-bearing soils
    "pale_ochre": (desert_spectrum(0.110, 0.118, 0.136, 3), 0.08, 0.28),
}
# Natural decoys: as bright as the brightest mine surfaces (tailings beaches, leach pads).
OVERLAYS = {
    # bright alluvial fan gravel, fresh and unvarnished
    "fan_gravel": desert_spectrum(0.180, 0.184, 0.196, 2),
    # salar crust, dusty halite and gypsum: flat and bright in the visible and NIR, darker in
    # the SWIR (the water and sulphate absorptions of evaporite crusts, as in the USGS spectral
    # library's halite and gypsum spectra, Kokaly et al. 2017); as bright as white tailings
    "salt_crust": (0.290, 0.296, 0.302, 0.320, 0.280, 0.222),
    # dry clay pan: light, with the clays' 2.2 um absorption in B12
    "dry_clay": desert_spectrum(0.265, 0.275, 0.290, 2, b12_b11=0.85),
}
#: Materials of channels, water, roads and mines (rows of the kernel's ``looks`` table). Rows
#: built with ``desert_spectrum`` take their NIR and SWIR from the real tile; the rows written
#: out in full (vegetation, water, asphalt, ponds, roofs, concentrate, pit lakes) are small or
#: rare surfaces whose values are hand-set to the textbook shapes their comments name: no
#: published spectrum of them is in the repository.
LOOKS = (
    # dry river-bed sand, lighter than the slopes around it
    ("sand", desert_spectrum(0.150, 0.155, 0.168, 2)),
    # green vegetation (chlorophyll: low red, high NIR; leaf water: lower SWIR)
    ("vegetation", (0.035, 0.065, 0.045, 0.300, 0.170, 0.085)),
    # dark lake water: SWIR near 0, so noise falls below it
    ("water", (0.045, 0.040, 0.025, 0.008, 0.0008, 0.0004)),
    ("asphalt", (0.070, 0.075, 0.080, 0.090, 0.110, 0.100)),
    # gravel road, light
    ("gravel", desert_spectrum(0.175, 0.178, 0.188, 2)),
    # fresh rock of pit walls and floors: dark grey
    ("pit_rock", desert_spectrum(0.080, 0.079, 0.082, 1)),
    # tailings beaches: light grey to white, fine and clay-rich (2.2 um absorption in B12)
    ("tailings_grey", desert_spectrum(0.225, 0.228, 0.232, 2, b12_b11=0.90)),
    ("tailings_white", desert_spectrum(0.285, 0.290, 0.295, 2, b12_b11=0.90)),
    # tailings ponds and saline lagoons: turquoise-grey water with suspended fines
    ("tailings_pond", (0.100, 0.112, 0.088, 0.045, 0.010, 0.006)),
    # heap-leach ore: pale, with some clay (acid leaching)
    ("leach_ore", desert_spectrum(0.165, 0.168, 0.178, 2, b12_b11=0.92)),
    ("roof_white", (0.290, 0.295, 0.300, 0.310, 0.330, 0.310)),
    ("roof_grey", (0.150, 0.160, 0.170, 0.185, 0.210, 0.195)),
    ("roof_blue", (0.150, 0.150, 0.130, 0.160, 0.190, 0.175)),
    ("roof_rust", (0.105, 0.115, 0.150, 0.190, 0.240, 0.220)),
    ("ore_concentrate", (0.060, 0.065, 0.070, 0.082, 0.100, 0.092)),
    # waste rock: the mean of real mine pixels of issue 24 (8-bit 107, 96, 95 → reflectance)
    ("waste_rock", desert_spectrum(0.1118, 0.1129, 0.1259, 2)),
    # pit lakes: dark green to black water
    ("pit_lake", (0.030, 0.048, 0.032, 0.012, 0.002, 0.001)),
)
CLOUD = (0.640, 0.655, 0.670, 0.690, 0.500, 0.400)
SNOW = (0.880, 0.870, 0.850, 0.780, 0.090, 0.060)
#: Sun zenith and azimuth (degrees) of renders without a date.
SUN = (35.0, 45.0)
#: Error rates of the synthetic scene classification (share of the pixels each rule can reach).
SCL_ERRORS = {
    # bright clear ground (mean visible reflectance 0.26 and up, the salars, clay pans and white
    # tailings of this world; ramping in from 0.17), tailings
    # beaches and leach pads (whatever their brightness, from 0.15): flagged as cloud 8/9, or
    # snow 11 where SWIR is bright, where a blob fixed on the ground (300 m) and a blob of the
    # date (240 m) are low: the same surfaces date after date, as Sen2Cor does in the Atacama
    "bright_as_cloud": 0.4,
    # clear pixels darker than 0.04 (water, deep shade) and cloud shadows: "dark area" (2)
    "dark_area": 0.35,
    # other clear pixels left unclassified (7); cloud edges of opacity 0.12-0.3 always are
    "unclassified": 0.003,
    # clear pixels brighter than 0.26 in the visible: saturated (1), all bands 65535
    "saturated": 0.0005,
}
#: The sensor's point spread function as a separable 3-tap kernel ``[PSF, 1 - 2 PSF, PSF]`` at
#: 10 m: its modulation transfer at the Nyquist frequency is ``1 - 4 PSF`` = 0.3 per axis, as
#: specified and measured in flight for Sentinel-2 MSI's 10 m bands (0.15 to 0.3; ESA,
#: Sentinel-2 L1C Data Quality Reports). Point samples of a sharp scene carry far more detail
#: near the pixel scale than the sensor records.
PSF = 0.175
#: Sensor noise of a scene: ``ABS + REL * reflectance`` (standard deviation, reflectance units).
NOISE_ABS, NOISE_REL = 0.0006, 0.002
#: A scene's own gain (each tile's atmospheric correction): 1 ± this, uniformly.
GAIN_SPREAD = 0.005


@dataclass(frozen=True)
class CloudState:
    """The atmosphere of one acquisition date."""

    key: int  #: noise key of the date
    cover: float  #: target cloud fraction (0..1)
    shadow_dx: float  #: offset (m, east) from a shadow to its cloud: towards the sun
    shadow_dy: float  #: offset (m, north) from a shadow to its cloud
    cirrus: bool  #: whether thin cirrus is present


def check_grid(geobox) -> GeoBox:
    """``geobox`` if it is a GeoBox the world can render (axis-aligned, with a CRS, not empty).

    Raises
    ------
    InvalidGridError
        Anything else, with the value and the fix.
    """
    if not isinstance(geobox, GeoBox):
        raise InvalidGridError(
            f"geobox has type {type(geobox).__name__}; pass an odc.geo GeoBox (e.g. "
            "world.tiles[0].geobox(10) or lames_cube.grid.mosaic_geobox())."
        )
    if 0 in geobox.shape:
        raise InvalidGridError(
            f"The grid has zero size (shape {tuple(geobox.shape)}): {geobox!r}. Pass a grid of at "
            "least one pixel."
        )
    a = geobox.affine
    if a.b != 0 or a.d != 0:
        raise InvalidGridError(
            f"The grid is rotated or sheared (affine {tuple(a)[:6]}); the world renders only "
            "axis-aligned GeoBox (affine b = d = 0)."
        )
    if geobox.crs is None:
        raise InvalidGridError(f"The grid {geobox!r} has no CRS; give it one.")
    return geobox


def pixel_centres(gbox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre x (1, W) and y (H, 1) coordinates of an axis-aligned GeoBox."""
    a = gbox.affine
    if a.b != 0 or a.d != 0:
        raise InvalidGridError(
            f"The grid is rotated or sheared (affine {tuple(a)[:6]}); the world renders only "
            "axis-aligned GeoBox (affine b = d = 0): reproject onto a north-up grid first."
        )
    h, w = gbox.shape
    xs = a.c + a.a * (np.arange(w) + 0.5)
    ys = a.f + a.e * (np.arange(h) + 0.5)
    return xs[None, :], ys[:, None]


def texture_coords(gbox: GeoBox, texture_epsg: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of ``gbox`` in the texture CRS, as two (H, W) arrays (maybe broadcast)."""
    xs, ys = pixel_centres(gbox)
    if gbox.crs.epsg == texture_epsg:
        return np.broadcast_to(xs, gbox.shape), np.broadcast_to(ys, gbox.shape)
    xx, yy = np.broadcast_arrays(xs, ys)
    tr = Transformer.from_crs(gbox.crs.epsg, texture_epsg, always_xy=True)
    tx, ty = tr.transform(xx, yy)
    return np.ascontiguousarray(tx), np.ascontiguousarray(ty)


def _pixel_window(gbox: GeoBox, bounds: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns ``(r0, r1, c0, c1)`` of an axis-aligned ``gbox`` covering ``bounds``
    (n, 4: minx, miny, maxx, maxy), plus 1 px, clipped to the grid."""
    a = gbox.affine
    cols = (np.concatenate([bounds[:, 0], bounds[:, 2]]) - a.c) / a.a
    rows = (np.concatenate([bounds[:, 1], bounds[:, 3]]) - a.f) / a.e
    h, w = gbox.shape
    r0, r1 = max(math.floor(np.min(rows)) - 1, 0), min(math.ceil(np.max(rows)) + 1, h)
    c0, c1 = max(math.floor(np.min(cols)) - 1, 0), min(math.ceil(np.max(cols)) + 1, w)
    return r0, r1, c0, c1


def _key(*parts: int) -> int:
    """A 63-bit key from integers (stable across runs)."""
    k = 0x51ED
    for p in parts:
        k = (k * 1_000_003 + int(p)) % (2**63 - 25)
    return k


@dataclass
class Octaves:
    """Hashed value-noise lattices of several octaves, packed for the kernels."""

    flat: np.ndarray  #: all node values, float64
    meta: np.ndarray  #: (n, 5) int64: offset, ix0, iy0, nx, ny
    inv: np.ndarray  #: (n,) 1 / scale

    @classmethod
    def build(cls, specs: list[tuple[float, int]], bounds: tuple[float, float, float, float]) -> Octaves:
        """Lattices for octaves ``(scale, key)`` covering ``bounds`` (xmin, ymin, xmax, ymax)."""
        xmin, ymin, xmax, ymax = bounds
        meta = np.zeros((len(specs), 5), dtype=np.int64)
        keys = np.zeros(len(specs), dtype=np.uint64)
        offset = 0
        for k, (scale, key) in enumerate(specs):
            ix0 = math.floor(xmin / scale) - 1
            iy0 = math.floor(ymin / scale) - 1
            nx = math.floor(xmax / scale) + 3 - ix0
            ny = math.floor(ymax / scale) + 3 - iy0
            meta[k] = (offset, ix0, iy0, nx, ny)
            keys[k] = key
            offset += nx * ny
        flat = np.empty(offset, dtype=np.float64)
        K.fill_lattices(flat, meta, keys)
        inv = np.array([1.0 / s for s, _ in specs], dtype=np.float64)
        return cls(flat, meta, inv)


def _field_table(seed: int, extra: list[tuple[float, int]]) -> tuple[list[tuple[float, int]], np.ndarray]:
    """Octave specs of the ground fields (+ ``extra`` single octaves) and their index table."""
    specs: list[tuple[float, int]] = []
    table = np.zeros((len(GROUND_FIELDS), 2), dtype=np.int64)
    for f, (_name, scale, n) in enumerate(GROUND_FIELDS):
        table[f] = (len(specs), n)
        specs += [(scale / 2**o, _key(seed, 3, f, o)) for o in range(n)]
    return specs + extra, table


def _geology() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    spectra = np.array([v[0] for v in GEOLOGY.values()], dtype=np.float64)
    share = np.array([v[1] for v in GEOLOGY.values()], dtype=np.float64)
    layers = np.array([v[2] for v in GEOLOGY.values()], dtype=np.float64)
    cdf = np.cumsum(share / share.sum())
    over = np.array(list(OVERLAYS.values()), dtype=np.float64)
    return spectra, cdf, layers, over


_GEO, _GEO_CDF, _GEO_LAYERS, _OVER = _geology()
_LOOKS = np.array([v for _, v in LOOKS], dtype=np.float64)
_CLOUD = np.array(CLOUD, dtype=np.float64)
_NO_MINES = (np.full((1, 1), -1, np.int32), np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32),
             np.zeros((1, 1), np.float32), np.zeros((1, 1), np.uint8), np.zeros((1, K.N_PARAMS)))
_NO_CLOUDS = np.zeros((2, 2, K.N_CLOUD), np.float32)
_SNOW = np.array(SNOW, dtype=np.float64)


def solar_angles(date, lat: float) -> tuple[float, float]:
    """Solar zenith and azimuth (radians; azimuth clockwise from north) at 10:30 local solar
    time on ``date`` at latitude ``lat`` (degrees), as Sentinel-2's descending pass sees it.

    Examples
    --------
    >>> import datetime as dt
    >>> z, a = solar_angles(dt.date(2021, 6, 21), -24.0)  # southern winter: low sun, to the NE
    >>> round(math.degrees(z)), round(math.degrees(a))  # noon zenith: 24 + 23.44 = 47.4 degrees
    (52, 26)
    """
    doy = date.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    phi = math.radians(lat)
    hour = math.radians(-22.5)  # 10:30
    cos_z = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour)
    zenith = math.acos(max(-1.0, min(1.0, cos_z)))
    az = math.atan2(math.sin(hour),
                    math.cos(hour) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    return zenith, (az + math.pi) % (2 * math.pi)


def sun_vector(zenith: float, azimuth: float) -> np.ndarray:
    """(sin z sin a, sin z cos a, cos z): the unit vector towards the sun (x east, y north)."""
    return np.array([math.sin(zenith) * math.sin(azimuth), math.sin(zenith) * math.cos(azimuth),
                     math.cos(zenith)])


# Coast and Andean crest longitudes by latitude: the altitude ramp of the snow line.
_ALT_LAT = np.array([-56.0, -45.0, -40.0, -36.0, -33.0, -30.0, -27.0, -24.0, -22.0, -18.0, -15.0])
_COAST = np.array([-70.0, -74.0, -73.7, -72.8, -71.7, -71.5, -70.9, -70.5, -70.2, -70.3, -72.0])
_CREST = np.array([-69.0, -71.8, -71.6, -70.7, -70.0, -69.9, -68.6, -67.8, -68.1, -69.1, -70.0])


def andes_altitude(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """A smooth altitude (m) of the western Andean slope: 0 at the coast, 4600 m at the crest
    and beyond (the Altiplano), by longitude between the two at each latitude."""
    coast = np.interp(lat, _ALT_LAT, _COAST)
    crest = np.interp(lat, _ALT_LAT, _CREST)
    frac = np.clip((np.asarray(lon) - coast) / (crest - coast), 0.0, 1.0)
    return 4600.0 * frac**1.2


@dataclass(frozen=True)
class Atmosphere:
    """One date's sun, surface state and processor settings (what :func:`K.compose` needs).

    ``scl_errors`` False renders a perfect classification (clear-sky reference renders).
    """

    zenith: float = math.radians(SUN[0])
    azimuth: float = math.radians(SUN[1])
    haze: tuple[float, ...] = (0.0,) * 6
    vegetation: float = 0.5
    snowline: float = 1e9
    key: int = 0
    scl_errors: bool = False

    def as_array(self) -> np.ndarray:
        a = np.zeros(K.N_ATM)
        a[K.A_HAZE:K.A_HAZE + 6] = self.haze
        a[K.A_VEG] = self.vegetation
        a[K.A_SNOWLINE] = self.snowline
        a[K.A_SCL_KEY] = float(self.key % 2**52)
        if self.scl_errors:
            a[K.A_FP_BRIGHT] = SCL_ERRORS["bright_as_cloud"]
            a[K.A_DARK] = SCL_ERRORS["dark_area"]
            a[K.A_UNCLASSIFIED] = SCL_ERRORS["unclassified"]
            a[K.A_SATURATED] = SCL_ERRORS["saturated"]
        return a


NEUTRAL = Atmosphere()
_SUN_REF = sun_vector(NEUTRAL.zenith, NEUTRAL.azimuth)


def scene_pixels(dn: np.ndarray, scl: np.ndarray, xx: np.ndarray, yy: np.ndarray, key: int,
                 gain: float) -> np.ndarray:
    """A scene's own digital numbers: ``dn`` (6, H, W, offset 1000) with the scene's gain and
    sensor noise (see :func:`kernels.perturb`)."""
    out = np.empty_like(dn)
    K.perturb(dn, scl, xx, yy, np.uint64(key % 2**63), float(gain), NOISE_ABS, NOISE_REL, out)
    return out


@dataclass
class Canvas:
    """Everything about one grid that does not change with the date (cached per tile and year),
    on the grid padded by one pixel."""

    xx: np.ndarray
    yy: np.ndarray
    node_x: np.ndarray
    node_y: np.ndarray
    nodes: np.ndarray
    octaves: Octaves
    fine: np.ndarray
    mines: tuple | None
    altitude: np.ndarray  #: altitude (m) on the node lattice
    psf: float  #: weight of each neighbour in the sensor's 3-tap point spread function
    rows_aligned: bool  #: ``yy`` is constant along rows (the grid is in the texture CRS)

    @property
    def inner(self) -> tuple[np.ndarray, np.ndarray]:
        """Texture coordinates of the grid's own pixels (``xx``, ``yy`` have a 1 px margin)."""
        return self.xx[1:-1, 1:-1], self.yy[1:-1, 1:-1]


@dataclass
class MineLayer:
    """The mines of one year on one grid: sector index, edge distance, relief slopes, roads."""

    sid: np.ndarray
    dist: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    haul: np.ndarray
    params: np.ndarray

    def as_args(self) -> tuple:
        return self.sid, self.dist, self.gx, self.gy, self.haul, self.params


class Landscape:
    """The renderer of one world: ground, mines of any year, and atmosphere on any grid.

    Parameters
    ----------
    seed
        The world's seed.
    texture_epsg
        EPSG code in which every field is defined.
    sectors
        The full (last-year) sectors drawn: ``Name``, ``site_id``, ``class``, geometry (EPSG:4326).
    sectors_in_year
        Callable ``year -> GeoDataFrame`` of the grown sectors (same columns, burn order).
    """

    def __init__(self, seed: int, texture_epsg: int, sectors: gpd.GeoDataFrame, sectors_in_year) -> None:
        self.seed = seed
        self.texture_epsg = texture_epsg
        self.sectors = sectors
        self.sectors_in_year = sectors_in_year
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._local: OrderedDict = OrderedDict()
        self._scales: dict = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in ("_local", "_scales", "_lock"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    @cached_property
    def reference(self) -> tuple[float, float]:
        """A point of the world (texture CRS): the centre of its sectors."""
        c = shapely.centroid(shapely.union_all(self.sectors.to_crs(self.texture_epsg).geometry.values))
        return c.x, c.y

    def pixel_metres(self, gbox: GeoBox) -> tuple[float, float]:
        """Pixel width and height of ``gbox`` in ground metres, positive.

        The scale of the grid's CRS is taken at the world's :attr:`reference` point, so it is the
        same for every window of a grid (exactly 1 in the texture CRS).
        """
        key = gbox.crs.to_wkt()
        if key not in self._scales:
            if gbox.crs.epsg == self.texture_epsg:
                self._scales[key] = (1.0, 1.0)
            else:
                x, y = self.reference
                tr = Transformer.from_crs(self.texture_epsg, gbox.crs.to_wkt(), always_xy=True)
                gx, gy = tr.transform([x, x + 1000.0, x], [y, y, y + 1000.0])
                self._scales[key] = (math.hypot(gx[1] - gx[0], gy[1] - gy[0]) / 1000.0,
                                     math.hypot(gx[2] - gx[0], gy[2] - gy[0]) / 1000.0)
        ux, uy = self._scales[key]
        a = gbox.affine
        return abs(a.a) / ux, abs(a.e) / uy

    # ------------------------------------------------------------------ mine parameters
    @cached_property
    def sector_params(self) -> dict[str, np.ndarray]:
        """Look parameters of every sector by name (centre, orientation, hashes, water)."""
        local = self.sectors.to_crs(self.texture_epsg)
        out = {}
        for name, cls, geom in zip(local["Name"], local["class"], local.geometry, strict=True):
            name = str(name)
            rect = shapely.minimum_rotated_rectangle(geom)
            coords = np.asarray(rect.exterior.coords) if rect.geom_type == "Polygon" else np.zeros((3, 2))
            e1, e2 = coords[1] - coords[0], coords[2] - coords[1]
            axis = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
            angle = math.atan2(axis[1], axis[0])
            c = shapely.centroid(geom)
            h1, h2, h3 = (draw(self.seed, name, f"look-{k}") for k in range(3))
            water = 0.0
            if int(cls) == 5 and h2 < 0.25:
                water = 470.0 + 110.0 * h3
            elif int(cls) == 8 and h2 < 0.85:
                water = 90.0 + 160.0 * h3
            row = np.zeros(K.N_PARAMS)
            row[[K.P_CLASS, K.P_OX, K.P_OY, K.P_COS, K.P_SIN, K.P_H1, K.P_H2, K.P_H3, K.P_WATER_D,
                 K.P_SIZE]] = (float(cls), c.x, c.y, math.cos(angle), math.sin(angle), h1, h2, h3,
                               water, 2.0 * math.sqrt(geom.area / math.pi))
            out[name] = row
        return out

    @cached_property
    def haul_roads(self) -> gpd.GeoSeries:
        """Haul roads (15 m wide, texture CRS): from each site's main pit to its other sectors,
        and out of the site towards the nearest town or mill."""
        local = self.sectors.to_crs(self.texture_epsg)
        roads = []
        for site_id, group in local.groupby("site_id", sort=True):
            geoms = group.geometry.values
            areas = shapely.area(geoms)
            pits = np.flatnonzero(group["class"].to_numpy() == 5)
            hub = pits[np.argmax(areas[pits])] if len(pits) else int(np.argmax(areas))
            start = shapely.point_on_surface(geoms[hub])
            ends = [shapely.point_on_surface(g) for k, g in enumerate(geoms) if k != hub]
            x0, y0 = start.x, start.y
            for k in range(2):
                angle = 2 * math.pi * draw(self.seed, str(site_id), f"road-angle-{k}")
                reach = 4000.0 + 6000.0 * draw(self.seed, str(site_id), f"road-reach-{k}")
                ends.append(shapely.Point(x0 + reach * math.cos(angle), y0 + reach * math.sin(angle)))
            for k, end in enumerate(ends):
                bend = (draw(self.seed, f"{site_id}:{k}", "road-bend") - 0.5) * 0.5
                mx, my = (x0 + end.x) / 2, (y0 + end.y) / 2
                dx, dy = end.x - x0, end.y - y0
                roads.append(shapely.LineString([(x0, y0), (mx - bend * dy, my + bend * dx), (end.x, end.y)]))
        buffered = shapely.buffer(np.asarray(roads, dtype=object), 7.5, quad_segs=2) if roads else []
        return gpd.GeoSeries(buffered, crs=self.texture_epsg)

    def _in_crs(self, crs, year: int):
        """The year's sectors, their parameters and the haul roads in ``crs`` (a small LRU)."""
        key = (crs.to_wkt(), year)
        with self._lock:
            if key in self._local:
                self._local.move_to_end(key)
                return self._local[key]
        grown = self.sectors_in_year(year)
        local = grown.to_crs(crs)
        names = [str(n) for n in grown["Name"]]
        params = np.array([self.sector_params[n] for n in names]).reshape(-1, K.N_PARAMS)
        roads = self.haul_roads.to_crs(crs)
        value = (local.geometry.values, shapely.STRtree(local.geometry.values), params,
                 roads.values, shapely.STRtree(roads.values))
        with self._lock:
            self._local[key] = value
            while len(self._local) > 32:
                self._local.popitem(last=False)
        return value

    def mine_layer(self, gbox: GeoBox, year: int) -> MineLayer | None:
        """The mines of ``year`` on ``gbox`` (None when none is near)."""
        geoms, tree, params, roads, road_tree = self._in_crs(gbox.crs, year)
        res = self.pixel_metres(gbox)
        halo = math.ceil(MINE_HALO_M / min(res))
        big = gbox.pad(halo)
        window = shapely.box(*big.extent.boundingbox)
        hits = np.sort(tree.query(window, predicate="intersects"))
        road_hits = np.sort(road_tree.query(shapely.box(*gbox.extent.boundingbox), predicate="intersects"))
        if len(hits) == 0 and len(road_hits) == 0:
            return None
        h, w = gbox.shape
        haul = np.zeros((h, w), np.uint8)
        if len(road_hits):
            haul = rasterio.features.rasterize(
                ((roads[k], 1) for k in road_hits), out_shape=(h, w), transform=gbox.affine,
                fill=0, dtype="uint8")
        sid = np.full((h, w), -1, np.int32)
        dist = np.zeros((h, w), np.float32)
        gx = np.zeros((h, w), np.float32)
        gy = np.zeros((h, w), np.float32)
        if len(hits):
            # Burn only the part of the padded grid that the sectors' bounds cover (+1 px).
            r0, r1, c0, c1 = _pixel_window(big, shapely.bounds(geoms[hits]))
            if r1 > r0 and c1 > c0:
                crop = rasterio.features.rasterize(
                    ((geoms[k], int(k) + 1) for k in hits), out_shape=(r1 - r0, c1 - c0),
                    transform=big[r0:r1, c0:c1].affine, fill=0, dtype="int32") - 1
                d, z = self._structure(crop, big[r0:r1, c0:c1], params, MINE_HALO_M)
                dzr, dzc = np.gradient(z)
                # Paste the crop's overlap with the window.
                wr0, wc0 = max(r0 - halo, 0), max(c0 - halo, 0)
                wr1, wc1 = min(r1 - halo, h), min(c1 - halo, w)
                if wr1 > wr0 and wc1 > wc0:
                    cr = slice(wr0 + halo - r0, wr1 + halo - r0)
                    cc = slice(wc0 + halo - c0, wc1 + halo - c0)
                    sid[wr0:wr1, wc0:wc1] = crop[cr, cc]
                    dist[wr0:wr1, wc0:wc1] = d[cr, cc]
                    a = gbox.affine
                    gx[wr0:wr1, wc0:wc1] = dzc[cr, cc] / math.copysign(res[0], a.a)
                    gy[wr0:wr1, wc0:wc1] = dzr[cr, cc] / math.copysign(res[1], a.e)
        return MineLayer(sid, dist, gx, gy, haul, params)

    def _structure(self, ids: np.ndarray, gbox: GeoBox, params: np.ndarray, cap: float):
        """Distance to each sector's edge (m, capped) and mine relief (m) on a crop."""
        pad = np.pad(ids, 1, mode="edge")
        centre = pad[1:-1, 1:-1]
        edge = ((pad[:-2, 1:-1] != centre) | (pad[2:, 1:-1] != centre)
                | (pad[1:-1, :-2] != centre) | (pad[1:-1, 2:] != centre)) & (ids >= 0)
        if edge.any():
            d = ndimage.distance_transform_edt(~edge, sampling=self.pixel_metres(gbox)[::-1])
            d = np.minimum(d, cap).astype(np.float32)
        else:
            d = np.full(ids.shape, cap, np.float32)
        xx, yy = texture_coords(gbox, self.texture_epsg)
        z = np.empty(ids.shape, np.float64)
        K.mine_relief(ids, d, xx, yy, params, z)
        return d, z

    # ------------------------------------------------------------------ rendering
    def canvas(self, gbox: GeoBox, year: int) -> Canvas:
        """The date-independent part of a render of ``gbox`` in ``year``: on ``gbox`` padded by
        one pixel, for the sensor's point spread function."""
        psf = PSF if max(self.pixel_metres(gbox)) < 15.0 else 0.0
        gbox = gbox.pad(1)
        xx, yy = texture_coords(gbox, self.texture_epsg)
        xmin, xmax = float(xx.min()), float(xx.max())
        ymin, ymax = float(yy.min()), float(yy.max())
        sp = NODE_SPACING
        node_x = np.arange(math.floor(xmin / sp) - 1, math.floor(xmax / sp) + 3) * sp
        node_y = np.arange(math.floor(ymin / sp) - 1, math.floor(ymax / sp) + 3) * sp
        # Pixel texture no finer than the pixels (coarse grids would need huge lattices).
        pixel = min(self.pixel_metres(gbox))
        fine = [(max(s, pixel), _key(self.seed, 5, k)) for k, s in enumerate(FINE_SCALES)]
        specs, table = _field_table(self.seed, fine)
        # the ravines are drawn in the geology's warped coordinates: up to WARP_M beyond
        pad = K.WARP_M
        octaves = Octaves.build(specs, (min(node_x[0], xmin) - pad, min(node_y[0], ymin) - pad,
                                        max(node_x[-1], xmax) + pad, max(node_y[-1], ymax) + pad))
        nodes = np.empty((len(node_y), len(node_x), K.N_GROUND), np.float32)
        K.ground_nodes(node_x, node_y, octaves.flat, octaves.meta, octaves.inv, table,
                       np.uint64(_key(self.seed, 7)), nodes)
        layer = self.mine_layer(gbox, year)
        fine_idx = np.arange(len(specs) - len(fine), len(specs), dtype=np.int64)
        return Canvas(xx, yy, node_x, node_y, nodes, octaves, fine_idx,
                      layer.as_args() if layer is not None else None,
                      self.altitude(node_x, node_y), psf,
                      bool(gbox.crs.epsg == self.texture_epsg))

    def altitude(self, node_x: np.ndarray, node_y: np.ndarray) -> np.ndarray:
        """Altitude (m, float32) on a node lattice of texture coordinates: the Andean ramp
        (:func:`andes_altitude`) plus a few hundred metres of hills."""
        mx, my = np.meshgrid(node_x, node_y)
        lon, lat = self._to_lonlat.transform(mx, my)
        hills = 300.0 * np.sin(mx / 1700.0 + 0.7 * np.cos(my / 2300.0)) * np.cos(my / 1900.0)
        return (andes_altitude(lon, lat) + hills).astype(np.float32)

    @cached_property
    def _to_lonlat(self) -> Transformer:
        return Transformer.from_crs(self.texture_epsg, 4326, always_xy=True)

    def cloud_nodes(self, canvas: Canvas, clouds: CloudState) -> np.ndarray:
        """Cloud opacity, shadow and cirrus on the canvas's node lattice."""
        nx, ny = canvas.node_x, canvas.node_y
        specs = [(5000.0 / 2**o, _key(clouds.key, 11, o)) for o in range(5)]
        specs += [(12000.0 / 2**o, _key(clouds.key, 13, o)) for o in range(3)]
        sx = min(0.0, clouds.shadow_dx) - 100.0, max(0.0, clouds.shadow_dx) + 100.0
        sy = min(0.0, clouds.shadow_dy) - 100.0, max(0.0, clouds.shadow_dy) + 100.0
        octaves = Octaves.build(specs, (nx[0] + sx[0], ny[0] + sy[0], nx[-1] + sx[1], ny[-1] + sy[1]))
        out = np.empty((len(ny), len(nx), K.N_CLOUD), np.float32)
        K.cloud_nodes(nx, ny, octaves.flat, octaves.meta, octaves.inv, 0, 5, 5, 3, clouds.cover,
                      clouds.shadow_dx, clouds.shadow_dy, clouds.cirrus, out)
        return out

    def render(self, canvas: Canvas, clouds: CloudState | None,
               atmosphere: Atmosphere = NEUTRAL, noise: tuple[int, float] | None = None, *,
               harmonised: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Digital numbers (6, H, W) uint16 of a baseline-04.00 product (reflectance x 10 000 +
        1000, 1..65 535), SCL (H, W) uint8 and the cloud truth (H, W) uint8 (``K.T_*``).

        The reflectance is blurred by the sensor's point spread function (:data:`PSF`) on
        grids of about 10 m. ``noise`` ``(key, gain)`` applies a scene's own gain and noise in
        the same pass, bit for bit as :func:`scene_pixels` would afterwards; ``harmonised``
        returns the digital numbers as :func:`lames_cube.bands.harmonise_values` would make
        them (reflectance x 10 000, at least 1, 65 535 saturated)."""
        hp, wp = canvas.xx.shape
        dn = np.empty((6, hp - 2, wp - 2), np.uint16)
        scl = np.empty((hp, wp), np.uint8)
        truth = np.empty((hp, wp), np.uint8)
        has_clouds = clouds is not None and clouds.cover > 0
        cnodes = self.cloud_nodes(canvas, clouds) if has_clouds else _NO_CLOUDS
        mines = canvas.mines if canvas.mines is not None else _NO_MINES
        o = canvas.octaves
        K.compose(
            canvas.xx, canvas.yy, canvas.nodes, round(canvas.node_x[0] / NODE_SPACING),
            round(canvas.node_y[0] / NODE_SPACING), NODE_SPACING, o.flat, o.meta, o.inv,
            canvas.fine, np.uint64(_key(self.seed, 9)),
            np.concatenate([sun_vector(atmosphere.zenith, atmosphere.azimuth), _SUN_REF]),
            _GEO, _GEO_CDF, _GEO_LAYERS, _OVER, canvas.mines is not None, *mines, _LOOKS,
            has_clouds, cnodes, _CLOUD, atmosphere.as_array(), canvas.altitude, _SNOW,
            canvas.psf, np.uint64((noise[0] if noise else 0) % 2**63),
            np.array([noise[1] if noise else 0.0, NOISE_ABS, NOISE_REL]), canvas.rows_aligned,
            harmonised, dn, scl, truth,
        )
        return dn, scl[1:-1, 1:-1].copy(), truth[1:-1, 1:-1].copy()


def rasterize_classes(sectors, gbox: GeoBox) -> np.ndarray:
    """Burn sector classes onto ``gbox`` (all_touched False, in the frame's row order)."""
    h, w = gbox.shape
    if len(sectors) == 0:
        return np.zeros((h, w), dtype=np.uint8)
    local = sectors.to_crs(gbox.crs.to_wkt())
    bbox = gbox.extent.boundingbox
    local = local.cx[bbox.left : bbox.right, bbox.bottom : bbox.top]
    if len(local) == 0:
        return np.zeros((h, w), dtype=np.uint8)
    shapes = zip(local.geometry.values, local["class"].astype(int), strict=True)
    return rasterio.features.rasterize(
        shapes, out_shape=(h, w), transform=gbox.affine, fill=0, all_touched=False, dtype="uint8"
    )


def fine_grid(g20: GeoBox) -> GeoBox:
    """The 10 m grid of a 20 m grid (same extent, twice the pixels each way)."""
    h, w = g20.shape
    return GeoBox((2 * h, 2 * w), g20.affine @ Affine.scale(0.5), g20.crs)
