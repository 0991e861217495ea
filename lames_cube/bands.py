"""The Sentinel-2 band table (one canonical name per band, and each provider's asset keys) and
the harmonisation of digital numbers across processing baselines.

lames_cube names bands by their Sentinel-2 band id (``B04``, ``B8A``, ``SCL``), which is
unambiguous, unlike common names (Earth Search's ``nir`` is B08 while ``nir08`` is B8A).
Every provider's asset key maps onto these names through :data:`ASSET_KEY_TO_BAND`.

From processing baseline 04.00 on, L2A products add :data:`BASELINE_DN_OFFSET` to the digital
numbers of reflectance bands (:func:`baseline_dn_offset`); :func:`harmonise_values` removes an
offset, so that cubes hold reflectance × 10 000 whatever the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lames_cube.errors import UnknownBandError

#: The digital number of saturated (defective) pixels, in every processing baseline.
SATURATED_DN = 65_535
#: The offset in the reflectance digital numbers of products of baseline 04.00 and later
#: (reflectance = (DN - 1000) / 10 000); none before.
BASELINE_DN_OFFSET = 1000


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 band as lames_cube knows it."""

    name: str  #: canonical id, e.g. "B04"
    common_name: str | None  #: STAC eo common name, e.g. "red"
    resolution: int  #: native ground sample distance in metres
    earth_search: str  #: Earth Search v1 asset key, e.g. "red"
    center_wavelength: float | None = None  #: micrometres
    categorical: bool = False  #: never rescale or resample bilinearly (SCL)
    scale: float = 1e-4  #: reflectance per digital number


#: Canonical bands, in the ESA/SAFE order (B8A after B08).
BANDS: tuple[Band, ...] = (
    Band("B01", "coastal", 60, "coastal", 0.443),
    Band("B02", "blue", 10, "blue", 0.490),
    Band("B03", "green", 10, "green", 0.560),
    Band("B04", "red", 10, "red", 0.665),
    Band("B05", "rededge", 20, "rededge1", 0.704),
    Band("B06", "rededge", 20, "rededge2", 0.740),
    Band("B07", "rededge", 20, "rededge3", 0.783),
    Band("B08", "nir", 10, "nir", 0.842),
    Band("B8A", "nir08", 20, "nir08", 0.865),
    Band("B09", "nir09", 60, "nir09", 0.945),
    Band("B10", "cirrus", 60, "cirrus", 1.375),
    Band("B11", "swir16", 20, "swir16", 1.610),
    Band("B12", "swir22", 20, "swir22", 2.190),
    Band("SCL", None, 20, "scl", None, categorical=True, scale=1.0),
    Band("AOT", None, 20, "aot", None, scale=1e-3),
    Band("WVP", None, 10, "wvp", None, scale=1e-3),
)
BAND_BY_NAME: dict[str, Band] = {b.name: b for b in BANDS}

#: Bands a synthetic world writes (10 m visible + NIR, 20 m SWIR and scene classification).
WORLD_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")


def _key_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for band in BANDS:
        for key in (band.name, band.earth_search, f"{band.name}_{band.resolution}m"):
            table[key] = band.name
        table[band.name.lower()] = band.name
    # Older / other layouts: Planetary Computer 2021 ("SCL-20m"), CDSE ("SCL_20m").
    table.update({"SCL-20m": "SCL", "SCL_20m": "SCL", "visual": "visual", "TCI": "visual"})
    table.update({"visual-10m": "visual", "TCI_10m": "visual"})
    return table


#: Asset key of any supported provider → canonical band name.
ASSET_KEY_TO_BAND: dict[str, str] = _key_table()

#: Scene classification (SCL) classes.
SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}
#: SCL classes that mark an observation as not clear.
SCL_CLOUD: tuple[int, ...] = (3, 8, 9, 10)


def canonical_band(key: str) -> str:
    """Return the canonical band name for a provider asset key or band name.

    Parameters
    ----------
    key
        An asset key of Earth Search (``"red"``, ``"nir08"``), Planetary Computer or Earth Search
        v0 (``"B04"``, ``"SCL"``), CDSE (``"B04_10m"``), or a canonical name.

    Returns
    -------
    str
        The canonical name, e.g. ``"B04"``.

    Raises
    ------
    UnknownBandError
        The key is not a Sentinel-2 band of any provider known here.

    Examples
    --------
    >>> canonical_band("nir"), canonical_band("nir08"), canonical_band("SCL")
    ('B08', 'B8A', 'SCL')
    """
    try:
        return ASSET_KEY_TO_BAND[key]
    except KeyError:
        raise UnknownBandError(
            f"Unknown Sentinel-2 band or asset key {key!r}. Known canonical names: "
            f"{', '.join(b.name for b in BANDS)}; provider keys such as 'red', 'nir08', 'scl', "
            "'B04_10m' are mapped onto them."
        ) from None


def is_band_key(key: str) -> bool:
    """Return True when ``key`` is an asset key that names a Sentinel-2 band."""
    return key in ASSET_KEY_TO_BAND


# --------------------------------------------------------------------------- DN harmonisation
def baseline_dn_offset(baseline: str | float) -> int:
    """The offset a processing baseline adds to reflectance digital numbers.

    Parameters
    ----------
    baseline
        The product's processing baseline (``s2:processing_baseline``), e.g. ``"02.14"`` or
        ``"05.11"``.

    Returns
    -------
    int
        :data:`BASELINE_DN_OFFSET` (1000) from baseline 04.00 on, 0 before. (A provider may
        have removed it already: see :func:`lames_cube.items.normalize_item`.)

    Examples
    --------
    >>> baseline_dn_offset("02.14"), baseline_dn_offset("04.00"), baseline_dn_offset("05.11")
    (0, 1000, 1000)
    """
    return BASELINE_DN_OFFSET if float(baseline) >= 4.0 else 0


def harmonise_values(dn: Any, offset: Any) -> Any:
    """Remove a digital-number offset from a numpy or dask array (dask stays lazy).

    0 stays nodata, 65 535 (:data:`SATURATED_DN`) stays saturated, and valid pixels stay at
    ≥ 1: values at or below the offset (negative reflectance) clamp to 1.

    Parameters
    ----------
    dn
        uint16 digital numbers, numpy or dask.
    offset
        An int, or an array that broadcasts against ``dn`` (one offset per item and band; 0
        leaves a pixel as it is).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        uint16 harmonised values; ``dn`` itself when every offset is 0.

    Examples
    --------
    >>> dn = np.array([0, 500, 1000, 1001, 3000, 65535], "uint16")
    >>> harmonise_values(dn, 1000).tolist()
    [0, 1, 1, 1, 2000, 65535]
    """
    offset = np.asarray(offset, dtype=np.uint16)
    if not offset.any():
        return dn
    floor = offset + np.uint16(1)
    keep = (dn == 0) | (dn == SATURATED_DN)
    return np.where(keep, dn, np.maximum(dn, floor) - offset).astype(np.uint16)
