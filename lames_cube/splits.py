"""Splits of LAMES sites: by site, never by patch, seeded, and checked for leakage.

* :func:`isolation_split` — the LAMES test set: the sites farthest from their nearest other
  site. With the LAMES distance (planar degrees between the sites' bounding boxes in
  EPSG:4326) it reproduces the 35 test sites of ``test_sites.geojson`` exactly.
* :func:`random_split`, :func:`validation_split` — seeded random splits of site ids.
* :func:`check_no_leakage` — no site, and no patch window, in two splits.
* :func:`split_table` — one row per site with its split; the seed in ``attrs``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Geod, Transformer

from lames_cube._checks import check_seed
from lames_cube.errors import (
    AnnotationError,
    InvalidQueryError,
    SplitLeakageError,
)

__all__ = [
    "DISTANCES",
    "SplitLeakageError",
    "check_no_leakage",
    "isolation_split",
    "isolation_table",
    "random_split",
    "split_table",
    "validation_split",
]

#: Distances between sites for :func:`isolation_split`.
#:
#: ``"envelope-degrees"`` (LAMES)
#:     planar distance, in degrees of EPSG:4326, between the sites' bounding boxes (0 when they
#:     touch or overlap).
#: ``"geodesic"``
#:     the same pair of bounding boxes, in metres on the WGS84 ellipsoid: for each site the boxes
#:     (edges densified) are projected to an azimuthal equidistant projection centred on the
#:     site's box, the closest pair of points is found there, and its geodesic length is computed
#:     with :class:`pyproj.Geod` (exact for the pair, within a fraction of a percent of the true
#:     minimum for boxes a few hundred kilometres apart).
DISTANCES = ("envelope-degrees", "geodesic")



# --------------------------------------------------------------------------------------------
# isolation


def _site_envelopes(sites: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Site ids (str) and their bounding boxes (n, 4) in EPSG:4326, one per site."""
    if not isinstance(sites, gpd.GeoDataFrame):
        raise AnnotationError(
            f"Expected a GeoDataFrame of sites, got {type(sites).__name__}: use "
            "lames_cube.annotations.load_sites('all')."
        )
    if "site_id" not in sites.columns:
        raise AnnotationError(
            f"The sites have no 'site_id' column (columns: {list(sites.columns)}); "
            "use lames_cube.annotations.load_sites('all') or rename the id column."
        )
    if len(sites) == 0:
        raise AnnotationError(
            "The sites GeoDataFrame is empty (0 rows): there is nothing to split. Load them with "
            "lames_cube.annotations.load_sites('all') and check any filter applied before."
        )
    if sites.crs is None:
        raise AnnotationError(
            "The sites have no CRS; the LAMES distance is in degrees of EPSG:4326. Declare it, "
            "e.g. sites.set_crs('EPSG:4326')."
        )
    ll = sites if sites.crs.equals("EPSG:4326") else sites.to_crs("EPSG:4326")
    b = ll.geometry.bounds
    table = pd.DataFrame({"site_id": ll["site_id"].astype(str).str.strip().to_numpy(),
                          "minx": b["minx"].to_numpy(), "miny": b["miny"].to_numpy(),
                          "maxx": b["maxx"].to_numpy(), "maxy": b["maxy"].to_numpy()})
    # several rows per site (e.g. sectors): the site's box is the box of all its rows
    agg = table.groupby("site_id", sort=False).agg(
        minx=("minx", "min"), miny=("miny", "min"), maxx=("maxx", "max"), maxy=("maxy", "max"))
    if agg.isna().any(axis=None):
        bad = agg.index[agg.isna().any(axis=1)].tolist()
        raise AnnotationError(f"Sites {bad[:10]} have no geometry; drop or repair them.")
    return agg.index.to_numpy(dtype=object), agg.to_numpy(dtype="float64")


def _degree_distances(boxes: np.ndarray) -> np.ndarray:
    env = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    d = shapely.distance(env[:, None], env[None, :])
    np.fill_diagonal(d, np.inf)
    return d


