"""Realism of the synthetic world (issue 7): the measures, the site boxes, `world check`, and
the acceptance test that the world is as hard as real LAMES imagery."""

from __future__ import annotations

import dataclasses
import json
import math

import geopandas as gpd
import numpy as np
import pytest
from scipy import stats

from lames_cube.cli import main
from lames_cube.errors import UnknownSiteError, WorldError
from lames_cube.synthetic import DEMO_SPEC, World
from lames_cube.synthetic.realism import (
    REAL_LAMES,
    THRESHOLDS,
    check_world,
    failures,
    format_table,
    measure,
    open_world,
    site_box,
)

#: Issue 24's sites: 821 (the window the real figures come from), 2504 and 2355 (demo sites),
#: a tailings-dominated (1925) and a leach-dominated site (2928); then a pit-dominated one
#: (2800). (The demo's rare-mine sites 2203 and 2657, 0.8 % and 0.2 % of their boxes, are left
#: out: no forest finds their few hundred mine pixels, so F1 and context gain are 0 there.)
ACCEPTANCE_SITES = ("821", "2504", "2355", "1925", "2928", "2800")


def bands(r, g, b, extra=None):
    """An image dict whose 8-bit true colour is exactly (r, g, b) (ints 1..255)."""
    dn = {name: np.rint(np.asarray(v, float) * 3000 / 255).astype(np.uint16)
          for name, v in (("B04", r), ("B03", g), ("B02", b))}
    if extra is None:  # near infrared and SWIR: some fixed mix of the visible bands
        extra = (0.5 * dn["B04"] + 0.5 * dn["B03"], dn["B04"] * 1.2, dn["B02"] * 0.9)
    for name, v in zip(("B08", "B11", "B12"), extra, strict=True):
        dn[name] = np.maximum(np.rint(v), 1).astype(np.uint16)
    return dn


def square(shape, rows, cols):
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


# ------------------------------------------------------------------------------ the measures
def test_rgb8_round_trip_of_the_helper():
    from lames_cube.synthetic.realism import to_grey

    v = np.arange(1, 256).reshape(5, 51)
    rgb, grey = to_grey(bands(v, v, v))
    assert (rgb == v).all() and (grey == v).all()


def test_contrast_of_a_brighter_square_is_the_hand_value():
    shape = (80, 80)
    mine = square(shape, slice(20, 60), slice(30, 50))
    grey = np.where(mine, 150, 100)
    m = measure(bands(grey, grey, grey), mine)
    assert m["contrast"] == pytest.approx(0.5)  # by hand: |150 - 100| / 100
    assert m["mine_fraction"] == pytest.approx(40 * 20 / 80**2)
    assert m["grey_mine"] == 150 and m["grey_ground"] == 100
    # Grey is the mean of R, G, B: (90, 100, 110) → 100 and (120, 150, 180) → 150.
    m = measure(bands(np.where(mine, 120, 90), np.where(mine, 150, 100), np.where(mine, 180, 110)),
                mine)
    assert m["contrast"] == pytest.approx(0.5)
    # A darker mine: the absolute difference.
    m = measure(bands(*[np.where(mine, 75, 100)] * 3), mine)
    assert m["contrast"] == pytest.approx(0.25)  # by hand: |75 - 100| / 100
    # the forests asked for by name: a misspelt one is an error, not a silent NaN
    with pytest.raises(WorldError, match=r"got \['rbg'\] in \['rgb', 'rbg'\]"):
        measure(bands(grey, grey, grey), mine, forests=["rgb", "rbg"])


def test_texture_of_gaussian_noise_is_its_relative_std():
    rng = np.random.default_rng(1)
    mean, sd = 120.0, 10.0
    grey = np.clip(np.rint(rng.normal(mean, sd, (300, 300))), 1, 255)
    mine = square(grey.shape, slice(0, 4), slice(0, 300))
    m = measure(bands(grey, grey, grey), mine)
    # Population std of 25 normal values: its median is sd * sqrt(chi2_24 median / 25); rounding
    # to integers adds 1/12 to the variance.
    expected = math.sqrt(sd**2 + 1 / 12) * math.sqrt(stats.chi2.median(24) / 25) / mean
    assert m["texture"] == pytest.approx(expected, rel=0.03)


