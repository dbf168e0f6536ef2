"""The autograd core: the backward walk, accumulation, grad mode, hooks, retain_graph,
the gradient checker itself (including a negative control), and error messages."""
import weakref

import numpy as np
import pytest

import tinyres
import tinyres.nn.functional as F
from tinyres.autograd import Function
from tinyres.functional.math import binary_operands
from tinyres.kernels import buffers


def f64(*shape, grad=True, seed=0):
    rng = np.random.default_rng(seed)
    return tinyres.tensor(rng.standard_normal(shape), requires_grad=grad)


def test_gradient_of_a_small_expression_matches_hand_derivative():
    a = tinyres.tensor([1.5, -2.0], dtype=tinyres.float64, requires_grad=True)
    b = tinyres.tensor([3.0, 0.5], dtype=tinyres.float64, requires_grad=True)
    (a * b + a ** 2).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [3.0 + 3.0, 0.5 - 4.0])
    np.testing.assert_allclose(b.grad.numpy(), [1.5, -2.0])


def test_a_tensor_used_twice_accumulates_both_gradients():
    x = f64(4)
    y = x * 3.0 + x * x       # x feeds two branches: they meet with +
    y.backward(tinyres.ones_like(y))
    np.testing.assert_allclose(x.grad.numpy(), 3.0 + 2 * x.numpy())


class _Scale(Function):
    """y = k*x whose backward returns a fresh array and notes its id (not the array: a
    reference kept here would itself stop the walk from reusing it)."""
    made = []

    @staticmethod
    def forward(ctx, x, k):
        ctx.k = k
        return x * k

    @staticmethod
    def backward(ctx, grad_out):
        # d(k*x)/dx = k
        grad = grad_out * ctx.k
        _Scale.made.append(id(grad))
        return (grad,)


@pytest.mark.parametrize("first", [0, 1])
def test_two_fresh_gradients_meet_in_one_of_their_arrays(first):
    # where only the walk holds the gradient that arrived first, the second is added into
    # it (a += b): x.grad is one of the two arrays the backwards made, with their sum
    x = tinyres.tensor(np.ones((4, 5), np.float32), requires_grad=True)
    _Scale.made.clear()
    terms = [_Scale.apply(x, k=3.0).sum(), _Scale.apply(x, k=2.0).sum()]
    (terms[first] + terms[1 - first]).backward()
    assert len(_Scale.made) == 2 and id(x.grad.array) in _Scale.made
    np.testing.assert_array_equal(x.grad.numpy(), 5.0)


# t made from x hands x a gradient whose memory a hook on t keeps: x + 0 the array itself;
# x.reshape(20) a view of it (the view alone is the walk's, the memory it shows is not:
# buffers.sole_view); (x + x).reshape(20) a view Add hands to both of its inputs at once
HELD = pytest.mark.parametrize("make, want", [
    (lambda x: x + 0, 3.0), (lambda x: x.reshape(20), 3.0),
    (lambda x: (x + x).reshape(20), 4.0)], ids=["itself", "a view", "one view to both"])


@HELD
@pytest.mark.parametrize("first", [0, 1])
def test_a_gradient_held_elsewhere_is_not_added_into(make, want, first):
    # whichever of x's gradients arrives first, the kept one is never written, and x's
    # gradient is the sum
    x = tinyres.tensor(np.ones((4, 5), np.float32), requires_grad=True)
    kept = []
    t = make(x)
    t.register_hook(lambda g: kept.append(g))
    terms = [t.sum(), (x * 2.0).sum()]
    (terms[first] + terms[1 - first]).backward()
    np.testing.assert_array_equal(kept[0].numpy(), 1.0)
    np.testing.assert_array_equal(x.grad.numpy(), want)


def test_gradients_accumulate_across_backward_calls():
    x = f64(3)
    (x * 2.0).sum().backward()
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 4.0)


def test_a_chain_of_5000_ops_does_not_hit_the_recursion_limit():
    x = tinyres.tensor([1.0], dtype=tinyres.float64, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5000], rtol=1e-9)


