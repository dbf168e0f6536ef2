"""relu(bn(x)) and relu(bn(conv(x))) in the models' forwards, by fused ops wherever
nothing could tell.

    out = bn_relu(self.bn1, self.relu, self.conv1(x))      # relu(bn1(conv1(x)))
    out = conv_bn(self.conv1, self.bn1, x, self.relu)      # the same, in training and in
    out = conv_bn(self.conv2, self.bn2, out)               # evaluation; bn2(conv2(out))

conv_bn in training (bn.training, its batch statistics): one op, conv2d_batch_norm
(functional/fused.py), whose CPU kernel has the convolution's cores write the sum and the
squared deviations of each output plane while it is in cache (kernels/conv_bias.py), and
batch norm's statistics combined from those instead of read from a pass over the output:
the values, gradients, running statistics and batch counts of the modules to the last bit,
for batch norm's own statistics are combined from the same planes' moments. The graph
holds one ConvBatchNorm node where it held Conv2d and BatchNormReLU (or BatchNormTrain).
It calls the modules where conv_bn in evaluation would (but for batch norm's mode and the
graph, which the op records), and where the convolution has a bias of its own, or its
output would hold one value a channel (batch norm's error, raised by the modules).
resnet20's training step at batch 128 took 0.974 of its time (the median of 18 pairs of
processes, before and after in turns), resnet18's at batch 16 0.979 (2 threads, tuned
malloc, AMD family 26, OpenBLAS's SkylakeX kernel).

conv_bn: in evaluation with no graph to record (the inference of a model.eval() under
no_grad or inference_mode), batch norm is a fixed per-channel affine map, x*scale + shift
(functional/norm.py's eval_affine, as BatchNormEval computes it), so the convolution's
kernels apply it, and the ReLU, to each task's output while it is in cache
(kernels/conv_bias.py): one pass over memory where there were three, the values of the
three modules to the last bit. A model whose batch norms fold_batchnorm folded into its
convolutions (tinyres.nn.utils.fusion: each bn an nn.Identity, each conv with a bias) runs
the same way, the conv's bias and the ReLU in its epilogue. Its ReLUs had a pass of their
own before: the folded resnet20's inference at batch 128 took 1.02 of the unfolded one's
time, and now 0.99; the change took it to 0.969 of its time (0.985 under glibc's default
malloc; one process, 15 rounds in turns, 2 threads, AMD family 26, OpenBLAS's SkylakeX
kernel). Where neither op runs, it is bn_relu(bn, relu, conv(x)) (or bn(conv(x))). The
evaluation pass calls the modules whenever it could differ: bn_relu's cases below, a graph
to record (grad enabled and a tensor that requires it), a hook on the conv, a conv that is
not exactly nn.Conv2d, has a bias (unless bn is a folded model's nn.Identity) or pads
other than with zeros, an input that is not a 4-D tensor of the conv's channels, dtype
and device.

conv_bn_residual: the end of a residual block in inference, relu(bn(conv(x)) + lambda *
shortcut), as one pass of the convolution's kernels, the shortcut added (and the ReLU
applied) in the same epilogue: the residual_add and the ReLU had a pass over memory each.
A block takes it where can_fuse_residual holds (a shortcut, no probe, conv_bn's own
evaluation fusion) and runs its separate ops otherwise; the values are those of the
separate ops to the last bit.

bn_relu calls tinyres.nn.functional.batch_norm_relu with the BatchNorm module's own
weight, bias, running statistics, momentum and eps, after the module's own bookkeeping
(num_batches_tracked, the cumulative momentum of momentum=None), so parameters, buffers,
state_dict keys, reprs and the module tree are those of the two modules; only the graph
holds one BatchNormReLU node where it held BatchNormTrain (or BatchNormEval) and ReLU.

bn_relu calls the two modules instead, relu(bn(x)), whenever the fused op could differ:
- a hook (forward, forward pre-, backward or backward pre-) is registered on either one;
- bn is not exactly nn.BatchNorm2d (a subclass, SyncBatchNorm, a module put in its place),
  relu is not exactly nn.ReLU, or either has its forward replaced on the instance;
- bn does not track running statistics (track_running_stats=False);
- x is not a 4-D floating-point Tensor (the modules then raise their own errors);
- fusion is switched off for this thread: `with fuse_bn_relu(False): ...` (for instance
  to draw the unfused graph with tinyres.viz, or to compare the two).
"""
import numbers
import threading

