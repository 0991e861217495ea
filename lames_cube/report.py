"""The evaluation report of the LAMES experiments: a metrics table, figures and a Markdown page.

Everything here works on NumPy arrays, pandas and matplotlib (Agg canvases, never pyplot and
never torch), so a report can be rebuilt from saved confusion matrices and training logs
without a model:

- :data:`PAPER`: the published LAMES numbers (DESIGN.md §5), keyed by task (``"site"``,
  ``"sector"``);
- :func:`results_table`: our models' scores (from :func:`lames_cube.metrics.scores`) beside
  the paper's rows, in the paper's column layout, plus mIoU and, for site detection, the
  false-negative and false-positive rates; :func:`table_markdown` renders it as a GitHub table;
- figures, each written atomically as a PNG: :func:`plot_confusion`,
  :func:`plot_class_scores`, :func:`plot_curves`, :func:`plot_samples`;
- :func:`write_report`: the Markdown page linking all of it with relative paths.

Class names: :data:`CLASS_NAMES` (``"site"``: :data:`lames_cube.classes.BINARY_CLASSES`,
``"sector"``: the codes of :data:`lames_cube.classes.SECTOR_CLASSES`).

Examples
--------
>>> import numpy as np
>>> from lames_cube.metrics import scores
>>> s = scores(np.array([[90, 10], [20, 80]]))
>>> df = results_table({"U-Net": s}, task="site")
>>> df[["FN rate", "FP rate"]].round(3).to_numpy().tolist()
[[0.2, 0.1], [0.36, 0.061], [0.25, 0.094]]
>>> list(df.index)
['U-Net', 'LAMES (paper)', 'LAMES +10k (paper)']
>>> print(table_markdown(df.iloc[:1, :4]))
| model | Macro accuracy | Macro precision | Macro recall | Macro F1 |
| --- | --- | --- | --- | --- |
| U-Net | 0.85 | 0.85 | 0.85 | 0.85 |
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from lames_cube._atomic import atomic_path, atomic_write_text
from lames_cube.classes import BINARY_CLASSES, SECTOR_CLASSES, LamesClass
from lames_cube.errors import (
    LamesCubeError,
    ReportError,
)
from lames_cube.metrics import scores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CLASS_NAMES",
    "COLUMNS",
    "PAPER",
    "ReportError",
    "class_iou",
    "plot_class_scores",
    "plot_confusion",
    "plot_curves",
    "plot_samples",
    "results_table",
    "table_markdown",
    "write_report",
]



#: Class names per task: site detection is binary, the sector task has the 8 sector codes.
CLASS_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "site": tuple(BINARY_CLASSES),
    "sector": tuple(c.code for c in SECTOR_CLASSES),
})

#: Column label of each table entry, in the paper's order (then ours), keyed by score name.
COLUMNS: Mapping[str, str] = MappingProxyType({
    "macro_accuracy": "Macro accuracy",
    "macro_precision": "Macro precision",
    "macro_recall": "Macro recall",
    "macro_f1": "Macro F1",
    "micro_accuracy": "Micro accuracy",
    "mean_iou": "mIoU",
    "fn_rate": "FN rate",
    "fp_rate": "FP rate",
})

_BINARY_ONLY = ("fn_rate", "fp_rate")


def _frozen(rows: dict[str, dict[str, float]]) -> Mapping[str, Mapping[str, float]]:
    return MappingProxyType({name: MappingProxyType(row) for name, row in rows.items()})


#: The published LAMES results (DESIGN.md §5), per task and row, keyed like :data:`COLUMNS`.
#: Site detection gives the false-negative and false-positive rates of the two runs (36 % → 25 %,
#: 6.1 % → 9.4 %); the paper gives no IoU. The sector task was run on 0.5 m imagery.
PAPER: Mapping[str, Mapping[str, Mapping[str, float]]] = MappingProxyType({
    "site": _frozen({
        "LAMES (paper)": {
            "macro_accuracy": 0.91, "macro_precision": 0.74, "macro_recall": 0.79,
            "macro_f1": 0.76, "micro_accuracy": 0.91, "fn_rate": 0.36, "fp_rate": 0.061,
        },
        "LAMES +10k (paper)": {
            "macro_accuracy": 0.89, "macro_precision": 0.71, "macro_recall": 0.83,
            "macro_f1": 0.75, "micro_accuracy": 0.89, "fn_rate": 0.25, "fp_rate": 0.094,
        },
    }),
    "sector": _frozen({
        "LAMES (paper, 0.5 m)": {
            "macro_accuracy": 0.89, "macro_precision": 0.17, "macro_recall": 0.53,
            "macro_f1": 0.17, "micro_accuracy": 0.59,
        },
    }),
})

_METRICS = ("f1", "iou", "precision", "recall", "accuracy")
_METRIC_LABELS = {"f1": "F1", "iou": "IoU", "precision": "precision", "recall": "recall",
                  "accuracy": "one-vs-rest accuracy"}
#: Model colours (figures) and categorical class colours (index 0, background, is light grey).
_MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf")
_BACKGROUND = "#d9d9d9"
_CLASS_COLORS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628",
                 "#f781bf", "#1b9e77", "#66a61e")
_NO_CLASS = "#000000"
_DPI = 110


# --------------------------------------------------------------------------------------------
# Scores


def _task(task: Any) -> str:
    if task not in CLASS_NAMES:
        raise ReportError(f"task={task!r} is not a LAMES task; pass one of "
                          f"{sorted(CLASS_NAMES)} ('site' binary detection, 'sector' 8 classes).")
    return task


def _as_scores(name: str, value: Any) -> Mapping[str, Any]:
    """A scores dict as given, or the scores of a confusion matrix."""
    if isinstance(value, Mapping):
        if "recall" not in value or "macro_f1" not in value:
            raise ReportError(
                f"results[{name!r}] lacks 'recall' or 'macro_f1' (keys: {sorted(value)}); pass "
                "the dict of lames_cube.metrics.scores(cm), or the confusion matrix itself.")
        return value

    cm = _check_cm(value, f"results[{name!r}]")
    return scores(cm)


def _per_class(s: Mapping[str, Any], key: str) -> np.ndarray:
    return np.asarray(s[key], dtype=np.float64).ravel()


def class_iou(s: Mapping[str, Any]) -> np.ndarray:
    """Per-class IoU of a scores dict: its ``iou`` entry, else computed from F1.

    IoU = TP / (TP + FP + FN) and F1 = 2 TP / (2 TP + FP + FN), so IoU = F1 / (2 − F1) exactly
    (classes that are never present nor predicted get F1 0 from
    :func:`lames_cube.metrics.scores`, hence IoU 0).

    Examples
    --------
    >>> class_iou({"f1": [0.5, 1.0]}).tolist()
    [0.3333333333333333, 1.0]
    """
    if "iou" in s:
        return _per_class(s, "iou")
    f1 = _per_class(s, "f1")
    return f1 / (2.0 - f1)


def _row(s: Mapping[str, Any], binary: bool, name: str) -> dict[str, float]:
    row = {key: float(s[key]) if key in s else math.nan for key in COLUMNS
           if key not in ("mean_iou", *_BINARY_ONLY)}
    row["mean_iou"] = float(s["mean_iou"]) if "mean_iou" in s else float(np.mean(class_iou(s)))
    if binary:
        recall = _per_class(s, "recall")
        if recall.size != 2:
            raise ReportError(
                f"results[{name!r}] has {recall.size} classes but task='site' is binary; pass "
                "task='sector' for the 8 sector classes, or the scores of a 2x2 confusion matrix.")
        support = _per_class(s, "support") if "support" in s else np.ones(2)
        # FN rate = FN / positives = 1 - recall(1); FP rate = FP / negatives = 1 - recall(0).
        row["fn_rate"] = 1.0 - recall[1] if support[1] > 0 else math.nan
        row["fp_rate"] = 1.0 - recall[0] if support[0] > 0 else math.nan
    return row


def results_table(results: Mapping[str, Any], *, task: str, paper: bool = True) -> pd.DataFrame:
    """Our models' scores beside the paper's, in the paper's column layout.

    Parameters
    ----------
    results
        Model name → the dict of :func:`lames_cube.metrics.scores` (or a ``(K, K)`` confusion
        matrix, rows = truth, which is scored here).
    task
        ``"site"`` (binary: adds the false-negative and false-positive rates) or ``"sector"``.
    paper
        Append the rows of :data:`PAPER` for the task.

    Returns
    -------
    pandas.DataFrame
        One row per model (index ``model``), our models first; columns :data:`COLUMNS` values
        (Macro accuracy, Macro precision, Macro recall, Macro F1, Micro accuracy, mIoU, and for
        ``"site"`` FN rate = FN / positives = 1 − recall of class 1 and FP rate = FP /
        negatives = 1 − recall of class 0), then ``source`` (``"this run"`` or ``"paper"``).
        Values are fractions; what the paper does not give is NaN. mIoU is the scores'
        ``mean_iou`` when present, else the mean of :func:`class_iou`. A rate whose class has no
        test pixel is NaN.

    Raises
    ------
    ReportError
        An unknown task, a scores dict without the per-class arrays, a site result with other
        than 2 classes, or a model name that is also a paper row.

    Examples
    --------
    >>> from lames_cube.metrics import scores
    >>> df = results_table({"a": scores([[3, 1], [0, 4]])}, task="site", paper=False)
    >>> df[["FN rate", "FP rate"]].to_numpy().tolist(), df.loc["a", "source"]
    ([[0.0, 0.25]], 'this run')
    """
    task = _task(task)
    binary = task == "site"
    if not isinstance(results, Mapping):
        raise ReportError(f"results is a {type(results).__name__}; pass a mapping model name → "
                          "scores dict, e.g. {'U-Net': scores(cm)}.")
    rows: dict[str, dict[str, Any]] = {}
    for name, value in results.items():
        rows[str(name)] = {**_row(_as_scores(str(name), value), binary, str(name)),
                           "source": "this run"}
    if paper:
        for name, published in PAPER[task].items():
            if name in rows:
                raise ReportError(f"model name {name!r} is also a paper row; rename the model "
                                  "or pass paper=False.")
            rows[name] = {**{key: published.get(key, math.nan) for key in COLUMNS},
                          "source": "paper"}
    keys = [k for k in COLUMNS if binary or k not in _BINARY_ONLY]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[*keys, "source"])
    df = df.rename(columns=dict(COLUMNS))
    df.index.name = "model"
    return df.astype({COLUMNS[k]: "float64" for k in keys})


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table_markdown(df: pd.DataFrame, digits: int | Mapping[str, int] = 2) -> str:
    """A DataFrame as a GitHub Markdown table (floats to ``digits`` decimals, NaN blank).

    The index is the first column unless it is a default ``RangeIndex``; ``|`` in cells is
    escaped. ``digits`` may be a mapping column → decimals (other columns get 2), e.g.
    ``{"FP rate": 3}`` to keep the paper's 6.1 % as 0.061.

    Examples
    --------
    >>> df = pd.DataFrame({"F1": [0.756, float("nan")]}, index=pd.Index(["a", "b"], name="m"))
    >>> print(table_markdown(df))
    | m | F1 |
    | --- | --- |
    | a | 0.76 |
    | b |  |
    """
    if not isinstance(df, pd.DataFrame):
        raise ReportError(f"df is a {type(df).__name__}; pass a pandas DataFrame, e.g. "
                          "results_table(...).")
    if isinstance(digits, Mapping):
        places = [int(digits.get(str(c), 2)) for c in df.columns]
    elif isinstance(digits, int | np.integer) and not isinstance(digits, bool) and digits >= 0:
        places = [int(digits)] * len(df.columns)
    else:
        raise ReportError(f"digits={digits!r} is not a number of decimals >= 0 (or a mapping "
                          "column → decimals); pass e.g. digits=2.")
    show_index = not (isinstance(df.index, pd.RangeIndex) and df.index.name is None)
    header = [str(c) for c in df.columns]
    if show_index:
        header = [str(df.index.name or ""), *header]
    lines = ["| " + " | ".join(_cell(h, 0) for h in header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    for index, values in zip(df.index, df.itertuples(index=False, name=None), strict=True):
        cells = [_cell(v, d) for v, d in zip(values, places, strict=True)]
        if show_index:
            cells = [_cell(index, 2), *cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figures


def _check_cm(cm: Any, what: str = "cm") -> np.ndarray:
    try:
        arr = np.asarray(cm, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReportError(f"{what} is not a matrix of numbers ({type(cm).__name__}); pass a "
                          "(K, K) array of pixel counts, rows = truth.") from None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 2:
        raise ReportError(f"{what} has shape {arr.shape}; a confusion matrix is square (K, K) "
                          "with K >= 2, rows = truth, columns = prediction (e.g. "
                          "lames_cube.metrics.confusion_matrix(pred, truth, n_classes)).")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ReportError(f"{what} holds negative or non-finite counts; pass pixel counts.")
    return arr


def _check_names(class_names: Any, k: int, what: str) -> list[str]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise ReportError(f"class_names={class_names!r} is not a sequence of names; pass one "
                          f"name per class, e.g. CLASS_NAMES['sector'].")
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise ReportError(
            f"class_names has {len(names)} names ({names}) but {what} has {k} classes; pass "
            f"{k} names in class-index order, e.g. CLASS_NAMES['site'] (2) or "
            "CLASS_NAMES['sector'] (8).")
    return names


def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # local: heavy matplotlib
    from matplotlib.figure import Figure  # local: heavy matplotlib

    fig = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Save a PNG atomically (a hidden temporary in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white")
    return path


def _compact(n: float) -> str:
    """A count in at most 4 significant characters: 950, 12.3k, 4.56M."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            v = n / size
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:.0f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def plot_confusion(cm: Any, class_names: Sequence[str], path: str | os.PathLike, *,
                   title: str | None = None) -> Path:
    """A confusion matrix as a PNG: cells coloured by the row-normalised share, with counts.

    Parameters
    ----------
    cm
        ``(K, K)`` counts, rows = truth, columns = prediction.
    class_names
        K names in class-index order (e.g. ``CLASS_NAMES["sector"]``).
    path
        The PNG to write (atomically; missing folders are made).
    title
        Default: ``"Confusion matrix (N pixels)"``.

    Returns
    -------
    pathlib.Path
        ``path``. Each cell shows the count and the share of its true class (its row); a
        colour bar gives the share; rows without pixels are grey.

    Raises
    ------
    ReportError
        ``cm`` is not a square matrix of counts, or ``class_names`` is not K names.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = plot_confusion([[8, 2], [1, 9]], ["other", "mine"],
    ...                    pathlib.Path(tempfile.mkdtemp()) / "cm.png")
    >>> p.name, p.stat().st_size > 1000
    ('cm.png', True)
    """
    arr = _check_cm(cm)
    k = arr.shape[0]
    names = _check_names(class_names, k, "cm")
    rows = arr.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rows > 0, arr / rows, np.nan)
    side = max(4.2, 0.75 * k + 2.4)
    fig = _new_figure((side + 1.0, side))
    ax = fig.add_subplot()
    from matplotlib import colormaps  # local: heavy matplotlib

    cmap = colormaps["Blues"].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0, vmax=1,
                      interpolation="nearest")
    size = 10 if k <= 4 else 8 if k <= 8 else 6.5
    for i in range(k):
        for j in range(k):
            if np.isnan(share[i, j]):
                text, dark = "–", False
            else:
                text, dark = f"{_compact(arr[i, j])}\n{100 * share[i, j]:.1f} %", share[i, j] > 0.55
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if dark else "black")
    crowded = max(map(len, names)) * k > 40
    ax.set_xticks(range(k), names, rotation=30 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"Confusion matrix ({_compact(arr.sum())} pixels)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class (row)")
    return _save(fig, path)


