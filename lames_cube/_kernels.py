"""numba kernels on plain arrays: window gather, blended merge, summed-area tables.

Kernels take and fill preallocated NumPy arrays and check nothing: the validating wrappers are
in :mod:`lames_cube.patches` and :mod:`lames_cube.sampling` (DESIGN.md §4). Each kernel has a
slow NumPy reference in ``tests/test_kernels_patches.py``, driven by the same table of cases as
the benchmarks (``lames_cube.testing.patch_cases``).

Examples
--------
>>> import numpy as np
>>> src = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
>>> out = np.empty((1, 2, 2, 2), np.uint16)
>>> gather(src, np.array([3]), np.array([4]), out, 0)  # half outside: filled with 0
>>> out[0, 0].tolist()
[[19, 0], [0, 0]]
>>> table = summed_area(np.eye(3, dtype=np.uint8))
>>> int(window_sums(table, np.array([0]), np.array([0]), 2, 2)[0])
2
"""

from __future__ import annotations

import numba as nb
import numpy as np


def _gather(src, rows, cols, out, fill):  # pragma: no cover - compiled
    """Copy the windows ``src[:, r:r+s, c:c+s]`` into ``out[k]`` (``out`` is ``(n, B, s, s)``);
    pixels outside ``src`` take ``fill``. Windows run in parallel; rows of windows inside the
    raster are copied as contiguous runs."""
    n, nb_, s, t = out.shape
    height, width = src.shape[1], src.shape[2]
    for k in nb.prange(n):
        r0, c0 = rows[k], cols[k]
        inside = r0 >= 0 and c0 >= 0 and r0 + s <= height and c0 + t <= width
        for b in range(nb_):
            for i in range(s):
                r = r0 + i
                if inside:
                    out[k, b, i, :] = src[b, r, c0:c0 + t]
                    continue
                inside_r = 0 <= r < height
                for j in range(t):
                    c = c0 + j
                    if inside_r and 0 <= c < width:
                        out[k, b, i, j] = src[b, r, c]
                    else:
                        out[k, b, i, j] = fill


#: :func:`_gather` over windows in parallel threads (a NumPy call), and serially for tasks that
#: already run in parallel (dask blocks: no oversubscription, no nested thread pools).
gather = nb.njit(cache=False, nogil=True, parallel=True)(_gather)
gather_serial = nb.njit(cache=False, nogil=True)(_gather)


@nb.njit(cache=False, nogil=True)
def merge(values, rows, cols, weights, total, weight):  # pragma: no cover - compiled
    """Add ``weights * values[k]`` into ``total[:, r:r+s, c:c+s]`` and ``weights`` into
    ``weight`` (the parts inside the raster); ``values`` is ``(n, B, s, s)``, ``total``
    ``(B, H, W)`` float64, ``weight`` ``(H, W)`` float64."""
    n, nb_, s, t = values.shape
    height, width = weight.shape
    for k in range(n):
        r0, c0 = rows[k], cols[k]
        for i in range(s):
            r = r0 + i
            if r < 0 or r >= height:
                continue
            for j in range(t):
                c = c0 + j
                if c < 0 or c >= width:
                    continue
                w = weights[i, j]
                weight[r, c] += w
                for b in range(nb_):
                    total[b, r, c] += w * values[k, b, i, j]


@nb.njit(cache=False, nogil=True)
def _summed_area(mask, out):  # pragma: no cover - compiled
    height, width = mask.shape
    for r in range(height):
        run = 0
        for c in range(width):
            run += mask[r, c]
            out[r + 1, c + 1] = out[r, c + 1] + run


def summed_area(mask: np.ndarray) -> np.ndarray:
    """The summed-area table of a 2-D array: ``(H + 1, W + 1)`` int64 with
    ``out[r, c] = mask[:r, :c].sum()``."""
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    _summed_area(mask, out)
    return out


@nb.njit(cache=False, nogil=True)
def _window_sums(table, rows, cols, height, width, out):  # pragma: no cover - compiled
    for k in range(rows.shape[0]):
        r, c = rows[k], cols[k]
        out[k] = table[r + height, c + width] - table[r, c + width] - table[r + height, c] + table[r, c]


def window_sums(table: np.ndarray, rows: np.ndarray, cols: np.ndarray, height: int,
                width: int) -> np.ndarray:
    """Sum of the masked array over each window ``[r:r+height, c:c+width]`` (inside the raster),
    in O(1) per window from its summed-area table."""
    out = np.empty(rows.shape[0], np.int64)
    _window_sums(table, rows.astype(np.int64), cols.astype(np.int64), height, width, out)
    return out


def hann(size: int) -> np.ndarray:
    """A 2-D Hann (cosine-squared) weight window, positive everywhere (sampled at pixel
    centres), 1 at the centre of an odd window: neighbours of half-overlapping windows sum to a
    near-constant weight, and a pixel seen by one window only still has weight > 0."""
    edge = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    return np.outer(edge, edge)


