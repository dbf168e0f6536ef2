"""Elementwise maths, matmul and reductions; each op's forward and backward side by side.

Everything here is plain `xp` code (NumPy or CuPy, whichever holds the data): these are
the things the array libraries already do well. Broadcasting in forward is undone in
backward by `unbroadcast`.
"""
import builtins
import collections

import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module
from tinyres.tensor import DEFAULT_DTYPE, Tensor


# ----- helpers shared by the binary ops ------------------------------------------------
def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the backward of NumPy broadcasting."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


# ----- type promotion: which dtype an op on mixed operands computes in -----------------
_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


def _category(dtype):
    """0 for bool, 1 for integers, 2 for floats: the order in which dtypes promote."""
    return {"b": 0, "i": 1, "u": 1, "f": 2}[np.dtype(dtype).kind]


def promote_types(a, b):
    """torch.promote_types: the higher category wins (int64 + float32 -> float32, where
    NumPy would say float64); within one category, the wider type (float32 + float64 ->
    float64, int32 + int64 -> int64)."""
    a, b = np.dtype(a), np.dtype(b)
    if _category(a) != _category(b):
        return a if _category(a) > _category(b) else b
    return np.promote_types(a, b)


def scalar_dtype(value):
    """The dtype a Python (or NumPy) scalar stands for: bool, int64 or the default float."""
    if isinstance(value, (bool, np.bool_)):
        return np.dtype(bool)
    if isinstance(value, (int, np.integer)):
        return np.dtype(np.int64)
    return np.dtype(DEFAULT_DTYPE)


def result_type(*operands):
    """The dtype PyTorch computes `op(*operands)` in (torch.result_type), for Tensors and
    Python or NumPy scalars.

    Operands come in three tiers: tensors with dimensions, 0-d tensors, and scalars. Each
    tier is promoted on its own (promote_types), and a lower tier changes the result only
    when it is of a higher category (bool < integer < float). So a scalar never widens a
    tensor of its own category (float32 * 2.5 stays float32, int32 + 3 stays int32), but
    it does lift a tensor of a lower one (int64 * 2.5 is float32, the default float).
    """
    tiers = [None, None, None]          # tensors with dims, 0-d tensors, scalars
    for x in operands:
        if isinstance(x, Tensor):
            tier, dtype = (0 if x.ndim else 1), x.dtype
        else:
            tier, dtype = 2, scalar_dtype(x)
        tiers[tier] = dtype if tiers[tier] is None else promote_types(tiers[tier], dtype)
    result = None
    for dtype in tiers:
        if result is None:
            result = dtype
        elif dtype is not None and _category(dtype) > _category(result):
            result = promote_types(result, dtype)
    return result


def as_tensor(value, like, op, dtype=None):
    """A Tensor for `value` in `dtype`; a Python or NumPy scalar becomes a 0-d array on
    the device of `like` (in like's dtype when no dtype is given)."""
    if isinstance(value, Tensor):
        return value if dtype is None else cast(value, dtype)
    if isinstance(value, _SCALARS):
        xp = get_array_module(like.array)
        return Tensor(xp.asarray(value, dtype=like.dtype if dtype is None else dtype))
    raise TypeError(f"{op}: expected a Tensor or a Python number, got {type(value).__name__}")


def binary_operands(op, a, b, dtype=None):
    """Two Tensors of one dtype whose shapes broadcast, or a clear error.

    Both are brought to `dtype`, by default result_type(a, b) (PyTorch's promotion); the
    casts are ops of the graph, so each input's gradient comes back in its own dtype.
    """
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: at least one operand must be a Tensor")
    for x in (a, b):
        if not isinstance(x, (Tensor,) + _SCALARS):
            raise TypeError(f"{op}: expected a Tensor or a Python number, got "
                            f"{type(x).__name__}")
    dtype = result_type(a, b) if dtype is None else np.dtype(dtype)
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like, op, dtype), as_tensor(b, like, op, dtype)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together "
                         "(trailing dimensions must be equal or 1)") from None
    return a, b