def plot_class_scores(results: Mapping[str, Any], class_names: Sequence[str],
                      path: str | os.PathLike, *, metric: str = "f1",
                      title: str | None = None) -> Path:
    """Grouped bars of a per-class score (F1, IoU, ...) for each model.

    Parameters
    ----------
    results
        Model name → the dict of :func:`lames_cube.metrics.scores` (or a confusion matrix).
    class_names
        One name per class.
    path
        The PNG to write (atomically).
    metric
        ``"f1"`` (default), ``"iou"`` (the scores' ``iou``, else from F1: :func:`class_iou`),
        ``"precision"``, ``"recall"`` or ``"accuracy"``.
    title
        Default: ``"Per-class F1 on the test split"`` (the metric's name).

    Returns
    -------
    pathlib.Path
        ``path``. One group of bars per class, one bar per model (its value written above it),
        the legend giving each model's mean over classes.

    Raises
    ------
    ReportError
        An unknown metric, no results, or results whose class count is not ``len(class_names)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from lames_cube.metrics import scores
    >>> p = plot_class_scores({"a": scores([[8, 2], [1, 9]])}, ["other", "mine"],
    ...                       pathlib.Path(tempfile.mkdtemp()) / "f1.png", metric="iou")
    >>> p.exists()
    True
    """
    if metric not in _METRICS:
        raise ReportError(f"metric={metric!r} is not a per-class score; pass one of "
                          f"{list(_METRICS)}.")
    if not isinstance(results, Mapping) or not results:
        raise ReportError("results is empty or not a mapping; pass {model name: scores dict}.")
    values: dict[str, np.ndarray] = {}
    for name, value in results.items():
        s = _as_scores(str(name), value)
        v = class_iou(s) if metric == "iou" else _per_class(s, metric)
        values[str(name)] = v
    k = len(next(iter(values.values())))
    for name, v in values.items():
        _check_names(class_names, len(v), f"results[{name!r}]")
    names = _check_names(class_names, k, "the results")
    n = len(values)
    width = 0.8 / n
    fig = _new_figure((max(6.0, 1.0 + k * (0.35 + 0.22 * n)) + 2.2, 4.6))
    ax = fig.add_subplot()
    x = np.arange(k)
    annotate = n * k <= 40
    for m, (name, v) in enumerate(values.items()):
        color = _MODEL_COLORS[m % len(_MODEL_COLORS)]
        bars = ax.bar(x - 0.4 + width * (m + 0.5), v, width, color=color,
                      label=f"{name} (mean {np.nanmean(v):.2f})")
        if annotate:
            ax.bar_label(bars, labels=[f"{a:.2f}" for a in v], fontsize=7, padding=1,
                         rotation=90 if n > 2 else 0)
    ax.set_xticks(x, names)
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylim(0, 1.15 if annotate else 1.02)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_axisbelow(True)
    ax.grid(axis="y", color="#dddddd")
    ax.set_xlabel("class")
    ax.set_ylabel(_METRIC_LABELS[metric])
    ax.set_title(title or f"Per-class {_METRIC_LABELS[metric]} on the test split")
    ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def _curve_series(log: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i, entry in enumerate(log):
        value = entry.get(key)
        if value is None:
            continue
        try:
            y = float(value)
        except (TypeError, ValueError):
            raise ReportError(f"curve value {key}={value!r} (entry {i}) is not a number; log "
                              "plain floats per epoch.") from None
        if np.isfinite(y):
            xs.append(float(entry.get("epoch", i + 1)))
            ys.append(y)
    return np.asarray(xs), np.asarray(ys)


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]],
                path: str | os.PathLike) -> Path:
    """Training curves: loss, validation macro F1 and learning rate per epoch, for each model.

    Parameters
    ----------
    curves
        Model name → list of per-epoch dicts with any of ``epoch`` (default: the position,
        from 1), ``train_loss``, ``val_loss``, ``val_macro_f1``, ``lr``, and ``best: True`` on
        the selected epoch (the checkpoint kept).
    path
        The PNG to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``. Three panels: loss (training solid, validation dashed), validation macro F1,
        learning rate (log scale); one colour per model; the selected epoch is a dotted
        vertical line and a star. A panel without data says so.

    Raises
    ------
    ReportError
        ``curves`` is empty or not a mapping of lists of dicts, or holds a non-number.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> log = [{"epoch": 1, "train_loss": 0.9, "val_macro_f1": 0.4},
    ...        {"epoch": 2, "train_loss": 0.5, "val_macro_f1": 0.6, "best": True}]
    >>> plot_curves({"U-Net": log}, pathlib.Path(tempfile.mkdtemp()) / "c.png").exists()
    True
    """
    from matplotlib.lines import Line2D  # local: heavy matplotlib
    from matplotlib.ticker import MaxNLocator  # local: heavy matplotlib

    if not isinstance(curves, Mapping) or not curves:
        raise ReportError("curves is empty or not a mapping; pass {model name: [per-epoch "
                          "dict, ...]}.")
    for name, log in curves.items():
        if isinstance(log, str | Mapping) or not isinstance(log, Sequence) or not all(
                isinstance(e, Mapping) for e in log):
            raise ReportError(f"curves[{name!r}] is not a list of per-epoch dicts; pass e.g. "
                              "[{'epoch': 1, 'train_loss': 0.7, 'val_macro_f1': 0.5}, ...].")
    fig = _new_figure((15.0, 4.4))
    ax_loss, ax_f1, ax_lr = fig.subplots(1, 3)
    drawn = {ax_loss: False, ax_f1: False, ax_lr: False}
    handles = []
    styles = {"train_loss": False, "val_loss": False, "best": False}
    for m, (name, log) in enumerate(curves.items()):
        color = _MODEL_COLORS[m % len(_MODEL_COLORS)]
        best = [(float(e.get("epoch", i + 1)), e) for i, e in enumerate(log) if e.get("best")]
        label = name
        for ax, key, style in ((ax_loss, "train_loss", "-"), (ax_loss, "val_loss", "--"),
                               (ax_f1, "val_macro_f1", "-"), (ax_lr, "lr", "-")):
            xs, ys = _curve_series(log, key)
            if not len(xs):
                continue
            drawn[ax] = True
            styles[key] = True
            # Models often share a schedule: earlier ones are drawn wider to stay visible.
            lw = max(0.9, 2.8 - 0.6 * m) if key == "lr" else 1.6
            ax.plot(xs, ys, style, color=color, lw=lw, marker="." if len(xs) < 30 else None)
            for epoch, entry in best:
                if entry.get(key) is not None and ax is not ax_lr:
                    ax.plot([epoch], [float(entry[key])], marker="*", ms=13, color=color,
                            markeredgecolor="black", zorder=5)
        for epoch, entry in best:
            styles["best"] = True
            label = f"{name} (selected: epoch {epoch:g}"
            if entry.get("val_macro_f1") is not None:
                label += f", val F1 {float(entry['val_macro_f1']):.3f}"
            label += ")"
            for ax in (ax_loss, ax_f1, ax_lr):
                ax.axvline(epoch, color=color, ls=":", lw=1.2)
        handles.append(Line2D([], [], color=color, lw=2, label=label))
    keys = [Line2D([], [], color="black", ls="-", label="training loss"),
            Line2D([], [], color="black", ls="--", label="validation loss"),
            Line2D([], [], color="black", ls=":", marker="*", ms=10, label="selected epoch")]
    handles += [h for h, key in zip(keys, ("train_loss", "val_loss", "best"), strict=True)
                if styles[key]]
    for ax, title, ylabel in ((ax_loss, "Loss", "cross-entropy"),
                              (ax_f1, "Validation macro F1", "macro F1"),
                              (ax_lr, "Learning rate", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(color="#e5e5e5")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not drawn[ax]:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes,
                    color="#777777")
            ax.set_xticks([])
            ax.set_yticks([])
    if drawn[ax_lr] and all(np.all(_curve_series(log, "lr")[1] > 0) for log in curves.values()):
        ax_lr.set_yscale("log")
    if drawn[ax_f1]:
        low, high = ax_f1.get_ylim()
        ax_f1.set_ylim(max(0.0, low), min(1.0, high) if high > max(0.0, low) else 1.0)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4),
               frameon=False)
    return _save(fig, path)


