"""Losses: cross-entropy on integer labels (mean reduction) and mean squared error."""
from tinyres.autograd import Function
from tinyres.backend import get_array_module
from tinyres.functional.activation import log_softmax
from tinyres.functional.math import mean
from tinyres.tensor import Tensor


class NLLLoss(Function):
    @staticmethod
    def forward(ctx, log_probs, target):
        n = log_probs.shape[0]
        xp = get_array_module(log_probs)
        ctx.target, ctx.shape = target, log_probs.shape
        if n == 0:      # the mean of no losses is NaN, as torch
            return xp.asarray(xp.nan, dtype=log_probs.dtype)
        picked = log_probs[xp.arange(n), target]
        return -picked.mean()

    @staticmethod
    def backward(ctx, grad_out):
        # d (-mean_i logp[i, t_i]) / d logp[i, t_i] = -1/N, 0 for the other classes
        # (an empty batch: an empty gradient)
        xp = get_array_module(grad_out)
        n = ctx.shape[0]
        grad = xp.zeros(ctx.shape, dtype=grad_out.dtype)
        if n:
            grad[xp.arange(n), ctx.target] = -grad_out / n
        return grad


def _labels(target, logits, op):
    t = target.array if isinstance(target, Tensor) else target
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class labels, got dtype {t.dtype}")
    if logits.ndim != 2 or t.shape != (logits.shape[0],):
        raise ValueError(f"{op}: expected input (N, C) and target (N,), got input "
                         f"{logits.shape} and target {tuple(t.shape)}")
    xp = get_array_module(t)
    if t.size and (int(xp.min(t)) < 0 or int(xp.max(t)) >= logits.shape[1]):
        raise ValueError(f"{op}: target labels must lie in [0, {logits.shape[1]}), got "
                         f"values from {int(xp.min(t))} to {int(xp.max(t))}")
    return t


def nll_loss(input, target):
    """Mean negative log-likelihood of integer labels, given log-probabilities (N, C)."""
    return NLLLoss.apply(input, target=_labels(target, input, "nll_loss"))


def cross_entropy(input, target):
    """Mean cross-entropy between logits (N, C) and integer labels (N,)."""
    labels = _labels(target, input, "cross_entropy")
    return NLLLoss.apply(log_softmax(input, dim=1), target=labels)


def mse_loss(input, target):
    """Mean of (input - target)^2; the shapes must match exactly (nothing is broadcast)."""
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input {input.shape} and target {target.shape} must "
                         "have the same shape")
    diff = input - target
    return mean(diff * diff)


