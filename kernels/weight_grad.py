"""The weight gradient of a 3x3 padding-1 convolution, stride 1 or 2, as sums of shifted
rows, for kernels/cpu.py: no im2col, no GEMM.

    grad_w[o, c, i, j] = sum over images and output pixels (y, z) of
                         g[o, y, z] * x[c, y + i - 1, z + j - 1]     (zero outside x)

Pad every plane of x with a ring of zeros, (H+2) x (W+2), and lay it out flat: xp. Lay
each plane of g out with rows of the same length W+2 (the two extra entries of a row
zero): gp. Pixel (y, z) is then entry p = y*(W+2) + z of gp, and the input pixel it meets
through window element (i, j) is entry p + i*(W+2) + j of xp. So

    grad_w[o, c, i, j] = sum over p of gp[o, p] * xp[c, p + i*(W+2) + j]

a dot product of two contiguous rows, the second shifted, which vectorises with no test
inside. Eight output channels and the three column offsets j are summed in one pass (24
sums, 11 loads per 24 multiply-adds; four channels, 7 loads per 12, ran resnet20's 16@32
weight gradient 14% slower and resnet18's 64@56 9% slower on an AMD family 26, the same
sums). On narrow outputs each sum is short and ending it
costs about as much as the sum, so the CPU layer takes this path only where the output is
at least ConvPolicy.shifted_rows_min_width wide (kernels/conv_plan.py; the measurements
are in benchmarks/README.md).

At stride 2 (3x3, padding 1: the downsampling layers) output pixel (y, z) meets padded
input pixel (2y + i, 2z + j). Cut the padded plane into its four phases, even and odd rows
by even and odd columns, each (OH+1) x (OW+1) and flat: q[2a + e, c] (phase_gemm.py's
split_phases, which cuts them for that file's GEMMs too). Window element (i, j) reads
phase (i % 2, j % 2) at (y + i//2, z + j//2), so with gp's rows OW+1 long

    grad_w[o, c, i, j] = sum over p of gp[o, p] * q[2(i % 2) + j % 2, c][p + (i//2)*(OW+1) + j//2]

the same shifted rows, from the phases: no window is copied out (as im2col would).

The sums run in the input's dtype and may be reassociated (fastmath "reassoc", and
"contract" for fused multiply-adds), as in any GEMM.
"""
import numpy as np
from numba import njit, prange

from . import buffers, phase_gemm


@njit(cache=True)
def _pad_image(x, g, b, xp, gp):
    """xp[c] = plane c of x[b] inside a ring of zeros, flat; gp[o] = plane o of g[b] with
    rows of W+2 entries. The zeros are there from the allocation and never overwritten."""
    _, c, h, w = x.shape
    wp = w + 2
    for ch in range(c):
        for y in range(h):
            for z in range(w):
                xp[ch, (y + 1) * wp + z + 1] = x[b, ch, y, z]
    for o in range(g.shape[1]):
        for y in range(h):
            for z in range(w):
                gp[o, y * wp + z] = g[b, o, y, z]


@njit(cache=True, fastmath={"reassoc", "contract"})
def _add_rows(r0, r1, r2, gp, ch, i, zero, dw):
    """dw[:, ch, i, j] += sum over p of gp[:, p] * rj[p] for j = 0, 1, 2: window row i of
    input channel ch, its three elements read from the rows r0, r1, r2 (each as long as a
    row of gp); zero: a zero of the input's dtype (a padding entry)."""
    oc, n = dw.shape[0], gp.shape[1]
    o = 0
    while o + 8 <= oc:                      # eight output channels x the three offsets j
        q0, q1, q2, q3 = gp[o], gp[o + 1], gp[o + 2], gp[o + 3]
        q4, q5, q6, q7 = gp[o + 4], gp[o + 5], gp[o + 6], gp[o + 7]
        a00 = a01 = a02 = a10 = a11 = a12 = zero
        a20 = a21 = a22 = a30 = a31 = a32 = zero
        a40 = a41 = a42 = a50 = a51 = a52 = zero
        a60 = a61 = a62 = a70 = a71 = a72 = zero
        for p in range(n):
            x0, x1, x2 = r0[p], r1[p], r2[p]
            a00 += q0[p] * x0
            a01 += q0[p] * x1
            a02 += q0[p] * x2
            a10 += q1[p] * x0
            a11 += q1[p] * x1
            a12 += q1[p] * x2
            a20 += q2[p] * x0
            a21 += q2[p] * x1
            a22 += q2[p] * x2
            a30 += q3[p] * x0
            a31 += q3[p] * x1
            a32 += q3[p] * x2
            a40 += q4[p] * x0
            a41 += q4[p] * x1
            a42 += q4[p] * x2
            a50 += q5[p] * x0
            a51 += q5[p] * x1
            a52 += q5[p] * x2
            a60 += q6[p] * x0
            a61 += q6[p] * x1
            a62 += q6[p] * x2
            a70 += q7[p] * x0
            a71 += q7[p] * x1
            a72 += q7[p] * x2
        sums = ((a00, a01, a02), (a10, a11, a12), (a20, a21, a22), (a30, a31, a32),
                (a40, a41, a42), (a50, a51, a52), (a60, a61, a62), (a70, a71, a72))
        for k in range(8):
            for j in range(3):
                dw[o + k, ch, i, j] += sums[k][j]
        o += 8
    while o < oc:                           # the last OC % 8 channels, one at a time
        q0 = gp[o]
        a00 = a01 = a02 = zero
        for p in range(n):
            a00 += q0[p] * r0[p]
            a01 += q0[p] * r1[p]
            a02 += q0[p] * r2[p]
        dw[o, ch, i, 0] += a00
        dw[o, ch, i, 1] += a01
        dw[o, ch, i, 2] += a02
        o += 1


