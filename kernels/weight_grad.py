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
inside. Four output channels, two input channels and the three column offsets j are
summed in one pass (_add_rows_pair: 24 sums, 10 loads per 24 multiply-adds, four rows of
gp and two planes of x at a time, which stay in the core's first-level cache). Eight
output channels of one input channel (_add_rows: 11 loads per 24, eight rows of gp) took
1.15-1.25x as long, the same sums to the last bit on the resnets' layers (resnet20's
16@32 weight gradient 2.23 against 1.90 ms, resnet18's 64@56 10.9 against 8.7, its
128@28 12.2 against 9.8; two threads, medians of 15, AMD family 26 with AVX-512); two
output channels of four input channels (36 registers of 32 needed) 1.4-1.8x; four output
channels of one, 7 loads per 12, had been 1.1x. _add_rows stays for the last channel of
an odd count. On narrow outputs each sum is short and ending it costs about as much as the
sum, so the CPU layer takes this path only where the output is at least
ConvPolicy.shifted_rows_min_width wide (at stride 2 beside phase_gemm.py,
shifted_rows_phases_min_width: kernels/conv_plan.py; the measurements are in
benchmarks/README.md).

At stride 2 (3x3, padding 1: the downsampling layers) output pixel (y, z) meets padded
input pixel (2y + i, 2z + j). Cut the padded plane into its four phases, even and odd rows
by even and odd columns, each (OH+1) x (OW+1): q[2a + e, c] (phase_gemm.py's
split_phases, which cuts them for that file's GEMMs too). Window element (i, j) reads
phase (i % 2, j % 2) at (y + i//2, z + j//2). The phases of several images lie side by
side as phase_gemm.py lays out a task: the images' rows side by side, OW+1 entries each,
a row of all of them R entries long, a row of zeros after the last; gp's rows alike, with
a zero spare column. Then, with p numbering both

    grad_w[o, c, i, j] = sum over p of gp[o, p] * q[2(i % 2) + j % 2, c][p + (i//2)*R + j//2]

the same shifted rows, from the phases: no window is copied out (as im2col would), and
one sum runs over all the images: `images_per_sum` cuts a task into sums of about
SUM_ENTRIES entries (counted as (OH+1) x (OW+1) an image, the layout the figures below
were measured in, each image's phases apart with a spare row). The downsampling layers'
outputs are small, and a sum over one image's was too short to pay for ending it:
resnet20's 32->64 weight gradient (81 entries an image) took 2.26 ms summed image by
image, 1.06 with 16 images a sum, against 1.29 by GEMMs; its 16->32 (289) 1.39, 1.11 with
four, against 1.36; resnet18's 128->256 (225 entries, two images a task at batch 16) 7.63 and 6.46
against 7.17 by one GEMM (which its input gradient's GEMMs share: conv_plan.py keeps it
there); its 64->128 (841) 5.82 one image a sum, 6.19 two (2 threads, medians of 3 runs
of 30, tuned malloc, AMD family 26, OpenBLAS's SkylakeX kernel; scratch runs, not kept).

The sums run in the input's dtype and may be reassociated (fastmath "reassoc", and
"contract" for fused multiply-adds), as in any GEMM.
"""
import numpy as np
from numba import njit, prange

from . import buffers, phase_gemm

SUM_ENTRIES = 1024          # at stride 2, about the entries a sum runs over (see above)


@njit(cache=True)
def _pad_image(x, g, b, xp, gp):
    """xp[c] = plane c of x[b] inside a ring of zeros, flat; gp[o] = plane o of g[b] with
    rows of W+2 entries. The zeros are there from the allocation and never overwritten.
    A row at a time, from a slice to a slice: 2.9 against 6.3 us an image where each entry
    was indexed as xp[ch, (y + 1)*(W + 2) + z + 1] (16@32, one thread, AMD family 26)."""
    _, c, h, w = x.shape
    wp = w + 2
    for ch in range(c):
        for y in range(h):
            _copy_row(x[b, ch, y], xp[ch, (y + 1) * wp + 1:(y + 1) * wp + 1 + w])
    for o in range(g.shape[1]):
        for y in range(h):
            _copy_row(g[b, o, y], gp[o, y * wp:y * wp + w])


@njit(cache=True, inline="always")
def _copy_row(src, dst):
    """dst[z] = src[z] along src, both 1-d slices (a loop LLVM vectorises)."""
    for z in range(src.shape[0]):
        dst[z] = src[z]


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


@njit(cache=True, fastmath={"reassoc", "contract"})
def _add_rows_pair(a0, a1, a2, b0, b1, b2, gp, ch, i, zero, dw):
    """_add_rows for the input channels ch and ch + 1 at once: dw[:, ch, i, j] += sum over
    p of gp[:, p] * aj[p], and dw[:, ch + 1, i, j] the same of bj, for j = 0, 1, 2."""
    oc, n = dw.shape[0], gp.shape[1]
    o = 0
    while o + 4 <= oc:                      # four output channels x two inputs x three j
        q0, q1, q2, q3 = gp[o], gp[o + 1], gp[o + 2], gp[o + 3]
        a00 = a01 = a02 = a10 = a11 = a12 = zero
        a20 = a21 = a22 = a30 = a31 = a32 = zero
        b00 = b01 = b02 = b10 = b11 = b12 = zero
        b20 = b21 = b22 = b30 = b31 = b32 = zero
        for p in range(n):
            x0, x1, x2 = a0[p], a1[p], a2[p]
            y0, y1, y2 = b0[p], b1[p], b2[p]
            g0, g1, g2, g3 = q0[p], q1[p], q2[p], q3[p]
            a00 += g0 * x0
            a01 += g0 * x1
            a02 += g0 * x2
            a10 += g1 * x0
            a11 += g1 * x1
            a12 += g1 * x2
            a20 += g2 * x0
            a21 += g2 * x1
            a22 += g2 * x2
            a30 += g3 * x0
            a31 += g3 * x1
            a32 += g3 * x2
            b00 += g0 * y0
            b01 += g0 * y1
            b02 += g0 * y2
            b10 += g1 * y0
            b11 += g1 * y1
            b12 += g1 * y2
            b20 += g2 * y0
            b21 += g2 * y1
            b22 += g2 * y2
            b30 += g3 * y0
            b31 += g3 * y1
            b32 += g3 * y2
        sums_a = ((a00, a01, a02), (a10, a11, a12), (a20, a21, a22), (a30, a31, a32))
        sums_b = ((b00, b01, b02), (b10, b11, b12), (b20, b21, b22), (b30, b31, b32))
        for k in range(4):
            for j in range(3):
                dw[o + k, ch, i, j] += sums_a[k][j]
                dw[o + k, ch + 1, i, j] += sums_b[k][j]
        o += 4
    while o < oc:                           # the last OC % 4 channels, one at a time
        q0 = gp[o]
        a00 = a01 = a02 = b00 = b01 = b02 = zero
        for p in range(n):
            a00 += q0[p] * a0[p]
            a01 += q0[p] * a1[p]
            a02 += q0[p] * a2[p]
            b00 += q0[p] * b0[p]
            b01 += q0[p] * b1[p]
            b02 += q0[p] * b2[p]
        dw[o, ch, i, 0] += a00
        dw[o, ch, i, 1] += a01
        dw[o, ch, i, 2] += a02
        dw[o, ch + 1, i, 0] += b00
        dw[o, ch + 1, i, 1] += b01
        dw[o, ch + 1, i, 2] += b02
        o += 1


@njit(cache=True, inline="always")
def _window_row(planes, c, ch, i, n, stride, pitch):
    """The three rows, each n long, that window row i of input channel ch reads for its
    elements j = 0, 1, 2, from an image's planes (2-D, a plane a row): at stride 1 its
    padded planes xp (C of them, rows `pitch` = W+2 long), plane ch from padded row i on,
    shifted by 0, 1, 2 entries; at stride 2 its phases q (4*C of them, phase_gemm.
    split_phases's, rows `pitch` = m*(OW+1) long, a row of each of m images), phase row
    i % 2's even, odd and even one entry on, i//2 rows on (see above)."""
    if stride == 1:
        s = i * pitch
        return planes[ch, s:s + n], planes[ch, s + 1:s + 1 + n], planes[ch, s + 2:s + 2 + n]
    s, even, odd = (i // 2) * pitch, 2 * (i % 2) * c + ch, (2 * (i % 2) + 1) * c + ch
    return planes[even, s:s + n], planes[odd, s:s + n], planes[even, s + 1:s + 1 + n]


@njit(cache=True)
def _add_image(planes, gp, stride, pitch, dw):
    """dw (OC, C, 3, 3) += the weight gradient of one image (see above), from its planes
    as _window_row reads them; the input channels two at a time."""
    n, c, zero = gp.shape[1], dw.shape[1], planes[0, 0]      # a padding entry: a zero
    for ch in range(0, c - 1, 2):
        for i in range(3):
            a0, a1, a2 = _window_row(planes, c, ch, i, n, stride, pitch)
            b0, b1, b2 = _window_row(planes, c, ch + 1, i, n, stride, pitch)
            _add_rows_pair(a0, a1, a2, b0, b1, b2, gp, ch, i, zero, dw)
    if c % 2:                               # an odd count's last channel on its own
        for i in range(3):
            r0, r1, r2 = _window_row(planes, c, c - 1, i, n, stride, pitch)
            _add_rows(r0, r1, r2, gp, c - 1, i, zero, dw)


@njit(cache=True, parallel=True)
def _weight_grad_core(g, x, group, dw_parts):
    """Stride 1: each task sums its images, one at a time, into a part of its own."""
    n, c, h, w = x.shape
    for task in prange(dw_parts.shape[0]):
        dw_parts[task] = 0
        xp = np.zeros((c, (h + 2) * (w + 2) + 2), dtype=x.dtype)    # +2: the last shift
        gp = np.zeros((g.shape[1], h * (w + 2)), dtype=x.dtype)
        for b in range(task * group, min(n, (task + 1) * group)):
            _pad_image(x, g, b, xp, gp)
            _add_image(xp, gp, 1, w + 2, dw_parts[task])


@njit(cache=True, parallel=True)
def _weight_grad_phases_core(g, x, group, images, dw_parts):
    """Stride 2: each task sums its images, `images` at a time in their phases (rows
    interleaved, phase_gemm.py's layout), into a part of its own."""
    n, c, h, w = x.shape
    oc, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    for task in prange(dw_parts.shape[0]):
        dw_parts[task] = 0
        rows, _, pitch = phase_gemm.layout(oh, ow, images)
        q = np.zeros((4, c, rows, images, pitch), dtype=x.dtype)
        gp = np.zeros((oc, oh, images, pitch), dtype=x.dtype)
        stop = min(n, (task + 1) * group)
        for b0 in range(task * group, stop, images):
            m = min(images, stop - b0)
            if m < images:                  # fewer: the images past them zero again
                q[...] = 0
                gp[...] = 0
            phase_gemm.split_phases(x, b0, m, q)
            phase_gemm.spread_rows(g, b0, m, gp)
            _add_image(q.reshape(4 * c, -1), gp.reshape(oc, -1), 2, images * pitch,
                       dw_parts[task])


def images_per_sum(group, oh, ow):
    """At stride 2, the images of a task summed at once: the task's `group` images cut
    into sums of equal size (the last may be short), as many sums as SUM_ENTRIES entries
    of (OH+1) x (OW+1) phase planes go into the task's, rounded, at least one."""
    sums = max(1, round(group * (oh + 1) * (ow + 1) / SUM_ENTRIES))
    return -(-group // sums)


def weight_grad(g, x, tasks, stride=1):
    """grad_w (OC, C, 3, 3) of the 3x3 padding-1 convolution of x (N, C, H, W) at stride 1
    or 2, given g = grad_out (N, OC, OH, OW), both C-contiguous; the batch cut into
    `tasks`."""
    n = x.shape[0]
    group = max(1, -(-n // tasks))          # an empty batch: no parts, a zero sum
    dw_parts = buffers.empty((-(-n // group), g.shape[1], x.shape[1], 3, 3), dtype=x.dtype)
    if stride == 1:
        _weight_grad_core(g, x, group, dw_parts)
    else:
        _weight_grad_phases_core(g, x, group, images_per_sum(group, g.shape[2], g.shape[3]),
                                 dw_parts)
    return dw_parts.sum(axis=0)
