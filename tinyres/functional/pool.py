"""Pooling: max (on the kernel layer), average (im2col and a mean), adaptive average."""
from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.functional.conv import pair
from tinyres.kernels import checks
from tinyres.kernels.gemm_conv import batch_first, channels_first, columns
from tinyres.functional.math import mean


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


def adaptive_avg_pool2d(input, output_size):
    """Average to an (oh, ow) grid. Output 1 is the global average pool of a ResNet;
    larger outputs must divide the input (then it is an avg_pool2d with stride = kernel)."""
    if input.ndim != 4:
        raise ValueError(f"adaptive_avg_pool2d: expected a 4-D input, got {input.shape}")
    oh, ow = pair(output_size, "output_size", "adaptive_avg_pool2d")
    h, w = input.shape[2:]
    if (oh, ow) == (1, 1):
        return mean(input, dim=(2, 3), keepdim=True)
    if oh < 1 or ow < 1 or h % oh or w % ow:
        raise NotImplementedError(f"adaptive_avg_pool2d: output size {(oh, ow)} must divide "
                                  f"the input size {(h, w)}")
    return avg_pool2d(input, (h // oh, w // ow))
