"""Reductions and orderings beyond sum and mean: prod, cumsum, norm, argmax and argmin,
all and any, sort, argsort and topk, with torch's signatures and result dtypes.

Each differentiable one is a Function with its backward beside it (prod, cumsum) or is
made of differentiable ops (sort and topk read their values with gather, norm is made of
abs, pow and sum, with a Function of its own for the 2-norm, whose gradient at zero is 0).
"""
import collections

import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module
from tinyres.functional.math import (_keep, _reduce_dims, _sum_dtype, abs, cast,
                                     max as max_, pow, sum)
from tinyres.functional.shape import as_int, gather, _dim
from tinyres.tensor import Tensor

SortResult = collections.namedtuple("sort", ["values", "indices"])
TopkResult = collections.namedtuple("topk", ["values", "indices"])


# ----- prod and cumsum -----------------------------------------------------------------
class Prod(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdim=False):
        ctx.save_for_backward(a)
        ctx.axis, ctx.keepdim = axis, keepdim
        return get_array_module(a).prod(a, axis=axis, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad_out):
        # d prod(a)/da_i = the product of all the other elements: the product of those
        # before i times those after i (exact where some a_j are 0, no division)
        (a,) = ctx.saved_tensors
        xp = get_array_module(a)
        flat = ctx.axis is None
        x = a.reshape(-1) if flat else a
        axis = 0 if flat else ctx.axis
        ones = xp.ones_like(xp.take(x, xp.arange(1), axis=axis))
        before = xp.cumprod(xp.concatenate([ones, x], axis=axis), axis=axis)
        before = xp.take(before, xp.arange(x.shape[axis]), axis=axis)
        after = xp.flip(xp.cumprod(xp.flip(xp.concatenate([x, ones], axis=axis), axis),
                                   axis=axis), axis)
        after = xp.take(after, xp.arange(1, x.shape[axis] + 1), axis=axis)
        others = (before * after).reshape(a.shape)
        g = _keep(grad_out, None if flat else (ctx.axis,), ctx.keepdim)
        return (g * others).astype(a.dtype)


class Cumsum(Function):
    @staticmethod
    def forward(ctx, a, axis):
        ctx.axis = axis
        return get_array_module(a).cumsum(a, axis=axis)

    @staticmethod
    def backward(ctx, grad_out):
        # d out_j/da_i = 1 for j >= i: the gradient summed from the end back to i
        xp = get_array_module(grad_out)
        return xp.flip(xp.cumsum(xp.flip(grad_out, ctx.axis), axis=ctx.axis), ctx.axis)


def prod(input, dim=None, keepdim=False, *, dtype=None):
    """The product over one dim (all elements by default); integers multiply in int64."""
    a = cast(input, _sum_dtype(input, dtype))
    axis = None if dim is None else _dim(dim, a.ndim, "prod")
    if a.ndim == 0:
        axis = None
    return Prod.apply(a, axis=axis, keepdim=keepdim and axis is not None)


def cumsum(input, dim, *, dtype=None):
    """Running sums along dim; integers accumulate in int64."""
    a = cast(input, _sum_dtype(input, dtype))
    if a.ndim == 0:
        return Cumsum.apply(a.reshape(1), axis=0).reshape(())
    return Cumsum.apply(a, axis=_dim(dim, a.ndim, "cumsum"))


# ----- argmax, argmin, all, any --------------------------------------------------------
def _arg_extreme(a, dim, keepdim, largest):
    name = "argmax" if largest else "argmin"
    xp = get_array_module(a.array)
    find = xp.argmax if largest else xp.argmin
    if a.numel() == 0:
        raise IndexError(f"{name}(): Expected reduction dim to be specified for "
                         f"input.numel() == 0 (shape {a.shape}).")
    if dim is None:
        out = find(a.array.reshape(-1))
        shape = (1,) * a.ndim if keepdim else ()
        return Tensor(xp.asarray(out, dtype=np.int64).reshape(shape))
    axis = _dim(dim, a.ndim, name) if a.ndim else None
    out = find(a.array, axis=axis)
    if keepdim and axis is not None:
        out = xp.expand_dims(out, axis)
    return Tensor(xp.asarray(out, dtype=np.int64))


