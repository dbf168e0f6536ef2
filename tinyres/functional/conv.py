"""2-D convolution, on the kernel layer of its input's device.

The kernels take the weight as the matrix w2 = weight.reshape(OC, C*kh*kw), and every one
of them computes
    out[n, o] = w2[o] . (the window of x[n] under output pixel o), as a GEMM on columns
    grad_w2   = sum over images of grad_out[n] @ cols(x[n])^T
    grad_x    = col2im(w2^T @ grad_out): each window entry sends its gradient back
kernels/gemm_conv.py builds one im2col matrix for the whole batch and does one GEMM per
pass (reference.py, cuda.py); kernels/cpu.py runs one GEMM per image (or per few small
images) in Numba's threads, straight into NCHW, 3x3 stride-1 "same" layers through
Winograd's F(2x2, 3x3) (kernels/winograd.py) for the output and grad_x, and their grad_w2
as dot products of shifted rows (kernels/weight_grad.py), where each pays (which runs for
a layer is kernels/conv_plan.py's conv_algorithm()). All of them are held to reference.py.
"""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import kernels_for
from tinyres.functional.shape import as_int
from tinyres.kernels import checks


def pair(value, name, op):
    """(a, b) of Python ints from an int or a pair of them (NumPy integers count as
    ints); a non-integer is a TypeError, a negative or a wrong length a ValueError."""
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value, value)
    out = tuple(as_int(v, name, op) for v in values)
    if len(out) != 2 or min(out) < 0:
        raise ValueError(f"{op}: {name} must be an int or a pair of non-negative ints, "
                         f"got {value!r}")
    return out


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        oc, _, kh, kw = weight.shape
        w2 = weight.reshape(oc, -1)
        out = kernels_for(x).conv2d_forward(x, w2, kh, kw, *stride, *padding)
        if bias is not None:
            out += bias.reshape(1, oc, 1, 1)
        ctx.save_for_backward(x, w2)
        ctx.geometry = weight.shape, stride, padding
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d out/d w2 = cols^T, d out/d cols = w2^T, and col2im is the adjoint of im2col
        x, w2 = ctx.saved_tensors
        w_shape, stride, padding = ctx.geometry
        grad_x, grad_w2 = kernels_for(x).conv2d_backward(
            grad_out, x, w2, *w_shape[2:], *stride, *padding,
            need_x=ctx.needs_input_grad[0], need_w=ctx.needs_input_grad[1])
        grad_w = None if grad_w2 is None else grad_w2.reshape(w_shape)
        grad_b = grad_out.sum(axis=(0, 2, 3)) if ctx.needs_input_grad[2] else None
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
    checks.out_size(op, x.shape, *weight.shape[2:], *stride, *padding)   # the kernels' own


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d for dilation 1 and groups 1."""
    if dilation not in (1, (1, 1)) or groups != 1:
        raise NotImplementedError(f"conv2d: only dilation=1 and groups=1 are supported, got "
                                  f"dilation={dilation}, groups={groups}")
    stride, padding = pair(stride, "stride", "conv2d"), pair(padding, "padding", "conv2d")
    _check_conv_args(input, weight, bias, stride, padding)
    return Conv2d.apply(input, weight, bias, stride=stride, padding=padding)
