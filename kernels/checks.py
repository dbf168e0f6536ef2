"""Argument checks shared by the three kernel layers, so that all of them reject bad input
with the same message: one function per kernel, named after it, returning the geometry
the kernel needs (output size, batch-norm count)."""
import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_float(fn, a, name):
    """Raise TypeError unless a is a float32 or float64 array."""
    dtype = getattr(a, "dtype", None)
    if dtype not in _FLOATS:
        raise TypeError(f"{fn}: {name} must be a float32 or float64 array, got "
                        f"{type(a).__name__} of dtype {dtype}")


def check_image(fn, x, name):
    """Raise unless x is a float32/float64 NCHW array."""
    check_float(fn, x, name)
    if x.ndim != 4:
        raise ValueError(f"{fn}: {name} must be 4-D (N, C, H, W), got shape {x.shape}")


def check_shape(fn, a, name, expected):
    """Raise ValueError unless a.shape == expected."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"{fn}: {name} must have shape {tuple(expected)}, got {a.shape}")


def out_size(fn, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """(OH, OW) of a kh x kw window, its taps (dh, dw) apart (the dilation), sliding with
    stride (sh, sw) over padding (ph, pw): OH = (H + 2*ph - dh*(kh - 1) - 1)//sh + 1."""
    if len(x_shape) != 4:
        raise ValueError(f"{fn}: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{fn}: expected kernel and stride >= 1 and padding >= 0, got "
                         f"kernel ({kh}, {kw}), stride ({sh}, {sw}), padding ({ph}, {pw})")
    if min(dh, dw) < 1:
        raise ValueError(f"{fn}: expected dilation >= 1, got ({dh}, {dw})")
    h, w = x_shape[2], x_shape[3]
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    oh, ow = (h + 2 * ph - span_h) // sh + 1, (w + 2 * pw - span_w) // sw + 1
    if oh < 1 or ow < 1:
        dilated = "" if (dh, dw) == (1, 1) else f" and dilation ({dh}, {dw})"
        raise ValueError(f"{fn}: a ({kh}, {kw}) kernel with padding ({ph}, {pw}){dilated} "
                         f"does not fit an input of shape {tuple(x_shape)}; expected "
                         f"H + 2*ph >= dh*(kh - 1) + 1 and W + 2*pw >= dw*(kw - 1) + 1")
    return oh, ow


class PoolShapeError(ValueError, RuntimeError):
    """Pooling arguments no window fits. torch raises RuntimeError for these and the
    kernels raise ValueError for bad arguments, so this is both."""


def _half(n):
    """n / 2 rounded toward zero, as C++ (and so torch) divides."""
    return n // 2 if n >= 0 else -(-n // 2)


