"""The CPU layer's convolution algorithms of kernels/conv_plan.py that tests/test_kernels.py
does not force one by one: each is chosen where the plan says, forced through
conv_policy(), and held to kernels/reference.py (float32 to 1e-5, float64 to 1e-12) on odd
shapes, non-contiguous inputs and every combination of needed gradients; then through
tinyres.nn.functional.conv2d against PyTorch and tinyres.gradcheck.
"""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn.functional as F
from tinyres.kernels import conv_plan, cpu, reference

from test_kernels import DTYPES, LAYOUTS, SEEDS, assert_close, geometries, out_hw, random

THREADED = pytest.mark.skipif(
    conv_plan.scipy_blas() is None,
    reason="SciPy shares NumPy's BLAS here: cpu.py does not run GEMMs inside its threads")
path_settings = settings(max_examples=25, deadline=None)
NEEDS = st.sampled_from([(True, True), (True, False), (False, True), (False, False)])


def check_against_reference(x, w2, window, g, needs):
    """cpu.py's forward and backward equal reference.py's; the inputs are left as they were.
    window = (kh, kw, sh, sw, ph, pw) or that and the dilation (dh, dw)."""
    before = x.copy(), w2.copy(), g.copy()
    assert_close(cpu.conv2d_forward(x, w2, *window), reference.conv2d_forward(x, w2, *window))
    geometry, dilation = window[:6], window[6:]
    got = cpu.conv2d_backward(g, x, w2, *geometry, *needs, *dilation)
    expected = reference.conv2d_backward(g, x, w2, *geometry, *needs, *dilation)
    for need, a, b in zip(needs, got, expected):
        assert (a is None) == (b is None) == (not need)
        if need:
            assert_close(a, b)
    for now, then in zip((x, w2, g), before):
        np.testing.assert_array_equal(now, then)


# ---------------------------------------------------------------- pointwise (1x1) layers

@st.composite
def pointwise_cases(draw):
    """A 1x1 unpadded layer: (x, w2, window, g), odd sizes and strides 1 to 2 each way."""
    n, c, oc = draw(st.integers(0, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 7))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dtype, layout, rng = draw(DTYPES), draw(LAYOUTS), np.random.default_rng(draw(SEEDS))
    window = (1, 1, sh, sw, 0, 0)
    x, w2 = random(rng, (n, c, h, w), dtype, layout), random(rng, (oc, c), dtype, layout)
    g = random(rng, (n, oc) + out_hw((n, c, h, w), *window), dtype, layout)
    return x, w2, window, g


@THREADED
@path_settings
@given(pointwise_cases(), NEEDS, st.integers(1, 300))
def test_pointwise_matches_reference(case, needs, min_columns):
    x, w2, window, g = case
    assert conv_plan.conv_algorithm(x.shape, w2.shape + (1, 1), window[2:4]).forward == \
        "pointwise"
    with conv_plan.conv_policy(gemm_min_columns=min_columns):   # images per task vary
        check_against_reference(x, w2, window, g, needs)


def test_pointwise_float64_is_near_exact_on_a_resnet_projection_shape():
    # 64 -> 128 channels, stride 2, 15x15 (an odd size): a sum of 64 products per output
    rng = np.random.default_rng(1)
    x, w2 = random(rng, (3, 64, 15, 15), np.float64), random(rng, (128, 64), np.float64)
    g = random(rng, (3, 128, 8, 8), np.float64)
    check_against_reference(x, w2, (1, 1, 2, 2, 0, 0), g, (True, True))


@pytest.mark.parametrize("shape, window, groups, expected", [
    ((2, 8, 9, 9), (1, 1, 1, 1, 0, 0), 1, "pointwise"),
    ((2, 8, 9, 9), (1, 1, 2, 2, 0, 0), 1, "pointwise"),
    ((2, 8, 9, 9), (1, 1, 1, 2, 0, 0), 1, "pointwise"),
    ((2, 8, 9, 9), (1, 1, 3, 3, 0, 0), 1, "not pointwise"),    # beyond pointwise_max_stride
    ((2, 8, 9, 9), (1, 1, 1, 1, 1, 1), 1, "not pointwise"),    # padded: a zero rim
    ((2, 8, 9, 9), (1, 1, 1, 1, 0, 0), 2, "one-gemm"),         # grouped
    ((2, 8, 9, 9), (3, 3, 1, 1, 1, 1), 1, "not pointwise")])
