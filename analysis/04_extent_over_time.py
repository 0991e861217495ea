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
# # Mining extent over time at the LAMES sites
#
# Yearly composites of each site, the model of notebook 02 over every year, and
# `extent_over_time`: mining km² per site and year in true ground area, the growth, a
# confidence band from the probability layer, the first year of mining per pixel; against
# the synthetic world's known truth, and against the LAMES labels alone (one state: they
# cannot show growth).
#
# `LAMES_NB_SIZE=small` (default): one site, two years, procedural scenes (no files);
# `full`: the demo world's four sites and four years. Beside the figures the notebook saves
# the numbers drawn in them (`figures/04_extent.csv`, `figures/04_first_year.json`);
# `tests/test_notebooks.py` recomputes them with the library and compares.

# %%
import dataclasses
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from lames_cube.composite import yearly_composites
from lames_cube.ml import predict
from lames_cube.recipes.pipeline import site_geobox
from lames_cube.synthetic import DEMO_SPEC, World, WorldSpec
from lames_cube.timeseries import compare_with_truth, extent_over_time, first_mining_year

SIZE = os.environ.get("LAMES_NB_SIZE", "small")
OUT = Path(os.environ.get("LAMES_NB_OUT", "out"))
FIGURES = OUT / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
CHECKPOINT = OUT / f"model-{SIZE}" / "checked" / "checkpoint.pt"
if not CHECKPOINT.exists():
    raise FileNotFoundError(f"{CHECKPOINT} is missing: run 02_training_and_evaluation first.")
if SIZE == "small":
    world = World(WorldSpec(seed=0, site_ids=("2355",), years=(2021, 2023), scenes_per_year=3))
else:
    world = World(DEMO_SPEC)
sites = world.sites[["site_id", "geometry"]]

# %% [markdown]
# ## Yearly composites per site, scored by the model

# %%
predictions, labels = {}, {}
for site in sites.itertuples():
    epsg = int(world.sites.set_index("site_id").epsg[site.site_id])
    gbox = site_geobox(site.geometry.bounds, f"EPSG:{epsg}", 10, 256)
    scenes = world.to_cube(gbox, bands=["B02", "B03", "B04", "B08", "B11", "B12", "SCL"],
                           chunks=256)
    refl = yearly_composites(scenes).reflectance
    predictions[site.site_id] = predict(refl, CHECKPOINT).compute()
    labels[site.site_id] = refl.isel(band=0, drop=True).lames.rasterize(
        sites[sites.site_id == site.site_id], value=1).expand_dims(year=refl.year.values)
    print(site.site_id, dict(refl.sizes))

# %% [markdown]
# ## Area per site and year against the truth

# %%
model = extent_over_time(predictions, sites=sites)
from_labels = extent_over_time(labels, sites=sites)
truth = world.truth()
compared = compare_with_truth(model, truth).merge(
    compare_with_truth(from_labels, truth)[["site_id", "year", "area_km2"]],
    on=["site_id", "year"], suffixes=("", "_labels"))
compared[["site_id", "year", "truth_km2", "area_km2", "low_km2", "high_km2",
          "area_km2_labels", "relative_error"]].round(3)

# %%
fig, axes = plt.subplots(1, len(predictions), figsize=(5 * len(predictions), 3.5),
                         squeeze=False)
for ax, (site_id, rows) in zip(axes[0], compared.groupby("site_id"), strict=True):
    ax.fill_between(rows.year, rows.low_km2, rows.high_km2, alpha=0.2, color="C3",
                    label="model band")
    ax.plot(rows.year, rows.area_km2, "o-", color="C3", label="model")
    ax.plot(rows.year, rows.truth_km2, "s-", color="k", label="truth")
    ax.plot(rows.year, rows.area_km2_labels, "--", color="C0", label="labels alone")
    ax.set_title(f"site {site_id}")
    ax.set_ylabel("km²")
    ax.set_xticks(rows.year.tolist())
    ax.legend(fontsize=8)
fig.savefig(FIGURES / "04_extent.png", dpi=80, bbox_inches="tight")
# the numbers drawn, saved beside the figure
compared[["site_id", "year", "truth_km2", "area_km2", "low_km2", "high_km2",
          "area_km2_labels"]].to_csv(FIGURES / "04_extent.csv", index=False)

# %% [markdown]
# ## Where mining is new: the first year of mining

# %%
site_id = next(iter(predictions))
first = first_mining_year(predictions[site_id])
fig, ax = plt.subplots(figsize=(6, 4))
years = [int(y) for y in predictions[site_id].year.values]
first.where(first > 0).plot.imshow(ax=ax, cmap="viridis", vmin=years[0], vmax=years[-1],
                                   cbar_kwargs={"ticks": years, "format": "%d"})
ax.set_title(f"site {site_id}: first year of mining")
ax.set_aspect("equal")
fig.savefig(FIGURES / "04_first_year.png", dpi=80, bbox_inches="tight")
first_counts = pd.Series(first.values.ravel()).value_counts().sort_index()
# the numbers drawn (pixels per first year, 0 = never), the world and the model, saved beside
(FIGURES / "04_first_year.json").write_text(json.dumps({
    "world_spec": dataclasses.asdict(world.spec), "checkpoint": str(CHECKPOINT),
    "site_id": str(site_id), "years": years, "shape": [int(n) for n in first.shape],
    "first_year_px": {str(int(y)): int(n) for y, n in first_counts.items()}}, indent=1))
first_counts.to_frame("pixels")
