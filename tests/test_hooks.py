"""Module hooks, autograd.grad/backward, Variable, DataParallel, gradient clipping,
parameters_to_vector and nn.init, each run through tinyres and torch and compared."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyres
from tinyres import autograd, nn
from tinyres.models.resnet import BasicBlock
from tinyres.nn import init
from tinyres.nn.utils import (clip_grad_norm_, clip_grad_value_, parameters_to_vector,
                              vector_to_parameters)

torch = pytest.importorskip("torch")
from torch_resnets import BasicBlock as TorchBasicBlock  # noqa: E402  (needs torch)


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


def _copy_weights(ours, theirs):
    """torch's values into our module (the same state_dict keys)."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 5), lib.nn.ReLU(), lib.nn.Linear(5, 3))


def _pair_mlp():
    theirs = _mlp(torch).double()
    ours = _mlp(tinyres).double()
    _copy_weights(ours, theirs)
    return ours, theirs


def _inputs(shape, seed=0, requires_grad=True):
    x = np.random.default_rng(seed).standard_normal(shape)
    return (tinyres.tensor(x.copy(), requires_grad=requires_grad),
            torch.tensor(x.copy(), requires_grad=requires_grad))


# ----- forward hooks ---------------------------------------------------------------------
def _forward_log(model, log, lib):
    """Hooks on every child recording (name, kind, input, output) and doubling layer 1's
    output; returns the handles."""
    handles = []
    for name, child in model.named_children():
        def pre(module, args, name=name):
            log.append((name, "pre", _np(args[0]).copy()))

        def post(module, args, output, name=name):
            log.append((name, "post", _np(args[0]).copy(), _np(output).copy()))
            return output * 2 if name == "1" else None

        handles += [child.register_forward_pre_hook(pre), child.register_forward_hook(post)]
    return handles


def test_forward_hooks_match_torch_and_replace_output():
    ours, theirs = _pair_mlp()
    x, tx = _inputs((2, 4))
    logs = ([], [])
    handles = [_forward_log(ours, logs[0], tinyres), _forward_log(theirs, logs[1], torch)]
    out, tout = ours(x), theirs(tx)
    np.testing.assert_allclose(out.numpy(), _np(tout), rtol=1e-12)
    assert [e[:2] for e in logs[0]] == [e[:2] for e in logs[1]] and len(logs[0]) == 6
    for a, b in zip(*logs):
        for u, v in zip(a[2:], b[2:]):
            np.testing.assert_allclose(u, v, rtol=1e-12)
    without = _mlp(tinyres).double()
    _copy_weights(without, theirs)
    assert not np.allclose(without(x).numpy(), out.numpy())    # the doubling took effect
    for handle in handles[0]:
        handle.remove()
    handles[0][0].remove()                                     # twice is harmless
    np.testing.assert_allclose(ours(x).numpy(), without(x).numpy(), rtol=1e-12)
    assert len(logs[0]) == 6                                   # no hook ran after remove()


def test_hook_order_prepend_and_with_kwargs_like_torch():
    results = []
    for lib in (tinyres, torch):
        order = []
        layer = lib.nn.Linear(2, 2)
        layer.register_forward_hook(lambda m, a, o: order.append("a"))
        layer.register_forward_hook(lambda m, a, o: order.append("b"))
        layer.register_forward_hook(lambda m, a, o: order.append("first"), prepend=True)
        layer.register_forward_pre_hook(lambda m, a: order.append("pre-a"))
        layer.register_forward_pre_hook(lambda m, a: order.append("pre-first"), prepend=True)
        layer.register_forward_hook(lambda m, a, kw, o: order.append(("kw", sorted(kw))),
                                    with_kwargs=True)
        layer(lib.ones(1, 2))
        results.append(order)
    assert results[0] == results[1]
    assert results[0][:3] == ["pre-first", "pre-a", "first"]


