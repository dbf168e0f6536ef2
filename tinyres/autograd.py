"""Function, Context and grad mode: how an op records itself for the backward pass.

Every differentiable op is a `Function` subclass with two static methods side by side:

    forward(ctx, *arrays, **params) -> array        computes the output on raw arrays
    backward(ctx, grad_out) -> one gradient per input (an array, or None)

`Function.apply` unwraps Tensors, runs `forward`, and, when grad mode is on and some input
requires a gradient, links the output to a `Context` holding the function, its inputs and
whatever `forward` saved. `Tensor.backward` (tensor.py) walks those links in reverse.
"""
import contextlib
import functools
import inspect
import sys
import threading
import traceback
import weakref

import numpy as np

from tinyres.backend import device_of, get_array_module, is_cuda_array

_state = threading.local()     # per thread, as in PyTorch: grad mode and inference mode
_anomaly = {"enabled": False}  # process-wide, as torch.autograd.set_detect_anomaly


# ----- grad mode ------------------------------------------------------------------------
def is_grad_enabled():
    """True unless inside `no_grad()`, `set_grad_enabled(False)` or `inference_mode()`."""
    return getattr(_state, "grad", True)


def is_inference_mode_enabled():
    """True inside `inference_mode()`."""
    return getattr(_state, "inference", False)


def _modes():
    return is_grad_enabled(), is_inference_mode_enabled()


def _set_modes(grad, inference):
    _state.grad, _state.inference = bool(grad), bool(inference)


def _saved_modes():
    """This thread's stack of the modes that each open `with` block will restore."""
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


class _ModeBlock(contextlib.ContextDecorator):
    """A `with` block (or decorator) that sets the grad modes and restores them on exit.

    Each entry pushes the modes it found onto this thread's stack and its exit pops them,
    so one instance can be entered again while open (recursion, threads), and an
    exception inside restores the state too."""

    grad = inference = None    # None: leave that mode as it is

    def __new__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):   # bare @no_grad
            block = super().__new__(cls)
            block.__init__()
            return block(args[0])
        return super().__new__(cls)

    def __call__(self, function):
        return _decorate(lambda: self._recreate_cm(), function)

    def __enter__(self):
        _saved_modes().append(_modes())
        grad, inference = _modes()
        _set_modes(grad if self.grad is None else self.grad,
                   inference if self.inference is None else self.inference)
        return self

    def __exit__(self, *exc):
        _set_modes(*_saved_modes().pop())
        return False


class no_grad(_ModeBlock):
    """`with no_grad():` or `@no_grad()`: ops record no graph inside."""

    grad = False


class enable_grad(_ModeBlock):
    """`with enable_grad():` turns recording back on inside a `no_grad` region."""

    grad = True


class inference_mode(_ModeBlock):
    """`with inference_mode():` no graph, and every tensor made inside is an inference
    tensor: it can never be saved for a backward pass, nor changed in place outside."""

    def __init__(self, mode=True):
        self.grad = not mode           # inference_mode(False) turns recording back on
        self.inference = bool(mode)


class set_grad_enabled:
    """Set grad mode for this thread: at once as a call, until the end of the block as a
    `with` statement, or for each call of a function it decorates (PyTorch's semantics)."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self._previous = _modes()
        _set_modes(self.mode, self._previous[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set_modes(*self._previous)
        return False

    def __call__(self, function):
        _set_modes(*self._previous)       # as a decorator it changes nothing until called
        mode = self.mode
        return _decorate(lambda: set_grad_enabled(mode), function)


def _decorate(block, function):
    """`function` run inside a fresh `block()` on every call; a generator function has
    each of its steps run inside one (so the mode holds inside the generator's body and
    not between its steps), as PyTorch's decorators do."""
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def generator(*args, **kwargs):
            steps = function(*args, **kwargs)
            try:
                with block():
                    response = steps.send(None)
                while True:
                    try:
                        request = yield response
                    except GeneratorExit:
                        with block():
                            steps.close()
                        raise
                    except BaseException:
                        with block():
                            response = steps.throw(*sys.exc_info())
                    else:
                        with block():
                            response = steps.send(request)
            except StopIteration as done:
                return done.value
        return generator

    @functools.wraps(function)
    def call(*args, **kwargs):
        with block():
            return function(*args, **kwargs)
    return call


