"""The demo's HTML report: self-contained, and read back in a real browser (headless Chromium)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from lames_cube.demo import _area_figure, _site_figure
from lames_cube.html_report import HtmlReportError, figure_png, write_html_report
from lames_cube.metrics import scores
from lames_cube.report import results_table
from lames_cube.testing.browser import inspect_page

PROBE = """({
  metricsRows: document.querySelectorAll('#metrics tbody tr').length,
  metricsHead: Array.from(document.querySelectorAll('#metrics th')).map(t => t.textContent),
  maps: Array.from(document.querySelectorAll('figure.map img')).filter(
      i => i.complete && i.naturalWidth > 0).length,
  charts: Array.from(document.querySelectorAll('figure.chart img')).filter(
      i => i.complete && i.naturalWidth > 0).length,
  external: Array.from(document.querySelectorAll('[src],[href]')).map(
      e => e.getAttribute('src') || e.getAttribute('href')).filter(
      s => !s.startsWith('data:')).length,
})"""


def _mini_run():
    """A site cube of three years with a growing mine, predicted and true."""
    gbox = GeoBox.from_bbox((480000, 7300000, 482560, 7301280), "EPSG:32719", resolution=10)
    years = [2021, 2022, 2023]
    rng = np.random.default_rng(1)
    refl = rng.integers(1500, 2500, (3, 3, *gbox.shape)).astype(np.uint16)
    coords = {"year": years, **xr_coords(gbox, crs_coord_name="spatial_ref")}
    truth = np.zeros((3, *gbox.shape), bool)
    cls = np.zeros((3, *gbox.shape), np.uint8)
    for k in range(3):
        truth[k, 40:60 + 20 * k, 50:120] = True
        cls[k, 42:64 + 20 * k, 48:118] = 1
        refl[k, :, truth[k]] = 900
    data = {"cube": xr.DataArray(refl, dims=("year", "band", "y", "x"),
                                 coords={**coords, "band": ["B04", "B03", "B02"]}),
            "truth": xr.DataArray(truth, dims=("year", "y", "x"), coords=coords)}
    pred = xr.Dataset({"class": (("year", "y", "x"), cls),
                       "probability": (("year", "y", "x"), cls * 230)}, coords=coords)
    rows = pd.DataFrame({"year": years, "area_km2": [0.15, 0.30, 0.45],
                         "low_km2": [0.1, 0.25, 0.4], "high_km2": [0.2, 0.35, 0.5],
                         "truth_km2": [0.14, 0.28, 0.42], "area_km2_labels": [0.42] * 3})
    return data, pred, rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data, pred, rows = _mini_run()
    metrics = results_table({"U-Net": scores(np.array([[900, 100], [50, 450]]))}, task="site")
    path = tmp_path_factory.mktemp("report") / "report.html"
    return write_html_report(
        path, title="test report", intro="a mini run", metrics=metrics,
        maps=[("Site X", figure_png(_site_figure("X", data, pred), dpi=60))],
        charts=[("Site X area", figure_png(_area_figure("X", rows), dpi=60))],
        tables=[("extent", rows.set_index("year"))], settings={"epochs": 1},
        timings={"world": 1.5})


def test_report_is_one_self_contained_file(report):
    text = report.read_text()
    assert text.count("data:image/png;base64,") == 2
    body = text.split("<body>")[1]
    assert "http://" not in body and "https://" not in body and "<script" not in body
    assert "LAMES (paper)" in text  # the paper's rows beside ours
    with pytest.raises(HtmlReportError, match="not PNG bytes"):
        write_html_report(report.parent / "bad.html", title="x", maps=[("m", b"GIF89a")])
    with pytest.raises(HtmlReportError, match="must be a pandas DataFrame"):
        write_html_report(report.parent / "bad.html", title="x", metrics={"F1": 1})


@pytest.mark.slow  # headless Chromium
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "report.png"
    page = inspect_page(report, shot, script=PROBE, height=1600)
    seen = page["value"]
    assert seen["metricsRows"] == 3  # ours + the paper's two rows
    assert "Macro F1" in seen["metricsHead"] and "FN rate" in seen["metricsHead"]
    assert seen["maps"] == 1 and seen["charts"] == 1  # decoded images, not broken links
    assert seen["external"] == 0
    assert page["errors"] == []
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[1] == 1280 and img.std() > 10  # a page with content, not a blank sheet


def test_the_browser_check_sees_broken_pages(tmp_path):
    """The check can fail: a console error and a missing image are reported."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><figure class="map"><img src="missing.png"></figure>'
                    '<script>console.error("boom")</script></body></html>')
    seen = inspect_page(page, tmp_path / "b.png", script=PROBE, height=400)
    assert seen["value"]["maps"] == 0
    assert any("boom" in e for e in seen["errors"])
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in seen["errors"])


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_demo_runs_the_whole_pipeline_on_a_fresh_cache(tmp_path, monkeypatch, lames_dir):
    """``lames-cube demo`` end to end (about 7 min here): the report opens in Chromium with
    the metrics table, a map per site and a chart per site; a rerun reuses the trained model."""
    import json

    from lames_cube.demo import run_demo

    monkeypatch.setenv("LAMES_CACHE_DIR", str(tmp_path / "cache"))
    report = run_demo(tmp_path / "demo", data_dir=lames_dir, progress=False)
    summary = json.loads((report.parent / "summary.json").read_text())
    assert len(summary["timings"]) == 8  # every stage before the report, timed
    page = inspect_page(report, tmp_path / "demo.png", script=PROBE, height=1600)
    assert page["value"]["metricsRows"] >= 3 and page["errors"] == []
    assert page["value"]["maps"] == 4 and page["value"]["charts"] == 4
    extent = pd.read_csv(report.parent / "extent.csv")
    assert len(extent) == 16 and extent.truth_km2.gt(0).all()
    stores = sorted((report.parent / "predictions").glob("*.zarr/.lames/*"))
    stamps = [p.stat().st_mtime_ns for p in stores]
    again = run_demo(tmp_path / "demo", data_dir=lames_dir, progress=False)
    assert again == report
    metrics = json.loads((report.parent / "model" / "metrics.json").read_text())
    assert metrics["reused"] == ["checked", "checked-no-jitter"]  # no model is trained again
    assert stores and [p.stat().st_mtime_ns for p in stores] == stamps  # nor scored again
