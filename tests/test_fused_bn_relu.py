"""Batch norm + ReLU fused: the kernels batchnorm_relu_forward/backward of the three layers,
F.batch_norm_relu (tinyres-only) and the models' bn_relu (tinyres/models/bn_relu.py).

- Kernels: cpu.py and the CUDA C under the emulator held to reference.py, in float32 and
  float64, training and evaluation, odd shapes, N = 1 and C = 1; the reference held to
  relu(batchnorm) of its own kernels; the mask read from y (a y of zeros stops every
  gradient); a NaN in y lets its gradient through; a planted bug in the .cu (the mask
  `y < 0` instead of `y <= 0`) is caught.
- F.batch_norm_relu: equal to F.relu(F.batch_norm(...)) in float64 (values, gradients,
  running statistics) for 2-, 3- and 4-D inputs, and to torch's relu(batch_norm) on
  shapes drawn by hypothesis; gradcheck in float64 with a negative control (a backward
  without the mask fails); the errors of the unfused pair.
- Models: a CIFAR ResNet, a Bottleneck ResNet and the CIFAR pre-activation ResNets
  (basic and bottleneck blocks) fused equal themselves unfused
  (`fuse_bn_relu(False)`), running statistics and num_batches_tracked included, and the
  graph really holds the fused nodes; momentum=None as torch's cumulative average; the
  fallback to the two modules wherever the fused op could differ (hooks, a subclass, no
  running statistics); GradientProbe records unchanged.
"""
import copy
import re

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn as nn
import tinyres.nn.functional as F
from tinyres import models
from tinyres.functional import fused as F_fused
from tinyres.functional.fused import BatchNormReLU, ConvBatchNorm
from tinyres.gradcheck import GradcheckError
from tinyres.kernels import conv_plan, cpu, cuda, emulate
from tinyres.kernels import reference as ref
from tinyres.models import bn_relu as bn_relu_module
from tinyres.models.bn_relu import (bn_relu, can_fuse, can_fuse_conv, can_fuse_conv_train,
                                    can_fuse_residual, conv_bn, conv_bn_residual, fuse_bn_relu)
from tinyres.nn.utils.fusion import fold_batchnorm, fuse_conv_bn_eval
from tinyres.probes import GradientProbe
from tinyres.tensor import _topological_order

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
SHAPES = [(2, 3, 5, 7), (1, 1, 4, 3), (3, 1, 1, 1), (1, 4, 1, 2), (5, 2, 3, 1)]


def _emulated(**options):
    try:
        return emulate.backend(**options)
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def layers():
    return {"cpu": cpu, "cuda-emulated": _emulated()}


