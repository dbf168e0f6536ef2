"""Losses with torch's signatures, reductions ('mean', 'sum', 'none') and weighting rules.

nll_loss is one Function (forward and backward below); cross_entropy is log_softmax then
nll_loss, plus label smoothing and class-probability targets composed of differentiable
ops; binary_cross_entropy is a Function (torch's clamp of the logs at -100 and its
backward); the rest (with_logits, mse, l1, smooth_l1, huber, kl_div) are composed of
differentiable ops, which gives their gradients.

Value checks (class targets within [0, C), binary_cross_entropy's input within [0, 1])
read nothing on a GPU: the check runs there and its result is read at the next host read
(loss.item(), .numpy(), ...) or at tinyres.cuda.check_pending(), where the error is raised
(backend.defer_check) -- as torch's device-side asserts surface at the next
synchronisation. On the CPU the error is raised at the call, as torch raises it.
"""
import warnings

import numpy as np

from tinyres.autograd import Function
from tinyres import backend
from tinyres.backend import get_array_module
from tinyres.functional import math as M
from tinyres.functional.activation import log_softmax, logsigmoid
from tinyres.tensor import Tensor

REDUCTIONS = ("none", "mean", "sum")


def _array(t):
    return t.array if isinstance(t, Tensor) else t


def reduction_of(op, reduction, size_average=None, reduce=None):
    """The reduction, checked; the deprecated size_average/reduce pair wins when given, as
    torch's _Reduction.legacy_get_string (with its warning)."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "mean" if size_average and reduce else "sum" if reduce else "none"
        warnings.warn(f"size_average and reduce args will be deprecated, please use "
                      f"reduction='{reduction}' instead.", UserWarning, stacklevel=3)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: {reduction} is not a valid value for reduction (expected "
                         f"'none', 'mean' or 'sum')")
    return reduction


def _reduce(loss, reduction):
    if reduction == "mean":
        return M.mean(loss)
    return M.sum(loss) if reduction == "sum" else loss


# ----- negative log-likelihood of class indices ----------------------------------------
class NLLLoss(Function):
    @staticmethod
    def forward(ctx, log_probs, target, weight, ignore_index, reduction):
        """log_probs (N, C, *d), target (N, *d) of class indices."""
        xp = get_array_module(log_probs)
        valid = target != ignore_index
        # clipped: a bad target whose check is deferred reads a real class meanwhile
        safe = xp.clip(xp.where(valid, target, 0), 0, log_probs.shape[1] - 1)[:, None]
        w = valid.astype(log_probs.dtype)
        if weight is not None:
            w = w * weight[safe[:, 0]]
        losses = -w * xp.take_along_axis(log_probs, safe, axis=1)[:, 0]
        ctx.safe, ctx.w, ctx.valid = safe, w, valid
        ctx.shape, ctx.reduction = log_probs.shape, reduction
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        ctx.total = w.sum()       # the weights of the targets not ignored; 0/0 is NaN
        with np.errstate(invalid="ignore", divide="ignore"):
            return xp.asarray(losses.sum() / ctx.total, dtype=log_probs.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        # d loss_i / d logp[i, t_i] = -w[t_i] (over the total weight for 'mean'); 0 elsewhere
        # and at ignored targets (even when the total is 0, as torch)
        xp = get_array_module(grad_out)
        coef = -ctx.w * grad_out
        if ctx.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                coef = xp.where(ctx.valid, coef / ctx.total, 0)
        classes = xp.arange(ctx.shape[1]).reshape((1, -1) + (1,) * (len(ctx.shape) - 2))
        return ((classes == ctx.safe) * coef[:, None]).astype(grad_out.dtype, copy=False)


def _class_weight(op, weight, c):
    if weight is None:
        return None
    if tuple(weight.shape) != (c,):
        raise RuntimeError(f"{op}: weight tensor should be defined either for all {c} classes "
                           f"or no classes but got weight tensor of shape: "
                           f"{list(weight.shape)}")
    return weight


def _check_target_shape(op, input, t):
    """torch's shape rules for class-index targets of an input (C,), (N, C) or (N, C, *d)."""
    if input.ndim == 1:
        if t.ndim != 0:
            raise RuntimeError(f"{op}: 0D target tensor expected for an input of shape "
                               f"{input.shape}, got target of shape {tuple(t.shape)}")
        return
    if t.ndim == 0 or t.shape[0] != input.shape[0]:
        raise ValueError(f"{op}: Expected input batch_size ({input.shape[0]}) to match target "
                         f"batch_size ({t.shape[0] if t.ndim else 0}): input {input.shape}, "
                         f"target {tuple(t.shape)}")
    if input.ndim == 2 and t.ndim != 1:
        raise RuntimeError(f"{op}: 0D or 1D target tensor expected, multi-target not "
                           f"supported: input {input.shape}, target {tuple(t.shape)}")
    expected = (input.shape[0],) + tuple(input.shape[2:])
    if tuple(t.shape) != expected:
        raise RuntimeError(f"{op}: Expected target size {list(expected)}, got "
                           f"{list(t.shape)} (input {input.shape})")


