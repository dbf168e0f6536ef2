"""The everyday torch namespace through `import tinyres as torch`: function forms, Tensor
methods, factories and dtypes, each case run on the same inputs through torch and tinyres
and compared (values, dtypes, shapes, the kind of error); hypothesis for the shape-generic
ones (reductions over drawn dims, split/chunk sizes, sort/topk with ties); a float64
gradient check for every new differentiable op. Skipped cleanly where torch is missing."""
import builtins

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyres

torch = pytest.importorskip("torch")

A = [[1.5, -2.0, 3.0], [0.5, 4.0, -1.0]]              # float32
I = [[1, 2, 3], [4, 5, 6]]                             # int64
B = [[True, False, True], [False, False, True]]        # bool


def dtype_name(x):
    return str(x.dtype).replace("torch.", "")


def as_numpy(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else x.numpy()


def assert_same(ours, theirs, meta_only=False):
    """Same kind of result; tensors of the same shape, dtype and (unless meta_only)
    values; tuples and (values, indices) pairs element by element."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, tinyres.Tensor), type(ours)
        assert tuple(ours.shape) == tuple(theirs.shape)
        assert dtype_name(ours) == dtype_name(theirs)
        if not meta_only:
            np.testing.assert_allclose(as_numpy(ours), as_numpy(theirs), rtol=1e-6,
                                       atol=1e-6, equal_nan=True)
    elif isinstance(theirs, torch.Size):
        assert type(ours) is tinyres.Size and tuple(ours) == tuple(theirs)
    elif isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        if hasattr(theirs, "indices"):
            assert_same(ours.values, theirs.values, meta_only)
            assert_same(ours.indices, theirs.indices, meta_only)
        for o, t in zip(ours, theirs):
            assert_same(o, t, meta_only)
    elif isinstance(theirs, np.ndarray):
        np.testing.assert_array_equal(ours, theirs)
        assert ours.dtype == theirs.dtype
    else:
        assert type(ours) is type(theirs) and ours == theirs, (ours, theirs)


def a(e):
    return e.tensor(A)


def i(e):
    return e.tensor(I)


def b(e):
    return e.tensor(B)


CASES = {
    # reductions and their dtypes
    "sum": lambda e: e.sum(a(e)),
    "sum dim keepdim": lambda e: e.sum(a(e), 1, keepdim=True),
    "sum dims": lambda e: a(e).sum((0, 1)),
    "sum int32 is int64": lambda e: i(e).int().sum(),
    "sum bool": lambda e: b(e).sum(0),
    "sum uint8 is int64": lambda e: e.tensor(I, dtype=e.uint8).sum(),
    "sum dtype=": lambda e: i(e).sum(dtype=e.float64),
    "mean dim": lambda e: e.mean(a(e), dim=0),
    "mean int with dtype": lambda e: i(e).mean(dtype=e.float32),
    "max": lambda e: e.max(a(e)),
    "max dim": lambda e: e.max(a(e), 1),
    "max dim keepdim": lambda e: a(e).max(dim=0, keepdim=True),
    "max int32 keeps dtype": lambda e: i(e).int().max(),
    "max other": lambda e: e.max(a(e), e.zeros(2, 3)),
    "min dim": lambda e: e.min(i(e), 0),
    "argmax": lambda e: e.argmax(a(e)),
    "argmax dim": lambda e: a(e).argmax(1),
    "argmax keepdim, no dim": lambda e: e.argmax(a(e), keepdim=True),
    "argmin dim keepdim": lambda e: e.argmin(a(e), dim=0, keepdim=True),
    "prod": lambda e: e.prod(a(e)),
    "prod dim keepdim": lambda e: a(e).prod(1, keepdim=True),
    "prod int32 is int64": lambda e: i(e).int().prod(0),
    "cumsum": lambda e: e.cumsum(a(e), 1),
    "cumsum int32 is int64": lambda e: i(e).int().cumsum(dim=0),
    "std": lambda e: e.std(a(e)),
    "std dim keepdim": lambda e: a(e).std(1, keepdim=True),
    "std unbiased=False": lambda e: a(e).std(unbiased=False),
    "var dim unbiased positional": lambda e: a(e).var(0, False),
    "var correction=0": lambda e: e.var(a(e), 1, correction=0),
    "norm": lambda e: e.norm(a(e)),
    "norm p=1": lambda e: a(e).norm(p=1),
    "norm dim": lambda e: a(e).norm(dim=1),
    "norm inf": lambda e: a(e).norm(p=float("inf")),
    "norm p=3 dim keepdim": lambda e: a(e).norm(3, 0, True),
    "linalg.norm": lambda e: e.linalg.norm(a(e)),
    "linalg.norm fro": lambda e: e.linalg.norm(a(e), "fro"),
    "linalg.norm vector ord": lambda e: e.linalg.norm(a(e)[0], 1),
    "linalg.norm ord dim": lambda e: e.linalg.norm(a(e), float("-inf"), dim=0),
    "linalg.norm dims": lambda e: e.linalg.norm(e.ones(2, 3, 4), dim=(1, 2), keepdim=True),
    "linalg.vector_norm": lambda e: e.linalg.vector_norm(a(e), 3, dim=1),
    "amax": lambda e: e.amax(a(e)),
    "amax dims": lambda e: e.amax(e.tensor([[1.0, 3.0], [3.0, 1.0]]), dim=(0, 1)),
    "amin dim keepdim": lambda e: a(e).amin(1, True),
    "amax of empty along a full dim": lambda e: e.amax(e.ones(0, 3), 1),
    "logsumexp": lambda e: e.logsumexp(a(e), 1),
    "logsumexp int keepdim": lambda e: i(e).logsumexp(0, keepdim=True),
    "logsumexp infinities": lambda e: e.logsumexp(e.tensor(
        [[float("-inf"), float("-inf")], [float("inf"), 1.0]]), 1),
    "all": lambda e: e.all(b(e)),
    "any dim": lambda e: b(e).any(1),
    "all int": lambda e: i(e).all(),
    "any uint8 stays uint8": lambda e: e.tensor(I, dtype=e.uint8).any(0),
    # elementwise
    "exp of int is float": lambda e: e.exp(i(e)),
    "log": lambda e: e.log(e.abs(a(e))),
    "sqrt of int": lambda e: e.sqrt(i(e)),
    "abs int": lambda e: e.abs(-i(e)),
    "sigmoid": lambda e: e.sigmoid(a(e)),
    "sigmoid method": lambda e: a(e).sigmoid(),
    "tanh": lambda e: e.tanh(a(e)),
    "tanh method": lambda e: a(e).tanh(),
    "relu of int": lambda e: e.relu(i(e) - 3),
    "relu of uint8": lambda e: e.relu(e.tensor([1, 254], dtype=e.uint8)),
    "add alpha": lambda e: e.add(a(e), a(e), alpha=2),
    "sub int alpha": lambda e: e.sub(i(e), 1, alpha=2),
    "mul": lambda e: e.mul(i(e), 1.5),
    "div int": lambda e: e.div(i(e), 2),
    "div floor": lambda e: e.div(e.tensor([-5, 5, 7]), 3, rounding_mode="floor"),
    "div trunc int": lambda e: e.div(e.tensor([-5, 5, 7]), 3, rounding_mode="trunc"),
    "div trunc float": lambda e: a(e).div(0.7, rounding_mode="trunc"),
    "pow": lambda e: e.pow(a(e), 2),
    "neg": lambda e: e.neg(i(e)),
    "floor": lambda e: e.floor(a(e) * 1.3),
    "ceil method": lambda e: (a(e) * 1.3).ceil(),
    "round halves to even": lambda e: e.round(e.tensor([0.5, 1.5, 2.5, -0.5, -1.5])),
    "round decimals": lambda e: e.tensor([1.2345, -2.5551]).round(decimals=2),
    "round int": lambda e: e.round(i(e)),
    "trunc": lambda e: e.trunc(a(e) * 1.3),
    "sign": lambda e: e.sign(e.tensor([-2.0, 0.0, 3.0])),
    "sign int": lambda e: (i(e) - 3).sign(),
    "sign bool": lambda e: e.sign(b(e)),
    "square": lambda e: e.square(a(e)),
    "square int32": lambda e: e.tensor([3], dtype=e.int32).square(),
    "square bool": lambda e: e.square(b(e)),
    "rsqrt int": lambda e: e.rsqrt(i(e)),
    "flip": lambda e: e.flip(i(e), (0, 1)),
    "flip method": lambda e: i(e).flip(-1),
    "maximum": lambda e: e.maximum(a(e), e.zeros(2, 3)),
    "maximum promotes": lambda e: e.maximum(i(e), a(e)),
    "minimum nan": lambda e: e.minimum(e.tensor([1.0, float("nan")]), e.tensor([0.0, 1.0])),
    "clamp": lambda e: e.clamp(a(e), -1, 1),
    "clip min": lambda e: e.clip(a(e), min=0.0),
    "clamp int by float": lambda e: i(e).clamp(1.5, 4.5),
    "floordiv int": lambda e: e.tensor([5, -5, 7, -7]) // e.tensor([3, 3, -2, -2]),
    "floordiv float": lambda e: e.tensor([5.5, -5.0, 0.0]) // 2,
    "floordiv float by 0": lambda e: e.tensor([5.0, -5.0]) // 0,
    "rfloordiv": lambda e: 7 // e.tensor([2, -3]),
    "mod int": lambda e: e.tensor([5, -5, 7, -7]) % e.tensor([3, 3, -2, -2]),
    "mod float": lambda e: e.tensor([5.5, -5.5]) % e.tensor([3.0, -2.0]),
    "rmod": lambda e: 7 % e.tensor([2, -3]),
    "remainder float by 0": lambda e: e.remainder(e.tensor([5.5, -5.0]), 0),
    "floor_divide": lambda e: e.floor_divide(i(e), 4),
    "and": lambda e: b(e) & e.tensor([True, True, False]),
    "or": lambda e: b(e) | e.tensor([True, False, False]),
    "xor": lambda e: b(e) ^ e.tensor([True, True, False]),
    "invert": lambda e: ~b(e),
    "and int": lambda e: i(e) & 3,
    "ndarray on the right": lambda e: a(e) + np.array([1.0, 2.0, 3.0]),
    # comparisons and tests
    "eq": lambda e: e.eq(a(e), 1.5),
    "ne": lambda e: i(e).ne(2),
    "lt": lambda e: e.lt(i(e), a(e)),
    "le": lambda e: a(e).le(0.5),
    "gt": lambda e: e.gt(a(e), e.zeros(3)),
    "ge": lambda e: i(e).ge(e.tensor([2, 2, 7])),
    "isclose": lambda e: e.isclose(a(e), a(e) + 1e-3),
    "isclose nan": lambda e: e.isclose(e.tensor([float("nan")]), e.tensor([float("nan")]),
                                       equal_nan=True),
    "allclose": lambda e: e.allclose(a(e), a(e) + 1e-7),
    "allclose false": lambda e: a(e).allclose(a(e) + 1e-3),
    "equal": lambda e: e.equal(a(e), a(e).clone()),
    "equal shapes differ": lambda e: e.equal(e.ones(2), e.ones(3)),
    "is_tensor": lambda e: (e.is_tensor(a(e)), e.is_tensor([1.0])),
    "is_floating_point": lambda e: (e.is_floating_point(i(e)), a(e).is_floating_point()),
    "numel": lambda e: (e.numel(a(e)), a(e).numel()),
    # orderings
    "sort": lambda e: e.sort(a(e), dim=1),
    "sort descending dim 0": lambda e: a(e).sort(0, descending=True),
    "sort stable ties": lambda e: e.sort(e.tensor([2, 1, 2, 1, 2]), stable=True),
    "sort stable ties descending": lambda e: e.tensor([2, 1, 2, 1]).sort(
        descending=True, stable=True),
    "sort nan": lambda e: e.sort(e.tensor([1.0, float("nan"), -1.0]), descending=True),
    "argsort": lambda e: e.argsort(a(e), dim=0, descending=True),
    "topk": lambda e: e.topk(e.tensor([3.0, 1.0, 2.0, 5.0]), 2),
    "topk smallest dim 0": lambda e: a(e).topk(1, dim=0, largest=False),
    # shapes
    "flatten": lambda e: e.flatten(e.ones(2, 3, 4), 1),
    "cat": lambda e: e.cat([a(e), a(e)], 1),
    "stack": lambda e: e.stack([a(e), a(e)], -1),
    "split int": lambda e: e.split(e.arange(5), 2),
    "split list": lambda e: e.arange(5).split([2, 3]),
    "chunk": lambda e: e.chunk(e.arange(5), 3),
    "chunk fewer": lambda e: e.arange(6).chunk(4),
    "where": lambda e: e.where(a(e) > 0, a(e), 0.0),
    "where condition only": lambda e: e.where(b(e)),
    "squeeze": lambda e: e.squeeze(e.ones(1, 2, 1)),
    "squeeze dim": lambda e: e.ones(1, 2, 1).squeeze(-1),
    "squeeze dims": lambda e: e.ones(1, 2, 1).squeeze((0, 1)),
    "unsqueeze": lambda e: e.unsqueeze(a(e), -1),
    "transpose": lambda e: e.transpose(a(e), 0, 1),
    "permute": lambda e: e.permute(e.ones(2, 3, 4), (2, 0, 1)),
    "reshape": lambda e: e.reshape(a(e), (3, 2)),
    "reshape -1": lambda e: a(e).reshape(-1),
    "gather": lambda e: e.gather(a(e), 1, e.tensor([[0, 0], [2, 1]])),
    "gather smaller index": lambda e: a(e).gather(0, e.tensor([[1]])),
    "gather int32 index": lambda e: a(e).gather(1, e.tensor([[2], [0]], dtype=e.int32)),
    "masked_fill": lambda e: a(e).masked_fill(a(e) > 0, 0.0),
    "masked_fill int by float": lambda e: i(e).masked_fill(b(e), 1.5),
    "masked_fill 0-d tensor": lambda e: a(e).masked_fill(b(e), e.tensor(7.0)),
    "masked_fill function": lambda e: e.masked_fill(a(e), e.tensor([True, False, True]), -1),
    "clone function": lambda e: e.clone(i(e)),
    "t function": lambda e: e.t(a(e)),
    "matmul": lambda e: e.matmul(a(e), a(e).t()),
    "mm": lambda e: e.mm(a(e), a(e).T),
    "bmm": lambda e: e.bmm(e.ones(2, 3, 4), e.ones(2, 4, 5)),
    "einsum": lambda e: e.einsum("ij,kj->ik", a(e), a(e)),
    "einsum implicit": lambda e: e.einsum("ij,jk", a(e), a(e).t()),
    "einsum ellipsis": lambda e: e.einsum("...ij,...jk->...ik", e.ones(2, 2, 3),
                                          e.ones(2, 3, 4)),
    "einsum sum": lambda e: e.einsum("ij->", a(e)),
    "einsum ellipsis of unequal ranks": lambda e: e.einsum(
        "...ij,...jk->...ik", e.arange(12.0).reshape(2, 2, 3), e.ones(3, 4)),
    "einsum implicit ellipsis": lambda e: e.einsum("...i,i", e.ones(2, 3), e.arange(3.0)),
    "einsum broadcasts size 1": lambda e: e.einsum("bij,bjk->bik", e.ones(1, 2, 3),
                                                   e.arange(60.0).reshape(4, 3, 5)),
    "einsum outer": lambda e: e.einsum("i,j->ij", e.tensor([1.0, 2.0]), e.arange(3.0)),
    "einsum list": lambda e: e.einsum("ij,j->i", [a(e), e.ones(3)]),
    "softmax": lambda e: e.softmax(a(e), 1),
    "log_softmax": lambda e: e.log_softmax(a(e), dim=0),
    "softmax method": lambda e: a(e).softmax(-1),
    "log_softmax method": lambda e: a(e).log_softmax(dim=-1),
    # Tensor methods
    "t": lambda e: a(e).t(),
    "t of 1-D": lambda e: e.arange(3).t(),
    "view_as": lambda e: e.arange(6).view_as(a(e)),
    "reshape_as": lambda e: e.arange(6).reshape_as(a(e)),
    "expand_as": lambda e: e.ones(1, 3).expand_as(a(e)),
    "contiguous": lambda e: a(e).t().contiguous(),
    "is_contiguous": lambda e: (a(e).is_contiguous(), a(e).t().is_contiguous(),
                                a(e).t().contiguous().is_contiguous()),
    "clone": lambda e: a(e).clone(),
    "long": lambda e: a(e).long(),
    "int": lambda e: a(e).int(),
    "bool": lambda e: a(e).bool(),
    "float": lambda e: i(e).float(),
    "double": lambda e: i(e).double(),
    "half": lambda e: a(e).half(),
    "type_as": lambda e: i(e).type_as(a(e)),
    "new_zeros": lambda e: i(e).new_zeros(2, 3),
    "new_ones tuple": lambda e: a(e).new_ones((2,)),
    "new_full": lambda e: a(e).new_full((2,), 3),
    "new_tensor": lambda e: a(e).new_tensor([1, 2]),
    "repeat": lambda e: a(e).repeat(2, 1, 2),
    "repeat same dims": lambda e: e.tensor([1, 2]).repeat(3),
    "item": lambda e: (a(e)[0, 0].item(), i(e).sum().item()),
    "tolist": lambda e: i(e).tolist(),
    "numpy": lambda e: i(e).numpy(),
    "size": lambda e: a(e).size(),
    "size dim": lambda e: (a(e).size(-1), a(e).size(0)),
    "shape": lambda e: a(e).shape,
    "shape slice": lambda e: e.ones(2, 3, 4).shape[1:],
    "Size numel": lambda e: e.ones(2, 3, 4).shape.numel(),
    "dim": lambda e: (a(e).dim(), a(e).ndim),
    "type(dtype)": lambda e: a(e).type(e.int64),
    "element_size": lambda e: (a(e).element_size(), a(e).half().element_size(),
                               b(e).element_size()),
    # factories and their default dtypes
    "tensor ints": lambda e: e.tensor([1, 2]),
    "tensor bools": lambda e: e.tensor([True]),
    "tensor float scalar": lambda e: e.tensor(1.5),
    "tensor mixed": lambda e: e.tensor([1, 2.5]),
    "zeros": lambda e: e.zeros(2, 3),
    "zeros tuple": lambda e: e.zeros((2, 3), dtype=e.int32),
    "ones": lambda e: e.ones(2, dtype=e.long),
    "full int": lambda e: e.full((2,), 1),
    "full bool": lambda e: e.full((2,), True),
    "full float": lambda e: e.full((2, 2), 1.5),
    "eye": lambda e: e.eye(3),
    "eye n m": lambda e: e.eye(2, 3, dtype=e.float64),
    "linspace": lambda e: e.linspace(0, 1, 5),
    "linspace odd": lambda e: e.linspace(-1.3, 2.9, 7, dtype=e.float64),
    "linspace one": lambda e: e.linspace(2, 3, 1),
    "logspace": lambda e: e.logspace(0, 2, 3),
    "logspace base": lambda e: e.logspace(0, 1, 3, base=2),
    "arange": lambda e: e.arange(5),
    "arange float": lambda e: e.arange(0, 1, 0.25),
    "arange step": lambda e: e.arange(1, 10, 3),
    "zeros_like int": lambda e: e.zeros_like(i(e)),
    "ones_like dtype": lambda e: e.ones_like(i(e), dtype=e.float64),
    "full_like": lambda e: e.full_like(i(e), 7),
    "as_tensor": lambda e: e.as_tensor([1.0, 2.0], dtype=e.float64),
    "from_numpy": lambda e: e.from_numpy(np.arange(3, dtype=np.int32)),
    "requires_grad": lambda e: e.zeros(2, requires_grad=True).requires_grad,
    "device cpu": lambda e: e.ones(2, device="cpu"),
    "device None": lambda e: e.empty(2, device=None).shape,
}

RANDOM_CASES = {     # values differ between engines: shapes, dtypes and ranges agree
    "empty": lambda e: e.empty(2, 3),
    "empty int": lambda e: e.empty((2,), dtype=e.int64),
    "empty_like": lambda e: e.empty_like(i(e)),
    "rand": lambda e: e.rand(2, 3),
    "randn tuple": lambda e: e.randn((2, 3), dtype=e.float64),
    "rand_like": lambda e: e.rand_like(a(e)),
    "randn_like": lambda e: e.randn_like(a(e)),
    "randint": lambda e: e.randint(0, 10, (3, 4)),
    "randint high only": lambda e: e.randint(5, (3,)),
    "randint size=": lambda e: e.randint(2, 5, size=(2,), dtype=e.int32),
    "randint_like": lambda e: e.randint_like(i(e), 5),
    "randperm": lambda e: e.randperm(6),
    "normal": lambda e: e.normal(2.0, 3.0, (4,)),
    "normal tensors": lambda e: e.normal(e.zeros(2, 3), e.ones(3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_as_torch(name):
    assert_same(CASES[name](tinyres), CASES[name](torch))


@pytest.mark.parametrize("name", list(RANDOM_CASES))
def test_random_factories_match_torch_in_shape_and_dtype(name):
    tinyres.manual_seed(0)
    assert_same(RANDOM_CASES[name](tinyres), RANDOM_CASES[name](torch), meta_only=True)


def test_random_factories_draw_from_their_ranges():
    tinyres.manual_seed(0)
    assert set(tinyres.randint(2, 5, (1000,)).tolist()) == {2, 3, 4}
    assert sorted(tinyres.randperm(50).tolist()) == list(range(50))
    x = tinyres.normal(2.0, 3.0, (20000,), dtype=tinyres.float64)
    assert abs(float(x.mean()) - 2.0) < 0.1 and abs(float(x.std()) - 3.0) < 0.1
    y = tinyres.normal(tinyres.tensor([0.0, 100.0]), tinyres.tensor([1e-6, 1e-6]))
    np.testing.assert_allclose(y.numpy(), [0.0, 100.0], atol=1e-3)


ERRORS = {   # the same exception class in both engines
    "mean of int": lambda e: i(e).mean(),
    "var of int": lambda e: i(e).var(),
    "std of int": lambda e: e.std(i(e)),
    "norm of int": lambda e: i(e).norm(),
    "expand to a wrong size": lambda e: e.ones(2, 3).expand(3, 3),
    "expand to fewer dims": lambda e: e.ones(2, 3).expand(3),
    "permute duplicates": lambda e: e.ones(2, 3).permute(0, 0),
    "permute too short": lambda e: e.ones(2, 3).permute(0),
    "matmul sizes": lambda e: e.matmul(e.ones(2, 3), e.ones(4, 5)),
    "matmul dtypes": lambda e: e.matmul(e.ones(2, 3), e.ones(3, 2, dtype=e.float64)),
    "mm of vectors": lambda e: e.mm(e.ones(3), e.ones(3)),
    "bmm of matrices": lambda e: e.bmm(e.ones(2, 3), e.ones(3, 2)),
    "split sizes": lambda e: e.arange(5).split([2, 2]),
    "chunk 0": lambda e: e.arange(5).chunk(0),
    "topk k too large": lambda e: e.topk(e.ones(3), 4),
    "gather float index": lambda e: e.gather(a(e), 1, e.tensor([[0.0]])),
    "gather out of range": lambda e: e.gather(a(e), 1, e.tensor([[3]])),
    "gather dims": lambda e: e.gather(a(e), 1, e.tensor([0])),
    "isclose dtypes": lambda e: e.isclose(i(e), a(e)),
    "masked_fill int mask": lambda e: a(e).masked_fill(i(e), 0.0),
    "int // 0": lambda e: i(e) // 0,
    "int % 0": lambda e: i(e) % 0,
    "bool // bool": lambda e: b(e) // b(e),
    "float & float": lambda e: a(e) & a(e),
    "normal_ of int": lambda e: i(e).normal_(),
    "uniform_ of int": lambda e: i(e).uniform_(),
    "relu of bool": lambda e: e.relu(b(e)),
    "bool - bool": lambda e: b(e) - b(e),
    "-bool": lambda e: -b(e),
    "sum dim out of range": lambda e: a(e).sum(2),
    "max dim out of range": lambda e: e.max(a(e), 3),
    "max of empty": lambda e: e.max(e.ones(0)),
    "argmax of empty": lambda e: e.argmax(e.ones(0)),
    "squeeze dim out of range": lambda e: a(e).squeeze(5),
    "randint high <= low": lambda e: e.randint(3, 3, (2,)),
    "set_default_dtype int": lambda e: e.set_default_dtype(e.int64),
    "requires_grad on an int tensor": lambda e: e.ones(2, dtype=e.int64, requires_grad=True),
    "t of 3-D": lambda e: e.ones(2, 2, 2).t(),
    "repeat fewer dims": lambda e: a(e).repeat(2),
    "item of many": lambda e: a(e).item(),
    "randn of int": lambda e: e.randn(2, dtype=e.int64),
    "rand of int": lambda e: e.rand(2, dtype=e.int32),
    "t function of 3-D": lambda e: e.t(e.ones(2, 2, 2)),
    "masked_fill function, 1-D value": lambda e: e.masked_fill(a(e), b(e), e.ones(2)),
    "einsum operand count": lambda e: e.einsum("ij,jk->ik", a(e)),
    "einsum sizes": lambda e: e.einsum("ij,jk->ik", a(e), a(e)),
    "clamp without bounds": lambda e: e.clamp(a(e)),
    "div rounding mode": lambda e: e.div(a(e), 2, rounding_mode="round"),
    "maximum with a number": lambda e: e.maximum(a(e), 1.0),
    "floor_divide backward": lambda e: (e.tensor([1.5], requires_grad=True) // 2).sum()
    .backward(),
    "broadcast mismatch": lambda e: e.ones(3, 4) + e.ones(3, 5),
    "abs of bool": lambda e: e.abs(b(e)),
    "floor of bool": lambda e: e.floor(b(e)),
    "flip with an int": lambda e: e.flip(a(e), 0),
    "flip twice": lambda e: e.flip(a(e), (0, 0)),
    "amax of empty": lambda e: e.amax(e.ones(0, 3), 0),
    "linalg.norm ord of 3-D": lambda e: e.linalg.norm(e.ones(2, 2, 2), "fro"),
    "invert of float": lambda e: ~a(e),
    "sum over a dim twice": lambda e: a(e).sum((0, 0)),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_as_torch(name):
    with pytest.raises(Exception) as theirs:
        ERRORS[name](torch)
    with pytest.raises(Exception) as ours:
        ERRORS[name](tinyres)
    assert ours.type is theirs.type, (ours.value, theirs.value)
    assert str(ours.value)


# ----- hypothesis: shape-generic reductions, split/chunk, sort/topk --------------------
@st.composite
def array_and_dim(draw, min_size=1):
    shape = tuple(draw(st.lists(st.integers(min_size, 4), min_size=1, max_size=3)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).standard_normal(shape), dim


REDUCTIONS = {
    "sum": lambda e, x, d, k: e.sum(x, d, keepdim=k),
    "mean": lambda e, x, d, k: x.mean(d, keepdim=k),
    "var": lambda e, x, d, k: e.var(x, d, keepdim=k),
    "std": lambda e, x, d, k: x.std(d, keepdim=k, correction=0),
    "prod": lambda e, x, d, k: e.prod(x, d, keepdim=k),
    "max": lambda e, x, d, k: e.max(x, d, keepdim=k),
    "min": lambda e, x, d, k: x.min(d, k),
    "argmax": lambda e, x, d, k: e.argmax(x, d, keepdim=k),
    "argmin": lambda e, x, d, k: x.argmin(d, keepdim=k),
    "all": lambda e, x, d, k: e.all(x > 0, d, keepdim=k),
    "any": lambda e, x, d, k: (x > 0).any(d, keepdim=k),
    "norm": lambda e, x, d, k: e.norm(x, dim=d, keepdim=k),
    "norm 1": lambda e, x, d, k: x.norm(1, d, k),
    "cumsum": lambda e, x, d, k: e.cumsum(x, d),
    "softmax": lambda e, x, d, k: e.softmax(x, d),
    "sum two dims": lambda e, x, d, k: x.sum((d, 0) if d % x.ndim else d, keepdim=k),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=array_and_dim(), keepdim=st.booleans())
def test_reductions_over_drawn_dims(name, case, keepdim):
    array, dim = case
    ours = REDUCTIONS[name](tinyres, tinyres.tensor(array), dim, keepdim)
    theirs = REDUCTIONS[name](torch, torch.tensor(array), dim, keepdim)
    assert_same(ours, theirs)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 9), size=st.integers(1, 10), chunks=st.integers(1, 10),
       sections=st.lists(st.integers(0, 4), min_size=1, max_size=4))
def test_split_and_chunk_sizes(n, size, chunks, sections):
    ours, theirs = tinyres.arange(n * 2).reshape(2, n), torch.arange(n * 2).reshape(2, n)
    assert_same(ours.split(size, 1), theirs.split(size, 1))
    assert_same(tinyres.chunk(ours, chunks, dim=-1), torch.chunk(theirs, chunks, dim=-1))
    sections = sections[:-1] + [max(n - builtins.sum(sections[:-1]), 0)]
    if builtins.sum(sections) == n:
        assert_same(tinyres.split(ours, sections, 1), torch.split(theirs, sections, 1))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=array_and_dim(), few=st.booleans(), descending=st.booleans(), data=st.data())
def test_sort_and_topk_as_torch(case, few, descending, data):
    """With few distinct values there are ties: stable sort's indices still agree; topk's
    indices are compared only where the values are all distinct."""
    array, dim = case
    if few:
        array = np.round(array)          # ties
    ours, theirs = tinyres.tensor(array), torch.tensor(array)
    assert_same(tinyres.sort(ours, dim, descending, stable=True),
                torch.sort(theirs, dim=dim, descending=descending, stable=True))
    assert_same(ours.argsort(dim=dim, descending=descending, stable=True),
                theirs.argsort(dim=dim, descending=descending, stable=True))
    k = data.draw(st.integers(0, array.shape[dim]), label="k")
    mine = tinyres.topk(ours, k, dim, largest=not descending)
    ref = torch.topk(theirs, k, dim, largest=not descending)
    assert_same(mine.values, ref.values)
    if len(np.unique(array)) == array.size:
        assert_same(mine.indices, ref.indices)


# ----- gradients of the new differentiable ops, in float64 -----------------------------
def f64(*shape, seed=0, positive=False):
    x = np.random.default_rng(seed).standard_normal(shape)
    return tinyres.tensor(np.abs(x) + 0.5 if positive else x, requires_grad=True)


def f64_t(*shape, seed=0):
    """A non-contiguous float64 leaf: the transpose of a drawn array."""
    x = np.random.default_rng(seed).standard_normal(shape[::-1]).T
    assert not x.flags.c_contiguous
    return tinyres.Tensor(x, requires_grad=True)


GRADCHECKS = {
    "prod": (lambda x: tinyres.prod(x), [f64(2, 3)]),
    "prod dim": (lambda x: x.prod(1, keepdim=True), [f64(2, 3)]),
    "prod with a zero": (lambda x: (x * tinyres.tensor([1.0, 0.0, 1.0], dtype=tinyres.float64))
                         .prod(-1), [f64(2, 3)]),
    "cumsum": (lambda x: tinyres.cumsum(x, 0), [f64(3, 2)]),
    "maximum": (lambda x, y: tinyres.maximum(x, y), [f64(2, 3), f64(3, seed=1)]),
    "minimum": (lambda x, y: tinyres.minimum(x, y), [f64(2, 3), f64(2, 1, seed=1)]),
    "max with a tensor": (lambda x, y: tinyres.max(x, y), [f64(2, 3), f64(2, 3, seed=1)]),
    "remainder": (lambda x, y: tinyres.remainder(x, y), [f64(2, 3), f64(3, seed=1,
                                                                      positive=True)]),
    "mod by a number": (lambda x: x % 0.7, [f64(2, 3)]),
    "std": (lambda x: tinyres.std(x, 1), [f64(3, 4)]),
    "var correction 0": (lambda x: x.var(0, correction=0, keepdim=True), [f64(3, 4)]),
    "norm": (lambda x: x.norm(), [f64(3, 4)]),
    "norm dim": (lambda x: tinyres.norm(x, dim=1, keepdim=True), [f64(3, 4)]),
    "norm 1": (lambda x: x.norm(p=1, dim=0), [f64(3, 4)]),
    "norm 3": (lambda x: x.norm(p=3), [f64(3, 4)]),
    "norm inf": (lambda x: x.norm(p=float("inf"), dim=1), [f64(3, 4)]),
    "linalg.norm fro": (lambda x: tinyres.linalg.norm(x, "fro"), [f64(3, 4)]),
    "amax": (lambda x: tinyres.amax(x, 1), [f64(3, 4)]),
    "amin dims": (lambda x: x.amin((0, 1), keepdim=True), [f64(3, 4)]),
    "logsumexp": (lambda x: tinyres.logsumexp(x, (0, 1)), [f64(3, 4)]),
    "logsumexp keepdim": (lambda x: x.logsumexp(1, keepdim=True), [f64(3, 4)]),
    "flip": (lambda x: tinyres.flip(x, (0, 1)), [f64(3, 4)]),
    "square": (lambda x: tinyres.square(x), [f64(3, 4)]),
    "rsqrt": (lambda x: x.rsqrt(), [f64(3, 4, positive=True)]),
    "floor (zero)": (lambda x: (x * 3.3).floor() + x, [f64(3, 4)]),
    "round (zero)": (lambda x: (x * 3.3).round() * x, [f64(3, 4)]),
    "sort values": (lambda x: tinyres.sort(x, 1, descending=True).values, [f64(3, 4)]),
    "topk values": (lambda x: x.topk(2, dim=0).values, [f64(3, 4)]),
    "gather": (lambda x: tinyres.gather(x, 1, tinyres.tensor([[0, 0, 2], [1, 2, 2]])),
               [f64(2, 3)]),
    "einsum": (lambda x, y: tinyres.einsum("ij,jk->ik", x, y), [f64(2, 3), f64(3, 4, seed=1)]),
    "einsum summed-out letter": (lambda x, y: tinyres.einsum("ij,k->ik", x, y),
                                 [f64(2, 3), f64(4, seed=1)]),
    "einsum ellipsis": (lambda x, y: tinyres.einsum("...ij,...j", x, y),
                        [f64(2, 3, 4), f64(2, 4, seed=1)]),
    "einsum broadcast": (lambda x, y: tinyres.einsum("bij,bjk->bik", x, y),
                         [f64(1, 2, 3), f64(4, 3, 2, seed=1)]),
    "einsum broadcast, summed": (lambda x, y: tinyres.einsum("bj,bk->k", x, y),
                                 [f64(3, 1), f64(1, 2, seed=1)]),
    "repeat": (lambda x: x.repeat(2, 1, 3), [f64(2, 3)]),
    "split": (lambda x: tinyres.split(x, [1, 2], dim=1), [f64(2, 3)]),
    "chunk": (lambda x: x.chunk(2, 0), [f64(3, 2)]),
    "sigmoid": (lambda x: tinyres.sigmoid(x), [f64(2, 3)]),
    "tanh": (lambda x: x.tanh(), [f64(2, 3)]),
    "masked_fill": (lambda x: x.masked_fill(tinyres.tensor(B), 2.0), [f64(2, 3)]),
    "mm": (lambda x, y: tinyres.mm(x, y), [f64(2, 3), f64(3, 2, seed=1)]),
    "bmm": (lambda x, y: x.bmm(y), [f64(2, 2, 3), f64(2, 3, 2, seed=1)]),
    "add alpha": (lambda x, y: tinyres.add(x, y, alpha=3), [f64(2, 3), f64(3, seed=1)]),
    "expand_as": (lambda x: x.expand_as(tinyres.ones(4, 3)), [f64(1, 3)]),
    "contiguous": (lambda x: x.t().contiguous(), [f64(2, 3)]),
    "div floor (zero)": (lambda x: tinyres.div(x, 0.3, rounding_mode="floor"), [f64(2, 3)]),
    "prod, non-contiguous": (lambda x: x.prod(0), [f64_t(3, 4)]),
    "cumsum, non-contiguous": (lambda x: x.cumsum(1), [f64_t(3, 4)]),
    "gather, non-contiguous": (lambda x: x.gather(0, tinyres.tensor([[2, 0, 1, 1]])),
                               [f64_t(3, 4)]),
    "sort, non-contiguous": (lambda x: x.sort(0).values, [f64_t(3, 4)]),
    "einsum, non-contiguous": (lambda x, y: tinyres.einsum("ij,jk", x, y),
                               [f64_t(3, 4), f64_t(4, 2, seed=1)]),
    "norm, non-contiguous": (lambda x: x.norm(dim=0), [f64_t(3, 4)]),
    "type_as": (lambda x: x.type_as(tinyres.ones(1, dtype=tinyres.float64)) * x, [f64(2)]),
}


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_gradcheck(name):
    fn, inputs = GRADCHECKS[name]
    assert tinyres.gradcheck(fn, inputs)


GRADIENT_PARITY = {   # where the derivative needs a convention: ties, zeros, NaN-free kinks
    "maximum ties": (lambda e, x, y: e.maximum(x, y), [[1.0, 2.0, 3.0], [1.0, 5.0, 3.0]]),
    "minimum ties": (lambda e, x, y: e.minimum(x, y), [[1.0, 2.0, -3.0], [1.0, 5.0, 3.0]]),
    "prod with zeros": (lambda e, x: e.prod(x, 1), [[[0.0, 2.0, 3.0], [0.0, 0.0, 1.5]]]),
    "prod of all": (lambda e, x: x.prod(), [[[2.0, 0.0], [3.0, 4.0]]]),
    "norm at zero": (lambda e, x: e.norm(x, dim=1), [[[0.0, 0.0], [3.0, 4.0]]]),
    "remainder": (lambda e, x, y: e.remainder(x, y), [[5.5, -5.5, 1.0], [2.0, 2.0, -3.0]]),
    "div trunc": (lambda e, x, y: e.div(x, y, rounding_mode="trunc"), [[5.5, -5.5],
                                                                         [2.0, 2.0]]),
    "sort ties": (lambda e, x: e.sort(x, stable=True).values, [[2.0, 1.0, 2.0]]),
    "cumsum": (lambda e, x: e.cumsum(x, 0), [[1.0, 2.0, 3.0]]),
    "std": (lambda e, x: e.std(x), [[1.0, 2.0, 4.0]]),
    "amax ties": (lambda e, x: e.amax(x, 1), [[[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]]),
    "logsumexp": (lambda e, x: e.logsumexp(x, 0), [[[1.0, 3.0, 3.0], [2.0, -2.0, 2.0]]]),
    "sign": (lambda e, x: e.sign(x), [[1.0, 0.0, -3.0]]),
}


@pytest.mark.parametrize("name", list(GRADIENT_PARITY))
def test_gradients_at_ties_and_zeros_as_torch(name):
    fn, values = GRADIENT_PARITY[name]
    grads = []
    for e in (tinyres, torch):
        inputs = [e.tensor(np.array(v, dtype=np.float64), requires_grad=True) for v in values]
        out = fn(e, *inputs)
        weights = np.random.default_rng(3).standard_normal(tuple(out.shape))
        out.backward(e.tensor(weights))
        grads.append([as_numpy(t.grad) for t in inputs])
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


# ----- dtypes, Size, the default dtype -------------------------------------------------
DTYPE_NAMES = ["float32", "float", "float64", "double", "float16", "half", "int64", "long",
               "int32", "int", "int16", "int8", "uint8", "bool"]


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_dtype_names_as_torch(name):
    ours = tinyres.zeros(2, dtype=getattr(tinyres, name))
    theirs = torch.zeros(2, dtype=getattr(torch, name))
    assert dtype_name(ours) == dtype_name(theirs)
    assert ours.dtype == getattr(tinyres, name)
    assert (ours.dtype == tinyres.float64) == (theirs.dtype == torch.float64)


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_legacy_type_names_as_torch(name):
    ours = tinyres.zeros(2, dtype=getattr(tinyres, name)).type()
    assert ours == torch.zeros(2, dtype=getattr(torch, name)).type().replace("torch", "tinyres")


def test_dtype_names_leave_python_builtins_alone_inside_tinyres():
    import tinyres.functional.math as fmath
    import tinyres.tensor as ttensor
    for module in (ttensor, fmath):
        for name in ("float", "int", "bool"):
            assert name not in vars(module)
    assert tinyres.float is np.float32 and tinyres.int is np.int32
    assert builtins.float(tinyres.tensor(2.5)) == 2.5


def test_size_is_a_tuple_that_prints_like_torch():
    ours, theirs = tinyres.ones(2, 3).shape, torch.ones(2, 3).shape
    assert isinstance(ours, tuple) and ours == (2, 3) == theirs
    assert repr(ours) == repr(theirs).replace("torch", "tinyres")
    assert type(ours[1:]) is tinyres.Size and ours[1:] == (3,)
    assert type(ours + (4,)) is tinyres.Size and ours.numel() == theirs.numel() == 6
    assert tinyres.ones(2, 3).size() == ours and tinyres.ones(2, 3).size(-1) == 3


def test_default_dtype_follows_set_default_dtype():
    assert tinyres.get_default_dtype() == tinyres.float32
    try:
        tinyres.set_default_dtype(tinyres.float64)
        torch.set_default_dtype(torch.float64)
        for make in (lambda e: e.tensor(1.5), lambda e: e.zeros(2), lambda e: e.arange(0.5),
                     lambda e: e.tensor([1, 2]) * 2.5, lambda e: e.linspace(0, 1, 3),
                     lambda e: e.tensor([1, 2]) / 2, lambda e: e.full((2,), 0.5),
                     lambda e: e.nn.Linear(2, 3).weight, lambda e: e.nn.Conv2d(1, 2, 3).bias):
            assert dtype_name(make(tinyres)) == dtype_name(make(torch)) == "float64"
        assert tinyres.get_default_dtype() == tinyres.float64
    finally:
        tinyres.set_default_dtype(tinyres.float32)
        torch.set_default_dtype(torch.float32)
    assert tinyres.tensor(1.5).dtype == tinyres.float32


# ----- in-place random fills, numpy operands -------------------------------------------
@pytest.mark.parametrize("fill", ["normal_", "uniform_"])
def test_random_fills_are_in_place_writes(fill):
    tinyres.manual_seed(0)
    x = tinyres.zeros(4000, dtype=tinyres.float64)
    before = x._version
    assert getattr(x, fill)() is x and x._version == before + 1
    values = x.numpy()
    if fill == "normal_":
        assert abs(values.mean()) < 0.1 and abs(values.std() - 1) < 0.1
    else:
        assert values.min() >= 0 and values.max() < 1 and abs(values.mean() - 0.5) < 0.05
    assert getattr(tinyres.zeros(3), fill)(5.0, 5.0 if fill == "normal_" else 6.0).min() >= 0


@pytest.mark.parametrize("fill", ["normal_", "uniform_"])
def test_random_fills_follow_the_in_place_rules(fill):
    for e in (tinyres, torch):
        w = e.zeros(3, requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            getattr(w, fill)()
        with e.no_grad():
            getattr(w, fill)()
        assert w.requires_grad and w.is_leaf and bool((w != 0).all())
    x = tinyres.ones(3, dtype=tinyres.float64, requires_grad=True)
    y = x * 2
    getattr(y, fill)()
    (y * x).sum().backward()          # the drawn values pass no gradient back through y
    np.testing.assert_allclose(x.grad.numpy(), y.detach().numpy())


IN_PLACE = {
    "//=": lambda x: x.__ifloordiv__(2),
    "%=": lambda x: x.__imod__(3),
    "&=": lambda x: x.__iand__(6),
    "|=": lambda x: x.__ior__(1),
    "^=": lambda x: x.__ixor__(5),
    "masked_fill_": lambda x: x.masked_fill_(x > 0, -1),
}


@pytest.mark.parametrize("name", list(IN_PLACE))
def test_in_place_operators_write_through_aliases(name):
    results = []
    for e in (tinyres, torch):
        x = e.tensor([5, -5, 7, 0])
        alias = x[:]
        before = x._version
        assert IN_PLACE[name](x) is x
        assert x._version > before
        results.append((x, alias))
    assert_same(results[0][0], results[1][0])
    assert_same(results[0][1], results[1][1])


def test_masked_fill_in_place_is_differentiable_as_torch():
    grads = []
    for e in (tinyres, torch):
        x = e.tensor([1.0, -2.0, 3.0], dtype=e.float64, requires_grad=True)
        y = x * 2
        y.masked_fill_(e.tensor([False, True, False]), 0.5)
        (y * e.tensor([1.0, 2.0, 3.0], dtype=e.float64)).sum().backward()
        grads.append(as_numpy(x.grad))
    np.testing.assert_array_equal(*grads)


def test_ndarray_with_a_tensor_gives_a_tensor():
    """torch 2.13 with NumPy 2 raises TypeError for ndarray + Tensor (ndarray first), and
    gives a tensor the other way round; tinyres gives the tensor both ways."""
    x = tinyres.tensor([1.0, 2.0])
    for out in (np.array([1.0, 2.0]) + x, x + np.array([1.0, 2.0]), np.ones(2) * x,
                np.ones(2) - x, np.float64(3.0) * x):
        assert isinstance(out, tinyres.Tensor)
    assert (np.array([1.0, 2.0]) + x).dtype == tinyres.float64    # the array's dtype
    assert isinstance(np.array([0.0, 5.0]) < x, tinyres.Tensor)
    assert (np.array([0.0, 5.0]) < x).tolist() == [True, False]
    assert_same(x + np.array([1.0, 2.0]), torch.tensor([1.0, 2.0]) + np.array([1.0, 2.0]))


# ----- hypothesis: binary ops over drawn dtypes and broadcast shapes -------------------
DTYPES = ["bool", "uint8", "int32", "int64", "float32", "float64"]
BINARY = {
    "add": lambda e, x, y: x + y, "sub": lambda e, x, y: e.sub(x, y),
    "mul": lambda e, x, y: x * y, "div": lambda e, x, y: x / y,
    "floordiv": lambda e, x, y: x // y, "mod": lambda e, x, y: x % y,
    "maximum": lambda e, x, y: e.maximum(x, y), "minimum": lambda e, x, y: e.minimum(x, y),
    "lt": lambda e, x, y: x < y, "eq": lambda e, x, y: e.eq(x, y),
    "and": lambda e, x, y: x & y, "where": lambda e, x, y: e.where(x > 1, x, y),
}


def outcome(e, name, x, y):
    try:
        return BINARY[name](e, x, y)
    except Exception as err:          # the kind of error is compared
        return type(err)


@pytest.mark.parametrize("name", list(BINARY))
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(dtypes=st.tuples(st.sampled_from(DTYPES), st.sampled_from(DTYPES)),
       shapes=st.sampled_from([((2, 3), (3,)), ((2, 1), (1, 3)), ((3,), ()), ((), ())]),
       seed=st.integers(0, 2**16))
def test_binary_ops_over_dtypes_as_torch(name, dtypes, shapes, seed):
    rng = np.random.default_rng(seed)
    arrays = [(rng.integers(-3, 6, shape) if np.dtype(d).kind != "b"
               else rng.integers(0, 2, shape)).astype(d) for d, shape in zip(dtypes, shapes)]
    if np.dtype(dtypes[0]).kind == "f":
        arrays[0] = arrays[0] + rng.random(shapes[0]).astype(dtypes[0])
    ours = outcome(tinyres, name, *[tinyres.tensor(x) for x in arrays])
    theirs = outcome(torch, name, *[torch.tensor(x) for x in arrays])
    if isinstance(theirs, type):
        assert ours is theirs, (ours, theirs)
    else:
        assert_same(ours, theirs)


# ----- set_num_threads / get_num_threads ------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_refuses_what_torch_refuses(bad):
    with pytest.raises(RuntimeError) as theirs:
        torch.set_num_threads(bad)
    with pytest.raises(RuntimeError) as ours:
        tinyres.set_num_threads(bad)
    assert str(ours.value) == str(theirs.value)


def test_set_num_threads_limits_numba_and_the_blas():
    import numba
    from threadpoolctl import threadpool_info
    before = tinyres.get_num_threads()
    try:
        tinyres.set_num_threads(np.int64(1))
        assert tinyres.get_num_threads() == 1 and numba.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info()
                   if pool["user_api"] == "blas")
    finally:
        tinyres.set_num_threads(before)
    assert tinyres.get_num_threads() == before
