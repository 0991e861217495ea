"""Writers to kill: small deterministic writes run as a subprocess, for crash-safety tests.

``python -m lames_cube.testing.crash cube STORE`` writes :func:`demo_cube` through the real
:func:`lames_cube.io.write_cube`; ``python -m lames_cube.testing.crash prediction STORE
--checkpoint CKPT`` writes the prediction of a checkpoint over :func:`demo_image` through the
real :func:`lames_cube.prediction.write_prediction`. Run again with ``--mode resume`` (a
prediction always resumes), a killed write is finished. Each writer prints ``ready`` (flushed)
once it has imported everything and built its lazy input, just before the write starts, and
``done <seconds> <regions or tiles written>`` when the write returned: a test kills it a measured delay after ``ready``,
so the kills land in the write rather than in the interpreter's start-up.

The inputs are deterministic (every block of the cube is drawn from the seed and its position,
so any recomputation in any process gives the same pixels): a killed-then-resumed store must
hold the same bytes as a store written in one go. :func:`store_files` and
:func:`store_arrays` read what is compared, :func:`store_state` says how far a killed write got
(from its ledger), and :func:`kill_after` / :func:`run_writer` start the writers.

In-process crashes come from :func:`crash_after`: inside its block every resumable writer
(:func:`~lames_cube.io.write_cube`, :func:`~lames_cube.io.init_cube_store`'s region writes,
:func:`~lames_cube.patchset.write_patch_set`, :func:`~lames_cube.prediction.write_prediction`)
raises :class:`~lames_cube.errors.SimulatedCrash` after writing that many units (regions,
blocks, tiles), each of them whole and in the ledger -- a crash between two ledger lines. The
public writers take no test keyword: the hook is the context variable
:data:`lames_cube.io.ledger.CRASH_AFTER`, which only this module sets.

Examples
--------
>>> import tempfile
>>> from lames_cube.errors import SimulatedCrash
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = write_cube(demo_cube(ny=128, nx=128), f"{tmp}/c.zarr", patch_size=64)
...     state = store_state(path)
...     arrays = store_arrays(path)
...     try:
...         with crash_after(1):
...             write_cube(demo_cube(ny=128, nx=128), f"{tmp}/k.zarr", patch_size=64)
...     except SimulatedCrash as err:
...         print(err)
...     killed = store_state(f"{tmp}/k.zarr")
simulated crash after 1 regions (crash_after(1))
>>> state["phase"], state["done"], state["total"], arrays["reflectance"][0]
('complete', 4, 4, 'uint16')
>>> killed["phase"], killed["done"]
('regions', 1)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np
import odc.geo.xr  # noqa: F401  (registers .odc; imported before "ready": the kills land in the write)
import pandas as pd
import rioxarray  # noqa: F401  (registers .rio; imported before "ready")
import xarray as xr
import zarr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from lames_cube.io import LEDGER_NAME, Ledger, write_cube
from lames_cube.io.ledger import CRASH_AFTER
from lames_cube.prediction import write_prediction
from lames_cube.testing.ml_sets import BANDS

__all__ = [
    "KillResult",
    "crash_after",
    "demo_cube",
    "demo_image",
    "demo_prediction",
    "kill_after",
    "leftover_temporaries",
    "main",
    "run_writer",
    "store_arrays",
    "store_files",
    "store_state",
    "writer_command",
]

#: Origin and pixel size of the demo grids (EPSG:32719).
X0, Y0, RES = 300_000, 7_000_000, 10
CUBE_BANDS = ("B04", "SCL")


# --------------------------------------------------------------------------------------------
# In-process crashes


@contextlib.contextmanager
def crash_after(units: int) -> Iterator[None]:
    """Within the block, resumable writers stop after writing ``units`` regions (cube stores),
    blocks (patch sets) or tiles (predictions), raising
    :class:`~lames_cube.errors.SimulatedCrash`: every unit before is whole and recorded in the
    ledger, nothing of the next one is written. ``units=0`` stops a write once its layout is
    recorded, before any pixel.

    Parameters
    ----------
    units : int
        Units each writer call writes before it stops (>= 0). A writer that calls another
        (a prediction writes each tile through ``write_cube``) counts its own units.

    Raises
    ------
    ValueError
        ``units`` is not an integer >= 0.

    Examples
    --------
    >>> import tempfile
    >>> from lames_cube.errors import SimulatedCrash
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     try:
    ...         with crash_after(0):
    ...             write_cube(demo_cube(ny=64, nx=64), f"{tmp}/c.zarr", patch_size=64)
    ...     except SimulatedCrash as err:
    ...         print(err)
    ...     print(store_state(f"{tmp}/c.zarr")["text"])
    simulated crash after 0 regions (crash_after(0))
    0/1 regions recorded
    """
    if isinstance(units, bool) or not isinstance(units, int | np.integer) or units < 0:
        raise ValueError(f"crash_after needs an integer number of units >= 0; got {units!r}.")
    token = CRASH_AFTER.set(int(units))
    try:
        yield
    finally:
        CRASH_AFTER.reset(token)


# --------------------------------------------------------------------------------------------
# Inputs


def _block(block_info: Any = None, *, seed: int, delay: float) -> np.ndarray:
    """One block of :func:`demo_cube`: drawn from the seed and the block's position."""
    info = block_info[None]
    shape = info["chunk-shape"]
    rng = np.random.default_rng([seed, *(int(start) for start, _ in info["array-location"])])
    out = rng.integers(1, 10_000, size=shape, dtype=np.uint16)
    out[rng.random(shape) < 0.1] = 0  # nodata here and there
    if delay:
        time.sleep(delay)  # a slower source (e.g. a remote read); the pixels do not change
    return out


