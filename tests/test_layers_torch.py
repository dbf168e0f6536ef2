"""The layers and losses of tinyres.nn against torch.nn: the same module built in both
engines, torch's state_dict loaded into tinyres's (keys equal), the same float64 inputs,
then outputs, the gradients of inputs and parameters, reprs, float32 staying float32,
and the exception class for bad input. Skipped cleanly where torch is not installed."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyres

torch = pytest.importorskip("torch")
W3 = np.array([0.5, 2.0, 1.25])


def floats(*shape, scale=1.0):
    return lambda rng: rng.standard_normal(shape) * scale


def labels(classes, *shape):
    return lambda rng: rng.integers(0, classes, shape)


def probabilities(*shape):
    return lambda rng: rng.uniform(0.05, 0.95, shape)


def distribution(n, c):
    return lambda rng: rng.dirichlet(np.ones(c), size=n)


# name: (lambda engine -> module, [input makers], index of the inputs that require grad, mode)
MODULES = {
    "LayerNorm((3, 4))": (lambda e: e.nn.LayerNorm((3, 4)), [floats(2, 5, 3, 4)]),
    "LayerNorm(4, bias=False)": (lambda e: e.nn.LayerNorm(4, bias=False), [floats(3, 4)]),
    "LayerNorm(4, no affine)": (lambda e: e.nn.LayerNorm(4, elementwise_affine=False),
                                [floats(2, 3, 4)]),
    "GroupNorm(2, 4)": (lambda e: e.nn.GroupNorm(2, 4), [floats(2, 4, 3, 3)]),
    "GroupNorm(3, 6, no affine)": (lambda e: e.nn.GroupNorm(3, 6, affine=False),
                                   [floats(2, 6, 5)]),
    "InstanceNorm2d(3)": (lambda e: e.nn.InstanceNorm2d(3), [floats(2, 3, 4, 4)]),
    "InstanceNorm2d(3, affine) unbatched": (lambda e: e.nn.InstanceNorm2d(3, affine=True),
                                            [floats(3, 4, 5)]),
    "InstanceNorm2d(3, tracked)": (lambda e: e.nn.InstanceNorm2d(
        3, affine=True, track_running_stats=True), [floats(2, 3, 4, 4)]),
    "GELU()": (lambda e: e.nn.GELU(), [floats(2, 3, 4, scale=3)]),
    "GELU('tanh')": (lambda e: e.nn.GELU("tanh"), [floats(2, 3, 4, scale=3)]),
    "LeakyReLU(0.2)": (lambda e: e.nn.LeakyReLU(0.2), [floats(2, 7)]),
    "SiLU()": (lambda e: e.nn.SiLU(), [floats(2, 7, scale=3)]),
    "Sigmoid()": (lambda e: e.nn.Sigmoid(), [floats(2, 7, scale=3)]),
    "Tanh()": (lambda e: e.nn.Tanh(), [floats(2, 7, scale=3)]),
    "Softmax(dim=1)": (lambda e: e.nn.Softmax(dim=1), [floats(2, 3, 4)]),
    "LogSoftmax(dim=-1)": (lambda e: e.nn.LogSoftmax(dim=-1), [floats(2, 3, 4)]),
    "Hardswish()": (lambda e: e.nn.Hardswish(), [floats(3, 8, scale=4)]),
    "Hardsigmoid()": (lambda e: e.nn.Hardsigmoid(), [floats(3, 8, scale=4)]),
    "ReLU6()": (lambda e: e.nn.ReLU6(), [floats(3, 8, scale=5)]),
    "ELU(0.5)": (lambda e: e.nn.ELU(0.5), [floats(3, 8, scale=2)]),
    "Dropout2d(eval)": (lambda e: e.nn.Dropout2d(0.3).eval(), [floats(2, 3, 4, 4)]),
    "Embedding(6, 3, padding_idx=2)": (lambda e: e.nn.Embedding(6, 3, padding_idx=2),
                                       [labels(6, 4, 5)]),
    "Upsample(scale_factor=2)": (lambda e: e.nn.Upsample(scale_factor=2), [floats(1, 2, 3, 4)]),
    "Upsample(size, bilinear, corners)": (lambda e: e.nn.Upsample(
        size=(5, 7), mode="bilinear", align_corners=True), [floats(2, 2, 3, 4)]),
    "Upsample(1.5, bilinear)": (lambda e: e.nn.Upsample(scale_factor=1.5, mode="bilinear"),
                                [floats(2, 2, 3, 4)]),
    "Flatten()": (lambda e: e.nn.Flatten(), [floats(2, 3, 4)]),
    "Flatten(0, 1)": (lambda e: e.nn.Flatten(0, 1), [floats(2, 3, 4)]),
    "Unflatten(1, (2, 3))": (lambda e: e.nn.Unflatten(1, (2, 3)), [floats(4, 6, 2)]),
    "AdaptiveAvgPool2d((3, 2))": (lambda e: e.nn.AdaptiveAvgPool2d((3, 2)),
                                  [floats(2, 3, 7, 5)]),
    "AdaptiveMaxPool2d(3)": (lambda e: e.nn.AdaptiveMaxPool2d(3), [floats(2, 3, 7, 5)]),
    "Identity(5, foo=1)": (lambda e: e.nn.Identity(5, foo=1), [floats(2, 3)]),
    "NLLLoss(weight, ignore_index=1)": (lambda e: e.nn.NLLLoss(e.tensor(W3), ignore_index=1),
                                        [floats(5, 3), labels(3, 5)]),
    "CrossEntropyLoss(all options)": (lambda e: e.nn.CrossEntropyLoss(
        e.tensor(W3), ignore_index=0, label_smoothing=0.1), [floats(4, 3, 2), labels(3, 4, 2)]),
    "CrossEntropyLoss(none, smoothing)": (lambda e: e.nn.CrossEntropyLoss(
        reduction="none", label_smoothing=0.3), [floats(4, 3), labels(3, 4)]),
    "CrossEntropyLoss(probabilities)": (lambda e: e.nn.CrossEntropyLoss(
        e.tensor(W3), reduction="sum", label_smoothing=0.2), [floats(4, 3), distribution(4, 3)]),
    "BCELoss(weight)": (lambda e: e.nn.BCELoss(e.tensor(W3)),
                        [probabilities(4, 3), probabilities(4, 3)]),
    "BCEWithLogitsLoss(pos_weight)": (lambda e: e.nn.BCEWithLogitsLoss(
        pos_weight=e.tensor(W3), reduction="sum"), [floats(4, 3, scale=3), probabilities(4, 3)]),
    "MSELoss(sum)": (lambda e: e.nn.MSELoss(reduction="sum"), [floats(4, 3), floats(4, 3)]),
    "L1Loss()": (lambda e: e.nn.L1Loss(), [floats(4, 3), floats(4, 3)]),
    "SmoothL1Loss(beta=0.5)": (lambda e: e.nn.SmoothL1Loss(beta=0.5),
                               [floats(4, 3), floats(4, 3)]),
    "HuberLoss(none, delta=0.5)": (lambda e: e.nn.HuberLoss(reduction="none", delta=0.5),
                                   [floats(4, 3), floats(4, 3)]),
    "KLDivLoss(batchmean)": (lambda e: e.nn.KLDivLoss(reduction="batchmean"),
                             [floats(4, 3), probabilities(4, 3)]),
}


def as_numpy(t):
    return t.detach().cpu().numpy() if hasattr(t, "detach") else t.numpy()


def build_pair(name, dtype):
    """The torch module and the tinyres one holding torch's weights, both in dtype."""
    make = MODULES[name][0]
    torch.manual_seed(0)
    theirs = make(torch).to(getattr(torch, dtype))
    ours = make(tinyres).to(dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def run(engine, module, arrays, dtype):
    """Output, input gradients and parameter gradients of a random weighting of the
    output; only the first input (never an integer one) requires grad."""
    inputs = []
    for i, a in enumerate(arrays):
        if a.dtype.kind == "f":
            a = a.astype(dtype)
        inputs.append(engine.tensor(a, requires_grad=i == 0 and a.dtype.kind == "f"))
    out = module(*inputs)
    weights = np.random.default_rng(5).standard_normal(tuple(out.shape)).astype(dtype)
    out.backward(engine.tensor(weights))
    grads = {"input": as_numpy(inputs[0].grad) if inputs[0].grad is not None else None}
    for key, param in module.named_parameters():
        grads[key] = None if param.grad is None else as_numpy(param.grad)
    return out, grads


@pytest.mark.parametrize("name", list(MODULES))
def test_module_matches_torch_float64(name):
    ours, theirs = build_pair(name, "float64")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    arrays = [make(np.random.default_rng(1)) for make in MODULES[name][1]]
    our_out, our_grads = run(tinyres, ours, arrays, np.float64)
    their_out, their_grads = run(torch, theirs, arrays, np.float64)
    assert our_out.shape == tuple(their_out.shape)
    np.testing.assert_allclose(as_numpy(our_out), as_numpy(their_out), rtol=1e-10, atol=1e-12)
    assert list(our_grads) == list(their_grads)
    for key in our_grads:
        if their_grads[key] is None:
            assert our_grads[key] is None or not our_grads[key].any(), key
        else:
            np.testing.assert_allclose(our_grads[key], their_grads[key], rtol=1e-9,
                                       atol=1e-11, err_msg=key)
    for key, value in theirs.state_dict().items():     # running statistics moved alike
        np.testing.assert_allclose(as_numpy(ours.state_dict()[key]), as_numpy(value),
                                   rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", [n for n in MODULES if "Embedding" not in n])
def test_module_keeps_float32(name):
    ours, theirs = build_pair(name, "float32")
    arrays = [make(np.random.default_rng(2)) for make in MODULES[name][1]]
    out, grads = run(tinyres, ours, arrays, np.float32)
    their_out, _ = run(torch, theirs, arrays, np.float32)
    assert out.dtype == np.float32
    assert all(g is None or g.dtype == np.float32 for g in grads.values())
    np.testing.assert_allclose(as_numpy(out), as_numpy(their_out), rtol=2e-5, atol=2e-6)


def test_instance_norm_running_statistics_then_evaluation_match_torch():
    ours, theirs = build_pair("InstanceNorm2d(3, tracked)", "float64")
    x = np.random.default_rng(3).standard_normal((4, 3, 5, 5)) * 2 + 1
    for _ in range(2):
        ours(tinyres.tensor(x)), theirs(torch.tensor(x))
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(tinyres.tensor(x)).numpy(), as_numpy(theirs(torch.tensor(x))),
                               rtol=1e-10, atol=1e-12)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(as_numpy(ours.state_dict()[key]), as_numpy(value),
                                   rtol=1e-12, err_msg=key)


# ----- bad input: the same exception class as torch ------------------------------------
def t(engine, values, dtype=None):
    return engine.tensor(np.array(values, dtype=dtype))


F_OF = {"tinyres": tinyres.nn.functional, "torch": torch.nn.functional}


def fn(e):
    return F_OF["torch" if e is torch else "tinyres"]


ERRORS = {
    "cross_entropy target out of range": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3))), t(e, [0, 1, 3, 0])),
    "cross_entropy negative target": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3))), t(e, [0, -2, 1, 0])),
    "cross_entropy batch size": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3))), t(e, [0, 1, 2])),
    "cross_entropy float target of another shape": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3))), t(e, [0.0, 1.0, 2.0, 0.0])),
    "cross_entropy 2-D target for a 2-D input": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3))), t(e, np.zeros((4, 2), dtype=np.int64))),
    "cross_entropy spatial target size": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3, 5))), t(e, np.zeros((4, 6), dtype=np.int64))),
    "cross_entropy weight size": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3))), t(e, [0, 1, 2, 0]), weight=t(e, np.ones(4))),
    "cross_entropy label_smoothing > 1": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3))), t(e, [0, 1, 2, 0]), label_smoothing=1.5),
    "cross_entropy bad reduction": lambda e: fn(e).cross_entropy(
        t(e, np.zeros((4, 3))), t(e, [0, 1, 2, 0]), reduction="avg"),
    "nll_loss target out of range": lambda e: fn(e).nll_loss(
        t(e, np.zeros((4, 3))), t(e, [0, 1, 3, 0])),
    "CrossEntropyLoss target out of range": lambda e: e.nn.CrossEntropyLoss()(
        t(e, np.zeros((2, 3))), t(e, [5, 0])),
    "NLLLoss batch size": lambda e: e.nn.NLLLoss()(t(e, np.zeros((2, 3))), t(e, [0])),
    "layer_norm normalized_shape": lambda e: fn(e).layer_norm(t(e, np.zeros((4, 3))), (4,)),
    "LayerNorm normalized_shape": lambda e: e.nn.LayerNorm(4)(t(e, np.zeros((4, 3), "f4"))),
    "GroupNorm channels not divisible": lambda e: e.nn.GroupNorm(2, 3),
    "group_norm channels not divisible": lambda e: fn(e).group_norm(
        t(e, np.zeros((2, 3, 4))), 2),
    "InstanceNorm2d on 2-D input": lambda e: e.nn.InstanceNorm2d(3)(t(e, np.zeros((2, 3)))),
    "InstanceNorm2d(affine) channel count": lambda e: e.nn.InstanceNorm2d(3, affine=True)(
        t(e, np.zeros((2, 4, 5, 5), "f4"))),
    "binary_cross_entropy input above 1": lambda e: fn(e).binary_cross_entropy(
        t(e, [0.5, 1.5]), t(e, [0.0, 1.0])),
    "binary_cross_entropy target shape": lambda e: fn(e).binary_cross_entropy(
        t(e, [0.5, 0.5]), t(e, [[0.0], [1.0]])),
    "bce_with_logits target shape": lambda e: fn(e).binary_cross_entropy_with_logits(
        t(e, [0.5, 0.5]), t(e, [[0.0], [1.0]])),
    "one_hot of floats": lambda e: fn(e).one_hot(t(e, [1.0, 2.0])),
    "one_hot of int32": lambda e: fn(e).one_hot(t(e, [1, 2], np.int32)),
    "one_hot negative": lambda e: fn(e).one_hot(t(e, [1, -1])),
    "one_hot too few classes": lambda e: fn(e).one_hot(t(e, [1, 3]), 3),
    "embedding index out of range": lambda e: fn(e).embedding(
        t(e, [0, 5]), t(e, np.zeros((3, 2)))),
    "embedding float indices": lambda e: fn(e).embedding(t(e, [0.0]), t(e, np.zeros((3, 2)))),
    "Embedding padding_idx out of range": lambda e: e.nn.Embedding(3, 2, padding_idx=3),
    "interpolate without size": lambda e: fn(e).interpolate(t(e, np.zeros((1, 1, 3, 3)))),
    "interpolate size and scale": lambda e: fn(e).interpolate(
        t(e, np.zeros((1, 1, 3, 3))), size=2, scale_factor=2),
    "interpolate nearest align_corners": lambda e: fn(e).interpolate(
        t(e, np.zeros((1, 1, 3, 3))), size=2, align_corners=True),
    "interpolate bilinear of 3-D": lambda e: fn(e).interpolate(
        t(e, np.zeros((1, 1, 3))), scale_factor=2, mode="bilinear"),
    "adaptive_avg_pool2d of 2-D": lambda e: fn(e).adaptive_avg_pool2d(t(e, np.zeros((1, 3))), 2),
    "binary_cross_entropy weight shape": lambda e: fn(e).binary_cross_entropy(
        t(e, [0.5, 0.5, 0.5]), t(e, [0.0, 1.0, 1.0]), weight=t(e, [1.0, 2.0])),
    "CrossEntropyLoss bad reduction": lambda e: e.nn.CrossEntropyLoss(reduction="avg")(
        t(e, np.zeros((2, 3))), t(e, [1, 0])),
    "dropout p > 1": lambda e: fn(e).dropout(t(e, np.zeros(3)), 1.5),
    "dropout2d of 1-D": lambda e: fn(e).dropout2d(t(e, np.zeros(3))),
}


