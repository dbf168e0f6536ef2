"""The convolution's epilogue inside the kernel layers: conv2d_forward(..., bias) of every
layer and every CPU algorithm equals the convolution without a bias plus the bias, to the
last bit (the same one addition per element, kernels/conv_bias.py), and refuses a bias of
the wrong shape or dtype by name; with scale (batch norm in evaluation) and relu, it equals
channel_affine then relu_forward of the plain output, to the last bit, and with a
residual (a block's shortcut, scaled) add_scaled before the relu. F.conv2d then matches
PyTorch with and without a bias.
"""
import numba
import numpy as np
import pytest
import torch

import tinyres
import tinyres.nn.functional as F
from tinyres.kernels import conv_plan, cpu, emulate, reference

POLICIES = {
    "winograd": conv_plan.ConvPolicy(phase_gemm_max_channels=None),
    "phase-gemm": conv_plan.ConvPolicy(phase_gemm_max_channels=10**6),
    "winograd 4x4": conv_plan.ConvPolicy(winograd_4x4_min_width=0, winograd_4x4_min_channels=0,
                                         winograd_lanes_max_width=None),
    "winograd in lanes": conv_plan.ConvPolicy(winograd_lanes_max_width=10**6,
                                              winograd_4x4_lanes_min_width=None),
    "winograd 4x4 in lanes": conv_plan.ConvPolicy(winograd_lanes_max_width=10**6,
                                                  winograd_4x4_lanes_min_width=0),
    "per-image": conv_plan.ConvPolicy.only("per-image"),
    "one-gemm": conv_plan.ConvPolicy.only("one-gemm"),
}
# (x shape, weight shape, stride, padding): 3x3 same layers (Winograd where allowed: in
# lanes up to 16 wide, image by image wider), a strided 3x3 (phase-gemm where allowed,
# else per-image), a 1x1 stride-2 projection
# (pointwise), an odd 5x3 with padding, and a batch of 16 on a 3x3 same layer 16 wide
# (F(4x4, 3x3) in lanes where the policy allows: tasks of 8 images on the two threads
# `two_threads` reports)
LAYERS = [((3, 8, 9, 7), (10, 8, 3, 3), 1, 1), ((3, 8, 10, 17), (9, 8, 3, 3), 1, 1),
          ((2, 5, 9, 9), (6, 5, 3, 3), 2, 1), ((4, 6, 7, 8), (9, 6, 1, 1), 2, 0),
          ((2, 3, 8, 6), (4, 3, 5, 3), 1, 2), ((16, 4, 7, 16), (6, 4, 3, 3), 1, 1)]


@pytest.fixture(autouse=True)
def two_threads(monkeypatch):
    """The CPU layer shares its tasks as on two threads, whatever Numba's count here, so
    that the batch of 16 runs F(4x4, 3x3)'s lanes in tasks of 8 (cpu._winograd_layout)."""
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)


def test_the_layers_and_policies_take_every_forward_path():
    if conv_plan.scipy_blas() is None:
        pytest.skip("SciPy shares NumPy's BLAS here: one-gemm everywhere")
    taken = {conv_plan.conv_algorithm(x_shape, w_shape, stride, padding,
                                      policy=POLICIES[policy]).forward
             for policy in POLICIES for x_shape, w_shape, stride, padding in LAYERS}
    assert taken == {"winograd", "winograd-4x4", "winograd-lanes", "winograd-4x4-lanes",
                     "per-image", "one-gemm", "pointwise", "phase-gemm"}
    assert cpu._winograd_layout("winograd-4x4-lanes", LAYERS[-1][0][0]) == "winograd-4x4-lanes"