def bn_arrays(shape, dtype, seed=0):
    """x (|mean| > std in some channels), weight, bias, running mean and variance."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + rng.uniform(-1, 1, (1, c) + (1,) * (len(shape) - 2))
    vectors = [rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 1.5, c),
               rng.standard_normal(c) * 0.3,
               rng.standard_normal(c) * 0.3, rng.uniform(0.5, 2, c)]
    return [a.astype(dtype) for a in (x, *vectors)]


def run_kernels(layer, shape, dtype, training, seed=0):
    """Forward then backward of one layer: y, mean, invstd, running stats, 3 gradients."""
    x, w, b, rm, rv = bn_arrays(shape, dtype, seed)
    y, mean, invstd = layer.batchnorm_relu_forward(x, w, b, rm, rv, 0.1, 1e-5, training)
    g = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    grads = layer.batchnorm_relu_backward(g, y, x, w, mean, invstd, training)
    return (y, mean, invstd, rm, rv) + tuple(grads)


def assert_all_close(got, want, dtype, what):
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape, f"{what} output {k}"
        np.testing.assert_allclose(a, b, err_msg=f"{what} output {k}", **TOL[dtype])


# ----------------------------------------------------------------- the kernel layers
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", ["cpu", "cuda-emulated"])
def test_kernel_layers_match_the_reference(layers, name, shape, dtype, training):
    want = run_kernels(ref, shape, dtype, training)
    if want[0].size >= 12:              # the ReLU cuts somewhere, and lets some through
        assert (want[0] == 0).any() and (want[0] > 0).any()
    assert_all_close(run_kernels(layers[name], shape, dtype, training), want, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_reference_is_relu_of_its_batch_norm(dtype):
    shape = (3, 4, 5, 2)
    x, w, b, rm, rv = bn_arrays(shape, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    y, mean, invstd = ref.batchnorm_relu_forward(x, w, b, rm, rv, 0.3, 1e-5)
    bn, mean2, invstd2 = ref.batchnorm_forward(x, w, b, rm2, rv2, 0.3, 1e-5)
    for a, e in ((y, ref.relu_forward(bn)), (mean, mean2), (invstd, invstd2), (rm, rm2),
                 (rv, rv2)):
        np.testing.assert_array_equal(a, e)
    g = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    fused = ref.batchnorm_relu_backward(g, y, x, w, mean, invstd)
    unfused = ref.batchnorm_backward(ref.relu_backward(g, bn), x, w, mean, invstd)
    for a, e in zip(fused, unfused):
        np.testing.assert_array_equal(a, e)


def test_reference_evaluation_uses_the_running_statistics():
    x, w, b, rm, rv = bn_arrays((2, 3, 4, 4), np.float64)
    before = rm.copy(), rv.copy()
    y, mean, invstd = ref.batchnorm_relu_forward(x, w, b, rm, rv, 0.1, 1e-5, training=False)
    scale = (w / np.sqrt(rv + 1e-5))[None, :, None, None]
    np.testing.assert_allclose(y, np.maximum((x - rm[None, :, None, None]) * scale
                                             + b[None, :, None, None], 0), rtol=1e-13)
    np.testing.assert_array_equal(mean, rm)
    np.testing.assert_array_equal(rm, before[0]), np.testing.assert_array_equal(rv, before[1])
    g = np.ones_like(x)
    grad_x, grad_w, grad_b = ref.batchnorm_relu_backward(g, y, x, w, mean, invstd, False)
    np.testing.assert_allclose(grad_x, (y > 0) * scale, rtol=1e-13)
    np.testing.assert_allclose(grad_b, (y > 0).sum(axis=(0, 2, 3)), rtol=1e-13)


@pytest.mark.parametrize("name", ["reference", "cpu", "cuda-emulated"])
def test_the_mask_is_read_from_y(layers, name):
    layer = ref if name == "reference" else layers[name]
    x, w, b, rm, rv = bn_arrays((2, 3, 4, 4), np.float64)
    y, mean, invstd = layer.batchnorm_relu_forward(x, w, b, rm, rv, 0.1, 1e-5)
    g = np.ones_like(x)
    for training in (True, False):      # y all cut: no gradient anywhere
        grads = layer.batchnorm_relu_backward(g, np.zeros_like(y), x, w, mean, invstd,
                                              training)
        assert all(not a.any() for a in grads), training
    y_nan = np.full_like(y, -1.0)
    y_nan[1, 2, 3, 0] = np.nan          # a NaN lets its gradient through (as relu_backward)
    grad_x, _, grad_b = layer.batchnorm_relu_backward(g, y_nan, x, w, mean, invstd, False)
    assert grad_x[1, 2, 3, 0] == pytest.approx(w[2] * invstd[2]) and grad_b[2] == 1
    assert np.count_nonzero(grad_x) == 1


@pytest.mark.parametrize("name", ["reference", "cpu", "cuda-emulated"])
def test_every_layer_refuses_one_value_per_channel_only_in_training(layers, name):
    layer = ref if name == "reference" else layers[name]
    x, w, b, rm, rv = bn_arrays((1, 3, 1, 1), np.float32)
    with pytest.raises(ValueError, match="batchnorm_relu_forward: expected more than one"):
        layer.batchnorm_relu_forward(x, w, b, rm, rv, 0.1, 1e-5, True)
    y, mean, invstd = layer.batchnorm_relu_forward(x, w, b, rm, rv, 0.1, 1e-5, False)
    assert y.shape == x.shape
    with pytest.raises(ValueError, match="batchnorm_relu_forward: evaluation"):
        layer.batchnorm_relu_forward(x, w, b, None, rv, 0.1, 1e-5, False)
    with pytest.raises(ValueError, match=r"batchnorm_relu_backward: y must have shape"):
        layer.batchnorm_relu_backward(x, y[:, :2], x, w, mean, invstd, False)


def test_a_planted_mask_bug_in_the_cuda_source_is_caught():
    # one mask (output_grad) serves the plain and fused backward's reduction and apply:
    # planted there, the bug shows in the sums (grad_weight, grad_bias) and in the
    # evaluation-mode grad_x, which only the apply writes
    source = cuda.read_source("batchnorm.cu")
    good = "return y[i] <= T(0) ? T(0) : grad_out[i];"
    assert source.count(good) == 1
    bad = _emulated(sources={"batchnorm.cu": source.replace(good, good.replace("<=", "<"))})
    shape, dtype = (2, 3, 5, 7), np.float64
    for training, outputs in ((True, (6, 7)), (False, (5,))):    # grad_w, grad_b; grad_x
        got = run_kernels(bad, shape, dtype, training)
        want = run_kernels(ref, shape, dtype, training)
        for k in outputs:
            assert not np.allclose(got[k], want[k], **TOL[dtype]), (training, k)


@pytest.mark.parametrize("kernel", ["batchnorm_relu_forward", "batchnorm_relu_backward"])
def test_the_fused_launchers_refuse_arrays_on_another_device(kernel):
    launched = []
    launchers = cuda.Launchers(np, lambda name, dtype: lambda *a: launched.append(name),
                               devices=(lambda a: 1, lambda: 0))   # arrays on cuda:1
    x, w, b, rm, rv = bn_arrays((2, 3, 2, 2), np.float32)
    first = "x" if kernel == "batchnorm_relu_forward" else "grad_out"
    with pytest.raises(RuntimeError, match=rf"^{kernel}: array {first} is on cuda:1 but the "
                                           r"kernel runs on the current device cuda:0"):
        if kernel == "batchnorm_relu_forward":
            launchers.batchnorm_relu_forward(x, w, b, rm, rv, 0.1, 1e-5)
        else:
            launchers.batchnorm_relu_backward(x, x, x, w, rm, rv)
    assert launched == []


def test_the_fused_cuda_kernels_are_parsed():
    names = cuda.kernel_signatures(cuda.read_source("batchnorm.cu"))
    assert {"batchnorm_relu_apply", "batchnorm_relu_backward_reduce",
            "batchnorm_relu_backward_apply"} <= set(names)
    assert names["batchnorm_relu_backward_apply"][-1] == ("int", "batch_stats")


# ----------------------------------------------------------------- F.batch_norm_relu
def tensors(arrays, grad=True):
    x, w, b, rm, rv = arrays
    return ([tinyres.tensor(a, requires_grad=grad) for a in (x, w, b)]
            + [tinyres.tensor(a.copy()) for a in (rm, rv)])


def run_functional(fn, arrays, training, momentum=0.1, affine=True):
    """fn(x, rm, rv, w, b, ...) with a random output weighting backwarded: the output,
    the three gradients and the running statistics after the call, as arrays."""
    x, w, b, rm, rv = tensors(arrays)
    out = fn(x, rm, rv, w if affine else None, b if affine else None, training, momentum,
             1e-5)
    weights = np.random.default_rng(9).standard_normal(out.shape).astype(out.dtype)
    (out * tinyres.tensor(weights)).sum().backward()
    grads = [t.grad.numpy() if t.grad is not None else None for t in (x, w, b)]
    return [out.numpy(), *grads, rm.numpy(), rv.numpy()]


def unfused(x, rm, rv, w, b, training, momentum, eps):
    return F.relu(F.batch_norm(x, rm, rv, w, b, training, momentum, eps))


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 4, 5), (1, 1, 3, 3)], ids=str)
def test_functional_equals_the_unfused_pair_in_float64(shape, training, affine):
    arrays = bn_arrays(shape, np.float64)
    got = run_functional(F.batch_norm_relu, arrays, training, affine=affine)
    want = run_functional(unfused, arrays, training, affine=affine)
    assert got[0].shape == shape and got[0].dtype == np.float64
    for a, e, what in zip(got, want, ("y", "grad x", "grad w", "grad b", "mean", "var")):
        if e is None:
            assert a is None, what
        else:
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-13, err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_functional_float32_and_float64_keep_their_dtype(dtype):
    got = run_functional(F.batch_norm_relu, bn_arrays((3, 2, 4, 4), dtype), True)
    want = run_functional(unfused, bn_arrays((3, 2, 4, 4), dtype), True)
    for a, e in zip(got, want):
        assert a.dtype == e.dtype == dtype
        np.testing.assert_allclose(a, e, **TOL[dtype])


def torch_run(torch, arrays, training, momentum):
    x, w, b, rm, rv = (torch.tensor(a, requires_grad=i < 3) for i, a in enumerate(arrays))
    rm, rv = rm.detach().clone(), rv.detach().clone()
    out = torch.relu(torch.nn.functional.batch_norm(x, rm, rv, w, b, training, momentum,
                                                    1e-5))
    weights = np.random.default_rng(9).standard_normal(tuple(out.shape))
    (out * torch.tensor(weights)).sum().backward()
    return [out.detach().numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy(),
            rm.numpy(), rv.numpy()]


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 5), h=st.integers(1, 6), w=st.integers(1, 6),
       training=st.booleans(), momentum=st.sampled_from([0.1, 0.5, 1.0]),
       seed=st.integers(0, 2 ** 16))
def test_functional_equals_torch_relu_of_batch_norm(n, c, h, w, training, momentum, seed):
    torch = pytest.importorskip("torch")
    if training and n * h * w == 1:
        return                  # refused by both: test_errors_are_the_unfused_pairs
    arrays = bn_arrays((n, c, h, w), np.float64, seed)
    got = run_functional(F.batch_norm_relu, arrays, training, momentum)
    want = torch_run(torch, arrays, training, momentum)
    for a, e, what in zip(got, want, ("y", "grad x", "grad w", "grad b", "mean", "var")):
        assert a.shape == e.shape and a.dtype == e.dtype, what
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(3, 2, 3, 2), (4, 3), (2, 1, 5)], ids=str)
def test_gradcheck_float64(shape, training):
    x, w, b, rm, rv = tensors(bn_arrays(shape, np.float64, seed=3))
    assert tinyres.gradcheck(
        lambda x, w, b: F.batch_norm_relu(x, rm, rv, w, b, training, 0.1, 1e-5), [x, w, b])


class NoMask(BatchNormReLU):
    """A wrong backward (negative control): batch norm's gradient without the ReLU's mask."""

    @staticmethod
    def backward(ctx, grad_out):
        # deliberately wrong: d bn/dx, the mask forgotten
        y, x4, w, mean, invstd = ctx.saved_tensors
        return ref.batchnorm_backward(grad_out, x4, w, mean, invstd)


def test_gradcheck_catches_a_backward_without_the_mask():
    x, w, b, rm, rv = tensors(bn_arrays((3, 2, 3, 2), np.float64, seed=3))
    with pytest.raises(GradcheckError):
        tinyres.gradcheck(lambda x, w, b: NoMask.apply(
            x, w, b, running_mean=None, running_var=None, training=True, momentum=0.1,
            eps=1e-5), [x, w, b])


def _error_of(call):
    try:
        call()
    except Exception as e:      # noqa: BLE001 - the class is what is compared
        return e
    raise AssertionError("no error raised")


@pytest.mark.parametrize("case", ["one value", "running_mean shape", "weight dtype",
                                  "eval without stats", "1-D input"])
def test_errors_are_the_unfused_pairs(case):
    x, w, b, rm, rv = tensors(bn_arrays((1, 3, 1, 1), np.float32), grad=False)
    training = True
    if case == "running_mean shape":
        x, rm = tinyres.randn(4, 3, 2, 2), tinyres.zeros(4)
    elif case == "weight dtype":
        x, w = tinyres.randn(4, 3, 2, 2), w.double()
    elif case == "eval without stats":
        rm, training = None, False
    elif case == "1-D input":
        x = tinyres.randn(3)
    ours = _error_of(lambda: F.batch_norm_relu(x, rm, rv, w, b, training, 0.1, 1e-5))
    theirs = _error_of(lambda: unfused(x, rm, rv, w, b, training, 0.1, 1e-5))
    assert type(ours) is type(theirs), (ours, theirs)
    assert re.match(r"batch_?norm_relu(_forward)?: ", str(ours)), ours


def test_momentum_none_is_a_type_error_as_in_torch():
    torch = pytest.importorskip("torch")
    x, w, b, rm, rv = tensors(bn_arrays((2, 3, 2, 2), np.float32), grad=False)
    with pytest.raises(TypeError, match="batch_norm_relu: momentum must be a float"):
        F.batch_norm_relu(x, rm, rv, w, b, True, None)
    with pytest.raises(TypeError):
        torch.nn.functional.batch_norm(torch.zeros(2, 3, 2, 2), None, None, None, None,
                                       True, None)


# ----------------------------------------------------------------- the models
def fused_nodes(out, function=BatchNormReLU):
    """How many nodes of the graph ending at out run `function`."""
    return sum(t._ctx is not None and t._ctx.function is function
               for t in _topological_order(out))


def train_step(model, x, target, fused):
    with fuse_bn_relu(fused):
        xt = tinyres.tensor(x, requires_grad=True)
        out = model(xt)
        loss = F.cross_entropy(out, tinyres.tensor(target))
        loss.backward()
    grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    return out, [out.numpy(), xt.grad.numpy()], grads, state


def assert_steps_equal(model, x, target, expected_nodes, expected_conv_nodes=0, tol=1e-12):
    """A step with fusion equals one without; the fused graph holds expected_nodes
    BatchNormReLU and expected_conv_nodes ConvBatchNorm nodes, the unfused one neither."""
    twin = copy.deepcopy(model)
    out, got, grads, state = train_step(model, x, target, fused=True)
    out_u, want, grads_u, state_u = train_step(twin, x, target, fused=False)
    assert fused_nodes(out) == expected_nodes and fused_nodes(out_u) == 0
    assert fused_nodes(out, ConvBatchNorm) == expected_conv_nodes
    assert fused_nodes(out_u, ConvBatchNorm) == 0
    pairs = [("output", got[0], want[0]), ("input grad", got[1], want[1])]
    pairs += [(k, grads[k], grads_u[k]) for k in grads_u]
    assert state.keys() == state_u.keys()
    pairs += [(k, state[k], state_u[k]) for k in state_u]   # running stats, batches tracked
    for what, a, e in pairs:    # to tol of each array's largest entry
        scale = float(np.abs(e).max()) if e.size else 0.0
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * max(scale, 1.0), err_msg=what)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_cifar_resnet_fused_equals_unfused(train):
    model = models.resnet.CifarResNet(1).double().train(train)
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((3, 3, 8, 8)), rng.integers(0, 10, 3)
    if train:     # conv_bn's one op: the stem, a bn1 and a bn2 a block (3 blocks)
        assert_steps_equal(model, x, target, expected_nodes=0, expected_conv_nodes=1 + 2 * 3)
    else:         # the graph recorded: convolution, then bn_relu (the stem, a bn1 a block)
        assert_steps_equal(model, x, target, expected_nodes=1 + 3)


def test_bottleneck_resnet_fused_equals_unfused():
    model = models.resnet.ResNet(models.Bottleneck, [1, 1, 1, 1], num_classes=5).double()
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((2, 3, 16, 16)), rng.integers(0, 5, 2)
    # conv_bn's one op: the stem, and bn1, bn2 and bn3 of each of the 4 blocks (the
    # downsampling shortcuts are nn.Sequential(conv, bn), called as modules)
    assert_steps_equal(model, x, target, expected_nodes=0, expected_conv_nodes=1 + 3 * 4)


@pytest.mark.parametrize("block", ["PreActBlock", "PreActBottleneck"])
def test_preact_resnet_fused_equals_unfused(block):
    cls = getattr(models, block)
    model = models.CifarPreActResNet(cls, 1).double()
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((2, 3, 8, 8)), rng.integers(0, 10, 2)
    # the stem, the blocks' BN + ReLU pairs ("none", then "shared" ones) and bn_final
    per_block = 1 if block == "PreActBlock" else 2
    assert_steps_equal(model, x, target, expected_nodes=1 + per_block + 2 * (per_block + 1)
                       + 1)


class BnReluNet(nn.Module):
    """conv -> bn -> relu through bn_relu: the smallest place to watch the fallback."""

    def __init__(self, bn=None):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn = bn if bn is not None else nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return bn_relu(self.bn, self.relu, self.conv(x))


def test_momentum_none_is_torchs_cumulative_average():
    torch = pytest.importorskip("torch")
    ours = BnReluNet(nn.BatchNorm2d(3, momentum=None)).double()
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1, bias=False),
                                 torch.nn.BatchNorm2d(3, momentum=None), torch.nn.ReLU())
    theirs = theirs.double()
    with torch.no_grad():
        theirs[0].weight.copy_(torch.tensor(ours.conv.weight.numpy()))
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = rng.standard_normal((2, 2, 5, 5)) * 2 + 1
        out = ours(tinyres.tensor(x))
        assert fused_nodes(out) == 1
        np.testing.assert_allclose(out.numpy(), theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(getattr(ours.bn, name).numpy(),
                                   getattr(theirs[1], name).numpy(), rtol=1e-12, err_msg=name)
    assert int(ours.bn.num_batches_tracked.item()) == 3


def test_the_fused_path_is_taken_for_plain_modules_only():
    x = tinyres.randn(2, 2, 4, 4)
    net = BnReluNet()
    assert can_fuse(net.bn, net.relu, x)
    with fuse_bn_relu(False):
        assert not can_fuse(net.bn, net.relu, x)
    assert can_fuse(net.bn, net.relu, x)
    assert not can_fuse(net.bn, net.relu, tinyres.randn(2, 2, 4))
    assert not can_fuse(nn.BatchNorm2d(2, track_running_stats=False), net.relu, x)
    assert not can_fuse(nn.SyncBatchNorm(2), net.relu, x)
    assert not can_fuse(type("MyBN", (nn.BatchNorm2d,), {})(2), net.relu, x)
    assert not can_fuse(net.bn, nn.LeakyReLU(), x)
    handle = net.relu.register_full_backward_hook(lambda *args: None)
    assert not can_fuse(net.bn, net.relu, x)
    handle.remove()
    assert can_fuse(net.bn, net.relu, x)


def test_a_forward_hook_on_the_bn_still_sees_its_output():
    net = BnReluNet().double()
    seen = []
    net.bn.register_forward_hook(lambda m, args, out: seen.append(out.numpy().copy()))
    x = tinyres.tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)),
                       requires_grad=True)
    out = net(x)
    assert fused_nodes(out) == 0 and len(seen) == 1 and (seen[0] < 0).any()
    np.testing.assert_array_equal(out.numpy(), np.maximum(seen[0], 0))


@pytest.mark.parametrize("track", [True, False], ids=["tracking", "not-tracking"])
def test_evaluation_with_and_without_running_statistics_matches_torch(track):
    torch = pytest.importorskip("torch")
    ours = BnReluNet(nn.BatchNorm2d(3, track_running_stats=track)).double().eval()
    theirs = torch.nn.BatchNorm2d(3, track_running_stats=track).double().eval()
    x = np.random.default_rng(4).standard_normal((2, 2, 4, 4))
    conv = ours.conv(tinyres.tensor(x))
    out = ours(tinyres.tensor(x))
    np.testing.assert_allclose(out.numpy(), torch.relu(theirs(torch.tensor(conv.numpy())))
                               .detach().numpy(), rtol=1e-12, atol=1e-12)


def test_gradient_probe_records_are_those_of_the_unfused_model():
    model = models.resnet.CifarResNet(1).double()
    twin = copy.deepcopy(model)
    rng = np.random.default_rng(3)
    x, target = rng.standard_normal((2, 3, 8, 8)), rng.integers(0, 10, 2)
    rows = []
    for m, fused in ((model, True), (twin, False)):
        with GradientProbe(m) as probe:
            train_step(m, x, target, fused)
        rows.append(probe.records())
    assert len(rows[0]) == len(rows[1]) == 3
    for a, b in zip(*rows):
        for key, value in b.items():
            if isinstance(value, float) and not np.isnan(value):
                assert a[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key


# ----- conv_bn: in evaluation, batch norm and the ReLU in the convolution's epilogue -----
def _trained_eval(model, x_shape, seed=0):
    """model with running statistics of its own (two training batches), in eval mode."""
    rng = np.random.default_rng(seed)
    model.train()
    with tinyres.no_grad():
        for _ in range(2):
            model(tinyres.tensor(rng.standard_normal(x_shape).astype(np.float32)))
    return model.eval()


@pytest.mark.parametrize("build, x_shape", [
    (lambda: models.resnet20(), (4, 3, 32, 32)),
    (lambda: models.resnet18(num_classes=7), (2, 3, 64, 64)),
    (lambda: models.resnet.ResNet(models.Bottleneck, [1, 1, 1, 1], num_classes=5),
     (2, 3, 32, 32)),
], ids=["resnet20", "resnet18", "bottleneck"])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("folded", [False, True], ids=["bn", "folded"])
def test_conv_bn_inference_is_the_modules_to_the_last_bit(build, x_shape, mode, folded):
    # folded: fold_batchnorm's model (each bn an nn.Identity, each conv with a bias)
    tinyres.manual_seed(0)
    model = _trained_eval(build(), x_shape)
    if folded:
        model = fold_batchnorm(model)
    x = tinyres.tensor(np.random.default_rng(1).standard_normal(x_shape).astype(np.float32))
    context = tinyres.no_grad if mode == "no_grad" else tinyres.inference_mode
    with context():
        assert can_fuse_conv(model.conv1, model.bn1, model.relu, x)
        fused = model(x)
        with fuse_bn_relu(False):
            modules = model(x)
    np.testing.assert_array_equal(fused.numpy(), modules.numpy())
    assert not fused.requires_grad


def _count_residuals(monkeypatch):
    """Each CPU conv2d_forward call's residual scale (None: no residual), and each
    residual_add that conv_bn_residual's separate ops ran."""
    calls, adds = [], []
    real_conv, real_add = cpu.conv2d_forward, bn_relu_module.residual_add
    monkeypatch.setattr(cpu, "conv2d_forward", lambda *a, **k: calls.append(
        k.get("residual_scale") if k.get("residual") is not None else None)
        or real_conv(*a, **k))
    monkeypatch.setattr(bn_relu_module, "residual_add",
                        lambda *a, **k: adds.append(a[2]) or real_add(*a, **k))
    return calls, adds


