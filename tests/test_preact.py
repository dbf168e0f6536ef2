"""Identity Mappings (He et al. 2016) in tinyres: the pre-activation ResNets (parameter
counts from a closed formula, the shared pre-activations, the bare residual_add, parity of
a pre-activation ResNet-18 and a CIFAR bottleneck net with PyTorch implementations written
here), and the shortcut variants and block orderings (formulas, options, errors, gradients)."""
import inspect
import re

import numpy as np
import pytest

import tinyres
import tinyres.nn.functional as F
from tinyres import models
from tinyres.gradcheck import gradcheck
from tinyres.models import preact, shortcuts
from tinyres.models.orderings import ORDERINGS, CifarVariantResNet


# ----- parameter counts, from the architecture ------------------------------------------
def bn(c):
    return 2 * c


def basic(i, p, lead):
    """A pre-activation basic block: BN on its input unless its pre-activation comes from
    the stem, two 3x3 convs, BN between, a bare 1x1 projection where the shape changes."""
    return (bn(i) if lead != "none" else 0) + 9 * i * p + bn(p) + 9 * p * p + \
        (i * p if i != p else 0)


def bottleneck(i, p, lead):
    return (bn(i) if lead != "none" else 0) + i * p + bn(p) + 9 * p * p + bn(p) + 4 * p * p + \
        (i * 4 * p if i != 4 * p else 0)


def stages(block, stem_channels, widths, counts, expansion):
    total, i = 0, stem_channels
    for s, (p, n) in enumerate(zip(widths, counts)):
        total += block(i, p, "none" if s == 0 else "shared")
        total += (n - 1) * block(p * expansion, p, "own")
        i = p * expansion
    return total, i


def cifar_count(block, n, expansion, classes=10):
    body, out = stages(block, 16, (16, 32, 64), (n, n, n), expansion)
    return 27 * 16 + bn(16) + body + bn(out) + out * classes + classes


def imagenet_count(block, layers, expansion, classes=1000):
    body, out = stages(block, 64, (64, 128, 256, 512), layers, expansion)
    return 3 * 49 * 64 + bn(64) + body + bn(out) + out * classes + classes


