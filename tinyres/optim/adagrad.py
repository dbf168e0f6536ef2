"""Adagrad, with torch.optim.Adagrad's update rule. At step t, with gradient g (negated
first when maximize=True):

    g = g + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    sum = sum + g * g                          (starts at initial_accumulator_value)
    p = p - clr * g / (sqrt(sum) + eps)

As in torch, the state ('step' 0 and 'sum') exists from construction on.
"""
from tinyres.backend import get_array_module
from tinyres.optim.optimizer import Optimizer, check_options
from tinyres.optim.sgd import refuse_unsupported


class Adagrad(Optimizer):
    """torch.optim.Adagrad."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False,
                 differentiable=False, fused=None):
        check_options("Adagrad", **{
            "learning rate": (lr, 0.0, None), "lr_decay value": (lr_decay, 0.0, None),
            "weight_decay value": (weight_decay, 0.0, None),
            "initial_accumulator_value value": (initial_accumulator_value, 0.0, None),
            "epsilon value": (eps, 0.0, None)})
        refuse_unsupported("Adagrad", differentiable=differentiable, fused=fused)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      foreach=foreach, maximize=maximize,
                                      differentiable=differentiable, fused=fused))

    def _init_state(self, state, param, group):
        """'step' 0 and 'sum' filled with initial_accumulator_value, where absent."""
        if "step" not in state:
            self._count_step(state)
            state["step"].array[...] = 0
        self._buffer(state, "sum", param, group["initial_accumulator_value"])

    def add_param_group(self, param_group):
        """Add a group, and its parameters' state at once (as torch's Adagrad)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self._init_state(self.state.setdefault(p, {}), p, group)

    def _update(self, param, grad, group, state):
        xp = get_array_module(param.array)
        self._init_state(state, param, group)
        step = self._count_step(state)
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.array
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        total = state["sum"].array
        total += grad * grad
        std = xp.sqrt(total) + group["eps"]
        param.array -= clr * (grad / std)