def _case(x_shape, w_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w2 = rng.standard_normal((w_shape[0], int(np.prod(w_shape[1:])))).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w2, bias


def _window(w_shape, stride, padding):
    return (w_shape[2], w_shape[3], stride, stride, padding, padding)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("layer", LAYERS)
def test_cpu_bias_is_the_unbiased_output_plus_bias_to_the_last_bit(policy, layer,
                                                                   dtype=np.float32):
    # float32, where a second rounding would show; float64 through F.conv2d below
    x_shape, w_shape, stride, padding = layer
    x, w2, bias = _case(x_shape, w_shape, dtype)
    window = _window(w_shape, stride, padding)
    with conv_plan.conv_policy(POLICIES[policy]):
        plain = cpu.conv2d_forward(x, w2, *window)
        biased = cpu.conv2d_forward(x, w2, *window, bias=bias)
    np.testing.assert_array_equal(biased, plain + bias.reshape(1, -1, 1, 1))
    assert biased.dtype == dtype


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("relu", [False, True], ids=["affine", "affine+relu"])
def test_cpu_scale_and_relu_are_the_separate_passes_to_the_last_bit(policy, layer, relu):
    # batch norm in evaluation (x * scale + shift, the product rounded, then the sum) and
    # the ReLU after it, applied by every path's cores to each task's images in cache:
    # the values of conv2d_forward, channel_affine and relu_forward one after the other,
    # NaN and -0.0 included (a NaN scale on one channel, a zero shift on another)
    x_shape, w_shape, stride, padding = layer
    x, w2, shift = _case(x_shape, w_shape, np.float32, seed=3)
    scale = np.random.default_rng(4).standard_normal(w_shape[0]).astype(np.float32)
    scale[0], shift[1], scale[1] = np.nan, 0.0, -1.0
    window = _window(w_shape, stride, padding)
    with conv_plan.conv_policy(POLICIES[policy]):
        plain = cpu.conv2d_forward(x, w2, *window)
        fused = cpu.conv2d_forward(x, w2, *window, bias=shift, scale=scale, relu=relu)
    expected = cpu.channel_affine(plain, scale, shift)
    expected = cpu.relu_forward(expected) if relu else expected
    np.testing.assert_array_equal(fused, expected)
    np.testing.assert_array_equal(np.signbit(fused), np.signbit(expected))
    assert np.isnan(fused[:, 0]).all()
    expected_ref = reference.channel_affine(reference.conv2d_forward(x, w2, *window), scale,
                                            shift)
    expected_ref = reference.relu_forward(expected_ref) if relu else expected_ref
    np.testing.assert_array_equal(
        reference.conv2d_forward(x, w2, *window, bias=shift, scale=scale, relu=relu),
        expected_ref)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("lam", [1.0, 0.3, -2.0])
@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
def test_cpu_residual_is_the_separate_add_to_the_last_bit(policy, layer, lam, affine):
    # a residual block's end, relu(bn(conv(x)) + lambda * shortcut), in every path's
    # epilogue: the values of conv2d_forward, channel_affine, add_scaled and relu_forward
    # one after the other (lambda rounded to the dtype, the product rounded, then the sum;
    # 1 * shortcut is the shortcut), NaN and -0.0 included; the shortcut never written
    x_shape, w_shape, stride, padding = layer
    x, w2, shift = _case(x_shape, w_shape, np.float32, seed=5)
    scale = np.random.default_rng(6).standard_normal(w_shape[0]).astype(np.float32)
    window = _window(w_shape, stride, padding)
    with conv_plan.conv_policy(POLICIES[policy]):
        plain = cpu.conv2d_forward(x, w2, *window)
        shortcut = np.random.default_rng(7).standard_normal(plain.shape).astype(np.float32)
        shortcut[0, 0, 0, 0], shortcut[-1, -1, -1, -1] = np.nan, -0.0
        kept = shortcut.copy()
        affine_args = dict(bias=shift, scale=scale) if affine else {}
        for relu in (False, True):
            fused = cpu.conv2d_forward(x, w2, *window, **affine_args, relu=relu,
                                       residual=shortcut, residual_scale=lam)
            expected = cpu.channel_affine(plain, scale, shift) if affine else plain
            expected = cpu.add_scaled(expected, shortcut, lam)
            expected = cpu.relu_forward(expected) if relu else expected
            np.testing.assert_array_equal(fused, expected)
            np.testing.assert_array_equal(np.signbit(fused), np.signbit(expected))
            ref_plain = reference.conv2d_forward(x, w2, *window)
            ref_plain = reference.channel_affine(ref_plain, scale, shift) if affine else ref_plain
            ref_expected = reference.add_scaled(ref_plain, shortcut, lam)
            ref_expected = reference.relu_forward(ref_expected) if relu else ref_expected
            np.testing.assert_array_equal(
                reference.conv2d_forward(x, w2, *window, **affine_args, relu=relu,
                                         residual=shortcut, residual_scale=lam), ref_expected)
    np.testing.assert_array_equal(shortcut, kept)


@pytest.mark.parametrize("n", [0, 1])
@pytest.mark.parametrize("policy", POLICIES)
def test_a_residual_on_an_empty_batch_and_a_single_image(policy, n):
    # an empty batch gives an empty output, as without a residual; one image, its sum
    x, w2, _ = _case((n, 3, 16, 16), (4, 3, 3, 3), np.float32)
    shortcut = np.random.default_rng(9).standard_normal((n, 4, 16, 16)).astype(np.float32)
    with conv_plan.conv_policy(POLICIES[policy]):
        out = cpu.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, residual=shortcut, relu=True)
        expected = cpu.relu_forward(cpu.add_scaled(cpu.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1),
                                                   shortcut))
    assert out.shape == (n, 4, 16, 16)
    np.testing.assert_array_equal(out, expected)
    assert reference.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, residual=shortcut).shape == \
        (n, 4, 16, 16)