def _axes(dim, ndim):
    if dim is None:
        return None
    from tinyres.functional.shape import as_int   # here: shape.py imports this module
    dims = tuple(as_int(d, "dim", "reduction")
                 for d in (dim if isinstance(dim, (tuple, list)) else (dim,)))
    for d in dims:
        if not -ndim <= d < builtins.max(ndim, 1):
            raise IndexError(f"dimension {d} is out of range for a tensor of {ndim} dims")
    return tuple(d % builtins.max(ndim, 1) for d in dims)


def _keep(grad, axes, keepdim):
    """Reshape a reduced gradient so it broadcasts back over the reduced axes."""
    if axes is None or keepdim:
        return grad
    return get_array_module(grad).expand_dims(grad, axes)


# ----- elementwise: two inputs ---------------------------------------------------------
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a + b

    @staticmethod
    def backward(ctx, grad_out):
        # d(a+b)/da = 1, d(a+b)/db = 1
        return unbroadcast(grad_out, ctx.shapes[0]), unbroadcast(grad_out, ctx.shapes[1])


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a - b

    @staticmethod
    def backward(ctx, grad_out):
        # d(a-b)/da = 1, d(a-b)/db = -1
        return unbroadcast(grad_out, ctx.shapes[0]), unbroadcast(-grad_out, ctx.shapes[1])


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        # keep only what backward reads: a's gradient needs b, b's needs a
        need_a, need_b = ctx.needs_input_grad
        ctx.save_for_backward(a if need_b else None, b if need_a else None)
        ctx.shapes = a.shape, b.shape
        return a * b

    @staticmethod
    def backward(ctx, grad_out):
        # d(ab)/da = b, d(ab)/db = a
        a, b = ctx.saved_tensors
        grad_a = None if b is None else unbroadcast(grad_out * b, ctx.shapes[0])
        grad_b = None if a is None else unbroadcast(grad_out * a, ctx.shapes[1])
        return grad_a, grad_b


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None, b)
        ctx.shapes = a.shape, b.shape
        return a / b

    @staticmethod
    def backward(ctx, grad_out):
        # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        a, b = ctx.saved_tensors
        grad_a = unbroadcast(grad_out / b, ctx.shapes[0])
        grad_b = None if a is None else unbroadcast(-grad_out * a / (b * b), ctx.shapes[1])
        return grad_a, grad_b


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        # as torch: the output is kept only for the exponent's gradient
        ctx.save_for_backward(a, b, out if ctx.needs_input_grad[1] else None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d(a^b)/da = b a^(b-1), 0 where b = 0; d(a^b)/db = a^b log(a), 0 where a = 0 and b >= 0
        # As torch: a^0 is the constant 1, so its da is 0 even at a = 0 (where b a^(b-1) is
        # 0 * inf); 0^b is the constant 0 (b > 0) or 1 (b = 0), so its db is 0. Everywhere
        # else the formula's value stands: db is nan at a negative base (log of a negative),
        # -inf at a = 0 with b < 0 (inf * log 0), and da is inf or nan where a^(b-1) is.
        a, b, out = ctx.saved_tensors
        xp = get_array_module(a)
        zero = a.dtype.type(0)
        grad_a = grad_b = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if ctx.needs_input_grad[0]:
                grad_a = unbroadcast(xp.where(b == 0, zero, grad_out * b * a ** (b - 1)),
                                     a.shape)
            if ctx.needs_input_grad[1]:
                constant = (a == 0) & (b >= 0)
                grad_b = unbroadcast(xp.where(constant, zero, grad_out * out * xp.log(a)),
                                     b.shape)
        return grad_a, grad_b


class Matmul(Function):
    @staticmethod
    def forward(ctx, a, b):
        # keep only what backward reads: A's gradient needs B, B's needs A
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None,
                              b if ctx.needs_input_grad[0] else None)
        ctx.shapes = a.shape, b.shape
        return a @ b

    @staticmethod
    def backward(ctx, grad_out):
        # d(AB)/dA = G B^T, d(AB)/dB = A^T G (batch axes broadcast, then summed)
        a, b = ctx.saved_tensors
        a_shape, b_shape = ctx.shapes
        xp = get_array_module(grad_out)
        a2_shape = (1,) + a_shape if len(a_shape) == 1 else a_shape   # 1-D operands as
        b2_shape = b_shape + (1,) if len(b_shape) == 1 else b_shape   # (1, k) and (k, 1)
        batch = np.broadcast_shapes(a2_shape[:-2], b2_shape[:-2])
        g = grad_out.reshape(batch + (a2_shape[-2], b2_shape[-1]))
        grad_a = grad_b = None
        if b is not None:
            b2 = b.reshape(b2_shape)
            grad_a = unbroadcast(g @ xp.swapaxes(b2, -1, -2), a2_shape).reshape(a_shape)
        if a is not None:
            a2 = a.reshape(a2_shape)
            grad_b = unbroadcast(xp.swapaxes(a2, -1, -2) @ g, b2_shape).reshape(b_shape)
        return grad_a, grad_b


