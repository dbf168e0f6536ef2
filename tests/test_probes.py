"""The "+1" made measurable: the probe's bookkeeping, and the facts of the lesson on fixed
seeds (zero-initialised blocks pass the gradient through unchanged; a shortcut scaled by
lambda multiplies it by lambda per block; plain twins lose the scale of their gradients)."""
import numpy as np
import pytest

import tinyres
import tinyres.nn.functional as F
from tinyres import models
from tinyres.probes import GradientProbe, direct_path


def backward_with_probe(model, seed=0, batch=8, size=32):
    rng = np.random.default_rng(seed)
    x = tinyres.tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32))
    y = tinyres.tensor(rng.integers(0, 10, size=batch))
    with GradientProbe(model) as probe:
        F.cross_entropy(model(x), y).backward()
    return probe


def test_probe_paths_add_up_to_the_input_gradient():
    tinyres.manual_seed(0)
    probe = backward_with_probe(models.resnet20())
    rows = probe.records()
    assert [r["block"] for r in rows][:2] == ["layer1.0", "layer1.1"] and len(rows) == 9
    for r in rows:
        assert r["sum_error"] < 1e-5
        assert r["grad_shortcut"] > 0 and r["grad_branch"] > 0
    assert "|g short|" in probe.summary()


def test_block_input_gradient_is_the_output_gradient_of_the_block_before():
    tinyres.manual_seed(0)
    rows = backward_with_probe(models.resnet20()).records()
    for before, after in zip(rows, rows[1:]):
        assert before["grad_output"] == pytest.approx(after["grad_input"], rel=1e-6)


def test_plain_twin_has_no_shortcut_gradient():
    tinyres.manual_seed(0)
    rows = backward_with_probe(models.resnet20(shortcut=None)).records()
    assert all(r["grad_shortcut"] == 0.0 for r in rows)
    assert all(r["grad_branch"] == pytest.approx(r["grad_input"]) for r in rows)


def stage_gradients(model, seed=0):
    """(input gradient, output gradient) of layer1, which has stride-1 blocks only."""
    rng = np.random.default_rng(seed)
    x = tinyres.tensor(rng.standard_normal((4, 3, 16, 16)), dtype=tinyres.float64)
    y = tinyres.tensor(rng.integers(0, 10, size=4))
    model.double()
    stem = model.relu(model.bn1(model.conv1(x)))
    h = tinyres.Tensor(stem.array, requires_grad=True)       # layer1's input, a leaf
    out = model.layer1(h)
    out.retain_grad()
    F.cross_entropy(model.fc(model.avgpool(model.layer3(model.layer2(out))).flatten(1)),
                    y).backward()
    return h.grad.numpy(), out.grad.numpy(), h.numpy()


def test_zero_init_block_passes_the_gradient_through_exactly_where_relu_is_open():
    tinyres.manual_seed(0)
    g_in, g_out, h = stage_gradients(models.resnet20(zero_init_residual=True))
    open_ = h > 0     # each block computes relu(0 + x): open exactly where x > 0
    np.testing.assert_array_equal(g_in[open_], g_out[open_])
    assert np.all(g_in[~open_] == 0)
    assert np.abs(g_out).sum() > 0


@pytest.mark.parametrize("lam", [0.5, 0.9, 1.1, 1.5])
def test_shortcut_scale_lambda_gives_lambda_to_the_k(lam):
    """Through k = 3 zero-initialised stride-1 blocks with y = relu(F(x) + lam * x), the
    gradient at the input is lam**3 times the gradient at the output."""
    tinyres.manual_seed(0)
    g_in, g_out, h = stage_gradients(models.resnet20(zero_init_residual=True,
                                                     shortcut_scale=lam))
    open_ = h > 0
    ratio = np.linalg.norm(g_in[open_]) / np.linalg.norm(g_out[open_])
    assert ratio == pytest.approx(lam ** 3, rel=1e-12)


def norm_spread(model):
    """max/min of the per-block input-gradient norms: 1 means every block sees the same
    gradient scale."""
    rows = backward_with_probe(model, batch=16, size=16).records()
    norms = np.array([r["grad_input"] for r in rows])
    return norms.max() / norms.min()