def test_forward_pre_hook_replaces_args_single_value_wrapped_like_torch():
    outs = []
    for lib in (tinyres, torch):
        layer = lib.nn.Identity()
        seen = []
        layer.register_forward_pre_hook(lambda m, a: a[0] * 3)           # a single value
        layer.register_forward_pre_hook(lambda m, a: seen.append(type(a).__name__))
        layer.register_forward_pre_hook(lambda m, a, kw: ((a[0] + 1,), kw), with_kwargs=True)
        outs.append((_np(layer(lib.ones(2))).tolist(), seen))
    assert outs[0] == outs[1] == ([4.0, 4.0], ["tuple"])
    for lib in (tinyres, torch):
        layer = lib.nn.Identity()
        layer.register_forward_pre_hook(lambda m, a, kw: "bad", with_kwargs=True)
        with pytest.raises(RuntimeError, match="forward pre-hook must return None or a tuple"):
            layer(lib.ones(2))


def test_handle_works_as_context_manager():
    layer, calls = nn.Identity(), []
    with layer.register_forward_hook(lambda m, a, o: calls.append(1)):
        layer(tinyres.ones(1))
    layer(tinyres.ones(1))
    assert calls == [1]


# ----- backward hooks --------------------------------------------------------------------
def _backward_log(model, log, scale_name=None):
    for name, child in model.named_modules():
        def hook(module, grad_input, grad_output, name=name):
            log.append((name, [None if g is None else _np(g).copy() for g in grad_input],
                        [None if g is None else _np(g).copy() for g in grad_output]))
            if name == scale_name:
                return tuple(None if g is None else g * 0.5 for g in grad_input)
        child.register_full_backward_hook(hook)


def _compare_logs(ours, theirs):
    assert [e[0] for e in ours] == [e[0] for e in theirs] and ours
    for a, b in zip(ours, theirs):
        for got, want in zip(a[1] + a[2], b[1] + b[2]):
            assert (got is None) == (want is None), a[0]
            if got is not None:
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=a[0])
        assert len(a[1]) == len(b[1]) and len(a[2]) == len(b[2])


@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_full_backward_hooks_on_sequential_match_torch(input_grad):
    ours, theirs = _pair_mlp()
    x, tx = _inputs((3, 4), requires_grad=input_grad)
    logs = ([], [])
    _backward_log(ours, logs[0], scale_name="1")
    _backward_log(theirs, logs[1], scale_name="1")
    w = np.random.default_rng(1).standard_normal((3, 3))
    (ours(x) * tinyres.tensor(w)).sum().backward()
    (theirs(tx) * torch.tensor(w)).sum().backward()
    _compare_logs(*logs)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), _np(q.grad), rtol=1e-10, err_msg=name)
    if input_grad:
        np.testing.assert_allclose(x.grad.numpy(), _np(tx.grad), rtol=1e-10)


def test_full_backward_hooks_on_a_resnet_block_match_torch():
    theirs = TorchBasicBlock(3, 3).double()
    ours = BasicBlock(3, 3).double()
    _copy_weights(ours, theirs)
    x, tx = _inputs((2, 3, 5, 5))
    logs = ([], [])
    for model, log in ((ours, logs[0]), (theirs, logs[1])):
        for name in ("", "conv1", "conv2"):
            def hook(module, grad_input, grad_output, name=name, log=log):
                log.append((name, [_np(g).copy() for g in grad_input],
                            [_np(g).copy() for g in grad_output]))
            model.get_submodule(name).register_full_backward_hook(hook)
    w = np.random.default_rng(2).standard_normal((2, 3, 5, 5))
    (ours(x) * tinyres.tensor(w)).sum().backward()
    (theirs(tx) * torch.tensor(w)).sum().backward()
    _compare_logs(*logs)
    # the block's grad_input is the gradient that reaches x: both paths, the "+1" included
    np.testing.assert_allclose(logs[0][-1][1][0], x.grad.numpy(), rtol=1e-12)


