"""Synchronised batch norm: batch statistics over the whole global batch, every rank's part.

Forward reduces, per channel over the ranks, the sum and the count (the global mean), then
the sum of squared deviations from that mean (the variance in two passes, as single-process
batch norm computes it: E[x^2] - mean^2 in one pass would cancel catastrophically in float32
when the mean is large next to the spread), so every rank normalises by the statistics of
the global batch; backward reduces the two sums
the input gradient needs (sum of dy, sum of dy * xhat). The weight and bias gradients stay
local sums: DistributedDataParallel averages them with the others. With group=None the
statistics are this process's own (plain batch norm, written the same way).
"""
from tinyres.autograd import Function
from tinyres.backend import get_array_module
from tinyres.distributed.errors import ReduceOp
from tinyres.functional.norm import _check_bn_args


def _reduced(group, parts, what):
    """Concatenate `parts` and sum them over the group's ranks (as they are without one)."""
    xp = get_array_module(parts[0])
    flat = xp.concatenate([xp.reshape(p, -1) for p in parts])
    if group is not None:
        group.allreduce(flat, ReduceOp.SUM, what=what).wait()
    return flat


class SyncBatchNormTrain(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, group):
        xp = get_array_module(x)
        c, axes = x.shape[1], (0,) + tuple(range(2, x.ndim))
        shape = (1, c) + (1,) * (x.ndim - 2)
        local_count = xp.full(1, x.size // c, dtype=x.dtype)
        sums = _reduced(group, [x.sum(axis=axes), local_count],
                        "SyncBatchNorm's forward all_reduce (sums)")
        count = float(sums[c])
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got "
                             f"input size {x.shape} on this rank ({count:g} over all ranks)")
        mean = sums[:c] / count
        centred = x - mean.reshape(shape)
        var = _reduced(group, [(centred * centred).sum(axis=axes)],
                       "SyncBatchNorm's forward all_reduce (squared deviations)") / count
        invstd = 1 / xp.sqrt(var + eps)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * (count / (count - 1))       # unbiased
        xhat = centred * invstd.reshape(shape)
        w = weight if weight is not None else xp.ones(c, dtype=x.dtype)
        b = bias if bias is not None else xp.zeros(c, dtype=x.dtype)
        ctx.save_for_backward(xhat, w, invstd)
        ctx.count, ctx.group, ctx.axes, ctx.shape = count, group, axes, shape
        return xhat * w.reshape(shape) + b.reshape(shape)

    @staticmethod
    def backward(ctx, grad_out):
        # dx = w*invstd * (dy - sum(dy)/m - xhat*sum(dy*xhat)/m), sums over the global batch
        xhat, w, invstd = ctx.saved_tensors
        c, shape = xhat.shape[1], ctx.shape
        sum_dy = grad_out.sum(axis=ctx.axes)
        sum_dy_xhat = (grad_out * xhat).sum(axis=ctx.axes)
        totals = _reduced(ctx.group, [sum_dy, sum_dy_xhat], "SyncBatchNorm's backward all_reduce")
        mean_dy = (totals[:c] / ctx.count).reshape(shape)
        mean_dy_xhat = (totals[c:] / ctx.count).reshape(shape)
        grad_x = (w * invstd).reshape(shape) * (grad_out - mean_dy - xhat * mean_dy_xhat)
        return (grad_x.astype(grad_out.dtype, copy=False),
                sum_dy_xhat if ctx.needs_input_grad[1] else None,
                sum_dy if ctx.needs_input_grad[2] else None)


def sync_batch_norm(input, running_mean, running_var, weight, bias, momentum, eps, group):
    """Training-mode batch norm with statistics summed over `group` (a process group of
    tinyres.distributed, or None for this process alone); running statistics, when given,
    are updated in place."""
    _check_bn_args(input, running_mean, running_var, weight, bias, True)
    out = SyncBatchNormTrain.apply(
        input, weight, bias, running_mean=None if running_mean is None else running_mean.array,
        running_var=None if running_var is None else running_var.array, momentum=momentum,
        eps=eps, group=group)
    for stat in (running_mean, running_var):
        if stat is not None:
            stat._version_counter.value += 1
    return out
