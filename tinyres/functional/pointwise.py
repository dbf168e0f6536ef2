"""Pointwise ops beyond math.py: floor, ceil, round, trunc and sign (piecewise constant:
a zero gradient, as torch), square and rsqrt (made of differentiable ops)."""
from tinyres.autograd import Function
from tinyres.backend import get_array_module
from tinyres.functional.math import mul, pow


class Stepwise(Function):
    @staticmethod
    def forward(ctx, a, how, decimals=0):
        xp = get_array_module(a)
        if how == "round":
            return xp.round(a, decimals)       # halves to even, as torch.round
        return getattr(xp, how)(a)

    @staticmethod
    def backward(ctx, grad_out):
        # floor, ceil, round, trunc and sign are piecewise constant: d/da = 0
        return get_array_module(grad_out).zeros_like(grad_out)


def _stepwise(input, how, decimals=0):
    if input.dtype.kind == "b" and how != "sign":
        raise NotImplementedError(f"\"{how}\" not implemented for 'Bool'")
    if input.dtype.kind in "iub" and how != "sign":
        return input.clone()           # an integer is its own floor, ceil, round, trunc
    return Stepwise.apply(input, how=how, decimals=decimals)


def floor(input):
    """The largest integer <= each element (integers pass unchanged)."""
    return _stepwise(input, "floor")


def ceil(input):
    """The smallest integer >= each element (integers pass unchanged)."""
    return _stepwise(input, "ceil")


def round(input, *, decimals=0):
    """Round half to even (as torch), to `decimals` decimal places."""
    return _stepwise(input, "round", decimals)


def trunc(input):
    """Each element rounded toward zero (integers pass unchanged)."""
    return _stepwise(input, "trunc")


def sign(input):
    """-1, 0 or 1 by the sign of each element (bool stays bool)."""
    return _stepwise(input, "sign") if input.dtype.kind != "b" else input.clone()


def square(input):
    """input * input (integers stay integers, bool becomes int64, as torch)."""
    if input.dtype.kind == "b":
        return mul(input.long(), input.long())
    return mul(input, input)


def rsqrt(input):
    """1 / sqrt(input), in the default float for integer inputs."""
    from tinyres.functional.math import _as_float
    return pow(_as_float(input), -0.5)

