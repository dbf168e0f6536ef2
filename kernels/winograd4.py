"""Winograd's F(4x4, 3x3): 3x3 stride-1 padding-1 convolution with 36 GEMMs over 4x4 output
tiles, for the output and the input gradient of kernels/cpu.py's wider layers.

The same construction as winograd.py's F(2x2, 3x3), on bigger tiles. Cut the padded input
into 6x6 tiles d that overlap by 2 (tile (ty, tx) starts at padded row 4*ty, column 4*tx)
and the output into the 4x4 tiles they produce. With B^T (6x6), G (6x3) and A^T (4x6)
(Lavin and Gray's, from the points 0, 1, -1, 2, -2 and infinity: G is below, B^T and A^T
are written out as the sums in _bt and _at),
    U = G w G^T        for every (oc, c): the weight, 6x6                (weight_transform)
    V = B^T d B        for every (c, tile): the input tile, 6x6          (_input_tiles)
    M[xi] = U[xi] @ V[xi]   for each of the 36 entries xi: (OC, C) @ (C, tiles), a GEMM
    y = A^T M A        for every (oc, tile): the 4x4 output tile          (_output_tiles)
which is exactly the 3x3 correlation: 36 multiplications per tile and channel pair where
im2col's GEMM does 16*9 = 144, 4x less (F(2x2, 3x3): 2.25x), and V and M hold 36/16 = 2.25
entries per output pixel where F(2x2, 3x3)'s hold 4. The price is rounding: B^T and A^T
have entries up to 5 and 8, G down to 1/24, so float32 results carry a few more bits of
error than F(2x2, 3x3)'s (tests/test_kernels.py holds both to the reference). The input
gradient is the same convolution of grad_out with the weight rotated 180 degrees and its
channels swapped (flipped_weight_transform).

Layout, as winograd.py's with four phases where it has two. The tiles of an image are
numbered j = ty*(tw+1) + tx: a row of tiles has one spare tile at its end, computed and
never used, so that every step of both transforms is a loop over all j of a channel at
once. The input transform cuts the padded plane into its rows and columns modulo 4
(p[row phase, column phase]): the columns d0..d5 of tile j in a row phase are then
p[., 0][j], p[., 1][j], p[., 2][j], p[., 3][j], p[., 0][j+1], p[., 1][j+1], and its rows are
the row phases 0..3 at j and phases 0, 1 at j + tw + 1. The output transform writes each
output row as runs of four the same way. Tiles of an output whose size 4 does not divide
run past its edge: those outputs are dropped.
"""
import numpy as np
from numba import njit, prange

from . import small_gemm
from .conv_bias import finish
from .winograd import taps_of_row, transformed

ENTRIES = 36                     # entries of a transformed tile: GEMMs per layer

G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]])