@pytest.mark.parametrize("name", list(ERRORS))
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bad_input_raises_what_torch_raises(name):
    with pytest.raises(Exception) as theirs:
        ERRORS[name](torch)
    with pytest.raises(theirs.type):
        ERRORS[name](tinyres)


# ----- functional forms and containers --------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
       classes=st.sampled_from([-1, 5, 7]), seed=st.integers(0, 2**16))
def test_one_hot_matches_torch(shape, classes, seed):
    values = np.random.default_rng(seed).integers(0, 5, shape)
    if classes == -1 and values.size == 0:
        values = np.array([3])
    ours = tinyres.nn.functional.one_hot(tinyres.tensor(values), classes)
    theirs = torch.nn.functional.one_hot(torch.tensor(values), classes)
    assert ours.dtype == np.int64 and ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_log_softmax_and_softmax_of_huge_logits_stay_finite_as_torch():
    x = np.array([[1e4, -1e4, 0.0], [3e38, 3e38, -3e38]], dtype=np.float32)
    for name in ("softmax", "log_softmax"):
        ours = getattr(tinyres.nn.functional, name)(tinyres.tensor(x), dim=1).numpy()
        theirs = getattr(torch.nn.functional, name)(torch.tensor(x), dim=1).numpy()
        assert np.isfinite(ours[np.isfinite(theirs)]).all()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 3, 4), (2, 3, 4, 5)])
