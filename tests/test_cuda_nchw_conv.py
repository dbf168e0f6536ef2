"""The CUDA layer's convolutions as batched GEMMs on NCHW (kernels/nchw_conv.py), emulated.

cuda.Launchers runs over NumPy with the .cu kernels built for the CPU (kernels/emulate.py;
np.matmul stands in for cuBLAS) and is held to kernels/reference.py (the textbook im2col
and one GEMM over the batch):
- im2col and col2im in the per-image layout (N, C*kh*kw, OH*OW), written and read by the
  same kernels as the batch-wide one, through their stride arguments;
- forward, input gradient and weight gradient in float32 and float64, strides 1 and 2,
  padding, dilation, groups (depthwise too), odd sizes, batch 1, 1x1 layers with stride
  1 and 2, need_x / need_w False, with the columns' budget forcing chunks of one and of
  two images (the last chunk shorter), and on shapes drawn by hypothesis;
- no transposes: a 1x1 stride-1 forward (and input gradient) launches no kernel and its
  output is the memory np.matmul wrote; a 3x3 forward launches im2col once per chunk and
  returns the batched GEMM's own output; the columns held at once stay within the budget.
A 1x1 layer's weight gradient takes the option that moves fewer bytes (per-image partials
or one GEMM over channels-first copies). A negative control: an image offset right only
for the batch-wide layout must be caught.
tinyres's conv2d on these launchers matches torch's (values and both gradients) and passes
gradcheck in float64; benchmarks/gpu_model.py's rows of the new route are checked by hand.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyres.host_sync import count_syncs
from tinyres.kernels import cuda, nchw_conv
from tinyres.kernels import reference as ref

from test_cuda_emulated import _backend, emu  # noqa: F401 (emu: the emulated layer, a fixture)

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
ONE_IMAGE, TWO_IMAGES = "one image", "two images"

# (x shape, out channels, (kh, kw, sh, sw, ph, pw), (dh, dw), groups)
CASES = [
    ((3, 4, 9, 7), 5, (3, 3, 1, 1, 1, 1), (1, 1), 1),      # 3x3 same, odd width
    ((3, 3, 11, 10), 4, (3, 3, 2, 2, 1, 1), (1, 1), 1),    # stride 2
    ((1, 2, 8, 9), 3, (7, 7, 2, 2, 3, 3), (1, 1), 1),      # a stem, batch 1
    ((2, 4, 9, 8), 6, (3, 2, 1, 2, 2, 1), (2, 3), 2),      # dilated, grouped
    ((3, 3, 7, 7), 6, (3, 3, 1, 1, 1, 1), (1, 1), 3),      # depthwise, multiplier 2
    ((3, 2, 11, 6), 4, (2, 3, 3, 1, 0, 2), (4, 2), 1),     # dilation 4 > stride 3
    ((3, 6, 5, 7), 8, (1, 1, 1, 1, 0, 0), (1, 1), 1),      # 1x1 stride 1
    ((3, 6, 7, 5), 8, (1, 1, 2, 2, 0, 0), (1, 1), 1),      # 1x1 stride 2, odd sizes
    ((2, 6, 6, 9), 4, (1, 1, 3, 2, 0, 0), (2, 2), 2),      # 1x1 strides (3, 2), grouped
    ((1, 3, 5, 5), 2, (1, 1, 1, 1, 1, 1), (1, 1), 1),      # 1x1 padded: im2col
    ((3, 8, 6, 6), 3, (1, 1, 1, 1, 0, 0), (1, 1), 1),      # 1x1, grad_w by partials, g copied
    ((4, 6, 2, 3), 8, (1, 1, 1, 1, 0, 0), (1, 1), 1),      # 1x1 on few pixels: grad_w 2-D
    ((4, 5, 3, 3), 7, (1, 1, 2, 2, 0, 0), (1, 1), 1),      # the same, stride 2
]
# the weight-gradient option (nchw_conv.pointwise_partials) of each 1x1 case: B or A
POINTWISE_ROUTES = {6: True, 7: True, 10: True, 11: False, 12: False}




def _budget(case, dtype, which):
    """Bytes of columns for one or two images of the case (its largest column matrix)."""
    shape, _, (kh, kw, sh, sw, ph, pw), (dh, dw), _ = case
    oh, ow = nchw_conv.out_size(shape[2], shape[3], (kh, kw, sh, sw, ph, pw, dh, dw))
    image = shape[1] * kh * kw * oh * ow * np.dtype(dtype).itemsize
    return {ONE_IMAGE: image, TWO_IMAGES: 2 * image + image // 2, None: nchw_conv.COLS_BUDGET}[
        which]


def _close(got, want, dtype, what):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got / scale, want / scale, err_msg=what, **TOL[dtype])


def check_conv(backend, case, dtype, seed=0, need=(True, True)):
    """Forward and both gradients of `backend` against the reference on one case."""
    shape, oc, window, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    w2 = rng.standard_normal((oc, shape[1] // groups * window[0] * window[1])).astype(dtype)
    want = ref.conv2d_forward(x, w2, *window, *dilation, groups)
    _close(backend.conv2d_forward(x, w2, *window, *dilation, groups), want, dtype,
           f"conv2d_forward {case}")
    g = rng.standard_normal(want.shape).astype(dtype)
    got = backend.conv2d_backward(g, x, w2, *window, *need, *dilation, groups)
    expected = ref.conv2d_backward(g, x, w2, *window, *need, *dilation, groups)
    for a, b, what, asked in zip(got, expected, ("grad_x", "grad_w2"), need):
        if not asked:
            assert a is None and b is None, what
        else:
            _close(a, b, dtype, f"conv2d_backward {what} {case}")


@pytest.mark.parametrize("budget", [None, ONE_IMAGE, TWO_IMAGES])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_convolution_matches_the_reference(emu, case, dtype, budget):
    emu.cols_budget = _budget(case, dtype, budget)
    try:
        check_conv(emu, case, dtype)
    finally:
        emu.cols_budget = nchw_conv.COLS_BUDGET


@pytest.mark.parametrize("index", sorted(POINTWISE_ROUTES))
def test_pointwise_weight_gradient_takes_the_cheaper_option(recording, index):
    shape, oc, (_, _, sh, sw, _, _), _, _ = CASES[index]
    n, c, h, w = shape
    oh, ow = (h - 1) // sh + 1, (w - 1) // sw + 1
    partials = nchw_conv.pointwise_partials(n, c, oc, oh * ow, (sh, sw) != (1, 1))
    assert partials == POINTWISE_ROUTES[index]
    x, w2 = _data(shape, oc, 1, np.float64)
    g = np.random.default_rng(8).standard_normal((n, oc, oh, ow))
    _, grad_w2 = recording.conv2d_backward(g, x, w2, 1, 1, sh, sw, 0, 0, False, True)
    (product,) = recording.xp.products
    # B: one batched GEMM over same-batch operands into per-image partials, (N, OC, C)
    # with x's pixels put first, (N, C, OC) with g's; A: one 2-D GEMM, (OC, C)
    if not partials:
        assert product.shape == (oc, c)
    elif sh > 1 or c <= oc:
        assert product.shape == (n, oc, c)
    else:
        assert product.shape == (n, c, oc)
    np.testing.assert_allclose(grad_w2, ref.conv2d_backward(
        g, x, w2, 1, 1, sh, sw, 0, 0, False, True)[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("need", [(True, False), (False, True)])
@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[7]], ids=str)
def test_only_the_gradients_asked_for(emu, case, need):
    check_conv(emu, case, np.float64, seed=1, need=need)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=str)
def test_per_image_layout_of_im2col_and_col2im(emu, case):
    # image n's block of the per-image columns is the reference's columns of image n alone
    shape, _, window, dilation, _ = case
    geometry = (*window, *dilation)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    oh, ow = nchw_conv.out_size(shape[2], shape[3], geometry)
    rows = shape[1] * window[0] * window[1]
    cols3 = np.full((shape[0], rows, oh * ow), np.nan)
    emu._unfold(x, cols3, geometry, True)
    g3 = rng.standard_normal(cols3.shape)
    dx = np.full(shape, np.nan)
    emu._fold(g3, dx, geometry, True)
    for n in range(shape[0]):
        np.testing.assert_array_equal(cols3[n], ref.im2col(x[n:n + 1], *geometry))
        np.testing.assert_allclose(dx[n:n + 1], ref.col2im(g3[n], (1, *shape[1:]), *geometry),
                                   rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 4), oc=st.integers(1, 4), h=st.integers(1, 9),
       w=st.integers(1, 9), k=st.sampled_from([(1, 1), (3, 3), (2, 3)]),
       s=st.sampled_from([(1, 1), (2, 2), (2, 1)]), p=st.sampled_from([(0, 0), (1, 1), (0, 1)]),
       d=st.sampled_from([(1, 1), (2, 1)]), groups=st.sampled_from([1, 2]),
       chunked=st.booleans())
def test_any_shape_matches_the_reference(emu, n, c, oc, h, w, k, s, p, d, groups, chunked):
    c, oc = c * groups, oc * groups
    span = [d[i] * (k[i] - 1) + 1 for i in range(2)]
    if h + 2 * p[0] < span[0] or w + 2 * p[1] < span[1]:
        return                                         # no output pixel: refused alike
    case = ((n, c, h, w), oc, (*k, *s, *p), d, groups)
    emu.cols_budget = _budget(case, np.float64, ONE_IMAGE if chunked else None)
    try:
        check_conv(emu, case, np.float64, seed=n * 7 + h)
    finally:
        emu.cols_budget = nchw_conv.COLS_BUDGET


# ------------------------------------------------------------------- no transposes, no copies
class RecordingNumpy:
    """NumPy, with every xp.matmul result and every xp.empty allocation recorded."""

    def __init__(self):
        self.products, self.allocations = [], []

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b, out=None):
        result = np.matmul(a, b, out=out)
        self.products.append(result)
        return result

    def empty(self, shape, dtype=float):
        a = np.empty(shape, dtype=dtype)
        self.allocations.append(a)
        return a


@pytest.fixture()
def recording():
    backend = _backend()
    backend.xp = RecordingNumpy()
    return backend


def _data(shape, oc, k, dtype=np.float32, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype),
            rng.standard_normal((oc, shape[1] * k * k)).astype(dtype))


def test_pointwise_forward_launches_nothing_and_returns_the_gemm_output(recording):
    x, w2 = _data((3, 6, 5, 7), 8, 1)
    with count_syncs() as counted:
        out = recording.conv2d_forward(x, w2, 1, 1, 1, 1, 0, 0)
    assert counted.launches == 0
    (product,) = recording.xp.products
    assert product.shape == (3, 8, 35) and np.shares_memory(out, product)
    np.testing.assert_array_equal(out, np.matmul(w2, x.reshape(3, 6, 35)).reshape(3, 8, 5, 7))
    g = np.ones_like(out)
    with count_syncs() as counted:
        grad_x, grad_w2 = recording.conv2d_backward(g, x, w2, 1, 1, 1, 1, 0, 0, True, False)
    assert counted.launches == 0 and grad_w2 is None
    assert np.shares_memory(grad_x, recording.xp.products[-1])


def test_strided_pointwise_launches_nothing(recording):
    x, w2 = _data((2, 4, 7, 6), 5, 1)
    with count_syncs() as counted:
        out = recording.conv2d_forward(x, w2, 1, 1, 2, 2, 0, 0)
        recording.conv2d_backward(np.ones_like(out), x, w2, 1, 1, 2, 2, 0, 0)
    assert counted.launches == 0
    np.testing.assert_array_equal(out.reshape(2, 5, 12), np.matmul(
        w2, np.ascontiguousarray(x[:, :, ::2, ::2]).reshape(2, 4, 12)))


@pytest.mark.parametrize("groups", [1, 2])
def test_forward_is_im2col_per_chunk_and_the_gemm_writes_nchw(recording, groups):
    x, w2 = _data((5, 4, 6, 6), 6, 3)
    w2 = np.ascontiguousarray(w2[:, :w2.shape[1] // groups])
    image = 4 * 9 * 36 * 4                  # one image's columns, float32 bytes
    recording.cols_budget = 2 * image
    with count_syncs() as counted:
        out = recording.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, 1, 1, groups)
    assert counted.launches == 3            # chunks of 2, 2 and 1 images: im2col each
    assert out.flags.c_contiguous and all(np.shares_memory(out, p)
                                          for p in recording.xp.products)
    np.testing.assert_allclose(out, ref.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, 1, 1, groups),
                               rtol=1e-5, atol=1e-5)
    cols = [a for a in recording.xp.allocations if a.shape[1:] == (36, 36)]
    assert len(cols) == 1 and cols[0].nbytes <= recording.cols_budget


def test_backward_holds_the_budget_and_launches_per_chunk(recording):
    x, w2 = _data((5, 4, 6, 6), 6, 3, np.float64)
    recording.cols_budget = 2 * 4 * 9 * 36 * 8
    g = np.random.default_rng(4).standard_normal((5, 6, 6, 6))
    with count_syncs() as counted:
        grad_x, grad_w2 = recording.conv2d_backward(g, x, w2, 3, 3, 1, 1, 1, 1)
    assert counted.launches == 6            # col2im and im2col for each of 3 chunks
    columns = [a for a in recording.xp.allocations if a.size >= 36 * 36]
    assert columns and all(a.nbytes <= recording.cols_budget for a in columns)
    want = ref.conv2d_backward(g, x, w2, 3, 3, 1, 1, 1, 1, True, True)
    np.testing.assert_allclose(grad_x, want[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_w2, want[1], rtol=1e-12, atol=1e-12)


def test_planted_batch_wide_only_image_offset_is_caught():
    # right for the batch-wide layout (image_stride = OH*OW there), wrong per image
    old = "T* first = cols + (long long)c * kh * kw * Q + n * image_stride;"
    source = cuda.read_source("im2col.cu")
    assert source.count(old) == 1, "im2col.cu changed; update the control"
    new = ("T* first = cols + (long long)c * kh * kw * Q"
           " + n * (image_stride ? (long long)OH * OW : 0);")
    planted = _backend(sources={"im2col.cu": source.replace(old, new)})
    x, w2 = _data((2, 3, 5, 5), 2, 3, np.float64)
    np.testing.assert_array_equal(planted.im2col(x, 3, 3, 1, 1, 1, 1),
                                  ref.im2col(x, 3, 3, 1, 1, 1, 1))
    with pytest.raises(AssertionError, match="conv2d_forward"):
        check_conv(planted, ((2, 3, 5, 5), 2, (3, 3, 1, 1, 1, 1), (1, 1), 1), np.float64)


# ------------------------------------------------------------------------- edges and errors
@pytest.mark.parametrize("window", [(3, 3, 1, 1, 1, 1), (1, 1, 1, 1, 0, 0),
                                    (1, 1, 2, 2, 0, 0)])
def test_empty_batch(emu, window):
    x = np.zeros((0, 3, 5, 5), np.float32)
    w2 = np.ones((2, 3 * window[0] * window[1]), np.float32)
    out = emu.conv2d_forward(x, w2, *window)
    assert out.shape == ref.conv2d_forward(x, w2, *window).shape
    grad_x, grad_w2 = emu.conv2d_backward(out, x, w2, *window)
    assert grad_x.shape == x.shape and grad_w2.shape == w2.shape
    np.testing.assert_array_equal(grad_w2, 0.0)


def test_non_contiguous_input(emu):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 6, 4)).transpose(0, 3, 2, 1)    # (2, 4, 6, 5), a view
    for k, pad in ((3, 1), (1, 0)):
        w2 = rng.standard_normal((3, 4 * k * k))
        np.testing.assert_allclose(emu.conv2d_forward(x, w2, k, k, 1, 1, pad, pad),
                                   ref.conv2d_forward(x, w2, k, k, 1, 1, pad, pad),
                                   rtol=1e-12, atol=1e-12)
        g = rng.standard_normal((2, 3, 6, 5))
        for a, b in zip(emu.conv2d_backward(g, x, w2, k, k, 1, 1, pad, pad),
                        ref.conv2d_backward(g, x, w2, k, k, 1, 1, pad, pad, True, True)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_bad_input_same_errors_as_the_reference(emu):
    x = np.zeros((2, 4, 5, 5), np.float32)
    for w2, kind in ((np.zeros((3, 35), np.float32), ValueError),
                     (np.zeros((3, 36), np.float64), TypeError)):
        with pytest.raises(kind) as want:
            ref.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1)
        with pytest.raises(kind) as got:
            emu.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1)
        assert str(got.value) == str(want.value) and "conv2d_forward" in str(got.value)
    with pytest.raises(ValueError, match="conv2d_backward: grad_out"):
        emu.conv2d_backward(np.zeros((2, 3, 4, 4), np.float32), x,
                            np.zeros((3, 36), np.float32), 3, 3, 1, 1, 1, 1)


def test_chunks_cover_the_batch_within_the_budget():
    assert nchw_conv.chunks(5, 10, 25) == [(0, 2), (2, 4), (4, 5)]
    assert nchw_conv.chunks(5, 10, 5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert nchw_conv.chunks(3, 10, 10**9) == [(0, 3)]
    assert nchw_conv.chunks(0, 10, 25) == [] and nchw_conv.chunks(4, 0, 1) == [(0, 4)]


# ------------------------------------------- through tinyres's conv2d, beside torch's
TORCH_CASES = [  # (x shape, weight shape, stride, padding, dilation, groups)
    ((2, 6, 7, 5), (4, 6, 1, 1), 1, 0, 1, 1),
    ((2, 6, 7, 5), (4, 6, 1, 1), 2, 0, 1, 1),
    ((2, 3, 9, 8), (5, 3, 3, 3), 2, 1, 1, 1),
    ((1, 4, 8, 9), (6, 2, 3, 2), (1, 2), (2, 1), (2, 3), 2),
]


@pytest.fixture()
def on_emulated_cuda(emu, monkeypatch):
    """tinyres's conv2d running on the emulated CUDA launchers."""
    from tinyres.functional import conv
    monkeypatch.setattr(conv, "kernels_for", lambda a: emu)
    return emu


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_conv2d_on_the_cuda_layer_matches_torch(on_emulated_cuda, case, dtype):
    torch = pytest.importorskip("torch")
    import tinyres
    x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(6)
    x, w = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ours = [tinyres.tensor(a, requires_grad=True) for a in (x, w)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w)]
    out = tinyres.nn.functional.conv2d(*ours, **kwargs)
    want = torch.nn.functional.conv2d(*theirs, **kwargs)
    g = rng.standard_normal(tuple(want.shape)).astype(dtype)
    out.backward(tinyres.tensor(g))
    want.backward(torch.tensor(g))
    pairs = [(out.numpy(), want.detach().numpy())]
    pairs += [(a.grad.numpy(), b.grad.numpy()) for a, b in zip(ours, theirs)]
    for a, b in pairs:
        _close(a, b, dtype, f"conv2d {case}")


