"""Winograd's F(4x4, 3x3) in lanes, for kernels/cpu.py: winograd4.py's transforms with the
images of a task side by side, as winograd_lanes.py lays out F(2x2, 3x3)'s.

The sums are winograd4.py's (V = B^T d B on 6x6 tiles that overlap by 2, the 36 GEMMs
M[xi] = U[xi] @ V[xi], y = A^T M A on 4x4 output tiles, by its _bt and _at); the layout is
winograd_lanes.py's: entry (tile, i) of image i of a task sits at column tile*M + i
(M = `lanes`), so a row of tiles of all M images is one loop of tw*M entries and no spare
tile is needed. The padded plane is cut into its rows and columns modulo 4 (as winograd4.py
cuts it, the lanes interleaved): p[ch, q, k, row, tx*M + i] is padded pixel
(4*row + q, 4*tx + k) of image b0 + i, so the six columns d0..d5 of tile tx in a row are
the slices of phases k = 0..3 at tx and phases 0, 1 at tx + 1, and its six rows the row
phases 0..3 at ty and 0, 1 at ty + 1: every step of both transforms is a loop over whole
slices, which LLVM vectorises.

On a 16-wide output (4 tiles a row) the 36 GEMMs run over 4*4*M columns where F(2x2,
3x3)'s 16 run over 8*8*M: 4x fewer multiplications than im2col's where F(2x2, 3x3) does
2.25x. resnet20's 32@16 layer at batch 128 took 1.10-1.17 against 1.27-1.32 ms forward
and 1.11-1.20 against 1.27-1.37 for the input gradient (a task of 8 images on one thread:
117 against 159 us, the GEMMs 40 against 93); on an 8-wide output its rows of tiles are 2
long, and the transforms' short loops cost more than the GEMMs save (64@8: 1.26-1.35
against 0.96-1.10 ms forward, its forward and backward 1.19 of F(2x2)'s time), so
conv_plan.py sends only outputs at least `winograd_4x4_lanes_min_width` wide here, and
cpu.py only tasks of 8 images (two threads, AMD family 26, OpenBLAS's SkylakeX kernel).
Rounding as winograd4.py's: a few more bits of float32 error than F(2x2, 3x3)'s.
"""
import numpy as np
from numba import njit, prange

from . import buffers, small_gemm
from .conv_bias import finish
from .winograd import run_of
from .winograd4 import _at, _bt
from .winograd_lanes import _gather, _scatter


@njit(cache=True)
def _tile_grid(h, w):
    """(th, tw): the 4x4 output tiles of an h x w output, down and across."""
    return (h + 3) // 4, (w + 3) // 4


def _phase_shape(x, lanes):
    """The shape of a task's phase planes p for x's planes: (C, 4, 4, th + 1,
    (tw + 1)*lanes), a row of tiles and a tile more than the output has (rows and columns
    4 and 5 of the last tiles)."""
    th, tw = _tile_grid(x.shape[2], x.shape[3])
    return (x.shape[1], 4, 4, th + 1, (tw + 1) * lanes)


@njit(cache=True)
def _lanes_in(x, b0, m, lanes, p):
    """The planes of images b0 .. b0+m-1 of x (N, C, H, W), with their ring of zero padding,
    into the phase planes: p[ch, q, k, row, tx*lanes + i] = padded pixel (4*row + q,
    4*tx + k) of image b0 + i. Entries never written (padding, past the edge, lanes past m)
    keep the zeros p was given."""
    _, c, h, w = x.shape
    for ch in range(c):
        for y in range(h):                       # padded row y + 1
            q, row = (y + 1) % 4, (y + 1) // 4
            for z in range(w):                   # padded column z + 1
                k, tx = (z + 1) % 4, (z + 1) // 4
                _gather(p[ch, q, k, row, tx * lanes:tx * lanes + m], x, b0, m, ch, y, z)


@njit(cache=True)
def _input_tiles(p, th, tw, lanes, v):
    """v (36, C, th*tw*lanes): V[6a + k] = (B^T d B)[a, k] of every tile and lane, d the 6x6
    tile whose padded rows are 4ty..4ty+5 and columns 4tx..4tx+5."""
    n = tw * lanes                               # a row of tiles, all lanes
    t = th * n
    db = np.empty((4, 6, (th + 1) * n), dtype=p.dtype)     # d B of each row phase
    for ch in range(p.shape[0]):
        for q in range(4):                       # d B along each padded row: d0..d5 of
            for row in range(th + 1):            # tile tx are phases 0..3 at tx, 0..1 at
                p0, p1, p2, p3 = p[ch, q, 0, row], p[ch, q, 1, row], p[ch, q, 2, row], \
                    p[ch, q, 3, row]             # tx + 1
                j0, j1 = row * n, (row + 1) * n
                _bt(p0[:n], p1[:n], p2[:n], p3[:n], p0[lanes:lanes + n], p1[lanes:lanes + n],
                    db[q, 0, j0:j1], db[q, 1, j0:j1], db[q, 2, j0:j1], db[q, 3, j0:j1],
                    db[q, 4, j0:j1], db[q, 5, j0:j1])
        for k in range(6):                       # B^T (d B): the tile's rows are the row
            r0, r1, r2, r3 = db[0, k], db[1, k], db[2, k], db[3, k]   # phases at ty, and
            _bt(r0[:t], r1[:t], r2[:t], r3[:t], r0[n:n + t], r1[n:n + t],  # 0, 1 at ty + 1
                v[k, ch], v[6 + k, ch], v[12 + k, ch], v[18 + k, ch], v[24 + k, ch],
                v[30 + k, ch])