# ----- anomaly detection ----------------------------------------------------------------
def is_anomaly_enabled():
    return _anomaly["enabled"]


def set_detect_anomaly(mode):
    """Check every gradient for NaN and Inf as backward makes it, and remember where each
    op's forward was called, so that the error can show it."""
    _anomaly["enabled"] = bool(mode)


class detect_anomaly(contextlib.ContextDecorator):
    """`with detect_anomaly():` anomaly detection inside the block."""

    def __init__(self, check_nan=True):
        self.check_nan = check_nan

    def __enter__(self):
        self._previous = is_anomaly_enabled()
        set_detect_anomaly(self.check_nan)
        return self

    def __exit__(self, *exc):
        set_detect_anomaly(self._previous)
        return False


def _check_finite(ctx, grads):
    """Anomaly mode: a NaN or Inf gradient is an error naming the op and its forward."""
    for i, g in enumerate(grads):
        if g is None or get_array_module(g).isfinite(g).all():
            continue
        where = "".join(traceback.format_list(getattr(ctx, "stack", []) or []))
        kind = "nan" if get_array_module(g).isnan(g).any() else "inf"
        raise RuntimeError(
            f"Function '{ctx.function.__name__}Backward' returned {kind} values in its "
            f"{i}th output (the gradient for input {i}, shape {tuple(g.shape)}).\n"
            f"Its forward was called here (most recent call last):\n{where}")


# ----- versions: which in-place writes a tensor's memory has seen -----------------------
class VersionCounter:
    """How many in-place writes have changed a piece of memory. A tensor, its detach()
    and every view made from it share one counter."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


def _shares_memory(a, b):
    if a is b:
        return True
    if type(a) is np.ndarray and type(b) is np.ndarray:    # the common case, at once
        return bool(np.may_share_memory(a, b))
    if a is None or b is None or not hasattr(a, "shape") or not hasattr(b, "shape"):
        return False
    if is_cuda_array(a) != is_cuda_array(b):       # a copy between devices
        return False
    return bool(get_array_module(a).may_share_memory(a, b))


class Context:
    """What a Function's forward leaves for its backward: saved arrays and plain attributes."""

    def __init__(self, function, inputs):
        self.function = function
        self.inputs = inputs          # the input Tensors, in order (constants are None)
        self.saved = ()
        # (index in saved, its counter, the value it must keep, (dtype, shape, how saved))
        self.saved_versions = ()
        self.freed = False            # True once backward ran without retain_graph
        self.needs_input_grad = tuple(t is not None and t.requires_grad for t in inputs)

    def save_for_backward(self, *arrays):
        self.saved = arrays

    @property
    def saved_tensors(self):
        self.check_not_freed()
        self.check_versions()
        return self.saved

    def check_not_freed(self):
        if self.freed:
            raise RuntimeError(
                f"{self.function.__name__}: trying to backward through the graph a second "
                "time; its saved values were freed. Pass retain_graph=True to the first "
                "backward() if you need to call backward() twice.")

    def record_versions(self, result):
        """Note which saved arrays are an input's or the output's memory and the version
        each had, so that backward can tell if an in-place write changed one since."""
        owners = [(t, f"input {i}") for i, t in enumerate(self.inputs) if t is not None]
        owners.append((result, "output 0"))
        checks = []
        for k, array in enumerate(self.saved):
            for t, role in owners:
                if _shares_memory(array, t.array):
                    if t._inference:
                        raise RuntimeError(
                            f"{self.function.__name__}: Inference tensors cannot be saved for "
                            "backward. To work around you can make a clone to get a normal "
                            "tensor and use it in autograd.")
                    checks.append((k, t._version_counter, t._version_counter.value,
                                   (t.array.dtype, t.array.shape,
                                    f"saved by {self.function.__name__} as its {role}")))
                    break
        self.saved_versions = tuple(checks)

    def check_versions(self):
        for _, counter, expected, (dtype, shape, how) in self.saved_versions:
            if counter.value != expected:    # the message made here only: str(dtype) is slow
                what = f"{dtype} tensor of shape {list(shape)}, {how}"
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified "
                    f"by an inplace operation: [{what}] is at version {counter.value}; "
                    f"expected version {expected} instead. Hint: clone() the tensor before "
                    "changing it in place, or do the in-place change after backward().")

    def free(self):
        """Drop the saved arrays and every array forward set as an attribute (the graph's
        memory); shapes and numbers stay, so a node that saved nothing can run again,
        as in PyTorch."""
        for name in [n for n, v in vars(self).items() if hasattr(v, "shape")
                     and hasattr(v, "dtype")]:
            delattr(self, name)
        self.saved = ()
        self.saved_versions = ()
        self.freed = True

    def __getattr__(self, name):
        # only reached for a missing attribute: one that free() dropped, or a typo
        if self.__dict__.get("freed"):
            self.check_not_freed()
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


