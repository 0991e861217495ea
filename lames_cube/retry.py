"""Retries with exponential backoff and jitter, for the network calls of search and cube reads.

One :class:`RetryPolicy` says how hard to try: how many tries in all, the first wait, its
ceiling, the jitter and the timeout of one request. :func:`retry_call` runs a function under a
policy and retries only what ``transient`` calls transient, waiting ``backoff · 2**k`` seconds
(at most ``max_backoff_s``, times a random factor in ``[1 - jitter, 1 + jitter]``), or what the
server asked for (``Retry-After``) when that is longer. Every retry is logged on the
``lames_cube.retry`` logger (INFO) and counted by kind in this process
(:func:`retry_counts`); giving up is logged as a WARNING.

Examples
--------
>>> calls = []
>>> def flaky():
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionResetError("reset by peer")
...     return "ok"
>>> policy = RetryPolicy(attempts=4, backoff_s=0.001)
>>> retry_call(flaky, policy=policy, transient=lambda e: isinstance(e, OSError),
...            what="a flaky call", kind="doctest")
'ok'
>>> len(calls), retry_counts()["doctest"] >= 2
(3, True)
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lames_cube.errors import (
    RetryPolicyError,
)

__all__ = ["RetryPolicy", "RetryPolicyError", "gdal_retry_env", "retry_call", "retry_counts"]

log = logging.getLogger("lames_cube.retry")
T = TypeVar("T")

_COUNTS: Counter = Counter()
_LOCK = threading.Lock()



@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a network call.

    Parameters
    ----------
    attempts
        Tries in all, the first included (1 = no retry). A raster read has two layers: GDAL
        tries each HTTP request this often, and the reader re-reads what GDAL gave up on this
        often, so a dead server costs up to ``attempts**2`` requests per read.
    backoff_s
        Wait before the first retry; doubled for each further retry.
    max_backoff_s
        Ceiling of one wait (a server's ``Retry-After`` may ask for more, up to twice this).
    jitter
        Each wait is multiplied by a random factor in ``[1 - jitter, 1 + jitter]``, so that
        many workers do not retry in step.
    timeout_s
        Seconds a raster request may take to connect, or go without receiving a byte (a
        stalled server counts as a failure, and is retried). ``search`` has its own
        ``timeout``.
    """

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    jitter: float = 0.25
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) \
                or self.attempts < 1:
            problems.append(f"attempts={self.attempts!r} must be an integer >= 1")
        for name in ("backoff_s", "max_backoff_s", "timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value < math.inf:
                problems.append(f"{name}={value!r} must be a finite number >= 0")
        if not isinstance(self.timeout_s, bool) and isinstance(self.timeout_s, (int, float)) \
                and self.timeout_s == 0:
            problems.append("timeout_s=0 would fail every request; give seconds > 0")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float)) \
                or not 0 <= self.jitter <= 1:
            problems.append(f"jitter={self.jitter!r} must be a fraction between 0 and 1")
        if problems:
            raise RetryPolicyError(
                "RetryPolicy: " + "; ".join(problems) + ". For example RetryPolicy(attempts=5, "
                "backoff_s=0.5, max_backoff_s=20, jitter=0.25, timeout_s=30)."
            )

    def wait(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        base = min(self.max_backoff_s, self.backoff_s * 2.0 ** (retry - 1))
        wait = base * random.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after is not None and retry_after > wait:
            wait = min(float(retry_after), 2 * self.max_backoff_s)
        return wait


#: The policy used when none is given.
DEFAULT_POLICY = RetryPolicy()


def check_policy(policy: Any) -> RetryPolicy:
    """``policy`` as a :class:`RetryPolicy` (None: the default; an int: that many attempts)."""
    if policy is None:
        return DEFAULT_POLICY
    if isinstance(policy, RetryPolicy):
        return policy
    if isinstance(policy, int) and not isinstance(policy, bool):
        return RetryPolicy(attempts=policy)
    raise RetryPolicyError(
        f"retry={policy!r} is not a retry policy; pass lames_cube.retry.RetryPolicy(...), a "
        "number of attempts, or None for the default."
    )


def _count(kind: str) -> None:
    with _LOCK:
        _COUNTS[kind] += 1


def retry_counts() -> Counter:
    """Retries made in this process so far, by kind (``"search"``, ``"read"``, ...)."""
    with _LOCK:
        return Counter(_COUNTS)


def retry_call(fn: Callable[[], T], *, policy: RetryPolicy,
               transient: Callable[[BaseException], bool],
               what: str, kind: str,
               retry_after: Callable[[BaseException], float | None] | None = None,
               before_retry: Callable[[int], None] | None = None) -> T:
    """Call ``fn()`` and retry it under ``policy`` while it raises transient errors.

    Parameters
    ----------
    fn
        The call, without arguments.
    policy
        Tries, waits and jitter.
    transient
        True for an error worth retrying; any other error is raised at once.
    what
        What is being tried, for the log (e.g. ``"GET https://…/search"``).
    kind
        The counter it adds to (:func:`retry_counts`).
    retry_after
        Seconds the server asked to wait, read from the error (or None).
    before_retry
        Called with the retry number before each retry (e.g. to drop a cache).

    Returns
    -------
    The value of ``fn()``.

    Raises
    ------
    Exception
        The last error, when it is not transient or when the tries are used up.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt == policy.attempts:
                log.warning("gave up on %s after %d tries: %s", what, attempt, _short(exc))
                raise
            asked = retry_after(exc) if retry_after is not None else None
            wait = policy.wait(attempt, asked)
            _count(kind)
            log.info("retry %d/%d of %s in %.2f s after %s", attempt, policy.attempts - 1,
                     what, wait, _short(exc))
            time.sleep(wait)
            if before_retry is not None:
                before_retry(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."


def gdal_retry_env(policy: RetryPolicy) -> dict[str, Any]:
    """GDAL configuration making ``/vsicurl/`` retry failed HTTP requests under ``policy``.

    GDAL retries 429 and 5xx answers and broken connections itself, doubling
    ``GDAL_HTTP_RETRY_DELAY`` with jitter at each retry. A request that receives nothing for
    ``timeout_s`` is dropped (``GDAL_HTTP_LOW_SPEED_TIME``); GDAL does not retry that, the
    reader of :func:`lames_cube.cube.build_cube` does. No total time limit: a slow but
    flowing download of a large range is never cut.

    >>> gdal_retry_env(RetryPolicy(attempts=3, backoff_s=0.25, timeout_s=10))["GDAL_HTTP_MAX_RETRY"]
    2
    """
    timeout = max(1, round(policy.timeout_s))
    return {
        "GDAL_HTTP_MAX_RETRY": policy.attempts - 1,
        "GDAL_HTTP_RETRY_DELAY": policy.backoff_s,
        "GDAL_HTTP_CONNECTTIMEOUT": timeout,
        "GDAL_HTTP_LOW_SPEED_TIME": timeout,
        "GDAL_HTTP_LOW_SPEED_LIMIT": 1,
    }
