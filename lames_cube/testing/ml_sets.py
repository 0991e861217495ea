"""Small patch sets with planted mines, for the training tests and benchmarks.

:func:`planted_patch_set` writes a patch set whose masks are known exactly: square "mines"
(class 1, or sector classes 1..K-1) drawn on a textured background; mine pixels are brighter
in the SWIR bands and rougher, so a model can learn them in a few steps.
:func:`baseline_patch_set` writes the smaller, cleaner set of the baselines' examples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros

from lames_cube.patches import patch_table
from lames_cube.patchset import PatchSource, write_patch_set

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")


def planted_patch_set(store: str | os.PathLike[str], *, size: int = 32, rows: int = 3,
                      cols: int = 4, bands: Sequence[str] = BANDS, classes: int = 2,
                      splits: Sequence[str] | None = None, mines: bool = True,
                      seed: int = 0) -> tuple[Path, np.ndarray, Any]:
    """Write a ``rows x cols`` grid of ``size``-px windows with planted mines.

    Parameters
    ----------
    store
        The patch-set store to write.
    size, rows, cols
        Window side and the grid of windows (one window per cell, no overlap).
    bands
        Band names (any subset of Sentinel-2 ids).
    classes
        2: masks 0/1; more: mine squares take the classes 1..classes-1 in turn.
    splits
        The split of each window, row-major (default: the last column test, the one before it
        validation, the rest train).
    mines
        False: all-background masks.
    seed
        Texture and mine placement.

    Returns
    -------
    (pathlib.Path, numpy.ndarray, geopandas.GeoDataFrame)
        The store, the full ``(H, W)`` mask it was cut from and the window table (``row``,
        ``col``, ``split``).
    """


    rng = np.random.default_rng(seed)
    height, width = rows * size, cols * size
    g = GeoBox.from_bbox((300_000, 7_000_000, 300_000 + width * 10, 7_000_000 + height * 10),
                         "EPSG:32719", resolution=10)
    mask = np.zeros((height, width), np.uint8)
    if mines:
        k = 0
        for r in range(rows):
            for c in range(cols):
                side = int(rng.integers(size // 4, size // 2))
                y, x = (int(v) for v in rng.integers(0, size - side, 2))
                mask[r * size + y:r * size + y + side, c * size + x:c * size + x + side] = \
                    1 + k % (classes - 1)
                k += 1
    mine = mask > 0
    layers = []
    for i, band in enumerate(bands):
        base = 1500 + 150 * i + rng.normal(0, 120, (height, width))
        swir = band in ("B11", "B12")
        base[mine] += (600 if swir else 150) + rng.normal(0, 400, int(mine.sum()))
        layers.append(np.clip(base, 1, 10_000).astype(np.uint16))
    cube = xr_zeros(g, dtype="uint16").expand_dims(band=list(bands)).copy(data=np.stack(layers))
    cube.attrs["nodata"] = 0
    labels = xr_zeros(g, dtype="uint8").copy(data=mask)
    table = patch_table(g, size=size)
    if splits is None:
        splits = ["test" if c == cols - 1 else "validation" if c == cols - 2 else "train"
                  for r in range(rows) for c in range(cols)]
    table["split"] = list(splits)
    table["kind"] = "site"
    out = write_patch_set(PatchSource(cube, table, labels), store, progress=False, block=4)
    return Path(out), mask, table


def baseline_patch_set(path: str | os.PathLike[str], *, block: int = 4, seed: int = 0,
                       classes: int = 1) -> Path | str:
    """A 64 x 64 px patch set of 16 patches of 16 px (bands B02, B03, B04, B08, B11, B12) with
    planted mines, for the examples of :mod:`lames_cube.ml.baselines`: 8 x 8 px blocks where
    ``(row // 8 + col // 8) % 3 == 0``, bright in B11 and dark in B08 (NDBI > 0, NDVI < 0.2)
    against vegetated ground (NDBI < 0, NDVI > 0.2). Splits cycle train, train, validation,
    test over the patches. ``classes`` > 1 labels the mines 1..classes by column block (a
    sector-like task). Returns the store."""
    g = GeoBox.from_bbox((300_000, 7_000_000, 300_640, 7_000_640), "EPSG:32719", resolution=10)
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(g.shape)
    mine = (rows // 8 + cols // 8) % 3 == 0
    ground = {"B02": 500, "B03": 800, "B04": 700, "B08": 3000, "B11": 2000, "B12": 1200}
    pit = {"B02": 1500, "B03": 1600, "B04": 1700, "B08": 1800, "B11": 3200, "B12": 2600}
    layers = []
    for b in ground:
        values = np.where(mine, pit[b], ground[b]) + rng.integers(0, 200, g.shape)
        layers.append(xr_zeros(g, dtype="uint16").copy(data=values.astype(np.uint16)))
    cube = xr.concat(layers, "band").assign_coords(band=list(ground))
    labels = mine.astype(np.uint8)
    if classes > 1:
        labels = np.where(mine, 1 + (cols // 8) % classes, 0).astype(np.uint8)
    table = patch_table(g, size=16)
    table["split"] = np.array(["train", "train", "validation", "test"])[np.arange(len(table)) % 4]
    table["kind"] = "site"
    return write_patch_set(PatchSource(cube, table, xr_zeros(g, dtype="uint8").copy(data=labels)),
                           path, block=block, progress=False)


def random_checkpoint(path: str | os.PathLike[str], *, bands: Sequence[str] = BANDS,
                      model: Any = "small", patch_size: int = 64, classes: int = 2,
                      seed: int = 0, mean: float = 1000.0, std: float = 500.0) -> Path:
    """A checkpoint of a randomly initialised model (seeded), for inference tests.

    ``model`` is a preset name or :class:`~lames_cube.ml.models.ModelSpec` settings; the
    checkpoint standardises every band with ``mean`` and ``std``.
    """
    import torch  # local: optional torch

    from lames_cube.ml.checkpoint import save_checkpoint  # local: ml needs optional torch
    from lames_cube.ml.models import (  # local: ml needs optional torch
        build_model,
        model_spec,
    )

    spec = model_spec(model, in_channels=len(bands), classes=classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = build_model(spec)
    names = ["other", "mine"] if classes == 2 else [f"class{k}" for k in range(classes)]
    return save_checkpoint(path, model=net, spec=spec, bands=list(bands),
                           band_mean=[mean] * len(bands), band_std=[std] * len(bands),
                           classes=names, task="site" if classes == 2 else "sector",
                           patch_size=patch_size, crs="EPSG:32719", resolution=10.0, seed=seed,
                           curve=[], class_weights=[1.0] * classes)


def pointwise_checkpoint(path: str | os.PathLike[str], *, bands: Sequence[str] = BANDS,
                         classes: int = 2, seed: int = 0, patch_size: int = 64) -> Path:
    """:func:`random_checkpoint` of a per-pixel (1 x 1 convolution) network: a
    translation-equivariant model whose prediction of a pixel depends on that pixel only.

    Examples
    --------
    >>> import tempfile, torch
    >>> from lames_cube.ml import load_model
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     net, meta = load_model(pointwise_checkpoint(f"{tmp}/p.pt", bands=["B04"]))
    ...     tuple(net(torch.zeros(1, 1, 5, 7)).shape), meta["model"]["arch"]
    ((1, 2, 5, 7), 'pixel')
    """
    return random_checkpoint(path, bands=bands, model={"arch": "pixel",
                             "decoder_channels": (8, 8)}, patch_size=patch_size,
                             classes=classes, seed=seed)
