"""The demo: a small synthetic world over real LAMES sites, searched like a real catalogue."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lames_cube.config import cache_dir, find_data_dir
from lames_cube.search import search
from lames_cube.synthetic import World, WorldSpec, write_world

#: The demo world: four LAMES sites (three train, one test), four years, two dates a year.
DEMO_SPEC = WorldSpec(seed=0, n_sites=4, years=(2020, 2021, 2022, 2023), scenes_per_year=2)


def demo_spec(data_dir=None) -> WorldSpec:
    """The demo's spec: real LAMES sites when the files are there, synthetic ones otherwise."""
    if find_data_dir(data_dir, required=False) is None:
        return dataclasses.replace(DEMO_SPEC, use_lames=False)
    return DEMO_SPEC


def quicklook(world: World, items, out: Path, *, margin_m: float = 800.0) -> Path:
    """Save true-colour crops of each site in its first and last clear scene (mines grow)."""
    import geopandas as gpd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    import shapely
    from rasterio.windows import from_bounds

    sites = world.sites.head(4)
    fig, axes = plt.subplots(2, len(sites), figsize=(4 * len(sites), 8), squeeze=False)
    for col, site in enumerate(sites.itertuples()):
        local = gpd.GeoSeries([site.geometry], crs=4326).to_crs(site.epsg)
        box = shapely.box(*local.total_bounds).buffer(margin_m, join_style="mitre")
        box4326 = gpd.GeoSeries([box], crs=site.epsg).to_crs(4326).iloc[0]
        def overlap(item, box4326=box4326):
            return shapely.geometry.shape(item.geometry).intersection(box4326).area

        covering = [i for i in items if overlap(i) > 0.5 * box4326.area]
        dates = sorted({i.datetime.date() for i in covering})
        picks = [max((i for i in covering if i.datetime.date() == d), key=overlap)
                 for d in (dates[:1] + dates[-1:])]
        for row, item in enumerate(picks):
            offset = item.properties["lames:dn_offset"]
            rgb = []
            for band in ("B04", "B03", "B02"):
                with rasterio.open(item.assets[band].href) as src:
                    window = from_bounds(*box.bounds, src.transform)
                    dn = src.read(1, window=window, boundless=True, fill_value=0).astype(float)
                rgb.append(np.where(dn > 0, (dn - offset) / 10_000, np.nan))
            axes[row, col].imshow(np.nan_to_num(np.clip(np.dstack(rgb) * 3.0, 0, 1)))
            axes[row, col].set_title(f"site {site.site_id} ({site.split}) {item.datetime:%Y-%m-%d}",
                                     fontsize=9)
        for row in range(2):
            axes[row, col].axis("off")
    fig.suptitle("Synthetic Sentinel-2 true colour: each site in its first and last clear scene")
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
    root = Path(path) if path else cache_dir() / "worlds" / f"demo-{world.digest()}"
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

    truth = world.truth().pivot(index="site_id", columns="year", values="area_m2") / 1e6
    print("\nTrue mined area per site and year (km², the growth the pixels show):")
    print(truth.round(3).to_string())
    clear_items = [i for i in everything if i.properties["eo:cloud_cover"] < 5]
    png = quicklook(world, clear_items, root / "quicklook.png")
    print(f"\nquicklook: {png}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return root