def test_order_is_deterministic():
    from tinyres.tensor import _topological_order
    x = f64(2)
    y = (x * 2.0 + x.exp()) * x.abs().sqrt()
    names = [[n._ctx.function.__name__ if n._ctx else "leaf" for n in
              _topological_order(y)] for _ in range(3)]
    assert names[0] == names[1] == names[2]
    order = _topological_order(y)
    position = {id(t): i for i, t in enumerate(order)}
    for t in order:
        if t._ctx is not None:
            for parent in t._ctx.inputs:
                if parent is not None and parent.requires_grad:
                    assert position[id(parent)] < position[id(t)]


def test_no_grad_context_and_decorator_record_nothing():
    x = f64(3)
    with tinyres.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y._ctx is None

    @tinyres.no_grad()
    def double(t):
        return t * 2.0
    z = double(x)
    assert not z.requires_grad
    assert tinyres.is_grad_enabled()
    assert (x * 2.0).requires_grad


def test_second_backward_through_freed_graph_raises_and_retain_graph_allows_it():
    x = f64(3)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_hooks_see_and_can_replace_the_gradient():
    x = f64(3)
    h = x * 2.0
    seen = []
    handle = h.register_hook(lambda g: seen.append(g.numpy().copy()))
    h.register_hook(lambda g: g * 10.0)
    h.sum().backward()
    np.testing.assert_allclose(seen[0], 1.0)
    np.testing.assert_allclose(x.grad.numpy(), 20.0)
    handle.remove()
    x.grad = None
    (x * 2.0).sum().backward()
    assert len(seen) == 1


def test_backward_on_non_scalar_needs_a_gradient():
    x = f64(3)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2.0).backward()
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2.0).backward(tinyres.ones(4, dtype=tinyres.float64))


def test_dtypes_default_and_float64_propagates():
    assert tinyres.tensor([1.0, 2.0]).dtype == np.float32
    assert tinyres.tensor([1, 2]).dtype == np.int64
    assert tinyres.randn(2, 2).dtype == np.float32
    x = tinyres.randn(2, 2, dtype=tinyres.float64)
    assert (x * 2 + 1).dtype == np.float64
    assert (x.float() * 2).dtype == np.float32


def test_comparisons_are_not_differentiable_and_indexing_is():
    x = f64(5)
    mask = x > 0
    assert mask.dtype == np.bool_ and not mask.requires_grad
    x[1:4].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 1, 1, 1, 0])


def test_detach_and_item_and_requires_grad_():
    x = f64(1)
    d = (x * 2.0).detach()
    assert not d.requires_grad and d._ctx is None
    assert isinstance(d.item(), float)
    with pytest.raises(RuntimeError, match="floating point"):
        tinyres.tensor([1, 2]).requires_grad_()


# ----- bad input: clear errors, inputs and graph untouched ------------------------------
def test_binary_op_rejects_shapes_that_do_not_broadcast():
    a, b = f64(3, 4), f64(3, 5)
    with pytest.raises(RuntimeError, match=r"add: shapes \(3, 4\) and \(3, 5\)"):
        a + b


def test_binary_op_promotes_mixed_float_dtypes_and_grads_keep_their_own():
    a = tinyres.randn(2, requires_grad=True)
    b = tinyres.randn(2, dtype=tinyres.float64, requires_grad=True)
    out = a * b
    assert out.dtype == np.float64
    out.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_allclose(a.grad.numpy(), b.numpy(), rtol=1e-6)


def test_matmul_names_both_shapes():
    with pytest.raises(RuntimeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\)"):
        f64(2, 3) @ f64(4, 5)


def test_a_failing_op_leaves_inputs_and_graph_untouched():
    x = f64(3, 4)
    before = x.numpy().copy()
    with pytest.raises(RuntimeError, match=r"shape .\[5, 5\]. is invalid for input of size 12"):
        x.reshape(5, 5)
    assert x._ctx is None and x.grad is None
    np.testing.assert_array_equal(x.numpy(), before)


