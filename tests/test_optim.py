"""Tests of tinyres.optim: SGD, Adam, AdamW and the schedulers against torch, and resuming
from a saved state_dict."""
import warnings

import numpy as np
import pytest

from tinyres import nn
from tinyres.optim import SGD, Adam, AdamW
from tinyres.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR
from tinyres.optim.optimizer import flatten_state_dict
from tinyres.tensor import Tensor

SHAPES = [(3, 4), (5,), (2, 1, 3)]
STEPS = 5

OPTIMIZERS = {
    "sgd": (SGD, dict(lr=0.1)),
    "sgd_momentum": (SGD, dict(lr=0.1, momentum=0.9)),
    "sgd_nesterov": (SGD, dict(lr=0.05, momentum=0.8, nesterov=True)),
    "sgd_weight_decay": (SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    "sgd_dampening": (SGD, dict(lr=0.1, momentum=0.7, dampening=0.3)),
    "adam": (Adam, dict(lr=1e-2)),
    "adam_weight_decay": (Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)),
    "adam_amsgrad": (Adam, dict(lr=1e-2, amsgrad=True, eps=1e-6)),
    "adamw": (AdamW, dict(lr=1e-2)),
    "adamw_strong_decay": (AdamW, dict(lr=3e-2, weight_decay=0.5, betas=(0.5, 0.9))),
}


def _arrays(seed):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(2 * STEPS)]
    return params, grads


def _run_ours(optimizer, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = Tensor(g.copy())
        optimizer.step()


def _run_torch(torch, optimizer, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.from_numpy(g.copy())
        optimizer.step()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_matches_torch(name):
    torch = pytest.importorskip("torch")
    cls, options = OPTIMIZERS[name]
    start, grads = _arrays(0)
    ours = [nn.Parameter(a.copy()) for a in start]
    ref = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    _run_ours(cls(ours, **options), ours, grads[:STEPS])
    _run_torch(torch, getattr(torch.optim, cls.__name__)(ref, **options), ref, grads[:STEPS])
    for p, q, a in zip(ours, ref, start):
        assert not np.allclose(p.array, a)            # the parameters did move
        np.testing.assert_allclose(p.array, q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_param_groups_have_their_own_options_and_match_torch():
    torch = pytest.importorskip("torch")
    start, grads = _arrays(1)
    ours = [nn.Parameter(a.copy()) for a in start]
    ref = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    opt = SGD([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.5, "momentum": 0.5}],
              lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[0]["nesterov"] is False
    _run_ours(opt, ours, grads[:STEPS])
    _run_torch(torch, torch.optim.SGD([{"params": ref[:2]},
                                       {"params": ref[2:], "lr": 0.5, "momentum": 0.5}],
                                      lr=0.1, momentum=0.9), ref, grads[:STEPS])
    for p, q in zip(ours, ref):
        np.testing.assert_allclose(p.array, q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_parameters_without_gradient_are_skipped_and_zero_grad_clears():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))
    opt = Adam([a, b], lr=0.1)
    a.grad = Tensor(np.ones(3))
    opt.step()
    assert np.all(a.array < 1) and np.all(b.array == 1)
    assert b not in opt.state and float(opt.state[a]["step"]) == 1
    opt.zero_grad()
    assert a.grad is None


def test_updates_are_in_place_and_keep_dtype():
    p = nn.Parameter(np.ones(4, dtype=np.float32))
    array = p.array
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    p.grad = Tensor(np.ones(4, dtype=np.float32))
    opt.step()
    assert p.array is array and p.dtype == np.float32
    assert opt.state[p]["momentum_buffer"].dtype == np.float32


def test_invalid_options_are_rejected():
    p = [nn.Parameter(np.ones(2))]
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        SGD(p, lr=-1.0)
    with pytest.raises(ValueError):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one"):
        SGD([{"params": p}, {"params": p}], lr=0.1)


# ----- resuming -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sgd_nesterov", "adam_amsgrad", "adamw"])
def test_resumed_optimizer_continues_exactly(name, tmp_path):
    cls, options = OPTIMIZERS[name]
    start, grads = _arrays(2)
    straight = [nn.Parameter(a.copy()) for a in start]
    _run_ours(cls(straight, **options), straight, grads)

    first = [nn.Parameter(a.copy()) for a in start]
    opt = cls(first, **options)
    _run_ours(opt, first, grads[:STEPS])
    path = tmp_path / "opt.npz"
    np.savez(path, **flatten_state_dict(opt.state_dict()))   # plain arrays and numbers only
    loaded = dict(np.load(path))

    resumed = [nn.Parameter(p.array.copy()) for p in first]
    fresh = cls(resumed, lr=123.0)                   # options come from the state_dict
    fresh.load_state_dict(loaded)
    assert fresh.param_groups[0]["lr"] == options["lr"]
    assert isinstance(fresh.param_groups[0]["lr"], float)
    _run_ours(fresh, resumed, grads[STEPS:])
    for p, q in zip(straight, resumed):
        np.testing.assert_array_equal(p.array, q.array)


def test_optimizer_state_dict_layout_and_mismatch():
    params = [nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))]
    opt = SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.2}], lr=0.1,
              momentum=0.9)
    for p in params:
        p.grad = Tensor(np.ones(p.shape))
    opt.step()
    sd = flatten_state_dict(opt.state_dict())
    np.testing.assert_array_equal(sd["param_groups.1.params"], [1])
    assert sd["param_groups.1.lr"] == 0.2
    np.testing.assert_array_equal(sd["state.1.momentum_buffer"], np.ones(3))
    sd["state.1.momentum_buffer"][...] = 7                  # a copy, not the live buffer
    assert bool((opt.state[params[1]]["momentum_buffer"] == 1).all())
    with pytest.raises(ValueError, match="parameter groups"):
        SGD(params, lr=0.1).load_state_dict(sd)