def argmax(input, dim=None, keepdim=False):
    """The index of the largest value (over the flattened tensor without dim); int64.
    Ties go to the first; a NaN counts as the largest."""
    return _arg_extreme(input, dim, keepdim, largest=True)


def argmin(input, dim=None, keepdim=False):
    """The index of the smallest value; int64, the first of ties."""
    return _arg_extreme(input, dim, keepdim, largest=False)


def _all_or_any(a, dim, keepdim, test):
    xp = get_array_module(a.array)
    axes = _reduce_dims(dim, a.ndim)
    out = getattr(xp, test)(a.array, axis=axes, keepdims=keepdim)
    return Tensor(xp.asarray(out, dtype=np.uint8 if a.dtype == np.uint8 else bool))


def all(input, dim=None, keepdim=False):
    """True where every element along dim is nonzero (uint8 in, uint8 out, as torch)."""
    return _all_or_any(input, dim, keepdim, "all")


def any(input, dim=None, keepdim=False):
    """True where some element along dim is nonzero (uint8 in, uint8 out, as torch)."""
    return _all_or_any(input, dim, keepdim, "any")


# ----- sort, argsort, topk -------------------------------------------------------------
def _sort_indices(array, axis, descending):
    """Stable sorting order along axis: ties keep their order, NaNs come last (first when
    descending), as torch.sort(stable=True)."""
    xp = get_array_module(array)
    if not descending:
        return xp.argsort(array, axis=axis, kind="stable")
    n = array.shape[axis]
    flipped = xp.argsort(xp.flip(array, axis), axis=axis, kind="stable")
    return (n - 1) - xp.flip(flipped, axis)


def sort(input, dim=-1, descending=False, *, stable=False):
    """(values, indices) sorted along dim. The order of ties is always stable here (as
    torch with stable=True; torch leaves it unspecified otherwise)."""
    if input.ndim == 0:
        return SortResult(input * 1, Tensor(get_array_module(input.array).zeros((), np.int64)))
    axis = _dim(dim, input.ndim, "sort")
    index = Tensor(_sort_indices(input.array, axis, descending).astype(np.int64))
    return SortResult(gather(input, axis, index), index)


def argsort(input, dim=-1, descending=False, *, stable=False):
    """The indices that sort input along dim (stable, as sort)."""
    return sort(input, dim, descending, stable=stable).indices