class Where(Function):
    @staticmethod
    def forward(ctx, condition, a, b):
        ctx.condition = condition
        ctx.shapes = a.shape, b.shape
        return get_array_module(a).where(condition, a, b)

    @staticmethod
    def backward(ctx, grad_out):
        # d/da = 1[condition], d/db = 1[not condition]
        zero = grad_out.dtype.type(0)
        xp = get_array_module(grad_out)
        return (None,
                unbroadcast(xp.where(ctx.condition, grad_out, zero), ctx.shapes[0]),
                unbroadcast(xp.where(ctx.condition, zero, grad_out), ctx.shapes[1]))


# ----- elementwise: one input ----------------------------------------------------------
class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad_out):
        # d(-a)/da = -1
        return -grad_out


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = get_array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d exp(a)/da = exp(a)
        (out,) = ctx.saved_tensors
        return grad_out * out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return get_array_module(a).log(a)

    @staticmethod
    def backward(ctx, grad_out):
        # d log(a)/da = 1/a
        (a,) = ctx.saved_tensors
        return grad_out / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = get_array_module(a).sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d sqrt(a)/da = 1 / (2 sqrt(a)): inf at a = 0 (as torch), nan below
        (out,) = ctx.saved_tensors
        with np.errstate(divide="ignore"):
            return grad_out / (2 * out)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return get_array_module(a).abs(a)

    @staticmethod
    def backward(ctx, grad_out):
        # d|a|/da = sign(a): 0 at 0, and 0 at a NaN too (as torch)
        (a,) = ctx.saved_tensors
        xp = get_array_module(a)
        zero = grad_out.dtype.type(0)
        return xp.where(a > 0, grad_out, xp.where(a < 0, -grad_out, zero))


class Clamp(Function):
    @staticmethod
    def forward(ctx, a, low=None, high=None):
        ctx.save_for_backward(a)
        ctx.low, ctx.high = low, high
        return get_array_module(a).clip(a, low, high).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad_out):
        # d clamp(a)/da = 1 inside [low, high], bounds included; 0 outside and at a NaN, and
        # 0 everywhere when low > high (every output is high), as torch
        (a,) = ctx.saved_tensors
        inside = get_array_module(a).ones(a.shape, dtype=bool)
        if ctx.low is not None:
            inside &= a >= ctx.low
        if ctx.high is not None:
            inside &= a <= ctx.high
        return grad_out * inside


class Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad_out):
        # the identity, back in the input's dtype
        return grad_out.astype(ctx.dtype)


class Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, grad_out):
        # d clone(a)/da = 1
        return grad_out