def _stretch(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) DN → (H, W, 3) in 0..1, one 2–98 % stretch per image (nodata 0 is black)."""
    data = rgb.astype(np.float64)
    valid = np.all(np.isfinite(data), axis=0) & np.any(data > 0, axis=0)
    if valid.any():
        lo, hi = np.percentile(data[:, valid], [2, 98])
    else:
        lo, hi = 0.0, 1.0
    out = np.clip((data - lo) / max(hi - lo, 1e-12), 0, 1)
    out[:, ~valid] = 0.0
    return np.moveaxis(out, 0, -1)


def _legend_name(name: str) -> str:
    """A LAMES class code with its long name (``"tsf: tailings storage facility"``)."""

    try:
        long_name = LamesClass.parse(name).long_name
    except LamesCubeError:
        return name
    return name if long_name == name.lower() else f"{name}: {long_name}"


def _rgb_index(bands: Sequence[str], rgb: Sequence[str], c: int) -> list[int]:
    names = [str(b) for b in bands]
    if all(b in names for b in rgb):
        return [names.index(b) for b in rgb]
    if c == 3:  # a true-colour set (e.g. LAMES' 8-bit R, G, B): already in red, green, blue
        return [0, 1, 2]
    raise ReportError(f"rgb={tuple(rgb)} are not all in bands={names}; pass rgb= three of the "
                      "bands (red, green, blue), e.g. rgb=('B04', 'B03', 'B02').")


def plot_samples(images: Any, bands: Sequence[str], truth: Any,
                 predictions: Mapping[str, Any], path: str | os.PathLike, *,
                 class_names: Sequence[str], rgb: Sequence[str] = ("B04", "B03", "B02"),
                 max_samples: int = 6) -> Path:
    """Test samples as rows: true colour, the truth, then each model's prediction.

    Parameters
    ----------
    images
        ``(N, C, H, W)`` pixel values (uint16 DN, or 8-bit true colour), band order ``bands``.
    bands
        C band names.
    truth
        ``(N, H, W)`` class indices.
    predictions
        Model name → ``(N, H, W)`` class indices.
    path
        The PNG to write (atomically).
    class_names
        One name per class; index 0 (background) is drawn light grey, the others in distinct
        colours; values outside ``0..K-1`` (an ignore value) black, as "no class".
    rgb
        The red, green and blue bands. A 3-band set without them is taken as red, green, blue.
    max_samples
        Show the first ``max_samples`` samples.

    Returns
    -------
    pathlib.Path
        ``path``. The true colour is stretched per image from its 2nd to 98th percentile
        (over the three bands together, so colours keep their balance; zeros are nodata).

    Raises
    ------
    ReportError
        Shapes that differ (images vs truth, a prediction vs truth), band names that are not C
        or lack ``rgb``, or a ``max_samples`` below 1.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> img = np.arange(2 * 3 * 4 * 4, dtype="uint16").reshape(2, 3, 4, 4) + 1
    >>> truth = np.zeros((2, 4, 4), int); truth[:, 1:3, 1:3] = 1
    >>> p = plot_samples(img, ["R", "G", "B"], truth, {"U-Net": truth},
    ...                  pathlib.Path(tempfile.mkdtemp()) / "s.png", class_names=["other", "mine"])
    >>> p.exists()
    True
    """
    from matplotlib.colors import ListedColormap  # local: heavy matplotlib
    from matplotlib.patches import Patch  # local: heavy matplotlib

    if isinstance(max_samples, bool) or not isinstance(max_samples, int | np.integer) \
            or max_samples < 1:
        raise ReportError(f"max_samples={max_samples!r} must be an integer >= 1.")
    imgs = np.asarray(images)
    if imgs.ndim != 4:
        raise ReportError(f"images has shape {imgs.shape}; pass (N, C, H, W) (a batch of "
                          "band-first patches; add a leading axis for one patch).")
    n, c, h, w = imgs.shape
    if isinstance(bands, str) or len(bands) != c:
        raise ReportError(f"bands={list(bands) if not isinstance(bands, str) else bands!r} "
                          f"names {len(bands)} bands but images has C={c}; pass one name per "
                          "band in the images' order.")
    index = _rgb_index(bands, rgb, c)
    labels = np.asarray(truth)
    if labels.shape != (n, h, w):
        raise ReportError(f"truth has shape {labels.shape} but images {imgs.shape} need "
                          f"(N, H, W) = {(n, h, w)}; pass the masks of the same patches.")
    if not isinstance(predictions, Mapping):
        raise ReportError("predictions is not a mapping; pass {model name: (N, H, W) array}.")
    preds = {}
    for name, pred in predictions.items():
        arr = np.asarray(pred)
        if arr.shape != labels.shape:
            raise ReportError(f"predictions[{name!r}] has shape {arr.shape} but truth has "
                              f"{labels.shape}; pass class indices (argmax over classes) for "
                              "the same patches.")
        preds[str(name)] = arr
    if isinstance(class_names, str) or not isinstance(class_names, Sequence) \
            or len(class_names) < 2:
        raise ReportError(f"class_names={class_names!r} is not a sequence of at least 2 names; "
                          "pass one name per class, e.g. CLASS_NAMES['site'].")
    names = [str(x) for x in class_names]
    k = len(names)
    colors = [_BACKGROUND, *(_CLASS_COLORS[i % len(_CLASS_COLORS)] for i in range(k - 1))]
    cmap = ListedColormap([*colors, _NO_CLASS])

    def classes(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.int64)
        return np.where((a >= 0) & (a < k), a, k)

    shown = min(n, int(max_samples))
    columns = ["true colour", "truth", *preds]
    cell = 2.3 if len(columns) <= 5 else 1.9
    fig = _new_figure((cell * len(columns), cell * shown + 1.0))
    axes = np.asarray(fig.subplots(shown, len(columns), squeeze=False))
    outside = False
    for i in range(shown):
        panels = [_stretch(imgs[i, index]), classes(labels[i]),
                  *(classes(p[i]) for p in preds.values())]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            if j == 0:
                ax.imshow(panel, interpolation="nearest")
            else:
                outside |= bool((panel == k).any())
                ax.imshow(panel, cmap=cmap, vmin=-0.5, vmax=k + 0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(textwrap.fill(columns[j], 24), fontsize=10)
        axes[i, 0].set_ylabel(f"sample {i}", fontsize=9)
    handles = [Patch(facecolor=col, edgecolor="#555555", label=_legend_name(name))
               for col, name in zip(colors, names, strict=True)]
    if outside:
        handles.append(Patch(facecolor=_NO_CLASS, label="no class"))
    per_row = max(2, int(cell * len(columns) / 2.1))
    rows = -(-len(handles) // per_row)
    fig.legend(handles=handles, loc="outside lower center", ncol=-(-len(handles) // rows),
               frameon=False, fontsize=9)
    fig.suptitle(f"Test samples: true colour ({', '.join(bands[x] for x in index)}), truth and "
                 "predictions", fontsize=11)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# The Markdown report


def _plain(value: Any) -> Any:
    """Settings as plain YAML/JSON values (numpy scalars and arrays, paths, tuples)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _duration(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ReportError(f"timing {value!r} is neither seconds nor text; pass seconds (float) "
                          "or a preformatted string.") from None
    if not np.isfinite(seconds):
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600 - 0.5:
        whole = round(seconds)
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _link(target: str) -> str:
    return f"<{target}>" if any(ch in target for ch in " ()<>") else target


def write_report(path: str | os.PathLike, *, title: str, summary: str,
                 table: pd.DataFrame | str, figures: Mapping[str, Any] | Sequence[Any],
                 settings: Mapping[str, Any], timings: Mapping[str, Any],
                 notes: Sequence[str] = ()) -> Path:
    """Write the Markdown report of a run (atomically).

    Parameters
    ----------
    path
        The ``.md`` file to write; missing folders are made.
    title, summary
        The heading and a short paragraph under it.
    table
        The metrics (:func:`results_table`, rendered with :func:`table_markdown`: 2 decimals,
        3 for the FN and FP rates), or a Markdown table already rendered.
    figures
        Caption → PNG path, or a sequence of paths (captioned by file name). Each is linked
        relative to the report's folder, so the folder can be moved as a whole.
    settings
        The run's settings, rendered as a YAML code block (numpy values and paths made plain).
    timings
        Step → seconds (or preformatted text), as a small table.
    notes
        Bullets, e.g. "The paper used 0.5 m imagery; this run used the cube's 10 m bands".

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ReportError
        A figure that does not exist, or a table that is neither a DataFrame nor text.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> fig = plot_confusion([[8, 2], [1, 9]], ["other", "mine"], d / "figures" / "cm.png")
    >>> p = write_report(d / "report.md", title="Run 1", summary="A test.",
    ...                  table="| a |\\n| --- |\\n| 1 |", figures={"Confusion": fig},
    ...                  settings={"lr": 1e-3}, timings={"train": 75.0})
    >>> "![Confusion](figures/cm.png)" in p.read_text()
    True
    """

    path = Path(path)
    root = path.parent.resolve()
    if isinstance(table, pd.DataFrame):
        table_md = table_markdown(table, digits={COLUMNS["fn_rate"]: 3, COLUMNS["fp_rate"]: 3})
    elif isinstance(table, str):
        table_md = table.strip()
    else:
        raise ReportError(f"table is a {type(table).__name__}; pass results_table(...) or a "
                          "Markdown string.")
    if isinstance(figures, Mapping):
        items = [(str(k), v) for k, v in figures.items()]
    elif isinstance(figures, str | os.PathLike):
        items = [(Path(figures).stem, figures)]
    else:
        items = [(Path(f).stem, f) for f in figures]
    links = []
    for caption, fig_path in items:
        target = Path(fig_path)
        if not target.is_absolute():
            target = Path.cwd() / target
        if not target.is_file():
            raise ReportError(f"figure {caption!r} at {str(fig_path)!r} does not exist; write it "
                              "first (plot_confusion, plot_curves, ...) or drop it.")
        rel = Path(os.path.relpath(target.resolve(), root)).as_posix()
        links.append(f"### {caption}\n\n![{caption}]({_link(rel)})")
    lines = [f"# {title}", "", summary.strip(), "", "## Metrics", "", table_md, ""]
    if links:
        lines += ["## Figures", "", "\n\n".join(links), ""]
    rendered = yaml.safe_dump(_plain(dict(settings)), sort_keys=False, allow_unicode=True,
                              default_flow_style=False).strip() if settings else "{}"
    lines += ["## Settings", "", "```yaml", rendered, "```", ""]
    if timings:
        lines += ["## Timings", "", "| step | time |", "| --- | --- |"]
        lines += [f"| {_cell(str(k), 0)} | {_duration(v)} |" for k, v in timings.items()]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {str(n).strip()}" for n in notes] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "\n".join(lines))