def demo_cube(*, nt: int = 2, ny: int = 256, nx: int = 384, chunk: int = 64, seed: int = 0,
              delay: float = 0.0) -> Any:
    """A lazy uint16 cube ``(time, band, y, x)`` with per-time and string coordinates and attrs.

    Chunks: one time step, both bands, ``chunk`` px along y and x (so ``ny/chunk * nx/chunk``
    regions of :func:`lames_cube.io.write_cube`, written with ``patch_size=chunk``). ``delay``
    seconds are slept in every block (to stretch a write in time; the pixels are the same).
    """
    gbox = GeoBox.from_bbox((X0, Y0, X0 + nx * RES, Y0 + ny * RES), crs="EPSG:32719",
                            resolution=RES)
    data = dsa.map_blocks(
        _block, seed=seed, delay=delay, dtype=np.uint16,
        chunks=dsa.core.normalize_chunks((1, len(CUBE_BANDS), chunk, chunk),
                                         (nt, len(CUBE_BANDS), ny, nx)),
        name=f"lames-crash-cube-{seed}-{nt}-{ny}-{nx}-{chunk}-{delay}")
    coords = xr_coords(gbox, "spatial_ref")
    coords["time"] = ("time", pd.date_range("2021-01-03T14:38:21.024", periods=nt,
                                            freq="5D").values)
    coords["cloud_cover"] = ("time", np.round(np.linspace(1.5, 20.25, nt) + seed, 3))
    coords["platform"] = ("time", np.array(["sentinel-2a", "sentinel-2b"] * nt)[:nt])
    coords["band"] = ("band", np.array(CUBE_BANDS))
    out = xr.DataArray(data, dims=("time", "band", "y", "x"), coords=coords,
                       attrs={"nodata": 0, "scale": 1e-4, "seed": seed})
    out.name = "reflectance"
    return out


def demo_image(*, height: int = 384, width: int = 512, seed: int = 0,
               bands: Sequence[str] | None = None, crs: str = "EPSG:32719") -> Any:
    """A smooth-plus-noise uint16 image ``(band, y, x)`` (in memory) for inference tests."""
    bands = list(bands or BANDS)
    gbox = GeoBox.from_bbox((X0, Y0, X0 + RES * width, Y0 + RES * height), crs,
                            resolution=RES)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 1000 + 600 * np.sin(yy / 17.0) * np.cos(xx / 23.0)
    data = np.stack([base * (1 + 0.1 * k) + rng.normal(0, 150, (height, width))
                     for k in range(len(bands))])
    data = np.clip(data, 1, 10000).astype(np.uint16)
    return xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": bands, **xr_coords(gbox)}, attrs={"nodata": 0})


def demo_prediction(checkpoint: str | os.PathLike[str], *, height: int = 384, width: int = 512,
                    tile: int = 128, patch: int = 64, seed: int = 0) -> Any:
    """The lazy prediction of ``checkpoint`` over :func:`demo_image` (one chunk per tile)."""
    from lames_cube.ml import predict  # local: ml needs optional torch

    return predict(demo_image(height=height, width=width, seed=seed), checkpoint, tile=tile,
                   patch=patch)