@njit(cache=True)
def tiles(oh, ow):
    """The tiles of an OH x OW output in the layout above: th*(tw+1), a spare one a row."""
    return ((oh + 3) // 4) * ((ow + 3) // 4 + 1)


@njit(cache=True, inline="always")
def _g_rows(entries):
    """G applied to the three entries (w0, w1, w2) of a column (or row) of w: the six
    w0/4, -(w0 + w1 + w2)/6, -(w0 - w1 + w2)/6, w0/24 + w1/12 + w2/6,
    w0/24 - w1/12 + w2/6, w2 (multiplied by G's entries, as G holds them)."""
    w0, w1, w2 = entries
    sixth, twelfth = 1 / 6, 1 / 12
    a = w0 * (1 / 24) + w2 * sixth
    return (0.25 * w0, -sixth * (w0 + w1 + w2), -sixth * (w0 - w1 + w2),
            a + twelfth * w1, a - twelfth * w1, w2)


@njit(cache=True, inline="always")
def _g_into(w0, w1, w2, o):
    """o[0..5] = _g_rows((w0, w1, w2)) entry by entry along the rows (o: six rows), in
    float64, each result rounded once to o's dtype: one vectorised loop, as
    winograd._g_into."""
    for q in range(o.shape[1]):
        g = _g_rows((np.float64(w0[q]), np.float64(w1[q]), np.float64(w2[q])))
        for a in range(6):
            o[a, q] = g[a]


@njit(cache=True, parallel=True)
def _weight_transform(w4, flip, u):
    """u (36, OC, C) = G w G^T of every (oc, c) of w4, computed in float64 (flip: of the
    rotated weight with its channels swapped, (36, C, OC), read from w4 in place), as
    winograd._weight_transform lays the work out: a row of U a thread, its taps copied
    into rows, then _g_into down the columns of w and along the rows of G w, over all
    columns of U at once, the last step writing U's rows straight."""
    oc, c = w4.shape[0], w4.shape[1]
    rows, columns = (c, oc) if flip else (oc, c)
    for r in prange(rows):
        taps = taps_of_row(w4, flip, r)
        gw = np.empty((18, columns), dtype=np.float64)   # gw[6j + a] = (G w)[a, j]
        for j in range(3):                               # down the columns of w
            _g_into(taps[j], taps[3 + j], taps[6 + j], gw[6 * j:6 * j + 6])
        for a in range(6):                               # along the rows of G w
            _g_into(gw[a], gw[6 + a], gw[12 + a], u[6 * a:6 * a + 6, r])


def weight_transform(w4):
    """w4 (OC, C, 3, 3) -> U (36, OC, C), U[6a + b] = (G w G^T)[a, b]: the weights of the
    output's 36 GEMMs."""
    return transformed(_weight_transform, ENTRIES, w4, False)


def flipped_weight_transform(w4):
    """weight_transform(winograd.flipped(w4)), (36, C, OC), without the copy: the weights
    of the input gradient's 36 GEMMs."""
    return transformed(_weight_transform, ENTRIES, w4, True)


@njit(cache=True, inline="always")
def _bt(d0, d1, d2, d3, d4, d5, v0, v1, v2, v3, v4, v5):
    """v0..v5 = B^T's six rows applied to the entries d0..d5 of every column (or B to
    those of every row): 4d0 - 5d2 + d4, d3 + d4 - 4(d1 + d2), d4 - d3 + 4(d1 - d2),
    d4 - d2 + 2(d3 - d1), d4 - d2 - 2(d3 - d1), 4d1 - 5d3 + d5; one loop that reads each
    input once (a loop an output read them up to three times: resnet18's 64@56 input
    transform 186 against 131 us an image, 128@28 171 against 87, one thread, AMD family
    26; the same sums, bit for bit)."""
    for j in range(v0.size):
        a0, a1, a2, a3, a4, a5 = d0[j], d1[j], d2[j], d3[j], d4[j], d5[j]
        v0[j] = 4 * a0 - 5 * a2 + a4
        v1[j] = a3 + a4 - 4 * (a1 + a2)
        v2[j] = a4 - a3 + 4 * (a1 - a2)
        v3[j] = a4 - a2 + 2 * (a3 - a1)
        v4[j] = a4 - a2 - 2 * (a3 - a1)
        v5[j] = 4 * a1 - 5 * a3 + a5


@njit(cache=True, inline="always")
def _at(m0, m1, m2, m3, m4, m5, y0, y1, y2, y3):
    """y0..y3 = A^T's four rows applied to the entries m0..m5 of every column (or A to
    those of every row): m0 + m1 + m2 + m3 + m4, m1 - m2 + 2(m3 - m4),
    m1 + m2 + 4(m3 + m4), m1 - m2 + 8(m3 - m4) + m5; one loop that reads each input
    once (the output transform 126 against 96 us an image on 64@56, 85 against 72 on
    128@28, as _bt)."""
    for j in range(y0.size):
        a0, a1, a2, a3, a4, a5 = m0[j], m1[j], m2[j], m3[j], m4[j], m5[j]
        y0[j] = a0 + a1 + a2 + a3 + a4
        y1[j] = a1 - a2 + 2 * (a3 - a4)
        y2[j] = a1 + a2 + 4 * (a3 + a4)
        y3[j] = a1 - a2 + 8 * (a3 - a4) + a5


@njit(cache=True)
def _split(x, b, ch, p):
    """The plane x[b, ch] with its ring of zero padding cut sixteen ways: p[q, k] holds the
    padded rows 4*ty + q, columns 4*tx + k, at ty*(tw+1) + tx. Entries past x stay zero."""
    h, w = x.shape[2], x.shape[3]
    r = (w + 3) // 4 + 1
    for y in range(h):
        q, at = (y + 1) % 4, ((y + 1) // 4) * r   # padded row y + 1
        row = x[b, ch, y]
        for m in range(w // 4):                   # x columns 4m..4m+3: padded 4m+1..4m+4
            p[q, 1, at + m] = row[4 * m]
            p[q, 2, at + m] = row[4 * m + 1]
            p[q, 3, at + m] = row[4 * m + 2]
            p[q, 0, at + m + 1] = row[4 * m + 3]
        for col in range(w - w % 4, w):
            p[q, (col + 1) % 4, at + (col + 1) // 4] = row[col]


@njit(cache=True)
def _input_tiles(x, b0, v):
    """v (36, C, m*T) = B^T d B of every 6x6 tile d of the images b0, ..., b0 + m - 1."""
    _, c, h, w = x.shape
    th, r = (h + 3) // 4, (w + 3) // 4 + 1
    t = th * r
    n = (th + 1) * r                                 # a row of tiles more: rows 4, 5
    p = np.zeros((4, 4, n + 1), dtype=x.dtype)       # and one entry: the spare tile's reads
    db = np.empty((4, 6, n), dtype=x.dtype)          # d B of each row phase
    for q in range(v.shape[2] // t):
        for ch in range(c):
            _split(x, b0 + q, ch, p)
            for ph in range(4):                      # along the rows: d B
                p0, p1, p2, p3 = p[ph, 0], p[ph, 1], p[ph, 2], p[ph, 3]
                _bt(p0[:n], p1[:n], p2[:n], p3[:n], p0[1:], p1[1:],
                    db[ph, 0], db[ph, 1], db[ph, 2], db[ph, 3], db[ph, 4], db[ph, 5])
            for k in range(6):                       # down the columns: B^T (d B)
                r0, r1, r2, r3 = db[0, k], db[1, k], db[2, k], db[3, k]
                j0, j1 = q * t, (q + 1) * t
                _bt(r0[:t], r1[:t], r2[:t], r3[:t], r0[r:r + t], r1[r:r + t],
                    v[k, ch, j0:j1], v[6 + k, ch, j0:j1], v[12 + k, ch, j0:j1],
                    v[18 + k, ch, j0:j1], v[24 + k, ch, j0:j1], v[30 + k, ch, j0:j1])


@njit(cache=True)
def _output_tiles(mm, b0, out):
    """out[b0 + q, o] = A^T M A for every tile, M = mm[:, o, tile] as 6x6."""
    _, oc, oh, ow = out.shape
    th, r = (oh + 3) // 4, (ow + 3) // 4 + 1
    t = th * r
    s = np.empty((4, 6, t), dtype=out.dtype)         # A^T M
    y = np.empty((4, 4, t), dtype=out.dtype)         # (A^T M) A: output (4*ty + a, 4*tx + e)
    full = ow // 4
    for q in range(mm.shape[2] // t):
        j0, j1 = q * t, (q + 1) * t
        for o in range(oc):
            for k in range(6):
                _at(mm[k, o, j0:j1], mm[6 + k, o, j0:j1], mm[12 + k, o, j0:j1],
                    mm[18 + k, o, j0:j1], mm[24 + k, o, j0:j1], mm[30 + k, o, j0:j1],
                    s[0, k], s[1, k], s[2, k], s[3, k])
            for a in range(4):                       # the same along the rows
                _at(s[a, 0], s[a, 1], s[a, 2], s[a, 3], s[a, 4], s[a, 5],
                    y[a, 0], y[a, 1], y[a, 2], y[a, 3])
            for row in range(oh):
                a, at = row % 4, (row // 4) * r
                y0, y1, y2, y3 = y[a, 0, at:at + r], y[a, 1, at:at + r], y[a, 2, at:at + r], \
                    y[a, 3, at:at + r]
                dst = out[b0 + q, o, row]
                for tx in range(full):               # written as runs of four
                    dst[4 * tx] = y0[tx]
                    dst[4 * tx + 1] = y1[tx]
                    dst[4 * tx + 2] = y2[tx]
                    dst[4 * tx + 3] = y3[tx]
                for col in range(4 * full, ow):
                    dst[col] = y[a, col % 4, at + full]


@njit(cache=True, parallel=True)
def forward_core(x, u, group, out, epilogue, loop_gemm):
    """out (N, OC, H, W) = the 3x3 stride-1 padding-1 convolution of x with U (36, OC, C),
    then the epilogue (kernels/conv_bias.py). loop_gemm: the 36 GEMMs by
    small_gemm.py's loop instead of the BLAS."""
    n, c = x.shape[0], x.shape[1]
    oc, t = out.shape[1], tiles(out.shape[2], out.shape[3])
    for task in prange((n + group - 1) // group):
        b0 = task * group
        m = min(group, n - b0)
        v = np.empty((36, c, m * t), dtype=x.dtype)
        mm = np.empty((36, oc, m * t), dtype=x.dtype)
        _input_tiles(x, b0, v)
        small_gemm.products(u, v, mm, loop_gemm)     # (OC, C) @ (C, m*T), 36 of them
        _output_tiles(mm, b0, out)
        finish(out.reshape(n, oc, -1), b0, m, epilogue)
