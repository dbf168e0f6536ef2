"""Pooling: max (on the kernel layer), average (im2col and a mean), adaptive average and
adaptive max over torch's windows (one loop over the output grid)."""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.functional.conv import pair
from tinyres.kernels import checks
from tinyres.kernels.gemm_conv import batch_first, channels_first, columns
from tinyres.functional.math import mean
from tinyres.tensor import Tensor


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, window):
        y, idx = kernels_for(x).maxpool_forward(x, *window)
        ctx.idx, ctx.shape, ctx.window = idx, x.shape, window
        return y

    @staticmethod
    def backward(ctx, grad_out):
        # d max/dx = 1 at the element each window chose (its recorded index), 0 elsewhere
        return kernels_for(grad_out).maxpool_backward(grad_out, ctx.idx, ctx.shape,
                                                      *ctx.window)


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, window):
        kh, kw, sh, sw, ph, pw = window
        n, c, h, w = x.shape
        xp = get_array_module(x)
        cols = columns(xp, kernels_for(x).im2col, x, *window)            # (C*kh*kw, N*OH*OW)
        ctx.shape, ctx.window = x.shape, window
        means = cols.reshape(c, kh * kw, -1).mean(axis=1)                # (C, N*OH*OW)
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        return batch_first(xp, means, n, oh, ow)

    @staticmethod
    def backward(ctx, grad_out):
        # d mean/dx = 1/(kh*kw) for each element of the window (padding counted)
        kh, kw = ctx.window[:2]
        xp = get_array_module(grad_out)
        g = channels_first(xp, grad_out) / (kh * kw)                           # (C, N*OH*OW)
        c = g.shape[0]
        cols = xp.broadcast_to(g[:, None, :], (c, kh * kw, g.shape[1])).reshape(c * kh * kw, -1)
        return kernels_for(grad_out).col2im(cols, ctx.shape, *ctx.window)


def _window(op, x, kernel_size, stride, padding):
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W), got shape {x.shape}")
    kh, kw = pair(kernel_size, "kernel_size", op)
    sh, sw = pair(kernel_size if stride is None else stride, "stride", op)
    ph, pw = pair(padding, "padding", op)
    checks.out_size(op, x.shape, kh, kw, sh, sw, ph, pw)    # the kernels' own checks
    checks.check_pool_padding(op, kh, kw, ph, pw)
    return kh, kw, sh, sw, ph, pw


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """torch.nn.functional.max_pool2d (floor mode); stride defaults to kernel_size."""
    return MaxPool2d.apply(input, window=_window("max_pool2d", input, kernel_size, stride,
                                                 padding))


def avg_pool2d(input, kernel_size, stride=None, padding=0):
    """torch.nn.functional.avg_pool2d with count_include_pad=True (its default)."""
    return AvgPool2d.apply(input, window=_window("avg_pool2d", input, kernel_size, stride,
                                                 padding))


