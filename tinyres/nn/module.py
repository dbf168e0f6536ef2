"""Parameter and Module: the containers that hold a network's weights and state.

A Module keeps three ordered dicts, filled by plain attribute assignment:

    self.conv1 = Conv2d(...)        -> _modules['conv1']
    self.weight = Parameter(...)    -> _parameters['weight']
    self.register_buffer('running_mean', zeros(c))   -> _buffers['running_mean']

Everything else (parameters(), state_dict(), to(), train()) walks those dicts, so the
dotted names ('layer1.0.conv1.weight') are the same as PyTorch's and weights move between
the two engines through plain NumPy arrays.
"""
from collections import OrderedDict, namedtuple

import numpy as np

from tinyres import backend
from tinyres.functional.device import cuda_device, parse_to_args
from tinyres.nn import hooks
from tinyres.tensor import FLOAT_DTYPES, Tensor


class Parameter(Tensor):
    """A leaf Tensor that a Module registers as one of its weights (requires grad)."""

    def __init__(self, data, requires_grad=True):
        source = data if isinstance(data, Tensor) else None
        if source is not None:
            data = data.array
        if not hasattr(data, "dtype"):
            data = np.asarray(data, dtype=np.float32)
        super().__init__(data, requires_grad=requires_grad)
        if source is not None:            # the same memory: the same version counter
            self._version_counter = source._version_counter

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_numpy(value, key="value"):
    """A NumPy array of numbers from a tinyres Tensor, a torch tensor, a CuPy or NumPy
    array, or a Python number; anything else (None, strings, objects) is a TypeError."""
    if value is None:
        raise TypeError(f"{key}: expected an array or tensor of numbers, got None")
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach"):                    # torch.Tensor
        value = value.detach().cpu()
    if hasattr(value, "numpy"):
        return value.numpy()
    if backend.is_cuda_array(value):
        return value.get()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{key}: cannot read {type(value).__name__} as an array: {err}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{key}: expected numbers, got an array of dtype {array.dtype} "
                        f"from {type(value).__name__}")
    return array


