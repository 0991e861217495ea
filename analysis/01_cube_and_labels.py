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
# # A cube and its labels
#
# Search a Sentinel-2 L2A catalogue, build a lazy datacube of one LAMES site, mask clouds,
# make yearly composites and rasterise the LAMES annotations onto exactly the cube's grid.
# The catalogue is the synthetic world (no internet here); with internet, pass a public STAC
# API (`https://earth-search.aws.element84.com/v1`) to `search` instead: the rest is the same.
#
# Settings: `LAMES_NB_SIZE=small` (default: a two-year world around one site, seconds) or
# `full` (the demo world: four sites, four years); outputs go to `LAMES_NB_OUT`
# (default `analysis/out`). Beside each figure the notebook saves the numbers drawn in it
# (`figures/01_cube_and_labels.json`); `tests/test_notebooks.py` recomputes them with the
# library and compares.

# %%
import dataclasses
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import lames_cube
from lames_cube.annotations import load_sectors
from lames_cube.composite import to_rgb8
from lames_cube.recipes.pipeline import site_geobox
from lames_cube.synthetic import DEMO_SPEC, World, WorldSpec, write_world

SIZE = os.environ.get("LAMES_NB_SIZE", "small")
OUT = Path(os.environ.get("LAMES_NB_OUT", "out"))
FIGURES = OUT / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
SITE = "2355"
if SIZE == "small":
    spec = WorldSpec(seed=0, site_ids=(SITE,), years=(2022, 2023), scenes_per_year=3,
                     grid_km=3, tile_px=330, margin_m=500.0)
else:
    spec = DEMO_SPEC
world = World(spec)
root = write_world(OUT / f"world-{SIZE}", world=world, progress=False)
print(root, len(world.dates), "dates")

# %% [markdown]
# ## Search
# `search` returns normalised, deduplicated items, like a public catalogue's.

# %%
items = lames_cube.search(root, sites=[SITE])
print(len(items), "items;", items[0].id, items[0].properties["s2:processing_baseline"])

# %% [markdown]
# ## A lazy cube on the site's UTM grid, its clear-sky mask and yearly composites

# %%
site = world.sites[world.sites.site_id == SITE]
# the site's box on its UTM grid, a whole number of 256-px windows (as the cube recipes cut it)
grid = site_geobox(tuple(site.total_bounds), f"EPSG:{site.epsg.iloc[0]}", 10, 256)
cube = lames_cube.build_cube(items, geobox=grid, chunks=256, resampling="bilinear")
print(dict(cube.sizes), cube.odc.geobox.crs)
clear = cube.lames.clear_mask()
clear_share = float(clear.mean())
print(f"clear share of all observations: {clear_share:.2f}")
yearly = lames_cube.composite.yearly_composites(cube)
print(yearly)

# %% [markdown]
# ## The LAMES labels on exactly the cube's grid

# %%
sectors = load_sectors()
labels = yearly.reflectance.lames.rasterize(sectors[sectors.site_id == SITE], value=1)
assert labels.odc.geobox == yearly.reflectance.odc.geobox
label_km2 = float(labels.lames.extent().area_km2.iloc[0])
print(f"labelled mining: {int(labels.sum()):,} px, {label_km2:.3f} km² of ground")

# %%
last = int(yearly.year.values[-1])
rgb = to_rgb8(yearly.reflectance.sel(year=last)).transpose("y", "x", "band").values
clear_count = yearly.clear_count.sel(year=last).compute()
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
axes[0].imshow(rgb)
axes[0].set_title(f"site {SITE}: {last} median composite")
axes[1].imshow(rgb)
axes[1].contour(labels.values, levels=[0.5], colors="yellow", linewidths=0.8)
axes[1].set_title("LAMES sectors on the cube grid")
axes[2].imshow(clear_count, cmap="viridis")
axes[2].set_title("clear looks per pixel")
for ax in axes:
    ax.axis("off")
fig.savefig(FIGURES / "01_cube_and_labels.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## Windows for a model: the patch table of the grid

# %%
table = labels.lames.patch_table(size=256)
print(len(table), "windows of 256 px")
table.head()

# %% [markdown]
# ## The numbers behind the figure
# Saved beside it: the world and grid they come from, the RGB sums of the composite, the
# label pixels per value and their km², the share of clear observations and the pixels per
# number of clear looks in the year shown.

# %%
def value_counts(a):
    values, counts = np.unique(np.asarray(a), return_counts=True)
    return {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)}


figure_values = {
    "world_spec": dataclasses.asdict(spec), "world_root": str(root), "site": SITE,
    "year": last, "years": [int(y) for y in yearly.year.values],
    "grid": {"crs": str(grid.crs), "shape": [int(n) for n in grid.shape],
             "affine": [float(v) for v in tuple(grid.affine)[:6]]},
    "n_items": len(items), "n_dates": int(cube.sizes["time"]),
    "rgb_sum": [int(rgb[..., c].sum(dtype=np.int64)) for c in range(3)],
    "rgb_nodata_px": int((rgb == 0).all(axis=-1).sum()),
    "label_px": value_counts(labels.values),
    "label_km2": label_km2,
    "clear_share": clear_share,
    "clear_count_px": value_counts(clear_count),
    "n_windows": len(table),
}
(FIGURES / "01_cube_and_labels.json").write_text(json.dumps(figure_values, indent=1))
{k: figure_values[k] for k in ("label_px", "label_km2", "clear_count_px")}
