"""Optimizer: parameter groups, per-parameter state, and torch's state_dict layout.

An optimizer holds `param_groups`, a list of dicts: {'params': [Parameter, ...]} plus
that group's options (lr, momentum, ...), the constructor's defaults filling what a group
does not set, as in torch. `state[param]` is a dict of that parameter's running values as
Tensors (momentum buffers, Adam moments, and 'step' as a float32 scalar Tensor, as
torch keeps it). `step()` updates every parameter that has a gradient, in place on
`param.array`, with whatever array module holds it (NumPy or CuPy); setting
`optimizer.param_groups[0]['lr'] = x` takes effect at the next step.

state_dict() has torch's layout, and like torch's it refers to the live state (no copies):

    {'state': {0: {'step': Tensor, 'exp_avg': Tensor, ...}, 1: {...}},
     'param_groups': [{'lr': 0.1, ..., 'params': [0, 1]}, {..., 'params': [2]}]}

where parameters are numbered across all groups in order. For an .npz archive (which
holds flat arrays only), flatten_state_dict() turns it into

    'param_groups.{g}.params'   int64 array of group g's parameter numbers
    'param_groups.{g}.{option}' group g's option (options that are None are left out)
    'state.{i}.{name}'          parameter i's state as a NumPy array

and load_state_dict() accepts either form (and 0-d arrays where numbers were saved).
"""
import copy
import warnings
from collections import defaultdict

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


def flatten_state_dict(state_dict):
    """The flat, arrays-only form of an optimizer state_dict (see the module docstring)."""
    flat = {}
    for g, group in enumerate(state_dict["param_groups"]):
        for name, value in group.items():
            if name == "params":
                value = np.array(value, dtype=np.int64)
            elif value is None:
                continue
            flat[f"param_groups.{g}.{name}"] = value
    for i, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                value = np.array(value.numpy(), copy=True)
            flat[f"state.{i}.{name}"] = value
    return flat


def unflatten_state_dict(flat):
    """torch's nested layout from what flatten_state_dict() returned (or numpy.load read)."""
    groups, states = {}, {}
    for key, value in flat.items():
        kind, number, name = key.split(".", 2)
        if kind == "param_groups":
            value = [int(i) for i in np.atleast_1d(value)] if name == "params" else plain(value)
            groups.setdefault(int(number), {})[name] = value
        elif kind == "state":
            states.setdefault(int(number), {})[name] = value
        else:
            raise KeyError(f"unexpected optimizer state_dict key {key!r}")
    return {"state": states, "param_groups": [groups[g] for g in sorted(groups)]}


def check_options(name, **checks):
    """Raise torch's ValueError for the first option outside its range. `checks` maps a
    label (as torch's message spells it) to (value, lowest, highest or None)."""
    for label, (value, low, high) in checks.items():
        if not (low <= value and (high is None or value <= high)):
            raise ValueError(f"{name}: Invalid {label}: {value}")


class Optimizer:
    """Base class: subclasses define `_update(param, grad, group, state)` on arrays."""

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got a {type(params).__name__}")
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)          # as torch: optimizer.state[p] is {} at first
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a dict {'params': [...], option: value, ...}; unset options take the
        defaults. A parameter may belong to one group only."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params "
                                f"is {type(p).__module__}.{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        group["params"] = params
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        if len({id(p) for p in params}) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error", UserWarning, stacklevel=2)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
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
                if group.get("fused"):
                    self._fused_group(group)     # SGD, Adam: one call per device and dtype
                else:
                    for p in group["params"]:
                        if p.grad is not None:
                            self._step_one(p, group)
        return loss

    def _fused_group(self, group):
        raise NotImplementedError(f"{type(self).__name__}: fused=True is not built")

    def _step_one(self, p, group):
        state = self.state.get(p, {})
        grad = p.grad.array
        if group.get("maximize", False):
            grad = -grad
        self._update(p, grad, group, state)
        if state:
            self.state[p] = state
        p._version_counter.value += 1     # an in-place write, as p.add_()

    def _update(self, param, grad, group, state):
        raise NotImplementedError

    # ----- state helpers for subclasses --------------------------------------------------
    @staticmethod
    def _count_step(state):
        """Add one to state['step'] (a float32 scalar Tensor, made at 0) and return it."""
        if "step" not in state:
            state["step"] = Tensor(np.zeros((), dtype=np.float32))
        state["step"].array += 1
        return float(state["step"].array)

    @staticmethod
    def _buffer(state, name, param, fill=0.0):
        """state[name]'s array, made as a Tensor filled with `fill` like param if absent."""
        if name not in state:
            xp = backend.get_array_module(param.array)
            state[name] = Tensor(xp.full_like(param.array, fill))
        return state[name].array

    # ----- saving and resuming ----------------------------------------------------------
    def state_dict(self):
        """{'state': {number: {...}}, 'param_groups': [...]} as torch (live references)."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: entries for p, entries in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state saved by state_dict(), in torch's layout or the flat
        one. The groups must hold the same numbers of parameters as when it was saved."""
        if "param_groups" not in state_dict:
            state_dict = unflatten_state_dict(state_dict)
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}: loaded state dict has a different number "
                             f"of parameter groups ({len(saved_groups)}, the optimizer has "
                             f"{len(self.param_groups)})")
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{type(self).__name__}: loaded state dict contains a parameter group "
                    f"that doesn't match the size of optimizer's group (group {g}: "
                    f"{len(saved['params'])} saved, {len(group['params'])} here)")
        lookup = {int(i): p for saved, group in zip(saved_groups, self.param_groups)
                  for i, p in zip(saved["params"], group["params"])}
        unknown = sorted(int(i) for i in state_dict["state"] if int(i) not in lookup)
        if unknown:
            raise ValueError(f"loaded state dict has state for unknown parameters {unknown}")
        self.state = defaultdict(dict, {lookup[int(i)]: self._restored(lookup[int(i)], entries)
                                        for i, entries in state_dict["state"].items()})
        for saved, group in zip(saved_groups, self.param_groups):
            restored = {name: plain(v) for name, v in saved.items() if name != "params"}
            for name in self.defaults:            # options the flat form left out (None)
                restored.setdefault(name, group.get(name))
            restored["params"] = group["params"]
            group.clear()
            group.update(restored)

    @staticmethod
    def _restored(param, entries):
        """A parameter's state as new Tensors: 'step' a float32 scalar, the rest copied
        to the parameter's device (floats in its dtype), as torch's load_state_dict."""
        state = {}
        for name, value in entries.items():
            array = np.array(value.numpy() if isinstance(value, Tensor) else value, copy=True)
            if name == "step":
                state[name] = Tensor(array.astype(np.float32).reshape(()))
                continue
            if array.dtype.kind == "f":
                array = array.astype(param.dtype)
            state[name] = Tensor(backend.to_device(array, param.device))
        return state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            lines += [f"    {name}: {group[name]}" for name in sorted(group) if name != "params"]
        return "\n".join(lines) + "\n)"
