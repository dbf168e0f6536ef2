"""Module hooks, as torch.nn.Module's: code that runs around a module's forward and when
the gradients with respect to its inputs are computed.

    register_forward_pre_hook(hook)     hook(module, args) -> None or new args
    register_forward_hook(hook)         hook(module, args, output) -> None or new output
    register_full_backward_pre_hook     hook(module, grad_output) -> None or new grad_output
    register_full_backward_hook(hook)   hook(module, grad_input, grad_output)
                                            -> None or new grad_input

Every register_* returns a RemovableHandle; hooks run in registration order (prepend=True
puts one first). Backward hooks are wired the way torch does it: while the module runs
with gradients on, its tensor input is passed through an identity op (_InputGradHook)
and its output through another (_OutputGradHook). The output one's backward sees
grad_output; the input one's backward sees grad_input, calls the hooks, and hands on
what they return. The identity ops copy their array (torch returns views), so a later
in-place op on a hooked output is allowed here where torch refuses it.

Not built: a module whose forward takes more than one tensor that requires a gradient,
or whose output is a tuple while backward pre-hooks are registered (NotImplementedError).
"""
import itertools
import warnings
import weakref
from collections import OrderedDict

from tinyres.autograd import Function, is_grad_enabled
from tinyres.tensor import Tensor

_next_id = itertools.count()


class RemovableHandle:
    """What register_*hook returns: remove() unregisters the hook (also as `with`)."""

    def __init__(self, hooks_dict, *, extra_dict=None):
        self.hooks_dict_ref = weakref.ref(hooks_dict)
        self.id = next(_next_id)
        self.extra_dict_ref = weakref.ref(extra_dict) if extra_dict is not None else None

    def remove(self):
        """Unregister the hook (a second call does nothing)."""
        for ref in (self.hooks_dict_ref, self.extra_dict_ref):
            table = ref() if ref is not None else None
            if table is not None and self.id in table:
                del table[self.id]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def add_hook(table, hook, prepend=False, with_kwargs_table=None, with_kwargs=False):
    """Put `hook` in the OrderedDict `table` (first if prepend) and return its handle."""
    handle = RemovableHandle(table, extra_dict=with_kwargs_table)
    table[handle.id] = hook
    if with_kwargs:
        with_kwargs_table[handle.id] = True
    if prepend:
        table.move_to_end(handle.id, last=False)
    return handle


def new_hook_tables():
    """The six (id -> hook) tables a Module keeps, empty, under torch's attribute names."""
    names = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks",
             "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")
    return {name: OrderedDict() for name in names}


def has_hooks(module):
    """Whether any hook is registered (the fast path of Module.__call__ skips them all)."""
    d = module.__dict__
    return bool(d.get("_forward_hooks") or d.get("_forward_pre_hooks")
                or d.get("_backward_hooks") or d.get("_backward_pre_hooks"))


def call_with_hooks(module, args, kwargs):
    """Module.__call__ when hooks are registered: pre-hooks, forward, forward hooks, and
    the wiring for backward hooks."""
    args, kwargs = _run_pre_hooks(module, args, kwargs)
    wiring = None
    if (module._backward_hooks or module._backward_pre_hooks) and is_grad_enabled():
        wiring = _BackwardWiring(module)
        args = wiring.wrap_inputs(args)
    result = module.forward(*args, **kwargs)
    for hook_id, hook in list(module._forward_hooks.items()):
        if hook_id in module._forward_hooks_with_kwargs:
            replaced = hook(module, args, kwargs, result)
        else:
            replaced = hook(module, args, result)
        if replaced is not None:
            result = replaced
    if wiring is not None:
        result = wiring.wrap_outputs(result)
    return result