def class_indices(op, input, target, ignore_index):
    """The target's array, checked as torch checks class indices: integer dtype, shape
    (N, *d) for an input (N, C, *d), values in [0, C) unless equal to ignore_index."""
    t = _array(target)
    if t.dtype.kind not in "iub":
        raise RuntimeError(f"{op}: expected target dtype to be Long or Byte (class indices), "
                           f"but got {t.dtype}")
    if input.ndim == 0:
        raise ValueError(f"{op}: the input must have a class dimension, got a 0-d tensor")
    _check_target_shape(op, input, t)
    c = input.shape[0 if input.ndim == 1 else 1]
    xp = get_array_module(t)
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if t.size and backend.defers(t):
        _defer_target_check(op, t, bad, c)
    elif t.size and bool(bad.any()):
        raise _target_error(op, int(t[bad].ravel()[0]), c)
    return xp.asarray(t, dtype=np.int64)


CHECKED_OPS = ("nll_loss", "cross_entropy")


def _target_error(op, value, c):
    return IndexError(f"{op}: Target {value} is out of bounds (classes 0 to {c - 1})")


def _defer_target_check(op, t, bad, c):
    """The class-target check on the device: a record [failed, first bad target, C, op]
    read later (backend.defer_check), nothing read now."""
    xp = get_array_module(t)
    flat = bad.ravel()
    first = xp.take(t.ravel(), xp.argmax(flat)).astype(np.int64)
    record = xp.stack([flat.any().astype(np.int64), first, xp.full((), c, dtype=np.int64),
                       xp.full((), CHECKED_OPS.index(op), dtype=np.int64)])
    backend.defer_check("class target", record,
                        lambda v: _target_error(CHECKED_OPS[v[3]], v[1], v[2]))


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of class indices, given log-probabilities (N, C, *d) (or
    (C,) with a 0-d target). The weighted mean divides by the summed weights of the
    targets that are not ignore_index."""
    reduction = reduction_of("nll_loss", reduction, size_average, reduce)
    t = class_indices("nll_loss", input, target, ignore_index)
    return _nll_of_checked(input, t, weight, ignore_index, reduction)


def _nll_of_checked(input, t, weight, ignore_index, reduction):
    """nll_loss of targets class_indices has already checked."""
    single = input.ndim == 1
    c = input.shape[0 if single else 1]
    w = _array(_class_weight("nll_loss", weight, c))
    if single:
        input, t = input.reshape(1, c), t.reshape(1)
    out = NLLLoss.apply(input, target=t, weight=w, ignore_index=ignore_index,
                        reduction=reduction)
    return out.reshape(()) if single and reduction == "none" else out


# ----- cross-entropy -------------------------------------------------------------------
def _class_shape(input):
    """Shape that broadcasts a (C,) vector along the class dim of input."""
    return (-1,) + (1,) * (input.ndim - 2) if input.ndim > 1 else (-1,)


def _smoothing_term(logp, t, weight, ignore_index, reduction):
    """torch's label-smoothing term for class indices: -sum_c w_c logp_c per position,
    0 at ignored positions; its mean divides by the same total as nll_loss's."""
    class_dim = 1 if logp.ndim > 1 else 0
    weighted = logp if weight is None else logp * weight.reshape(_class_shape(logp))
    xp = get_array_module(t)
    keep = t != ignore_index
    smooth = M.where(Tensor(keep), -M.sum(weighted, dim=class_dim), 0.0)
    if reduction == "none":
        return smooth
    total = M.sum(smooth)
    if reduction == "sum":
        return total
    # the denominator stays on the device: no read of the targets here
    denom = keep.sum() if weight is None else xp.where(
        keep, _array(weight)[xp.clip(xp.where(keep, t, 0), 0, weight.shape[0] - 1)], 0).sum()
    denom = denom.astype(np.float64)
    with np.errstate(divide="ignore"):       # all ignored: NaN, as torch
        scale = xp.where(denom != 0, 1.0 / denom, np.nan).astype(total.dtype)
    return total * Tensor(scale)


