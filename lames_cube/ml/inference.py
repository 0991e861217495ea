"""Seamless, lazy inference of a trained model over a cube of any size.

:func:`predict` turns a cube ``(band, y, x)`` (or ``(time, band, y, x)``) into a lazy
``xr.Dataset`` of the predicted class and mine probability on the same grid, built with
:func:`xarray.map_blocks`: one block per tile, each block the tile plus a halo, so every tile is
computed on its own (in any order, on any worker) and the tiles join without a seam.

Windows and blending
--------------------
The model sees square windows of ``patch`` px laid on one grid over the whole cube with stride
``s = patch - overlap``, centred on the tile edges: window ``k`` covers pixels
``[k*s - patch/2, k*s + patch/2)`` along each axis (the grid starts at the cube's first pixel).
Every window's class probabilities are weighted by a window that is 1 in its middle and falls
to 0 over ``overlap`` px at each edge along Hann (cosine-squared) ramps (``blend="hann"``; with
``overlap = patch/2`` this is the plain Hann window), so neighbouring windows hand over smoothly
and the weights of any pixel sum to 1. ``blend="mean"`` weights every pixel of a window alike.

A tile is a whole number of strides, so the windows that reach into a tile are the same
whether the cube is scored in tiles or at once: with the full halo (``patch/2`` px, the
default) tiled inference equals whole-image inference for any model (beyond the cube's edge
both see the cube mirrored, ``edge="reflect"``, or nodata, ``edge="nodata"``). Mirroring is the
default because a model has never seen a flat field of nodata beside real ground: with
``edge="nodata"`` a small U-Net calls a frame of about half a window along every cube edge
mining (measured on the demo's site cubes). A smaller halo feeds the windows at tile edges nodata instead of the
neighbour's pixels: tile edges then show (a test measures the seams).

Halo
----
The halo is the dask ``overlap`` idea, cut once: the cube is padded (mirrored or nodata), rechunked so
that each strip of ``2*halo`` px around a tile edge is a chunk of its own, and each tile's block
is assembled from the 3 x 3 chunks around it. A source chunked on that pattern (the synthetic
world's Chile cube) is read exactly once; a tile-chunked store is re-read at the edges only.

Model handle
------------
The graph holds a :class:`ModelHandle` (the checkpoint path, its digest and the settings); each
worker process loads the model once (:meth:`ModelHandle.get`) and keeps it. CUDA when present
(``device="auto"``): the block is moved to the GPU once, windows are cut there and run under
autocast (float16); on the CPU torch uses ``threads`` threads per task.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import os
import sys
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise, product
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from odc.geo.xr import xr_coords

from lames_cube.errors import (  # noqa: F401 (re-exported)
    BandMismatchError,
    CheckpointError,
    InferenceConfigError,
    LamesCubeError,
    MissingCRSError,
    TrainingConfigError,
)
from lames_cube.ml.checkpoint import check_bands, load_checkpoint, load_model
from lames_cube.ml.models import ModelSpec, check_patch_size
from lames_cube.ml.training import resolve_device
from lames_cube.prediction import NODATA_CLASS

__all__ = ["BLENDS", "EDGES", "NODATA_CLASS", "InferenceConfigError", "MissingCRSError", "ModelHandle",
           "WindowLayout", "predict", "predict_array", "taper", "warm_up", "window_layout"]

#: Blending of overlapping windows.
BLENDS = ("hann", "mean")
#: What windows see beyond the cube's edge (:func:`predict`).
EDGES = ("reflect", "nodata")
#: Default window pixels per batch (8 windows of 256 px).
BATCH_PIXELS = 8 * 256 * 256



# --------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class WindowLayout:
    """Where the windows lie: ``patch`` px, ``stride`` apart, ``halo`` px of context read
    around each tile (``patch // 2`` for seamless tiles), ``tile`` px per block."""

    tile: int
    patch: int
    overlap: int
    halo: int
    blend: str

    @property
    def stride(self) -> int:
        return self.patch - self.overlap

    @property
    def reach(self) -> int:
        """Pixels a window reaches beyond a tile edge (half a window)."""
        return self.patch // 2

    def starts(self, length: int) -> np.ndarray:
        """Window starts, in the coordinates of a block padded by :attr:`reach` on both sides,
        of every window that reaches into a tile of ``length`` px."""
        count = math.ceil((length + self.reach) / self.stride)
        return np.arange(count, dtype=np.int64) * self.stride

    def weights(self) -> np.ndarray:
        """The ``(patch, patch)`` blending weights of one window (float32)."""
        return taper(self.patch, self.overlap, self.blend)


def taper(patch: int, overlap: int, blend: str = "hann") -> np.ndarray:
    """Blending weights of a window: 1 inside, Hann ramps over ``overlap`` px at each edge.

    The ramps of two windows ``patch - overlap`` apart sum to 1 pixel by pixel; with
    ``overlap = patch // 2`` the window is the Hann window of :func:`lames_cube._kernels.hann`.

    Examples
    --------
    >>> edge = np.sqrt(np.diag(taper(8, 4)))  # the 1-D profile
    >>> bool(np.allclose(edge[4:] + edge[:4], 1))  # two windows 4 px apart sum to 1
    True
    >>> float(taper(8, 2, "mean").min())
    1.0
    """
    if blend == "mean":
        return np.ones((patch, patch), np.float32)
    edge = np.ones(patch)
    if overlap:
        ramp = np.sin(np.pi * (np.arange(overlap) + 0.5) / (2 * overlap)) ** 2
        edge[:overlap] = ramp
        edge[patch - overlap:] = ramp[::-1]
    return np.outer(edge, edge).astype(np.float32)


def window_layout(*, tile: int, patch: int, overlap: int | None = None,
                  halo: int | bool | None = None, blend: str = "hann") -> WindowLayout:
    """Check and fix the window settings of :func:`predict`.

    Raises
    ------
    InferenceConfigError
        A tile that is not a whole number of strides, an overlap outside ``[0, patch/2]``, a
        halo outside ``[0, patch/2]``, an unknown blend, or a patch larger than the tile.

    Examples
    --------
    >>> lay = window_layout(tile=2304, patch=256)
    >>> lay.stride, lay.halo, len(lay.starts(2304))
    (192, 128, 13)
    """
    for name, value in (("tile", tile), ("patch", patch)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise InferenceConfigError(f"{name}={value!r} must be a positive number of pixels, "
                                       f"e.g. {name}={2304 if name == 'tile' else 256}.")
    tile, patch = int(tile), int(patch)
    if patch % 2:
        raise InferenceConfigError(f"patch={patch} must be even (windows are centred on tile "
                                   f"edges); use e.g. patch={patch + 1}.")
    if blend not in BLENDS:
        raise InferenceConfigError(f"blend={blend!r} is not one of {BLENDS}; pick one of them.")
    if overlap is None:  # about a quarter window, such that the stride divides the tile
        fits = [o for o in range(patch // 8, patch // 2 + 1) if tile % (patch - o) == 0]
        overlap = min(fits, key=lambda o: (abs(o - patch // 4), o)) if fits else patch // 4
    if isinstance(overlap, bool) or not isinstance(overlap, int | np.integer) or not (
            0 <= overlap <= patch // 2):
        raise InferenceConfigError(f"overlap={overlap!r} must be a whole number of pixels in "
                                   f"[0, patch/2 = {patch // 2}]; e.g. overlap={patch // 4}.")
    overlap = int(overlap)
    if patch > tile:
        raise InferenceConfigError(f"patch={patch} is larger than tile={tile}; use a tile of "
                                   f"at least one window, e.g. tile={2304 if patch <= 2304 else patch}.")
    stride = patch - overlap
    if tile % stride:
        fit = -(-tile // stride) * stride
        raise InferenceConfigError(
            f"tile={tile} px is not a multiple of the window stride {stride} px (patch {patch} - "
            f"overlap {overlap}), so the windows of neighbouring tiles would not line up; use "
            f"tile={fit} or {fit - stride if fit > stride else fit}, or a patch/overlap whose "
            f"difference divides {tile} (e.g. patch=256, overlap=64 for tiles of 2304).")
    if halo is None or halo is True:
        halo = patch // 2
    elif halo is False:
        halo = 0
    if isinstance(halo, bool) or not isinstance(halo, int | np.integer) or not (
            0 <= halo <= patch // 2):
        raise InferenceConfigError(f"halo={halo!r} must be a whole number of pixels in [0, "
                                   f"patch/2 = {patch // 2}] (default {patch // 2}: seamless "
                                   f"tiles); 0 scores every tile on its own.")
    return WindowLayout(tile=tile, patch=patch, overlap=overlap, halo=int(halo), blend=blend)


# --------------------------------------------------------------------------- model handle
_LOADED: dict[tuple, tuple[torch.nn.Module, dict[str, Any]]] = {}
_LOCK = threading.Lock()
#: How many times this process loaded a model (tests check "once per worker").
LOADS = {"count": 0}


#: glibc malloc settings once a model runs on the CPU in this process (:func:`_keep_freed_memory`).
_HEAP_SETTINGS = {"mmap_threshold": 256 << 20, "trim_threshold": 512 << 20}
_HEAP = {"set": None}


def _keep_freed_memory() -> bool:
    """Let glibc keep the memory of one forward pass for the next (once per process).

    By default glibc maps large blocks (above a threshold that adapts between 128 kB and
    32 MB) straight from the kernel and unmaps them when freed, and trims the heap's free top
    past twice that threshold. Between the large arrays of a block, a forward pass on the CPU
    then page-faults its activations in again at every batch: inside :func:`predict` about
    130,000 faults per 100 windows of 256 px, a quarter of the forward's time (the kernel
    zeroes each page, so more under load), in dask's worker threads too. Blocks of up to
    ``_HEAP_SETTINGS["mmap_threshold"]`` now come from the heap, which keeps up to
    ``_HEAP_SETTINGS["trim_threshold"]`` free for reuse: the peak memory is the same, the
    process just does not hand its peak back to the kernel between batches and blocks.

    Not on other C libraries, and not when ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` is set in the environment: settings made there win (dask's
    nanny sets the latter in worker processes unless told not to, see
    :mod:`lames_cube.cluster`). Returns whether the settings are in force.
    """
    if _HEAP["set"] is None:
        with _LOCK:
            if _HEAP["set"] is None:
                _HEAP["set"] = _set_heap()
    return bool(_HEAP["set"])


def _set_heap() -> bool:
    if not sys.platform.startswith("linux") or any(
            name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl has no such knobs)
            return False
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, _HEAP_SETTINGS["mmap_threshold"])
                and mallopt(m_trim_threshold, _HEAP_SETTINGS["trim_threshold"]))


def file_digest(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file (checkpoints identify the model that wrote a prediction)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _device(device: str) -> str:
    """:func:`lames_cube.ml.training.resolve_device`, its errors as inference errors."""
    try:
        return str(resolve_device(device))
    except TrainingConfigError as err:
        raise InferenceConfigError(str(err)) from None


@dataclass(frozen=True)
class ModelHandle:
    """What a worker needs to load a model: the checkpoint's path and digest and the settings.

    Pickled into the graph (a few hundred bytes); :meth:`get` loads the model once per process
    and device, and checks that the file is still the checkpoint the graph was built for.
    """

    path: str
    digest: str
    device: str = "auto"
    threads: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str], *, device: str = "auto",
                        threads: int | None = None) -> ModelHandle:
        """Read a checkpoint's values (not its weights into a model) and make the handle."""
        path = Path(checkpoint)
        meta = load_checkpoint(path)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise InferenceConfigError(f"threads={threads!r} must be a positive integer (torch "
                                       f"threads per task on the CPU), or None for 1.")
        _device(device)  # fail now, not on a worker
        light = {k: v for k, v in meta.items() if k not in ("state_dict", "curve")}
        return cls(str(path.resolve()), file_digest(path), device, threads, light)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(_device(self.device))

    def get(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The model (eval mode, on the device) and the checkpoint's values, loaded once."""
        dev = self.torch_device
        key = (self.path, self.digest, str(dev))
        with _LOCK:
            if key not in _LOADED:
                if file_digest(self.path) != self.digest:
                    raise CheckpointError(
                        f"the checkpoint {self.path!r} changed after the prediction graph was "
                        "built (its sha256 differs); build the prediction again with predict().")
                model, meta = load_model(self.path, device=dev)
                # channels-last convolutions: about 1.5x faster on this CPU (oneDNN) and on GPUs
                model = model.to(memory_format=torch.channels_last)
                _LOADED[key] = (model, meta)
                LOADS["count"] += 1
            if dev.type == "cpu":
                torch.set_num_threads(self.threads or 1)
        if dev.type == "cpu":
            _keep_freed_memory()
        return _LOADED[key]


def warm_up(checkpoint: str | os.PathLike[str], device: str = "auto",
            threads: int | None = None) -> int:
    """Load a checkpoint's model in this process now (``client.run(warm_up, path)`` loads it
    on every worker of a cluster before timing or scoring). Returns the process's load count."""
    ModelHandle.from_checkpoint(checkpoint, device=device, threads=threads).get()
    return LOADS["count"]


# --------------------------------------------------------------------------- one block
def _valid(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """``(y, x)``: pixels with data (a band not nodata; in float cubes no band NaN)."""
    if nodata is None:
        valid = np.ones(block.shape[1:], bool)
    else:  # band by band: no (band, y, x) mask to reduce
        valid = block[0] != nodata
        for plane in block[1:]:
            valid |= plane != nodata
    if np.issubdtype(block.dtype, np.floating):  # NaN in any band: no data, whatever nodata
        valid &= ~np.isnan(block).any(axis=0)
    return valid


def _standardise_into(out: np.ndarray, block: np.ndarray, valid: np.ndarray, mean: np.ndarray,
                      std: np.ndarray) -> None:
    """Write ``block`` ``(band, y, x)`` standardised into ``out`` ``(y, x, band)`` float32
    (channels last, as the model takes it); 0 (the band mean) where there is no data. Band
    by band over strips of rows that stay in the CPU's cache (a transposed read of the whole
    block was about 5x slower)."""
    scale = (1.0 / std).astype(np.float32)
    for r in range(0, block.shape[1], 64):
        strip = out[r:r + 64]
        for b in range(block.shape[0]):
            plane = strip[..., b]
            np.subtract(block[b, r:r + 64], mean[b], out=plane, casting="unsafe")
            plane *= scale[b]
    if not valid.all():
        out *= valid[..., None]
    if np.issubdtype(block.dtype, np.floating):
        np.nan_to_num(out, copy=False)


def gpu_batch_size(free_bytes: float, window_bytes: float, *, fraction: float = 0.5,
                   cap: int = 256) -> int:
    """Windows per batch that fill ``fraction`` of a GPU's free memory.

    Examples
    --------
    >>> gpu_batch_size(8e9, 150e6), gpu_batch_size(1e6, 150e6), gpu_batch_size(80e9, 1e6)
    (26, 1, 256)
    """
    return int(max(1, min(cap, fraction * free_bytes // max(window_bytes, 1.0))))


_CUDA_BATCH: dict[tuple, int] = {}
#: One forward pass at a time per CUDA device in a process: each is sized to the free memory,
#: and concurrent tasks feeding one GPU gain nothing.
_GPU_LOCKS: dict[str, threading.Lock] = {}


def _batch(handle: ModelHandle, model: torch.nn.Module, bands: int, patch: int,
           batch_size: int | None) -> int:
    """The batch size: given, or by pixels on the CPU, or measured on the GPU: one forward
    pass of 2 windows under autocast gives the memory per window (once per worker)."""
    if batch_size is not None:
        return batch_size
    dev = handle.torch_device
    if dev.type != "cuda":
        return max(1, BATCH_PIXELS // (patch * patch))
    key = (handle.path, handle.digest, str(dev), patch)
    with _gpu_lock(dev):
        if key not in _CUDA_BATCH:  # pragma: no cover - needs CUDA (tests marked gpu)
            _CUDA_BATCH[key] = _measure_batch(model, bands, patch, dev)
    return _CUDA_BATCH[key]


def _gpu_lock(dev: torch.device) -> Any:
    """The lock of a CUDA device (a no-op context on the CPU)."""
    if dev.type != "cuda":
        return contextlib.nullcontext()
    with _LOCK:
        return _GPU_LOCKS.setdefault(str(dev), threading.Lock())


def _measure_batch(model: torch.nn.Module, bands: int, patch: int,
                   dev: torch.device) -> int:  # pragma: no cover - needs CUDA
    """Windows per batch: the memory of one forward pass of 2 windows under autocast."""
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    x = torch.zeros((2, bands, patch, patch), device=dev).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        model(x)
    per = (torch.cuda.max_memory_allocated(dev) - base) / 2
    free, _ = torch.cuda.mem_get_info(dev)
    return gpu_batch_size(free, per)


def predict_array(block: np.ndarray, handle: ModelHandle, layout: WindowLayout, *,
                  batch_size: int | None = None,
                  nodata: float | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Score one block: ``(band, n_y + 2*halo, n_x + 2*halo)`` pixels of a tile and its halo.

    Returns
    -------
    (class, probability)
        ``(n_y, n_x)`` each: the most likely class, uint8 (:data:`NODATA_CLASS` where the cube
        has no data), and the mine probability (1 - p(background)), float32 (NaN there).
    """
    model, meta = handle.get()
    dev = handle.torch_device
    halo, reach, patch = layout.halo, layout.reach, layout.patch
    ny, nx = block.shape[1] - 2 * halo, block.shape[2] - 2 * halo
    cls = np.full((ny, nx), NODATA_CLASS, np.uint8)
    prob = np.full((ny, nx), np.nan, np.float32)
    mean = np.asarray(meta["band_mean"], np.float32)
    std = np.asarray(meta["band_std"], np.float32)
    valid = _valid(block, nodata)
    core = valid[halo:halo + ny, halo:halo + nx]
    if not core.any():  # nothing to score (an all-nodata tile): no model call at all
        return cls, prob
    rows, cols = layout.starts(ny), layout.starts(nx)
    # The block padded to the window grid: the missing part of the halo (halo < reach) and the
    # windows that run past the block's end see nodata (standardised 0), as at the cube's edge.
    height = max(int(rows[-1]) + patch, ny + 2 * reach)
    width = max(int(cols[-1]) + patch, nx + 2 * reach)
    off = reach - halo
    inside = (slice(off, off + block.shape[1]), slice(off, off + block.shape[2]))
    full = np.zeros((height, width, block.shape[0]), np.float32)
    _standardise_into(full[inside], block, valid, mean, std)
    seen = np.zeros((height, width), bool)
    seen[inside] = valid
    windows = [(r, c) for r in rows for c in cols if seen[r:r + patch, c:c + patch].any()]
    n_classes = int(meta["model"]["classes"])
    batch_size = _batch(handle, model, block.shape[0], patch, batch_size)
    with torch.inference_mode():
        # moved once per block, channels last: windows are cut as (P, P, bands) runs and fed
        # to the channels-last model as they are
        image = torch.from_numpy(full).to(dev)
        total = torch.zeros((n_classes, height, width), dtype=torch.float32, device=dev)
        weight = torch.zeros((height, width), dtype=torch.float32, device=dev)
        w = torch.from_numpy(layout.weights()).to(dev)
        amp = dev.type == "cuda"
        for i in range(0, len(windows), batch_size):
            part = windows[i:i + batch_size]
            x = torch.stack([image[r:r + patch, c:c + patch] for r, c in part]).permute(
                0, 3, 1, 2)
            with _gpu_lock(dev), torch.autocast(device_type=dev.type, dtype=torch.float16,
                                                enabled=amp):
                logits = model(x)
            p = torch.softmax(logits.float(), dim=1)
            for k, (r, c) in enumerate(part):
                total[:, r:r + patch, c:c + patch] += p[k] * w
                weight[r:r + patch, c:c + patch] += w
        sl = (slice(reach, reach + ny), slice(reach, reach + nx))
        total, weight = total[(slice(None), *sl)], weight[sl]
        mean_p = (total / weight.clamp_min(1e-12)).cpu().numpy()
        weight = weight.cpu().numpy()
    ok = core & (weight > 0)
    # argmax over the few classes class by class (first maximum, as np.argmax): numpy's
    # argmax along the leading axis of (class, y, x) was the slowest step after the model
    cls[...] = 0
    best = mean_p[0].copy()
    for k in range(1, n_classes):
        np.copyto(cls, np.uint8(k), where=mean_p[k] > best)
        np.maximum(best, mean_p[k], out=best)
    np.subtract(np.float32(1.0), mean_p[0], out=prob)
    np.clip(prob, 0.0, 1.0, out=prob)
    if not ok.all():
        cls[~ok] = NODATA_CLASS
        prob[~ok] = np.nan
    return cls, prob


def quantise(prob: np.ndarray) -> np.ndarray:
    """Mine probability (float, NaN = no data) as uint8 ``round(p * 255)`` (0 = no data)."""
    return np.rint(np.nan_to_num(prob, nan=0.0) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- the graph
def _geobox(cube: xr.DataArray):
    try:
        gbox = cube.odc.geobox
    except Exception:
        gbox = None
    if gbox is None or gbox.crs is None:
        raise MissingCRSError(
            f"the cube {cube.name!r} (dims {dict(cube.sizes)}) has no CRS, so its prediction "
            "would have no grid; give it one, e.g. cube.odc.assign_crs('EPSG:32719') or "
            "cube.rio.write_crs('EPSG:32719'), or build it with lames_cube.build_cube / "
            "lames_cube.io.open_cube.")
    return gbox


def _spatial(cube: xr.DataArray) -> tuple[str, str]:
    if "y" in cube.dims and "x" in cube.dims:
        return "y", "x"
    if "latitude" in cube.dims and "longitude" in cube.dims:
        return "latitude", "longitude"
    raise InferenceConfigError(f"the cube has dims {tuple(cube.dims)}; predict needs spatial "
                               f"dims ('y', 'x') (or latitude/longitude) and 'band'.")


def _edges(size: int, tile: int, halo: int) -> tuple[list[tuple[int, int]], tuple[int, ...]]:
    """Blocks ``[start, stop)`` of a dim padded by ``halo`` on both sides, and the padded dim's
    chunks: strips of ``2*halo`` around every tile edge, tile middles between them."""
    blocks = [(s, min(s + tile, size) + 2 * halo) for s in range(0, size, tile)]
    cuts = sorted({0, size + 2 * halo} | {b for blk in blocks for b in blk}
                  | {s + 2 * halo for s, _ in blocks})
    cuts = [c for c in cuts if 0 <= c <= size + 2 * halo]
    chunks = tuple(b - a for a, b in pairwise(cuts) if b > a)
    return blocks, chunks


def halo_chunks(size: int, tile: int, halo: int) -> tuple[int, ...]:
    """Chunks of a cube dim such that :func:`predict` reads every source chunk once: the tile
    middles and the strips of ``2 * halo`` px around tile edges (a source chunked so, like the
    synthetic world's Chile cube, is never rendered twice).

    Examples
    --------
    >>> halo_chunks(1000, 400, 50)
    (50, 300, 100, 300, 100, 150)
    """
    _, padded = _edges(size, tile, halo)
    cuts = np.cumsum((0, *padded)) - halo
    cuts = sorted({0, size} | {int(c) for c in cuts if 0 < c < size})
    return tuple(b - a for a, b in pairwise(cuts))


def _pad(data, pad: list[tuple[int, int]], fill: float, edge: str):
    """``data`` padded by ``pad`` px: ``fill`` (``edge="nodata"``) or mirrored (``"reflect"``;
    numpy's ``symmetric``, also when the pad is wider than the data)."""
    if edge == "nodata":
        return da.pad(data, pad, mode="constant", constant_values=fill)
    left = list(pad)
    while any(a or b for a, b in left):
        step = [(min(a, n), min(b, n)) for (a, b), n in zip(left, data.shape, strict=True)]
        data = da.pad(data, step, mode="symmetric")
        left = [(a - sa, b - sb) for (a, b), (sa, sb) in zip(left, step, strict=True)]
    return data


def _haloed(data, ydim: int, xdim: int, tile: int, halo: int, fill: float,
            edge: str = "nodata"):
    """A dask array whose blocks along y/x are the tiles with their halo (``tile + 2*halo``
    px; the cube padded at its edges, see :func:`_pad`): dask's ``overlap`` with the halo cut
    into strips of their own, so each source pixel is read once per strip."""
    pad = [(0, 0)] * data.ndim
    pad[ydim] = pad[xdim] = (halo, halo)
    padded = _pad(data, pad, fill, edge) if halo else data
    yblocks, ychunks = _edges(data.shape[ydim], tile, halo)
    xblocks, xchunks = _edges(data.shape[xdim], tile, halo)
    chunks = list(padded.chunks)
    chunks[ydim], chunks[xdim] = ychunks, xchunks
    strips = padded.rechunk(tuple(chunks))
    ystart = np.cumsum((0, *ychunks))
    xstart = np.cumsum((0, *xchunks))
    name = "haloed-" + tokenize(strips.name, tile, halo)
    other = [d for d in range(data.ndim) if d not in (ydim, xdim)]
    dsk: dict = {}
    for idx in product(*(range(len(strips.chunks[d])) for d in other)):
        for i, (y0, y1) in enumerate(yblocks):
            ks = range(int(np.searchsorted(ystart, y0)), int(np.searchsorted(ystart, y1)))
            for j, (x0, x1) in enumerate(xblocks):
                ls = range(int(np.searchsorted(xstart, x0)), int(np.searchsorted(xstart, x1)))

                def key(k, ll, idx=idx):
                    full = [0] * data.ndim
                    for d, v in zip(other, idx, strict=True):
                        full[d] = v
                    full[ydim], full[xdim] = k, ll
                    return (strips.name, *full)

                out = [0] * data.ndim
                for d, v in zip(other, idx, strict=True):
                    out[d] = v
                out[ydim], out[xdim] = i, j
                grid = [[key(k, ll) for ll in ls] for k in ks]
                dsk[(name, *out)] = (_assemble, grid, ydim, xdim)
    out_chunks = list(strips.chunks)
    out_chunks[ydim] = tuple(b - a for a, b in yblocks)
    out_chunks[xdim] = tuple(b - a for a, b in xblocks)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[strips])
    return da.Array(graph, name, chunks=tuple(out_chunks), dtype=data.dtype)


def _assemble(grid: list[list[np.ndarray]], ydim: int, xdim: int) -> np.ndarray:
    return np.concatenate([np.concatenate(row, axis=xdim) for row in grid], axis=ydim)


def _block(block: xr.DataArray, *, handle: ModelHandle, layout: WindowLayout,
           batch_size: int | None,
           nodata: float | None, spatial: tuple[str, str], var_attrs: Mapping[str, dict],
           probability: str) -> xr.Dataset:
    """xr.map_blocks' function: one tile (plus halo) in, its class and probability out."""
    ydim, xdim = spatial
    lead = [d for d in block.dims if d not in ("band", ydim, xdim)]
    arr = block.transpose(*lead, "band", ydim, xdim).values
    arr = arr.reshape((-1, *arr.shape[-3:]))
    outs = [predict_array(a, handle, layout, batch_size=batch_size, nodata=nodata) for a in arr]
    if probability == "uint8":
        outs = [(c, quantise(p)) for c, p in outs]
    shape = (*(block.sizes[d] for d in lead), arr.shape[-2] - 2 * layout.halo,
             arr.shape[-1] - 2 * layout.halo)
    dims = (*lead, ydim, xdim)
    return xr.Dataset({
        "class": (dims, np.stack([o[0] for o in outs]).reshape(shape), var_attrs["class"]),
        "probability": (dims, np.stack([o[1] for o in outs]).reshape(shape),
                        var_attrs["probability"]),
    }, coords={d: block[d].variable for d in lead if d in block.coords})


def _nodata(cube: xr.DataArray) -> float | None:
    """The cube's nodata value (0 for integer cubes without one), None for NaN (float)."""
    value = cube.attrs.get("nodata", cube.attrs.get("_FillValue"))
    if np.issubdtype(cube.dtype, np.floating):
        return None if value is None or math.isnan(float(value)) else value
    return 0 if value is None else value


def predict(cube: xr.DataArray, checkpoint: str | os.PathLike[str] | ModelHandle, *,
            tile: int = 2304, patch: int | None = None, overlap: int | None = None,
            halo: int | bool | None = None, blend: str = "hann", edge: str = "reflect",
            batch_size: int | None = None, device: str = "auto", threads: int | None = None,
            probability: str = "uint8") -> xr.Dataset:
    """The model's prediction over a cube, lazy, on the cube's grid.

    Parameters
    ----------
    cube
        ``(band, y, x)`` or ``(time|year, band, y, x)`` reflectance with a CRS (an odc-geo
        GeoBox), e.g. a composite of :func:`lames_cube.build_cube` or a store of
        :func:`lames_cube.io.open_cube`; it must hold the checkpoint's bands (others are
        ignored). Pixels where every band is nodata (``attrs["nodata"]``, 0 by default for
        integer cubes) or, in float cubes, any band is NaN are not scored.
    checkpoint
        A checkpoint of :func:`lames_cube.ml.train` (or a :class:`ModelHandle`).
    tile
        Pixels per block along y and x (a multiple of the window stride): the unit of work and
        of writing (:func:`lames_cube.ml.write_prediction`). Default 2304, the LAMES tile.
    patch
        Window size fed to the model (default: the checkpoint's patch size); a multiple of
        ``2 ** encoder_depth`` and even.
    overlap
        Pixels shared by neighbouring windows, at most ``patch // 2`` (default: the overlap
        nearest ``patch // 4`` whose stride divides the tile, e.g. 64 for 256-px windows in
        2304-px tiles).
    halo
        Context read around each tile: ``patch // 2`` (default, seamless), or fewer pixels
        (``0``/``False``: every tile scored on its own, with seams).
    blend
        ``"hann"`` (Hann ramps over the overlap) or ``"mean"``.
    edge
        What the windows see beyond the cube's edge: ``"reflect"`` (default: the cube
        mirrored, as if the ground went on) or ``"nodata"`` (standardised to the band means).
        The mirror is the halo's: with ``halo=0`` the edge is nodata (recorded so in the
        attrs), with a partial halo mirrored over the halo and nodata beyond.
    batch_size
        Windows per forward pass (default: on the CPU about 8 windows of 256 px worth of
        pixels; on CUDA sized to the GPU's free memory, measured once per worker).
    device
        ``"auto"`` (CUDA when present, else the CPU), ``"cpu"`` or ``"cuda[:n]"``.
    threads
        torch threads per task on the CPU (default 1: dask runs one task per core).
    probability
        ``"uint8"`` (default: ``round(p * 255)``, 0 where there is no data) or ``"float32"``
        (NaN where there is no data).

    Returns
    -------
    xarray.Dataset
        Lazy; ``class`` uint8 (:data:`NODATA_CLASS` = 255 where there is no data) and
        ``probability`` (mine probability, uint8 x 255 or float32), dims ``(..., y, x)``, chunked one tile
        per chunk, on the cube's GeoBox; attrs name the model (checkpoint path and sha256, task,
        classes, bands) and the window settings.

    Raises
    ------
    MissingCRSError
        The cube has no CRS.
    BandMismatchError
        The cube lacks a band of the checkpoint.
    InferenceConfigError, PatchSizeError
        Bad tile, patch, overlap, halo, blend, batch size or device.
    CheckpointError
        A missing or foreign checkpoint.

    Examples
    --------
    >>> import tempfile, numpy as np, xarray as xr
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_coords
    >>> from lames_cube.testing.ml_sets import pointwise_checkpoint
    >>> gbox = GeoBox.from_bbox((300000, 7000000, 305120, 7005120), "EPSG:32719", resolution=10)
    >>> cube = xr.DataArray(np.full((2, 512, 512), 500, np.uint16), dims=("band", "y", "x"),
    ...                     coords={"band": ["B04", "B08"], **xr_coords(gbox)})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ckpt = pointwise_checkpoint(f"{tmp}/m.pt", bands=["B04", "B08"])
    ...     pred = predict(cube, ckpt, tile=256, patch=64)
    ...     pred["class"].dtype, pred.chunks["y"], int(pred["class"].compute().max()) <= 1
    (dtype('uint8'), (256, 256), True)
    """
    handle = checkpoint if isinstance(checkpoint, ModelHandle) else ModelHandle.from_checkpoint(
        checkpoint, device=device, threads=threads)
    meta = handle.meta
    if not isinstance(cube, xr.DataArray):
        raise InferenceConfigError(f"cube must be an xarray.DataArray (band, y, x); got "
                                   f"{type(cube).__name__}. For a store use "
                                   f"lames_cube.io.open_cube(path).")
    ydim, xdim = _spatial(cube)
    if "band" not in cube.dims:
        raise BandMismatchError(f"the cube has no 'band' dim (dims {tuple(cube.dims)}); the "
                                f"model needs bands {list(meta['bands'])}.")
    gbox = _geobox(cube)
    bands = check_bands(meta, [str(b) for b in cube["band"].values], "the cube")
    spec = ModelSpec.from_dict(meta["model"])
    patch = int(meta["patch_size"]) if patch is None else patch
    layout = window_layout(tile=tile, patch=patch, overlap=overlap, halo=halo, blend=blend)
    check_patch_size(spec, layout.patch)
    if batch_size is not None and (isinstance(batch_size, bool) or
                                   not isinstance(batch_size, int) or batch_size < 1):
        raise InferenceConfigError(f"batch_size={batch_size!r} must be a positive number of "
                                   f"windows, e.g. 8.")
    if edge not in EDGES:
        raise InferenceConfigError(f"edge={edge!r} must be one of {list(EDGES)}.")
    if probability not in ("uint8", "float32"):
        raise InferenceConfigError(f"probability={probability!r} must be 'uint8' or 'float32'.")
    lead = [d for d in cube.dims if d not in ("band", ydim, xdim)]
    cube = cube.sel(band=bands).transpose(*lead, "band", ydim, xdim)
    nodata = _nodata(cube)
    data = cube.data if isinstance(cube.data, da.Array) else da.from_array(cube.values)
    # y/x keep the source's chunks: _haloed cuts them into tile middles and halo strips, so a
    # source chunked on that pattern (halo_chunks) is read once (no rechunk to tiles first)
    data = data.rechunk({**{i: 1 for i in range(len(lead))}, len(lead): -1})
    fill = np.nan if nodata is None else nodata
    nd = data.ndim
    blocks = _haloed(data, nd - 2, nd - 1, layout.tile, layout.halo, fill, edge)
    source = xr.DataArray(blocks, dims=cube.dims, coords={
        d: cube[d].variable for d in [*lead, "band"] if d in cube.coords})
    attrs = {**_attrs(handle, layout, bands), "edge": edge if layout.halo else "nodata"}
    dims = (*lead, ydim, xdim)
    out_chunks = (*([1] * len(lead)), tile, tile)
    shape = (*(cube.sizes[d] for d in lead), cube.sizes[ydim], cube.sizes[xdim])
    lead_coords = {d: cube[d].variable for d in lead if d in cube.coords}
    template = xr.Dataset({
        "class": (dims, da.zeros(shape, dtype=np.uint8, chunks=out_chunks), {
            "long_name": "predicted class", "nodata": NODATA_CLASS,
            "classes": list(meta.get("classes", [])), "flag_values": list(range(
                int(meta["model"]["classes"])))}),
        "probability": (dims, da.zeros(shape, dtype=probability, chunks=out_chunks), {
            "long_name": "mine probability (1 - p(background))",
            "units": "1/255" if probability == "uint8" else "1"}),
    }, coords=lead_coords, attrs=attrs)
    out = xr.map_blocks(_block, source, kwargs={
        "handle": handle, "layout": layout, "batch_size": batch_size, "nodata": nodata,
        "spatial": (ydim, xdim), "probability": probability,
        "var_attrs": {k: dict(v.attrs) for k, v in template.data_vars.items()}},
        template=template)
    coords = xr_coords(gbox, crs_coord_name="spatial_ref")
    return out.assign_coords({ydim: coords[ydim] if ydim in coords else cube[ydim],
                              xdim: coords[xdim] if xdim in coords else cube[xdim],
                              "spatial_ref": coords["spatial_ref"]})


def _attrs(handle: ModelHandle, layout: WindowLayout, bands: Sequence[Hashable]) -> dict:
    meta = handle.meta
    return {
        "model_checkpoint": handle.path, "model_sha256": handle.digest,
        "model_task": str(meta.get("task", "")), "model_bands": [str(b) for b in bands],
        "model_classes": list(meta.get("classes", [])),
        "model_spec": dict(meta["model"]) if isinstance(meta["model"], Mapping) else {},
        "tile": layout.tile, "patch": layout.patch, "overlap": layout.overlap,
        "halo": layout.halo, "blend": layout.blend,
    }
