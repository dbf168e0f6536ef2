"""max_pool2d, avg_pool2d, nn.MaxPool2d and nn.AvgPool2d against PyTorch, with torch's
whole signature: dilation, ceil_mode, return_indices, count_include_pad, divisor_override
and 3-D (C, H, W) inputs. Hypothesis draws the geometry, valid or not: where torch raises,
tinyres must raise the same kind of error naming the op; where it does not, the values,
indices, dtypes, shapes and gradients must agree, on the reference and the Numba layer.
Then the errors one by one, the gradients in float64 against finite differences
(tinyres.gradcheck), the three max-pooling kernel layers against each other (reference,
Numba, the CUDA C through the CPU emulator), windows that dilation leaves empty, ceil
mode's output sizes, and the modules' attributes and repr."""
import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn as tnn
import tinyres.nn.functional as F
from tinyres.kernels import checks, cpu, emulate
from tinyres.kernels import reference as ref

torch = pytest.importorskip("torch")
TF = torch.nn.functional
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------- helpers

@st.composite
def geometries(draw, dilated=True):
    """(input shape, kernel, stride, padding, dilation, ceil_mode), not always valid:
    3-D or 4-D, the padding at most one past half the kernel."""
    shape = ((draw(st.integers(1, 2)),) if draw(st.booleans()) else ()) + (
        draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2 + (draw(st.integers(0, 9)) == 0)))
                    for k in kernel)
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilated else (1, 1)
    return shape, kernel, stride, padding, dilation, draw(st.booleans())


def same_error(ours, theirs):
    """Run theirs (torch) and ours; if torch raises, ours must raise the same class (or a
    subclass) naming the op. Returns (ours, theirs) results, or None after an error."""
    try:
        expected = theirs()
    except Exception as e:            # torch's exception, compared by class below
        with pytest.raises(type(e)) as caught:
            ours()
        assert caught.value.args and str(caught.value).split(":")[0] in (
            "max_pool2d", "avg_pool2d"), str(caught.value)
        return None
    return ours(), expected


def backward(engine, x, out, weights):
    """The gradient of sum(weights * out) with respect to x, as a NumPy array."""
    out.backward(engine.tensor(weights))
    grad = x.grad
    return grad.detach().numpy() if hasattr(grad, "detach") else grad.numpy()


def values(t):
    return t.detach().numpy() if hasattr(t, "detach") else t.numpy()


def has_empty_window(y):
    """A -inf output: a window of only padding (dilation), whose gradient torch's backward
    writes out of bounds, so torch must not run it."""
    return bool(np.isinf(values(y)).any())


# ---------------------------------------------------------------- against torch

@pytest.mark.parametrize("layer", ["reference", "cpu"])
@SETTINGS
@given(geometry=geometries(), dtype=st.sampled_from([np.float32, np.float64]),
       return_indices=st.booleans(), seed=st.integers(0, 2**16))
def test_max_pool2d_matches_torch(layer, geometry, dtype, return_indices, seed):
    shape, kernel, stride, padding, dilation, ceil_mode = geometry
    rng = np.random.default_rng(seed)
    x = (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.25).astype(dtype)
    args = (kernel, stride, padding, dilation, ceil_mode)
    xt, xo = torch.tensor(x, requires_grad=True), tinyres.tensor(x, requires_grad=True)
    with tinyres.kernels.use(layer):
        both = same_error(lambda: F.max_pool2d(xo, *args, return_indices=True),
                          lambda: TF.max_pool2d(xt, *args, return_indices=True))
        if both is None:
            return
        (yo, io), (yt, it) = both
        assert yo.dtype == dtype and yo.shape == tuple(yt.shape)
        np.testing.assert_array_equal(values(yo), values(yt))
        assert io.dtype == tinyres.int64
        np.testing.assert_array_equal(values(io), values(it))
        plain = F.max_pool2d(xo, *args, return_indices=return_indices)
        assert isinstance(plain, tuple) == return_indices
        if has_empty_window(yt):
            return
        weights = rng.standard_normal(tuple(yt.shape)).astype(dtype)
        np.testing.assert_allclose(backward(tinyres, xo, yo, weights),
                                   backward(torch, xt, yt, weights), rtol=1e-6)