def _probability_targets(op, input, target, weight, reduction, label_smoothing):
    """torch's cross-entropy against class probabilities (a float target of the input's
    shape): -sum_c w_c t_c logp_c per position; 'mean' divides by the number of
    positions (N * d1 * ...), whatever the weights."""
    if not isinstance(target, Tensor):
        target = Tensor(target)
    class_dim = 1 if input.ndim > 1 else 0
    c = input.shape[class_dim]
    logp = log_softmax(input, dim=class_dim)
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / c
    terms = logp * target
    if weight is not None:
        terms = terms * weight.reshape(_class_shape(input))
    losses = -M.sum(terms, dim=class_dim)
    if reduction == "mean":
        return M.sum(losses) / (input.numel() // c) if input.numel() else M.mean(losses)
    return _reduce(losses, reduction)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """Cross-entropy between logits (N, C, *d) (or (C,)) and class indices (N, *d) or
    class probabilities (a float target of the input's shape), as torch: log_softmax then
    nll_loss, with (1 - eps) * nll + eps / C * (the smoothing term) for label_smoothing
    eps; the smoothing term is composed of differentiable ops."""
    op = "cross_entropy"
    reduction = reduction_of(op, reduction, size_average, reduce)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"{op}: label_smoothing must be between 0.0 and 1.0. Got: "
                           f"{label_smoothing}")
    t = _array(target)
    c = input.shape[1 if input.ndim > 1 else 0] if input.ndim else 0
    weight = _class_weight(op, weight, c)
    if t.dtype.kind == "f" and tuple(t.shape) == tuple(input.shape):
        return _probability_targets(op, input, target, weight, reduction, label_smoothing)
    t = class_indices(op, input, t, ignore_index)
    logp = log_softmax(input, dim=1 if input.ndim > 1 else 0)
    nll = _nll_of_checked(logp, t, weight, ignore_index, reduction)
    if label_smoothing == 0:
        return nll
    smooth = _smoothing_term(logp, t, weight, ignore_index, reduction)
    return nll * (1 - label_smoothing) + smooth * (label_smoothing / c)


# ----- binary cross-entropy ------------------------------------------------------------
class BinaryCrossEntropy(Function):
    @staticmethod
    def forward(ctx, x, t, weight):
        xp = get_array_module(x)
        with np.errstate(divide="ignore"):
            log_x = xp.maximum(xp.log(x), -100)          # torch clamps both logs at -100
            log_1mx = xp.maximum(xp.log(1 - x), -100)
        loss = -(t * log_x + (1 - t) * log_1mx)
        ctx.save_for_backward(x, t, weight, log_x, log_1mx)
        return loss if weight is None else loss * weight

    @staticmethod
    def backward(ctx, grad_out):
        # d/dx = w (x - t) / max(x (1 - x), 1e-12) (torch's); d/dt = w (log(1-x) - log x)
        x, t, weight, log_x, log_1mx = ctx.saved_tensors
        xp = get_array_module(x)
        g = grad_out if weight is None else grad_out * weight
        grad_x = g * (x - t) / xp.maximum((1 - x) * x, 1e-12)
        grad_t = g * (log_1mx - log_x) if ctx.needs_input_grad[1] else None
        return grad_x.astype(x.dtype, copy=False), grad_t, None


def _same_shape(op, input, target):
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"{op}: Using a target size {tuple(target.shape)} that is different "
                         f"to the input size {tuple(input.shape)} is not supported; please "
                         "ensure they have the same size")