def adaptive_windows(size, out):
    """torch's adaptive windows along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, out_size):
        xp = get_array_module(x)
        rows, cols = (adaptive_windows(n, o) for n, o in zip(x.shape[2:], out_size))
        y = xp.empty(x.shape[:2] + tuple(out_size), dtype=x.dtype)
        for i, (h0, h1) in enumerate(rows):
            for j, (w0, w1) in enumerate(cols):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
        ctx.shape, ctx.windows = x.shape, (rows, cols)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        # d mean/dx = 1/(window size) for each element of each window (windows may overlap)
        xp = get_array_module(grad_out)
        grad = xp.zeros(ctx.shape, dtype=grad_out.dtype)
        rows, cols = ctx.windows
        for i, (h0, h1) in enumerate(rows):
            for j, (w0, w1) in enumerate(cols):
                share = grad_out[:, :, i, j] / ((h1 - h0) * (w1 - w0))
                grad[:, :, h0:h1, w0:w1] += share[:, :, None, None]
        return grad


def adaptive_max_indices(x, out_size):
    """For each adaptive window of x (N, C, H, W), the flat index (h * W + w) of its first
    maximum, or of its first NaN (as torch)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    rows, cols = (adaptive_windows(k, o) for k, o in zip((h, w), out_size))
    idx = xp.empty((n, c) + tuple(out_size), dtype=xp.int64)
    for i, (h0, h1) in enumerate(rows):
        for j, (w0, w1) in enumerate(cols):
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            nan = xp.isnan(window)
            k = xp.where(nan.any(axis=2), nan.argmax(axis=2), window.argmax(axis=2))
            idx[:, :, i, j] = (h0 + k // (w1 - w0)) * w + w0 + k % (w1 - w0)
    return idx


class AdaptiveMaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, idx):
        n, c = x.shape[:2]
        xp = get_array_module(x)
        ctx.idx, ctx.shape = idx, x.shape
        flat = xp.take_along_axis(x.reshape(n, c, -1), idx.reshape(n, c, -1), axis=2)
        return flat.reshape(idx.shape)

    @staticmethod
    def backward(ctx, grad_out):
        # d max/dx = 1 at the element each window chose, 0 elsewhere (overlaps accumulate)
        xp = get_array_module(grad_out)
        n, c = ctx.shape[:2]
        grad = xp.zeros((n * c, ctx.shape[2] * ctx.shape[3]), dtype=grad_out.dtype)
        rows = xp.repeat(xp.arange(n * c), ctx.idx[0, 0].size)
        if xp is np:
            np.add.at(grad, (rows, ctx.idx.ravel()), grad_out.ravel())
        else:
            import cupyx
            cupyx.scatter_add(grad, (rows, ctx.idx.ravel()), grad_out.ravel())
        return grad.reshape(ctx.shape)


def _adaptive_size(op, input, output_size):
    """(oh, ow) from an int, a pair, or None entries (keep that input size)."""
    if input.ndim not in (3, 4):
        raise RuntimeError(f"{op}(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    if len(sizes) != 2:
        raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    sizes = tuple(input.shape[-2 + i] if s is None else int(s) for i, s in enumerate(sizes))
    if min(sizes) < 0 or (min(sizes) == 0 and input.numel()):
        raise RuntimeError(f"{op}: output_size must be positive, got {output_size!r}")
    return sizes


def _batched(input, fn):
    """fn on a 4-D view of a (C, H, W) or (N, C, H, W) input, the result in its layout."""
    if input.ndim == 3:
        return fn(input.unsqueeze(0)).squeeze(0)
    return fn(input)


def adaptive_avg_pool2d(input, output_size):
    """Average to an (oh, ow) grid over torch's windows: along each axis, output i averages
    [floor(i*in/out), ceil((i+1)*in/out)). Output 1 is a mean (a ResNet's global average
    pool); an output that divides the input is avg_pool2d with stride = kernel."""
    oh, ow = _adaptive_size("adaptive_avg_pool2d", input, output_size)
    h, w = input.shape[-2:]
    if (oh, ow) == (1, 1):
        return mean(input, dim=(-2, -1), keepdim=True)
    if h % oh == 0 and w % ow == 0:
        return _batched(input, lambda x: avg_pool2d(x, (h // oh, w // ow)))
    return _batched(input, lambda x: AdaptiveAvgPool2d.apply(x, out_size=(oh, ow)))


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """The maximum over each of torch's adaptive windows (see adaptive_avg_pool2d); with
    return_indices, also the flat index (h * W + w) of each chosen element."""
    size = _adaptive_size("adaptive_max_pool2d", input, output_size)
    x = input if input.ndim == 4 else input.unsqueeze(0)
    idx = adaptive_max_indices(x.array, size)
    out = AdaptiveMaxPool2d.apply(x, idx=idx)
    if input.ndim == 3:
        out, idx = out.squeeze(0), idx[0]
    return (out, Tensor(idx)) if return_indices else out