@pytest.mark.parametrize("layer", ["reference", "cpu"])
@SETTINGS
@given(geometry=geometries(dilated=False), dtype=st.sampled_from([np.float32, np.float64]),
       count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, None, 1, 3, 5, -2]), seed=st.integers(0, 2**16))
def test_avg_pool2d_matches_torch(layer, geometry, dtype, count_include_pad, divisor_override,
                                  seed):
    shape, kernel, stride, padding, _, ceil_mode = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    xt, xo = torch.tensor(x, requires_grad=True), tinyres.tensor(x, requires_grad=True)
    with tinyres.kernels.use(layer):
        both = same_error(lambda: F.avg_pool2d(xo, *args), lambda: TF.avg_pool2d(xt, *args))
        if both is None:
            return
        yo, yt = both
        assert yo.dtype == dtype and yo.shape == tuple(yt.shape)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12)
        np.testing.assert_allclose(values(yo), values(yt), **tol)
        weights = rng.standard_normal(tuple(yt.shape)).astype(dtype)
        np.testing.assert_allclose(backward(tinyres, xo, yo, weights),
                                   backward(torch, xt, yt, weights), **tol)


def test_ceil_mode_output_sizes_match_torch():
    # every small geometry, including where the last window would start in the padding
    # (5 wide, kernel 2, stride 2, padding 1: 3 windows, not 4) and too-small outputs
    for size in range(1, 9):
        for k in range(1, 4):
            for s in range(1, 4):
                for p in range(k // 2 + 1):
                    for d in (1, 2):
                        x = torch.zeros(1, 1, size, 1)
                        try:
                            want = TF.max_pool2d(x, (k, 1), (s, 1), (p, 0), (d, 1), True).shape
                        except RuntimeError:
                            with pytest.raises(RuntimeError, match="max_pool2d: .*too small"):
                                checks.pool_out_size("max_pool2d", (1, 1, size, 1), k, 1, s, 1,
                                                     p, 0, d, 1, True)
                            continue
                        got = checks.pool_out_size("max_pool2d", (1, 1, size, 1), k, 1, s, 1,
                                                   p, 0, d, 1, True)
                        assert got == tuple(want[2:]), (size, k, s, p, d)


def test_googlenet_stem_in_ceil_mode():
    # torchvision's GoogLeNet and SqueezeNet: MaxPool2d(3, stride=2, ceil_mode=True)
    x = np.random.default_rng(0).standard_normal((1, 2, 113, 112)).astype(np.float32)
    ours = tnn.MaxPool2d(3, stride=2, ceil_mode=True)(tinyres.tensor(x))
    theirs = torch.nn.MaxPool2d(3, stride=2, ceil_mode=True)(torch.tensor(x))
    assert ours.shape == tuple(theirs.shape) == (1, 2, 56, 56)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


# ---------------------------------------------------------------- errors

X = np.zeros((1, 1, 5, 5), dtype=np.float32)
BAD = [   # (op, input shape, keyword arguments)
    ("both", X.shape, dict(kernel_size=0)),
    ("both", X.shape, dict(kernel_size=-1)),
    ("both", X.shape, dict(kernel_size=(0, 2), stride=1)),
    ("both", X.shape, dict(kernel_size=2, stride=0)),
    ("both", X.shape, dict(kernel_size=2, stride=(1, -1))),
    ("both", X.shape, dict(kernel_size=3, padding=-1)),
    ("both", X.shape, dict(kernel_size=2, padding=2)),
    ("both", X.shape, dict(kernel_size=6)),
    ("both", (1, 1, 1, 1), dict(kernel_size=3, stride=1, ceil_mode=True)),
    ("both", X.shape, dict(kernel_size=(1, 2, 3))),
    ("both", X.shape, dict(kernel_size=2, stride=(1, 2, 3))),
    ("both", X.shape, dict(kernel_size=2, padding=(1, 1, 1))),
    ("both", X.shape, dict(kernel_size=2.0)),
    ("both", X.shape, dict(kernel_size=2, ceil_mode=1)),
    ("both", X.shape, dict(kernel_size=2, ceil_mode=None)),
    ("both", (5, 5), dict(kernel_size=2)),
    ("both", (1, 1, 1, 5, 5), dict(kernel_size=2)),
    ("both", (1, 0, 5, 5), dict(kernel_size=2)),
    ("both", (1, 1, 0, 5), dict(kernel_size=2)),
    ("both", (0, 5, 5), dict(kernel_size=2)),
    ("max_pool2d", X.shape, dict(kernel_size=2, dilation=0)),
    ("max_pool2d", X.shape, dict(kernel_size=2, dilation=(1, -1))),
    ("max_pool2d", X.shape, dict(kernel_size=2, dilation=(1, 1, 1))),
    ("max_pool2d", X.shape, dict(kernel_size=3, padding=2, dilation=3)),
    ("max_pool2d", X.shape, dict(kernel_size=5, dilation=2)),
    ("avg_pool2d", X.shape, dict(kernel_size=2, count_include_pad=0)),
    ("avg_pool2d", X.shape, dict(kernel_size=2, divisor_override=0)),
    ("avg_pool2d", X.shape, dict(kernel_size=2, divisor_override=2.5)),
    ("avg_pool2d", X.shape, dict(kernel_size=2, divisor_override=True)),
]
CALLS = [(op, shape, kw) for which, shape, kw in BAD
         for op in (("max_pool2d", "avg_pool2d") if which == "both" else (which,))]


@pytest.mark.parametrize("op, shape, kwargs", CALLS, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CALLS])
def test_bad_arguments_raise_torchs_error_kind(op, shape, kwargs):
    x = np.zeros(shape, dtype=np.float32)
    with pytest.raises(Exception) as theirs:
        getattr(TF, op)(torch.tensor(x), **kwargs)
    with pytest.raises(type(theirs.value)) as ours:
        getattr(F, op)(tinyres.tensor(x), **kwargs)
    assert str(ours.value).startswith(f"{op}:"), str(ours.value)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_an_array_is_not_a_tensor(op):
    with pytest.raises(TypeError):
        getattr(TF, op)(X, 2)
    with pytest.raises(TypeError, match=f"{op}: input must be a Tensor, not ndarray"):
        getattr(F, op)(X, 2)


