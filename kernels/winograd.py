"""Winograd's F(2x2, 3x3): 3x3 stride-1 padding-1 convolution with 16 GEMMs instead of 36
multiplications per 2x2 output tile, for kernels/cpu.py.

Cut the padded input into 4x4 tiles d that overlap by 2 (tile (ty, tx) starts at row
2*ty - 1, column 2*tx - 1) and the output into the 2x2 tiles they produce. Then, with the
constant matrices B^T (4x4), G (4x3) and A^T (2x4) below,
    U = G w G^T        for every (oc, c): the weight, 4x4               (weight_transform)
    V = B^T d B        for every (c, tile): the input tile, 4x4         (_input_tiles)
    M[xi] = U[xi] @ V[xi]   for each of the 16 entries xi: (OC, C) @ (C, tiles), a GEMM
    y = A^T M A        for every (oc, tile): the 2x2 output tile        (_output_tiles)
which is exactly the 3x3 correlation: 16 multiplications per tile and channel pair
instead of 4*9 = 36, so the GEMMs do 2.25x less work than im2col's, and the transforms are
additions. The gradient of the input is the same convolution of grad_out with the weight
flipped and its channels swapped (`flipped`). (The weight gradient can be had from the same
pieces, dU = (A dY A^T) @ V^T, but for the resnet20 layers its 16 small GEMMs per image
measured slower than cpu.py's GEMM on the columns, which computes it instead.) The
transforms of float32 data lose a few bits: measured against the direct sum, the relative
error is below 1e-6.

The batch is cut into tasks of `group` images, as in cpu.py's GEMM path, each with its
own V and M in cache. Tiles of an odd-sized output run past its edge: those outputs are
dropped.
"""
import numpy as np
from numba import njit, prange

G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def tiles(oh, ow):
    """The number of 2x2 output tiles of an OH x OW output."""
    return ((oh + 1) // 2) * ((ow + 1) // 2)


def weight_transform(w4):
    """w4 (OC, C, 3, 3) -> U (16, OC, C), U[4a + b] = (G w G^T)[a, b], in w4's dtype."""
    w_gt = np.tensordot(w4.astype(np.float64), G, axes=([3], [1]))   # (OC, C, 3, b): w G^T
    u = np.tensordot(G, w_gt, axes=([1], [2]))                        # (a, OC, C, b)
    return np.ascontiguousarray(u.transpose(0, 3, 1, 2).reshape(16, *w4.shape[:2]),
                                dtype=w4.dtype)


def flipped(w4):
    """The weight whose convolution is the adjoint of w4's: (C, OC, 3, 3), rotated 180."""
    return np.ascontiguousarray(w4[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


@njit(cache=True)
def _input_tiles(x, b0, v):
    """v (16, C, m*T) = B^T d B of every 4x4 tile d of the images b0, ..., b0 + m - 1."""
    _, c, h, w = x.shape
    th, tw = (h + 1) // 2, (w + 1) // 2
    wp = 2 * tw + 2                          # a row with its padding: columns -1 .. 2*tw
    rows = np.zeros((4, wp), dtype=x.dtype)  # the 4 input rows of a row of tiles
    t = np.empty((4, wp), dtype=x.dtype)     # B^T applied down the columns
    for q in range(v.shape[2] // (th * tw)):
        for ch in range(c):
            for ty in range(th):
                for u in range(4):
                    hi = 2 * ty - 1 + u
                    if 0 <= hi < h:
                        for k in range(w):
                            rows[u, k + 1] = x[b0 + q, ch, hi, k]
                    else:
                        for k in range(wp):
                            rows[u, k] = 0
                for k in range(wp):          # B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
                    t[0, k] = rows[0, k] - rows[2, k]
                    t[1, k] = rows[1, k] + rows[2, k]
                    t[2, k] = rows[2, k] - rows[1, k]
                    t[3, k] = rows[1, k] - rows[3, k]
                base = (q * th + ty) * tw
                for u in range(4):           # (B^T d) B: the same along each row
                    for tx in range(tw):
                        a0, a1 = t[u, 2 * tx], t[u, 2 * tx + 1]
                        a2, a3 = t[u, 2 * tx + 2], t[u, 2 * tx + 3]
                        v[4 * u, ch, base + tx] = a0 - a2
                        v[4 * u + 1, ch, base + tx] = a1 + a2
                        v[4 * u + 2, ch, base + tx] = a2 - a1
                        v[4 * u + 3, ch, base + tx] = a1 - a3


@njit(cache=True)
def _output_tiles(mm, b0, out):
    """out[b0 + q, o] = A^T M A for every tile, M = mm[:, o, tile] as 4x4."""
    _, oc, oh, ow = out.shape
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    r0 = np.empty(2 * tw, dtype=out.dtype)   # the two output rows of a row of tiles
    r1 = np.empty(2 * tw, dtype=out.dtype)
    for q in range(mm.shape[2] // (th * tw)):
        for o in range(oc):
            for ty in range(th):
                base = (q * th + ty) * tw
                for tx in range(tw):         # A^T M: rows m0 + m1 + m2 and m1 - m2 - m3
                    k = base + tx
                    s00 = mm[0, o, k] + mm[4, o, k] + mm[8, o, k]
                    s01 = mm[1, o, k] + mm[5, o, k] + mm[9, o, k]
                    s02 = mm[2, o, k] + mm[6, o, k] + mm[10, o, k]
                    s03 = mm[3, o, k] + mm[7, o, k] + mm[11, o, k]
                    s10 = mm[4, o, k] - mm[8, o, k] - mm[12, o, k]
                    s11 = mm[5, o, k] - mm[9, o, k] - mm[13, o, k]
                    s12 = mm[6, o, k] - mm[10, o, k] - mm[14, o, k]
                    s13 = mm[7, o, k] - mm[11, o, k] - mm[15, o, k]
                    r0[2 * tx] = s00 + s01 + s02         # (A^T M) A: the same along rows
                    r0[2 * tx + 1] = s01 - s02 - s03
                    r1[2 * tx] = s10 + s11 + s12
                    r1[2 * tx + 1] = s11 - s12 - s13
                for k in range(ow):
                    out[b0 + q, o, 2 * ty, k] = r0[k]
                if 2 * ty + 1 < oh:
                    for k in range(ow):
                        out[b0 + q, o, 2 * ty + 1, k] = r1[k]


@njit(cache=True, parallel=True)
def forward_core(x, u, group, out):
    """out (N, OC, H, W) = the 3x3 stride-1 padding-1 convolution of x with U."""
    n, c = x.shape[0], x.shape[1]
    oc, t = out.shape[1], (out.shape[2] + 1) // 2 * ((out.shape[3] + 1) // 2)
    for task in prange((n + group - 1) // group):
        b0 = task * group
        m = min(group, n - b0)
        v = np.empty((16, c, m * t), dtype=x.dtype)
        mm = np.empty((16, oc, m * t), dtype=x.dtype)
        _input_tiles(x, b0, v)
        for xi in range(16):
            np.dot(u[xi], v[xi], mm[xi])     # (OC, C) @ (C, m*T)
        _output_tiles(mm, b0, out)
