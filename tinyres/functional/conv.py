"""2-D convolution and its transpose, on the kernel layer of their input's device.

The kernels take the weight as the matrix w2 = weight.reshape(OC, C/groups*kh*kw), and every
one of them computes, for each group of channels,
    out[n, o] = w2[o] . (the window of x[n] under output pixel o), as a GEMM on columns
    grad_w2   = sum over images of grad_out[n] @ cols(x[n])^T
    grad_x    = col2im(w2^T @ grad_out): each window entry sends its gradient back
kernels/gemm_conv.py builds one im2col matrix for the whole batch and does one GEMM per
pass (the groups' GEMMs batched in one matmul: reference.py, and cpu.py for grouped
layers); kernels/nchw_conv.py (cuda.py) keeps the columns per image, its GEMMs batched
over the images and writing NCHW; kernels/cpu.py runs one GEMM per image (or per few small
images) in Numba's threads, straight into NCHW, 3x3 stride-1 "same" layers through
Winograd's F(2x2, 3x3) (kernels/winograd.py) for the output and grad_x, and their grad_w2
as dot products of shifted rows (kernels/weight_grad.py), where each pays (which runs for
a layer is kernels/conv_plan.py's conv_algorithm()). All of them are held to reference.py.

The transposed convolution is the adjoint of a convolution, so it needs no kernel of its
own: its output is the convolution's input gradient (GEMM + col2im), its input gradient is
the convolution's forward, and its weight gradient the convolution's weight gradient with
the roles of input and output swapped.
"""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.functional.pad import pad as pad_op
from tinyres.functional.shape import as_int
from tinyres.kernels import checks


class ConvShapeError(ValueError, RuntimeError):
    """Arguments a convolution cannot take. torch raises RuntimeError for these and tinyres
    has raised ValueError, so this is both: `except` either and it is caught."""


def pair(value, name, op):
    """(a, b) of Python ints from an int or a pair of them (NumPy integers count as
    ints); a non-integer is a TypeError, a negative or a wrong length a ValueError."""
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value, value)
    out = tuple(as_int(v, name, op) for v in values)
    if len(out) != 2 or min(out) < 0:
        raise ValueError(f"{op}: {name} must be an int or a pair of non-negative ints, "
                         f"got {value!r}")
    return out


def _geometry(value, name, op, smallest):
    """A pair of ints >= smallest (1 for stride and dilation, 0 for padding), with torch's
    error for a smaller one."""
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value, value)
    out = tuple(as_int(v, name, op) for v in values)
    if len(out) != 2:
        raise ConvShapeError(f"{op}: expected {name} to be an int or a pair, got {value!r}")
    if min(out) < smallest:
        kind = "negative" if smallest == 0 else "non-positive"
        raise ConvShapeError(f"{op}: {kind} {name} is not supported, got {value!r}")
    return out


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        oc, _, kh, kw = weight.shape
        w2 = weight.reshape(oc, -1)
        out = kernels_for(x).conv2d_forward(x, w2, kh, kw, *stride, *padding, *dilation, groups,
                                            bias)   # + bias[o] on every pixel of channel o
        ctx.save_for_backward(x, w2)
        ctx.geometry = weight.shape, stride + padding, dilation + (groups,)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d out/d w2 = cols^T, d out/d cols = w2^T, and col2im is the adjoint of im2col
        x, w2 = ctx.saved_tensors
        w_shape, window, spread = ctx.geometry
        grad_x, grad_w2 = kernels_for(x).conv2d_backward(
            grad_out, x, w2, *w_shape[2:], *window, ctx.needs_input_grad[0],
            ctx.needs_input_grad[1], *spread)
        grad_w = None if grad_w2 is None else grad_w2.reshape(w_shape)
        grad_b = grad_out.sum(axis=(0, 2, 3)) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class ConvTranspose2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, out_hw):
        # the convolution whose adjoint this is maps (N, C_out, *out_hw) to x (N, C_in, H, W)
        xp = get_array_module(x)
        cin, cout_g, kh, kw = weight.shape
        w2 = weight.reshape(cin, -1)
        out_shape = (x.shape[0], cout_g * groups) + out_hw
        kernels, window = kernels_for(x), (kh, kw) + stride + padding
        x_full = _grow_to(xp, x, checks.out_size("conv_transpose2d", out_shape, *window,
                                                  *dilation))
        # the input gradient reads only the shape of the convolution's input: zeros here
        out, _ = kernels.conv2d_backward(x_full, xp.zeros(out_shape, x.dtype), w2, *window,
                                         True, False, *dilation, groups)
        if bias is not None:
            out += bias.reshape(1, -1, 1, 1)
        ctx.save_for_backward(x, w2)
        ctx.geometry = weight.shape, window, dilation + (groups,)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # out = conv^T(x): d out/d x = conv (the forward), and the weight gradient is
        # conv's with input and output swapped
        x, w2 = ctx.saved_tensors
        xp, kernels = get_array_module(x), kernels_for(x)
        w_shape, window, spread = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.conv2d_forward(grad_out, w2, *window, *spread)
            grad_x = xp.ascontiguousarray(grad_x[:, :, :x.shape[2], :x.shape[3]])
        if ctx.needs_input_grad[1]:
            conv_hw = checks.out_size("conv_transpose2d", grad_out.shape, *window, *spread[:2])
            _, grad_w2 = kernels.conv2d_backward(_grow_to(xp, x, conv_hw), grad_out, w2,
                                                 *window, False, True, *spread)
            grad_w = grad_w2.reshape(w_shape)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(axis=(0, 2, 3))
        return grad_x, grad_w, grad_b