@nb.njit(cache=False, nogil=True)
def _clean_positions(bad, inv, size, limit, out, row_counts):  # pragma: no cover - compiled
    ny, nx = out.shape
    check_inv = inv.shape[0] > 0
    for r in range(ny):
        count = 0
        for c in range(nx):
            ok = bad[r + size, c + size] - bad[r, c + size] - bad[r + size, c] + bad[r, c] == 0
            if ok and check_inv:
                ok = inv[r + size, c + size] - inv[r, c + size] - inv[r + size, c] + inv[r, c] <= limit
            out[r, c] = ok
            count += ok
        row_counts[r] = count


def clean_positions(bad: np.ndarray, invalid: np.ndarray | None, size: int,
                    limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Which ``size``-px windows of a block hold no ``bad`` pixel and at most ``limit``
    ``invalid`` ones, for every top-left position, from summed-area tables (O(1) per window).

    Returns the ``(H - size + 1, W - size + 1)`` boolean map and its count per row."""
    ny, nx = bad.shape[0] - size + 1, bad.shape[1] - size + 1
    out = np.empty((ny, nx), np.bool_)
    rows = np.empty(ny, np.int64)
    inv = summed_area(invalid) if invalid is not None else np.zeros((0, 0), np.int64)
    _clean_positions(summed_area(bad), inv, size, limit, out, rows)
    return out, rows


@nb.njit(cache=False, nogil=True)
def _all_window_sums(table, size, out):  # pragma: no cover - compiled
    ny, nx = out.shape
    for r in range(ny):
        for c in range(nx):
            out[r, c] = (table[r + size, c + size] - table[r, c + size] - table[r + size, c]
                         + table[r, c])


def all_window_sums(mask: np.ndarray, size: int) -> np.ndarray:
    """The sum of ``mask`` over every ``size``-px window: ``(H - size + 1, W - size + 1)``
    int64, indexed by the window's top-left pixel."""
    out = np.empty((mask.shape[0] - size + 1, mask.shape[1] - size + 1), np.int64)
    _all_window_sums(summed_area(mask), size, out)
    return out


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int64)


@nb.njit(cache=False, inline="always")
def _popcount64(x):  # pragma: no cover - compiled (SWAR bit count)
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@nb.njit(cache=False, nogil=True)
def _locate_range(packed, words, row_starts, local, popcount, out, first, last):  # pragma: no cover
    nrows = row_starts.shape[0] - 1
    lo = 0
    for k in range(first, last):
        target = local[k]
        if target < row_starts[lo]:  # unsorted input: search from the start
            lo = 0
        # The row holding the target-th set bit (row_starts[r] <= target): gallop forward
        # from the previous one (sorted targets stay near each other), then bisect.
        step = 1
        hi = lo + 1
        while hi < nrows and row_starts[hi] <= target:
            lo = hi
            hi = lo + step
            step *= 2
        hi = min(hi, nrows)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if row_starts[mid] <= target:
                lo = mid
            else:
                hi = mid
        left = target - row_starts[lo]
        word = 0
        while True:  # 64 bits at a time
            bits = _popcount64(words[lo, word])
            if bits > left:
                break
            left -= bits
            word += 1
        byte = word * 8
        while popcount[packed[lo, byte]] <= left:
            left -= popcount[packed[lo, byte]]
            byte += 1
        value = packed[lo, byte]
        bit = 0
        while True:
            if value & (128 >> bit):
                if left == 0:
                    break
                left -= 1
            bit += 1
        out[k, 0] = lo
        out[k, 1] = byte * 8 + bit


@nb.njit(cache=False, nogil=True, parallel=True)
def _locate_parallel(packed, words, row_starts, local, popcount, out, parts):  # pragma: no cover
    n = local.shape[0]
    for p in nb.prange(parts):  # each part walks its own run of the sorted targets
        _locate_range(packed, words, row_starts, local, popcount, out, p * n // parts,
                      (p + 1) * n // parts)


def pack_rows(bits: np.ndarray) -> np.ndarray:
    """A boolean map packed along its rows, each row padded to whole 64-bit words (what
    :func:`locate_bits` reads)."""
    packed = np.packbits(bits, axis=1)
    pad = -packed.shape[1] % 8
    return np.pad(packed, ((0, 0), (0, pad))) if pad else packed


def locate_bits(packed: np.ndarray, row_starts: np.ndarray, local: np.ndarray, *,
                parallel: bool = True) -> np.ndarray:
    """Row and column of the ``local``-th set bits (counted row-major) of a bit map packed by
    :func:`pack_rows`, whose row ``r`` starts at set bit ``row_starts[r]`` (``row_starts`` is
    the cumulative count, with a leading 0 and the total last). ``parallel``: split the
    targets over threads (a NumPy call), or not (inside a dask task).

    Returns ``(k, 2)`` int64."""
    out = np.empty((local.shape[0], 2), np.int64)
    args = (packed, packed.view(np.uint64), row_starts, local.astype(np.int64), _POPCOUNT, out)
    if parallel and local.shape[0] >= 1024:
        _locate_parallel(*args, nb.get_num_threads() * 4)
    else:
        _locate_range(*args, 0, local.shape[0])
    return out
