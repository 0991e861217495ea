"""Names from data become file names only through ``safe_name``."""

from __future__ import annotations

import pytest

from lames_cube._names import UnsafeNameError, safe_name
from lames_cube.annotations import load_sites

HOSTILE = ["../../etc/passwd", "..", ".", "/abs/path", "a\\b", "C:\\x", "site 7", "x\x00y",
           "ñandú", "名前", "-rf", ".hidden", "a" * 300, "a/b", "a_b", "a b", "tile\n2"]


def test_real_lames_site_ids_pass_unchanged(lames_dir):
    ids = load_sites(data_dir=lames_dir).site_id.tolist()
    assert len(ids) == 139 and [safe_name(i) for i in ids] == ids


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_in_their_folder(name, tmp_path):
    safe = safe_name(name)
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith((".", "-")) and len(safe) <= 100
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()
    (tmp_path / f"site-{safe}.zarr").mkdir()  # a real file name here


def test_different_names_never_meet():
    names = [safe_name(n) for n in HOSTILE]
    assert len(set(names)) == len(HOSTILE)
    assert safe_name("a b") != safe_name("a_b") == "a_b"
    assert safe_name("x" * 101) != safe_name("x" * 102)


def test_empty_and_non_text_names_are_refused():
    with pytest.raises(UnsafeNameError, match="is empty"):
        safe_name("  ", "site id")
    with pytest.raises(UnsafeNameError, match="is a float, not a string"):
        safe_name(2.5, "site id")
    assert safe_name(2504) == "2504"

