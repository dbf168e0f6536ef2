"""Activations: relu (on the kernel layer), sigmoid, tanh, softmax, log_softmax, dropout."""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.functional.shape import _dim


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        out = kernels_for(x).relu_forward(x)
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
        xp = get_array_module(x)
        with np.errstate(over="ignore"):
            out = (1 / (1 + xp.exp(-x))).astype(x.dtype)
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


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        xp = get_array_module(x)
        shifted = x - x.max(axis=dim, keepdims=True)
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


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, keep):
        ctx.keep = keep   # the mask, already scaled by 1 / (1 - p)
        return x * keep

    @staticmethod
    def backward(ctx, grad_out):
        # d (x * mask / (1 - p))/dx = mask / (1 - p)
        return grad_out * ctx.keep


def relu(x, inplace=False):
    """max(x, 0); with inplace=True, written into x (PyTorch's rules: functional/inplace.py)."""
    if inplace:
        from tinyres.functional.inplace import relu_
        return relu_(x)
    if x.dtype.kind in "iu":       # integers have no gradient: max(x, 0) as it is, as torch
        from tinyres.tensor import Tensor
        return Tensor(get_array_module(x.array).maximum(x.array, x.dtype.type(0)))
    if x.dtype.kind == "b":
        raise RuntimeError("relu: Boolean inputs not supported for relu")
    return ReLU.apply(x)


def _as_float(x):
    from tinyres.tensor import get_default_dtype
    return x if x.dtype.kind == "f" else x.to(dtype=get_default_dtype())


def sigmoid(x):
    """1 / (1 + exp(-x)); integer tensors give the default float dtype, as torch."""
    return Sigmoid.apply(_as_float(x))


def tanh(x):
    """The hyperbolic tangent; integer tensors give the default float dtype, as torch."""
    return Tanh.apply(_as_float(x))


def softmax(x, dim):
    return Softmax.apply(x, dim=_dim(dim, x.ndim, "softmax"))


def log_softmax(x, dim):
    return LogSoftmax.apply(x, dim=_dim(dim, x.ndim, "log_softmax"))


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1 / (1 - p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    xp = get_array_module(x.array)
    mask = np.random.random_sample(x.shape) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    keep = xp.asarray(mask * scale, dtype=x.dtype)
    return Dropout.apply(x, keep=keep)
