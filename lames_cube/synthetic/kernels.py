"""numba kernels of the synthetic world's renderer (plain arrays in, plain arrays out).

Every field of the world is a function of map coordinates in the world's texture CRS:

- **value noise** on integer lattices whose node values are hashed from (node, key), so a point
  gets the same value in any window of any grid (:func:`fill_lattices`, :func:`_vn`);
- **ground nodes**: the slow, smooth part of the ground (geology, relief gradient, salars, fans,
  channel and road fields, ...) evaluated on a global 80 m node lattice (:func:`ground_nodes`)
  and interpolated bilinearly to pixels; the node lattice is anchored on multiples of its
  spacing, so the interpolated value at a point does not depend on the window either;
- **pixel detail** (fine texture, grain, mines, roads, clouds) in :func:`compose`, one pass per
  pixel that writes the final digital numbers and the scene classification.

The wrappers in :mod:`lames_cube.synthetic.landscape` validate inputs and build the lattices; the
kernels trust them (no bounds checks). Results depend only on coordinates and keys: the same
point gives the same bytes in any window.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from lames_cube.bands import SATURATED_DN

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0
_S5 = np.uint64(5)
_MASK5 = np.uint64(31)
_S16 = np.uint64(16)
_S32 = np.uint64(32)
_S48 = np.uint64(48)
_MASK16 = np.uint64(0xFFFF)
_INV16 = 1.0 / 65536.0

#: Smooth ground fields, in the order of the ``fields`` table of :func:`ground_nodes`.
FIELDS = ("elevation", "relief", "warp_x", "warp_y", "albedo", "fan",
          "basin", "salty", "channel", "road", "paved", "lake",
          "vegetation", "warp_fine_x", "warp_fine_y", "dip", "ravine")
(F_ELEVATION, F_RELIEF, F_WARP_X, F_WARP_Y, F_ALBEDO, F_FAN,
 F_BASIN, F_SALTY, F_CHANNEL, F_ROAD, F_PAVED, F_LAKE,
 F_VEGETATION, F_WARP_FINE_X, F_WARP_FINE_Y, F_DIP, F_RAVINE) = range(len(FIELDS))

# Ground-node quantities (last axis of the node array). The first N_INTERP are interpolated
# bilinearly to each pixel; the others are read from the nodes as they are.
Q_GX, Q_GY = 0, 1  # slope of hills and mountains (dz/dx, dz/dy)
Q_WX, Q_WY = 2, 3  # warped coordinates (m) in which the geological units are cells
Q_ALBEDO = 4  # slow albedo variation of the ground (about 1)
Q_FAN, Q_BASIN = 5, 6  # fan field (bright gravel above FAN_EDGE), basin field (salar above
# SALT_EDGE, mountains below 0.6)
Q_CHAN, Q_ROAD, Q_LAKE, Q_VEG = 7, 8, 9, 10
Q_STRATA = 11  # strata coordinate: a unit's layers crop out where it crosses whole numbers
Q_RUGGED = 12  # depth scale of ravines (0..1, :func:`_ruggedness`)
N_INTERP = 13
Q_PAVED, Q_CRUST = 13, 14  # paved roads here (0/1); the salar's crust (1 salt, 2 dry clay)
Q_UNIFORM = 15  # 1 where the node cell to the east and south lies inside one geological cell
Q_SEEDS = 16  # the two nearest cell seeds of the node: (dx, dy, hash) each, dx/dy from the node
N_GROUND = 22

#: Largest displacement (m) of the geology's domain warp (1800 / 2 + 500 / 2).
WARP_M = 1150.0
#: Side (m) of the geological cells (domain-warped Voronoi cells, one unit each).
CELL_M = 2200.0
#: Width (m) over which two units blend at their boundary.
UNIT_EDGE_M = 12.0
#: Thickness (m of relief) of one stratum: a unit's layers crop out along the relief.
STRATUM_M = 45.0
#: Relief (m) of mountains (6 km) and hills (700 m): on plains, and extra on rugged ground.
RELIEF_M = (900.0, 2400.0, 120.0, 260.0)
#: Basin field values over which the salar's crust sets in (sharp at the pixel).
SALT_EDGE = (0.705, 0.712)
#: Fan field values over which bright fan gravel sets in (sharp at the pixel).
FAN_EDGE = (0.675, 0.685)
#: Depth (m) of the ravines cut into rugged ground, and of the rills everywhere.
RAVINE_M = 55.0
RILL_M = 8.0
#: Albedo spread of the pixel texture: sharp-edged patches (value noise in 5 steps) and a
#: 10 m grain.
PATCH_AMP = 0.30
GRAIN_AMP = 0.08
#: Hue spread of the ground (red up, blue down): 40 m patches and the pixel's own mixture.
HUE_AMP = 0.14
HUE_GRAIN = 0.45
# Cloud-node quantities.
C_OPACITY, C_SHADOW, C_THIN = 0, 1, 2
N_CLOUD = 3
#: Largest harmonised value the world writes, so that value + 1000 still fits in uint16.
MAX_DN = 64_000.0
#: The digital-number offset of the rendered product (processing baseline 04.00 and later).
DN_OFFSET = 1000.0
#: Share of the date's departure from the reference lighting of the relief that the L2A
#: processor's terrain correction leaves in the pixels.
TOPO_RESIDUAL = 0.08
#: Bands blurred by the point spread function at 10 m (B02, B03, B04, B08; B11 and B12 are
#: 20 m bands, whose own blur is the 2 x 2 mean of the 10 m render).
N_PSF = 4
#: Saturated (defective) pixels: every band at the uint16 maximum, SCL 1.
SATURATED = SATURATED_DN

# Per-date atmosphere and processor settings (``atm`` argument of :func:`compose`).
A_HAZE = 0  # 6 bands of additive path-radiance residual (reflectance; < 0: over-corrected)
A_VEG = 6  # vegetation vigour (0 dry season .. 1 green)
A_SNOWLINE = 7  # snow line (m); very high when there is no snow
A_SCL_KEY = 8  # key of the SCL processor's errors on this date
A_FP_BRIGHT = 9  # share of very bright surfaces flagged as cloud or snow
A_DARK = 10  # share of dark pixels (water, shadow) labelled "dark area" (2)
A_UNCLASSIFIED = 11  # share of clear pixels left unclassified (7)
A_SATURATED = 12  # share of bright pixels saturated (1)
N_ATM = 13
# Cloud truth (what the atmosphere really held), beside the SCL the processor writes.
T_CLEAR, T_THIN, T_CLOUD, T_SHADOW, T_SNOW = 0, 1, 2, 3, 4


@nb.njit(inline="always")
def _mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@nb.njit(inline="always")
def hash01(ix, iy, key):
    """Uniform number in [0, 1) from two int64 lattice coordinates and a uint64 key."""
    h = np.uint64(key) * _GOLD
    h = _mix64(h ^ np.uint64(np.int64(ix)))
    h = _mix64(h ^ (np.uint64(np.int64(iy)) * _GOLD))
    return float(h >> _S11) * _INV53


@nb.njit(cache=False, error_model="numpy", nogil=True)
def fill_lattices(flat, meta, keys):
    """Hash every node of every octave lattice into ``flat`` (see :func:`lattice_meta`)."""
    for k in range(meta.shape[0]):
        off, ix0, iy0, nx, ny = meta[k, 0], meta[k, 1], meta[k, 2], meta[k, 3], meta[k, 4]
        key = keys[k]
        for j in range(ny):
            for i in range(nx):
                flat[off + j * nx + i] = hash01(ix0 + i, iy0 + j, key)


@nb.njit(inline="always")
def _cell(flat, meta, inv, k, x, y):
    """The four node values of octave ``k`` around (x, y) and the position in the cell."""
    fx = x * inv[k]
    fy = y * inv[k]
    x0 = math.floor(fx)
    y0 = math.floor(fy)
    nx = meta[k, 3]
    p = meta[k, 0] + (np.int64(y0) - meta[k, 2]) * nx + (np.int64(x0) - meta[k, 1])
    return flat[p], flat[p + 1], flat[p + nx], flat[p + nx + 1], fx - x0, fy - y0


@nb.njit(inline="always")
def _vn_grad(flat, meta, inv, k, x, y):
    """Value noise of octave ``k`` and its gradient (per metre)."""
    v00, v10, v01, v11, rx, ry = _cell(flat, meta, inv, k, x, y)
    tx = rx * rx * (3.0 - 2.0 * rx)
    ty = ry * ry * (3.0 - 2.0 * ry)
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    value = top + (bottom - top) * ty
    dx = ((v10 - v00) * (1.0 - ty) + (v11 - v01) * ty) * 6.0 * rx * (1.0 - rx) * inv[k]
    dy = (bottom - top) * 6.0 * ry * (1.0 - ry) * inv[k]
    return value, dx, dy


@nb.njit(inline="always")
def _vn(flat, meta, inv, k, x, y):
    """Smooth value noise of octave ``k`` at (x, y), in [0, 1) (the gradient is optimised away)."""
    return _vn_grad(flat, meta, inv, k, x, y)[0]


@nb.njit(inline="always")
def _fbm(flat, meta, inv, first, n, x, y):
    total = 0.0
    norm = 0.0
    amp = 1.0
    for o in range(n):
        total += amp * _vn(flat, meta, inv, first + o, x, y)
        norm += amp
        amp *= 0.5
    return total / norm


@nb.njit(inline="always")
def _fbm_grad(flat, meta, inv, first, n, x, y):
    total = 0.0
    gx = 0.0
    gy = 0.0
    norm = 0.0
    amp = 1.0
    for o in range(n):
        v, dx, dy = _vn_grad(flat, meta, inv, first + o, x, y)
        total += amp * v
        gx += amp * dx
        gy += amp * dy
        norm += amp
        amp *= 0.5
    return total / norm, gx / norm, gy / norm


@nb.njit(inline="always")
def _ruggedness(basin, fan):
    """Depth scale (0..1) of ravines: deep in mountains (low ``basin``), shallow on plains,
    none on salars (``basin`` past SALT_EDGE), less on fans (``fan`` field)."""
    rugged = _smooth(0.6, 0.36, basin)
    salt = _smooth(SALT_EDGE[0] - 0.01, SALT_EDGE[1], basin)
    return (0.25 + 0.75 * rugged) * (1.0 - salt) * (1.0 - 0.4 * _smooth(FAN_EDGE[0], FAN_EDGE[1], fan))


@nb.njit(inline="always")
def _smooth(e0, e1, x):
    t = (x - e0) / (e1 - e0)
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return 1.0
    return t * t * (3.0 - 2.0 * t)


@nb.njit(cache=False, error_model="numpy", nogil=True)
def ground_nodes(xs, ys, flat, meta, inv, fields, cell_key, out):
    """Evaluate the smooth ground at the nodes ``xs`` × ``ys`` (texture CRS metres).

    Parameters
    ----------
    xs, ys
        Node coordinates (1-D).
    flat, meta, inv
        Octave lattices (see :func:`lames_cube.synthetic.landscape.Octaves`).
    fields
        (n_fields, 2) int64: first octave index and octave count of each named field, in the
        order of ``landscape.GROUND_FIELDS``.
    cell_key
        Key of the geological cells.
    out
        (len(ys), len(xs), N_GROUND) float32 output: the ``Q_*`` quantities. The unit of a
        pixel is chosen per pixel (:func:`compose`) among the nodes' nearest cell seeds, so
        that unit boundaries stay sharp between nodes.
    """
    for j in range(ys.shape[0]):
        y = ys[j]
        for i in range(xs.shape[0]):
            x = xs[i]
            # Relief: mountains (6 km) and hills (700 m) with analytic slopes.
            ev, ex, ey = _fbm_grad(flat, meta, inv, fields[F_ELEVATION, 0], fields[F_ELEVATION, 1], x, y)
            rv, rx, ry = _fbm_grad(flat, meta, inv, fields[F_RELIEF, 0], fields[F_RELIEF, 1], x, y)
            # Mountains where the basin field is low, plains and salars where it is high.
            basin = _fbm(flat, meta, inv, fields[F_BASIN, 0], fields[F_BASIN, 1], x, y)
            rugged = _smooth(0.6, 0.36, basin)
            a_e = RELIEF_M[0] + RELIEF_M[1] * rugged
            a_r = RELIEF_M[2] + RELIEF_M[3] * rugged
            gx = a_e * ex + a_r * rx
            gy = a_e * ey + a_r * ry
            z = a_e * ev + a_r * rv
            # Geology: domain-warped cells, one unit each; the two nearest seeds are kept.
            wx = x + 1800.0 * (_fbm(flat, meta, inv, fields[F_WARP_X, 0], fields[F_WARP_X, 1], x, y) - 0.5)
            wy = y + 1800.0 * (_fbm(flat, meta, inv, fields[F_WARP_Y, 0], fields[F_WARP_Y, 1], x, y) - 0.5)
            wx += 500.0 * (_fbm(flat, meta, inv, fields[F_WARP_FINE_X, 0], fields[F_WARP_FINE_X, 1], x, y) - 0.5)
            wy += 500.0 * (_fbm(flat, meta, inv, fields[F_WARP_FINE_Y, 0], fields[F_WARP_FINE_Y, 1], x, y) - 0.5)
            # (|wx - x| and |wy - y| stay below WARP_M)
            cx = math.floor(wx / CELL_M)
            cy = math.floor(wy / CELL_M)
            d1 = 1e30
            d2 = 1e30
            s1x = s1y = s2x = s2y = 0.0
            h1 = h2 = 0.0
            for dj in range(-1, 2):
                for di in range(-1, 2):
                    px = (cx + di + hash01(cx + di, cy + dj, cell_key)) * CELL_M
                    py = (cy + dj + hash01(cx + di, cy + dj, cell_key + np.uint64(1))) * CELL_M
                    d = (wx - px) ** 2 + (wy - py) ** 2
                    if d < d1:
                        d2, s2x, s2y, h2 = d1, s1x, s1y, h1
                        d1, s1x, s1y = d, px, py
                        h1 = hash01(cx + di, cy + dj, cell_key + np.uint64(2))
                    elif d < d2:
                        d2, s2x, s2y = d, px, py
                        h2 = hash01(cx + di, cy + dj, cell_key + np.uint64(2))
            fan = _fbm(flat, meta, inv, fields[F_FAN, 0], fields[F_FAN, 1], x, y)
            salt = _smooth(SALT_EDGE[0] - 0.01, SALT_EDGE[1], basin)  # flat towards the playa
            dip = _fbm(flat, meta, inv, fields[F_DIP, 0], fields[F_DIP, 1], x, y) - 0.5
            # Large ravines: creases of a ridged octave (in warped coordinates, so they wind).
            rugg = _ruggedness(basin, fan)
            t, tx, ty = _vn_grad(flat, meta, inv, fields[F_RAVINE, 0], wx, wy)
            crease = 2.0 * RAVINE_M * rugg * (1.0 if t >= 0.5 else -1.0)
            gx += crease * tx
            gy += crease * ty
            out[j, i, Q_GX] = gx * (1.0 - salt)
            out[j, i, Q_GY] = gy * (1.0 - salt)
            out[j, i, Q_WX] = wx - x
            out[j, i, Q_WY] = wy - y
            out[j, i, Q_ALBEDO] = 0.9 + 0.2 * _fbm(flat, meta, inv, fields[F_ALBEDO, 0], fields[F_ALBEDO, 1], x, y)
            out[j, i, Q_FAN] = fan
            out[j, i, Q_BASIN] = basin
            out[j, i, Q_RUGGED] = rugg
            out[j, i, Q_CHAN] = _fbm(flat, meta, inv, fields[F_CHANNEL, 0], fields[F_CHANNEL, 1], x, y)
            out[j, i, Q_ROAD] = _fbm(flat, meta, inv, fields[F_ROAD, 0], fields[F_ROAD, 1], x, y)
            out[j, i, Q_LAKE] = _fbm(flat, meta, inv, fields[F_LAKE, 0], fields[F_LAKE, 1], x, y)
            out[j, i, Q_VEG] = _fbm(flat, meta, inv, fields[F_VEGETATION, 0], fields[F_VEGETATION, 1], x, y)
            # Strata crop out along the relief, tilted by a slowly varying dip (a few degrees).
            out[j, i, Q_STRATA] = (z + 600.0 * dip) / STRATUM_M
            out[j, i, Q_PAVED] = 1.0 if _vn(flat, meta, inv, fields[F_PAVED, 0], x, y) > 0.6 else 0.0
            out[j, i, Q_CRUST] = 1.0 if _vn(flat, meta, inv, fields[F_SALTY, 0], x, y) > 0.45 else 2.0
            out[j, i, Q_SEEDS] = s1x - x
            out[j, i, Q_SEEDS + 1] = s1y - y
            out[j, i, Q_SEEDS + 2] = h1
            out[j, i, Q_SEEDS + 3] = s2x - x
            out[j, i, Q_SEEDS + 4] = s2y - y
            out[j, i, Q_SEEDS + 5] = h2
            out[j, i, Q_UNIFORM] = math.sqrt(d2) - math.sqrt(d1)  # the margin, for now
    # A node cell lies inside one geological cell when its four nodes share their nearest seed
    # and each is farther from any other cell than the cell spans in warped coordinates (a
    # pixel's warped position lies within the four nodes' warped positions).
    ny, nx = ys.shape[0], xs.shape[0]
    for j in range(ny):
        for i in range(nx):
            uniform = 0.0
            if j < ny - 1 and i < nx - 1:
                span = 0.0
                for c in range(1, 4):
                    cj = j + c // 2
                    ci = i + c % 2
                    dx = xs[ci] + out[cj, ci, Q_WX] - xs[i] - out[j, i, Q_WX]
                    dy = ys[cj] + out[cj, ci, Q_WY] - ys[j] - out[j, i, Q_WY]
                    span = max(span, math.sqrt(dx * dx + dy * dy))
                uniform = 1.0
                for c in range(4):  # the margins of later nodes are not overwritten yet
                    cj = j + c // 2
                    ci = i + c % 2
                    if (out[cj, ci, Q_SEEDS + 2] != out[j, i, Q_SEEDS + 2]
                            or out[cj, ci, Q_UNIFORM] < 2.0 * span + UNIT_EDGE_M + 1.0):
                        uniform = 0.0
            out[j, i, Q_UNIFORM] = uniform


@nb.njit(cache=False, error_model="numpy", nogil=True)
def cloud_nodes(xs, ys, flat, meta, inv, first, n, thin_first, thin_n, cover, dx, dy, cirrus, out):
    """Cloud opacity, shadow opacity and cirrus at the nodes ``xs`` × ``ys``."""
    threshold = 0.5 + 0.36 * (0.5 - cover)
    for j in range(ys.shape[0]):
        for i in range(xs.shape[0]):
            x = xs[i]
            y = ys[j]
            f = _fbm(flat, meta, inv, first, n, x, y)
            # A thin rim (opacity 0.15..0.3, some tens of metres) that the classification misses.
            op = min(max((f - threshold) / 0.08 + 0.3, 0.0), 1.0) if f > threshold - 0.012 else 0.0
            f = _fbm(flat, meta, inv, first, n, x + dx, y + dy)
            sh = min(max((f - threshold) / 0.08 + 0.3, 0.0), 1.0) if f > threshold - 0.012 else 0.0
            thin = 0.0
            if cirrus:
                t = _fbm(flat, meta, inv, thin_first, thin_n, x, y)
                thin = min(max((t - 0.62) * 3.0, 0.0), 0.25)
            out[j, i, C_OPACITY] = op
            out[j, i, C_SHADOW] = sh
            out[j, i, C_THIN] = thin


@nb.njit(inline="always")
def _line_distance(nodes, k, ix, iy, tx, ty, nsp, value):
    """Distance (m) to the 0.5 contour of node field ``k``, from its local gradient."""
    off = abs(value - 0.5)
    if off > 0.02:  # far from the contour at any slope of these fields
        return 1e9
    dx = ((nodes[iy, ix + 1, k] - nodes[iy, ix, k]) * (1.0 - ty)
          + (nodes[iy + 1, ix + 1, k] - nodes[iy + 1, ix, k]) * ty) / nsp
    dy = ((nodes[iy + 1, ix, k] - nodes[iy, ix, k]) * (1.0 - tx)
          + (nodes[iy + 1, ix + 1, k] - nodes[iy, ix + 1, k]) * tx) / nsp
    return off / max(math.sqrt(dx * dx + dy * dy), 1e-9)


# Sector parameter columns (float64 table, one row per sector of the year).
P_CLASS, P_OX, P_OY, P_COS, P_SIN, P_H1, P_H2, P_H3, P_WATER_D, P_SIZE = range(10)
N_PARAMS = 10
#: Pits at least this wide (m, equivalent diameter) show their benches, faintly, at 10 m.
BENCH_MIN_M = 1500.0
#: Slope (rise over run) of pit walls and of the faces of dumps; depth of a pit (m) per metre
#: of its equivalent diameter, and the largest depth.
PIT_WALL, PIT_DEPTH, PIT_MAX_M = 0.55, 0.22, 450.0
DUMP_FACE = 0.6
#: Brightness of freshly dumped rock relative to the weathered, varnished ground it came from.
FRESH_ROCK = 1.1


@nb.njit(inline="always")
def _rot(params, s, x, y):
    ox = x - params[s, P_OX]
    oy = y - params[s, P_OY]
    c = params[s, P_COS]
    sn = params[s, P_SIN]
    return ox * c + oy * sn, -ox * sn + oy * c


@nb.njit(inline="always")
def _roof(params, s, u, v, key):
    cu = math.floor(u / 42.0)
    cv = math.floor(v / 30.0)
    fu = u / 42.0 - cu
    fv = v / 30.0 - cv
    if fu < 0.14 or fu > 0.86 or fv < 0.18 or fv > 0.82:
        return -1.0
    h = hash01(cu, cv, key)
    cls = params[s, P_CLASS]
    share = 0.4 if cls == 6.0 else 0.25
    if h >= share:
        return -1.0
    return h / share


@nb.njit(cache=False, error_model="numpy", nogil=True)
def mine_relief(sid, dist, xx, yy, params, out):
    """Height (m) of the mine surfaces: pits as bowls with a floor, dumps with flat tops and
    steep faces, tailings dams, leach lifts, piles."""
    h, w = sid.shape
    for j in range(h):
        for i in range(w):
            s = sid[j, i]
            if s < 0:
                out[j, i] = 0.0
                continue
            cls = params[s, P_CLASS]
            d = dist[j, i]
            u, v = _rot(params, s, xx[j, i], yy[j, i])
            z = 0.0
            if cls == 5.0:  # open pit: walls down to a floor
                floor = min(PIT_DEPTH * params[s, P_SIZE], PIT_MAX_M)
                z = -min(d * PIT_WALL, floor)
            elif cls == 9.0:  # waste rock: a steep face, then a flat top
                z = min(d, 40.0 + 40.0 * params[s, P_H2]) * DUMP_FACE
            elif cls == 8.0:  # tailings: a dam at the rim, then a flat beach
                z = min(d, 20.0) * 0.8
            elif cls == 3.0:  # heap leach: lifts of cells
                cu = math.floor(u / 90.0)
                cv = math.floor(v / 55.0)
                z = min(d, 12.0) * 0.5 + 2.0 * hash01(cu, cv, np.uint64(params[s, P_H3] * 1e9))
            elif cls == 7.0:  # stockyard: rows of piles
                fv = v / 40.0 - math.floor(v / 40.0)
                z = 9.0 * max(0.0, 1.0 - abs(fv - 0.5) * 3.0)
            out[j, i] = z


#: LLVM flags of :func:`compose`: no NaN or infinity ever enters it (every input is finite) and
#: fused multiply-adds are allowed, but no reassociation, so a render is the same on every run and
#: every CPU with FMA. Worth 1.3-1.4x (a 2304 px tile: 1.45 s -> 1.0 s on this 2-core machine).
COMPOSE_FASTMATH = frozenset({"nnan", "ninf", "nsz", "contract"})


@nb.njit(cache=False, error_model="numpy", nogil=True, fastmath=set(COMPOSE_FASTMATH))
def compose(
    xx, yy,
    nodes, ix0, iy0, nsp,
    flat, meta, inv, fine,
    geo_key, sun, geo, geo_cdf, geo_layers, over,
    has_mines, sid, dist, mgx, mgy, haul, params, looks,
    has_clouds, cnodes, cloud_refl,
    atm, alt_nodes, snow_refl, psf, noise_key, noise, rows_aligned, harmonised,
    out_dn, out_scl, out_truth,
):
    """Render a window as the L2A product holds it: the reflectance (surface, clouds, residual
    haze) as the sensor records it (blurred by its point spread function, with a scene's gain
    and noise) as digital numbers of a baseline-04.00 product (reflectance x 10 000 + 1000,
    so that surfaces darker than 0 fall at or below 1000; 1..65 535, 65 535 saturated), and
    the scene classification and cloud truth.

    Parameters
    ----------
    xx, yy
        Texture-CRS coordinates of the pixel centres (2-D, possibly broadcast views).
    nodes, ix0, iy0, nsp
        Ground nodes (ny, nx, N_GROUND) at x = (ix0 + i)·nsp, y = (iy0 + j)·nsp (ascending).
    flat, meta, inv, fine
        Octave lattices; ``fine`` holds the octave indices of the ravines and of the pixel
        texture.
    geo_key
        Key of the per-pixel grain and of the strata.
    sun
        (sin(zenith)·sin(azimuth), sin(zenith)·cos(azimuth), cos(zenith)) of the date's sun,
        then the same of the reference sun (6 values).
    geo, geo_cdf, geo_layers
        (n_units, 6) reflectance of the geological units, their cumulative shares and how
        strongly each unit is layered (relative brightness spread of its strata).
    over
        (3, 6) reflectance of the overlays: bright fan gravel, salt crust, dry clay.
    has_mines, sid, dist, mgx, mgy, haul
        Mine layer on the window: sector index (-1 none), distance to the sector's edge (m),
        mine relief slopes, haul-road mask.
    params, looks
        Sector parameters (N_PARAMS columns) and the reflectance of the mine materials.
    has_clouds, cnodes, cloud_refl
        Cloud nodes (ny, nx, N_CLOUD) on the ground-node lattice and cloud reflectance (6).
    atm
        The date's atmosphere and processor settings (``A_*`` indices, N_ATM values).
    alt_nodes
        Altitude (m) on the ground-node lattice.
    snow_refl
        Reflectance of fresh snow (6).
    psf
        Weight of each neighbour in the sensor's separable 3-tap point spread function
        ``[psf, 1 - 2 psf, psf]`` (0: none).
    rows_aligned
        True when ``yy`` is constant along each row (a grid in the texture CRS): the node
        values are then interpolated along y once per row.
    harmonised
        Write harmonised reflectance x 10 000 (the offset removed as
        :func:`lames_cube.bands.harmonise_values` removes it) instead of the product's
        digital numbers.
    noise_key, noise
        The uint64 key and (gain, sigma_abs, sigma_rel) of a scene's own gain and noise, applied
        as :func:`perturb` applies them (bit for bit); a gain of 0 applies none.
    out_dn, out_scl, out_truth
        Outputs: digital numbers (6, H - 2, W - 2) of the inner pixels, and SCL as the
        processor writes it (1: saturated) and cloud truth (``T_*``) of all (H, W) pixels:
        the grid is rendered with a margin of one pixel for the point spread function.
    """
    h, w = out_scl.shape
    spec = np.empty(6)
    mat = np.empty(6)
    q = np.empty(N_INTERP)
    ring = np.empty((3, 6, w), np.float32)  # the last three rows' reflectance
    xring = np.empty((3, 6, w), np.float32)  # the same, blurred along x
    c_psf = 1.0 - 2.0 * psf
    inv_nsp = 1.0 / nsp
    nyn = nodes.shape[0]
    nxn = nodes.shape[1]
    row_nodes = np.empty((nxn, N_INTERP), np.float32)  # the nodes interpolated to this row
    n_units = geo.shape[0]
    sx, sy, sz = sun[0], sun[1], sun[2]
    rx, ry, rz = sun[3], sun[4], sun[5]
    errors = (atm[A_FP_BRIGHT] + atm[A_DARK] + atm[A_UNCLASSIFIED] + atm[A_SATURATED]) > 0.0
    last_layer = -(2**62)
    last_h1 = -1.0
    lf = 1.0
    for j in range(h):
        jr = j % 3  # this row's place in the rings
        if rows_aligned:
            fy = yy[j, 0] * inv_nsp
            gyi = math.floor(fy)
            ty = fy - gyi
            iy = min(max(gyi - iy0, 0), nyn - 2)
            for ci in range(nxn):
                for k in range(N_INTERP):
                    row_nodes[ci, k] = nodes[iy, ci, k] * (1.0 - ty) + nodes[iy + 1, ci, k] * ty
        for i in range(w):
            x = xx[j, i]
            y = yy[j, i]
            # Bilinear weights on the ground-node lattice.
            fx = x * inv_nsp  # global node coordinates: the same in every window
            fy = y * inv_nsp
            gxi = math.floor(fx)
            gyi = math.floor(fy)
            tx = fx - gxi
            ty = fy - gyi
            ix = min(max(gxi - ix0, 0), nxn - 2)
            iy = min(max(gyi - iy0, 0), nyn - 2)
            w00 = (1.0 - tx) * (1.0 - ty)
            w10 = tx * (1.0 - ty)
            w01 = (1.0 - tx) * ty
            w11 = tx * ty
            if rows_aligned:
                for k in range(N_INTERP):
                    q[k] = row_nodes[ix, k] * (1.0 - tx) + row_nodes[ix + 1, k] * tx
            else:
                for k in range(N_INTERP):
                    q[k] = (nodes[iy, ix, k] * w00 + nodes[iy, ix + 1, k] * w10
                            + nodes[iy + 1, ix, k] * w01 + nodes[iy + 1, ix + 1, k] * w11)
            # The geological unit: the nearest of the four nodes' cell seeds, in warped
            # coordinates, so that unit boundaries are sharp at any node spacing.
            wx = x + q[Q_WX]
            wy = y + q[Q_WY]
            if nodes[iy, ix, Q_UNIFORM] > 0.5:  # inside one cell: its unit, no boundary
                h1 = nodes[iy, ix, Q_SEEDS + 2]
                h2 = h1
                wb = 0.0
            else:
                d1 = 1e30
                d2 = 1e30
                h1 = 0.0
                h2 = 0.0
                for c in range(4):
                    cj = iy + c // 2
                    ci = ix + c % 2
                    nx_ = (ix0 + ci) * nsp
                    ny_ = (iy0 + cj) * nsp
                    for k in range(2):
                        hh = nodes[cj, ci, Q_SEEDS + 3 * k + 2]
                        if hh == h1 or hh == h2:
                            continue
                        ddx = wx - nx_ - nodes[cj, ci, Q_SEEDS + 3 * k]
                        ddy = wy - ny_ - nodes[cj, ci, Q_SEEDS + 3 * k + 1]
                        d = ddx * ddx + ddy * ddy
                        if d < d1:
                            d2, h2 = d1, h1
                            d1, h1 = d, hh
                        elif d < d2:
                            d2, h2 = d, hh
                wb = 0.5 * (1.0 - _smooth(0.0, UNIT_EDGE_M, math.sqrt(d2) - math.sqrt(d1)))
            u1 = 0
            while u1 < n_units - 1 and h1 >= geo_cdf[u1]:
                u1 += 1
            u2 = u1
            if wb > 0.0:
                u2 = 0
                while u2 < n_units - 1 and h2 >= geo_cdf[u2]:
                    u2 += 1
            # Strata: the unit's layers crop out where the strata coordinate crosses whole
            # numbers, each layer a little lighter or darker (sharp, as rock beds are).
            layer = math.floor(q[Q_STRATA])
            if layer != last_layer or h1 != last_h1:  # neighbours mostly share a layer
                last_layer, last_h1 = layer, h1
                lf = 1.0 + geo_layers[u1] * (hash01(np.int64(layer), np.int64(h1 * 4194304.0),
                                                    geo_key) - 0.5)
            salt = _smooth(SALT_EDGE[0], SALT_EDGE[1], q[Q_BASIN])  # the salar's sharp shore
            fan = 0.75 * _smooth(FAN_EDGE[0], FAN_EDGE[1], q[Q_FAN])  # sharp-edged fans
            crust = 1 if nodes[iy, ix, Q_CRUST] < 1.5 else 2
            alb = q[Q_ALBEDO]
            if wb > 0.0:
                for b in range(6):
                    spec[b] = (geo[u1, b] * lf * (1.0 - wb) + geo[u2, b] * wb) * alb
            else:
                a1 = lf * alb
                for b in range(6):
                    spec[b] = geo[u1, b] * a1
            if fan > 0.0 or salt > 0.0:
                for b in range(6):
                    g = spec[b] * (1.0 - fan) + over[0, b] * fan
                    spec[b] = g * (1.0 - salt) + over[crust, b] * salt
            gx = q[Q_GX]
            gy = q[Q_GY]
            rough = 1.0 - 0.6 * salt - 0.45 * fan
            rugged = q[Q_RUGGED]
            scl = 5
            flat_surface = False
            # Ravines: creases of two ridged octaves, V-shaped, as deep as the ground is rugged,
            # drawn in the warped coordinates so that they wind and stretch.
            t1, dtx, dty = _vn_grad(flat, meta, inv, fine[0], wx, wy)
            crease = RAVINE_M * rugged * (1.0 if t1 >= 0.5 else -1.0)
            gx += crease * dtx
            gy += crease * dty
            t1, dtx, dty = _vn_grad(flat, meta, inv, fine[1], wx, wy)
            crease = RILL_M * (1.0 if t1 >= 0.5 else -1.0)
            rill_x = crease * dtx  # rills and tracks scar built surfaces too
            rill_y = crease * dty
            gx += rill_x
            gy += rill_y
            # Pixel texture: patches of gravel and rock with sharp edges, redder or greyer, and
            # a 10 m grain; each pixel's own mixture of stones (three band factors that leave
            # its brightness as it is, applied with the texture below).
            t2 = _vn(flat, meta, inv, fine[2], x, y)
            patch = math.floor(t2 * 5.0) * 0.25 - 0.5
            hue = HUE_AMP * (t2 - 0.5)
            hh = _pixel_hash(geo_key, x, y)
            grain = float((hh >> _S48) & _MASK16) * _INV16
            c0 = float(hh & _MASK16) * _INV16
            c1 = float((hh >> _S16) & _MASK16) * _INV16
            c2 = float((hh >> _S32) & _MASK16) * _INV16
            cm = (c0 + c1 + c2) / 3.0
            spec[0] *= 1.0 - hue
            spec[1] *= 1.0 + 0.2 * hue
            spec[2] *= 1.0 + hue
            # Dry river beds, vegetation along them, lakes, roads.
            chan = max(0.0, 1.0 - _line_distance(nodes, Q_CHAN, ix, iy, tx, ty, nsp, q[Q_CHAN]) / 16.0)
            if chan > 0.0:
                for b in range(6):
                    spec[b] = spec[b] * (1.0 - chan) + looks[0, b] * chan
                rough *= 1.0 - 0.5 * chan
                if q[Q_VEG] > 0.66 and chan > 0.4 and t2 > 0.35:
                    vig = atm[A_VEG]
                    for b in range(6):
                        spec[b] = looks[1, b] * (0.8 + 0.4 * t2)
                    spec[2] *= 1.25 - 0.35 * vig  # red falls and NIR rises as the plants green up
                    spec[3] *= 0.75 + 0.45 * vig
                    scl = 4
            if q[Q_LAKE] > 0.82:
                lagoon = 8 if nodes[iy, ix, Q_PAVED] > 0.5 else 2  # turquoise saline lagoons, dark lakes
                for b in range(6):
                    spec[b] = looks[lagoon, b]
                scl = 6
                flat_surface = True
                rough = 0.1
            elif _line_distance(nodes, Q_ROAD, ix, iy, tx, ty, nsp, q[Q_ROAD]) < 4.5:
                r = 3 if nodes[iy, ix, Q_PAVED] > 0.5 else 4
                for b in range(6):
                    spec[b] = looks[r, b]
                rough = 0.3
            albedo_extra = 1.0
            fooled = 0.0  # how easily the classifier takes this surface for cloud (beyond brightness)
            if has_mines:
                s = sid[j, i]
                if s >= 0:
                    cls = params[s, P_CLASS]
                    if cls == 5.0:  # pits cut into the relief: their own walls dominate
                        gx = 0.3 * gx + mgx[j, i]
                        gy = 0.3 * gy + mgy[j, i]
                    elif cls == 9.0:  # dumps: built, their faces gullied, their tops smooth
                        face = 0.5 if dist[j, i] < 60.0 else 0.0
                        gx = mgx[j, i] + face * rill_x
                        gy = mgy[j, i] + face * rill_y
                    else:  # tailings, pads and yards are built flat
                        gx = mgx[j, i]
                        gy = mgy[j, i]
                    d = dist[j, i]
                    u, v = _rot(params, s, x, y)
                    h1 = params[s, P_H1]
                    h2 = params[s, P_H2]
                    key = np.uint64(params[s, P_H3] * 1e9)
                    if cls == 5.0:  # open pit: fresh dark rock, lit and shadowed walls
                        a = 0.45 + 0.3 * h1
                        for b in range(6):
                            spec[b] = spec[b] * (1.0 - a) + looks[5, b] * a
                        rough = 0.4
                        size = params[s, P_SIZE]
                        if size >= BENCH_MIN_M and d * PIT_WALL < min(PIT_DEPTH * size, PIT_MAX_M):
                            # benches of the largest pits: faint light berms, never darker
                            fb = d / (26.0 + 8.0 * h2)
                            fb -= math.floor(fb)
                            albedo_extra = 1.0 + 0.03 * _smooth(0.7, 0.9, fb) * (1.0 - _smooth(0.9, 1.0, fb))
                        if params[s, P_WATER_D] > 0.0 and d > params[s, P_WATER_D]:
                            for b in range(6):
                                spec[b] = looks[16, b]
                            scl = 6
                            flat_surface = True
                    elif cls == 9.0:  # waste rock: grey to grey-brown, flat top, haul ramps
                        a = 0.45 + 0.35 * h1
                        for b in range(6):  # fresh rock, lighter than the varnished ground
                            spec[b] = (spec[b] * (1.0 - a) + looks[15, b] * a) * FRESH_ROCK
                        rough = 0.7 if d < 60.0 else 0.3  # gullied faces, smoother tops
                        if d > 60.0:
                            ramp = u - (h2 - 0.5) * 400.0
                            if abs(ramp) < 8.0 or abs(v - (h1 - 0.5) * 300.0) < 7.0:
                                for b in range(6):  # light haul roads across the top
                                    spec[b] = spec[b] * 0.4 + looks[4, b] * 0.6
                                rough = 0.15
                    elif cls == 8.0:  # tailings: smooth, flat, light grey to white, a pond
                        a = 0.15 + 0.25 * h2
                        k = 6 if h1 < 0.5 else 7
                        # ground rock: as light as the tailings' material, half of its hue kept
                        lift = (looks[k, 0] + looks[k, 1] + looks[k, 2]) / (
                            spec[0] + spec[1] + spec[2] + 1e-9)
                        for b in range(6):
                            spec[b] = spec[b] * (1.0 - a) + a * (
                                0.5 * looks[k, b] + 0.5 * (spec[b] * lift if b < 3 else looks[k, b]))
                        rough = 0.12
                        fooled = 1.0  # fine, flat, spectrally grey beach
                        # wet and dry beach (300 m), a pond in part of the interior
                        albedo_extra = 0.76 + 0.3 * _blob(x, y, 300.0, key)
                        wd = params[s, P_WATER_D]
                        if wd > 0.0 and d > wd and _blob(x, y, 700.0, key + np.uint64(5)) > 0.5:
                            for b in range(6):
                                spec[b] = looks[8, b]
                            scl = 6
                            flat_surface = True
                            albedo_extra = 1.0
                    elif cls == 3.0:  # heap leach: pale cells of fresh and older ore
                        cu = math.floor(u / 90.0)
                        cv = math.floor(v / 55.0)
                        hc = hash01(cu, cv, key)
                        a = 0.4 + 0.3 * h1
                        for b in range(6):
                            spec[b] = spec[b] * (1.0 - a) + looks[9, b] * a
                        albedo_extra = 0.95 + 0.1 * hc
                        if hash01(cu, cv, key + np.uint64(7)) < 0.15:
                            albedo_extra *= 0.9  # cells under irrigation, a little darker
                        rough = 0.2
                        fooled = 0.8
                    elif cls == 4.0 or cls == 6.0:  # facilities: yards, roofs and shadows
                        rough = 0.45
                        roof = _roof(params, s, u, v, key)
                        if roof >= 0.0:
                            k = 10 + int(roof * 3.999)
                            for b in range(6):
                                spec[b] = looks[k, b]
                            rough = 0.15
                        else:
                            su = sx * params[s, P_COS] + sy * params[s, P_SIN]
                            sv = -sx * params[s, P_SIN] + sy * params[s, P_COS]
                            norm = math.sqrt(su * su + sv * sv) + 1e-9
                            if _roof(params, s, u + 12.0 * su / norm, v + 12.0 * sv / norm, key) >= 0.0:
                                albedo_extra = 0.5
                    elif cls == 7.0:  # stockyard: piles of ore concentrate between lanes
                        fv = v / 40.0 - math.floor(v / 40.0)
                        if 0.18 < fv < 0.82:
                            a = 0.45 + 0.3 * h1
                            for b in range(6):
                                spec[b] = spec[b] * (1.0 - a) + looks[14, b] * a
                        else:
                            for b in range(6):
                                spec[b] = spec[b] * 1.06
                        rough = 0.5
                elif haul[j, i]:
                    for b in range(6):
                        spec[b] = spec[b] * 0.45 + looks[4, b] * 0.55
                    rough = 0.25
            # Illumination on the relief (flat = 1).
            if flat_surface:
                shade = 1.0
            else:
                # The L2A processor corrects the relief's lighting with a coarse DEM: of the
                # date's departure from the reference sun's shading, TOPO_RESIDUAL remains.
                norm = math.sqrt(1.0 + gx * gx + gy * gy)
                shade_ref = max((rz - gx * rx - gy * ry) / (norm * rz), 0.08)
                shade_now = max((sz - gx * sx - gy * sy) / (norm * sz), 0.08)
                shade = shade_ref + TOPO_RESIDUAL * (shade_now - shade_ref)
            albedo = 1.0 + rough * (PATCH_AMP * patch + GRAIN_AMP * (grain - 0.5))
            f = albedo * albedo_extra * shade
            for b in range(6):
                mat[b] = spec[b] * f
            # the pixel's own mixture of materials: less varied on fine, built surfaces
            mix = HUE_GRAIN * min(rough, 1.0)
            mat[0] *= 1.0 + mix * (c0 - cm)
            mat[1] *= 1.0 + mix * (c1 - cm)
            mat[2] *= 1.0 + mix * (c2 - cm)
            # Snow on high ground, as the date's snow line leaves it.
            truth = T_CLEAR
            alt = (alt_nodes[iy, ix] * w00 + alt_nodes[iy, ix + 1] * w10
                   + alt_nodes[iy + 1, ix] * w01 + alt_nodes[iy + 1, ix + 1] * w11)
            if not flat_surface and alt > atm[A_SNOWLINE] - 400.0:
                cover = (alt + 500.0 * (t2 - 0.5) + 200.0 * (grain - 0.5) - atm[A_SNOWLINE]) / 150.0
                if cover > 0.0:
                    cover = min(cover, 1.0)
                    for b in range(6):
                        mat[b] = mat[b] * (1.0 - cover) + snow_refl[b] * shade * cover
                    if cover > 0.5:
                        scl = 11
                        truth = T_SNOW
            op = 0.0
            if has_clouds:
                op = (cnodes[iy, ix, C_OPACITY] * w00 + cnodes[iy, ix + 1, C_OPACITY] * w10
                      + cnodes[iy + 1, ix, C_OPACITY] * w01 + cnodes[iy + 1, ix + 1, C_OPACITY] * w11)
                sh = (cnodes[iy, ix, C_SHADOW] * w00 + cnodes[iy, ix + 1, C_SHADOW] * w10
                      + cnodes[iy + 1, ix, C_SHADOW] * w01 + cnodes[iy + 1, ix + 1, C_SHADOW] * w11)
                thin = (cnodes[iy, ix, C_THIN] * w00 + cnodes[iy, ix + 1, C_THIN] * w10
                        + cnodes[iy + 1, ix, C_THIN] * w01 + cnodes[iy + 1, ix + 1, C_THIN] * w11)
                if sh > 0.15 and op < 0.02:
                    for b in range(6):
                        mat[b] *= 1.0 - 0.65 * sh
                    truth = T_SHADOW
                    if sh > 0.3:
                        scl = 3
                    thin = 0.0
                if thin > 0.0:
                    for b in range(6):
                        mat[b] += thin * 0.12
                    if thin > 0.01:
                        truth = T_THIN
                        if op <= 0.3:
                            scl = 10
                if op > 0.0:
                    for b in range(6):
                        mat[b] = mat[b] * (1.0 - op) + cloud_refl[b] * op
                    if op > 0.3:
                        truth = T_CLOUD
                    elif op > 0.02:
                        truth = T_THIN
                    if op > 0.6:
                        scl = 9
                    elif op > 0.3:
                        scl = 8
                    elif op > 0.12:
                        scl = 7  # low-probability cloud: Sen2Cor leaves it unclassified
            # Residual path radiance, thinner over high ground.
            thick = 1.0 - min(max(alt, 0.0) / 6000.0, 0.8)
            for b in range(6):
                mat[b] += atm[A_HAZE + b] * thick
            # The scene classification's own errors (the truth stays in out_truth).
            if errors:
                skey = np.uint64(atm[A_SCL_KEY])
                px = np.int64(math.floor(x * 0.1))
                py = np.int64(math.floor(y * 0.1))
                u_px = hash01(px, py, skey)
                if truth == T_CLEAR or truth == T_SNOW:
                    vis = (mat[0] + mat[1] + mat[2]) / 3.0
                    ramp = max(min((vis - 0.17) / 0.09, 1.0), fooled * min(vis / 0.15, 1.0))
                    if ramp > 0.0 and (scl == 5 or scl == 4 or scl == 11):
                        # The same surfaces fool the classifier date after date (a blob fixed on the
                        # ground), more or less on each date (a blob of the date): bright ground,
                        # and tailings beaches and leach pads whatever their brightness.
                        fixed = _blob(x, y, 300.0, geo_key + np.uint64(17))
                        blob = _blob(x, y, 240.0, skey + np.uint64(3))
                        p = atm[A_FP_BRIGHT] * ramp
                        if 0.45 * fixed + 0.35 * blob + 0.2 * u_px < p:
                            if mat[4] > 0.32 and hash01(px, py, skey + np.uint64(5)) < 0.5:
                                scl = 11  # salt and bright tailings read as snow
                            else:
                                scl = 9 if vis > 0.27 else 8
                        elif vis > 0.26 and hash01(px, py, skey + np.uint64(9)) < atm[A_SATURATED]:
                            scl = 1
                    if scl == 5 or scl == 4 or scl == 6:
                        dark = (mat[0] + mat[1] + mat[2] + mat[3]) * 0.25
                        if dark < 0.04 and hash01(px, py, skey + np.uint64(11)) < atm[A_DARK]:
                            scl = 2
                        elif hash01(px, py, skey + np.uint64(13)) < atm[A_UNCLASSIFIED]:
                            scl = 7
                elif truth == T_SHADOW and scl == 3 and hash01(px, py, skey + np.uint64(11)) < atm[A_DARK]:
                    scl = 2  # cloud shadows taken for dark ground
            for b in range(6):
                ring[jr, b, i] = mat[b]
            out_scl[j, i] = scl
            out_truth[j, i] = truth
        # The sensor: blur the row along x, and once three rows are in, write the row above
        # (the 10 m bands; the 20 m bands are blurred by their own 2 x 2 means).
        for b in range(N_PSF):
            src = ring[jr, b]
            dst = xring[jr, b]
            dst[0] = src[0]  # (the margin's own values: never output)
            dst[w - 1] = src[w - 1]
            for i in range(1, w - 1):
                dst[i] = psf * (src[i - 1] + src[i + 1]) + c_psf * src[i]
        for b in range(N_PSF, 6):
            xring[jr, b, :] = ring[jr, b, :]
        if j >= 2:
            _sensor_row(xring[(j - 2) % 3], xring[(j - 1) % 3], xring[jr], out_scl[j - 1],
                        xx[j - 1], yy[j - 1], psf, noise_key, noise, harmonised,
                        out_dn[:, j - 2])


@nb.njit(inline="always")
def _sensor_row(top, mid, bottom, scl_row, xrow, yrow, psf, noise_key, noise, harmonised,
                out):
    """One output row of :func:`compose`: the x-blurred rows above, at and below blurred
    along y, as digital numbers with the scene's gain and noise (``harmonised``: minus the
    offset, at least 1); ``out`` (6, W - 2)."""
    c = 1.0 - 2.0 * psf
    noisy = noise[0] > 0.0
    for i in range(out.shape[1]):
        if scl_row[i + 1] == 1:
            for b in range(6):
                out[b, i] = np.uint16(SATURATED)
            continue
        hsh = _pixel_hash(noise_key, xrow[i + 1], yrow[i + 1]) if noisy else np.uint64(0)
        for b in range(6):
            if b < N_PSF:
                v = psf * (top[b, i + 1] + bottom[b, i + 1]) + c * mid[b, i + 1]
            else:
                v = mid[b, i + 1]
            dn = min(max(math.floor(v * 10_000.0 + 0.5) + DN_OFFSET, 1.0), MAX_DN + DN_OFFSET)
            if noisy:
                dn = float(_noisy(float(np.uint16(dn)), hsh, b, noise[0], noise[1], noise[2]))
            if harmonised:
                dn = max(dn, DN_OFFSET + 1.0) - DN_OFFSET
            out[b, i] = np.uint16(dn)


@nb.njit(inline="always")
def _blob(x, y, scale, key):
    """Smooth value noise (0..1) at ``scale`` metres: the spatial coherence of SCL errors."""
    fx = x / scale
    fy = y / scale
    ix = math.floor(fx)
    iy = math.floor(fy)
    tx = fx - ix
    ty = fy - iy
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    a = hash01(np.int64(ix), np.int64(iy), key)
    b = hash01(np.int64(ix + 1), np.int64(iy), key)
    c = hash01(np.int64(ix), np.int64(iy + 1), key)
    d = hash01(np.int64(ix + 1), np.int64(iy + 1), key)
    return (a * (1 - tx) + b * tx) * (1 - ty) + (c * (1 - tx) + d * tx) * ty


@nb.njit(cache=False, error_model="numpy", nogil=True)
def perturb(dn, scl, xx, yy, key, gain, sigma_abs, sigma_rel, out):
    """One scene's own pixels: the date's digital numbers with the scene's gain and sensor noise.

    ``dn`` (6, H, W) uint16 as :func:`compose` writes them (offset 1000); the noise is
    Gaussian-like (a sum of two uniforms), ``sigma_abs + sigma_rel * reflectance`` (reflectance
    units), hashed per 10 m cell of texture coordinates and ``key``; nodata, saturated (SCL 1)
    pixels are left as they are. :func:`compose` applies the same when given a noise key.
    """
    nb_, h, w = dn.shape
    for j in range(h):
        for i in range(w):
            if scl[j, i] == 1:
                for b in range(nb_):
                    out[b, j, i] = dn[b, j, i]
                continue
            hsh = _pixel_hash(key, xx[j, i], yy[j, i])
            for b in range(nb_):
                v = dn[b, j, i]
                out[b, j, i] = 0 if v == 0 else _noisy(float(v), hsh, b, gain, sigma_abs, sigma_rel)


@nb.njit(inline="always")
def _pixel_hash(key, x, y):
    """One 64-bit hash per 10 m cell of texture coordinates: the noise of all bands."""
    px = np.int64(math.floor(x * 0.1))
    py = np.int64(math.floor(y * 0.1))
    return _mix64(_mix64((np.uint64(key) * _GOLD) ^ np.uint64(px)) ^ (np.uint64(py) * _GOLD))


@nb.njit(inline="always")
def _noisy(v, hsh, b, gain, sigma_abs, sigma_rel):
    """Digital number ``v`` (offset 1000) with gain and noise: 10 bits of ``hsh`` per band, two
    5-bit uniforms whose sum is triangular (noise steps of 0.08 sigma, far below one DN)."""
    r = (v - DN_OFFSET) / 10_000.0
    bits = hsh >> np.uint64(10 * b)
    u = (float(bits & _MASK5) + float((bits >> _S5) & _MASK5) + 1.0) / 32.0 - 1.0
    r = r * gain + u * 2.449489742783178 * (sigma_abs + sigma_rel * abs(r))
    d = math.floor(r * 10_000.0 + 0.5) + DN_OFFSET
    return np.uint16(min(max(d, 1.0), MAX_DN + DN_OFFSET))


@nb.njit(cache=False, error_model="numpy", nogil=True)
def block_mean(dn, out):
    """2 x 2 block means (rounded) of (B, 2H, 2W) uint16 digital numbers: the 20 m bands.

    A block holding nodata (0) is nodata; a saturated sub-pixel saturates the block.
    """
    nb_, h, w = out.shape
    for b in range(nb_):
        for j in range(h):
            for i in range(w):
                a0 = dn[b, 2 * j, 2 * i]
                a1 = dn[b, 2 * j, 2 * i + 1]
                a2 = dn[b, 2 * j + 1, 2 * i]
                a3 = dn[b, 2 * j + 1, 2 * i + 1]
                if a0 == 0 or a1 == 0 or a2 == 0 or a3 == 0:
                    out[b, j, i] = 0
                elif max(max(a0, a1), max(a2, a3)) == SATURATED:
                    out[b, j, i] = SATURATED
                else:
                    out[b, j, i] = np.uint16(
                        math.floor((float(a0) + float(a1) + float(a2) + float(a3)) * 0.25 + 0.5))


#: Priority of SCL classes when 2 x 2 sub-pixels tie (clouds first, as a cautious processor).
SCL_PRIORITY = np.array([0, 6, 4, 8, 2, 1, 3, 5, 10, 11, 9, 7], np.int64)
#: Priority of the cloud-truth classes (``T_*``) when sub-pixels tie: cloud, thin, shadow, snow.
TRUTH_PRIORITY = np.array([0, 3, 4, 2, 1], np.int64)


@nb.njit(cache=False, nogil=True)
def block_class(cls, out, priority, sticky):
    """The class of each 2 x 2 block of (2H, 2W) uint8 classes: the most frequent sub-pixel
    class, ties to the higher ``priority``; class ``sticky`` takes the block whenever a
    sub-pixel has it (SCL 1, saturated, as :func:`block_mean` saturates the block; -1: none)."""
    h, w = out.shape
    for j in range(h):
        for i in range(w):
            best = 0
            best_n = 0
            best_p = -1
            stuck = False
            for a in range(4):
                c = cls[2 * j + a // 2, 2 * i + a % 2]
                if c == sticky:
                    stuck = True
                n = 0
                for bb in range(4):
                    if cls[2 * j + bb // 2, 2 * i + bb % 2] == c:
                        n += 1
                p = priority[c] if c < priority.shape[0] else 0
                if n > best_n or (n == best_n and p > best_p):
                    best, best_n, best_p = c, n, p
            out[j, i] = sticky if stuck else best
