"""Sample tables as data: GeoParquet round trips, concatenation, diffs and plots."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
import xarray as xr
from geopandas.testing import assert_geodataframe_equal
from matplotlib.colors import to_rgb
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from lames_cube.errors import GridMismatchError, InvalidQueryError, LamesCubeError
from lames_cube.patches import extract_patches, lames_patch_table, patch_table, table_geobox
from lames_cube.sampling import sample_background, sample_blind
from lames_cube.tables import (
    ATTRS_KEY,
    PALETTE,
    NotAWindowTableError,
    TableMismatchError,
    TableNotFoundError,
    concat_tables,
    diff_tables,
    plot_table,
    read_table,
    save_table,
)

G = GeoBox.from_bbox((300_000, 7_000_000, 305_120, 7_005_120), "EPSG:32719", resolution=10)


def _labels():
    labels = xr_zeros(G, dtype="uint8")  # 512 x 512 px
    for r, c, s in ((60, 300, 80), (300, 100, 60), (380, 380, 50)):  # three square "mines"
        labels[r:r + s, c:c + s] = 1
    return labels


def _cube(labels):
    h, w = G.shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = 1500 + 800 * np.sin(xx / 60.0) * np.cos(yy / 90.0)
    data = np.stack([base * f for f in (0.7, 0.9, 1.1, 1.6)])
    data[:, labels.values > 0] = 3500
    data = data.astype("uint16")
    data[:, 480:, :40] = 0  # nodata in the lower left corner
    return xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": ["B02", "B03", "B04", "B08"], **labels.coords},
                        attrs={"nodata": 0})


@pytest.fixture(scope="module")
def draws():
    labels = _labels()
    windows = patch_table(G, size=64)
    return {"windows": windows, "labels": labels,
            "patches": patch_table(G, size=64, stride=128),
            "blind": sample_blind(windows, 10, seed=1),
            "background": sample_background(labels, 10, size=64, seed=2)}


def _keys(table):
    return set(zip(table["row"].tolist(), table["col"].tolist(), strict=True))


# --------------------------------------------------------------------------- files
def test_round_trip_keeps_frame_attrs_crs_and_index(draws, tmp_path):
    for name in ("patches", "blind", "background"):
        table = draws[name]
        path = save_table(table, tmp_path / "sub" / f"{name}.parquet")  # folders made
        back = read_table(path)
        assert_geodataframe_equal(back, table)  # columns, dtypes, index, geometry, CRS
        assert back.attrs == table.attrs and back.crs == table.crs
        assert back.crs.to_epsg() == 32719
        assert table_geobox(back) == G
        stored = json.loads(pq.read_schema(path).metadata[ATTRS_KEY])
        assert stored == table.attrs
    blind = read_table(tmp_path / "sub" / "blind.parquet")  # the draw keeps its source's index
    assert blind.index.tolist() == draws["blind"].index.tolist() != list(range(10))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [  # no temporaries left
        "background.parquet", "blind.parquet", "patches.parquet"]


def test_attrs_are_made_json_safe_and_overwrite_is_whole(draws, tmp_path):
    table = draws["blind"].copy()
    table.attrs.update(seed=np.int64(7), buffer_m=np.float32(2.5), flags=np.array([1, 2]),
                       pair=(1, "a"), nested={"k": np.bool_(True)})
    path = save_table(table, tmp_path / "t.parquet")
    attrs = read_table(path).attrs
    assert attrs["seed"] == 7 and type(attrs["seed"]) is int
    assert attrs["buffer_m"] == 2.5 and attrs["flags"] == [1, 2] and attrs["pair"] == [1, "a"]
    assert attrs["nested"] == {"k": True}
    save_table(draws["patches"], path)  # replaces the file
    assert len(read_table(path)) == len(draws["patches"])
    table.attrs["bad"] = object()
    with pytest.raises(InvalidQueryError, match=r"attrs\['bad'\] is a object .* JSON cannot"):
        save_table(table, path)
    assert len(read_table(path)) == len(draws["patches"])  # the old file is untouched
    with pytest.raises(NotAWindowTableError, match="DataFrame, not a window table"):
        save_table(pd.DataFrame({"row": [0], "col": [0]}), path)
    with pytest.raises(NotAWindowTableError, match="has no col column"):
        save_table(draws["patches"].drop(columns="col"), path)


def test_read_errors_are_typed_and_say_what_is_missing(draws, tmp_path):
    with pytest.raises(TableNotFoundError, match=r"no table at .*nope\.parquet") as info:
        read_table(tmp_path / "nope.parquet")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, LamesCubeError)
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"row": [0], "col": [1]}).to_parquet(plain)
    with pytest.raises(NotAWindowTableError, match=r"not a window table: it has no geometry"):
        read_table(plain)
    nocols = tmp_path / "nocols.parquet"
    gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_parquet(
        nocols)
    with pytest.raises(NotAWindowTableError, match=r"it has no row, no col \(columns"):
        read_table(nocols)
    text = tmp_path / "text.parquet"
    text.write_text("row,col\n0,0\n")
    with pytest.raises(NotAWindowTableError, match="is not a Parquet file"):
        read_table(text)
    with pytest.raises(NotAWindowTableError, match="is a folder"):
        read_table(tmp_path)


# --------------------------------------------------------------------------- concat
def test_concat_records_parts_and_fills_kind(draws, tmp_path):
    parts = [draws["patches"], draws["blind"], draws["background"]]
    both = concat_tables(parts)
    assert len(both) == 36 and both.index.tolist() == list(range(36))
    assert both.groupby("kind").size().to_dict() == {"background": 10, "blind": 10,
                                                     "patches": 16}
    assert both["part"].tolist() == [0] * 16 + [1] * 10 + [2] * 10
    want = pd.concat([p[["row", "col"]] for p in parts], ignore_index=True)
    assert both[["row", "col"]].equals(want)
    assert both.attrs["rule"] == "concat" and both.attrs["n"] == 36
    assert both.attrs["size"] == 64 and both.attrs["grid"] == draws["patches"].attrs["grid"]
    assert [(p["rule"], p["seed"], p["n"], p["kind"]) for p in both.attrs["parts"]] == [
        ("patches", None, 16, ["patches"]), ("blind", 1, 10, ["blind"]),
        ("background", 2, 10, ["background"])]
    assert both.attrs["parts"][2]["buffer_m"] == 0.0  # the part's other attrs come along
    assert table_geobox(both) == G and both.crs == draws["patches"].crs
    # a concatenation is a table like any other: saved, read, concatenated again (flattened)
    again = concat_tables([read_table(save_table(both, tmp_path / "c.parquet")),
                           sample_blind(draws["windows"], 3, seed=9)])
    assert [p["seed"] for p in again.attrs["parts"]] == [None, 1, 2, 9]
    assert again["part"].tolist()[-4:] == [2, 3, 3, 3]
    # the pixels of the concatenated windows are those of the parts
    cube = _cube(draws["labels"])
    image = extract_patches(cube, both).image.values
    assert np.array_equal(image[16:26], extract_patches(cube, draws["blind"]).image.values)


def test_concat_refuses_other_grids_and_sizes(draws):
    other = GeoBox.from_bbox((300_000, 7_000_000, 305_120, 7_005_120), "EPSG:32718",
                             resolution=10)
    with pytest.raises(TableMismatchError, match=r"table 0 and table 1 are on different grids: "
                       r"table 0 has grid .*32719.* table 1 has grid .*32718") as info:
        concat_tables([draws["patches"], patch_table(other, size=64)])
    assert isinstance(info.value, GridMismatchError) and isinstance(info.value, ValueError)
    with pytest.raises(TableMismatchError, match="table 0 has windows of 64 px but table 2 has "
                                                 "windows of 32 px"):
        concat_tables([draws["patches"], draws["blind"], patch_table(G, size=32)])
    with pytest.raises(InvalidQueryError, match=r"non-empty list .*an empty list"):
        concat_tables([])
    with pytest.raises(InvalidQueryError, match="non-empty list of window tables; got "
                                                "GeoDataFrame"):
        concat_tables(draws["patches"])
    bare = draws["patches"].copy()
    bare.attrs = {}
    with pytest.raises(NotAWindowTableError, match=r"table 1 has no attrs\['grid'\]"):
        concat_tables([draws["patches"], bare])


# --------------------------------------------------------------------------- diff
def test_diff_of_two_blind_draws_matches_set_operations(draws):
    windows = patch_table(G, size=32)  # 256 windows
    a, b = sample_blind(windows, 100, seed=11), sample_blind(windows, 80, seed=12)
    d = diff_tables(a, b)
    ka, kb = _keys(a), _keys(b)
    assert _keys(d.only_a) == ka - kb and _keys(d.only_b) == kb - ka
    assert _keys(d.both) == ka & kb
    assert len(d.only_a) + len(d.both) == 100 and len(d.only_b) + len(d.both) == 80
    assert 0 < len(d.both) < 80
    assert d.only_a.index.isin(a.index).all() and d.both.index.is_monotonic_increasing
    assert d.only_b.attrs["seed"] == 12 and d.only_a.attrs["diff"] == "only in a"
    text = d.summary()
    assert text.splitlines()[0] == (f"windows keyed by (row, col): {len(ka - kb)} only in a, "
                                    f"{len(kb - ka)} only in b, {len(ka & kb)} in both")
    assert "[a: blind, seed 11]" in text and f"in both:   {len(ka & kb)} (blind:" in text
    assert repr(d).startswith("TableDiff: windows keyed by") and not d.identical
    assert diff_tables(a, a.iloc[::-1]).identical
    with pytest.raises(TableMismatchError, match="a has windows of 32 px but b has windows "
                                                 "of 64 px"):
        diff_tables(a, draws["blind"])
    with pytest.raises(NotAWindowTableError, match="b has no row column"):
        diff_tables(a, b.drop(columns="row"))


def test_diff_of_lames_patch_tables_is_keyed_by_tile():
    region = shapely.box(-68.9, -21.1, -68.6, -20.9)
    table = lames_patch_table(region)
    assert "grid" not in table.attrs  # LAMES tables: one grid per tile, named by the source
    a, b = sample_blind(table, 30, seed=1), sample_blind(table, 30, seed=2)
    d = diff_tables(a, b)
    assert d.keys == ("tile", "row", "col")
    key = lambda t: set(zip(t.tile, t.row, t.col, strict=True))  # noqa: E731
    assert key(d.both) == key(a) & key(b) and key(d.only_b) == key(b) - key(a)
    both = concat_tables([a, b])
    assert both.attrs["source"] == table.attrs["source"] and len(both) == 60


# --------------------------------------------------------------------------- plots
def _pixel(fig, x, y):
    """The (row, col) of the PNG pixel that shows map point (x, y)."""
    fig.canvas.draw()
    px, py = fig.axes[0].transData.transform((x, y))
    height = fig.canvas.get_width_height()[1]
    return round(float(height - py)), round(float(px))


def _near(image, color, tol=0.04):
    return (np.abs(image[..., :3] - np.array(to_rgb(color))) < tol).all(axis=-1)


def test_plot_draws_windows_by_kind_over_the_quicklook(draws, tmp_path):
    import matplotlib.image as mpimg

    both = concat_tables([draws["patches"], draws["blind"], draws["background"]])
    cube = _cube(draws["labels"])
    path = tmp_path / "plot.png"
    fig = plot_table(both, background=cube, labels=draws["labels"], path=path,
                     figsize=(6.0, 5.0), dpi=100)
    image = mpimg.imread(path)
    assert image.shape[:2] == (500, 600)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "background (10)", "blind (10)", "patches (16)", "labels > 0"]
    for kind, color in zip(("background", "blind", "patches"), PALETTE, strict=False):
        assert _near(image, color).sum() > 200, kind  # each kind's outline colour is drawn
    # the first blind window (on the patch grid; the fewer windows are drawn on top): the
    # middle of its top edge has the blind colour, so windows are drawn where they are
    x0, _, _, y1 = draws["blind"].geometry.iloc[0].bounds
    r, c = _pixel(fig, x0 + 320, y1)
    assert _near(image[r - 1:r + 2, c - 1:c + 2], PALETTE[1]).any()
    # the nodata corner is transparent (white figure behind), an image pixel is not white
    r, c = _pixel(fig, 300_100, 7_000_100)
    assert np.allclose(image[r, c, :3], 1.0)
    r, c = _pixel(fig, 302_000, 7_004_000)
    assert not np.allclose(image[r, c, :3], 1.0)
    assert "B04, B03, B02" in fig.axes[0].get_xlabel()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_plot_variants_and_errors(draws, tmp_path):
    from matplotlib.figure import Figure

    cube = _cube(draws["labels"])
    series = xr.concat([cube, cube], dim="time").transpose("time", "band", "y", "x")
    fig = plot_table(draws["background"], background=series.isel(band=[3]), by=None)
    assert "B08, median of 2 time steps" in fig.axes[0].get_xlabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["windows (10)"]
    fig = plot_table(draws["patches"], background=draws["labels"])  # labels as the background
    assert fig.legends[0].get_texts()[-1].get_text() == "labels > 0"
    assert fig.axes[0].get_title() == "patches: 16 windows of 64 px"
    mine = Figure()
    ax1, ax2 = mine.subplots(1, 2)
    out = plot_table(draws["blind"], ax=ax2, title="mine", colors={"blind": "k"})
    assert out is mine and ax2.get_title() == "mine" and ax1.get_title() == ""
    assert [t.get_text() for t in ax2.get_legend().get_texts()] == ["blind (10)"]
    with pytest.raises(InvalidQueryError, match=r"by='nope' is not a column of the table"):
        plot_table(draws["blind"], by="nope")
    with pytest.raises(InvalidQueryError, match=r"background must be .* got DataArray with 1 "
                                                "dims"):
        plot_table(draws["blind"], background=xr.DataArray(np.zeros(3), dims="x"))
    with pytest.raises(NotAWindowTableError, match="no CRS"):
        plot_table(gpd.GeoDataFrame({"row": [0], "col": [0]}, geometry=[shapely.box(0, 0, 1, 1)]))
    # a LAMES table (EPSG:4326) over labels on a UTM grid: the windows are reprojected
    region = shapely.box(-68.75, -21.0, -68.65, -20.92)
    lames = lames_patch_table(region)
    utm = GeoBox.from_bbox(gpd.GeoSeries([region], crs="EPSG:4326").to_crs("EPSG:32719")
                           .total_bounds, "EPSG:32719", resolution=30)
    fig = plot_table(lames, background=xr_zeros(utm, dtype="uint8"), path=tmp_path / "l.png")
    assert fig.axes[0].get_xlabel().startswith("x (EPSG:32719, m)")
    assert fig.legends[0].get_texts()[0].get_text() == f"patches ({len(lames)})"
