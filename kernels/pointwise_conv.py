"""1x1 convolutions as GEMMs on NCHW, for kernels/cpu.py: no im2col, no col2im, no
transposes of whole tensors.

A 1x1 unpadded convolution with stride s reads one pixel of every s x s block of x:
xs = x[:, :, ::s, ::s] (x itself for s = 1). With xs seen as (N, C, P), P = OH*OW, and
the weight w2 as (OC, C), image n of the layer is one GEMM on its planes:

    out[n]  = w2 @ xs[n]                          (OC, P), already NCHW
    dxs[n]  = w2^T @ grad_out[n]                  (C, P), scattered back to every s-th pixel
    grad_w2 = sum over n of grad_out[n] @ xs[n]^T (OC, C)

Numba's threads run the images as tasks, each calling the BLAS on one thread (cpu.py holds
SciPy's BLAS there). The forward and the input gradient multiply one image a task,
straight into its planes of the result; a stride-1 layer reads x's planes in place, a
strided one first gathers its image's pixels into a small buffer, and writes its input
gradient back through one. The weight gradient puts a task's `group` images side by side,
(C, m*P) and (OC, m*P), so that each GEMM sums over m*P pixels (few-pixel images make thin
GEMMs otherwise), and keeps a partial sum per task, added up at the end. The dilation of
a 1x1 window does not matter (it has one tap). Which layers take this path is
kernels/conv_plan.py's choice ("pointwise").
"""
import numpy as np
from numba import njit, prange

from . import buffers
from .conv_bias import epilogue, finish


def is_pointwise(kh, kw, ph, pw, groups):
    """True for an ungrouped 1x1 unpadded kernel, any stride: this module's one case."""
    return (kh, kw, ph, pw, groups) == (1, 1, 0, 0, 1)


@njit(cache=True)
def _gather(x, b, sh, sw, oh, ow, buf, q):
    """buf[:, q*P:(q+1)*P] = the pixels of image b that a 1x1 kernel with stride (sh, sw)
    reads, P = OH*OW, for buf (C, m*P)."""
    p = oh * ow
    for ch in range(x.shape[1]):
        for oy in range(oh):
            for ox in range(ow):
                buf[ch, q * p + oy * ow + ox] = x[b, ch, oy * sh, ox * sw]


@njit(cache=True)
def _scatter(buf, b, sh, sw, oh, ow, dx):
    """dx[b] = zero but for the pixels read with stride (sh, sw), which get buf (C, P)."""
    _, c, h, w = dx.shape
    for ch in range(c):
        for y in range(h):
            for z in range(w):
                dx[b, ch, y, z] = 0
        for oy in range(oh):
            for ox in range(ow):
                dx[b, ch, oy * sh, ox * sw] = buf[ch, oy * ow + ox]


@njit(cache=True, parallel=True)
def _forward_core(x, w2, sh, sw, oh, ow, out, ep):
    n, c = x.shape[0], x.shape[1]
    for b in prange(n):                              # a task: one image, one GEMM
        if sh == 1 and sw == 1:
            np.dot(w2, x[b].reshape(c, oh * ow), out[b])
        else:
            buf = np.empty((c, oh * ow), dtype=x.dtype)
            _gather(x, b, sh, sw, oh, ow, buf, 0)
            np.dot(w2, buf, out[b])
        finish(out, b, 1, ep)


@njit(cache=True, parallel=True)
def _grad_input_core(g, w2t, sh, sw, oh, ow, dx):
    n, c, p = g.shape[0], w2t.shape[0], g.shape[2]
    for b in prange(n):
        if sh == 1 and sw == 1:
            np.dot(w2t, g[b], dx[b].reshape(c, p))
        else:
            buf = np.empty((c, p), dtype=g.dtype)
            np.dot(w2t, g[b], buf)
            _scatter(buf, b, sh, sw, oh, ow, dx)


@njit(cache=True, parallel=True)
def _grad_weight_core(g, x, sh, sw, oh, ow, group, dw_parts):
    n, oc, p = g.shape
    c = x.shape[1]
    for task in prange(dw_parts.shape[0]):           # a task: `group` images, one GEMM
        b0 = task * group
        m = min(group, n - b0)
        if m == 1 and sh == 1 and sw == 1:             # x's and g's planes as they are
            np.dot(x[b0].reshape(c, p), g[b0].T, dw_parts[task])
            continue
        xs = np.empty((c, m * p), dtype=x.dtype)
        gs = np.empty((oc, m * p), dtype=x.dtype)
        for q in range(m):
            _gather(x, b0 + q, sh, sw, oh, ow, xs, q)
            for o in range(oc):
                for k in range(p):
                    gs[o, q * p + k] = g[b0 + q, o, k]
        np.dot(xs, gs.T, dw_parts[task])               # grad_w2^T of the task, (C, OC)


def forward(x, w2, sh, sw, ep=None):
    """out (N, OC, OH, OW) of the 1x1 convolution of x (N, C, H, W), C-contiguous, with
    w2 (OC, C), then the epilogue ep (kernels/conv_bias.py; none where None)."""
    n, _, h, w = x.shape
    oh, ow = (h - 1) // sh + 1, (w - 1) // sw + 1
    out = buffers.empty((n, w2.shape[0], oh * ow), dtype=x.dtype)
    _forward_core(x, np.ascontiguousarray(w2), sh, sw, oh, ow, out,
                  epilogue(x.dtype) if ep is None else ep)
    return out.reshape(n, w2.shape[0], oh, ow)


def backward(g, x, w2, sh, sw, need_x, need_w, group):
    """(grad_x like x, grad_w2 like w2), each None unless asked for, of forward(), given
    g = grad_out (N, OC, OH, OW) and x, both C-contiguous; the weight gradient puts
    `group` images side by side in a GEMM."""
    n, oc, oh, ow = g.shape
    g3 = g.reshape(n, oc, oh * ow)
    grad_x = grad_w2 = None
    if need_x:
        grad_x = buffers.empty(x.shape, dtype=x.dtype)
        _grad_input_core(g3, np.ascontiguousarray(w2.T), sh, sw, oh, ow, grad_x)
    if need_w:
        parts = buffers.empty((-(-n // group), x.shape[1], oc), dtype=x.dtype)
        _grad_weight_core(g3, x, sh, sw, oh, ow, group, parts)
        grad_w2 = np.ascontiguousarray(parts.sum(axis=0).T)
    return grad_x, grad_w2