def test_error_messages_give_the_sizes_and_the_limit():
    x = tinyres.zeros(1, 1, 5, 5)
    with pytest.raises(RuntimeError, match=r"max_pool2d: padding should be at most half of "
                                           r"effective kernel size .* kernel \(2, 2\), stride "
                                           r"\(2, 2\), padding \(2, 2\) and dilation \(1, 1\)"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(RuntimeError, match=r"avg_pool2d: an input of shape \(1, 1, 5, 5\) "
                                           r"with kernel \(6, 6\).* gives output size \(0, 0\)"):
        F.avg_pool2d(x, 6)
    with pytest.raises(ValueError, match="max_pool2d: stride should not be zero"):
        F.max_pool2d(x, 2, stride=0)      # ValueError too, as before: both kinds catch it


# ---------------------------------------------------------------- gradients

def distinct(shape, seed=0):
    """float64 values far apart (no ties a finite difference could swap)."""
    rng = np.random.default_rng(seed)
    return tinyres.tensor(rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + 0.05,
                          requires_grad=True)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1, dilation=2),
    dict(kernel_size=(2, 3), stride=(2, 1), dilation=(3, 1), ceil_mode=True),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True, return_indices=True),
], ids=str)
@pytest.mark.parametrize("shape", [(2, 2, 7, 6), (2, 6, 7)], ids=str)
def test_max_pool2d_gradcheck(kwargs, shape):
    fn = (lambda x: F.max_pool2d(x, **kwargs)[0]) if kwargs.get("return_indices") else (
        lambda x: F.max_pool2d(x, **kwargs))
    assert tinyres.gradcheck(fn, [distinct(shape)])


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=2, padding=(1, 1), ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, stride=(1, 2), divisor_override=3),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=-2),
], ids=str)
@pytest.mark.parametrize("shape", [(2, 2, 6, 7), (2, 5, 6)], ids=str)
def test_avg_pool2d_gradcheck(kwargs, shape):
    assert tinyres.gradcheck(lambda x: F.avg_pool2d(x, **kwargs), [distinct(shape)])


