"""Batch norm folded into the layer before it, for inference (torch.nn.utils.fusion).

In evaluation a batch norm is a fixed affine map per channel,

    bn(z) = (z - running_mean) * w / sqrt(running_var + eps) + b = z * s + (b - running_mean * s)

so after a convolution z = W * x + c it can be folded into the convolution's weights:
W' = W * s (each output channel's filter scaled by its s) and c' = (c - running_mean) * s + b.
The folded convolution computes the same numbers (up to rounding) with one pass over
memory less per layer.

torch's four functions keep their names, signatures, errors and results here:
`fuse_conv_bn_eval`, `fuse_conv_bn_weights`, `fuse_linear_bn_eval`, `fuse_linear_bn_weights`.
`fold_batchnorm(model)` and `conv_bn_pairs(model)` are tinyres's own (torch's nearest is
torch.fx.experimental.optimization.fuse, which finds the pairs by symbolic tracing): they
find the pairs by running the model once on a small input and watching which tensor
each batch norm reads.
"""
import copy
import logging

import numpy as np

import tinyres
from tinyres.autograd import enable_grad, inference_mode
from tinyres.nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Identity, Linear
from tinyres.nn.module import Parameter
from tinyres.tensor import Tensor

__all__ = ["conv_bn_pairs", "fold_batchnorm", "fuse_conv_bn_eval", "fuse_conv_bn_weights",
           "fuse_linear_bn_eval", "fuse_linear_bn_weights"]

logger = logging.getLogger(__name__)

# (the layer, the batch norm that may follow it), exact types as torch's fuse() matches them
FOLDABLE = ((Conv2d, BatchNorm2d), (Linear, BatchNorm1d))


def _check_eval(op, first, bn):
    if first.training or bn.training:
        raise AssertionError(f"Fusion only for eval! ({op}: {type(first).__name__}.training="
                             f"{first.training}, {type(bn).__name__}.training={bn.training}; "
                             "call .eval() on both first)")


def _check_running_stats(bn):
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")


# ----- torch.nn.utils.fusion ------------------------------------------------------------
def fuse_conv_bn_eval(conv, bn, transpose=False):
    """A new convolution (a deep copy of `conv`) whose weight and bias fold in the
    evaluation-mode batch norm `bn` that follows it. Both must be in eval mode
    (AssertionError "Fusion only for eval!" otherwise) and `bn` must track running stats.
    transpose=True for a transposed convolution (its output channels are dim 1)."""
    _check_eval("fuse_conv_bn_eval", conv, bn)
    fused_conv = copy.deepcopy(conv)
    _check_running_stats(bn)
    fused_conv.weight, fused_conv.bias = fuse_conv_bn_weights(
        fused_conv.weight, fused_conv.bias, bn.running_mean, bn.running_var, bn.eps,
        bn.weight, bn.bias, transpose)
    return fused_conv


def fuse_conv_bn_weights(conv_w, conv_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b, transpose=False):
    """(weight, bias) Parameters of the convolution that equals conv then batch norm:
    weight = conv_w * s per output channel, bias = (conv_b - bn_rm) * s + bn_b, where
    s = bn_w / sqrt(bn_rv + bn_eps). A missing conv_b counts as zeros, a missing bn_w as
    ones and bn_b as zeros. Each result keeps its source's dtype; the weight requires grad
    when conv_w does, the bias when conv_b does (so never when conv_b is None), as torch."""
    conv_weight_dtype = conv_w.dtype
    conv_bias_dtype = conv_b.dtype if conv_b is not None else conv_weight_dtype
    if conv_b is None:
        conv_b = tinyres.zeros_like(bn_rm)
    if bn_w is None:
        bn_w = tinyres.ones_like(bn_rm)
    if bn_b is None:
        bn_b = tinyres.zeros_like(bn_rm)
    bn_var_rsqrt = tinyres.rsqrt(bn_rv + bn_eps)
    tail = [1] * (len(conv_w.shape) - 2)
    shape = [1, -1] + tail if transpose else [-1, 1] + tail
    fused_conv_w = (conv_w * (bn_w * bn_var_rsqrt).reshape(shape)).to(dtype=conv_weight_dtype)
    fused_conv_b = ((conv_b - bn_rm) * bn_var_rsqrt * bn_w + bn_b).to(dtype=conv_bias_dtype)
    return (Parameter(fused_conv_w, conv_w.requires_grad),
            Parameter(fused_conv_b, conv_b.requires_grad))