# ----- reductions ----------------------------------------------------------------------
class Sum(Function):
    @staticmethod
    def forward(ctx, a, axes=None, keepdim=False):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        return get_array_module(a).sum(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad_out):
        # d sum(a)/da = 1 for every summed element
        xp = get_array_module(grad_out)
        g = _keep(grad_out, ctx.axes, ctx.keepdim)
        return xp.broadcast_to(g, ctx.shape).copy()


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axes=None, keepdim=False):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        ctx.count = _count(a.shape, axes)
        xp = get_array_module(a)
        if ctx.count == 0:                  # the mean of nothing is NaN, as torch
            return xp.full_like(xp.sum(a, axis=axes, keepdims=keepdim), xp.nan)
        return xp.mean(a, axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, grad_out):
        # d mean(a)/da = 1/n for every averaged element (none when n = 0)
        xp = get_array_module(grad_out)
        g = _keep(grad_out, ctx.axes, ctx.keepdim) / builtins.max(ctx.count, 1)
        return xp.broadcast_to(g, ctx.shape).astype(grad_out.dtype)


class Var(Function):
    @staticmethod
    def forward(ctx, a, axes=None, keepdim=False, unbiased=True):
        xp = get_array_module(a)
        mean = xp.mean(a, axis=axes, keepdims=True)
        count = _count(a.shape, axes)
        ctx.save_for_backward(a - mean)
        ctx.axes, ctx.keepdim = axes, keepdim
        ctx.denom = count - 1 if unbiased else count
        return xp.var(a, axis=axes, keepdims=keepdim, ddof=1 if unbiased else 0)

    @staticmethod
    def backward(ctx, grad_out):
        # d var(a)/da = 2 (a - mean) / (n - ddof)
        (centred,) = ctx.saved_tensors
        g = _keep(grad_out, ctx.axes, ctx.keepdim)
        return (g * (2 * centred / ctx.denom)).astype(centred.dtype)


class Max(Function):
    @staticmethod
    def forward(ctx, a, largest=True):
        xp = get_array_module(a)
        out = xp.max(a) if largest else xp.min(a)
        ctx.save_for_backward(a, out)
        return xp.asarray(out)

    @staticmethod
    def backward(ctx, grad_out):
        # d max(a)/da = 1 at the maximum, shared equally between ties; when the result is
        # NaN (any NaN wins), shared equally between the NaNs (as torch)
        a, out = ctx.saved_tensors
        xp = get_array_module(a)
        hit = (a == out) | (xp.isnan(a) & xp.isnan(out))
        return (grad_out * hit / hit.sum()).astype(a.dtype)


class MaxDim(Function):
    @staticmethod
    def forward(ctx, a, index, dim, keepdim=False):
        """The values of `a` at `index` (argmax or argmin, kept dims) along `dim`."""
        xp = get_array_module(a)
        ctx.index, ctx.shape, ctx.dim, ctx.keepdim = index, a.shape, dim, keepdim
        out = xp.take_along_axis(a, index, axis=dim)
        return out if keepdim else xp.squeeze(out, axis=dim)

    @staticmethod
    def backward(ctx, grad_out):
        # d max(a, dim)/da = 1 at the chosen index along dim, 0 elsewhere: the first of tied
        # maxima, the first NaN if there is one (argmax's choice, as torch on the CPU)
        xp = get_array_module(grad_out)
        grad = xp.zeros(ctx.shape, dtype=grad_out.dtype)
        g = grad_out if ctx.keepdim else xp.expand_dims(grad_out, ctx.dim)
        xp.put_along_axis(grad, ctx.index, g, axis=ctx.dim)
        return grad


def _count(shape, axes):
    """How many elements a reduction over `axes` combines into one."""
    if axes is None:
        return int(np.prod(shape))
    return int(np.prod([shape[d] for d in axes]))


# ----- the public functions ------------------------------------------------------------
def add(a, b):
    return Add.apply(*binary_operands("add", a, b))


def sub(a, b):
    return Sub.apply(*binary_operands("sub", a, b))


def mul(a, b):
    return Mul.apply(*binary_operands("mul", a, b))


def div(a, b):
    """True division: integer and bool operands give the default float dtype, as torch."""
    dtype = result_type(a, b)
    return Div.apply(*binary_operands("div", a, b,
                                      dtype if _category(dtype) == 2 else DEFAULT_DTYPE))


def pow(a, exponent):
    return Pow.apply(*binary_operands("pow", a, exponent))