def test_plain_twin_gradients_drift_with_depth_but_residual_ones_do_not():
    """At initialisation (torchvision init, batch statistics), per-block input-gradient
    norms of a 56-layer plain twin spread over more than three orders of magnitude (they
    grow about 1.4x per block towards the input), while the residual resnet56 keeps them
    within about one and a half (measured max/min over the 27 blocks, seeds 0 and 1:
    plain 3.6e3 and 6.7e3, residual 25 and 31)."""
    tinyres.manual_seed(0)
    residual = norm_spread(models.resnet56())
    tinyres.manual_seed(0)
    plain = norm_spread(models.resnet56(shortcut=None))
    assert residual < 50
    assert plain > 1000
    assert plain > 50 * residual


# ----- Identity Mappings: each block's shortcut factor and the direct path (eq. 8) ------
def probe_variant(model, cut_branches=False, seed=0):
    rng = np.random.default_rng(seed)
    model.double()
    x = tinyres.tensor(rng.standard_normal((8, 3, 8, 8)))
    y = tinyres.tensor(rng.integers(0, 10, size=8))
    with GradientProbe(model, cut_branches=cut_branches) as probe:
        F.cross_entropy(model(x), y).backward()
    return probe.records()


def test_preact_identity_blocks_carry_the_gradient_back_exactly():
    """Nothing after the add: each identity block's shortcut gradient is its output's."""
    tinyres.manual_seed(0)
    rows = probe_variant(models.preact_resnet20())
    kept = [r for r in rows if r["keeps_shape"]]
    assert len(kept) == 7
    assert all(r["factor"] == 1.0 and r["formula_error"] == 0.0 for r in kept)
    assert all(r["grad_branch"] > 0 for r in kept)
    tinyres.manual_seed(0)
    post = [r for r in probe_variant(models.resnet20()) if r["keeps_shape"]]
    assert max(r["factor"] for r in post) < 0.95            # the ReLU's mask after the add
    assert max(r["formula_error"] for r in post) < 1e-12    # ... is exactly the formula


@pytest.mark.parametrize("shortcut,options,factor", [
    ("identity", {}, 1.0), ("constant_scaling", {"lam": 0.5}, 0.5),
    ("constant_scaling", {"lam": 0.5, "scale_branch": True}, 0.5),
    ("constant_scaling", {"lam": 1.2}, 1.2)])
def test_direct_path_is_the_product_of_the_scalar_factors(shortcut, options, factor):
    """With the branches cut, the gradient at a block's input is the direct-path term of
    eq. 8 alone: through the 5 stride-1 blocks of layer1 it is factor^5 of the gradient
    at layer1's output, and direct_path() says the same from the per-block factors."""
    tinyres.manual_seed(0)
    net = models.CifarVariantResNet(5, shortcut=shortcut, ordering="full_preact", **options)
    rows = {r["block"]: r for r in probe_variant(net, cut_branches=True)}
    measured = rows["layer1.0"]["grad_input"] / rows["layer1.4"]["grad_output"]
    assert measured == pytest.approx(factor ** 5, rel=1e-12)
    path = {p["block"]: p for p in direct_path(list(rows.values()))}
    assert path["layer1.0"]["measured"] == pytest.approx(factor ** 13, rel=1e-12)
    assert path["layer1.0"]["formula"] == pytest.approx(factor ** 13, rel=1e-12)
    assert all(rows[b]["grad_branch"] == 0.0 for b in rows)


def test_cut_branches_leave_the_direct_path_of_masks_and_gates():
    """Through layer1 with the branches cut, the gradient at layer1.0's input is the
    formulas of the blocks applied one after another to the gradient at the top."""
    for shortcut, ordering in (("identity", "original"), ("exclusive_gating", "full_preact"),
                               ("conv", "relu_before_add"), ("dropout", "full_preact")):
        tinyres.manual_seed(0)
        net = models.CifarVariantResNet(3, shortcut=shortcut, ordering=ordering)
        rows = probe_variant(net, cut_branches=True)
        assert max(r["formula_error"] for r in rows if r["keeps_shape"]) < 1e-12, shortcut
        assert all(r["sum_error"] < 1e-12 for r in rows)


def test_dropout_shortcut_factor_is_random_and_below_one():
    """The product of Bernoulli(0.5) masks: about sqrt(1/2) per block in norm (0.5 in
    expectation elementwise), and a different draw each forward."""
    tinyres.manual_seed(0)
    net = models.CifarVariantResNet(3, shortcut="dropout")
    first = [r["factor"] for r in probe_variant(net, seed=0) if r["keeps_shape"]]
    again = [r["factor"] for r in probe_variant(net, seed=0) if r["keeps_shape"]]
    assert first != again
    assert all(abs(f - np.sqrt(0.5)) < 0.2 for f in first + again)
