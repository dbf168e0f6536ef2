"""Adam and AdamW, with torch.optim's update rule. At step t, with gradient g
(negated first when maximize=True):

    g = g + weight_decay * p            (Adam: L2 penalty folded into the gradient)
    p = p * (1 - lr * weight_decay)     (AdamW: decoupled decay, instead of the line above)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g            (amsgrad: v_max = max(v_max, v))
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

fused=True (torch's fused implementation) gives the same update, computed by one call
per parameter group and dtype instead of a dozen array operations per parameter: on the
CPU one Numba kernel that walks a table of all the group's tensors, on a GPU one CUDA
launch (a multi-tensor apply, kernels/cuda/optim.cu); float16 takes the NumPy reference
(kernels/fused_optim.py). Each tensor keeps its own step count, as with fused=False:
the state ('step' a float32 scalar on the host, exp_avg, exp_avg_sq, max_exp_avg_sq) and
its state_dict are the same either way, so a checkpoint loads either way
(load_state_dict restores the saved 'fused' option, as torch: set
param_groups[i]['fused'] after it to switch). torch's fused Adam keeps 'step' on the
parameter's device; on a GPU tinyres keeps it on the host, where reading it costs no
synchronisation. As torch, fused=True refuses differentiable=True and foreach=True
(RuntimeError), and parameters that are not floating point (RuntimeError when their
state is made).
"""
from tinyres.backend import get_array_module
from tinyres.kernels import fused_optim
from tinyres.optim import fused as fused_impl
from tinyres.optim.optimizer import Optimizer, check_options
from tinyres.optim.sgd import refuse_unsupported


def check_adam_options(name, lr, betas, eps, weight_decay):
    """torch's checks and messages for Adam's and AdamW's options."""
    if len(betas) != 2:
        raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
    check_options(name, **{"learning rate": (lr, 0.0, None),
                           "epsilon value": (eps, 0.0, None)})
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name}: Invalid beta parameter at index {i}: {beta}")
    check_options(name, **{"weight_decay value": (weight_decay, 0.0, None)})


class Adam(Optimizer):
    """torch.optim.Adam (decoupled_weight_decay=True is AdamW); fused=True updates each
    group and dtype in one kernel call (see the module docstring)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        name = type(self).__name__
        check_adam_options(name, lr, betas, eps, weight_decay)
        super().__init__(params, dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay))
        fused_impl.check_flags(fused, foreach, differentiable)
        refuse_unsupported(name, capturable=capturable, differentiable=differentiable)

    def _update(self, param, grad, group, state):
        xp = get_array_module(param.array)
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        step = self._count_step(state)
        m = self._buffer(state, "exp_avg", param)
        v = self._buffer(state, "exp_avg_sq", param)
        if group["amsgrad"]:
            self._buffer(state, "max_exp_avg_sq", param)
        if wd != 0:
            if group.get("decoupled_weight_decay", False):
                param.array *= 1 - lr * wd
            else:
                grad = grad + wd * param.array
        m += (grad - m) * (1 - beta1)            # torch's lerp_(grad, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"].array, v, out=state["max_exp_avg_sq"].array)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = xp.sqrt(v) / bias_correction2_sqrt + group["eps"]
        param.array -= (lr / bias_correction1) * (m / denom)

    def _fused_group(self, group):
        """The fused step of one group: state made where missing (after torch's
        device/dtype check), steps counted, then one call of kernels/fused_optim.adam per
        device and dtype."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if not self.state[p]:
                fused_impl.check_device_dtype(p)
        amsgrad = group["amsgrad"]
        names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
        (beta1, beta2) = group["betas"]
        for part in fused_impl.by_device_and_dtype(params).values():
            states = [self.state[p] for p in part]
            steps = [self._count_step(state) for state in states]
            buffers = [[self._buffer(state, name, p) for state, p in zip(states, part)]
                       for name in names]
            fused_optim.adam([p.array for p in part], [p.grad.array for p in part],
                             buffers[0], buffers[1], buffers[2] if amsgrad else [], steps,
                             group["lr"], beta1, beta2, group["weight_decay"], group["eps"],
                             amsgrad, group["maximize"],
                             group.get("decoupled_weight_decay", False))
            fused_impl.mark_written(part)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
