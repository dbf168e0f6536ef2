"""The weight gradient of a 3x3 stride-1 padding-1 convolution as sums of shifted rows, for
kernels/cpu.py: no im2col, no GEMM.

    grad_w[o, c, i, j] = sum over images and output pixels (y, z) of
                         g[o, y, z] * x[c, y + i - 1, z + j - 1]     (zero outside x)

Pad every plane of x with a ring of zeros, (H+2) x (W+2), and lay it out flat: xp. Lay
each plane of g out with rows of the same length W+2 (the two extra entries of a row
zero): gp. Pixel (y, z) is then entry p = y*(W+2) + z of gp, and the input pixel it meets
through window element (i, j) is entry p + i*(W+2) + j of xp. So

    grad_w[o, c, i, j] = sum over p of gp[o, p] * xp[c, p + i*(W+2) + j]

a dot product of two contiguous rows, the second shifted, which vectorises with no test
inside. Four output channels and the three column offsets j are summed in one pass (12
sums, 7 loads per 12 multiply-adds). On narrow outputs each sum is short and ending it
costs about as much as the sum, so the CPU layer takes this path only where the output is
at least ConvPolicy.shifted_rows_min_width wide (kernels/conv_plan.py; the measurements
are in benchmarks/README.md).

The sums run in the input's dtype and may be reassociated (fastmath "reassoc", and
"contract" for fused multiply-adds), as in any GEMM.
"""
import numpy as np
from numba import njit, prange


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
def _add_image(xp, gp, wp, dw):
    """dw (OC, C, 3, 3) += the weight gradient of one padded image (see above)."""
    oc, c = dw.shape[0], dw.shape[1]
    n = gp.shape[1]                         # H*(W+2) entries of a row of gp
    zero = xp[0, 0]                         # a zero of the input's dtype (a padding entry)
    for ch in range(c):
        for i in range(3):
            s = i * wp
            r0, r1, r2 = xp[ch, s:s + n], xp[ch, s + 1:s + 1 + n], xp[ch, s + 2:s + 2 + n]
            o = 0
            while o + 4 <= oc:              # four output channels x the three offsets j
                q0, q1, q2, q3 = gp[o], gp[o + 1], gp[o + 2], gp[o + 3]
                a00 = a01 = a02 = a10 = a11 = a12 = zero
                a20 = a21 = a22 = a30 = a31 = a32 = zero
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
                sums = ((a00, a01, a02), (a10, a11, a12), (a20, a21, a22), (a30, a31, a32))
                for k in range(4):
                    for j in range(3):
                        dw[o + k, ch, i, j] += sums[k][j]
                o += 4
            while o < oc:                   # the last OC % 4 channels, one at a time
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


@njit(cache=True, parallel=True)
def _weight_grad_core(g, x, group, dw_parts):
    n, c, h, w = x.shape
    for task in prange(dw_parts.shape[0]):  # each task sums its images into a part of its own
        xp = np.zeros((c, (h + 2) * (w + 2) + 2), dtype=x.dtype)   # +2: the last shift
        gp = np.zeros((g.shape[1], h * (w + 2)), dtype=x.dtype)
        dw_parts[task] = 0
        for b in range(task * group, min(n, (task + 1) * group)):
            _pad_image(x, g, b, xp, gp)
            _add_image(xp, gp, w + 2, dw_parts[task])


def weight_grad(g, x, tasks):
    """grad_w (OC, C, 3, 3) of the 3x3 stride-1 padding-1 convolution of x (N, C, H, W),
    given g = grad_out (N, OC, H, W), both C-contiguous; the batch cut into `tasks`."""
    n = x.shape[0]
    group = max(1, -(-n // tasks))          # an empty batch: no parts, a zero sum
    dw_parts = np.empty((-(-n // group), g.shape[1], x.shape[1], 3, 3), dtype=x.dtype)
    _weight_grad_core(g, x, group, dw_parts)
    return dw_parts.sum(axis=0)
