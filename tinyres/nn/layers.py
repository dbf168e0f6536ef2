"""The layers of a ResNet and a few more (dropout, pooling, resampling), with
torch.nn's names, arguments, parameters and buffers.

Each layer holds its weights and calls one op from tinyres.nn.functional in forward().
Parameter and buffer names (weight, bias, running_mean, running_var,
num_batches_tracked) are torch's, so state_dict keys match between the two engines.
"""
import math

import numpy as np

from tinyres import backend
from tinyres.functional.conv import pair, transposed_out_size
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


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _conv_groups(layer, in_channels, out_channels, groups):
    """torch's checks of groups in a conv layer's constructor (ValueError)."""
    groups = as_int(groups, "groups", layer)
    if groups <= 0:
        raise ValueError(f"{layer}: groups must be a positive integer, got {groups}")
    if in_channels % groups:
        raise ValueError(f"{layer}: in_channels must be divisible by groups, got "
                         f"in_channels={in_channels}, groups={groups}")
    if out_channels % groups:
        raise ValueError(f"{layer}: out_channels must be divisible by groups, got "
                         f"out_channels={out_channels}, groups={groups}")
    return groups


def _conv_padding(layer, padding, stride):
    """An int or pair as a pair, or the string 'same' / 'valid' (torch's ValueErrors)."""
    if not isinstance(padding, str):
        return pair(padding, "padding", layer)
    if padding not in ("same", "valid"):
        raise ValueError(f"{layer}: invalid padding string {padding!r}, should be one of "
                         f"{{'valid', 'same'}}")
    if padding == "same" and stride != (1, 1):
        raise ValueError(f"{layer}: padding='same' is not supported for strided "
                         f"convolutions, got stride {stride}")
    return padding


def _conv_extra_repr(layer, output_padding=(0, 0)):
    """torch's extra_repr of a conv layer: what differs from the defaults."""
    s = (f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
         f"stride={layer.stride}")
    if layer.padding != (0, 0):
        s += f", padding={layer.padding}"
    if layer.dilation != (1, 1):
        s += f", dilation={layer.dilation}"
    if output_padding != (0, 0):
        s += f", output_padding={output_padding}"
    if layer.groups != 1:
        s += f", groups={layer.groups}"
    if layer.bias is None:
        s += ", bias=False"
    if layer.padding_mode != "zeros":
        s += f", padding_mode={layer.padding_mode}"
    return s


class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share: the arguments, the parameters, their init."""

    def __init__(self, name, in_channels, out_channels, kernel_size, stride, padding,
                 dilation, groups, bias, padding_mode, weight_channels, device, dtype):
        super().__init__()
        self.in_channels = as_int(in_channels, "in_channels", name)
        self.out_channels = as_int(out_channels, "out_channels", name)
        self.groups = _conv_groups(name, self.in_channels, self.out_channels, groups)
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.padding = _conv_padding(name, padding, self.stride)
        self.dilation = pair(dilation, "dilation", name)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {set(PADDING_MODES)}, "
                             f"but got padding_mode={padding_mode!r}")
        self.padding_mode = padding_mode
        first, second = weight_channels(self.in_channels, self.out_channels, self.groups)
        self.weight = _empty_parameter((first, second) + self.kernel_size, device, dtype)
        if bias:
            self.bias = _empty_parameter((self.out_channels,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """torch's default: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), ...),
        fan_in = weight.shape[1] * kh * kw (the channels one output reads, per group)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _fan_in_bias_(self.bias, self.weight)


class Conv2d(_ConvNd):
    """2-D convolution; weight (out_channels, in_channels/groups, kh, kw), bias
    (out_channels,). padding_mode 'reflect', 'replicate' or 'circular' pads the input
    with F.pad first and convolves with no padding (as torch)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None):
        super().__init__("Conv2d", in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, bias, padding_mode,
                         lambda i, o, g: (o, i // g), device, dtype)

    def _explicit_padding(self):
        """The (left, right, top, bottom) widths F.pad adds for a padding_mode."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            (th, tw) = totals
            return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        ph, pw = self.padding
        return (pw, pw, ph, ph)

    def forward(self, x):
        x = check_input(self, x)
        if self.padding_mode != "zeros":
            return F.conv2d(F.pad(x, self._explicit_padding(), mode=self.padding_mode),
                            self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        return _conv_extra_repr(self)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution, the adjoint of Conv2d with the same arguments; weight
    (in_channels, out_channels/groups, kh, kw), bias (out_channels,). forward takes torch's
    output_size, which picks the output_padding."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        if padding_mode != "zeros":
            raise ValueError(f'ConvTranspose2d: only "zeros" padding mode is supported, '
                             f"got {padding_mode!r}")
        super().__init__("ConvTranspose2d", in_channels, out_channels, kernel_size, stride,
                         pair(padding, "padding", "ConvTranspose2d"), dilation, groups, bias,
                         padding_mode, lambda i, o, g: (i, o // g), device, dtype)
        self.output_padding = pair(output_padding, "output_padding", "ConvTranspose2d")

    def _output_padding(self, x, output_size):
        """output_padding, or the one that gives output_size (torch's rule and error)."""
        if output_size is None:
            return self.output_padding
        size = tuple(as_int(s, "output_size", "ConvTranspose2d") for s in output_size)[-2:]
        smallest = transposed_out_size(x.shape[-2:], self.kernel_size, self.stride,
                                         self.padding, (0, 0), self.dilation)
        largest = tuple(m + s - 1 for m, s in zip(smallest, self.stride))
        if len(size) != 2 or any(not lo <= s <= hi for s, lo, hi in
                                 zip(size, smallest, largest)):
            raise ValueError(f"ConvTranspose2d: requested an output size of {size}, but "
                             f"valid sizes range from {smallest} to {largest} (for an input "
                             f"of {tuple(x.shape[-2:])})")
        return tuple(s - m for s, m in zip(size, smallest))

    def forward(self, x, output_size=None):
        x = check_input(self, x)
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(x, output_size), self.groups,
                                  self.dilation)

    def extra_repr(self):
        return _conv_extra_repr(self, self.output_padding)


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
        momentum = self._momentum_this_step()
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return self._normalize(x, self.running_mean if track else None,
                               self.running_var if track else None, use_batch_stats, momentum)

    def _momentum_this_step(self):
        """The running statistics' momentum for this call; a training call that tracks
        statistics counts its batch (momentum=None: the cumulative average, 1/batches, as a
        0-d float64 array computed where the count is, so that nothing is read from a GPU)."""
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.array += 1
            self.num_batches_tracked._version_counter.value += 1
            if self.momentum is None:
                momentum = 1.0 / self.num_batches_tracked.array.astype(np.float64)
        return momentum

    def _normalize(self, x, running_mean, running_var, use_batch_stats, momentum):
        return F.batch_norm(x, running_mean, running_var, self.weight, self.bias,
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
    """Max over kh x kw windows (torch.nn.MaxPool2d; stride defaults to kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        return F.max_pool2d(check_input(self, x), self.kernel_size, self.stride, self.padding,
                            self.dilation, ceil_mode=self.ceil_mode,
                            return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over kh x kw windows (torch.nn.AvgPool2d: count_include_pad, ceil_mode and
    divisor_override as F.avg_pool2d)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x):
        return F.avg_pool2d(check_input(self, x), self.kernel_size, self.stride, self.padding,
                            self.ceil_mode, self.count_include_pad, self.divisor_override)

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
