"""Inference without autograd bookkeeping: under no_grad() or inference_mode() an op makes
no Context, saves nothing for a backward pass, links no graph node to its output and keeps
no reference to its inputs; relu_ then writes straight into its tensor. Each check has a
control with grad mode on, where the bookkeeping must be there."""
import gc
import weakref

import numpy as np
import pytest

import tinyres
from tinyres import autograd, models, nn
from tinyres.kernels import reference as reference_kernels
from tinyres.functional.residual import residual_add
from tinyres.nn import functional as F
from tinyres.nn.utils.fusion import fold_batchnorm

torch = pytest.importorskip("torch")
MODES = {"no_grad": tinyres.no_grad, "inference_mode": tinyres.inference_mode}


@pytest.fixture
def bookkeeping(monkeypatch):
    """Counts of Contexts made and of save_for_backward calls on them."""
    counts = {"contexts": 0, "saves": 0}
    real_init, real_save = autograd.Context.__init__, autograd.Context.save_for_backward

    def init(self, *args, **kwargs):
        counts["contexts"] += 1
        real_init(self, *args, **kwargs)

    def save(self, *arrays):
        counts["saves"] += 1
        real_save(self, *arrays)
    monkeypatch.setattr(autograd.Context, "__init__", init)
    monkeypatch.setattr(autograd.Context, "save_for_backward", save)
    return counts


def cifar_input(requires_grad=True):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return tinyres.tensor(x, requires_grad=requires_grad)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("fold", [False, True])
def test_a_resnet_forward_records_nothing(bookkeeping, mode, fold):
    model = models.resnet20().eval()
    model = fold_batchnorm(model) if fold else model
    x = cifar_input()
    bookkeeping.update(contexts=0, saves=0)         # folding itself ran one traced forward
    with MODES[mode]():
        out = model(x)
    assert bookkeeping == {"contexts": 0, "saves": 0}
    assert out.grad_fn is None and not out.requires_grad and out.is_leaf
    assert out.is_inference() == (mode == "inference_mode")


def test_the_count_sees_a_recorded_forward(bookkeeping):
    model = models.resnet20().eval()
    out = model(cifar_input())
    assert out.grad_fn is not None
    convs = sum(isinstance(m, tinyres.nn.Conv2d) for m in model.modules())
    assert convs == 19
    # every convolution records a context and calls save_for_backward
    assert bookkeeping["contexts"] >= convs and bookkeeping["saves"] >= convs


OPS = {
    "conv2d": lambda x: F.conv2d(x, tinyres.randn(4, 3, 3, 3), padding=1),
    "batch_norm_eval": lambda x: F.batch_norm(x, tinyres.zeros(3), tinyres.ones(3),
                                              tinyres.ones(3), tinyres.zeros(3)),
    "relu": F.relu,
    "linear": lambda x: F.linear(x.flatten(1), tinyres.randn(5, 3 * 32 * 32)),
    "residual_add": lambda x: residual_add(x * 2, x),
    "max_pool2d": lambda x: F.max_pool2d(x, 2),
    "avg_pool": lambda x: F.adaptive_avg_pool2d(x, 1),
}


def input_kept_alive(op, grad_on):
    """Whether op(x)'s output keeps x (the Tensor or its array) alive."""
    x = cifar_input()
    refs = (weakref.ref(x), weakref.ref(x.array))
    with tinyres.set_grad_enabled(grad_on):
        out = op(x)
    del x
    gc.collect()
    alive = any(r() is not None for r in refs)
    assert out.shape[0] == 2
    return alive


@pytest.mark.parametrize("name", list(OPS))
def test_ops_keep_no_reference_to_their_inputs(name):
    assert not input_kept_alive(OPS[name], grad_on=False)


@pytest.mark.parametrize("name", ["conv2d", "batch_norm_eval", "linear", "residual_add"])
def test_a_recorded_op_keeps_its_input_for_backward(name):
    assert input_kept_alive(OPS[name], grad_on=True)      # the control: the graph holds it


def test_nograph_stand_in_keeps_nothing():
    ctx = autograd.NoGraph(2)
    ctx.save_for_backward(np.ones(3), np.ones(4))
    assert ctx.needs_input_grad == (False, False) and not hasattr(ctx, "saved")


# ----- relu_ with nothing to record: one pass in place ---------------------------------
SPECIAL = np.array([[-2.0, -0.0, 0.0, 3.5], [np.nan, np.inf, -np.inf, 1e-30]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", list(MODES))
def test_relu_inplace_without_graph_matches_torch(dtype, mode):
    ours = tinyres.tensor(SPECIAL.astype(dtype))
    memory, version = ours.array, ours._version
    theirs = torch.tensor(SPECIAL.astype(dtype))
    with MODES[mode]():
        ours = ours if mode == "no_grad" else ours.clone()
        before = ours.array
        returned = nn.ReLU(inplace=True)(ours)
    with getattr(torch, mode)():
        expected = torch.nn.ReLU(inplace=True)(theirs)
    assert returned is ours and returned.array is before
    np.testing.assert_array_equal(returned.numpy(), expected.numpy())
    # bit for bit the reference kernel's max(x, 0); the sign it gives -0.0 is NumPy's
    # maximum's (torch keeps -0.0): the two compare equal above
    reference = reference_kernels.relu_forward(SPECIAL.astype(dtype))
    assert np.array_equal(returned.numpy().view(np.uint8), reference.view(np.uint8))
    assert returned.dtype == np.dtype(dtype)
    if mode == "no_grad":
        assert memory is returned.array and ours._version == version + 1


def test_relu_inplace_on_a_view_writes_the_base():
    base = tinyres.tensor(SPECIAL.copy())
    with tinyres.no_grad():
        base[1].relu_()
    expected = SPECIAL.copy()
    expected[1] = np.maximum(expected[1], 0)
    np.testing.assert_array_equal(base.numpy(), expected)


def test_relu_inplace_still_records_when_grad_is_on():
    x = tinyres.tensor(SPECIAL[:1].copy(), requires_grad=True)
    y = x * 1
    y.relu_()
    assert y.grad_fn is not None
    y.backward(tinyres.ones(1, 4))
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 0.0, 0.0, 1.0]])


# ----- inference_mode's forms, beside torch's ------------------------------------------
def modes_seen(lib):
    """(inference mode, grad mode) inside each form of inference_mode."""
    @lib.inference_mode
    def bare():
        return lib.is_inference_mode_enabled(), lib.is_grad_enabled()

    @lib.inference_mode(mode=True)
    def called():
        return lib.is_inference_mode_enabled(), lib.is_grad_enabled()

    @lib.inference_mode(False)
    def off():
        return lib.is_inference_mode_enabled(), lib.is_grad_enabled()

    with lib.no_grad():
        off_in_no_grad = off()
    with lib.inference_mode():
        off_in_inference = off()
        inside = (lib.is_inference_mode_enabled(), lib.is_grad_enabled())
    return [bare(), called(), off(), off_in_no_grad, off_in_inference, inside,
            (lib.is_inference_mode_enabled(), lib.is_grad_enabled())]


def test_inference_mode_forms_match_torch():
    seen = modes_seen(tinyres)
    assert seen == modes_seen(torch)
    assert seen[0] == (True, False) and seen[-1] == (False, True)