class NoGraph:
    """What forward gets instead of a Context when no graph is recorded (no_grad,
    inference_mode, or no input requiring grad): it keeps no inputs and drops whatever
    forward saves, so an op leaves nothing behind but its output."""

    def __init__(self, n_inputs):
        self.needs_input_grad = (False,) * n_inputs

    def save_for_backward(self, *arrays):
        pass


class Function:
    """Base of every differentiable op. Subclasses define static forward and backward."""

    @staticmethod
    def forward(ctx, *arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_out):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run forward on the inputs' arrays and record the node when a gradient is needed.

        Inputs are Tensors or None (an optional input such as a missing bias).
        """
        from tinyres.tensor import Tensor   # tensor.py imports this module: Tensor comes late
        for i, t in enumerate(inputs):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"{cls.__name__}: argument {i} must be a Tensor, not "
                                f"{type(t).__module__}.{type(t).__name__} (wrap arrays with "
                                "tinyres.tensor() or tinyres.from_numpy())")
        _check_same_device(cls.__name__, inputs)
        arrays = [t.array if t is not None else None for t in inputs]
        needs_graph = (is_grad_enabled() and not is_inference_mode_enabled()
                       and any(t is not None and t.requires_grad for t in inputs))
        ctx = Context(cls, tuple(inputs)) if needs_graph else NoGraph(len(inputs))
        out = cls.forward(ctx, *arrays, **params)
        result = Tensor(out, requires_grad=needs_graph)
        _share_memory_bookkeeping(result, inputs, cls, params)
        if needs_graph:
            _check_views_current(cls.__name__, inputs, ctx.needs_input_grad)
            ctx.record_versions(result)
            if is_anomaly_enabled():
                ctx.stack = traceback.extract_stack()[:-2]
            link_consumer(ctx)
            result._ctx = ctx
        return result


def _share_memory_bookkeeping(result, inputs, function, params):
    """An output that shares memory with an input (a view: reshape, slice, transpose...)
    shares that input's version counter, remembers the tensor at the root as its base, and
    how it was made from its input (so that an in-place write to it can be replayed on
    the input: functional/inplace.py)."""
    for t in inputs:
        if t is not None and _shares_memory(result.array, t.array):
            result._version_counter = t._version_counter
            result._base = t if t._base is None else t._base
            result._graph_version = t._version_counter.value
            result._view_of = (t, function, params)
            result._inference = t._inference    # a view of a normal tensor stays normal
            return


def _check_views_current(op, inputs, needs_grad):
    """A view whose memory was changed in place (through its base or another view) after
    its history was recorded is made again from its input, as PyTorch regenerates it:
    the nodes that read it before keep the old history, what follows gets the new."""
    for i, t in enumerate(inputs):
        if needs_grad[i] and t._base is not None and t._version_counter.value != t._graph_version:
            refresh_view(t)


def refresh_view(t):
    """t's history made again from the tensor it views (that one first, if it is a stale
    view too)."""
    from tinyres.functional.inplace import _stand_in, view_again
    parent = t._view_of[0]
    if parent._base is not None and parent._version_counter.value != parent._graph_version:
        refresh_view(parent)
    _stand_in(t)                      # earlier readers keep the old history
    view_again(t)


def link_consumer(ctx):
    """Each non-leaf input remembers (weakly) the nodes that consumed it, so that an
    in-place op on it can hand those nodes the tensor's earlier value (functional/inplace.py)."""
    ref = None
    for t, needed in zip(ctx.inputs, ctx.needs_input_grad):
        if needed and t._ctx is not None:
            ref = ref or weakref.ref(ctx)
            t._consumers.append(ref)