@pytest.mark.parametrize("build, x_shape, blocks", [
    (lambda: models.resnet20(), (3, 3, 32, 32), 9),
    (lambda: models.resnet20(shortcut_scale=0.5), (3, 3, 32, 32), 9),
    (lambda: models.resnet18(num_classes=7), (2, 3, 64, 64), 8),
    (lambda: models.resnet.ResNet(models.Bottleneck, [1, 2, 1, 1], num_classes=5),
     (2, 3, 32, 32), 5),
], ids=["resnet20", "resnet20-lambda-0.5", "resnet18", "bottleneck"])
def test_a_block_ends_in_its_last_convolution_in_inference(monkeypatch, build, x_shape,
                                                           blocks):
    # relu(bn2(conv2(out)) + lambda * shortcut) in conv2's epilogue: one convolution with a
    # residual a block (option-A, projection and identity shortcuts), no residual_add,
    # the values of the separate ops to the last bit
    tinyres.manual_seed(0)
    model = _trained_eval(build(), x_shape)
    lam = model.layer1[0].shortcut_scale
    x = tinyres.tensor(np.random.default_rng(2).standard_normal(x_shape).astype(np.float32))
    calls, adds = _count_residuals(monkeypatch)
    with tinyres.no_grad():
        fused = model(x)
        assert [c for c in calls if c is not None] == [lam] * blocks and adds == []
        calls.clear()
        with fuse_bn_relu(False):
            separate = model(x)
    assert all(c is None for c in calls) and adds == []    # the blocks' own residual_add
    np.testing.assert_array_equal(fused.numpy(), separate.numpy())


