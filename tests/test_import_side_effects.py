"""Importing lames_cube changes no warning filter and no logger; the noise of other libraries
that users should not see is silenced only where it arises (lames_cube/_quiet.py): inside the
cube reader's reads (odc-loader's "Failed to load" errors, rasterio's NotGeoreferencedWarning
from ``rasterio.warp``) and inside rasterize's burns (NotGeoreferencedWarning from
``rasterio.features``), in whatever thread or process runs them.

rasterio's spurious warning comes from its own ``catch_warnings`` racing between threads, so it
cannot be made to appear on demand: the tests below make the same warning (and odc-loader's
log record) where a real read or burn would, and check that it reaches no one."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
from odc.geo.geobox import GeoBox
from rasterio.errors import NotGeoreferencedWarning

from lames_cube import _quiet as quiet
from lames_cube._quiet import _InBlocks, drop_log_records, ignore_warnings
from lames_cube.cube import build_cube, read_skipped
from lames_cube.errors import AssetReadError
from lames_cube.items import normalize_item
from lames_cube.labels import rasterize

ROOT = Path(__file__).resolve().parents[1]
ODC_LOGGER = "odc.loader._rio"
NOISE = "Dataset has no geotransform, gcps, or rpcs. The identity matrix will be returned."

# --------------------------------------------------------------------------- import side effects
#: Run in a fresh interpreter: "package" imports lames_cube and every submodule and prints the
#: warning filters, the loggers and the third-party modules that got imported; "baseline" imports
#: only those third-party modules (read from stdin), in the same order, and prints the same.
SNAPSHOT = textwrap.dedent("""
    import importlib, importlib.util, json, logging, pkgutil, sys, warnings

    if sys.argv[1] == "package":
        import lames_cube

        torch = importlib.util.find_spec("torch") is not None
        for info in pkgutil.walk_packages(lames_cube.__path__, "lames_cube.",
                                          onerror=lambda name: None):
            if torch or not info.name.startswith("lames_cube.ml"):
                importlib.import_module(info.name)
        modules = [m for m in sys.modules if m != "__main__" and m.split(".")[0] != "lames_cube"]
    else:
        modules = json.loads(sys.stdin.read())
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:
                pass

    def named(obj):
        obj = obj if hasattr(obj, "__qualname__") else type(obj)
        return f"{obj.__module__}.{obj.__qualname__}"

    def pattern(regex):
        return getattr(regex, "pattern", regex)  # a compiled regex, or None (or text)

    filters = sorted(json.dumps([action, pattern(message), named(category), pattern(module), line])
                     for action, message, category, module, line in warnings.filters)
    loggers = {}
    for name, logger in [("root", logging.root), *logging.root.manager.loggerDict.items()]:
        if isinstance(logger, logging.Logger):
            loggers[name] = {"level": logger.level, "propagate": logger.propagate,
                             "disabled": logger.disabled,
                             "handlers": sorted(named(h) for h in logger.handlers),
                             "filters": sorted(named(f) for f in logger.filters)}
    state = {"filters": filters, "loggers": loggers, "showwarning": named(warnings.showwarning),
             "disable": logging.root.manager.disable, "modules": modules}
    print("SNAPSHOT " + json.dumps(state))
""")
#: A logger as ``logging.getLogger`` makes it.
UNTOUCHED = {"level": logging.NOTSET, "propagate": True, "disabled": False, "handlers": [],
             "filters": []}


def _snapshot(mode: str, stdin: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    run = subprocess.run([sys.executable, "-c", SNAPSHOT, mode], input=stdin, cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"the {mode} import failed:\n{run.stderr[-3000:]}"
    line = [x for x in run.stdout.splitlines() if x.startswith("SNAPSHOT ")][-1]
    return json.loads(line.removeprefix("SNAPSHOT "))


def test_importing_the_package_changes_no_warning_filter_and_no_logger():
    package = _snapshot("package")
    baseline = _snapshot("baseline", json.dumps(package["modules"]))
    assert {"numpy", "xarray", "rasterio", "odc.stac", "odc.loader._rio", "dask"} <= \
        set(package["modules"])
    extra = sorted(set(package["filters"]) - set(baseline["filters"]))
    gone = sorted(set(baseline["filters"]) - set(package["filters"]))
    assert (extra, gone) == ([], []), f"warning filters the import added {extra}, removed {gone}"
    changed = {name: (baseline["loggers"].get(name, UNTOUCHED), state)
               for name, state in package["loggers"].items()
               if state != baseline["loggers"].get(name, UNTOUCHED)}
    assert changed == {}, f"loggers the import changed (before, after): {changed}"
    assert package["showwarning"] == baseline["showwarning"]
    assert package["disable"] == baseline["disable"]


# --------------------------------------------------------------------------- where the noise arises
@pytest.fixture
def real_item(stac_dir):
    """The real 29RKH L2A item (decimated pixels on disk)."""
    folder = stac_dir / "pixels" / "rio-tiler-pds_S2A_29RKH_20200219_0_L2A_decimated10x"
    path = folder / "S2A_29RKH_20200219_0_L2A.LOCAL_DERIVED.json"
    item = normalize_item(json.loads(path.read_text()), href=str(path))
    with rasterio.open(folder / "B04.tif") as src:
        gbox = GeoBox(src.shape, src.transform, src.crs.to_wkt())
    return item, gbox


def _noise(module: str) -> None:
    """What rasterio says when its silencing of the warning races with another thread's."""
    warnings.warn_explicit(NOISE, NotGeoreferencedWarning, f"{module.replace('.', '/')}.py", 1,
                           module=module)


