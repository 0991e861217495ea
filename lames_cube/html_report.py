"""A self-contained HTML report: one file, every image inlined, no script, no network.

The demo's report (:func:`write_html_report`) is built from plain inputs, so it can be written
from any run's tables and figures:

- ``metrics``: a DataFrame (our models beside the paper, :func:`lames_cube.report.results_table`);
- ``maps``: titled PNG images (predictions over true colour per site and year);
- ``charts``: titled PNG images (area over time with the truth);
- ``tables``: more titled DataFrames (extent per site and year, errors);
- ``settings`` and ``timings``: mappings shown as two-column tables.

Figures are matplotlib ``Figure`` objects rendered with the Agg canvas (:func:`figure_png`);
the page uses only inline CSS, so it renders the same offline in any browser.

Examples
--------
>>> import pandas as pd, tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = write_html_report(pathlib.Path(tmp) / "r.html", title="t",
...                              metrics=pd.DataFrame({"F1": [0.5]}, index=["m"]))
...     text = path.read_text()
>>> 'id="metrics"' in text, "http" in text.split("<body>")[1]
(True, False)
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lames_cube._atomic import atomic_write_text
from lames_cube.errors import (
    HtmlReportError,
    )

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["HtmlReportError", "figure_png", "write_html_report"]

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1200px; color: #1d232a; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccd; padding: .25em .6em; text-align: right; }
th { background: #eef1f5; } td:first-child, th:first-child { text-align: left; }
tr.paper td { color: #566; font-style: italic; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #455; }
img { max-width: 100%; height: auto; border: 1px solid #dde; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1em; }
p.note { font-size: .9em; color: #455; }
"""



def figure_png(fig: Figure, *, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes (Agg canvas: no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # local: heavy matplotlib

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _img(title: str, png: bytes, kind: str) -> str:
    if not isinstance(png, bytes | bytearray) or not bytes(png[:8]) == b"\x89PNG\r\n\x1a\n":
        raise HtmlReportError(f"the image {title!r} is not PNG bytes (got "
                              f"{type(png).__name__}); render figures with figure_png(fig).")
    data = base64.b64encode(bytes(png)).decode("ascii")
    return (f'<figure class="{kind}"><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}'
            f"</figcaption></figure>")


def _table(df: Any, table_id: str, digits: int = 3) -> str:
    if not isinstance(df, pd.DataFrame):
        raise HtmlReportError(f"table {table_id!r} must be a pandas DataFrame, got "
                              f"{type(df).__name__}.")
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name or "", *df.columns])
    rows = []
    # row by row as objects: iterrows() would turn a row of ints and floats into floats
    for name, *values in df.astype(object).itertuples(name=None):
        cells = [f"<td>{html.escape(str(name))}</td>"]
        for value in values:
            if isinstance(value, float | np.floating):
                text = "" if pd.isna(value) else f"{value:.{digits}f}"
            else:
                text = html.escape(str(value))
            cells.append(f"<td>{text}</td>")
        row = dict(zip(df.columns, values, strict=True))
        css = ' class="paper"' if row.get("source") == "paper" else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    return (f'<table id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _pairs(values: Mapping[str, Any], table_id: str) -> str:
    df = pd.DataFrame({"value": [str(v) for v in values.values()]},
                      index=pd.Index([str(k) for k in values], name=""))
    return _table(df, table_id)


def write_html_report(
    path: str | os.PathLike,
    *,
    title: str,
    intro: str = "",
    metrics: pd.DataFrame | None = None,
    metrics_note: str = "",
    maps: Sequence[tuple[str, bytes]] = (),
    charts: Sequence[tuple[str, bytes]] = (),
    tables: Sequence[tuple[str, pd.DataFrame]] = (),
    settings: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """Write the report as one HTML file (atomically) and return its path.

    Parameters
    ----------
    path
        The ``.html`` file to write.
    title, intro
        The page's heading and a paragraph under it (plain text).
    metrics, metrics_note
        The metrics table (rows of ``source == "paper"`` shown in italics) and a note under it.
    maps, charts
        ``(caption, PNG bytes)`` pairs, inlined as base64 data URIs.
    tables
        ``(heading, DataFrame)`` pairs shown after the charts.
    settings, timings
        The run's settings, and seconds per stage.

    Raises
    ------
    HtmlReportError
        An image that is not PNG bytes, or a table that is not a DataFrame.
    """
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    if metrics is not None:
        parts += ["<h2>Metrics</h2>", _table(metrics, "metrics")]
        if metrics_note:
            parts.append(f'<p class="note">{html.escape(metrics_note)}</p>')
    if maps:
        parts += ["<h2>Maps</h2>", *(_img(t, png, "map") for t, png in maps)]
    if charts:
        parts += ["<h2>Mining area over time</h2>", '<div class="grid">',
                  *(_img(t, png, "chart") for t, png in charts), "</div>"]
    for i, (heading, df) in enumerate(tables):
        parts += [f"<h2>{html.escape(heading)}</h2>", _table(df, f"table-{i}")]
    if settings:
        parts += ["<h2>Settings</h2>", _pairs(settings, "settings")]
    if timings:
        parts += ["<h2>Timings</h2>", _pairs({k: f"{v:.1f} s" for k, v in timings.items()},
                                             "timings")]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    return atomic_write_text(Path(path), page)
