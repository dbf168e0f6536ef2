"""In-place operations against PyTorch: the same script runs through tinyres and torch, and
must give the same values, the same gradients, the same version counts, or the same kind
of error. Skipped cleanly where torch is not installed."""
import numpy as np
import pytest

import tinyres

torch = pytest.importorskip("torch")

LIBS = {"tinyres": tinyres, "torch": torch}


def new(lib, array, requires_grad=False):
    return lib.tensor(np.array(array, dtype=np.float64), requires_grad=requires_grad)


def values(t):
    return None if t is None else t.detach().numpy().copy()


# Each in-place op as a pair: the op on a tensor `t` of shape (2, 3), with `other` a
# second float64 tensor of the same shape (which may require grad).
INPLACE = {
    "add_": lambda t, o: t.add_(o, alpha=2.0),
    "sub_": lambda t, o: t.sub_(o),
    "mul_": lambda t, o: t.mul_(o),
    "div_": lambda t, o: t.div_(o),
    "iadd": lambda t, o: t.__iadd__(o),
    "isub": lambda t, o: t.__isub__(o * 3.0),
    "imul": lambda t, o: t.__imul__(o),
    "itruediv": lambda t, o: t.__itruediv__(o),
    "add_ broadcast": lambda t, o: t.add_(o[0]),
    "mul_ scalar": lambda t, o: t.mul_(2.5),
    "zero_": lambda t, o: t.zero_(),
    "fill_": lambda t, o: t.fill_(0.75),
    "clamp_": lambda t, o: t.clamp_(-0.5, 0.5),
    "clamp_ min": lambda t, o: t.clamp_(min=0.1),
    "copy_": lambda t, o: t.copy_(o),
    "copy_ broadcast": lambda t, o: t.copy_(o[1]),
    "relu_": lambda t, o: t.relu_(),
    "setitem slice": lambda t, o: t.__setitem__((slice(None), 1), o[:, 0]),
    "setitem int": lambda t, o: t.__setitem__(0, 4.0),
    "setitem mask": lambda t, o: t.__setitem__(t > 0.2, 0.0),
    "setitem mask tensor": lambda t, o: t.__setitem__(o > 0.0, o[o > 0.0]),
    "setitem index list": lambda t, o: t.__setitem__(([0, 1], [2, 0]), o[0, :2]),
}

A = [[0.3, -1.2, 0.8], [1.5, -0.1, 0.45]]
B = [[0.7, 0.25, -1.1], [2.0, -0.6, 1.3]]


def run_plain(lib, name):
    t, o = new(lib, A), new(lib, B)
    before = t._version
    out = INPLACE[name](t, o)
    return values(t), t._version - before, out is t or name.startswith("setitem")


