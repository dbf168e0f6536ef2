"""Per-sample normalisation layers: LayerNorm, GroupNorm, InstanceNorm2d, with torch's
arguments, parameter and buffer names (state_dict keys), initialisation and reprs."""
import warnings

from tinyres.functional.shape import as_int
from tinyres.nn import functional as F
from tinyres.nn import init
from tinyres.nn.layers import _BatchNorm, _empty_parameter, check_input
from tinyres.nn.module import Module


def _affine_parameters(module, shape, affine, bias, device, dtype):
    """weight (ones) and bias (zeros) of `shape` on `module` when affine (no bias when
    bias=False), else both None, as torch's LayerNorm and GroupNorm register them."""
    module.register_parameter("weight", None)
    module.register_parameter("bias", None)
    if affine:
        module.weight = _empty_parameter(shape, device, dtype)
        if bias:
            module.bias = _empty_parameter(shape, device, dtype)


def _reset_affine(module):
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class LayerNorm(Module):
    """Normalise over the last dims (normalized_shape) of each sample; weight (ones) and
    bias (zeros) of shape normalized_shape when elementwise_affine."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(as_int(n, "normalized_shape", "LayerNorm")
                                      for n in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        _affine_parameters(self, self.normalized_shape, elementwise_affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.layer_norm(check_input(self, input), self.normalized_shape, self.weight,
                            self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalise each group of num_channels // num_groups channels of each sample; weight
    (ones) and bias (zeros) per channel when affine."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        self.num_groups = as_int(num_groups, "num_groups", "GroupNorm")
        self.num_channels = as_int(num_channels, "num_channels", "GroupNorm")
        if self.num_groups <= 0 or self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: num_channels ({self.num_channels}) must be "
                             f"divisible by num_groups ({self.num_groups})")
        self.eps, self.affine = eps, affine
        _affine_parameters(self, (self.num_channels,), affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return F.group_norm(check_input(self, input), self.num_groups, self.weight,
                            self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")


class InstanceNorm2d(_BatchNorm):
    """Normalise each channel of each sample (N, C, H, W) or (C, H, W) over its positions.
    With track_running_stats, training updates running statistics (the batch average of
    the instances' statistics) and evaluation normalises by them, as torch."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)

    def _check_channels(self, input):
        feature_dim = input.ndim - 3
        if input.shape[feature_dim] == self.num_features:
            return
        if self.affine:
            raise ValueError(f"InstanceNorm2d: expected input's size at dim={feature_dim} to "
                             f"match num_features ({self.num_features}), but got: "
                             f"{input.shape[feature_dim]}.")
        warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You "
                      "can silence this warning by not passing in num_features, which is not "
                      "used because affine=False", UserWarning, stacklevel=3)

    def forward(self, input):
        check_input(self, input)
        if input.ndim not in (3, 4):
            raise ValueError(f"InstanceNorm2d: expected 3D or 4D input (got {input.ndim}D "
                             "input)")
        self._check_channels(input)
        x = input.unsqueeze(0) if input.ndim == 3 else input
        out = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                              self.training or not self.track_running_stats,
                              0.0 if self.momentum is None else self.momentum, self.eps)
        return out.squeeze(0) if input.ndim == 3 else out