@pytest.mark.parametrize("kernels", [cpu, reference], ids=["cpu", "reference"])
def test_a_residual_of_the_wrong_shape_or_dtype_is_refused_by_name(kernels):
    x, w2, _ = _case((2, 3, 6, 6), (4, 3, 3, 3), np.float32)
    good = np.zeros((2, 4, 6, 6), np.float32)
    out_before = good.copy()
    with pytest.raises(ValueError, match=r"conv2d_forward: residual \(added to the output\) "
                                         r"must have shape \(2, 4, 6, 6\), got \(2, 3, 6, 6\)"):
        kernels.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, residual=x)
    with pytest.raises(ValueError, match=r"must have shape \(2, 4, 3, 3\)"):   # stride 2
        kernels.conv2d_forward(x, w2, 3, 3, 2, 2, 1, 1, residual=good)
    with pytest.raises(TypeError, match="conv2d_forward: residual .* must have x's dtype "
                                        "float32, got float64"):
        kernels.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, residual=good.astype(np.float64))
    np.testing.assert_array_equal(good, out_before)


def test_emulated_cuda_residual():
    x, w2, bias = _case((2, 5, 7, 7), (6, 5, 3, 3), np.float64, seed=2)
    window = _window((6, 5, 3, 3), 1, 1)
    plain = reference.conv2d_forward(x, w2, *window)
    shortcut = np.random.default_rng(8).standard_normal(plain.shape)
    try:
        gpu = emulate.backend()
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))
    scale = -np.abs(bias)
    np.testing.assert_allclose(
        gpu.conv2d_forward(x, w2, *window, bias=bias, scale=scale, relu=True,
                           residual=shortcut, residual_scale=0.5),
        np.maximum(plain * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)
                   + 0.5 * shortcut, 0), rtol=1e-12, atol=1e-12)


def test_relu_alone_and_a_scale_without_a_shift():
    x, w2, bias = _case((2, 3, 6, 6), (4, 3, 3, 3), np.float32)
    plain = cpu.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1)
    np.testing.assert_array_equal(cpu.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, relu=True),
                                  np.maximum(plain, 0))
    for kernels in (cpu, reference):
        with pytest.raises(ValueError, match="conv2d_forward: a scale needs a bias"):
            kernels.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, scale=bias)
        with pytest.raises(ValueError, match=r"conv2d_forward: scale must have shape \(4,\)"):
            kernels.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, bias=bias, scale=bias[:2])


@pytest.mark.parametrize("layer", LAYERS)
def test_reference_and_emulated_cuda_bias(layer):
    x_shape, w_shape, stride, padding = layer
    x, w2, bias = _case(x_shape, w_shape, np.float64, seed=1)
    window = _window(w_shape, stride, padding)
    expected = reference.conv2d_forward(x, w2, *window) + bias.reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(reference.conv2d_forward(x, w2, *window, bias=bias), expected)
    try:
        gpu = emulate.backend()
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))
    np.testing.assert_allclose(gpu.conv2d_forward(x, w2, *window, bias=bias), expected,
                               rtol=1e-12, atol=1e-12)
    scale = -np.abs(bias)                    # batch norm's affine map, then relu
    np.testing.assert_allclose(
        gpu.conv2d_forward(x, w2, *window, bias=bias, scale=scale, relu=True),
        np.maximum(reference.conv2d_forward(x, w2, *window) * scale.reshape(1, -1, 1, 1)
                   + bias.reshape(1, -1, 1, 1), 0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernels", [cpu, reference], ids=["cpu", "reference"])
def test_a_bias_of_the_wrong_shape_or_dtype_is_refused_by_name(kernels):
    x, w2, bias = _case((2, 3, 5, 5), (4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_forward: bias must have shape \(4,\)"):
        kernels.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, bias=bias[:3])
    with pytest.raises(TypeError, match="conv2d_forward: bias must have x's dtype float32"):
        kernels.conv2d_forward(x, w2, 3, 3, 1, 1, 1, 1, bias=bias.astype(np.float64))


@pytest.mark.parametrize("layer", [LAYERS[0], LAYERS[2]], ids=["3x3-same", "1x1-stride-2"])
def test_conv2d_with_bias_matches_torch_values_and_gradients(layer):
    x_shape, w_shape, stride, padding = layer
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    tx, tw, tb = (tinyres.tensor(a, requires_grad=True) for a in (x, w, b))
    px, pw, pb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(tx, tw, tb, stride=stride, padding=padding)
    ref = torch.nn.functional.conv2d(px, pw, pb, stride=stride, padding=padding)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    g = rng.standard_normal(ref.shape)
    out.backward(tinyres.tensor(g))
    ref.backward(torch.tensor(g))
    for mine, theirs in ((tx, px), (tw, pw), (tb, pb)):
        np.testing.assert_allclose(mine.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-9)
