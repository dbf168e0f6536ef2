"""Weight initialisation, in place, with torch.nn.init's names, fans and gains.

Values are drawn on the CPU from NumPy's global generator (seeded by
tinyres.manual_seed), cast to the tensor's dtype and copied into its array, on whatever
device it lives. Each function returns the tensor it filled.

Why the scale matters for a deep network: with fan_in inputs of unit variance, a weight
of variance gain**2 / fan_in keeps the output's variance at one, layer after layer
(He et al. 2015 for ReLU: gain = sqrt(2), because ReLU zeroes half of the signal).
"""
import math

import numpy as np

from tinyres import backend
from tinyres.autograd import no_grad
from tinyres.tensor import Tensor

_LINEAR_GAIN = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                "conv_transpose2d", "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The gain torch recommends for a nonlinearity: 1 for linear layers and sigmoid,
    5/3 for tanh, sqrt(2) for relu, sqrt(2 / (1 + slope**2)) for leaky_relu
    (slope = param, default 0.01), 3/4 for selu."""
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    """fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field, where
    the receptive field is the product of shape[2:] (kh * kw for a conv weight)."""
    shape = tensor.shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out can not be computed for a tensor with fewer "
                         f"than 2 dimensions, got shape {shape}")
    receptive_field = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive_field, shape[0] * receptive_field


def _correct_fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor, values):
    """Copy CPU values into the tensor, in place and unrecorded (as torch.nn.init does under
    no_grad), keeping its dtype and device; its version counter moves on."""
    array = backend.to_device(np.asarray(values, dtype=tensor.dtype), tensor.device)
    with no_grad():
        return tensor.copy_(Tensor(array))


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with draws from U(a, b)."""
    return _fill(tensor, np.random.uniform(a, b, size=tensor.shape))


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with draws from N(mean, std**2)."""
    return _fill(tensor, np.random.normal(mean, std, size=tensor.shape))


def constant_(tensor, val):
    """Fill with one value."""
    return _fill(tensor, np.full(tensor.shape, val))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0):
    """Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """Glorot: N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def _kaiming_std(tensor, a, mode, nonlinearity):
    fan = _correct_fan(tensor, mode)
    if fan == 0:
        raise ValueError(f"kaiming init: a tensor of shape {tensor.shape} has zero fan")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """He: U(-bound, bound) with bound = gain * sqrt(3 / fan). With a = sqrt(5) (the
    Conv2d/Linear default) this is U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """He: N(0, std**2) with std = gain / sqrt(fan). torchvision's ResNet uses
    mode='fan_out', nonlinearity='relu' for its convolutions."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))