@pytest.mark.parametrize("case, mode", [(TORCH_CASES[1], "auto"), (TORCH_CASES[2], "auto"),
                                        (TORCH_CASES[3], "projection")], ids=str)
def test_conv2d_on_the_cuda_layer_gradcheck(on_emulated_cuda, case, mode):
    # random output weighting (tinyres.gradcheck); the grouped case by random projections,
    # as its full Jacobian takes hundreds of emulated launches
    import tinyres
    x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(7)
    x, w = (tinyres.tensor(rng.standard_normal(s), requires_grad=True)
            for s in (x_shape, w_shape))
    assert tinyres.gradcheck(lambda x, w: tinyres.nn.functional.conv2d(
        x, w, stride=stride, padding=padding, dilation=dilation, groups=groups), [x, w],
        mode=mode)


# ------------------------------------------------------ the cost model (benchmarks/gpu_model.py)
def _gpu_model():
    import importlib
    import pathlib
    import sys
    folder = str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("gpu_model")


def test_gpu_model_pointwise_layers_by_hand():
    model = _gpu_model()
    rows = {}
    for r in model.step_items():
        rows.setdefault(r["layer"], {})[r["kernel"]] = r
    # layer1.0.conv1: 1x1 stride 1, 64 -> 64 channels, 56x56, batch 64: no kernel forward
    x, w = 64 * 64 * 56 * 56, 64 * 64
    conv1 = rows["layer1.0.conv1"]
    assert not any("im2col" in k or "NCHW" in k or "subsample" in k for k in conv1)
    fwd = conv1["fwd GEMM w2 @ x"]
    assert fwd["bytes"] == 4 * (w + x + x) and fwd["flops"] == 2 * 64 * 64 * 56 * 56 * 64
    assert fwd["launches"] == model.BATCHED_GEMM_LAUNCHES
    # layer2.0.downsample: 1x1 stride 2, 256 -> 512 channels, 56x56 -> 28x28
    down = rows["layer2.0.downsample"]
    xs = 64 * 256 * 28 * 28
    assert down["fwd copy x subsample"]["bytes"] == 4 * (2 * xs + xs)
    assert down["bwd zero grad_x"]["bytes"] == 4 * 64 * 256 * 56 * 56
    assert down["fwd GEMM w2 @ x"]["bytes"] == 4 * (512 * 256 + xs + 64 * 512 * 28 * 28)
    # the weight gradient: per-image partials on 56x56 (B), one 2-D GEMM on 7x7 (A)
    b = conv1["bwd GEMM per-image partials"]
    assert b["bytes"] == 4 * (x + x + 64 * w) and b["flops"] == fwd["flops"]
    assert "bwd GEMM g2 @ x^T" in rows["layer4.0.conv3"]
    assert not any("partials" in k for k in rows["layer4.0.conv3"])
    # the stem has no input gradient; every layer's columns fit one chunk at batch 64
    assert not any(k.startswith("bwd GEMM w2^T") for k in rows["conv1"])
    assert all(r["launches"] == 1 for r in model.step_items() if "im2col" in r["kernel"])