def fuse_linear_bn_eval(linear, bn):
    """A new Linear (a deep copy of `linear`) that folds in the evaluation-mode batch norm
    `bn` that follows it; bn.num_features must equal linear.out_features or be 1."""
    _check_eval("fuse_linear_bn_eval", linear, bn)
    fused_linear = copy.deepcopy(linear)
    if linear.out_features != bn.num_features and bn.num_features != 1:
        raise AssertionError(
            "To fuse, linear.out_features == bn.num_features or bn.num_features == 1, "
            f"got linear.out_features={linear.out_features} and "
            f"bn.num_features={bn.num_features}")
    _check_running_stats(bn)
    fused_linear.weight, fused_linear.bias = fuse_linear_bn_weights(
        fused_linear.weight, fused_linear.bias, bn.running_mean, bn.running_var, bn.eps,
        bn.weight, bn.bias)
    return fused_linear


def fuse_linear_bn_weights(linear_w, linear_b, bn_rm, bn_rv, bn_eps, bn_w, bn_b):
    """(weight, bias) Parameters of the Linear that equals linear then batch norm:
    weight = linear_w * s per output feature, bias = (linear_b - bn_rm) * s + bn_b,
    s = bn_w / sqrt(bn_rv + bn_eps). bn_w and bn_b are required (as torch: None is a
    TypeError); a missing linear_b counts as zeros, and then the bias does not require grad."""
    linear_weight_dtype = linear_w.dtype
    linear_bias_dtype = linear_b.dtype if linear_b is not None else linear_weight_dtype
    if linear_b is None:
        linear_b = tinyres.zeros_like(bn_rm)
    bn_scale = bn_w * tinyres.rsqrt(bn_rv + bn_eps)
    fused_w = linear_w * bn_scale.unsqueeze(-1).to(dtype=linear_weight_dtype)
    fused_b = ((linear_b - bn_rm) * bn_scale + bn_b).to(dtype=linear_bias_dtype)
    return Parameter(fused_w, linear_w.requires_grad), Parameter(fused_b, linear_b.requires_grad)


# ----- the whole model: find the pairs by running it once --------------------------------
def _refuse_training(model):
    training = next((name or "the model" for name, m in model.named_modules() if m.training),
                    None)
    if training is not None:
        raise AssertionError(f"Fusion only for eval! (fold_batchnorm: {training} is in "
                             "training mode; call model.eval() first)")


def _refuse_probes(model):
    watched = next((name or "the model" for name, m in model.named_modules()
                    if getattr(m, "probe", None) is not None), None)
    if watched is not None:
        raise RuntimeError(f"fold_batchnorm: a GradientProbe is attached to {watched}; "
                           "folding is for inference only and a probe measures the gradients "
                           "of the unfolded network: detach the probe first")


def _sample_input(model):
    """(1, C, 32, 32) for a model whose first layer is a Conv2d (32x32 runs the CIFAR
    and the ImageNet ResNets alike), (1, F) for one that starts with a Linear; seeded,
    so it draws nothing from the global generator."""
    first = next((m for m in model.modules() if type(m) in (Conv2d, Linear)), None)
    if first is None:
        return None
    shape = (1, first.in_channels, 32, 32) if type(first) is Conv2d else (1, first.in_features)
    values = np.random.default_rng(0).standard_normal(shape)
    return tinyres.tensor(values.astype(first.weight.dtype), device=first.weight.device)


