"""The downsampling 3x3 layers (stride 2, padding 1) as nine GEMMs on shifted views of the
input's phases, for kernels/cpu.py: the output and the input gradient with no im2col or
col2im.

Pad x with a ring of zeros and cut it into its four phases, the even and odd padded rows
by the even and odd padded columns: Q[2a + e][u, v] = padded x[2u + a, 2v + e], each
(OH + 1) x (OW + 1). Output pixel (y, z) meets padded pixel (2y + i, 2z + j) through
window element (i, j): entry (y + i//2, z + j//2) of phase (i % 2, j % 2). A task's m
images lie in the phases row by row, their rows side by side: a phase of a channel is
(OH + 2, m, OW + 1) (layout(); the last row zeros for the shifts to read past the end),
so a row of all m images is R = m*(OW + 1) entries long. The output is numbered the same
way, (OH, m, OW + 1), column OW spare (computed and dropped); then element (i, j) reads
entry p + (i//2)*R + j//2 of its phase for output entry p, a plain shift, the same for
every image. So, with the channels as rows,

    out (OC, P) = sum over (i, j) of W_ij (OC, C) @ Q[2(i%2) + j%2] shifted by its offset

nine GEMMs of P = OH*R columns whose second operand is a view of the phases, a channel's
(OH + 2)*R entries apart, starting at the shift: the BLAS reads it in place (its leading
dimension), and the products add up in the output (beta = 1). The copies in and out index
with loop counters: a first version that sliced each row out of flat phases was no faster
than im2col (benchmarks/README.md), and one that indexed flat phases by computed offsets
took 2.6x this split's time. The input gradient runs the same steps backwards: the output
gradient laid out as the output (zeros in the spare column, so that it adds nothing), nine
GEMMs W_ij^T (C, OC) @ dY added into shifted views of the phases of dx (the adjoint of the
shift is the same shift, on the other side), then the phases woven back into dx, their
ring of padding dropped.

Each image's phases had lain apart before, (OH + 1) x (OW + 1) entries an image (81 for 64
pixels on an 8 x 8 output), a spare row as well as a spare column; side by side by rows
the spare row goes (72): the nine GEMMs of a task of 4 images 0.91 of their time on
resnet20's 32->64 and 0.92 on its 16->32 (289 -> 272 entries; one thread); the layers'
forward 0.92 and 0.96 of their time, input gradient 0.92 and 0.98, and the weight
gradient from the same phases (weight_grad.py) 0.94 and 0.95; resnet18's 64->128 weight
gradient 0.95 (batch 128 and 16, 2 threads, one process, rounds in turns, AMD family 26,
OpenBLAS's SkylakeX kernel, tuned malloc; scratch runs, not kept).

What im2col costs and this does not: the columns, 9 x C rows as long as the output, written
and read again, and at stride 2 the gather of every other pixel. What it costs instead:
the spare column (72 entries for 64 pixels on an 8 x 8 output) and nine GEMMs with an
inner dimension of C instead of one of 9C. The weight gradient stays with the shifted rows
of these phases (weight_grad.py) and the per-image GEMMs.

The GEMMs are the BLAS's sgemm/dgemm called with their leading dimensions and beta, from
inside Numba's threads (kernels/blas.py: SciPy's BLAS, the library np.dot in Numba calls,
passed to the cores as a ctypes function). The caller holds that BLAS to one thread
(cpu.py).
"""
import numpy as np
from numba import njit, prange

from . import blas, buffers
from .conv_bias import finish

