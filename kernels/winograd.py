"""Winograd's F(2x2, 3x3): 3x3 stride-1 padding-1 convolution with 16 GEMMs instead of 36
multiplications per 2x2 output tile, for kernels/cpu.py.

Cut the padded input into 4x4 tiles d that overlap by 2 (tile (ty, tx) starts at row
2*ty - 1, column 2*tx - 1) and the output into the 2x2 tiles they produce. Then, with the
constant matrices B^T (4x4), G (4x3) and A^T (2x4) (G is below; B^T and A^T are written
out as the sums in _along_rows, _input_tiles and _output_tiles),
    U = G w G^T        for every (oc, c): the weight, 4x4               (weight_transform)
    V = B^T d B        for every (c, tile): the input tile, 4x4         (_input_tiles)
    M[xi] = U[xi] @ V[xi]   for each of the 16 entries xi: (OC, C) @ (C, tiles), a GEMM
    y = A^T M A        for every (oc, tile): the 2x2 output tile        (_output_tiles)
which is exactly the 3x3 correlation: 16 multiplications per tile and channel pair
instead of 4*9 = 36, so the GEMMs do 2.25x less work than im2col's, and the transforms are
additions. The gradient of the input is the same convolution of grad_out with the weight
rotated 180 degrees and its channels swapped (`flipped`; `flipped_weight_transform`
transforms it without the copy). The weight gradient is the adjoint of the same pieces
(`weight_grad`): dM = A dY A^T for every output-gradient tile, then
dU[xi] = dM[xi] @ V[xi]^T summed over the tiles of all images (16 GEMMs a task of images,
summed into its thread's dU), then dw = G^T dU G. The transforms of float32 data
lose a few bits against the direct sum (tests/test_kernels.py holds them to the reference).

The batch is cut into tasks of `group` images, as in cpu.py's GEMM path, each with its
own V and M in cache. On small planes (8x8, 7x7) this layout wastes a fifth of its GEMMs on
spare tiles and runs short loops (on 16x16 a ninth): winograd_lanes.py lays the same
transforms out with a task's images side by side, and conv_plan.py sends the layers up to
16 wide there. On layers of few channels the 16 GEMMs run as small_gemm.py's loop, faster
there than OpenBLAS's AVX2 kernels (up to the policy's `winograd_loop_gemm_max_channels`:
32, or None where the BLAS runs an AVX-512 kernel).
Tiles of an odd-sized output run past its edge: those outputs are dropped.

Layout. The tiles of an image are numbered j = ty*(tw+1) + tx: a row of tiles has one
spare tile at its end (tx = tw), computed and never used. With it, every step of both
transforms is a loop over all j of a channel at once with no test inside, which
vectorises; a tile row of its own (tw = 16, 8, 4 on the resnet20 layers) is too short for
that. The input transform lays the padded plane out as its even rows and its odd ones
(pp[0], pp[1]), whole rows of x copied as they lie, each padded row 2*(tw+1) long: the
columns d0..d3 of tile j are then entries 2j..2j+3 of a row, read two apart, and its rows
are the rows of pp[0] and pp[1] at tile row ty and ty + 1. The output transform writes
its rows the same way (two outputs of a tile side by side) and copies them out whole.
What the layout bought, and when Winograd pays at all, is measured in benchmarks/README.md
("How the CPU layer picks a convolution").
"""
import numpy as np
from numba import njit, prange

from . import blas, buffers, small_gemm
from .prefetch import ahead
from .conv_bias import finish

G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
ENTRIES = 16                     # entries of a transformed tile: GEMMs per layer


