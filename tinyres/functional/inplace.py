"""In-place operations (add_, mul_, x[index] = v, relu_, ...) with PyTorch's rules.

An in-place op here computes its result with the same Function as the out-of-place op,
so its derivative is the one written there, then copies the result into the tensor's
own memory, where every alias (x.data, detach(), a NumPy array given to from_numpy) sees
it, and bumps the tensor's version counter.

While a graph is being recorded, the tensor's earlier value lives on as a stand-in that
takes over its history and the nodes that already consumed it; the tensor itself takes
the in-place op's node as its history. So `y = x * 2; y += 1` differentiates exactly as
`y = x * 2 + 1`, and a node that saved y before the write finds, at backward, that y's
version moved on and raises PyTorch's "modified by an inplace operation" error.

PyTorch's rules, kept here:
- a leaf that requires grad (a Parameter) is changed in place only under no_grad();
- the result must have the tensor's shape (no broadcasting of the target) and a dtype
  that casts to the tensor's without losing its kind (no float into an int tensor);
- an inference tensor is changed in place only inside inference_mode().
An in-place op on a view of a recorded tensor, `y[0].mul_(3)`, `y[:, 1] += v` or
`y.reshape(-1).relu_()`, is replayed on the tensor it views (`y[0] = y[0] * 3`), so that
y's history records it (PyTorch's CopySlices); a view read after its base changed is made
again from it (autograd.refresh_view).
"""
import contextlib
import numbers

import numpy as np

from tinyres.autograd import (Function, _shares_memory, enable_grad, is_grad_enabled,
                              is_inference_mode_enabled, no_grad)
from tinyres.backend import get_array_module, kernels_for
from tinyres.tensor import Tensor


# ----- the Functions that only in-place ops need ---------------------------------------
class CopyFrom(Function):
    @staticmethod
    def forward(ctx, dst, src):
        ctx.dst_shape, ctx.src_shape, ctx.src_dtype = dst.shape, src.shape, src.dtype
        xp = get_array_module(dst)
        return xp.broadcast_to(src, dst.shape).astype(dst.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        # d copy(dst, src)/d dst = 0 (overwritten), d/d src = 1 (summed over broadcast)
        from tinyres.functional.math import unbroadcast
        xp = get_array_module(grad_out)
        grad_src = unbroadcast(grad_out, ctx.src_shape).astype(ctx.src_dtype)
        return xp.zeros(ctx.dst_shape, dtype=grad_out.dtype), grad_src


class SetItem(Function):
    @staticmethod
    def forward(ctx, a, value, index):
        ctx.index, ctx.value_shape, ctx.value_dtype = index, value.shape, value.dtype
        out = a.copy()
        out[index] = value
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d/da = 1 where not written, 0 where written; d/d value = the gradient read back
        # at the written positions (summed over broadcast)
        from tinyres.functional.math import unbroadcast
        grad_a = grad_out.copy()
        grad_a[ctx.index] = 0
        read = grad_out[ctx.index]
        grad_value = unbroadcast(read, ctx.value_shape).astype(ctx.value_dtype)
        return grad_a, grad_value


# ----- the rules -----------------------------------------------------------------------
def check_writable(t, op):
    """PyTorch's checks before an in-place write to t."""
    if t._inference and not is_inference_mode_enabled():
        raise RuntimeError(f"{op}: Inplace update to inference tensor outside InferenceMode "
                           "is not allowed. You can make a clone to get a normal tensor "
                           "before doing inplace update.")
    if not is_grad_enabled():
        return
    if t.is_leaf and t.requires_grad:
        raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an "
                           "in-place operation. (Do it under `with tinyres.no_grad():`.)")
    base = t._base
    if base is not None and (base.requires_grad or t.requires_grad):
        if base.is_leaf and base.requires_grad:
            raise RuntimeError(f"{op}: a view of a leaf Variable that requires grad is being "
                               "used in an in-place operation.")
        if t._view_of is None:
            raise RuntimeError(
                f"{op}: in-place write to a view (shape {t.shape}) of a tensor (shape "
                f"{base.shape}) that requires grad, whose making was not recorded; write "
                "to the base or clone() the view first.")


def _check_result(op, t, result):
    if result.shape != t.shape:
        raise RuntimeError(f"{op}: output with shape {list(t.shape)} doesn't match the "
                           f"broadcast shape {list(result.shape)}")
    if not np.can_cast(result.dtype, t.dtype, casting="same_kind"):
        raise RuntimeError(f"{op}: result type {result.dtype} can't be cast to the desired "
                           f"output type {t.dtype}")


