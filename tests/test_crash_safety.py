"""Crash safety: ``kill -9`` at random points of a cube write and of a prediction write, and a
dask worker lost mid-write. After the resume, every store must hold the same bytes as a clean
run's; before it, a killed store must never open as complete.

The writers are :mod:`lames_cube.testing.crash` run as subprocesses (``python -m
lames_cube.testing.crash cube|prediction STORE``): a small deterministic cube through the real
:func:`lames_cube.io.write_cube`, and a random-init U-Net's prediction through the real
:func:`lames_cube.prediction.write_prediction`. A writer prints ``ready`` once its imports are
done and its input is built; the kill comes a seeded random delay after that line, stratified
over the duration of a clean write (measured by the reference run), so the kills spread over
the whole write (job record, metadata, regions, the last ledger lines) instead of landing in
the interpreter's start-up. A delay past the end of the write is a kill after completion.

What is compared with the clean run (``crash.store_files`` / ``crash.store_arrays``):

- the bytes of every file of the store: each array's ``zarr.json`` (shape, chunks, dtype,
  codecs, fill value, dimension names, attrs), every chunk file (the set of chunk files too:
  a chunk that is all fill value is not written, in both runs), the ledger group's
  ``zarr.json`` and a prediction's ``.lames/tiles.json``. Not the ledger: its lines are the
  history of the write (a resume adds lines), so only its verdict is checked (complete, and
  the resume wrote exactly the regions the ledger lacked). Not the temporaries that zarr's
  and lames_cube's atomic writes leave when a kill cuts them short (``*.partial``,
  ``.*.tmp*``): never read, counted and printed;
- every array read back by zarr (not through the ledger): dtype, attributes and values;
- the cube / prediction opened by ``open_cube`` / ``open_prediction``
  (``xarray.testing.assert_identical``).

Run with ``pytest -m slow tests/test_crash_safety.py -s`` to see each trial's line.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from lames_cube.errors import SimulatedCrash
from lames_cube.io import (
    LEDGER_NAME,
    IncompleteStoreError,
    StoreNotFoundError,
    init_cube_store,
    open_cube,
    open_store,
    write_cube,
)
from lames_cube.io.ledger import LEDGER_GROUP
from lames_cube.patchset import write_patch_set
from lames_cube.prediction import write_prediction
from lames_cube.testing import crash

#: The seed of the kill delays.
SEED = 20260517
#: The cube of the cube trials: 2 times x 2 bands x 256 x 384 px in 64-px chunks: 24 regions.
CUBE = {"nt": 2, "ny": 256, "nx": 384, "chunk": 64}
CUBE_REGIONS = 24
#: The prediction of the prediction trials: 384 x 512 px in 128-px tiles: 12 tiles, 2 a group.
PRED = {"height": 384, "width": 512, "tile": 128, "patch": 64}
PRED_TILES = 12
GROUP = 2
#: ``crash.store_state`` phases of a store whose write was under way.
MID_WRITE = ("empty", "begun", "regions")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-init U-Net (the "small" preset) for the 6 bands of the demo image."""
    from lames_cube.testing.ml_sets import random_checkpoint

    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet.pt", patch_size=64, seed=3)


def stratified_delays(rng: np.random.Generator, n: int, duration: float) -> list[float]:
    """``n`` random delays, one in each ``n``-th of ``[0, duration]``, in random order."""
    delays = [(k + rng.random()) / n * duration for k in range(n)]
    return [delays[i] for i in rng.permutation(n)]


def snapshot(store: Path) -> tuple[dict[str, bytes], dict]:
    return crash.store_files(store), crash.store_arrays(store)


def assert_same_store(store: Path, reference: tuple[dict[str, bytes], dict]) -> None:
    ref_files, ref_arrays = reference
    files, arrays = snapshot(store)
    assert sorted(files) == sorted(ref_files), (
        f"files only in the resumed store: {sorted(set(files) - set(ref_files))[:5]}, only in "
        f"the clean one: {sorted(set(ref_files) - set(files))[:5]}")
    differ = sorted(k for k in ref_files if files[k] != ref_files[k])
    assert not differ, f"{len(differ)} files differ from the clean run's, e.g. {differ[:5]}"
    assert arrays.keys() == ref_arrays.keys()
    for name, (dtype, attrs, values) in ref_arrays.items():
        got_dtype, got_attrs, got = arrays[name]
        assert (got_dtype, got_attrs) == (dtype, attrs), name
        assert got.shape == values.shape, name
        np.testing.assert_array_equal(got, values, err_msg=name, strict=True)