def test_full_backward_pre_hook_replaces_grad_output_like_torch():
    grads = []
    for model, x in zip(_pair_mlp(), _inputs((2, 4))):
        lib = tinyres if isinstance(model, nn.Module) else torch
        seen = []
        model[2].register_full_backward_pre_hook(
            lambda m, g: (seen.append(_np(g[0]).copy()), (g[0] * 3,))[1])
        model(x).sum().backward()
        grads.append((seen, _np(model[0].weight.grad).copy(), lib))
    np.testing.assert_allclose(grads[0][0][0], grads[1][0][0], rtol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-10)


def test_backward_hook_returning_a_wrong_count_raises_like_torch():
    for lib in (tinyres, torch):
        layer = lib.nn.Linear(2, 2)
        layer.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
        x = lib.ones(1, 2, requires_grad=True)
        with pytest.raises(RuntimeError, match="invalid number of grad_input"):
            layer(x).sum().backward()


def test_backward_hook_without_input_grad_warns_and_gets_none_like_torch():
    seen = []
    for lib in (tinyres, torch):
        layer = lib.nn.Linear(2, 2)
        layer.register_full_backward_hook(lambda m, gi, go: seen.append(gi))
        with pytest.warns(UserWarning, match="no inputs require gradients"):
            layer(lib.ones(1, 2)).sum().backward()
    assert seen == [(None,), (None,)]


def test_backward_hooks_do_not_fire_under_no_grad_and_after_remove():
    layer, calls = nn.Linear(2, 2), []
    handle = layer.register_full_backward_hook(lambda m, gi, go: calls.append(1))
    x = tinyres.ones(1, 2, requires_grad=True)
    with tinyres.no_grad():
        layer(x)
    layer(x).sum().backward()
    handle.remove()
    layer(x).sum().backward()
    assert calls == [1]


# ----- module utilities ------------------------------------------------------------------
def test_module_walks_and_modes_match_torch():
    def build(lib):
        return lib.nn.Sequential(lib.nn.Linear(2, 3),
                                 lib.nn.Sequential(lib.nn.ReLU(), lib.nn.Linear(3, 1)))
    ours, theirs = build(tinyres), build(torch)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.children()] == \
        [type(m).__name__ for m in theirs.children()]
    assert [type(m).__name__ for m in ours.modules()] == \
        [type(m).__name__ for m in theirs.modules()]
    assert len(list(ours.parameters(recurse=False))) == len(list(theirs.parameters(recurse=False)))
    assert len(list(ours[1].parameters())) == len(list(theirs[1].parameters())) == 2
    visited = ([], [])
    ours.apply(lambda m: visited[0].append(type(m).__name__))
    theirs.apply(lambda m: visited[1].append(type(m).__name__))
    assert visited[0] == visited[1]
    assert ours.eval() is ours and not any(m.training for m in ours.modules())
    ours.train()
    assert all(m.training for m in ours.modules())
    ours.requires_grad_(False)
    assert not any(p.requires_grad for p in ours.parameters())
    assert ours.get_parameter("1.1.weight") is ours[1][1].weight
    assert theirs.get_parameter("1.1.weight") is theirs[1][1].weight
    for model in (ours, theirs):
        with pytest.raises(AttributeError):
            model.get_submodule("1.7")


# ----- autograd.grad, autograd.backward, Variable ----------------------------------------
def _graph(lib, x, y):
    return (x.exp() * y).sum() + (x * x).sum(), x * y


def test_autograd_grad_matches_torch_and_leaves_grad_alone():
    (x, tx), (y, ty) = _inputs((3, 2)), _inputs((3, 2), seed=1)
    x.grad = tinyres.tensor(np.full((3, 2), 7.0))
    got = autograd.grad(_graph(tinyres, x, y)[0], [x, y])
    want = torch.autograd.grad(_graph(torch, tx, ty)[0], [tx, ty])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), _np(w), rtol=1e-12)
        assert g.dtype == np.float64 and g.shape == tuple(w.shape)
    assert np.all(x.grad.numpy() == 7.0) and y.grad is None
    single = autograd.grad(_graph(tinyres, x, y)[0], x)     # one tensor, not a list
    assert isinstance(single, tuple) and len(single) == 1


