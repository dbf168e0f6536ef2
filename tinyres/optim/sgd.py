"""Stochastic gradient descent with momentum, dampening, Nesterov, weight decay and
maximize, with torch.optim.SGD's update rule:

    g = -grad if maximize else grad
    d = g + weight_decay * p
    buf = d                                      (first step)
    buf = momentum * buf + (1 - dampening) * d   (later steps)
    d = d + momentum * buf   if nesterov   else   buf
    p = p - lr * d

fused=True (torch's fused implementation) gives the same update, computed by one call
per parameter group and dtype instead of a few array operations per parameter: on the
CPU one Numba kernel that walks a table of all the group's tensors, on a GPU one CUDA
launch (a multi-tensor apply, kernels/cuda/optim.cu); float16 takes the NumPy reference
(kernels/fused_optim.py). The state (momentum buffers) and its state_dict are the same
as with fused=False, so a checkpoint loads either way (load_state_dict restores the saved
'fused' option with the others, as torch: set param_groups[i]['fused'] after it to switch).
As torch, fused=True refuses foreach=True and differentiable=True (RuntimeError), and
parameters that are not floating point (RuntimeError at the step). A buffer made at a later step than the others of its
group (a parameter that had no gradient before) starts as that step's update, as with
fused=False (torch's fused SGD raises a TypeError there).
"""
from tinyres.kernels import fused_optim
from tinyres.optim import fused as fused_impl
from tinyres.optim.optimizer import Optimizer, check_options


def refuse_unsupported(name, **flags):
    """Refuse clearly the torch options whose paths tinyres does not build (capturable,
    differentiable, and fused but for SGD, Adam and AdamW); foreach is accepted and
    changes nothing: the per-tensor update is the only unfused one."""
    for flag, value in flags.items():
        if value:
            raise NotImplementedError(f"{name}: {flag}=True is not supported by tinyres "
                                      "(only the plain per-tensor update exists)")


class SGD(Optimizer):
    """torch.optim.SGD; fused=True updates each group and dtype in one kernel call (see
    the module docstring)."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        check_options("SGD", **{"learning rate": (lr, 0.0, None),
                                 "momentum value": (momentum, 0.0, None),
                                 "weight_decay value": (weight_decay, 0.0, None)})
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))
        fused_impl.check_flags(fused, foreach, differentiable)
        refuse_unsupported("SGD", differentiable=differentiable)

    def _update(self, param, grad, group, state):
        d = grad
        if group["weight_decay"] != 0:
            d = d + group["weight_decay"] * param.array
        momentum = group["momentum"]
        if momentum != 0:
            if "momentum_buffer" not in state:
                buf = self._buffer(state, "momentum_buffer", param)
                buf[...] = d
            else:
                buf = state["momentum_buffer"].array
                buf *= momentum
                buf += (1 - group["dampening"]) * d
            d = d + momentum * buf if group["nesterov"] else buf
        param.array -= group["lr"] * d

    def _fused_group(self, group):
        """The fused step of one group: its momentum buffers made where missing, then one
        call of kernels/fused_optim.sgd per device and dtype."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            fused_impl.check_device_dtype(p)
        momentum = group["momentum"]
        for part in fused_impl.by_device_and_dtype(params).values():
            fresh = [momentum != 0 and "momentum_buffer" not in self.state[p] for p in part]
            bufs = ([self._buffer(self.state[p], "momentum_buffer", p) for p in part]
                    if momentum != 0 else [])
            fused_optim.sgd([p.array for p in part], [p.grad.array for p in part], bufs, fresh,
                            group["lr"], group["weight_decay"], momentum, group["dampening"],
                            group["nesterov"], group["maximize"])
            fused_impl.mark_written(part)