def test_a_block_ends_with_the_separate_ops_wherever_they_could_differ(monkeypatch):
    tinyres.manual_seed(0)
    model = _trained_eval(models.resnet20(), (2, 3, 32, 32))
    block = model.layer1[0]
    x = tinyres.tensor(np.random.default_rng(3).standard_normal((2, 16, 32, 32))
                       .astype(np.float32))
    with tinyres.no_grad():
        expected = block(x).numpy()
        assert can_fuse_residual(block, block.conv2, block.bn2, x)
        seen = []                                   # a hook on bn2: the modules, it sees bn2
        handle = block.bn2.register_forward_hook(lambda m, args, out: seen.append(out))
        assert not can_fuse_residual(block, block.conv2, block.bn2, x)
        np.testing.assert_array_equal(block(x).numpy(), expected)
        assert len(seen) == 1
        handle.remove()
        plain = models.resnet20(shortcut=None).eval().layer1[0]      # the plain twin
        assert not plain.residual and not can_fuse_residual(plain, plain.conv2, plain.bn2, x)
    with GradientProbe(model):                       # a probe: the separate ops, taps and all
        assert not can_fuse_residual(block, block.conv2, block.bn2, x)
    recorded = block(x.requires_grad_())             # a graph to record (bn1 and its ReLU
    np.testing.assert_allclose(recorded.numpy(), expected, rtol=1e-5, atol=1e-5)  # as an op)
    assert recorded.requires_grad
    calls, adds = _count_residuals(monkeypatch)
    shortcut = tinyres.tensor(x.numpy(), requires_grad=True)
    with tinyres.no_grad():
        h = conv_bn(block.conv1, block.bn1, x.detach(), block.relu)
    for model_param in model.parameters():
        model_param.requires_grad_(False)
    # the shortcut alone records a graph: conv_bn_residual's separate ops, its gradient 1
    out = conv_bn_residual(block.conv2, block.bn2, h, shortcut, 1.0, block.relu)
    assert adds == [1.0] and out.requires_grad
    np.testing.assert_array_equal(out.numpy(), expected)
    out.sum().backward()
    np.testing.assert_array_equal(shortcut.grad.numpy(), (expected > 0).astype(np.float32))
    with tinyres.no_grad():                          # a shortcut of the wrong shape: its error
        with pytest.raises(ValueError, match=r"residual_add: the branch \(2, 16, 32, 32\) "
                                             r"and the shortcut \(2, 16, 16, 16\)"):
            conv_bn_residual(block.conv2, block.bn2, h, shortcut.detach()[:, :, ::2, ::2],
                             1.0, block.relu)


