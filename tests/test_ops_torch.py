"""Every op against PyTorch in float64, on each CPU kernel layer (reference.py and the
Numba cpu.py): the same inputs, forward outputs and the gradients of a random weighting
of the output; then the edges: type promotion, tensor() of lists of tensors, the shape
arguments torch refuses, and gradients at NaNs, ties, zeros and negative bases. Skipped
cleanly where torch is not installed."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyres
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


# ----- type promotion (torch.result_type) ----------------------------------------------
def make(engine, value, dtype=None):
    """A tensor of `engine` (the tinyres or torch module) holding value as an array of dtype."""
    array = np.array(value, dtype=dtype)
    return engine.tensor(array)


PROMOTIONS = {   # name: (lambda engine -> result), each built identically in both engines
    "int * 2.5": lambda e: make(e, [1, 2, 3]) * 2.5,
    "bool + 2.5": lambda e: make(e, [True, False]) + 2.5,
    "bool + 1": lambda e: make(e, [True, False]) + 1,
    "bool * True": lambda e: make(e, [True, False]) * True,
    "int - 2.5": lambda e: make(e, [1, 2, 3]) - 2.5,
    "2.5 - int": lambda e: 2.5 - make(e, [1, 2, 3]),
    "int / int": lambda e: make(e, [1, 2, 3]) / make(e, [2, 2, 2]),
    "int / 2": lambda e: make(e, [1, 2, 3]) / 2,
    "2 / int": lambda e: 2 / make(e, [1, 2, 3]),
    "bool / bool": lambda e: make(e, [True, False]) / make(e, [True, True]),
    "int < 2.5": lambda e: make(e, [1, 2, 3]) < 2.5,
    "int == 2.0": lambda e: make(e, [1, 2, 3]) == 2.0,
    "int == 2.5": lambda e: make(e, [2, 3]) == 2.5,
    "int64 == float32": lambda e: make(e, [16777217]) == make(e, [16777216.0], np.float32),
    "clamp(int, 1.5, 2.5)": lambda e: make(e, [1, 2, 3]).clamp(1.5, 2.5),
    "clamp(int, min=1)": lambda e: make(e, [0, 2, 3]).clamp(min=1),
    "float32 * float64": lambda e: make(e, [1.5], np.float32) * make(e, [2.25]),
    "int64 + float32": lambda e: make(e, [1, 2]) + make(e, [0.5, 0.25], np.float32),
    "bool + int32": lambda e: make(e, [True, False]) + make(e, [3, 4], np.int32),
    "int32 + 3": lambda e: make(e, [1, 2], np.int32) + 3,
    "int32 + int64": lambda e: make(e, [1, 2], np.int32) + make(e, [1, 2]),
    "uint8 + int8": lambda e: make(e, [200], np.uint8) + make(e, [-1], np.int8),
    "float32 * 2.5": lambda e: make(e, [1.5], np.float32) * 2.5,
    "float32 + np.float64": lambda e: make(e, [1.5], np.float32) + np.float64(2.5),
    "int64 + np.float64": lambda e: make(e, [1, 2]) + np.float64(2.5),
    "int32 + np.int64": lambda e: make(e, [1, 2], np.int32) + np.int64(2),
    "int + True": lambda e: make(e, [1, 2]) + True,
    "float32 * 0-d float64": lambda e: make(e, [1.5], np.float32) * make(e, 2.0),
    "int64 * 0-d float64": lambda e: make(e, [1, 2]) * make(e, 2.5),
    "int32 * 0-d int64": lambda e: make(e, [1, 2], np.int32) * make(e, 3),
    "0-d float32 * 0-d float64": lambda e: make(e, 1.5, np.float32) * make(e, 2.0),
    "int ** 2": lambda e: make(e, [1, 2, 3]) ** 2,
    "int ** 0.5": lambda e: make(e, [1, 2, 3]) ** 0.5,
    "2 ** int": lambda e: 2 ** make(e, [1, 2, 3]),
    "2.5 ** int": lambda e: 2.5 ** make(e, [1, 2, 3]),
    "float32 ** float64": lambda e: make(e, [1.5], np.float32) ** make(e, [2.0]),
    "where(bool, int, 2.5)": lambda e: e.where(make(e, [True, False]), make(e, [1, 2]), 2.5),
    "cat(float32, float64)": lambda e: e.cat([make(e, [1.5], np.float32), make(e, [2.0])]),
    "cat(int64, float32)": lambda e: e.cat([make(e, [1]), make(e, [2.5], np.float32)]),
}


def as_numpy(t):
    return t.numpy() if not hasattr(t, "detach") else t.detach().numpy()


@pytest.mark.parametrize("name", list(PROMOTIONS))
def test_type_promotion_matches_torch(name):
    ours, theirs = PROMOTIONS[name](tinyres), PROMOTIONS[name](torch)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_array_equal(as_numpy(ours), as_numpy(theirs))


def test_mixed_dtype_gradients_come_back_in_each_inputs_dtype():
    rng = np.random.default_rng(3)
    a32, b64 = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3)
    results = []
    for engine in (tinyres, torch):
        a = engine.tensor(a32, requires_grad=True)
        b = engine.tensor(b64, requires_grad=True)
        out = (a * b + a / (b * b + 1.0) - 2.5 * a) ** 2
        out.sum().backward()
        results.append((out, a.grad, b.grad))
    for ours, theirs in zip(*results):
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_allclose(as_numpy(ours), as_numpy(theirs), rtol=1e-6)


LISTS = {
    "0-d floats": lambda e: [make(e, 1.0, np.float32), make(e, 2.0, np.float32)],
    "0-d ints": lambda e: [make(e, 1), make(e, 2)],
    "0-d float64 and float32": lambda e: [make(e, 1.0), make(e, 2.0, np.float32)],
    "0-d int and a float": lambda e: [make(e, 1), 2.5],
    "0-d int32 and an int": lambda e: [make(e, 1, np.int32), 2],
    "0-d bool and an int": lambda e: [make(e, True), 1],
    "1-element tensors": lambda e: [make(e, [1.0], np.float32), make(e, [2.0], np.float32)],
    "nested": lambda e: [[make(e, 1.0, np.float32), 2], [3, 4]],
    "numpy scalars": lambda e: [np.float32(1), 2.0],
    "numpy float64": lambda e: [np.float64(1)],
    "empty": lambda e: [],
    "a range": lambda e: range(3),
    "a tuple of bools": lambda e: (True, False),
}


@pytest.mark.parametrize("name", list(LISTS))
def test_tensor_of_a_list_of_tensors_is_numeric_as_torch(name):
    ours, theirs = tinyres.tensor(LISTS[name](tinyres)), torch.tensor(LISTS[name](torch))
    assert ours.dtype != object
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


# ----- shape arguments torch refuses ---------------------------------------------------
SHAPE_ERRORS = {
    "len of 0-d": lambda e: len(make(e, 1.0)),
    "reshape(-2, 2)": lambda e: make(e, np.zeros(4)).reshape(-2, 2),
    "reshape(2, -3)": lambda e: make(e, np.zeros(4)).reshape(2, -3),
    "view(-2, 2)": lambda e: make(e, np.zeros(4)).view(-2, 2),
    "reshape(-1, -1)": lambda e: make(e, np.zeros(4)).reshape(-1, -1),
    "expand(-1, 4) new leading dim": lambda e: make(e, np.zeros(4)).expand(-1, 4),
    "expand(-1, 2, 3) new leading dim": lambda e: make(e, np.zeros((1, 3))).expand(-1, 2, 3),
    "max() of an empty tensor": lambda e: make(e, np.zeros((0, 3))).max(),
}


@pytest.mark.parametrize("name", list(SHAPE_ERRORS))
def test_shape_arguments_are_refused_as_torch_refuses_them(name):
    with pytest.raises(Exception) as theirs:
        SHAPE_ERRORS[name](torch)
    with pytest.raises(theirs.type):
        SHAPE_ERRORS[name](tinyres)


def test_shape_arguments_torch_accepts_still_work():
    for engine in (tinyres, torch):
        x = make(engine, np.zeros((1, 3)))
        assert tuple(x.expand(2, -1).shape) == (2, 3)
        assert tuple(x.expand(4, -1, 3).shape) == (4, 1, 3)
        assert tuple(x.reshape(-1).shape) == (3,)
        assert len(x) == 1


EMPTY_REDUCTIONS = {
    "mean": lambda e, x: x.mean(),
    "mean(0)": lambda e, x: x.mean(0),
    "sum": lambda e, x: x.sum(),
    "max(1)": lambda e, x: x.max(1)[0],
    "mse_loss": lambda e, x: e.nn.functional.mse_loss(x, x * 2.0),
    "softmax(1)": lambda e, x: e.nn.functional.softmax(x, 1),
}


@pytest.mark.parametrize("name", list(EMPTY_REDUCTIONS))
@pytest.mark.filterwarnings("error")    # torch is silent about these, and so is tinyres
def test_reductions_of_an_empty_batch_match_torch(name):
    results = []
    for engine in (tinyres, torch):
        x = engine.tensor(np.zeros((0, 3)), requires_grad=True)
        out = EMPTY_REDUCTIONS[name](engine, x)
        out.sum().backward()
        results.append((as_numpy(out), as_numpy(x.grad)))
    for ours, theirs in zip(*results):
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


# ----- gradients at the edges ----------------------------------------------------------
NAN, INF = float("nan"), float("inf")
EDGE_GRADS = {   # name: (fn(*tensors), float64 inputs)
    "max with NaN": (lambda x: x.max(), [[1.0, NAN, 3.0]]),
    "max with two NaNs": (lambda x: x.max(), [[NAN, NAN, 3.0]]),
    "min with NaN": (lambda x: x.min(), [[1.0, NAN, 3.0]]),
    "max ties share": (lambda x: x.max(), [[3.0, 1.0, 3.0]]),
    "min ties share": (lambda x: x.min(), [[1.0, 1.0, 3.0]]),
    "max of infs": (lambda x: x.max(), [[1.0, INF, INF]]),
    "max dim with NaN and ties": (lambda x: x.max(1)[0],
                                  [[[1.0, NAN, 3.0], [NAN, 2.0, NAN], [3.0, 1.0, 3.0]]]),
    "min dim with NaN and ties": (lambda x: x.min(1)[0],
                                  [[[1.0, NAN, 3.0], [NAN, 2.0, NAN], [1.0, 1.0, 3.0]]]),
    "pow a^0 at 0": (lambda a: a ** 0.0, [[0.0, 1.0, -2.0]]),
    "pow at zero and negative bases": (
        lambda a, b: a ** b, [[0.0, 0.0, -2.0, 2.0, 0.0, -2.0, 0.0, -2.0, -2.0, 0.0],
                              [0.0, 2.0, 3.0, 0.5, -1.0, 0.5, 0.5, 2.0, 0.0, 1.0]]),
    "pow of a scalar base 0": (lambda b: 0.0 ** b, [[0.0, 1.0, 2.0, -1.0]]),
    "pow of a negative scalar base": (lambda b: (-2.0) ** b, [[0.0, 1.0, 2.0, 0.5]]),
    "abs at 0 and NaN": (lambda a: a.abs(), [[0.0, -1.0, 2.0, NAN]]),
    "clamp at its bounds and NaN": (lambda a: a.clamp(0.0, 1.0), [[0.0, 1.0, 0.5, -1, 2, NAN]]),
    "clamp with min > max": (lambda a: a.clamp(1.0, 0.0), [[0.0, 0.5, 2.0]]),
    "sqrt at 0": (lambda a: a.sqrt(), [[0.0, 4.0]]),
    "relu at 0 and NaN": (lambda a: a.relu(), [[0.0, -1.0, 1.0, NAN]]),
}


@pytest.mark.parametrize("name", list(EDGE_GRADS))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_gradients_at_the_edges_match_torch(name):
    fn, values = EDGE_GRADS[name]
    results = []
    for engine in (tinyres, torch):
        inputs = [engine.tensor(np.array(v), requires_grad=True) for v in values]
        out = fn(*inputs)
        out.backward(engine.tensor(np.arange(1.0, 1.0 + out.numel()).reshape(tuple(out.shape))))
        results.append([as_numpy(out)] + [as_numpy(t.grad) for t in inputs])
    for i, (ours, theirs) in enumerate(zip(*results)):
        # same NaNs and infinities, the finite values to rounding
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0, err_msg=f"{name}: item {i}")
