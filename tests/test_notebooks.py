"""The notebooks of ``analysis/`` run top to bottom on small settings, offline, and write
their figures (jupytext percent scripts executed by nbclient in a fresh kernel)."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"
NOTEBOOKS = sorted(p.name for p in ANALYSIS.glob("[0-9][0-9]_*.py"))
FIGURES = {
    "01_cube_and_labels.py": ["01_cube_and_labels.png"],
    "02_training_and_evaluation.py": ["02_macro_f1.png"],
    "03_chile_map.py": ["03_chile_map.png"],
    "04_extent_over_time.py": ["04_extent.png", "04_first_year.png"],
}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


def test_every_notebook_is_listed():
    assert NOTEBOOKS == sorted(FIGURES)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_writes_its_figures(name, out, monkeypatch, lames_dir):
    monkeypatch.setenv("LAMES_NB_OUT", str(out))
    monkeypatch.setenv("LAMES_NB_SIZE", "small")
    monkeypatch.setenv("LAMES_DATA_DIR", str(lames_dir))
    monkeypatch.delenv("LAMES_CHILE_STORE", raising=False)
    nb = jupytext.read(ANALYSIS / name)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ANALYSIS)}}).execute()
    (out / "executed").mkdir(exist_ok=True)
    jupytext.write(nb, out / "executed" / name.replace(".py", ".ipynb"))
    for figure in FIGURES[name]:
        png = out / "figures" / figure
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert png.stat().st_size > 5_000
