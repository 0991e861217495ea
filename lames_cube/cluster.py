"""Where dask runs: the threaded scheduler, a local cluster, or a cluster at an address.

:func:`dask_scheduler` is a context manager used by the long jobs (country inference): it
assumes nothing beyond a :class:`distributed.Client`, so the same command runs on a laptop, on
dask-jobqueue, Kubernetes or Coiled clusters (start the cluster there, pass its address).

- ``None`` or ``"threads"``: dask's threaded scheduler in this process (the fastest on a small
  machine: torch releases the GIL, one task per core);
- ``"local"``: a :class:`distributed.LocalCluster` of ``workers`` processes, one thread each;
- ``"tcp://host:port"`` (or ``tls://``, ``ws://``...): a running scheduler.

Before a local cluster starts, ``MALLOC_TRIM_THRESHOLD_`` is removed from the environment dask
gives its worker processes (``distributed.nanny.pre-spawn-environ``): with it, torch's
convolutions ran at half speed in workers on this kind of machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import dask
from distributed import Client, LocalCluster

from lames_cube.errors import LamesCubeError, SchedulerError, SchedulerUnreachableError  # noqa: F401 (re-exported)

__all__ = ["SchedulerError", "SchedulerUnreachableError", "dask_scheduler", "worker_threads"]



def _without_malloc_trim() -> None:
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    dask.config.set({"distributed.nanny.pre-spawn-environ": env})


def worker_threads(client: Any | None) -> int:
    """How many tasks run at once: the cluster's threads, or the threaded scheduler's."""
    if client is None:
        return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    return max(1, sum(client.nthreads().values()))


@contextlib.contextmanager
def dask_scheduler(scheduler: str | None = None, *, workers: int | None = None,
                   timeout: float = 10.0, quiet: bool = False) -> Iterator[Any | None]:
    """Run the block under a dask scheduler; yields the ``Client`` (None for threads).

    Parameters
    ----------
    scheduler
        ``None``/``"threads"``, ``"local"`` or a scheduler address (``tcp://10.0.0.5:8786``).
    workers
        Worker processes of a local cluster (default: one per core this process may use).
    timeout
        Seconds to wait for a scheduler at an address.
    quiet
        Do not print the dashboard link.

    Raises
    ------
    SchedulerUnreachableError
        Nothing answers at the address within ``timeout`` (the message gives the address).
    SchedulerError
        Not a scheduler kind, or a bad ``workers``.

    Examples
    --------
    >>> with dask_scheduler(None) as client:
    ...     client is None
    True
    """
    if scheduler in (None, "threads"):
        yield None
        return
    if not isinstance(scheduler, str):
        raise SchedulerError(f"scheduler={scheduler!r} must be None, 'threads', 'local' or an "
                             f"address like 'tcp://127.0.0.1:8786'.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise SchedulerError(f"workers={workers!r} must be a positive number of processes.")

    if scheduler == "local":
        _without_malloc_trim()
        n = workers or max(1, len(os.sched_getaffinity(0)))
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
                Client(cluster) as client:
            if not quiet:
                print(f"dask: local cluster of {n} workers; dashboard {client.dashboard_link}")
            yield client
        return
    if "://" not in scheduler:
        raise SchedulerError(f"scheduler={scheduler!r} is not 'threads', 'local' or an address; "
                             f"pass e.g. 'tcp://127.0.0.1:8786' (the address the scheduler "
                             f"prints when it starts).")
    try:
        client = Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as err:
        raise SchedulerUnreachableError(
            f"no dask scheduler answers at {scheduler!r} within {timeout:g} s ({err}); start "
            f"one (dask scheduler, or your cluster's own launcher) and pass the address it "
            f"prints, or run with --scheduler threads / local.") from None
    with client:
        if not quiet:
            link = client.dashboard_link
            print(f"dask: scheduler {scheduler}" + (f"; dashboard {link}" if link else ""))
        yield client
