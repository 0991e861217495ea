# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The Chile map of predicted mining
#
# Country inference runs tile by tile on the Chile mosaic grid (2304-px tiles, EPSG:32719) and
# writes a resumable prediction store. This notebook reads the full store when it exists
# (`LAMES_CHILE_STORE`, e.g. the output of `lames-cube infer chile-mosaic --checkpoint ...`);
# otherwise it scores a small slice of tiles around a LAMES site itself, with the checkpoint of
# notebook 02. Beside the map the notebook saves the numbers drawn in it
# (`figures/03_chile_map.json`); `tests/test_notebooks.py` recomputes them with the library and
# compares.

# %%
import json
import os
from pathlib import Path

import dask
import matplotlib.pyplot as plt
import numpy as np

from lames_cube.prediction import NODATA_CLASS, open_prediction, prediction_polygons
from lames_cube.recipes.country import run_inference

SIZE = os.environ.get("LAMES_NB_SIZE", "small")
OUT = Path(os.environ.get("LAMES_NB_OUT", "out"))
FIGURES = OUT / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
CHECKPOINT = OUT / f"model-{SIZE}" / "checked" / "checkpoint.pt"
STORE = os.environ.get("LAMES_CHILE_STORE")
if STORE and Path(STORE).exists():
    store = Path(STORE)
    summary = None  # the run that wrote it has its own summary.json
else:
    if not CHECKPOINT.exists():
        raise FileNotFoundError(f"{CHECKPOINT} is missing: run 02_training_and_evaluation "
                                "first (same LAMES_NB_SIZE and LAMES_NB_OUT).")
    tiles = ["r043c020"] if SIZE == "small" else ["r043c020", "r043c021", "r044c020",
                                                  "r044c021"]
    summary = run_inference("chile-mosaic", CHECKPOINT, OUT / f"chile-{SIZE}", tiles=tiles,
                            progress=False)
    store = OUT / f"chile-{SIZE}" / "prediction.zarr"
    summary = {**summary, "tiles_requested": tiles}
    print({k: summary[k] for k in ("tiles_scored", "km2_scored", "km2_predicted_mining")})
pred = open_prediction(store, allow_incomplete=True)
print(dict(pred.sizes), pred.attrs["model_sha256"][:12])

# %% [markdown]
# ## The map: mining probability, coarsened for display

# %%
prob = pred.probability
step = max(1, max(prob.sizes["y"], prob.sizes["x"]) // 1500)
# one pass over the store: the map and the pixels scored and predicted mining at full size
small, low_class, n_scored, n_mining = dask.compute(
    prob.coarsen(y=step, x=step, boundary="trim").max(),
    pred["class"].coarsen(y=step, x=step, boundary="trim").min(),
    (pred["class"] != NODATA_CLASS).sum(),
    ((pred["class"] != NODATA_CLASS) & (pred["class"] > 0)).sum())
scored = low_class != NODATA_CLASS
print(f"{int(n_mining):,} of {int(n_scored):,} scored px predicted mining "
      f"({int(n_mining) / max(int(n_scored), 1):.2%} of the map)")
fig, ax = plt.subplots(figsize=(7, 7))
shown = np.where(scored.values, small.values / 255.0, np.nan)
im = ax.imshow(shown, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
ax.set_title(f"predicted mine probability ({prob.sizes['y']:,} x {prob.sizes['x']:,} px, "
             f"max over {step} x {step} px)")
ax.axis("off")
fig.colorbar(im, ax=ax, shrink=0.7)
fig.savefig(FIGURES / "03_chile_map.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## Mining polygons with their ground area and the LAMES site they touch

# %%
polygons = prediction_polygons(pred, min_area_km2=0.05)
print(len(polygons), "polygons,", round(float(polygons.area_km2.sum()), 2), "km²")
polygons.sort_values("area_km2", ascending=False).head(10)

# %% [markdown]
# ## The numbers behind the map
# Saved beside it: the store and the model that made it, the display step, the scored cells of
# the map and the cells per displayed probability (0–255 x 1/255), the share of scored pixels
# predicted mining, the polygons, and the inference run's summary when this notebook ran it.

# %%
values, counts = np.unique(small.values[scored.values], return_counts=True)
figure_values = {
    "store": str(store), "checkpoint": str(CHECKPOINT), "model_sha256": pred.attrs["model_sha256"],
    "shape": [int(prob.sizes["y"]), int(prob.sizes["x"])], "step": int(step),
    "map_shape": [int(n) for n in shown.shape], "map_cells_scored": int(scored.values.sum()),
    "map_probability_cells": {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)},
    "px_scored": int(n_scored), "px_mining": int(n_mining),
    "mine_fraction": int(n_mining) / max(int(n_scored), 1),
    "polygons": len(polygons), "polygons_km2": float(polygons.area_km2.sum()),
    "summary": summary,
}
(FIGURES / "03_chile_map.json").write_text(json.dumps(figure_values, indent=1))