def topk(input, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the k largest (or smallest) elements along dim, sorted."""
    axis = _dim(dim, input.ndim, "topk") if input.ndim else 0
    k = as_int(k, "k", "topk")
    size = input.shape[axis] if input.ndim else 1
    if not 0 <= k <= size:
        raise RuntimeError(f"topk: selected index k out of range (k={k}, the tensor has "
                           f"{size} elements along dim {axis})")
    if input.ndim == 0:
        return TopkResult(*sort(input))
    order = _sort_indices(input.array, axis, descending=largest)
    xp = get_array_module(order)
    index = Tensor(xp.take(order, xp.arange(k), axis=axis).astype(np.int64))
    return TopkResult(gather(input, axis, index), index)


# ----- norm ----------------------------------------------------------------------------
class Norm2(Function):
    @staticmethod
    def forward(ctx, a, axes=None, keepdim=False):
        xp = get_array_module(a)
        out = xp.sqrt(xp.sum(a * a, axis=axes, keepdims=keepdim))
        ctx.save_for_backward(a, out)
        ctx.axes, ctx.keepdim = axes, keepdim
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d ||a||/da = a / ||a||, and 0 where the norm is 0 (as torch)
        a, out = ctx.saved_tensors
        xp = get_array_module(a)
        g, norm = _keep(grad_out, ctx.axes, ctx.keepdim), _keep(out, ctx.axes, ctx.keepdim)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = xp.where(norm == 0, a.dtype.type(0), g / norm)
        return (a * scaled).astype(a.dtype)


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """The p-norm over dim (all elements by default): 'fro' or 2, 1, inf, -inf, 0 or any
    other number p, (sum |x|^p)^(1/p)."""
    a = input if dtype is None else cast(input, dtype)
    if a.dtype.kind != "f":
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex "
                           f"tensor as input. Got {a.dtype}")
    axes = _reduce_dims(dim, a.ndim)
    if p in ("fro", 2, 2.0):
        return Norm2.apply(a, axes=axes, keepdim=keepdim)
    if isinstance(p, str):
        raise RuntimeError(f"norm: p={p!r} is not supported (use 'fro' or a number)")
    if p == float("inf") or p == float("-inf"):
        return _amax_abs(a, axes, keepdim, largest=p > 0)
    if p == 0:
        return sum(cast(a != 0, a.dtype), axes, keepdim)
    return pow(sum(pow(abs(a), p), axes, keepdim), 1.0 / p)


def _amax_abs(a, axes, keepdim, largest):
    """max |a| (or min |a|) over axes, one axis at a time from the last."""
    from tinyres.functional.math import min as min_
    out = abs(a)
    for axis in sorted(range(a.ndim) if axes is None else axes, reverse=True):
        out = (max_ if largest else min_)(out, axis, keepdim).values
    return out


# ----- amax, amin, logsumexp -----------------------------------------------------------
class AMax(Function):
    @staticmethod
    def forward(ctx, a, axes=None, keepdim=False, largest=True):
        xp = get_array_module(a)
        out = (xp.max if largest else xp.min)(a, axis=axes, keepdims=keepdim)
        ctx.save_for_backward(a, out)
        ctx.axes, ctx.keepdim = axes, keepdim
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d amax(a)/da = 1 at the maximum, shared evenly between ties (as torch's amax)
        a, out = ctx.saved_tensors
        xp = get_array_module(a)
        hit = a == _keep(out, ctx.axes, ctx.keepdim)
        count = hit.sum(axis=ctx.axes, keepdims=True)
        return (hit * (_keep(grad_out, ctx.axes, ctx.keepdim) / count)).astype(a.dtype)


def _amax_or_amin(a, dim, keepdim, largest):
    name = "amax" if largest else "amin"
    axes = _reduce_dims(dim, a.ndim)
    reduced = range(a.ndim) if axes is None else axes
    if a.numel() == 0 and (axes is None or 0 in [a.shape[d] for d in reduced]):
        raise IndexError(f"{name}(): Expected reduction dim to have non-zero size "
                         f"(shape {a.shape}, dim {dim})")
    return AMax.apply(a, axes=axes, keepdim=keepdim, largest=largest)


def amax(input, dim=(), keepdim=False):
    """The largest values over dim (all dims by default); ties share the gradient."""
    return _amax_or_amin(input, dim, keepdim, largest=True)


def amin(input, dim=(), keepdim=False):
    """The smallest values over dim (all dims by default); ties share the gradient."""
    return _amax_or_amin(input, dim, keepdim, largest=False)


def logsumexp(input, dim, keepdim=False):
    """log(sum(exp(input))) over dim, computed stably around the (constant) maximum."""
    from tinyres.functional.math import _as_float, exp, log
    a = _as_float(input)
    axes = _reduce_dims(dim, a.ndim)
    xp = get_array_module(a.array)
    top = xp.max(a.array, axis=axes, keepdims=True) if a.numel() else \
        xp.zeros([1] * a.ndim, a.dtype)
    shift = Tensor(xp.where(xp.isinf(top), a.dtype.type(0), top))   # no inf - inf
    out = log(sum(exp(a - shift), axes, keepdim=True)) + shift
    if keepdim:
        return out
    from tinyres.functional.shape import squeeze
    return squeeze(out, tuple(range(a.ndim)) if axes is None else axes)