def _wrong_ceil_avg(t):
    """avg_pool2d(t, 2, 2, ceil_mode=True) whose forward is right but whose backward
    divides every window by kh*kw = 4, though on a 5x5 input the last row and column of
    windows hold 2 elements (1 in the corner)."""
    from tinyres.functional.pool import AvgPool2d
    wrong = AvgPool2d.apply(t, window=(2, 2, 2, 2, 0, 0), extra=(1, 1), divisor=4)
    return F.avg_pool2d(t, 2, 2, ceil_mode=True).detach() + wrong - wrong.detach()


def test_gradcheck_catches_a_wrong_divisor():
    # the negative control for the gradient checks above
    x = distinct((1, 1, 5, 5))
    np.testing.assert_allclose(_wrong_ceil_avg(x).numpy(),
                               F.avg_pool2d(x, 2, 2, ceil_mode=True).numpy())
    with pytest.raises(tinyres.GradcheckError):
        tinyres.gradcheck(_wrong_ceil_avg, [x])


# ---------------------------------------------------------------- the kernel layers

@pytest.fixture(scope="module")
def emulated():
    try:
        return emulate.backend()
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(geometry=geometries(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_kernel_layers_agree(emulated, geometry, dtype, seed):
    # reference.py, cpu.py and cuda/maxpool.cu (emulated): values, indices and gradients
    shape, kernel, stride, padding, dilation, ceil_mode = geometry
    shape = shape if len(shape) == 4 else (1,) + shape
    window = (*kernel, *stride, *padding, *dilation, ceil_mode)
    try:
        checks.pool_out_size("maxpool_forward", shape, *window)
    except ValueError:
        assume(False)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.1] = -np.inf            # taken only as a window's first tap
    y, idx = ref.maxpool_forward(x, *window)
    grad_out = rng.standard_normal(y.shape).astype(dtype)
    grad_x = ref.maxpool_backward(grad_out, idx, shape, *window)
    for layer in (cpu, emulated):
        y2, idx2 = layer.maxpool_forward(x, *window)
        np.testing.assert_array_equal(y2, y)
        assert y2.dtype == dtype and idx2.dtype == np.int64
        np.testing.assert_array_equal(idx2, idx)
        got = layer.maxpool_backward(grad_out, idx, shape, *window)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, grad_x, rtol=1e-6, atol=1e-6)


def test_empty_windows_give_minus_infinity_and_no_gradient(emulated):
    # taps 4 apart over 3 columns with padding 1: a window's taps are columns -1 and 3.
    # torch gives -inf at index h*3 + 3, which names the next row's first pixel (or lies
    # past the plane); its backward writes there. The -inf depends on no input: tinyres
    # sends its gradient nowhere, on every layer.
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    window = (1, 2, 1, 1, 0, 1, 1, 4, False)
    yt, it = TF.max_pool2d(torch.tensor(x), (1, 2), 1, (0, 1), (1, 4), return_indices=True)
    for layer in (ref, cpu, emulated):
        y, idx = layer.maxpool_forward(x, *window)
        np.testing.assert_array_equal(y, yt.numpy())
        assert (y == -np.inf).all()
        np.testing.assert_array_equal(idx, it.numpy())
        np.testing.assert_array_equal(idx.ravel(), [3, 6, 9])
        grad_x = layer.maxpool_backward(np.ones(y.shape), idx, x.shape, *window)
        np.testing.assert_array_equal(grad_x, np.zeros_like(x))


