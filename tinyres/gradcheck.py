"""Finite-difference gradient checks: the proof that a backward is the forward's derivative.

Two modes, both in float64 with central differences (f(x + eps) - f(x - eps)) / (2 eps):

- full: the whole Jacobian, one column per perturbed input element (two forward calls)
  against one row per backward pass; names the worst element, for small inputs;
- projection: for random directions v (inputs) and weights w (outputs), compare
  w . J v from two forward calls with the backward's w^T J, dotted with v; cheap for
  large inputs and still sensitive to any wrong entry.

Outputs are never summed plainly: a batch-norm output sums to zero per channel, so the
plain sum would hide any error in its gradient.
"""
import numpy as np

from tinyres.autograd import no_grad
from tinyres.backend import to_device
from tinyres.tensor import Tensor

FULL_LIMIT = 512    # mode="auto" checks the whole Jacobian when inputs and outputs are
                    # each at most this many elements


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with finite differences."""


def _outputs(fn, inputs):
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return Tensors, got {type(o).__name__}")
    return outs


def _flat_output(fn, inputs):
    """All outputs as one float64 vector, without recording a graph."""
    with no_grad():
        outs = _outputs(fn, inputs)
    return np.concatenate([np.asarray(o.numpy(), dtype=np.float64).ravel() for o in outs])


def _analytic(fn, inputs, weights):
    """The gradient of <w, f(x)> with respect to each input, by one backward pass."""
    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    outs = _outputs(fn, inputs)
    for i, (o, w) in enumerate(zip(outs, weights)):
        if o.requires_grad:
            seed = to_device(w.astype(o.dtype), o.device)
            o.backward(Tensor(seed), retain_graph=i < len(outs) - 1)
    return [np.zeros(t.shape) if t.grad is None else t.grad.numpy().astype(np.float64)
            for t in inputs]


def _central_difference(fn, inputs, directions, eps):
    """(f(x + eps v) - f(x - eps v)) / (2 eps), all outputs flattened."""
    steps = [None if v is None else to_device(eps * v, t.device)
             for t, v in zip(inputs, directions)]

    def shift(sign):
        for t, step in zip(inputs, steps):
            if step is not None:
                t.array += sign * step
    shift(+1)
    plus = _flat_output(fn, inputs)
    shift(-2)
    minus = _flat_output(fn, inputs)
    shift(+1)
    return (plus - minus) / (2 * eps)


def _fail(message, where, analytic, numeric):
    raise GradcheckError(f"gradcheck: {message} at {where}: analytic {analytic:.8g}, "
                         f"numeric {numeric:.8g}, difference {abs(analytic - numeric):.3g}")


def _one_hot(shape, index):
    v = np.zeros(shape)
    v[index] = 1.0
    return v


def _excess(analytic, numeric, atol, rtol):
    """How far the analytic value lies outside the tolerance around the numeric one; a NaN
    or Inf on either side is a mismatch (inf), never a pass."""
    if not (np.isfinite(analytic) and np.isfinite(numeric)):
        return np.inf
    return abs(analytic - numeric) - (atol + rtol * abs(numeric))


def _check_full(fn, inputs, checked, out_shapes, eps, atol, rtol):
    """Compare every Jacobian entry d out[j] / d input[i][k], reporting the worst."""
    sizes = [int(np.prod(s)) for s in out_shapes]
    offsets = np.cumsum([0] + sizes)
    analytic_rows = []              # row j: d out[j] / d (all inputs)
    for j in range(offsets[-1]):
        o = int(np.searchsorted(offsets, j, side="right") - 1)
        weights = [np.zeros(s) for s in out_shapes]
        weights[o].ravel()[j - offsets[o]] = 1.0
        analytic_rows.append(_analytic(fn, inputs, weights))
    worst = None
    for i in checked:
        for k in np.ndindex(*inputs[i].shape):
            directions = [_one_hot(t.shape, k) if n == i else None
                          for n, t in enumerate(inputs)]
            column = _central_difference(fn, inputs, directions, eps)
            for j, numeric in enumerate(column):
                a = analytic_rows[j][i][k]
                excess = _excess(a, numeric, atol, rtol)
                if excess > 0 and (worst is None or excess > worst[0]):
                    worst = (excess, f"output element {j}, input {i}{list(k)}", a, numeric)
    if worst is not None:
        _fail("Jacobian mismatch", *worst[1:])


def _check_projection(fn, inputs, checked, out_shapes, eps, atol, rtol, rng, projections):
    """Compare w^T J v against finite differences for random w and v."""
    for p in range(projections):
        weights = [rng.standard_normal(shape) for shape in out_shapes]
        analytic = _analytic(fn, inputs, weights)
        directions = [rng.standard_normal(t.shape) if i in checked else None
                      for i, t in enumerate(inputs)]
        a = sum(float((analytic[i] * directions[i]).sum()) for i in checked)
        w = np.concatenate([x.ravel() for x in weights])
        numeric = float(w @ _central_difference(fn, inputs, directions, eps))
        if _excess(a, numeric, atol, rtol) > 0:
            _fail("directional derivative mismatch", f"random projection {p}", a, numeric)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, mode="auto", seed=0,
              projections=8):
    """Check fn's backward against central differences; True, or GradcheckError.

    fn takes the Tensors in `inputs` and returns a Tensor (or a tuple of them). Inputs
    that require a gradient are checked and must be float64. `mode` is "full",
    "projection", or "auto" (full when the Jacobian has at most FULL_LIMIT entries).
    Also checks that fn leaves its inputs unchanged.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires a gradient")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences "
                            "need float64 (use .double())")
    originals = [t.numpy().copy() if isinstance(t, Tensor) else None for t in inputs]
    with no_grad():
        out_shapes = [o.shape for o in _outputs(fn, inputs)]
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and not np.array_equal(t.numpy(), originals[i],
                                                        equal_nan=True):
            raise GradcheckError(f"gradcheck: fn modified its input {i} in place")
    n_in = sum(inputs[i].numel() for i in checked)
    n_out = sum(int(np.prod(s)) for s in out_shapes)
    if mode == "auto":
        mode = "full" if max(n_in, n_out) <= FULL_LIMIT else "projection"
    if mode == "full":
        _check_full(fn, inputs, checked, out_shapes, eps, atol, rtol)
    elif mode == "projection":
        rng = np.random.default_rng(seed)
        _check_projection(fn, inputs, checked, out_shapes, eps, atol, rtol, rng, projections)
    else:
        raise ValueError(f"gradcheck: mode must be 'auto', 'full' or 'projection', got {mode!r}")
    return True
