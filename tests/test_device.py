"""Devices as torch spells them: tinyres.device, Tensor.device/.to/.cuda/.cpu, Module.to,
the device= argument of the factories, tinyres.cuda and tinyres.backends.cudnn. Each case
runs the same code through torch and tinyres (on the CPU: there is no GPU here, so the
CUDA paths are checked for their errors, and for the mixed-device refusal through arrays
that say they live on a GPU)."""
import numpy as np
import pytest

import tinyres
from tinyres import backend

torch = pytest.importorskip("torch")

DEVICE_ARGS = [("cpu",), ("cuda",), ("cuda:0",), ("cuda:1",), ("cpu:0",), ("cuda", 1),
               ("cuda", 0), ("cpu", 3), ("cuda:12",)]
BAD_DEVICE_ARGS = [("tpu",), ("CUDA",), ("cuda:x",), ("cuda:-1",), ("cuda:01",),
                   ("cuda:1", 1), ("cuda", -1), (1.5,), (None,), ("cuda", "x")]


# ----- tinyres.device --------------------------------------------------------------------
@pytest.mark.parametrize("args", DEVICE_ARGS)
def test_device_type_index_str_repr_as_torch(args):
    ours, theirs = tinyres.device(*args), torch.device(*args)
    assert (ours.type, ours.index) == (theirs.type, theirs.index)
    assert str(ours) == str(theirs) and repr(ours) == repr(theirs)
    assert tinyres.device(ours) == ours and hash(tinyres.device(str(ours))) == hash(ours)


@pytest.mark.parametrize("args", BAD_DEVICE_ARGS)
def test_bad_devices_raise_what_torch_raises(args):
    with pytest.raises(Exception) as theirs:
        torch.device(*args)
    with pytest.raises(theirs.type):
        tinyres.device(*args)


@pytest.mark.parametrize("a, b", [("cpu", "cpu"), ("cuda", "cuda:0"), ("cuda:0", "cuda:1"),
                                  ("cuda:1", "cuda:1"), ("cpu", "cpu:0"), ("cpu", "cuda")])
def test_device_equality_as_torch(a, b):
    assert (tinyres.device(a) == tinyres.device(b)) == (torch.device(a) == torch.device(b))
    assert (tinyres.device(a) != tinyres.device(b)) == (torch.device(a) != torch.device(b))
    # never equal to a string, as torch.device('cpu') == 'cpu' is False
    assert (tinyres.device(a) == b) == (torch.device(a) == b) is False


def test_device_is_immutable_and_a_dict_key():
    d = tinyres.device("cuda:1")
    with pytest.raises(AttributeError):
        d.type = "cpu"
    assert {d: 1}[tinyres.device("cuda", 1)] == 1 and tinyres.device("cuda:0") not in {d: 1}


def test_int_device_is_the_accelerator_and_refused_without_one():
    if tinyres.cuda.is_available():
        assert tinyres.device(0) == tinyres.device("cuda:0")
    with pytest.raises(RuntimeError, match="Device index must not be negative"):
        tinyres.device("cuda", -1)
    if not torch.cuda.is_available() and not tinyres.cuda.is_available():
        with pytest.raises(RuntimeError) as theirs:
            torch.device(0)
        with pytest.raises(RuntimeError, match=str(theirs.value)):
            tinyres.device(0)


# ----- tensors ---------------------------------------------------------------------------
def test_tensor_device_is_a_device():
    x = tinyres.zeros(2)
    assert isinstance(x.device, tinyres.device) and x.device == tinyres.device("cpu")
    assert x.device.type == torch.zeros(2).device.type and x.device.index is None
    assert x.is_cuda is torch.zeros(2).is_cuda is False
    assert x.get_device() == torch.zeros(2).get_device() == -1


FACTORIES = [
    ("tensor", lambda m, d: m.tensor([1.0, 2.0], device=d)),
    ("zeros", lambda m, d: m.zeros(2, 3, device=d)),
    ("ones", lambda m, d: m.ones((2,), device=d)),
    ("full", lambda m, d: m.full((2,), 1.5, device=d)),
    ("randn", lambda m, d: m.randn(2, device=d)),
    ("rand", lambda m, d: m.rand(2, device=d)),
    ("arange", lambda m, d: m.arange(4, device=d)),
    ("zeros_like", lambda m, d: m.zeros_like(m.ones(2), device=d)),
    ("ones_like", lambda m, d: m.ones_like(m.ones(2), device=d)),
    ("full_like", lambda m, d: m.full_like(m.ones(2), 3.0, device=d)),
    ("randn_like", lambda m, d: m.randn_like(m.ones(2), device=d)),
    ("rand_like", lambda m, d: m.rand_like(m.ones(2), device=d)),
]


