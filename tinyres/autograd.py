"""Function, Context and grad mode: how an op records itself for the backward pass.

Every differentiable op is a `Function` subclass with two static methods side by side:

    forward(ctx, *arrays, **params) -> array        computes the output on raw arrays
    backward(ctx, grad_out) -> one gradient per input (an array, or None)

`Function.apply` unwraps Tensors, runs `forward`, and, when grad mode is on and some input
requires a gradient, links the output to a `Context` holding the function, its inputs and
whatever `forward` saved. `Tensor.backward` (tensor.py) walks those links in reverse.
"""
import contextlib
import threading

from tinyres.backend import device_of

_state = threading.local()


def is_grad_enabled():
    """True unless inside `no_grad()`."""
    return getattr(_state, "enabled", True)


def set_grad_enabled(mode):
    """Turn graph recording on or off for this thread; returns the previous mode."""
    previous = is_grad_enabled()
    _state.enabled = bool(mode)
    return previous


class _GradMode(contextlib.ContextDecorator):
    """Context manager and decorator setting grad mode, restoring it on exit."""

    mode = True

    def __enter__(self):
        self._previous = set_grad_enabled(self.mode)
        return self

    def __exit__(self, *exc):
        set_grad_enabled(self._previous)
        return False


class no_grad(_GradMode):
    """`with no_grad():` or `@no_grad()`: ops record no graph inside."""

    mode = False


class enable_grad(_GradMode):
    """`with enable_grad():` turns recording back on inside a `no_grad` region."""

    mode = True


class Context:
    """What a Function's forward leaves for its backward: saved arrays and plain attributes."""

    def __init__(self, function, inputs):
        self.function = function
        self.inputs = inputs          # the input Tensors, in order (constants are None)
        self.saved = ()
        self.freed = False            # True once backward ran without retain_graph
        self.needs_input_grad = tuple(t is not None and t.requires_grad for t in inputs)

    def save_for_backward(self, *arrays):
        self.saved = arrays

    @property
    def saved_tensors(self):
        self.check_not_freed()
        return self.saved

    def check_not_freed(self):
        if self.freed:
            raise RuntimeError(
                f"{self.function.__name__}: trying to backward through the graph a second "
                "time; its saved values were freed. Pass retain_graph=True to the first "
                "backward() if you need to call backward() twice.")

    def free(self):
        """Drop saved arrays and every attribute set by forward (the graph's memory)."""
        keep = {"function", "inputs", "needs_input_grad"}
        for name in [n for n in vars(self) if n not in keep]:
            delattr(self, name)
        self.saved = ()
        self.freed = True


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
        from tinyres.tensor import Tensor
        _check_same_device(cls.__name__, inputs)
        arrays = [t.data if t is not None else None for t in inputs]
        ctx = Context(cls, tuple(inputs))
        out = cls.forward(ctx, *arrays, **params)
        needs_graph = is_grad_enabled() and any(ctx.needs_input_grad)
        result = Tensor(out, requires_grad=needs_graph)
        if needs_graph:
            result._ctx = ctx
        return result


def _check_same_device(op, inputs):
    devices = {device_of(t.data) for t in inputs if t is not None}
    if len(devices) > 1:
        shapes = ", ".join(f"{tuple(t.shape)} on {t.device}" for t in inputs if t is not None)
        raise RuntimeError(f"{op}: all inputs must be on one device, got {shapes}")


def run_backward(ctx, grad_out):
    """Call a node's backward and check what comes back: one gradient per input,
    each of its input's shape and dtype."""
    name = ctx.function.__name__
    ctx.check_not_freed()
    grads = ctx.function.backward(ctx, grad_out)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(ctx.inputs):
        raise RuntimeError(f"{name}.backward returned {len(grads)} gradients for "
                           f"{len(ctx.inputs)} inputs")
    for i, (t, g) in enumerate(zip(ctx.inputs, grads)):
        if g is None or t is None:
            continue
        if g.shape != t.data.shape or g.dtype != t.data.dtype:
            raise RuntimeError(
                f"{name}.backward: gradient {i} has shape {tuple(g.shape)} and dtype "
                f"{g.dtype}, expected shape {tuple(t.data.shape)} and dtype {t.data.dtype}")
    return grads
