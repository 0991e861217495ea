"""The demo: a small synthetic world over real LAMES sites, searched like a real catalogue."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lames_cube.config import cache_dir, find_data_dir
from lames_cube.io import TemplateMismatchError
from lames_cube.pipeline import run_recipe
from lames_cube.recipes import Recipe, load_recipe
from lames_cube.search import search
from lames_cube.synthetic import World, WorldSpec, write_world

#: The demo world: four LAMES sites (three train, one test), four years, ten passes of each
#: relative orbit a year (twenty where two swaths overlap): enough clear looks that the yearly
#: composites have no holes inside the site boxes.
DEMO_SPEC = WorldSpec(seed=0, n_sites=4, years=(2020, 2021, 2022, 2023), scenes_per_year=10)


def demo_spec(data_dir=None) -> WorldSpec:
    """The demo's spec: real LAMES sites when the files are there, synthetic ones otherwise."""
    if find_data_dir(data_dir, required=False) is None:
        return dataclasses.replace(DEMO_SPEC, use_lames=False)
    return DEMO_SPEC


def demo_world_dir(world: World) -> Path:
    """Where the demo world is cached: named by its digest, so a changed world is rebuilt."""
    return cache_dir() / "worlds" / f"demo-{world.digest()}"


def demo_recipe(world: World, root: Path) -> Recipe:
    """The ``demo`` cube recipe pointed at this world and its sites (works for fallback sites)."""
    data = load_recipe("demo").to_dict()
    data.update({"catalog": str(root), "area": {"sites": list(world.sites.site_id)},
                 "output": str(root / "cubes")})
    return Recipe.from_dict(data)


def quicklook(stores: list[Path], out: Path) -> Path:
    """Save true-colour quicklooks of each site's first and last yearly composite."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lames_cube.composite import to_rgb8
    from lames_cube.io import open_store

    stores = stores[:4]
    fig, axes = plt.subplots(2, len(stores), figsize=(4 * len(stores), 8.4), squeeze=False)
    for col, store in enumerate(stores):
        cube = open_store(store).reflectance
        for row, year in enumerate((int(cube.year.values[0]), int(cube.year.values[-1]))):
            rgb = to_rgb8(cube.sel(year=year)).transpose("y", "x", "band").values
            axes[row, col].imshow(rgb)
            axes[row, col].set_title(f"{store.stem} {year} median", fontsize=9)
            axes[row, col].axis("off")
    fig.suptitle("Synthetic Sentinel-2: yearly median composites, 8-bit true colour (mines grow)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def run_demo(path: str | os.PathLike | None = None, *, data_dir=None, workers=None) -> Path:
    """Generate (or reuse) the demo world, search it, and print what was found.

    Returns the world directory.
    """
    t0 = time.perf_counter()
    spec = demo_spec(data_dir)
    source = "real LAMES sites" if spec.use_lames else "synthetic sites (no LAMES data found)"
    print(f"lames-cube demo: synthetic Sentinel-2 L2A world over {source}")
    world = World(spec, data_dir=data_dir)
    root = Path(path) if path else demo_world_dir(world)
    print(f"  sites  {', '.join(f'{r.site_id} ({r.split})' for r in world.sites.itertuples())}")
    print(f"  tiles  {len(world.tiles)}: {', '.join(t.tile_id for t in world.tiles)}")
    print(f"  dates  {len(world.dates)} from {world.dates[0]} to {world.dates[-1]}")
    write_world(root, world=world, workers=workers)
    print(f"  world  {root}  ({time.perf_counter() - t0:.0f} s)")

    everything = search(root)
    table = pd.DataFrame([{
        "id": i.id, "tile": i.properties["s2:mgrs_tile"], "date": i.datetime.date(),
        "cloud %": i.properties["eo:cloud_cover"], "baseline": i.properties["s2:processing_baseline"],
        "dn offset": i.properties["lames:dn_offset"],
        "nodata %": i.properties.get("s2:nodata_pixel_percentage"),
    } for i in everything])
    print(f"\nsearch(world): {len(everything)} items")
    print(table.groupby(["baseline", "dn offset"]).size().rename("items").to_string())

    site = world.sites.site_id.iloc[0]
    clear = search(root, sites=[site], max_cloud=10, max_nodata=5)
    print(f"\nsearch(world, sites=['{site}'], max_cloud=10, max_nodata=5): {len(clear)} items")
    print(table[table.id.isin([i.id for i in clear])].to_string(index=False))

    year = world.spec.years[-1]
    w, s, e, n = world.sites.total_bounds
    recent = search(root, bbox=(w, s, e, n), datetime=str(year))
    print(f"\nsearch(world, bbox=sites' bounds, datetime='{year}'): {len(recent)} items")

    truth = world.truth()
    lames = truth[truth.kind == "lames"].pivot(index="site_id", columns="year", values="area_m2")
    print("\nTrue mined area per LAMES site and year (km², the growth the pixels show):")
    print((lames / 1e6).round(3).to_string())
    hidden = truth[truth.kind == "hidden"].pivot(index="site_id", columns="year", values="area_m2")
    if len(hidden):
        print(f"\nHidden mines drawn but absent from the LAMES labels (Maus et al. footprints): "
              f"{len(hidden)}, {hidden.iloc[:, -1].sum() / 1e6:.2f} km² in {hidden.columns[-1]}")
        print((hidden / 1e6).round(3).to_string())
    recipe = demo_recipe(world, root)
    print(f"\ncube build (recipe 'demo': {recipe.composite.method} {recipe.composite.period}ly "
          f"composites, {recipe.grid.resolution:g} m, one UTM grid per site):")
    try:
        stores = run_recipe(recipe, items=everything, data_dir=data_dir, progress=False)
    except TemplateMismatchError as exc:  # stores of an older layout in the cache: rebuild them
        print(f"  cached stores do not match this version's layout ({str(exc)[:80]}...); "
              "rebuilding them")
        stores = run_recipe(recipe, items=everything, data_dir=data_dir, progress=False,
                            overwrite=True)
    from lames_cube.io import open_store

    for store in stores:
        data = open_store(store)
        count = data.clear_count
        print(f"  {store.name}: {dict(data.reflectance.sizes)}, clear observations per pixel and year: "
              f"median {float(np.median(count.values)):.0f}, min {int(count.min())}")
    png = quicklook(stores, root / "quicklook.png")
    print(f"\nquicklook: {png}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return root