from tinyres import nn
from tinyres.autograd import is_grad_enabled, is_inference_mode_enabled
from tinyres.backend import kernels_for
from tinyres.functional.conv import _fits
from tinyres.functional.fused import batch_norm_relu, conv2d_batch_norm
from tinyres.functional.norm import eval_affine
from tinyres.functional.residual import residual_add
from tinyres.nn.hooks import has_hooks
from tinyres.tensor import Tensor

_state = threading.local()


def fusion_enabled():
    """Whether bn_relu fuses in this thread (True unless fuse_bn_relu(False) is in force)."""
    return getattr(_state, "enabled", True)


class fuse_bn_relu:
    """Let bn_relu fuse (True, the default) or always call the two modules (False), for
    this thread: at once as a call, until the end of the block as a `with` statement."""

    def __init__(self, enabled=True):
        self._previous = fusion_enabled()
        _state.enabled = bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _state.enabled = self._previous
        return False


def _plain(module, cls):
    """module is exactly a cls, unhooked, with the class's own forward."""
    return (type(module) is cls and not has_hooks(module)
            and "forward" not in vars(module))


def _fusable_input(x):
    """Fusion on and x a 4-D floating-point Tensor."""
    return (fusion_enabled() and isinstance(x, Tensor) and x.ndim == 4
            and x.dtype.kind == "f")


