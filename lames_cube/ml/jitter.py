"""Radiometric jitter: the variety of a real catalogue that one synthetic world lacks.

Real Sentinel-2 scenes of the same ground differ: the atmospheric correction leaves some haze
(path radiance, strongest in the blue), each scene and provider has its own gain, the season
changes the sun and the vegetation, and 8-bit products stretch the reflectance their own way.
A model trained on one world's renders sees none of that. :class:`Jitter` draws, per training
window, a brightness gain, a contrast change about the window's mean, a gain per band and a
haze, and :func:`jitter` applies them to the window's reflectance (uint16 × 10 000, 0 =
nodata, which stays 0); the draw is a pure function of ``(seed, epoch, key)`` as the dihedral
transforms are, so it does not depend on worker scheduling.

Examples
--------
>>> import numpy as np
>>> j = Jitter(brightness=0.0, contrast=0.0, band_gain=0.0, haze=0.02)
>>> image = np.full((2, 2, 2), 1000, np.uint16)
>>> params = j.draw(["B02", "B12"], seed=0, epoch=0, key=1)
>>> out = jitter(image, params)
>>> bool(out[0].mean() > out[1].mean() >= 1000)  # haze: more in the blue than in the SWIR
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lames_cube.errors import (
    JitterError,
    )

__all__ = ["HAZE_WEIGHTS", "Jitter", "JitterError", "JitterParams", "check_jitter_input", "jitter",
           "parse_jitter"]

#: Share of the blue band's haze in each band: path radiance falls steeply with wavelength
#: (Rayleigh scattering ~ wavelength^-4, aerosols ~ wavelength^-1.3); the values are
#: (492 nm / band centre)^2, a middle course between the two.
HAZE_WEIGHTS: dict[str, float] = {
    "B01": 1.0, "B02": 1.0, "B03": 0.77, "B04": 0.54, "B05": 0.49, "B06": 0.41, "B07": 0.39,
    "B08": 0.35, "B8A": 0.33, "B09": 0.28, "B11": 0.09, "B12": 0.05,
}



@dataclasses.dataclass(frozen=True)
class JitterParams:
    """One window's draw: ``gain`` per band (brightness × band gain), ``contrast`` and
    ``haze`` per band (reflectance × 10 000)."""

    gain: np.ndarray
    contrast: float
    haze: np.ndarray


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Spreads of the radiometric jitter, each drawn uniformly per window.

    Parameters
    ----------
    brightness
        All bands × ``1 ± brightness`` (scene gain, sun elevation, stretch).
    contrast
        Deviations from the window's mean × ``1 ± contrast``.
    band_gain
        Each band × ``1 ± band_gain`` on top (the atmospheric correction's and the
        providers' own calibrations; a redder or bluer scene).
    haze
        Residual path radiance added to the blue band, ``0 … haze`` reflectance, and to the
        other bands by :data:`HAZE_WEIGHTS`.
    probability
        Share of windows jittered (the others pass unchanged).

    Notes
    -----
    The defaults span what separates one real scene from another over the same desert: an
    L2A product's residual haze reaches a few hundredths of reflectance in the blue on hazy
    days; scene-to-scene gains (sun elevation through the year, BRDF, the atmospheric
    correction) vary by about ten per cent; 8-bit products differ by their stretch.
    """

    brightness: float = 0.12
    contrast: float = 0.15
    band_gain: float = 0.06
    haze: float = 0.025
    probability: float = 0.8

    def __post_init__(self) -> None:
        problems = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                    if not (isinstance(getattr(self, f.name), int | float)
                            and not isinstance(getattr(self, f.name), bool)
                            and math.isfinite(getattr(self, f.name))
                            and getattr(self, f.name) >= 0)]
        if problems:
            raise JitterError(f"jitter spreads must be finite numbers >= 0; got "
                              f"{', '.join(problems)}.")
        big = [n for n in ("brightness", "contrast", "band_gain") if getattr(self, n) >= 1]
        if big or self.probability > 1 or self.haze > 0.5:
            raise JitterError(
                f"jitter spreads out of range: brightness, contrast and band_gain must be < 1 "
                f"(got {[(n, getattr(self, n)) for n in big]}), probability <= 1 (got "
                f"{self.probability}), haze <= 0.5 reflectance (got {self.haze}).")

    def to_dict(self) -> dict[str, float]:
        """The settings as plain values (recorded in checkpoints)."""
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def draw(self, bands: Sequence[str], *, seed: int, epoch: int, key: int) -> JitterParams | None:
        """The jitter of window ``key`` in ``epoch`` (None: this window is left as it is).

        Raises
        ------
        JitterError
            A band without a haze weight (:data:`HAZE_WEIGHTS`).
        """
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(key),
                                                            0x6A17]))
        if rng.random() >= self.probability:
            return None
        unknown = [b for b in bands if b not in HAZE_WEIGHTS]
        if unknown:
            raise JitterError(f"no haze weight for bands {unknown}; jitter knows "
                              f"{sorted(HAZE_WEIGHTS)}.")
        n = len(bands)
        bright = 1.0 + self.brightness * rng.uniform(-1, 1)
        gain = bright * (1.0 + self.band_gain * rng.uniform(-1, 1, n))
        contrast = 1.0 + self.contrast * rng.uniform(-1, 1)
        haze = self.haze * 10_000.0 * rng.random() * np.array([HAZE_WEIGHTS[b] for b in bands])
        return JitterParams(gain=gain, contrast=float(contrast), haze=haze)