@njit(cache=True)
def _add_image(xp, gp, wp, dw):
    """dw (OC, C, 3, 3) += the weight gradient of one padded image (see above)."""
    n = gp.shape[1]                         # H*(W+2) entries of a row of gp
    for ch in range(dw.shape[1]):
        for i in range(3):
            s = i * wp
            _add_rows(xp[ch, s:s + n], xp[ch, s + 1:s + 1 + n], xp[ch, s + 2:s + 2 + n],
                      gp, ch, i, xp[0, 0], dw)


@njit(cache=True)
def _add_image_stride2(q, gp, owp, dw):
    """dw (OC, C, 3, 3) += the weight gradient of one image at stride 2 (see above), from
    q, the image's phases as phase_gemm.split_phases lays them out (q[2a + e, c] flat: padded
    rows 2u + a, columns 2v + e at u*(OW+1) + v, then zeros): window row i reads phase
    row i % 2, i//2 rows on; elements j = 0, 1, 2 the even phase, the odd, and the even
    one entry on."""
    n = gp.shape[1]                         # OH*(OW+1) entries of a row of gp
    for ch in range(dw.shape[1]):
        for i in range(3):
            s = (i // 2) * owp
            even, odd = q[2 * (i % 2), ch].ravel(), q[2 * (i % 2) + 1, ch].ravel()
            _add_rows(even[s:s + n], odd[s:s + n], even[s + 1:s + 1 + n], gp, ch, i,
                      q[0, 0, 0, 0, 0], dw)


@njit(cache=True, parallel=True)
def _weight_grad_core(g, x, group, stride, dw_parts):
    n, c, h, w = x.shape
    oh, ow = g.shape[2], g.shape[3]
    for task in prange(dw_parts.shape[0]):  # each task sums its images into a part of its own
        dw_parts[task] = 0
        if stride == 1:
            xp = np.zeros((c, (h + 2) * (w + 2) + 2), dtype=x.dtype)   # +2: the last shift
            gp = np.zeros((g.shape[1], h * (w + 2)), dtype=x.dtype)
            for b in range(task * group, min(n, (task + 1) * group)):
                _pad_image(x, g, b, xp, gp)
                _add_image(xp, gp, w + 2, dw_parts[task])
        else:                               # one image's phases and a zero one after
            q = np.zeros((4, c, 2, oh + 1, ow + 1), dtype=x.dtype)     # it for the shift
            gp = np.zeros((g.shape[1], 1, oh, ow + 1), dtype=x.dtype)   # rows of OW+1
            for b in range(task * group, min(n, (task + 1) * group)):
                phase_gemm.split_phases(x, b, 1, q)
                phase_gemm.spread_rows(g, b, 1, gp)
                _add_image_stride2(q, gp.reshape(g.shape[1], -1), ow + 1, dw_parts[task])


def weight_grad(g, x, tasks, stride=1):
    """grad_w (OC, C, 3, 3) of the 3x3 padding-1 convolution of x (N, C, H, W) at stride 1
    or 2, given g = grad_out (N, OC, OH, OW), both C-contiguous; the batch cut into
    `tasks`."""
    n = x.shape[0]
    group = max(1, -(-n // tasks))          # an empty batch: no parts, a zero sum
    dw_parts = buffers.empty((-(-n // group), g.shape[1], x.shape[1], 3, 3), dtype=x.dtype)
    _weight_grad_core(g, x, group, stride, dw_parts)
    return dw_parts.sum(axis=0)
