"""One spec for every kernel backend: each fast backend is held to kernels/reference.py.

Shapes, strides, paddings, dtypes and memory layouts are drawn by hypothesis; the values
come from a seeded NumPy generator. The reference itself is checked against the index
formulas, finite differences and PyTorch's conventions, so that agreeing with it means
something. To test another backend, add (name, module) to BACKENDS.
"""
import dataclasses

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinyres.kernels import (blas, checks, conv_bias, conv_plan, cpu, phase_gemm, prefetch,
                             reference, small_gemm, unfold, weight_grad, winograd, winograd4,
                             winograd4_lanes, winograd_lanes)

BACKENDS = [("cpu", cpu)]
PUBLIC = {"im2col", "col2im", "conv2d_forward", "conv2d_backward", "batchnorm_forward", "batchnorm_backward", "relu_forward",
          "relu_backward", "maxpool_forward", "maxpool_backward",
          "batchnorm_relu_forward", "batchnorm_relu_backward", "conv2d_batchnorm_forward",
          "matmul", "channel_affine",
          "add_scaled"}

backends = pytest.mark.parametrize("kernels", [m for _, m in BACKENDS],
                                   ids=[name for name, _ in BACKENDS])
all_modules = pytest.mark.parametrize("kernels", [reference] + [m for _, m in BACKENDS],
                                      ids=["reference"] + [name for name, _ in BACKENDS])
hypothesis_settings = settings(max_examples=30, deadline=None)

DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["contiguous", "reversed axes", "every other element"])
SEEDS = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------- helpers

def laid_out(a, layout):
    """The values of a in a (usually) non-contiguous array of the given layout."""
    if layout == "reversed axes":
        return np.ascontiguousarray(a.T).T
    if layout == "every other element":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    return a


def random(rng, shape, dtype, layout="contiguous"):
    return laid_out(rng.standard_normal(shape).astype(dtype), layout)