# ----- the gradient checker -------------------------------------------------------------
class WrongSquare(Function):
    """x^2 with a deliberately wrong backward (2x + 0.01): the negative control."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * (2 * x + 0.01)


class RightSquare(WrongSquare):
    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * 2 * x


@pytest.mark.parametrize("mode", ["full", "projection"])
def test_gradcheck_catches_a_wrong_backward(mode):
    x = f64(4, 3)
    assert tinyres.gradcheck(RightSquare.apply, [x], mode=mode)
    with pytest.raises(tinyres.GradcheckError, match="analytic"):
        tinyres.gradcheck(WrongSquare.apply, [x], mode=mode)


def test_gradcheck_catches_a_wrong_backward_hidden_by_a_plain_sum():
    """Subtracting the mean makes every output sum to zero: a checker that summed the
    output would see a zero gradient either way. The random weighting does not."""
    class CentreWrong(Function):
        @staticmethod
        def forward(ctx, x):
            return x - x.mean()

        @staticmethod
        def backward(ctx, grad_out):
            return grad_out.copy()       # forgets the -mean(grad_out) term

    x = f64(6)
    with pytest.raises(tinyres.GradcheckError):
        tinyres.gradcheck(CentreWrong.apply, [x], mode="projection")


def test_gradcheck_catches_a_forward_that_modifies_its_input():
    class Sneaky(Function):
        @staticmethod
        def forward(ctx, x):
            x *= 1.0000001
            return x.copy()

        @staticmethod
        def backward(ctx, grad_out):
            return grad_out

    with pytest.raises(tinyres.GradcheckError, match="modified"):
        tinyres.gradcheck(Sneaky.apply, [f64(3)])


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        tinyres.gradcheck(lambda x: x * 2.0, [tinyres.randn(3, requires_grad=True)])


def test_run_backward_checks_gradient_shapes():
    class BadShape(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, grad_out):
            return grad_out[:1]

    with pytest.raises(RuntimeError, match=r"BadShape.backward: gradient 0 has shape"):
        BadShape.apply(f64(3)).sum().backward()


def test_binary_operands_wraps_scalars_in_the_tensor_dtype():
    a, b = binary_operands("add", f64(2), 3)
    assert b.dtype == np.float64 and b.shape == ()


# ----- gradient buffers never alias ----------------------------------------------------
def test_each_leaf_owns_its_grad():
    a = tinyres.randn(3, requires_grad=True)
    b = tinyres.randn(3, requires_grad=True)
    (a + b).sum().backward()                  # Add hands one array to both inputs
    assert not np.shares_memory(a.grad.array, b.grad.array)
    a.grad.array[0] = 99.0
    assert b.grad.array[0] == 1.0


class _Returns(tinyres.Function):
    """Identity whose backward returns made(grad_out), a weak reference to it kept in
    `returned`."""
    returned = []

    @staticmethod
    def forward(ctx, a, made):
        ctx.made = made
        return a.copy()

    @staticmethod
    def backward(ctx, grad_out):
        grad = ctx.made(grad_out)
        _Returns.returned.append(weakref.ref(grad))
        return grad


def _in_a_cache_block(g):
    block = buffers.empty(g.shape, g.dtype)       # a view of one of the cache's blocks
    np.multiply(g, 2.0, out=block)
    return block


def test_a_leaf_keeps_a_gradient_nothing_else_holds_and_copies_any_other():
    # as PyTorch's AccumulateGrad: a gradient only the walk refers to becomes the leaf's
    # .grad as it is; one that anything else may see is copied
    kept, owners = [], []
    cases = {"fresh": ((4, 3), lambda g: g * 2.0, True),
             "a cache block's one view": ((256, 1024), _in_a_cache_block, True),
             "held in a list": ((4, 3), lambda g: kept.append(g * 2.0) or kept[-1], False),
             "a view of memory held elsewhere":
                 ((4, 3), lambda g: owners.append((g * 2.0).ravel()) or owners[-1].reshape(4, 3),
                  False),
             "not contiguous": ((4, 3), lambda g: np.repeat(g * 2.0, 2, axis=1)[:, ::2], False)}
    for name, (shape, made, stolen) in cases.items():
        _Returns.returned.clear()
        x = tinyres.randn(*shape, requires_grad=True)
        _Returns.apply(x, made=made).backward(np.ones(shape, np.float32))
        returned = _Returns.returned[0]()
        assert (returned is x.grad.array) == stolen, name
        assert np.all(x.grad.array == 2.0), name
        if not stolen and returned is not None:
            assert not np.shares_memory(x.grad.array, returned), name


def test_a_leaf_grad_never_aliases_the_gradient_given_to_backward():
    # backward reads the given gradient in place (no copy, as PyTorch); a leaf copies it
    x = tinyres.randn(2, 3, requires_grad=True)
    seed = np.ones((2, 3), dtype=np.float32)
    x.backward(seed)
    assert not np.shares_memory(x.grad.array, seed)
    x.grad.array[...] = 5.0
    assert np.all(seed == 1.0)
    y = x * 1.0
    y.retain_grad()
    given = tinyres.ones(2, 3)
    y.backward(given)
    assert not np.shares_memory(y.grad.array, given.array)


def test_gradients_accumulate_into_the_same_grad_tensor_as_torch():
    x = tinyres.randn(3, requires_grad=True)
    (x * 2).sum().backward()
    first = x.grad
    (x * 3).sum().backward()
    assert x.grad is first and np.allclose(first.array, 5.0)


@pytest.mark.parametrize("bad", [lambda g: g.sum(), lambda g: g.double(),
                                 lambda g: tinyres.ones(4)], ids=["shape", "dtype", "size"])
def test_a_hook_returning_a_gradient_of_another_shape_or_dtype_is_refused(bad):
    x = tinyres.randn(3, requires_grad=True)
    y = x * 2
    y.register_hook(bad)
    with pytest.raises(RuntimeError, match=r"hook .<lambda>. registered on the output of Mul, a tensor of shape "
                                           r"\(3,\) and dtype float32 returned"):
        y.sum().backward()


def test_requires_grad_false_on_a_non_leaf_is_refused_as_torch():
    torch = pytest.importorskip("torch")
    for lib in (tinyres, torch):
        y = lib.randn(3, requires_grad=True) * 2
        with pytest.raises(RuntimeError, match="only change requires_grad flags of"):
            y.requires_grad_(False)


def test_gradcheck_fails_on_a_nan_gradient():
    class NanBackward(tinyres.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, grad_out):
            return grad_out * np.nan          # deliberately wrong: NaN everywhere

    for mode in ("full", "projection"):
        x = tinyres.randn(3, dtype=np.float64, requires_grad=True)
        with pytest.raises(tinyres.GradcheckError):
            tinyres.gradcheck(NanBackward.apply, [x], mode=mode)


def test_an_op_called_on_an_array_names_itself_and_the_type():
    with pytest.raises(TypeError, match=r"ReLU: argument 0 must be a Tensor, not "
                                        r"numpy.ndarray"):
        F.relu(np.zeros(3))


def test_a_second_backward_through_nodes_that_saved_nothing_works_as_torch():
    x = tinyres.tensor([1.0, 2.0], requires_grad=True)
    y = (x + 1).sum()
    y.backward()
    y.backward()
    assert x.grad.tolist() == [2.0, 2.0]
    z = (x * x).sum()
    z.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        z.backward()


def test_assigning_a_grad_of_another_shape_or_dtype_is_refused_as_torch():
    torch = pytest.importorskip("torch")
    for lib in (tinyres, torch):
        p = lib.zeros(3, requires_grad=True)
        with pytest.raises(RuntimeError):
            p.grad = lib.zeros(2)
        with pytest.raises(RuntimeError):
            p.grad = lib.zeros(3, dtype=lib.float64)
        p.grad = lib.ones(3)
        assert p.grad.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(RuntimeError, match="different size"):
        tinyres.zeros(3, requires_grad=True).grad = tinyres.zeros(2)