def _stand_in(t):
    """A tensor that takes over t's memory, history and consumers, so that t can take a
    new history; nodes that read t before the write now point to the stand-in."""
    old = Tensor(t.array)
    old._version_counter, old._graph_version = t._version_counter, t._graph_version
    old._ctx, old.requires_grad, old._base = t._ctx, t.requires_grad, t._base
    old._view_of, old._hooks, t._hooks = t._view_of, t._hooks, []   # hooks see the old value
    for ref in t._consumers:
        ctx = ref()
        if ctx is not None:
            ctx.inputs = tuple(old if x is t else x for x in ctx.inputs)
            old._consumers.append(ref)
    t._consumers = []
    return old


def _keep_saved_values(ctx, memory):
    """The in-place node's saved arrays that are the tensor's memory are about to be
    overwritten: keep copies of them instead (PyTorch saves the original self too)."""
    saved = list(ctx.saved)
    copied = {k for k, a in enumerate(saved) if _shares_memory(a, memory)}
    ctx.saved = tuple(a.copy() if k in copied else a for k, a in enumerate(saved))
    ctx.saved_versions = tuple(c for c in ctx.saved_versions if c[0] not in copied)


def _save_output_in_place(ctx, result, t):
    """A node that saved its output (relu, exp, sqrt) now reads it from t's memory,
    where the output was written, checked at t's new version; the separate result
    array is freed, so relu_ keeps one activation alive, as relu does."""
    moved = {k for k, a in enumerate(ctx.saved) if a is result.array}
    if not moved:
        return
    ctx.saved = tuple(t.array if k in moved else a for k, a in enumerate(ctx.saved))
    checks = [c for c in ctx.saved_versions if c[0] not in moved]
    checks += [(k, t._version_counter, t._version_counter.value,
                (t.array.dtype, t.array.shape, f"written in place by {ctx.function.__name__}"))
               for k in sorted(moved)]
    ctx.saved_versions = tuple(checks)


def apply_inplace(t, op, compute, *others, direct=None, into=None):
    """Write compute(t, *others), an ordinary out-of-place op, into t's memory. `direct`,
    when given, writes the same values into a float array in place (one pass, no buffer):
    it is used only when no graph is recorded. `into(source, array)`, when given, is
    compute recorded with its output written straight into `array` (t's memory): for an
    op whose backward reads its output and not its input (relu), so that the recorded
    form is one pass too, with nothing to copy back."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(t).__name__}")
    check_writable(t, op)
    if not getattr(getattr(t.array, "flags", None), "writeable", True):
        raise RuntimeError(f"{op}: unsupported operation: more than one element of the "
                           "written-to tensor refers to a single memory location (an "
                           "expand()ed tensor?). Please clone() the tensor before performing "
                           "the operation.")
    recording = (is_grad_enabled() and not is_inference_mode_enabled()
                 and t.dtype.kind == "f" and (t.requires_grad or any(
                     isinstance(o, Tensor) and o.requires_grad for o in others)))
    if direct is not None and not recording and t.dtype.kind == "f":
        direct(t.array)
        t._version_counter.value += 1
        return t
    source = _stand_in(t) if recording else t
    others = tuple(source if o is t else o for o in others)
    if recording and t._view_of is not None:
        return _write_through_view(t, op, source, compute, others)
    if recording and into is not None:
        result = into(source, t.array)       # already in t's memory, saved from there
    else:
        with contextlib.nullcontext() if recording else no_grad():
            result = _in_dtype_of(t, op, compute(source, *others))
        if recording and result._ctx is not None:
            _keep_saved_values(result._ctx, t.array)
        xp = get_array_module(t.array)
        xp.copyto(t.array, result.array, casting="unsafe")
    t._version_counter.value += 1
    if recording:
        t._ctx, t.requires_grad = result._ctx, True
        t._graph_version = t._version_counter.value
        if result._ctx is not None:
            _save_output_in_place(result._ctx, result, t)
    return t


def _write_through_view(t, op, source, compute, others):
    """t = view(parent) changed in place while recorded: parent is changed so that its
    view becomes compute(t) (PyTorch's CopySlices), then t is that view again."""
    parent, function, params = t._view_of
    result = _in_dtype_of(t, op, compute(source, *others))
    if result._ctx is not None:
        _keep_saved_values(result._ctx, t.array)
    _write_back(parent, function, params, result)
    view_again(t)
    return t


def view_again(t):
    """t's history made again as the view of its input that it is (its memory, values and
    version stay): what follows t reads the input's current history."""
    parent, function, params = t._view_of
    with enable_grad():
        again = function.apply(parent, **params)
    t._ctx, t._requires_grad, t._view_of = again._ctx, again.requires_grad, again._view_of
    t._graph_version = t._version_counter.value


def _write_back(parent, function, params, value):
    """parent, changed in place so that function(parent, **params) becomes `value`."""
    from tinyres.functional.shape import GetItem, Permute, Reshape
    if function is GetItem:
        setitem(parent, params["index"], value)
    elif function is Reshape:
        copy_(parent, value.reshape(parent.shape))
    elif function is Permute:
        inverse = tuple(int(i) for i in np.argsort(params["dims"]))
        copy_(parent, value.permute(*inverse))
    else:
        raise RuntimeError(f"in-place write to a view made by {function.__name__}: tinyres "
                           "replays writes through slices, reshapes and permutes only; "
                           "clone() the view first")


def _in_dtype_of(t, op, result):
    """The result checked against t (shape, castable dtype), cast to t's dtype."""
    _check_result(op, t, result)
    return result if result.dtype == t.dtype else result.to(dtype=t.dtype)


# ----- the ops -------------------------------------------------------------------------
def _scaled(other, alpha):
    return other if alpha == 1 else other * alpha


def add_(t, other, alpha=1):
    from tinyres.functional.math import add
    return apply_inplace(t, "add_", lambda s, o: add(s, _scaled(o, alpha)), other)


def sub_(t, other, alpha=1):
    from tinyres.functional.math import sub
    return apply_inplace(t, "sub_", lambda s, o: sub(s, _scaled(o, alpha)), other)


def mul_(t, other):
    from tinyres.functional.math import mul
    return apply_inplace(t, "mul_", mul, other)


def div_(t, other):
    from tinyres.functional.math import div
    return apply_inplace(t, "div_", div, other)


def clamp_(t, min=None, max=None):
    from tinyres.functional.math import clamp
    return apply_inplace(t, "clamp_", lambda s: clamp(s, min, max))


def _relu_into(array):
    """max(array, 0) written into array: zero where it is negative, so NaN passes and -0.0
    stays -0.0 (as PyTorch's relu_); float arrays by the kernels' relu_forward."""
    if array.dtype in (np.float32, np.float64):
        kernels_for(array).relu_forward(array, out=array)
    else:
        array[array < 0] = 0


def relu_(t):
    from tinyres.functional.activation import ReLU, relu
    return apply_inplace(t, "relu_", relu, direct=_relu_into,
                         into=lambda source, array: ReLU.apply(source, out=array))


def _as_source(value, like, op):
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (numbers.Number, np.generic)):
        xp = get_array_module(like.array)
        return Tensor(xp.asarray(value, dtype=like.dtype))
    raise TypeError(f"{op}: expected a Tensor or a number, got {type(value).__name__}")


