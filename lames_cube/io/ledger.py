"""The write ledger of a store: one JSON line per step of a write, and what it says is done.

A write first records its plan, then its metadata, then one line per finished region; the ledger,
``<store>/.lames/ledger.jsonl``, holds one JSON object per line::

    {"event": "begin", "job": "3f2a...", "op": "write", "time": [0, 3],
     "grid": {"y": [0, 512, 256], "x": [0, 768, 256]}, "template": {...}, "lames_ledger": 1}
    {"event": "metadata", "job": "3f2a..."}
    {"event": "done", "t": [0, 3], "y": [0, 256], "x": [0, 256]}
    ...
    {"event": "complete", "job": "3f2a..."}

``begin`` declares a job (``op`` is ``write``, ``init`` or ``append``): the time range it fills and
its chunk grid (``[start, stop, chunk]`` per spatial dim); ``template`` describes the cube
(:func:`lames_cube.io.template.template_summary`) so that a resume with another cube is refused.
``done`` records a finished region (absolute index ranges, ``t`` = ``[0, 0]`` for cubes without
time). A job is complete when every region of its grid has a ``done`` line whose ``t`` range
contains the job's; the store is complete when every job is. Lines are appended with one
``write`` call each, so concurrent region writers (one process per tile) can share a ledger on a
local file system. The ledger guards against a crashed *process*; it does not fsync. On object
stores it is rewritten whole for each line, so concurrent region writers need a local store.

The ledger lives in an empty Zarr group, ``<store>/.lames/`` (with its own ``zarr.json``): a
plain file at the store's root makes zarr warn "Object at ... is not recognized as a component of
a Zarr hierarchy" every time xarray lists the root. Other writers (patch sets, predictions) keep
their own events in the same file and read them back with :meth:`Ledger.records`.

The tests' crash point lives here too (:data:`CRASH_AFTER`, :func:`crash_point`): every resumable
writer stops with :class:`~lames_cube.errors.SimulatedCrash` between two recorded units when a
test asks for it with :func:`lames_cube.testing.crash.crash_after`.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as tmp:
...     ledger = Ledger(Path(tmp))
...     ledger.append({"event": "note", "text": "hello"})
...     ledger.exists(), ledger.records()
(True, [{'event': 'note', 'text': 'hello'}])
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from lames_cube._atomic import atomic_write_text
from lames_cube._fs import StorePath, UrlPath, append_bytes
from lames_cube.errors import SimulatedCrash, StoreError

__all__ = [
    "CRASH_AFTER",
    "LEDGER_GROUP",
    "LEDGER_NAME",
    "LEDGER_VERSION",
    "Ledger",
    "LedgerState",
    "Region",
    "crash_point",
    "describe_incomplete",
    "grid_regions",
]

#: Path of the ledger inside a store. It lives in an empty Zarr group (``.lames/zarr.json``) so
#: that zarr does not warn about an unknown object when xarray lists the store's root.
LEDGER_NAME = ".lames/ledger.jsonl"
#: The ``zarr.json`` of the ledger's group.
LEDGER_GROUP = {"zarr_format": 3, "node_type": "group",
                "attributes": {"description": "lames_cube write ledger (ledger.jsonl)"}}
#: Version of the cube writer's records (``lames_ledger`` of its ``begin`` lines).
LEDGER_VERSION = 1

#: A region of a store: ``(y0, y1, x0, x1)``, absolute indices.
Region = tuple[int, int, int, int]

#: The tests' crash point: when set (by :func:`lames_cube.testing.crash.crash_after`), a
#: resumable writer raises :class:`~lames_cube.errors.SimulatedCrash` instead of writing its unit
#: (region, patch-set block or prediction tile) number ``CRASH_AFTER + 1``; None (the default):
#: never. A context variable: set in one thread (or task), it is seen by the writers it runs.
CRASH_AFTER: ContextVar[int | None] = ContextVar("lames_cube_crash_after", default=None)


def crash_point(written: int, units: str) -> None:
    """Stop a writer here when a test asked for a crash after ``written`` units.

    Writers call it before each unit they write (``units`` names them in the message).

    Parameters
    ----------
    written : int
        Units written so far by this call of the writer.
    units : str
        What they are (``"regions"``, ``"blocks"``, ``"tiles"``).

    Raises
    ------
    lames_cube.errors.SimulatedCrash
        :data:`CRASH_AFTER` is set and ``written`` has reached it.

    Examples
    --------
    >>> crash_point(5, "regions")  # no crash asked for: nothing happens
    >>> token = CRASH_AFTER.set(2)
    >>> crash_point(2, "regions")
    Traceback (most recent call last):
    ...
    lames_cube.errors.SimulatedCrash: simulated crash after 2 regions (crash_after(2))
    >>> CRASH_AFTER.reset(token)
    """
    limit = CRASH_AFTER.get()
    if limit is not None and written >= limit:
        raise SimulatedCrash(f"simulated crash after {written} {units} (crash_after({limit}))")


def grid_regions(grid: Mapping[str, list[int]], spatial: tuple[str, str]) -> list[Region]:
    """The regions of a job's grid (``[start, stop, chunk]`` per spatial dim), row by row.

    Examples
    --------
    >>> grid_regions({"y": [0, 512, 256], "x": [0, 300, 256]}, ("y", "x"))
    [(0, 256, 0, 256), (0, 256, 256, 300), (256, 512, 0, 256), (256, 512, 256, 300)]
    """
    (y0, y1, cy), (x0, x1, cx) = grid[spatial[0]], grid[spatial[1]]
    return [(ya, min(ya + cy, y1), xa, min(xa + cx, x1))
            for ya in range(y0, y1, cy) for xa in range(x0, x1, cx)]


@dataclass
class LedgerState:
    """What a cube ledger says: its jobs (``begin`` records by job id), the jobs whose metadata
    is written, the time ranges written per region and the jobs marked complete."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: set[str] = field(default_factory=set)
    done: dict[Region, list[tuple[int, int]]] = field(default_factory=dict)
    complete: set[str] = field(default_factory=set)

    def is_done(self, region: Region, t: tuple[int, int]) -> bool:
        """``region`` is written for every time step of ``t``."""
        return any(a <= t[0] and t[1] <= b for a, b in self.done.get(region, ()))

    def regions(self, job: str) -> list[Region]:
        """Every region of ``job``'s grid."""
        rec = self.jobs[job]
        return grid_regions(rec["grid"], tuple(rec["template"]["dims"][-2:]))  # type: ignore[arg-type]

    def missing(self, job: str) -> list[Region]:
        """The regions of ``job`` not written yet."""
        t = tuple(self.jobs[job]["time"])
        return [r for r in self.regions(job) if not self.is_done(r, t)]  # type: ignore[arg-type]

    def job_complete(self, job: str) -> bool:
        """``job`` is marked complete, or its metadata and every region are written."""
        return job in self.complete or (job in self.metadata and not self.missing(job))

    def incomplete_jobs(self) -> list[str]:
        """The jobs not complete, in the ledger's order."""
        return [j for j in self.jobs if not self.job_complete(j)]


