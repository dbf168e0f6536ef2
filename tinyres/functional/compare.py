"""Comparisons and tests: eq/ne/lt/le/gt/ge (boolean tensors outside the graph), isclose,
allclose, equal, is_tensor, is_floating_point, numel, and the bitwise operators & | ^ ~ of
bool and integer tensors. None of them has a gradient."""
import numpy as np

from tinyres.backend import get_array_module
from tinyres.functional.math import binary_operands
from tinyres.tensor import Tensor


_COMPARE = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
            "eq": np.equal, "ne": np.not_equal}


def compare(a, b, how):
    """Elementwise comparison, after promoting both operands to result_type (so an int
    tensor < 2.5 compares against 2.5, not 2); a boolean tensor outside the graph."""
    a, b = binary_operands(how, a, b)
    xp = get_array_module(a.array)
    return Tensor(getattr(xp, _COMPARE[how].__name__)(a.array, b.array))


def eq(input, other):
    """input == other elementwise: a bool tensor."""
    return compare(input, other, "eq")


def ne(input, other):
    """input != other elementwise: a bool tensor."""
    return compare(input, other, "ne")


def lt(input, other):
    """input < other elementwise: a bool tensor."""
    return compare(input, other, "lt")


def le(input, other):
    """input <= other elementwise: a bool tensor."""
    return compare(input, other, "le")


def gt(input, other):
    """input > other elementwise: a bool tensor."""
    return compare(input, other, "gt")


def ge(input, other):
    """input >= other elementwise: a bool tensor."""
    return compare(input, other, "ge")


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|input - other| <= atol + rtol |other| elementwise (equal infinities are close)."""
    if not isinstance(other, Tensor):
        raise TypeError(f"isclose(): argument 'other' must be Tensor, not "
                        f"{type(other).__name__}")
    if input.dtype != other.dtype:
        raise RuntimeError(f"isclose: {input.dtype} did not match {other.dtype}")
    xp = get_array_module(input.array)
    return Tensor(xp.isclose(input.array, other.array, rtol=rtol, atol=atol,
                             equal_nan=equal_nan))


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """True when every element is isclose (a Python bool)."""
    return bool(isclose(input, other, rtol, atol, equal_nan).array.all())


def equal(input, other):
    """True when both have one shape and equal values (a Python bool)."""
    if input.shape != other.shape:
        return False
    return bool(compare(input, other, "eq").array.all())


def is_tensor(obj, /):
    """True for a tinyres Tensor."""
    return isinstance(obj, Tensor)


def is_floating_point(input):
    """True for a tensor of a floating-point dtype."""
    return input.dtype.kind == "f"


def numel(input):
    """How many elements input holds."""
    return input.numel()


def bitwise(input, other, how):
    """a & b, a | b, a ^ b of bool or integer tensors (logical for bools), no gradient."""
    a, b = binary_operands(f"bitwise_{how}", input, other)
    if a.dtype.kind == "f":
        raise NotImplementedError(f"\"bitwise_{how}_cpu\" not implemented for "
                                  f"'{a.dtype}'")
    xp = get_array_module(a.array)
    return Tensor(getattr(xp, f"bitwise_{how}")(a.array, b.array))


def bitwise_not(input):
    """~a: logical not of a bool tensor, bitwise not of an integer one."""
    if input.dtype.kind == "f":
        raise TypeError(f"~ (bitwise_not) is only supported for integer and bool tensors, "
                        f"got {input.dtype}")
    return Tensor(get_array_module(input.array).invert(input.array))