def run_differentiable(lib, name):
    """The op on a non-leaf, with `other` requiring grad; gradients of a weighting."""
    x, o = new(lib, A, requires_grad=True), new(lib, B, requires_grad=True)
    y = x * 1.5
    early = y + 1.0                         # a consumer of y's value before the write
    INPLACE[name](y, o)
    w = new(lib, [[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
    ((y * w).sum() + (early * w).sum()).backward()
    return values(y), values(x.grad), values(o.grad)


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_result_and_version_match_torch(name):
    ours, theirs = run_plain(tinyres, name), run_plain(torch, name)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    assert ours[1] == theirs[1] >= 1       # the version counter moved, as torch's did
    assert ours[2] and theirs[2]           # the op returns the tensor itself


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_on_non_leaf_differentiates_as_torch(name):
    ours, theirs = run_differentiable(tinyres, name), run_differentiable(torch, name)
    for what, a, b in zip(("value", "x.grad", "other.grad"), ours, theirs):
        if b is None:
            assert a is None or not np.any(a), what
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=what)


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_on_a_saved_tensor_fails_at_backward(name):
    for lib in LIBS.values():
        x, o = new(lib, A, requires_grad=True), new(lib, B)
        y = x * 1.5
        z = y * y                          # Mul saves y
        INPLACE[name](y, o)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            z.sum().backward()


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_on_a_leaf_that_requires_grad(name):
    for lib in LIBS.values():
        p, o = new(lib, A, requires_grad=True), new(lib, B)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            INPLACE[name](p, o)
        with lib.no_grad():
            INPLACE[name](p, o)
        assert p.is_leaf and p.requires_grad and p.grad_fn is None if lib is torch else \
            p.is_leaf and p.requires_grad
    ours, theirs = new(tinyres, A, True), new(torch, A, True)
    with tinyres.no_grad():
        INPLACE[name](ours, new(tinyres, B))
    with torch.no_grad():
        INPLACE[name](theirs, new(torch, B))
    np.testing.assert_allclose(values(ours), values(theirs), rtol=1e-12)


def hand_written_sgd(lib):
    lib.manual_seed(0)
    w = lib.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    x = lib.tensor(np.arange(12.0).reshape(4, 3) / 10)
    for _ in range(3):
        loss = ((x @ w.T) ** 2).mean()
        loss.backward()
        with lib.no_grad():
            w -= 0.1 * w.grad
            w.grad.zero_()
    return values(w), w.is_leaf, w.requires_grad


def test_hand_written_sgd_step_updates_the_parameter():
    ours, theirs = hand_written_sgd(tinyres), hand_written_sgd(torch)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    assert not np.allclose(ours[0], np.linspace(-1, 1, 6).reshape(2, 3))
    assert ours[1:] == theirs[1:] == (True, True)


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_keeps_the_sign_of_zero_as_torch(inplace):
    # relu(-0.0) is -0.0 in PyTorch, in place or not: only values below zero are replaced
    values = [-2.0, -0.0, 0.0, 3.0, float("nan")]
    got = tinyres.nn.functional.relu(tinyres.tensor(values), inplace=inplace).numpy()
    want = torch.nn.functional.relu(torch.tensor(values), inplace=inplace).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("value", [-1.5, 2.0])
def test_relu_of_a_0d_tensor_as_torch(value):
    # a 0-d tensor stays 0-d through relu and its gradient (it came back 1-d once)
    x = tinyres.tensor(value, requires_grad=True)
    tx = torch.tensor(value, requires_grad=True)
    y, ty = tinyres.nn.functional.relu(x), torch.nn.functional.relu(tx)
    y.backward()
    ty.backward()
    assert y.shape == tuple(ty.shape) == () and x.grad.shape == ()
    assert float(y) == float(ty) and float(x.grad) == float(tx.grad)


def test_relu_inplace_layer_writes_into_its_input_and_differentiates():
    results = {}
    for name, lib in LIBS.items():
        x = new(lib, A, requires_grad=True)
        h = x * 2.0
        out = lib.nn.ReLU(inplace=True)(h)
        out.sum().backward()
        results[name] = values(h), values(x.grad), out is h
    np.testing.assert_array_equal(results["tinyres"][0], results["torch"][0])
    np.testing.assert_array_equal(results["tinyres"][1], results["torch"][1])
    assert results["tinyres"][2] and results["torch"][2]
    assert "inplace=True" in repr(tinyres.nn.ReLU(inplace=True))


def test_inplace_errors_match_torch():
    for lib in LIBS.values():
        ints = lib.tensor([1, 2, 3])
        with pytest.raises(RuntimeError, match="can't be cast"):
            ints.div_(lib.tensor([2, 2, 2]))           # true division gives floats
        small = new(lib, [1.0, 2.0, 3.0])
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
            small.add_(new(lib, [[1.0, 2.0, 3.0]] * 2))
        with pytest.raises(RuntimeError):
            lib.zeros(3).expand(2, 3).add_(1.0)         # one memory cell, many elements
        with pytest.raises(RuntimeError, match="0-dim"):
            small.fill_(new(lib, [1.0, 2.0]))


def test_views_share_the_version_counter():
    for lib in LIBS.values():
        x = new(lib, A)
        row, flat, det = x[0], x.reshape(6), x.detach()
        x.add_(1.0)
        det.mul_(2.0)
        assert row._version == flat._version == det._version == x._version == 2
        assert x.data._version == 0            # .data has a counter of its own
        x.data.add_(1.0)
        assert x._version == 2


def test_data_shares_memory_without_history():
    for lib in LIBS.values():
        x = new(lib, A, requires_grad=True)
        y = x * 2
        d = y.data
        assert not d.requires_grad and d.is_leaf and isinstance(d, type(x))
        d.zero_()
        assert np.all(values(y) == 0)          # the same memory
        p = new(lib, A, requires_grad=True)
        p.data = new(lib, B)
        np.testing.assert_array_equal(values(p), np.array(B))
        assert p.is_leaf and p.requires_grad


def test_writes_through_data_and_detach_reach_from_numpy_arrays():
    array = np.zeros(3)
    t = tinyres.from_numpy(array)
    t.add_(1.0)
    t.detach()[0] = 5.0
    np.testing.assert_array_equal(array, [5.0, 1.0, 1.0])


def test_inplace_on_a_view_of_a_leaf_is_refused_as_torch():
    for lib in LIBS.values():
        p = new(lib, A, requires_grad=True)
        with pytest.raises(RuntimeError, match="view of a leaf Variable"):
            p[0].add_(1.0)


def writes_through_slices(lib):
    x = lib.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    w = lib.tensor(np.full(3, 0.5), requires_grad=True)
    y = x * 2
    early = y + 1                              # read before the writes
    y[0].mul_(3)                               # in place on a slice
    y[:, 1] += w[:2]                           # Python: t = y[:, 1]; t += ...; y[:, 1] = t
    row = y[1]
    row[2] = 7.0                               # assignment into a slice of a slice
    weights = lib.tensor(np.arange(6.0).reshape(2, 3))
    ((y * weights).sum() + early.sum()).backward()
    return values(y), values(x.grad), values(w.grad)


def test_inplace_on_slices_of_a_recorded_tensor_differentiates_as_torch():
    for ours, theirs in zip(writes_through_slices(tinyres), writes_through_slices(torch)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def writes_through_views(lib):
    x = lib.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    w = lib.tensor(np.full(6, 0.5), requires_grad=True)
    y = x * 2
    y.reshape(6).mul_(w)                       # through a reshape
    y.t().add_(1.0)                            # through a transpose
    y.flatten().relu_()
    base = lib.zeros(2, 3, dtype=lib.float64)  # a constant, written with a recorded value
    base.reshape(6).add_(w * 3)
    small = lib.tensor([1.0, 2.0], requires_grad=True) * 1
    small[1] = lib.tensor([[5.0]], dtype=lib.float32)   # leading 1s dropped, cast
    weights = lib.tensor(np.arange(6.0).reshape(2, 3))
    ((y * weights).sum() + (base * weights).sum()).backward()
    return values(y), values(base), values(x.grad), values(w.grad), values(small)


def test_inplace_through_reshape_and_transpose_views_differentiates_as_torch():
    for ours, theirs in zip(writes_through_views(tinyres), writes_through_views(torch)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_a_hook_registered_before_an_inplace_op_sees_the_old_value_s_gradient():
    for lib in LIBS.values():
        x = new(lib, [1.0, 2.0], requires_grad=True)
        y = x * 2
        seen = []
        y.register_hook(lambda g: seen.append(values(g)) or g + 1)
        y.mul_(3.0)
        y.sum().backward()
        np.testing.assert_array_equal(seen[0], [3.0, 3.0])
        np.testing.assert_array_equal(values(x.grad), [8.0, 8.0])


def test_a_float64_value_added_in_place_to_a_float32_tensor_keeps_its_dtype():
    results = []
    for lib in LIBS.values():
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        w = lib.ones(2, dtype=lib.float64, requires_grad=True)
        y = x * 1
        y += w
        y.sum().backward()
        results.append((str(y.dtype).replace("torch.", ""), values(x.grad), values(w.grad),
                        str(w.grad.dtype).replace("torch.", "")))
    assert results[0][0] == results[1][0] == "float32"
    assert results[0][3] == results[1][3] == "float64"
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_single_elements_and_zero_d_results_are_writable_views_as_torch():
    for lib in LIBS.values():
        x = new(lib, [1.0, 2.0, 3.0])
        first = x[0]
        x.add_(1.0)
        assert first.item() == 2.0 and first._version == 1
        x[1] += 1.0
        loss = (x * 2).sum()
        loss /= 2
        assert x.tolist() == [2.0, 4.0, 4.0] and loss.item() == 10.0


def test_a_parameter_shares_the_version_counter_of_the_tensor_it_wraps():
    for lib in LIBS.values():
        t = new(lib, [1.0, 2.0])
        p = lib.nn.Parameter(t)
        x = new(lib, [3.0, 4.0], requires_grad=True)
        y = (p * x).sum()
        t.mul_(10.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()


def views_read_before_and_after_their_base_changes(lib):
    x = new(lib, [[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x * 2
    row, flat = y[0], y.reshape(4)
    early = row * 5                            # reads the view before the write
    y.mul_(3)
    later = row * 7 + flat.sum()               # and after: the view is made again
    (early.sum() + later.sum()).backward()
    return values(later), values(x.grad)


def test_a_view_used_after_its_base_changed_in_place_follows_torch():
    for ours, theirs in zip(views_read_before_and_after_their_base_changes(tinyres),
                            views_read_before_and_after_their_base_changes(torch)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_inference_tensors_follow_torch_rules():
    for lib in LIBS.values():
        with lib.inference_mode():
            t = new(lib, A)
            s = t * 2
        assert s.is_inference() and not new(lib, A).is_inference()
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor"):
            s.add_(1.0)
        w = new(lib, A, requires_grad=True)
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved"):
            s * w
        np.testing.assert_array_equal(values(s + w), values(s) + np.array(A))  # nothing saved
        with pytest.raises(RuntimeError):
            s.requires_grad_(True)


def test_relu_inplace_keeps_its_output_in_the_tensor_and_checks_it():
    for lib in LIBS.values():
        x = new(lib, A, requires_grad=True)
        y = x * 2
        y.relu_()                              # saves its output: y's memory, version 1
        y.add_(1.0)                            # version 2
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
    x = new(tinyres, A, requires_grad=True)
    y = x * 2
    y.relu_()
    (saved,) = y.grad_fn.saved
    assert saved is y.array                    # no second copy of the activation


def test_relu_inplace_recorded_writes_without_a_buffer():
    """relu_ with a graph recorded writes max(y, 0) straight into y's memory: no array of
    y's size is allocated on the way (NumPy reports its buffers to tracemalloc), and the
    values and gradient are relu's."""
    import tracemalloc
    def doubled():
        x = tinyres.tensor(np.linspace(-1, 1, 65536, dtype=np.float32).reshape(256, 256),
                           requires_grad=True)
        return x, x * 2
    doubled()[1].relu_()                       # imports and compiles what relu_ needs
    x, y = doubled()
    memory = y.array
    tracemalloc.start()
    y.relu_()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < memory.nbytes // 8, (peak, memory.nbytes)
    assert y.array is memory
    np.testing.assert_array_equal(y.array, np.maximum(2 * x.array, 0))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.array, np.where(x.array > 0, 2, 0).astype(np.float32))


def torchvision_style_block(lib):
    """A user's residual block written the torchvision way: in-place ReLUs and
    `out += identity`, run forward and backward."""
    nn = lib.nn
    lib.manual_seed(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(3)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(3)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    block = Block().double()
    rng = np.random.default_rng(3)
    for conv in (block.conv1, block.conv2):
        conv.weight.data.copy_(lib.tensor(rng.standard_normal(tuple(conv.weight.shape))))
    x = lib.tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)
    w = lib.tensor(rng.standard_normal((2, 3, 5, 5)))
    out = block(x)
    (out * w).sum().backward()
    return [values(out), values(x.grad)] + [values(p.grad) for p in block.parameters()]


def test_a_torchvision_style_block_with_inplace_ops_matches_torch():
    ours, theirs = torchvision_style_block(tinyres), torchvision_style_block(torch)
    assert len(ours) == len(theirs) == 8
    for i, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"item {i}")


def test_an_optimizer_step_before_backward_is_caught_as_torch():
    for lib in LIBS.values():
        lib.manual_seed(0)
        layer = lib.nn.Linear(3, 2).double()
        opt = lib.optim.SGD(layer.parameters(), lr=0.1)
        x = new(lib, A, requires_grad=True)
        loss = layer(x).sum()
        loss.backward(retain_graph=True)
        opt.step()                             # writes the weight Linear saved for x's grad
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_python_conversions_and_small_methods_as_torch():
    for lib in LIBS.values():
        x = new(lib, [[1.0, 2.0], [3.0, 4.0]])
        assert float(x.sum()) == 10.0 and int(x[1, 1]) == 4 and f"{x.sum():.1f}" == "10.0"
        assert list(range(lib.tensor(3))) == [0, 1, 2]
        assert (x == None) is False and (x != None) is True  # noqa: E711
        assert np.asarray(x).dtype == np.float64 and x.pow(2).sum().item() == 30.0
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            x.transpose(0, 1).view(4)
        with pytest.raises(RuntimeError, match="start_dim cannot come after end_dim"):
            x.flatten(1, 0)
        with pytest.raises(RuntimeError, match="Can't call numpy"):
            np.asarray(new(lib, [1.0], requires_grad=True))
        out = lib.where(x > 2, 1.0, 0)
        assert str(out.dtype).replace("torch.", "") == "float32" and out.tolist() == [[0, 0], [1, 1]]


def test_clamp_with_tensor_bounds_as_torch():
    results = []
    for lib in LIBS.values():
        x = new(lib, [0.5, 2.0, -1.0], requires_grad=True)
        low = new(lib, [1.0, 0.0, 0.0], requires_grad=True)
        y = x.clamp(min=low, max=new(lib, [3.0, 1.5, 2.0]))
        (y * new(lib, [1.0, 2.0, 3.0])).sum().backward()
        results.append((values(y), values(x.grad), values(low.grad)))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


def test_clone_owns_its_memory_and_passes_the_gradient_as_torch():
    for lib in LIBS.values():
        x = new(lib, [1.0, 2.0], requires_grad=True)
        y = x * 2
        c = y.clone()
        c.add_(1.0)                            # its own memory: y is unchanged
        (c * y).sum().backward()
        np.testing.assert_array_equal(values(y), [2.0, 4.0])
        np.testing.assert_array_equal(values(x.grad), [2 * (3.0 + 2.0), 2 * (5.0 + 4.0)])
        assert y.grad_fn is not None and x.grad_fn is None


def test_the_version_error_names_the_saved_tensor_and_who_saved_it():
    x = tinyres.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = x * 1.5
    z = y * y                              # Mul saves y, its input 0
    y.add_(1.0)
    with pytest.raises(RuntimeError, match=r"\[float32 tensor of shape \[2, 3\], saved by Mul "
                                           r"as its input 0\] is at version 1; expected "
                                           r"version 0 instead"):
        z.sum().backward()
    x = tinyres.tensor(-np.ones(4), requires_grad=True)
    z = (x * 1.5).relu_()                  # ReLU's output, written into y's memory
    z.add_(1.0)
    with pytest.raises(RuntimeError, match=r"\[float64 tensor of shape \[4\], written in "
                                           r"place by ReLU\] is at version 2; expected "
                                           r"version 1 instead"):
        z.sum().backward()