@pytest.mark.parametrize("name, make", FACTORIES, ids=[f[0] for f in FACTORIES])
@pytest.mark.parametrize("spelling", [None, "cpu", "device"])
def test_factories_accept_device(name, make, spelling):
    ours = make(tinyres, tinyres.device("cpu") if spelling == "device" else spelling)
    theirs = make(torch, torch.device("cpu") if spelling == "device" else spelling)
    assert str(ours.device) == str(theirs.device) == "cpu"
    assert ours.shape == tuple(theirs.shape)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")


@pytest.mark.parametrize("name, make", FACTORIES, ids=[f[0] for f in FACTORIES])
def test_factories_refuse_unknown_devices_as_torch(name, make):
    with pytest.raises(RuntimeError):
        make(torch, "tpu")
    with pytest.raises(RuntimeError, match="tpu"):
        make(tinyres, "tpu")


LAYERS = [lambda m, d: m.nn.Linear(2, 3, device=d), lambda m, d: m.nn.Conv2d(1, 2, 3, device=d),
          lambda m, d: m.nn.BatchNorm2d(3, device=d)]


@pytest.mark.parametrize("make", LAYERS, ids=["Linear", "Conv2d", "BatchNorm2d"])
def test_layers_accept_device(make):
    for spelling in (None, "cpu", "device"):
        ours = make(tinyres, tinyres.device("cpu") if spelling == "device" else spelling)
        theirs = make(torch, torch.device("cpu") if spelling == "device" else spelling)
        for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert str(a.device) == str(b.device) == "cpu", name
    with pytest.raises(RuntimeError):
        make(torch, "tpu")
    with pytest.raises(RuntimeError, match="tpu"):
        make(tinyres, "tpu")


def test_new_array_is_the_factory_helper():
    a = backend.new_array(None, lambda xp: xp.full((2, 2), 7, dtype=np.int16))
    assert type(a) is np.ndarray and a.dtype == np.int16 and (a == 7).all()
    assert backend.resolve_device(None) == backend.resolve_device("cpu") == tinyres.device("cpu")


def _both(value):
    return tinyres.tensor(value), torch.tensor(value)


TO_CALLS = [
    ("dtype", lambda m, x: x.to(m.float64)),
    ("device", lambda m, x: x.to("cpu")),
    ("device object", lambda m, x: x.to(m.device("cpu"))),
    ("device, dtype", lambda m, x: x.to("cpu", m.float64)),
    ("keywords", lambda m, x: x.to(device="cpu", dtype=m.int64)),
    ("other", lambda m, x: x.to(m.tensor([1], dtype=m.int64))),
    ("dtype copy", lambda m, x: x.to(m.float32, copy=True)),
    ("device copy", lambda m, x: x.to("cpu", copy=True)),
    ("device non_blocking", lambda m, x: x.to("cpu", non_blocking=True)),
    ("same dtype", lambda m, x: x.to(m.float32)),
    ("cpu", lambda m, x: x.cpu()),
]


@pytest.mark.parametrize("name, call", TO_CALLS, ids=[c[0] for c in TO_CALLS])
def test_to_forms_as_torch(name, call):
    ours, theirs = _both([[1.5, -2.0], [3.25, 4.0]])
    a, b = call(tinyres, ours), call(torch, theirs)
    assert str(a.dtype) == str(b.dtype).replace("torch.", "")
    assert str(a.device) == str(b.device)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert (a is ours) == (b is theirs)           # self when nothing changes, as torch


def test_to_refuses_two_devices():
    x = tinyres.zeros(2)
    with pytest.raises(TypeError):
        torch.zeros(2).to("cpu", "cpu")
    with pytest.raises(TypeError):
        x.to("cpu", "cpu")


def test_to_is_differentiable_through_a_cast():
    x = tinyres.tensor([1.0, 2.0], requires_grad=True)
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    for m, t in ((tinyres, x), (torch, tx)):
        (t.to("cpu", m.float64) * m.tensor([3.0, 5.0], dtype=m.float64)).sum().backward()
    assert x.grad.dtype == np.float32 and tx.grad.dtype == torch.float32
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


def test_cpu_of_a_cpu_tensor_is_itself_and_keeps_the_graph():
    x = tinyres.tensor([1.0], requires_grad=True)
    assert x.cpu() is x and torch.ones(1).cpu() is not None


# ----- modules ---------------------------------------------------------------------------
def _linear_pair():
    tinyres.manual_seed(0)
    ours = tinyres.nn.Linear(3, 2)
    theirs = torch.nn.Linear(3, 2)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.numpy()))
        theirs.bias.copy_(torch.from_numpy(ours.bias.numpy()))
    return ours, theirs


