"""F.unfold / F.fold and nn.Unfold / nn.Fold against PyTorch: values and gradients for
hypothesis-drawn shapes and windows on each CPU kernel layer, gradcheck in float64,
fold(unfold(x)), the lesson's identity conv2d = unfold + matmul + view, float16 and bool,
every bad argument raising torch's exception class, and the modules' repr. Skipped
cleanly where torch is not installed."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn.functional as F
from tinyres.functional import fold as fold_ops
from tinyres.kernels import reference

torch = pytest.importorskip("torch")
TF = torch.nn.functional
LAYERS = ["cpu", "reference"]
EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


# ----- drawing a window and the inputs that fit it --------------------------------------------

@st.composite
def windows(draw):
    """kernel_size, dilation, padding, stride (each an int or a pair, as torch takes them)
    and the smallest image side per axis that they fit."""
    def pair(lo, hi):
        a, b = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
        return draw(st.sampled_from([(a, b), a, [a, b]])) if a == b else (a, b)
    k, d, p, s = pair(1, 3), pair(1, 2), pair(0, 2), pair(1, 3)
    two = [v if isinstance(v, (tuple, list)) else (v, v) for v in (k, d, p, s)]
    smallest = tuple(max(1, dd * (kk - 1) + 1 - 2 * pp) for kk, dd, pp, _ in zip(*two))
    return dict(kernel_size=k, dilation=d, padding=p, stride=s), smallest


def blocks_along(size, k, d, p, s):
    """torch's number of windows along one axis."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def as_pairs(params):
    return [v if isinstance(v, (tuple, list)) else (v, v)
            for v in (params["kernel_size"], params["dilation"], params["padding"],
                      params["stride"])]


def weighted_backward(out, seed):
    """Backward of sum(w * out) for a random w: both engines get the same w."""
    w = np.random.default_rng(seed).standard_normal(tuple(out.shape))
    out.backward(tinyres.tensor(w) if isinstance(out, tinyres.Tensor) else torch.tensor(w))


def both(fn_ours, fn_theirs, array, seed=3):
    """(value, grad) of each engine for one float64 input array."""
    ours = tinyres.tensor(array, requires_grad=True)
    theirs = torch.tensor(array, requires_grad=True)
    out_ours, out_theirs = fn_ours(ours), fn_theirs(theirs)
    weighted_backward(out_ours, seed)
    weighted_backward(out_theirs, seed)
    return ((out_ours.numpy(), ours.grad.numpy()),
            (out_theirs.detach().numpy(), theirs.grad.numpy()))


def assert_same(ours, theirs):
    (value, grad), (their_value, their_grad) = ours, theirs
    assert value.shape == their_value.shape and value.dtype == their_value.dtype
    np.testing.assert_allclose(value, their_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, their_grad, rtol=1e-12, atol=1e-12)


# ----- values and gradients against torch -----------------------------------------------------

@pytest.mark.parametrize("layer", LAYERS)
@EXAMPLES
@given(window=windows(), data=st.data())
def test_unfold_matches_torch(layer, window, data):
    params, (min_h, min_w) = window
    batched = data.draw(st.booleans(), label="batched")
    n, c = data.draw(st.integers(1, 2), label="n"), data.draw(st.integers(1, 3), label="c")
    h, w = data.draw(st.integers(min_h, min_h + 4)), data.draw(st.integers(min_w, min_w + 4))
    x = np.random.default_rng(h * 7 + w).standard_normal((n, c, w, h))   # transposed below
    if not batched:
        x = x[0]

    def ours(t):
        return F.unfold(t.transpose(-1, -2), **params)           # a non-contiguous input

    def theirs(t):
        return TF.unfold(t.transpose(-1, -2), **params)
    with tinyres.kernels.use(layer):
        result = both(ours, theirs, x)
    assert_same(*result)


@pytest.mark.parametrize("layer", LAYERS)
@EXAMPLES
@given(window=windows(), data=st.data())
def test_fold_matches_torch(layer, window, data):
    params, (min_h, min_w) = window
    batched = data.draw(st.booleans(), label="batched")
    n, c = data.draw(st.integers(1, 2), label="n"), data.draw(st.integers(1, 3), label="c")
    out = (data.draw(st.integers(min_h, min_h + 4)), data.draw(st.integers(min_w, min_w + 4)))
    (kh, kw), *_ = pairs = as_pairs(params)
    count = np.prod([blocks_along(out[i], *(v[i] for v in pairs)) for i in range(2)])
    blocks = np.random.default_rng(count).standard_normal((n, count, c * kh * kw))
    if not batched:
        blocks = blocks[0]
    with tinyres.kernels.use(layer):                   # non-contiguous blocks: transposed
        result = both(lambda t: F.fold(t.transpose(-1, -2), out, **params),
                      lambda t: TF.fold(t.transpose(-1, -2), out, **params), blocks)
    assert_same(*result)