def test_softmax_without_dim_warns_and_picks_torchs_dim(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    results = []
    for engine in (tinyres, torch):
        with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
            results.append(as_numpy(engine.nn.Softmax()(engine.tensor(x))))
    np.testing.assert_allclose(*results, rtol=1e-12)


def test_dropout2d_zeroes_whole_channels_and_scales_the_rest():
    x = tinyres.tensor(np.random.default_rng(0).standard_normal((8, 6, 3, 3)) + 5.0,
                       requires_grad=True)
    tinyres.manual_seed(0)
    out = tinyres.nn.functional.dropout2d(x, p=0.4)
    ratio = (out.numpy() / x.numpy()).reshape(8, 6, -1)
    assert set(np.unique(np.round(ratio, 12))) == {0.0, round(1 / 0.6, 12)}
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[..., :1], ratio.shape),
                               rtol=1e-12)                 # one draw per channel
    out.backward(tinyres.ones_like(out))
    np.testing.assert_allclose(x.grad.numpy(), ratio.reshape(x.shape), rtol=1e-12)
    assert tinyres.nn.functional.dropout2d(x, 0.4, training=False) is x


@pytest.mark.parametrize("ndim", [2, 3, 5])
def test_dropout2d_warns_as_torch_for_other_dims(ndim):
    for engine in (tinyres, torch):
        with pytest.warns(UserWarning, match=f"dropout2d: Received a {ndim}"):
            engine.nn.functional.dropout2d(engine.tensor(np.ones((2,) * ndim)))