def test_autograd_grad_several_outputs_and_an_intermediate_input():
    (x, tx), (y, ty) = _inputs((3, 2)), _inputs((3, 2), seed=1)
    w = np.random.default_rng(3).standard_normal((3, 2))
    results = []
    for lib, a, b in ((tinyres, x, y), (torch, tx, ty)):
        total, prod = _graph(lib, a, b)
        mid = a * 2
        out = (mid * b).sum()
        weights = [lib.tensor(1.5, dtype=lib.float64), lib.tensor(w)]
        results.append(lib.autograd.grad([total, prod], [a, b], grad_outputs=weights))
        results.append(lib.autograd.grad(out, mid))
    for got, want in zip(results[:2], results[2:]):
        for g, t in zip(got, want):
            np.testing.assert_allclose(g.numpy(), _np(t), rtol=1e-12)


def test_autograd_grad_errors_match_torch():
    cases = [
        (lambda lib, x, z: lib.autograd.grad((x * 2).sum(), [x, z]), RuntimeError,
         "appears to not have been used in the graph"),
        (lambda lib, x, z: lib.autograd.grad(x * 2, x), RuntimeError,
         "grad can be implicitly created only for scalar outputs"),
        (lambda lib, x, z: lib.autograd.grad(lib.ones(2).sum(), x), RuntimeError,
         "does not require grad and does not have a grad_fn"),
        (lambda lib, x, z: lib.autograd.grad((x * 2).sum(), lib.ones(2)), RuntimeError,
         "One of the differentiated Tensors does not require grad"),
        (lambda lib, x, z: lib.autograd.grad((x * 2).sum(), x, allow_unused=False,
                                             materialize_grads=True), ValueError,
         "Expected allow_unused to be True"),
        (lambda lib, x, z: lib.autograd.grad(x * 2, x, grad_outputs=lib.ones(3)),
         RuntimeError, "Mismatch in shape"),
    ]
    for make, error, message in cases:
        for lib in (tinyres, torch):
            x = lib.ones(2, requires_grad=True)
            z = lib.ones(2, requires_grad=True)
            with pytest.raises(error, match=message):
                make(lib, x, z)


def test_autograd_grad_unused_inputs_and_graph_freeing_like_torch():
    for lib in (tinyres, torch):
        x, z = lib.ones(2, requires_grad=True), lib.ones(2, requires_grad=True)
        gx, gz = lib.autograd.grad((x * x).sum(), [x, z], allow_unused=True)
        assert gz is None and _np(gx).tolist() == [2.0, 2.0]
        gx, gz = lib.autograd.grad((x * x).sum(), [x, z], materialize_grads=True)
        assert _np(gz).tolist() == [0.0, 0.0]
        y = (x * x).sum()
        lib.autograd.grad(y, x, retain_graph=True)
        lib.autograd.grad(y, x)
        with pytest.raises(RuntimeError, match="(?i)backward through the graph a second time"):
            lib.autograd.grad(y, x)


def test_create_graph_is_refused_with_the_reason():
    x = tinyres.ones(2, requires_grad=True)
    with pytest.raises(NotImplementedError, match="raw arrays"):
        autograd.grad((x * x).sum(), x, create_graph=True)