@pytest.mark.parametrize("layer", LAYERS)
@EXAMPLES
@given(window=windows(), data=st.data())
def test_fold_of_unfold_matches_torch_and_is_divisor_times_x(layer, window, data):
    params, (min_h, min_w) = window
    size = (data.draw(st.integers(min_h, min_h + 3)), data.draw(st.integers(min_w, min_w + 3)))
    x = np.random.default_rng(sum(size)).standard_normal((2, 2) + size)
    with tinyres.kernels.use(layer):
        ours = F.fold(F.unfold(tinyres.tensor(x), **params), size, **params).numpy()
        divisor = F.fold(F.unfold(tinyres.ones(1, 1, *size, dtype=tinyres.float64), **params),
                         size, **params).numpy()
    theirs = TF.fold(TF.unfold(torch.tensor(x), **params), size, **params).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, divisor * x, rtol=1e-12, atol=1e-12)


def test_unfold_orders_rows_by_channel_then_kernel_row_then_column():
    x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4)
    cols = F.unfold(tinyres.tensor(x), 2, stride=2).numpy()
    # row 5 is channel 1, kernel tap (0, 1); column 1 the block at output (0, 1)
    assert cols.shape == (1, 8, 4) and cols[0, 5, 1] == x[0, 1, 0, 3]
    np.testing.assert_array_equal(cols, TF.unfold(torch.tensor(x), 2, stride=2).numpy())


def test_an_empty_batch_keeps_its_shape():
    for ours, theirs in [(F.unfold(tinyres.zeros(0, 3, 5, 6), 2),
                          TF.unfold(torch.zeros(0, 3, 5, 6), 2)),
                         (F.fold(tinyres.zeros(0, 12, 20), (5, 6), 2),
                          TF.fold(torch.zeros(0, 12, 20), (5, 6), 2))]:
        assert ours.shape == tuple(theirs.shape) and ours.dtype == tinyres.float32


# ----- gradcheck in float64 -------------------------------------------------------------------

@pytest.mark.parametrize("layer", LAYERS)
def test_gradcheck_unfold_and_fold(layer):
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((2, 2, 5, 4)), requires_grad=True)
    window = dict(kernel_size=(2, 3), dilation=(2, 1), padding=1, stride=(1, 2))
    blocks = tinyres.tensor(rng.standard_normal((2, 12, 5 * 2)), requires_grad=True)
    with tinyres.kernels.use(layer):
        assert tinyres.gradcheck(lambda t: F.unfold(t, **window), [x], mode="projection")
        assert tinyres.gradcheck(lambda t: F.fold(t, (5, 4), **window), [blocks],
                                 mode="projection")
        unbatched = tinyres.tensor(rng.standard_normal((3, 4, 4)), requires_grad=True)
        assert tinyres.gradcheck(lambda t: F.fold(F.unfold(t, 3, padding=1) ** 2, 4, 3,
                                                  padding=1), [unbatched], mode="projection")


class UnfoldMissingTranspose(fold_ops.Unfold):
    """A plausible layout bug: the gradient reshaped to the kernels' (C*kh*kw, N*L) columns
    without moving the batch axis; right for one image, wrong for two."""

    @staticmethod
    def backward(ctx, grad_out):
        cols = np.ascontiguousarray(grad_out).reshape(grad_out.shape[1], -1)
        return reference.col2im(cols, ctx.shape, *ctx.window)


def test_gradcheck_catches_a_backward_that_mixes_up_the_layouts():
    window = fold_ops._unfold_window(tinyres.zeros(2, 2, 4, 4), 2, 1, 0, 1)
    x = tinyres.tensor(np.random.default_rng(6).standard_normal((2, 2, 4, 4)),
                       requires_grad=True)
    with pytest.raises(tinyres.GradcheckError):
        tinyres.gradcheck(lambda t: UnfoldMissingTranspose.apply(t, window=window), [x],
                          mode="projection")
    assert tinyres.gradcheck(lambda t: UnfoldMissingTranspose.apply(t, window=window),
                             [x[:1].detach().requires_grad_()], mode="projection")


# ----- the lesson: a convolution is unfold, one matmul, and a view ----------------------------