def test_conv_bn_runs_the_kernels_once_in_evaluation_and_the_modules_otherwise(monkeypatch):
    net = BnReluNet()
    _trained_eval(net, (2, 2, 5, 5))
    x = tinyres.randn(2, 2, 5, 5)
    calls = []
    real = cpu.conv2d_forward
    monkeypatch.setattr(cpu, "conv2d_forward",
                        lambda *a, **k: calls.append(k.get("scale") is not None) or real(*a, **k))
    with tinyres.no_grad():
        out = conv_bn(net.conv, net.bn, x, net.relu)
        assert can_fuse_conv(net.conv, net.bn, net.relu, x)
    assert calls == [True]                                  # one convolution, its epilogue
    expected = net.relu(net.bn(net.conv(x)))
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    calls.clear()
    recorded = conv_bn(net.conv, net.bn, x, net.relu)       # a graph to record: the modules
    assert calls == [False] and recorded.requires_grad
    recorded.sum().backward()
    assert net.conv.weight.grad is not None


def test_conv_bn_calls_the_modules_wherever_the_fused_pass_could_differ():
    net = BnReluNet()
    _trained_eval(net, (2, 2, 5, 5))
    x = tinyres.randn(2, 2, 5, 5)
    with tinyres.no_grad():
        assert can_fuse_conv(net.conv, net.bn, net.relu, x)
        assert can_fuse_conv(net.conv, net.bn, None, x)
        with fuse_bn_relu(False):
            assert not can_fuse_conv(net.conv, net.bn, net.relu, x)
        net.bn.train()
        assert not can_fuse_conv(net.conv, net.bn, net.relu, x)     # batch statistics
        net.bn.eval()
        assert not can_fuse_conv(net.conv, net.bn, net.relu, x.double())
        mixed = nn.BatchNorm2d(3)                            # float64 affine, float32 stats
        mixed.weight.data = mixed.weight.data.double()
        mixed.eval()
        assert not can_fuse_conv(net.conv, mixed, net.relu, x)
        with pytest.raises(TypeError, match="weight is float64 but the input is float32"):
            conv_bn(net.conv, mixed, x, net.relu)            # bn_relu's own error
        assert not can_fuse_conv(net.conv, net.bn, net.relu, tinyres.randn(2, 3, 5, 5))
        assert not can_fuse_conv(net.conv, net.bn, nn.LeakyReLU(), x)
        for conv in (nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 3, padding="same"),
                     nn.Conv2d(2, 3, 3, padding=1, bias=False, padding_mode="reflect"),
                     type("MyConv", (nn.Conv2d,), {})(2, 3, 3, padding=1, bias=False)):
            assert not can_fuse_conv(conv, net.bn, net.relu, x)
        seen = []
        handle = net.conv.register_forward_hook(lambda m, args, out: seen.append(out))
        assert not can_fuse_conv(net.conv, net.bn, net.relu, x)
        conv_bn(net.conv, net.bn, x, net.relu)
        assert len(seen) == 1                               # the hook saw the convolution
        handle.remove()
    assert not can_fuse_conv(net.conv, net.bn, net.relu, x)  # grad enabled, weights need it