def _geodesic_distances(boxes: np.ndarray, npts: int = 16) -> np.ndarray:
    geod = Geod(ellps="WGS84")
    n = len(boxes)
    env = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    step = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / npts
    dense = [shapely.segmentize(e, max(s, 1e-9)) for e, s in zip(env, step, strict=True)]
    coords = [shapely.get_coordinates(g) for g in dense]
    flat = np.concatenate(coords)
    owner = np.repeat(np.arange(n), [len(c) for c in coords])
    d = np.full((n, n), np.inf)
    for i in range(n):
        lon0 = (boxes[i, 0] + boxes[i, 2]) / 2
        lat0 = (boxes[i, 1] + boxes[i, 3]) / 2
        aeqd = CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")
        tr = Transformer.from_crs("EPSG:4326", aeqd, always_xy=True)
        x, y = tr.transform(flat[:, 0], flat[:, 1])
        polys = shapely.polygons(shapely.linearrings(np.column_stack([x, y]), indices=owner))
        others = np.arange(n) != i
        touching = shapely.intersects(env[i], env) & others
        d[i, touching] = 0.0
        rest = np.flatnonzero(others & ~touching)
        if len(rest) == 0:
            continue
        lines = shapely.shortest_line(polys[i], polys[rest])
        ends = shapely.get_coordinates(lines).reshape(-1, 2, 2)
        lon, lat = tr.transform(ends[:, :, 0].ravel(), ends[:, :, 1].ravel(), direction="INVERSE")
        lon, lat = np.asarray(lon).reshape(-1, 2), np.asarray(lat).reshape(-1, 2)
        _, _, dist = geod.inv(lon[:, 0], lat[:, 0], lon[:, 1], lat[:, 1])
        d[i, rest] = dist
    # symmetric: the smaller of the two estimates (each centred on one of the pair)
    return np.minimum(d, d.T)


def isolation_table(
    sites: gpd.GeoDataFrame, *, distance: str = "envelope-degrees"
) -> pd.DataFrame:
    """Every site's distance to its nearest other site, most isolated first.

    Parameters
    ----------
    sites
        ``site_id`` and geometry; several rows per site (e.g. sectors) are merged into one box.
    distance
        One of :data:`DISTANCES`.

    Returns
    -------
    pandas.DataFrame
        ``site_id``, ``nearest_site_id``, ``distance`` (degrees or metres), ``rank`` (0 = most
        isolated). Ties in distance are ordered by ``site_id`` (string order), so the table is
        the same whatever the input order. ``attrs["distance"]`` names the distance.

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> s = gpd.GeoDataFrame({"site_id": ["a", "b", "c"]}, crs="EPSG:4326",
    ...     geometry=[shapely.box(0, 0, 1, 1), shapely.box(2, 0, 3, 1), shapely.box(10, 0, 11, 1)])
    >>> isolation_table(s)[["site_id", "distance"]].values.tolist()
    [['c', 7.0], ['a', 1.0], ['b', 1.0]]
    """
    if distance not in DISTANCES:
        raise InvalidQueryError(
            f"distance={distance!r} is not one of {DISTANCES}; pick one of them."
        )
    ids, boxes = _site_envelopes(sites)
    if len(ids) < 2:
        raise AnnotationError(
            f"{len(ids)} site ({ids}): a nearest other site needs at least two; pass two or "
            "more sites."
        )
    d = _degree_distances(boxes) if distance == "envelope-degrees" else _geodesic_distances(boxes)
    nearest = np.argmin(d, axis=1)
    table = pd.DataFrame({"site_id": ids.astype(str), "nearest_site_id": ids[nearest].astype(str),
                          "distance": d[np.arange(len(ids)), nearest]})
    table = table.sort_values(["distance", "site_id"], ascending=[False, True], kind="stable")
    table = table.reset_index(drop=True)
    table["rank"] = np.arange(len(table))
    table.attrs["distance"] = distance
    table.attrs["units"] = "degrees" if distance == "envelope-degrees" else "metres"
    return table


