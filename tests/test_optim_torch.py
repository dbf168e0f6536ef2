"""tinyres.optim against torch.optim: every optimizer and option combination on the same
float64 parameters and gradients, state_dict layout and resuming, errors; and every
learning-rate schedule step by step against torch's rates."""
import itertools

import numpy as np
import pytest

import tinyres
from tinyres import nn, optim
from tinyres.optim.optimizer import flatten_state_dict
from tinyres.tensor import Tensor

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (5,), (2, 1, 3)]
STEPS = 7


def _grid(**choices):
    """Every combination of the listed option values, as dicts."""
    names = sorted(choices)
    return [dict(zip(names, values)) for values in itertools.product(*(choices[n] for n in names))]


CASES = (
    [("SGD", dict(lr=0.1, **o)) for o in _grid(momentum=[0, 0.9], dampening=[0, 0.3],
                                               weight_decay=[0, 0.05], maximize=[False, True])]
    + [("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=wd, maximize=mx))
       for wd in (0, 0.1) for mx in (False, True)]
    + [(name, dict(lr=1e-2, **o)) for name in ("Adam", "AdamW")
       for o in _grid(amsgrad=[False, True], maximize=[False, True], weight_decay=[0, 0.1],
                      betas=[(0.9, 0.999), (0.5, 0.8)])]
    + [("Adam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True))]
    + [("RMSprop", dict(lr=1e-2, **o)) for o in _grid(
        alpha=[0.99, 0.5], momentum=[0, 0.9], centered=[False, True], weight_decay=[0, 0.1],
        maximize=[False, True])]
    + [("Adagrad", dict(lr=1e-1, **o)) for o in _grid(
        lr_decay=[0, 0.1], weight_decay=[0, 0.1], initial_accumulator_value=[0, 0.5],
        eps=[1e-10, 1e-3], maximize=[False, True])]
    + [("Adadelta", dict(**o)) for o in _grid(
        lr=[1.0, 0.3], rho=[0.9, 0.5], eps=[1e-6, 1e-3], weight_decay=[0, 0.1],
        maximize=[False, True])]
)


def _arrays(seed, steps=STEPS):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _run(params, optimizer, grads, make_grad):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = make_grad(g.copy())
        optimizer.step()


def _pair(start):
    ours = [nn.Parameter(a.copy()) for a in start]
    ref = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    return ours, ref


def _assert_same(ours, ref, start=None):
    for i, (p, q) in enumerate(zip(ours, ref)):
        if start is not None:
            assert not np.allclose(p.array, start[i])          # the parameters did move
        np.testing.assert_allclose(p.array, q.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,options", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                              for n, o in CASES])
def test_optimizer_matches_torch(name, options):
    start, grads = _arrays(0)
    ours, ref = _pair(start)
    opt = getattr(optim, name)(ours, **options)
    ref_opt = getattr(torch.optim, name)(ref, **options)
    _run(ours, opt, grads, Tensor)
    _run(ref, ref_opt, grads, torch.from_numpy)
    _assert_same(ours, ref, start)
    # the same state entries, the same values
    got, want = opt.state_dict(), ref_opt.state_dict()
    assert got["param_groups"] == want["param_groups"]
    assert sorted(got["state"]) == sorted(want["state"])
    for i, entries in want["state"].items():
        assert sorted(got["state"][i]) == sorted(entries)
        for key, value in entries.items():
            np.testing.assert_allclose(got["state"][i][key].numpy(), value.numpy(),
                                       rtol=1e-12, atol=1e-12, err_msg=key)
            assert got["state"][i][key].dtype == np.dtype(str(value.dtype).split(".")[1])


def test_param_groups_options_lr_change_and_add_param_group():
    start, grads = _arrays(1, steps=8)
    ours, ref = _pair(start)

    def make(lib, params):
        opt = lib.optim.Adam([{"params": params[:1]},
                              {"params": params[1:2], "lr": 0.05, "betas": (0.5, 0.9)}],
                             lr=0.01, amsgrad=True)
        return opt

    opt, ref_opt = make(tinyres, ours), make(torch, ref)
    assert opt.param_groups[1]["amsgrad"] is True and opt.param_groups[1]["eps"] == 1e-8
    for step, step_grads in enumerate(grads):
        if step == 3:
            for o, p in ((opt, ours[2]), (ref_opt, ref[2])):
                o.add_param_group({"params": [p], "weight_decay": 0.2})
                o.param_groups[0]["lr"] = 0.3               # honoured at the next step
        for o, params, make_grad in ((opt, ours, Tensor), (ref_opt, ref, torch.from_numpy)):
            for p, g in zip(params, step_grads):
                p.grad = make_grad(g.copy())
            o.step()
    _assert_same(ours, ref, start)
    assert [g["params"] for g in opt.state_dict()["param_groups"]] == [[0], [1], [2]]


def test_zero_grad_default_is_set_to_none_like_torch():
    p, q = nn.Parameter(np.ones(3)), torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt, ref_opt = optim.SGD([p], lr=0.1), torch.optim.SGD([q], lr=0.1)
    p.grad, q.grad = Tensor(np.ones(3)), torch.ones(3, dtype=torch.float64)
    opt.zero_grad(set_to_none=False)
    ref_opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
    opt.zero_grad()
    ref_opt.zero_grad()
    assert p.grad is None and q.grad is None


RESUMED = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
           ("Adam", dict(lr=1e-2, amsgrad=True)), ("AdamW", dict(lr=1e-2, maximize=True)),
           ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True)),
           ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1)),
           ("Adadelta", dict(lr=0.5))]


