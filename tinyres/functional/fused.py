"""Fused ops, tinyres's own (PyTorch has no such names): batch_norm_relu is
relu(batch_norm(...)) as one op, so that the batch-normalised values are written once,
already rectified, and the backward reads the gradient once.

    y = F.batch_norm_relu(x, running_mean, running_var, weight, bias, training, momentum, eps)

Forward: the batch statistics (training), then one pass writing
y = max((x - mean)*invstd*weight + bias, 0). Backward: one reduction over the gradient
masked by y > 0 and x, then one pass writing grad_x. The ReLU's mask is read from the
output y, so y and x are all that is saved (the unfused pair saves x and the ReLU's
output too). The kernels are batchnorm_relu_forward/backward of the three layers.

conv2d_batch_norm is batch norm in training of a convolution's output (then the ReLU), one
op, for models/bn_relu.py's conv_bn: the kernel layer's conv2d_batchnorm_forward, whose
CPU version takes the batch statistics from the moments the convolution's cores compute
of each output plane while it is in cache, instead of a pass over the output. Its backward
is batch norm's (batch_norm_relu's), then the convolution's: the two nodes' backwards in
turn, the same kernels on the same arrays.
"""
import numbers

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.functional.norm import _check_bn_args, _data, _nchw_and_affine
from tinyres.tensor import Tensor


class BatchNormReLU(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        x4, w, b = _nchw_and_affine(x, weight, bias)
        y, mean, invstd = kernels_for(x).batchnorm_relu_forward(
            x4, w, b, running_mean, running_var, momentum, eps, training)
        ctx.save_for_backward(y, x4, w, mean, invstd)
        ctx.training = training
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        # d relu(bn(x))/dx = bn'(x)^T applied to 1[y > 0] * grad_out (the mask read from y;
        # bn' depends on the batch statistics in training, is w*invstd in evaluation)
        y, x4, w, mean, invstd = ctx.saved_tensors
        grad_x, grad_w, grad_b = kernels_for(x4).batchnorm_relu_backward(
            grad_out.reshape(x4.shape), y, x4, w, mean, invstd, ctx.training)
        return (grad_x.reshape(grad_out.shape),
                grad_w if ctx.needs_input_grad[1] else None,
                grad_b if ctx.needs_input_grad[2] else None)


def _check_momentum(momentum):
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"batch_norm_relu: momentum must be a float, got "
                        f"{type(momentum).__name__} (nn.BatchNorm2d(momentum=None) turns "
                        f"its cumulative average into a float for each call)")


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5):
    """relu(batch_norm(input, running_mean, running_var, weight, bias, training, momentum,
    eps)) as one op, tinyres-only (not a PyTorch name): the same values, gradients, running
    statistics updated in place (training) and errors as the pair, by one fused kernel.
    Inputs (N, C), (N, C, L) or (N, C, H, W)."""
    _check_bn_args(input, running_mean, running_var, weight, bias, training,
                   op="batch_norm_relu")
    _check_momentum(momentum)
    out = BatchNormReLU.apply(input, weight, bias, running_mean=_data(running_mean),
                              running_var=_data(running_var), training=bool(training),
                              momentum=float(momentum), eps=eps)
    if training:
        for stat in (running_mean, running_var):   # updated in place by the kernel
            if isinstance(stat, Tensor) and input.shape[0]:
                stat._version_counter.value += 1
    return out


class ConvBatchNorm(Function):
    @staticmethod
    def forward(ctx, x, conv_weight, weight, bias, stride, padding, dilation, groups,
                running_mean, running_var, momentum, eps, relu):
        oc, _, kh, kw = conv_weight.shape
        w2 = conv_weight.reshape(oc, -1)
        xp = get_array_module(x)
        w = weight if weight is not None else xp.ones(oc, dtype=x.dtype)   # affine=False
        b = bias if bias is not None else xp.zeros(oc, dtype=x.dtype)
        out, y, mean, invstd = kernels_for(x).conv2d_batchnorm_forward(
            x, w2, kh, kw, *stride, *padding, *dilation, groups, w, b, running_mean,
            running_var, momentum, eps, relu)
        ctx.save_for_backward(x, w2, out, w, mean, invstd, *((y,) if relu else ()))
        ctx.geometry = conv_weight.shape, stride + padding, dilation + (groups,)
        ctx.relu = relu
        return y

    @staticmethod
    def backward(ctx, grad_out):
        # y = bn(out) or relu(bn(out)), out = conv(x): batch norm's gradient (after the
        # ReLU's mask 1[y > 0]) reaches out, then the convolution's takes it to x and w2
        x, w2, out, w, mean, invstd, *y = ctx.saved_tensors
        kernels = kernels_for(x)
        if ctx.relu:
            grad_conv, grad_w, grad_b = kernels.batchnorm_relu_backward(
                grad_out, y[0], out, w, mean, invstd, True)
        else:
            grad_conv, grad_w, grad_b = kernels.batchnorm_backward(grad_out, out, w, mean,
                                                                   invstd)
        w_shape, window, spread = ctx.geometry
        need_x, need_conv_w = ctx.needs_input_grad[:2]
        grad_x = grad_conv_w = None
        if need_x or need_conv_w:
            grad_x, grad_w2 = kernels.conv2d_backward(grad_conv, x, w2, *w_shape[2:], *window,
                                                      need_x, need_conv_w, *spread)
            grad_conv_w = None if grad_w2 is None else grad_w2.reshape(w_shape)
        return (grad_x, grad_conv_w, grad_w if ctx.needs_input_grad[2] else None,
                grad_b if ctx.needs_input_grad[3] else None)


def conv2d_batch_norm(input, conv_weight, running_mean, running_var, weight, bias, stride,
                      padding, dilation, groups, momentum, eps, relu=False):
    """batch_norm(conv2d(input, conv_weight, None, stride, padding, dilation, groups),
    running_mean, running_var, weight, bias, True, momentum, eps), then relu where relu is
    True, as one op, tinyres-only (models/bn_relu.py's conv_bn calls it): the same values,
    gradients and running statistics (updated in place) as the ops in turn. input a 4-D
    Tensor; stride, padding and dilation pairs of ints, as nn.Conv2d keeps them; the kernel
    layer checks the shapes before anything runs."""
    _check_momentum(momentum)
    out = ConvBatchNorm.apply(input, conv_weight, weight, bias, stride=tuple(stride),
                              padding=tuple(padding), dilation=tuple(dilation), groups=groups,
                              running_mean=_data(running_mean),
                              running_var=_data(running_var), momentum=float(momentum),
                              eps=eps, relu=bool(relu))
    for stat in (running_mean, running_var):       # updated in place by the kernel
        if isinstance(stat, Tensor) and input.shape[0]:
            stat._version_counter.value += 1
    return out