def _grow_to(xp, x, hw):
    """x with zero rows and columns added at the bottom and right up to hw = (H', W'): an
    output_padding of at least the stride gives the convolution one more output row than
    the transposed convolution has input rows."""
    extra_h, extra_w = hw[0] - x.shape[2], hw[1] - x.shape[3]
    if extra_h == 0 and extra_w == 0:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (0, extra_h), (0, extra_w)))


# ----- argument checks, with torch's messages ------------------------------------------
def _check_tensors(op, x, weight):
    if x.ndim != 4:
        raise ConvShapeError(f"{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
                             f"got shape {x.shape}")
    if weight.ndim != 4:
        raise ConvShapeError(f"{op}: expected a 4-D weight, got shape {weight.shape}")
    if weight.dtype != x.dtype:
        raise TypeError(f"{op}: dtype mismatch, input {x.dtype} and parameter {weight.dtype}")


def _check_bias(op, bias, weight, out_channels):
    if bias is None:
        return
    if bias.shape != (out_channels,):
        raise ConvShapeError(f"{op}: bias must have shape ({out_channels},) for a weight "
                             f"{weight.shape}, got {bias.shape}")
    if bias.dtype != weight.dtype:
        raise TypeError(f"{op}: dtype mismatch, input {weight.dtype} and parameter "
                        f"{bias.dtype}")


def _check_groups(op, x, weight, groups, transposed=False):
    groups = as_int(groups, "groups", op)
    if groups < 1:
        raise ConvShapeError(f"{op}: non-positive groups is not supported, got {groups}")
    if weight.shape[0] % groups:
        raise ConvShapeError(f"{op}: given groups={groups}, expected the weight "
                             f"{weight.shape} to be divisible by {groups} at dimension 0")
    expected = weight.shape[0] if transposed else weight.shape[1] * groups
    if x.shape[1] != expected:
        per = "" if transposed or groups == 1 else f" ({groups} groups of {weight.shape[1]})"
        raise ConvShapeError(f"{op}: the input {x.shape} has {x.shape[1]} channels but the "
                             f"weight {weight.shape} expects {expected}{per}")
    return groups


def _fits(op, x_shape, kernel, stride, padding, dilation):
    try:
        return checks.out_size(op, x_shape, *kernel, *stride, *padding, *dilation)
    except ValueError as err:
        raise ConvShapeError(str(err)) from None