def regions_on_disk(store: Path) -> int:
    """Regions of a cube store with at least one chunk file of reflectance (``c/t/b/y/x``)."""
    root = store / "reflectance" / "c"
    if not root.is_dir():
        return 0
    return len({f.relative_to(root).parts[2:] for f in root.rglob("*")
                if f.is_file() and not f.name.endswith(".partial")})


def open_before_resume(open_fn, store: Path, state: dict, reference: xr.Dataset | xr.DataArray
                       ) -> str:
    """Open a killed store: refused unless its ledger says it is complete, and then it must be
    the clean run's. Returns what happened."""
    try:
        opened = open_fn(store)
    except (IncompleteStoreError, StoreNotFoundError) as err:
        assert state["phase"] != "complete", f"a complete store was refused: {err}"
        return f"refused ({type(err).__name__})"
    assert state["phase"] == "complete", (
        f"a store killed mid-write ({state['text']}) opened as complete")
    xr.testing.assert_identical(opened.compute(), reference)
    return "opened, identical"


def kill_trial(command: list[str], store: Path, delay: float, open_fn,
               reference: xr.Dataset | xr.DataArray):
    """Start a writer, SIGKILL it ``delay`` s after it is ready, and inspect what it left:
    ``(kill, ledger state, what opening it did, temporaries left)``."""
    kill = crash.kill_after(command, delay)
    state = crash.store_state(store)
    if not kill.killed:  # it had finished: a complete store
        assert kill.returncode == 0, kill.stderr[-2000:]
        assert state["phase"] == "complete" and state["marked"], state
    else:
        assert kill.returncode == -signal.SIGKILL
    opened = open_before_resume(open_fn, store, state, reference)
    temps = crash.leftover_temporaries(store) if store.exists() else []
    return kill, state, opened, temps


def assert_resumed(store: Path, reference_files: dict, open_fn,
                   reference: xr.Dataset | xr.DataArray) -> None:
    """The resumed store is complete and the clean run's, file for file and value for value."""
    after = crash.store_state(store)
    assert after["phase"] == "complete" and after["marked"], after
    assert_same_store(store, reference_files)
    xr.testing.assert_identical(open_fn(store).compute(), reference)


def assert_mid_write(rows: list[dict], n: int) -> None:
    mid = sum(r["killed"] and r["phase"] in MID_WRITE for r in rows)
    assert mid >= n // 2, f"only {mid} of {n} kills landed mid-write"


def summary(kind: str, rows: list[dict], took: float, duration: float) -> str:
    killed = [r for r in rows if r["killed"]]
    mid = [r for r in killed if r["phase"] in MID_WRITE]
    phases = {p: sum(r["phase"] == p for r in killed) for p in
              ("absent", "empty", "begun", "regions", "complete")}
    delays = [r["delay"] for r in rows]
    return (f"SUMMARY {kind}: {len(rows)} trials in {took:.1f} s (clean write {duration:.2f} s); "
            f"delays {min(delays):.3f}..{max(delays):.3f} s; {len(killed)} killed, "
            f"{len(mid)} mid-write (phases at the kill: {phases}; 'absent': "
            f"before the store's folder existed), "
            f"{len(rows) - len(killed)} exited before the signal; every resume identical to the "
            f"clean run; temporaries left by kills: {sum(r['temps'] for r in rows)}")


# --------------------------------------------------------------------------------------------
# 1. kill -9 at random points of a cube write


@pytest.mark.slow
def test_kill_9_at_random_points_of_a_cube_write(tmp_path):
    start = time.perf_counter()
    ref = tmp_path / "reference.zarr"
    duration, written = crash.run_writer(crash.writer_command("cube", ref, **CUBE))
    assert written == CUBE_REGIONS
    reference = snapshot(ref)
    reference_cube = open_cube(ref).compute()
    rng = np.random.default_rng(SEED)
    n = 12
    rows = []
    for i, delay in enumerate(stratified_delays(rng, n, duration)):
        store = tmp_path / f"trial{i:02d}.zarr"
        kill, state, opened, temps = kill_trial(crash.writer_command("cube", store, **CUBE),
                                                store, delay, open_cube, reference_cube)
        on_disk = regions_on_disk(store)
        took, rewritten = crash.run_writer(
            crash.writer_command("cube", store, mode="resume", **CUBE), timeout=120)
        # The resume writes exactly the regions the ledger lacked (all of them without metadata).
        assert rewritten == CUBE_REGIONS - state["done"], (rewritten, state)
        assert_resumed(store, reference, open_cube, reference_cube)
        rows.append({"delay": delay, "killed": kill.killed, "phase": state["phase"],
                     "temps": len(temps)})
        print(f"cube trial {i:2d}: delay {delay:.3f} s ({delay / duration:4.0%} of a clean write), "
              f"{'killed' if kill.killed else 'exited before the kill'} at {kill.after_ready:.3f} "
              f"s: {state['text']} (chunks of {on_disk} on disk); open before resume: {opened}; "
              f"resume wrote {rewritten} "
              f"regions in {took:.2f} s; {len(temps)} temporaries left {temps[:2]}")
    print(summary("cube", rows, time.perf_counter() - start, duration))
    assert_mid_write(rows, n)