@pytest.mark.parametrize("layer", LAYERS)
def test_conv2d_is_unfold_matmul_view_on_both_engines(layer):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 10, 12)), rng.standard_normal((4, 3, 4, 5))

    def via_unfold(engine, functional, x, w):
        unf = functional.unfold(x, (4, 5), padding=1, stride=(2, 1))   # (N, C*kh*kw, L)
        out = unf.transpose(1, 2).matmul(w.view(w.size(0), -1).t()).transpose(1, 2)
        return out.view(2, 4, 5, 10), functional.conv2d(x, w, padding=1, stride=(2, 1))
    with tinyres.kernels.use(layer):
        ours = via_unfold(tinyres, F, tinyres.tensor(x), tinyres.tensor(w))
    theirs = via_unfold(torch, TF, torch.tensor(x), torch.tensor(w))
    np.testing.assert_allclose(ours[0].numpy(), ours[1].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(theirs[0].numpy(), theirs[1].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours[0].numpy(), theirs[0].numpy(), rtol=1e-10, atol=1e-12)


# ----- dtypes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bool"])
def test_other_dtypes_match_torch_exactly(layer, dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 2, 6, 6)) * 50).astype(dtype)
    blocks = (rng.standard_normal((2, 2 * 9, 16)) * 50).astype(dtype)
    with tinyres.kernels.use(layer):
        ours = [F.unfold(tinyres.tensor(x), 3, padding=1, stride=2),
                F.fold(tinyres.tensor(blocks), 6, 3)]
    theirs = [TF.unfold(torch.tensor(x), 3, padding=1, stride=2), TF.fold(torch.tensor(blocks),
                                                                           6, 3)]
    for a, b in zip(ours, theirs):
        assert a.numpy().dtype == b.numpy().dtype
        if dtype == "float32":
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-4)
        else:      # float16 folds round after each tap, as torch's CPU col2im does
            np.testing.assert_array_equal(a.numpy(), b.numpy())


# ----- bad arguments: torch's exception class, a message naming the op ------------------------

def shape_errors(m, F):
    """The bad calls, built the same way in either engine (m the module, F its functional)."""
    x, blocks = m.zeros(2, 3, 5, 6), m.zeros(2, 12, 20)
    return {
        "unfold 2-D": lambda: F.unfold(m.zeros(5, 6), 2),
        "unfold 5-D": lambda: F.unfold(m.zeros(1, 2, 3, 5, 6), 2),
        "unfold C = 0": lambda: F.unfold(m.zeros(2, 0, 5, 6), 2),
        "unfold W = 0": lambda: F.unfold(m.zeros(3, 5, 0), 2),
        "unfold kernel 0": lambda: F.unfold(x, (2, 0)),
        "unfold kernel -1": lambda: F.unfold(x, -1),
        "unfold dilation 0": lambda: F.unfold(x, 2, dilation=0),
        "unfold padding -1": lambda: F.unfold(x, 2, padding=-1),
        "unfold stride 0": lambda: F.unfold(x, 2, stride=0),
        "unfold too big": lambda: F.unfold(x, 3, dilation=3),
        "unfold three sizes": lambda: F.unfold(x, (2, 2, 2)),
        "unfold float kernel": lambda: F.unfold(x, 2.0),
        "unfold bool kernel": lambda: F.unfold(x, True),
        "unfold integer input": lambda: F.unfold(m.zeros(2, 3, 5, 6, dtype=m.int64), 2),
        "fold 1-D": lambda: F.fold(m.zeros(20), (5, 6), 2),
        "fold 4-D": lambda: F.fold(m.zeros(1, 2, 12, 20), (5, 6), 2),
        "fold L = 0": lambda: F.fold(m.zeros(2, 12, 0), (5, 6), 2),
        "fold L wrong": lambda: F.fold(blocks, (5, 7), 2),
        "fold unbatched L wrong": lambda: F.fold(m.zeros(12, 21), (5, 6), 2),
        "fold C*kh*kw not divisible": lambda: F.fold(m.zeros(2, 10, 20), (5, 6), 2),
        "fold kernel 0": lambda: F.fold(blocks, (5, 6), 0),
        "fold stride 0": lambda: F.fold(blocks, (5, 6), 2, stride=0, dilation=0),
        "fold dilation 0": lambda: F.fold(blocks, (5, 6), 2, dilation=0, padding=-1),
        "fold padding -1": lambda: F.fold(blocks, (5, 6), 2, padding=-1),
        "fold output 0": lambda: F.fold(blocks, (0, 6), 2),
        "fold output -1, L fits": lambda: F.fold(m.zeros(2, 3, 30), (-1, 6), 1, padding=2),
        "fold blocks too small": lambda: F.fold(m.zeros(2, 27, 4), (0, 0), 3),
        "fold float output_size": lambda: F.fold(blocks, (5.0, 6), 2),
        "fold integer input": lambda: F.fold(m.zeros(2, 12, 20, dtype=m.int32), (5, 6), 2),
    }


def raised(call):
    try:
        call()
    except Exception as e:      # noqa: BLE001 - the exception is what is compared
        return e
    return None