def test_texture_equals_explicit_windows():
    rng = np.random.default_rng(2)
    grey = rng.integers(20, 240, (9, 11))
    mine = square(grey.shape, slice(2, 5), slice(3, 7))
    padded = np.pad(grey.astype(float), 2, mode="symmetric")  # scipy "reflect" edges
    ratios = [padded[i:i + 5, j:j + 5].std() / padded[i:i + 5, j:j + 5].mean()
              for i in range(9) for j in range(11) if not mine[i, j]]
    m = measure(bands(grey, grey, grey), mine)
    assert m["texture"] == pytest.approx(np.median(ratios), rel=1e-9)
    # 12 mine pixels are too few to train a forest: every F1 is NaN, and the thresholds fail.
    assert math.isnan(m["f1_rgb"]) and math.isnan(m["f1_rgb_ab"]) and math.isnan(m["f1_context"])
    assert {"f1_rgb", "f1_all", "context_gain"} <= set(failures(m))


def test_a_mine_of_another_colour_is_separable_per_pixel():
    rng = np.random.default_rng(3)
    shape = (160, 200)
    mine = square(shape, slice(40, 120), slice(60, 150))
    r, g, b = (rng.integers(80, 120, shape) for _ in range(3))
    image = bands(np.where(mine, r + 100, r), g, np.where(mine, b - 60, b))
    m = measure(image, mine)
    assert m["halves"] == "west|east"
    for key in ("f1_rgb", "f1_rgb_ab", "f1_rgb_ba", "f1_all", "f1_context"):
        assert m[key] > 0.99, key