MODULE_TO = [
    ("device", lambda m, net: net.to("cpu")),
    ("device object", lambda m, net: net.to(m.device("cpu"))),
    ("dtype", lambda m, net: net.to(m.float64)),
    ("device, dtype", lambda m, net: net.to("cpu", m.float64)),
    ("keyword", lambda m, net: net.to(dtype=m.float64)),
    ("tensor", lambda m, net: net.to(m.zeros(1, dtype=m.float64))),
    ("cpu", lambda m, net: net.cpu()),
]


@pytest.mark.parametrize("name, call", MODULE_TO, ids=[c[0] for c in MODULE_TO])
def test_module_to_as_torch(name, call):
    ours, theirs = _linear_pair()
    weight = ours.weight
    assert call(tinyres, ours) is ours and call(torch, theirs) is theirs
    assert ours.weight is weight
    assert str(ours.weight.dtype) == str(theirs.weight.dtype).replace("torch.", "")
    assert str(ours.weight.device) == str(theirs.weight.device)


def test_module_to_integer_dtype_is_refused_as_torch():
    ours, theirs = _linear_pair()
    with pytest.raises(TypeError):
        theirs.to(torch.int64)
    with pytest.raises(TypeError, match="floating point"):
        ours.to(tinyres.int64)


# ----- CUDA without a GPU ----------------------------------------------------------------
@pytest.fixture
def no_cupy(monkeypatch):
    """tinyres as on a machine without CuPy (torch's "not compiled with CUDA")."""
    monkeypatch.setattr(backend, "cuda_unusable_reason",
                        lambda: "CUDA needs CuPy: install it with `pip install cupy-cuda13x`")
    monkeypatch.setattr(backend, "_cupy_importable", lambda: False)


