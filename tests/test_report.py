"""The evaluation report: table cells by hand, Markdown round trip, figures, report, errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from lames_cube.errors import LamesCubeError
from lames_cube.metrics import scores
from lames_cube.report import (
    CLASS_NAMES,
    PAPER,
    ReportError,
    class_iou,
    plot_class_scores,
    plot_confusion,
    plot_curves,
    plot_samples,
    results_table,
    table_markdown,
    write_report,
)

# rows = truth, columns = prediction: TN 50, FP 10, FN 5, TP 35
CM = np.array([[50, 10], [5, 35]])
SECTOR_CM = np.array([[40, 2, 1], [3, 20, 2], [0, 4, 8]])


def _parse(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in markdown.splitlines()]


def _png(path: Path, *, min_px: int = 200) -> np.ndarray:
    assert path.is_file() and path.suffix == ".png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_px and max(image.shape[:2]) < 4000
    assert image[..., :3].std() > 0.01  # not blank
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # the temporary of the atomic write is gone
    return image


def test_site_table_by_hand():
    df = results_table({"U-Net": scores(CM)}, task="site")
    row = df.loc["U-Net"]
    assert row["FN rate"] == pytest.approx(5 / 40)  # FN / positives
    assert row["FP rate"] == pytest.approx(10 / 60)  # FP / negatives
    assert row["Micro accuracy"] == pytest.approx(85 / 100)
    assert row["Macro accuracy"] == pytest.approx(85 / 100)  # 1 - 2 (1 - OA) / 2
    assert row["Macro precision"] == pytest.approx((50 / 55 + 35 / 45) / 2)
    assert row["Macro recall"] == pytest.approx((50 / 60 + 35 / 40) / 2)
    f1 = [2 * 50 / (2 * 50 + 10 + 5), 2 * 35 / (2 * 35 + 10 + 5)]
    assert row["Macro F1"] == pytest.approx(np.mean(f1))
    assert row["mIoU"] == pytest.approx((50 / 65 + 35 / 50) / 2)  # TP / (TP + FP + FN)
    assert row["source"] == "this run"
    assert list(df.columns) == ["Macro accuracy", "Macro precision", "Macro recall", "Macro F1",
                                "Micro accuracy", "mIoU", "FN rate", "FP rate", "source"]
    assert list(df.index) == ["U-Net", "LAMES (paper)", "LAMES +10k (paper)"]
    paper = df.loc["LAMES +10k (paper)"]
    assert paper[["Macro accuracy", "Macro precision", "Macro recall", "Macro F1",
                  "Micro accuracy", "FN rate", "FP rate"]].tolist() == [
        0.89, 0.71, 0.83, 0.75, 0.89, 0.25, 0.094]
    assert math.isnan(paper["mIoU"]) and paper["source"] == "paper"
    assert df.loc["LAMES (paper)", "FP rate"] == 0.061


def test_confusion_matrix_input_and_iou_entries():
    s = dict(scores(CM))
    assert results_table({"m": CM}, task="site", paper=False).equals(
        results_table({"m": s}, task="site", paper=False))
    bare = {k: v for k, v in s.items() if k not in ("iou", "mean_iou")}
    np.testing.assert_allclose(class_iou(bare), [50 / 65, 35 / 50])  # from F1: F1 / (2 - F1)
    assert results_table({"m": bare}, task="site").loc["m", "mIoU"] == pytest.approx(
        (50 / 65 + 35 / 50) / 2)
    s["iou"], s["mean_iou"] = np.array([0.1, 0.3]), 0.2  # provided entries win
    assert results_table({"m": s}, task="site").loc["m", "mIoU"] == 0.2
    np.testing.assert_allclose(class_iou(s), [0.1, 0.3])


def test_rates_nan_without_positives():
    df = results_table({"m": [[10, 2], [0, 0]]}, task="site", paper=False)
    assert math.isnan(df.loc["m", "FN rate"]) and df.loc["m", "FP rate"] == pytest.approx(2 / 12)


def test_sector_table():
    df = results_table({"U-Net": scores(SECTOR_CM)}, task="sector")
    assert "FN rate" not in df.columns and "mIoU" in df.columns
    assert list(df.index) == ["U-Net", *PAPER["sector"]]
    assert df.loc["LAMES (paper, 0.5 m)", "Micro accuracy"] == 0.59
    assert df.loc["U-Net", "Micro accuracy"] == pytest.approx(68 / 80)
    assert len(CLASS_NAMES["sector"]) == 8 and CLASS_NAMES["sector"][0] == "-"


def test_markdown_round_trip():
    df = results_table({"U-Net": CM, "majority": [[60, 0], [40, 0]]}, task="site")
    cells = _parse(table_markdown(df, digits=4))
    assert cells[0] == ["model", *df.columns]
    assert set(cells[1]) == {"---"}
    assert [r[0] for r in cells[2:]] == list(df.index)
    for row, (_, expected) in zip(cells[2:], df.iterrows(), strict=True):
        for text, value in zip(row[1:-1], expected.iloc[:-1], strict=True):
            if math.isnan(value):
                assert text == ""
            else:
                assert float(text) == pytest.approx(value, abs=5e-5)
        assert row[-1] == expected["source"]
    assert _parse(table_markdown(df))[2][7] == "0.12"  # FN rate 0.125 to 2 decimals
    assert _parse(table_markdown(df, digits={"FN rate": 3}))[2][7] == "0.125"
    odd = pd.DataFrame({"a|b": ["x|y"]})
    assert table_markdown(odd).splitlines()[2] == "| x\\|y |"  # RangeIndex hidden, | escaped


def test_plot_confusion(tmp_path):
    out = plot_confusion(SECTOR_CM, ["-", "lh", "mf"], tmp_path / "cm.png", title="t")
    assert out == tmp_path / "cm.png"
    _png(out)
    big = np.ones((8, 8)) + np.diag(np.arange(8) * 1e6)
    big[3] = 0  # a class without pixels: a grey row
    _png(plot_confusion(big, CLASS_NAMES["sector"], tmp_path / "deep" / "cm8.png"))


@pytest.mark.parametrize("metric", ["f1", "iou"])
def test_plot_class_scores(tmp_path, metric):
    results = {"U-Net": scores(CM), "baseline": CM.T}
    _png(plot_class_scores(results, CLASS_NAMES["site"], tmp_path / f"{metric}.png",
                           metric=metric))


def test_plot_curves(tmp_path):
    log = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_macro_f1": 1 - 1 / e,
            "lr": 1e-3 / e} for e in range(1, 11)]
    log[6]["best"] = True
    sparse = [{"train_loss": 0.5}, {"train_loss": 0.4, "lr": None}]  # no epoch, missing keys
    _png(plot_curves({"U-Net": log, "other": sparse}, tmp_path / "curves.png"))


def _samples(c: int, n: int = 4, size: int = 32):
    rng = np.random.default_rng(0)
    truth = np.zeros((n, size, size), np.int64)
    truth[:, 8:20, 10:24] = 1
    truth[0, :2] = 255  # an ignore value
    images = rng.integers(200, 3000, (n, c, size, size)).astype(np.uint16)
    images[:, :, truth[0] == 1] += 2000
    images[1, :, :4, :4] = 0  # nodata
    return images, truth


@pytest.mark.parametrize("bands", [("B02", "B03", "B04", "B08", "B11", "B12"), ("R", "G", "B")])
def test_plot_samples(tmp_path, bands):
    images, truth = _samples(len(bands))
    preds = {"U-Net": np.roll(truth, 2, axis=1), "RF": np.zeros_like(truth)}
    out = plot_samples(images, bands, truth, preds, tmp_path / "s.png",
                       class_names=CLASS_NAMES["site"], max_samples=3)
    image = _png(out)
    assert image.shape[1] > image.shape[0] * 0.9  # 3 rows, 4 columns


def test_plot_samples_sector(tmp_path):
    images, truth = _samples(3)
    truth = truth % 255 * 5  # sector indices
    _png(plot_samples(images, ["B04", "B03", "B02"], truth, {"m": truth}, tmp_path / "s.png",
                      class_names=CLASS_NAMES["sector"]))


def test_write_report(tmp_path):
    figures = tmp_path / "figures"
    cm_png = plot_confusion(CM, CLASS_NAMES["site"], figures / "cm.png")
    f1_png = plot_class_scores({"U-Net": CM}, CLASS_NAMES["site"], figures / "f1 bars.png")
    table = results_table({"U-Net": CM}, task="site")
    report = write_report(
        tmp_path / "report" / "README.md", title="Site detection", summary="U-Net on S2.",
        table=table, figures={"Confusion matrix": cm_png, "Per-class F1": f1_png},
        settings={"lr": 1e-3, "bands": ("B04", "B03"), "seed": np.int64(1117),
                  "path": tmp_path}, timings={"train": 3725.0, "test": 42.25, "load": "n/a"},
        notes=["The paper used 0.5 m imagery; this run used the cube's 10 m bands"])
    text = report.read_text()
    assert text.startswith("# Site detection\n\nU-Net on S2.\n")
    assert table_markdown(table, digits={"FN rate": 3, "FP rate": 3}) in text
    assert "| LAMES (paper) | 0.91 | 0.74 | 0.79 | 0.76 | 0.91 |  | 0.360 | 0.061 | paper |" in text
    links = re.findall(r"!\[[^\]]*\]\(<?([^)>]+)>?\)", text)
    assert links == ["../figures/cm.png", "../figures/f1 bars.png"]
    for link in links:
        assert not Path(link).is_absolute() and (report.parent / link).is_file()
    assert "seed: 1117" in text and "- B04" in text and "lr: 0.001" in text
    assert "| train | 1 h 02 min |" in text and "| test | 42.2 s |" in text
    assert "- The paper used 0.5 m imagery" in text
    assert [p.name for p in report.parent.iterdir()] == ["README.md"]


def test_errors(tmp_path):
    with pytest.raises(ReportError, match=r"shape \(2, 3\).*square") as info:
        plot_confusion(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png")
    assert isinstance(info.value, LamesCubeError) and isinstance(info.value, ValueError)
    with pytest.raises(ReportError, match=r"3 names .* 2 classes.*CLASS_NAMES"):
        plot_confusion(CM, ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ReportError, match=r"3 names .* 2 classes"):
        plot_class_scores({"m": CM}, ["a", "b", "c"], tmp_path / "x.png")
    images, truth = _samples(3)
    with pytest.raises(ReportError, match=r"predictions\['m'\] has shape \(4, 31, 32\).*"
                                          r"\(4, 32, 32\)"):
        plot_samples(images, ["R", "G", "B"], truth, {"m": truth[:, 1:]}, tmp_path / "x.png",
                     class_names=["a", "b"])
    with pytest.raises(ReportError, match=r"truth has shape \(3, 32, 32\)"):
        plot_samples(images, ["R", "G", "B"], truth[:3], {}, tmp_path / "x.png",
                     class_names=["a", "b"])
    with pytest.raises(ReportError, match=r"rgb=.*B04.*not all in bands"):
        plot_samples(np.ones((1, 4, 2, 2)), ["a", "b", "c", "d"], np.zeros((1, 2, 2)), {},
                     tmp_path / "x.png", class_names=["a", "b"])
    with pytest.raises(ReportError, match=r"task='sector'"):
        results_table({"m": SECTOR_CM}, task="site")
    with pytest.raises(ReportError, match=r"task='tile'.*'sector'"):
        results_table({"m": CM}, task="tile")
    with pytest.raises(ReportError, match=r"metric='dice'"):
        plot_class_scores({"m": CM}, ["a", "b"], tmp_path / "x.png", metric="dice")
    with pytest.raises(ReportError, match=r"does not exist; write it first"):
        write_report(tmp_path / "r.md", title="t", summary="s", table="", settings={},
                     timings={}, figures=[tmp_path / "missing.png"])
    assert list(tmp_path.iterdir()) == []
