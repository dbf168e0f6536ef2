"""Batch normalisation: batch statistics in training (on the kernel layer), running
statistics in evaluation. Inputs (N, C), (N, C, L) or (N, C, H, W)."""
from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.tensor import Tensor


def _as_nchw(shape):
    """The 4-D shape the kernels see: (N, C) -> (N, C, 1, 1), (N, C, L) -> (N, C, L, 1)."""
    return tuple(shape) + (1,) * (4 - len(shape))


class BatchNormTrain(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        xp = get_array_module(x)
        x4 = x.reshape(_as_nchw(x.shape))
        c = x.shape[1]
        w = weight if weight is not None else xp.ones(c, dtype=x.dtype)
        b = bias if bias is not None else xp.zeros(c, dtype=x.dtype)
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


class BatchNormEval(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps):
        # y = (x - mean)*invstd*w + b = x*scale + shift: one multiply and one add per element
        xp = get_array_module(x)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        invstd = (1.0 / xp.sqrt(var + eps)).astype(x.dtype)
        scale = invstd if weight is None else weight * invstd
        shift = -mean * scale if bias is None else bias - mean * scale
        ctx.save_for_backward(x, mean, invstd, scale)
        ctx.shape = shape
        y = x * scale.reshape(shape)
        y += shift.reshape(shape)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        # fixed statistics: d y/dx = w*invstd, d y/dw = xhat = (x - mean)*invstd, d y/db = 1
        x, mean, invstd, scale = ctx.saved_tensors
        axes = (0,) + tuple(range(2, grad_out.ndim))
        grad_w = (grad_out * (x - mean.reshape(ctx.shape))).sum(axis=axes) * invstd
        return grad_out * scale.reshape(ctx.shape), grad_w, grad_out.sum(axis=axes)


def _data(t):
    return t.array if isinstance(t, Tensor) else t


def _check_bn_args(x, running_mean, running_var, weight, bias, training):
    op = "batch_norm"
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