def test_autograd_backward_matches_torch():
    (x, tx), (y, ty) = _inputs((3, 2)), _inputs((3, 2), seed=1)
    w = np.random.default_rng(4).standard_normal((3, 2))
    for lib, a, b in ((tinyres, x, y), (torch, tx, ty)):
        total, prod = _graph(lib, a, b)
        lib.autograd.backward([total, prod], [lib.tensor(2.0, dtype=lib.float64), lib.tensor(w)])
    np.testing.assert_allclose(x.grad.numpy(), _np(tx.grad), rtol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), _np(ty.grad), rtol=1e-12)
    for lib, a, b in ((tinyres, x, y), (torch, tx, ty)):       # only into `inputs`
        b.grad = None
        lib.autograd.backward(_graph(lib, a, b)[0], inputs=[b])
        assert b.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), _np(tx.grad), rtol=1e-12)   # unchanged
    np.testing.assert_allclose(y.grad.numpy(), _np(ty.grad), rtol=1e-12)


def test_variable_is_a_deprecated_alias_returning_a_tensor():
    t, tt = tinyres.ones(2), torch.ones(2)
    for lib, base in ((autograd, t), (torch.autograd, tt)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")                      # torch no longer warns
            v = lib.Variable(base, requires_grad=True)
        assert v is not base and v.requires_grad and v.is_leaf and not base.requires_grad
        assert isinstance(base, lib.Variable)
        v.data[0] = 5.0                                         # the same memory
        assert float(base[0]) == 5.0
        with pytest.raises(TypeError, match="Variable data has to be a tensor"):
            lib.Variable([1.0])
    assert type(autograd.Variable(t)) is tinyres.Tensor


# ----- DataParallel ----------------------------------------------------------------------
def test_data_parallel_passes_through_with_torch_keys():
    theirs = torch.nn.DataParallel(_mlp(torch).double())
    ours = nn.DataParallel(_mlp(tinyres).double())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x, tx = _inputs((2, 4))
    np.testing.assert_allclose(ours(x).numpy(), _np(theirs(tx)), rtol=1e-12)
    assert isinstance(ours.module, nn.Sequential)
    assert len(list(ours.parameters())) == len(list(theirs.parameters())) == 4
    with pytest.raises(NotImplementedError, match="one device"):
        nn.DataParallel(nn.Linear(1, 1), device_ids=[0, 1])


# ----- clip_grad -------------------------------------------------------------------------
def _grad_pairs(shapes, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    pairs = []
    for i, shape in enumerate(shapes):
        g = rng.standard_normal(shape) * scale
        p, q = nn.Parameter(np.zeros(shape)), torch.nn.Parameter(torch.zeros(shape,
                                                                            dtype=torch.float64))
        if i != 1:                                   # the second parameter has no gradient
            p.grad, q.grad = tinyres.tensor(g.copy()), torch.tensor(g.copy())
        pairs.append((p, q))
    return [p for p, _ in pairs], [q for _, q in pairs]


@settings(max_examples=15, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
                       min_size=2, max_size=4),
       norm_type=st.sampled_from([2.0, 1.0, math.inf, 3.5, 0.5]),
       max_norm=st.sampled_from([0.1, 1.0, 1e3]))
def test_clip_grad_norm_matches_torch(shapes, norm_type, max_norm):
    ours, theirs = _grad_pairs(shapes, seed=len(shapes))
    got = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(got, tinyres.Tensor) and got.shape == () and got.dtype == np.float64
    np.testing.assert_allclose(got.numpy(), _np(want), rtol=1e-12)
    for p, q in zip(ours, theirs):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            np.testing.assert_allclose(p.grad.numpy(), _np(q.grad), rtol=1e-12)


def test_clip_grad_norm_single_tensor_nonfinite_and_none():
    for lib, clip in ((tinyres, clip_grad_norm_), (torch, torch.nn.utils.clip_grad_norm_)):
        p = lib.nn.Parameter(lib.ones(3, dtype=lib.float64))
        p.grad = lib.tensor([3.0, 4.0, 0.0], dtype=lib.float64)
        assert float(clip(p, 1.0)) == pytest.approx(5.0)
        assert _np(p.grad).tolist() == pytest.approx([0.6, 0.8, 0.0], rel=1e-5)
        p.grad = lib.tensor([float("nan"), 1.0, 0.0], dtype=lib.float64)
        with pytest.raises(RuntimeError, match="non-finite"):
            clip(p, 1.0, error_if_nonfinite=True)
        assert math.isnan(float(clip(p, 1.0)))
        q = lib.nn.Parameter(lib.ones(2))
        assert float(clip([q], 1.0)) == 0.0


def test_clip_grad_value_matches_torch():
    ours, theirs = _grad_pairs([(3, 4), (2,), (5,)], seed=7, scale=3.0)
    assert clip_grad_value_(ours, 0.7) is None
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, q in zip(ours, theirs):
        if p.grad is not None:
            np.testing.assert_array_equal(p.grad.numpy(), _np(q.grad))
            assert np.abs(p.grad.numpy()).max() == pytest.approx(0.7)


def test_parameters_to_vector_and_back_match_torch():
    ours, theirs = _pair_mlp()
    v, tv = parameters_to_vector(ours.parameters()), \
        torch.nn.utils.parameters_to_vector(theirs.parameters())
    np.testing.assert_array_equal(v.numpy(), _np(tv))
    new = np.arange(v.shape[0], dtype=np.float64)
    vector_to_parameters(tinyres.tensor(new), ours.parameters())
    torch.nn.utils.vector_to_parameters(torch.tensor(new), theirs.parameters())
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_array_equal(p.numpy(), _np(q))
    for lib, to_params in ((tinyres, vector_to_parameters),
                           (torch, torch.nn.utils.vector_to_parameters)):
        with pytest.raises(TypeError, match="expected torch.Tensor"):
            to_params(new, [lib.nn.Parameter(lib.ones(2))])


# ----- nn.init ---------------------------------------------------------------------------
def test_trunc_normal_statistics_and_bounds():
    from scipy.stats import truncnorm
    mean, std, a, b = 0.5, 2.0, -1.0, 3.0
    w = init.trunc_normal_(tinyres.zeros(200, 200, dtype=tinyres.float64), mean, std, a, b)
    values = w.numpy()
    assert values.min() >= a and values.max() <= b
    ref = truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert values.mean() == pytest.approx(ref.mean(), abs=0.02)
    assert values.std() == pytest.approx(ref.std(), abs=0.02)
    with pytest.warns(UserWarning, match="more than 2 std"):
        init.trunc_normal_(tinyres.zeros(3), mean=10.0, std=1.0)


@pytest.mark.parametrize("shape,gain", [((5, 8), 1.0), ((8, 5), 2.0), ((6, 2, 3, 3), 0.5)])
def test_orthogonal_rows_or_columns_are_orthonormal(shape, gain):
    w = init.orthogonal_(tinyres.zeros(*shape, dtype=tinyres.float64), gain=gain).numpy()
    flat = w.reshape(shape[0], -1)
    small = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    np.testing.assert_allclose(small, gain ** 2 * np.eye(small.shape[0]), atol=1e-12)


@pytest.mark.parametrize("shape,groups", [((4, 4, 3, 3), 1), ((6, 2, 3), 2), ((4, 6, 3, 3, 3), 1),
                                          ((2, 5, 1, 1), 1)])
def test_dirac_and_eye_equal_torch(shape, groups):
    ours = init.dirac_(tinyres.ones(*shape), groups=groups).numpy()
    theirs = torch.nn.init.dirac_(torch.ones(*shape), groups=groups).numpy()
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(init.eye_(tinyres.ones(3, 5)).numpy(),
                                  torch.nn.init.eye_(torch.ones(3, 5)).numpy())


@pytest.mark.parametrize("fill,shape,std", [
    (lambda t: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), (64, 32, 3, 3),
     math.sqrt(2 / (64 * 9))),
    (lambda t: init.kaiming_uniform_(t, a=math.sqrt(5)), (64, 32, 3, 3),
     1 / math.sqrt(32 * 9) / math.sqrt(3)),     # bound 1/sqrt(fan_in), std bound/sqrt(3)
    (lambda t: init.xavier_normal_(t, gain=2.0), (200, 100), 2 * math.sqrt(2 / 300)),
    (lambda t: init.xavier_uniform_(t), (200, 100), math.sqrt(2 / 300)),
    (lambda t: init.normal_(t, 1.0, 0.3), (100, 100), 0.3),
    (lambda t: init.uniform_(t, -2.0, 4.0), (100, 100), 6 / math.sqrt(12)),
])
def test_random_fills_have_torch_statistics(fill, shape, std):
    ours = fill(tinyres.zeros(*shape, dtype=tinyres.float64)).numpy()
    assert ours.std() == pytest.approx(std, rel=0.05)


