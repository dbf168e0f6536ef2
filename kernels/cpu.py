"""Numba kernels for the CPU: the functions of reference.py, same names and signatures.

Each public function checks its arguments (with reference.py's checks, so the messages
agree), makes its inputs C-contiguous, allocates the output and hands the loops to a small
jitted core, `@njit(cache=True, parallel=True)`, whose outer `prange` runs over the
(n, c) planes (as in im2col and col2im), the channels, or (convolution) groups of images.
fastmath stays off but for the batch-norm sums and the sums of weight_grad.py, which may be
reassociated (and, in weight_grad.py, fused into multiply-adds); the results are held to
the reference. Batch-norm statistics are accumulated in float64, as in the reference.

Threading layer: Numba picks its thread pool at the first parallel call; tinyres leaves
that choice to Numba (TBB, which tinyres installs, where it is present) unless
tinyres.runtime.tune() is called (see there, and benchmarks/README.md for what each pool
costs).
"""
import contextlib

import numba
import numpy as np
from numba import njit, prange

from . import (buffers, checks, conv_plan, gemm_conv, phase_gemm, pointwise_conv, thread_gemm,
               unfold, weight_grad, winograd, winograd4, winograd4_lanes, winograd_lanes)
from .conv_bias import NO_EPILOGUE, epilogue, finish, plane_moments, single_moments


# ---------------------------------------------------------------- im2col / col2im