def _shown(module: str) -> list[str]:
    """What the user sees of the noise made here, now."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _noise(module)
    return [str(w.message) for w in caught]


@pytest.fixture
def seen(caplog):
    """Everything a user would see: every warning (the suite's own filters set aside), and the
    log records (``caplog.records``: read them in the test, pytest renews the list per phase);
    also checks that no filter is left behind."""
    odc = logging.getLogger(ODC_LOGGER)
    odc_filters = list(odc.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        yield caught, caplog
        # rasterio's own catch_warnings, racing in dask's threads, may restore a list saved
        # while one of our blocks was open: the copy it leaves is inert (its category matches
        # only threads inside a block, and the next block removes it); anything else is a leak
        _wait_for_open_blocks()
        assert _live(warnings.filters) == _live(filters), "a warning filter was left behind"
    assert odc.filters == odc_filters, "a log filter was left behind"


def _wait_for_open_blocks(timeout: float = 10.0) -> None:
    """Let dask's threads that still run a read (a failed compute returns before its other
    tasks end) close their blocks before the filters are compared."""
    deadline = time.monotonic() + timeout
    while quiet._OPEN and time.monotonic() < deadline:
        time.sleep(0.01)


def _noisy(seen_by: list):
    """A stand-in for odc-loader's rio_read that first makes the noise a real read can make."""
    import odc.loader._rio as rio

    real = rio.rio_read

    def rio_read(src, cfg, dst_geobox, dst=None, selection=None):
        seen_by.append(threading.get_ident())
        _noise("rasterio.warp")
        rio.log.error("Failed to load %s:%d due to rasterio error: '%s'", src.uri, src.band,
                      "a read that the reader retries")
        return real(src, cfg, dst_geobox, dst=dst, selection=selection)

    return rio_read


def _odc_noise(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ODC_LOGGER]


def test_noise_of_a_read_is_silenced_in_the_dask_threads_that_read(real_item, monkeypatch, seen):
    import odc.loader._rio as rio

    item, gbox = real_item
    caught, caplog = seen
    threads: list[int] = []
    monkeypatch.setattr(rio, "rio_read", _noisy(threads))
    # B02 on B04's grid: no reprojection, so no rasterio catch_warnings racing in the threads
    cube = build_cube([item], geobox=gbox, bands=["B04", "B02"], chunks=256)
    values = cube.compute(scheduler="threads").values
    assert (values > 0).any()
    assert threads and threading.get_ident() not in threads, "the reads ran in dask's threads"
    assert [w for w in caught if w.category is NotGeoreferencedWarning] == []
    assert _odc_noise(caplog) == []
    # the same noise outside a read reaches the user: the checks above would see a leak
    assert _shown("rasterio.warp") == [NOISE]
    rio.log.error("Failed to load x:1")
    assert _odc_noise(caplog) == ["Failed to load x:1"]


def test_a_failed_read_raises_its_error_and_logs_nothing(real_item, tmp_path, monkeypatch, seen):
    import odc.loader._rio as rio

    item, gbox = real_item
    caught, caplog = seen
    broken = item.clone()
    broken.assets["B04"].href = str(tmp_path / "missing.tif")
    said: list[str] = []
    real_error = rio.log.error

    def error(msg, *args, **kwargs):
        said.append(msg % args)
        real_error(msg, *args, **kwargs)

    monkeypatch.setattr(rio.log, "error", error)
    with pytest.raises(AssetReadError, match="Could not read asset 'B04'"):
        build_cube([broken], geobox=gbox, bands=["B04"], chunks=256).compute(scheduler="threads")
    assert said and said[0].startswith("Failed to load"), "odc-loader did log the failure"
    assert _odc_noise(caplog) == []
    assert not [w for w in caught if w.category is NotGeoreferencedWarning]


