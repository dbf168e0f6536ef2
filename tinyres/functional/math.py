"""Elementwise maths, matmul and reductions; each op's forward and backward side by side.

Everything here is plain `xp` code (NumPy or CuPy, whichever holds the data): these are
the things the array libraries already do well. Broadcasting in forward is undone in
backward by `unbroadcast`.
"""
import builtins
import collections

import numpy as np

from tinyres.autograd import Function
from tinyres.backend import full, get_array_module, kernels_for, to_device
from tinyres.tensor import Tensor, get_default_dtype


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
    return np.dtype(get_default_dtype())


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
        if isinstance(x, (Tensor, np.ndarray)):     # an ndarray counts as a tensor
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
    if isinstance(value, np.ndarray):       # ndarray + Tensor: the array as a tensor
        value = Tensor(to_device(value, like.device))
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
        if not isinstance(x, (Tensor, np.ndarray) + _SCALARS):
            raise TypeError(f"{op}: expected a Tensor or a Python number, got "
                            f"{type(x).__name__}")
    dtype = result_type(a, b) if dtype is None else np.dtype(dtype)
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like, op, dtype), as_tensor(b, like, op, dtype)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise RuntimeError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast "
                           "together (trailing dimensions must be equal or 1)") from None
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
    axes = tuple(d % builtins.max(ndim, 1) for d in dims)
    for k, d in enumerate(axes):
        if d in axes[:k]:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    return axes


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
        with np.errstate(divide="ignore", invalid="ignore"):   # x/0 is inf or nan, quietly
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
        return kernels_for(a).matmul(a, b)      # a @ b (cpu.py: 2-D on its own threads)

    @staticmethod
    def backward(ctx, grad_out):
        # d(AB)/dA = G B^T, d(AB)/dB = A^T G (batch axes broadcast, then summed)
        a, b = ctx.saved_tensors
        a_shape, b_shape = ctx.shapes
        xp, kernels = get_array_module(grad_out), kernels_for(grad_out)
        a2_shape = (1,) + a_shape if len(a_shape) == 1 else a_shape   # 1-D operands as
        b2_shape = b_shape + (1,) if len(b_shape) == 1 else b_shape   # (1, k) and (k, 1)
        batch = np.broadcast_shapes(a2_shape[:-2], b2_shape[:-2])
        g = grad_out.reshape(batch + (a2_shape[-2], b2_shape[-1]))
        grad_a = grad_b = None
        if b is not None:
            b2 = b.reshape(b2_shape)
            grad_a = unbroadcast(kernels.matmul(g, xp.swapaxes(b2, -1, -2)),
                                 a2_shape).reshape(a_shape)
        if a is not None:
            a2 = a.reshape(a2_shape)
            grad_b = unbroadcast(kernels.matmul(xp.swapaxes(a2, -1, -2), g),
                                 b2_shape).reshape(b_shape)
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
        with np.errstate(divide="ignore", invalid="ignore"):   # log 0 = -inf, quietly
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
        return full(xp, ctx.shape, g, grad_out.dtype)


class Var(Function):
    @staticmethod
    def forward(ctx, a, axes=None, keepdim=False, correction=1):
        xp = get_array_module(a)
        mean = xp.mean(a, axis=axes, keepdims=True)
        count = _count(a.shape, axes)
        ctx.save_for_backward(a - mean)
        ctx.axes, ctx.keepdim = axes, keepdim
        ctx.denom = builtins.max(count - correction, 0)
        with np.errstate(divide="ignore", invalid="ignore"):   # n <= correction: inf or nan
            return xp.var(a, axis=axes, keepdims=keepdim, ddof=correction).astype(a.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        # d var(a)/da = 2 (a - mean) / (n - correction)
        (centred,) = ctx.saved_tensors
        g = _keep(grad_out, ctx.axes, ctx.keepdim)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (g * (2 * centred / centred.dtype.type(ctx.denom))).astype(centred.dtype)


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


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b, largest=True):
        ctx.save_for_backward(a, b)
        ctx.largest = largest
        xp = get_array_module(a)
        return xp.maximum(a, b) if largest else xp.minimum(a, b)

    @staticmethod
    def backward(ctx, grad_out):
        # d max(a, b)/da = 1[a > b], d/db = 1[b > a]; a tie gives each half (as torch)
        a, b = ctx.saved_tensors
        xp = get_array_module(a)
        loses_a, loses_b = (a < b, a > b) if ctx.largest else (a > b, a < b)
        g = xp.where(a == b, grad_out / 2, grad_out)
        zero = grad_out.dtype.type(0)
        return (unbroadcast(xp.where(loses_a, zero, g), a.shape),
                unbroadcast(xp.where(loses_b, zero, g), b.shape))