def _tensors_in(value):
    """The Tensors in a model's output (a Tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors_in(v)]
    return []


class _Trace:
    """Forward hooks that record, during one forward, what each candidate layer wrote
    and what each batch norm read, and how often each ran."""

    def __init__(self, model):
        self.calls, self.produced, self.read, self.handles = {}, {}, {}, []
        firsts = {t for t, _ in FOLDABLE}
        norms = {b for _, b in FOLDABLE}
        for name, m in model.named_modules():
            if type(m) in firsts:
                self.handles.append(m.register_forward_hook(self._wrote(name)))
            elif type(m) in norms:
                self.handles.append(m.register_forward_pre_hook(self._reads(name)))

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def _wrote(self, name):
        def hook(module, args, output):
            self._count(name)
            if isinstance(output, Tensor):
                self.produced[id(output)] = (name, output, output._version_counter.value)
        return hook

    def _reads(self, name):
        def hook(module, args):
            self._count(name)
            if args and isinstance(args[0], Tensor):
                self.read[name] = (args[0], args[0]._version_counter.value)
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def pairs(self, modules, outputs):
        """(layer name, bn name) for each batch norm that read, unchanged, the output of a
        layer of the kind it folds into, where that output went nowhere else."""
        returned = {id(t) for t in outputs}
        found = []
        for bn_name, (x, version) in self.read.items():
            name, out, made_at = self.produced.get(id(x), (None, None, None))
            if out is x and id(x) not in returned and version == made_at \
                    and self._foldable(modules[name], modules[bn_name], name, bn_name, x):
                found.append((name, bn_name))
        return sorted(found, key=lambda pair: list(modules).index(pair[0]))

    def _foldable(self, layer, bn, name, bn_name, out):
        """The two make a pair torch's fuse() folds, each ran once, the layer's output
        was not written in place after the batch norm read it, nothing else read it (one
        consumer in the graph), and the batch norm normalises by running statistics."""
        return ((type(layer), type(bn)) in FOLDABLE
                and self.calls[name] == 1 and self.calls[bn_name] == 1
                and out._version_counter.value == self.read[bn_name][1]
                and len(out._consumers) == 1
                and bn.track_running_stats and bn.running_mean is not None)


def conv_bn_pairs(model, example_input=None):
    """The (layer, batch norm) pairs that `fold_batchnorm` folds, as dotted module names,
    in the order of model.named_modules(): each eval-mode BatchNorm2d that reads the
    output of a Conv2d (or BatchNorm1d that reads a Linear's) when nothing else reads that
    output, nothing writes it in place first, it is not returned, and each of the two
    modules runs once per forward. Found by running `model(example_input)` once
    (default: a seeded (1, C, 32, 32) input, C the first convolution's in_channels), with
    autograd on to see each tensor's consumers. tinyres-only (torch finds its pairs by
    torch.fx tracing)."""
    x = _sample_input(model) if example_input is None else example_input
    if x is None:
        return []
    trace = _Trace(model)
    try:
        with inference_mode(False), enable_grad():
            outputs = _tensors_in(_run(model, x.detach().requires_grad_(True)))
        return trace.pairs(dict(model.named_modules()), outputs)
    finally:
        trace.remove()


def _run(model, x):
    try:
        return model(x)
    except Exception as err:
        raise RuntimeError(f"conv_bn_pairs: the model failed on an input of shape {x.shape} "
                           f"({type(err).__name__}: {err}); pass example_input, an input "
                           "the model takes") from err


def _replace(model, dotted, new):
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fold_batchnorm(model, inplace=False, example_input=None):
    """The model with each batch norm folded into the Conv2d (or Linear) before it: the
    layer becomes `fuse_conv_bn_eval(layer, bn)` (with a bias) and the batch norm an
    nn.Identity; the result is for inference, and equals the unfolded model up to rounding.

    tinyres-only (torch's nearest is torch.fx.experimental.optimization.fuse). The pairs
    are `conv_bn_pairs(model, example_input)`: true conv -> bn pairs of the model's forward
    (a pre-activation block's bn -> relu -> conv is not one; its mid-branch conv -> bn is).
    Each folded pair is logged (logger "tinyres.nn.utils.fusion", level INFO); call
    conv_bn_pairs first to get the list.

    The model must be in eval mode (AssertionError "Fusion only for eval!" naming the first
    module in training mode otherwise): folding a training model would silently swap batch
    statistics for running ones. inplace=False folds a deep copy and leaves `model` as it
    is; inplace=True changes `model`'s modules.

    Inference only: a folded model's gradients are not the trained network's (the batch
    norms and their parameters are gone, the folded weights are new leaves, and a folded
    bias-less convolution's new bias does not require grad, as torch's). Finding the
    pairs runs the model once, its forward hooks included; afterwards hooks on a folded
    batch norm are gone with it and hooks on the convolution see the folded output. A model
    with a GradientProbe attached is refused (RuntimeError): study gradients on the
    unfolded model."""
    _refuse_training(model)
    _refuse_probes(model)
    if not inplace:
        model = copy.deepcopy(model)
    pairs = conv_bn_pairs(model, example_input)
    for first_name, bn_name in pairs:
        first, bn = model.get_submodule(first_name), model.get_submodule(bn_name)
        fused = fuse_conv_bn_eval(first, bn) if isinstance(first, Conv2d) else \
            fuse_linear_bn_eval(first, bn)
        _replace(model, first_name, fused)
        _replace(model, bn_name, Identity())
        logger.info("fold_batchnorm: folded %s into %s", bn_name, first_name)
    return model