@pytest.mark.parametrize("name,options", RESUMED, ids=[n for n, _ in RESUMED])
@pytest.mark.parametrize("flat", [False, True], ids=["nested", "flat"])
def test_resumed_optimizer_continues_exactly(name, options, flat):
    start, grads = _arrays(2, steps=10)
    straight = [nn.Parameter(a.copy()) for a in start]
    _run(straight, getattr(optim, name)(straight, **options), grads, Tensor)
    first = [nn.Parameter(a.copy()) for a in start]
    opt = getattr(optim, name)(first, **options)
    _run(first, opt, grads[:5], Tensor)
    saved = opt.state_dict()
    if flat:
        saved = {k: np.asarray(v) for k, v in flatten_state_dict(saved).items()}
    resumed = [nn.Parameter(p.array.copy()) for p in first]
    fresh = getattr(optim, name)(resumed, lr=123.0)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == options["lr"]
    _run(first, opt, grads[5:], Tensor)                # the original goes on unchanged too
    _run(resumed, fresh, grads[5:], Tensor)
    for p, q, r in zip(straight, resumed, first):
        np.testing.assert_array_equal(p.array, q.array)
        np.testing.assert_array_equal(p.array, r.array)


def test_state_dict_layout_matches_torch():
    start, grads = _arrays(3, steps=2)
    ours, ref = _pair(start)
    opt = optim.SGD([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.2}], lr=0.1,
                    momentum=0.9)
    ref_opt = torch.optim.SGD([{"params": ref[:1]}, {"params": ref[1:], "lr": 0.2}], lr=0.1,
                              momentum=0.9)
    _run(ours, opt, grads, Tensor)
    _run(ref, ref_opt, grads, torch.from_numpy)
    got, want = opt.state_dict(), ref_opt.state_dict()
    assert set(got) == {"state", "param_groups"}
    assert got["param_groups"] == want["param_groups"]
    assert list(got["param_groups"][1]) == list(want["param_groups"][1])   # key order too
    assert sorted(got["state"]) == sorted(want["state"]) == [0, 1, 2]
    # live references, as torch: the state_dict is not a snapshot
    assert got["state"][1]["momentum_buffer"] is opt.state[ours[1]]["momentum_buffer"]
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.SGD(ours, lr=0.1).load_state_dict(got)
    with pytest.raises(ValueError, match="doesn't match the size"):
        optim.SGD([{"params": ours[:2]}, {"params": ours[2:]}], lr=0.1).load_state_dict(got)
    with pytest.raises(ValueError):
        torch.optim.SGD([{"params": ref[:2]}, {"params": ref[2:]}], lr=0.1).load_state_dict(want)