# --------------------------------------------------------------------------------------------
# What a store holds


def _is_temporary(rel: Path) -> bool:
    """Temporaries of an interrupted atomic write: zarr's ``<name>.<uuid>.partial``,
    lames_cube's ``.<stem>.<random>.tmp<suffix>`` and its write probes
    ``.lames-write-probe-<random>`` (lames_cube._atomic)."""
    name = rel.name
    return name.endswith(".partial") or (name.startswith(".") and ".tmp" in name) \
        or name.startswith(".lames-write-probe-")


def leftover_temporaries(store: str | os.PathLike[str]) -> list[str]:
    """Files of ``store`` left by atomic writes that a kill cut short (harmless: never read)."""
    root = Path(store)
    return sorted(str(f.relative_to(root)) for f in root.rglob("*")
                  if f.is_file() and _is_temporary(f.relative_to(root)))


def store_files(store: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file of a store -- each array's ``zarr.json``, every chunk file, the ledger group's
    ``zarr.json`` and a prediction's ``tiles.json`` -- by relative path, except the ledger
    (its lines record the history of the write, which a resume lengthens) and the temporaries
    of :func:`leftover_temporaries`."""
    root = Path(store)
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file() and f != root / LEDGER_NAME and not _is_temporary(f.relative_to(root))}


def store_arrays(store: str | os.PathLike[str]) -> dict[str, tuple[str, dict[str, Any], np.ndarray]]:
    """Every Zarr array of a store (read by zarr, not through the ledger) as ``(dtype,
    attributes, values)`` by path, and the root group's attributes under ``""``."""
    group = zarr.open_group(str(store), mode="r", zarr_format=3)
    out: dict[str, Any] = {"": ("group", dict(group.attrs), np.zeros(0))}
    for path, arr in group.arrays():
        out[path] = (str(arr.dtype), dict(arr.attrs), arr[...])
    return out


def store_state(store: str | os.PathLike[str]) -> dict[str, Any]:
    """How far a (possibly killed) write got, from the store's ledger.

    Returns a dict: ``phase`` -- ``"absent"`` (no store), ``"empty"`` (no job recorded),
    ``"begun"`` (a job recorded, its metadata not), ``"regions"`` (metadata written, regions
    under way) or ``"complete"`` (every job complete, by the ledger) --, ``done`` and ``total``
    regions (over all jobs), ``marked`` (the ledger's ``complete`` line is there) and ``text``.
    """
    path = Path(store)
    if not path.exists():
        return {"phase": "absent", "done": 0, "total": 0, "marked": False, "text": "no store"}
    state = Ledger(path).read()
    total = sum(len(state.regions(j)) for j in state.jobs)
    done = sum(len(state.regions(j)) - len(state.missing(j)) for j in state.metadata
               if j in state.jobs)
    marked = bool(state.jobs) and set(state.jobs) <= state.complete
    if not state.jobs:
        phase = "empty"
        text = "store folder without a job" + (" (ledger file)" if Ledger(path).exists() else "")
    elif not set(state.jobs) <= state.metadata:
        phase, text = "begun", "job recorded, metadata not"
    elif state.incomplete_jobs():
        phase, text = "regions", f"{done}/{total} regions recorded"
    else:
        phase = "complete"
        text = f"complete ({done}/{total} regions" + (", marked)" if marked else ", not marked)")
    return {"phase": phase, "done": done, "total": total, "marked": marked, "text": text}


# --------------------------------------------------------------------------------------------
# Running and killing writers


def writer_command(kind: str, store: str | os.PathLike[str], **options: Any) -> list[str]:
    """The command line of a writer: ``kind`` is ``"cube"`` or ``"prediction"``; options are
    :func:`main`'s (``mode``, ``checkpoint``, ``group``, ``nt``, ``ny``, ``nx``, ``chunk``,
    ``seed``, ``delay``, ``height``, ``width``, ``tile``, ``patch``), ``None`` ones left out."""
    cmd = [sys.executable, "-m", "lames_cube.testing.crash", kind, str(store)]
    for key, value in options.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


@dataclass
class KillResult:
    """What :func:`kill_after` did: ``killed`` (False when the writer had exited before the
    signal: a kill after completion), its return code, the seconds from ``ready`` to the
    kill, and the writer's stderr."""

    killed: bool
    returncode: int | None
    after_ready: float
    stderr: str


def _wait_for_line(proc: subprocess.Popen, word: bytes, timeout: float) -> bool:
    """Read ``proc``'s (unbuffered, binary) stdout up to a line starting with ``word``; False
    if the output ended first."""
    assert proc.stdout is not None
    fd, buffer = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {word!r} line from the writer within {timeout:g} s")
            if not sel.select(left):
                continue
            data = os.read(fd, 4096)
            if not data:
                return False
            buffer += data
            if any(line.startswith(word) for line in buffer.split(b"\n")[:-1]):
                return True


def kill_after(cmd: Sequence[str], delay: float, *, env: Mapping[str, str] | None = None,
               timeout: float = 120.0) -> KillResult:
    """Start ``cmd``, wait for its ``ready`` line, sleep ``delay`` s and SIGKILL it."""
    with subprocess.Popen(list(cmd), env=None if env is None else dict(env), bufsize=0,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            if not _wait_for_line(proc, b"ready", timeout):
                proc.wait(timeout)
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the writer ended before it was ready (code "
                                   f"{proc.returncode}): {err[-2000:]}")
            ready = time.monotonic()
            time.sleep(max(0.0, ready + delay - time.monotonic()))
            killed = proc.poll() is None
            after = time.monotonic() - ready
            if killed:
                proc.send_signal(signal.SIGKILL)
            # drain the pipes (a finished writer may still be flushing)
            _, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.kill()
            raise
    return KillResult(killed=killed, returncode=proc.returncode, after_ready=after,
                      stderr=(err or b"").decode(errors="replace"))


def run_writer(cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
               timeout: float = 300.0) -> tuple[float, int]:
    """Run a writer to the end (a ``subprocess.TimeoutExpired`` is a hang). Returns the seconds
    its write took (from ``ready`` to ``done``) and how many regions (cube) or tiles
    (prediction) it wrote."""
    out = subprocess.run(list(cmd), env=None if env is None else dict(env), capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"the writer failed (code {out.returncode}): {out.stderr[-3000:]}")
    done = [line.split() for line in out.stdout.splitlines() if line.startswith("done ")]
    if not done:
        raise RuntimeError(f"the writer printed no 'done' line: {out.stdout[-2000:]}")
    return float(done[-1][1]), int(done[-1][2])


def main(argv: Sequence[str] | None = None) -> int:
    """The writer (``python -m lames_cube.testing.crash {cube,prediction} STORE ...``)."""
    parser = argparse.ArgumentParser(prog="python -m lames_cube.testing.crash",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("cube", "prediction"))
    parser.add_argument("store")
    parser.add_argument("--mode", default="w-", choices=("w-", "w", "resume"),
                        help="write_cube's mode (cube only; a prediction always resumes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nt", type=int, default=2)
    parser.add_argument("--ny", type=int, default=256)
    parser.add_argument("--nx", type=int, default=384)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--checkpoint", help="the model (prediction only)")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--group", type=int, default=None)
    args = parser.parse_args(argv)

    written = [0]
    if args.kind == "cube":
        cube = demo_cube(nt=args.nt, ny=args.ny, nx=args.nx, chunk=args.chunk, seed=args.seed,
                         delay=args.delay)

        def write() -> None:
            before = _done_lines(args.store)
            write_cube(cube, args.store, mode=args.mode, patch_size=args.chunk)
            written[0] = _done_lines(args.store) - before
    else:
        if not args.checkpoint:
            parser.error("a prediction needs --checkpoint")
        pred = demo_prediction(args.checkpoint, height=args.height, width=args.width,
                               tile=args.tile, patch=args.patch, seed=args.seed)

        def count(region: Any, seconds: float) -> None:
            written[0] += 1

        def write() -> None:
            write_prediction(pred, args.store, group=args.group, progress=False, on_tile=count)
    print("ready", flush=True)
    start = time.perf_counter()
    write()
    print(f"done {time.perf_counter() - start:.4f} {written[0]}", flush=True)
    return 0


def _done_lines(store: str | os.PathLike[str]) -> int:
    """Regions recorded in a store's ledger, counting every rewrite."""
    path = Path(store)
    if not path.is_dir():
        return 0
    return sum(r.get("event") == "done" for r in Ledger(path).records())


if __name__ == "__main__":
    sys.exit(main())