def assert_close(actual, expected):
    """Same shape and dtype, values equal to float32 or float64 tolerance."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    tol = 1e-5 if expected.dtype == np.float32 else 1e-12
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@st.composite
def geometries(draw, pool=False):
    """(x_shape, (kh, kw, sh, sw, ph, pw)) of a valid window geometry."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)),
             draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph = draw(st.integers(0, kh // 2 if pool else 2))
    pw = draw(st.integers(0, kw // 2 if pool else 2))
    assume(shape[2] + 2 * ph >= kh and shape[3] + 2 * pw >= kw)
    return shape, (kh, kw, sh, sw, ph, pw)


def out_hw(x_shape, kh, kw, sh, sw, ph, pw):
    return (x_shape[2] + 2 * ph - kh) // sh + 1, (x_shape[3] + 2 * pw - kw) // sw + 1


# ---------------------------------------------------------------- the API

@all_modules
def test_every_backend_has_exactly_the_public_kernels(kernels):
    public = {name for name in dir(kernels) if not name.startswith("_")
              and callable(getattr(kernels, name))
              and getattr(getattr(kernels, name), "__module__", None) == kernels.__name__}
    assert public == PUBLIC


# ---------------------------------------------------------------- im2col / col2im

@all_modules
@hypothesis_settings
@given(geometries(), DTYPES, SEEDS)
def test_im2col_follows_the_index_formula(kernels, geometry, dtype, seed):
    x_shape, (kh, kw, sh, sw, ph, pw) = geometry
    x = random(np.random.default_rng(seed), x_shape, dtype)
    oh, ow = out_hw(x_shape, kh, kw, sh, sw, ph, pw)
    n, c, h, w = x_shape
    expected = np.zeros((c * kh * kw, n * oh * ow), dtype=dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for p in range(oh * ow):
                        hi, wi = p // ow * sh - ph + i, p % ow * sw - pw + j
                        if 0 <= hi < h and 0 <= wi < w:
                            expected[(ch * kh + i) * kw + j, b * oh * ow + p] = x[b, ch, hi, wi]
    np.testing.assert_array_equal(kernels.im2col(x, kh, kw, sh, sw, ph, pw), expected)


@backends
@hypothesis_settings
@given(geometries(), DTYPES, LAYOUTS, SEEDS)
def test_im2col_matches_reference(kernels, geometry, dtype, layout, seed):
    x_shape, window = geometry
    x = random(np.random.default_rng(seed), x_shape, dtype, layout)
    before = x.copy()
    assert_close(kernels.im2col(x, *window), reference.im2col(x, *window))
    np.testing.assert_array_equal(x, before)


@backends
@hypothesis_settings
@given(geometries(), DTYPES, LAYOUTS, SEEDS)
def test_col2im_matches_reference(kernels, geometry, dtype, layout, seed):
    x_shape, (kh, kw, sh, sw, ph, pw) = geometry
    oh, ow = out_hw(x_shape, kh, kw, sh, sw, ph, pw)
    cols_shape = (x_shape[1] * kh * kw, x_shape[0] * oh * ow)
    cols = random(np.random.default_rng(seed), cols_shape, dtype, layout)
    window = (kh, kw, sh, sw, ph, pw)
    assert_close(kernels.col2im(cols, x_shape, *window),
                 reference.col2im(cols, x_shape, *window))


@all_modules
@hypothesis_settings
@given(geometries(), SEEDS)
def test_col2im_is_the_adjoint_of_im2col(kernels, geometry, seed):
    # <im2col(x), c> == <x, col2im(c)> for all x, c: col2im is im2col's transpose
    x_shape, window = geometry
    rng = np.random.default_rng(seed)
    x = random(rng, x_shape, np.float64)
    cols = random(rng, kernels.im2col(x, *window).shape, np.float64)
    lhs = np.sum(kernels.im2col(x, *window) * cols)
    rhs = np.sum(x * kernels.col2im(cols, x_shape, *window))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("x_shape, window", [
    ((70, 2, 8, 8), (3, 3, 1, 1, 1, 1)),        # 64 images a block: two blocks, one short
    ((40, 3, 16, 15), (3, 3, 2, 2, 1, 1)),      # stride 2, an odd width
    ((3, 2, 70, 66), (7, 7, 2, 2, 3, 3)),       # resnet's stem, one image a block
    ((9, 2, 9, 9), (1, 1, 2, 2, 0, 0)),         # a 1x1 projection
])
def test_cpu_unfolds_blocks_of_images_as_planes(x_shape, window):
    # where a phase plane is as large as the output, cpu.py unfolds blocks of images
    # (kernels/unfold.py): im2col exactly the reference's, col2im bit for bit the sum
    # that the plane-by-plane loop adds (the geometries of the hypothesis tests above hold
    # too few entries for a second block)
    kh, kw, sh, sw, ph, pw = window
    n, c, h, w = x_shape
    oh, ow = out_hw(x_shape, *window)
    assert unfold.fits_blocks(h, w, oh, ow, sh, sw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    np.testing.assert_array_equal(cpu.im2col(x, *window), reference.im2col(x, *window))
    cols = rng.standard_normal((c * kh * kw, n * oh * ow)).astype(np.float32)
    by_planes = np.empty(x_shape, dtype=np.float32)
    phases = np.empty(unfold._phase_scratch(by_planes, sh, sw), dtype=np.float32)
    cols3 = cols.reshape(c * kh * kw, n, oh * ow)
    for b in range(n):
        for ch in range(c):
            unfold._col2im_plane(cols3, b, b, ch, kh, kw, sh, sw, ph, pw, 1, 1, phases,
                                 by_planes)
    np.testing.assert_array_equal(cpu.col2im(cols, x_shape, *window), by_planes)


# ---------------------------------------------------------------- convolution

# cpu.py runs the algorithm that kernels/conv_plan.py names for a layer: GEMMs of one
# image (or a few) in Numba's threads, im2col + one GEMM over the batch, Winograd for the
# output and input gradient of 3x3 stride-1 padding-1 layers, and the weight gradient of
# those from shifted rows. Each path is forced here through conv_policy() and held to the
# reference.
PER_IMAGE_USABLE = pytest.mark.skipif(
    conv_plan.scipy_blas() is None,
    reason="SciPy shares NumPy's BLAS here: cpu.py does not run GEMMs inside its threads")
NO_SHORTCUTS = {"winograd_min_pixels_per_channel": None, "shifted_rows_min_width": None,
                "shifted_rows_phases_min_width": None,
                "winograd_weight_grad_min_channels": None, "pointwise_max_stride": None,
                "winograd_weight_grad_lanes_max_width": None, "phase_gemm_max_channels": None}
WINOGRAD = {**NO_SHORTCUTS, "per_image_min_pixels_per_channel": 0,
            "winograd_min_pixels_per_channel": 0, "winograd_min_channels": 0,
            "winograd_loop_gemm_max_channels": None, "winograd_lanes_max_width": None,
            "winograd_4x4_min_width": None}
WINOGRAD_4X4 = {**WINOGRAD, "winograd_4x4_min_width": 0, "winograd_4x4_min_channels": 0}
LANES_EVERYWHERE = {"winograd_lanes_max_width": 10**6}
WINOGRAD_WEIGHT_GRADIENT = {**NO_SHORTCUTS, "winograd_weight_grad_min_channels": 0,
                            "winograd_min_channels": 0}
CPU_CONV_PATHS = pytest.mark.parametrize("path", [
    pytest.param({**NO_SHORTCUTS, "per_image_min_pixels_per_channel": 0},
                 id="per-image", marks=PER_IMAGE_USABLE),
    pytest.param(WINOGRAD, id="winograd", marks=PER_IMAGE_USABLE),     # GEMMs by the BLAS
    pytest.param({**WINOGRAD, "winograd_loop_gemm_max_channels": 16},
                 id="winograd, loop GEMMs", marks=PER_IMAGE_USABLE),
    pytest.param(WINOGRAD_4X4, id="winograd 4x4", marks=PER_IMAGE_USABLE),
    pytest.param({**WINOGRAD_4X4, "winograd_loop_gemm_max_channels": 16},
                 id="winograd 4x4, loop GEMMs", marks=PER_IMAGE_USABLE),
    pytest.param({**WINOGRAD, **LANES_EVERYWHERE}, id="winograd in lanes",
                 marks=PER_IMAGE_USABLE),
    pytest.param({**WINOGRAD, **LANES_EVERYWHERE, "winograd_loop_gemm_max_channels": 16},
                 id="winograd in lanes, loop GEMMs", marks=PER_IMAGE_USABLE),
    pytest.param({**NO_SHORTCUTS, "shifted_rows_min_width": 0,
                  "shifted_rows_phases_min_width": 0}, id="direct weight gradient"),
    pytest.param({**NO_SHORTCUTS, "per_image_min_pixels_per_channel": 0,
                  "phase_gemm_max_channels": 10**6}, id="phase-gemm", marks=PER_IMAGE_USABLE),
    pytest.param(WINOGRAD_WEIGHT_GRADIENT, id="winograd weight gradient",
                 marks=PER_IMAGE_USABLE),
    pytest.param({**WINOGRAD_WEIGHT_GRADIENT, "winograd_weight_grad_chunk_bytes": 1},
                 id="winograd weight gradient, an image a chunk", marks=PER_IMAGE_USABLE),
    pytest.param({**WINOGRAD_WEIGHT_GRADIENT, "winograd_weight_grad_lanes_max_width": 10**6},
                 id="winograd weight gradient in lanes", marks=PER_IMAGE_USABLE),
    pytest.param({**WINOGRAD_WEIGHT_GRADIENT, "winograd_weight_grad_lanes_max_width": 10**6,
                  "winograd_weight_grad_chunk_bytes": 1},
                 id="winograd weight gradient in lanes, one part", marks=PER_IMAGE_USABLE),
    pytest.param({**NO_SHORTCUTS, "per_image_min_pixels_per_channel": None,
                  "per_image_forward_min_pixels_per_channel": None}, id="one-GEMM")])


def conv_by_the_sum(x, w2, kh, kw, sh, sw, ph, pw):
    """out[n, o, y, z] = sum over (c, i, j) of w2[o, (c*kh + i)*kw + j] * x[n, c, ...]."""
    n, c, h, w = x.shape
    oh, ow = out_hw(x.shape, kh, kw, sh, sw, ph, pw)
    weight = w2.reshape(-1, c, kh, kw)
    out = np.zeros((n, w2.shape[0], oh, ow), dtype=np.float64)
    for y in range(oh):
        for z in range(ow):
            for i in range(kh):
                for j in range(kw):
                    hi, wi = y * sh - ph + i, z * sw - pw + j
                    if 0 <= hi < h and 0 <= wi < w:
                        out[:, :, y, z] += x[:, :, hi, wi] @ weight[:, :, i, j].T
    return out


@st.composite
def conv_cases(draw):
    x_shape, window = draw(geometries())
    kh, kw = window[:2]
    oc = draw(st.integers(1, 5))
    return x_shape, (oc, x_shape[1] * kh * kw), window, draw(DTYPES), draw(LAYOUTS), draw(SEEDS)


@all_modules
@hypothesis_settings
@given(geometries(), DTYPES, SEEDS)
def test_conv2d_forward_follows_the_sum(kernels, geometry, dtype, seed):
    x_shape, window = geometry
    rng = np.random.default_rng(seed)
    x = random(rng, x_shape, dtype)
    w2 = random(rng, (3, x_shape[1] * window[0] * window[1]), dtype)
    expected = conv_by_the_sum(x.astype(np.float64), w2.astype(np.float64), *window)
    assert_close(kernels.conv2d_forward(x, w2, *window), expected.astype(dtype))


@CPU_CONV_PATHS
@hypothesis_settings
@given(conv_cases(), st.sampled_from([(True, True), (True, False), (False, True), (False, False)]))
def test_conv2d_matches_reference(path, case, needs):
    with conv_plan.conv_policy(**path):
        check_conv2d_against_reference(case, needs)


@CPU_CONV_PATHS
@pytest.mark.parametrize("stride", [1, 2])
@hypothesis_settings
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 7), st.integers(1, 9),
       st.integers(1, 9), DTYPES, LAYOUTS, SEEDS)
def test_conv2d_3x3_padding_1_matches_reference(path, stride, n, c, oc, h, w, dtype, layout,
                                                seed):
    # the geometry Winograd and weight_grad.py take (stride 1), and the downsampling one
    # whose weight gradient weight_grad.py takes from the phases of x (stride 2): odd and
    # even sizes (tiles past the edge, a phase row or column short), 1x1 images, output
    # channels in weight_grad.py's blocks of 4 and past them
    case = ((n, c, h, w), (oc, c * 9), (3, 3, stride, stride, 1, 1), dtype, layout, seed)
    with conv_plan.conv_policy(**path):
        check_conv2d_against_reference(case, (True, True))


def check_conv2d_against_reference(case, needs):
    x_shape, w2_shape, window, dtype, layout, seed = case
    rng = np.random.default_rng(seed)
    x, w2 = random(rng, x_shape, dtype, layout), random(rng, w2_shape, dtype, layout)
    before = x.copy(), w2.copy()
    assert_close(cpu.conv2d_forward(x, w2, *window), reference.conv2d_forward(x, w2, *window))
    g = random(rng, (x_shape[0], w2_shape[0]) + out_hw(x_shape, *window), dtype, layout)
    got = cpu.conv2d_backward(g, x, w2, *window, *needs)
    expected = reference.conv2d_backward(g, x, w2, *window, *needs)
    for need, a, b in zip(needs, got, expected):
        assert (a is None) == (b is None) == (not need)
        if need:
            assert_close(a, b)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(w2, before[1])


@all_modules
@hypothesis_settings
@given(geometries(), SEEDS)
def test_conv2d_backward_is_the_adjoint_of_the_forward(kernels, geometry, seed):
    # the forward is linear in x and in w2: <conv(x, w2), g> == <x, grad_x> == <w2, grad_w2>
    x_shape, window = geometry
    rng = np.random.default_rng(seed)
    x = random(rng, x_shape, np.float64)
    w2 = random(rng, (2, x_shape[1] * window[0] * window[1]), np.float64)
    g = random(rng, (x_shape[0], 2) + out_hw(x_shape, *window), np.float64)
    lhs = np.sum(kernels.conv2d_forward(x, w2, *window) * g)
    grad_x, grad_w2 = kernels.conv2d_backward(g, x, w2, *window)
    assert np.sum(x * grad_x) == pytest.approx(lhs, rel=1e-12, abs=1e-12)
    assert np.sum(w2 * grad_w2) == pytest.approx(lhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("min_columns", [1, 200, 10**6], ids=["one image", "3+2 and 3+3", "all"])
def test_cpu_conv2d_groups_of_images_give_the_one_gemm_result(min_columns):
    # 11 images of 81 output pixels; on 2 threads, 5 and 6 images a thread, in groups of
    # 1, of ceil(200/81) = 3 (the last group of a thread shorter), or of all of them
    rng = np.random.default_rng(0)
    x, w2 = random(rng, (11, 3, 9, 9), np.float32), random(rng, (4, 27), np.float32)
    g = random(rng, (11, 4, 9, 9), np.float32)
    window = (3, 3, 1, 1, 1, 1)
    with conv_plan.conv_policy(conv_plan.ConvPolicy.only("per-image"),
                               gemm_min_columns=min_columns):
        grouped = cpu.conv2d_forward(x, w2, *window), *cpu.conv2d_backward(g, x, w2, *window)
    with conv_plan.conv_policy(conv_plan.ConvPolicy.only("one-gemm")):
        one_gemm = cpu.conv2d_forward(x, w2, *window), *cpu.conv2d_backward(g, x, w2, *window)
    for a, b in zip(grouped, one_gemm):
        assert_close(a, b)


# ---------------------------------------------------------------- dilation and groups

spread_settings = settings(max_examples=15, deadline=None)    # 15 drawn cases per test

@st.composite
def spread_cases(draw):
    """(x_shape, oc, (kh, kw, sh, sw, ph, pw), (dh, dw), groups): a valid geometry with
    dilation (asymmetric too) and groups (depthwise with a multiplier included)."""
    groups, cg, ocg = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 3)), groups * cg, draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    kh, kw, dh, dw = (draw(st.integers(1, 3)) for _ in range(4))
    sh, sw, ph, pw = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(0, 2)), \
        draw(st.integers(0, 2))
    assume(shape[2] + 2 * ph >= dh * (kh - 1) + 1 and shape[3] + 2 * pw >= dw * (kw - 1) + 1)
    return shape, groups * ocg, (kh, kw, sh, sw, ph, pw), (dh, dw), groups


def spread_out_hw(x_shape, kh, kw, sh, sw, ph, pw, dh, dw):
    return ((x_shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
            (x_shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


def grouped_conv_by_the_sum(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups):
    """out[n, o, y, z] = sum over the channels c of o's group and (i, j) of
    weight[o, c, i, j] * x[n, group*Cg + c, y*sh - ph + i*dh, z*sw - pw + j*dw]."""
    n, c, h, w = x.shape
    oc, cg = w2.shape[0], c // groups
    oh, ow = spread_out_hw(x.shape, kh, kw, sh, sw, ph, pw, dh, dw)
    weight = w2.reshape(oc, cg, kh, kw)
    out = np.zeros((n, oc, oh, ow))
    for o in range(oc):
        first = o // (oc // groups) * cg
        for y in range(oh):
            for z in range(ow):
                for i in range(kh):
                    for j in range(kw):
                        hi, wi = y * sh - ph + i * dh, z * sw - pw + j * dw
                        if 0 <= hi < h and 0 <= wi < w:
                            out[:, o, y, z] += x[:, first:first + cg, hi, wi] @ weight[o, :, i, j]
    return out


@all_modules
@spread_settings
@given(spread_cases(), DTYPES, SEEDS)
def test_dilated_im2col_follows_the_index_formula(kernels, case, dtype, seed):
    x_shape, _, (kh, kw, sh, sw, ph, pw), (dh, dw), _ = case
    x = random(np.random.default_rng(seed), x_shape, dtype)
    oh, ow = spread_out_hw(x_shape, kh, kw, sh, sw, ph, pw, dh, dw)
    n, c, h, w = x_shape
    expected = np.zeros((c * kh * kw, n * oh * ow), dtype=dtype)
    for b, ch, i, j, p in np.ndindex(n, c, kh, kw, oh * ow):
        hi, wi = p // ow * sh - ph + i * dh, p % ow * sw - pw + j * dw
        if 0 <= hi < h and 0 <= wi < w:
            expected[(ch * kh + i) * kw + j, b * oh * ow + p] = x[b, ch, hi, wi]
    np.testing.assert_array_equal(kernels.im2col(x, kh, kw, sh, sw, ph, pw, dh, dw), expected)


@all_modules
@spread_settings
@given(spread_cases(), SEEDS)
def test_dilated_col2im_is_the_adjoint_of_im2col(kernels, case, seed):
    x_shape, _, window, dilation, _ = case
    rng = np.random.default_rng(seed)
    x = random(rng, x_shape, np.float64)
    cols = random(rng, kernels.im2col(x, *window, *dilation).shape, np.float64)
    lhs = np.sum(kernels.im2col(x, *window, *dilation) * cols)
    rhs = np.sum(x * kernels.col2im(cols, x_shape, *window, *dilation))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@all_modules
@spread_settings
@given(spread_cases(), DTYPES, SEEDS)
def test_grouped_dilated_conv2d_forward_follows_the_sum(kernels, case, dtype, seed):
    x_shape, oc, window, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = random(rng, x_shape, dtype)
    w2 = random(rng, (oc, x_shape[1] // groups * window[0] * window[1]), dtype)
    expected = grouped_conv_by_the_sum(x.astype(np.float64), w2.astype(np.float64), *window,
                                       *dilation, groups)
    assert_close(kernels.conv2d_forward(x, w2, *window, *dilation, groups),
                 expected.astype(dtype))


@all_modules
@spread_settings
@given(spread_cases(), SEEDS)
def test_grouped_dilated_conv2d_backward_is_the_adjoint(kernels, case, seed):
    x_shape, oc, window, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = random(rng, x_shape, np.float64)
    w2 = random(rng, (oc, x_shape[1] // groups * window[0] * window[1]), np.float64)
    g = random(rng, (x_shape[0], oc) + spread_out_hw(x_shape, *window, *dilation), np.float64)
    lhs = np.sum(kernels.conv2d_forward(x, w2, *window, *dilation, groups) * g)
    grad_x, grad_w2 = kernels.conv2d_backward(g, x, w2, *window, True, True, *dilation, groups)
    assert np.sum(x * grad_x) == pytest.approx(lhs, rel=1e-12, abs=1e-12)
    assert np.sum(w2 * grad_w2) == pytest.approx(lhs, rel=1e-12, abs=1e-12)


@CPU_CONV_PATHS
@spread_settings
@given(spread_cases(), st.sampled_from([(True, True), (True, False), (False, True)]),
       DTYPES, LAYOUTS, SEEDS)
def test_grouped_dilated_conv2d_matches_reference(path, case, needs, dtype, layout, seed):
    x_shape, oc, window, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = random(rng, x_shape, dtype, layout)
    w2 = random(rng, (oc, x_shape[1] // groups * window[0] * window[1]), dtype, layout)
    g = random(rng, (x_shape[0], oc) + spread_out_hw(x_shape, *window, *dilation), dtype, layout)
    spread = (*dilation, groups)
    with conv_plan.conv_policy(**path):
        assert_close(cpu.conv2d_forward(x, w2, *window, *spread),
                     reference.conv2d_forward(x, w2, *window, *spread))
        got = cpu.conv2d_backward(g, x, w2, *window, *needs, *spread)
    expected = reference.conv2d_backward(g, x, w2, *window, *needs, *spread)
    for need, a, b in zip(needs, got, expected):
        assert (a is None) == (not need) and (b is None) == (not need)
        if need:
            assert_close(a, b)


@pytest.mark.parametrize("dilation, groups, expected", [
    ((1, 1), 1, "winograd"), ((2, 2), 1, "per-image"), ((1, 2), 1, "per-image"),
    ((1, 1), 2, "one-gemm"), ((1, 1), 16, "one-gemm")])
def test_conv_plan_keeps_winograd_and_shifted_rows_to_dense_layers(dilation, groups,
                                                                  expected):
    # a 3x3 stride-1 padding-1 layer that Winograd takes when dense and ungrouped
    policy = conv_plan.ConvPolicy(winograd_min_pixels_per_channel=0, winograd_min_channels=0,
                                  shifted_rows_min_width=0, per_image_min_pixels_per_channel=0)
    plan = conv_plan.conv_algorithm((4, 16, 32, 32), (16, 16 // groups, 3, 3), 1, 1,
                                    dilation, groups, policy=policy)
    if conv_plan.scipy_blas() is None:
        expected = "one-gemm"
    assert plan.forward == plan.grad_input == expected
    dense = (dilation, groups) == ((1, 1), 1)
    assert (plan.grad_weight == "shifted-rows") == dense
    assert (plan.forward == "winograd") == (expected == "winograd")


def test_cpu_depthwise_layer_takes_milliseconds():
    # 3x3 depthwise, 32 channels of 32x32, batch 8: forward and both gradients; measured
    # at tens of milliseconds, the bound leaves room for a loaded machine
    import time
    rng = np.random.default_rng(0)
    x, w2 = random(rng, (8, 32, 32, 32), np.float32), random(rng, (32, 9), np.float32)
    window = (3, 3, 1, 1, 1, 1, 1, 1, 32)
    out = cpu.conv2d_forward(x, w2, *window)                 # warm-up (loading the cache)
    cpu.conv2d_backward(out, x, w2, 3, 3, 1, 1, 1, 1, True, True, 1, 1, 32)
    start = time.perf_counter()
    out = cpu.conv2d_forward(x, w2, *window)
    cpu.conv2d_backward(out, x, w2, 3, 3, 1, 1, 1, 1, True, True, 1, 1, 32)
    assert time.perf_counter() - start < 1.5


@hypothesis_settings
@given(st.integers(1, 9), st.integers(1, 21), st.integers(1, 40), DTYPES, SEEDS)
def test_small_gemm_is_the_matrix_product(m, k, n, dtype, seed):
    # k past and short of the loop's blocks of 8 rows; every output entry is overwritten
    rng = np.random.default_rng(seed)
    a, b = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    small_gemm.matmul_into(a, b, out)
    assert_close(out, (a.astype(np.float64) @ b.astype(np.float64)).astype(dtype))


class _Blas:
    def __init__(self, architecture):
        self.architecture = architecture


@pytest.mark.parametrize("kernel, expected", [
    ("SkylakeX", None), ("Cooperlake", None), ("SapphireRapids", None),
    ("Haswell", 32), ("Zen", 32), ("Sandybridge", 32), ("Nehalem", 32)])
def test_the_loop_gemms_default_follows_the_blas_kernel(monkeypatch, kernel, expected):
    # OpenBLAS's AVX-512 kernels beat the loop at every width measured, its AVX2 ones lose
    # to it on 16 channels (benchmarks/README.md)
    # and phase-gemm's GEMMs of 16 and 32 inner entries are ahead of im2col on its
    # AVX-512 kernels only: on where the loop is off
    monkeypatch.setattr(conv_plan, "scipy_blas", lambda: _Blas(kernel))
    conv_plan.default_loop_gemm_max_channels.cache_clear()
    conv_plan.default_phase_gemm_max_channels.cache_clear()
    try:
        assert conv_plan.default_loop_gemm_max_channels() == expected
        assert conv_plan.ConvPolicy().winograd_loop_gemm_max_channels == expected
        plan = conv_plan.conv_algorithm((128, 16, 32, 32), (16, 16, 3, 3), 1, 1)
        assert any(("as a Numba loop" if expected else "by the BLAS") in r
                   for r in plan.reasons)
        phases = None if expected else conv_plan.PHASE_GEMM_MAX_CHANNELS
        assert conv_plan.ConvPolicy().phase_gemm_max_channels == phases
        plan = conv_plan.conv_algorithm((128, 32, 16, 16), (64, 32, 3, 3), 2, 1)
        assert (plan.forward == "phase-gemm") == (phases is not None)
    finally:
        conv_plan.default_loop_gemm_max_channels.cache_clear()
        conv_plan.default_phase_gemm_max_channels.cache_clear()


def test_winograd_runs_its_gemms_as_a_loop_up_to_the_policys_channels():
    # by default up to 32 channels (resnet20's first two stages), or off where SciPy's
    # BLAS runs an AVX-512 kernel; off with None
    default = conv_plan.default_loop_gemm_max_channels()
    assert conv_plan.current_policy().winograd_loop_gemm_max_channels == default
    with conv_plan.conv_policy(winograd_loop_gemm_max_channels=32):
        assert conv_plan.winograd_loop_gemm(32, 32) and not conv_plan.winograd_loop_gemm(64, 64)
    with conv_plan.conv_policy(winograd_loop_gemm_max_channels=None):
        assert not conv_plan.winograd_loop_gemm(4, 4)
        plan = conv_plan.conv_algorithm((128, 16, 32, 32), (16, 16, 3, 3), 1, 1)
        assert any("by the BLAS (the loop is off)" in r for r in plan.reasons)
    with conv_plan.conv_policy(winograd_loop_gemm_max_channels=16):
        assert conv_plan.winograd_loop_gemm(16, 16) and conv_plan.winograd_loop_gemm(8, 16)
        assert not conv_plan.winograd_loop_gemm(16, 32)
        assert not conv_plan.winograd_loop_gemm(32, 8)
        plan = conv_plan.conv_algorithm((128, 16, 32, 32), (16, 16, 3, 3), 1, 1)
        assert any("as a Numba loop (a loop up to 16 channels)" in r for r in plan.reasons)
        plan = conv_plan.conv_algorithm((128, 32, 16, 16), (32, 32, 3, 3), 1, 1)
        assert any("by the BLAS" in r for r in plan.reasons)


# channel counts below, at and past a vector's width: the transforms run over all of a
# row's channels in one loop, its vector body and its remainder
TRANSFORM_SHAPES = pytest.mark.parametrize("oc, c", [(3, 5), (40, 37), (16, 64)])


@TRANSFORM_SHAPES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_weight_transform_is_g_w_gt(dtype, oc, c):
    rng = np.random.default_rng(0)
    w4 = random(rng, (oc, c, 3, 3), dtype)
    expected = np.einsum("ai,ocij,bj->aboc", winograd.G, w4.astype(np.float64), winograd.G)
    got = winograd.weight_transform(w4)
    assert_close(got, expected.reshape(16, oc, c).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("oc, c", [(3, 5), (1, 1), (40, 7)])
def test_winograd_flipped_weight_transform_is_the_transform_of_the_flipped_weight(dtype,
                                                                                  oc, c):
    # the input gradient's weights, read from w4 in place: bit for bit the transform of
    # the rotated, channel-swapped copy, a non-contiguous weight too
    rng = np.random.default_rng(oc * c)
    w4 = random(rng, (oc, c, 3, 3), dtype)
    expected = winograd.weight_transform(winograd.flipped(w4))
    assert expected.shape == (16, c, oc)
    np.testing.assert_array_equal(winograd.flipped_weight_transform(w4), expected)
    strided = random(rng, (oc, 2 * c, 3, 3), dtype)[:, ::2]
    np.testing.assert_array_equal(winograd.flipped_weight_transform(strided),
                                  winograd.weight_transform(winograd.flipped(strided)))


@PER_IMAGE_USABLE
@pytest.mark.parametrize("n, c, h, w, oc, group", [(3, 2, 5, 7, 4, 2), (4, 16, 16, 16, 8, 1),
                                                   (5, 4, 6, 3, 3, 3), (2, 3, 1, 1, 2, 1),
                                                   (7, 32, 8, 8, 16, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phase_gemm_matches_the_reference(n, c, h, w, oc, group, dtype):
    # 3x3 stride 2 padding 1: odd and even planes, a 1x1 plane, groups of images that do
    # not divide the batch, float32 (sgemm) and float64 (dgemm); the output with each
    # epilogue, the input gradient
    rng = np.random.default_rng(n * 100 + c)
    x, w2 = random(rng, (n, c, h, w), dtype), random(rng, (oc, c * 9), dtype)
    window = (3, 3, 2, 2, 1, 1)
    expected = reference.conv2d_forward(x, w2, *window)
    bias, scale = random(rng, (oc,), dtype), random(rng, (oc,), dtype)
    with cpu._one_blas_thread():
        assert_close(phase_gemm.forward(x, w2, group, conv_bias.epilogue(dtype)), expected)
        assert_close(phase_gemm.forward(x, w2, group, conv_bias.epilogue(dtype, bias, scale,
                                                                          True)),
                     np.maximum(expected * scale[:, None, None] + bias[:, None, None], 0))
        g = random(rng, expected.shape, dtype)
        dx, _ = reference.conv2d_backward(g, x, w2, *window)
        assert_close(phase_gemm.grad_input(g, w2, x.shape, group), dx)


@PER_IMAGE_USABLE
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False),
                                                      (False, True), (True, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_gemm_transposes_offsets_and_beta(transpose_a, transpose_b, dtype):
    # C = op(A) @ op(B) + beta*C for each transpose, B read from an offset with rows ldb
    # apart (a view, as phase_gemm's shifts), C written from an offset with rows ldc apart,
    # beta 0 (C only written: NaN there does not leak) and 1 (added onto what C held)
    rng = np.random.default_rng(7)
    m, n, k = 5, 3, 4
    a = random(rng, (k, m) if transpose_a else (m, k), dtype)
    b_rows, b_cols = (n, k) if transpose_b else (k, n)
    b_flat = random(rng, (3 + b_rows * (b_cols + 2),), dtype)          # rows b_cols + 2 apart
    b = np.lib.stride_tricks.as_strided(b_flat[3:], (b_rows, b_cols),
                                        ((b_cols + 2) * b_flat.itemsize, b_flat.itemsize))
    product = (a.T if transpose_a else a) @ (b.T if transpose_b else b)
    fn = blas.function(np.dtype(dtype).str)
    for beta in (0, 1):
        c_flat = np.full(2 + m * (n + 1), np.nan if beta == 0 else 0.5, dtype=dtype)
        held = c_flat.copy()
        with cpu._one_blas_thread():
            blas.gemm(fn, transpose_a, transpose_b, m, n, k, np.ascontiguousarray(a),
                      a.shape[1], b_flat, 3, b_cols + 2, beta, c_flat, 2, n + 1)
        c = c_flat[2:].reshape(m, n + 1)
        assert_close(c[:, :n], product + (0.5 if beta else 0))
        np.testing.assert_array_equal(c[:, n], held[2:].reshape(m, n + 1)[:, n])  # untouched
        np.testing.assert_array_equal(c_flat[:2], held[:2])


def test_conv_plan_takes_phase_gemm_for_few_channel_downsampling_layers():
    # dense 3x3 stride-2 padding-1 layers of at most phase_gemm_max_channels input
    # channels, output and input gradient; the weight gradient then from shifted rows of
    # the phases from shifted_rows_phases_min_width wide (8 here), by GEMMs without
    # phase-gemm (16 wide is needed then); None: off
    policy = conv_plan.ConvPolicy(phase_gemm_max_channels=32)
    def plan(c, stride=2, padding=1, dilation=1, groups=1, k=3, policy=policy):
        return conv_plan.conv_algorithm((128, c, 16, 16), (64, c // groups, k, k), stride,
                                        padding, dilation, groups, policy=policy)
    if conv_plan.scipy_blas() is None:
        assert plan(32).forward == "one-gemm"
        return
    assert (plan(32).forward, plan(32).grad_input) == ("phase-gemm", "phase-gemm")
    assert plan(32).grad_weight == "shifted-rows"
    without = dataclasses.replace(policy, phase_gemm_max_channels=None)
    assert plan(32, policy=without).grad_weight not in ("phase-gemm", "shifted-rows")
    assert plan(16).forward == "phase-gemm"
    for other in (plan(33), plan(32, stride=1), plan(32, padding=0), plan(32, dilation=2),
                  plan(32, groups=2), plan(32, k=5),
                  plan(32, policy=dataclasses.replace(policy, phase_gemm_max_channels=None))):
        assert "phase-gemm" not in (other.forward, other.grad_input, other.grad_weight)


@pytest.mark.parametrize("n, threads, images, pixels, group", [
    (128, 2, 4, 256, 4), (128, 2, 4, 64, 4), (8, 2, 4, 256, 4), (6, 2, 4, 256, 3),
    (4, 2, 4, 256, 2), (1, 2, 4, 256, 1), (128, 1, 4, 256, 4), (128, 2, 2, 64, 2),
    (128, 2, None, 256, 1), (128, 2, None, 64, 4), (128, 2, None, 16, 16)])
def test_a_phase_gemm_task_takes_the_policys_images(monkeypatch, n, threads, images, pixels,
                                                    group):
    # phase_gemm_images a task, fewer where the batch gives a thread fewer, evened out
    # among the threads; None: as many as gemm_min_columns (256) asks
    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
    with conv_plan.conv_policy(phase_gemm_images=images, gemm_min_columns=256):
        assert cpu._phase_group(n, pixels) == group


@pytest.mark.parametrize("oc", [1, 4, 7, 9, 17])
@pytest.mark.parametrize("c", [1, 2, 3, 4])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shifted_rows_weight_gradient_matches_the_reference(oc, c, stride, dtype):
    # input channels in pairs, four output channels a pass, then one at a time, and an odd
    # count's last input channel alone, eight output channels a pass: counts below, at and
    # past four and eight (hypothesis's layers have at most five), odd planes, tasks that
    # split the batch
    rng = np.random.default_rng(oc * 100 + c * 10 + stride)
    n, h, w = 5, 7, 6
    x = random(rng, (n, c, h, w), dtype)
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    g = random(rng, (n, oc, oh, ow), dtype)
    w2 = random(rng, (oc, c * 9), dtype)
    _, expected = reference.conv2d_backward(g, x, w2, 3, 3, stride, stride, 1, 1)
    for tasks in (1, 2, 5):
        assert_close(weight_grad.weight_grad(g, x, tasks, stride).reshape(oc, -1), expected)


@pytest.mark.parametrize("oc, c", [(3, 5), (1, 1), (40, 7), (9, 40)])
def test_winograd_weight_transform_adjoint_is_its_gradient(oc, c):
    # <G w G^T, dU> = <w, G^T dU G> for every w and dU: the weight gradient's last step is
    # the exact adjoint of the transform the forward runs (float64, to rounding)
    rng = np.random.default_rng(oc)
    w4, du = rng.standard_normal((oc, c, 3, 3)), rng.standard_normal((16, oc, c))
    lhs = np.sum(winograd.weight_transform(w4) * du)
    rhs = np.sum(w4 * winograd.weight_transform_adjoint(du))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    expected = np.einsum("ai,aboc,bj->ocij", winograd.G, du.reshape(4, 4, oc, c), winograd.G)
    assert_close(winograd.weight_transform_adjoint(du.astype(np.float32)),
                 expected.astype(np.float32))


@pytest.mark.parametrize("parts", [1, 2, 5])
def test_winograd_weight_transform_adjoint_of_parts_is_that_of_their_sum(parts):
    # parts (P, 16, OC, C) are added as they are read (in float64, in order): the adjoint of
    # their sum; one part gives the 3-d call's result bit for bit
    rng = np.random.default_rng(parts)
    du = rng.standard_normal((parts, 16, 6, 5)).astype(np.float32)
    total = du.astype(np.float64).sum(axis=0)
    got = winograd.weight_transform_adjoint(du)
    assert got.dtype == np.float32 and got.shape == (6, 5, 3, 3)
    np.testing.assert_allclose(got, winograd.weight_transform_adjoint(total),
                               rtol=1e-6, atol=1e-6)
    if parts == 1:
        np.testing.assert_array_equal(got, winograd.weight_transform_adjoint(du[0]))


# ---- F(4x4, 3x3) (winograd4.py)

@TRANSFORM_SHAPES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd4_weight_transform_is_g_w_gt(dtype, oc, c):
    rng = np.random.default_rng(0)
    w4 = random(rng, (oc, c, 3, 3), dtype)
    expected = np.einsum("ai,ocij,bj->aboc", winograd4.G, w4.astype(np.float64), winograd4.G)
    assert_close(winograd4.weight_transform(w4), expected.reshape(36, oc, c).astype(dtype))
    flipped = winograd.flipped(w4)                  # the input gradient's, read in place
    np.testing.assert_array_equal(winograd4.flipped_weight_transform(w4),
                                  winograd4.weight_transform(flipped))
    strided = random(rng, (oc, 2 * c, 3, 3), dtype)[:, ::2]
    np.testing.assert_array_equal(winograd4.flipped_weight_transform(strided),
                                  winograd4.weight_transform(winograd.flipped(strided)))


@pytest.mark.parametrize("scheme", [winograd, winograd4], ids=["F(2x2)", "F(4x4)"])
@pytest.mark.parametrize("n, group", [(1, 1), (5, 2), (4, 4), (7, 3)])
@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (4, 4), (5, 7), (8, 8), (9, 13), (12, 6)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loop_gemm", [False, True], ids=["blas", "loop"])
def test_winograd_image_by_image_matches_the_reference(scheme, n, group, h, w, dtype,
                                                       loop_gemm):
    # F(2x2, 3x3) and F(4x4, 3x3) image by image, `group` images a task (the policy's
    # winograd_task_bytes sets it; a last task of fewer images), sizes the tile divides and
    # those it does not (the tiles past the edge are dropped), a 1x1 plane, a bias and ReLU;
    # the input gradient too (the same core on grad_out and the flipped weight), and for
    # F(2x2) the weight gradient in tasks of `group` images, in 1 to 3 parts and one a task
    rng = np.random.default_rng(n * 100 + h * 10 + w)
    c, oc = 3, 4
    x, w4 = random(rng, (n, c, h, w), dtype), random(rng, (oc, c, 3, 3), dtype)
    bias = random(rng, (oc,), dtype)
    out = np.full((n, oc, h, w), np.nan, dtype=dtype)
    scheme.forward_core(x, scheme.weight_transform(w4), group, out,
                        conv_bias.epilogue(dtype, bias, relu=True), loop_gemm)
    expected = reference.conv2d_forward(x, w4.reshape(oc, -1), 3, 3, 1, 1, 1, 1)
    assert_close(out, np.maximum(expected + bias[None, :, None, None], 0))
    g = random(rng, (n, oc, h, w), dtype)
    dx = np.full(x.shape, np.nan, dtype=dtype)
    scheme.forward_core(g, scheme.flipped_weight_transform(w4), group, dx,
                        conv_bias.epilogue(dtype), loop_gemm)
    expected_dx, grad_w2 = reference.conv2d_backward(g, x, w4.reshape(oc, -1), 3, 3, 1, 1, 1, 1)
    assert_close(dx, expected_dx)
    if scheme is winograd and not loop_gemm:       # the weight gradient has no loop GEMMs
        for parts in (1, 2, 3, 100):
            assert_close(winograd.weight_grad(g, x, group, parts), grad_w2.reshape(w4.shape))


@PER_IMAGE_USABLE
@pytest.mark.parametrize("task_bytes", [1, 10**9], ids=["an image a task", "all at once"])
def test_the_cpu_layer_gives_the_same_winograd_result_whatever_its_task_size(task_bytes):
    # the plan's Winograd layers through conv2d_forward and conv2d_backward, tasks of one
    # image and of as many as a thread takes: against the reference
    rng = np.random.default_rng(3)
    for c, hw, four in [(16, 16, None), (8, 28, 28)]:
        x, w2 = random(rng, (6, c, hw, hw), np.float64), random(rng, (c, c * 9), np.float64)
        g = random(rng, (6, c, hw, hw), np.float64)
        policy = dict(winograd_task_bytes=task_bytes, winograd_4x4_min_width=four,
                      winograd_4x4_min_channels=8)
        with conv_plan.conv_policy(**policy):
            assert cpu._plan(x, w2, 3, 3, 1, 1, 1, 1, 1, 1, 1).forward.startswith("winograd")
            out = cpu.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1)
            dx, _ = cpu.conv2d_backward(g, x, w2, 3, 3, 1, 1, 1, 1, need_w=False)
        assert_close(out, reference.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1))
        assert_close(dx, reference.conv2d_backward(g, x, w2, 3, 3, 1, 1, 1, 1)[0])


def test_winograd4_float32_error_on_a_wide_layer():
    # the price of the bigger tiles, measured where the plan takes them (128 channels,
    # 28x28): float32 results within 4e-5 of the largest output (1.2e-5 measured), where
    # F(2x2, 3x3)'s stay within 2e-6 (5e-7 measured); float64 to rounding
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 128, 28, 28))
    w4 = rng.standard_normal((128, 128, 3, 3)) / np.sqrt(9 * 128)
    exact = reference.conv2d_forward(x, w4.reshape(128, -1), 3, 3, 1, 1, 1, 1)
    scale = np.abs(exact).max()
    for scheme, bound in [(winograd4, 4e-5), (winograd, 2e-6)]:
        x32, w32 = x.astype(np.float32), w4.astype(np.float32)
        out = np.empty((1, 128, 28, 28), np.float32)
        scheme.forward_core(x32, scheme.weight_transform(w32), 1, out,
                            conv_bias.epilogue(np.float32), False)
        assert np.abs(out - exact).max() < bound * scale
        out64 = np.empty((1, 128, 28, 28))
        scheme.forward_core(x, scheme.weight_transform(w4), 1, out64,
                            conv_bias.epilogue(np.float64), False)
        assert np.abs(out64 - exact).max() < 1e-12 * scale


def test_conv_plan_takes_winograd4_from_its_width_and_channels():
    policy = conv_plan.ConvPolicy(winograd_4x4_min_width=28, winograd_4x4_min_channels=64)
    if conv_plan.scipy_blas() is None:
        pytest.skip("SciPy shares NumPy's BLAS here: no Winograd at all")
    def layout(c, oc, width, policy=policy):
        plan = conv_plan.conv_algorithm((16, c, width, width), (oc, c, 3, 3), 1, 1,
                                        policy=policy)
        assert plan.forward == plan.grad_input
        return plan.forward
    assert layout(64, 64, 56) == layout(128, 128, 28) == layout(64, 128, 28) == "winograd-4x4"
    assert layout(64, 64, 27) == layout(63, 64, 56) == layout(16, 16, 32) == "winograd"
    assert layout(32, 32, 17) == "winograd"
    assert layout(256, 256, 14) == layout(64, 64, 8) == layout(512, 512, 7) == "winograd-lanes"
    assert layout(32, 32, 16) == layout(16, 8, 16) == "winograd-4x4-lanes"
    assert layout(32, 32, 16, dataclasses.replace(policy, winograd_4x4_lanes_min_width=None)) \
        == "winograd-lanes"
    assert layout(64, 64, 12, dataclasses.replace(policy, winograd_4x4_lanes_min_width=12)) \
        == "winograd-4x4-lanes"
    assert layout(64, 64, 56, dataclasses.replace(policy, winograd_4x4_min_width=None)) \
        == "winograd"
    plan = conv_plan.conv_algorithm((16, 64, 56, 56), (64, 64, 3, 3), 2, 1, policy=policy)
    assert "winograd" not in plan.forward + plan.grad_input       # stride 2: none


# ---- Winograd in lanes (winograd_lanes.py): a task's images side by side

@pytest.mark.parametrize("n", [1, 7, 9, 17])
@pytest.mark.parametrize("lanes", [1, 3, 8])
@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (5, 7), (8, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_lanes_match_the_reference(n, lanes, h, w, dtype):
    # batches that `lanes` does not divide (a last task of fewer images, whose idle lanes
    # must add nothing), one task and several, odd and even sizes, a 1x1 plane
    rng = np.random.default_rng(n * 100 + lanes * 10 + h)
    c, oc = 3, 4
    x, g = random(rng, (n, c, h, w), dtype), random(rng, (n, oc, h, w), dtype)
    w4, bias = random(rng, (oc, c, 3, 3), dtype), random(rng, (oc,), dtype)
    window = (3, 3, 1, 1, 1, 1)
    expected = reference.conv2d_forward(x, w4.reshape(oc, -1), *window)
    for parts in (1, 2, 3, 100):                    # more parts than tasks: one a task
        out = np.full((n, oc, h, w), np.nan, dtype=dtype)
        winograd_lanes.forward(x, winograd.weight_transform(w4), lanes, out,
                               conv_bias.epilogue(dtype, bias), False, parts)
        assert_close(out, expected + bias[None, :, None, None])
    _, grad_w2 = reference.conv2d_backward(g, x, w4.reshape(oc, -1), *window)
    for parts in (1, 2, 3, 100):                    # more parts than tasks: one a task
        assert_close(winograd_lanes.weight_grad(g, x, lanes, parts),
                     grad_w2.reshape(oc, c, 3, 3))


@pytest.mark.parametrize("n", [1, 7, 9, 17])
@pytest.mark.parametrize("lanes", [1, 3, 8])
@pytest.mark.parametrize("h, w", [(1, 1), (3, 6), (5, 7), (8, 8), (16, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd4_lanes_match_the_reference(n, lanes, h, w, dtype):
    # F(4x4, 3x3) in lanes: batches that `lanes` does not divide (idle lanes add nothing),
    # outputs that 4 does not divide (their last tiles run past the edge), a 1x1 plane
    rng = np.random.default_rng(n * 100 + lanes * 10 + h)
    c, oc = 3, 4
    x = random(rng, (n, c, h, w), dtype)
    w4, bias = random(rng, (oc, c, 3, 3), dtype), random(rng, (oc,), dtype)
    expected = reference.conv2d_forward(x, w4.reshape(oc, -1), 3, 3, 1, 1, 1, 1)
    for parts in (1, 2, 3, 100):                    # more parts than tasks: one a task
        out = np.full((n, oc, h, w), np.nan, dtype=dtype)
        winograd4_lanes.forward(x, winograd4.weight_transform(w4), lanes, out,
                                conv_bias.epilogue(dtype, bias), False, parts)
        assert_close(out, expected + bias[None, :, None, None])


@pytest.mark.parametrize("n, threads, layout", [
    (128, 2, "winograd-4x4-lanes"), (16, 2, "winograd-4x4-lanes"), (12, 2, "winograd-lanes"),
    (8, 2, "winograd-lanes"), (8, 1, "winograd-4x4-lanes"), (7, 1, "winograd-lanes"),
    (1, 1, "winograd-lanes")])
def test_winograd4_in_lanes_runs_only_where_a_task_holds_eight_images(monkeypatch, n, threads,
                                                                      layout):
    # a batch that gives a thread tasks of fewer images runs F(2x2, 3x3)'s lanes; other
    # layouts are the plan's, whatever the batch
    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
    assert cpu._winograd_layout("winograd-4x4-lanes", n) == layout
    for other in ("winograd-lanes", "winograd", "winograd-4x4"):
        assert cpu._winograd_layout(other, n) == other


@pytest.mark.parametrize("n, threads, lanes", [
    (0, 1, 1), (1, 1, 1), (5, 1, 5), (8, 1, 8), (9, 1, 8), (128, 1, 8),
    (0, 2, 1), (1, 2, 1), (4, 2, 2), (8, 2, 4), (12, 2, 6), (16, 2, 8), (20, 2, 5),
    (128, 2, 8), (100, 2, 8), (8, 3, 3), (128, 3, 8), (7, 16, 1)])
def test_winograd_lanes_a_task_share_the_batch_evenly_among_the_threads(n, threads, lanes):
    # at most LANES images a task, never more than the batch (no GEMM columns of idle
    # lanes), as many tasks for every thread where the batch allows
    assert winograd_lanes.lanes_for(n, threads) == lanes
    tasks = -(-n // lanes)
    assert lanes <= max(1, min(winograd_lanes.LANES, n))
    assert n == 0 or tasks % threads == 0 or tasks < threads or lanes == winograd_lanes.LANES


@pytest.mark.parametrize("lanes_layout, by_image_layout, n, h, w", [
    (winograd_lanes, winograd, 9, 8, 8), (winograd_lanes, winograd, 4, 7, 5),
    (winograd_lanes, winograd, 16, 3, 3), (winograd4_lanes, winograd4, 9, 16, 16),
    (winograd4_lanes, winograd4, 4, 7, 5), (winograd4_lanes, winograd4, 16, 12, 13)])
def test_winograd_lanes_give_the_image_by_image_output_bit_for_bit(lanes_layout,
                                                                   by_image_layout, n, h, w):
    # F(2x2, 3x3) and F(4x4, 3x3): the same transforms in the same order, only laid out
    # otherwise: with the GEMMs as small_gemm.py's loop (a sum per output column, whatever
    # the columns around it), the two layouts give the same float32 output, bit for bit
    rng = np.random.default_rng(n)
    x, w4 = random(rng, (n, 16, h, w), np.float32), random(rng, (8, 16, 3, 3), np.float32)
    u, no_bias = by_image_layout.weight_transform(w4), conv_bias.epilogue(np.float32)
    by_lanes, by_image = np.empty((n, 8, h, w), np.float32), np.empty((n, 8, h, w), np.float32)
    lanes_layout.forward(x, u, winograd_lanes.LANES, by_lanes, no_bias, True, 2)
    by_image_layout.forward_core(x, u, 1, by_image, no_bias, True)
    np.testing.assert_array_equal(by_lanes, by_image)


@pytest.mark.parametrize("oh, ow", [(1, 1), (2, 3), (7, 7), (6, 9)])
def test_winograd_lanes_output_gradient_tiles_are_the_adjoint_of_the_output_transform(oh, ow):
    # <A^T M A, dY> = <M, A dY A^T> over every tile and lane; lanes past the batch and
    # pixels past an odd edge are dropped by the output, so their gradient is zero
    rng = np.random.default_rng(oh * 10 + ow)
    n, lanes, oc = 5, 4, 3
    t = winograd_lanes.tiles(oh, ow) * lanes
    mm, dy = rng.standard_normal((16, oc, t)), rng.standard_normal((n, oc, oh, ow))
    y, out = np.empty((oc, 2, 2, t)), np.zeros((n, oc, oh, ow))
    winograd_lanes._output_tiles(mm, y)
    winograd_lanes._lanes_out(y, (ow + 1) // 2, lanes, 1, 4, out)      # images 1..4
    tiles_dy, gm = np.zeros((oc, 2, 2, t)), np.empty((16, oc, t))
    winograd_lanes._grad_lanes_in(dy, 1, 4, (ow + 1) // 2, lanes, tiles_dy)
    winograd_lanes._output_tiles_adjoint(tiles_dy, gm)
    assert np.sum(out[1:] * dy[1:]) == pytest.approx(np.sum(mm * gm), rel=1e-12)


def test_conv_plan_takes_winograd_in_lanes_up_to_its_widths():
    policy = conv_plan.ConvPolicy(winograd_lanes_max_width=8,
                                  winograd_weight_grad_lanes_max_width=28,
                                  winograd_weight_grad_min_channels=64,
                                  winograd_4x4_min_width=None)
    threads = conv_plan.scipy_blas() is not None
    for width, forward, grad_weight in [(8, "winograd-lanes", "winograd-lanes"),
                                        (9, "winograd", "winograd-lanes"),
                                        (28, "winograd", "winograd-lanes"),
                                        (29, "winograd", "winograd")]:
        plan = conv_plan.conv_algorithm((16, 64, width, width), (64, 64, 3, 3), 1, 1,
                                        policy=policy)
        if threads:
            assert (plan.forward, plan.grad_input, plan.grad_weight) == (
                forward, forward, grad_weight)
        else:
            assert "winograd" not in plan.forward + plan.grad_weight
    # a 2-pixel plane takes lanes though it has fewer pixels than the image-by-image
    # layout asks for; with Winograd off, it takes none
    small = conv_plan.conv_algorithm((16, 64, 2, 1), (64, 64, 3, 3), 1, 1, policy=policy)
    assert small.forward == ("winograd-lanes" if threads else "one-gemm")
    off = dataclasses.replace(policy, winograd_min_pixels_per_channel=None)
    assert conv_plan.conv_algorithm((16, 64, 8, 8), (64, 64, 3, 3), 1, 1,
                                    policy=off).forward != "winograd-lanes"


@pytest.mark.parametrize("oh, ow", [(1, 1), (2, 2), (3, 5), (7, 7), (6, 9)])
def test_winograd_output_gradient_tiles_are_the_adjoint_of_the_output_transform(oh, ow):
    # <A^T M A, dY> = <M, A dY A^T> over all tiles, spare ones and those past an odd
    # edge included (their outputs are dropped, so their gradient is zero)
    rng = np.random.default_rng(oh * 10 + ow)
    n, oc, t = 2, 3, winograd.tiles(oh, ow)
    mm, dy = rng.standard_normal((16, oc, n * t)), rng.standard_normal((n, oc, oh, ow))
    out, gm = np.empty((n, oc, oh, ow)), np.empty((16, oc, n * t))
    winograd._output_tiles(mm, 0, out)
    winograd._output_tiles_adjoint(dy, 0, gm)
    assert np.sum(out * dy) == pytest.approx(np.sum(mm * gm), rel=1e-12)


def test_conv_plan_takes_the_winograd_weight_gradient_by_width_and_channels():
    # up to winograd_weight_grad_lanes_max_width wide: in lanes, from winograd_min_channels;
    # wider: image by image from winograd_weight_grad_min_channels, else shifted rows
    policy = conv_plan.ConvPolicy(winograd_weight_grad_min_channels=128,
                                  winograd_weight_grad_lanes_max_width=28,
                                  winograd_min_channels=8)
    def grad_weight(c, oc, width, stride=1, policy=policy):
        return conv_plan.conv_algorithm((16, c, width, width), (oc, c, 3, 3), stride, 1,
                                        policy=policy).grad_weight
    threads = conv_plan.scipy_blas() is not None
    lanes, planes = ("winograd-lanes", "winograd") if threads else ("shifted-rows",) * 2
    assert grad_weight(128, 128, 28) == lanes
    assert grad_weight(64, 128, 14) == lanes
    assert grad_weight(8, 8, 16) == lanes
    assert grad_weight(7, 8, 16) == "shifted-rows"          # fewer than 8 channels
    assert grad_weight(7, 8, 8) == "per-image"
    assert grad_weight(128, 128, 56) == planes               # wider than lanes take
    assert grad_weight(64, 64, 56) == "shifted-rows"         # ... with under 128 channels
    assert "winograd" not in grad_weight(128, 128, 56, stride=2)
    off = dataclasses.replace(policy, winograd_weight_grad_min_channels=None)
    assert grad_weight(128, 128, 56, policy=off) == "shifted-rows"
    assert grad_weight(128, 128, 28, policy=off) == lanes
    no_lanes = dataclasses.replace(policy, winograd_weight_grad_lanes_max_width=None)
    assert grad_weight(128, 128, 28, policy=no_lanes) == planes
    assert grad_weight(64, 64, 28, policy=no_lanes) == "shifted-rows"


# ---------------------------------------------------------------- batch norm

@st.composite
def batchnorm_cases(draw):
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)),
             draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    assume(shape[0] * shape[2] * shape[3] > 1)
    return shape, draw(DTYPES), draw(LAYOUTS), draw(SEEDS)


@backends
@hypothesis_settings
@given(batchnorm_cases(), st.booleans())
def test_batchnorm_forward_matches_reference(kernels, case, track_running_stats):
    shape, dtype, layout, seed = case
    rng = np.random.default_rng(seed)
    x = random(rng, shape, dtype, layout) * 3 + 1
    weight, bias = random(rng, shape[1], dtype), random(rng, shape[1], dtype)
    stats = [random(rng, shape[1], dtype), np.abs(random(rng, shape[1], dtype))]
    ours = [s.copy() for s in stats] if track_running_stats else [None, None]
    theirs = [s.copy() for s in stats] if track_running_stats else [None, None]
    before = x.copy()
    got = kernels.batchnorm_forward(x, weight, bias, *ours, 0.1, 1e-5)
    want = reference.batchnorm_forward(x, weight, bias, *theirs, 0.1, 1e-5)
    for a, b in zip(got, want):
        assert_close(a, b)
    if track_running_stats:
        for a, b in zip(ours, theirs):
            assert_close(a, b)
    np.testing.assert_array_equal(x, before)


@all_modules
def test_batchnorm_forward_follows_pytorch(kernels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 2)) * [[[[1.0]], [[2.0]], [[0.5]]]]
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    running_mean, running_var = np.full(3, 0.5), np.full(3, 2.0)
    y, mean, invstd = kernels.batchnorm_forward(x, weight, bias, running_mean, running_var,
                                                0.25, 1e-3)
    batch_mean, biased, unbiased = (x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)),
                                    x.var(axis=(0, 2, 3), ddof=1))
    np.testing.assert_allclose(mean, batch_mean, rtol=1e-12)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(biased + 1e-3), rtol=1e-12)
    per_channel = (slice(None), None, None)
    np.testing.assert_allclose(
        y, (x - batch_mean[per_channel]) * (invstd * weight)[per_channel] + bias[per_channel],
        rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(running_mean, 0.75 * 0.5 + 0.25 * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(running_var, 0.75 * 2.0 + 0.25 * unbiased, rtol=1e-12)


@backends
@hypothesis_settings
@given(batchnorm_cases())
def test_batchnorm_backward_matches_reference(kernels, case):
    shape, dtype, layout, seed = case
    rng = np.random.default_rng(seed)
    x = random(rng, shape, dtype, layout)
    grad_out = random(rng, shape, dtype, layout)
    weight = random(rng, shape[1], dtype)
    _, mean, invstd = reference.batchnorm_forward(x, weight, weight, None, None, 0.1, 1e-5)
    before = (x.copy(), grad_out.copy())
    got = kernels.batchnorm_backward(grad_out, x, weight, mean, invstd)
    want = reference.batchnorm_backward(grad_out, x, weight, mean, invstd)
    for a, b in zip(got, want):
        assert_close(a, b)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(grad_out, before[1])


def _central_difference(f, a, h=1e-6):
    """d f / d a by central differences, a perturbed in place and restored."""
    grad = np.zeros_like(a)
    for k in np.ndindex(a.shape):
        saved = a[k]
        a[k] = saved + h
        up = f()
        a[k] = saved - h
        down = f()
        a[k] = saved
        grad[k] = (up - down) / (2 * h)
    return grad


@all_modules
def test_batchnorm_backward_is_the_gradient_of_the_forward(kernels):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 2, 3))
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    r = rng.standard_normal(x.shape)     # random output weighting: sum(y) is constant

    def loss():
        return np.sum(reference.batchnorm_forward(x, weight, bias, None, None, 0.1, 1e-5)[0] * r)

    _, mean, invstd = reference.batchnorm_forward(x, weight, bias, None, None, 0.1, 1e-5)
    grad_x, grad_weight, grad_bias = kernels.batchnorm_backward(r, x, weight, mean, invstd)
    for analytic, a in ((grad_x, x), (grad_weight, weight), (grad_bias, bias)):
        np.testing.assert_allclose(analytic, _central_difference(loss, a), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- ReLU

@st.composite
def relu_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    return shape, draw(DTYPES), draw(LAYOUTS), draw(SEEDS)


@backends
@hypothesis_settings
@given(relu_cases())
def test_relu_matches_reference(kernels, case):
    shape, dtype, layout, seed = case
    rng = np.random.default_rng(seed)
    x = laid_out(np.round(rng.standard_normal(shape)).astype(dtype), layout)  # many zeros
    grad_out = random(rng, shape, dtype, layout)
    assert_close(kernels.relu_forward(x), reference.relu_forward(x))
    assert_close(kernels.relu_backward(grad_out, x), reference.relu_backward(grad_out, x))


@all_modules
def test_relu_follows_pytorch(kernels):
    x = np.array([-2.0, -0.0, 0.0, 0.5, np.nan], dtype=np.float32)
    grad_out = np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype=np.float32)
    y = kernels.relu_forward(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 0.0, 0.5, np.nan])
    np.testing.assert_array_equal(np.signbit(y), [False, True, False, False, False])  # -0.0
    # torch's relu backward is threshold_backward: zero where x <= 0, so a NaN passes
    np.testing.assert_array_equal(kernels.relu_backward(grad_out, x), [0, 0, 0, 4, 5])
    assert y.dtype == np.float32


@all_modules
def test_maxpool_nan_follows_pytorch(kernels):
    """A NaN beats any number and the last NaN of a window wins: torch's rule
    (val > max || isnan(val)), which decides where the gradient goes."""
    x = np.array([[[[1.0, np.nan, 5.0, np.nan, 3.0], [7.0, 0.0, 1.0, 2.0, 4.0]]]])
    y, idx = kernels.maxpool_forward(x, 2, 5, 2, 5, 0, 0)
    assert np.isnan(y).all() and idx.ravel().tolist() == [3]
    y, idx = kernels.maxpool_forward(x, 2, 2, 2, 2, 0, 0)    # windows [1 nan 7 0], [5 nan 1 2]
    assert idx.ravel().tolist() == [1, 3]
    torch = pytest.importorskip("torch")
    _, expected = torch.nn.functional.max_pool2d(torch.tensor(x), (2, 5), return_indices=True)
    assert expected.ravel().tolist() == [3]


# ---------------------------------------------------------------- empty batches

EMPTY_CONVS = [(1, 1, 0, 5), (3, 1, 1, 5), (3, 2, 1, 5), (1, 2, 0, 5),
               (3, 1, 1, conv_plan.ConvPolicy().shifted_rows_min_width),      # weight_grad.py
               (3, 2, 1, 2 * conv_plan.ConvPolicy().shifted_rows_min_width)]  # ... at stride 2


@all_modules
@pytest.mark.parametrize("k, s, p, width", EMPTY_CONVS, ids=str)
def test_conv2d_of_an_empty_batch_is_empty_with_a_zero_weight_grad(kernels, k, s, p, width):
    """As torch: batch 0 gives an empty output and grad_x, and a weight gradient of zeros."""
    rng = np.random.default_rng(0)
    x = np.zeros((0, 8, width, width))
    w2 = rng.standard_normal((8, 8 * k * k))
    out = kernels.conv2d_forward(x, w2, k, k, s, s, p, p)
    side = (width + 2 * p - k) // s + 1
    assert out.shape == (0, 8, side, side)
    grad_x, grad_w2 = kernels.conv2d_backward(out, x, w2, k, k, s, s, p, p)
    assert grad_x.shape == x.shape and grad_w2.shape == w2.shape
    np.testing.assert_array_equal(grad_w2, 0.0)


def test_direct_weight_grad_of_an_empty_batch_is_zero():
    x, g = np.zeros((0, 2, 4, 4)), np.zeros((0, 3, 4, 4))
    grad_w = weight_grad.weight_grad(g, x, tasks=4)
    assert grad_w.shape == (3, 2, 3, 3)
    np.testing.assert_array_equal(grad_w, 0.0)
    grad_w = weight_grad.weight_grad(g[:, :, :2, :2], x, tasks=4, stride=2)
    np.testing.assert_array_equal(grad_w, np.zeros((3, 2, 3, 3)))


@pytest.mark.parametrize("h, w", [(1, 1), (2, 2), (5, 8), (8, 5), (7, 7), (32, 32)])
@pytest.mark.parametrize("tasks", [1, 3])
def test_direct_weight_grad_at_stride_2_matches_the_reference(h, w, tasks):
    # float64, to rounding: the phases of x (odd sizes leave a phase row or column of
    # padding), output channels in blocks of 4 and the 3 past them
    rng = np.random.default_rng(h * 100 + w)
    n, c, oc = 4, 3, 7
    x = rng.standard_normal((n, c, h, w))
    g = rng.standard_normal((n, oc, (h + 1) // 2, (w + 1) // 2))
    w2 = rng.standard_normal((oc, c * 9))
    _, expected = reference.conv2d_backward(g, x, w2, 3, 3, 2, 2, 1, 1)
    got = weight_grad.weight_grad(g, x, tasks, stride=2)
    np.testing.assert_allclose(got.reshape(oc, -1), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tasks", [1, 2])
def test_direct_weight_grad_at_stride_2_sums_several_images_at_once(tasks):
    # 5 images of 24x24 phase planes (625 entries): sums of two images, the last of one,
    # the images past it zeroed again (without that, the last sum reads the one before's)
    rng = np.random.default_rng(tasks)
    n, c, oc, h = 5, 3, 6, 48
    group = -(-n // tasks)
    assert weight_grad.images_per_sum(group, h // 2, h // 2) == 2 and group % 2 == 1
    assert weight_grad.images_per_sum(16, 8, 8) == 16            # resnet20's 32->64
    assert weight_grad.images_per_sum(16, 16, 16) == 4           # its 16->32
    x = rng.standard_normal((n, c, h, h))
    g = rng.standard_normal((n, oc, h // 2, h // 2))
    _, expected = reference.conv2d_backward(g, x, rng.standard_normal((oc, c * 9)),
                                            3, 3, 2, 2, 1, 1)
    got = weight_grad.weight_grad(g, x, tasks, stride=2)
    np.testing.assert_allclose(got.reshape(oc, -1), expected, rtol=1e-12, atol=1e-12)


def test_conv_plan_takes_shifted_rows_at_stride_2_from_its_width():
    # the output and input gradient by GEMMs (phase-gemm off): shifted_rows_min_width's rule
    policy = conv_plan.ConvPolicy(shifted_rows_min_width=16, shifted_rows_max_stride=2,
                                  phase_gemm_max_channels=None)
    def grad_weight(width, stride=2, padding=1, policy=policy):
        return conv_plan.conv_algorithm((8, 16, width, width), (32, 16, 3, 3), stride,
                                        padding, policy=policy).grad_weight
    assert grad_weight(32) == "shifted-rows"                 # a 16-wide output
    assert grad_weight(30) != "shifted-rows"                 # 15 wide
    assert grad_weight(32, stride=(2, 1)) != "shifted-rows"  # the strides differ
    assert grad_weight(32, stride=3) != "shifted-rows"
    assert grad_weight(32, padding=0) != "shifted-rows"
    one = dataclasses.replace(policy, shifted_rows_max_stride=1)
    assert grad_weight(32, policy=one) != "shifted-rows"
    assert grad_weight(16, stride=1, policy=one) in ("shifted-rows", "winograd",
                                                     "winograd-lanes")


def test_conv_plan_takes_shifted_rows_narrower_where_the_input_gradient_runs_phase_gemm():
    def grad_weight(width, c=16, **fields):
        policy = conv_plan.ConvPolicy(phase_gemm_max_channels=32, **fields)
        return conv_plan.conv_algorithm((8, c, width, width), (2 * c, c, 3, 3), 2, 1,
                                        policy=policy).grad_weight
    assert grad_weight(16) == "shifted-rows"                 # 8 wide, as resnet20's 32->64
    assert grad_weight(14) != "shifted-rows"                 # 7 wide
    assert grad_weight(16, c=64) != "shifted-rows"           # input gradient by GEMMs
    assert grad_weight(32, c=64) == "shifted-rows"           # ... from 16 wide
    assert grad_weight(16, shifted_rows_phases_min_width=None) != "shifted-rows"
    assert grad_weight(16, shifted_rows_phases_min_width=16) != "shifted-rows"


@all_modules
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_of_an_empty_batch(kernels, dtype):
    """As torch: an empty y, the running statistics untouched, zero weight and bias
    gradients; one value per channel is still refused."""
    x = np.zeros((0, 3, 4, 4), dtype=dtype)
    weight, bias = np.full(3, 2.0, dtype), np.full(3, 0.5, dtype)
    running_mean, running_var = np.full(3, 0.25, dtype), np.full(3, 4.0, dtype)
    y, mean, invstd = kernels.batchnorm_forward(x, weight, bias, running_mean, running_var,
                                                0.1, 1e-5)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_array_equal(running_mean, 0.25)
    np.testing.assert_array_equal(running_var, 4.0)
    grad_x, grad_w, grad_b = kernels.batchnorm_backward(y, x, weight, mean, invstd)
    assert grad_x.shape == x.shape and grad_x.dtype == dtype
    for g in (grad_w, grad_b):
        assert g.shape == (3,) and g.dtype == dtype
        np.testing.assert_array_equal(g, 0.0)
    with pytest.raises(ValueError, match="more than one value per channel"):
        kernels.batchnorm_forward(np.zeros((1, 3, 1, 1), dtype), weight, bias, None, None,
                                  0.1, 1e-5)


@all_modules
def test_relu_and_maxpool_of_an_empty_batch(kernels):
    x = np.zeros((0, 2, 4, 4))
    assert kernels.relu_forward(x).shape == x.shape
    assert kernels.relu_backward(x, x).shape == x.shape
    y, idx = kernels.maxpool_forward(x, 2, 2, 2, 2, 0, 0)
    assert y.shape == idx.shape == (0, 2, 2, 2)
    assert kernels.maxpool_backward(y, idx, x.shape, 2, 2, 2, 2, 0, 0).shape == x.shape


# ---------------------------------------------------------------- max pooling

@st.composite
def pool_cases(draw):
    shape, window = draw(geometries(pool=True))
    return shape, window, draw(DTYPES), draw(LAYOUTS), draw(SEEDS)


def distinct_values(rng, shape, dtype, layout):
    """Values without ties (a permutation), so that the argmax is unique."""
    return laid_out(rng.permutation(int(np.prod(shape))).reshape(shape).astype(dtype), layout)


@backends
@hypothesis_settings
@given(pool_cases())
def test_maxpool_forward_matches_reference(kernels, case):
    shape, window, dtype, layout, seed = case
    x = distinct_values(np.random.default_rng(seed), shape, dtype, layout)
    y, idx = kernels.maxpool_forward(x, *window)
    y_ref, idx_ref = reference.maxpool_forward(x, *window)
    assert_close(y, y_ref)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, idx_ref)


@all_modules
@hypothesis_settings
@given(pool_cases())
def test_maxpool_forward_picks_the_window_maximum(kernels, case):
    shape, (kh, kw, sh, sw, ph, pw), dtype, layout, seed = case
    x = distinct_values(np.random.default_rng(seed), shape, dtype, layout)
    y, idx = kernels.maxpool_forward(x, kh, kw, sh, sw, ph, pw)
    n, c, h, w = shape
    for oy, ox in np.ndindex(y.shape[2:]):
        top, left = oy * sh - ph, ox * sw - pw
        window = x[:, :, max(top, 0):top + kh, max(left, 0):left + kw]
        np.testing.assert_array_equal(y[:, :, oy, ox], window.max(axis=(2, 3)))
    chosen = np.take_along_axis(x.reshape(n, c, h * w), idx.reshape(n, c, -1), axis=2)
    np.testing.assert_array_equal(chosen.reshape(y.shape), y)


@all_modules
@hypothesis_settings
@given(geometries(pool=True))
def test_maxpool_ties_go_to_the_first_element_of_the_window(kernels, geometry):
    shape, (kh, kw, sh, sw, ph, pw) = geometry
    y, idx = kernels.maxpool_forward(np.ones(shape), kh, kw, sh, sw, ph, pw)
    top = np.maximum(np.arange(y.shape[2]) * sh - ph, 0)[:, None]
    left = np.maximum(np.arange(y.shape[3]) * sw - pw, 0)[None, :]
    np.testing.assert_array_equal(idx, np.broadcast_to(top * shape[3] + left, idx.shape))
    np.testing.assert_array_equal(idx, reference.maxpool_forward(np.ones(shape), kh, kw, sh,
                                                                 sw, ph, pw)[1])


@backends
@hypothesis_settings
@given(pool_cases())
def test_maxpool_backward_matches_reference(kernels, case):
    shape, window, dtype, layout, seed = case
    rng = np.random.default_rng(seed)
    _, idx = reference.maxpool_forward(distinct_values(rng, shape, dtype, "contiguous"),
                                       *window)
    grad_out = random(rng, idx.shape, dtype, layout)
    idx = laid_out(idx, layout)
    got = kernels.maxpool_backward(grad_out, idx, shape, *window)
    assert_close(got, reference.maxpool_backward(grad_out, idx, shape, *window))


@st.composite
def pool_option_cases(draw):
    """pool_cases with a dilation and ceil mode: (shape, window of 9, dtype, layout, seed)."""
    shape, window = draw(geometries(pool=True))
    window += (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.booleans()))
    try:
        checks.pool_out_size("maxpool_forward", shape, *window)
    except ValueError:
        assume(False)
    return shape, window, draw(DTYPES), draw(LAYOUTS), draw(SEEDS)


@all_modules
@hypothesis_settings
@given(pool_option_cases())
def test_maxpool_dilated_and_ceil_windows_by_brute_force(kernels, case):
    # each window's taps listed one by one: the maximum of those inside the input, -inf
    # where there are none; the backward as the reference's
    shape, window, dtype, layout, seed = case
    kh, kw, sh, sw, ph, pw, dh, dw, _ = window
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, shape, dtype, layout)
    y, idx = kernels.maxpool_forward(x, *window)
    n, c, h, w = shape
    for oy, ox in np.ndindex(y.shape[2:]):
        rows = [r for r in range(oy * sh - ph, oy * sh - ph + (kh - 1) * dh + 1, dh) if 0 <= r < h]
        cols = [q for q in range(ox * sw - pw, ox * sw - pw + (kw - 1) * dw + 1, dw) if 0 <= q < w]
        want = x[:, :, rows][:, :, :, cols].max(axis=(2, 3)) if rows and cols else -np.inf
        np.testing.assert_array_equal(y[:, :, oy, ox], np.broadcast_to(want, (n, c)))
    real = np.isfinite(y)
    chosen = np.take_along_axis(x.reshape(n, c, h * w), np.where(real, idx, 0).reshape(n, c, -1),
                                axis=2)
    np.testing.assert_array_equal(chosen.reshape(y.shape)[real], y[real])
    grad_out = random(rng, y.shape, dtype, layout)
    assert_close(kernels.maxpool_backward(grad_out, idx, shape, *window),
                 reference.maxpool_backward(grad_out, idx, shape, *window))


@st.composite
def pool_cases_with_ties(draw):
    """(x, window of 9): planes up to 40 wide (long rows take the kernels' vector loops),
    any stride, dilation and ceil mode, values drawn from -inf, -1, 0, 1 and NaN: ties,
    NaNs, and windows with nothing above -inf."""
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 40))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    window = (kh, kw, draw(st.integers(1, 4)), draw(st.integers(1, 4)),
              draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)),
              draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.booleans()))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)
    try:
        checks.pool_out_size("maxpool_forward", shape, *window)
    except ValueError:
        assume(False)
    values = np.array([-np.inf, -1.0, 0.0, 1.0, np.nan])
    x = values[np.random.default_rng(draw(SEEDS)).integers(0, 5, shape)].astype(draw(DTYPES))
    return laid_out(x, draw(LAYOUTS)), window


@backends
@hypothesis_settings
@given(pool_cases_with_ties())
def test_maxpool_ties_nans_and_infs_as_the_reference(kernels, case):
    # the value and the index of every window, empty ones included, exactly as the
    # reference's tap-by-tap walk (ties to the first, the last NaN wins)
    x, window = case
    y, idx = kernels.maxpool_forward(x, *window)
    y_ref, idx_ref = reference.maxpool_forward(x, *window)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)


@all_modules
def test_maxpool_backward_accumulates_overlapping_windows(kernels):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0                  # the maximum of all four 2x2 windows
    y, idx = kernels.maxpool_forward(x, 2, 2, 1, 1, 0, 0)
    grad_x = kernels.maxpool_backward(np.full(y.shape, 0.5), idx, x.shape, 2, 2, 1, 1, 0, 0)
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1] = 2.0
    np.testing.assert_array_equal(grad_x, expected)


# ---------------------------------------------------------------- per-channel affine

@backends
@hypothesis_settings
@given(st.integers(2, 4), DTYPES, LAYOUTS, SEEDS)
def test_channel_affine_is_the_reference_bit_for_bit(kernels, ndim, dtype, layout, seed):
    # batch norm in evaluation: x * scale + shift per channel, the product rounded and then
    # the sum, exactly as the reference's two NumPy steps (a fused multiply-add would
    # differ in the last bit); NaN and infinities pass as they do there
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 6, ndim))
    x = laid_out(rng.standard_normal(shape).astype(dtype), layout)
    x.flat[0], x.flat[-1] = np.nan, np.inf
    scale = rng.standard_normal(shape[1]).astype(dtype)
    shift = rng.standard_normal(shape[1]).astype(dtype)
    y = kernels.channel_affine(x, scale, shift)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_array_equal(y, reference.channel_affine(x, scale, shift))


@backends
@hypothesis_settings
@given(st.integers(1, 4), DTYPES, LAYOUTS, st.sampled_from([1.0, 0.5, -1.3, 0.0]), SEEDS)
def test_add_scaled_is_the_reference_bit_for_bit(kernels, ndim, dtype, layout, scale, seed):
    # the residual addition a + scale * b: scale rounded to the dtype, the product, then
    # the sum, exactly as NumPy's a + scale * b; NaN and infinities pass
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 6, ndim))
    a = laid_out(rng.standard_normal(shape).astype(dtype), layout)
    b = laid_out(rng.standard_normal(shape).astype(dtype), layout)
    a.flat[0], b.flat[-1] = np.nan, -np.inf
    got = kernels.add_scaled(a, b, scale)
    assert got.dtype == dtype and got.shape == shape
    with np.errstate(invalid="ignore"):                 # 0 * inf is NaN, as it should be
        np.testing.assert_array_equal(got, reference.add_scaled(a, b, scale))
        np.testing.assert_array_equal(reference.add_scaled(a, b, scale), a + scale * b)


@all_modules
def test_elementwise_kernels_keep_a_0d_shape(kernels):
    # a 0-d array stays 0-d (np.ascontiguousarray alone would make it 1-d)
    x = np.array(-1.5, dtype=np.float32)
    assert kernels.relu_forward(x).shape == ()
    assert kernels.relu_backward(np.array(1.0, dtype=np.float32), x).shape == ()
    assert kernels.add_scaled(x, np.array(2.0, dtype=np.float32), 0.5).shape == ()
    assert float(kernels.add_scaled(x, np.array(2.0, dtype=np.float32), 0.5)) == -0.5
    out = np.array(3.0, dtype=np.float32)
    assert kernels.relu_forward(x, out=out) is out and float(out) == 0.0


@all_modules
@pytest.mark.parametrize("into", ["itself", "another array", "a strided view"])
def test_relu_forward_into_out(kernels, into):
    # relu_forward(x, out=x) is the in-place ReLU: out holds the result, x's values as the
    # copy's (-0.0 kept, NaN passed), and nothing else is written
    x = np.array([[-2.0, -0.0, 0.0], [0.5, np.nan, -np.inf]], dtype=np.float32)
    want = reference.relu_forward(x.copy())
    if into == "itself":
        out = x
    elif into == "another array":
        out = np.full_like(x, 7.0)
    else:
        out = np.full((2, 6), 7.0, dtype=np.float32)[:, ::2]
    got = kernels.relu_forward(x, out=out)
    assert got is out
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(want))


@all_modules
@pytest.mark.parametrize("into", ["a itself", "b itself", "another array", "a strided view"])
@pytest.mark.parametrize("scale", [1.0, -1.3])
def test_add_scaled_into_out(kernels, into, scale):
    # add_scaled(a, b, out=a) is a += scale*b (the backward walk's sum of two gradients):
    # out holds the same values, bit for bit, as a new array would, and is what comes back
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(
        np.float32)
    a[0, 0], b[1, 2] = np.nan, np.inf
    want = reference.add_scaled(a.copy(), b.copy(), scale)
    out = {"a itself": a, "b itself": b, "another array": np.full_like(a, 7.0),
           "a strided view": np.full((2, 6), 7.0, dtype=np.float32)[:, ::2]}[into]
    got = kernels.add_scaled(a, b, scale, out=out)
    assert got is out
    np.testing.assert_array_equal(out, want)


@all_modules
def test_channel_affine_of_an_empty_batch(kernels):
    y = kernels.channel_affine(np.zeros((0, 3, 4, 4)), np.ones(3), np.zeros(3))
    assert y.shape == (0, 3, 4, 4)


# ---------------------------------------------------------------- bad input

def _x(*shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


BAD_CALLS = [
    ("im2col", lambda k: k.im2col(_x(2, 3, 4), 3, 3, 1, 1, 1, 1), ValueError, "4-D"),
    ("im2col", lambda k: k.im2col(_x(1, 1, 4, 4, dtype=np.int64), 3, 3, 1, 1, 1, 1),
     TypeError, "float32 or float64"),
    ("im2col", lambda k: k.im2col(_x(1, 1, 4, 4), 0, 3, 1, 1, 1, 1), ValueError, "kernel"),
    ("im2col", lambda k: k.im2col(_x(1, 1, 4, 4), 3, 3, 0, 1, 1, 1), ValueError, "stride"),
    ("im2col", lambda k: k.im2col(_x(1, 1, 2, 4), 5, 3, 1, 1, 1, 1), ValueError, "fit"),
    ("im2col", lambda k: k.im2col(_x(1, 1, 4, 4), 3, 3, 1, 1, 1, 1, 0, 1), ValueError,
     "dilation >= 1"),
    ("im2col", lambda k: k.im2col(_x(1, 1, 4, 4), 3, 3, 1, 1, 1, 1, 3, 1), ValueError,
     r"dilation \(3, 1\) does not fit"),
    ("conv2d_forward", lambda k: k.conv2d_forward(_x(1, 4, 4, 4), _x(3, 18), 3, 3, 1, 1, 1, 1,
                                                  1, 1, 2), ValueError, "groups"),
    ("conv2d_forward", lambda k: k.conv2d_forward(_x(1, 4, 4, 4), _x(4, 36), 3, 3, 1, 1, 1, 1,
                                                  1, 1, 2), ValueError, r"\(out_channels, 18\)"),
    ("col2im", lambda k: k.col2im(_x(1, 9, 16), (1, 1, 4, 4), 3, 3, 1, 1, 1, 1),
     ValueError, r"shape \(9, 16\)"),
    ("conv2d_forward", lambda k: k.conv2d_forward(_x(1, 2, 4, 4), _x(3, 9), 3, 3, 1, 1, 1, 1),
     ValueError, r"w2 must have shape \(out_channels, 18\)"),
    ("conv2d_forward", lambda k: k.conv2d_forward(
        _x(1, 1, 4, 4), _x(3, 9, dtype=np.float64), 3, 3, 1, 1, 1, 1), TypeError, "float64"),
    ("conv2d_backward", lambda k: k.conv2d_backward(
        _x(1, 3, 3, 3), _x(1, 1, 4, 4), _x(3, 9), 3, 3, 1, 1, 1, 1), ValueError,
     r"grad_out must have shape \(1, 3, 4, 4\)"),
    ("batchnorm_forward", lambda k: k.batchnorm_forward(
        _x(1, 2, 1, 1), _x(2), _x(2), None, None, 0.1, 1e-5), ValueError,
     "more than one value per channel"),
    ("batchnorm_forward", lambda k: k.batchnorm_forward(
        _x(2, 2, 3, 3), _x(3), _x(2), None, None, 0.1, 1e-5), ValueError, "weight"),
    ("batchnorm_backward", lambda k: k.batchnorm_backward(
        _x(2, 2, 3, 2), _x(2, 2, 3, 3), _x(2), _x(2), _x(2)), ValueError, "grad_out"),
    ("relu_forward", lambda k: k.relu_forward(np.zeros(3, dtype=np.int32)), TypeError,
     "float32 or float64"),
    ("relu_backward", lambda k: k.relu_backward(_x(3), _x(4)), ValueError, "shape"),
    ("maxpool_forward", lambda k: k.maxpool_forward(_x(1, 1, 4, 4), 2, 2, 2, 2, 2, 0),
     ValueError, "half of effective kernel size"),
    ("maxpool_forward", lambda k: k.maxpool_forward(_x(4, 4), 2, 2, 2, 2, 0, 0),
     ValueError, "4-D"),
    ("maxpool_backward", lambda k: k.maxpool_backward(
        _x(1, 1, 2, 2), np.full((1, 1, 2, 2), 16), (1, 1, 4, 4), 2, 2, 2, 2, 0, 0),
     ValueError, "idx"),
    ("relu_forward", lambda k: k.relu_forward(_x(2, 3), out=_x(3, 2)), ValueError,
     r"out must have shape \(2, 3\)"),
    ("relu_forward", lambda k: k.relu_forward(_x(2, 3), out=_x(2, 3, dtype=np.float64)),
     TypeError, "out must have x's dtype float32"),
    ("add_scaled", lambda k: k.add_scaled(_x(2, 3), _x(3, 2)), ValueError,
     r"b must have shape \(2, 3\)"),
    ("add_scaled", lambda k: k.add_scaled(_x(2, 3), _x(2, 3, dtype=np.float64)), TypeError,
     "b must have a's dtype float32, got float64"),
    ("add_scaled", lambda k: k.add_scaled(_x(2, 3), _x(2, 3), out=_x(3, 2)), ValueError,
     r"out must have shape \(2, 3\), got \(3, 2\)"),
    ("add_scaled", lambda k: k.add_scaled(_x(2, 3), _x(2, 3), out=_x(2, 3, dtype=np.float64)),
     TypeError, "out must have a's dtype float32, got float64"),
    ("channel_affine", lambda k: k.channel_affine(_x(3), _x(3), _x(3)), ValueError,
     r"channel axis, \(N, C, ...\), got shape \(3,\)"),
    ("channel_affine", lambda k: k.channel_affine(_x(2, 3, 4), _x(4), _x(3)), ValueError,
     r"scale must have shape \(3,\)"),
    ("channel_affine", lambda k: k.channel_affine(_x(2, 3), _x(3), _x(3, dtype=np.float64)),
     TypeError, "shift must have x's dtype float32, got float64"),
]


@all_modules
@pytest.mark.parametrize("name, call, error, detail", BAD_CALLS,
                         ids=[f"{c[0]}-{c[3]}" for c in BAD_CALLS])
def test_bad_input_is_rejected_with_a_clear_message(kernels, name, call, error, detail):
    with pytest.raises(error, match=name) as caught:
        call(kernels)
    assert caught.match(detail)


# ---- prefetch hints (prefetch.py)

@pytest.mark.parametrize("n, image, b0, m, parts", [(5, 7, 0, 2, 16), (5, 7, 4, 3, 16),
                                                    (5, 7, 5, 1, 4), (1, 3, 0, 1, 36),
                                                    (128, 16384, 126, 1, 16)])
def test_prefetch_runs_cover_the_images_asked_for_once(n, image, b0, m, parts):
    # the runs of every part, in order, are exactly the memory of images b0 .. b0+m-1 that
    # exist: nothing past the last image, nothing twice
    runs = [prefetch.run_bounds(n, image, b0, m, part, parts) for part in range(parts)]
    covered = [k for first, stop in runs for k in range(first, stop)]
    assert covered == list(range(b0 * image, min(n, b0 + m) * image))


def test_prefetch_hints_change_nothing():
    a = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    before = a.copy()

    @numba.njit
    def hint_all(a):
        for part in range(4):
            prefetch.ahead(a, 1, 5, part, 4, False)    # images 1..2 (3..5 do not exist)
            prefetch.ahead(a, 0, 3, part, 4, True)
    hint_all(a)
    np.testing.assert_array_equal(a, before)
