"""Optimizer: parameter groups, per-parameter state, and a state_dict that fits an .npz.

An optimizer holds `param_groups`, a list of dicts: {'params': [Parameter, ...]} plus
that group's options (lr, momentum, ...), the constructor's defaults filling what a group
does not set, as in torch. `state[param]` is a dict of that parameter's running values
(momentum buffers, Adam moments). `step()` updates every parameter that has a gradient,
in place on `param.array`, with whatever array module holds it (NumPy or CuPy).

state_dict() is flat, so that `numpy.savez(path, **opt.state_dict())` saves it as is:

    'param_groups.{g}.params'   int64 array: the indices of group g's parameters, counted
                                across all groups in order (0, 1, 2, ...)
    'param_groups.{g}.{option}' a number, bool or tuple: group g's option (lr, betas, ...,
                                'initial_lr' once a scheduler has touched it)
    'state.{i}.{name}'          parameter i's state: a NumPy array copy ('momentum_buffer',
                                'exp_avg', ...) or a number ('step')

load_state_dict() accepts that dict, or what numpy.load gives back for it (0-d arrays for
numbers, arrays for tuples).
"""
import numpy as np

from tinyres import backend
from tinyres.autograd import enable_grad, no_grad
from tinyres.tensor import Tensor


def plain(value):
    """A Python number or tuple from a 0-d or 1-d NumPy array (as numpy.load returns
    them); anything else unchanged."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.item() if value.ndim == 0 else tuple(value.tolist())
    return value


class Optimizer:
    """Base class: subclasses define `_update(param, grad, group, state)` on arrays."""

    scalar_state = ("step",)     # state entries that are numbers, not arrays

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict {'params': [...], option: value, ...}; unset options take the
        defaults. A parameter may belong to one group only."""
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__} can only optimize Tensors, "
                                f"got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear in more than one parameter group")
        group["params"] = params
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Forget every gradient (None, torch's default), or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.array[...] = 0
                    p.grad._version_counter.value += 1

    def step(self, closure=None):
        """Update every parameter that has a gradient. `closure`, if given, recomputes
        and returns the loss (with gradients) first; its loss is returned."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p, p.grad.array, group, self.state.setdefault(p, {}))
                        p._version_counter.value += 1     # an in-place write, as p.add_()
        return loss

    def _update(self, param, grad, group, state):
        raise NotImplementedError

    # ----- saving and resuming ----------------------------------------------------------
    def _all_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """The flat dict described in this module's docstring (copies, NumPy only)."""
        out = {}
        index = {id(p): i for i, p in enumerate(self._all_params())}
        for g, group in enumerate(self.param_groups):
            out[f"param_groups.{g}.params"] = np.array(
                [index[id(p)] for p in group["params"]], dtype=np.int64)
            for name, value in group.items():
                if name != "params":
                    out[f"param_groups.{g}.{name}"] = value
        for p, state in self.state.items():
            for name, value in state.items():
                if name not in self.scalar_state:
                    value = np.array(backend.to_device(value, "cpu"), copy=True)
                out[f"state.{index[id(p)]}.{name}"] = value
        return out

    def load_state_dict(self, state_dict):
        """Restore options and state saved by state_dict() (or read back from an .npz).
        The groups must hold the same numbers of parameters as when it was saved."""
        groups, states = self._split(state_dict)
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, the "
                             f"optimizer has {len(self.param_groups)}")
        lookup = {}
        for g, (saved, group) in enumerate(zip(groups, self.param_groups)):
            indices = [int(i) for i in np.atleast_1d(saved.get("params", []))]
            if len(indices) != len(group["params"]):
                raise ValueError(f"parameter group {g} has {len(group['params'])} parameters "
                                 f"but the loaded one has {len(indices)}")
            lookup.update(zip(indices, group["params"]))
        unknown = sorted(set(states) - set(lookup))
        if unknown:
            raise ValueError(f"loaded state dict has state for unknown parameters {unknown}")
        for saved, group in zip(groups, self.param_groups):
            group.update({name: plain(v) for name, v in saved.items() if name != "params"})
        self.state = {lookup[i]: self._restored(lookup[i], entries)
                      for i, entries in states.items()}

    @staticmethod
    def _split(state_dict):
        """Group the flat keys: ([options of group 0, ...], {param index: {name: value}})."""
        groups, states = {}, {}
        for key, value in state_dict.items():
            kind, number, name = key.split(".", 2)
            if kind == "param_groups":
                groups.setdefault(int(number), {})[name] = value
            elif kind == "state":
                states.setdefault(int(number), {})[name] = value
            else:
                raise KeyError(f"unexpected optimizer state_dict key {key!r}")
        return [groups[g] for g in sorted(groups)], states

    def _restored(self, param, entries):
        """A parameter's state with arrays on its device (floats in its dtype)."""
        state = {}
        for name, value in entries.items():
            if name in self.scalar_state:
                state[name] = plain(value)
                continue
            array = np.array(value, copy=True)
            if array.dtype.kind == "f":
                array = array.astype(param.dtype)
            state[name] = backend.to_device(array, param.device)
        return state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            lines += [f"    {name}: {group[name]}" for name in sorted(group) if name != "params"]
        return "\n".join(lines) + "\n)"
