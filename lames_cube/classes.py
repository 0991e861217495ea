"""The LAMES class table: one enum for mask values, plus the sector and site mappings.

LAMES burns one value per class into its masks (DESIGN.md §5)::

    value  code  name
    0      -     other (background)
    1      asm   artisanal and small-scale mining (Ghana)
    2      lsm   large-scale mining site
    3      lh    heap leaching
    4      mf    mine facility
    5      op    open pit
    6      pp    processing plant
    7      sy    stockyard
    8      tsf   tailings storage facility
    9      wr    waste rock dump

Two derived label sets are used by the experiments:

- **sector classification** (8 classes): the mask values {0, 3, 4, ..., 9} map to the indices
  0..7 in the order ``[-, lh, mf, op, pp, sy, tsf, wr]`` (:data:`SECTOR_CLASSES`,
  :func:`to_sector_index`, :func:`from_sector_index`);
- **site detection** (binary): 1 inside any site polygon, 0 elsewhere (:func:`to_site_label`
  applies the same rule to a class raster: every mine class is 1, :attr:`LamesClass.OTHER` is 0).

Examples
--------
>>> LamesClass.OP, int(LamesClass.OP), LamesClass.OP.code, LamesClass.OP.long_name
(<LamesClass.OP: 5>, 5, 'op', 'open pit')
>>> LamesClass.parse("tailings storage facility")
<LamesClass.TSF: 8>
>>> to_sector_index([0, 3, 9]).tolist()
[0, 1, 7]
>>> from_sector_index([0, 1, 7]).tolist()
[0, 3, 9]
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from lames_cube.errors import AnnotationError

__all__ = [
    "BINARY_CLASSES",
    "SECTOR_CLASSES",
    "SECTOR_MINE_CLASSES",
    "LamesClass",
    "from_sector_index",
    "to_sector_index",
    "to_site_label",
]


_LONG_NAMES = {
    0: "other",
    1: "artisanal and small-scale mining",
    2: "large-scale mining site",
    3: "heap leaching",
    4: "mine facility",
    5: "open pit",
    6: "processing plant",
    7: "stockyard",
    8: "tailings storage facility",
    9: "waste rock dump",
}


class LamesClass(IntEnum):
    """A LAMES class; its integer value is the value burnt into LAMES masks.

    Attributes
    ----------
    code : str
        The short lower-case code used by LAMES (``"op"``; ``"-"`` for :attr:`OTHER`).
    long_name : str
        The class name of the annotation guideline (``"open pit"``).

    Examples
    --------
    >>> [c.code for c in LamesClass]
    ['-', 'asm', 'lsm', 'lh', 'mf', 'op', 'pp', 'sy', 'tsf', 'wr']
    >>> LamesClass(9).long_name
    'waste rock dump'
    """

    OTHER = 0
    ASM = 1
    LSM = 2
    LH = 3
    MF = 4
    OP = 5
    PP = 6
    SY = 7
    TSF = 8
    WR = 9

    @property
    def code(self) -> str:
        """Short code: ``"-"`` for OTHER, else the lower-case member name."""
        return "-" if self is LamesClass.OTHER else self.name.lower()

    @property
    def long_name(self) -> str:
        """Long name from the LAMES annotation guideline."""
        return _LONG_NAMES[int(self)]

    @classmethod
    def parse(cls, value: Any) -> LamesClass:
        """Return the class for a mask value, a code (``"op"``), a member name or a long name.

        Raises
        ------
        AnnotationError
            ``value`` names no LAMES class; the message lists the valid ones.

        Examples
        --------
        >>> LamesClass.parse(3), LamesClass.parse("WR"), LamesClass.parse("open pit")
        (<LamesClass.LH: 3>, <LamesClass.WR: 9>, <LamesClass.OP: 5>)
        """
        if isinstance(value, LamesClass):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if int(value) in _LONG_NAMES:
                return cls(int(value))
        elif isinstance(value, str):
            key = " ".join(value.strip().lower().replace("_", " ").split())
            for member in cls:
                if key in (member.code, member.name.lower(), member.long_name):
                    return member
        raise AnnotationError(
            f"{value!r} is not a LAMES class. Use a mask value 0..9, a code "
            f"({', '.join(c.code for c in cls)}) or a long name ({', '.join(_LONG_NAMES.values())})."
        )


#: Sector-classification classes, indexed by the 8-class sector index 0..7:
#: ``[-, lh, mf, op, pp, sy, tsf, wr]`` (index 0 is background, :attr:`LamesClass.OTHER`).
SECTOR_CLASSES: tuple[LamesClass, ...] = (
    LamesClass.OTHER,
    LamesClass.LH,
    LamesClass.MF,
    LamesClass.OP,
    LamesClass.PP,
    LamesClass.SY,
    LamesClass.TSF,
    LamesClass.WR,
)

#: The seven mine sector classes (mask values 3..9), i.e. :data:`SECTOR_CLASSES` without OTHER.
SECTOR_MINE_CLASSES: tuple[LamesClass, ...] = SECTOR_CLASSES[1:]

#: Names of the binary site-detection classes, indexed by label (0 no mine, 1 mine site).
BINARY_CLASSES: tuple[str, str] = ("no mine", "mine site")

_TO_SECTOR = np.full(256, -1, dtype=np.int16)
for _index, _cls in enumerate(SECTOR_CLASSES):
    _TO_SECTOR[int(_cls)] = _index
_FROM_SECTOR = np.array([int(c) for c in SECTOR_CLASSES], dtype=np.uint8)


def _as_int_array(values: npt.ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            bad = np.unique(arr[~np.isfinite(arr) | (arr != np.round(arr))])[:5]
            raise AnnotationError(f"{what} must be whole numbers; found {bad.tolist()}. Fill "
                                  "missing values and round before converting.")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise AnnotationError(f"{what} must be integers; got dtype {arr.dtype}. Map them to "
                              "class integers first (e.g. arr.astype('int64')).")
    return arr


def to_sector_index(values: npt.ArrayLike, *, unknown: int | None = None) -> np.ndarray:
    """Map LAMES mask values {0, 3, ..., 9} to the sector indices 0..7 (vectorised).

    Parameters
    ----------
    values
        Mask values (any shape, integer or whole-number floats).
    unknown
        Index given to values outside {0, 3, ..., 9} (e.g. 255 as an ignore value). When None
        (default) such values raise.

    Returns
    -------
    numpy.ndarray
        uint8 sector indices, same shape as ``values``.

    Raises
    ------
    AnnotationError
        A value is not a sector mask value (1 asm, 2 lsm, or not a LAMES value) and
        ``unknown`` is None; the message lists the offending values.

    Examples
    --------
    >>> to_sector_index([[0, 5], [8, 9]]).tolist()
    [[0, 3], [6, 7]]
    >>> to_sector_index([1, 4], unknown=255).tolist()
    [255, 2]
    """
    arr = _as_int_array(values, "LAMES mask values")
    inside = (arr >= 0) & (arr < 256)
    out = np.full(arr.shape, -1, dtype=np.int16)
    out[inside] = _TO_SECTOR[arr[inside]]
    bad = out < 0
    if bad.any():
        if unknown is None:
            found = np.unique(arr[bad])[:10].tolist()
            raise AnnotationError(
                f"Mask values {found} have no sector index: the sector classes are the mask values "
                f"{[int(c) for c in SECTOR_CLASSES]} ({', '.join(c.code for c in SECTOR_CLASSES)}). "
                "Pass unknown=<index> (e.g. 255) to map other values to an ignore index."
            )
        if not 0 <= int(unknown) <= 255:
            raise AnnotationError(f"unknown={unknown} must be in 0..255 (the result is uint8).")
        out[bad] = int(unknown)
    return out.astype(np.uint8)


def from_sector_index(indices: npt.ArrayLike) -> np.ndarray:
    """Map sector indices 0..7 back to LAMES mask values {0, 3, ..., 9} (vectorised).

    Raises
    ------
    AnnotationError
        An index outside 0..7.

    Examples
    --------
    >>> from_sector_index([3, 6]).tolist()
    [5, 8]
    """
    arr = _as_int_array(indices, "Sector indices")
    bad = (arr < 0) | (arr >= len(SECTOR_CLASSES))
    if bad.any():
        raise AnnotationError(
            f"Sector indices {np.unique(arr[bad])[:10].tolist()} are outside "
            f"0..{len(SECTOR_CLASSES) - 1}; pass indices from to_sector_index (mask ignore values "
            "out first)."
        )
    return _FROM_SECTOR[arr]


def to_site_label(values: npt.ArrayLike) -> np.ndarray:
    """The binary site-detection rule on mask values: 1 for any mine class (1..9), 0 for OTHER.

    LAMES site masks burn 1 for every pixel inside a site polygon; applied to a class raster
    made from the same polygons this gives the same mask.

    Raises
    ------
    AnnotationError
        A value that is not a LAMES mask value (outside 0..9).

    Examples
    --------
    >>> to_site_label([0, 1, 3, 9]).tolist()
    [0, 1, 1, 1]
    """
    arr = _as_int_array(values, "LAMES mask values")
    bad = (arr < 0) | (arr > max(_LONG_NAMES))
    if bad.any():
        raise AnnotationError(
            f"Mask values {np.unique(arr[bad])[:10].tolist()} are not LAMES classes (0..9); mask "
            "ignore values (e.g. 255) out first, or map other codes with LamesClass.parse."
        )
    return (arr > 0).astype(np.uint8)