def isolation_split(
    sites: gpd.GeoDataFrame, n_test: int = 35, *, distance: str = "envelope-degrees"
) -> tuple[list[str], list[str]]:
    """The LAMES test split: the ``n_test`` sites farthest from their nearest other site.

    Parameters
    ----------
    sites
        ``site_id`` and geometry (any CRS; measured in EPSG:4326), e.g. ``load_sites("all")``.
    n_test
        Number of test sites (LAMES: 35 of 139).
    distance
        ``"envelope-degrees"`` (LAMES: planar degrees between bounding boxes) or ``"geodesic"``
        (metres); see :data:`DISTANCES`.

    Returns
    -------
    (list of str, list of str)
        ``(train_site_ids, test_site_ids)``: train sorted by site id, test from the most isolated
        down (ties by site id; see :func:`isolation_table`).

    Raises
    ------
    InvalidQueryError
        ``n_test`` not in ``1 .. n_sites - 1`` or an unknown ``distance``.
    AnnotationError
        Sites without ``site_id``, geometry or CRS.

    Examples
    --------
    >>> from lames_cube.annotations import load_sites
    >>> train, test = isolation_split(load_sites("all"), 35)
    >>> len(train), len(test), sorted(test) == sorted(load_sites("test").site_id)
    (104, 35, True)
    """
    table = isolation_table(sites, distance=distance)
    n = len(table)
    if isinstance(n_test, bool) or not isinstance(n_test, int | np.integer) or not 0 < n_test < n:
        raise InvalidQueryError(
            f"n_test={n_test!r}: expected an integer between 1 and {n - 1} ({n} sites)."
        )
    test = table["site_id"].iloc[:n_test].tolist()
    train = sorted(table["site_id"].iloc[n_test:].tolist())
    return train, test


# --------------------------------------------------------------------------------------------
# random splits