def copy_(t, src):
    """Copy src's values into t (broadcast to t's shape, cast to t's dtype)."""
    if not isinstance(src, Tensor):
        raise TypeError(f"copy_: expected a Tensor as the source, got {type(src).__name__}")
    try:
        np.broadcast_shapes(src.shape, t.shape)
    except ValueError:
        raise RuntimeError(f"copy_: the source of shape {list(src.shape)} cannot be broadcast "
                           f"to the target's shape {list(t.shape)}") from None
    return apply_inplace(t, "copy_", lambda s, o: CopyFrom.apply(s, o), src)


def fill_(t, value):
    if isinstance(value, Tensor) and value.ndim != 0:
        raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                           f"with {value.ndim} dimensions.")
    return apply_inplace(t, "fill_", lambda s, o: CopyFrom.apply(s, o),
                         _as_source(value, t, "fill_"))


def zero_(t):
    return fill_(t, 0)


def setitem(t, index, value):
    """x[index] = value, recorded as SetItem (its own backward above)."""
    from tinyres.functional.shape import _plain_index, getitem
    index = _plain_index(index, t.device)
    with no_grad():
        target_shape = getitem(Tensor(t.array), index).shape  # also checks the index
    value = _as_source(value, t, "setitem")
    while value.ndim > len(target_shape) and value.shape[0] == 1:
        value = value.reshape(value.shape[1:])     # leading 1s, which torch drops too
    try:
        if np.broadcast_shapes(value.shape, target_shape) != tuple(target_shape):
            raise ValueError
    except ValueError:
        raise RuntimeError(f"setitem: a value of shape {list(value.shape)} cannot be "
                           f"assigned to the {list(target_shape)} elements that index "
                           f"{index!r} selects in a tensor of shape {list(t.shape)}") from None
    return apply_inplace(t, "setitem",
                         lambda s, v: SetItem.apply(s, v.to(dtype=s.dtype), index=index),
                         value)
