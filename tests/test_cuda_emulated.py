"""The CUDA kernels of kernels/cuda/*.cu, run on the CPU through kernels/emulate.py.

Every kernel is launched by the same cuda.Launchers code that drives the GPU, on small
shapes (odd sizes, stride larger than the kernel, padding, batch 1, dilated windows,
grouped and depthwise convolutions), in float32 and float64, and held to
kernels/reference.py. The emulation uses 64-thread blocks and at most
8 blocks per grid dimension, so the grid-stride loops take several turns; batch norm also
runs with 32 and 128 threads, with more channels than blocks and with several images per
block (2-D blocks), and on badly conditioned data (mean 1e4, std 1), where its float32
Welford statistics must hold to the float64 reference and a naive float32
E[x^2] - E[x]^2 must not. The magic-number division of fastdiv.cuh is checked exactly on
its whole domain's edges. Negative controls: a planted off-by-one in im2col, a col2im
that takes the rows of cols one image shorter than they are, a col2im that forgets the
dilation, a broken warp reduction and an unshifted (naive) variance must be caught by the
same comparisons, and a kernel that leaves some threads out of __syncthreads() must fail
with the deadlock message. Running only some blocks of a launch (`only`) runs exactly
those. tests/test_cuda_sizes.py runs every kernel at resnet50 launch sizes.
The launchers' convolutions (kernels/nchw_conv.py) also run on every window case;
tests/test_cuda_nchw_conv.py checks them in depth.
"""
import numpy as np
import pytest

from tinyres.kernels import cuda, emulate
from tinyres.kernels import reference as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}

# (x shape, kh, kw, sh, sw, ph, pw): all valid for max pooling too (padding <= kernel/2)
WINDOWS = [
    ((1, 1, 1, 1), 1, 1, 1, 1, 0, 0),
    ((2, 3, 7, 6), 3, 2, 2, 1, 1, 1),
    ((1, 2, 5, 5), 2, 2, 3, 3, 0, 0),      # stride > kernel: some pixels are never read
    ((3, 2, 9, 4), 3, 3, 1, 1, 1, 1),
    ((2, 1, 8, 8), 1, 1, 2, 2, 0, 0),      # the 1x1 stride-2 projection of a ResNet
    ((1, 4, 11, 13), 3, 3, 2, 2, 1, 1),
    ((1, 3, 4, 5), 4, 4, 1, 2, 2, 2),
]
BN_SHAPES = [(2, 3, 5, 7), (1, 4, 1, 3), (5, 11, 3, 3), (1, 2, 17, 19),
             (40, 3, 1, 1)]   # 1x1 planes: 2 images per block, 8 slices per channel


def _backend(**options):
    try:
        return emulate.backend(**options)
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def emu():
    return _backend()


def _close(got, want, dtype, what):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    np.testing.assert_allclose(got, want, err_msg=what, **TOL[dtype])


def check_windows(backend, case, dtype, seed=0):
    """im2col, col2im and max pooling of `backend` against the reference on one case."""
    shape, *geometry = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    cols = ref.im2col(x, *geometry)
    _close(backend.im2col(x, *geometry), cols, dtype, f"im2col {case}")
    g = rng.standard_normal(cols.shape).astype(dtype)
    _close(backend.col2im(g, shape, *geometry), ref.col2im(g, shape, *geometry), dtype,
           f"col2im {case}")
    ties = rng.integers(-2, 3, size=shape).astype(dtype)   # many equal maxima per window
    for data in (x, ties):
        y, idx = backend.maxpool_forward(data, *geometry)
        y_ref, idx_ref = ref.maxpool_forward(data, *geometry)
        _close(y, y_ref, dtype, f"maxpool_forward {case}")
        np.testing.assert_array_equal(idx, idx_ref, err_msg=f"maxpool idx {case}")
        go = rng.standard_normal(y.shape).astype(dtype)
        _close(backend.maxpool_backward(go, idx, shape, *geometry),
               ref.maxpool_backward(go, idx_ref, shape, *geometry), dtype,
               f"maxpool_backward {case}")