def test_conv_bn_of_a_folded_conv_runs_its_bias_and_relu_in_the_epilogue(monkeypatch):
    net = _trained_eval(BnReluNet(), (2, 2, 5, 5))
    conv, identity = fuse_conv_bn_eval(net.conv, net.bn), nn.Identity()
    x = tinyres.randn(2, 2, 5, 5)
    calls = []
    real = cpu.conv2d_forward
    monkeypatch.setattr(cpu, "conv2d_forward", lambda *a, **k: calls.append(
        (k.get("bias") is not None, k.get("scale"), k.get("relu"))) or real(*a, **k))
    with tinyres.no_grad():
        out = conv_bn(conv, identity, x, net.relu)
        assert calls == [(True, None, True)]                # one convolution, its epilogue
        expected = net.relu(identity(conv(x)))
        np.testing.assert_array_equal(out.numpy(), expected.numpy())
        calls.clear()
        conv_bn(conv, identity, x)                          # no ReLU: the bias alone
        assert calls == [(True, None, False)]
        assert can_fuse_conv(nn.Conv2d(2, 3, 3, padding=1, bias=False), identity, None, x)
        with fuse_bn_relu(False):
            assert not can_fuse_conv(conv, identity, net.relu, x)
        assert not can_fuse_conv(conv, type("MyIdentity", (nn.Identity,), {})(), net.relu, x)
        assert not can_fuse_conv(conv, identity, net.relu, x.double())    # float32 bias
        seen = []
        handle = identity.register_forward_hook(lambda m, args, out: seen.append(out))
        assert not can_fuse_conv(conv, identity, net.relu, x)
        conv_bn(conv, identity, x, net.relu)
        assert len(seen) == 1                               # the hook saw its output
        handle.remove()
    assert not can_fuse_conv(conv, identity, net.relu, x)   # grad enabled, weights need it


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_bn_inference_matches_torch(dtype):
    # torch's resnet20 with running statistics of its own, its weights loaded into
    # tinyres's: the same inference under no_grad (float64 to rounding, float32 within
    # what its Winograd sums move)
    torch = pytest.importorskip("torch")
    import torch_resnets
    torch.manual_seed(0)
    theirs = torch_resnets.resnet20().to(torch.float64 if dtype == np.float64 else torch.float32)
    rng = np.random.default_rng(5)
    with torch.no_grad():
        for _ in range(2):
            theirs(torch.tensor(rng.standard_normal((8, 3, 32, 32)).astype(dtype)))
    theirs.eval()
    ours = models.from_state_dict("resnet20", {k: v.numpy() for k, v in
                                               theirs.state_dict().items()}, dtype=dtype).eval()
    x = rng.standard_normal((4, 3, 32, 32)).astype(dtype)
    with tinyres.no_grad():
        assert can_fuse_conv(ours.conv1, ours.bn1, ours.relu, tinyres.tensor(x))
        out = ours(tinyres.tensor(x)).numpy()
    with torch.no_grad():
        expected = theirs(torch.tensor(x)).numpy()
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


# ----- conv_bn in training: batch norm's statistics from the convolution's epilogue -----
# (layout, x shape, weight shape, stride, padding, groups, policy changes): one case for
# every forward path of the CPU layer; the plan is asserted, so a case that stops reaching
# its path fails (the tasks shared as on two threads: F(4x4, 3x3)'s lanes take tasks of 8)
CONV_PATHS = [
    ("winograd", (2, 16, 17, 19), (16, 16, 3, 3), 1, 1, 1, {"winograd_lanes_max_width": 8}),
    ("winograd-lanes", (4, 32, 9, 15), (32, 32, 3, 3), 1, 1, 1, {}),
    ("winograd-4x4-lanes", (16, 8, 9, 16), (8, 8, 3, 3), 1, 1, 1, {}),
    ("winograd-4x4", (2, 64, 28, 29), (64, 64, 3, 3), 1, 1, 1, {}),
    ("phase-gemm", (4, 16, 15, 16), (32, 16, 3, 3), 2, 1, 1, {"phase_gemm_max_channels": 64}),
    ("pointwise", (2, 8, 9, 9), (6, 8, 1, 1), 2, 0, 1, {}),
    ("per-image", (2, 3, 11, 10), (5, 3, 3, 3), 1, 1, 1, {}),
    ("one-gemm", (2, 4, 9, 9), (6, 2, 3, 3), 1, 1, 2, {}),
]


