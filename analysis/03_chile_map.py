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
# notebook 02.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from lames_cube.recipes.country import run_inference
from lames_cube.prediction import open_prediction, prediction_polygons

SIZE = os.environ.get("LAMES_NB_SIZE", "small")
OUT = Path(os.environ.get("LAMES_NB_OUT", "out"))
FIGURES = OUT / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
CHECKPOINT = OUT / f"model-{SIZE}" / "checked" / "checkpoint.pt"
STORE = os.environ.get("LAMES_CHILE_STORE")
if STORE and Path(STORE).exists():
    store = Path(STORE)
else:
    if not CHECKPOINT.exists():
        raise FileNotFoundError(f"{CHECKPOINT} is missing: run 02_training_and_evaluation "
                                "first (same LAMES_NB_SIZE and LAMES_NB_OUT).")
    tiles = ["r043c020"] if SIZE == "small" else ["r043c020", "r043c021", "r044c020",
                                                  "r044c021"]
    summary = run_inference("chile-mosaic", CHECKPOINT, OUT / f"chile-{SIZE}", tiles=tiles,
                            progress=False)
    store = OUT / f"chile-{SIZE}" / "prediction.zarr"
    print({k: summary[k] for k in ("tiles_scored", "km2_scored", "km2_predicted_mining")})
pred = open_prediction(store, allow_incomplete=True)
print(dict(pred.sizes), pred.attrs["model_sha256"][:12])

# %% [markdown]
# ## The map: mining probability, coarsened for display

# %%
prob = pred.probability
step = max(1, max(prob.sizes["y"], prob.sizes["x"]) // 1500)
small = prob.coarsen(y=step, x=step, boundary="trim").max().compute()
scored = pred["class"].coarsen(y=step, x=step, boundary="trim").min().compute() != 255
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