CUDA_CALLS = [
    ("cuda()", lambda m: m.zeros(2).cuda()),
    ("to('cuda')", lambda m: m.zeros(2).to("cuda")),
    ("to('cuda:1')", lambda m: m.zeros(2).to("cuda:1")),
    ("zeros(device='cuda')", lambda m: m.zeros(2, device="cuda")),
    ("tensor(device='cuda:0')", lambda m: m.tensor([1.0], device="cuda:0")),
    ("Module.cuda()", lambda m: m.nn.Linear(2, 2).cuda()),
    ("current_device", lambda m: m.cuda.current_device()),
    ("synchronize", lambda m: m.cuda.synchronize()),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch has a GPU here")
@pytest.mark.parametrize("name, call", CUDA_CALLS, ids=[c[0] for c in CUDA_CALLS])
def test_cuda_without_cupy_raises_torch_assertion(no_cupy, name, call):
    with pytest.raises(AssertionError, match="not compiled with CUDA"):
        call(torch)
    with pytest.raises(AssertionError, match="tinyres has no CUDA support.*pip install cupy"):
        call(tinyres)


@pytest.mark.skipif(tinyres.cuda.is_available(), reason="a GPU is usable here")
@pytest.mark.parametrize("name, call", CUDA_CALLS, ids=[c[0] for c in CUDA_CALLS])
def test_cuda_without_a_gpu_raises_runtime_error(name, call):
    with pytest.raises(RuntimeError, match="was requested but"):
        call(tinyres)


@pytest.mark.skipif(torch.cuda.is_available() or tinyres.cuda.is_available(),
                    reason="a GPU is usable here")
def test_cuda_index_without_a_gpu_is_refused_as_torch():
    with pytest.raises(RuntimeError) as theirs:
        torch.zeros(2).cuda(1)
    with pytest.raises(RuntimeError, match=str(theirs.value)):
        tinyres.zeros(2).cuda(1)


def test_cuda_of_a_cpu_device_is_refused_as_torch():
    with pytest.raises(RuntimeError, match="Invalid device, must be cuda device"):
        torch.zeros(2).cuda("cpu")
    with pytest.raises(RuntimeError, match="Invalid device, must be cuda device"):
        tinyres.zeros(2).cuda("cpu")


def test_cuda_questions_never_raise():
    assert tinyres.cuda.is_available() in (True, False)
    count = tinyres.cuda.device_count()
    assert count == 0 if not tinyres.cuda.is_available() else count >= 1


def test_cuda_seeds_leave_the_cpu_stream_alone():
    tinyres.manual_seed(3)
    first = tinyres.randn(4).numpy()
    tinyres.manual_seed(3)
    tinyres.cuda.manual_seed(99)
    tinyres.cuda.manual_seed_all(7)
    np.testing.assert_array_equal(tinyres.randn(4).numpy(), first)
    torch.manual_seed(3)
    torch_first = torch.randn(4)
    torch.manual_seed(3)
    torch.cuda.manual_seed(99)
    assert torch.equal(torch.randn(4), torch_first)


def test_cudnn_flags_are_settable_with_torch_defaults():
    cudnn, theirs = tinyres.backends.cudnn, torch.backends.cudnn
    for name in ("benchmark", "deterministic", "enabled", "allow_tf32"):
        assert getattr(cudnn, name) == getattr(theirs, name), name
    saved = cudnn.benchmark, cudnn.deterministic
    try:
        cudnn.benchmark, cudnn.deterministic = True, True
        assert tinyres.backends.cudnn.benchmark is True
        assert tinyres.backends.cudnn.deterministic is True
    finally:
        cudnn.benchmark, cudnn.deterministic = saved


# ----- tensors on different devices ------------------------------------------------------
class FakeCudaArray:
    """Stands in for a CuPy array on GPU `index`: enough for the device check, which
    must refuse the op before any arithmetic touches it."""
    __module__ = "cupy._fake"

    class _Device:
        def __init__(self, index):
            self.id = index

    def __init__(self, index, shape=(2,)):
        self.device, self.shape, self.ndim = self._Device(index), shape, len(shape)
        self.dtype, self.size = np.dtype(np.float32), int(np.prod(shape))


@pytest.mark.parametrize("first, second, expected", [
    (0, None, "cuda:0 and cpu"), (None, 0, "cpu and cuda:0"), (0, 1, "cuda:0 and cuda:1")])
def test_ops_across_devices_are_refused_naming_both(first, second, expected):
    def make(index):
        return tinyres.Tensor(np.ones(2, np.float32) if index is None else
                              FakeCudaArray(index))
    a, b = make(first), make(second)
    assert a.device != b.device
    message = (f"Expected all tensors to be on the same device, but found at least two "
               f"devices, {expected}!")
    with pytest.raises(RuntimeError, match=message):
        tinyres.nn.functional.residual_add(a, b)
    with pytest.raises(RuntimeError, match=message):
        tinyres.cat([a, b])


def test_fake_arrays_report_their_device():
    assert tinyres.Tensor(FakeCudaArray(1)).device == tinyres.device("cuda:1")
    assert tinyres.Tensor(FakeCudaArray(1)).get_device() == 1


# ----- on a GPU (`pytest -m gpu`) -------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not tinyres.cuda.is_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("spelling", ["cuda", "cuda:0", 0, "device"])
def test_gpu_tensors_report_cuda_0(spelling):
    spelling = tinyres.device("cuda:0") if spelling == "device" else spelling
    x = tinyres.ones(2, device=spelling)
    assert x.device == tinyres.device("cuda:0") and x.is_cuda and x.get_device() == 0
    assert "device='cuda:0'" in repr(x)
    assert tinyres.cuda.current_device() == 0 and tinyres.cuda.device_count() >= 1
    tinyres.cuda.synchronize()


@pytest.mark.gpu
@pytest.mark.skipif(not tinyres.cuda.is_available(), reason="needs CuPy and a CUDA device")
def test_gpu_copy_is_differentiable_as_torch():
    x = tinyres.tensor([1.0, -2.0, 3.0], dtype=tinyres.float64, requires_grad=True)
    y = x.cuda()
    assert not y.is_leaf and y.requires_grad and y.device.type == "cuda"
    weights = tinyres.tensor([0.5, 2.0, -1.0], dtype=tinyres.float64, device="cuda")
    (y * y * weights).sum().backward()
    assert x.grad.device.type == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() * weights.numpy())
    assert tinyres.gradcheck(lambda t: (t.cuda() * weights).cpu(), [x])
    with pytest.raises(RuntimeError, match="cuda:0 and cpu|cpu and cuda:0"):
        y + x


@pytest.mark.gpu
@pytest.mark.skipif(not tinyres.cuda.is_available(), reason="needs CuPy and a CUDA device")
def test_gpu_save_load_keeps_the_device(tmp_path):
    net = tinyres.nn.Linear(3, 2).cuda()
    tinyres.save(net.state_dict(), tmp_path / "net.tnr")
    back = tinyres.load(tmp_path / "net.tnr")
    assert back["weight"].device == tinyres.device("cuda:0")
    cpu = tinyres.load(tmp_path / "net.tnr", map_location="cpu")
    assert cpu["weight"].device.type == "cpu"
    np.testing.assert_array_equal(cpu["weight"].numpy(), net.weight.numpy())
    tinyres.safetensors.save_file(net.state_dict(), tmp_path / "net.safetensors")
    loaded = tinyres.safetensors.load_file(tmp_path / "net.safetensors", device="cuda:0")
    assert loaded["bias"].device == tinyres.device("cuda:0")