def test_sgd_without_momentum_keeps_no_state_and_adagrad_starts_with_state():
    start, grads = _arrays(4, steps=1)
    ours, ref = _pair(start)
    opt, ref_opt = optim.SGD(ours, lr=0.1), torch.optim.SGD(ref, lr=0.1)
    _run(ours, opt, grads, Tensor)
    _run(ref, ref_opt, grads, torch.from_numpy)
    assert opt.state_dict()["state"] == ref_opt.state_dict()["state"] == {}
    ours, ref = _pair(start)
    got = optim.Adagrad(ours, initial_accumulator_value=0.5).state_dict()["state"]
    want = torch.optim.Adagrad(ref, initial_accumulator_value=0.5).state_dict()["state"]
    assert sorted(got) == sorted(want) == [0, 1, 2]
    np.testing.assert_array_equal(got[2]["sum"].numpy(), want[2]["sum"].numpy())
    assert float(got[2]["step"].numpy()) == float(want[2]["step"]) == 0.0


BAD = [("SGD", dict(lr=-1.0)), ("SGD", dict(momentum=-0.1)), ("SGD", dict(weight_decay=-1)),
       ("SGD", dict(lr=0.1, nesterov=True)), ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1,
                                                          nesterov=True)),
       ("Adam", dict(lr=-1e-3)), ("Adam", dict(eps=-1.0)), ("Adam", dict(betas=(1.0, 0.9))),
       ("Adam", dict(betas=(0.9, -0.1))), ("AdamW", dict(weight_decay=-0.1)),
       ("RMSprop", dict(alpha=-0.5)), ("RMSprop", dict(momentum=-1)),
       ("Adagrad", dict(lr_decay=-1)), ("Adagrad", dict(initial_accumulator_value=-1)),
       ("Adadelta", dict(rho=1.5)), ("Adadelta", dict(eps=-1))]


@pytest.mark.parametrize("name,options", BAD)
def test_bad_options_raise_like_torch(name, options):
    with pytest.raises(ValueError) as want:
        getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(2))], **options)
    with pytest.raises(ValueError) as got:
        getattr(optim, name)([nn.Parameter(np.ones(2))], **options)
    assert str(want.value) in str(got.value)


