"""Winograd's F(2x2, 3x3) on small planes, for kernels/cpu.py: the images of a task side by
side, as lanes.

The transforms are winograd.py's (the same sums in the same order: V = B^T d B, the GEMMs
M[xi] = U[xi] @ V[xi], y = A^T M A, and for the weight gradient dM = A dY A^T, dU[xi] =
dM[xi] @ V[xi]^T, dw = G^T dU G); only the layout differs. winograd.py lays out the
tiles of one image and channel at a time, a spare tile at the end of each row of tiles: on
an 8x8 or 7x7 plane that is 20 tiles of which 4 are spare, so a fifth of the GEMMs' work is
thrown away, and every transform loop is 20 entries long, too short to run fast. Here the
images b0, ..., b0 + m - 1 of a task are interleaved: entry (tile, i) of image i sits at
column tile*M + i (M = `lanes`, at least m). Then

  - a tile's right-hand neighbour is M columns on, so a row of tiles of all M images is
    one loop of tw*M entries (tw tiles a row), and no spare tile is needed: the padded
    plane is cut into its even and odd rows (pe, po) and columns (pe[c, 0], pe[c, 1]),
    each row tw + 1 column pairs long, and d0..d3 of tile tx are the pairs at tx and tx + 1;
  - the GEMMs run over th*tw*M columns (M = 8: 128 on an 8x8 plane instead of 20), all of
    them useful.

The price is a transpose in and out: the images' planes are copied into lanes
(`_lanes_in`) and the output copied back (`_lanes_out`). On larger planes, where
winograd.py's loops are long and its spare tiles few, that copy costs more than it saves:
conv_plan.py sends a layer here only when its output is at most
`winograd_lanes_max_width` wide (measured in benchmarks/README.md, "How the CPU layer
picks a convolution"). Lanes past m (the last task of a batch that M does not divide) stay
zero in every buffer, so they add nothing to the weight gradient and are never written out.
"""
import numpy as np
from numba import njit, prange

from . import blas, buffers, small_gemm
from .conv_bias import finish
from .winograd import a_adjoint, a_rows, add_gemms, run_of, weight_transform_adjoint

# images a task: with 8 the forward ran as fast as with 4 or faster, and faster than with
# 16, on 64- and 16-channel 8x8 and 256- and 512-channel 7x7 layers (scratch runs, one
# thread's BLAS each, not kept)
LANES = 8