def test_init_takes_a_numpy_generator():
    a = init.normal_(tinyres.zeros(4), generator=np.random.default_rng(5)).numpy()
    b = init.normal_(tinyres.zeros(4), generator=np.random.default_rng(5)).numpy()
    np.testing.assert_array_equal(a, b)


INIT_ERRORS = [
    ("xavier_uniform_", (3,), {}), ("xavier_normal_", (3,), {}), ("kaiming_uniform_", (3,), {}),
    ("kaiming_normal_", (4, 3), {"mode": "fan"}), ("eye_", (2, 2, 2), {}), ("dirac_", (2, 2), {}),
    ("dirac_", (3, 2, 3), {"groups": 2}), ("orthogonal_", (3,), {}),
    ("kaiming_normal_", (4, 3), {"nonlinearity": "foo"}),
    ("kaiming_uniform_", (4, 3), {"nonlinearity": "leaky_relu", "a": True}),
]


@pytest.mark.parametrize("name,shape,kwargs", INIT_ERRORS)
def test_init_errors_match_torch(name, shape, kwargs):
    with pytest.raises(ValueError) as want:
        getattr(torch.nn.init, name)(torch.zeros(*shape), **kwargs)
    with pytest.raises(ValueError) as got:
        getattr(init, name)(tinyres.zeros(*shape), **kwargs)
    assert str(want.value) in str(got.value)


