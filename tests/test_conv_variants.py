"""Convolution beyond the ResNet basics, through tinyres and torch side by side: groups
(depthwise included), dilation, padding 'same'/'valid', nn.Conv2d's padding_mode,
conv_transpose2d / nn.ConvTranspose2d, and F.pad in every mode.

Geometries are drawn by hypothesis and run on the reference and cpu kernel layers in
float64; values and every gradient are compared with torch's, gradients are also checked
against finite differences (tinyres.gradcheck, random output weighting), and bad arguments
must raise the exception class torch raises. The kernels themselves are held to
kernels/reference.py in test_kernels.py and test_cuda_emulated.py.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn as nn
import tinyres.nn.functional as F
from tinyres import kernels
from tinyres.functional import pad as pad_module

torch = pytest.importorskip("torch")

LAYERS = pytest.mark.parametrize("layer", ["reference", "cpu"])
SETTINGS = settings(max_examples=15, deadline=None)
SEEDS = st.integers(0, 2**32 - 1)


def run_both(call, arrays, seed=0):
    """call(engine, *tensors) in tinyres and torch on float64 copies of arrays; the outputs
    and every input's gradient, for one random output gradient -> [(ours, theirs), ...]."""
    ours = [tinyres.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out_ours, out_theirs = call(tinyres, *ours), call(torch, *theirs)
    g = np.random.default_rng(seed).standard_normal(tuple(out_theirs.shape))
    out_ours.backward(tinyres.tensor(g))
    out_theirs.backward(torch.tensor(g))
    pairs = [(out_ours.numpy(), out_theirs.detach().numpy())]
    return pairs + [(a.grad.numpy(), b.grad.numpy()) for a, b in zip(ours, theirs)]


def assert_same(pairs):
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


# ----- conv2d -------------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    """Arrays (x, weight[, bias]) and conv2d's keyword arguments, valid for torch."""
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kh, kw, dh, dw = (draw(st.integers(1, 3)) for _ in range(4))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    padding = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = {"int": draw(st.integers(0, 2)),
           "pair": (draw(st.integers(0, 2)), draw(st.integers(0, 2))),
           "same": "same", "valid": "valid"}[padding]
    ph, pw = (0, 0) if isinstance(pad, str) else (pad, pad) if isinstance(pad, int) else pad
    if pad != "same":
        assume(h + 2 * ph >= dh * (kh - 1) + 1 and w + 2 * pw >= dw * (kw - 1) + 1)
    rng = np.random.default_rng(draw(SEEDS))
    arrays = [rng.standard_normal((draw(st.integers(1, 2)), cin, h, w)),
              rng.standard_normal((cout, cin // groups, kh, kw))]
    if draw(st.booleans()):
        arrays.append(rng.standard_normal(cout))
    return arrays, dict(stride=stride, padding=pad, dilation=(dh, dw), groups=groups)


def conv2d_call(kwargs):
    return lambda e, x, w, b=None: e.nn.functional.conv2d(x, w, b, **kwargs)


@LAYERS
@SETTINGS
@given(conv_cases())
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv2d_matches_torch(layer, case):
    arrays, kwargs = case
    with kernels.use(layer):
        assert_same(run_both(conv2d_call(kwargs), arrays))


@LAYERS
@pytest.mark.parametrize("kwargs", [
    dict(groups=2, dilation=2, padding=1),
    dict(groups=4, padding="same"),                  # depthwise
    dict(dilation=(2, 1), padding="same"),           # even kernel: the odd extra at the end
    dict(groups=2, stride=2, padding="valid")], ids=str)
def test_conv2d_gradcheck(layer, kwargs):
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((2, 4, 4, 5)), requires_grad=True)
    w = tinyres.tensor(rng.standard_normal((4, 4 // kwargs.get("groups", 1), 3, 2)),
                       requires_grad=True)
    b = tinyres.tensor(rng.standard_normal(4), requires_grad=True)
    with kernels.use(layer):
        assert tinyres.gradcheck(lambda x, w, b: F.conv2d(x, w, b, **kwargs), [x, w, b])


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_puts_the_odd_extra_at_the_bottom_right():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = 1.0                           # a 2x2 kernel of ones: (0, 1) padding
    out = F.conv2d(tinyres.tensor(x), tinyres.tensor(np.ones((1, 1, 2, 2))), padding="same")
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.ones(1, 1, 2, 2).double(),
                                          padding="same")
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    assert out.numpy()[0, 0, 0, 0] == 1.0 and out.numpy().sum() == 1.0


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_unbatched_input_as_torch():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((4, 5, 5)), rng.standard_normal((4, 2, 3, 3))
    assert_same(run_both(lambda e, x, w: e.nn.functional.conv2d(x, w, padding="same", groups=2),
                         [x, w]))
    assert_same(run_both(lambda e, x, w: e.nn.functional.conv_transpose2d(x, w, stride=2,
                                                                          groups=2), [x, w]))


# ----- conv_transpose2d ---------------------------------------------------------------
@st.composite
def transposed_cases(draw):
    groups = draw(st.integers(1, 3))
    cin, cout_g = groups * draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw, sh, sw, dh, dw = (draw(st.integers(1, 3)) for _ in range(6))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    oph = draw(st.integers(0, max(sh, dh) - 1))
    opw = draw(st.integers(0, max(sw, dw) - 1))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    assume((h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1 >= 1)
    assume((w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1 >= 1)
    rng = np.random.default_rng(draw(SEEDS))
    arrays = [rng.standard_normal((draw(st.integers(1, 2)), cin, h, w)),
              rng.standard_normal((cin, cout_g, kh, kw))]
    if draw(st.booleans()):
        arrays.append(rng.standard_normal(cout_g * groups))
    return arrays, dict(stride=(sh, sw), padding=(ph, pw), output_padding=(oph, opw),
                        groups=groups, dilation=(dh, dw))


@LAYERS
@SETTINGS
@given(transposed_cases())
def test_conv_transpose2d_matches_torch(layer, case):
    arrays, kwargs = case
    with kernels.use(layer):
        assert_same(run_both(lambda e, x, w, b=None:
                             e.nn.functional.conv_transpose2d(x, w, b, **kwargs), arrays))


@LAYERS
@pytest.mark.parametrize("kwargs", [
    dict(stride=2, padding=1, output_padding=1, groups=2),
    dict(dilation=2, output_padding=1),               # output_padding >= stride: an extra row
    dict(stride=(1, 3), padding=(1, 0), groups=4)], ids=str)
def test_conv_transpose2d_gradcheck(layer, kwargs):
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((2, 4, 4, 3)), requires_grad=True)
    w = tinyres.tensor(rng.standard_normal((4, 2, 3, 2)), requires_grad=True)
    b = tinyres.tensor(rng.standard_normal(2 * kwargs.get("groups", 1)), requires_grad=True)
    with kernels.use(layer):
        assert tinyres.gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, **kwargs),
                                 [x, w, b])


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    # <conv(y), x> == <y, conv^T(x)> for the same weight and geometry
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 2, 3, 3))
    y, x = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((2, 6, 5, 4))
    geometry = dict(stride=2, padding=1, dilation=1, groups=2)
    conv = F.conv2d(tinyres.tensor(y), tinyres.tensor(w), **geometry).numpy()
    assert conv.shape == x.shape
    back = F.conv_transpose2d(tinyres.tensor(x), tinyres.tensor(w), output_padding=(0, 1),
                              **geometry).numpy()
    assert back.shape == y.shape
    assert np.sum(conv * x) == pytest.approx(np.sum(y * back), rel=1e-12)


# ----- F.pad --------------------------------------------------------------------------
@st.composite
def pad_cases(draw):
    mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    padded = draw(st.integers(1, 3))
    ndim = draw(st.integers(padded, padded + 2)) if mode == "constant" else \
        padded + draw(st.integers(1, 2))
    shape = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    widths = []
    for k in range(padded):
        n = shape[ndim - 1 - k]
        if mode == "reflect":
            widths_ok = st.integers(-(n - 1) // 2, n - 1)     # torch: less than n
            lo, hi = draw(widths_ok), draw(widths_ok)
        elif mode == "circular":        # crop first, then wrap at most once around the rest
            lo_cut, hi_cut = draw(st.integers(0, (n - 1) // 2)), draw(st.integers(0, (n - 1) // 2))
            kept = n - lo_cut - hi_cut
            lo = -lo_cut if lo_cut else draw(st.integers(0, kept))
            hi = -hi_cut if hi_cut else draw(st.integers(0, kept))
        else:
            lo, hi = draw(st.integers(-(n // 2), 3)), draw(st.integers(-(n // 2), 3))
        assume(n + lo + hi >= 1)
        widths += [lo, hi]
    value = draw(st.sampled_from([None, 0.0, 2.5])) if mode == "constant" else None
    rng = np.random.default_rng(draw(SEEDS))
    return rng.standard_normal(shape), tuple(widths), mode, value


@LAYERS
@settings(max_examples=25, deadline=None)
@given(pad_cases())
def test_pad_matches_torch(layer, case):
    x, widths, mode, value = case
    with kernels.use(layer):
        assert_same(run_both(lambda e, x: e.nn.functional.pad(x, widths, mode=mode, value=value),
                             [x]))


@LAYERS
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_gradcheck(layer, mode):
    x = tinyres.tensor(np.random.default_rng(3).standard_normal((2, 3, 4, 5)),
                       requires_grad=True)
    with kernels.use(layer):
        assert tinyres.gradcheck(lambda x: F.pad(x, (2, 3, -1, 3), mode=mode), [x])
        assert tinyres.gradcheck(lambda x: F.pad(x[0], (1, 4), mode=mode), [x])


def test_pad_keeps_the_dtype():
    for dtype in (np.float32, np.float64):
        for mode in ("constant", "reflect"):
            x = tinyres.tensor(np.ones((1, 2, 3), dtype))
            assert F.pad(x, (1, 1), mode=mode).dtype == dtype


PAD_ERRORS = {
    "odd length": ((1, 1, 4, 4), (1, 2, 3), "constant", None),
    "longer than the dims": ((4, 4), (1,) * 6, "constant", None),
    "unknown mode": ((1, 1, 4, 4), (1, 1), "wrap", None),
    "reflect as wide as the input": ((1, 1, 4, 4), (4, 0, 0, 0), "reflect", None),
    "circular twice around": ((1, 1, 4, 4), (0, 5), "circular", None),
    "reflect with a value": ((1, 1, 4, 4), (1, 1, 1, 1), "reflect", 1.0),
    "reflect of 2 widths on 4-D": ((1, 1, 4, 4), (1, 1), "reflect", None),
    "replicate of 6 widths on 3-D": ((1, 4, 4), (1,) * 6, "replicate", None),
    "constant crops past empty": ((1, 1, 4, 4), (-3, -2), "constant", None),
    "constant crops past the end": ((1, 1, 4, 4), (-5, 3), "constant", None),
    "a float width": ((1, 1, 4, 4), (1.0, 1), "constant", None),
}


@pytest.mark.parametrize("name", list(PAD_ERRORS))
def test_pad_refuses_what_torch_refuses(name):
    shape, widths, mode, value = PAD_ERRORS[name]
    with pytest.raises(Exception) as theirs:
        torch.nn.functional.pad(torch.zeros(shape), widths, mode=mode, value=value)
    with pytest.raises(theirs.type, match="pad"):
        F.pad(tinyres.zeros(*shape), widths, mode=mode, value=value)


# ----- nn.Conv2d and nn.ConvTranspose2d -----------------------------------------------
LAYER_ARGS = [
    ("Conv2d", (4, 6, 3), {}),
    ("Conv2d", (4, 6, (3, 1)), dict(stride=(2, 1), padding=(1, 0), bias=False)),
    ("Conv2d", (4, 8, 3), dict(groups=4, dilation=2, padding="same")),
    ("Conv2d", (6, 6, 3), dict(groups=6, padding=1, padding_mode="reflect")),
    ("Conv2d", (4, 6, 2), dict(groups=2, padding="same", padding_mode="replicate")),
    ("Conv2d", (4, 4, 3), dict(padding=(2, 1), dilation=(1, 2), padding_mode="circular")),
    ("Conv2d", (4, 6, 3), dict(padding="valid", stride=2)),
    ("ConvTranspose2d", (4, 6, 3), {}),
    ("ConvTranspose2d", (4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
    ("ConvTranspose2d", (4, 2, (2, 3)), dict(dilation=2, bias=False, output_padding=(1, 0))),
]


def both_layers(name, args, kwargs):
    ours = getattr(nn, name)(*args, **kwargs, dtype=np.float64)
    theirs = getattr(torch.nn, name)(*args, **kwargs, dtype=torch.float64)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("name, args, kwargs", LAYER_ARGS, ids=str)
def test_layer_parameters_and_repr_are_torch_s(name, args, kwargs):
    ours, theirs = both_layers(name, args, kwargs)
    assert repr(ours) == repr(theirs)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("name, args, kwargs", LAYER_ARGS, ids=str)
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_layer_forward_and_gradients_are_torch_s(name, args, kwargs):
    ours, theirs = both_layers(name, args, kwargs)
    x = np.random.default_rng(4).standard_normal((2, args[0], 7, 6))
    xo, xt = tinyres.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_ours, out_theirs = ours(xo), theirs(xt)
    g = np.random.default_rng(5).standard_normal(tuple(out_theirs.shape))
    out_ours.backward(tinyres.tensor(g))
    out_theirs.backward(torch.tensor(g))
    assert_same([(out_ours.numpy(), out_theirs.detach().numpy()),
                 (xo.grad.numpy(), xt.grad.numpy())])
    for (k, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-10,
                                   err_msg=k)


@pytest.mark.parametrize("name, weight_shape", [("Conv2d", (64, 8, 3, 3)),
                                                ("ConvTranspose2d", (32, 16, 3, 3))])
def test_default_init_counts_the_channels_of_one_group(name, weight_shape):
    # torch: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in =
    # weight.shape[1]*kh*kw (in/groups for Conv2d, out/groups for ConvTranspose2d)
    tinyres.manual_seed(0)
    layer = getattr(nn, name)(32, 64, 3, groups=4)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert w.shape == weight_shape
    bound = 1 / math.sqrt(weight_shape[1] * 9)
    for values in (w, b):
        assert np.abs(values).max() <= bound
    assert np.abs(w).max() > 0.95 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert abs(w.mean()) < 0.05 * bound


def test_conv_transpose2d_output_size_picks_the_output_padding():
    ours, theirs = both_layers("ConvTranspose2d", (4, 2, 3), dict(stride=3, padding=1))
    x = np.random.default_rng(6).standard_normal((1, 4, 5, 5))
    for size in [(13, 13), (15, 14), (1, 2, 14, 13)]:
        out = ours(tinyres.tensor(x), output_size=size).numpy()
        np.testing.assert_allclose(out, theirs(torch.tensor(x), output_size=size).detach().numpy(),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="output size"):
        ours(tinyres.tensor(x), output_size=(16, 13))
    with pytest.raises(ValueError):
        theirs(torch.tensor(x), output_size=(16, 13))


# ----- bad arguments: the exception class torch raises --------------------------------
LAYER_ERRORS = {
    "in_channels not divisible": lambda e: e.nn.Conv2d(4, 6, 3, groups=3),
    "out_channels not divisible": lambda e: e.nn.Conv2d(4, 6, 3, groups=4),
    "groups 0": lambda e: e.nn.Conv2d(4, 6, 3, groups=0),
    "'same' with stride 2": lambda e: e.nn.Conv2d(4, 6, 3, stride=2, padding="same"),
    "bad padding string": lambda e: e.nn.Conv2d(4, 6, 3, padding="full"),
    "bad padding_mode": lambda e: e.nn.Conv2d(4, 6, 3, padding_mode="wrap"),
    "transposed reflect": lambda e: e.nn.ConvTranspose2d(4, 6, 3, padding_mode="reflect"),
    "transposed groups": lambda e: e.nn.ConvTranspose2d(4, 6, 3, groups=4),
}


@pytest.mark.parametrize("name", list(LAYER_ERRORS))
def test_layer_refuses_what_torch_refuses(name):
    with pytest.raises(Exception) as theirs:
        LAYER_ERRORS[name](torch)
    with pytest.raises(theirs.type, match="Conv"):
        LAYER_ERRORS[name](tinyres)


def _conv(e, x=(1, 4, 5, 6), w=(6, 2, 3, 3), **kwargs):
    return e.nn.functional.conv2d(e.zeros(*x, dtype=e.float64), e.zeros(*w, dtype=e.float64),
                                  **kwargs)


def _transposed(e, x=(1, 4, 5, 6), w=(4, 3, 3, 3), **kwargs):
    return e.nn.functional.conv_transpose2d(e.zeros(*x, dtype=e.float64),
                                            e.zeros(*w, dtype=e.float64), **kwargs)


FUNCTION_ERRORS = {
    "groups do not match the channels": lambda e: _conv(e, groups=3),
    "weight not divisible by groups": lambda e: _conv(e, w=(5, 2, 3, 3), groups=2),
    "'same' with stride 2": lambda e: _conv(e, w=(6, 4, 3, 3), stride=2, padding="same"),
    "bad padding string": lambda e: _conv(e, w=(6, 4, 3, 3), padding="full"),
    "dilation 0": lambda e: _conv(e, w=(6, 4, 3, 3), dilation=0),
    "groups 0": lambda e: _conv(e, groups=0),
    "negative padding": lambda e: _conv(e, w=(6, 4, 3, 3), padding=-1),
    "stride 0": lambda e: _conv(e, w=(6, 4, 3, 3), stride=0),
    "dilated kernel too large": lambda e: _conv(e, groups=2, dilation=3),
    "bias of the wrong size": lambda e: e.nn.functional.conv2d(
        e.zeros(1, 4, 5, 6, dtype=e.float64), e.zeros(6, 4, 3, 3, dtype=e.float64),
        e.zeros(5, dtype=e.float64)),
    "output_padding too large": lambda e: _transposed(e, stride=2, output_padding=2),
    "transposed channels": lambda e: _transposed(e, x=(1, 5, 5, 6)),
    "transposed groups": lambda e: _transposed(e, w=(3, 3, 3, 3), groups=2),
    "transposed output too small": lambda e: _transposed(e, padding=5),
}


@pytest.mark.parametrize("name", list(FUNCTION_ERRORS))
def test_functions_refuse_what_torch_refuses(name):
    with pytest.raises(Exception) as theirs:
        FUNCTION_ERRORS[name](torch)
    with pytest.raises(theirs.type, match="conv"):
        FUNCTION_ERRORS[name](tinyres)


class _ReflectWithTheInteriorAsGradient(pad_module.IndexPad):
    @staticmethod
    def backward(ctx, grad_out):
        # wrong on purpose: the copied interior's gradient only, none from the reflections
        h, w = ctx.sizes[-2:]
        return grad_out[..., 1:1 + h, 2:2 + w].copy()


def test_a_wrong_pad_gradient_is_caught():
    # the negative control of test_pad_gradcheck: reflect (2, 1) columns, (1, 0) rows
    x = tinyres.tensor(np.random.default_rng(7).standard_normal((1, 2, 4, 4)),
                       requires_grad=True)
    indices = ((3, pad_module._reflect(4, 2, 1)), (2, pad_module._reflect(4, 1, 0)))
    right = pad_module.IndexPad.apply(x, indices=indices)
    np.testing.assert_array_equal(right.numpy(), F.pad(x, (2, 1, 1, 0), mode="reflect").numpy())
    assert tinyres.gradcheck(lambda x: pad_module.IndexPad.apply(x, indices=indices), [x])
    with pytest.raises(tinyres.GradcheckError):
        tinyres.gradcheck(lambda x: _ReflectWithTheInteriorAsGradient.apply(x, indices=indices),
                          [x])
