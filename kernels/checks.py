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


def out_size(fn, x_shape, kh, kw, sh, sw, ph, pw):
    """(OH, OW) of a kh x kw window sliding with stride (sh, sw) over padding (ph, pw)."""
    if len(x_shape) != 4:
        raise ValueError(f"{fn}: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{fn}: expected kernel and stride >= 1 and padding >= 0, got "
                         f"kernel ({kh}, {kw}), stride ({sh}, {sw}), padding ({ph}, {pw})")
    h, w = x_shape[2], x_shape[3]
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{fn}: a ({kh}, {kw}) kernel with padding ({ph}, {pw}) does not "
                         f"fit an input of shape {tuple(x_shape)}; expected "
                         f"H + 2*ph >= kh and W + 2*pw >= kw")
    return oh, ow


def check_pool_padding(fn, kh, kw, ph, pw):
    """Raise ValueError unless the padding is at most half the kernel (as PyTorch)."""
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{fn}: padding ({ph}, {pw}) must be at most half the kernel "
                         f"({kh}, {kw}), so that no window lies wholly in the padding")


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
    n, c, h, w = x.shape
    for name, v in per_channel.items():
        if v is not None:
            check_shape(fn, v, name, (c,))
    m = n * h * w
    if m == 1:     # m == 0 (an empty batch) is allowed: empty output, stats untouched
        raise ValueError(f"{fn}: expected more than one value per channel in training "
                         f"mode, got x of shape {x.shape}")
    return m



def im2col_args(x, kh, kw, sh, sw, ph, pw):
    """Check im2col's arguments; return (OH, OW)."""
    check_image("im2col", x, "x")
    return out_size("im2col", x.shape, kh, kw, sh, sw, ph, pw)


def col2im_args(cols, x_shape, kh, kw, sh, sw, ph, pw):
    """Check col2im's arguments; return (N, C, H, W, OH, OW)."""
    check_float("col2im", cols, "cols")
    n, c, h, w = (int(s) for s in x_shape)
    oh, ow = out_size("col2im", (n, c, h, w), kh, kw, sh, sw, ph, pw)
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


def relu_backward_args(grad_out, x):
    """Check relu_backward's arguments."""
    check_float("relu_backward", grad_out, "grad_out")
    check_shape("relu_backward", x, "x", grad_out.shape)


def maxpool_forward_args(x, kh, kw, sh, sw, ph, pw):
    """Check maxpool_forward's arguments; return (OH, OW)."""
    check_image("maxpool_forward", x, "x")
    check_pool_padding("maxpool_forward", kh, kw, ph, pw)
    return out_size("maxpool_forward", x.shape, kh, kw, sh, sw, ph, pw)


def maxpool_backward_args(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw, check_index=True):
    """Check maxpool_backward's arguments; return (N, C, H, W, OH, OW). `check_index`
    also checks the range of idx (a reduction: the GPU launcher skips it)."""
    check_float("maxpool_backward", grad_out, "grad_out")
    n, c, h, w = (int(s) for s in x_shape)
    check_pool_padding("maxpool_backward", kh, kw, ph, pw)
    oh, ow = out_size("maxpool_backward", (n, c, h, w), kh, kw, sh, sw, ph, pw)
    check_shape("maxpool_backward", grad_out, "grad_out", (n, c, oh, ow))
    check_shape("maxpool_backward", idx, "idx", (n, c, oh, ow))
    if check_index:
        check_pool_index("maxpool_backward", idx, h * w)
    return n, c, h, w, oh, ow


def conv2d_forward_args(x, w2, kh, kw, sh, sw, ph, pw):
    """Check conv2d_forward's arguments; return (OH, OW)."""
    return check_conv2d("conv2d_forward", x, w2, kh, kw, sh, sw, ph, pw)


def conv2d_backward_args(grad_out, x, w2, kh, kw, sh, sw, ph, pw):
    """Check conv2d_backward's arguments; return (OH, OW)."""
    oh, ow = check_conv2d("conv2d_backward", x, w2, kh, kw, sh, sw, ph, pw)
    check_float("conv2d_backward", grad_out, "grad_out")
    check_shape("conv2d_backward", grad_out, "grad_out", (x.shape[0], w2.shape[0], oh, ow))
    return oh, ow


def check_conv2d(fn, x, w2, kh, kw, sh, sw, ph, pw):
    """x (N, C, H, W) and w2 (OC, C*kh*kw) of one float dtype; return (OH, OW)."""
    check_image(fn, x, "x")
    check_float(fn, w2, "w2")
    if w2.ndim != 2 or w2.shape[1] != x.shape[1] * kh * kw:
        raise ValueError(f"{fn}: w2 must have shape (out_channels, {x.shape[1] * kh * kw}) "
                         f"= (OC, C*kh*kw) for x {x.shape} and a {kh}x{kw} kernel, "
                         f"got {w2.shape}")
    if w2.dtype != x.dtype:
        raise TypeError(f"{fn}: x is {x.dtype} but w2 is {w2.dtype}")
    return out_size(fn, x.shape, kh, kw, sh, sw, ph, pw)
