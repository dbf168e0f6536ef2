"""The quick experiments on a fixed seed reproduce the papers' qualitative results."""
import os

import pytest

import tinyres
import tinyres.nn.functional as F
from tinyres.__main__ import main
from tinyres.experiments import (EXPERIMENTS, identity_mappings, lesion, run, shattered,
                                 shortcut_scale)
from tinyres.experiments.common import digits, evaluate, fit
from tinyres.models import CifarResNet


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """One BLAS thread: these small GEMMs gain nothing from more, and on a busy machine
    spinning BLAS threads make the module several times slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                 # pragma: no cover - only slower without it
        yield
        return
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("experiments"))


def by_net(runs):
    return {(r["net"], r["depth"]): r for r in runs}


def test_degradation_deep_plain_trains_worse(out_dir):
    result = run("degradation", quick=True, seed=0, out_dir=out_dir)
    nets = by_net(result["runs"])
    shallow, deep = sorted({depth for _, depth in nets})
    # the deeper plain net trains worse than the shallower one: degradation
    assert nets["plain", deep]["train_error"] > nets["plain", shallow]["train_error"] + 0.2
    # its residual twin, same depth, data and budget, trains far better (training error
    # and loss as seen during the last epoch, batch norm on batch statistics)
    assert nets["residual", deep]["train_loss"] < nets["plain", deep]["train_loss"]
    assert nets["residual", deep]["train_error"] < nets["plain", deep]["train_error"] - 0.2
    assert os.path.isfile(result["figure"]) and "train err" in result["table"]
    # the eval-mode figures are reported beside them, with chance level; for the deep plain
    # net, whose weights moved fastest, the running averages lag most and eval mode reads worse
    assert nets["plain", deep]["eval_train_error"] > nets["plain", deep]["train_error"]
    assert "eval train err" in result["table"] and "ln 10 = 2.30" in result["table"]


@pytest.fixture(scope="module")
def scale_result(out_dir):
    return shortcut_scale.run(quick=True, seed=0, out_dir=out_dir)


def test_shortcut_scale_follows_lambda_to_the_k(scale_result):
    law = scale_result["law"]
    assert {r["lam"] for r in law} == set(shortcut_scale.LAMBDAS)
    for r in law:
        assert r["zero_branch"] == pytest.approx(r["lam"] ** r["k"], rel=0.01)
    # with the branches switched on, F' adds to lambda and the law no longer holds alone
    assert any(abs(r["branch_on"] / r["predicted"] - 1) > 0.1 for r in law)


def test_shortcut_scale_gradient_ratio_is_not_trivially_one():
    assert shortcut_scale.gradient_ratio(3, 0.5) == pytest.approx(0.125, rel=1e-6)
    assert shortcut_scale.gradient_ratio(3, 1.5) == pytest.approx(3.375, rel=1e-6)


def test_shortcut_scale_large_lambda_blows_up_the_first_epoch(scale_result):
    first = {r["lam"]: r["first_loss"] for r in scale_result["training"]}
    assert first[1.5] > 5 * first[1.0]


def test_shattered_gradients_plain_shatters_resnet_does_not(out_dir):
    result = shattered.run(quick=True, seed=0, out_dir=out_dir)
    lag1 = result["lag1"]
    plain, res = lag1["24-layer plain, BN"], lag1["50-layer resnet, BN"]
    scaled = lag1["50-layer resnet, BN, branches x0.1"]
    assert abs(plain) < 0.2 < 0.4 < res < scaled
    assert scaled > 0.8 and lag1["1-layer plain, BN"] > 0.5
    assert os.path.isfile(result["figure"])


def test_shattered_autocorrelation_of_white_and_smooth_sequences():
    import numpy as np
    rng = np.random.default_rng(0)
    assert abs(shattered.autocorrelation(rng.standard_normal(4096))[1]) < 0.05
    assert shattered.autocorrelation(np.sin(np.linspace(0, 3, 256)))[1] > 0.95


def test_lesion_resnet_survives_plain_does_not(out_dir):
    result = lesion.run(quick=True, seed=0, out_dir=out_dir)
    residual, plain = result["runs"]
    assert (residual["net"], plain["net"]) == ("residual", "plain")
    assert len(residual["deleted"]) == len(plain["deleted"]) == 7
    # lesson 08's claim: the plain twin's mean rise at least twice the residual net's (an
    # absolute gap of 0.3 failed under one float32 summation order at 0.297: the residual
    # net's rise 0.06-0.11 and the plain's 0.39-0.66 under five orders, quick runs)
    assert plain["mean_increase"] > 2 * max(residual["mean_increase"], 0)
    # deleting a block from the middle/end of the resnet costs little
    late = [e for name, e in residual["deleted"] if name.startswith(("layer2", "layer3"))]
    assert max(late) < residual["base_error"] + 0.1


def test_experiment_command(out_dir, capsys):
    assert main(["experiment", "shattered-gradients", "--quick", "--out", out_dir,
                 "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "lag-1" in printed and "shattered_gradients.png" in printed
    assert set(EXPERIMENTS) == {"degradation", "shortcut-scale", "shattered-gradients",
                                "lesion", "identity-mappings"}
    with pytest.raises(ValueError):
        run("no-such-experiment")


def test_identity_mappings_direct_path_and_training(out_dir):
    """He et al. 2016 on the digits: what eq. 8 predicts for the direct path holds exactly,
    and in the same steps the identity shortcut trains further than constant scaling or a
    dropout shortcut, and the pre-activation orderings further than scaling both paths."""
    result = identity_mappings.run(quick=True, seed=0, out_dir=out_dir)
    runs = {r["label"]: r for r in result["runs"]}
    assert list(runs) == [label for label, _ in identity_mappings.VARIANTS]
    blocks = result["blocks"]
    assert blocks == 7
    for label, r in runs.items():           # measured = the formulas, where there is one
        if label != "BN after addition":
            assert r["path"] == pytest.approx(r["path_formula"], rel=1e-5), label
    # identity shortcut, nothing after the add: the "1" arrives untouched
    for label in ("ReLU before addition", "ReLU-only pre-act", "full pre-activation"):
        assert runs[label]["path"] == pytest.approx(1.0, abs=1e-12), label
    # a ReLU after the add masks it; lambda = 0.5 shrinks it by at least 2^-7
    assert runs["original"]["path"] < 0.9
    for label in ("constant 0.5", "constant 0.5, F x 0.5"):
        assert runs[label]["path"] <= 0.5 ** blocks * (1 + 1e-6) < runs["original"]["path"]
        assert runs[label]["path"] == runs[label]["path_again"]
    # dropout: a random product, another draw another value, well below 1
    drop = runs["dropout shortcut"]
    assert drop["path"] != drop["path_again"] and max(drop["path"], drop["path_again"]) < 0.1
    # training loss after the same steps
    loss = {label: r["train_loss"] for label, r in runs.items()}
    assert loss["original"] < min(loss["constant 0.5"], loss["constant 0.5, F x 0.5"],
                                  loss["dropout shortcut"])
    for label in ("ReLU-only pre-act", "full pre-activation"):
        assert loss[label] < min(loss["constant 0.5, F x 0.5"], loss["dropout shortcut"])
    # the paper's figures are printed beside, labelled as the paper's
    assert "paper: CIFAR-10 err %" in result["table"] and "12.35" in result["table"]
    assert runs["full pre-activation"]["paper"].startswith("6.37")
    assert os.path.isfile(result["figure"])


def test_fit_and_evaluate_read_the_device_once_per_epoch():
    x, y, x_test, y_test = digits(n_train=96)
    tinyres.manual_seed(0)
    model = CifarResNet(1, num_classes=10)
    errors = []
    with tinyres.cuda.count_syncs() as counted:
        losses = fit(model, x, y, 2, batch_size=32, errors=errors)
    assert counted.host_reads == 2 and len(losses) == len(errors) == 2   # 3 batches an epoch
    with tinyres.cuda.count_syncs() as counted:
        figures = evaluate(model, x_test, y_test, batch_size=100)
    assert counted.host_reads == 1 and len(x_test) > 300                  # 4 batches
    # the figures are those read batch by batch
    total, wrong = 0.0, 0
    with tinyres.no_grad():
        for start in range(0, len(x_test), 100):
            xb, yb = x_test[start:start + 100], y_test[start:start + 100]
            logits = model(tinyres.tensor(xb))
            total += F.cross_entropy(logits, tinyres.tensor(yb)).item() * len(xb)
            wrong += int((logits.numpy().argmax(1) != yb).sum())
    assert figures == (total / len(x_test), wrong / len(x_test))