def _check_probabilities(op, x):
    """binary_cross_entropy's input must lie in [0, 1] (NaN passes, as in torch)."""
    if not x.size:
        return
    outside = ((x < 0) | (x > 1)).any()

    def make_error(_):
        return RuntimeError(f"{op}: all elements of input should be between 0 and 1")
    if backend.defers(x):
        backend.defer_check("probability input", outside.astype(np.int64).reshape(1),
                            make_error)
    elif bool(outside):
        raise make_error(None)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """-w (t log x + (1 - t) log(1 - x)) for probabilities x in [0, 1], each log clamped
    at -100 as torch; weight broadcasts to the input's shape."""
    op = "binary_cross_entropy"
    reduction = reduction_of(op, reduction, size_average, reduce)
    _same_shape(op, input, target)
    _check_probabilities(op, input.array)
    if weight is not None:
        try:
            np.broadcast_to(np.empty(tuple(weight.shape)), input.shape)
        except ValueError:
            raise RuntimeError(f"{op}: weight of shape {tuple(weight.shape)} does not "
                               f"broadcast to the input's shape {input.shape}") from None
        weight = M.cast(weight, input.dtype).expand(*input.shape)
    loss = BinaryCrossEntropy.apply(input, M.cast(target, input.dtype), weight)
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None):
    """-w (p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))), from logits without
    overflow (log sigmoid from its stable Function, the rest composed); pos_weight p
    broadcasts along the last (class) dim."""
    op = "binary_cross_entropy_with_logits"
    reduction = reduction_of(op, reduction, size_average, reduce)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"{op}: Target size {tuple(target.shape)} must be the same as input "
                         f"size {tuple(input.shape)}")
    target = M.cast(target, input.dtype)
    positive = target * logsigmoid(input)
    if pos_weight is not None:
        positive = positive * pos_weight
    loss = -(positive + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


# ----- regression losses ---------------------------------------------------------------
def _pointwise(op, input, target, reduction, size_average, reduce, weight, elementwise):
    """reduce(elementwise(input - target)), optionally weighted (the weighted mean divides
    by the summed weights, as torch). Input and target must have one shape."""
    reduction = reduction_of(op, reduction, size_average, reduce)
    if not isinstance(target, Tensor) or tuple(input.shape) != tuple(target.shape):
        shape = tuple(target.shape) if hasattr(target, "shape") else type(target).__name__
        raise ValueError(f"{op}: input {input.shape} and target {shape} must have the same "
                         "shape (tinyres does not broadcast them)")
    loss = elementwise(input - target)
    if weight is None:
        return _reduce(loss, reduction)
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError(f"{op}: Weights and input must have the same size, got "
                         f"{tuple(weight.shape)} and {input.shape}")
    loss = loss * weight
    return M.sum(loss) / M.sum(weight) if reduction == "mean" else _reduce(loss, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """(input - target)^2, reduced; the shapes must match exactly (nothing is broadcast)."""
    return _pointwise("mse_loss", input, target, reduction, size_average, reduce, weight,
                      lambda d: d * d)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """|input - target|, reduced."""
    return _pointwise("l1_loss", input, target, reduction, size_average, reduce, weight,
                      M.abs)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (l1 when beta = 0)."""
    if beta < 0:
        raise RuntimeError(f"smooth_l1_loss: beta must be non-negative, got {beta}")

    def elementwise(d):
        if beta == 0:
            return M.abs(d)
        size = M.abs(d)
        return M.where(size < beta, d * d * (0.5 / beta), size - 0.5 * beta)
    return _pointwise("smooth_l1_loss", input, target, reduction, size_average, reduce, None,
                      elementwise)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere."""
    def elementwise(d):
        size = M.abs(d)
        return M.where(size < delta, d * d * 0.5, (size - 0.5 * delta) * delta)
    return _pointwise("huber_loss", input, target, reduction, None, None, weight, elementwise)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """target * (log target - input) with input log-probabilities (0 where target = 0);
    'batchmean' divides the sum by the batch size; 'mean' by every element (torch warns)."""
    op = "kl_div"
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size.'batchmean' divides only by the batch size, and aligns "
                      "with the KL div math definition.'mean' will be changed to behave the "
                      "same as 'batchmean' in the next major release.", UserWarning,
                      stacklevel=2)
    if reduction != "batchmean":
        reduction = reduction_of(op, reduction, size_average, reduce)
    if log_target:
        loss = M.exp(target) * (target - input)
    else:
        positive = target > 0
        loss = M.where(positive, target * M.log(M.where(positive, target, 1.0)), 0.0) \
            - target * input
    if reduction == "batchmean":
        return M.sum(loss) / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction)
