"""relu(bn(x)) in the models' forwards, by the fused op wherever nothing could tell.

    out = bn_relu(self.bn1, self.relu, self.conv1(x))      # relu(bn1(conv1(x)))

calls tinyres.nn.functional.batch_norm_relu with the BatchNorm module's own weight, bias,
running statistics, momentum and eps, after the module's own bookkeeping
(num_batches_tracked, the cumulative momentum of momentum=None), so parameters, buffers,
state_dict keys, reprs and the module tree are those of the two modules; only the graph
holds one BatchNormReLU node where it held BatchNormTrain (or BatchNormEval) and ReLU.

It calls the two modules instead, relu(bn(x)), whenever the fused op could differ:
- a hook (forward, forward pre-, backward or backward pre-) is registered on either one;
- bn is not exactly nn.BatchNorm2d (a subclass, SyncBatchNorm, a module put in its place),
  relu is not exactly nn.ReLU, or either has its forward replaced on the instance;
- bn does not track running statistics (track_running_stats=False);
- x is not a 4-D floating-point Tensor (the modules then raise their own errors);
- fusion is switched off for this thread: `with fuse_bn_relu(False): ...` (for instance
  to draw the unfused graph with tinyres.viz, or to compare the two).
"""
import threading

from tinyres import nn
from tinyres.functional.fused import batch_norm_relu
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


def can_fuse(bn, relu, x):
    """Whether bn_relu(bn, relu, x) runs the fused op (see the module docstring)."""
    return (fusion_enabled() and _plain(bn, nn.BatchNorm2d) and _plain(relu, nn.ReLU)
            and bn.track_running_stats and bn.running_mean is not None
            and bn.running_var is not None and isinstance(x, Tensor) and x.ndim == 4
            and x.dtype.kind == "f")


def bn_relu(bn, relu, x):
    """relu(bn(x)): the fused batch_norm_relu where can_fuse(bn, relu, x), the two
    modules otherwise; the same values, gradients and running statistics either way."""
    if not can_fuse(bn, relu, x):
        return relu(bn(x))
    momentum = bn._momentum_this_step()     # counts the batch, as bn.forward does
    return batch_norm_relu(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                           bn.training, momentum, bn.eps)
