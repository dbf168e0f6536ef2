"""tinyres.nn.utils.fusion beside torch.nn.utils.fusion (the same code through both engines,
weights copied), and fold_batchnorm on tinyres's ResNets against the unfolded models."""
import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinyres
from tinyres import models, nn
from tinyres.nn.utils import fusion

torch = pytest.importorskip("torch")
LIBS = {"tinyres": tinyres, "torch": torch}


# ----- helpers ---------------------------------------------------------------------------
def random_bn_state(bn_modules, rng):
    """Non-trivial batch-norm parameters and running statistics, as NumPy arrays."""
    state = []
    for bn in bn_modules:
        c = bn.num_features
        state.append({"running_mean": rng.uniform(-0.5, 0.5, c),
                      "running_var": rng.uniform(0.5, 2.0, c),
                      "weight": rng.uniform(0.5, 1.5, c), "bias": rng.uniform(-0.3, 0.3, c)})
    return state


def set_bn(bn, values, lib):
    """Write `values` (NumPy) into bn's buffers and affine parameters, in either engine."""
    for name, value in values.items():
        target = getattr(bn, name)
        if target is None:
            continue
        if lib is torch:
            with torch.no_grad():
                target.copy_(torch.from_numpy(value))
        else:
            target.array[...] = value


def module_pair(lib, kind, c_in, c_out, bias, affine, dtype, **conv_kwargs):
    """(layer, batch norm) in eval mode, with tinyres's and torch's module names."""
    nn_ = lib.nn
    if kind == "linear":
        first, bn = nn_.Linear(c_in, c_out, bias=bias), nn_.BatchNorm1d(c_out, affine=affine)
    elif kind == "transpose":
        first = nn_.ConvTranspose2d(c_in, c_out, bias=bias, **conv_kwargs)
        bn = nn_.BatchNorm2d(c_out, affine=affine)
    else:
        first, bn = nn_.Conv2d(c_in, c_out, bias=bias, **conv_kwargs), \
            nn_.BatchNorm2d(c_out, affine=affine)
    torch_dtype = getattr(torch, np.dtype(dtype).name)
    if lib is torch:
        first, bn = first.to(torch_dtype), bn.to(torch_dtype)
    else:
        first.to(dtype=dtype), bn.to(dtype=dtype)
    return first.eval(), bn.eval()


def both_pairs(kind, c_in, c_out, bias, affine, dtype=np.float64, seed=0, **conv_kwargs):
    """The same (layer, bn) in both engines: torch's weights copied into tinyres's."""
    rng = np.random.default_rng(seed)
    pairs = {name: module_pair(lib, kind, c_in, c_out, bias, affine, dtype, **conv_kwargs)
             for name, lib in LIBS.items()}
    t_first, t_bn = pairs["torch"]
    values = random_bn_state([t_bn], rng)[0]
    set_bn(t_bn, values, torch)
    r_first, r_bn = pairs["tinyres"]
    set_bn(r_bn, values, tinyres)
    r_first.weight.array[...] = t_first.weight.detach().numpy()
    if bias:
        r_first.bias.array[...] = t_first.bias.detach().numpy()
    return pairs


def run(lib, module, x):
    with lib.no_grad():
        out = module(lib.tensor(x) if lib is tinyres else torch.from_numpy(x))
    return out.numpy()


def assert_same_parameters(ours, theirs):
    for name in ("weight", "bias"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert isinstance(a, nn.Parameter) and isinstance(b, torch.nn.Parameter)
        assert a.dtype == np.dtype(str(b.dtype).replace("torch.", ""))
        assert a.shape == tuple(b.shape)
        assert a.requires_grad == b.requires_grad, name
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)


# ----- torch's four functions ------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(c_in=st.integers(1, 4), c_out=st.integers(1, 5), k=st.sampled_from([1, 3]),
       stride=st.integers(1, 2), bias=st.booleans(), affine=st.booleans())
