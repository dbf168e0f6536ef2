"""The backward walk: the graph ordered from the output to the leaves, the gradients sent
through it, summed where branches meet and accumulated into the leaves' .grad, and the
tensor hooks called on the way (Tensor.backward and tinyres.autograd.grad start it).

Where one tensor feeds two branches (a shortcut and a residual branch), their gradients
meet in `_backward_walk` (`_meet`: a += b where nothing but the walk holds a, else
a + b); a leaf's .grad is added to in place (`_accumulate`).
"""
import sys

import numpy as np

from tinyres.backend import kernels_for
from tinyres.kernels import buffers
from tinyres.tensor import Tensor


class _HookHandle:
    """What Tensor.register_hook returns: remove() takes the hook off the tensor."""

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _topological_order(root, *more_roots):
    """Tensors of the graph under `root` (and `more_roots`), each after all of its inputs.

    Iterative depth-first search (a 5000-op chain would overflow Python's recursion
    limit); inputs are visited in argument order, so the order is deterministic. An input
    is followed where its node recorded that it needed a gradient.
    """
    order, visited = [], set()
    stack = [(r, False) for r in reversed((root,) + more_roots)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            ctx = node._ctx
            for parent, needed in zip(reversed(ctx.inputs), reversed(ctx.needs_input_grad)):
                if needed and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def _run_hooks(node, grad):
    """Call the tensor's hooks in order; a returned gradient must keep shape and dtype."""
    for hook in node._hooks:
        replaced = hook(Tensor(grad))
        if replaced is None:
            continue
        new = replaced.array if isinstance(replaced, Tensor) else replaced
        if tuple(getattr(new, "shape", ())) != tuple(grad.shape) or \
                getattr(new, "dtype", None) != grad.dtype:
            name = getattr(hook, "__name__", type(hook).__name__)
            made_by = ("a leaf" if node._ctx is None
                       else f"the output of {node._ctx.function.__name__}")
            raise RuntimeError(
                f"hook '{name}' registered on {made_by}, a tensor of shape {node.shape} and dtype "
                f"{node.dtype} returned a gradient of shape "
                f"{tuple(getattr(new, 'shape', ()))} and dtype {getattr(new, 'dtype', None)}; "
                f"expected shape {tuple(grad.shape)} and dtype {grad.dtype}")
        grad = new
    return grad


def _run_post_accumulate_hooks(leaf):
    """Call hook(leaf) for each post-accumulate-grad hook of a leaf whose .grad is done."""
    for hook in leaf.__dict__.get("_post_accumulate_hooks", ()):
        hook(leaf)


def _accumulate(node, grad):
    """Add `grad` into node.grad: in place where it exists (as PyTorch), else an array this
    tensor alone owns: `grad` itself where nothing but the walk refers to it or to its
    memory (as PyTorch's AccumulateGrad steals a gradient no one shares), a copy where
    anything else may (the walk hands one array to several tensors: Add's backward passes
    grad_out to both inputs; the caller's seed; a view of memory held elsewhere)."""
    if node.grad is None:
        refs = sys.getrefcount(grad)         # counted before grad is passed on below
        node.grad = Tensor(grad if _walk_alone(grad, refs, _WALK_REFS) else grad.copy())
    else:
        node.grad.array += grad
        node.grad._version_counter.value += 1


def _walk_alone(grad, refs, walk_refs):
    """Whether nothing but the walk holds `grad` or its memory: a writable C-contiguous
    NumPy array with no more than walk_refs references (refs: sys.getrefcount(grad) in the
    caller's frame, as a statement of its own, since a call that passes grad holds one
    more) whose memory no other array views (buffers.sole_view)."""
    return (type(grad) is np.ndarray and refs <= walk_refs and grad.flags.c_contiguous
            and grad.flags.writeable and buffers.sole_view(grad))


def _refs_in_accumulate(node, grad):
    """sys.getrefcount(grad) in a frame like _accumulate's (its caller names grad once)."""
    return sys.getrefcount(grad)


def _walk_refs():
    grad = np.empty(0)                       # the walk's one name for a gradient
    return _refs_in_accumulate(None, grad)


_WALK_REFS = _walk_refs()         # references to a gradient that only the walk holds


def _meet(a, b):
    """a + b, the gradients of one tensor from two of its consumers: float arrays of one
    shape and dtype by the kernels' add_scaled (one pass on all threads, the same sums),
    into a itself (a += b) where only the walk's pending gradients hold a (_walk_alone: not
    a view of memory held elsewhere, not an array a hook kept, not the one array Add's
    backward handed to both inputs), else into a new array; anything else by `+`."""
    if (type(a) is type(b) and getattr(a, "dtype", None) in (np.float32, np.float64)
            and a.dtype == b.dtype and a.shape == b.shape):
        refs = sys.getrefcount(a)            # counted before a is passed on below
        return kernels_for(a).add_scaled(a, b, 1.0,
                                         out=a if _walk_alone(a, refs, _MEET_REFS) else None)
    return a + b


def _refs_in_meet(a, b):
    """sys.getrefcount(a) in a frame like _meet's."""
    return sys.getrefcount(a)


def _meet_refs():
    """The count _meet sees for a gradient only the pending dict holds, measured in the
    same shape of frame as _WALK_REFS's, not assumed equal to it: an entry of a dict
    passed on and a local passed on need not count alike in every Python version."""
    pending = {0: np.empty(0)}              # the walk's pending gradients, which hold a
    return _refs_in_meet(pending[0], None)


_MEET_REFS = _meet_refs()         # references to a pending gradient that only the walk holds


def _backward_walk(root, seed, retain_graph, more=(), capture=None):
    """Send gradients from `root` to the leaves, consumers before producers.

    `more` holds further (root, seed) pairs walked together with the first. With
    `capture` (a dict keyed by id of the wanted tensors), no .grad is touched: each wanted
    tensor's gradient is stored in capture[id] instead (tinyres.autograd.grad)."""
    from tinyres.autograd import _check_finite, is_anomaly_enabled, no_grad, run_backward
    pending = {id(root): seed}     # gradient summed so far for each tensor
    for other, other_seed in more:
        pending[id(other)] = _meet(pending[id(other)], other_seed) if id(other) in pending \
            else other_seed
    anomaly = is_anomaly_enabled()
    with no_grad():
        for node in reversed(_topological_order(root, *(r for r, _ in more))):
            grad = pending.pop(id(node), None)
            if grad is None:
                continue
            grad = _run_hooks(node, grad)
            if capture is not None:
                if id(node) in capture:
                    capture[id(node)] = grad
            elif node._ctx is None or node._retains_grad:
                _accumulate(node, grad)
            if node._ctx is None:
                if capture is None:
                    _run_post_accumulate_hooks(node)
                continue
            ctx = node._ctx
            input_grads = run_backward(ctx, grad)
            if anomaly:
                _check_finite(ctx, input_grads)
            for parent, needed, g in zip(ctx.inputs, ctx.needs_input_grad, input_grads):
                if g is None or not needed:
                    continue
                # Where a tensor fed two consumers (a shortcut and a residual branch, say),
                # their gradients add up here.
                pending[id(parent)] = _meet(pending[id(parent)], g) if id(parent) in pending \
                    else g
            input_grads = g = None    # so that pending alone holds them (_accumulate)
            if not retain_graph:
                ctx.free()