def jitter(image: np.ndarray, params: JitterParams | None) -> np.ndarray:
    """Apply one draw to a ``(band, y, x)`` window of reflectance × 10 000 (0 = nodata).

    Each band becomes ``(mean + contrast × (value - mean)) × gain + haze``, ``mean`` the
    band's mean over the window's valid pixels, clipped to 1 … 65 535 (nodata stays 0).

    Returns
    -------
    numpy.ndarray
        float32 (the input when ``params`` is None).

    Examples
    --------
    >>> image = np.array([[[0, 1000], [2000, 3000]]], np.uint16)
    >>> p = JitterParams(gain=np.array([2.0]), contrast=0.5, haze=np.array([100.0]))
    >>> jitter(image, p).tolist()  # mean 2000: 1000 -> 1500 -> 3000 -> 3100
    [[[0.0, 3100.0], [4100.0, 5100.0]]]
    """
    if params is None:
        return image
    if image.ndim != 3 or image.shape[0] != len(params.gain):
        raise JitterError(f"jitter takes one window (band, y, x) of {len(params.gain)} bands; "
                          f"got an array of shape {image.shape}.")
    out = image.astype(np.float32)
    valid = (image > 0).all(axis=0)
    if not valid.any():
        return out
    for b in range(out.shape[0]):
        band = out[b]
        mean = float(band[valid].mean())
        band[...] = ((mean + params.contrast * (band - mean)) * params.gain[b]
                     + params.haze[b])
    np.clip(out, 1.0, 65_535.0, out=out)
    out[image == 0] = 0.0  # nodata stays nodata, band by band
    return out


def check_jitter_input(jitter: Jitter | None, bands: Sequence[str], dtype: Any, nodata: Any,
                       source: str) -> None:
    """Raise before training when ``jitter`` cannot apply to the windows of ``source``.

    Jitter works on reflectance × 10 000 in integers with 0 as nodata (patch sets and cubes
    as this package writes them) and knows the haze of the Sentinel-2 bands only.

    Raises
    ------
    JitterError
        Float windows, another nodata value, or a band without a haze weight; the message names
        the way out (``jitter=False``).

    Examples
    --------
    >>> try:
    ...     check_jitter_input(Jitter(), ["B04"], np.dtype("float32"), 0, "x.zarr")
    ... except JitterError as err:
    ...     print(str(err)[57:])
    x.zarr holds float32 with nodata 0; train with jitter=False or rebuild it as uint16.
    """
    if jitter is None:
        return
    kind = np.dtype(dtype).kind
    if kind not in "iu" or (nodata or 0) != 0:
        raise JitterError(f"jitter needs integer reflectance x 10 000 with nodata 0; {source} "
                          f"holds {np.dtype(dtype)} with nodata {nodata!r}; train with "
                          "jitter=False or rebuild it as uint16.")
    unknown = [b for b in bands if b not in HAZE_WEIGHTS]
    if unknown:
        raise JitterError(f"jitter has no haze weight for bands {unknown} of {source} (it knows "
                          f"{sorted(HAZE_WEIGHTS)}); pick Sentinel-2 reflectance bands or train "
                          "with jitter=False.")


def parse_jitter(value: Any) -> Jitter | None:
    """``jitter=`` as the training API and recipes take it: True (the default spreads), False
    or None (none), a mapping of :class:`Jitter` settings, or a :class:`Jitter`.

    Raises
    ------
    JitterError
        Anything else, unknown keys or bad values.

    Examples
    --------
    >>> parse_jitter(False) is None, parse_jitter({"haze": 0.0}).haze
    (True, 0.0)
    """
    if value is None or value is False:
        return None
    if value is True:
        return Jitter()
    if isinstance(value, Jitter):
        return value
    if isinstance(value, Mapping):
        names = {f.name for f in dataclasses.fields(Jitter)}
        unknown = sorted(set(map(str, value)) - names)
        if unknown:
            raise JitterError(f"unknown jitter settings {unknown}; the settings are "
                              f"{sorted(names)}.")
        return Jitter(**{str(k): v for k, v in value.items()})
    raise JitterError(f"jitter={value!r} must be true, false, a mapping of "
                      f"{[f.name for f in dataclasses.fields(Jitter)]} or a Jitter.")
