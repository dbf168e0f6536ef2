"""Pooling: max (on the kernel layer), average (im2col, a sum and a divisor map), adaptive
average and adaptive max over torch's windows (one loop over the output grid)."""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.functional.shape import as_int
from tinyres.kernels import checks
from tinyres.kernels.gemm_conv import batch_first, channels_first, columns
from tinyres.functional.math import mean
from tinyres.tensor import Tensor


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, window, pooled):
        # the kernel finds values and indices in one pass (max_pool2d calls it): keep both
        y, idx = pooled
        ctx.idx, ctx.shape, ctx.window = idx, x.shape, window
        return y

    @staticmethod
    def backward(ctx, grad_out):
        # d max/dx = 1 at the element each window chose (its recorded index), 0 elsewhere
        return kernels_for(grad_out).maxpool_backward(grad_out, ctx.idx, ctx.shape,
                                                      *ctx.window)


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, window, extra, divisor):
        kh, kw = window[:2]
        xp = get_array_module(x)
        n, c = x.shape[:2]
        padded = _pad_bottom_right(xp, x, extra)
        cols = columns(xp, kernels_for(x).im2col, padded, *window)       # (C*kh*kw, N*OH*OW)
        ctx.shape, ctx.window, ctx.extra, ctx.divisor = x.shape, window, extra, divisor
        oh, ow = checks.out_size("avg_pool2d", padded.shape, *window)
        sums = cols.reshape(c, kh * kw, -1).sum(axis=1)                  # (C, N*OH*OW)
        return batch_first(xp, sums / _tiled(xp, divisor, n, x.dtype), n, oh, ow)

    @staticmethod
    def backward(ctx, grad_out):
        # d avg/dx = 1/divisor (of each window's output) for each element of the window
        kh, kw = ctx.window[:2]
        xp = get_array_module(grad_out)
        n, c, h, w = ctx.shape
        g = channels_first(xp, grad_out) / _tiled(xp, ctx.divisor, n, grad_out.dtype)
        cols = xp.broadcast_to(g[:, None, :], (c, kh * kw, g.shape[1])).reshape(c * kh * kw, -1)
        shape = (n, c, h + ctx.extra[0], w + ctx.extra[1])
        grad = kernels_for(grad_out).col2im(cols, shape, *ctx.window)
        return grad if ctx.extra == (0, 0) else xp.ascontiguousarray(grad[:, :, :h, :w])


def _pad_bottom_right(xp, x, extra):
    """x with extra = (rows, columns) of zeros below and to the right (ceil mode's last
    windows), or x itself."""
    if extra == (0, 0):
        return x
    return xp.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))


def _tiled(xp, divisor, n, dtype):
    """The divisor of every output in the columns' order (N*OH*OW,): a number stays one."""
    if np.isscalar(divisor):
        return divisor
    return xp.asarray(np.tile(divisor.ravel(), n), dtype=dtype)


def _counts(size, k, s, p, oh, count_include_pad):
    """How many of each window's k elements torch divides by along one axis: those inside
    the padded input (count_include_pad), or those inside the input itself."""
    start = np.arange(oh) * s - p
    end = np.minimum(start + k, size + p)
    if not count_include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


def avg_divisor(x_shape, window, out, count_include_pad, divisor_override):
    """torch's divisor of each output: divisor_override if given, else the count of each
    window's elements (_counts); kh*kw, a number, where that is every window's."""
    kh, kw, sh, sw, ph, pw = window
    if divisor_override is not None:
        return divisor_override
    rows = _counts(x_shape[2], kh, sh, ph, out[0], count_include_pad)
    cols = _counts(x_shape[3], kw, sw, pw, out[1], count_include_pad)
    divisor = rows[:, None] * cols[None, :]
    return kh * kw if (divisor == kh * kw).all() else divisor


def _pool_pair(op, name, value, omitted=None):
    """(a, b) from an int or a tuple/list of one or two ints, as torch reads pooling
    arguments; `omitted` is what None or () stand for (stride: the kernel size)."""
    if omitted is not None and (value is None or (isinstance(value, (tuple, list))
                                                  and len(value) == 0)):
        return omitted
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value,)
    if len(values) not in (1, 2):
        allowed = "omitted, a single int" if omitted is not None else "a single int"
        raise checks.PoolShapeError(f"{op}: {name} must either be {allowed}, or a tuple of "
                                    f"two ints, got {value!r}")
    out = tuple(as_int(v, name, op) for v in values)
    return out * 2 if len(out) == 1 else out


