"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay,
with torch.optim.SGD's update rule:

    d = grad + weight_decay * p
    buf = d                                      (first step)
    buf = momentum * buf + (1 - dampening) * d   (later steps)
    d = d + momentum * buf   if nesterov   else   buf
    p = p - lr * d
"""
from tinyres.optim.optimizer import Optimizer


class SGD(Optimizer):
    """torch.optim.SGD (without maximize/foreach/fused)."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False):
        if lr < 0.0:
            raise ValueError(f"SGD: invalid learning rate {lr}")
        if momentum < 0.0:
            raise ValueError(f"SGD: invalid momentum {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"SGD: invalid weight_decay {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, param, grad, group, state):
        d = grad
        if group["weight_decay"] != 0:
            d = d + group["weight_decay"] * param.array
        momentum = group["momentum"]
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.copy()
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * d
            d = d + momentum * buf if group["nesterov"] else buf
        param.array -= group["lr"] * d
