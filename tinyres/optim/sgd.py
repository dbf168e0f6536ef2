"""Stochastic gradient descent with momentum, dampening, Nesterov, weight decay and
maximize, with torch.optim.SGD's update rule:

    g = -grad if maximize else grad
    d = g + weight_decay * p
    buf = d                                      (first step)
    buf = momentum * buf + (1 - dampening) * d   (later steps)
    d = d + momentum * buf   if nesterov   else   buf
    p = p - lr * d
"""
from tinyres.optim.optimizer import Optimizer, check_options


def refuse_unsupported(name, **flags):
    """torch's fused/capturable/differentiable paths are not built: refuse them clearly
    (foreach is accepted and changes nothing: the per-tensor update is the only one)."""
    for flag, value in flags.items():
        if value:
            raise NotImplementedError(f"{name}: {flag}=True is not supported by tinyres "
                                      "(only the plain per-tensor update exists)")


class SGD(Optimizer):
    """torch.optim.SGD."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False, foreach=None, differentiable=False,
                 fused=None):
        check_options("SGD", **{"learning rate": (lr, 0.0, None),
                                 "momentum value": (momentum, 0.0, None),
                                 "weight_decay value": (weight_decay, 0.0, None)})
        refuse_unsupported("SGD", differentiable=differentiable, fused=fused)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))

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
