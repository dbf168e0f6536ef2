"""The layers of a ResNet and a few more (dropout, pooling, resampling), with
torch.nn's names, arguments, parameters and buffers.

Each layer holds its weights and calls one op from tinyres.nn.functional in forward().
Parameter and buffer names (weight, bias, running_mean, running_var,
num_batches_tracked) are torch's, so state_dict keys match between the two engines.
"""
import math

import numpy as np

from tinyres import backend
from tinyres.functional.conv import pair
from tinyres.functional.shape import as_int
from tinyres.nn import functional as F
from tinyres.nn import init
from tinyres.nn.module import Module, Parameter
from tinyres.tensor import Tensor, get_default_dtype


def _empty_parameter(shape, device, dtype):
    """A Parameter of zeros of the given shape; the layer's reset_parameters fills it."""
    dtype = np.dtype(dtype or get_default_dtype())
    data = backend.new_array(device, lambda xp: xp.zeros(shape, dtype=dtype))
    return Parameter(data)


def _buffer(values, device):
    return Tensor(backend.to_device(values, backend.check_device(device or "cpu")))


def check_input(layer, x, name="input"):
    """Raise TypeError unless x is a Tensor, naming the layer and the type it got (torch:
    "relu(): argument 'input' (position 1) must be Tensor, not numpy.ndarray")."""
    if not isinstance(x, Tensor):
        kind = type(x)
        kind = kind.__name__ if kind.__module__ == "builtins" else \
            f"{kind.__module__.split('.')[0]}.{kind.__name__}"
        raise TypeError(f"{type(layer).__name__}: argument '{name}' must be Tensor, not "
                        f"{kind} (tinyres.tensor(...) makes one)")
    return x


def _fan_in_bias_(bias, weight):
    """torch's bias default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    init.uniform_(bias, -bound, bound)


class Conv2d(Module):
    """2-D convolution; weight (out_channels, in_channels, kh, kw), bias (out_channels,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None):
        super().__init__()
        if dilation not in (1, (1, 1)) or groups != 1 or padding_mode != "zeros":
            raise NotImplementedError("Conv2d: only dilation=1, groups=1 and "
                                      "padding_mode='zeros' are supported")
        self.in_channels = as_int(in_channels, "in_channels", "Conv2d")
        self.out_channels = as_int(out_channels, "out_channels", "Conv2d")
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2d")
        self.stride = pair(stride, "stride", "Conv2d")
        self.padding = pair(padding, "padding", "Conv2d")
        self.weight = _empty_parameter((self.out_channels, self.in_channels) + self.kernel_size,
                                       device, dtype)
        if bias:
            self.bias = _empty_parameter((self.out_channels,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _fan_in_bias_(self.bias, self.weight)

    def forward(self, x):
        return F.conv2d(check_input(self, x), self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Linear(Module):
    """y = x @ weight.T + bias; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = as_int(in_features, "in_features", "Linear")
        self.out_features = as_int(out_features, "out_features", "Linear")
        self.weight = _empty_parameter((self.out_features, self.in_features), device, dtype)
        if bias:
            self.bias = _empty_parameter((self.out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _fan_in_bias_(self.bias, self.weight)

    def forward(self, x):
        return F.linear(check_input(self, x), self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class _BatchNorm(Module):
    """Batch norm over channel dim 1. Training: normalise by the batch statistics and
    update the running ones; evaluation: normalise by the running statistics."""

    expected_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        num_features = as_int(num_features, "num_features", type(self).__name__)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if affine:
            self.weight = _empty_parameter((num_features,), device, dtype)
        if affine and bias:
            self.bias = _empty_parameter((num_features,), device, dtype)
        if track_running_stats:
            float_dtype = np.dtype(dtype or get_default_dtype())
            self.register_buffer("running_mean",
                                 _buffer(np.zeros(num_features, float_dtype), device))
            self.register_buffer("running_var",
                                 _buffer(np.ones(num_features, float_dtype), device))
            self.register_buffer("num_batches_tracked",
                                 _buffer(np.array(0, dtype=np.int64), device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.array[...] = 0
            self.running_var.array[...] = 1
            self.num_batches_tracked.array[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def _check_input_dim(self, x):
        if x.ndim not in self.expected_dims:
            wanted = " or ".join(f"{d}D" for d in self.expected_dims)
            raise ValueError(f"{type(self).__name__}: expected {wanted} input "
                             f"(got {x.ndim}D input)")

    def forward(self, x):
        self._check_input_dim(check_input(self, x))
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.array += 1
            self.num_batches_tracked._version_counter.value += 1
            if self.momentum is None:      # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if track else None,
                            self.running_var if track else None, self.weight, self.bias,
                            use_batch_stats, momentum, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) inputs, statistics over N, H and W."""

    expected_dims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, C) or (N, C, L) inputs, statistics over N (and L)."""

    expected_dims = (2, 3)


class ReLU(Module):
    """max(x, 0); with inplace=True the result is written into x (Tensor.relu_)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.relu(check_input(self, x), inplace=self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class MaxPool2d(Module):
    """Max over kh x kw windows (stride defaults to kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        if dilation != 1 or ceil_mode:
            raise NotImplementedError("MaxPool2d: only dilation=1 and ceil_mode=False")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode

    def forward(self, x):
        return F.max_pool2d(check_input(self, x), self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over kh x kw windows, padding counted (torch's count_include_pad=True)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def forward(self, x):
        return F.avg_pool2d(check_input(self, x), self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average to a fixed output size; output_size=1 is a ResNet's global average pool."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(check_input(self, x), self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Maximum over torch's adaptive windows, to a fixed output size."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, x):
        return F.adaptive_max_pool2d(check_input(self, x), self.output_size,
                                     self.return_indices)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Merge dims start_dim..end_dim into one: (N, C, 1, 1) -> (N, C) by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(check_input(self, x), self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Zero each element with probability p in training, scaling the rest by 1/(1-p)."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        return F.dropout(check_input(self, x), self.p, self.training, self.inplace)


class Dropout2d(Dropout):
    """Zero whole channels (one draw per sample and channel) in training, scaling the
    rest by 1/(1-p)."""

    def forward(self, x):
        return F.dropout2d(check_input(self, x), self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Identity(Module):
    """Returns its input, whatever it is (as torch's); takes and ignores any arguments (a
    placeholder layer)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Unflatten(Module):
    """Split dim into unflattened_size (one entry may be -1): (N, 10) -> (N, 2, 5)."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        check_input(self, x)
        dim = self.dim % x.ndim if x.ndim else self.dim
        return x.reshape(x.shape[:dim] + self.unflattened_size + x.shape[dim + 1:])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Upsample(Module):
    """F.interpolate as a layer: a fixed output size or scale_factor, and a mode."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size, self.mode, self.align_corners = size, mode, align_corners
        if isinstance(scale_factor, (tuple, list)):
            self.scale_factor = tuple(float(s) for s in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor else None
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, x):
        return F.interpolate(check_input(self, x), self.size, self.scale_factor, self.mode,
                             self.align_corners, self.recompute_scale_factor)

    def extra_repr(self):
        info = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None
                else f"size={self.size!r}")
        return info + f", mode={self.mode!r}"