def lanes_for(n, threads=1):
    """Images a task for a batch of n on `threads` threads: at most LANES and, on more than
    one thread, as many tasks for every thread, the images shared evenly among them (a
    batch of one runs one lane, not eight of which seven hold zeros), at least 1. A batch
    of 8 on two threads runs two tasks of 4 lanes where one task of 8 left a thread idle:
    resnet20's 32@16 layer 255 against 315 us forward, 246 against 354 weight gradient,
    its 64@8 146 against 229 and 179 against 259; a batch of 4, two tasks of 2: 112
    against 193 us forward; a batch of 12, two of 6 where 8 and 4 ran: 341 against 386
    (two threads, AMD family 26)."""
    if threads <= 1:            # nothing to share: full tasks, whose loops are unrolled
        return max(1, min(LANES, n))
    tasks = max(threads, threads * -(-n // (threads * LANES)))
    return max(1, -(-n // tasks))


@njit(cache=True)
def _tile_grid(h, w):
    """(th, tw): the 2x2 output tiles of an h x w output, down and across."""
    return (h + 1) // 2, (w + 1) // 2


@njit(cache=True)
def tiles(h, w):
    """The tiles of one image of an h x w output: th*tw, none spare."""
    th, tw = _tile_grid(h, w)
    return th * tw


@njit(cache=True, inline="always")
def _gather(dst, a, b0, m, ch, row, col):
    """dst[i] = a[b0 + i, ch, row, col] for the m images of a task. A full task's loop runs
    LANES times, a constant LLVM unrolls into a few vector instructions: 2.6x faster than
    the loop of run-time length m, which stays for a last task of fewer images (resnet20's
    64@8 and resnet18's 256@14 and 512@7 planes into lanes, one thread; measured)."""
    if m == LANES:
        for i in range(LANES):
            dst[i] = a[b0 + i, ch, row, col]
    else:
        for i in range(m):
            dst[i] = a[b0 + i, ch, row, col]


@njit(cache=True, inline="always")
def _scatter(src, a, b0, m, ch, row, col):
    """a[b0 + i, ch, row, col] = src[i] for the m images of a task: _gather's inverse, its
    full tasks a loop of constant length as well."""
    if m == LANES:
        for i in range(LANES):
            a[b0 + i, ch, row, col] = src[i]
    else:
        for i in range(m):
            a[b0 + i, ch, row, col] = src[i]


@njit(cache=True)
def _lanes_in(x, b0, m, lanes, pe, po):
    """The planes of images b0 .. b0+m-1 of x (N, C, H, W), with their ring of zero padding,
    into lanes: pe[ch, s, row, k*lanes + i] = padded pixel (2*row, 2*k + s) of image b0 + i,
    po the odd padded rows 2*row + 1 alike. Entries never written (padding, past the edge,
    lanes past m) keep the zeros pe and po were made with."""
    _, c, h, w = x.shape
    for ch in range(c):
        for y in range(h):                       # padded row y + 1
            p = pe if (y + 1) % 2 == 0 else po
            row = (y + 1) // 2
            for z in range(w):                   # padded column z + 1
                s, k = (z + 1) % 2, (z + 1) // 2
                _gather(p[ch, s, row, k * lanes:k * lanes + m], x, b0, m, ch, y, z)


@njit(cache=True, inline="always")
def _b_transform(d0, d1, d2, d3, v0, v1, v2, v3):
    """v0..v3 = d0 - d2, d1 + d2, d2 - d1, d1 - d3 elementwise: B^T applied to the four
    entries d0..d3 of every column (or B to those of every row), in one loop that reads
    each input once. Its inputs come in as slices (the shifted ones too): an index such as
    j + lanes, lanes known only at run time, kept LLVM from vectorising the loop well
    (4-7x slower, measured)."""
    for j in range(v0.size):
        a, b, c, d = d0[j], d1[j], d2[j], d3[j]
        v0[j] = a - c
        v1[j] = b + c
        v2[j] = c - b
        v3[j] = b - d


@njit(cache=True)
def _input_tiles(pe, po, th, tw, lanes, v):
    """v (16, C, th*tw*lanes): V[4a + k] = (B^T d B)[a, k] of every tile and lane, d the
    4x4 tile whose padded rows are 2ty..2ty+3 and columns 2tx..2tx+3."""
    n = tw * lanes                               # a row of tiles, all lanes
    t = th * n
    de = np.empty((4, (th + 1) * n), dtype=pe.dtype)   # d B of the even padded rows
    do = np.empty((4, (th + 1) * n), dtype=pe.dtype)   # ... and of the odd ones
    for ch in range(pe.shape[0]):
        for p, d in ((pe, de), (po, do)):        # d B along each padded row: d0..d3 of
            for row in range(th + 1):            # tile tx are the column pairs at tx, tx+1
                e, o = p[ch, 0, row], p[ch, 1, row]
                j0, j1 = row * n, (row + 1) * n
                _b_transform(e[:n], o[:n], e[lanes:lanes + n], o[lanes:lanes + n],
                             d[0, j0:j1], d[1, j0:j1], d[2, j0:j1], d[3, j0:j1])
        for k in range(4):                       # B^T (d B): the tile's rows are de, do at
            _b_transform(de[k, :t], do[k, :t], de[k, n:n + t], do[k, n:n + t],  # its row
                         v[k, ch], v[4 + k, ch], v[8 + k, ch], v[12 + k, ch])   # and one on


@njit(cache=True)
def _phase_shape(x, lanes):
    """The shape of _task_input_tiles's pe and po for x's planes."""
    th, tw = _tile_grid(x.shape[2], x.shape[3])
    return (x.shape[1], 2, th + 1, (tw + 1) * lanes)


@njit(cache=True)
def _task_input_tiles(x, b0, m, lanes, v, pe, po):
    """v (16, C, th*tw*lanes) = V of the images b0 .. b0+m-1 of x in lanes: their planes
    into the phase planes pe and po (_phase_shape), zeroed here (_lanes_in), then the
    transform (_input_tiles)."""
    th, tw = _tile_grid(x.shape[2], x.shape[3])
    pe[...] = 0
    po[...] = 0
    _lanes_in(x, b0, m, lanes, pe, po)
    _input_tiles(pe, po, th, tw, lanes, v)


@njit(cache=True)
def _output_tiles(mm, y):
    """y (OC, 2, 2, T) = A^T M A of every tile and lane, M = mm[:, o, column] as 4x4:
    y[o, a, e, column] is output pixel (2ty + a, 2tx + e) of that tile and lane."""
    s = np.empty((2, 4, mm.shape[2]), dtype=mm.dtype)    # A^T M (winograd.a_rows)
    for o in range(mm.shape[1]):
        for k in range(4):
            a_rows(mm[k, o], mm[4 + k, o], mm[8 + k, o], mm[12 + k, o], s[0, k], s[1, k])
        for a in range(2):                       # the same along the rows
            a_rows(s[a, 0], s[a, 1], s[a, 2], s[a, 3], y[o, a, 0], y[o, a, 1])


@njit(cache=True, inline="always")
def _slot(row, col, tw, lanes):
    """Where output pixel (row, col) of lane 0 sits in y and dy (OC, 2, 2, T): its place
    (a, e) in its 2x2 tile and the tile's first column j (lane i at j + i)."""
    return row % 2, col % 2, ((row // 2) * tw + col // 2) * lanes


@njit(cache=True)
def _lanes_out(y, tw, lanes, b0, m, out):
    """out[b0 + i, o, row, col] = y's entry for that pixel and lane i, for i < m (the
    inverse of _lanes_in's interleaving, on the output's tiles)."""
    _, oc, oh, ow = out.shape
    for o in range(oc):
        for row in range(oh):
            for col in range(ow):
                a, e, j = _slot(row, col, tw, lanes)
                _scatter(y[o, a, e, j:j + m], out, b0, m, o, row, col)


@njit(cache=True, parallel=True)
def _forward_parts(x, u, lanes, out, epilogue, loop_gemm, v, pe, po, mm, y):
    """out (N, OC, H, W) = the 3x3 stride-1 padding-1 convolution of x (N, C, H, W) with
    U = winograd.weight_transform(w), then the epilogue (kernels/conv_bias.py): the tasks
    of `lanes` images cut into v.shape[0] runs (at most one a task), one run a part, the
    parts shared among the threads. v, pe, po, mm and y: each part's scratch for a task
    (V, the phase planes, M and the output tiles), the first axis the part (forward).
    loop_gemm: the 16 GEMMs by small_gemm.py's loop instead of the BLAS."""
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    oc = out.shape[1]
    tw = _tile_grid(h, w)[1]
    tasks = (n + lanes - 1) // lanes
    parts = v.shape[0]
    for part in prange(parts):
        first, stop = run_of(part, parts, tasks)
        for task in range(first, stop):
            b0 = task * lanes
            m = min(lanes, n - b0)
            _task_input_tiles(x, b0, m, lanes, v[part], pe[part], po[part])
            small_gemm.products(u, v[part], mm[part], loop_gemm)  # (OC, C) @ (C, T)
            _output_tiles(mm[part], y[part])
            _lanes_out(y[part], tw, lanes, b0, m, out)
            finish(out.reshape(n, oc, -1), b0, m, epilogue)


def forward(x, u, lanes, out, epilogue, loop_gemm, parts):
    """out (N, OC, H, W) = the 3x3 stride-1 padding-1 convolution of x (N, C, H, W),
    C-contiguous, with U = winograd.weight_transform(w) (16, OC, C), then the epilogue:
    the tasks of `lanes` images in `parts` runs (_forward_parts). Each part's scratch (a
    task's V, M, output tiles and phase planes: 16 MiB a part on resnet18's 256@14) comes
    from kernels/buffers.py, as the weight gradient's does: made inside the threads for
    every task instead, under glibc's default malloc, it took resnet18's 256@14 layer
    (forward and backward) 26.4 ms against 17.1 under tinyres.runtime.tune()'s thresholds
    (fresh processes, 2 threads, AMD family 26; measured). The caller holds SciPy's BLAS
    to one thread (cpu.py)."""
    n, c, h, w = x.shape
    oc, dtype = out.shape[1], x.dtype
    th, tw = _tile_grid(h, w)
    t = th * tw * lanes
    parts = max(1, min(parts, -(-n // lanes)))
    phases = (parts,) + _phase_shape(x, lanes)
    _forward_parts(x, u, lanes, out, epilogue, loop_gemm,
                   buffers.empty((parts, 16, c, t), dtype), buffers.empty(phases, dtype),
                   buffers.empty(phases, dtype), buffers.empty((parts, 16, oc, t), dtype),
                   buffers.empty((parts, oc, 2, 2, t), dtype))
    return out


# ---- the weight gradient: the lanes of every task side by side, 16 GEMMs over all of them

@njit(cache=True)
def _grad_lanes_in(g, b0, m, tw, lanes, dy):
    """dy (OC, 2, 2, T): output gradient pixel (2ty + a, 2tx + e) of image b0 + i at
    dy[o, a, e, (ty*tw + tx)*lanes + i], as _output_tiles writes y; what is never written
    (past g's edge, lanes past m) keeps the zeros dy was made with."""
    _, oc, oh, ow = g.shape
    for o in range(oc):
        for row in range(oh):
            for col in range(ow):
                a, e, j = _slot(row, col, tw, lanes)
                _gather(dy[o, a, e, j:j + m], g, b0, m, o, row, col)


@njit(cache=True)
def _output_tiles_adjoint(dy, gm):
    """gm (16, OC, T) = A dY A^T of every tile and lane, dY its 2x2 of dy: the gradient of
    _output_tiles, along the columns of dY and then down the rows (winograd.a_adjoint)."""
    t = gm.shape[2]
    ds = np.empty((2, 4, t), dtype=gm.dtype)
    for o in range(gm.shape[1]):
        for a in range(2):                       # along the columns: dY[a] -> ds[a]
            a_adjoint(dy[o, a, 0], dy[o, a, 1], ds[a, 0], ds[a, 1], ds[a, 2], ds[a, 3])
        for k in range(4):                       # down the rows: ds[:, k] -> dM[:, k]
            a_adjoint(ds[0, k], ds[1, k], gm[k, o], gm[4 + k, o], gm[8 + k, o],
                       gm[12 + k, o])


@njit(cache=True, parallel=True)
def _weight_grad_parts(fn, g, x, lanes, gu_parts, v, gm, dy, pe, po):
    """gu_parts[p] (16, OC, C) = sum over the tasks of part p of dM[xi] @ V[xi]^T: the
    tasks of `lanes` images cut into gu_parts.shape[0] runs (at most one a task), one run
    a part, the parts shared among the threads. A task's V and dM (16 x (C + OC) x T,
    T = th*tw*lanes) are made and used at once, in cache; a run's first task writes its
    16 GEMMs into the part, the others add theirs on (winograd.add_gemms, fn the BLAS's
    GEMM). v, gm, dy, pe and po: each part's scratch, the first axis the part
    (weight_grad)."""
    n = x.shape[0]
    tw = _tile_grid(x.shape[2], x.shape[3])[1]
    tasks = (n + lanes - 1) // lanes
    parts = gu_parts.shape[0]
    for part in prange(parts):
        first, stop = run_of(part, parts, tasks)
        for task in range(first, stop):
            b0 = task * lanes
            m = min(lanes, n - b0)
            _task_input_tiles(x, b0, m, lanes, v[part], pe[part], po[part])
            dy[part][...] = 0                    # what _grad_lanes_in leaves stays zero
            _grad_lanes_in(g, b0, m, tw, lanes, dy[part])
            _output_tiles_adjoint(dy[part], gm[part])
            add_gemms(fn, gm[part], v[part], task == first, gu_parts[part])


def weight_grad(g, x, lanes, parts):
    """The weight gradient (OC, C, 3, 3) of the 3x3 stride-1 padding-1 convolution of x
    (N, C, H, W) whose output gradient is g (N, OC, H, W), both C-contiguous, as
    winograd.weight_grad computes it, in lanes: the tasks of `lanes` images in `parts`
    runs (at most one a task), each run's dU summed task by task in its thread
    (_weight_grad_parts), then the parts' dU, in order, as the adjoint transform reads
    them. Nothing the size of the batch's V or dM is ever in memory; the parts' dU take
    parts x 16 x OC x C entries (32 MiB for two parts of a 512-channel layer), written
    once by their threads' first GEMMs, never zeroed or summed in a pass of their own.
    They and each part's scratch (a task's V, dM, dY and phase planes: 10 MiB a part on
    that layer) come from kernels/buffers.py, so their pages are faulted in once, not on
    every call: a fresh 32 MiB block first written by two Numba threads took 31 ms, by
    one 2 ms, under tinyres.runtime.tune()'s thresholds, which map a block that size
    afresh on every call, and the scratch, made inside the threads, cost resnet18's
    training step 9,200 page faults under glibc's default malloc, whose threads' heaps
    gave it back after every call (measured on 2-core AMD EPYCs). The caller holds
    SciPy's BLAS to one thread (cpu.py)."""
    n, c, h, w = x.shape
    oc, dtype = g.shape[1], x.dtype
    th, tw = _tile_grid(h, w)
    t = th * tw * lanes
    parts = max(1, min(parts, -(-n // lanes)))
    gu_parts = buffers.empty((parts, 16, oc, c), dtype)
    if n == 0:
        gu_parts[...] = 0
        return weight_transform_adjoint(gu_parts)
    phases = (parts,) + _phase_shape(x, lanes)
    _weight_grad_parts(blas.function(dtype.str), g, x, lanes, gu_parts,
                       buffers.empty((parts, 16, c, t), dtype),
                       buffers.empty((parts, 16, oc, t), dtype),
                       buffers.empty((parts, oc, 2, 2, t), dtype), buffers.empty(phases, dtype),
                       buffers.empty(phases, dtype))
    return weight_transform_adjoint(gu_parts)