# ----- schedulers -----------------------------------------------------------------------
def _lr_sequences(torch, ours_cls, torch_cls, epochs, **kwargs):
    opt = SGD([nn.Parameter(np.ones(1))], lr=0.1)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    ours, ref = ours_cls(opt, **kwargs), torch_cls(ref_opt, **kwargs)
    got, want = [ours.get_last_lr()[0]], [ref.get_last_lr()[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            opt.step()
            ref_opt.step()
            ours.step()
            ref.step()
            got.append(opt.param_groups[0]["lr"])
            want.append(ref.get_last_lr()[0])
    return np.array(got), np.array(want)


def test_multistep_lr_matches_torch():
    torch = pytest.importorskip("torch")
    got, want = _lr_sequences(torch, MultiStepLR, torch.optim.lr_scheduler.MultiStepLR, 12,
                              milestones=[3, 7, 7, 10], gamma=0.5)
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert got[-1] == pytest.approx(0.1 * 0.5 ** 4)


def test_cosine_closed_form_matches_torch_recursion_over_periods():
    torch = pytest.importorskip("torch")
    got, want = _lr_sequences(torch, CosineAnnealingLR,
                              torch.optim.lr_scheduler.CosineAnnealingLR, 7 * 6,
                              T_max=7, eta_min=1e-3)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[7] == pytest.approx(1e-3) and got[14] == pytest.approx(0.1)


def test_scheduler_state_dict_round_trip(tmp_path):
    def make():
        opt = SGD([nn.Parameter(np.ones(1))], lr=0.1, momentum=0.9)
        return opt, CosineAnnealingLR(opt, T_max=10, eta_min=0.01)

    opt, sched = make()
    for _ in range(4):
        opt.step()
        sched.step()
    path = tmp_path / "sched.npz"
    np.savez(path, **sched.state_dict())
    opt_state = opt.state_dict()
    opt2, sched2 = make()
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(dict(np.load(path)))
    assert sched2.last_epoch == 4 and sched2.get_last_lr() == sched.get_last_lr()
    for _ in range(3):
        sched.step()
        sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert sched2.get_last_lr() == sched.get_last_lr()