def _indent(text, spaces):
    """Indent every line but the first (torch's _addindent)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    pad = " " * spaces
    return lines[0] + "\n" + "\n".join(pad + line for line in lines[1:])


def _parse_to_args(args, kwargs):
    """Module.to's arguments, as Tensor.to's (device, dtype, another tensor), split into
    (device or None, dtype or None); only floating dtypes, as torch."""
    device, dtype, _ = parse_to_args("Module.to", args, kwargs)
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise TypeError(f"nn.Module.to only accepts floating point dtypes (float32 or "
                        f"float64 here), but got desired dtype={dtype}")
    return device, dtype


def _converted(array, device, dtype):
    """The array cast to dtype (float arrays only, like torch) and moved to device."""
    if dtype is not None and array.dtype in FLOAT_DTYPES and array.dtype != dtype:
        array = array.astype(dtype)
    if device is not None:
        array = backend.to_device(array, device)
    return array


class Module:
    """Base class of every layer and network, with PyTorch's API."""

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        for name, table in hooks.new_hook_tables().items():
            object.__setattr__(self, name, table)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        if hooks.has_hooks(self):
            return hooks.call_with_hooks(self, args, kwargs)
        return self.forward(*args, **kwargs)

    # ----- hooks (nn/hooks.py) ----------------------------------------------------------
    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """hook(module, args) before forward; a returned value replaces args (a single
        value is wrapped in a tuple). with_kwargs: hook(module, args, kwargs) returning
        None or (args, kwargs). Returns a handle whose remove() unregisters it."""
        return hooks.add_hook(self._forward_pre_hooks, hook, prepend,
                              self._forward_pre_hooks_with_kwargs, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False):
        """hook(module, args, output) after forward (with_kwargs: hook(module, args,
        kwargs, output)); a returned value replaces the output. Returns a handle."""
        return hooks.add_hook(self._forward_hooks, hook, prepend,
                              self._forward_hooks_with_kwargs, with_kwargs)

    def register_full_backward_hook(self, hook, prepend=False):
        """hook(module, grad_input, grad_output), tuples with one entry per positional
        argument (None where it is not a tensor that requires a gradient) and per output,
        called when the gradient with respect to the inputs is computed; a returned
        tuple replaces grad_input. Returns a handle."""
        return hooks.add_hook(self._backward_hooks, hook, prepend)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """hook(module, grad_output) when the gradient with respect to the output is
        computed; a returned tuple replaces grad_output. Returns a handle."""
        return hooks.add_hook(self._backward_pre_hooks, hook, prepend)

    def register_backward_hook(self, hook):
        """torch's deprecated non-full backward hook is not built: use
        register_full_backward_hook."""
        raise NotImplementedError("register_backward_hook (deprecated in torch) is not "
                                  "supported: use register_full_backward_hook")

    # ----- registration -----------------------------------------------------------------
    def _check_initialised(self, name):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called")

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)):
            self._check_initialised(name)
            self.__dict__.pop(name, None)
            for table in (self._parameters, self._buffers, self._modules):
                table.pop(name, None)
            self._non_persistent_buffers.discard(name)
            target = self._parameters if isinstance(value, Parameter) else self._modules
            target[name] = value
        elif "_parameters" in self.__dict__ and name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                "(a Parameter or None is expected)")
            self._parameters[name] = None
        elif "_modules" in self.__dict__ and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module "
                                f"{name!r} (a Module or None is expected)")
            self._modules[name] = None
        elif "_buffers" in self.__dict__ and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} "
                                "(a Tensor or None is expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the three tables.
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Add a parameter (or None, a declared but absent one such as a missing bias)."""
        self._check_initialised(name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, "
                            f"got {type(param).__name__}")
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add state that is not trained (running statistics); persistent buffers are
        part of state_dict()."""
        self._check_initialised(name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, "
                            f"got {type(tensor).__name__}")
        if name in self._parameters or name in self._modules:
            raise KeyError(f"register_buffer: attribute {name!r} already exists")
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        """Add a child module under `name` (what `self.name = module` does)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, "
                            f"got {type(module).__name__}")
        self._check_initialised(name)
        self.__dict__.pop(name, None)
        self._modules[name] = module

    register_module = add_module

    # ----- walking the tree -------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for this module and every descendant, depth first."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            child_prefix = f"{prefix}.{name}" if prefix else name
            yield from child.named_modules(memo, child_prefix, remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def _named_members(self, table, prefix, recurse, remove_duplicate=True):
        """(dotted name, tensor) for the entries of one table in this module (and below)."""
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        seen = set()
        for module_prefix, module in modules:
            for name, value in getattr(module, table).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter), in registration order, each shared one once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_submodule(self, target):
        """The module at dotted path `target` ('' is self), as torch."""
        module = self
        for item in target.split(".") if target else []:
            if not hasattr(module, item):
                raise AttributeError(f"{type(module).__name__} has no attribute `{item}`")
            module = getattr(module, item)
            if not isinstance(module, Module):
                raise AttributeError(f"`{item}` is not an nn.Module")
        return module

    def get_parameter(self, target):
        """The Parameter at dotted path `target` ('layer1.0.conv1.weight')."""
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if not hasattr(module, name):
            raise AttributeError(f"{type(module).__name__} has no attribute `{name}`")
        param = getattr(module, name)
        if not isinstance(param, Parameter):
            raise AttributeError(f"`{name}` is not an nn.Parameter")
        return param

    def get_buffer(self, target):
        """The buffer at dotted path `target` ('bn1.running_mean')."""
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._buffers:
            raise AttributeError(f"`{name}` is not a buffer")
        return module._buffers[name]

    def apply(self, fn):
        """Call fn on every child (recursively) and then on self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ----- modes and gradients ----------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (batch statistics, dropout on) here and below; returns self."""
        if not isinstance(mode, bool):
            raise ValueError(f"train: mode must be a bool, got {mode!r}")
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        """Evaluation mode (running statistics, dropout off); same as train(False)."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the gradients (None, as torch's default), or fill them with zeros."""
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad.array[...] = 0
                param.grad._version_counter.value += 1

    # ----- state_dict -------------------------------------------------------------------
    def state_dict(self, prefix="", keep_vars=False):
        """OrderedDict of dotted name -> every parameter and persistent buffer, each
        module's own entries before its children's (torch's order and keys). As in torch,
        the values are detached Tensors sharing the module's memory (a live view, not a
        snapshot: copy them, e.g. np.array(v), to keep this moment's values); with
        keep_vars=True, the Parameters and buffers themselves."""
        out = OrderedDict()
        for module_prefix, module in self.named_modules(prefix=prefix, remove_duplicate=False):
            for key, tensor in module._own_state(module_prefix):
                out[key] = tensor if keep_vars else tensor.detach()
        return out

    def _own_state(self, prefix):
        """(key, tensor) for this module's parameters and persistent buffers."""
        dot = prefix + "." if prefix else ""
        for name, param in self._parameters.items():
            if param is not None:
                yield dot + name, param
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers:
                yield dot + name, buf

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (NumPy, tinyres or torch tensors) into the parameters and buffers,
        keeping their dtype and device. Every key and value is checked and converted
        before anything is copied: a value that is not numbers (None, text), a size
        mismatch, or with strict=True a missing or unexpected key, raises one
        RuntimeError listing them all and leaves the module untouched.
        Returns (missing_keys, unexpected_keys)."""
        own = self.state_dict(keep_vars=True)
        incoming, errors = OrderedDict(), []
        for key, value in state_dict.items():
            try:
                incoming[key] = _as_numpy(value, key)
            except TypeError as err:
                errors.append(f'While copying the parameter named "{key}", expected an array '
                              f"or tensor of numbers from checkpoint but received: {err}")
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        errors += [f"size mismatch for {key}: copying a param with shape "
                   f"{tuple(value.shape)} from checkpoint, the shape in current model is "
                   f"{tuple(own[key].shape)}."
                   for key, value in incoming.items()
                   if key in own and tuple(value.shape) != own[key].shape]
        if strict:
            errors = self._key_errors(missing, unexpected) + errors
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:"
                               "\n\t" + "\n\t".join(errors))
        # Everything is converted before anything is written: all or nothing.
        converted = [(own[key], backend.to_device(value.astype(own[key].dtype), own[key].device))
                     for key, value in incoming.items() if key in own]
        for tensor, value in converted:
            tensor.array[...] = value
            tensor._version_counter.value += 1
        return IncompatibleKeys(missing, unexpected)

    @staticmethod
    def _key_errors(missing, unexpected):
        def quoted(keys):
            return ", ".join(f'"{key}"' for key in keys)
        errors = []
        if missing:
            errors.append(f"Missing key(s) in state_dict: {quoted(missing)}.")
        if unexpected:
            errors.append(f"Unexpected key(s) in state_dict: {quoted(unexpected)}.")
        return errors

    # ----- devices and dtypes -----------------------------------------------------------
    def to(self, *args, **kwargs):
        """Move (and/or cast, float arrays only) every parameter, gradient and buffer in
        place: the Parameter objects stay the same, so an optimizer keeps working.
        Accepts to('cuda:1'), to(tinyres.device('cpu')), to(np.float64),
        to('cpu', np.float64), to(tensor) (its device and dtype). Returns self."""
        device, dtype = _parse_to_args(args, kwargs)
        for module in self.modules():
            for tensor in list(module._parameters.values()) + list(module._buffers.values()):
                if tensor is None:
                    continue
                tensor.array = _converted(tensor.array, device, dtype)
                if tensor.grad is not None:
                    tensor.grad = Tensor(_converted(tensor.grad.array, device, dtype))
        return self

    def cuda(self, device=None):
        """Move every parameter and buffer to a CUDA device (the current one, or `device`:
        an index or 'cuda:N'). Returns self."""
        return self.to(cuda_device(device))

    def cpu(self):
        """Move every parameter and buffer to the CPU. Returns self."""
        return self.to("cpu")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # ----- printing ---------------------------------------------------------------------
    def extra_repr(self):
        """The text inside this module's parentheses in repr (override in layers)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({name}): {_indent(repr(child), 2)}"
                    for name, child in self._modules.items()]
        body = lines + children
        if len(lines) == 1 and not children:
            return f"{type(self).__name__}({lines[0]})"
        if not body:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"