def _run_pre_hooks(module, args, kwargs):
    for hook_id, hook in list(module._forward_pre_hooks.items()):
        if hook_id in module._forward_pre_hooks_with_kwargs:
            result = hook(module, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError("forward pre-hook must return None or a tuple of "
                                       f"(new_args, new_kwargs), but got {result}.")
                args, kwargs = result
        else:
            result = hook(module, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
    return args, kwargs


class _BackwardWiring:
    """One forward call's link between the identity ops and the module's backward hooks."""

    def __init__(self, module):
        self.module = module
        self.n_inputs = 0
        self.input_position = None      # which argument is the hooked tensor, if any
        self.grad_outputs = []
        self.n_outputs = 0

    def wrap_inputs(self, args):
        self.n_inputs = len(args)
        needing = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
        if len(needing) > 1:
            raise NotImplementedError(
                f"{type(self.module).__name__}: full backward hooks on a module called with "
                f"{len(needing)} tensors that require gradients are not supported (one only)")
        if not needing:
            return args
        self.input_position = needing[0]
        args = list(args)
        args[self.input_position] = _InputGradHook.apply(args[self.input_position], wiring=self)
        return tuple(args)

    def wrap_outputs(self, result):
        outputs = (result,) if isinstance(result, Tensor) else result
        if not isinstance(outputs, tuple) or not all(isinstance(t, Tensor) for t in outputs):
            raise NotImplementedError(f"{type(self.module).__name__}: full backward hooks need "
                                      "a Tensor or a tuple of Tensors as the module's output")
        if len(outputs) > 1 and (self.module._backward_pre_hooks or self.input_position is None):
            raise NotImplementedError(
                f"{type(self.module).__name__}: backward pre-hooks, or backward hooks with no "
                "input that requires a gradient, are supported for one output only")
        self.n_outputs = len(outputs)
        self.grad_outputs = [None] * len(outputs)
        wrapped = tuple(_OutputGradHook.apply(t, wiring=self, index=i) if t.requires_grad
                        else t for i, t in enumerate(outputs))
        return wrapped[0] if isinstance(result, Tensor) else wrapped

    def output_gradient(self, index, grad):
        """Record grad_output[index]; run the pre-hooks (one output). With no input to
        hook, the backward hooks run here too, with grad_input all None (as torch)."""
        self.grad_outputs[index] = Tensor(grad)
        for hook in list(self.module._backward_pre_hooks.values()):
            replaced = hook(self.module, tuple(self.grad_outputs))
            if replaced is not None:
                self.grad_outputs = _checked(replaced, self.grad_outputs, "grad_output")
        if self.input_position is None and self.module._backward_hooks:
            warnings.warn("Full backward hook is firing when gradients are computed with "
                          "respect to module outputs since no inputs require gradients.",
                          UserWarning, stacklevel=2)
            grad_input = (None,) * self.n_inputs
            for hook in list(self.module._backward_hooks.values()):
                replaced = hook(self.module, grad_input, tuple(self.grad_outputs))
                if replaced is not None and any(g is not None for g in replaced):
                    raise RuntimeError("Backward hook for Modules where no input requires "
                                       "gradient should always return None or None for all "
                                       "gradients.")
        return self.grad_outputs[index].array

    def input_gradient(self, grad):
        """Call the backward hooks with grad_input; return the (possibly replaced) one."""
        grad_input = [None] * self.n_inputs
        grad_input[self.input_position] = Tensor(grad)
        grad_input = tuple(grad_input)
        for hook in list(self.module._backward_hooks.values()):
            replaced = hook(self.module, grad_input, tuple(self.grad_outputs))
            if replaced is not None:
                grad_input = tuple(_checked(replaced, grad_input, "grad_input"))
        new = grad_input[self.input_position]
        return None if new is None else new.array


def _checked(replaced, current, what):
    replaced = tuple(replaced) if isinstance(replaced, (tuple, list)) else (replaced,)
    if len(replaced) != len(current):
        raise RuntimeError(f"Backward hook returned an invalid number of {what}, got "
                           f"{len(replaced)}, but expected {len(current)}")
    return list(replaced)


class _OutputGradHook(Function):
    """Identity on a hooked module's output; its backward records grad_output."""

    @staticmethod
    def forward(ctx, x, wiring, index):
        ctx.wiring, ctx.index = wiring, index
        return x.copy()

    @staticmethod
    def backward(ctx, grad_out):
        # d x/dx = 1: the gradient passes (as the pre-hooks leave it)
        return ctx.wiring.output_gradient(ctx.index, grad_out)


class _InputGradHook(Function):
    """Identity on a hooked module's input; its backward calls the backward hooks."""

    @staticmethod
    def forward(ctx, x, wiring):
        ctx.wiring = wiring
        return x.copy()

    @staticmethod
    def backward(ctx, grad_out):
        # d x/dx = 1: the gradient passes (as the hooks leave it)
        return ctx.wiring.input_gradient(grad_out)