def test_plan_sends_ungrouped_unpadded_1x1_layers_to_pointwise(shape, window, groups,
                                                                expected):
    kh, kw, sh, sw, ph, pw = window
    plan = conv_plan.conv_algorithm(shape, (4, shape[1] // groups, kh, kw), (sh, sw),
                                    (ph, pw), 1, groups)
    passes = {plan.forward, plan.grad_input, plan.grad_weight}
    if expected == "pointwise" and conv_plan.scipy_blas() is not None:
        assert passes == {"pointwise"}
        assert any("pointwise" in reason for reason in plan.reasons)
    elif expected == "one-gemm":
        assert passes == {"one-gemm"}
    else:
        assert "pointwise" not in passes


@pytest.mark.parametrize("policy", [conv_plan.ConvPolicy(pointwise_max_stride=None),
                                    conv_plan.ConvPolicy.only("one-gemm"),
                                    conv_plan.ConvPolicy.only("per-image")])
def test_pointwise_can_be_switched_off(policy):
    plan = conv_plan.conv_algorithm((2, 8, 9, 9), (4, 8, 1, 1), 1, 0, policy=policy)
    assert "pointwise" not in {plan.forward, plan.grad_input, plan.grad_weight}


@THREADED
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 3])
def test_pointwise_conv2d_matches_torch(stride, dilation):
    # through the public conv2d: values, dtype, shape and both gradients, with a bias
    rng = np.random.default_rng(stride)
    x_np = rng.standard_normal((3, 6, 11, 10)).astype(np.float32)
    w_np = rng.standard_normal((5, 6, 1, 1)).astype(np.float32)
    b_np = rng.standard_normal(5).astype(np.float32)
    g_np = rng.standard_normal((3, 5, (11 - 1) // stride + 1, (10 - 1) // stride + 1))
    x, w, b = (tinyres.Tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x_np, w_np, b_np))
    out = F.conv2d(x, w, b, stride, 0, dilation)
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride, 0, dilation)
    out.backward(tinyres.Tensor(g_np.astype(np.float32)))
    t_out.backward(torch.tensor(g_np, dtype=torch.float32))
    assert out.shape == tuple(t_out.shape) and out.dtype == np.float32
    for mine, theirs in ((out, t_out), (x.grad, tx.grad), (w.grad, tw.grad), (b.grad, tb.grad)):
        np.testing.assert_allclose(mine.numpy(), theirs.detach().numpy(), rtol=1e-4,
                                   atol=1e-4)


@THREADED
@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
def test_pointwise_conv2d_gradcheck(stride):
    rng = np.random.default_rng(7)
    x = tinyres.Tensor(rng.standard_normal((2, 3, 5, 6)), requires_grad=True)
    w = tinyres.Tensor(rng.standard_normal((4, 3, 1, 1)), requires_grad=True)
    assert tinyres.gradcheck(lambda a, b: F.conv2d(a, b, None, stride), (x, w))


# ---------------------------------------------------------------- the GEMM paths' forward