def _check_same_device(op, inputs):
    """Refuse inputs on different devices ('cuda:0' and 'cuda:1' differ), in torch's words."""
    devices = [device_of(t.array) for t in inputs if t is not None]
    other = next((d for d in devices if d != devices[0]), None)
    if other is not None:
        shapes = ", ".join(f"{tuple(t.shape)} on {t.device}" for t in inputs if t is not None)
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at "
                           f"least two devices, {devices[0]} and {other}! ({op}: inputs "
                           f"{shapes})")


def run_backward(ctx, grad_out):
    """Call a node's backward and check what comes back: one gradient per input,
    each of its input's shape and dtype."""
    name = ctx.function.__name__
    grads = ctx.function.backward(ctx, grad_out)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(ctx.inputs):
        raise RuntimeError(f"{name}.backward returned {len(grads)} gradients for "
                           f"{len(ctx.inputs)} inputs")
    for i, (t, g) in enumerate(zip(ctx.inputs, grads)):
        if g is None or t is None:
            continue
        if g.shape != t.array.shape or g.dtype != t.array.dtype:
            raise RuntimeError(
                f"{name}.backward: gradient {i} has shape {tuple(g.shape)} and dtype "
                f"{g.dtype}, expected shape {tuple(t.array.shape)} and dtype {t.array.dtype}")
    return grads


# ----- functional entry points: grad, backward, Variable --------------------------------
def _as_tuple(tensors):
    from tinyres.tensor import Tensor
    return (tensors,) if isinstance(tensors, Tensor) else tuple(tensors)


def _seeds(outputs, grad_outputs, op):
    """The starting gradient of each output: grad_outputs' arrays (checked against the
    outputs' shapes), or ones for a scalar output whose grad_output is None."""
    from tinyres.tensor import Tensor
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    grad_outputs = _as_tuple(grad_outputs) if isinstance(grad_outputs, Tensor) or \
        grad_outputs is None else tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"{op}: grad_outputs has {len(grad_outputs)} entries but there "
                           f"are {len(outputs)} outputs")
    seeds = []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not out.requires_grad:
            raise RuntimeError(f"{op}: element {i} of tensors does not require grad and does "
                               "not have a grad_fn")
        if g is None:
            if out.array.size != 1:
                raise RuntimeError(f"{op}: grad can be implicitly created only for scalar "
                                   f"outputs (output {i} has shape {out.shape})")
            seeds.append(get_array_module(out.array).ones_like(out.array))
            continue
        array = g.array if isinstance(g, Tensor) else g
        if tuple(array.shape) != out.shape:
            raise RuntimeError(f"{op}: Mismatch in shape: grad_output[{i}] has a shape of "
                               f"{tuple(array.shape)} and output[{i}] has a shape of "
                               f"{out.shape}.")
        seeds.append(array.astype(out.dtype, copy=True))
    return seeds