class Ledger:
    """The ledger file of a store (local or fsspec): append records, read them back.

    Parameters
    ----------
    store : pathlib.Path or lames_cube._fs.UrlPath
        The store (the ledger is ``store / LEDGER_NAME``).
    """

    def __init__(self, store: StorePath) -> None:
        self.path = store / LEDGER_NAME

    def exists(self) -> bool:
        """The ledger file exists."""
        return self.path.is_file()

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as one JSON line (one ``write`` call on a local store; a torn last
        line left by a crash is ended first). Creates the ledger's group on first use."""
        line = json.dumps(record, sort_keys=True, separators=(",", ":"))
        data = (line + "\n").encode()
        group = self.path.parent / "zarr.json"
        if not group.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(group, UrlPath):
                group.write_text(json.dumps(LEDGER_GROUP, indent=2))
            else:
                atomic_write_text(group, json.dumps(LEDGER_GROUP, indent=2))
        if isinstance(self.path, UrlPath):  # no concurrent writers on object stores
            old = self.path.read_bytes() if self.path.exists() else b""
            append_bytes(self.path, (b"\n" if old and not old.endswith(b"\n") else b"") + data)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:  # a crash may have left a torn last line: start on a fresh one
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            os.write(fd, data)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every whole record of the ledger, in order, whatever its event (lines torn by a
        crash are skipped); ``[]`` without a ledger. Other writers (patch sets) keep their own
        events here and read them back with this."""
        if not self.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a line torn by a crash
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def read(self) -> LedgerState:
        """The cube writer's records as a :class:`LedgerState` (empty without a ledger).

        Raises
        ------
        lames_cube.errors.StoreError
            A ``begin`` record of another ledger version.
        """
        state = LedgerState()
        for rec in self.records():
            event = rec.get("event")
            if event == "begin":
                if rec.get("lames_ledger") != LEDGER_VERSION:
                    raise StoreError(f"the ledger {self.path} has version "
                                     f"{rec.get('lames_ledger')!r}; this lames_cube reads version "
                                     f"{LEDGER_VERSION}. Rewrite the store with mode='w'.")
                state.jobs[rec["job"]] = rec
            elif event == "metadata":
                state.metadata.add(rec["job"])
            elif event == "done":
                region = (*rec["y"], *rec["x"])
                state.done.setdefault(region, []).append(tuple(rec["t"]))  # type: ignore[arg-type]
            elif event == "complete":
                state.complete.add(rec["job"])
        return state

    def mark_complete(self) -> LedgerState:
        """Append a ``complete`` line for every job that is complete and not marked yet."""
        state = self.read()
        for job in state.jobs:
            if job not in state.complete and state.job_complete(job):
                self.append({"event": "complete", "job": job})
                state.complete.add(job)
        return state


def describe_incomplete(path: StorePath, state: LedgerState) -> str:
    """Why a store is incomplete, job by job, and how to finish it (for error messages)."""
    if not state.jobs:
        return (f"the store {str(path)!r} is incomplete: its creation was interrupted before any "
                f"job was recorded. Rewrite it with write_cube(cube, {str(path)!r}, mode='w').")
    parts = []
    for job in state.incomplete_jobs():
        rec = state.jobs[job]
        total = len(state.regions(job))
        missing = state.missing(job) if job in state.metadata else state.regions(job)
        shape = tuple(rec["template"]["shape"])
        first = ", ".join(f"y[{r[0]}:{r[1]}] x[{r[2]}:{r[3]}]" for r in missing[:3])
        more = ", ..." if len(missing) > 3 else ""
        if rec["op"] == "init":
            how = (f"write the missing regions with write_cube(subcube, {str(path)!r}, "
                   f"region={{...}}), or the whole cube with mode='resume'")
        elif rec["op"] == "append":
            how = (f"finish it with write_cube(new_cube, {str(path)!r}, append_dim='time', "
                   f"mode='resume') using the same new cube")
        else:
            how = (f"finish it with write_cube(cube, {str(path)!r}, mode='resume') using the same "
                   f"cube")
        parts.append(f"the {rec['op']} of a cube of shape {shape} (time index "
                     f"{rec['time'][0]}:{rec['time'][1]}) has {total - len(missing)} of {total} "
                     f"regions written (missing: {first}{more}); {how}")
    return (f"the store {str(path)!r} is incomplete: " + "; ".join(parts) +
            ". Or pass allow_incomplete=True to read it anyway (unwritten chunks read as the fill "
            "value: 0 for integer cubes, NaN for float ones).")
