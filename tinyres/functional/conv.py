"""2-D convolution as im2col + one GEMM (per sample, straight into NCHW).

Forward:   cols = im2col(x)                    (N, C*kh*kw, OH*OW)
           out  = W2 @ cols                    (N, OC, OH*OW), W2 = weight.reshape(OC, -1)
Backward:  grad_W2   = sum_n grad_out[n] @ cols[n]^T
           grad_cols = W2^T @ grad_out         then grad_x = col2im(grad_cols)
A 1x1 stride-1 unpadded convolution needs no im2col: x.reshape(N, C, H*W) is its cols.
"""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for


def pair(value, name, op):
    """(a, b) from an int or a pair, checked to be non-negative ints."""
    out = (value, value) if isinstance(value, int) else tuple(value)
    if len(out) != 2 or not all(isinstance(v, int) and v >= 0 for v in out):
        raise ValueError(f"{op}: {name} must be an int or a pair of non-negative ints, "
                         f"got {value!r}")
    return out


def batched_matmul(a, b):
    """a @ b[n] for every n, a 2-D and b 3-D, as a (N, rows(a), cols(b)) array.

    NumPy's matmul does not reach BLAS when one operand is broadcast over the batch (its
    batch stride is 0), so on the CPU each sample gets its own GEMM, written in place;
    CuPy's matmul runs one strided-batched cuBLAS GEMM.
    """
    xp = get_array_module(b)
    if xp is not np:
        return xp.matmul(a, b)
    out = np.empty((b.shape[0], a.shape[0], b.shape[2]), dtype=b.dtype)
    for n in range(b.shape[0]):
        np.matmul(a, b[n], out=out[n])
    return out


def weight_gradient(g, cols):
    """sum_n g[n] @ cols[n]^T: the gradient of W2 in out[n] = W2 @ cols[n]."""
    xp = get_array_module(g)
    if xp is not np:
        return xp.matmul(g, cols.transpose(0, 2, 1)).sum(axis=0)
    total = g[0] @ cols[0].T
    for n in range(1, g.shape[0]):
        total += g[n] @ cols[n].T
    return total


def _is_pointwise(kh, kw, stride, padding):
    return (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0)


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        n, c, h, w = x.shape
        oc, _, kh, kw = weight.shape
        (sh, sw), (ph, pw) = stride, padding
        if _is_pointwise(kh, kw, stride, padding):
            cols = x.reshape(n, c, h * w)
            oh, ow = h, w
        else:
            cols = kernels_for(x).im2col(x, kh, kw, sh, sw, ph, pw)
            oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        w2 = weight.reshape(oc, -1)
        out = batched_matmul(w2, cols).reshape(n, oc, oh, ow)
        if bias is not None:
            out += bias.reshape(1, oc, 1, 1)
        ctx.save_for_backward(cols, w2)
        ctx.geometry = x.shape, weight.shape, stride, padding
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d out/d W2 = cols^T (summed over the batch), d out/d cols = W2^T, col2im undoes im2col
        cols, w2 = ctx.saved_tensors
        x_shape, w_shape, (sh, sw), (ph, pw) = ctx.geometry
        n, oc = grad_out.shape[:2]
        g = grad_out.reshape(n, oc, -1)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_cols = batched_matmul(w2.T, g)
            kh, kw = w_shape[2:]
            if _is_pointwise(kh, kw, (sh, sw), (ph, pw)):
                grad_x = grad_cols.reshape(x_shape)
            else:
                grad_x = kernels_for(grad_cols).col2im(grad_cols, x_shape, kh, kw,
                                                       sh, sw, ph, pw)
        if ctx.needs_input_grad[1]:
            grad_w = weight_gradient(g, cols).reshape(w_shape)
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(axis=(0, 2))
        return grad_x, grad_w, grad_b


def _check_conv_args(x, weight, bias, stride, padding):
    op = "conv2d"
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D weight (out_channels, in_channels, kh, kw), "
                         f"got shape {weight.shape}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: the input {x.shape} has {x.shape[1]} channels but the "
                         f"weight {weight.shape} expects {weight.shape[1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},) for a weight "
                         f"{weight.shape}, got {bias.shape}")
    for t in (weight, bias):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{op}: dtype mismatch, input {x.dtype} and parameter {t.dtype}")
    if min(stride) < 1:
        raise ValueError(f"{op}: stride must be at least 1, got {stride}")
    kh, kw = weight.shape[2:]
    h, w = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if h < kh or w < kw:
        raise ValueError(f"{op}: the padded input is {h}x{w} ({x.shape} with padding "
                         f"{padding}), smaller than the kernel {kh}x{kw}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d for dilation 1 and groups 1."""
    if dilation not in (1, (1, 1)) or groups != 1:
        raise NotImplementedError(f"conv2d: only dilation=1 and groups=1 are supported, got "
                                  f"dilation={dilation}, groups={groups}")
    stride, padding = pair(stride, "stride", "conv2d"), pair(padding, "padding", "conv2d")
    _check_conv_args(input, weight, bias, stride, padding)
    return Conv2d.apply(input, weight, bias, stride=stride, padding=padding)