def test_inplace_activations_write_into_their_input_as_torch():
    x = np.random.default_rng(0).standard_normal((3, 4)) * 4
    for name, kwargs in [("leaky_relu", {"negative_slope": 0.1}), ("silu", {}),
                         ("hardswish", {}), ("relu6", {}), ("elu", {}), ("dropout", {"p": 0})]:
        results = []
        for engine in (tinyres, torch):
            leaf = engine.tensor(x, requires_grad=True)
            y = leaf * 1.0
            out = getattr(engine.nn.functional, name)(y, inplace=True, **kwargs)
            assert out is y or name == "dropout"
            out.backward(engine.tensor(np.arange(12.0).reshape(3, 4)))
            results.append((as_numpy(y), as_numpy(leaf.grad)))
        for ours, theirs in zip(*results):
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, err_msg=name)


def test_module_dict_and_parameter_containers_match_torch():
    def build(e):
        net = e.nn.Module()
        net.blocks = e.nn.ModuleDict({"conv": e.nn.Linear(2, 3), "act": e.nn.GELU()})
        net.blocks["norm"] = e.nn.LayerNorm(3)
        net.scales = e.nn.ParameterList([e.nn.Parameter(e.ones(2, 3)), e.zeros(3)])
        net.scales.append(e.ones(1))
        net.extra = e.nn.ParameterDict({"a": e.nn.Parameter(e.zeros(2))})
        net.extra["b"] = e.ones(4)
        return net
    ours, theirs = build(tinyres), build(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert repr(ours.scales) == repr(theirs.scales).replace("torch.", "")
    assert repr(ours.blocks) == repr(theirs.blocks)
    assert list(ours.blocks) == list(theirs.blocks) == ["conv", "act", "norm"]
    assert len(ours.scales) == 3 and isinstance(ours.scales[1], tinyres.nn.Parameter)
    assert "b" in ours.extra and ours.extra["b"].requires_grad
    assert isinstance(ours.blocks.pop("act"), tinyres.nn.GELU) and len(ours.blocks) == 2
    ours.load_state_dict(theirs.state_dict())


def test_embedding_from_pretrained_is_frozen_by_default_as_torch():
    w = np.arange(6.0).reshape(3, 2)
    for engine in (tinyres, torch):
        emb = engine.nn.Embedding.from_pretrained(engine.tensor(w))
        assert not emb.weight.requires_grad
        np.testing.assert_array_equal(as_numpy(emb(engine.tensor([2, 0]))), w[[2, 0]])


def test_legacy_size_average_and_reduce_give_torchs_reduction():
    for size_average, reduce in [(False, None), (None, False), (True, True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = tinyres.nn.MSELoss(size_average, reduce).reduction
            theirs = torch.nn.MSELoss(size_average, reduce).reduction
        assert ours == theirs


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_cross_entropy_with_every_target_ignored_is_nan_with_zero_gradient_as_torch(smoothing):
    results = []
    for engine in (tinyres, torch):
        x = engine.tensor(np.random.default_rng(0).standard_normal((3, 3)), requires_grad=True)
        loss = engine.nn.functional.cross_entropy(x, engine.tensor([-100, -100, -100]),
                                                  weight=engine.tensor(W3),
                                                  label_smoothing=smoothing)
        loss.backward()
        results.append((as_numpy(loss), as_numpy(x.grad)))
    (our_loss, our_grad), (their_loss, their_grad) = results
    assert np.isnan(our_loss) and np.isnan(their_loss)
    np.testing.assert_array_equal(our_grad, their_grad)
