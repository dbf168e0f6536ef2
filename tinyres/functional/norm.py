"""Normalisation. Batch norm: batch statistics in training (on the kernel layer), running
statistics in evaluation; inputs (N, C), (N, C, L) or (N, C, H, W). Layer, group and
instance norm: each sample by its own statistics (one Standardize Function, then the
affine part composed of mul and add)."""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.tensor import Tensor


def _as_nchw(shape):
    """The 4-D shape the kernels see: (N, C) -> (N, C, 1, 1), (N, C, L) -> (N, C, L, 1)."""
    return tuple(shape) + (1,) * (4 - len(shape))


def _nchw_and_affine(x, weight, bias):
    """x as (N, C, L, 1) (see _as_nchw), and the affine weight and bias: ones and zeros of
    x's dtype where they are None (affine=False)."""
    xp, c = get_array_module(x), x.shape[1]
    w = weight if weight is not None else xp.ones(c, dtype=x.dtype)
    b = bias if bias is not None else xp.zeros(c, dtype=x.dtype)
    return x.reshape(_as_nchw(x.shape)), w, b


class BatchNormTrain(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        x4, w, b = _nchw_and_affine(x, weight, bias)
        y, mean, invstd = kernels_for(x).batchnorm_forward(
            x4, w, b, running_mean, running_var, momentum, eps)
        ctx.save_for_backward(x4, w, mean, invstd)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        # d y/dx = w*invstd/m * (m - 1 - xhat*xhat) along a channel (batch stats depend on x)
        x4, w, mean, invstd = ctx.saved_tensors
        grad_x, grad_w, grad_b = kernels_for(x4).batchnorm_backward(
            grad_out.reshape(x4.shape), x4, w, mean, invstd)
        return (grad_x.reshape(grad_out.shape),
                grad_w if ctx.needs_input_grad[1] else None,
                grad_b if ctx.needs_input_grad[2] else None)


def eval_affine(weight, bias, mean, var, eps, dtype):
    """(invstd, scale, shift) of batch norm in evaluation, arrays (C,) of dtype:
    y = (x - mean)*invstd*weight + bias = x*scale + shift, one multiply and one add per
    element (BatchNormEval; a convolution's epilogue in models/bn_relu.py's conv_bn)."""
    xp = get_array_module(mean)
    invstd = (1.0 / xp.sqrt(var + eps)).astype(dtype)
    scale = invstd if weight is None else weight * invstd
    shift = -mean * scale if bias is None else bias - mean * scale
    return invstd, scale, shift


class BatchNormEval(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps):
        # y = (x - mean)*invstd*w + b = x*scale + shift: one multiply and one add per element
        shape = (1, -1) + (1,) * (x.ndim - 2)
        invstd, scale, shift = eval_affine(weight, bias, mean, var, eps, x.dtype)
        ctx.save_for_backward(x, mean, invstd, scale)
        ctx.shape = shape
        return kernels_for(x).channel_affine(x, scale, shift)

    @staticmethod
    def backward(ctx, grad_out):
        # fixed statistics: d y/dx = w*invstd, d y/dw = xhat = (x - mean)*invstd, d y/db = 1
        x, mean, invstd, scale = ctx.saved_tensors
        axes = (0,) + tuple(range(2, grad_out.ndim))
        grad_w = (grad_out * (x - mean.reshape(ctx.shape))).sum(axis=axes) * invstd
        return grad_out * scale.reshape(ctx.shape), grad_w, grad_out.sum(axis=axes)


def _data(t):
    return t.array if isinstance(t, Tensor) else t


def _check_bn_args(x, running_mean, running_var, weight, bias, training, op="batch_norm"):
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{op}: expected input of 2, 3 or 4 dims (N, C, ...), got {x.shape}")
    c = x.shape[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if v is not None and tuple(v.shape) != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},) for an input {x.shape} "
                             f"with {c} channels, got {tuple(v.shape)}")
        if v is not None and v.dtype != x.dtype:
            raise TypeError(f"{op}: {name} is {v.dtype} but the input is {x.dtype}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: evaluation mode needs running_mean and running_var")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """torch.nn.functional.batch_norm. In training, batch statistics normalise the input
    and the running statistics (when given) are updated in place, with the unbiased
    variance; in evaluation the running statistics normalise it."""
    _check_bn_args(input, running_mean, running_var, weight, bias, training)
    if training:
        out = BatchNormTrain.apply(input, weight, bias, running_mean=_data(running_mean),
                                   running_var=_data(running_var), momentum=momentum, eps=eps)
        for stat in (running_mean, running_var):   # updated in place by the kernel
            if isinstance(stat, Tensor) and input.shape[0]:
                stat._version_counter.value += 1
        return out
    return BatchNormEval.apply(input, weight, bias, mean=_data(running_mean),
                               var=_data(running_var), eps=eps)