def check_batchnorm(backend, shape, dtype, seed=0):
    """Batch-norm forward (with running stats) and backward against the reference."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 50).astype(dtype)  # |mean| >> std: two passes matter
    weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    runs = [(rng.standard_normal(c).astype(dtype), rng.random(c).astype(dtype) + 0.5)]
    runs.append(tuple(r.copy() for r in runs[0]))
    got = backend.batchnorm_forward(x, weight, bias, *runs[0], 0.1, 1e-5)
    want = ref.batchnorm_forward(x, weight, bias, *runs[1], 0.1, 1e-5)
    for a, b, what in zip(got + runs[0], want + runs[1], ["y", "mean", "invstd", "rm", "rv"]):
        _close(a, b, dtype, f"batchnorm_forward {what} {shape}")
    g = rng.standard_normal(shape).astype(dtype)
    got = backend.batchnorm_backward(g, x, weight, want[1], want[2])
    want = ref.batchnorm_backward(g, x, weight, want[1], want[2])
    for a, b, what in zip(got, want, ["grad_x", "grad_weight", "grad_bias"]):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a / scale, b / scale, err_msg=f"{what} {shape}", **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WINDOWS, ids=str)
def test_im2col_col2im_maxpool(emu, case, dtype):
    check_windows(emu, case, dtype)


# (x shape, out channels, (kh, kw, sh, sw, ph, pw), (dh, dw), groups): dilated windows
# (taps further apart than the stride, and an asymmetric dilation), grouped and depthwise
# layers (with a channel multiplier), a 1x1 grouped layer that skips im2col
SPREAD = [
    ((2, 4, 9, 8), 6, (3, 2, 1, 2, 2, 1), (2, 3), 2),
    ((1, 3, 7, 7), 6, (3, 3, 1, 1, 1, 1), (1, 1), 3),      # depthwise, multiplier 2
    ((2, 6, 6, 5), 3, (1, 1, 1, 1, 0, 0), (1, 1), 3),      # grouped 1x1
    ((3, 2, 11, 6), 4, (2, 3, 3, 1, 0, 2), (4, 2), 1),     # dilation 4 > stride 3
]


def check_spread_conv(backend, case, dtype, seed=0):
    """im2col and col2im with dilation, and the grouped convolution's forward and both
    gradients (the launchers' GEMMs on top of the kernels), against the reference."""
    shape, oc, window, (dh, dw), groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    cols = ref.im2col(x, *window, dh, dw)
    _close(backend.im2col(x, *window, dh, dw), cols, dtype, f"im2col {case}")
    g = rng.standard_normal(cols.shape).astype(dtype)
    _close(backend.col2im(g, shape, *window, dh, dw), ref.col2im(g, shape, *window, dh, dw),
           dtype, f"col2im {case}")
    w2 = rng.standard_normal((oc, shape[1] // groups * window[0] * window[1])).astype(dtype)
    out = ref.conv2d_forward(x, w2, *window, dh, dw, groups)
    _close(backend.conv2d_forward(x, w2, *window, dh, dw, groups), out, dtype,
           f"conv2d_forward {case}")
    go = rng.standard_normal(out.shape).astype(dtype)
    got = backend.conv2d_backward(go, x, w2, *window, True, True, dh, dw, groups)
    want = ref.conv2d_backward(go, x, w2, *window, True, True, dh, dw, groups)
    for a, b, what in zip(got, want, ("grad_x", "grad_w2")):
        _close(a, b, dtype, f"conv2d_backward {what} {case}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SPREAD, ids=str)
def test_dilated_and_grouped_convolution(emu, case, dtype):
    check_spread_conv(emu, case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", WINDOWS, ids=str)
def test_convolution_on_the_window_cases(emu, case, dtype):
    # the launchers' convolutions (kernels/nchw_conv.py: per-image columns, batched GEMMs
    # writing NCHW, 1x1 layers without im2col) on the pooling windows, 3 output channels
    shape, *window = case
    check_spread_conv(emu, (shape, 3, tuple(window), (1, 1), 1), dtype)


def test_planted_col2im_without_dilation_is_caught():
    backend = _backend(sources=_planted("im2col.cu", "int t = h + ph - i * dh;",
                                        "int t = h + ph - i * (dh > 1 ? 1 : dh);"))
    with pytest.raises(AssertionError, match="col2im"):
        check_spread_conv(backend, SPREAD[0], np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm(emu, shape, dtype):
    check_batchnorm(emu, shape, dtype)


@pytest.mark.parametrize("block", [32, 128])
def test_batchnorm_other_block_sizes(block):
    backend = _backend(block=block, max_blocks=3)
    for dtype in DTYPES:
        check_batchnorm(backend, (3, 5, 6, 7), dtype, seed=block)


@pytest.mark.parametrize("block", [32, 64, 128, 256, 512, 1024])
def test_plane_blocks_stay_within_the_gpus_limits(block):
    """tile() shapes the block of every plane kernel: however small the planes, no
    blockDim is past the hardware's limits (blockDim.z at most 64), and no more threads
    than `block`."""
    for rows in (1, 2, 3, 7, 8, 33, 1000):
        for cols in (1, 2, 5, 32, 100, 5000):
            shape = cuda.tile(block, rows, cols)
            assert all(1 <= d <= limit for d, limit in zip(shape, emulate.BLOCK_LIMITS)), \
                (block, rows, cols, shape)
            assert shape[0] * shape[1] * shape[2] <= block


def test_tiny_planes_with_the_gpus_block_size():
    """The block size a GPU runs (cuda.BLOCK) on planes of one element: im2col, col2im and
    max-pool with one output per plane, batch norm over 1x1 maps. A block of BLOCK planes
    would be refused by a GPU (blockDim.z above 64), and by the emulator likewise."""
    backend = _backend(block=cuda.BLOCK, max_blocks=3)
    rng = np.random.default_rng(0)
    window = (2, 2, 2, 2, 0, 0)                   # a 2x2 map gives one output position
    for dtype in DTYPES:
        x = rng.standard_normal((3, 5, 2, 2)).astype(dtype)
        cols = backend.im2col(x, *window)
        _close(cols, ref.im2col(x, *window), dtype, "im2col, one position")
        _close(backend.col2im(cols, x.shape, *window), ref.col2im(cols, x.shape, *window),
               dtype, "col2im, one position")
        y, idx = backend.maxpool_forward(x, *window)
        y_ref, idx_ref = ref.maxpool_forward(x, *window)
        _close(y, y_ref, dtype, "maxpool, one position")
        _close(backend.maxpool_backward(y, idx, x.shape, *window),
               ref.maxpool_backward(y_ref, idx_ref, x.shape, *window), dtype,
               "maxpool backward, one position")
        check_batchnorm(backend, (4, 3, 1, 1), dtype)


def check_badly_conditioned_batchnorm(backend, dtype, seed=5):
    """Mean 1e4, std 1: the statistics against the float64 reference. In float32 the mean
    is held to a few ulps of 1e4 and invstd to 1e-3 (every float32 mean carries an error
    of up to half an ulp, 5e-4, which the combination passes on); y to 2e-3, the ulp of
    1e4 in units of the std. A naive E[x^2] - E[x]^2 in float32 loses every digit."""
    rng = np.random.default_rng(seed)
    shape = (3, 2, 16, 32)            # 8 values per thread (64 threads), 1 image per block
    x = (rng.standard_normal(shape) + 1e4).astype(dtype)
    w, b = np.ones(2, dtype), np.zeros(2, dtype)
    y, mean, invstd = backend.batchnorm_forward(x, w, b, None, None, 0.1, 1e-5)
    y_ref, mean_ref, invstd_ref = ref.batchnorm_forward(x, w, b, None, None, 0.1, 1e-5)
    loose = dtype == np.float32
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-6 if loose else 1e-14,
                               err_msg="batchnorm mean, mean 1e4")
    np.testing.assert_allclose(invstd, invstd_ref, rtol=1e-3 if loose else 1e-10,
                               err_msg="batchnorm invstd, mean 1e4")
    np.testing.assert_allclose(y, y_ref, atol=2e-3 if loose else 1e-10,
                               err_msg="batchnorm y, mean 1e4")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_badly_conditioned(emu, dtype):
    check_badly_conditioned_batchnorm(emu, dtype)


def test_planted_naive_variance_fails_the_badly_conditioned_case():
    # without the shift each thread sums x and x^2 and takes s2 - s1^2/n: E[x^2] - E[x]^2
    backend = _backend(sources=_planted("batchnorm.cu", "if (count == 0) k = v;", ""))
    with pytest.raises(AssertionError, match="invstd, mean 1e4"):
        check_badly_conditioned_batchnorm(backend, np.float32)


def _fast_divide(n, d):
    """fastdiv.cuh's div_magic in exact integer arithmetic, with the 32-bit wrap checked."""
    magic, shift = (int(v) for v in cuda.magic_divisor(d))
    high = (n * magic) >> 32
    assert (high + n < 2**32).all(), "the 32-bit sum would overflow"
    return (high + n) >> shift


def test_magic_divisor_is_exact():
    rng = np.random.default_rng(6)
    divisors = sorted({*range(1, 300), *(2**k + e for k in range(1, 31) for e in (-1, 0, 1)),
                       *rng.integers(1, 2**31, 200).tolist(), 2**31 - 1})
    for d in divisors:
        n = np.unique(np.concatenate([
            np.arange(0, 70), rng.integers(0, 2**31, 300),
            np.array([q * d + r for q in (1, 2, 1000, (2**31 - 1) // d) for r in (-1, 0, 1)]),
            np.array([2**31 - 2, 2**31 - 1])])).astype(object)
        n = n[(n >= 0) & (n < 2**31)]
        assert (_fast_divide(n, d) == n // d).all(), d
    with pytest.raises(ValueError, match="divisor must be in"):
        cuda.magic_divisor(0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(emu, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 7)).astype(dtype)
    x[0, 0, :3] = [0.0, np.nan, -0.0]
    g = rng.standard_normal(x.shape).astype(dtype)
    _close(emu.relu_forward(x), ref.relu_forward(x), dtype, "relu_forward")
    _close(emu.relu_backward(g, x), ref.relu_backward(g, x), dtype, "relu_backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(emu, dtype):
    """Batch 0: empty outputs, running statistics untouched, zero weight and bias grads."""
    x = np.zeros((0, 3, 4, 4), dtype=dtype)
    w, b = np.ones(3, dtype), np.zeros(3, dtype)
    rm, rv = np.full(3, 0.5, dtype), np.full(3, 2.0, dtype)
    y, mean, invstd = emu.batchnorm_forward(x, w, b, rm, rv, 0.1, 1e-5)
    assert y.shape == x.shape
    np.testing.assert_array_equal(np.concatenate([rm, rv]), [0.5] * 3 + [2.0] * 3)
    grad_x, grad_w, grad_b = emu.batchnorm_backward(y, x, w, mean, invstd)
    assert grad_x.shape == x.shape
    np.testing.assert_array_equal(np.concatenate([grad_w, grad_b]), 0.0)
    cols = emu.im2col(x, 3, 3, 1, 1, 1, 1)
    assert cols.shape == (27, 0)
    assert emu.col2im(cols, x.shape, 3, 3, 1, 1, 1, 1).shape == x.shape
    assert emu.relu_backward(x, x).shape == x.shape
    y, idx = emu.maxpool_forward(x, 2, 2, 2, 2, 0, 0)
    assert emu.maxpool_backward(y, idx, x.shape, 2, 2, 2, 2, 0, 0).shape == x.shape


def test_non_contiguous_inputs(emu):
    x = np.random.default_rng(2).standard_normal((2, 6, 5, 3)).transpose(0, 3, 2, 1)
    _close(emu.im2col(x, 3, 3, 1, 1, 1, 1), ref.im2col(x, 3, 3, 1, 1, 1, 1), np.float64, "im2col")
    _close(emu.relu_forward(x[:, ::2]), ref.relu_forward(x[:, ::2]), np.float64, "relu")


def test_maxpool_nan_wins(emu):
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = x[0, 0, 3, 3] = np.nan    # the last NaN of a window wins
    y, idx = emu.maxpool_forward(x, 2, 2, 2, 2, 0, 0)
    y_ref, idx_ref = ref.maxpool_forward(x, 2, 2, 2, 2, 0, 0)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)


# (x shape, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode): dilated windows (taps further apart
# than the stride, asymmetric), ceil mode's last partial windows, and a window that the
# dilation leaves without an input element
POOL_OPTIONS = [
    ((2, 3, 9, 8), 3, 2, 1, 2, 1, 1, 2, 3, False),
    ((1, 2, 7, 7), 3, 3, 2, 2, 1, 1, 1, 1, True),
    ((2, 2, 8, 9), 2, 3, 3, 2, 1, 1, 2, 2, True),
    ((1, 1, 3, 3), 1, 2, 1, 1, 0, 1, 1, 4, False),      # every window empty: -inf
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_OPTIONS, ids=str)
def test_maxpool_dilation_and_ceil_mode(emu, case, dtype):
    shape, *geometry = case
    rng = np.random.default_rng(3)
    for data in (rng.standard_normal(shape).astype(dtype),
                 rng.integers(-2, 3, size=shape).astype(dtype)):     # ties
        y, idx = emu.maxpool_forward(data, *geometry)
        y_ref, idx_ref = ref.maxpool_forward(data, *geometry)
        np.testing.assert_array_equal(y, y_ref, err_msg=f"maxpool_forward {case}")
        np.testing.assert_array_equal(idx, idx_ref, err_msg=f"maxpool idx {case}")
        go = rng.standard_normal(y.shape).astype(dtype)
        _close(emu.maxpool_backward(go, idx, shape, *geometry),
               ref.maxpool_backward(go, idx_ref, shape, *geometry), dtype,
               f"maxpool_backward {case}")


def test_bad_input_same_message_as_reference(emu):
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="must be 4-D"):
        emu.im2col(x, 3, 3, 1, 1, 1, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        emu.relu_forward(np.zeros(3, np.int32))


def test_kernel_arguments_are_type_checked(emu):
    kernel = emu.kernel("relu_forward", np.float32)
    x, y = np.ones(4, np.float32), np.empty(4, np.float32)
    kernel((1,), (32,), (x, y, np.int64(4)))
    np.testing.assert_array_equal(y, x)
    with pytest.raises(emulate.KernelArgumentError, match="long long n.*np.int64 scalar"):
        kernel((1,), (32,), (x, y, 4))                     # a bare Python int
    with pytest.raises(emulate.KernelArgumentError, match="float32 array, got float64"):
        kernel((1,), (32,), (x.astype(np.float64), y, np.int64(4)))
    with pytest.raises(emulate.KernelArgumentError, match="C-contiguous"):
        kernel((1,), (32,), (np.ones(8, np.float32)[::2], y, np.int64(4)))
    with pytest.raises(emulate.KernelArgumentError, match="takes 3 arguments"):
        kernel((1,), (32,), (x, y))


# ---------------------------------------------------------------- negative controls

def _planted(filename, old, new):
    text = cuda.read_source(filename)
    assert text.count(old) >= 1, f"{filename} no longer contains {old!r}; update the control"
    return {filename: text.replace(old, new, 1)}


def test_planted_im2col_off_by_one_is_caught():
    backend = _backend(sources=_planted(
        "im2col.cu", "int h = oh * sh - ph + i * dh;", "int h = oh * sh - ph + i * dh + 1;"))
    with pytest.raises(AssertionError, match="im2col"):
        check_windows(backend, WINDOWS[1], np.float64)


def test_planted_col2im_row_stride_bug_is_caught():
    # rows of cols are Q = N*OH*OW apart; a stride of (N-1)*OH*OW reads the wrong entries
    backend = _backend(sources=_planted(
        "im2col.cu", "sum += img_cols[r * Q +", "sum += img_cols[r * (Q - image_stride) +"))
    assert WINDOWS[1][0][0] > 1, "the control needs a batch of more than one image"
    with pytest.raises(AssertionError, match="col2im"):
        check_windows(backend, WINDOWS[1], np.float64)


def test_planted_warp_reduction_bug_is_caught():
    backend = _backend(sources=_planted(
        "batchnorm.cu", "for (int offset = 16;", "for (int offset = 8;"))
    with pytest.raises(AssertionError, match="batchnorm_forward"):
        check_batchnorm(backend, BN_SHAPES[0], np.float64)


PROBES = r"""
template <typename T>
__global__ void sync_some(T* out, int active) {
    if ((int)threadIdx.x < active) __syncthreads();    // wrong unless active >= blockDim.x
    out[blockIdx.x * blockDim.x + threadIdx.x] = T(1);
}

template <typename T>
__global__ void warp_allreduce(const T* x, T* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    T v = x[i];
    for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
    out[i] = v;
}

template <typename T>
__global__ void count_threads(T* total) {
    atomicAdd(total, T(1));
}
"""


@pytest.fixture(scope="module")
def probes():
    try:
        return emulate.EmulatedModule(PROBES, "probes.cu", timeout_ms=1000)
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))


def test_partial_syncthreads_fails_with_deadlock_instead_of_hanging(probes):
    kernel = probes.get_function("sync_some<float>")
    out = np.zeros(2 * 64, np.float32)
    kernel((2,), (64,), (out, np.int32(64)))              # every thread syncs: fine
    assert out.sum() == 128
    with pytest.raises(emulate.KernelLaunchError, match=r"deadlock .* waited at"):
        kernel((2,), (64,), (out, np.int32(10)))


def test_only_the_listed_blocks_run(probes):
    kernel = probes.get_function("count_threads<float>")
    total = np.zeros(1, np.float32)
    kernel((3, 2, 2), (64,), (total,), only=[(0, 0, 0), (2, 1, 1)])
    assert total[0] == 2 * 64
    with pytest.raises(emulate.KernelArgumentError, match="outside grid"):
        kernel((3, 2, 2), (64,), (total,), only=[(3, 0, 0)])


def test_warp_shuffle_and_atomic_add(probes):
    x = np.arange(96, dtype=np.float64)
    out = np.empty_like(x)
    probes.get_function("warp_allreduce<double>")((1,), (96,), (x, out))
    np.testing.assert_array_equal(out, np.repeat(x.reshape(3, 32).sum(axis=1), 32))
    total = np.zeros(1, np.float32)
    probes.get_function("count_threads<float>")((3,), (64,), (total,))
    assert total[0] == 3 * 64