class Remainder(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return get_array_module(a).remainder(a, b)

    @staticmethod
    def backward(ctx, grad_out):
        # a mod b = a - b floor(a/b): d/da = 1, d/db = -floor(a/b)
        a, b = ctx.saved_tensors
        with np.errstate(divide="ignore", invalid="ignore"):
            quotient = get_array_module(a).floor_divide(a, b)
        return unbroadcast(grad_out, a.shape), unbroadcast(-grad_out * quotient, b.shape)


class RoundedDiv(Function):
    @staticmethod
    def forward(ctx, a, b, mode):
        ctx.shapes, ctx.mode = (a.shape, b.shape), mode
        xp = get_array_module(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            if mode in ("floor", "floor_divide"):
                return xp.floor_divide(a, b)
            if a.dtype.kind in "iu":      # truncation of integers: C's division
                q = xp.floor_divide(a, b)
                return q + ((q < 0) & (q * b != a)).astype(a.dtype)
            return xp.trunc(a / b)

    @staticmethod
    def backward(ctx, grad_out):
        # a rounded quotient is piecewise constant: d/da = d/db = 0 (as torch's div with a
        # rounding_mode); floor_divide has no derivative at all in torch
        if ctx.mode == "floor_divide":
            raise RuntimeError("derivative for floor_divide is not implemented")
        xp = get_array_module(grad_out)
        return (xp.zeros(ctx.shapes[0], grad_out.dtype), xp.zeros(ctx.shapes[1], grad_out.dtype))


# ----- the public functions ------------------------------------------------------------
def add(input, other, *, alpha=1):
    """input + alpha * other, with torch's type promotion."""
    return Add.apply(*binary_operands("add", input, other if alpha == 1 else other * alpha))


def sub(input, other, *, alpha=1):
    """input - alpha * other (refused for bool operands, as torch)."""
    if any(result_type(x) == np.bool_ for x in (input, other)
           if isinstance(x, (Tensor, np.ndarray) + _SCALARS)):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not "
                           "supported. If you are trying to invert a mask, use the `~` or "
                           "`logical_not()` operator instead.")
    return Sub.apply(*binary_operands("sub", input, other if alpha == 1 else other * alpha))


def mul(input, other):
    """input * other, with torch's type promotion."""
    return Mul.apply(*binary_operands("mul", input, other))


def div(input, other, *, rounding_mode=None):
    """True division: integer and bool operands give the default float dtype, as torch.
    rounding_mode 'trunc' or 'floor' rounds the quotient (and keeps integer dtypes)."""
    if rounding_mode is not None:
        if rounding_mode not in ("trunc", "floor"):
            raise RuntimeError(f"div expected rounding_mode to be one of None, 'trunc', or "
                             f"'floor' but found '{rounding_mode}'")
        return _rounded_div("div", input, other, rounding_mode)
    dtype = result_type(input, other)
    return Div.apply(*binary_operands("div", input, other, dtype if _category(dtype) == 2
                                      else get_default_dtype()))


def _rounded_div(op, a, b, mode):
    a, b = binary_operands(op, a, b)
    if a.dtype.kind == "b":
        raise NotImplementedError(f'"{op}" not implemented for \'Bool\'')
    if a.dtype.kind in "iu" and bool((b.array == 0).any()):
        raise RuntimeError("ZeroDivisionError")
    return RoundedDiv.apply(a, b, mode=mode)


def floor_divide(input, other):
    """input // other rounded toward minus infinity (Python's rule); not differentiable."""
    return _rounded_div("floor_divide", input, other, "floor_divide")


def remainder(input, other):
    """input % other with the sign of other (Python's rule), as torch.remainder."""
    a, b = binary_operands("remainder", input, other)
    if a.dtype.kind == "b":
        raise NotImplementedError("\"remainder_cpu\" not implemented for 'Bool'")
    if a.dtype.kind in "iu" and bool((b.array == 0).any()):
        raise RuntimeError("ZeroDivisionError")
    return Remainder.apply(a, b)


def pow(input, exponent):
    """input ** exponent elementwise (either may be a number)."""
    return Pow.apply(*binary_operands("pow", input, exponent))


def maximum(input, other):
    """The elementwise larger of two tensors (NaN propagates)."""
    _require_tensors("maximum", input, other)
    return Maximum.apply(*binary_operands("maximum", input, other), largest=True)


def minimum(input, other):
    """The elementwise smaller of two tensors (NaN propagates)."""
    _require_tensors("minimum", input, other)
    return Maximum.apply(*binary_operands("minimum", input, other), largest=False)


def _require_tensors(op, *values):
    for v in values:
        if not isinstance(v, Tensor):
            raise TypeError(f"{op}(): argument 'other' must be Tensor, not {type(v).__name__}")


def matmul(input, other):
    """Matrix product with NumPy's rules (1-D operands, broadcast batch axes)."""
    a, b = input, other
    a, b = (as_tensor(a, b, "matmul"), b) if not isinstance(a, Tensor) else (a, b)
    if a.dtype != b.dtype:
        raise RuntimeError(f"matmul: expected both operands to have the same dtype, but got "
                           f"{a.dtype} and {b.dtype}")
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"matmul: both arguments to matmul need to be at least 1D, got "
                           f"shapes {a.shape} and {b.shape}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise RuntimeError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied: "
                           f"the last dimension of the first ({k_a}) must equal the "
                           f"{'first' if b.ndim == 1 else 'second-to-last'} of the second ({k_b})")
    return Matmul.apply(a, b)


