"""Adadelta, with torch.optim.Adadelta's update rule. With gradient g (negated first when
maximize=True):

    g = g + weight_decay * p
    v = rho * v + (1 - rho) * g * g                               (square_avg)
    delta = sqrt(u + eps) / sqrt(v + eps) * g                     (u: acc_delta)
    u = rho * u + (1 - rho) * delta * delta
    p = p - lr * delta
"""
from tinyres.backend import get_array_module
from tinyres.optim.optimizer import Optimizer, check_options
from tinyres.optim.sgd import refuse_unsupported


class Adadelta(Optimizer):
    """torch.optim.Adadelta."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        check_options("Adadelta", **{"learning rate": (lr, 0.0, None),
                                     "rho value": (rho, 0.0, 1.0),
                                     "epsilon value": (eps, 0.0, None),
                                     "weight_decay value": (weight_decay, 0.0, None)})
        refuse_unsupported("Adadelta", capturable=capturable, differentiable=differentiable)
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize, capturable=capturable,
                                      foreach=foreach, differentiable=differentiable))

    def _update(self, param, grad, group, state):
        xp = get_array_module(param.array)
        rho, eps = group["rho"], group["eps"]
        self._count_step(state)
        square_avg = self._buffer(state, "square_avg", param)
        acc_delta = self._buffer(state, "acc_delta", param)
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.array
        square_avg *= rho
        square_avg += (1 - rho) * grad * grad
        delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * grad
        acc_delta *= rho
        acc_delta += (1 - rho) * delta * delta
        param.array -= group["lr"] * delta