@njit(cache=True)
def tiles(oh, ow):
    """The tiles of an OH x OW output in the layout above: th*(tw+1), a spare one a row."""
    return ((oh + 1) // 2) * ((ow + 1) // 2 + 1)


@njit(cache=True, inline="always")
def _g_rows(entries):
    """G applied to the three entries (w0, w1, w2) of a column (or row) of w: the four
    w0, (w0 + w1 + w2)/2, (w0 - w1 + w2)/2, w2."""
    w0, w1, w2 = entries
    return w0, 0.5 * (w0 + w1 + w2), 0.5 * (w0 - w1 + w2), w2


@njit(cache=True, inline="always")
def _gt_rows(d0, d1, d2, d3):
    """G^T applied to four entries d0..d3: the three d0 + (d1 + d2)/2, (d1 - d2)/2,
    (d1 + d2)/2 + d3. The adjoint of _g_rows."""
    return d0 + 0.5 * (d1 + d2), 0.5 * (d1 - d2), 0.5 * (d1 + d2) + d3


@njit(cache=True, inline="always")
def _g_into(w0, w1, w2, o0, o1, o2, o3):
    """o0..o3 = _g_rows((w0, w1, w2)) entry by entry along four rows, in float64, each
    result rounded once to o's dtype: one loop over the entries."""
    for q in range(o0.size):
        o0[q], o1[q], o2[q], o3[q] = _g_rows((np.float64(w0[q]), np.float64(w1[q]),
                                              np.float64(w2[q])))


@njit(cache=True, inline="always")
def taps_of_row(w4, flip, r):
    """The nine taps of every column q of row r of the transformed weight, as rows in
    float64: taps[3i + j, q] = w[i, j], w = w4[r, q] or, flip, w4[q, r] rotated 180."""
    oc, c = w4.shape[0], w4.shape[1]
    columns = oc if flip else c
    first, step = (2, -1) if flip else (0, 1)     # w[i, j] is w4[., ., first + step*i, ...]
    taps = np.empty((9, columns), dtype=np.float64)
    for q in range(columns):
        for i in range(3):
            for j in range(3):
                if flip:
                    taps[3 * i + j, q] = w4[q, r, first + step * i, first + step * j]
                else:
                    taps[3 * i + j, q] = w4[r, q, i, j]
    return taps


@njit(cache=True, parallel=True)
def _weight_transform(w4, flip, u):
    """u = G w G^T for every (oc, c) of w4 (OC, C, 3, 3), in w4's dtype (computed in
    float64): _g_rows down each column of w, then along each row of G w. flip: of the
    rotated weight with its channels swapped, U (16, C, OC), read from w4 in place.
    A thread takes a row r of U at a time (an output channel of the transformed weight),
    all its columns q together: the nine taps of every q copied into rows (taps[3i + j]
    = w[i, j]), then each step one vectorised loop over q (_g_into), the last writing
    U's 16 rows u[k, r] straight: the same sums, bit for bit, as a loop over (r, q) that
    wrote the 16 values of each through a scratch row, in half its time or less from 64
    channels on (resnet18's 512: 1.26-1.52 against 0.82-0.84 ms; two threads, AMD family
    26)."""
    oc, c = w4.shape[0], w4.shape[1]
    rows, columns = (c, oc) if flip else (oc, c)
    for r in prange(rows):
        taps = taps_of_row(w4, flip, r)
        gw = np.empty((12, columns), dtype=np.float64)   # gw[4j + a] = (G w)[a, j]
        for j in range(3):                               # down the columns of w
            _g_into(taps[j], taps[3 + j], taps[6 + j], gw[4 * j], gw[4 * j + 1],
                    gw[4 * j + 2], gw[4 * j + 3])
        for a in range(4):                               # along the rows of G w
            _g_into(gw[a], gw[4 + a], gw[8 + a], u[4 * a, r], u[4 * a + 1, r],
                    u[4 * a + 2, r], u[4 * a + 3, r])


def transformed(core, entries, w4, flip):
    """core(w4, flip, u) into a new u: (entries, OC, C), or (entries, C, OC) where flip
    (this file's and winograd4.py's _weight_transform)."""
    oc, c = w4.shape[0], w4.shape[1]
    u = buffers.empty((entries,) + ((c, oc) if flip else (oc, c)), w4.dtype)
    core(w4, flip, u)
    return u


def weight_transform(w4):
    """w4 (OC, C, 3, 3) -> U (16, OC, C), U[4a + b] = (G w G^T)[a, b]: the weights of
    the output's 16 GEMMs."""
    return transformed(_weight_transform, ENTRIES, w4, False)


def flipped_weight_transform(w4):
    """weight_transform(flipped(w4)), (16, C, OC), without flipped's copy: the weights of
    the input gradient's 16 GEMMs, the same sums of the same numbers."""
    return transformed(_weight_transform, ENTRIES, w4, True)


def weight_transform_adjoint(gu):
    """dU (16, OC, C) -> dw (OC, C, 3, 3) = G^T dU G for every (oc, c), in dU's dtype
    (computed in float64): the gradient of weight_transform. U is linear in w, so this is
    its adjoint: _gt_rows along each row of dU, then down each column. Read through a
    scratch row, as weight_transform writes. gu may also be (P, 16, OC, C), parts whose
    sum is dU (the threads' parts of winograd_lanes.weight_grad): they are added in
    float64, in order, as they are read, with no pass of their own over memory."""
    parts = gu if gu.ndim == 4 else gu.reshape((1,) + gu.shape)
    dw = buffers.empty(parts.shape[2:] + (3, 3), gu.dtype)
    _weight_transform_adjoint(parts, dw)
    return dw


@njit(cache=True, inline="always")
def _gt_into(d0, d1, d2, d3, o0, o1, o2):
    """o0..o2 = _gt_rows(d0, d1, d2, d3) entry by entry along the rows, in one loop."""
    for q in range(o0.size):
        o0[q], o1[q], o2[q] = _gt_rows(d0[q], d1[q], d2[q], d3[q])


@njit(cache=True, parallel=True)
def _weight_transform_adjoint(parts, dw):
    """dw = weight_transform_adjoint of the sum of parts (P, 16, OC, C), written into dw.
    A thread takes an output channel o at a time, all its input channels together: the
    parts summed into 16 rows of float64, then _gt_rows along the rows of dU and down the
    columns of dU G as loops over the channels (_gt_into), then the nine values of each
    channel into dw[o]: the same sums, bit for bit, as a channel at a time, 1.3x (16
    channels) to 3x (64) as fast (two threads, AMD family 26)."""
    _, _, oc, c = parts.shape
    for o in prange(oc):
        d = np.zeros((16, c), dtype=np.float64)
        for p in range(parts.shape[0]):
            for k in range(16):
                row, part = d[k], parts[p, k, o]
                for ch in range(c):
                    row[ch] += part[ch]
        du_g = np.empty((12, c), dtype=np.float64)       # du_g[3a + j] = (dU G)[a, j]
        for a in range(4):
            _gt_into(d[4 * a], d[4 * a + 1], d[4 * a + 2], d[4 * a + 3], du_g[3 * a],
                     du_g[3 * a + 1], du_g[3 * a + 2])
        taps = np.empty((9, c), dtype=dw.dtype)          # taps[3i + j] = dw[o, :, i, j]
        for j in range(3):
            _gt_into(du_g[j], du_g[3 + j], du_g[6 + j], du_g[9 + j], taps[j], taps[3 + j],
                     taps[6 + j])
        for ch in range(c):
            for t in range(9):
                dw[o, ch, t // 3, t % 3] = taps[t, ch]


def flipped(w4):
    """The weight whose convolution is the adjoint of w4's: (C, OC, 3, 3), rotated 180."""
    return np.ascontiguousarray(w4[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


@njit(cache=True, inline="always")
def _row_length(w):
    """A padded row as _padded_rows lays it out: 2*(tw + 1) for tw = (w + 1) // 2 tiles
    and the spare one, so the columns of tile j start at 2j in every row of tiles."""
    return 2 * ((w + 1) // 2 + 1)


@njit(cache=True)
def _padded_rows(x, b, ch, pp):
    """The plane x[b, ch] with its ring of zero padding, its even padded rows in pp[0] and
    its odd ones in pp[1], one after another, each _row_length(w) long: padded row
    2i + p is pp[p, i*rw:(i + 1)*rw], padded column 0 is the padding. Whole rows of x,
    copied as they lie; entries past x keep the zeros pp was made with."""
    h, w = x.shape[2], x.shape[3]
    rw = _row_length(w)
    for y in range(h):
        start = ((y + 1) // 2) * rw + 1              # padded row y + 1, column 1
        dst = pp[(y + 1) % 2, start:start + w]
        src = x[b, ch, y]
        for k in range(w):
            dst[k] = src[k]


@njit(cache=True)
def _along_rows(p, dk):
    """dk[k, j] = (d B)[k] for the row d0..d3 = p[2j], p[2j + 1], p[2j + 2], p[2j + 3]
    of every tile j: d0 - d2, d1 + d2, d2 - d1, d1 - d3. One loop that reads each input
    once (stride-2 loads, which vectorise): 2.8 against 4.1 us an image with the columns
    first split into even and odd ones (16@32, one thread, AMD family 26)."""
    k0, k1, k2, k3 = dk[0], dk[1], dk[2], dk[3]
    for j in range(dk.shape[1]):
        e0, e1, e2, e3 = p[2 * j], p[2 * j + 1], p[2 * j + 2], p[2 * j + 3]
        k0[j] = e0 - e2
        k1[j] = e1 + e2
        k2[j] = e2 - e1
        k3[j] = e1 - e3


@njit(cache=True)
def _input_tiles(x, b0, v):
    """v (16, C, m*T) = B^T d B of every 4x4 tile d of the images b0, ..., b0 + m - 1."""
    _, c, h, w = x.shape
    th, r = (h + 1) // 2, (w + 1) // 2 + 1
    t = th * r
    pp = np.zeros((2, (th + 2) * _row_length(w)), dtype=x.dtype)  # a spare row: the spare
    de = np.empty((4, (th + 1) * r), dtype=x.dtype)  # tile's reads; d B of the even padded
    do = np.empty((4, (th + 1) * r), dtype=x.dtype)  # rows, of the odd ones
    for q in range(v.shape[2] // t):
        for ch in range(c):
            _padded_rows(x, b0 + q, ch, pp)
            _along_rows(pp[0], de)
            _along_rows(pp[1], do)
            for k in range(4):               # B^T (d B): rows d0..d3 of tile j are
                d0, d1 = de[k, :t], do[k, :t]    # de[j], do[j], de[j + r], do[j + r]
                d2, d3 = de[k, r:r + t], do[k, r:r + t]
                v0 = v[k, ch, q * t:(q + 1) * t]
                v1 = v[4 + k, ch, q * t:(q + 1) * t]
                v2 = v[8 + k, ch, q * t:(q + 1) * t]
                v3 = v[12 + k, ch, q * t:(q + 1) * t]
                for j in range(t):           # one loop, each input read once: 7.5 against
                    e0, e1, e2, e3 = d0[j], d1[j], d2[j], d3[j]  # 9.4 us an image with a
                    v0[j] = e0 - e2          # loop an output (16@32, one thread, AMD
                    v1[j] = e1 + e2          # family 26)
                    v2[j] = e2 - e1
                    v3[j] = e1 - e3


@njit(cache=True)
def _output_tiles(mm, b0, out):
    """out[b0 + q, o] = A^T M A for every tile, M = mm[:, o, tile] as 4x4."""
    _, oc, oh, ow = out.shape
    th, r = (oh + 1) // 2, (ow + 1) // 2 + 1
    t = th * r
    rw = _row_length(ow)
    s = np.empty((2, 4, t), dtype=out.dtype)     # A^T M: rows m0 + m1 + m2, m1 - m2 - m3
    yy = np.empty((2, th * rw), dtype=out.dtype)  # (A^T M) A: output rows 2ty + a in
    for q in range(mm.shape[2] // t):            # yy[a], laid out as _padded_rows's
        for o in range(oc):
            j0, j1 = q * t, (q + 1) * t
            for k in range(4):
                a_rows(mm[k, o, j0:j1], mm[4 + k, o, j0:j1], mm[8 + k, o, j0:j1],
                       mm[12 + k, o, j0:j1], s[0, k], s[1, k])
            for a in range(2):                   # the same along the rows
                _a_rows_pairs(s[a, 0], s[a, 1], s[a, 2], s[a, 3], yy[a])
            for row in range(oh):                # whole rows out, as they lie
                start = (row // 2) * rw
                src = yy[row % 2, start:start + ow]
                dst = out[b0 + q, o, row]
                for k in range(ow):
                    dst[k] = src[k]


@njit(cache=True, inline="always")
def a_rows(m0, m1, m2, m3, s0, s1):
    """s0, s1 = m0 + m1 + m2, m1 - m2 - m3 elementwise: A^T's two rows applied to the four
    entries m0..m3 of every column (or A to those of every row), in one loop that reads
    each input once."""
    for j in range(s0.size):
        e0, e1, e2, e3 = m0[j], m1[j], m2[j], m3[j]
        s0[j] = e0 + e1 + e2
        s1[j] = e1 - e2 - e3


@njit(cache=True, inline="always")
def _a_rows_pairs(m0, m1, m2, m3, y):
    """y[2j], y[2j + 1] = m0 + m1 + m2, m1 - m2 - m3 at j: a_rows along the rows, its two
    outputs written side by side, the two output columns 2tx, 2tx + 1 of tile j (stride-2
    stores, which vectorise), then copied out a row at a time: with a_rows in one loop,
    _output_tiles took 4.6 against 6.1 us an image where a_rows ran a loop an output and
    the rows were written out a pair at a time (16@32, one thread, AMD family 26)."""
    for j in range(m0.size):
        e0, e1, e2, e3 = m0[j], m1[j], m2[j], m3[j]
        y[2 * j] = e0 + e1 + e2
        y[2 * j + 1] = e1 - e2 - e3


@njit(cache=True, inline="always")
def a_adjoint(e0, e1, d0, d1, d2, d3):
    """d0..d3 = e0, e0 + e1, e0 - e1, -e1 elementwise: the adjoint of A^T's two rows
    (m0 + m1 + m2, m1 - m2 - m3), in one loop that reads each input once."""
    for j in range(e0.size):
        u0, u1 = e0[j], e1[j]
        d0[j] = u0
        d1[j] = u0 + u1
        d2[j] = u0 - u1
        d3[j] = -u1


@njit(cache=True, inline="always")
def _pairs_adjoint(y, d0, d1, d2, d3):
    """a_adjoint of the pairs y[2j], y[2j + 1] (stride-2 loads): the adjoint of
    _a_rows_pairs."""
    for j in range(d0.size):
        u0, u1 = y[2 * j], y[2 * j + 1]
        d0[j] = u0
        d1[j] = u0 + u1
        d2[j] = u0 - u1
        d3[j] = -u1


@njit(cache=True)
def _output_tiles_adjoint(g, b0, gm):
    """gm (16, OC, m*T) = A dY A^T for every tile of the images b0, ..., b0 + m - 1 of g
    (N, OC, OH, OW), dY the tile's 2x2 of g (zero past g's edge and in the spare tiles):
    the gradient of _output_tiles. A^T's rows m0 + m1 + m2 and m1 - m2 - m3 have the
    adjoint dy0 -> (dy0, dy0 + dy1, dy0 - dy1, -dy1), applied along the columns of dY and
    then down the rows."""
    _, oc, oh, ow = g.shape
    th, r = (oh + 1) // 2, (ow + 1) // 2 + 1
    t = th * r
    rw = _row_length(ow)
    yy = np.zeros((2, th * rw), dtype=g.dtype)     # g's rows as _output_tiles writes them;
    ds = np.empty((2, 4, t), dtype=g.dtype)        # what is never written stays zero: past
    for q in range(gm.shape[2] // t):              # the edge, the spare tiles
        for o in range(oc):
            for row in range(oh):                    # whole rows in, as they lie
                start = (row // 2) * rw
                src = g[b0 + q, o, row]
                dst = yy[row % 2, start:start + ow]
                for k in range(ow):
                    dst[k] = src[k]
            for a in range(2):                       # along the columns: dY[a] -> ds[a]
                _pairs_adjoint(yy[a], ds[a, 0], ds[a, 1], ds[a, 2], ds[a, 3])
            for k in range(4):                       # down the rows: ds[:, k] -> dM[:, k]
                j0, j1 = q * t, (q + 1) * t
                a_adjoint(ds[0, k], ds[1, k], gm[k, o, j0:j1], gm[4 + k, o, j0:j1],
                           gm[8 + k, o, j0:j1], gm[12 + k, o, j0:j1])


# ---- the weight gradient: tasks of images, their tiles side by side, in each thread's part

@njit(cache=True, inline="always")
def run_of(part, parts, tasks):
    """The tasks of run `part` when `tasks` tasks are cut into `parts` runs as evenly as
    they divide: (first, stop), range(first, stop) its tasks."""
    return part * tasks // parts, (part + 1) * tasks // parts


@njit(cache=True)
def add_gemms(fn, gm, v, first, gu):
    """A task's share of dU: gu[xi] = gm[xi] @ v[xi]^T for the 16 entries, (OC, T) @ (T, C),
    where first (the first task of a part: no zeroing pass), else gu[xi] += that product,
    added by the BLAS as it writes (beta 1: kernels/blas.py, fn its GEMM). Each GEMM on
    the calling thread. With the product made apart by np.dot and then added, resnet20's
    64@8 task took 121 against 99 us (one thread, AMD family 26, OpenBLAS's SkylakeX
    kernel)."""
    oc, t, c = gm.shape[1], gm.shape[2], v.shape[1]
    for xi in range(16):
        blas.gemm(fn, False, True, oc, c, t, gm[xi], t, v[xi].ravel(), 0, t,
                  0 if first else 1, gu[xi].ravel(), 0, c)


@njit(cache=True, parallel=True)
def _weight_grad_parts(fn, g, x, group, gu_parts, v, gm):
    """gu_parts[p] (16, OC, C) = sum over the tasks of part p of dM[xi] @ V[xi]^T: the
    tasks of `group` images cut into gu_parts.shape[0] runs, one run a part, the parts
    shared among the threads. A task's V (16, C, m*T) and dM (16, OC, m*T) are made and
    used at once, in cache; v and gm (flat) are each part's scratch, the first axis the
    part (weight_grad); fn the BLAS's GEMM (add_gemms). dM is zero on the spare tiles, so
    they add nothing."""
    n, c = x.shape[0], x.shape[1]
    oc, t = g.shape[1], tiles(x.shape[2], x.shape[3])
    tasks = (n + group - 1) // group
    parts = gu_parts.shape[0]
    for part in prange(parts):
        first, stop = run_of(part, parts, tasks)
        for task in range(first, stop):
            b0 = task * group
            m = min(group, n - b0)
            vt = v[part, :16 * c * m * t].reshape((16, c, m * t))
            gmt = gm[part, :16 * oc * m * t].reshape((16, oc, m * t))
            _input_tiles(x, b0, vt)
            _output_tiles_adjoint(g, b0, gmt)
            add_gemms(fn, gmt, vt, task == first, gu_parts[part])


def weight_grad(g, x, group, parts):
    """The weight gradient (OC, C, 3, 3) of the 3x3 stride-1 padding-1 convolution of x
    (N, C, H, W) whose output gradient is g (N, OC, H, W), both C-contiguous: with
    V = B^T d B and dM = A dY A^T over the tiles of the images,
        dU[xi] = sum over tiles of dM[xi] V[xi]^T     16 GEMMs (OC, T) @ (T, C) a task
        dw     = G^T dU G                             weight_transform_adjoint
    the adjoint of U = G w G^T and M = U V. Tasks of `group` images, their V and dM used
    while in cache, in `parts` runs (at most one a task), each run's dU summed task by task
    in its thread (_weight_grad_parts), then the parts' dU, in order, as the adjoint
    transform reads them; the parts and each part's scratch come from kernels/buffers.py.
    Nothing the size of the batch's V or dM is ever in memory: where V and dM of the whole
    batch were made first and then multiplied, resnet20's 16@32 weight gradient took
    1.6x as long as the shifted rows. The caller holds SciPy's BLAS to one thread (cpu.py)."""
    n, c, h, w = x.shape
    oc, t = g.shape[1], tiles(h, w)
    parts = max(1, min(parts, -(-n // group)))
    gu_parts = buffers.empty((parts, 16, oc, c), x.dtype)
    if n == 0:
        gu_parts[...] = 0
        return weight_transform_adjoint(gu_parts)
    v = buffers.empty((parts, 16 * c * group * t), x.dtype)       # a task's V, flat
    gm = buffers.empty((parts, 16 * oc * group * t), x.dtype)     # ... and its dM
    _weight_grad_parts(blas.function(x.dtype.str), g, x, group, gu_parts, v, gm)
    return weight_transform_adjoint(gu_parts)


@njit(cache=True, parallel=True)
def forward_core(x, u, group, out, epilogue, loop_gemm):
    """out (N, OC, H, W) = the 3x3 stride-1 padding-1 convolution of x with U, then the
    epilogue (a bias, batch norm's affine map, relu: kernels/conv_bias.py). loop_gemm: the
    16 GEMMs by small_gemm.py's loop instead of the BLAS (for layers of few channels)."""
    n, c = x.shape[0], x.shape[1]
    oc, t = out.shape[1], tiles(out.shape[2], out.shape[3])
    for task in prange((n + group - 1) // group):
        b0 = task * group
        m = min(group, n - b0)
        v = np.empty((16, c, m * t), dtype=x.dtype)
        mm = np.empty((16, oc, m * t), dtype=x.dtype)
        _input_tiles(x, b0, v)
        for xi in range(16):                 # (OC, C) @ (C, m*T)
            ahead(x, b0 + m, group, xi, 16, False)   # the next task's input and this
            ahead(out, b0, m, xi, 16, True)          # task's output, a 16th a GEMM
            if loop_gemm:
                small_gemm.matmul_into(u[xi], v[xi], mm[xi])
            else:
                np.dot(u[xi], v[xi], mm[xi])
        _output_tiles(mm, b0, out)
        finish(out.reshape(n, oc, -1), b0, m, epilogue)