def test_zero_element_kaiming_warns_and_returns_like_torch():
    for lib in (init, torch.nn.init):
        zeros = tinyres.zeros if lib is init else torch.zeros
        with pytest.warns(UserWarning, match="zero-element"):
            t = lib.kaiming_normal_(zeros(0, 3))
        assert tuple(t.shape) == (0, 3)
    for name in ("linear", "tanh", "relu", "selu", "sigmoid", "conv2d"):
        assert init.calculate_gain(name) == torch.nn.init.calculate_gain(name)
    assert init.calculate_gain("leaky_relu", 0.2) == torch.nn.init.calculate_gain("leaky_relu", 0.2)


def test_hooked_module_and_parameters_to_vector_pass_gradcheck():
    """The identity ops that carry the backward hooks, and parameters_to_vector, are
    differentiable like the plain module (finite differences, random output weights inside
    gradcheck); a hook that changes grad_input is caught as a wrong gradient."""
    layer = nn.Linear(3, 2).double()
    layer.register_full_backward_pre_hook(lambda m, g: None)
    layer.register_full_backward_hook(lambda m, gi, go: None)
    x = tinyres.tensor(np.random.default_rng(8).standard_normal((4, 3)), requires_grad=True)
    assert tinyres.gradcheck(layer, [x])
    a, b = (nn.Parameter(np.random.default_rng(9).standard_normal(s)) for s in ((2, 3), (4,)))
    assert tinyres.gradcheck(lambda p, q: parameters_to_vector([p, q]) * 1.5, [a, b])
    layer.register_full_backward_hook(lambda m, gi, go: (gi[0] * 1.1,))
    with pytest.raises(tinyres.GradcheckError):
        tinyres.gradcheck(layer, [x])
