"""Activations: relu (on the kernel layer), the smooth and piecewise ones (sigmoid, tanh,
gelu, silu, leaky_relu, elu, hardswish, hardsigmoid, relu6, logsigmoid), softmax and
log_softmax. Each is a Function, forward and backward side by side; the `inplace=True`
forms compute the same Function and write the result into the input
(functional/inplace.py). Dropout lives in dropout.py."""
import math
import warnings

import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.functional.shape import _dim


def _erf(x):
    """The error function, elementwise, from SciPy (NumPy) or cupyx (CuPy)."""
    if get_array_module(x) is np:
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return erf(x)


def _sigmoid(x):
    """1 / (1 + exp(-x)); exp(-x) may overflow to inf for very negative x, giving 0."""
    xp = get_array_module(x)
    with np.errstate(over="ignore"):
        return (1 / (1 + xp.exp(-x))).astype(x.dtype, copy=False)


class ReLU(Function):
    @staticmethod
    def forward(ctx, x, out=None):
        # out: the array to write into (relu_ passes the input's own memory: its backward
        # reads only the output, so the recorded in-place form needs no second buffer)
        out = kernels_for(x).relu_forward(x, out=out)
        ctx.save_for_backward(out)          # out > 0 exactly where x > 0
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d relu/dx = 1[x > 0]: 0 at x = 0, and 1 at a NaN (as torch: zero where x <= 0),
        # read from the output, which is <= 0 or NaN exactly where x is
        (out,) = ctx.saved_tensors
        return kernels_for(out).relu_backward(grad_out, out)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        out = _sigmoid(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d sigmoid/dx = s (1 - s)
        (out,) = ctx.saved_tensors
        return grad_out * out * (1 - out)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        out = get_array_module(x).tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d tanh/dx = 1 - tanh^2
        (out,) = ctx.saved_tensors
        return grad_out * (1 - out * out)


class LogSigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        # log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)): no overflow for any x
        xp = get_array_module(x)
        ctx.save_for_backward(x)
        return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))

    @staticmethod
    def backward(ctx, grad_out):
        # d log sigmoid/dx = 1 - sigmoid(x) = sigmoid(-x)
        (x,) = ctx.saved_tensors
        return grad_out * _sigmoid(-x)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class GELU(Function):
    @staticmethod
    def forward(ctx, x, approximate):
        xp = get_array_module(x)
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        if approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
            return 0.5 * x * (1 + xp.tanh(inner))
        return 0.5 * x * (1 + _erf(x * (1 / math.sqrt(2.0))))

    @staticmethod
    def backward(ctx, grad_out):
        # d gelu/dx = Phi(x) + x phi(x) (exact); with tanh: 0.5 (1 + t) + 0.5 x (1 - t^2) u'
        (x,) = ctx.saved_tensors
        xp = get_array_module(x)
        if ctx.approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return grad_out * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        cdf = 0.5 * (1 + _erf(x * (1 / math.sqrt(2.0))))
        pdf = xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return grad_out * (cdf + x * pdf)


class SiLU(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * _sigmoid(x)

    @staticmethod
    def backward(ctx, grad_out):
        # d (x sigmoid(x))/dx = s (1 + x (1 - s))
        (x,) = ctx.saved_tensors
        s = _sigmoid(x)
        return grad_out * s * (1 + x * (1 - s))


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, negative_slope):
        ctx.save_for_backward(x)
        ctx.slope = negative_slope
        return get_array_module(x).where(x > 0, x, x * negative_slope)

    @staticmethod
    def backward(ctx, grad_out):
        # d leaky_relu/dx = 1 for x > 0, negative_slope for x <= 0 (as torch)
        (x,) = ctx.saved_tensors
        return get_array_module(x).where(x > 0, grad_out, grad_out * ctx.slope)


class ELU(Function):
    @staticmethod
    def forward(ctx, x, alpha):
        xp = get_array_module(x)
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))

    @staticmethod
    def backward(ctx, grad_out):
        # d elu/dx = 1 for x > 0, alpha exp(x) for x <= 0
        (x,) = ctx.saved_tensors
        xp = get_array_module(x)
        return xp.where(x > 0, grad_out, grad_out * ctx.alpha * xp.exp(xp.minimum(x, 0)))


class Hardswish(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * get_array_module(x).clip(x + 3, 0, 6) / 6

    @staticmethod
    def backward(ctx, grad_out):
        # d hardswish/dx = 0 below -3, x/3 + 1/2 on [-3, 3], 1 above 3 (torch's edges)
        (x,) = ctx.saved_tensors
        xp = get_array_module(x)
        zero = grad_out.dtype.type(0)
        return xp.where(x < -3, zero, xp.where(x <= 3, grad_out * (x / 3 + 0.5), grad_out))


class Hardsigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).clip(x + 3, 0, 6) / 6

    @staticmethod
    def backward(ctx, grad_out):
        # d hardsigmoid/dx = 1/6 strictly inside (-3, 3), 0 elsewhere; torch's 1/6 is the
        # float32 one in every dtype, and so is this one
        (x,) = ctx.saved_tensors
        return grad_out * ((x > -3) & (x < 3)) * x.dtype.type(np.float32(1) / np.float32(6))


