"""Site splits: the LAMES isolation split from geometry, seeded random splits, leakage checks."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from lames_cube.errors import AnnotationError, InvalidQueryError
from lames_cube.splits import (
    SplitLeakageError,
    check_no_leakage,
    isolation_split,
    isolation_table,
    random_split,
    split_table,
    validation_split,
)


@pytest.fixture(scope="module")
def sites(lames_dir):
    from lames_cube.annotations import load_sites

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repair reports of the annotation loader
        return load_sites("all", data_dir=lames_dir), load_sites("test", data_dir=lames_dir)


def _boxes(*boxes, ids=None):
    ids = ids or [str(i) for i in range(len(boxes))]
    return gpd.GeoDataFrame({"site_id": ids}, geometry=[shapely.box(*b) for b in boxes],
                            crs="EPSG:4326")


# ---- isolation split ---------------------------------------------------------------------------


def test_isolation_split_reproduces_the_35_lames_test_sites(sites):
    all_sites, test_sites = sites
    assert len(all_sites) == 139  # 104 train + 35 test sites: ../shared/lames/MANIFEST.md
    train, test = isolation_split(all_sites, 35)
    assert len(test) == 35 and len(train) == 104
    assert sorted(test) == sorted(test_sites.site_id)  # exactly the published test set
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(all_sites.site_id)
    # independent of the input order
    shuffled = all_sites.sample(frac=1, random_state=3)
    assert isolation_split(shuffled, 35) == (train, test)


def test_isolation_uses_envelopes_not_polygons(sites):
    """The LAMES rule is about bounding boxes: polygon distances would pick another set."""
    all_sites, test_sites = sites
    table = isolation_table(all_sites)
    assert table.attrs["units"] == "degrees"
    env = np.asarray(all_sites.geometry.envelope.values)
    i = int(np.flatnonzero(all_sites.site_id == table.site_id[0])[0])
    j = int(np.flatnonzero(all_sites.site_id == table.nearest_site_id[0])[0])
    assert table.distance[0] == pytest.approx(shapely.distance(env[i], env[j]))
    poly = np.asarray(all_sites.geometry.values)
    d = shapely.distance(poly[:, None], poly[None, :])
    np.fill_diagonal(d, np.inf)
    by_polygon = set(all_sites.site_id.values[np.argsort(-d.min(axis=1), kind="stable")[:35]])
    assert by_polygon != set(test_sites.site_id)


def test_isolation_split_from_sectors_equals_from_sites(sites, lames_dir):
    from lames_cube.annotations import load_sectors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sectors = load_sectors(data_dir=lames_dir)
    (tr_a, te_a), (tr_b, te_b) = isolation_split(sectors, 35), isolation_split(sites[0], 35)
    assert tr_a == tr_b and sorted(te_a) == sorted(te_b)  # near-ties may swap within the 35


def test_geodesic_variant_in_metres(sites):
    all_sites, test_sites = sites
    deg = isolation_table(all_sites)
    met = isolation_table(all_sites, distance="geodesic")
    assert met.attrs["units"] == "metres"
    # the most isolated site is ~165 km from its neighbour (printed by this table); degrees x
    # 111 km agree within the bounds below (tolerances of this test: envelopes, not geodesics)
    row = met.set_index("site_id").loc[deg.site_id[0]]
    assert 0.6 * 111e3 * deg.distance[0] < row.distance < 1.1 * 111e3 * deg.distance[0]
    _, test = isolation_split(all_sites, 35, distance="geodesic")
    assert len(set(test) & set(test_sites.site_id)) >= 30  # mostly the same (floor of this test)


def test_geodesic_distance_of_two_boxes_near_the_equator():
    from pyproj import Geod

    s = _boxes((0, 0, 1, 1), (2, 0, 3, 1), (2, 5, 3, 6))
    t = isolation_table(s, distance="geodesic").set_index("site_id")
    # the closest points are the boxes' north-east / north-west corners (parallels shrink)
    expected = Geod(ellps="WGS84").inv(1, 1, 2, 1)[2]
    assert t.loc["0", "distance"] == pytest.approx(expected, rel=1e-6)
    assert expected < 111_319.49  # one degree along the equator: 2 pi x 6,378,137 m / 360 (WGS84)
    assert t.loc["0", "nearest_site_id"] == "1"


def test_isolation_ties_are_ordered_by_site_id():
    s = _boxes((0, 0, 1, 1), (3, 0, 4, 1), (10, 0, 11, 1), (13, 0, 14, 1), ids=["d", "c", "b", "a"])
    table = isolation_table(s)
    assert table.distance.nunique() == 1
    assert table.site_id.tolist() == ["a", "b", "c", "d"]
    assert isolation_split(s, 1) == (["b", "c", "d"], ["a"])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda s: isolation_split(s, 0), InvalidQueryError, r"n_test=0: expected an integer between 1 and 2"),
        (lambda s: isolation_split(s, 3), InvalidQueryError, r"n_test=3"),
        (lambda s: isolation_split(s, 1, distance="haversine"), InvalidQueryError, "not one of"),
        (lambda s: isolation_split(s.drop(columns="site_id"), 1), AnnotationError, "no 'site_id' column"),
        (lambda s: isolation_split(s.set_crs(None, allow_override=True), 1), AnnotationError, "no CRS"),
        (lambda s: isolation_split(s.iloc[:0], 1), AnnotationError, "empty"),
    ],
)
def test_isolation_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(_boxes((0, 0, 1, 1), (2, 0, 3, 1), (5, 0, 6, 1)))


# ---- random and validation splits ---------------------------------------------------------------


def test_random_split_reproducible_disjoint_and_order_free():
    ids = [str(i) for i in range(139)]  # as many as the LAMES sites; seed 1117: the paper's
    a = random_split(ids, (0.75, 0.25), seed=1117)
    assert a == random_split(list(reversed(ids)), (0.75, 0.25), seed=1117)
    assert a != random_split(ids, (0.75, 0.25), seed=1118)
    train, test = a
    assert (len(train), len(test)) == (104, 35)  # by hand: 139 x 0.25 = 34.75 -> 35 (largest remainder)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(ids)
    assert random_split(ids, n_test=35, seed=1117) == a  # same permutation, same counts
    three = random_split(ids, (0.7, 0.1, 0.2), seed=0)
    # by hand, largest remainder: 97.3, 13.9, 27.8 -> floors 97, 13, 27 and the 2 left to .9, .8
    assert [len(p) for p in three] == [97, 14, 28]
    check_no_leakage(dict(zip(("train", "validation", "test"), three, strict=True)))


def test_validation_split_by_site():
    train, _ = random_split(range(139), n_test=35, seed=1)
    tr, va = validation_split(train, 0.2, seed=5)
    assert (len(tr), len(va)) == (83, 21)  # by hand: round(0.2 x 104) = 21
    assert sorted(tr + va) == sorted(train) and set(tr).isdisjoint(va)
    assert validation_split(train, 0.2, seed=5) == (tr, va)
    assert validation_split(train, 0.2, seed=6) != (tr, va)


def test_split_table_records_the_seed():
    train, test = random_split(range(10), n_test=2, seed=42)
    table = split_table({"train": train, "test": test}, seed=42, method="random")
    assert table.attrs == {"seed": 42, "method": "random"}
    assert table.split.value_counts().to_dict() == {"train": 8, "test": 2}
    with pytest.raises(SplitLeakageError, match=rf"'{train[0]}' in \['train', 'test'\]"):
        split_table({"train": train, "test": [train[0]]}, seed=42)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: random_split(["a", "b", "a"], seed=0), r"duplicates \['a'\]"),
        (lambda: random_split(["a", "b"], (0.5, 0.6), seed=0), r"summing to 1"),
        (lambda: random_split(["a", "b"], seed=-1), r"seed=-1"),
        (lambda: random_split(["a", "b"], n_test=3, seed=0), r"n_test=3: expected an integer 0..2"),
        (lambda: random_split("abc", seed=0), r"is a string"),
        (lambda: validation_split(["a", "b"], 1.5, seed=0), r"fraction=1.5"),
        (lambda: validation_split(["a"], 0.2, seed=0), r"at least two"),
    ],
)
def test_random_split_bad_input(call, match):
    with pytest.raises(InvalidQueryError, match=match):
        call()


# ---- leakage -----------------------------------------------------------------------------------


def test_site_leakage_detected():
    check_no_leakage({"train": ["1", "2"], "validation": ["3"], "test": ["4"]})
    with pytest.raises(SplitLeakageError, match=r"'3' in \['validation', 'test'\]"):
        check_no_leakage({"train": ["1", "2"], "validation": ["3"], "test": [3, "4"]})
    assert issubclass(SplitLeakageError, ValueError)


def _windows(rows):
    return pd.DataFrame(rows, columns=["site_id", "x0", "y0", "x1", "y1"])


def test_window_leakage_detected():
    splits = {"train": ["1", "2"], "test": ["3"]}
    ok = _windows([("1", 0, 0, 256, 256), ("1", 256, 0, 512, 256), ("3", 512, 0, 768, 256)])
    check_no_leakage(splits, ok)  # touching windows share no pixel
    same = _windows([("1", 0, 0, 256, 256), ("3", 0, 0, 256, 256)])
    with pytest.raises(SplitLeakageError, match=r"the same window 0 \(site '1', train\) and 1 \(site '3', test\)"):
        check_no_leakage(splits, same)
    overlap = _windows([("2", 0, 0, 256, 256), ("3", 128, 0, 384, 256)])
    with pytest.raises(SplitLeakageError, match="overlapping windows"):
        check_no_leakage(splits, overlap)
    check_no_leakage(splits, overlap, allow_overlap=True)
    marked = ok.assign(split=["train", "test", "test"])
    with pytest.raises(SplitLeakageError, match=r"window 1 of site '1' marked 'test', site in 'train'"):
        check_no_leakage(splits, marked)
    pixel = pd.DataFrame({"site_id": ["1", "3"], "col_off": [0, 100], "row_off": [0, 0],
                          "width": [256, 256], "height": [256, 256]})
    with pytest.raises(SplitLeakageError, match="overlapping"):
        check_no_leakage(splits, pixel)
    geo = gpd.GeoDataFrame({"site_id": ["1", "3"]},
                           geometry=[shapely.box(0, 0, 1, 1), shapely.box(0.5, 0, 1.5, 1)])
    with pytest.raises(SplitLeakageError, match="overlapping"):
        check_no_leakage(splits, geo)
    with pytest.raises(InvalidQueryError, match=r"in no split, e.g. \['9'\]"):
        check_no_leakage(splits, _windows([("9", 0, 0, 1, 1)]))
    with pytest.raises(InvalidQueryError, match="no window bounds"):
        check_no_leakage(splits, pd.DataFrame({"site_id": ["1"], "a": [0]}))
