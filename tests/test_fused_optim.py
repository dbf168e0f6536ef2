"""fused=True for SGD, Adam and AdamW (kernels/fused_optim.py, fused_optim_cpu.py,
cuda/optim.cu) against torch and against tinyres's own per-tensor update.

- torch.optim's fused=True on the CPU: the same parameters after several steps with the
  learning rate changed between them (momentum, dampening, Nesterov, weight decay,
  maximize, amsgrad, AdamW), float32 and float64, and the same state_dict.
- fused=False and fused=True keep the same state: a checkpoint of one resumes in the other.
- torch's errors: fused with foreach=True or differentiable=True, an integer parameter.
- The layers: the Numba kernel (hypothesis: any list of shapes, empty ones included) and
  the CUDA kernels run by the CPU emulator (many odd sizes, several chunks per tensor,
  non-contiguous arrays written back) hold to the NumPy reference; one Numba call and one
  launch per group and dtype, counted through the optimizer. A planted bug (each chunk's
  last element skipped) fails the same comparison.
- A resnet20 training step with fused=True equals fused=False to float32 tolerance.
- resnet50's 161 parameters (25.6 M values) in one launch at the GPU geometry (256-thread
  blocks, one per chunk), run by the emulator on its first, middle and last block.
- On a GPU (`-m gpu`): the fused step equals the CPU's, one launch per group and dtype,
  no host read.
The compile, no-integer-division and ptxas (no spill) checks of tests/test_cuda_compile.py
cover cuda/optim.cu through cuda.SOURCES.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn.functional as F
from tinyres import nn, optim
from tinyres.kernels import cuda, emulate, fused_optim, fused_optim_cpu
from tinyres.models import get_model
from tinyres.tensor import Tensor

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (5,), (0,), (2, 1, 3), (40, 7)]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.05, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=1e-2, betas=(0.5, 0.8))),
    ("AdamW", dict(lr=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, maximize=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in CASES]


def _start(seed, dtype, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _train(params, opt, grads, make_grad, lrs):
    """One step per entry of grads, the learning rate set to lrs[i] before step i."""
    for lr, step_grads in zip(lrs, grads):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, step_grads):
            p.grad = make_grad(g.copy())
        opt.step()


def _grads(seed, dtype, steps, shapes=SHAPES):
    return [_start(seed + 1 + i, dtype, shapes) for i in range(steps)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_fused_matches_torch_fused(name, options, dtype):
    start, grads, lrs = _start(0, dtype), _grads(0, dtype, 4), [0.1, 0.05, 0.02, 0.08]
    lrs = [lr * options["lr"] / 0.1 for lr in lrs]
    ours = [nn.Parameter(a.copy()) for a in start]
    ref = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    opt = getattr(optim, name)(ours, fused=True, **options)
    ref_opt = getattr(torch.optim, name)(ref, fused=True, **options)
    _train(ours, opt, grads, Tensor, lrs)
    _train(ref, ref_opt, grads, torch.from_numpy, lrs)
    for p, q, a in zip(ours, ref, start):
        assert p.dtype == np.dtype(dtype) and p.shape == tuple(q.shape)
        if a.size:
            assert not np.allclose(p.array, a)                  # the parameters did move
        np.testing.assert_allclose(p.array, q.detach().numpy(), **TOL[dtype])
    got, want = opt.state_dict(), ref_opt.state_dict()
    assert got["param_groups"] == want["param_groups"]
    assert sorted(got["state"]) == sorted(want["state"])
    for i, entries in want["state"].items():
        assert list(got["state"][i]) == list(entries)           # same names, same order
        for key, value in entries.items():
            mine = got["state"][i][key]
            assert mine.dtype == np.dtype(str(value.dtype).split(".")[1]), key
            np.testing.assert_allclose(mine.numpy(), value.numpy(), err_msg=key, **TOL[dtype])


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_fused_and_unfused_checkpoints_resume_each_other(name, options):
    dtype = np.float32
    start, grads = _start(3, dtype), _grads(3, dtype, 4)
    lrs = [options["lr"]] * 4
    runs = {}
    for first, second in [(False, True), (True, False), (False, False)]:
        params = [nn.Parameter(a.copy()) for a in start]
        opt = getattr(optim, name)(params, fused=first, **options)
        _train(params, opt, grads[:2], Tensor, lrs)
        saved = opt.state_dict()
        resumed = getattr(optim, name)(params, fused=second, **options)
        resumed.load_state_dict(saved)
        assert resumed.param_groups[0]["fused"] is first      # as torch: the saved option
        resumed.param_groups[0]["fused"] = second
        _train(params, resumed, grads[2:], Tensor, lrs)
        runs[first, second] = [p.array.copy() for p in params], resumed.state_dict()
    want_params, want_state = runs[False, False]
    for key in [(False, True), (True, False)]:
        got_params, got_state = runs[key]
        for a, b in zip(got_params, want_params):
            np.testing.assert_allclose(a, b, **TOL[dtype])
        assert {i: list(s) for i, s in got_state["state"].items()} == \
               {i: list(s) for i, s in want_state["state"].items()}


def test_load_state_dict_restores_the_saved_fused_option_like_torch():
    for lib, make in [(torch, lambda: torch.nn.Parameter(torch.ones(2))),
                      (tinyres, lambda: nn.Parameter(np.ones(2, np.float32)))]:
        p = make()
        p.grad = lib.ones(2)
        saved = lib.optim.SGD([p], lr=0.1, momentum=0.9, fused=True)
        saved.step()
        loaded = lib.optim.SGD([p], lr=0.1, momentum=0.9)
        loaded.load_state_dict(saved.state_dict())
        assert loaded.param_groups[0]["fused"] is True and loaded.defaults["fused"] is None


def test_a_buffer_made_later_in_the_group_starts_as_that_step():
    # p1 has no gradient at the first step: its momentum buffer is made at the second,
    # when p0's already exists (torch's fused SGD raises a TypeError here; fused=False's
    # rule applies)
    runs = []
    for fused in (False, True):
        p0, p1 = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(2))
        opt = optim.SGD([p0, p1], lr=0.1, momentum=0.9, fused=fused)
        p0.grad = Tensor(np.full(3, 2.0))
        opt.step()
        p0.grad, p1.grad = Tensor(np.full(3, 1.0)), Tensor(np.full(2, 3.0))
        opt.step()
        runs.append((p0.array.copy(), p1.array.copy(),
                     opt.state[p1]["momentum_buffer"].array.copy()))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(runs[1][2], np.full(2, 3.0))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_fused_refuses_foreach_and_differentiable_like_torch(name):
    p, q = nn.Parameter(np.ones(2)), torch.nn.Parameter(torch.ones(2))
    for options, match in [(dict(foreach=True), "cannot be `True` together"),
                           (dict(differentiable=True), "does not support `differentiable`"),
                           (dict(foreach=True, differentiable=True), "differentiable")]:
        with pytest.raises(RuntimeError, match=match):
            getattr(torch.optim, name)([q], lr=0.1, fused=True, **options)
        with pytest.raises(RuntimeError, match=match):
            getattr(optim, name)([p], lr=0.1, fused=True, **options)
    getattr(optim, name)([p], lr=0.1, fused=True, foreach=False)      # allowed, as in torch
    getattr(torch.optim, name)([q], lr=0.1, fused=True, foreach=False)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_fused_refuses_an_integer_parameter_at_the_step_like_torch(name):
    q = torch.zeros(3, dtype=torch.int64)
    q.grad = torch.ones(3, dtype=torch.int64)
    p = tinyres.zeros(3, dtype=tinyres.int64)
    p.grad = tinyres.ones(3, dtype=tinyres.int64)
    ref_opt = getattr(torch.optim, name)([q], fused=True)
    opt = getattr(optim, name)([p], fused=True)
    match = r"`fused=True` requires all the params to be floating point Tensors"
    with pytest.raises(RuntimeError, match=match):
        ref_opt.step()
    with pytest.raises(RuntimeError, match=match + r".* but int64 and cpu"):
        opt.step()
    np.testing.assert_array_equal(p.array, np.zeros(3))


def test_other_optimizers_still_refuse_fused():
    with pytest.raises(NotImplementedError, match="fused"):
        optim.Adagrad([nn.Parameter(np.ones(2))], fused=True)


def test_float16_and_non_contiguous_tensors_take_the_same_step():
    # float16 goes to the NumPy reference; a transposed parameter and gradient are made
    # contiguous for the kernel and the result is written back into the parameter's array
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((4, 6)).astype(np.float16),
              np.asfortranarray(rng.standard_normal((5, 3)).astype(np.float32))]
    grads = [rng.standard_normal(a.shape).astype(a.dtype) for a in arrays]
    grads[1] = np.asfortranarray(grads[1])
    runs = []
    for fused in (False, True):
        # a float16 tensor cannot require a gradient in tinyres, but can be given one
        params = [Tensor(arrays[0].copy()), nn.Parameter(arrays[1].copy(order="K"))]
        assert not params[1].array.flags.c_contiguous
        opt = optim.Adam(params, lr=0.1, amsgrad=True, fused=fused)
        for _ in range(2):
            for p, g in zip(params, grads):
                p.grad = Tensor(g.copy(order="K"))
            opt.step()
        runs.append([p.array.copy() for p in params])
    for a, b, start in zip(*runs, arrays):
        assert a.dtype == b.dtype == start.dtype and not np.allclose(a, start)
        np.testing.assert_allclose(a, b, rtol=1e-3 if a.dtype == np.float16 else 1e-6)


# ---------------------------------------------------------------- the kernel layers
def _problem(rng, shapes, dtype):
    """Fresh arrays for one fused call: params, grads and three state lists."""
    make = [lambda s: rng.standard_normal(s), lambda s: rng.standard_normal(s),
            lambda s: rng.standard_normal(s), lambda s: rng.random(s), lambda s: rng.random(s)]
    return [[f(s).astype(dtype) for s in shapes] for f in make]


def _copy(lists):
    return [[a.copy() for a in arrays] for arrays in lists]


SGD_ARGS = [(0.1, 0.01, 0.9, 0.2, False, True), (0.05, 0.0, 0.8, 0.0, True, False),
            (0.1, 0.1, 0.0, 0.0, False, False)]
ADAM_ARGS = [(0.01, 0.9, 0.99, 0.1, 1e-8, True, False, False),
             (0.02, 0.5, 0.8, 0.1, 1e-3, False, True, True),
             (0.01, 0.9, 0.999, 0.0, 1e-8, True, True, True)]


def _run_sgd(layer, lists, fresh, args):
    params, grads, bufs, _, _ = lists
    layer(params, grads, bufs, fresh, *args)


def _run_adam(layer, lists, steps, args):
    params, grads, m, v, vmax = lists
    layer(params, grads, m, v, vmax, steps, *args)


def _assert_lists(got, want, dtype):
    for row_got, row_want in zip(got, want):
        for a, b in zip(row_got, row_want):
            np.testing.assert_allclose(a, b, **TOL[dtype])


@settings(max_examples=25, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple),
                       min_size=1, max_size=6),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16),
       case=st.integers(0, 2))
def test_numba_kernels_match_the_reference(shapes, dtype, seed, case):
    rng = np.random.default_rng(seed)
    lists = _problem(rng, shapes, dtype)
    fresh = [bool(b) for b in rng.integers(0, 2, len(shapes))]
    steps = [int(s) for s in rng.integers(1, 9, len(shapes))]
    for run, args, extra in [(_run_sgd, SGD_ARGS[case], fresh),
                             (_run_adam, ADAM_ARGS[case], steps)]:
        got, want = _copy(lists), _copy(lists)
        name = "sgd" if run is _run_sgd else "adam"
        run(getattr(fused_optim_cpu, name), got, extra, args)
        run(getattr(fused_optim, f"{name}_reference"), want, extra, args)
        _assert_lists(got, want, dtype)


@pytest.fixture(scope="module")
def emu():
    try:
        return emulate.backend()
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))


ODD_SIZES = [0, 1, 37, 130, 5, 0, 129, 64, 3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(3))
def test_emulated_cuda_kernels_match_the_reference(emu, dtype, case):
    # chunks of 50 elements: several per tensor, more chunks than the emulator's 8 blocks
    rng = np.random.default_rng(case)
    lists = _problem(rng, [(s,) for s in ODD_SIZES], dtype)
    fresh = [i % 3 == 0 for i in range(len(ODD_SIZES))]
    steps = list(range(1, len(ODD_SIZES) + 1))
    for name, run, extra, args in [("sgd", _run_sgd, fresh, SGD_ARGS[case]),
                                   ("adam", _run_adam, steps, ADAM_ARGS[case])]:
        got, want = _copy(lists), _copy(lists)
        with tinyres.cuda.count_syncs() as counted:
            run(lambda *a: getattr(emu, f"{name}_fused")(*a, chunk=50), got, extra, args)
        assert counted.launches == 1
        run(getattr(fused_optim, f"{name}_reference"), want, extra, args)
        _assert_lists(got, want, dtype)
        assert not np.allclose(got[0][2], lists[0][2])


def test_emulated_kernel_writes_back_non_contiguous_arrays_and_skips_empty_groups(emu):
    rng = np.random.default_rng(7)
    base = rng.standard_normal((6, 9)).astype(np.float32)
    params = [base[:, ::2].copy(order="F"), rng.standard_normal(11).astype(np.float32)]
    grads = [rng.standard_normal(p.shape).astype(np.float32).T.copy().T for p in params]
    bufs = [np.zeros_like(p) for p in params]
    want = [p.copy() for p in params], grads, [b.copy() for b in bufs]
    emu.sgd_fused(params, grads, bufs, [True, True], 0.1, 0.0, 0.9, 0.0, False, False, chunk=7)
    fused_optim.sgd_reference(want[0], grads, want[2], [True, True], 0.1, 0.0, 0.9, 0.0,
                              False, False)
    _assert_lists([params, bufs], [want[0], want[2]], np.float32)
    with tinyres.cuda.count_syncs() as counted:
        emu.sgd_fused([], [], [], [], 0.1, 0.0, 0.9, 0.0, False, False)
        emu.sgd_fused([np.zeros(0, np.float32)], [np.zeros(0, np.float32)],
                      [np.zeros(0, np.float32)], [True], 0.1, 0.0, 0.9, 0.0, False, False)
    assert counted.launches == 0


def test_chunk_table_cuts_tensors_and_skips_empty_ones():
    table = fused_optim.chunk_table([5, 0, 3, 4], chunk=2)
    np.testing.assert_array_equal(table, [[0, 0, 2], [0, 2, 4], [0, 4, 5], [2, 0, 2],
                                          [2, 2, 3], [3, 0, 2], [3, 2, 4]])
    assert fused_optim.chunk_table([0, 0]).shape == (0, 3)


def _two_groups_two_dtypes():
    """Parameters in 2 groups: group 0 float32 and float64, group 1 float32 only."""
    rng = np.random.default_rng(9)

    def make(dtype, shape):
        return nn.Parameter(rng.standard_normal(shape).astype(dtype))
    g0 = [make(np.float32, (3, 2)), make(np.float64, (4,)), make(np.float32, (7,))]
    g1 = [make(np.float32, (5,)), make(np.float32, (0,))]
    for p in g0 + g1:
        p.grad = Tensor(rng.standard_normal(p.shape).astype(p.dtype))
    return [{"params": g0}, {"params": g1, "lr": 0.05}], g0 + g1


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_one_launch_per_group_and_dtype_through_the_optimizer(name, emu, monkeypatch):
    # the optimizer takes the CUDA layer, run by the emulator, for the NumPy arrays
    monkeypatch.setattr(fused_optim, "_layer", lambda a: "cuda")
    monkeypatch.setattr(cuda, "_gpu", lambda: emu)
    groups, params = _two_groups_two_dtypes()
    opt = getattr(optim, name)(groups, lr=0.1, fused=True,
                               **({"momentum": 0.9} if name == "SGD" else {}))
    before = [p.array.copy() for p in params]
    with tinyres.cuda.count_syncs() as counted:
        opt.step()
    assert (counted.launches, counted.host_reads) == (3, 0)
    monkeypatch.undo()
    reference = getattr(optim, name)([{"params": [nn.Parameter(b.copy()) for b in before[:3]]},
                                      {"params": [nn.Parameter(b.copy()) for b in before[3:]],
                                       "lr": 0.05}], lr=0.1,
                                     **({"momentum": 0.9} if name == "SGD" else {}))
    mine = [p for g in reference.param_groups for p in g["params"]]
    for p, q in zip(mine, params):
        p.grad = Tensor(q.grad.array.copy())
    reference.step()
    for p, q in zip(mine, params):
        np.testing.assert_allclose(q.array, p.array, rtol=1e-6)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_one_numba_call_per_group_and_dtype(name, monkeypatch):
    core = "_sgd_core" if name == "SGD" else "_adam_core"
    calls = []
    original = getattr(fused_optim_cpu, core)
    monkeypatch.setattr(fused_optim_cpu, core, lambda *a: calls.append(1) or original(*a))
    groups, _ = _two_groups_two_dtypes()
    getattr(optim, name)(groups, lr=0.1, fused=True).step()
    assert len(calls) == 3


# ---------------------------------------------------------------- a model's training step
def _resnet_steps(fused, steps=2):
    tinyres.manual_seed(0)
    model = get_model("resnet20", num_classes=10)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                    nesterov=True, fused=fused)
    rng = np.random.default_rng(0)
    x = tinyres.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    y = tinyres.tensor(rng.integers(0, 10, 4))
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.array.copy() for p in model.parameters()], opt.state_dict()


def test_resnet20_training_steps_fused_equal_unfused():
    (plain, plain_state), (fused, fused_state) = _resnet_steps(False), _resnet_steps(True)
    assert len(plain) == len(fused) > 50
    for a, b in zip(plain, fused):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert sorted(plain_state["state"]) == sorted(fused_state["state"])
    start, _ = _resnet_steps(False, steps=0)
    assert sum(not np.allclose(a, b) for a, b in zip(start, fused)) > 50


# ---------------------------------------------------------------- resnet50 launch size
@pytest.fixture(scope="module")
def resnet50_shapes():
    return [tuple(p.shape) for p in get_model("resnet50").parameters()]


def _sampled_launchers():
    """The GPU geometry (cuda.BLOCK threads, up to cuda.MAX_BLOCKS blocks), running only
    the first, middle and last block of each launch; the grids are recorded."""
    grids = []

    def sample(name, grid, block):
        grids.append((name, grid, block))
        return [(0, 0, 0), (grid[0] // 2, 0, 0), (grid[0] - 1, 0, 0)]
    try:
        return emulate.backend(block=cuda.BLOCK, max_blocks=cuda.MAX_BLOCKS,
                               sample=sample), grids
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_resnet50_step_at_gpu_geometry_on_sampled_blocks(name, resnet50_shapes):
    # 161 tensors, 25.6 M values: lazily zeroed arrays, random values only in the chunks
    # of the sampled blocks, whose results are held to the reference
    launchers, grids = _sampled_launchers()
    sizes = [int(np.prod(s)) for s in resnet50_shapes]
    chunks = fused_optim.chunk_table(sizes)
    assert len(resnet50_shapes) == 161 and sum(sizes) > 25_000_000
    assert len(chunks) <= cuda.MAX_BLOCKS         # one block per chunk, no grid-stride turn
    sampled = chunks[[0, len(chunks) // 2, len(chunks) - 1]]
    lists = [[np.zeros(n, np.float32) for n in sizes] for _ in range(5)]
    rng = np.random.default_rng(11)
    for t, begin, end in sampled:
        for arrays in lists:
            arrays[t][begin:end] = rng.random(end - begin) + 0.1
    want = [[arrays[t][begin:end].copy() for arrays in lists] for t, begin, end in sampled]
    before = [slices[0].copy() for slices in want]
    steps = [3 + t % 4 for t in range(len(sizes))]
    fresh = [t % 2 == 0 for t in range(len(sizes))]
    if name == "sgd":
        launchers.sgd_fused(lists[0], lists[1], lists[2], fresh, 0.1, 1e-4, 0.9, 0.0, True,
                            False)
    else:
        launchers.adam_fused(*lists, steps, 1e-3, 0.9, 0.999, 1e-2, 1e-8, True, False, True)
    assert [(n, g, b) for n, g, b in grids] == [
        (f"{name}_fused", (len(chunks), 1, 1), (cuda.BLOCK, 1, 1))]
    for (t, begin, end), slices in zip(sampled, want):
        if name == "sgd":
            fused_optim.sgd_reference(*[[a] for a in slices[:3]], [fresh[t]], 0.1, 1e-4, 0.9,
                                      0.0, True, False)
        else:
            fused_optim.adam_reference(*[[a] for a in slices], [steps[t]], 1e-3, 0.9, 0.999,
                                       1e-2, 1e-8, True, False, True)
        for arrays, expected in zip(lists, slices):
            np.testing.assert_allclose(arrays[t][begin:end], expected, **TOL[np.float32])
    for (t, begin, end), start in zip(sampled, before):
        assert not np.allclose(lists[0][t][begin:end], start)    # the parameters did move


def test_a_planted_chunk_bug_is_caught():
    # the negative control: each chunk's last element left out must fail the comparison
    source = cuda.read_source("optim.cu")
    planted = source.replace("(int)(chunks[3 * c + 2] - begin)}",
                             "(int)(chunks[3 * c + 2] - begin) - 1}")
    assert planted.count("- begin) - 1}") == 1              # chunk_at, shared by both
    try:
        broken = emulate.backend(sources={"optim.cu": planted})
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))
    rng = np.random.default_rng(2)
    lists = _problem(rng, [(s,) for s in ODD_SIZES], np.float32)
    got, want = _copy(lists), _copy(lists)
    fresh = [False] * len(ODD_SIZES)
    _run_sgd(lambda *a: broken.sgd_fused(*a, chunk=50), got, fresh, SGD_ARGS[0])
    _run_sgd(fused_optim.sgd_reference, want, fresh, SGD_ARGS[0])
    with pytest.raises(AssertionError):
        _assert_lists(got, want, np.float32)


# ---------------------------------------------------------------- on a GPU (-m gpu)
@pytest.mark.gpu
@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_fused_step_on_the_gpu_matches_the_cpu_with_one_launch_per_group_and_dtype(
        name, options):
    import cupy
    runs = []
    for device in ("cpu", "cuda"):
        xp = cupy if device == "cuda" else np
        groups, params = _two_groups_two_dtypes()
        for p in params:
            p.array, p.grad.array = xp.asarray(p.array), xp.asarray(p.grad.array)
        opt = getattr(optim, name)(groups, fused=True, **options)
        with tinyres.cuda.count_syncs() as counted:
            for _ in range(3):
                opt.step()
        runs.append(([cupy.asnumpy(p.array) for p in params], counted.launches,
                     counted.host_reads))
    (cpu, cpu_launches, _), (gpu, gpu_launches, gpu_reads) = runs
    assert (cpu_launches, gpu_launches, gpu_reads) == (0, 3 * 3, 0)
    for a, b in zip(gpu, cpu):
        np.testing.assert_allclose(a, b, **TOL[a.dtype.type])