def mm(input, mat2):
    """The product of two matrices (2-D only, as torch.mm)."""
    if input.ndim != 2 or mat2.ndim != 2:
        raise RuntimeError(f"mm: expected 2-D tensors, got shapes {input.shape} and "
                           f"{mat2.shape}")
    return matmul(input, mat2)


def bmm(input, mat2):
    """Batched matrix product of (b, n, m) and (b, m, p) tensors (no broadcasting)."""
    if input.ndim != 3 or mat2.ndim != 3:
        raise RuntimeError(f"bmm: expected 3-D tensors, got shapes {input.shape} and "
                           f"{mat2.shape}")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {input.shape} and {mat2.shape}")
    return matmul(input, mat2)


def where(condition, input=None, other=None):
    """Elementwise choice: input where condition holds, else other (condition is not
    differentiated). where(condition) alone is nonzero(condition, as_tuple=True)."""
    cond = condition.array if isinstance(condition, Tensor) else condition
    if input is None and other is None:
        return tuple(Tensor(i.astype(np.int64)) for i in get_array_module(cond).nonzero(cond))
    a, b = input, other
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):   # where(c, 1.0, 0)
        a = as_tensor(a, Tensor(cond), "where", result_type(a, b))
    a, b = binary_operands("where", a, b)
    try:
        np.broadcast_shapes(tuple(cond.shape), a.shape, b.shape)
    except ValueError:
        raise RuntimeError(f"where: condition {tuple(cond.shape)} and operands {a.shape}, "
                           f"{b.shape} cannot be broadcast together") from None
    return Where.apply(Tensor(cond.astype(bool)), a, b)


def masked_fill(input, mask, value):
    """value where mask (a bool tensor broadcast to input's shape) holds, input elsewhere;
    in input's dtype (a float value in an int tensor is truncated, as torch)."""
    if not isinstance(mask, Tensor) or mask.dtype != np.bool_:
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask "
                           f"with dtype {getattr(mask, 'dtype', type(mask).__name__)}")
    if isinstance(value, Tensor) and value.ndim != 0:
        raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, "
                           f"but got tensor with {value.ndim} dimension(s).")
    if isinstance(value, Tensor):
        fill = cast(value, input.dtype)
    else:
        fill = Tensor(get_array_module(input.array).asarray(value).astype(input.dtype))
    out = where(mask, fill, input)
    if out.shape != input.shape:
        raise RuntimeError(f"masked_fill: the mask of shape {mask.shape} must broadcast "
                           f"to the tensor's shape {input.shape}")
    return out


def neg(input):
    """-input (refused for bool, as torch)."""
    if input.dtype.kind == "b":
        raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. "
                           "If you are trying to invert a mask, use the `~` or "
                           "`logical_not()` operator instead.")
    return Neg.apply(input)


def exp(input):
    """e ** input; integer tensors give the default float dtype."""
    return Exp.apply(_as_float(input))


def log(input):
    """The natural logarithm; integer tensors give the default float dtype."""
    return Log.apply(_as_float(input))


def sqrt(input):
    """The square root; integer tensors give the default float dtype."""
    return Sqrt.apply(_as_float(input))


def _as_float(a):
    """Integer and bool tensors go through exp/log/sqrt in the default float, as torch."""
    return a if a.dtype.kind == "f" else cast(a, get_default_dtype())