SHIFTS = tuple(((i % 2) * 2 + j % 2, i // 2, j // 2) for i in range(3) for j in range(3))


@njit(cache=True)
def layout(oh, ow, m):
    """The shape of a task's phases (4, C left out): OH + 1 rows of its m images' rows of
    OW + 1 entries, and a row more of zeros for the shifts to read past the last."""
    return oh + 2, m, ow + 1


@njit(cache=True)
def split_phases(x, b0, m, q):
    """q (4, C, OH + 2, m, OW + 1) = the phases of images b0 .. b0+m-1 of x:
    q[2a + e, c, u, i, v] = padded pixel (2u + a, 2v + e) of image b0 + i. The entries no
    pixel of x falls on (the padding, the last row) are never written: q is made with
    zeros, and stays right for any images of x."""
    _, c, h, w = x.shape
    half = w // 2
    for i in range(m):
        for ch in range(c):
            for yy in range(h):
                a, u = (yy + 1) % 2, (yy + 1) // 2          # padded row yy + 1
                for k in range(half):                # x columns 2k, 2k+1: padded 2k+1
                    q[2 * a + 1, ch, u, i, k] = x[b0 + i, ch, yy, 2 * k]     # and 2k+2,
                    q[2 * a, ch, u, i, k + 1] = x[b0 + i, ch, yy, 2 * k + 1]  # as pairs
                if w % 2:
                    q[2 * a + 1, ch, u, i, half] = x[b0 + i, ch, yy, w - 1]


@njit(cache=True)
def spread_rows(g, b0, m, gp):
    """gp[o, y, i, z] = g[b0 + i, o, y, z] for the images b0 .. b0+m-1 of g (N, OC, OH,
    OW), gp (OC, OH, m, OW + 1) laid out as the phases lay out the output. The spare
    column keeps the zeros gp was made with."""
    _, oc, oh, ow = g.shape
    for i in range(m):
        for o in range(oc):
            for y in range(oh):
                for z in range(ow):
                    gp[o, y, i, z] = g[b0 + i, o, y, z]


@njit(cache=True)
def _weave(q, b0, m, dx):
    """dx[b0 .. b0+m-1] = the entries of the phases q (as split_phases lays them out)
    that stand for pixels of x: split_phases's inverse, the padding's entries dropped."""
    _, c, h, w = dx.shape
    half = w // 2
    for i in range(m):
        for ch in range(c):
            for yy in range(h):
                a, u = (yy + 1) % 2, (yy + 1) // 2
                for k in range(half):
                    dx[b0 + i, ch, yy, 2 * k] = q[2 * a + 1, ch, u, i, k]
                    dx[b0 + i, ch, yy, 2 * k + 1] = q[2 * a, ch, u, i, k + 1]
                if w % 2:
                    dx[b0 + i, ch, yy, w - 1] = q[2 * a + 1, ch, u, i, half]


@njit(cache=True, parallel=True)
def forward_core(fn, x, w9, group, out, epilogue):
    """out (N, OC, OH, OW) = the 3x3 stride-2 padding-1 convolution of x (N, C, H, W) with
    w9 (9, OC, C), w9[3i + j] = weight[:, :, i, j], then the epilogue
    (kernels/conv_bias.py); `group` images a task."""
    n, c = x.shape[0], x.shape[1]
    oc, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    for task in prange((n + group - 1) // group):
        b0 = task * group
        m = min(group, n - b0)
        rows, _, pitch = layout(oh, ow, m)
        row, length = m * pitch, rows * m * pitch        # a row of the task's images
        q = np.zeros((4, c, rows, m, pitch), dtype=x.dtype)
        split_phases(x, b0, m, q)
        phases = q.reshape(4, c, length)
        acc = np.empty((oc, oh, m, pitch), dtype=x.dtype)
        for e in range(9):                       # (OC, C) @ phase, shifted
            phase, di, dj = SHIFTS[e]
            blas.gemm(fn, False, False, oc, oh * row, c, w9[e], c, phases[phase].ravel(),
                      di * row + dj, length, 0 if e == 0 else 1, acc.ravel(), 0, oh * row)
        for i in range(m):                       # the spare column dropped
            for o in range(oc):
                for y in range(oh):
                    for z in range(ow):
                        out[b0 + i, o, y, z] = acc[o, y, i, z]
        finish(out.reshape(n, oc, -1), b0, m, epilogue)


@njit(cache=True, parallel=True)
def grad_input_core(fn, g, w9, group, dx):
    """dx (N, C, H, W) = the gradient of forward_core's input, given the output gradient
    g (N, OC, OH, OW) and w9 (9, OC, C)."""
    n, oc, oh, ow = g.shape
    c = dx.shape[1]
    for task in prange((n + group - 1) // group):
        b0 = task * group
        m = min(group, n - b0)
        rows, _, pitch = layout(oh, ow, m)
        row, length = m * pitch, rows * m * pitch
        gp = np.zeros((oc, oh, m, pitch), dtype=g.dtype)   # dY as the output: the spare
        spread_rows(g, b0, m, gp)                           # column zero
        dq = np.zeros((4, c, rows, m, pitch), dtype=g.dtype)
        phases = dq.reshape(4, c, length)
        for e in range(9):                       # W_ij^T (C, OC) @ dY into shifted phases
            phase, di, dj = SHIFTS[e]
            blas.gemm(fn, True, False, c, oh * row, oc, w9[e], c, gp.ravel(), 0, oh * row,
                      1, phases[phase].ravel(), di * row + dj, length)
        _weave(dq, b0, m, dx)


def weights(w2, oc):
    """w2 (OC, C*9) -> w9 (9, OC, C): w9[3i + j] = weight[:, :, i, j], each C-contiguous."""
    return np.ascontiguousarray(w2.reshape(oc, -1, 9).transpose(2, 0, 1))


def forward(x, w2, group, epilogue):
    """The 3x3 stride-2 padding-1 convolution of x (N, C, H, W) (C-contiguous) with
    w2 (OC, C*9): (N, OC, (H+1)//2, (W+1)//2), the epilogue applied."""
    n, _, h, w = x.shape
    oc = w2.shape[0]
    out = buffers.empty((n, oc, (h + 1) // 2, (w + 1) // 2), x.dtype)
    forward_core(blas.function(x.dtype.str), x, weights(w2, oc), group, out, epilogue)
    return out


def grad_input(g, w2, x_shape, group):
    """The input gradient (N, C, H, W) of forward, given its output gradient g
    (C-contiguous)."""
    dx = buffers.empty(x_shape, g.dtype)
    grad_input_core(blas.function(g.dtype.str), g, weights(w2, w2.shape[0]), group, dx)
    return dx