def pool_out_size(fn, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1, ceil_mode=False):
    """(OH, OW) of max or average pooling, after torch's checks in torch's order: stride
    not 0, padding >= 0 and at most half the dilated kernel; kernel, stride and dilation
    >= 1; C, H and W not 0 (N may be); padding at most half the kernel; output >= 1x1.
    OH = (H + 2*ph - dh*(kh - 1) - 1 + (sh - 1 if ceil_mode else 0))//sh + 1, less one in
    ceil mode where the last window would start past the input and its left padding."""
    if len(x_shape) != 4:
        raise ValueError(f"{fn}: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    window = (f"kernel ({kh}, {kw}), stride ({sh}, {sw}), padding ({ph}, {pw}) and "
              f"dilation ({dh}, {dw})")
    if sh == 0 or sw == 0:
        raise PoolShapeError(f"{fn}: stride should not be zero, got {window}")
    if min(ph, pw) < 0:
        raise PoolShapeError(f"{fn}: padding must be non-negative, got {window}")
    if ph > _half((kh - 1) * dh + 1) or pw > _half((kw - 1) * dw + 1):
        raise PoolShapeError(f"{fn}: padding should be at most half of effective kernel size "
                             f"dilation*(kernel - 1) + 1, got {window}")
    for name, a, b in (("kernel size", kh, kw), ("stride", sh, sw), ("dilation", dh, dw)):
        if min(a, b) < 1:
            raise PoolShapeError(f"{fn}: {name} should be greater than zero, got {window}")
    if 0 in tuple(x_shape)[1:]:
        raise PoolShapeError(f"{fn}: expected an input with non-zero C, H and W (N may be "
                             f"0), got shape {tuple(x_shape)}")
    if ph > kh // 2 or pw > kw // 2:
        raise PoolShapeError(f"{fn}: padding should be smaller than or equal to half of kernel "
                             f"size, got {window}")
    oh = _pool_out_len(x_shape[2], kh, sh, ph, dh, ceil_mode)
    ow = _pool_out_len(x_shape[3], kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        mode = " in ceil mode" if ceil_mode else ""
        raise PoolShapeError(f"{fn}: an input of shape {tuple(x_shape)} with {window}"
                             f"{mode} gives output size ({oh}, {ow}), which is too small: "
                             f"expected at least (1, 1)")
    return oh, ow


def _pool_out_len(size, k, s, p, d, ceil_mode):
    """How many windows fit along one axis (see pool_out_size)."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:     # it would start past the input
        out -= 1
    return out


def first_tap(start, d):
    """For an integer array of window starts, each window's first tap start + k*d that is
    >= 0: where torch starts the walk over the input."""
    return np.where(start < 0, start % d, start)


def pool_empty_windows(x_shape, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Boolean (OH, OW) mask of the windows whose taps all miss the input (dilation can
    jump over it; torch then gives -inf at the index of the first tap past it), or None
    where every window holds an input element (always so without dilation)."""
    if (dh, dw) == (1, 1):
        return None
    rows = first_tap(np.arange(oh) * sh - ph, dh) >= x_shape[2]
    cols = first_tap(np.arange(ow) * sw - pw, dw) >= x_shape[3]
    if not (rows.any() or cols.any()):
        return None
    return rows[:, None] | cols[None, :]


def without_empty_windows(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """(grad_out, idx) with the empty windows' entries (pool_empty_windows) set to 0: such a
    window's -inf depends on no input, so it sends no gradient. NumPy arrays."""
    empty = pool_empty_windows(x_shape, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    if empty is None:
        return grad_out, idx
    return np.where(empty, grad_out.dtype.type(0), grad_out), np.where(empty, 0, idx)


def check_pool_index(fn, idx, plane_size):
    """Raise unless idx is an integer array with every entry in [0, plane_size)."""
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{fn}: idx must be an integer array, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= plane_size):
        raise ValueError(f"{fn}: idx must lie in [0, H*W) = [0, {plane_size}), got values "
                         f"from {idx.min()} to {idx.max()}")


def check_batchnorm(fn, x, **per_channel):
    """Check x (N, C, H, W) and the (C,) vectors given (None allowed); return m = N*H*W."""
    check_image(fn, x, "x")
    return _batch_values(fn, x.shape, "x", **per_channel)


def _batch_values(fn, shape, what, **per_channel):
    """Check the (C,) vectors given (None allowed) against the shape (N, C, H, W) of
    `what`, batch norm's input in training; return m = N*H*W, more than one."""
    n, c, h, w = shape
    for name, v in per_channel.items():
        if v is not None:
            check_shape(fn, v, name, (c,))
    m = n * h * w
    if m == 1:     # m == 0 (an empty batch) is allowed: empty output, stats untouched
        raise ValueError(f"{fn}: expected more than one value per channel in training "
                         f"mode, got {what} of shape {tuple(shape)}")
    return m



def im2col_args(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """Check im2col's arguments; return (OH, OW)."""
    check_image("im2col", x, "x")
    return out_size("im2col", x.shape, kh, kw, sh, sw, ph, pw, dh, dw)


def col2im_args(cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """Check col2im's arguments; return (N, C, H, W, OH, OW)."""
    check_float("col2im", cols, "cols")
    n, c, h, w = (int(s) for s in x_shape)
    oh, ow = out_size("col2im", (n, c, h, w), kh, kw, sh, sw, ph, pw, dh, dw)
    check_shape("col2im", cols, "cols", (c * kh * kw, n * oh * ow))
    return n, c, h, w, oh, ow


def batchnorm_forward_args(x, weight, bias, running_mean, running_var):
    """Check batchnorm_forward's arguments; return m = N*H*W."""
    return check_batchnorm("batchnorm_forward", x, weight=weight, bias=bias,
                           running_mean=running_mean, running_var=running_var)


def batchnorm_backward_args(grad_out, x, weight, mean, invstd):
    """Check batchnorm_backward's arguments; return m = N*H*W."""
    m = check_batchnorm("batchnorm_backward", x, weight=weight, mean=mean, invstd=invstd)
    check_shape("batchnorm_backward", grad_out, "grad_out", x.shape)
    check_float("batchnorm_backward", grad_out, "grad_out")
    return m


def check_like(fn, a, name, shape, like, like_name):
    """Raise unless a is a float array of this shape and of like's dtype."""
    check_float(fn, a, name)
    check_shape(fn, a, name, shape)
    if a.dtype != like.dtype:
        raise TypeError(f"{fn}: {name} must have {like_name}'s dtype {like.dtype}, got "
                        f"{a.dtype}")


def relu_forward_args(x, out):
    """Check relu_forward's arguments: x float; out, where given, of x's shape and dtype."""
    check_float("relu_forward", x, "x")
    if out is not None:
        check_like("relu_forward", out, "out", x.shape, x, "x")


def add_scaled_args(a, b, out=None):
    """Check add_scaled's arguments: a and b float arrays of one shape and dtype; out,
    where given, of that shape and dtype too."""
    check_float("add_scaled", a, "a")
    check_like("add_scaled", b, "b", a.shape, a, "a")
    if out is not None:
        check_like("add_scaled", out, "out", a.shape, a, "a")


def relu_backward_args(grad_out, x):
    """Check relu_backward's arguments."""
    check_float("relu_backward", grad_out, "grad_out")
    check_shape("relu_backward", x, "x", grad_out.shape)


def maxpool_forward_args(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1, ceil_mode=False):
    """Check maxpool_forward's arguments; return (OH, OW)."""
    check_image("maxpool_forward", x, "x")
    return pool_out_size("maxpool_forward", x.shape, kh, kw, sh, sw, ph, pw, dh, dw,
                         ceil_mode)


def maxpool_backward_args(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1,
                          ceil_mode=False, check_index=True):
    """Check maxpool_backward's arguments; return (N, C, H, W, OH, OW). `check_index`
    also checks the range of idx, but for empty windows' (a reduction: the GPU launcher
    skips it)."""
    check_float("maxpool_backward", grad_out, "grad_out")
    n, c, h, w = (int(s) for s in x_shape)
    oh, ow = pool_out_size("maxpool_backward", (n, c, h, w), kh, kw, sh, sw, ph, pw, dh, dw,
                           ceil_mode)
    check_shape("maxpool_backward", grad_out, "grad_out", (n, c, oh, ow))
    check_shape("maxpool_backward", idx, "idx", (n, c, oh, ow))
    if check_index:
        empty = pool_empty_windows(x_shape, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
        check_pool_index("maxpool_backward", idx if empty is None else idx[:, :, ~empty],
                         h * w)
    return n, c, h, w, oh, ow


def conv2d_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1, bias=None,
                        scale=None, residual=None):
    """Check conv2d_forward's arguments (bias and scale None or (OC,) of x's dtype, a
    scale only with a bias, its shift; residual None or of the output's shape and x's
    dtype); return (OH, OW)."""
    oh, ow = check_conv2d("conv2d_forward", x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
    if scale is not None and bias is None:
        raise ValueError("conv2d_forward: a scale needs a bias (the shift added after it)")
    for name, values in (("bias", bias), ("scale", scale)):
        if values is not None:
            check_shape("conv2d_forward", values, name, (w2.shape[0],))
            if values.dtype != x.dtype:
                raise TypeError(f"conv2d_forward: {name} must have x's dtype {x.dtype}, got "
                                f"{values.dtype}")
    if residual is not None:
        check_like("conv2d_forward", residual, "residual (added to the output)",
                   (x.shape[0], w2.shape[0], oh, ow), x, "x")
    return oh, ow


def conv2d_batchnorm_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, weight,
                                  bias, running_mean, running_var):
    """Check conv2d_batchnorm_forward's arguments before anything runs: the convolution's
    as conv2d_forward's, then batch norm's on the output the convolution will have, as
    batchnorm_forward's; return ((OH, OW), m = N*OH*OW)."""
    fn = "conv2d_batchnorm_forward"
    oh, ow = check_conv2d(fn, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
    m = _batch_values(fn, (x.shape[0], w2.shape[0], oh, ow), "a convolution output",
                      weight=weight, bias=bias, running_mean=running_mean,
                      running_var=running_var)
    return (oh, ow), m


def conv2d_backward_args(grad_out, x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1):
    """Check conv2d_backward's arguments; return (OH, OW)."""
    oh, ow = check_conv2d("conv2d_backward", x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
    check_float("conv2d_backward", grad_out, "grad_out")
    check_shape("conv2d_backward", grad_out, "grad_out", (x.shape[0], w2.shape[0], oh, ow))
    return oh, ow


def check_groups(fn, channels, out_channels, groups):
    """Raise ValueError unless groups >= 1 divides both channel counts."""
    if groups < 1 or channels % groups or out_channels % groups:
        raise ValueError(f"{fn}: groups must be a positive divisor of both the {channels} "
                         f"input and the {out_channels} output channels, got {groups}")


def check_conv2d(fn, x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1):
    """x (N, C, H, W) and w2 (OC, C/groups*kh*kw) of one float dtype; return (OH, OW)."""
    check_image(fn, x, "x")
    check_float(fn, w2, "w2")
    if w2.ndim != 2:
        raise ValueError(f"{fn}: w2 must be 2-D (OC, C/groups*kh*kw), got shape {w2.shape}")
    check_groups(fn, x.shape[1], w2.shape[0], groups)
    if w2.shape[1] != x.shape[1] // groups * kh * kw:
        raise ValueError(f"{fn}: w2 must have shape (out_channels, "
                         f"{x.shape[1] // groups * kh * kw}) = (OC, C/groups*kh*kw) for x "
                         f"{x.shape}, groups {groups} and a {kh}x{kw} kernel, got {w2.shape}")
    if w2.dtype != x.dtype:
        raise TypeError(f"{fn}: x is {x.dtype} but w2 is {w2.dtype}")
    return out_size(fn, x.shape, kh, kw, sh, sw, ph, pw, dh, dw)


def batchnorm_relu_forward_args(x, weight, bias, running_mean, running_var, training):
    """Check batchnorm_relu_forward's arguments; return m = N*H*W. Training checks as
    batchnorm_forward does; evaluation needs the running statistics and, normalising by
    them, allows a single value per channel."""
    fn = "batchnorm_relu_forward"
    vectors = dict(weight=weight, bias=bias, running_mean=running_mean,
                   running_var=running_var)
    if training:
        return check_batchnorm(fn, x, **vectors)
    if running_mean is None or running_var is None:
        raise ValueError(f"{fn}: evaluation (training=False) normalises by running_mean and "
                         f"running_var, which must both be given")
    check_image(fn, x, "x")
    for name, v in vectors.items():
        if v is not None:
            check_shape(fn, v, name, (x.shape[1],))
    return x.shape[0] * x.shape[2] * x.shape[3]


def batchnorm_relu_backward_args(grad_out, y, x, weight, mean, invstd, training):
    """Check batchnorm_relu_backward's arguments; return m = N*H*W."""
    fn = "batchnorm_relu_backward"
    check_image(fn, x, "x")
    for name, v in (("weight", weight), ("mean", mean), ("invstd", invstd)):
        check_shape(fn, v, name, (x.shape[1],))
    for name, a in (("grad_out", grad_out), ("y", y)):
        check_float(fn, a, name)
        check_shape(fn, a, name, x.shape)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    if training and m == 1:
        raise ValueError(f"{fn}: expected more than one value per channel in training "
                         f"mode, got x of shape {x.shape}")
    return m


def channel_affine_args(x, scale, shift):
    """Check channel_affine's arguments: x float (N, C, ...), scale and shift (C,) of x's
    dtype."""
    fn = "channel_affine"
    check_float(fn, x, "x")
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must have a channel axis, (N, C, ...), got shape {x.shape}")
    for name, v in (("scale", scale), ("shift", shift)):
        check_like(fn, v, name, (x.shape[1],), x, "x")
