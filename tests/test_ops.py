"""Every op gradient-checked in float64 on hypothesis-drawn shapes, non-contiguous inputs
included, under random output weightings (see tinyres.gradcheck); plus float32 runs and
the bad-input messages of the ops."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.nn.functional as F
from namespaces import TinyresOps
from op_cases import CASES

OPS = TinyresOps()
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def draw_case(case, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    arrays, params = case.draw_inputs(data.draw, rng)
    return arrays, params


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@SETTINGS
@given(data=st.data())
def test_gradcheck_float64(case, data):
    arrays, params = draw_case(case, data)
    inputs = [OPS.wrap(a, requires_grad=True) for a in arrays]
    assert tinyres.gradcheck(lambda *ts: case.call(OPS, *ts, **params), inputs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_float32_runs_and_stays_float32(case, data):
    arrays, params = draw_case(case, data)
    inputs = [OPS.wrap(a.astype(np.float32), requires_grad=True) for a in arrays]
    out = case.call(OPS, *inputs, **params)
    assert out.dtype == np.float32
    out.backward(tinyres.ones_like(out))
    for t in inputs:
        assert t.grad is None or t.grad.dtype == np.float32


# ----- bad input -----------------------------------------------------------------------
def test_conv2d_names_channels_and_shapes():
    x, w = tinyres.randn(2, 3, 8, 8), tinyres.randn(16, 16, 3, 3)
    with pytest.raises(ValueError, match=r"conv2d: the input \(2, 3, 8, 8\) has 3 channels "
                                         r"but the weight \(16, 16, 3, 3\) expects 16"):
        F.conv2d(x, w)


def test_conv2d_rejects_a_kernel_larger_than_the_padded_input():
    with pytest.raises(ValueError, match=r"conv2d: a \(3, 3\) kernel with padding \(0, 0\) "
                                         r"does not fit an input of shape \(1, 1, 2, 2\)"):
        F.conv2d(tinyres.randn(1, 1, 2, 2), tinyres.randn(1, 1, 3, 3))


def test_batch_norm_names_the_mismatched_statistic():
    x = tinyres.randn(4, 3, 2, 2)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean must have shape \(3,\)"):
        F.batch_norm(x, tinyres.zeros(4), tinyres.ones(3), training=False)


def test_batch_norm_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batch_norm(tinyres.randn(1, 3), None, None, training=True)


def test_cross_entropy_checks_labels():
    """torch's exception classes (test_layers_torch.py runs both engines), our messages."""
    logits = tinyres.randn(4, 3)
    with pytest.raises(RuntimeError, match="expected target dtype to be Long"):
        F.cross_entropy(logits, tinyres.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(IndexError, match=r"Target 3 is out of bounds \(classes 0 to 2\)"):
        F.cross_entropy(logits, tinyres.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r"batch_size \(4\) to match target batch_size \(3\)"):
        F.cross_entropy(logits, tinyres.tensor([0, 1, 2]))


def test_mse_loss_does_not_broadcast():
    with pytest.raises(ValueError, match=r"mse_loss: input \(3, 1\) and target \(3,\)"):
        F.mse_loss(tinyres.randn(3, 1), tinyres.randn(3))


def test_residual_add_requires_equal_shapes():
    with pytest.raises(ValueError, match="residual_add: the branch"):
        F.residual_add(tinyres.randn(2, 4, 8, 8), tinyres.randn(2, 2, 8, 8))


def test_pool_padding_at_most_half_the_kernel():
    with pytest.raises(ValueError, match="max_pool2d: padding"):
        F.max_pool2d(tinyres.randn(1, 1, 5, 5), 2, padding=2)


def test_expand_and_cat_messages():
    with pytest.raises(RuntimeError, match="expand: the expanded size of the tensor"):
        tinyres.randn(2, 3).expand(4, 3)
    with pytest.raises(ValueError, match="cat: tensors must have equal sizes except"):
        F.cat([tinyres.randn(2, 3), tinyres.randn(2, 4)], dim=0)


def test_residual_add_backward_is_branch_plus_scaled_shortcut():
    branch = tinyres.randn(2, 3, dtype=tinyres.float64, requires_grad=True)
    shortcut = tinyres.randn(2, 3, dtype=tinyres.float64, requires_grad=True)
    g = tinyres.randn(2, 3, dtype=tinyres.float64)
    F.residual_add(branch, shortcut, scale=0.5).backward(g)
    np.testing.assert_array_equal(branch.grad.numpy(), g.numpy())
    np.testing.assert_array_equal(shortcut.grad.numpy(), 0.5 * g.numpy())


# ----- derivatives at the edges, against finite differences ----------------------------
def f64(values, requires_grad=True):
    return tinyres.tensor(np.array(values, dtype=np.float64), requires_grad=requires_grad)


def gradcheck_finite(fn, inputs):
    """tinyres.gradcheck (which fails on a NaN or Inf gradient), then every analytic
    gradient of a plain backward is finite too."""
    assert tinyres.gradcheck(fn, inputs)
    out = fn(*inputs)
    for t in inputs:
        t.grad = None
    out.backward(tinyres.ones_like(out))
    return all(np.isfinite(t.grad.numpy()).all() for t in inputs)


def test_pow_base_gradient_where_the_exponent_is_zero():
    """d a^b/da = 0 where b = 0, at a = 0 too (a^0 is the constant 1 on both sides)."""
    a = f64([0.0, -1.5, 2.0, 0.7, 0.0])
    b = f64([0.0, 2.0, 3.0, 0.0, 0.0], requires_grad=False)
    assert gradcheck_finite(lambda a: a ** b, [a])
    assert gradcheck_finite(lambda a: a ** 0.0 + a * 0.5, [a])


def test_pow_exponent_gradient_at_base_zero_with_a_positive_exponent():
    """d 0^b/db = 0 for b > 0 (0^b is the constant 0 there)."""
    a = f64([0.0, 0.0, 2.0, 0.5], requires_grad=False)
    assert gradcheck_finite(lambda b: a ** b, [f64([1.5, 2.5, -0.3, 1.2])])
    assert gradcheck_finite(lambda b: 0.0 ** b, [f64([0.5, 1.0, 3.0])])


def test_abs_gradient_and_the_promoting_ops_against_finite_differences():
    x = f64([[-1.5, 0.3, 2.0], [0.7, -0.2, 1.1]])
    ints = tinyres.tensor([[1, 2, 3], [4, 5, 6]])
    assert gradcheck_finite(lambda x: F.abs(x) * ints + x / ints - (ints < 3.5) * x, [x])


def test_a_deliberately_wrong_edge_convention_is_caught():
    """The negative control: pow's da without the exponent-0 rule (b a^(b-1) read literally,
    0 * inf = nan at a = 0) fails the same check."""
    class LiteralPow(tinyres.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a ** b

        @staticmethod
        def backward(ctx, grad_out):
            # d(a^b)/da = b a^(b-1), with no special case: wrong at a = 0, b = 0
            a, b = ctx.saved_tensors
            return grad_out * b * a ** (b - 1), None

    b = f64([0.0, 2.0], requires_grad=False)
    assert gradcheck_finite(lambda a: a ** b, [f64([0.0, 1.5])])
    with np.errstate(all="ignore"), pytest.raises(tinyres.GradcheckError, match="analytic nan"):
        tinyres.gradcheck(lambda a: LiteralPow.apply(a, b), [f64([0.0, 1.5])])


def test_dropout2d_gradient_against_finite_differences():
    """The mask is drawn again, identically, on every call (the seed is reset)."""
    def seeded(x):
        np.random.seed(0)
        return F.dropout2d(x, 0.5)
    x = tinyres.tensor(np.random.default_rng(1).standard_normal((3, 4, 2, 2)),
                       requires_grad=True)
    assert tinyres.gradcheck(seeded, [x])
    assert (seeded(x).numpy() == 0).any() and (seeded(x).numpy() != 0).any()


def test_softmax_dtype_argument_casts_first():
    x = tinyres.randn(2, 3)
    assert F.softmax(x, 1, dtype=np.float64).dtype == np.float64
    assert F.log_softmax(x, dim=1, dtype=np.float64).dtype == np.float64