def _ids(site_ids: Iterable[Any], what: str = "site_ids") -> list[str]:
    if isinstance(site_ids, str | bytes):
        raise InvalidQueryError(f"{what}={site_ids!r} is a string; pass a list of site ids.")
    ids = [str(s).strip() for s in site_ids]
    if not ids:
        raise InvalidQueryError(f"{what} is empty: there is nothing to split; pass some site ids.")
    dup = sorted({s for s in ids if ids.count(s) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise InvalidQueryError(f"{what} has duplicates {dup[:10]}: split unique site ids.")
    return sorted(ids)


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` by ``fractions`` with the largest-remainder method (ties: earlier part)."""
    f = np.asarray(fractions, dtype="float64")
    if f.ndim != 1 or len(f) < 2 or (f < 0).any() or not np.isfinite(f).all() \
            or not np.isclose(f.sum(), 1.0):
        raise InvalidQueryError(
            f"fractions={tuple(fractions)!r}: expected two or more non-negative fractions "
            "summing to 1, e.g. (0.8, 0.2) or (0.7, 0.1, 0.2)."
        )
    raw = f * n
    counts = np.floor(raw).astype(int)
    rest = n - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:rest]] += 1
    return counts.tolist()


def random_split(
    site_ids: Iterable[Any],
    fractions: Sequence[float] = (0.8, 0.2),
    *,
    n_test: int | None = None,
    seed: int,
) -> tuple[list[str], ...]:
    """Split site ids at random, by site.

    The ids are sorted (as strings) before the seeded permutation, so the result does not depend
    on the input order.

    Parameters
    ----------
    site_ids
        Unique site ids.
    fractions
        Fractions of the parts, e.g. ``(0.8, 0.2)`` (train, test) or ``(0.7, 0.1, 0.2)`` (train,
        validation, test); counts by the largest-remainder method.
    n_test
        Instead of ``fractions``: the exact number of test sites (returns train, test).
    seed
        Seed of :func:`numpy.random.default_rng` (required).

    Returns
    -------
    tuple of lists of str
        One sorted list of ids per part, in the order of ``fractions``.

    Examples
    --------
    >>> random_split([str(i) for i in range(10)], (0.8, 0.2), seed=1117)
    (['0', '1', '2', '5', '6', '7', '8', '9'], ['3', '4'])
    >>> random_split(range(10), n_test=3, seed=1117) == random_split(range(9, -1, -1), n_test=3, seed=1117)
    True
    """
    ids = _ids(site_ids)
    seed = check_seed(seed)
    n = len(ids)
    if n_test is not None:
        if isinstance(n_test, bool) or not isinstance(n_test, int | np.integer) or not 0 <= n_test <= n:
            raise InvalidQueryError(f"n_test={n_test!r}: expected an integer 0..{n} ({n} sites).")
        counts = [n - int(n_test), int(n_test)]
    else:
        counts = _counts(n, fractions)
    perm = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in perm]
    parts, start = [], 0
    for c in counts:
        parts.append(sorted(shuffled[start:start + c]))
        start += c
    return tuple(parts)


def validation_split(
    train_ids: Iterable[Any], fraction: float = 0.2, *, seed: int
) -> tuple[list[str], list[str]]:
    """Hold out a validation set of sites from the training sites.

    Parameters
    ----------
    train_ids
        The training site ids.
    fraction
        Fraction of them for validation (rounded to the nearest count, at least 1).
    seed
        Seed (required).

    Returns
    -------
    (list of str, list of str)
        ``(train_ids, validation_ids)``, both sorted.

    Examples
    --------
    >>> tr, va = validation_split([f"s{i}" for i in range(20)], 0.2, seed=0)
    >>> len(tr), len(va), set(tr).isdisjoint(va)
    (16, 4, True)
    """
    ids = _ids(train_ids, "train_ids")
    if not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise InvalidQueryError(f"fraction={fraction!r}: expected a number between 0 and 1.")
    if len(ids) < 2:
        raise InvalidQueryError(f"{len(ids)} training site: a validation split needs at least two.")
    n_val = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    train, val = random_split(ids, n_test=n_val, seed=seed)
    return train, val


def split_table(
    splits: Mapping[str, Iterable[Any]], *, seed: int | None = None, method: str | None = None
) -> pd.DataFrame:
    """One row per site: ``site_id``, ``split``; checked for leakage.

    Parameters
    ----------
    splits
        ``{"train": ids, "validation": ids, "test": ids}``.
    seed, method
        Recorded in ``attrs`` (``attrs["seed"]``, ``attrs["method"]``).

    Returns
    -------
    pandas.DataFrame
        Sorted by split (in the mapping's order), then site id.

    Examples
    --------
    >>> t = split_table({"train": ["1", "2"], "test": ["3"]}, seed=7, method="random")
    >>> t.values.tolist(), t.attrs["seed"]
    ([['1', 'train'], ['2', 'train'], ['3', 'test']], 7)
    """
    check_no_leakage(splits)
    rows = [(s, name) for name, ids in splits.items() for s in sorted(str(i).strip() for i in ids)]
    table = pd.DataFrame(rows, columns=["site_id", "split"])
    table.attrs["seed"] = seed
    table.attrs["method"] = method
    return table


# --------------------------------------------------------------------------------------------
# leakage


_BOUNDS = (("minx", "miny", "maxx", "maxy"), ("x0", "y0", "x1", "y1"),
           ("left", "bottom", "right", "top"), ("col_off", "row_off", "width", "height"),
           ("col", "row", "width", "height"))


def _window_boxes(windows: pd.DataFrame, bounds: Sequence[str] | None) -> np.ndarray:
    if isinstance(windows, gpd.GeoDataFrame) and bounds is None:
        return np.asarray(windows.geometry.values)
    if bounds is None:
        for cand in _BOUNDS:
            if all(c in windows.columns for c in cand):
                bounds = cand
                break
        else:
            raise InvalidQueryError(
                f"The windows table has no window bounds (columns {list(windows.columns)}): "
                f"expected one of {[list(b) for b in _BOUNDS]} or a geometry, or pass bounds=."
            )
    missing = [c for c in bounds if c not in windows.columns]
    if missing:
        raise InvalidQueryError(
            f"bounds columns {missing} are not in the windows table (columns "
            f"{list(windows.columns)}); pass bounds= naming four of its columns."
        )
    a, b, c, d = (windows[k].to_numpy(dtype="float64") for k in bounds)
    if tuple(bounds)[2:] in (("width", "height"),):
        c, d = a + c, b + d  # offsets + sizes
    return shapely.box(a, b, c, d)


def check_no_leakage(
    splits: Mapping[str, Iterable[Any]],
    windows: pd.DataFrame | None = None,
    *,
    bounds: Sequence[str] | None = None,
    allow_overlap: bool = False,
) -> None:
    """Raise when a site, or a patch window, belongs to two splits.

    Parameters
    ----------
    splits
        ``{split name: site ids}``.
    windows
        Optional table of patch windows with ``site_id`` and window bounds (``minx, miny, maxx,
        maxy`` / ``x0, y0, x1, y1`` / ``left, bottom, right, top`` / pixel ``col_off, row_off,
        width, height``, or a GeoDataFrame's geometry), all in one grid or CRS, and optionally a
        ``split`` column. Each window belongs to the split of its site (a ``split`` column must
        agree). Two windows of different splits must not be the same window, nor overlap (their
        interiors share pixels) unless ``allow_overlap``.
    bounds
        The four bounds columns, when not one of the names above.
    allow_overlap
        Only reject identical windows, not overlapping ones.

    Raises
    ------
    SplitLeakageError
        The message lists the sites or windows and their splits.
    InvalidQueryError
        A window whose site is in no split, or a table without bounds.

    Examples
    --------
    >>> check_no_leakage({"train": ["1", "2"], "test": ["3"]})
    >>> check_no_leakage({"train": ["1", "2"], "test": ["2"]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lames_cube.errors.SplitLeakageError: Site(s) in more than one split: '2' in ['train', 'test']. ...
    """
    owner: dict[str, list[str]] = {}
    for name, ids in splits.items():
        if isinstance(ids, str | bytes):
            raise InvalidQueryError(f"splits[{name!r}] is a string; pass a list of site ids.")
        for s in {str(i).strip() for i in ids}:
            owner.setdefault(s, []).append(name)
    leaks = {s: names for s, names in owner.items() if len(names) > 1}
    if leaks:
        shown = "; ".join(f"{s!r} in {names}" for s, names in sorted(leaks.items())[:10])
        raise SplitLeakageError(
            f"Site(s) in more than one split: {shown}. {len(leaks)} site(s) leak. Split by "
            "site: each site id must be in exactly one split (remove it from all but one)."
        )
    if windows is None:
        return
    if "site_id" not in windows.columns:
        raise InvalidQueryError(
            f"The windows table has no 'site_id' column (columns {list(windows.columns)}); add "
            "one naming each window's site."
        )
    sid = windows["site_id"].astype(str).str.strip().to_numpy()
    unknown = sorted({s for s in sid if s not in owner})
    if unknown:
        raise InvalidQueryError(
            f"{len(unknown)} window site id(s) are in no split, e.g. {unknown[:5]}: add them to a "
            "split or drop their windows."
        )
    split_of = np.array([owner[s][0] for s in sid], dtype=object)
    if "split" in windows.columns:
        declared = windows["split"].astype(str).to_numpy()
        wrong = np.flatnonzero(declared != split_of)
        if len(wrong):
            ex = [f"window {windows.index[i]!r} of site {sid[i]!r} marked {declared[i]!r}, site "
                  f"in {split_of[i]!r}" for i in wrong[:5]]
            raise SplitLeakageError(
                f"{len(wrong)} window(s) are in another split than their site: {'; '.join(ex)}. "
                "Assign windows the split of their site."
            )
    boxes = _window_boxes(windows, bounds)
    tree = shapely.STRtree(boxes)
    a, b = tree.query(boxes, predicate="intersects")
    keep = (a < b) & (split_of[a] != split_of[b])
    a, b = a[keep], b[keep]
    if len(a) == 0:
        return
    same = shapely.equals(boxes[a], boxes[b])
    inter = shapely.area(shapely.intersection(boxes[a], boxes[b])) > 0
    bad = same | (inter if not allow_overlap else False)
    if bad.any():
        idx = np.flatnonzero(bad)
        kind = lambda k: "the same window" if same[k] else "overlapping windows"  # noqa: E731
        ex = [f"{kind(k)} {windows.index[a[k]]!r} (site {sid[a[k]]!r}, {split_of[a[k]]}) and "
              f"{windows.index[b[k]]!r} (site {sid[b[k]]!r}, {split_of[b[k]]})" for k in idx[:5]]
        raise SplitLeakageError(
            f"{len(idx)} pair(s) of windows of different splits share pixels: {'; '.join(ex)}. "
            "Drop one of each pair, or move the sites into one split."
        )
