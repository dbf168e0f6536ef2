"""The downsampling 3x3 layers (stride 2, padding 1) as nine GEMMs on shifted views of the
input's phases, for kernels/cpu.py: the output and the input gradient with no im2col or
col2im.

Pad x with a ring of zeros and cut it into its four phases, the even and odd padded rows
by the even and odd padded columns: Q[2a + e][u, v] = padded x[2u + a, 2v + e], each
(OH + 1) x (OW + 1), laid out flat with rows of OW + 1 entries. Output pixel (y, z) meets
padded pixel (2y + i, 2z + j) through window element (i, j): entry (y + i//2, z + j//2) of
phase (i % 2, j % 2). Number the output pixels as the phases' entries, p = y*(OW + 1) + z
(column z = OW and row y = OH are spare: computed and dropped); then element (i, j) reads
entry p + (i//2)*(OW + 1) + j//2 of its phase, a plain shift. So, with the channels as
rows,

    out (OC, P) = sum over (i, j) of W_ij (OC, C) @ Q[2(i%2) + j%2] shifted by its offset

nine GEMMs whose second operand is a view of the phases, rows `ld` apart, starting at the
shift: the BLAS reads it in place (its leading dimension), and the products add up in the
output (beta = 1). A task's images lie side by side in the phases (P = m images'
(OH + 1)(OW + 1) entries, and an image's worth of zeros after the last one for the shifts
to read), so each GEMM runs over all of them. The copies in and out index the phases as
(phase, channel, image, row, column) with loop counters: a first version that sliced
each row out of flat phases was no faster than im2col (benchmarks/README.md). The input
gradient runs the same steps backwards: the output gradient laid out as the output (zeros
in the spare entries, so that they add nothing), nine GEMMs W_ij^T (C, OC) @ dY added into
shifted views of the phases of dx (the adjoint of the shift is the same shift, on the
other side), then the phases woven back into dx, their ring of padding dropped.

What im2col costs and this does not: the columns, 9 x C rows as long as the output, written
and read again, and at stride 2 the gather of every other pixel. What it costs instead:
the spare row and column (81 entries for 64 pixels on an 8 x 8 output) and nine GEMMs with
an inner dimension of C instead of one of 9C. The weight gradient stays with the shifted
rows (weight_grad.py) and the per-image GEMMs.

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
def split_phases(x, b0, m, q):
    """q (4, C, m + 1, OH + 1, OW + 1) = the phases of images b0 .. b0+m-1 of x:
    q[2a + e, c, i, u, v] = padded pixel (2u + a, 2v + e) of image b0 + i. The entries no
    pixel of x falls on (the padding, the spare row and column, image m: the shifts' tail)
    are never written: q is made with zeros, and stays right for any images of x."""
    _, c, h, w = x.shape
    half = w // 2
    for i in range(m):
        for ch in range(c):
            for yy in range(h):
                a, u = (yy + 1) % 2, (yy + 1) // 2          # padded row yy + 1
                for k in range(half):                # x columns 2k, 2k+1: padded 2k+1
                    q[2 * a + 1, ch, i, u, k] = x[b0 + i, ch, yy, 2 * k]     # and 2k+2,
                    q[2 * a, ch, i, u, k + 1] = x[b0 + i, ch, yy, 2 * k + 1]  # as pairs
                if w % 2:
                    q[2 * a + 1, ch, i, u, half] = x[b0 + i, ch, yy, w - 1]


@njit(cache=True)
def spread_rows(g, b0, m, gp):
    """gp[o, i, y, z] = g[b0 + i, o, y, z] for the images b0 .. b0+m-1 of g (N, OC, OH,
    OW): each row in a row of OW + 1 entries, as the phases lay out the output. The
    entries past g's rows and columns keep the zeros gp was made with."""
    _, oc, oh, ow = g.shape
    for i in range(m):
        for o in range(oc):
            for y in range(oh):
                for z in range(ow):
                    gp[o, i, y, z] = g[b0 + i, o, y, z]


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
                    dx[b0 + i, ch, yy, 2 * k] = q[2 * a + 1, ch, i, u, k]
                    dx[b0 + i, ch, yy, 2 * k + 1] = q[2 * a, ch, i, u, k + 1]
                if w % 2:
                    dx[b0 + i, ch, yy, w - 1] = q[2 * a + 1, ch, i, u, half]


@njit(cache=True, parallel=True)
def forward_core(fn, x, w9, group, out, epilogue):
    """out (N, OC, OH, OW) = the 3x3 stride-2 padding-1 convolution of x (N, C, H, W) with
    w9 (9, OC, C), w9[3i + j] = weight[:, :, i, j], then the epilogue
    (kernels/conv_bias.py); `group` images a task."""
    n, c = x.shape[0], x.shape[1]
    oc, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    pitch, plane = ow + 1, (oh + 1) * (ow + 1)
    for task in prange((n + group - 1) // group):
        b0 = task * group
        m = min(group, n - b0)
        q = np.zeros((4, c, m + 1, oh + 1, pitch), dtype=x.dtype)
        split_phases(x, b0, m, q)
        acc = np.empty((oc, m, oh + 1, pitch), dtype=x.dtype)
        for e in range(9):                       # (OC, C) @ phase, shifted
            phase, di, dj = SHIFTS[e]
            blas.gemm(fn, False, False, oc, m * plane, c, w9[e], c, q[phase].ravel(),
                      di * pitch + dj, (m + 1) * plane, 0 if e == 0 else 1, acc.ravel(), 0,
                      m * plane)
        for i in range(m):                       # the spare row and column dropped
            for o in range(oc):
                for y in range(oh):
                    for z in range(ow):
                        out[b0 + i, o, y, z] = acc[o, i, y, z]
        finish(out.reshape(n, oc, -1), b0, m, epilogue)


@njit(cache=True, parallel=True)
def grad_input_core(fn, g, w9, group, dx):
    """dx (N, C, H, W) = the gradient of forward_core's input, given the output gradient
    g (N, OC, OH, OW) and w9 (9, OC, C)."""
    n, oc, oh, ow = g.shape
    c = dx.shape[1]
    pitch, plane = ow + 1, (oh + 1) * (ow + 1)
    for task in prange((n + group - 1) // group):
        b0 = task * group
        m = min(group, n - b0)
        gp = np.zeros((oc, m, oh + 1, pitch), dtype=g.dtype)   # dY as the output: spare
        spread_rows(g, b0, m, gp)                               # entries zero
        dq = np.zeros((4, c, m + 1, oh + 1, pitch), dtype=g.dtype)
        for e in range(9):                       # W_ij^T (C, OC) @ dY into shifted phases
            phase, di, dj = SHIFTS[e]
            blas.gemm(fn, True, False, c, m * plane, oc, w9[e], c, gp.ravel(), 0,
                      m * plane, 1, dq[phase].ravel(), di * pitch + dj, (m + 1) * plane)
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