@njit(cache=True)
def _output_tiles(mm, y):
    """y (OC, 4, 4, T) = A^T M A of every tile and lane, M = mm[:, o, column] as 6x6:
    y[o, a, e, column] is output pixel (4ty + a, 4tx + e) of that tile and lane."""
    s = np.empty((4, 6, mm.shape[2]), dtype=mm.dtype)    # A^T M
    for o in range(mm.shape[1]):
        for k in range(6):
            _at(mm[k, o], mm[6 + k, o], mm[12 + k, o], mm[18 + k, o], mm[24 + k, o],
                mm[30 + k, o], s[0, k], s[1, k], s[2, k], s[3, k])
        for a in range(4):                       # the same along the rows
            _at(s[a, 0], s[a, 1], s[a, 2], s[a, 3], s[a, 4], s[a, 5],
                y[o, a, 0], y[o, a, 1], y[o, a, 2], y[o, a, 3])


@njit(cache=True)
def _lanes_out(y, tw, lanes, b0, m, out):
    """out[b0 + i, o, row, col] = y's entry for that pixel and lane i, for i < m (the
    inverse of _lanes_in's interleaving, on the output's tiles; pixels past the output's
    edge are dropped)."""
    _, oc, oh, ow = out.shape
    for o in range(oc):
        for row in range(oh):
            for col in range(ow):
                j = ((row // 4) * tw + col // 4) * lanes
                _scatter(y[o, row % 4, col % 4, j:j + m], out, b0, m, o, row, col)


@njit(cache=True, parallel=True)
def _forward_parts(x, u, lanes, out, epilogue, loop_gemm, v, p, mm, y):
    """out (N, OC, H, W) = the 3x3 stride-1 padding-1 convolution of x (N, C, H, W) with
    U = winograd4.weight_transform(w), then the epilogue (kernels/conv_bias.py): the tasks
    of `lanes` images cut into v.shape[0] runs, one run a part, the parts shared among the
    threads. v, p, mm and y: each part's scratch for a task (V, the phase planes, M and the
    output tiles), the first axis the part. loop_gemm: the 36 GEMMs by small_gemm.py's
    loop instead of the BLAS."""
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    oc = out.shape[1]
    th, tw = _tile_grid(h, w)
    tasks = (n + lanes - 1) // lanes
    parts = v.shape[0]
    for part in prange(parts):
        first, stop = run_of(part, parts, tasks)
        for task in range(first, stop):
            b0 = task * lanes
            m = min(lanes, n - b0)
            p[part][...] = 0
            _lanes_in(x, b0, m, lanes, p[part])
            _input_tiles(p[part], th, tw, lanes, v[part])
            small_gemm.products(u, v[part], mm[part], loop_gemm)  # (OC, C) @ (C, T)
            _output_tiles(mm[part], y[part])
            _lanes_out(y[part], tw, lanes, b0, m, out)
            finish(out.reshape(n, oc, -1), b0, m, epilogue)


def forward(x, u, lanes, out, epilogue, loop_gemm, parts):
    """out (N, OC, H, W) = the 3x3 stride-1 padding-1 convolution of x (N, C, H, W),
    C-contiguous, with U = winograd4.weight_transform(w) (36, OC, C), then the epilogue:
    the tasks of `lanes` images in `parts` runs (_forward_parts), each part's scratch from
    kernels/buffers.py, as winograd_lanes.forward's. The caller holds SciPy's BLAS to one
    thread (cpu.py)."""
    n, c, h, w = x.shape
    oc, dtype = out.shape[1], x.dtype
    th, tw = _tile_grid(h, w)
    t = th * tw * lanes
    parts = max(1, min(parts, -(-n // lanes)))
    _forward_parts(x, u, lanes, out, epilogue, loop_gemm,
                   buffers.empty((parts, 36, c, t), dtype),
                   buffers.empty((parts,) + _phase_shape(x, lanes), dtype),
                   buffers.empty((parts, 36, oc, t), dtype),
                   buffers.empty((parts, oc, 4, 4, t), dtype))
    return out
