"""2-D convolution as im2col + one GEMM per pass.

Forward:   cols = im2col(x)                    (C*kh*kw, N*OH*OW): every window a column
           out  = W2 @ cols                    (OC, N*OH*OW), W2 = weight.reshape(OC, -1)
Backward:  grad_W2   = g2 @ cols^T             g2 = grad_out as (OC, N*OH*OW)
           grad_cols = W2^T @ g2               then grad_x = col2im(grad_cols)
The whole batch sits side by side in the columns, so each pass is one large GEMM (a
GEMM per sample would pay BLAS's thread start-up N times). The columns are k*k times the
size of x, so backward rebuilds them from x instead of keeping them alive in the graph.
A 1x1 stride-1 unpadded convolution needs no im2col: x with its channels first is its cols.
"""
from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for


def pair(value, name, op):
    """(a, b) from an int or a pair, checked to be non-negative ints."""
    out = (value, value) if isinstance(value, int) else tuple(value)
    if len(out) != 2 or not all(isinstance(v, int) and v >= 0 for v in out):
        raise ValueError(f"{op}: {name} must be an int or a pair of non-negative ints, "
                         f"got {value!r}")
    return out


def channels_first(a):
    """(N, C, H, W) -> (C, N*H*W), contiguous: the layout of the columns."""
    n, c = a.shape[:2]
    return get_array_module(a).ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(c, -1)


def batch_first(a2, n, h, w):
    """(C, N*H*W) -> (N, C, H, W), contiguous: back to NCHW."""
    c = a2.shape[0]
    return get_array_module(a2).ascontiguousarray(a2.reshape(c, n, h, w).transpose(1, 0, 2, 3))


def columns(x, kh, kw, stride, padding):
    """The im2col matrix of x (C*kh*kw, N*OH*OW), and the output size (OH, OW)."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return channels_first(x), (h, w)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return kernels_for(x).im2col(x, kh, kw, sh, sw, ph, pw), (oh, ow)


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        oc, _, kh, kw = weight.shape
        cols, (oh, ow) = columns(x, kh, kw, stride, padding)
        w2 = weight.reshape(oc, -1)
        out = batch_first(w2 @ cols, x.shape[0], oh, ow)
        if bias is not None:
            out += bias.reshape(1, oc, 1, 1)
        ctx.save_for_backward(x, w2)
        ctx.geometry = weight.shape, stride, padding
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d out/d W2 = cols^T, d out/d cols = W2^T, and col2im is the adjoint of im2col
        x, w2 = ctx.saved_tensors
        w_shape, stride, padding = ctx.geometry
        kh, kw = w_shape[2:]
        g2 = channels_first(grad_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_cols = w2.T @ g2
            if (kh, kw, *stride, *padding) == (1, 1, 1, 1, 0, 0):
                grad_x = batch_first(grad_cols, *(x.shape[:1] + x.shape[2:]))
            else:
                grad_x = kernels_for(grad_cols).col2im(grad_cols, x.shape, kh, kw,
                                                       *stride, *padding)
        if ctx.needs_input_grad[1]:
            cols, _ = columns(x, kh, kw, stride, padding)     # rebuilt, not kept
            grad_w = (g2 @ cols.T).reshape(w_shape)
        if ctx.needs_input_grad[2]:
            grad_b = g2.sum(axis=1)
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