def conv_bn_arrays(x_shape, w_shape, dtype, seed=0):
    """x, w2 and batch norm's weight, bias, running mean and variance for the output's
    channels (the output's mean well away from zero, so that the variance's sums cancel)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(x_shape) + 3).astype(dtype)
    w2 = rng.standard_normal((w_shape[0], int(np.prod(w_shape[1:])))).astype(dtype)
    return [x, w2] + bn_arrays((1, w_shape[0], 1, 1), dtype, seed)[1:]


def conv_bn_unfused(layer, x, w2, geometry, groups, vectors, relu):
    """conv2d_forward, then batchnorm_(relu_)forward of its output, on `layer`:
    (out, y, mean, invstd, running_mean, running_var)."""
    w, b, rm, rv = (v.copy() for v in vectors)
    out = layer.conv2d_forward(x, w2, *geometry, 1, 1, groups)
    if relu:
        y, mean, invstd = layer.batchnorm_relu_forward(out, w, b, rm, rv, 0.1, 1e-5, True)
    else:
        y, mean, invstd = layer.batchnorm_forward(out, w, b, rm, rv, 0.1, 1e-5)
    return out, y, mean, invstd, rm, rv


def conv_bn_fused(layer, x, w2, geometry, groups, vectors, relu):
    w, b, rm, rv = (v.copy() for v in vectors)
    return layer.conv2d_batchnorm_forward(x, w2, *geometry, 1, 1, groups, w, b, rm, rv, 0.1,
                                          1e-5, relu) + (rm, rv)


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("path", CONV_PATHS, ids=[case[0] for case in CONV_PATHS])
def test_conv_batchnorm_forward_is_the_two_kernels_to_the_last_bit(monkeypatch, path, dtype,
                                                                   relu):
    layout, x_shape, w_shape, stride, padding, groups, changes = path
    x, w2, *vectors = conv_bn_arrays(x_shape, w_shape, dtype)
    geometry = w_shape[2:] + (stride, stride, padding, padding)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    with conv_plan.conv_policy(**changes):
        plan = conv_plan.conv_algorithm(x_shape, w_shape, stride, padding, 1, groups)
        assert plan.forward == layout
        assert cpu._winograd_layout(plan.forward, x_shape[0]) == layout
        got = conv_bn_fused(cpu, x, w2, geometry, groups, vectors, relu)
        want = conv_bn_unfused(cpu, x, w2, geometry, groups, vectors, relu)
    for k, (a, e) in enumerate(zip(got, want)):
        assert a.dtype == e.dtype == dtype, k
        np.testing.assert_array_equal(a, e, err_msg=f"output {k}")
    reference = conv_bn_fused(ref, x, w2, geometry, groups, vectors, relu)
    tol = 1e-4 if dtype == np.float32 else 1e-12    # of each array's largest entry
    for k, (a, e) in enumerate(zip(got, reference)):
        scale = max(float(np.abs(e).max()), 1.0)
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale, err_msg=f"output {k}")


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
def test_conv_batchnorm_forward_of_the_emulated_cuda_layer_is_the_reference(layers, relu):
    x, w2, *vectors = conv_bn_arrays((2, 3, 6, 5), (4, 3, 3, 3), np.float64)
    geometry = (3, 3, 2, 1, 1, 1)
    got = conv_bn_fused(layers["cuda-emulated"], x, w2, geometry, 1, vectors, relu)
    want = conv_bn_unfused(ref, x, w2, geometry, 1, vectors, relu)
    assert_all_close(got, want, np.float64, "cuda-emulated")


def test_the_conv_batchnorm_launcher_refuses_arrays_on_another_device():
    launched = []
    launchers = cuda.Launchers(np, lambda name, dtype: lambda *a: launched.append(name),
                               devices=(lambda a: 1, lambda: 0))   # arrays on cuda:1
    x, w2, w, b, rm, rv = conv_bn_arrays((2, 3, 6, 5), (4, 3, 3, 3), np.float32)
    with pytest.raises(RuntimeError, match=r"^conv2d_batchnorm_forward: array x is on cuda:1 "
                                           r"but the kernel runs on the current device"):
        launchers.conv2d_batchnorm_forward(x, w2, 3, 3, 1, 1, 1, 1, 1, 1, 1, w, b, rm, rv,
                                           0.1, 1e-5, True)
    assert launched == []


@pytest.mark.parametrize("name", ["reference", "cpu", "cuda-emulated"])
def test_conv_batchnorm_forward_checks_everything_before_it_runs(layers, name):
    layer = {"reference": ref, **layers}[name]
    x, w2, w, b, rm, rv = conv_bn_arrays((2, 3, 6, 5), (4, 3, 3, 3), np.float64)
    before = rm.copy(), rv.copy()
    with pytest.raises(ValueError, match=r"conv2d_batchnorm_forward: running_var must have "
                                         r"shape \(4,\), got \(3,\)"):
        layer.conv2d_batchnorm_forward(x, w2, 3, 3, 1, 1, 1, 1, 1, 1, 1, w, b, rm, rv[:3],
                                       0.1, 1e-5, True)
    with pytest.raises(ValueError, match="conv2d_batchnorm_forward: expected more than one "
                                         "value per channel"):
        layer.conv2d_batchnorm_forward(np.ascontiguousarray(x[:1, :, :3, :3]), w2, 3, 3, 1,
                                       1, 0, 0, 1, 1, 1, w, b, rm, rv, 0.1, 1e-5, False)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn-relu"])
@pytest.mark.parametrize("geometry", [(1, 1, 1, 1), (2, 1, 1, 1), (1, 0, 2, 1), (2, 1, 1, 2)],
                         ids=["s1", "s2", "dilated", "groups"])
def test_conv2d_batch_norm_gradcheck_float64(geometry, relu):
    stride, padding, dilation, groups = geometry
    rng = np.random.default_rng(4)
    x = tinyres.tensor(rng.standard_normal((3, 4, 6, 5)), requires_grad=True)
    conv_w = tinyres.tensor(rng.standard_normal((6, 4 // groups, 3, 3)), requires_grad=True)
    _, w, b, rm, rv = tensors(bn_arrays((1, 6, 1, 1), np.float64, seed=5))

    def op(x, conv_w, w, b):
        return F_fused.conv2d_batch_norm(x, conv_w, rm, rv, w, b, (stride,) * 2,
                                         (padding,) * 2, (dilation,) * 2, groups, 0.1, 1e-5,
                                         relu)
    assert tinyres.gradcheck(op, [x, conv_w, w, b])


class ConvGradientForgotten(ConvBatchNorm):
    """A wrong backward (negative control): batch norm's gradient handed to x as it is."""

    @staticmethod
    def backward(ctx, grad_out):
        # deliberately wrong: the convolution's backward skipped
        grads = ConvBatchNorm.backward(ctx, grad_out)
        return (grads[0] * 0 + 1,) + grads[1:]


def test_gradcheck_catches_a_conv_batch_norm_backward_without_the_convolution():
    rng = np.random.default_rng(4)
    x = tinyres.tensor(rng.standard_normal((2, 2, 4, 4)), requires_grad=True)
    conv_w = tinyres.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    with pytest.raises(GradcheckError):
        tinyres.gradcheck(lambda x, conv_w: ConvGradientForgotten.apply(
            x, conv_w, None, None, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1,
            running_mean=None, running_var=None, momentum=0.1, eps=1e-5, relu=True),
            [x, conv_w])


def test_conv_bn_in_training_is_the_modules_to_the_last_bit():
    # resnet20 in float32, two training steps: outputs, gradients, running statistics and
    # batch counts equal those of the modules called one by one
    def steps(fused):
        tinyres.manual_seed(0)
        model = models.resnet20().train()
        rng = np.random.default_rng(2)
        with fuse_bn_relu(fused):
            for _ in range(2):
                x = tinyres.tensor(rng.standard_normal((6, 3, 32, 32)).astype(np.float32))
                out = model(x)
                model.zero_grad()
                F.cross_entropy(out, tinyres.tensor(rng.integers(0, 10, 6))).backward()
        nodes = fused_nodes(out, ConvBatchNorm)
        grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
        return nodes, out.numpy(), grads, {k: v.numpy() for k, v in model.state_dict().items()}
    nodes, out, grads, state = steps(True)
    nodes_u, out_u, grads_u, state_u = steps(False)
    assert (nodes, nodes_u) == (19, 0)           # the stem and two a block, 9 blocks
    np.testing.assert_array_equal(out, out_u)
    for k in grads_u:
        np.testing.assert_array_equal(grads[k], grads_u[k], err_msg=k)
    assert state.keys() == state_u.keys()
    for k in state_u:
        np.testing.assert_array_equal(state[k], state_u[k], err_msg=k)