def test_a_striped_mine_of_ground_colours_needs_context():
    """Mine pixels drawn from the ground's colours, but in 6 px stripes of one colour: a
    per-pixel forest cannot see them, local means and standard deviations can."""
    rng = np.random.default_rng(4)
    shape = (200, 200)
    mine = square(shape, slice(40, 160), slice(50, 150))
    ground = rng.integers(60, 181, (3, *shape))
    stripe_colours = rng.integers(60, 181, (3, shape[1] // 6 + 1))
    stripes = np.broadcast_to(np.repeat(stripe_colours, 6, axis=1)[:, None, : shape[1]],
                              (3, *shape))
    rgb = np.where(mine, stripes, ground)
    m = measure(bands(*rgb), mine)
    # bounds of this test (the construction makes per-pixel colour useless, context decisive),
    # not measured figures
    assert m["contrast"] < 0.1  # a few stripe colours: means close, not equal
    assert m["f1_rgb"] < 0.35
    assert m["f1_context"] > 0.8
    assert m["context_gain"] > 0.5


def test_mines_in_one_half_switch_to_north_south_halves():
    shape = (120, 120)
    mine = square(shape, slice(10, 110), slice(5, 40))  # all in the west half
    rng = np.random.default_rng(5)
    grey = np.where(mine, 160, 100) + rng.integers(0, 20, shape)
    m = measure(bands(grey, grey, grey), mine)
    assert m["halves"] == "north|south"
    assert m["f1_rgb_ab"] > 0.99 and m["f1_rgb_ba"] > 0.99


def test_no_mine_gives_nan_separability():
    grey = np.random.default_rng(6).integers(50, 150, (50, 50))
    m = measure(bands(grey, grey, grey), np.zeros((50, 50), bool))
    assert m["mine_fraction"] == 0 and math.isnan(m["contrast"]) and math.isnan(m["f1_all"])
    assert m["texture"] > 0


def test_bad_input_raises_world_error():
    grey = np.full((20, 20), 100)
    image = bands(grey, grey, grey)
    with pytest.raises(WorldError, match=r"lacks the true-colour bands \['B03'\]"):
        measure({k: v for k, v in image.items() if k != "B03"}, np.zeros((20, 20)))
    with pytest.raises(WorldError, match=r"one shape; B04 is \(20, 20\), the mask \(20, 21\)"):
        measure(image, np.zeros((20, 21)))
    with pytest.raises(WorldError, match="2-D"):
        measure({k: v[0] for k, v in image.items()}, np.zeros(20))


def test_failures_and_thresholds():
    good = {"contrast": 0.15, "texture": 0.07, "f1_rgb": 0.6, "f1_all": 0.7, "context_gain": 0.15}
    assert failures(good) == []
    assert failures({**good, "contrast": 0.36, "f1_all": math.nan}) == ["contrast", "f1_all"]
    # issue 7's acceptance thresholds and its figures for real LAMES imagery (realism.py records
    # both; this pins them against silent edits)
    assert THRESHOLDS["contrast"] == ("<=", 0.35) and THRESHOLDS["context_gain"] == (">=", 0.10)
    assert REAL_LAMES == {"contrast": 0.15, "texture": 0.07, "f1_rgb": 0.6}


# ------------------------------------------------------------------------------ site boxes
@pytest.fixture(scope="module")
def acceptance_world(lames_dir):
    """One world over the four demo sites and a pit-, a tailings- and a leach-dominated site."""
    return World(dataclasses.replace(DEMO_SPEC, site_ids=ACCEPTANCE_SITES), data_dir=lames_dir)


@pytest.mark.parametrize("site_id", ["821", "2800"])
def test_site_box_is_on_whole_10m_pixels_around_the_site(acceptance_world, site_id):
    site = acceptance_world.sites.set_index("site_id").loc[site_id]
    box = site_box(acceptance_world, site_id, margin_m=700)
    assert box.crs.epsg == site.epsg
    assert box.resolution.x == 10 and box.resolution.y == -10
    assert box.affine.c % 10 == 0 and box.affine.f % 10 == 0
    w, s, e, n = gpd.GeoSeries([site.geometry], crs=4326).to_crs(site.epsg).total_bounds
    bw, bs, be, bn = box.boundingbox
    assert bw <= w - 700 < bw + 10 and bs <= s - 700 < bs + 10
    assert be - 10 < e + 700 <= be and bn - 10 < n + 700 <= bn
    # The box's pixels are pixels of the world's tiles.
    tile = acceptance_world.tiles[0]
    assert (bw - tile.x0) % 10 == 0 and (bn - tile.y0) % 10 == 0
    assert site_box(acceptance_world, int(site_id)) == site_box(acceptance_world, site_id)


def test_site_box_rejects_unknown_sites_and_bad_margins(acceptance_world):
    with pytest.raises(UnknownSiteError, match=r"Site '9999' is not in this world \(sites: \['1925'"):
        site_box(acceptance_world, 9999)
    with pytest.raises(WorldError, match="margin_m >= 0"):
        site_box(acceptance_world, "2504", margin_m=-1)


# ------------------------------------------------------------------------------ the command
def test_open_world_rebuilds_the_written_world(world):
    rebuilt = open_world(world)
    manifest = json.loads((world / "manifest.json").read_text())
    assert list(rebuilt.sites.site_id) == manifest["sites"]
    assert all(isinstance(s, str) for s in rebuilt.sectors.site_id)
    assert rebuilt.spec.to_dict() == manifest["spec"]
    assert rebuilt.digest() == manifest["digest"]  # the same sectors, bit for bit


def test_cli_world_check_prints_a_row_per_site(world, capsys, tmp_path):
    code = main(["world", "check", str(world), "--margin-m", "300", "--png", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    hard, _, looks = out.partition("\n\n")
    lines = hard.splitlines()
    assert lines[0].split()[:2] == ["site", "split"]
    for site_id in ("2203", "2355"):
        row = next(line for line in lines if line.split()[0] == site_id)
        assert row.rstrip().endswith(("PASS", "FAIL"))
    assert any(line.strip().startswith("real LAMES") and "0.15" in line for line in lines)
    assert any(line.strip().startswith("threshold") and "<=0.35" in line for line in lines)
    assert lines[-1].endswith("sites pass (* = threshold missed)")
    # the look of each site's LAMES box, beside real Sentinel-2 and the limits of issue 24
    lines = looks.splitlines()
    assert lines[0].split()[:4] == ["site", "win", "mine", "%"]
    for site_id in ("2203", "2355"):
        assert any(line.split()[0] == site_id for line in lines[1:3])
        png = tmp_path / f"site-{site_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in out
    assert any(line.split()[:4] == ["real", "S2", "0.130", "1.070"] for line in lines)
    assert any(line.strip().startswith("limits") and "0.09-0.18" in line for line in lines)


def test_cli_world_check_strict_and_bad_paths(world, tmp_path, capsys):
    code = main(["world", "check", str(world), "--sites", "2203", "--margin-m", "300", "--strict"])
    out = capsys.readouterr().out
    assert code == (0 if "PASS" in out.splitlines()[1] else 1)
    assert main(["world", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "WorldError" in err and str(tmp_path) in err and "lames-cube world create PATH" in err
    assert main(["world", "check", str(world), "--year", "1999"]) == 2
    # [2021, 2022]: SMALL_SPEC.years (the `world` fixture)
    assert "year=1999 is not one of the world's years [2021, 2022]" in capsys.readouterr().err


# ------------------------------------------------------------------------------ acceptance
@pytest.mark.parametrize("site_id", ACCEPTANCE_SITES)
def test_world_is_as_hard_as_real_imagery(acceptance_world, site_id):
    """Issue 7: per site, contrast <= 0.35, texture >= 0.04, per-pixel RGB forest F1 <= 0.72,
    all-band F1 <= 0.80, and context improves on per-pixel RGB by >= 0.10 F1."""
    table = check_world(acceptance_world, [site_id])
    row = table.iloc[0].to_dict()
    assert not failures(row), "\n" + format_table(table)
    # The forest fitted with balanced classes must stay under the same limit, so colour alone
    # cannot find the mines even where they are few.
    assert row["f1_rgb_balanced"] <= THRESHOLDS["f1_rgb"][1], "\n" + format_table(table)