# --------------------------------------------------------------------------------------------
# 2. kill -9 at random points of a prediction write


@pytest.mark.slow
def test_kill_9_at_random_points_of_a_prediction_write(tmp_path, checkpoint, monkeypatch):
    from lames_cube.ml import inference
    from lames_cube.prediction import open_prediction, write_prediction

    start = time.perf_counter()
    ref = tmp_path / "reference.zarr"
    options = {**PRED, "checkpoint": checkpoint, "group": GROUP}
    duration, written = crash.run_writer(crash.writer_command("prediction", ref, **options))
    assert written == PRED_TILES
    reference = snapshot(ref)
    reference_pred = open_prediction(ref).compute()
    calls, resumed = [], []
    real = inference.predict_array
    monkeypatch.setattr(inference, "predict_array",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(SEED + 1)
    n = 10
    rows = []
    for i, delay in enumerate(stratified_delays(rng, n, duration)):
        store = tmp_path / f"trial{i:02d}.zarr"
        kill, state, opened, temps = kill_trial(
            crash.writer_command("prediction", store, **options), store, delay, open_prediction,
            reference_pred)
        # The rerun, in this process (the writer's own call; it saves torch's import, ~4 s a
        # trial), counting the tiles it computes.
        calls.clear()
        resumed.clear()
        t0 = time.perf_counter()
        write_prediction(crash.demo_prediction(checkpoint, **PRED), store, group=GROUP,
                         progress=False, on_tile=lambda region, s: resumed.append(region))
        took = time.perf_counter() - t0
        assert len(resumed) == len(calls) == PRED_TILES - state["done"], (len(calls), state)
        assert_resumed(store, reference, open_prediction, reference_pred)
        rows.append({"delay": delay, "killed": kill.killed, "phase": state["phase"],
                     "temps": len(temps)})
        print(f"prediction trial {i:2d}: delay {delay:.3f} s ({delay / duration:4.0%} of a clean "
              f"write), {'killed' if kill.killed else 'exited before the kill'} at "
              f"{kill.after_ready:.3f} s: {state['text'].replace('regions', 'tiles')}; open "
              f"before resume: {opened}; the rerun computed {len(calls)} tiles in {took:.2f} s; "
              f"{len(temps)} temporaries left {temps[:2]}")
    print(summary("prediction", rows, time.perf_counter() - start, duration))
    assert_mid_write(rows, n)


# --------------------------------------------------------------------------------------------
# 3. A dask worker lost mid-write


def _write_losing_a_worker(client, write, store: Path, after: int) -> str:
    """Run ``write()`` in a thread; once the ledger has ``after`` regions and a worker is busy,
    SIGKILL that worker's process; wait for the write and for the nanny's new worker."""
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)  # worker address -> process id
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(write)
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:
            assert not job.done(), f"the write ended before a worker was killed: {job.result()}"
            assert time.monotonic() < deadline, "no busy worker to kill"
            if crash.store_state(store)["done"] >= after:
                busy = {a: ks for a, ks in client.processing().items() if ks and a in pids}
                if busy:
                    victim = sorted(busy)[0]
                    tasks = len(busy[victim])
                    os.kill(pids[victim], signal.SIGKILL)
                    state = crash.store_state(store)
            time.sleep(0.01)
        job.result(timeout=180)  # the scheduler reruns the lost tasks on the other worker
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    now = client.run(os.getpid)
    assert pids[victim] not in now.values() and len(now) == 2
    return (f"killed worker pid {pids[victim]} ({tasks} tasks assigned) at {state['text']} "
            f"(by the ledger); "
            f"workers afterwards: pids {sorted(now.values())}")


