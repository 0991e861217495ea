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
# (default `analysis/out`).

# %%
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
print(f"clear share of all observations: {float(clear.mean()):.2f}")
yearly = lames_cube.composite.yearly_composites(cube)
print(yearly)

# %% [markdown]
# ## The LAMES labels on exactly the cube's grid

# %%
sectors = load_sectors()
labels = yearly.reflectance.lames.rasterize(sectors[sectors.site_id == SITE], value=1)
assert labels.odc.geobox == yearly.reflectance.odc.geobox
print(f"labelled mining: {int(labels.sum()):,} px, "
      f"{float(labels.lames.extent().area_km2.iloc[0]):.3f} km² of ground")

# %%
last = int(yearly.year.values[-1])
rgb = to_rgb8(yearly.reflectance.sel(year=last)).transpose("y", "x", "band").values
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
axes[0].imshow(rgb)
axes[0].set_title(f"site {SITE}: {last} median composite")
axes[1].imshow(rgb)
axes[1].contour(labels.values, levels=[0.5], colors="yellow", linewidths=0.8)
axes[1].set_title("LAMES sectors on the cube grid")
axes[2].imshow(yearly.clear_count.sel(year=last), cmap="viridis")
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
