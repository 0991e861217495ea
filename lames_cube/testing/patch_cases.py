"""The table of patch-kernel cases shared by the tests and the benchmarks (DESIGN.md §4).

Each case is ``(name, (bands, height, width), size, stride, edge)``: windows touching borders,
window = raster, odd strides, overlapping and gapped windows, padded windows past the edge.
"""

from __future__ import annotations

CASES: list[tuple[str, tuple[int, int, int], int, int | None, str]] = [
    ("tiles", (2, 64, 96), 32, None, "drop"),
    ("window-is-raster", (1, 32, 32), 32, None, "drop"),
    ("odd-stride-overlap", (3, 61, 47), 16, 7, "drop"),
    ("gaps", (1, 70, 70), 10, 23, "drop"),
    ("shift-to-edge", (2, 50, 61), 16, 16, "shift"),
    ("pad-past-edge", (2, 50, 61), 16, 16, "pad"),
    ("pad-larger-than-raster", (1, 20, 12), 32, None, "pad"),
    ("half-overlap", (1, 48, 48), 16, 8, "shift"),
]
