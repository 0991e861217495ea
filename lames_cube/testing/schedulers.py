"""A dask scheduler that counts computes, to check that graph building stays lazy."""

from __future__ import annotations

import dask


class CountingScheduler:
    """A synchronous dask scheduler that counts how often it is asked to compute.

    Examples
    --------
    >>> import dask.array as da
    >>> counter = CountingScheduler()
    >>> with dask.config.set(scheduler=counter):
    ...     x = da.ones(4) + 1
    >>> counter.calls
    0
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, dsk, keys, **kwargs):
        self.calls += 1
        return dask.get(dsk, keys, **kwargs)
