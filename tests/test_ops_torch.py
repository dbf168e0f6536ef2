"""Every op against PyTorch in float64, on each CPU kernel layer (reference.py and the
Numba cpu.py): the same inputs, forward outputs and the gradients of a random weighting
of the output. Skipped cleanly where torch is not installed."""
import numpy as np
import pytest

import tinyres
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from namespaces import TinyresOps, TorchOps
from op_cases import CASES

torch = pytest.importorskip("torch")
OURS, THEIRS = TinyresOps(), TorchOps(torch)


def run(ops, case, arrays, params, weight_seed):
    inputs = [ops.wrap(a, requires_grad=True) for a in arrays]
    out = case.call(ops, *inputs, **params)
    weights = np.random.default_rng(weight_seed).standard_normal(tuple(out.shape))
    out.backward(ops.wrap(weights, requires_grad=False))
    grads = [None if t.grad is None else t.grad.numpy() if not hasattr(t.grad, "detach")
             else t.grad.detach().numpy() for t in inputs]
    value = out.numpy() if not hasattr(out, "detach") else out.detach().numpy()
    return value, grads


@pytest.mark.parametrize("layer", ["cpu", "reference"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_matches_torch_float64(case, layer, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    arrays, params = case.draw_inputs(data.draw, rng)
    with tinyres.kernels.use(layer):
        ours, our_grads = run(OURS, case, arrays, params, weight_seed=7)
    theirs, their_grads = run(THEIRS, case, arrays, params, weight_seed=7)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    for i, (g, h) in enumerate(zip(our_grads, their_grads)):
        g = np.zeros_like(arrays[i]) if g is None else g
        h = np.zeros_like(arrays[i]) if h is None else h
        np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-11, err_msg=f"input {i}")