def abs(input):
    """|input| (refused for bool, as torch)."""
    if input.dtype.kind == "b":
        raise NotImplementedError("\"abs_cpu\" not implemented for 'Bool'")
    return Abs.apply(input)


def clamp(input, min=None, max=None):
    """Each element limited to [min, max] (bounds numbers or tensors)."""
    a = input
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
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


clip = clamp


def clone(input):
    """A copy of input with memory of its own; the gradient passes through unchanged."""
    return Clone.apply(input)


def cast(a, dtype):
    """a in dtype (a itself when it already is); the gradient comes back in a's dtype."""
    dtype = np.dtype(dtype)
    return a if dtype == a.dtype else Cast.apply(a, dtype=dtype)


def _sum_dtype(a, dtype):
    """torch's rule: bool and integer tensors sum (and multiply) in int64."""
    if dtype is not None:
        return np.dtype(dtype)
    return np.dtype(np.int64) if a.dtype.kind in "biu" else a.dtype


def _reduce_dims(dim, ndim):
    """The axes a reduction runs over: None and () mean all of them, as torch."""
    if isinstance(dim, (tuple, list)) and len(dim) == 0:
        return None
    return _axes(dim, ndim)


def sum(input, dim=None, keepdim=False, *, dtype=None):
    """The sum over dim (all dims by default); integer and bool tensors sum in int64."""
    a = cast(input, _sum_dtype(input, dtype))
    return Sum.apply(a, axes=_reduce_dims(dim, a.ndim), keepdim=keepdim)


def mean(input, dim=None, keepdim=False, *, dtype=None):
    """The mean over dim; as torch, an integer tensor needs dtype= (a float dtype)."""
    a = input if dtype is None else cast(input, dtype)
    if a.dtype.kind != "f":
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either "
                           f"a floating point or complex dtype. Got: {a.dtype}")
    return Mean.apply(a, axes=_reduce_dims(dim, a.ndim), keepdim=keepdim)


def _correction(dim, unbiased, correction):
    """torch's var/std arguments: (dim, unbiased, keepdim) or (dim, correction=)."""
    if isinstance(dim, bool):                   # var(x, True): unbiased given first
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise RuntimeError("var/std: cannot give both unbiased and correction")
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    return dim, correction


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """The variance over dim, divided by n - correction (n - 1 by default)."""
    if input.dtype.kind != "f":
        raise RuntimeError("std and var only support floating point and complex dtypes")
    dim, correction = _correction(dim, unbiased, correction)
    return Var.apply(input, axes=_reduce_dims(dim, input.ndim), keepdim=keepdim,
                     correction=correction)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """The standard deviation: sqrt(var) with var's arguments."""
    return sqrt(var(input, dim, unbiased, keepdim, correction=correction))


MaxResult = collections.namedtuple("max", ["values", "indices"])
MinResult = collections.namedtuple("min", ["values", "indices"])


def _max_or_min(a, dim, keepdim, largest):
    name = "max" if largest else "min"
    if isinstance(dim, Tensor):                   # torch.max(a, b): the elementwise max
        return maximum(a, dim) if largest else minimum(a, dim)
    if dim is None and a.numel() == 0:
        raise RuntimeError(f"{name}(): Expected reduction dim to be specified for "
                           f"input.numel() == 0. Specify the reduction dim with the 'dim' "
                           f"argument (the tensor has shape {a.shape}).")
    if dim is None:
        return Max.apply(a, largest=largest)
    (axis,) = _axes(dim, a.ndim)
    xp = get_array_module(a.array)
    if a.shape[axis] == 0:
        raise IndexError(f"{name}(): Expected reduction dim {axis} to have non-zero size "
                         f"(shape {a.shape})")
    index = xp.expand_dims((xp.argmax if largest else xp.argmin)(a.array, axis=axis), axis)
    values = MaxDim.apply(a, index=index, dim=axis, keepdim=keepdim)
    indices = Tensor((index if keepdim else xp.squeeze(index, axis=axis)).astype(np.int64))
    return (MaxResult if largest else MinResult)(values, indices)


def max(input, dim=None, keepdim=False):
    """The largest value; with `dim`, (values, indices) along it; with a tensor as the
    second argument, the elementwise maximum (as torch.max). A NaN counts as largest."""
    return _max_or_min(input, dim, keepdim, largest=True)


def min(input, dim=None, keepdim=False):
    """The smallest value; with `dim`, (values, indices) along it, as torch.min."""
    return _max_or_min(input, dim, keepdim, largest=False)