def test_fuse_conv_bn_eval_matches_torch(c_in, c_out, k, stride, bias, affine):
    pairs = both_pairs("conv", c_in, c_out, bias, affine, kernel_size=k, stride=stride,
                       padding=k // 2)
    fused = {name: fusion.fuse_conv_bn_eval(*pair) if name == "tinyres"
             else torch.nn.utils.fusion.fuse_conv_bn_eval(*pair) for name, pair in pairs.items()}
    assert_same_parameters(fused["tinyres"], fused["torch"])
    x = np.random.default_rng(1).standard_normal((2, c_in, 6, 5))
    ours, theirs = run(tinyres, fused["tinyres"], x), run(torch, fused["torch"], x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    conv, bn = pairs["tinyres"]
    np.testing.assert_allclose(ours, run(tinyres, nn.Sequential(conv, bn), x), rtol=1e-6,
                               atol=1e-6)
    assert fused["tinyres"] is not conv and conv.bias is (conv.bias if bias else None)


def test_fused_conv_is_a_copy_and_keeps_its_geometry():
    conv, bn = both_pairs("conv", 2, 3, False, True, kernel_size=3, stride=2, padding=1,
                          groups=1)["tinyres"]
    fused = fusion.fuse_conv_bn_eval(conv, bn)
    assert conv.bias is None and fused.bias is not None
    assert (fused.stride, fused.padding, fused.kernel_size) == ((2, 2), (1, 1), (3, 3))
    assert not np.shares_memory(fused.weight.array, conv.weight.array)


@pytest.mark.parametrize("bias", [True, False])
def test_fuse_conv_transpose_bn_matches_torch(bias):
    pairs = both_pairs("transpose", 3, 4, bias, True, kernel_size=3, stride=2, padding=1)
    ours = fusion.fuse_conv_bn_eval(*pairs["tinyres"], transpose=True)
    theirs = torch.nn.utils.fusion.fuse_conv_bn_eval(*pairs["torch"], transpose=True)
    assert_same_parameters(ours, theirs)
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(run(tinyres, ours, x), run(torch, theirs, x), rtol=1e-6,
                               atol=1e-6)


def weights_through(lib, conv_dtype, bn_dtype, with_bias, requires_grad):
    """fuse_conv_bn_weights on the same NumPy values in one engine."""
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    stats = [rng.uniform(0.5, 1.5, 3) for _ in range(4)]

    def make(value, dtype, grad=False):
        t = lib.tensor(value.astype(dtype))
        return t.requires_grad_(grad)
    conv_w = make(w, conv_dtype, requires_grad)
    conv_b = make(b, conv_dtype, requires_grad) if with_bias else None
    rm, rv, bn_w, bn_b = (make(s, bn_dtype) for s in stats)
    module = fusion if lib is tinyres else torch.nn.utils.fusion
    return module.fuse_conv_bn_weights(conv_w, conv_b, rm, rv, 1e-3, bn_w, bn_b)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("dtypes", [(np.float64, np.float64), (np.float32, np.float64),
                                    (np.float64, np.float32)])
def test_fuse_conv_bn_weights_dtype_and_requires_grad_match_torch(with_bias, requires_grad,
                                                                  dtypes):
    ours = weights_through(tinyres, *dtypes, with_bias, requires_grad)
    theirs = weights_through(torch, *dtypes, with_bias, requires_grad)
    for a, b in zip(ours, theirs):
        assert isinstance(a, nn.Parameter) and a.is_leaf and a.grad_fn is None
        assert a.dtype == np.dtype(dtypes[0]) == np.dtype(str(b.dtype)[6:])
        assert a.requires_grad == b.requires_grad
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-6)
    assert ours[1].requires_grad == (with_bias and requires_grad)   # torch's rule, bias too


def test_fuse_conv_bn_weights_channel_mismatch_fails_in_both():
    errors = []
    for lib in LIBS.values():      # conv's 3 output channels, bn's 4
        module = fusion if lib is tinyres else torch.nn.utils.fusion
        stats = [lib.ones(4) for _ in range(4)]
        with pytest.raises(RuntimeError) as err:
            module.fuse_conv_bn_weights(lib.ones(3, 2, 1, 1), None, stats[0], stats[1], 1e-5,
                                        stats[2], stats[3])
        errors.append(str(err.value))
    assert "mul" in errors[0] and "(3, 2, 1, 1) and (4, 1, 1, 1)" in errors[0]


@pytest.mark.parametrize("which", ["first", "bn"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_fusion_only_for_eval_in_both(which, kind):
    name = "fuse_conv_bn_eval" if kind == "conv" else "fuse_linear_bn_eval"
    for lib_name, pair in both_pairs(kind, 3, 3, True, True, kernel_size=1).items():
        pair[0 if which == "first" else 1].train()
        function = getattr(fusion if lib_name == "tinyres" else torch.nn.utils.fusion, name)
        with pytest.raises(AssertionError, match="Fusion only for eval!"):
            function(*pair)


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_bn_without_running_stats_refused_in_both(kind):
    for lib_name, lib in LIBS.items():
        first = lib.nn.Conv2d(2, 3, 1) if kind == "conv" else lib.nn.Linear(2, 3)
        bn_type = lib.nn.BatchNorm2d if kind == "conv" else lib.nn.BatchNorm1d
        bn = bn_type(3, track_running_stats=False)
        module = fusion if lib_name == "tinyres" else torch.nn.utils.fusion
        function = module.fuse_conv_bn_eval if kind == "conv" else module.fuse_linear_bn_eval
        with pytest.raises(AssertionError, match="running_mean and bn.running_var must not"):
            function(first.eval(), bn.eval())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("features", [4, 1])
def test_fuse_linear_bn_eval_matches_torch(bias, features):
    pairs = both_pairs("linear", 3, 4, bias, True)
    if features == 1:         # a batch norm of one feature broadcasts over the outputs
        for lib_name, lib in LIBS.items():
            bn = lib.nn.BatchNorm1d(1).eval()
            if lib is torch:
                bn = bn.double()
            else:
                bn.to(dtype=np.float64)
            set_bn(bn, {"running_mean": np.array([0.3]), "running_var": np.array([2.0]),
                        "weight": np.array([0.7]), "bias": np.array([-0.1])}, lib)
            pairs[lib_name] = (pairs[lib_name][0], bn)
    ours = fusion.fuse_linear_bn_eval(*pairs["tinyres"])
    theirs = torch.nn.utils.fusion.fuse_linear_bn_eval(*pairs["torch"])
    assert_same_parameters(ours, theirs)
    if features == 1 and not bias:
        return     # the fused bias has shape (1,), which tinyres's F.linear does not broadcast
    x = np.random.default_rng(4).standard_normal((5, 3))
    np.testing.assert_allclose(run(tinyres, ours, x), run(torch, theirs, x), rtol=1e-6,
                               atol=1e-6)


def test_fuse_linear_bn_errors_match_torch():
    for lib_name, lib in LIBS.items():
        module = fusion if lib_name == "tinyres" else torch.nn.utils.fusion
        linear = lib.nn.Linear(3, 4).eval()
        with pytest.raises(AssertionError, match="linear.out_features=4 and bn.num_features=3"):
            module.fuse_linear_bn_eval(linear, lib.nn.BatchNorm1d(3).eval())
        with pytest.raises(TypeError):            # affine=False: torch multiplies None
            module.fuse_linear_bn_eval(linear, lib.nn.BatchNorm1d(4, affine=False).eval())


# ----- fold_batchnorm on the ResNets -----------------------------------------------------
def randomise_bns(model, seed=0):
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn, values in zip(bns, random_bn_state(bns, np.random.default_rng(seed))):
        set_bn(bn, {k: v.astype(np.float32) for k, v in values.items()}, tinyres)
    return model


def outputs(model, x):
    with tinyres.no_grad():
        return model(tinyres.tensor(x)).numpy()


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name, n_pairs", [("resnet20", 19), ("resnet18", 20)])
def test_fold_batchnorm_equals_the_unfolded_model(name, n_pairs):
    model = randomise_bns(models.get_model(name)).eval()
    before = copy.deepcopy(model.state_dict())
    folded = fusion.fold_batchnorm(model)
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected, got = outputs(model, x), outputs(folded, x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert count(folded, nn.BatchNorm2d) == 0 and count(folded, nn.Identity) == n_pairs
    assert folded.conv1.bias is not None and not folded.training
    after = model.state_dict()                  # inplace=False: the model is untouched
    assert after.keys() == before.keys() and count(model, nn.BatchNorm2d) == n_pairs
    assert all(np.array_equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("name, n_pairs, left", [
    ("resnet32", 31, 0), ("resnet56", 55, 0), ("resnet50", 53, 0),
    ("preact_resnet20", 10, 9), ("preact_resnet18", 9, 8)])
def test_conv_bn_pairs_of_each_family(name, n_pairs, left):
    model = models.get_model(name).eval()
    pairs = fusion.conv_bn_pairs(model)
    assert len(pairs) == n_pairs and len(set(pairs)) == n_pairs
    modules = dict(model.named_modules())
    assert all(isinstance(modules[c], nn.Conv2d) and isinstance(modules[b], nn.BatchNorm2d)
               for c, b in pairs)
    # the batch norms that open a pre-activation branch (and bn_final) stay
    assert count(model, nn.BatchNorm2d) - n_pairs == left
    if name.startswith("preact"):
        assert ("layer1.0.conv1", "layer1.0.bn2") in pairs
        assert not any(b.endswith("bn1") and b != "bn1" for _, b in pairs)


def test_fold_batchnorm_on_a_preact_net_and_a_plain_twin():
    for model in (models.preact_resnet20(), models.resnet20(shortcut=None),
                  models.resnet20(shortcut="B")):
        model = randomise_bns(model, seed=7).eval()
        x = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)
        folded = fusion.fold_batchnorm(model)
        np.testing.assert_allclose(outputs(folded, x), outputs(model, x), rtol=1e-5,
                                   atol=1e-5)


def test_fold_batchnorm_refuses_a_training_model_and_folds_in_place_on_request():
    model = models.resnet20()
    with pytest.raises(AssertionError, match="Fusion only for eval!.*model.eval"):
        fusion.fold_batchnorm(model)
    model.eval()
    model.layer2[1].bn1.train()
    with pytest.raises(AssertionError, match="layer2.1.bn1 is in training mode"):
        fusion.fold_batchnorm(model)
    model.eval()
    assert fusion.fold_batchnorm(model, inplace=True) is model
    assert count(model, nn.BatchNorm2d) == 0


class ConvUsedTwice(nn.Module):
    """conv's output goes to bn and, raw, to the output: folding would change it."""

    def __init__(self, inplace_relu=False):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
        self.inplace_relu = inplace_relu

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y
        w = self.conv2(z)
        if self.inplace_relu:
            w.relu_()                # bn2 then reads a changed tensor: not conv2's output
        return self.bn2(w)


@pytest.mark.parametrize("inplace_relu", [False, True])
def test_only_true_conv_bn_pairs_are_folded(inplace_relu):
    model = ConvUsedTwice(inplace_relu)
    for bn in (model.bn, model.bn2):
        set_bn(bn, {k: v.astype(np.float32) for k, v in
                    random_bn_state([bn], np.random.default_rng(8))[0].items()}, tinyres)
    model.eval()
    expected_pairs = [] if inplace_relu else [("conv2", "bn2")]
    assert fusion.conv_bn_pairs(model, tinyres.randn(1, 2, 5, 5)) == expected_pairs
    folded = fusion.fold_batchnorm(model)
    assert isinstance(folded.bn, nn.BatchNorm2d)
    x = np.random.default_rng(9).standard_normal((2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(outputs(folded, x), outputs(model, x), rtol=1e-5, atol=1e-5)


def test_folded_resnet20_matches_torch_fx_fuse():
    """torch.fx's fuse() on torch's resnet20 and fold_batchnorm on tinyres's, same weights:
    the same state_dict keys, values and outputs (float64)."""
    import torch_resnets
    from torch.fx.experimental.optimization import fuse
    torch.manual_seed(0)
    theirs = torch_resnets.resnet20().double()
    values = random_bn_state([m for m in theirs.modules()
                              if isinstance(m, torch.nn.BatchNorm2d)], np.random.default_rng(0))
    for bn, v in zip([m for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)],
                     values):
        set_bn(bn, v, torch)
    theirs.eval()
    ours = models.from_state_dict("resnet20", {k: v.numpy() for k, v in
                                               theirs.state_dict().items()},
                                  dtype=np.float64).eval()
    theirs, ours = fuse(theirs), fusion.fold_batchnorm(ours)
    mine, other = ours.state_dict(), {k: v.numpy() for k, v in theirs.state_dict().items()}
    assert sorted(mine) == sorted(other)
    for k in mine:
        np.testing.assert_allclose(mine[k], other[k], rtol=1e-12, atol=1e-12, err_msg=k)
    x = np.random.default_rng(10).standard_normal((2, 3, 32, 32))
    np.testing.assert_allclose(run(tinyres, ours, x), run(torch, theirs, x), rtol=1e-6,
                               atol=1e-6)


def test_fold_batchnorm_refuses_a_model_under_a_gradient_probe():
    from tinyres.probes import GradientProbe
    model = models.resnet20().eval()
    with GradientProbe(model):
        with pytest.raises(RuntimeError, match="GradientProbe is attached to layer1.0"):
            fusion.fold_batchnorm(model)
    assert count(fusion.fold_batchnorm(model), nn.BatchNorm2d) == 0    # detached: folds


class ConvThenLinear(nn.Module):
    """conv -> bn -> flatten -> linear -> bn1d: takes 5x5 inputs only."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.fc, self.bn1d = nn.Linear(3 * 5 * 5, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn1d(self.fc(self.bn(self.conv(x)).flatten(1)))


def test_fold_batchnorm_folds_linear_pairs_and_asks_for_an_input_when_needed():
    model = ConvThenLinear()
    for bn in (model.bn, model.bn1d):
        set_bn(bn, {k: v.astype(np.float32) for k, v in
                    random_bn_state([bn], np.random.default_rng(11))[0].items()}, tinyres)
    model.eval()
    with pytest.raises(RuntimeError, match="example_input"):
        fusion.fold_batchnorm(model)              # the default 32x32 sample does not fit
    example = tinyres.randn(1, 2, 5, 5)
    assert fusion.conv_bn_pairs(model, example) == [("conv", "bn"), ("fc", "bn1d")]
    folded = fusion.fold_batchnorm(model, example_input=example)
    assert isinstance(folded.bn1d, nn.Identity) and isinstance(folded.fc, nn.Linear)
    x = np.random.default_rng(12).standard_normal((3, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(outputs(folded, x), outputs(model, x), rtol=1e-5, atol=1e-5)