EXPECTED = {
    "preact_resnet20": cifar_count(basic, 3, 1), "preact_resnet56": cifar_count(basic, 9, 1),
    "preact_resnet110": cifar_count(basic, 18, 1),
    "preact_resnet164": cifar_count(bottleneck, 18, 4),
    "preact_resnet1001": cifar_count(bottleneck, 111, 4),
    "preact_resnet18": imagenet_count(basic, [2, 2, 2, 2], 1),
    "preact_resnet50": imagenet_count(bottleneck, [3, 4, 6, 3], 4),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts_follow_from_the_architecture_and_the_docstring_says_them(name):
    constructor = models.ARCHITECTURES[name]
    assert models.count_parameters(constructor()) == EXPECTED[name]
    assert f"{EXPECTED[name]:,} parameters" in " ".join(constructor.__doc__.split())


def test_the_papers_sizes():
    """Preact-110 and preact-164 about 1.7M, preact-1001 about 10.2M (the paper's Table
    4-5 figures, rounded); preact-18 has 1,792 fewer than resnet18 (its docstring)."""
    assert round(EXPECTED["preact_resnet110"] / 1e6, 1) == 1.7
    assert round(EXPECTED["preact_resnet164"] / 1e6, 1) == 1.7
    assert round(EXPECTED["preact_resnet1001"] / 1e6, 1) == 10.3
    assert models.count_parameters(models.resnet18()) - EXPECTED["preact_resnet18"] == 1792


# ----- the structure ---------------------------------------------------------------------
@pytest.mark.parametrize("block", [preact.PreActBlock, preact.PreActBottleneck])
def test_the_forward_ends_in_the_bare_residual_add(block):
    lines = [s.strip() for s in inspect.getsource(block.forward).splitlines() if s.strip()]
    assert lines[-1].startswith("return self.watched(residual_add(out, identity))")
    assert not any("relu" in s for s in lines[-3:])


def test_shared_pre_activations_and_final_bn():
    tinyres.manual_seed(0)
    net = models.preact_resnet164()
    assert [net.layer1[0].preact, net.layer2[0].preact, net.layer3[0].preact] == \
        ["none", "shared", "shared"]
    assert net.layer1[0].bn1 is None and net.layer1[0].downsample is not None
    assert all(b.preact == "own" and b.downsample is None for b in list(net.layer2)[1:])
    assert net.bn_final.num_features == 256
    r18 = models.preact_resnet18()
    assert r18.layer1[0].preact == "none" and r18.layer1[0].downsample is None
    assert [getattr(r18, f"layer{i}")[0].preact for i in (2, 3, 4)] == ["shared"] * 3


def test_shared_block_projects_the_activated_input():
    """In a "shared" block the 1x1 projection reads relu(bn1(x)), not x."""
    tinyres.manual_seed(0)
    block = preact.PreActBlock(8, 16, 2, preact.projection(8, 16, 2), preact="shared")
    block.double().eval()
    x = tinyres.randn(2, 8, 6, 6, dtype=tinyres.float64)
    with tinyres.no_grad():
        a = block.relu(block.bn1(x))
        want = block.conv2(block.relu(block.bn2(block.conv1(a)))) + block.downsample(a)
        np.testing.assert_allclose(block(x).numpy(), want.numpy(), rtol=1e-12)


def test_bad_preact_options():
    with pytest.raises(ValueError, match="preact must be one of"):
        preact.PreActBlock(8, 8, preact="both")
    with pytest.raises(ValueError, match="use preact='shared'"):
        preact.PreActBlock(8, 16, 2, preact.projection(8, 16, 2), preact="own")


# ----- parity with an independent PyTorch implementation --------------------------------
def torch_preact_models():
    """Pre-activation ResNets in plain PyTorch, written from the paper, with tinyres's
    state_dict keys (so the weights can be copied)."""
    from torch import nn

    def conv(i, o, k, s=1):
        return nn.Conv2d(i, o, k, s, k // 2, bias=False)

    class Block(nn.Module):
        def __init__(self, i, p, s, lead, bottleneck):
            super().__init__()
            self.lead, self.bottleneck = lead, bottleneck
            o = 4 * p if bottleneck else p
            self.bn1 = nn.BatchNorm2d(i) if lead != "none" else None
            if bottleneck:
                self.conv1, self.bn2 = conv(i, p, 1), nn.BatchNorm2d(p)
                self.conv2, self.bn3 = conv(p, p, 3, s), nn.BatchNorm2d(p)
                self.conv3 = conv(p, o, 1)
            else:
                self.conv1, self.bn2 = conv(i, p, 3, s), nn.BatchNorm2d(p)
                self.conv2 = conv(p, p, 3)
            self.downsample = nn.Sequential(conv(i, o, 1, s)) if s != 1 or i != o else None

        def forward(self, x):
            act = torch.relu
            a = act(self.bn1(x)) if self.bn1 is not None else x
            short = x if self.lead == "own" else a
            if self.downsample is not None:
                short = self.downsample(short)
            out = self.conv1(a)
            out = self.conv2(act(self.bn2(out)))
            if self.bottleneck:
                out = self.conv3(act(self.bn3(out)))
            return out + short

    class Net(nn.Module):
        def __init__(self, imagenet, bottleneck, layers, classes):
            super().__init__()
            widths = (64, 128, 256, 512) if imagenet else (16, 32, 64)
            self.imagenet, e = imagenet, 4 if bottleneck else 1
            self.conv1 = conv(3, widths[0], 7, 2) if imagenet else conv(3, 16, 3)
            self.bn1 = nn.BatchNorm2d(widths[0])
            i = widths[0]
            for s, (p, n) in enumerate(zip(widths, layers)):
                blocks = [Block(i, p, 1 if s == 0 else 2, "none" if s == 0 else "shared",
                                bottleneck)]
                blocks += [Block(p * e, p, 1, "own", bottleneck) for _ in range(n - 1)]
                self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
                i = p * e
            self.stages = len(widths)
            self.bn_final, self.fc = nn.BatchNorm2d(i), nn.Linear(i, classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            if self.imagenet:
                x = nn.functional.max_pool2d(x, 3, 2, 1)
            for s in range(self.stages):
                x = getattr(self, f"layer{s + 1}")(x)
            x = torch.relu(self.bn_final(x))
            return self.fc(x.mean((2, 3)))

    import torch
    return torch, Net


def relative_error(a, b):
    """max |a - b| / max |b|: the worst error against the largest entry (a batch norm over
    few values amplifies the rounding of entries near zero, elementwise)."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


PARITY = {"preact_resnet18": (dict(imagenet=True, bottleneck=False, layers=[2, 2, 2, 2],
                                   classes=1000), (2, 3, 32, 32)),
          "cifar_bottleneck": (dict(imagenet=False, bottleneck=True, layers=[2, 2, 2],
                                    classes=10), (4, 3, 16, 16))}


def ours_for(name):
    if name == "preact_resnet18":
        return models.preact_resnet18()
    return models.CifarPreActResNet(models.PreActBottleneck, 2)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(PARITY))
def test_parity_with_an_independent_torch_implementation(name, train):
    torch = pytest.importorskip("torch")
    torch, Net = torch_preact_models()
    options, shape = PARITY[name]
    torch.manual_seed(0)
    theirs = Net(**options).double()
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    ours = ours_for(name).double()
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    assert sorted(state) == sorted(ours.state_dict())
    ours.load_state_dict(state)
    theirs.train(train), ours.train(train)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    target = rng.integers(0, options["classes"], size=shape[0])
    xt = torch.tensor(x, requires_grad=True)
    out_t = theirs(xt)
    loss_t = torch.nn.functional.cross_entropy(out_t, torch.tensor(target))
    loss_t.backward()
    xo = tinyres.tensor(x, requires_grad=True)
    out = ours(xo)
    loss_o = F.cross_entropy(out, tinyres.tensor(target))
    loss_o.backward()
    assert out.dtype == tinyres.float64
    assert loss_o.item() == pytest.approx(loss_t.item(), rel=1e-12)
    assert relative_error(out.numpy(), out_t.detach().numpy()) < 1e-12
    assert relative_error(xo.grad.numpy(), xt.grad.numpy()) < 1e-10
    ours_params = dict(ours.named_parameters())
    for k, p in theirs.named_parameters():
        assert relative_error(ours_params[k].grad.numpy(), p.grad.numpy()) < 1e-10, k
    ours_state = ours.state_dict()
    for k, v in theirs.state_dict().items():      # the running statistics after the step
        np.testing.assert_allclose(ours_state[k], v.numpy(), rtol=1e-10, err_msg=k)


# ----- the shortcut variants (Table 1) and orderings (Fig. 4) ----------------------------
def pair(seed=0, shape=(2, 4, 3, 3)):
    rng = np.random.default_rng(seed)
    return (tinyres.tensor(rng.standard_normal(shape), requires_grad=True),
            tinyres.tensor(rng.standard_normal(shape), requires_grad=True))


def test_each_join_computes_its_formula():
    tinyres.manual_seed(0)
    f, x = pair()
    fa, xa = f.numpy(), x.numpy()
    got = lambda join: join(f, x, x).numpy()
    np.testing.assert_allclose(got(shortcuts.IdentityShortcut()), fa + xa)
    np.testing.assert_allclose(got(shortcuts.ConstantScaling(0.3)), fa + 0.3 * xa)
    np.testing.assert_allclose(got(shortcuts.ConstantScaling(0.3, scale_branch=True)),
                               0.7 * fa + 0.3 * xa)
    gating = shortcuts.ExclusiveGating(4, gate_bias=-6.0).double()
    w, b = gating.gate.conv.weight.numpy()[:, :, 0, 0], gating.gate.conv.bias.numpy()
    g = 1 / (1 + np.exp(-(np.einsum("oi,nihw->nohw", w, xa) + b[None, :, None, None])))
    np.testing.assert_allclose(got(gating), g * fa + (1 - g) * xa, rtol=1e-12)
    only = shortcuts.ShortcutOnlyGating(4, gate_bias=-6.0).double()
    only.load_state_dict(gating.state_dict())
    np.testing.assert_allclose(got(only), fa + (1 - g) * xa, rtol=1e-12)
    assert np.all(b == -6.0)
    conv = shortcuts.ConvShortcut(4).double()
    np.testing.assert_allclose(got(conv), fa + np.einsum(
        "oi,nihw->nohw", conv.conv.weight.numpy()[:, :, 0, 0], xa), rtol=1e-12)


def test_dropout_shortcut_drops_without_rescaling_and_scales_in_eval():
    tinyres.manual_seed(0)
    drop = shortcuts.DropoutShortcut(0.5)
    f, x = tinyres.zeros(64, 16, 8, 8), tinyres.ones(64, 16, 8, 8)
    y = drop(f, x).numpy()
    assert set(np.unique(y)) == {0.0, 1.0} and abs(y.mean() - 0.5) < 0.01
    drop.eval()
    np.testing.assert_array_equal(drop(f, x).numpy(), 0.5 * np.ones((64, 16, 8, 8)))
    with pytest.raises(ValueError, match="DropoutShortcut: p must be in"):
        shortcuts.DropoutShortcut(1.0)


@pytest.mark.parametrize("join", ["exclusive_gating", "shortcut_only_gating", "conv",
                                  "constant_scaling"])
def test_join_gradients_against_finite_differences(join):
    tinyres.manual_seed(0)
    module = shortcuts.make_shortcut(join, 4, gate_bias=0.5).double()
    f, x = pair(1)
    gradcheck(lambda f, x: module(f, x, x), (f, x))


@pytest.mark.parametrize("ordering", sorted(ORDERINGS))
@pytest.mark.parametrize("shortcut", models.SHORTCUTS)
def test_every_variant_trains_a_step_and_its_shortcut_gradient_is_its_formula(ordering,
                                                                              shortcut):
    from tinyres.probes import GradientProbe
    tinyres.manual_seed(0)
    net = CifarVariantResNet(2, shortcut=shortcut, ordering=ordering).double()
    x = tinyres.randn(4, 3, 8, 8, dtype=tinyres.float64)
    with GradientProbe(net) as probe:
        F.cross_entropy(net(x), tinyres.tensor(np.arange(4))).backward()
    rows = [r for r in probe.records() if r["keeps_shape"]]
    assert len(rows) == 4 and all(r["grad_shortcut"] > 0 for r in rows)
    if ordering == "bn_after_add":        # no closed formula behind a batch norm
        assert all(np.isnan(r["formula_error"]) for r in rows)
    else:
        assert max(r["formula_error"] for r in rows) < 1e-12


def test_variant_options_reach_the_blocks():
    net = CifarVariantResNet(3, shortcut="constant_scaling", ordering="full_preact", lam=0.7,
                             scale_branch=True)
    joins = [b.join for b in net.modules() if hasattr(b, "join")]
    kinds = [type(j).__name__ for j in joins]
    # the blocks that subsample keep an identity join: layer2.0 and layer3.0
    assert kinds.count("IdentityShortcut") == 2 and kinds.count("ConstantScaling") == 7
    assert all(j.scale == 0.7 and j.scale_branch for j in joins
               if isinstance(j, shortcuts.ConstantScaling))
    assert net.bn_final is not None and CifarVariantResNet(3).bn_final is None
    gated = CifarVariantResNet(2, shortcut="exclusive_gating", gate_bias=-6.0)
    assert np.all(gated.layer1[1].join.gate.conv.bias.numpy() == -6.0)
    assert models.count_parameters(CifarVariantResNet(3)) == \
        models.count_parameters(models.resnet20())


def test_bad_variant_names():
    with pytest.raises(ValueError, match="ordering must be one of"):
        CifarVariantResNet(1, ordering="post")
    with pytest.raises(ValueError, match="shortcut must be one of"):
        CifarVariantResNet(1, shortcut="highway")


def test_module_docstring_lists_every_variant():
    for name in ("IdentityShortcut", "ConstantScaling", "ExclusiveGating",
                 "ShortcutOnlyGating", "ConvShortcut", "DropoutShortcut"):
        assert re.search(rf"^\s+{name}\s+y = ", shortcuts.__doc__, flags=re.M), name