def _same_padding(op, kernel, stride, dilation):
    """torch's padding='same': d*(k - 1) in all, half on each side, the odd one extra on
    the right (bottom) -> ((top, left), (extra bottom, extra right))."""
    if stride != (1, 1):
        raise ConvShapeError(f"{op}: padding='same' is not supported for strided "
                             f"convolutions, got stride {stride}")
    total = [d * (k - 1) for d, k in zip(dilation, kernel)]
    return tuple(t // 2 for t in total), tuple(t - 2 * (t // 2) for t in total)


def _unbatched(input, call):
    """torch takes an unbatched (C, H, W) input as a batch of one."""
    if input.ndim == 3:
        return call(input.unsqueeze(0)).squeeze(0)
    return call(input)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: input (N, C, H, W) or (C, H, W), weight
    (OC, C/groups, kh, kw); padding an int, a pair, 'valid' (none) or 'same' (stride 1:
    the output as large as the input, the odd extra row and column at the bottom right)."""
    op = "conv2d"
    stride = _geometry(stride, "stride", op, 1)
    dilation = _geometry(dilation, "dilation", op, 1)
    extra = (0, 0)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ConvShapeError(f"{op}: invalid padding string {padding!r}, expected "
                                 f"'same' or 'valid'")
        padding, extra = ((0, 0), (0, 0)) if padding == "valid" else \
            _same_padding(op, tuple(weight.shape[2:]), stride, dilation)
    else:
        padding = _geometry(padding, "padding", op, 0)

    def batched(x):
        _check_tensors(op, x, weight)
        g = _check_groups(op, x, weight, groups)
        _check_bias(op, bias, weight, weight.shape[0])
        if extra != (0, 0):
            x = pad_op(x, (0, extra[1], 0, extra[0]))
        _fits(op, x.shape, weight.shape[2:], stride, padding, dilation)
        return Conv2d.apply(x, weight, bias, stride=stride, padding=padding,
                            dilation=dilation, groups=g)
    return _unbatched(input, batched)


def transposed_out_size(in_hw, kernel, stride, padding, output_padding, dilation):
    """(OH, OW) of a transposed convolution: (H - 1)*s - 2*p + d*(k - 1) + output_padding + 1."""
    return tuple((h - 1) * s - 2 * p + d * (k - 1) + o + 1 for h, k, s, p, o, d in
                 zip(in_hw, kernel, stride, padding, output_padding, dilation))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """torch.nn.functional.conv_transpose2d: input (N, C_in, H, W) or (C_in, H, W), weight
    (C_in, C_out/groups, kh, kw) -> (N, C_out, OH, OW), the adjoint of conv2d with the same
    stride, padding, dilation and groups; output_padding (smaller than the stride or the
    dilation) adds rows and columns at the bottom right."""
    op = "conv_transpose2d"
    stride = _geometry(stride, "stride", op, 1)
    dilation = _geometry(dilation, "dilation", op, 1)
    padding = _geometry(padding, "padding", op, 0)
    output_padding = _geometry(output_padding, "output_padding", op, 0)
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        raise ConvShapeError(f"{op}: output padding must be smaller than either stride or "
                             f"dilation, got output_padding {output_padding}, stride "
                             f"{stride}, dilation {dilation}")

    def batched(x):
        _check_tensors(op, x, weight)
        g = _check_groups(op, x, weight, groups, transposed=True)
        _check_bias(op, bias, weight, weight.shape[1] * g)
        out_hw = transposed_out_size(x.shape[2:], weight.shape[2:], stride, padding,
                                     output_padding, dilation)
        if min(out_hw) < 1:
            raise ConvShapeError(f"{op}: given input size per channel {tuple(x.shape[2:])}, "
                                 f"the calculated output size per channel {out_hw} is too "
                                 f"small")
        return ConvTranspose2d.apply(x, weight, bias, stride=stride, padding=padding,
                                     dilation=dilation, groups=g, out_hw=out_hw)
    return _unbatched(input, batched)