# ----- layer, group and instance norm: each sample normalised by its own statistics ----
class Standardize(Function):
    @staticmethod
    def forward(ctx, x, axes, eps):
        xp = get_array_module(x)
        centred = x - x.mean(axis=axes, keepdims=True)
        var = (centred * centred).mean(axis=axes, keepdims=True)      # biased, as torch
        invstd = (1 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
        xhat = centred * invstd
        ctx.save_for_backward(xhat, invstd)
        ctx.axes = axes
        return xhat

    @staticmethod
    def backward(ctx, grad_out):
        # d xhat/dx = invstd * (g - mean(g) - xhat * mean(g * xhat)) over the normalised axes
        xhat, invstd = ctx.saved_tensors
        axes = ctx.axes
        return invstd * (grad_out - grad_out.mean(axis=axes, keepdims=True)
                         - xhat * (grad_out * xhat).mean(axis=axes, keepdims=True))


def _affine(x, weight, bias, shape):
    """x * weight + bias, the parameters reshaped to broadcast as `shape` (composed ops)."""
    if weight is not None:
        x = x * weight.reshape(shape)
    if bias is not None:
        x = x + bias.reshape(shape)
    return x


def _check_param(op, name, value, shape):
    if value is not None and tuple(value.shape) != tuple(shape):
        raise RuntimeError(f"{op}: expected {name} of shape {list(shape)}, got "
                           f"{list(value.shape)}")


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last len(normalized_shape) dims of each sample, then scale and
    shift elementwise by weight and bias (of shape normalized_shape). Standardize is a
    Function; the affine part is composed of mul and add."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else \
        tuple(int(n) for n in normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise RuntimeError(f"layer_norm: Given normalized_shape={list(shape)}, expected input "
                           f"with shape [*, {', '.join(map(str, shape))}], but got input of "
                           f"size{list(input.shape)}")
    _check_param("layer_norm", "weight", weight, shape)
    _check_param("layer_norm", "bias", bias, shape)
    axes = tuple(range(input.ndim - k, input.ndim))
    return _affine(Standardize.apply(input, axes=axes, eps=eps), weight, bias, shape)


def _channel_shape(x):
    return (-1,) + (1,) * (x.ndim - 2)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Split the C channels of (N, C, *) into num_groups groups, normalise each group of
    each sample over its channels and positions, then scale and shift per channel."""
    if input.ndim < 2 or input.shape[1] % num_groups:
        raise RuntimeError(f"group_norm: Expected number of channels in input to be "
                           f"divisible by num_groups, but got input of shape "
                           f"{list(input.shape)} and num_groups={num_groups}")
    c = input.shape[1]
    _check_param("group_norm", "weight", weight, (c,))
    _check_param("group_norm", "bias", bias, (c,))
    grouped = input.reshape(input.shape[0], num_groups, -1)
    out = Standardize.apply(grouped, axes=(2,), eps=eps).reshape(input.shape)
    return _affine(out, weight, bias, _channel_shape(input))


def _update_instance_stats(x, running_mean, running_var, momentum):
    """torch's rule: the running statistics move towards the batch average of each
    instance's mean and unbiased variance over its positions."""
    axes = tuple(range(2, x.ndim))
    count = int(np.prod(x.shape[2:]))
    arr = x.array
    mean = arr.mean(axis=axes).mean(axis=0)
    var = arr.var(axis=axes, ddof=1 if count > 1 else 0).mean(axis=0)
    for stat, value in ((running_mean, mean), (running_var, var)):
        stat.array[...] = (1 - momentum) * stat.array + momentum * value
        stat._version_counter.value += 1


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Normalise each channel of each sample (N, C, *) over its positions; with
    use_input_stats=False, by the running statistics instead (batch_norm's evaluation).
    Running statistics that are given are updated in place when use_input_stats."""
    if input.ndim < 3:
        raise ValueError(f"instance_norm: expected an input (N, C, *) with at least one "
                         f"spatial dim, got shape {input.shape}")
    c = input.shape[1]
    for name, value in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                        ("running_var", running_var)):
        _check_param("instance_norm", name, value, (c,))
    if not use_input_stats:
        return batch_norm(input if input.ndim <= 4 else input.reshape(input.shape[:3] + (-1,)),
                          running_mean, running_var, weight, bias, False, momentum,
                          eps).reshape(input.shape)
    if int(np.prod(input.shape[2:])) <= 1:
        raise ValueError(f"instance_norm: Expected more than 1 spatial element when "
                         f"training, got input size {list(input.shape)}")
    if running_mean is not None and running_var is not None:
        _update_instance_stats(input, running_mean, running_var, momentum)
    out = Standardize.apply(input, axes=tuple(range(2, input.ndim)), eps=eps)
    return _affine(out, weight, bias, _channel_shape(input))


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """x / max(||x||_p, eps) along dim (composed of differentiable ops; a zero vector's
    gradient is not defined here, unlike torch's, which masks it)."""
    from tinyres.functional import math as M
    size = M.sum(M.abs(input) ** p, dim=dim, keepdim=True) ** (1.0 / p)
    return input / M.clamp(size, min=eps)