def test_conv_bn_in_training_fuses_plain_modules_only():
    net = BnReluNet().train()
    x = tinyres.randn(2, 2, 5, 5)
    assert can_fuse_conv_train(net.conv, net.bn, net.relu, x)
    assert can_fuse_conv_train(net.conv, net.bn, None, x)
    out = conv_bn(net.conv, net.bn, x, net.relu)
    assert fused_nodes(out, ConvBatchNorm) == 1
    with fuse_bn_relu(False):
        assert not can_fuse_conv_train(net.conv, net.bn, net.relu, x)
    net.bn.eval()
    assert not can_fuse_conv_train(net.conv, net.bn, net.relu, x)   # running statistics
    net.bn.train()
    for bn in (nn.BatchNorm2d(3, track_running_stats=False), nn.SyncBatchNorm(3),
               type("MyBN", (nn.BatchNorm2d,), {})(3)):
        assert not can_fuse_conv_train(net.conv, bn, net.relu, x)
    for conv in (nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 3, padding="same"),
                 nn.Conv2d(2, 3, 3, padding=1, bias=False, padding_mode="reflect"),
                 type("MyConv", (nn.Conv2d,), {})(2, 3, 3, padding=1, bias=False)):
        assert not can_fuse_conv_train(conv, net.bn, net.relu, x)
    assert not can_fuse_conv_train(net.conv, net.bn, nn.LeakyReLU(), x)
    assert not can_fuse_conv_train(net.conv, net.bn, net.relu, x.double())
    assert not can_fuse_conv_train(net.conv, net.bn, net.relu, tinyres.randn(2, 3, 5, 5))
    for module in (net.conv, net.bn, net.relu):
        seen = []
        handle = module.register_forward_hook(lambda m, args, out: seen.append(out))
        assert not can_fuse_conv_train(net.conv, net.bn, net.relu, x)
        out = conv_bn(net.conv, net.bn, x, net.relu)
        assert len(seen) == 1 and fused_nodes(out, ConvBatchNorm) == 0
        handle.remove()


@pytest.mark.parametrize("case", ["input too small", "one value per channel"])
def test_conv_bn_in_training_raises_the_modules_errors_and_counts_no_batch(case):
    # the errors of the convolution and then bn_relu, as conv_bn called them before
    net = BnReluNet().train()
    if case == "input too small":
        net.conv, x = nn.Conv2d(2, 3, 3, bias=False), tinyres.randn(2, 2, 2, 2)
    else:
        net.conv, x = nn.Conv2d(2, 3, 1, bias=False), tinyres.randn(1, 2, 1, 1)
    twin = copy.deepcopy(net)
    assert can_fuse_conv_train(net.conv, net.bn, net.relu, x)
    ours = _error_of(lambda: conv_bn(net.conv, net.bn, x, net.relu))
    theirs = _error_of(lambda: bn_relu(twin.bn, twin.relu, twin.conv(x)))
    assert type(ours) is type(theirs) and str(ours) == str(theirs), (ours, theirs)
    assert net.bn.num_batches_tracked.item() == twin.bn.num_batches_tracked.item()
    np.testing.assert_array_equal(net.bn.running_mean.numpy(), twin.bn.running_mean.numpy())


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_conv_bn_in_training_matches_torch(momentum):
    torch = pytest.importorskip("torch")
    ours = BnReluNet(nn.BatchNorm2d(3, momentum=momentum)).double().train()
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1, bias=False),
                                 torch.nn.BatchNorm2d(3, momentum=momentum),
                                 torch.nn.ReLU()).double()
    with torch.no_grad():
        theirs[0].weight.copy_(torch.tensor(ours.conv.weight.numpy()))
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.standard_normal((2, 2, 5, 5)) * 2 + 1
        ours.zero_grad()
        theirs.zero_grad()
        out = conv_bn(ours.conv, ours.bn, tinyres.tensor(x), ours.relu)
        expected = theirs(torch.tensor(x))
        assert fused_nodes(out, ConvBatchNorm) == 1
        g = rng.standard_normal(out.shape)
        (out * tinyres.tensor(g)).sum().backward()
        (expected * torch.tensor(g)).sum().backward()
        np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12,
                                   atol=1e-12)
        for mine, torchs in ((ours.conv.weight, theirs[0].weight), (ours.bn.weight,
                             theirs[1].weight), (ours.bn.bias, theirs[1].bias)):
            np.testing.assert_allclose(mine.grad.numpy(), torchs.grad.numpy(), rtol=1e-10,
                                       atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(getattr(ours.bn, name).numpy(),
                                   getattr(theirs[1], name).numpy(), rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("frozen", ["conv", "bn", "input"])
def test_conv_bn_in_training_with_frozen_parts_is_the_modules(frozen):
    # what needs no gradient gets none, the rest the modules' own, to the last bit
    def step(fused):
        tinyres.manual_seed(0)
        net = BnReluNet().double().train()
        params = {"conv": [net.conv.weight], "bn": [net.bn.weight, net.bn.bias],
                  "input": []}[frozen]
        for p in params:
            p.requires_grad_(False)
        x = tinyres.tensor(np.random.default_rng(1).standard_normal((2, 2, 5, 5)),
                           requires_grad=frozen != "input")
        with fuse_bn_relu(fused):
            out = conv_bn(net.conv, net.bn, x, net.relu)
            (out * out).sum().backward()
        grads = [None if t.grad is None else t.grad.numpy()
                 for t in (x, net.conv.weight, net.bn.weight, net.bn.bias)]
        return fused_nodes(out, ConvBatchNorm), grads
    nodes, grads = step(True)
    nodes_u, grads_u = step(False)
    assert (nodes, nodes_u) == (1, 0)
    for a, e in zip(grads, grads_u):
        assert (a is None) == (e is None)
        if a is not None:
            np.testing.assert_array_equal(a, e)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), c=st.integers(1, 20), oc=st.integers(1, 20), h=st.integers(3, 20),
       w=st.integers(3, 20), k=st.sampled_from([1, 3]), stride=st.integers(1, 2),
       relu=st.booleans(), double=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_batchnorm_forward_is_the_two_kernels_on_any_layer(n, c, oc, h, w, k, stride,
                                                                relu, double, seed):
    # whatever path the plan picks for the layer (pointwise, per-image, Winograd in lanes
    # or image by image, one GEMM, at these sizes), the statistics from the epilogue are
    # batch norm's own to the last bit
    dtype = np.float64 if double else np.float32
    x, w2, *vectors = conv_bn_arrays((n, c, h, w), (oc, c, k, k), dtype, seed)
    geometry = (k, k, stride, stride, k // 2, k // 2)
    assume(n * (-(-h // stride)) * (-(-w // stride)) > 1)   # one value a channel: an error
    got = conv_bn_fused(cpu, x, w2, geometry, 1, vectors, relu)
    want = conv_bn_unfused(cpu, x, w2, geometry, 1, vectors, relu)
    for k_out, (a, e) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, e, err_msg=f"output {k_out}")


def test_conv_bn_in_training_without_affine_parameters_is_the_modules():
    def step(fused):
        tinyres.manual_seed(0)
        net = BnReluNet(nn.BatchNorm2d(3, affine=False)).double().train()
        x = tinyres.tensor(np.random.default_rng(2).standard_normal((2, 2, 5, 5)),
                           requires_grad=True)
        with fuse_bn_relu(fused):
            out = conv_bn(net.conv, net.bn, x, net.relu)
            (out * out).sum().backward()
        return (fused_nodes(out, ConvBatchNorm), out.numpy(), x.grad.numpy(),
                net.conv.weight.grad.numpy(), net.bn.running_var.numpy())
    fused, unfused = step(True), step(False)
    assert (fused[0], unfused[0]) == (1, 0)
    for a, e in zip(fused[1:], unfused[1:]):
        np.testing.assert_array_equal(a, e)
