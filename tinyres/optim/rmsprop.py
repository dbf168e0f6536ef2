"""RMSprop, with torch.optim.RMSprop's update rule. With gradient g (negated first when
maximize=True):

    g = g + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g                       (square_avg)
    centered:  a = alpha * a + (1 - alpha) * g;  avg = sqrt(v - a * a) + eps
    otherwise: avg = sqrt(v) + eps
    momentum > 0:  buf = momentum * buf + g / avg;  p = p - lr * buf
    otherwise:     p = p - lr * g / avg
"""
from tinyres.backend import get_array_module
from tinyres.optim.optimizer import Optimizer, check_options
from tinyres.optim.sgd import refuse_unsupported


class RMSprop(Optimizer):
    """torch.optim.RMSprop."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        check_options("RMSprop", **{"learning rate": (lr, 0.0, None),
                                    "epsilon value": (eps, 0.0, None),
                                    "momentum value": (momentum, 0.0, None),
                                    "weight_decay value": (weight_decay, 0.0, None),
                                    "alpha value": (alpha, 0.0, None)})
        refuse_unsupported("RMSprop", capturable=capturable, differentiable=differentiable)
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                                      centered=centered, weight_decay=weight_decay,
                                      capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))

    def _update(self, param, grad, group, state):
        xp = get_array_module(param.array)
        alpha, lr = group["alpha"], group["lr"]
        self._count_step(state)
        square_avg = self._buffer(state, "square_avg", param)
        if group["momentum"] > 0:
            self._buffer(state, "momentum_buffer", param)
        if group["centered"]:
            self._buffer(state, "grad_avg", param)
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.array
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"].array
            grad_avg += (grad - grad_avg) * (1 - alpha)          # lerp_(grad, 1 - alpha)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = xp.sqrt(square_avg)
        avg += group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"].array
            buf *= group["momentum"]
            buf += grad / avg
            param.array -= lr * buf
        else:
            param.array -= lr * (grad / avg)