def _walk(outputs, seeds, retain_graph, capture=None):
    from tinyres.backward import _backward_walk
    more = list(zip(outputs[1:], seeds[1:]))
    _backward_walk(outputs[0], seeds[0], bool(retain_graph), more=more, capture=capture)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=None, is_grads_batched=False,
         materialize_grads=False):
    """torch.autograd.grad: the gradients of `outputs` (weighted by `grad_outputs`, ones
    for a scalar output) with respect to each of `inputs`, as a tuple of Tensors, without
    touching any tensor's .grad. An input the outputs do not depend on is an error unless
    allow_unused=True (its gradient is then None, or zeros with materialize_grads=True).
    The graph is freed afterwards unless retain_graph=True."""
    if create_graph:
        raise NotImplementedError(
            "autograd.grad(create_graph=True) is not supported: tinyres's backward functions "
            "work on raw arrays (NumPy/CuPy), not on Tensors, so the gradients they return "
            "have no graph of their own and cannot be differentiated again")
    if is_grads_batched:
        raise NotImplementedError("autograd.grad(is_grads_batched=True) is not supported")
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when "
                         "materialize_grads=True, but got: allow_unused=False.")
    allow_unused = materialize_grads if allow_unused is None else allow_unused
    outputs, inputs = _as_tuple(outputs), _as_tuple(inputs)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: One of the differentiated Tensors does not require grad "
                               f"(input {i}, shape {t.shape})")
    seeds = _seeds(outputs, grad_outputs, "grad")
    capture = {id(t): None for t in inputs}
    _walk(outputs, seeds, retain_graph, capture)
    return tuple(_captured(capture[id(t)], t, i, allow_unused, materialize_grads)
                 for i, t in enumerate(inputs))


def _captured(array, t, index, allow_unused, materialize):
    from tinyres.tensor import Tensor
    if array is not None:
        return Tensor(array.copy())
    if not allow_unused:
        raise RuntimeError(f"grad: The differentiated Tensor at index {index} appears to not "
                           "have been used in the graph. Set allow_unused=True if this is the "
                           "desired behavior.")
    return Tensor(get_array_module(t.array).zeros_like(t.array)) if materialize else None


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False,
             inputs=None):
    """torch.autograd.backward: accumulate the gradients of `tensors` (weighted by
    grad_tensors) into the .grad of the leaves, or of `inputs` only when given."""
    if create_graph:
        raise NotImplementedError(
            "autograd.backward(create_graph=True) is not supported: tinyres's backward "
            "functions work on raw arrays, so gradients carry no graph")
    from tinyres.backward import _accumulate
    tensors = _as_tuple(tensors)
    seeds = _seeds(tensors, grad_tensors, "backward")
    if inputs is None:
        _walk(tensors, seeds, retain_graph)
        return
    inputs = _as_tuple(inputs)
    capture = {id(t): None for t in inputs}
    _walk(tensors, seeds, retain_graph, capture)
    for t in inputs:
        if capture[id(t)] is not None:
            _accumulate(t, capture[id(t)])


class _VariableMeta(type):
    def __instancecheck__(cls, other):
        from tinyres.tensor import Tensor
        return isinstance(other, Tensor)


class Variable(metaclass=_VariableMeta):
    """Deprecated, as in torch: Variable(tensor, requires_grad=False) returns a Tensor
    sharing tensor's memory (a new leaf); every Tensor is an instance of Variable. Use
    tensors directly."""

    def __new__(cls, data=None, requires_grad=False, volatile=False):
        from tinyres.tensor import Tensor
        if data is None:
            import numpy as np
            return Tensor(np.zeros((0,), dtype=np.float32), requires_grad=requires_grad)
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        out = data.detach()
        out.requires_grad_(requires_grad)
        return out