def test_gpu_model_before_and_after():
    model = _gpu_model()
    before, after = (model.step_items(layout=layout) for layout in ("channels-first", "nchw"))
    flops = [sum(r["flops"] for r in rows if r["gemm"]) for rows in (before, after)]
    assert flops[0] == flops[1]                      # the same GEMMs, other layouts
    assert any(r["kernel"] == "fwd copy out to NCHW" for r in before)
    assert not any("to NCHW" in r["kernel"] for r in after)
    for tf32 in (False, True):
        table = model.before_after(tf32)
        for gpu in model.GPUS:
            assert table["after"][gpu]["gpu_ms"] < table["before"][gpu]["gpu_ms"]
    lines = model.readme_lines()
    assert any(line.startswith("| before (channels-first convolutions") for line in lines)


def test_gpu_model_fused_sgd_is_one_launch_and_five_parameter_sized_passes():
    model = _gpu_model()
    scalars, tensors = model.parameter_count()
    fused, per_tensor = (next(r for r in model.step_items(optimizer=o) if r["layer"] == "optimizer")
                         for o in ("fused", "per-tensor"))
    assert (fused["launches"], fused["bytes"]) == (1, 4 * 5 * scalars)
    assert (per_tensor["launches"], per_tensor["bytes"]) == (7 * tensors, 4 * 16 * scalars)
    after = model.summary(model.predict(model.step_items(), model.GPUS["H100 SXM"]))
    unfused = model.summary(model.predict(model.step_items(optimizer="per-tensor"),
                                          model.GPUS["H100 SXM"]))
    assert unfused["launches"] - after["launches"] == 7 * tensors - 1