def _flag(op, name, value):
    """A bool argument, which torch takes only as a bool (not 0/1 or None)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be bool, not {type(value).__name__}")
    return bool(value)


def _check_dims(op, input):
    """Raise as torch does unless input is a 3-D (C, H, W) or 4-D (N, C, H, W) Tensor."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, not {type(input).__name__}")
    if input.ndim in (3, 4):
        return
    if op == "avg_pool2d" and input.ndim < 3:     # torch reads input.size(-3) first
        raise IndexError(f"{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                         f"shape {tuple(input.shape)}: dimension -3 is out of range")
    raise RuntimeError(f"{op}: expected a non-empty 3-D (C, H, W) or 4-D (N, C, H, W) "
                       f"input, got shape {tuple(input.shape)}")


def _batched_shape(input):
    """input's shape with N = 1 in front of a 3-D (C, H, W) one."""
    return tuple(input.shape) if input.ndim == 4 else (1,) + tuple(input.shape)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """torch.nn.functional.max_pool2d: the maximum of each kh x kw window, its taps
    `dilation` apart, the padding acting as -inf; stride defaults to kernel_size; ceil_mode
    rounds the output size up (checks.pool_out_size). With return_indices, also the int64
    flat index h * W + w of each chosen element within its plane. (C, H, W) or (N, C, H, W)."""
    op = "max_pool2d"
    kh, kw = _pool_pair(op, "kernel_size", kernel_size)
    sh, sw = _pool_pair(op, "stride", stride, omitted=(kh, kw))
    ph, pw = _pool_pair(op, "padding", padding)
    dh, dw = _pool_pair(op, "dilation", dilation)
    ceil_mode = _flag(op, "ceil_mode", ceil_mode)
    _check_dims(op, input)
    window = (kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)
    checks.pool_out_size(op, _batched_shape(input), *window)      # torch's errors, named so
    x = input if input.ndim == 4 else input.unsqueeze(0)
    pooled = kernels_for(x.array).maxpool_forward(x.array, *window)
    out = MaxPool2d.apply(x, window=window, pooled=pooled)
    idx = pooled[1]
    if input.ndim == 3:
        out, idx = out.squeeze(0), idx[0]
    return (out, Tensor(idx)) if return_indices else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """torch.nn.functional.avg_pool2d: the sum of each kh x kw window (zero padding)
    divided by divisor_override if given, else by the count of the window's elements inside
    the padded input (count_include_pad) or inside the input alone; stride defaults to
    kernel_size; ceil_mode rounds the output size up. (C, H, W) or (N, C, H, W)."""
    op = "avg_pool2d"
    kh, kw = _pool_pair(op, "kernel_size", kernel_size)
    sh, sw = _pool_pair(op, "stride", stride, omitted=(kh, kw))
    ph, pw = _pool_pair(op, "padding", padding)
    ceil_mode = _flag(op, "ceil_mode", ceil_mode)
    count_include_pad = _flag(op, "count_include_pad", count_include_pad)
    if divisor_override is not None:
        if isinstance(divisor_override, (bool, np.bool_)):
            raise TypeError(f"{op}: divisor_override must be int, not bool")
        if as_int(divisor_override, "divisor_override", op) == 0:
            raise checks.PoolShapeError(f"{op}: divisor must be not zero, got "
                                        f"divisor_override=0")
        divisor_override = int(divisor_override)
    _check_dims(op, input)
    shape = _batched_shape(input)
    window = (kh, kw, sh, sw, ph, pw)
    oh, ow = checks.pool_out_size(op, shape, *window, 1, 1, ceil_mode)
    extra = (max(0, (oh - 1) * sh + kh - (shape[2] + 2 * ph)),
             max(0, (ow - 1) * sw + kw - (shape[3] + 2 * pw)))
    divisor = avg_divisor(shape, window, (oh, ow), count_include_pad, divisor_override)
    return _batched(input, lambda x: AvgPool2d.apply(x, window=window, extra=extra,
                                                     divisor=divisor))


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
