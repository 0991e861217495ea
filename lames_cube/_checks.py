"""Checks of arguments that several modules take the same way."""

from __future__ import annotations

from typing import Any

import numpy as np

from lames_cube.errors import InvalidQueryError


def check_seed(seed: Any, *, allow_none: bool = False) -> int:
    """A random seed: a non-negative integer; with ``allow_none``, None draws one from the OS
    and returns it, so that the draw can be recorded and repeated.

    Raises
    ------
    InvalidQueryError
        Anything else (a float, a string, a bool, a negative number).

    Examples
    --------
    >>> check_seed(1117), check_seed(None, allow_none=True) >= 0
    (1117, True)
    """
    if seed is None and allow_none:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidQueryError(f"seed={seed!r} is not an integer >= 0; pass e.g. seed=1117 so "
                                "the draw can be repeated.")
    return int(seed)
