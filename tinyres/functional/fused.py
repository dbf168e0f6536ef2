"""Fused ops, tinyres's own (PyTorch has no such names): batch_norm_relu is
relu(batch_norm(...)) as one op, so that the batch-normalised values are written once,
already rectified, and the backward reads the gradient once.

    y = F.batch_norm_relu(x, running_mean, running_var, weight, bias, training, momentum, eps)

Forward: the batch statistics (training), then one pass writing
y = max((x - mean)*invstd*weight + bias, 0). Backward: one reduction over the gradient
masked by y > 0 and x, then one pass writing grad_x. The ReLU's mask is read from the
output y, so y and x are all that is saved (the unfused pair saves x and the ReLU's
output too). The kernels are batchnorm_relu_forward/backward of the three layers.
"""
import numbers

from tinyres.autograd import Function
from tinyres.backend import kernels_for
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
