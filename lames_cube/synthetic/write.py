"""Write a synthetic world to disk: COGs, a static STAC catalogue and a stac-geoparquet index.

Layout of a world directory::

    manifest.json                     spec, digest, counts (written last: marks a complete world)
    truth.csv                         true mined area per site and year
    sectors.geojson                   the sectors drawn (full extent, EPSG:4326)
    stac/catalog.json                 static catalogue (relative links)
    stac/<collection>/collection.json
    stac/<collection>/<item>/<item>.json, B02.tif, ..., SCL.tif
    index.parquet                     stac-geoparquet index of the items (absolute hrefs)

The COGs hold what the style's provider serves: the L2A product's digital numbers (offset +1000
from baseline 04.00), except in the Earth Search ``sentinel-2-l2a`` style, whose COGs of baseline
04.00 and later hold harmonised values (Element 84 removed the offset), as the real ones do.

A world is written under a temporary name and renamed when complete
(:func:`lames_cube._atomic.atomic_directory`), so a crash never leaves a half-written world
behind; an existing complete world with the same spec is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import rustac
from tqdm.auto import tqdm

from lames_cube._atomic import atomic_directory, atomic_path, atomic_write_text
from lames_cube.bands import BAND_BY_NAME
from lames_cube.errors import WorldError
from lames_cube.synthetic.stac import collection_dict, item_dict, item_id
from lames_cube.synthetic.world import Scene, World, WorldSpec

MANIFEST = "manifest.json"
INDEX = "index.parquet"

_COG_OPTIONS = {"compress": "deflate", "blocksize": 512, "predictor": 2, "num_threads": 1}


def write_cog(path: Path, array: np.ndarray, gbox, *, categorical: bool) -> None:
    """Write one band as a Cloud-Optimised GeoTIFF (nodata 0, deflate, internal overviews)."""
    profile = {
        "driver": "COG",
        "width": array.shape[1],
        "height": array.shape[0],
        "count": 1,
        "dtype": array.dtype.name,
        "crs": gbox.crs.to_wkt(),
        "transform": gbox.affine,
        "nodata": 0,
        "overview_resampling": "nearest" if categorical else "average",
        **_COG_OPTIONS,
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(array, 1)


def _dump(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _scene_stats(scl: np.ndarray) -> dict:
    """Cloud cover (SCL 8, 9, 10) and each class's share of the valid pixels, and the nodata
    share of the tile, in percent (as ESA's quality indicators)."""
    valid = scl > 0
    n_valid = int(valid.sum())
    counts = np.bincount(scl.ravel(), minlength=12)
    cloudy = int(counts[8] + counts[9] + counts[10])
    return {
        "cloud_cover": round(100.0 * cloudy / n_valid, 6) if n_valid else 100.0,
        "nodata_percentage": round(100.0 * (1 - n_valid / scl.size), 6),
        "classes": {c: (round(100.0 * int(counts[c]) / n_valid, 6) if n_valid else 0.0)
                    for c in range(1, 12)},
    }


def _serves_harmonised(world: World, scene: Scene) -> bool:
    """Whether the style's COGs hold harmonised values rather than the product's DNs.

    Earth Search v1 ``sentinel-2-l2a`` removed the baseline-04.00 offset from its COGs
    (``earthsearch:boa_offset_applied``); Collection 1 and Planetary Computer serve the
    product's digital numbers, offset included.
    """
    return world.spec.style == "earth-search" and bool(scene.dn_offset)


def _write_tile(world: World, scenes: list[Scene], folder: Path) -> list[dict]:
    """Write the COGs and item JSON of the scenes of one tile; returns the item dicts."""

    items = []
    for scene in scenes:
        ident = item_id(world, scene)
        item_dir = folder / ident
        item_dir.mkdir(parents=True, exist_ok=True)
        hrefs, stats = {}, None
        harmonised = _serves_harmonised(world, scene)
        for res in (10, 20):
            gbox = scene.tile.geobox(res)
            for band, arr in world.scene_arrays(scene, res, harmonised=harmonised).items():
                write_cog(item_dir / f"{band}.tif", arr, gbox,
                          categorical=BAND_BY_NAME[band].categorical)
                hrefs[band] = f"./{band}.tif"
                if band == "SCL":
                    stats = _scene_stats(arr)
        order = ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")
        files = {}
        if world.spec.style == "earth-search-c1":  # only Collection 1 lists file:size/checksum
            for band in order:
                data = (item_dir / f"{band}.tif").read_bytes()
                files[band] = (len(data), "1220" + hashlib.sha256(data).hexdigest())
        item = item_dict(world, scene, stats, {b: hrefs[b] for b in order}, files)
        item["links"] = [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        ]
        _dump(item_dir / f"{ident}.json", item)
        items.append(item)
    return items


def _write_tile_job(args) -> list[dict]:
    world, scenes, folder = args
    return _write_tile(world, scenes, folder)


def _absolute(item: dict, item_dir: Path) -> dict:
    out = json.loads(json.dumps(item))
    for asset in out["assets"].values():
        asset["href"] = str((item_dir / asset["href"]).resolve())
    out["links"] = []
    return out


def write_index(items: list[dict], path: Path) -> None:
    """Write a stac-geoparquet index of ``items`` (hrefs as given)."""

    with atomic_path(path) as tmp:
        rustac.write_sync(str(tmp), items, format="geoparquet")


def write_world(
    path: str | os.PathLike,
    spec: WorldSpec | None = None,
    *,
    world: World | None = None,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate a synthetic world and write it to ``path``.

    Parameters
    ----------
    path
        Target directory. Written under a temporary name, renamed when complete. An existing
        directory is only replaced when it holds a lames_cube world (or is empty).
    spec
        The world's specification (default :class:`WorldSpec()`); ignored when ``world`` is given.
    world
        An already built :class:`World` (e.g. with custom sectors).
    data_dir
        LAMES data directory for the sectors.
    overwrite
        Replace an existing world at ``path``. Without it, a complete world with the same spec is
        reused and anything else raises.
    workers
        Processes to write tiles in parallel (default: CPU count, at most the number of tiles).
    progress
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The world directory.

    Raises
    ------
    WorldError
        ``path`` holds something that is not this world and ``overwrite`` is False.

    Examples
    --------
    One small LAMES site, one year, one pass per orbit: two 1 km tiles, each seen from two
    relative orbits (4 items), written in about a second.

    >>> import tempfile
    >>> from lames_cube.synthetic import WorldSpec
    >>> spec = WorldSpec(site_ids=("2058",), years=(2021,), scenes_per_year=1, grid_km=1,
    ...                  tile_px=100, margin_m=100, hidden_mines=False)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = write_world(f"{tmp}/w", spec, workers=1, progress=False)
    ...     sorted(p.name for p in root.iterdir())
    ...     len(list(root.glob("stac/sentinel-2-l2a/*/*.json")))
    ['index.parquet', 'manifest.json', 'sectors.geojson', 'stac', 'truth.csv']
    4
    """
    world = world if world is not None else World(spec or WorldSpec(), data_dir=data_dir)
    spec = world.spec
    digest = world.digest()
    root = Path(path).expanduser().resolve()
    manifest_path = root / MANIFEST
    if root.exists():
        if not root.is_dir():
            raise WorldError(f"{root} is a file, not a directory; pick a directory path for the world.")
        if manifest_path.is_file():
            existing = json.loads(manifest_path.read_text())
            if existing.get("digest") == digest and existing.get("root") == str(root) and not overwrite:
                return root
            if not overwrite:
                raise WorldError(
                    f"{root} holds another world (digest {existing.get('digest')}, this world "
                    f"{digest}). Pass overwrite=True (--overwrite) or pick another path."
                )
        elif any(root.iterdir()):
            raise WorldError(
                f"{root} exists, is not empty and is not a lames_cube world (no {MANIFEST}); it is "
                "never deleted, even with overwrite=True. Pick an empty or new directory."
            )
    with atomic_directory(root) as tmp:
        coll_dir = tmp / "stac" / spec.collection_id
        coll_dir.mkdir(parents=True)
        by_tile: dict[str, list[Scene]] = {}
        for scene in world.scenes:
            by_tile.setdefault(scene.tile.tile_id, []).append(scene)
        jobs = [(world, scenes, coll_dir) for scenes in by_tile.values()]
        n = workers or min(os.cpu_count() or 1, len(jobs))
        items: list[dict] = []
        bar = tqdm(total=len(world.scenes), desc="synthetic scenes", unit="scene",
                   disable=not progress)
        if n > 1:
            with ProcessPoolExecutor(max_workers=n) as pool:
                for result in pool.map(_write_tile_job, jobs):
                    items.extend(result)
                    bar.update(len(result))
        else:
            for job in jobs:
                result = _write_tile_job(job)
                items.extend(result)
                bar.update(len(result))
        bar.close()
        items.sort(key=lambda i: (i["properties"]["datetime"], i["id"]))
        collection = collection_dict(world, items)
        collection["links"] = [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
        ] + [
            {"rel": "item", "href": f"./{i['id']}/{i['id']}.json", "type": "application/geo+json"}
            for i in items
        ]
        _dump(coll_dir / "collection.json", collection)
        _dump(tmp / "stac" / "catalog.json", {
            "type": "Catalog", "stac_version": "1.0.0", "id": f"lames-world-{digest}",
            "description": "Synthetic Sentinel-2 L2A world written by lames_cube.",
            "links": [
                {"rel": "root", "href": "./catalog.json", "type": "application/json"},
                {"rel": "child", "href": f"./{spec.collection_id}/collection.json",
                 "type": "application/json"},
            ],
        })
        final_coll = root / "stac" / spec.collection_id
        write_index([_absolute(i, final_coll / i["id"]) for i in items], tmp / INDEX)
        with atomic_path(tmp / "truth.csv") as out:
            world.truth().to_csv(out, index=False, float_format="%.3f")
        # Full precision: open_world() rebuilds exactly this world (computed hidden-mine cells).
        with atomic_path(tmp / "sectors.geojson") as out:
            world.sectors.to_file(out, driver="GeoJSON", COORDINATE_PRECISION=17)
        _dump(tmp / MANIFEST, {
            "spec": spec.to_dict(), "digest": digest, "root": str(root),
            "collection": spec.collection_id, "n_items": len(items), "n_tiles": len(by_tile),
            "sites": list(world.sites.site_id), "hidden_mines": list(world.hidden.site_id),
            "texture_epsg": world.texture_epsg,
        })
    return root


def read_world_stac(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """The collection and items of a written world as dicts, with absolute asset hrefs.

    This is what a STAC API loads (see :mod:`lames_cube.services.stac_api`).

    Raises
    ------
    WorldError
        ``path`` is not a complete world directory.
    """
    root = Path(path).expanduser().resolve()
    if not (root / MANIFEST).is_file():
        raise WorldError(
            f"{root} is not a complete lames_cube world (no {MANIFEST}); create one with "
            "`lames-cube world create PATH`."
        )
    manifest = json.loads((root / MANIFEST).read_text())
    coll_dir = root / "stac" / manifest["collection"]
    collection = json.loads((coll_dir / "collection.json").read_text())
    collection["links"] = []
    items = []
    for item_file in sorted(coll_dir.glob("*/*.json")):
        items.append(_absolute(json.loads(item_file.read_text()), item_file.parent))
    return collection, items
