"""Gradient clipping, as torch.nn.utils's: in place on each parameter's .grad.

    total = || (||g_1||_p, ||g_2||_p, ...) ||_p          over the parameters with a grad
    g_i = g_i * min(1, max_norm / (total + 1e-6))          (clip_grad_norm_)
    g_i = clamp(g_i, -clip_value, clip_value)              (clip_grad_value_)

Deep plain networks are where gradients explode; a ResNet's shortcuts keep them tamer,
which clipping the same run with and without shortcuts makes visible.
"""
import math

import numpy as np

from tinyres.backend import get_array_module
from tinyres.tensor import Tensor


def _as_list(tensors):
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _vector_norm(xp, array, norm_type):
    """||array||_p of the flattened array, as torch.linalg.vector_norm."""
    a = xp.abs(array.reshape(-1))
    if norm_type == math.inf:
        return a.max() if a.size else xp.zeros((), dtype=array.dtype)
    if norm_type == -math.inf:
        return a.min()
    if norm_type == 0:
        return xp.asarray((a != 0).sum(), dtype=array.dtype)
    if norm_type == 2:
        return xp.sqrt((a * a).sum())
    return (a ** norm_type).sum() ** (1.0 / norm_type)


def _bump(tensor):
    tensor._version_counter.value += 1


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The p-norm of the per-tensor p-norms of `tensors` (gradients), as a 0-d Tensor;
    tensor(0.) for none."""
    tensors = [t for t in _as_list(tensors) if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        return Tensor(np.zeros((), dtype=np.float32))
    xp = get_array_module(tensors[0].array)
    dtype = np.result_type(*[t.array.dtype for t in tensors])
    norms = xp.stack([_vector_norm(xp, t.array, norm_type).astype(dtype) for t in tensors])
    total = _vector_norm(xp, norms, norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the gradients "
            "by the non-finite norm anyway, set `error_if_nonfinite=False`")
    return Tensor(xp.asarray(total, dtype=dtype))


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale every .grad by min(1, max_norm / (total_norm + 1e-6)), in place."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    total = total_norm.array if isinstance(total_norm, Tensor) else total_norm
    xp = get_array_module(grads[0].array)
    coef = xp.minimum(float(max_norm) / (total + 1e-6), 1.0)
    for g in grads:
        g.array *= coef.astype(g.array.dtype)
        _bump(g)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Scale the gradients of `parameters` (a Tensor or an iterable; those without a grad
    are skipped) so that their total p-norm is at most max_norm. Returns the total norm
    before clipping, as a Tensor."""
    parameters = _as_list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total, foreach)
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for p in _as_list(parameters):
        if p.grad is not None:
            xp = get_array_module(p.grad.array)
            xp.clip(p.grad.array, -clip_value, clip_value, out=p.grad.array)
            _bump(p.grad)