@pytest.mark.parametrize("name", list(shape_errors(tinyres, F)))
def test_errors_match_torch(name):
    theirs = raised(shape_errors(torch, TF)[name])
    ours = raised(shape_errors(tinyres, F)[name])
    assert theirs is not None and ours is not None, (name, theirs, ours)
    assert type(ours) is type(theirs), (name, ours, theirs)
    assert str(ours).startswith(("unfold", "fold")), ours
    if " should be " in str(theirs):     # the window checks: torch's order and words
        assert str(ours).endswith(": " + str(theirs)), (ours, theirs)


def test_error_messages_name_the_shapes_and_what_was_expected():
    with pytest.raises(RuntimeError, match=r"fold: .*output_size=\(5, 7\).*sliding blocks "
                                           r"4 \* 6 = 24, but got input.size\(2\)=20"):
        F.fold(tinyres.zeros(2, 12, 20), (5, 7), 2)
    with pytest.raises(RuntimeError, match=r"divisible by the product of kernel_size.*"
                                           r"input.size\(1\)=10 and kernel_size=\(2, 2\)"):
        F.fold(tinyres.zeros(2, 10, 20), (5, 6), 2)
    with pytest.raises(RuntimeError, match=r"unfold: expected a 3-D \(C, H, W\) or 4-D.*"
                                           r"\(1, 2, 3, 5, 6\)"):
        F.unfold(tinyres.zeros(1, 2, 3, 5, 6), 2)
    with pytest.raises(RuntimeError, match=r"unfold: given input with spatial size \(5, 6\), "
                                           r"kernel_size=\(7, 7\).*\(-1, 0\)"):
        F.unfold(tinyres.zeros(2, 3, 5, 6), 7)
    with pytest.raises(TypeError, match=r"unfold\(\): argument 'input'.*must be Tensor"):
        F.unfold(np.zeros((2, 3, 5, 6)), 2)


# ----- the modules ----------------------------------------------------------------------------

MODULE_CASES = [   # (name, args, kwargs, input shape)
    ("Unfold", (2,), {}, (2, 3, 4, 5)),
    ("Unfold", ((2, 3),), dict(dilation=2, padding=(1, 0), stride=[1, 2]), (2, 3, 4, 6)),
    ("Fold", ((4, 5), 2), {}, (2, 12, 12)),
    ("Fold", ([4, 5], (2, 1)), dict(padding=1, stride=2), (3, 2, 12)),
]


@pytest.mark.parametrize("name,args,kwargs,shape", MODULE_CASES)
def test_modules_repr_attributes_and_forward_match_torch(name, args, kwargs, shape):
    ours = getattr(tinyres.nn, name)(*args, **kwargs)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    for attr in ("kernel_size", "dilation", "padding", "stride", "output_size"):
        assert getattr(ours, attr, None) == getattr(theirs, attr, None)
    x = np.random.default_rng(4).standard_normal(shape)
    np.testing.assert_allclose(ours(tinyres.tensor(x)).numpy(),
                               theirs(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-12)


# ----- the GPU (pytest -m gpu) ----------------------------------------------------------------

GPU_WINDOW = dict(kernel_size=(3, 2), dilation=(1, 2), padding=1, stride=(2, 1))


def round_trip(engine, x, device):
    """(fold(2 * unfold(x)), x's gradient under the weighting x) on one device."""
    t = engine.tensor(x).to(device).requires_grad_()
    functional = engine.nn.functional
    folded = functional.fold(functional.unfold(t, **GPU_WINDOW) * 2.0, (7, 6), **GPU_WINDOW)
    folded.backward(engine.tensor(x).to(device))
    return folded.detach().cpu().numpy(), t.grad.cpu().numpy()


def test_round_trip_matches_torch_on_the_cpu():
    x = np.random.default_rng(5).standard_normal((2, 3, 7, 6))
    for ours, theirs in zip(round_trip(tinyres, x, "cpu"), round_trip(torch, x, "cpu")):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_unfold_and_fold_on_the_gpu_match_the_cpu():
    x = np.random.default_rng(5).standard_normal((2, 3, 7, 6))
    for a, b in zip(round_trip(tinyres, x, "cuda"), round_trip(tinyres, x, "cpu")):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_a_float16_fold_on_the_gpu_rounds_once_as_torchs_cuda_col2im():
    # quarters below 2**13: every float32 sum of them is exact, whatever its order
    quarters = np.random.default_rng(7).integers(-2000, 2000, (2, 18, 16)) / 4
    blocks = quarters.astype(np.float16)
    on_gpu = F.fold(tinyres.tensor(blocks).cuda(), 6, 3).cpu().numpy()
    rounded_once = F.fold(tinyres.tensor(quarters), 6, 3).numpy().astype(np.float16)
    tap_by_tap = F.fold(tinyres.tensor(blocks), 6, 3).numpy()      # torch's CPU rounding
    assert on_gpu.dtype == np.float16 and (tap_by_tap != rounded_once).any()
    np.testing.assert_array_equal(on_gpu, rounded_once)