def test_a_dilated_window_takes_its_first_tap_inside_the_input():
    # padding 1, taps 2 apart: the first window's taps are rows/columns -1 and 1; all -inf
    # values keep the index of the first tap inside, (1, 1), as torch
    x = np.full((1, 1, 3, 3), -np.inf)
    _, it = TF.max_pool2d(torch.tensor(x), 2, 2, 1, 2, return_indices=True)
    for layer in (ref, cpu):
        y, idx = layer.maxpool_forward(x, 2, 2, 2, 2, 1, 1, 2, 2, False)
        assert y.shape == (1, 1, 2, 2) and (y == -np.inf).all()
        assert idx[0, 0, 0, 0] == 1 * 3 + 1
        np.testing.assert_array_equal(idx, it.numpy())


def test_out_of_range_indices_are_still_rejected():
    # the index check skips only empty windows: elsewhere an index past the plane is caught
    x = np.zeros((1, 1, 4, 4))
    y, idx = ref.maxpool_forward(x, 2, 2, 2, 2, 1, 1, 2, 2, False)
    idx[...] = 16
    for layer in (ref, cpu):
        with pytest.raises(ValueError, match=r"maxpool_backward: idx must lie in \[0, H\*W\)"):
            layer.maxpool_backward(y, idx, x.shape, 2, 2, 2, 2, 1, 1, 2, 2, False)


# ---------------------------------------------------------------- modules

MODULES = [
    ("MaxPool2d", (3,), {}),
    ("MaxPool2d", (3, 2, 1, 2, True, True), {}),
    ("MaxPool2d", ((3, 2),), dict(stride=(2, 1), padding=(1, 0), ceil_mode=True)),
    ("MaxPool2d", (2,), dict(stride=None, return_indices=True)),
    ("AvgPool2d", (3,), {}),
    ("AvgPool2d", ((3, 2), None, 1, True, False, 2), {}),
    ("AvgPool2d", (2,), dict(stride=1, ceil_mode=True, count_include_pad=False)),
]
ATTRIBUTES = {"MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "return_indices",
                            "ceil_mode"),
              "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode",
                            "count_include_pad", "divisor_override")}


@pytest.mark.parametrize("name, args, kwargs", MODULES,
                         ids=[f"{m[0]}{m[1]}{m[2]}" for m in MODULES])
def test_module_matches_torch(name, args, kwargs):
    ours, theirs = getattr(tnn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    for attribute in ATTRIBUTES[name]:
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6))
    got, want = ours(tinyres.tensor(x)), theirs(torch.tensor(x))
    if isinstance(want, tuple):
        assert isinstance(got, tuple)
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
        got, want = got[0], want[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)


def test_maxpool_kernels_take_the_dilation_where_the_launchers_pass_it():
    # maxpool.cu's parameters after the arrays: (N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw,
    # OH, OW) as int32, the order of the Python kernels' (kh, kw, sh, sw, ph, pw, dh, dw);
    # then the backward's (magic, shift) pairs for sh and sw
    from tinyres.kernels import cuda
    signatures = cuda.kernel_signatures(cuda.read_source("maxpool.cu"))
    geometry = [("int", p) for p in "N C H W kh kw sh sw ph pw dh dw OH OW".split()]
    assert signatures["maxpool_forward"][3:] == geometry
    magic = [("unsigned", "sh_magic"), ("int", "sh_shift"), ("unsigned", "sw_magic"),
             ("int", "sw_shift")]
    assert signatures["maxpool_backward"][3:] == geometry + magic
    for layer in (ref, cpu, cuda):
        for name in ("maxpool_forward", "maxpool_backward"):
            params = list(inspect.signature(getattr(layer, name)).parameters)
            assert params[-9:] == ["kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw",
                                   "ceil_mode"], (layer.__name__, name)