class ReLU6(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).clip(x, 0, 6)

    @staticmethod
    def backward(ctx, grad_out):
        # d relu6/dx = 1 strictly inside (0, 6), 0 elsewhere (torch's hardtanh edges)
        (x,) = ctx.saved_tensors
        return grad_out * ((x > 0) & (x < 6))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        xp = get_array_module(x)
        with np.errstate(over="ignore"):    # -huge - huge is -inf, whose exp is 0
            shifted = x - x.max(axis=dim, keepdims=True)    # the largest logit becomes 0
        out = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d log_softmax/dx = g - softmax * sum(g)
        (out,) = ctx.saved_tensors
        xp = get_array_module(out)
        return grad_out - xp.exp(out) * grad_out.sum(axis=ctx.dim, keepdims=True)


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        xp = get_array_module(x)
        with np.errstate(over="ignore"):    # -huge - huge is -inf, whose exp is 0
            e = xp.exp(x - x.max(axis=dim, keepdims=True))
        out = e / e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d softmax/dx = s * (g - sum(g * s))
        (out,) = ctx.saved_tensors
        return out * (grad_out - (grad_out * out).sum(axis=ctx.dim, keepdims=True))


# ----- the public functions ------------------------------------------------------------
def _maybe_inplace(x, inplace, name, compute):
    """compute(x), or with inplace=True the same written into x (as torch's name_)."""
    if inplace:
        from tinyres.functional.inplace import apply_inplace
        return apply_inplace(x, name + "_", compute)
    return compute(x)


def relu(input, inplace=False):
    """max(input, 0); with inplace=True, written into input (PyTorch's rules:
    functional/inplace.py)."""
    if inplace:
        from tinyres.functional.inplace import relu_
        return relu_(input)
    if input.dtype.kind in "iu":   # integers have no gradient: max(x, 0) as it is, as torch
        from tinyres.tensor import Tensor
        return Tensor(get_array_module(input.array).maximum(input.array, input.dtype.type(0)))
    if input.dtype.kind == "b":
        raise RuntimeError("relu: Boolean inputs not supported for relu")
    return ReLU.apply(input)


def _as_float(x):
    from tinyres.tensor import get_default_dtype
    return x if x.dtype.kind == "f" else x.to(dtype=get_default_dtype())


def sigmoid(input):
    """1 / (1 + exp(-x)); integer tensors give the default float dtype, as torch."""
    return Sigmoid.apply(_as_float(input))


def tanh(input):
    """The hyperbolic tangent; integer tensors give the default float dtype, as torch."""
    return Tanh.apply(_as_float(input))


def logsigmoid(input):
    """log(sigmoid(x)), computed without overflow for large |x|."""
    return LogSigmoid.apply(input)


def gelu(input, approximate="none"):
    """x * Phi(x) (Phi the standard normal CDF); approximate='tanh' is the tanh formula."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(input, approximate=approximate)


def silu(input, inplace=False):
    """x * sigmoid(x) (swish)."""
    return _maybe_inplace(input, inplace, "silu", SiLU.apply)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x for x > 0, negative_slope * x otherwise."""
    return _maybe_inplace(input, inplace, "leaky_relu",
                          lambda x: LeakyReLU.apply(x, negative_slope=negative_slope))


def elu(input, alpha=1.0, inplace=False):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    return _maybe_inplace(input, inplace, "elu", lambda x: ELU.apply(x, alpha=alpha))


def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6."""
    return _maybe_inplace(input, inplace, "hardswish", Hardswish.apply)


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6."""
    return _maybe_inplace(input, inplace, "hardsigmoid", Hardsigmoid.apply)


def relu6(input, inplace=False):
    """min(max(x, 0), 6)."""
    return _maybe_inplace(input, inplace, "relu6", ReLU6.apply)


def _softmax_dim(dim, x, op):
    """dim, or torch's legacy implicit choice (0 for 0-, 1- and 3-D inputs, else 1) with
    torch's deprecation warning when dim is None."""
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {op} has been deprecated. Change the "
                      "call to include dim=X as an argument.", UserWarning, stacklevel=3)
        dim = 0 if x.ndim in (0, 1, 3) else 1
    return _dim(dim, x.ndim, op)


def _cast_for(x, dtype):
    if dtype is None:
        return x
    from tinyres.functional.math import cast
    return cast(x, dtype)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x) / sum(exp(x)) along dim, with the maximum subtracted first (no overflow).
    _stacklevel is torch's positional third argument, accepted and unused."""
    dim = _softmax_dim(dim, input, "softmax")
    return Softmax.apply(_cast_for(input, dtype), dim=dim)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """x - logsumexp(x) along dim, with the maximum subtracted first (no overflow)."""
    dim = _softmax_dim(dim, input, "log_softmax")
    return LogSoftmax.apply(_cast_for(input, dtype), dim=dim)