def test_bad_parameter_lists_raise_like_torch():
    p, q = nn.Parameter(np.ones(2)), torch.nn.Parameter(torch.ones(2))
    for ours_args, torch_args, error in [
            ([{"params": [p]}, {"params": [p]}], [{"params": [q]}, {"params": [q]}], ValueError),
            ([], [], ValueError), (p, q, TypeError),
            ([{"params": {p}}], [{"params": {q}}], TypeError),
            ([p * 2], [q * 2], ValueError), ([np.ones(2)], [[1.0]], TypeError)]:
        with pytest.raises(error):
            torch.optim.SGD(torch_args, lr=0.1)
        with pytest.raises(error):
            optim.SGD(ours_args, lr=0.1)
    with pytest.warns(UserWarning, match="duplicate"):
        torch.optim.SGD([q, q], lr=0.1)
    with pytest.warns(UserWarning, match="duplicate"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(NotImplementedError, match="fused"):
        optim.Adagrad([p], fused=True)     # fused=True of SGD/Adam: tests/test_fused_optim.py


# ----- learning-rate schedules ----------------------------------------------------------
SCHEDULE_STEPS = 36
METRICS = [1.0, 0.9, 0.95, 0.95, 0.97, 0.96, 0.99, 0.8, 0.8, 0.8, 0.8, 0.8, 0.81, 0.79,
           0.7999, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.3,
           0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]


class Halving:
    """A callable object as lr_lambda: its __dict__ is what the state_dict keeps."""

    def __init__(self):
        self.rate = 0.5

    def __call__(self, epoch):
        return self.rate ** (epoch // 4)


SCHEDULES = {
    "step": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    "step_every": lambda m, o: m.StepLR(o, step_size=1, gamma=0.9),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[5, 10, 10, 20], gamma=0.3),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.9),
    "lambda": lambda m, o: m.LambdaLR(o, lambda e: 0.95 ** e),
    "lambda_per_group": lambda m, o: m.LambdaLR(o, [lambda e: 1 / (e + 1), Halving()]),
    "multiplicative": lambda m, o: m.MultiplicativeLR(o, lambda e: 0.97 if e < 10 else 0.9),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
    "cosine_no_floor": lambda m, o: m.CosineAnnealingLR(o, T_max=10),
    "warm_restarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2,
                                                                 eta_min=1e-3),
    "warm_restarts_same": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=4),
    "linear_warmup": lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=8),
    "linear_decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1,
                                            total_iters=10),
    "constant": lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=4),
    "polynomial": lambda m, o: m.PolynomialLR(o, total_iters=20, power=2.0),
    "one_cycle": lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 1.0], total_steps=SCHEDULE_STEPS),
    "one_cycle_linear": lambda m, o: m.OneCycleLR(
        o, max_lr=0.8, epochs=4, steps_per_epoch=9, anneal_strategy="linear", pct_start=0.25,
        div_factor=10.0, final_div_factor=100.0, base_momentum=0.8, max_momentum=0.9),
    "one_cycle_three_phase": lambda m, o: m.OneCycleLR(
        o, max_lr=[0.3, 0.6], total_steps=SCHEDULE_STEPS, three_phase=True),
    "one_cycle_no_momentum": lambda m, o: m.OneCycleLR(
        o, max_lr=0.4, total_steps=SCHEDULE_STEPS, cycle_momentum=False),
    "plateau": lambda m, o: m.ReduceLROnPlateau(o, patience=2),
    "plateau_max_abs": lambda m, o: m.ReduceLROnPlateau(
        o, mode="max", factor=0.5, patience=1, threshold=0.05, threshold_mode="abs",
        cooldown=2, min_lr=[0.02, 0.001]),
    "plateau_rel_cooldown": lambda m, o: m.ReduceLROnPlateau(
        o, factor=0.3, patience=0, threshold=0.1, cooldown=3, min_lr=0.01, eps=1e-3),
    "sequential": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=20)],
        milestones=[5]),
    "sequential_three": lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.5, total_iters=2), m.ExponentialLR(o, gamma=0.8),
            m.StepLR(o, step_size=4, gamma=0.5)], milestones=[3, 10]),
    "chained": lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.5, total_iters=4), m.ExponentialLR(o, gamma=0.9)]),
}


def _groups_optimizer(lib, name, adam=False):
    """Two parameter groups with different rates (and momentum or betas)."""
    def param():
        return lib.nn.Parameter(lib.ones(2, dtype=lib.float64))

    groups = [{"params": [param()]}, {"params": [param()], "lr": 0.3}]
    if adam:
        return lib.optim.Adam(groups, lr=0.1, betas=(0.9, 0.99))
    return lib.optim.SGD(groups, lr=0.1, momentum=0.9)


def _schedule_trace(lib, name, adam=False, steps=SCHEDULE_STEPS, resume_at=None):
    """The rates (and momenta) of both groups after creation and after every step."""
    import warnings
    opt = _groups_optimizer(lib, name, adam)
    sched = SCHEDULES[name](lib.optim.lr_scheduler, opt)
    trace = []

    def record():
        for g in opt.param_groups:
            trace.append((g["lr"], g["betas"][0] if adam else g["momentum"]))
        trace.append(tuple(sched.get_last_lr()))

    record()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(steps):
            if step == resume_at:
                opt, sched = _resumed(lib, name, adam, opt, sched)
            opt.step()
            sched.step(METRICS[step]) if "plateau" in name else sched.step()
            record()
    return trace, opt