@pytest.mark.slow
def test_a_worker_lost_mid_write_changes_nothing(tmp_path, checkpoint):
    from lames_cube.cluster import dask_scheduler
    from lames_cube.prediction import write_prediction

    start = time.perf_counter()
    kw = {k: CUBE[k] for k in ("nt", "ny", "nx", "chunk")}
    cube_ref = write_cube(crash.demo_cube(**kw), tmp_path / "cube-ref.zarr",
                          patch_size=CUBE["chunk"])  # the clean runs: threads, this process
    pred_ref = write_prediction(crash.demo_prediction(checkpoint, **PRED),
                                tmp_path / "pred-ref.zarr", group=GROUP, progress=False)
    cube_store, pred_store = tmp_path / "cube.zarr", tmp_path / "pred.zarr"
    with dask_scheduler("local", workers=2, quiet=True) as client:
        # 0.1 s per block: both single-threaded workers stay busy through the 24 regions.
        slow = crash.demo_cube(delay=0.1, **kw)
        cube_lost = _write_losing_a_worker(
            client, lambda: write_cube(slow, cube_store, patch_size=CUBE["chunk"]), cube_store,
            after=6)
        pred_lost = _write_losing_a_worker(
            client, lambda: write_prediction(crash.demo_prediction(checkpoint, **PRED),
                                             pred_store, group=GROUP, progress=False),
            pred_store, after=3)
    for store, ref in ((cube_store, cube_ref), (pred_store, pred_ref)):
        assert crash.store_state(store)["phase"] == "complete"
        assert_same_store(store, snapshot(ref))
        xr.testing.assert_identical(open_store(store).compute(), open_store(ref).compute())
    print(f"cube write: {cube_lost}")
    print(f"prediction write: {pred_lost}")
    print(f"SUMMARY worker loss: cube and prediction identical to the clean runs "
          f"({time.perf_counter() - start:.1f} s)")


# --------------------------------------------------------------------------------------------
# Regression: a kill between the store's folder and its first ledger line


@pytest.mark.parametrize("left", ["ledger folder", "ledger group", "empty ledger", "torn ledger"])
def test_resume_after_a_kill_before_the_job_was_recorded(tmp_path, left):
    """A kill after ``write_cube`` made the store's folder but before the ledger's ``begin``
    line was whole left a store that ``mode="resume"`` refused (no ledger, or no matching job)
    and that only ``mode="w"`` could replace: it is now started anew, like
    ``init_cube_store(mode="resume")`` does."""
    cube = crash.demo_cube(ny=128, nx=128)
    clean = write_cube(cube, tmp_path / "clean.zarr", patch_size=64)
    for name, writer in (("cube", lambda p: write_cube(cube, p, mode="resume", patch_size=64)),
                         ("init", lambda p: init_cube_store(cube, p, mode="resume",
                                                            patch_size=64))):
        path = tmp_path / f"{name}.zarr"
        (path / ".lames").mkdir(parents=True)
        if left != "ledger folder":
            (path / ".lames" / "zarr.json").write_text(json.dumps(LEDGER_GROUP, indent=2))
        if left == "empty ledger":
            (path / LEDGER_NAME).write_bytes(b"")
        if left == "torn ledger":
            (path / LEDGER_NAME).write_text('{"event":"begin","job":"3f2a')
        with pytest.raises((IncompleteStoreError, StoreNotFoundError)):
            open_cube(path)  # never read as a store
        writer(path)
        if name == "init":
            assert crash.store_state(path)["phase"] == "regions"  # laid out, no pixels
            write_cube(cube, path, mode="resume", patch_size=64)
        assert crash.store_state(path)["phase"] == "complete"
        assert_same_store(path, snapshot(clean))

    # A folder holding anything else is still refused, not deleted.
    other = tmp_path / "other"
    (other / ".lames").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="cannot resume"):
        write_cube(cube, other, mode="resume", patch_size=64)
    assert (other / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------
# The in-process crash point (crash.crash_after)


def test_crash_after_stops_a_write_between_two_ledger_lines(tmp_path):
    """``crash.crash_after(n)`` -- the hook of the in-process crash tests; the public writers
    take no test keyword -- stops a write after ``n`` whole, recorded regions; it holds only
    inside its block, and the resume gives the clean run's bytes."""
    for writer in (write_cube, init_cube_store, write_patch_set, write_prediction):
        hidden = [p for p in inspect.signature(writer).parameters if p.startswith("_")]
        assert hidden == [], f"{writer.__name__} has test keywords {hidden}"
    cube = crash.demo_cube(ny=128, nx=192)  # 2 x 3 regions of 64 px
    clean = write_cube(cube, tmp_path / "clean.zarr", patch_size=64)
    path = tmp_path / "crashed.zarr"
    for n, done in ((0, 0), (2, 2), (1, 3)):  # a crash, then crashes during resumes
        with pytest.raises(SimulatedCrash, match=f"after {n} regions"), crash.crash_after(n):
            write_cube(cube, path, mode="resume", patch_size=64)
        state = crash.store_state(path)
        assert (state["phase"], state["done"], state["total"]) == ("regions", done, 6), state
        with pytest.raises(IncompleteStoreError):
            open_cube(path)
    write_cube(cube, path, mode="resume", patch_size=64)  # outside the block: no crash
    assert crash.store_state(path)["phase"] == "complete"
    assert_same_store(path, snapshot(clean))
    with pytest.raises(ValueError, match="integer number of units"), crash.crash_after(-1):
        pass