@st.composite
def gemm_cases(draw):
    """Any window geometry (dilation included) that the GEMM paths take: (x, w2, window, g)."""
    x_shape, (kh, kw, sh, sw, ph, pw) = draw(geometries())
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    if x_shape[2] + 2 * ph < dh * (kh - 1) + 1 or x_shape[3] + 2 * pw < dw * (kw - 1) + 1:
        dh = dw = 1
    window = (kh, kw, sh, sw, ph, pw, dh, dw)
    dtype, layout, rng = draw(DTYPES), draw(LAYOUTS), np.random.default_rng(draw(SEEDS))
    oc = draw(st.integers(1, 9))
    x = random(rng, x_shape, dtype, layout)
    w2 = random(rng, (oc, x_shape[1] * kh * kw), dtype, layout)
    oh = (x_shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (x_shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return x, w2, window, random(rng, (x_shape[0], oc, oh, ow), dtype, layout)


@THREADED
@pytest.mark.parametrize("policy", [
    conv_plan.ConvPolicy.only("one-gemm"),
    conv_plan.ConvPolicy.only("per-image"),
    conv_plan.ConvPolicy(per_image_min_pixels_per_channel=None,
                         winograd_min_pixels_per_channel=None, shifted_rows_min_width=None,
                         shifted_rows_phases_min_width=None,
                         pointwise_max_stride=None, winograd_weight_grad_lanes_max_width=None,
                         phase_gemm_max_channels=None)],
    ids=["one-gemm", "per-image", "per-image forward, one-gemm gradients"])
@path_settings
@given(gemm_cases(), NEEDS)
def test_gemm_paths_match_reference(policy, case, needs):
    x, w2, window, g = case
    with conv_plan.conv_policy(policy):
        check_against_reference(x, w2, window, g, needs)


@THREADED
@path_settings
@given(gemm_cases(), st.integers(1, 300))
def test_per_image_weight_gradient_alone_matches_reference(case, min_columns):
    # with no input gradient asked for, the weight gradient's tasks take
    # per_image_weight_grad_min_columns columns: any number of images a task
    x, w2, window, g = case
    with conv_plan.conv_policy(conv_plan.ConvPolicy.only("per-image"),
                               per_image_weight_grad_min_columns=min_columns):
        check_against_reference(x, w2, window, g, (False, True))


def test_few_pixel_layers_take_winograd_in_lanes_or_one_gemm():
    # resnet18's last 3x3 layer: 49 output pixels for 512 channels, fewer than Winograd's
    # image-by-image layout asks; 7 wide (and 14), it takes Winograd in lanes for all three
    # passes where GEMMs run in Numba's threads (lanes up to 16 wide). 17 wide with 600
    # channels (289 pixels), it is too wide for lanes and has too few pixels for Winograd
    # image by image: one GEMM for the output and the input gradient, Winograd image by
    # image for the weight gradient
    plan = conv_plan.conv_algorithm((16, 512, 7, 7), (512, 512, 3, 3), 1, 1)
    fourteen = conv_plan.conv_algorithm((16, 512, 14, 14), (512, 512, 3, 3), 1, 1)
    wider = conv_plan.conv_algorithm((16, 600, 17, 17), (600, 600, 3, 3), 1, 1)
    if conv_plan.scipy_blas() is None:
        assert (plan.forward, plan.grad_input, plan.grad_weight) == ("one-gemm",) * 3
        return
    assert (plan.forward, plan.grad_input, plan.grad_weight) == ("winograd-lanes",) * 3
    assert (fourteen.forward, fourteen.grad_input, fourteen.grad_weight) == (
        "winograd-lanes",) * 3
    assert (wider.forward, wider.grad_input, wider.grad_weight) == (
        "one-gemm", "one-gemm", "winograd")
    no_lanes = conv_plan.ConvPolicy(winograd_lanes_max_width=None,
                                    winograd_weight_grad_lanes_max_width=None)
    plan = conv_plan.conv_algorithm((16, 512, 7, 7), (512, 512, 3, 3), 1, 1, policy=no_lanes)
    assert (plan.forward, plan.grad_input, plan.grad_weight) == (
        "one-gemm", "one-gemm", "winograd")
    low = dataclasses.replace(no_lanes, per_image_forward_min_pixels_per_channel=0,
                              winograd_weight_grad_min_channels=None)
    plan = conv_plan.conv_algorithm((16, 512, 7, 7), (512, 512, 3, 3), 1, 1, policy=low)
    assert (plan.forward, plan.grad_input, plan.grad_weight) == (
        "per-image", "one-gemm", "one-gemm")


@pytest.mark.parametrize("n, threads, pixels, expected", [
    (16, 2, 49, 8),      # _group's 6 images (256 columns) would leave tasks of 6, 6 and 4
    (16, 2, 784, 1), (0, 2, 49, 1), (3, 2, 1000, 2), (128, 2, 64, 4)])
def test_image_groups_are_even_over_the_threads(monkeypatch, n, threads, pixels, expected):
    monkeypatch.setattr(cpu.numba, "get_num_threads", lambda: threads)
    group = cpu._even_group(n, pixels)
    assert group == expected
    tasks = -(-n // group) if n else 0
    assert n == 0 or tasks % threads == 0 or tasks < threads


# ---------------------------------------------------------------- the CPU the kernels target

def _host_flags():
    with open("/proc/cpuinfo") as info:
        return next((line.split(":", 1)[1].split() for line in info
                     if line.startswith("flags")), [])


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="no /proc/cpuinfo")
def test_numba_compiles_for_the_host_cpu_and_its_cache_key_says_so():
    # AVX-512 (or AVX2) is used where the host has it: no CPU name or feature list is
    # pinned, and the key of Numba's on-disk cache carries the host's CPU and features,
    # so code cached on an AVX2 machine is not reused on an AVX-512 one
    import numba
    from llvmlite import binding
    from numba.core.registry import cpu_target
    assert numba.config.CPU_NAME is None and numba.config.CPU_FEATURES is None
    _, cpu_name, features = cpu_target.target_context.codegen().magic_tuple()
    assert cpu_name == binding.get_host_cpu_name()
    flags = _host_flags()
    for flag, feature in (("avx2", "+avx2"), ("avx512f", "+avx512f"), ("fma", "+fma")):
        assert (feature in features.split(",")) == (flag in flags), flag


def test_tinyres_pins_no_blas_kernel_or_cpu_target():
    # importing tinyres (and its CPU kernels) leaves the BLAS's CPU detection alone
    code = ("import os, tinyres, tinyres.kernels.cpu; print(sorted(k for k in os.environ if "
            "k.startswith(('OPENBLAS_CORETYPE', 'NUMBA_CPU_NAME', 'NUMBA_CPU_FEATURES', "
            "'MKL_ENABLE_INSTRUCTIONS', 'MKL_DEBUG_CPU_TYPE'))))")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENBLAS_CORETYPE", "NUMBA_CPU_", "MKL_"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