def matmul(a, b):
    """Matrix product with NumPy's rules (1-D operands, broadcast batch axes)."""
    a, b = (as_tensor(a, b, "matmul"), b) if not isinstance(a, Tensor) else (a, b)
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: dtype mismatch, {a.dtype} and {b.dtype}")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align: the last "
                         f"dimension of the first ({k_a}) must equal the "
                         f"{'first' if b.ndim == 1 else 'second-to-last'} of the second ({k_b})")
    return Matmul.apply(a, b)


def where(condition, a, b):
    """Elementwise choice: a where condition holds, else b (condition is not differentiated)."""
    cond = condition.array if isinstance(condition, Tensor) else condition
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):   # where(c, 1.0, 0)
        a = as_tensor(a, Tensor(cond), "where", result_type(a, b))
    a, b = binary_operands("where", a, b)
    try:
        np.broadcast_shapes(tuple(cond.shape), a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: condition {tuple(cond.shape)} and operands {a.shape}, "
                         f"{b.shape} cannot be broadcast together") from None
    return Where.apply(Tensor(cond.astype(bool)), a, b)


def neg(a):
    return Neg.apply(a)


def exp(a):
    return Exp.apply(a)


def log(a):
    return Log.apply(a)


def sqrt(a):
    return Sqrt.apply(a)


def abs(a):
    return Abs.apply(a)


def clamp(a, min=None, max=None):
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    bounds = [v for v in (min, max) if v is not None]
    if any(isinstance(v, Tensor) for v in bounds):   # elementwise bounds, as torch
        out = a
        if min is not None:
            out = where(out < min, min, out)        # the gradient goes to the bound chosen
        if max is not None:
            out = where(out > max, max, out)
        return out
    a = cast(a, result_type(a, *bounds))      # an int tensor clamped by 1.5 becomes float
    return Clamp.apply(a, low=min, high=max)


def clone(a):
    """A copy of a with memory of its own; the gradient passes through unchanged."""
    return Clone.apply(a)


def cast(a, dtype):
    dtype = np.dtype(dtype)
    return a if dtype == a.dtype else Cast.apply(a, dtype=dtype)


def sum(a, dim=None, keepdim=False):
    return Sum.apply(a, axes=_axes(dim, a.ndim), keepdim=keepdim)


def mean(a, dim=None, keepdim=False):
    return Mean.apply(a, axes=_axes(dim, a.ndim), keepdim=keepdim)


def var(a, dim=None, keepdim=False, unbiased=True):
    return Var.apply(a, axes=_axes(dim, a.ndim), keepdim=keepdim, unbiased=unbiased)


MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])


def _max_or_min(a, dim, keepdim, largest):
    if dim is None and a.numel() == 0:
        name = "max" if largest else "min"
        raise RuntimeError(f"{name}(): a tensor of shape {a.shape} has no elements; give "
                           f"the dimension to reduce over with dim=")
    if dim is None:
        return Max.apply(a, largest=largest)
    (axis,) = _axes(dim, a.ndim)
    xp = get_array_module(a.array)
    index = xp.expand_dims((xp.argmax if largest else xp.argmin)(a.array, axis=axis), axis)
    values = MaxDim.apply(a, index=index, dim=axis, keepdim=keepdim)
    return MaxResult(values, Tensor(index if keepdim else xp.squeeze(index, axis=axis)))


def max(a, dim=None, keepdim=False):
    """The largest value; with `dim`, (values, indices) along it, as torch.max. A NaN
    counts as the largest value (the result is NaN)."""
    return _max_or_min(a, dim, keepdim, largest=True)


def min(a, dim=None, keepdim=False):
    """The smallest value; with `dim`, (values, indices) along it, as torch.min."""
    return _max_or_min(a, dim, keepdim, largest=False)


_COMPARE = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
            "eq": np.equal, "ne": np.not_equal}


def compare(a, b, how):
    """Elementwise comparison, after promoting both operands to result_type (so an int
    tensor < 2.5 compares against 2.5, not 2); a boolean tensor outside the graph."""
    a, b = binary_operands(how, a, b)
    xp = get_array_module(a.array)
    return Tensor(getattr(xp, _COMPARE[how].__name__)(a.array, b.array))