def im2col(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """Unfold every kh x kw window of x into a column, the images of the batch side by side.

    x (N, C, H, W) -> cols (C*kh*kw, N*OH*OW), OH = (H + 2*ph - dh*(kh - 1) - 1)//sh + 1
    (OW alike). cols[(c*kh + i)*kw + j, n*OH*OW + oh*OW + ow] =
    x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw], zero where that pixel lies in the padding.
    """
    oh, ow = checks.im2col_args(x, kh, kw, sh, sw, ph, pw, dh, dw)
    n, c, _, _ = x.shape
    cols = buffers.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
    unfold.im2col_core(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols)
    return cols


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """The adjoint of im2col: add every column entry back onto the pixel it came from.

    cols (C*kh*kw, N*OH*OW) -> dx of shape x_shape = (N, C, H, W); entries that were read
    from the padding are dropped. Overlapping windows accumulate.
    """
    n, c, h, w, oh, ow = checks.col2im_args(cols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw)
    dx = buffers.empty((n, c, h, w), dtype=cols.dtype)
    unfold.col2im_core(np.ascontiguousarray(cols), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx)
    return dx


# ---------------------------------------------------------------- convolution

# Which algorithm runs for a layer is decided in one place, conv_plan.conv_algorithm(),
# whose thresholds come from measurements kept in benchmarks/README.md. The per-image
# path cuts the batch into tasks of `group` consecutive images; prange hands the tasks to
# the threads, and a task unfolds its images into a columns buffer of its own
# (C*kh*kw, group, OH*OW) that stays in its core's cache, multiplies, and is done: no
# (C*kh*kw, N*OH*OW) matrix is written to memory, no output or gradient is transposed.
# Each task keeps its own grad_w2^T, summed afterwards. The cores index the buffer as
# (row, image, pixel): a flat column index compiled into slower loops, as in im2col.
# (`group` here is a group of images. A grouped convolution, groups > 1, always takes
# the one-GEMM path, whose batched matmul runs the channel groups' GEMMs; dh, dw are the
# dilation, passed down to the im2col/col2im loops on every path.)
#
# np.dot in a Numba function calls the BLAS that SciPy ships; called from several Numba
# threads at once, a multi-threaded BLAS starts threads of its own on the same cores, so
# each call on these paths holds SciPy's BLAS to one thread while it runs and then puts
# its thread count back (NumPy's own BLAS is a different library and is never touched).


@contextlib.contextmanager
def _one_blas_thread():
    """SciPy's own BLAS at one thread for the length of the block, then as it was."""
    lib = conv_plan.scipy_blas()
    before = lib.get_num_threads()
    if before != 1:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            lib.set_num_threads(before)


@contextlib.contextmanager
def _pool_gemm():
    """The one-GEMM path's GEMM: thread_gemm.matmul on Numba's threads (SciPy's BLAS held
    to one thread for the block), or None (NumPy's) where SciPy has no BLAS of its own."""
    if conv_plan.scipy_blas() is None:
        yield None
        return
    with _one_blas_thread():
        yield thread_gemm.matmul


@njit(cache=True)
def _copy_rows(src, dst):
    """dst[...] = src for two 2-D arrays of one shape. (As a loop: Numba compiles an
    array-to-slice assignment with its error message, about 20 s on the first run.)"""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


@njit(cache=True, parallel=True)
def _conv2d_forward_core(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, group, out, ep):
    n, (oc, k), p = x.shape[0], w2.shape, out.shape[2]
    for task in prange((n + group - 1) // group):    # a task: `group` images, one GEMM
        b0 = task * group
        m = min(group, n - b0)
        cols = np.empty((k, m, p), dtype=x.dtype)
        unfold.im2col_images(x, b0, kh, kw, sh, sw, ph, pw, dh, dw, cols)
        if m == 1:                                   # (OC, C*kh*kw) @ (C*kh*kw, OH*OW)
            np.dot(w2, cols.reshape(k, p), out[b0])
        else:
            res = np.dot(w2, cols.reshape(k, m * p)).reshape(oc, m, p)
            for q in range(m):
                _copy_rows(res[:, q], out[b0 + q])
        finish(out, b0, m, ep)


@njit(cache=True, parallel=True)
def _conv2d_backward_core(g, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, group, need_x, need_w,
                          dx, dw_parts):
    n, (oc, k), p = x.shape[0], w2.shape, g.shape[2]
    for task in prange(dw_parts.shape[0]):           # each task keeps its grad_w2^T apart
        b0 = task * group
        m = min(group, n - b0)
        if m == 1:
            gm = g[b0]
        else:                                        # the group's output gradients side by side
            gm3 = np.empty((oc, m, p), dtype=x.dtype)
            for q in range(m):
                _copy_rows(g[b0 + q], gm3[:, q])
            gm = gm3.reshape(oc, m * p)
        cols = np.empty((k, m, p), dtype=x.dtype)
        if need_w:                                   # (C*kh*kw, m*OH*OW) @ (m*OH*OW, OC):
            unfold.im2col_images(x, b0, kh, kw, sh, sw, ph, pw, dh, dw, cols)   # 2x faster
            np.dot(cols.reshape(k, m * p), gm.T, dw_parts[task])    # than g @ cols^T
        if need_x:
            np.dot(w2.T, gm, cols.reshape(k, m * p))  # the gradient of the group's columns
            unfold.col2im_images(cols, b0, kh, kw, sh, sw, ph, pw, dh, dw, dx)


WINOGRAD_LAYOUTS = ("winograd", "winograd-lanes", "winograd-4x4", "winograd-4x4-lanes")


def _winograd_layout(layout, n):
    """The plan's Winograd layout for a batch of n: F(4x4, 3x3) in lanes only where a task
    holds winograd_lanes.LANES images, F(2x2, 3x3)'s lanes where the batch gives a thread
    fewer (lanes_for): F(4x4)'s rows of tiles are then too short to pay (resnet20's training
    step at batch 8 took 1.04 of F(2x2)'s time, its inference 1.05, where at 32 they took
    0.99 and 0.98 and at 128 0.97-0.99 and 0.95; one process, rounds in turns, 2 threads,
    AMD family 26)."""
    if (layout == "winograd-4x4-lanes" and winograd_lanes.lanes_for(
            n, numba.get_num_threads()) < winograd_lanes.LANES):
        return "winograd-lanes"
    return layout


def _winograd_weight(w2, oc, layout, flip=False):
    """The transformed weight U of w2 (OC, C*9) for the layout's Winograd: F(4x4, 3x3)'s
    (36, OC, C) for 'winograd-4x4' and 'winograd-4x4-lanes' (winograd4.py), else F(2x2,
    3x3)'s (16, OC, C); flip: of the weight the input gradient convolves with, (., C, OC)."""
    w4 = w2.reshape(oc, -1, 3, 3)
    scheme = winograd4 if layout in ("winograd-4x4", "winograd-4x4-lanes") else winograd
    return scheme.flipped_weight_transform(w4) if flip else scheme.weight_transform(w4)


def _winograd_conv(x, u, layout, ep=None):
    """The 3x3 stride-1 padding-1 convolution of x (contiguous) with the weight whose
    transform is u (_winograd_weight), then the epilogue ep (kernels/conv_bias.py; none
    where None), by Winograd in the plan's layout: 'winograd' (winograd.py),
    'winograd-lanes' (winograd_lanes.py), 'winograd-4x4' (winograd4.py) or
    'winograd-4x4-lanes' (winograd4_lanes.py)."""
    n, _, h, w = x.shape
    oc = u.shape[1]
    out = buffers.empty((n, oc, h, w), dtype=x.dtype)
    ep = NO_EPILOGUE[x.dtype] if ep is None else ep
    loop = conv_plan.winograd_loop_gemm(u.shape[2], oc)
    if layout in ("winograd-lanes", "winograd-4x4-lanes"):
        threads = numba.get_num_threads()
        scheme = winograd4_lanes if layout == "winograd-4x4-lanes" else winograd_lanes
        scheme.forward(x, u, winograd_lanes.lanes_for(n, threads), out, ep, loop, threads)
    elif layout == "winograd-4x4":
        winograd4.forward_core(x, u, _winograd_group(x, oc, winograd4), out, ep, loop)
    else:
        winograd.forward_core(x, u, _winograd_group(x, oc), out, ep, loop)
    return out


def _winograd_weight_grad(g, x, layout):
    """The weight gradient (OC, C, 3, 3) of a 3x3 stride-1 padding-1 layer by Winograd in
    the plan's layout, in as many parts as threads, the parts' dU within
    winograd_weight_grad_chunk_bytes."""
    chunk_bytes = conv_plan.current_policy().winograd_weight_grad_chunk_bytes
    part_bytes = 16 * g.shape[1] * x.shape[1] * x.itemsize
    parts = min(numba.get_num_threads(), max(1, chunk_bytes // part_bytes))
    if layout == "winograd-lanes":
        lanes = winograd_lanes.lanes_for(x.shape[0], numba.get_num_threads())
        return winograd_lanes.weight_grad(g, x, lanes, parts)
    group = _group(x.shape[0], winograd.tiles(*x.shape[2:]))   # GEMMs of gemm_min_columns
    return winograd.weight_grad(g, x, group, parts)


def _winograd_image_bytes(x, oc, scheme=winograd):
    """Bytes of V and M (or dM) for one image of x: ENTRIES*(C + OC)*T entries, T its tiles
    (scheme: winograd.py's F(2x2, 3x3) or winograd4.py's F(4x4, 3x3))."""
    _, c, h, w = x.shape
    return scheme.ENTRIES * (c + oc) * scheme.tiles(h, w) * x.itemsize


def _winograd_group(x, oc, scheme=winograd):
    """Images per Winograd task: V and M of a task within the policy's winograd_task_bytes
    (at least one image), and a task for every thread."""
    task_bytes = conv_plan.current_policy().winograd_task_bytes
    return max(1, min(task_bytes // _winograd_image_bytes(x, oc, scheme),
                      x.shape[0] // numba.get_num_threads()))


def _group(n, pixels, min_columns=None):
    """Images per GEMM: enough for min_columns columns (the policy's gemm_min_columns
    where None), and a task for every thread."""
    if min_columns is None:
        min_columns = conv_plan.current_policy().gemm_min_columns
    return max(1, min(-(-min_columns // pixels), n // numba.get_num_threads()))


def _even_group(n, pixels, min_columns=None):
    """_group's images per GEMM, evened out so that every thread gets as many tasks."""
    threads = numba.get_num_threads()
    tasks = threads * max(1, n // (threads * _group(n, pixels, min_columns)))
    return max(1, -(-n // tasks))


def _phase_group(n, pixels):
    """Images a phase-gemm task for a batch of n and `pixels` output pixels an image: the
    policy's phase_gemm_images (counted by _even_group as columns of one pixel an image),
    else _even_group's columns rule."""
    images = conv_plan.current_policy().phase_gemm_images
    return _even_group(n, pixels) if images is None else _even_group(n, 1, images)


def _plan(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups):
    return conv_plan.conv_algorithm(x.shape, (w2.shape[0], x.shape[1] // groups, kh, kw),
                                    (sh, sw), (ph, pw), (dh, dw), groups)


def conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1, bias=None,
                   scale=None, relu=False, residual=None, residual_scale=1.0):
    """The convolution of x (N, C, H, W) with w2 = weight.reshape(OC, C/groups*kh*kw),
    plus bias (OC,) where given -> out (N, OC, OH, OW), by the algorithm
    conv_plan.conv_algorithm() names for the layer. With scale (OC,): out * scale + bias
    (batch norm in evaluation, bias its shift); with residual (the output's shape): then
    out + residual_scale * residual (a residual block's shortcut); relu: max(out, 0)
    after. The cores apply these to each task's images while they are in cache
    (kernels/conv_bias.py), the same values as the separate passes
    (reference.conv2d_forward)."""
    out_hw = checks.conv2d_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias,
                                        scale, residual)
    return _conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, scale, relu,
                           out_hw, residual=residual, residual_scale=residual_scale)


def _conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, scale, relu, out_hw,
                    plane_stats=None, residual=None, residual_scale=1.0):
    """conv2d_forward on arguments checked by checks.conv2d_forward_args, which gave
    out_hw = (OH, OW); plane_stats (OC, N, 2) float64, where given, receives the moments
    of every output plane (conv_bias.plane_moments): from the cores' epilogue, or from a
    pass of its own after the one-GEMM path."""
    residual = None if residual is None else np.ascontiguousarray(residual)
    (n, oc), (oh, ow) = (x.shape[0], w2.shape[0]), out_hw
    plan = _plan(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
    if plan.forward == "one-gemm":
        with _pool_gemm() as matmul:
            out = gemm_conv.conv2d_forward(np, im2col, x, w2, kh, kw, sh, sw, ph, pw, oh, ow,
                                           dh, dw, groups, None if scale is not None else bias,
                                           matmul)
        out = out if scale is None else channel_affine(out, scale, bias)
        if residual is not None:
            out = add_scaled(out, residual, residual_scale, out=out)
        out = relu_forward(out, out=out) if relu else out
        if plane_stats is not None:
            _plane_stats(_planes(out), plane_stats)
        return out
    x = np.ascontiguousarray(x)
    ep = epilogue(x.dtype, bias, scale, relu, plane_stats, residual, residual_scale)
    with _one_blas_thread():
        if plan.forward in WINOGRAD_LAYOUTS:
            layout = _winograd_layout(plan.forward, n)
            return _winograd_conv(x, _winograd_weight(w2, oc, layout), layout, ep)
        if plan.forward == "pointwise":
            return pointwise_conv.forward(x, w2, sh, sw, ep)
        if plan.forward == "phase-gemm":
            return phase_gemm.forward(x, w2, _phase_group(n, oh * ow), ep)
        out = buffers.empty((n, oc, oh * ow), dtype=x.dtype)
        _conv2d_forward_core(x, np.ascontiguousarray(w2), kh, kw, sh, sw, ph, pw, dh, dw,
                             _even_group(n, oh * ow), out, ep)
    return out.reshape(n, oc, oh, ow)


def conv2d_backward(grad_out, x, w2, kh, kw, sh, sw, ph, pw, need_x=True, need_w=True,
                    dh=1, dw=1, groups=1):
    """(grad_x like x, grad_w2 like w2) of conv2d_forward, each None unless asked for,
    by the algorithms conv_plan.conv_algorithm() names for the layer."""
    checks.conv2d_backward_args(grad_out, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
    oc = w2.shape[0]
    plan = _plan(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
    g, x = np.ascontiguousarray(grad_out), np.ascontiguousarray(x)
    grad_x = grad_w2 = None
    if plan.grad_input == "pointwise":
        with _one_blas_thread():
            return pointwise_conv.backward(g, x, w2, sh, sw, need_x, need_w,
                                           _even_group(x.shape[0], g.shape[2] * g.shape[3]))
    if need_x and plan.grad_input in WINOGRAD_LAYOUTS:
        with _one_blas_thread():
            layout = _winograd_layout(plan.grad_input, g.shape[0])
            grad_x = _winograd_conv(g, _winograd_weight(w2, oc, layout, flip=True), layout)
        need_x = False
    if need_x and plan.grad_input == "phase-gemm":
        with _one_blas_thread():
            grad_x = phase_gemm.grad_input(g, w2, x.shape,
                                           _phase_group(x.shape[0], g.shape[2] * g.shape[3]))
        need_x = False
    if need_w and plan.grad_weight in ("winograd", "winograd-lanes"):
        with _one_blas_thread():
            grad_w2 = _winograd_weight_grad(g, x, plan.grad_weight).reshape(w2.shape)
        need_w = False
    if need_w and plan.grad_weight == "shifted-rows":
        grad_w2 = weight_grad.weight_grad(g, x, 4 * numba.get_num_threads(),
                                          sh).reshape(w2.shape)
        need_w = False
    if need_x or need_w:                     # what is left, by GEMMs
        gemm = plan.grad_input if need_x else plan.grad_weight
        window = (kh, kw, sh, sw, ph, pw, dh, dw)
        if gemm == "per-image":
            with _one_blas_thread():
                gx, gw = _per_image_backward(g, x, w2, *window, need_x, need_w)
        else:
            with _pool_gemm() as matmul:
                gx, gw = gemm_conv.conv2d_backward(np, im2col, col2im, g, x, w2, kh, kw, sh,
                                                   sw, ph, pw, need_x, need_w, dh, dw, groups,
                                                   matmul)
        grad_x, grad_w2 = (gx if need_x else grad_x), (gw if need_w else grad_w2)
    return grad_x, grad_w2


def _per_image_backward(g, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, need_x, need_w):
    """The GEMM path of conv2d_backward (ungrouped) for g and x C-contiguous."""
    n, oc, oh, ow = g.shape
    group = _even_group(n, oh * ow, None if need_x else
                        conv_plan.current_policy().per_image_weight_grad_min_columns)
    dx = buffers.empty(x.shape if need_x else (0, 0, 0, 0), dtype=x.dtype)
    dw_parts = buffers.empty((-(-n // group),) + w2.shape[::-1], dtype=x.dtype)
    _conv2d_backward_core(g.reshape(n, oc, oh * ow), x, np.ascontiguousarray(w2),
                          kh, kw, sh, sw, ph, pw, dh, dw, group, need_x, need_w, dx, dw_parts)
    return (dx if need_x else None), (dw_parts.sum(axis=0).T.copy() if need_w else None)


# ---------------------------------------------------------------- matrix product

def matmul(a, b):
    """a @ b, with NumPy's semantics and errors. Two 2-D operands of one float dtype run
    on Numba's threads (kernels/thread_gemm.py) where SciPy has a BLAS of its own, so that
    no pool of NumPy's BLAS is left spinning beside the other kernels (the linear layer's
    GEMMs); everything else is NumPy's @."""
    if (a.ndim == b.ndim == 2 and a.dtype == b.dtype and a.dtype in (np.float32, np.float64)
            and a.shape[1] == b.shape[0] and a.size and b.size):
        with _pool_gemm() as pool:
            if pool is not None:
                return pool(a, b, False, False)
    return a @ b


# ---------------------------------------------------------------- per-channel affine

@njit(cache=True, parallel=True)
def _channel_affine_core(x, scale, shift, y):
    n, c, k = x.shape
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        s, t = scale[ch], shift[ch]
        for i in range(k):                   # without fastmath LLVM fuses no multiply-add:
            y[b, ch, i] = x[b, ch, i] * s + t    # the product is rounded, then the sum


def channel_affine(x, scale, shift):
    """y = x * scale + shift along axis 1 of x (N, C, ...), one pass over the planes, each
    result as reference.channel_affine's (the product rounded, then the sum)."""
    checks.channel_affine_args(x, scale, shift)
    n, c = x.shape[0], x.shape[1]
    x3 = np.ascontiguousarray(x).reshape(n, c, int(np.prod(x.shape[2:], dtype=np.int64)))
    y = buffers.empty(x3.shape, dtype=x.dtype)
    _channel_affine_core(x3, np.ascontiguousarray(scale), np.ascontiguousarray(shift), y)
    return y.reshape(x.shape)


# ---------------------------------------------------------------- batch norm

# The cores see x as (N, C, H*W), so that every inner loop runs over a whole plane. The
# sums are allowed to be reassociated (fastmath "reassoc", nothing else), which lets
# LLVM vectorise them into several float64 accumulators: the statistics then took a third
# of the time of a single in-order accumulator, and they differ from it only by rounding.

@njit(cache=True, inline="always")
def _channel_stats(stats, ch, pixels):
    """(mean, biased variance) in float64 of channel ch from its N planes' moments (stats
    (C, N, 2), `pixels` values a plane): the mean of the N*pixels values, and the planes'
    squared deviations, each plus pixels*(its mean - the mean)^2, summed in image order
    and divided by N*pixels (Chan, Golub and LeVeque's pairwise update)."""
    n = stats.shape[1]
    count = n * pixels
    total = 0.0
    for b in range(n):
        total += stats[ch, b, 0]
    mu = total / count
    squares = 0.0
    for b in range(n):
        d = stats[ch, b, 0] / pixels - mu
        squares += stats[ch, b, 1] + pixels * d * d
    return mu, squares / count


@njit(cache=True, parallel=True)
def _combined_stats(stats, pixels):
    """(mean, biased variance) float64 (C,) of every channel from the planes' moments a
    convolution's epilogue wrote (_channel_stats), a task per channel."""
    c = stats.shape[0]
    mean, var = np.empty(c), np.empty(c)
    for ch in prange(c):
        mean[ch], var[ch] = _channel_stats(stats, ch, pixels)
    return mean, var


@njit(cache=True, parallel=True)
def _plane_stats(x3, stats):
    """(mean, biased variance) float64 (C,) over the axes (0, 2) of x3 (N, C, P), a task per
    channel: the moments of each of its planes into stats (C, N, 2) by
    conv_bias.plane_moments, each plane read twice from the core's cache, then combined as
    _combined_stats combines a convolution's."""
    n, c, pixels = x3.shape
    mean, var = np.empty(c), np.empty(c)
    for ch in prange(c):
        for b in range(n):
            if pixels == 1:          # batch norm of (N, C): no plane to slice (0.19 against
                                     # 0.56 ms on (256, 512), 2 threads, AMD family 26)
                stats[ch, b, 0], stats[ch, b, 1] = single_moments(x3[b, ch, 0])
            else:
                stats[ch, b, 0], stats[ch, b, 1] = plane_moments(x3[b, ch])
        mean[ch], var[ch] = _channel_stats(stats, ch, pixels)
    return mean, var


def _batchnorm_stats(x3, plane_stats=None):
    """(mean, biased variance) float64 (C,) over the axes (0, 2) of x3 (N, C, P), combined
    from its planes' moments: plane_stats where a convolution's epilogue computed them
    (conv2d_batchnorm_forward), else a pass over x3 (_plane_stats). Both combine the same
    numbers in the same order, so they agree to the last bit."""
    if plane_stats is None:
        return _plane_stats(x3, np.empty((x3.shape[1], x3.shape[0], 2)))
    return _combined_stats(plane_stats, x3.shape[2])


@njit(cache=True, parallel=True)
def _batchnorm_apply(x, mean, scale, shift, y):
    n, c, hw = x.shape
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for k in range(hw):
            y[b, ch, k] = (x[b, ch, k] - mean[ch]) * scale[ch] + shift[ch]


@njit(inline="always")
def _grad_and_x(grad_out, y, x, b, ch, k):
    """(g, x) at (b, ch, k), g the gradient reaching batch norm's output: grad_out, or,
    fused with a ReLU, 0 where the ReLU cut (y <= 0; a NaN in y lets it through).

    The plain backward passes y = None: Numba compiles one version per type of y and prunes
    the `is None` branch, so the plain loops carry no mask. The mask is a select on values
    all loaded before it, which keeps the loops branchless and vectorised (a load inside the
    branch measured 2x slower; loading x after the select vectorises the sums differently)."""
    if y is None:
        return grad_out[b, ch, k], x[b, ch, k]
    go, yk, xk = grad_out[b, ch, k], y[b, ch, k], x[b, ch, k]
    return (0.0 if yk <= 0 else go), xk           # a NaN passes (NaN <= 0 is false)


@njit(cache=True, fastmath={"reassoc"})
def _channel_grad_sums(grad_out, y, x, ch, mean):
    """(sum(g), sum(g * (x - mean))) over channel ch's planes, g as _grad_and_x, the sums
    reassociated (several accumulators, vectorised)."""
    s, t = 0.0, 0.0
    for b in range(x.shape[0]):
        for k in range(x.shape[2]):
            g, xk = _grad_and_x(grad_out, y, x, b, ch, k)
            s += g
            t += g * (xk - mean)
    return s, t


@njit(cache=True)
def _channel_grad_x(grad_out, y, x, ch, mean, invstd, weight, grad_bias, grad_weight, grad_x):
    """grad_x[:, ch] = coef * (m*g - grad_bias - xhat*grad_weight) for one channel, g as
    _grad_and_x, coef = weight*invstd/m, xhat = (x - mean)*invstd, m = N*H*W. Compiled on
    its own, without the sums' reassociation: each value is computed as written."""
    n, _, hw = x.shape
    m = float(n * hw)
    coef = weight * invstd / m
    for b in range(n):
        for k in range(hw):
            g, xk = _grad_and_x(grad_out, y, x, b, ch, k)
            xhat = (xk - mean) * invstd
            grad_x[b, ch, k] = coef * (m * g - grad_bias - xhat * grad_weight)


@njit(cache=True, parallel=True)
def _batchnorm_grad_core(grad_out, y, x, mean, invstd, weight, grad_x):
    """(sum(g), sum(g * xhat)) per channel in float64, g as _grad_and_x (y None: plain
    batch norm), and, unless grad_x is None, grad_x as _channel_grad_x writes it. A thread
    takes a channel at a time, its sums and then its grad_x: that second pass reads the
    channel's planes from the core's caches, where a pass over the whole batch for the
    sums and another for grad_x read every plane from memory twice (the batch-norm
    backward of a resnet18 training step at batch 16: 24.2 -> 17.5 ms, resnet20's at 128:
    10.6 -> 8.8 ms, measured in the steps on a 2-core AMD EPYC family 26)."""
    c = x.shape[1]
    sum_g, sum_g_xhat = np.empty(c), np.empty(c)
    for ch in prange(c):
        s, t = _channel_grad_sums(grad_out, y, x, ch, mean[ch])
        sum_g[ch], sum_g_xhat[ch] = s, t * invstd[ch]
        if grad_x is not None:
            _channel_grad_x(grad_out, y, x, ch, mean[ch], invstd[ch], weight[ch], s,
                            sum_g_xhat[ch], grad_x)
    return sum_g, sum_g_xhat


def _float64(v):
    return np.asarray(v, dtype=np.float64)


def _planes(a):
    """a (N, C, H, W) as a contiguous (N, C, H*W)."""
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


def batchnorm_forward(x, weight, bias, running_mean, running_var, momentum, eps):
    """Training-mode batch norm over the axes (0, 2, 3) of x.

    x (N, C, H, W), weight and bias (C,) -> (y, mean, invstd): y like x, mean and invstd (C,)
    in x's dtype, invstd = 1/sqrt(biased_var + eps), y = (x - mean)*invstd*weight + bias.
    running_mean and running_var ((C,) or None) are updated in place as PyTorch does:
    r = (1 - momentum)*r + momentum*batch_stat, using the unbiased variance.
    """
    m = checks.batchnorm_forward_args(x, weight, bias, running_mean, running_var)
    return _batchnorm_train(x, weight, bias, running_mean, running_var, momentum, eps, m,
                            False)


def _batchnorm_train(x, weight, bias, running_mean, running_var, momentum, eps, m, relu,
                     plane_stats=None):
    """Training-mode batch norm of x, with m = N*H*W as the checks counted it, then the
    ReLU where relu -> (y, mean, invstd) as batchnorm_forward (batchnorm_relu_forward)
    returns them; the statistics from plane_stats where given (_batchnorm_stats), the
    running ones updated in place."""
    if m == 0:     # an empty batch (as PyTorch): empty y, the running statistics untouched
        return np.empty_like(x), np.zeros(x.shape[1], x.dtype), np.zeros(x.shape[1], x.dtype)
    x3, y = _planes(x), buffers.empty(x.shape, dtype=x.dtype)
    mean, var = _batchnorm_stats(x3, plane_stats)
    invstd = 1.0 / np.sqrt(var + eps)
    apply = _batchnorm_relu_apply if relu else _batchnorm_apply
    apply(x3, mean, invstd * _float64(weight), _float64(bias), _planes(y))
    if running_mean is not None:
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
    if running_var is not None:
        running_var[...] = (1.0 - momentum) * running_var + momentum * var * (m / (m - 1))
    return y, mean.astype(x.dtype), invstd.astype(x.dtype)


def batchnorm_backward(grad_out, x, weight, mean, invstd):
    """The gradient of training-mode batch norm, the batch statistics depending on x.

    grad_out and x (N, C, H, W), weight, mean, invstd (C,) -> (grad_x, grad_weight,
    grad_bias): grad_x like x, the others (C,), all in x's dtype. With m = N*H*W and
    xhat = (x - mean)*invstd:
    grad_bias = sum(grad_out), grad_weight = sum(grad_out*xhat) (sums over 0, 2, 3),
    grad_x = weight*invstd/m * (m*grad_out - grad_bias - xhat*grad_weight).
    """
    m = checks.batchnorm_backward_args(grad_out, x, weight, mean, invstd)
    if m == 0:     # an empty batch: no gradient reaches weight and bias
        return np.empty_like(x), np.zeros(x.shape[1], x.dtype), np.zeros(x.shape[1], x.dtype)
    grad_x = buffers.empty(x.shape, dtype=x.dtype)
    grad_bias, grad_weight = _batchnorm_grad_core(_planes(grad_out), None, _planes(x),
                                                  _float64(mean), _float64(invstd),
                                                  _float64(weight), _planes(grad_x))
    return grad_x, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)


# ---------------------------------------------------------------- ReLU

@njit(cache=True, parallel=True)
def _relu_forward_core(x, y):
    for k in prange(x.size):
        y[k] = np.maximum(x[k], 0)           # np.maximum lets NaN through


@njit(cache=True, parallel=True)
def _relu_backward_core(grad_out, x, grad_x):
    for k in prange(x.size):
        grad_x[k] = 0 if x[k] <= 0 else grad_out[k]   # a NaN lets the gradient through


def relu_forward(x, out=None):
    """max(x, 0) elementwise; x of any shape, y like x (NaN passes through, -0.0 stays), or
    written into `out` where given (x itself for an in-place ReLU: each element is read
    before it is written)."""
    checks.relu_forward_args(x, out)
    y = out if out is not None and out.flags.c_contiguous else buffers.empty(x.shape, x.dtype)
    _relu_forward_core(np.ascontiguousarray(x).reshape(-1), y.reshape(-1))   # (0-d too)
    if out is not None and y is not out:
        out[...] = y
    return y if out is None else out


@njit(cache=True, parallel=True)
def _add_scaled_core(a, b, scale, out):
    for k in prange(a.size):
        out[k] = a[k] + scale * b[k]         # scale of a's dtype: the product, then the sum


def add_scaled(a, b, scale=1.0, out=None):
    """a + scale * b elementwise, one parallel pass, each result as reference.add_scaled's
    (scale rounded to the arrays' dtype, the product rounded, then the sum; 1 * b is b),
    written into `out` where given (a itself: each element is read, then written). Into a
    itself, a resnet20 gradient's sum (128x16x32x32, caches cold) took 0.36 against
    0.53 ms for a fresh array, whose memory is read before it is written (AMD family 26)."""
    checks.add_scaled_args(a, b, out)
    y = out if out is not None and out.flags.c_contiguous else buffers.empty(a.shape, a.dtype)
    _add_scaled_core(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
                     a.dtype.type(scale), y.reshape(-1))       # a's shape, 0-d included
    if out is not None and y is not out:
        out[...] = y
    return y if out is None else out


def relu_backward(grad_out, x):
    """grad_out * 1[not x <= 0] elementwise: zero where x <= 0, NaN lets the gradient
    through (as PyTorch); any shape."""
    checks.relu_backward_args(grad_out, x)
    grad_x = buffers.empty(grad_out.shape, dtype=grad_out.dtype)      # its shape, 0-d too
    _relu_backward_core(np.ascontiguousarray(grad_out).reshape(-1),
                        np.ascontiguousarray(x).reshape(-1), grad_x.reshape(-1))
    return grad_x


# ---------------------------------------------------------------- max pooling

# The forward walks the taps, not the windows, as reference.maxpool_forward does: for each
# tap (i, j) in row-major order, one pass over the whole output plane keeps the value where
# it takes over (strictly larger, or NaN) and notes the tap. Every window then sees its taps
# in row-major order, as a walk over the window would, so ties and NaNs resolve as
# PyTorch's, and each pass is one long branchless loop, which vectorises (a walk over each
# window, with its tests at the edges, ran about 4x slower on resnet18's stem pooling).
# For the passes to be contiguous, the plane is first cut into its sh*sw phases (rows
# r = y*sh + a, columns c = x*sw + e of the padded plane go to phase (a, e) at (y, x)),
# -inf in the padding; tap (i, j) of output (oy, ox) is then element
# (oy + i*dh//sh, ox + j*dw//sw) of phase (i*dh % sh, j*dw % sw), and with the output's
# rows as long as a phase's rows (wp, its last columns never read) the whole plane is
# one flat stretch of each phase.

@njit(cache=True)
def _pool_phases(x, b, ch, sh, sw, ph, pw, phases):
    """phases (sh, sw, hp, wp) = the phases of x[b, ch] padded by ph, pw: -inf where the
    padded plane has no input element (the padding, and past its end)."""
    _, _, h, w = x.shape
    _, _, hp, wp = phases.shape
    phases[...] = -np.inf
    for yy in range(h):
        ry, a = divmod(yy + ph, sh)
        if ry >= hp:
            break
        if sw == 2:                          # read as pairs, which vectorises
            _pool_phases_pairs(x[b, ch, yy], pw, phases[a, :, ry])
            continue
        for e in range(sw):                  # columns xx = k*sw + e - pw of phase e
            k0 = max(0, -((e - pw) // sw))
            k1 = min(wp, (w - 1 - e + pw) // sw + 1)
            row = phases[a, e, ry]
            for k in range(k0, k1):
                row[k] = x[b, ch, yy, k * sw + e - pw]


@njit(cache=True, inline="always")
def _pool_phases_pairs(xrow, pw, two):
    """two (2, wp) = the two phases of one row at stride 2 (column xx goes to phase
    (xx + pw) % 2 at (xx + pw) // 2), the row read two columns at a time."""
    w, wp = xrow.size, two.shape[1]
    even, odd = two[pw % 2], two[(pw + 1) % 2]    # the phases of x's even, odd columns
    e0, o0 = pw // 2, (pw + 1) // 2               # where columns 0 and 1 land
    pairs = max(0, min(w // 2, wp - e0, wp - o0))
    to_even, to_odd = even[e0:e0 + pairs], odd[o0:o0 + pairs]   # (views: this vectorises)
    for k in range(pairs):
        to_even[k] = xrow[2 * k]
        to_odd[k] = xrow[2 * k + 1]
    for xx in range(2 * pairs, w):                # an odd last column; any past wp
        if (xx + pw) // 2 < wp:
            two[(xx + pw) % 2, (xx + pw) // 2] = xrow[xx]


@njit(cache=True, inline="always")
def _pool_tap(v, best, tap, offset):
    """Where v takes over best (strictly larger, or NaN): best = v and tap = offset."""
    for k in range(v.size):
        takes_over = (v[k] > best[k]) | (v[k] != v[k])
        best[k] = v[k] if takes_over else best[k]
        tap[k] = offset if takes_over else tap[k]


@njit(cache=True)
def _pool_first_taps(h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, wp):
    """(OH*wp,) int64: for each window, the flat offset from its corner (top, left) to its
    first taps >= 0, the index a window keeps when nothing takes over (all -inf, or no
    input at all), as PyTorch."""
    first = np.zeros(oh * wp, dtype=np.int64)
    for oy in range(oh):
        top = oy * sh - ph
        for ox in range(wp):
            left = ox * sw - pw
            rows = -top + top % dh if top < 0 else 0
            cols = -left + left % dw if left < 0 else 0
            first[oy * wp + ox] = rows * w + cols
    return first


@njit(cache=True, parallel=True)
def _maxpool_forward_core(x, kh, kw, sh, sw, ph, pw, dh, dw, y, idx):
    n, c, h, w = x.shape
    _, _, oh, ow = y.shape
    hp, wp = oh + (kh - 1) * dh // sh, ow + (kw - 1) * dw // sw
    first = _pool_first_taps(h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, wp)
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        phases = np.empty((sh, sw, hp, wp), dtype=x.dtype)
        _pool_phases(x, b, ch, sh, sw, ph, pw, phases)
        best = np.full(oh * wp, -np.inf, dtype=x.dtype)    # the output, rows wp long
        tap = first.copy()                                  # the kept value's offset from
        for i in range(kh):                                 # its window's corner
            for j in range(kw):
                start = (i * dh // sh) * wp + j * dw // sw
                v = phases[i * dh % sh, j * dw % sw].ravel()[start:start + oh * wp]
                _pool_tap(v, best, tap, i * dh * w + j * dw)
        for oy in range(oh):
            corner = (oy * sh - ph) * w - pw                # flat index of (top, left)
            best_row, tap_row = best[oy * wp:oy * wp + ow], tap[oy * wp:oy * wp + ow]
            y_row, idx_row = y[b, ch, oy], idx[b, ch, oy]
            for ox in range(ow):
                y_row[ox] = best_row[ox]
                idx_row[ox] = corner + ox * sw + tap_row[ox]


@njit(cache=True, parallel=True)
def _maxpool_backward_core(grad_out, idx, grad_x):
    planes, size = grad_out.shape
    for plane in prange(planes):             # idx points within the plane: no races
        grad_x[plane] = 0                    # zeroed here, the plane then in cache
        for k in range(size):
            grad_x[plane, idx[plane, k]] += grad_out[plane, k]


def maxpool_forward(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1, ceil_mode=False):
    """Max pooling, the padding acting as -inf; see reference.maxpool_forward.

    x (N, C, H, W) -> (y, idx), both (N, C, OH, OW), taps (dh, dw) apart, OH and OW as
    checks.pool_out_size (ceil_mode rounds up); idx (int64) is the flat index h*W + w of
    the chosen element within its (n, c) plane. Ties go to the first maximum in row-major
    window order; the last NaN wins; a window with no input element gives -inf (as PyTorch).
    """
    oh, ow = checks.maxpool_forward_args(x, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)
    n, c, _, _ = x.shape
    y = buffers.empty((n, c, oh, ow), dtype=x.dtype)
    idx = buffers.empty((n, c, oh, ow), dtype=np.int64)
    x = np.ascontiguousarray(x)
    _maxpool_forward_core(x, kh, kw, sh, sw, ph, pw, dh, dw, y, idx)
    return y, idx


def maxpool_backward(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1,
                     ceil_mode=False):
    """Send each output gradient back to the input element its window chose.

    grad_out and idx (N, C, OH, OW) -> grad_x of shape x_shape = (N, C, H, W): a zero
    array into which grad_out is scatter-added at idx (overlapping windows accumulate);
    a window with no input element sends nothing (checks.pool_empty_windows).
    """
    n, c, h, w, oh, ow = checks.maxpool_backward_args(grad_out, idx, x_shape, kh, kw, sh, sw,
                                                      ph, pw, dh, dw, ceil_mode)
    grad_out, idx = checks.without_empty_windows(grad_out, idx, x_shape, kh, kw, sh, sw, ph,
                                                 pw, dh, dw, oh, ow)
    grad_x = buffers.empty((n * c, h * w), dtype=grad_out.dtype)
    _maxpool_backward_core(np.ascontiguousarray(grad_out).reshape(n * c, oh * ow),
                           np.ascontiguousarray(idx, dtype=np.int64).reshape(n * c, oh * ow),
                           grad_x)
    return grad_x.reshape(n, c, h, w)


# ---------------------------------------------------------------- batch norm + ReLU, fused

# The layout of the batch-norm kernels above: the statistics by _batchnorm_stats (each
# plane's moments, a task per plane or from a convolution's epilogue, then combined a
# channel at a time), the forward's elementwise pass a task per (n, c) plane, streaming
# through whole planes (a task per channel with the statistics and the map kept together
# measured no faster in the resnet20 and resnet18 steps: resnet20's batch-norm + ReLU
# forward 3.0 against 3.5 ms a step). The backward is the plain batch norm's
# _batchnorm_grad_core (a task per channel, its sums and then its grad_x), given y for the
# ReLU's mask (_grad_and_x). The mask is a select on values loaded before it, which keeps
# every loop branchless and vectorised. Only the sums may be reassociated. Reading y costs:
# resnet20's batch-norm + ReLU backward took 1.22 ms against plain batch norm's 0.72 on
# 16@32, 0.51 against 0.28 on 32@16, 0.33 against 0.13 on 64@8 (128 images, inputs cold, 2
# threads, AMD family 26). Tried and left: the mask recomputed from x with the forward's
# float64 constants (1.0-1.17, 0.46 and 0.19 ms: only 64@8 gains, for those constants
# carried through all three kernel layers), and the masked gradient written to grad_x by
# the first pass for the second to read in place of grad_out and y (level, the same
# values).

@njit(cache=True, parallel=True)
def _batchnorm_relu_apply(x, mean, scale, shift, y):
    n, c, hw = x.shape
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for k in range(hw):
            v = (x[b, ch, k] - mean[ch]) * scale[ch] + shift[ch]
            y[b, ch, k] = 0.0 if v < 0 else v          # a NaN passes (NaN < 0 is false)


@njit(cache=True, parallel=True)
def _masked_scale(grad_out, y, scale, grad_x):
    """grad_x = (0 where y <= 0, else grad_out) * scale[channel]: fixed statistics."""
    n, c, hw = y.shape
    for plane in prange(n * c):
        b, ch = plane // c, plane % c
        for k in range(hw):
            go, yk = grad_out[b, ch, k], y[b, ch, k]
            grad_x[b, ch, k] = 0.0 if yk <= 0 else go * scale[ch]


def batchnorm_relu_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                           training=True):
    """relu(batch norm of x) -> (y, mean, invstd), y = max((x - mean)*invstd*weight + bias,
    0); training: batch statistics, the running ones updated in place as batchnorm_forward
    does; evaluation: the running statistics (see reference.batchnorm_relu_forward)."""
    m = checks.batchnorm_relu_forward_args(x, weight, bias, running_mean, running_var,
                                           training)
    if training:
        return _batchnorm_train(x, weight, bias, running_mean, running_var, momentum, eps, m,
                                True)
    c = x.shape[1]
    if m == 0:     # an empty batch (as PyTorch): empty y
        return np.empty_like(x), np.zeros(c, x.dtype), np.zeros(c, x.dtype)
    x3, y = _planes(x), buffers.empty(x.shape, dtype=x.dtype)
    mean, invstd = _float64(running_mean), 1.0 / np.sqrt(_float64(running_var) + eps)
    _batchnorm_relu_apply(x3, mean, invstd * _float64(weight), _float64(bias), _planes(y))
    return y, mean.astype(x.dtype), invstd.astype(x.dtype)


def conv2d_batchnorm_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, weight, bias,
                             running_mean, running_var, momentum, eps, relu=False):
    """Training-mode batch norm of the convolution of x, then the ReLU where relu ->
    (out, y, mean, invstd) (see reference.conv2d_batchnorm_forward). The cores write each
    output plane's moments while the plane is in cache (conv_bias.py's epilogue), and the
    statistics are combined from them: the values of conv2d_forward and then
    batchnorm_forward (batchnorm_relu_forward) to the last bit, with one pass over the
    output fewer."""
    out_hw, m = checks.conv2d_batchnorm_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh, dw,
                                                     groups, weight, bias, running_mean,
                                                     running_var)
    plane_stats = np.empty((w2.shape[0], x.shape[0], 2))   # a channel's planes together
    out = _conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, None, None, False,
                          out_hw, plane_stats)
    y, mean, invstd = _batchnorm_train(out, weight, bias, running_mean, running_var, momentum,
                                       eps, m, relu, plane_stats)
    return out, y, mean, invstd


def batchnorm_relu_backward(grad_out, y, x, weight, mean, invstd, training=True):
    """The gradient of batchnorm_relu_forward, the ReLU's mask read from its output y ->
    (grad_x, grad_weight, grad_bias) (see reference.batchnorm_relu_backward)."""
    m = checks.batchnorm_relu_backward_args(grad_out, y, x, weight, mean, invstd, training)
    c = x.shape[1]
    if m == 0:     # an empty batch: no gradient reaches weight and bias
        return np.empty_like(x), np.zeros(c, x.dtype), np.zeros(c, x.dtype)
    g3, y3, x3 = _planes(grad_out), _planes(y), _planes(x)
    mean64, invstd64, weight64 = _float64(mean), _float64(invstd), _float64(weight)
    grad_x = buffers.empty(x.shape, dtype=x.dtype)
    if training:
        grad_bias, grad_weight = _batchnorm_grad_core(g3, y3, x3, mean64, invstd64, weight64,
                                                      _planes(grad_x))
    else:
        grad_bias, grad_weight = _batchnorm_grad_core(g3, y3, x3, mean64, invstd64, weight64,
                                                      None)
        _masked_scale(g3, y3, weight64 * invstd64, _planes(grad_x))
    return grad_x, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)