def test_a_failed_read_in_worker_processes_prints_nothing(real_item, tmp_path):
    """Under dask's process scheduler the reads run in other processes; what they would log goes
    to the stderr the user sees."""
    item, gbox = real_item
    broken = item.clone()
    broken.assets["B04"].href = str(tmp_path / "missing.tif")
    (tmp_path / "item.json").write_text(json.dumps(broken.to_dict(transform_hrefs=False)))
    script = textwrap.dedent(f"""
        import json, pystac
        from odc.geo.geobox import GeoBox
        from affine import Affine
        from lames_cube.cube import build_cube
        if __name__ == "__main__":
            item = pystac.Item.from_dict(json.load(open({str(tmp_path / 'item.json')!r})))
            gbox = GeoBox({tuple(gbox.shape)!r}, Affine(*{list(gbox.affine)[:6]!r}),
                          {gbox.crs.to_wkt()!r})
            cube = build_cube([item], geobox=gbox, bands=["B04", "B02"], chunks=256,
                              on_error="nodata", skipped={str(tmp_path / 'skipped.jsonl')!r})
            cube.compute(scheduler="processes", num_workers=2)
            print("computed")
    """)
    (tmp_path / "run.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    run = subprocess.run([sys.executable, str(tmp_path / "run.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "computed" in run.stdout
    assert read_skipped(tmp_path / "skipped.jsonl"), "the broken asset was read (and skipped)"
    assert "Failed to load" not in run.stderr
    assert "NotGeoreferencedWarning" not in run.stderr


def test_noise_of_a_burn_is_silenced_lazy_and_eager(monkeypatch, seen):
    caught, _ = seen
    real = rasterio.features.rasterize
    calls: list[int] = []
    one_at_a_time = threading.Lock()  # rasterio's racing catch_warnings would add noise of its own

    def noisy(*args, **kwargs):
        calls.append(threading.get_ident())
        _noise("rasterio.features")
        with one_at_a_time:
            return real(*args, **kwargs)

    monkeypatch.setattr(rasterio.features, "rasterize", noisy)
    gbox = GeoBox.from_bbox((300_000, 7_000_000, 305_120, 7_005_120), "EPSG:32719", resolution=10)
    gdf = gpd.GeoDataFrame(geometry=[shapely.box(301_000, 7_001_000, 304_000, 7_004_000)],
                           crs="EPSG:32719")
    lazy = rasterize(gdf, like=gbox, lazy=True, chunks=256).compute(scheduler="threads")
    eager = rasterize(gdf, like=gbox, lazy=False)
    np.testing.assert_array_equal(lazy.values, eager.values)
    assert int(eager.sum()) == 300 * 300
    assert len(calls) > 2 and set(calls) - {threading.get_ident()}, "burns ran in dask's threads"
    assert [w for w in caught if w.category is NotGeoreferencedWarning] == []
    assert _shown("rasterio.features") == [NOISE]


# --------------------------------------------------------------------------- the two silencers
def test_blocks_overlapping_in_threads_leave_no_filter_behind():
    logger = logging.getLogger("lames_cube.tests.quiet")
    before, start = list(warnings.filters), threading.Barrier(8)

    def work():
        start.wait()
        for _ in range(200):
            with ignore_warnings(NotGeoreferencedWarning, "rasterio.warp"), \
                    drop_log_records(logger.name, "Noise"):
                pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == before
    assert logger.filters == []


def test_records_of_threads_outside_a_block_pass(caplog):
    logger = logging.getLogger("lames_cube.tests.quiet")
    inside, done = threading.Event(), threading.Event()

    def in_a_block():
        with drop_log_records(logger.name, "Noise"):
            logger.warning("Noise inside")
            inside.set()
            done.wait(10)

    with caplog.at_level(logging.WARNING, logger.name):
        t = threading.Thread(target=in_a_block)
        t.start()
        inside.wait(10)
        logger.warning("Noise from elsewhere")
        done.set()
        t.join()
    assert [r.getMessage() for r in caplog.records] == ["Noise from elsewhere"]
    assert logger.filters == []


def test_warnings_of_threads_outside_a_block_pass():
    inside, done = threading.Event(), threading.Event()
    shown_inside: list[list[str]] = []

    def in_a_block():
        with ignore_warnings(NotGeoreferencedWarning, "rasterio.warp"):
            shown_inside.append(_shown_without_always())
            inside.set()
            done.wait(10)

    t = threading.Thread(target=in_a_block)
    t.start()
    inside.wait(10)
    try:
        assert _shown_without_always() == [NOISE]
    finally:
        done.set()
        t.join()
    assert shown_inside == [[]]


def _live(filters: list) -> list:
    """The warning filters that can match anything (not an inert ``ignore_warnings`` copy)."""
    return [f for f in filters if not isinstance(f[2], _InBlocks)]


def _shown_without_always() -> list[str]:
    """What the user sees of the noise with the filters as they are (record, not 'always')."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.filters[:] = [f for f in warnings.filters if isinstance(f[2], _InBlocks)]
        _noise("rasterio.warp")
    return [str(w.message) for w in caught]


def test_a_block_puts_back_a_filter_a_racing_catch_warnings_dropped():
    """rasterio's catch_warnings in another thread may restore a filter list saved before ours
    went in: the next block puts ours back; a copy it left behind matches nothing."""
    with ignore_warnings(NotGeoreferencedWarning, "rasterio.warp"):
        ours = [f for f in warnings.filters if isinstance(f[2], _InBlocks)]
        assert len(ours) == 1 and issubclass(NotGeoreferencedWarning, ours[0][2])
        warnings.filters.remove(ours[0])
        with ignore_warnings(NotGeoreferencedWarning, "rasterio.warp"):
            assert _shown_without_always() == []
    assert not [f for f in warnings.filters if isinstance(f[2], _InBlocks)]
    assert not issubclass(NotGeoreferencedWarning, ours[0][2]), "outside blocks it matches nothing"