def _plain_bn(bn, x):
    """_fusable_input(x), bn exactly an unhooked nn.BatchNorm2d with running statistics."""
    return (_fusable_input(x) and _plain(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


def can_fuse(bn, relu, x):
    """Whether bn_relu(bn, relu, x) runs the fused op (see the module docstring)."""
    return _plain_bn(bn, x) and _plain(relu, nn.ReLU)


def bn_relu(bn, relu, x):
    """relu(bn(x)): the fused batch_norm_relu where can_fuse(bn, relu, x), the two
    modules otherwise; the same values, gradients and running statistics either way."""
    if not can_fuse(bn, relu, x):
        return relu(bn(x))
    momentum = bn._momentum_this_step()     # counts the batch, as bn.forward does
    return batch_norm_relu(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                           bn.training, momentum, bn.eps)


def _records_graph(*tensors):
    return (is_grad_enabled() and not is_inference_mode_enabled()
            and any(t is not None and t.requires_grad for t in tensors))


def _folded(bn, x):
    """_fusable_input(x), bn exactly an unhooked nn.Identity (what fold_batchnorm leaves
    where it folded a batch norm into the convolution before it)."""
    return _fusable_input(x) and _plain(bn, nn.Identity)


def _epilogue_tensors(conv, bn, x):
    """The tensors the fused pass reads besides x and the conv's weight: the folded conv's
    bias, or an evaluating batch norm's parameters and running statistics (the conv then
    without a bias); None where conv_bn(conv, bn, ...) cannot fuse on bn's side."""
    if _folded(bn, x):
        return (conv.bias,)
    if _plain_bn(bn, x) and not bn.training and conv.bias is None:
        return bn.running_mean, bn.running_var, bn.weight, bn.bias
    return None


def _plain_conv(conv, relu, x, read):
    """conv exactly an unhooked nn.Conv2d padding with zeros by numbers, of x's channels,
    relu None or exactly an unhooked nn.ReLU, and conv's weight and the tensors in `read`
    (None allowed) of x's dtype and device."""
    return ((relu is None or _plain(relu, nn.ReLU))
            and _plain(conv, nn.Conv2d) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and x.shape[1] == conv.in_channels
            and all(t is None or (t.dtype == x.dtype and t.device == x.device) for t in
                    (conv.weight,) + read))


def can_fuse_conv(conv, bn, relu, x):
    """Whether conv_bn(conv, bn, x, relu) runs the convolution with batch norm's affine
    map (or, bn an nn.Identity, the conv's own bias) and the ReLU in its epilogue (see the
    module docstring)."""
    read = _epilogue_tensors(conv, bn, x)
    return (read is not None and _plain_conv(conv, relu, x, read)
            and not _records_graph(x, conv.weight, *read))


def can_fuse_conv_train(conv, bn, relu, x):
    """Whether conv_bn(conv, bn, x, relu) runs the convolution and batch norm in training
    (and the ReLU) as one op, conv2d_batch_norm, the statistics from the convolution's
    epilogue (see the module docstring)."""
    return (_plain_bn(bn, x) and bn.training and conv.bias is None
            and _plain_conv(conv, relu, x, (bn.weight, bn.bias, bn.running_mean,
                                            bn.running_var)))


def conv_bn(conv, bn, x, relu=None):
    """bn(conv(x)), or relu(bn(conv(x))) where relu is given: in training, one op whose
    batch statistics come from the convolution's epilogue (conv2d_batch_norm); in
    evaluation with no graph to record, one pass of the convolution's kernels with batch
    norm's affine map (and the ReLU) applied in its epilogue; bn_relu(bn, relu, conv(x))
    (or bn(conv(x))) otherwise. The same values either way, to the last bit."""
    if can_fuse_conv_train(conv, bn, relu, x):
        # the convolution's shape error, if any, before batch norm counts the batch
        oh, ow = _fits("conv2d", x.shape, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation)
        if x.shape[0] * oh * ow != 1:        # one value a channel: batch norm's own error
            momentum = bn._momentum_this_step()     # counts the batch, as bn.forward does
            return conv2d_batch_norm(x, conv.weight, bn.running_mean, bn.running_var,
                                     bn.weight, bn.bias, conv.stride, conv.padding,
                                     conv.dilation, conv.groups, momentum, bn.eps,
                                     relu is not None)
    if not can_fuse_conv(conv, bn, relu, x):
        out = conv(x)
        return bn(out) if relu is None else bn_relu(bn, relu, out)
    return Tensor(_fused_eval(conv, bn, x, relu is not None))


def _fused_eval(conv, bn, x, relu, shortcut=None, shortcut_scale=1.0):
    """The array of relu(bn(conv(x)) + shortcut_scale * shortcut) (the ReLU where relu, the
    shortcut where given) by one pass of the convolution's kernels, batch norm's affine map
    (or the folded conv's bias) applied in its epilogue, as can_fuse_conv allowed."""
    weight = conv.weight.array
    if isinstance(bn, nn.Identity):          # folded: the conv's bias is batch norm's shift
        scale, shift = None, None if conv.bias is None else conv.bias.array
    else:
        _, scale, shift = eval_affine(None if bn.weight is None else bn.weight.array,
                                      None if bn.bias is None else bn.bias.array,
                                      bn.running_mean.array, bn.running_var.array, bn.eps,
                                      weight.dtype)
    return kernels_for(x.array).conv2d_forward(
        x.array, weight.reshape(weight.shape[0], -1), *weight.shape[2:], *conv.stride,
        *conv.padding, *conv.dilation, conv.groups, bias=shift, scale=scale, relu=relu,
        residual=None if shortcut is None else shortcut.array, residual_scale=shortcut_scale)


def can_fuse_residual(block, conv, bn, x):
    """Whether the end of a residual block, relu(bn(conv(x)) + lambda * shortcut), may run
    as one pass of the convolution's kernels (conv_bn_residual): a block with a shortcut
    (not the plain twin) and no probe attached, whose conv_bn(conv, bn, x, block.relu)
    would run fused in evaluation (can_fuse_conv: no graph to record, nothing hooked)."""
    return (block.residual and block.probe is None
            and can_fuse_conv(conv, bn, block.relu, x))


def conv_bn_residual(conv, bn, x, shortcut, scale, relu):
    """relu(bn(conv(x)) + scale * shortcut), for a block where can_fuse_residual holds: in
    inference, one pass of the convolution's kernels with batch norm's affine map, the
    scaled shortcut and the ReLU applied to each task's output while it is in cache
    (kernels/conv_bias.py), the values of the separate ops to the last bit; the separate
    ops below wherever the shortcut could tell (a tensor that records a graph, or not of
    the output's shape, dtype and device, or a scale that is not a number)."""
    oh, ow = _fits("conv2d", x.shape, conv.kernel_size, conv.stride, conv.padding,
                   conv.dilation)
    if not (isinstance(shortcut, Tensor) and isinstance(scale, numbers.Real)
            and shortcut.shape == (x.shape[0], conv.out_channels, oh, ow)
            and shortcut.dtype == x.dtype and shortcut.device == x.device
            and not _records_graph(shortcut)):
        out = residual_add(conv_bn(conv, bn, x), shortcut, scale)  # F(x) + lambda x
        return relu(out)
    return Tensor(_fused_eval(conv, bn, x, True, shortcut, float(scale)))