def _resumed(lib, name, adam, opt, sched):
    """A fresh optimizer and scheduler that load the old ones' state_dicts."""
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    fresh = _groups_optimizer(lib, name, adam)
    fresh_sched = SCHEDULES[name](lib.optim.lr_scheduler, fresh)
    fresh.load_state_dict(opt_state)
    fresh_sched.load_state_dict(sched_state)
    return fresh, fresh_sched


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_matches_torch_step_by_step(name):
    adam = name.startswith("one_cycle_three")              # beta1 cycling on Adam
    got, opt = _schedule_trace(tinyres, name, adam)
    want, ref_opt = _schedule_trace(torch, name, adam)
    np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float),
                               rtol=1e-14, atol=0)
    assert len({g[0] for g in got}) > 2                    # the rates did change
    for group, ref_group in zip(opt.param_groups, ref_opt.param_groups):
        assert set(group) == set(ref_group)                # initial_lr, max_lr, ...
        if "initial_lr" in ref_group:
            assert group["initial_lr"] == ref_group["initial_lr"]


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_resumed_schedule_continues_exactly(name):
    adam = name.startswith("one_cycle_three")
    straight, _ = _schedule_trace(tinyres, name, adam)
    resumed, _ = _schedule_trace(tinyres, name, adam, resume_at=13)
    assert resumed == straight


def test_one_cycle_cycles_sgd_momentum_and_adam_beta1():
    for adam in (False, True):
        got, _ = _schedule_trace(tinyres, "one_cycle", adam)
        want, _ = _schedule_trace(torch, "one_cycle", adam)
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-14, atol=0)
        momenta = [row[1] for row in got[::3]]
        assert min(momenta) == pytest.approx(0.85, abs=1e-3) and momenta[0] == 0.95
        assert momenta[-1] == pytest.approx(0.95, abs=1e-3)


@pytest.mark.filterwarnings("ignore:Detected call")
def test_deprecated_step_with_epoch_uses_the_closed_form_like_torch():
    for name in ("step", "multistep", "exponential", "cosine", "linear_warmup", "constant"):
        rates = []
        for lib in (tinyres, torch):
            opt = _groups_optimizer(lib, name)
            sched = SCHEDULES[name](lib.optim.lr_scheduler, opt)
            with pytest.warns(UserWarning, match="epoch parameter"):
                sched.step(12)
            rates.append(sched.get_last_lr())
        np.testing.assert_allclose(rates[0], rates[1], rtol=1e-14, err_msg=name)


def test_schedule_errors_match_torch():
    cases = [
        (lambda m, o: m.LambdaLR(o, [lambda e: 1.0]), ValueError),
        (lambda m, o: m.ConstantLR(o, factor=1.5), ValueError),
        (lambda m, o: m.LinearLR(o, start_factor=0), ValueError),
        (lambda m, o: m.OneCycleLR(o, max_lr=0.1), ValueError),
        (lambda m, o: m.OneCycleLR(o, max_lr=[0.1], total_steps=10), ValueError),
        (lambda m, o: m.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"),
         ValueError),
        (lambda m, o: m.ReduceLROnPlateau(o, factor=1.0), ValueError),
        (lambda m, o: m.ReduceLROnPlateau(o, mode="maximum"), ValueError),
        (lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=0), ValueError),
        (lambda m, o: m.SequentialLR(o, [m.StepLR(o, 2)], milestones=[3]), ValueError),
        (lambda m, o: m.StepLR("not an optimizer", 3), TypeError),
        (lambda m, o: m.StepLR(o, 3, last_epoch=4), KeyError),
    ]
    for make, error in cases:
        with pytest.raises(error) as want:
            make(torch.optim.lr_scheduler, _groups_optimizer(torch, ""))
        with pytest.raises(error) as got:
            make(optim.lr_scheduler, _groups_optimizer(tinyres, ""))
        if error is not KeyError:
            assert str(want.value) in str(got.value)


def test_a_subclass_of_the_old_base_name_works_like_torch():
    rates = []
    for lib in (tinyres, torch):
        class Halve(lib.optim.lr_scheduler._LRScheduler):
            def get_lr(self):
                return [base * 0.5 ** self.last_epoch for base in self.base_lrs]
        opt = _groups_optimizer(lib, "")
        sched = Halve(opt)
        for _ in range(3):
            opt.step()
            sched.step()
        rates.append(sched.get_last_lr())
    assert rates[0] == rates[1] == [0.1 / 8, 0.3 / 8]


def test_one_cycle_refuses_steps_past_the_end_like_torch():
    for lib in (tinyres, torch):
        opt = _groups_optimizer(lib, "")
        sched = lib.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=3)
        for _ in range(3):
            opt.step()
            sched.step()
        with pytest.raises(ValueError, match="Tried to step 4 times"):
            sched.step()
