"""The shortcut variants of He et al. (2016, "Identity Mappings in Deep Residual Networks",
Table 1 and Fig. 2): what joins a block's branch F(x) to its input x. Each is a small module
whose forward is the formula, ending in `residual_add`:

    IdentityShortcut      y = F(x) + x
    ConstantScaling       y = F(x) + lambda x          (or (1 - lambda) F(x) + lambda x)
    ExclusiveGating       y = g(x) F(x) + (1 - g(x)) x,      g(x) = sigmoid(W_g x + b_g)
    ShortcutOnlyGating    y = F(x) + (1 - g(x)) x
    ConvShortcut          y = F(x) + W_s x                   (W_s a 1x1 convolution)
    DropoutShortcut       y = F(x) + m x,  m ~ Bernoulli(1 - p) (training); F(x) + (1 - p) x

Every join is called as `join(f, x, source)`: f the branch's output, x the shortcut's
input, and `source` the block's input as the branch sees it, which the gates read. The gate
belongs to the branch's side of the probe's split, so the gradient along the shortcut path
is exactly what `shortcut_grad` states: the shortcut's factor h'(x) of the paper's eq. 8
(dL/dx_l = dL/dx_L prod_i h_i' + terms through branches), applied to a gradient.
"""
import numpy as np

import tinyres
from tinyres import nn
from tinyres.functional.activation import sigmoid
from tinyres.functional.residual import residual_add
from tinyres.models.resnet import conv1x1


def _array(t):
    """A tensor's values as a NumPy array (float64)."""
    return np.asarray(t.numpy(), dtype=np.float64)


class IdentityShortcut(nn.Module):
    """y = F(x) + x: the shortcut's factor is 1."""

    scale = 1.0

    def forward(self, f, x, source=None):
        return residual_add(f, x)

    def shortcut_grad(self, grad):
        """dL/dx along the shortcut, from dL/dy: grad itself."""
        return grad


class ConstantScaling(nn.Module):
    """y = F(x) + lambda x, or with `scale_branch` (1 - lambda) F(x) + lambda x: the
    shortcut's factor is lambda, so L blocks multiply the direct path by lambda^L."""

    def __init__(self, lam=0.5, scale_branch=False):
        super().__init__()
        self.scale = float(lam)
        self.scale_branch = scale_branch

    def forward(self, f, x, source=None):
        if self.scale_branch:
            f = (1.0 - self.scale) * f
        return residual_add(f, x, self.scale)

    def shortcut_grad(self, grad):
        """lambda * grad."""
        return self.scale * grad

    def extra_repr(self):
        return f"lam={self.scale}, scale_branch={self.scale_branch}"


class Gate(nn.Module):
    """g(x) = sigmoid(W_g x + b_g): a 1x1 convolution with a bias (initialised to
    `bias`; the paper's -6 starts the gates nearly shut, g = 0.0025), then a sigmoid."""

    def __init__(self, planes, bias=0.0):
        super().__init__()
        self.conv = nn.Conv2d(planes, planes, kernel_size=1, bias=True)
        nn.init.constant_(self.conv.bias, bias)

    def forward(self, x):
        return sigmoid(self.conv(x))


class ExclusiveGating(nn.Module):
    """y = g(x) F(x) + (1 - g(x)) x (the gates of Highway networks): the shortcut's
    factor is 1 - g(x), elementwise."""

    def __init__(self, planes, gate_bias=0.0):
        super().__init__()
        self.gate = Gate(planes, gate_bias)
        self.last_gate = None
        self.scale = float("nan")

    def forward(self, f, x, source):
        g = self.gate(source)
        self.last_gate = g.detach()
        return residual_add(g * f, (1.0 - g) * x)

    def shortcut_grad(self, grad):
        """(1 - g(x)) * grad, with the gate of the last forward."""
        return (1.0 - _array(self.last_gate)) * grad


class ShortcutOnlyGating(ExclusiveGating):
    """y = F(x) + (1 - g(x)) x: the gate on the shortcut only; its factor is 1 - g(x), as
    for ExclusiveGating (whose gate and shortcut_grad it shares)."""

    def forward(self, f, x, source):
        g = self.gate(source)
        self.last_gate = g.detach()
        return residual_add(f, (1.0 - g) * x)


class ConvShortcut(nn.Module):
    """y = F(x) + W_s x, W_s a 1x1 convolution (no bias): the shortcut's factor is the
    matrix W_s, so the direct path carries prod_i W_i^T."""

    def __init__(self, planes):
        super().__init__()
        self.conv = conv1x1(planes, planes)
        self.scale = float("nan")

    def forward(self, f, x, source=None):
        return residual_add(f, self.conv(x))

    def shortcut_grad(self, grad):
        """W_s^T grad, channel by channel at every pixel."""
        w = _array(self.conv.weight)[:, :, 0, 0]
        return np.einsum("oi,nohw->nihw", w, grad)


class DropoutShortcut(nn.Module):
    """y = F(x) + m x with m ~ Bernoulli(1 - p) per element while training, and
    F(x) + (1 - p) x in eval mode: dropout without rescaling, as the paper uses it, so the
    shortcut's factor is 1 - p in expectation (0.5 for the paper's p = 0.5) and random."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropoutShortcut: p must be in [0, 1), got {p}")
        self.p = p
        self.last_mask = None
        self.scale = 1.0 - p

    def forward(self, f, x, source=None):
        if not self.training:
            self.last_mask = None
            return residual_add(f, x, 1.0 - self.p)
        keep = tinyres.rand(*x.shape, dtype=x.dtype, device=x.device) >= self.p
        m = keep.astype(x.dtype)
        self.last_mask = m
        return residual_add(f, m * x)

    def shortcut_grad(self, grad):
        """m * grad (training), (1 - p) * grad (eval)."""
        if self.last_mask is None:
            return (1.0 - self.p) * grad
        return _array(self.last_mask) * grad

    def extra_repr(self):
        return f"p={self.p}"


SHORTCUTS = ("identity", "constant_scaling", "exclusive_gating", "shortcut_only_gating",
             "conv", "dropout")


def make_shortcut(name, planes, lam=0.5, scale_branch=False, gate_bias=0.0, p=0.5):
    """The join named `name` (one of SHORTCUTS) for a block of `planes` channels."""
    if name == "identity":
        return IdentityShortcut()
    if name == "constant_scaling":
        return ConstantScaling(lam, scale_branch)
    if name == "exclusive_gating":
        return ExclusiveGating(planes, gate_bias)
    if name == "shortcut_only_gating":
        return ShortcutOnlyGating(planes, gate_bias)
    if name == "conv":
        return ConvShortcut(planes)
    if name == "dropout":
        return DropoutShortcut(p)
    raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {name!r}")
