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


def check_positive_int(value: Any, what: str, example: int = 256,
                       unit: str | None = "pixels") -> int:
    """A count that must be a positive integer: a window size or stride in pixels, a number of
    bins.

    Parameters
    ----------
    value
        The argument as given.
    what
        The argument's name, for the error message.
    example
        A good value, for the error message.
    unit
        What is counted, for the error message (None: nothing named).

    Returns
    -------
    int
        ``value`` as a Python int.

    Raises
    ------
    InvalidQueryError
        Anything but an integer >= 1 (a bool, a float, a string, 0, a negative number).

    Examples
    --------
    >>> check_positive_int(np.int64(32), "size")
    32
    >>> check_positive_int(0, "bins", 4, unit=None)
    Traceback (most recent call last):
    ...
    lames_cube.errors.InvalidQueryError: bins=0 must be a positive integer, e.g. bins=4.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        counted = f" number of {unit}" if unit else ""
        raise InvalidQueryError(f"{what}={value!r} must be a positive integer{counted}, "
                                f"e.g. {what}={example}.")
    return int(value)
