"""Atomic writes: the one helper (lames_cube._atomic) and every writer of the package through it.

A crash is simulated by making the helper's rename fail: a writer that goes through the helper
then leaves neither the target nor a temporary behind; one that writes on its own leaves a file.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from odc.geo.geobox import GeoBox

from lames_cube import _atomic
from lames_cube._atomic import (
    atomic_directory,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
)
from lames_cube.errors import DiskFullError, OutputNotWritableError
from lames_cube.testing.disk import FullDisk, make_read_only


class SimulatedCrash(OSError):
    """Raised in place of the rename that commits a write."""


@pytest.fixture
def crash(monkeypatch):
    """Every atomic write of this test fails at its rename, as a crash just before it would."""

    def fail(src, dst):
        assert Path(src).exists(), "the writer wrote nothing under the temporary name"
        raise SimulatedCrash(f"simulated crash before renaming {src} to {dst}")

    monkeypatch.setattr(_atomic, "os_replace", fail)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- the helper


def test_write_text_and_bytes_replace_the_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    assert atomic_write_text(target, "néw\n") == target
    assert target.read_bytes() == "néw\n".encode()
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _entries(tmp_path) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer broke"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".csv" and tmp.name.startswith(".")
        tmp.write_text("half")
        raise RuntimeError("writer broke")
    assert target.read_text() == "old"
    assert _entries(tmp_path) == ["table.csv"]


def test_a_crash_before_the_rename_keeps_the_old_file(tmp_path, crash):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(SimulatedCrash, match="simulated crash before renaming"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and _entries(tmp_path) == ["a.txt"]


def test_atomic_directory_swaps_a_whole_tree(tmp_path):
    root = tmp_path / "world"
    with atomic_directory(root) as tmp:
        (tmp / "a").write_text("1")
    with atomic_directory(root) as tmp:
        (tmp / "b").write_text("2")
    assert _entries(root) == ["b"] and _entries(tmp_path) == ["world"]
    with pytest.raises(RuntimeError, match="half way"), atomic_directory(root) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("half way")
    assert _entries(root) == ["b"] and _entries(tmp_path) == ["world"]


def test_atomic_directory_puts_the_old_tree_back_after_a_failed_rename(tmp_path, crash):
    root = tmp_path / "world"
    root.mkdir()
    (root / "old").write_text("1")
    with pytest.raises(SimulatedCrash, match="simulated crash before renaming"), atomic_directory(root) as tmp:
        (tmp / "new").mkdir()
    assert _entries(root) == ["old"] and _entries(tmp_path) == ["world"]


# --------------------------------------------------------------------------- every writer


def _geoparquet(folder: Path) -> Path:
    from lames_cube.grid import write_geoparquet

    gdf = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326)
    return write_geoparquet(gdf, folder / "grid.parquet")


def _recipe(folder: Path) -> Path:
    from lames_cube.recipes.cubes import dump_recipe, load_recipe

    return dump_recipe(load_recipe("demo"), folder / "demo.yaml")


def _asm(folder: Path) -> Path:
    from lames_cube.testing.asm import write_asm_geojson

    return write_asm_geojson(folder / "asm.geojson", n=2)


def _cog(folder: Path) -> Path:
    from lames_cube.synthetic.write import write_cog

    gbox = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719", resolution=10)
    target = folder / "B04.tif"
    write_cog(target, np.ones((64, 64), "uint16"), gbox, categorical=False)
    return target


def _item_json(folder: Path) -> Path:
    from lames_cube.synthetic.write import _dump

    _dump(folder / "item.json", {"id": "x"})
    return folder / "item.json"


def _index(folder: Path) -> Path:
    from lames_cube.synthetic.write import write_index

    item = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [0, 0, 1, 1],
            "geometry": shapely.geometry.mapping(shapely.box(0, 0, 1, 1)),
            "properties": {"datetime": "2022-01-01T00:00:00Z"}, "links": [], "assets": {}}
    write_index([item], folder / "index.parquet")
    return folder / "index.parquet"


def _ndjson(folder: Path) -> Path:
    from lames_cube.services.stac_api import _write_ndjson

    _write_ndjson(folder / "items.ndjson", [{"id": "a"}, {"id": "b"}])
    return folder / "items.ndjson"


def _ledger(folder: Path) -> Path:
    from lames_cube.io import Ledger

    Ledger(folder / "cube.zarr").append({"op": "test"})
    return folder / "cube.zarr" / ".lames" / "zarr.json"


WRITERS = {
    "grid.write_geoparquet": _geoparquet,
    "recipes.dump_recipe": _recipe,
    "testing.asm.write_asm_geojson": _asm,
    "synthetic.write.write_cog": _cog,
    "synthetic.write._dump": _item_json,
    "synthetic.write.write_index": _index,
    "stac_server._write_ndjson": _ndjson,
    "io.Ledger (its zarr.json)": _ledger,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_goes_through_the_atomic_helper(tmp_path, name, monkeypatch):
    write = WRITERS[name]
    (tmp_path / "ok").mkdir()
    assert write(tmp_path / "ok").is_file()
    assert [p for p in (tmp_path / "ok").rglob(".*") if p.is_file()] == []  # no temporary left
    folder = tmp_path / "crash"
    folder.mkdir()

    def fail(src, dst):
        raise SimulatedCrash(f"simulated crash before renaming {src} to {dst}")

    monkeypatch.setattr(_atomic, "os_replace", fail)
    with pytest.raises(SimulatedCrash, match="simulated crash before renaming"):
        write(folder)
    left = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    assert left == [], f"{name} left {left} after a crash before its rename"


def test_download_lames_writes_atomically(tmp_path, lames_dir, crash):
    from lames_cube.annotations import LAMES_COMMIT, download_lames

    class Session:
        def get(self, url, timeout):
            data = (Path(lames_dir) / url.split(f"/{LAMES_COMMIT}/", 1)[1]).read_bytes()
            return type("Response", (), {"content": data, "raise_for_status": lambda self: None})()

    dest = tmp_path / "lames"
    with pytest.raises(SimulatedCrash, match="simulated crash before renaming"):
        download_lames(dest, files=["annotations/metadata.csv"], session=Session())
    assert [p for p in dest.rglob("*") if p.is_file()] == []


def test_write_world_leaves_nothing_after_a_crash(tmp_path, crash):
    from lames_cube.synthetic import WorldSpec, write_world

    spec = WorldSpec(use_lames=False, n_sites=1, years=(2021,), scenes_per_year=1)
    with pytest.raises(SimulatedCrash, match="simulated crash before renaming"):
        write_world(tmp_path / "w", spec, workers=1, progress=False)
    assert _entries(tmp_path) == []


def test_a_written_world_holds_no_temporary(world):
    assert [p for p in Path(world).rglob(".*")] == []
    assert json.loads((Path(world) / "manifest.json").read_text())["n_items"] > 0
    assert [p.name for p in Path(world).parent.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------- a full disk, a read-only folder


def test_a_full_disk_is_a_typed_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """The disk fills up 100 bytes into the low-level write, so a partial temporary is on disk
    when ENOSPC comes: the helper removes it, keeps the old file and says where, how much space
    is left and what to do."""
    target = tmp_path / "summary.json"
    target.write_text("old")
    disk = FullDisk(free=100).install(monkeypatch)
    with pytest.raises(DiskFullError, match=r"The disk is full: writing .*summary\.json failed "
                       r"\(\[Errno 28\] No space left on device\); [\d.]+ [KMGT]?B free on the "
                       r"disk of .*partial temporary file was removed.*Fix: free space on that "
                       r"disk") as info:
        atomic_write_text(target, "x" * 1000)
    assert (disk.used, disk.failures) == (100, 1)  # the partial write did happen
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and _entries(tmp_path) == ["summary.json"]

    root = tmp_path / "world"
    with pytest.raises(DiskFullError, match=r"writing .*a\.json failed"), \
            atomic_directory(root) as tmp:
        atomic_write_text(tmp / "a.json", "y" * 1000)
    assert _entries(tmp_path) == ["summary.json"]  # neither the tree nor its temporary


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_turns_a_full_disk_into_a_typed_error(tmp_path, name, monkeypatch):
    """Whatever library writes the temporary (pyarrow, rasterio, plain bytes), a full disk met
    when it is committed leaves nothing behind and names the file."""

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(_atomic, "os_replace", full)
    with pytest.raises(DiskFullError, match=r"The disk is full: writing .* free on the disk"):
        WRITERS[name](tmp_path)
    left = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()]
    assert left == [], f"{name} left {left} after a full disk"


def test_a_read_only_folder_is_refused_by_a_real_probe(tmp_path, monkeypatch):
    """check_writable creates and deletes a file instead of reading permission bits. The
    folder is made read-only (0o555): for an ordinary user the kernel refuses the probe; as
    root (CI), whom the bits do not stop, make_read_only makes the probe's open apply them as
    the kernel does for a user. Either way the refusal comes from the probe, and the same
    folder made writable again passes, so the test fails if the check refuses everything or
    nothing."""
    folder = tmp_path / "ro"
    folder.mkdir()
    try:
        make_read_only(folder, monkeypatch)
        with pytest.raises(OutputNotWritableError, match=r"Cannot write the store .*ro/new/cube"
                           r"\.zarr: the folder .*ro is not writable by this process "
                           r"\(permission denied\).*Fix: .*chmod u\+w") as info:
            check_writable(folder / "new" / "cube.zarr", what="store")
        assert isinstance(info.value, PermissionError) and info.value.errno == errno.EACCES
        assert _entries(folder) == []
    finally:
        folder.chmod(0o755)
    check_writable(folder / "new" / "cube.zarr", what="store")  # writable again: no error
    assert _entries(folder) == []  # the probe cleaned up after itself

    def read_only_mount(path, flags, mode=0o777):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(_atomic, "probe_open", read_only_mount)
    with pytest.raises(OutputNotWritableError, match=r"is on a read-only file system.*remount"):
        check_writable(folder / "run", what="run folder")


def test_a_writer_refused_by_its_folder_gets_the_typed_error(tmp_path):
    """A permission error met while writing the temporary (the folder changed under the
    writer) becomes OutputNotWritableError naming the file; nothing is left."""
    with pytest.raises(OutputNotWritableError, match=r"Cannot write the file .*table\.csv: the "
                       r"folder .* is not writable"), atomic_path(tmp_path / "table.csv") as tmp:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    assert _entries(tmp_path) == []


def test_a_refused_input_is_not_blamed_on_the_output_folder(tmp_path):
    """A permission error about another file (an input) passes unchanged: the output folder
    is writable, and saying otherwise would send the user to the wrong fix."""
    import errno

    from lames_cube._atomic import atomic_path
    from lames_cube.errors import OutputNotWritableError

    out = tmp_path / "out" / "result.txt"
    out.parent.mkdir()
    elsewhere = tmp_path / "inputs" / "scene.tif"
    with pytest.raises(PermissionError, match=r"scene\.tif") as info, atomic_path(out):
        raise PermissionError(errno.EACCES, "Permission denied", str(elsewhere))
    assert not isinstance(info.value, OutputNotWritableError)
    with pytest.raises(OutputNotWritableError, match=r"is not writable"), atomic_path(out):
        raise PermissionError(errno.EACCES, "Permission denied", str(out.parent / "x.tmp"))
