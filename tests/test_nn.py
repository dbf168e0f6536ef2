"""Tests of tinyres.nn: Module bookkeeping, layers, state_dict, init, and parity with torch."""
import copy
import math
from collections import OrderedDict

import numpy as np
import pytest

import tinyres
from tinyres import nn
from tinyres.backend import cuda_is_available
from tinyres.nn import functional as F
from tinyres.nn import init
from tinyres.optim import SGD
from tinyres.factories import randn, tensor, zeros
from tinyres.tensor import Tensor, manual_seed


class Block(nn.Module):
    """conv -> bn -> relu with a shortcut, a miniature residual block."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn1(self.conv1(x)) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.layer1 = nn.Sequential(Block(4), Block(4))
        self.fc = nn.Linear(4, 2)
        self.register_buffer("scale", tensor([1.0]), persistent=False)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        return self.fc(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ----- registration and traversal -------------------------------------------------------
def test_named_parameters_are_dotted_and_in_registration_order():
    names = [name for name, _ in Net().named_parameters()]
    assert names == ["stem.weight", "stem.bias",
                     "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
                     "layer1.1.conv1.weight", "layer1.1.bn1.weight", "layer1.1.bn1.bias",
                     "fc.weight", "fc.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in Net().parameters())


def test_buffers_and_modules_are_registered():
    net = Net()
    assert [n for n, _ in net.named_buffers()][:3] == [
        "scale", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var"]
    assert [n for n, _ in net.named_children()] == ["stem", "layer1", "fc"]
    assert [n for n, _ in net.named_modules()][:5] == [
        "", "stem", "layer1", "layer1.0", "layer1.0.conv1"]
    assert len(list(net.modules())) == 1 + 1 + 1 + 2 * 4 + 1
    # the non-persistent buffer is not saved
    assert "scale" not in net.state_dict()
    assert "layer1.1.bn1.num_batches_tracked" in net.state_dict()


def test_shared_parameter_is_listed_once_and_reassignment_replaces():
    net = nn.Module()
    net.a = nn.Linear(2, 2)
    net.b = nn.Linear(2, 2)
    net.b.weight = net.a.weight
    assert len(list(net.parameters())) == 3
    new = nn.Parameter(np.zeros((2, 2), np.float32))
    net.a.weight = new
    assert net.a._parameters["weight"] is new
    with pytest.raises(TypeError):
        net.a.weight = zeros(2, 2)
    net.a.bias = None
    assert [n for n, _ in net.a.named_parameters()] == ["weight"]


def test_train_eval_propagate_to_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_sets_gradients_to_none():
    net = Net()
    net(randn(2, 3, 6, 6)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_sequential_and_module_list_containers():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    seq.append(nn.Linear(4, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear)
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    assert isinstance(seq[:2], nn.Sequential) and len(seq[:2]) == 2
    assert seq(randn(5, 3)).shape == (5, 1)
    named = nn.Sequential(OrderedDict(first=nn.Linear(1, 1)))
    assert list(named.state_dict()) == ["first.weight", "first.bias"]
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert [n for n, _ in layers.named_parameters()][-1] == "2.bias"
    with pytest.raises(IndexError):
        layers[3]


def test_layer_shapes_and_modes():
    x = randn(2, 3, 8, 8)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 4)
    assert nn.AvgPool2d(3, stride=1, padding=1)(x).shape == (2, 3, 8, 8)
    assert nn.Flatten()(x).shape == (2, 192)
    assert nn.Identity(7, foo=1)(x) is x
    drop = nn.Dropout(0.5)
    assert (drop(x).array == 0).mean() > 0.3
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(randn(2, 3))
    assert nn.BatchNorm1d(3)(randn(4, 3, 5)).shape == (4, 3, 5)


def test_deepcopy_gives_independent_parameters():
    net = Net()
    twin = copy.deepcopy(net)
    twin.fc.weight.array[...] = 0
    assert not np.all(net.fc.weight.array == 0)
    assert list(twin.state_dict()) == list(net.state_dict())


# ----- devices and dtypes ---------------------------------------------------------------
def test_to_and_double_keep_parameter_identity():
    net = Net()
    params = list(net.parameters())
    opt = SGD(net.parameters(), lr=0.1)
    assert net.to("cpu") is net
    net.double()
    assert all(a is b for a, b in zip(params, net.parameters()))
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.layer1[0].bn1.running_var.dtype == np.float64
    assert net.layer1[0].bn1.num_batches_tracked.dtype == np.int64
    before = net.fc.weight.array.copy()
    net(randn(2, 3, 6, 6, dtype=np.float64)).sum().backward()
    opt.step()
    assert net.fc.weight.dtype == np.float64 and not np.array_equal(before, net.fc.weight.array)
    net.float()
    assert net.fc.weight.dtype == np.float32 and net.fc.weight is params[-2]


@pytest.mark.skipif(not cuda_is_available(), reason="needs CuPy and a CUDA device")
def test_cuda_moves_in_place_and_back():
    net = Net()
    weight = net.fc.weight
    x = randn(2, 3, 6, 6)
    expected = net.eval()(x).numpy()
    net.cuda()
    assert net.fc.weight is weight and net.fc.weight.device.type == "cuda"
    np.testing.assert_allclose(net(x.cuda()).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert net.layer1[0].bn1.running_mean.device.type == "cuda"
    assert net.state_dict()["fc.weight"].device.type == "cuda"
    net.cpu()
    assert net.fc.weight.device.type == "cpu"


# ----- state_dict -----------------------------------------------------------------------
def test_load_state_dict_copies_into_existing_arrays():
    src, dst = Net(), Net()
    weight_array = dst.fc.weight.array
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert dst.fc.weight.array is weight_array
    for key, value in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[key], value)
    sd = src.state_dict()
    sd["fc.bias"][...] = 42.0        # state_dict values share the module's memory (torch)
    assert np.all(src.fc.bias.array == 42.0) and not np.any(dst.fc.bias.array == 42.0)


def test_strict_load_reports_every_bad_key_and_loads_nothing():
    net, other = Net(), Net()
    before = net.state_dict()
    bad = other.state_dict()
    del bad["stem.bias"]
    bad["extra.weight"] = np.zeros(3)
    bad["fc.weight"] = np.zeros((10, 64), np.float32)
    with pytest.raises(RuntimeError) as err:
        net.load_state_dict(bad)
    message = str(err.value)
    assert message.startswith("Error(s) in loading state_dict for Net:")
    assert 'Missing key(s) in state_dict: "stem.bias"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    assert ("size mismatch for fc.weight: copying a param with shape (10, 64) from "
            "checkpoint, the shape in current model is (2, 4)") in message
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_non_strict_load_tolerates_keys_but_not_shapes():
    net, other = Net(), Net()
    sd = other.state_dict()
    del sd["fc.bias"]
    sd["unused"] = np.ones(1)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert missing == ["fc.bias"] and unexpected == ["unused"]
    np.testing.assert_array_equal(net.fc.weight.array, other.fc.weight.array)
    sd["fc.weight"] = np.zeros((3, 3))
    with pytest.raises(RuntimeError, match="size mismatch for fc.weight"):
        net.load_state_dict(sd, strict=False)


# ----- init -----------------------------------------------------------------------------
def test_kaiming_normal_fan_out_relu_std():
    manual_seed(0)
    w = init.kaiming_normal_(zeros(256, 128, 3, 3), mode="fan_out", nonlinearity="relu")
    expected = math.sqrt(2.0 / (256 * 9))
    assert abs(w.array.std() / expected - 1) < 0.03
    assert abs(w.array.mean()) < 0.05 * expected


def test_uniform_inits_respect_their_bounds():
    manual_seed(1)
    w = init.kaiming_uniform_(zeros(64, 32, 3, 3), a=math.sqrt(5))
    bound = 1 / math.sqrt(32 * 9)
    assert np.abs(w.array).max() <= bound and np.abs(w.array).max() > 0.95 * bound
    x = init.xavier_uniform_(zeros(100, 50), gain=2.0)
    bound = 2.0 * math.sqrt(6 / 150)
    assert np.abs(x.array).max() <= bound and np.abs(x.array).max() > 0.95 * bound
    conv = nn.Conv2d(8, 4, 3)
    bound = 1 / math.sqrt(8 * 9)
    for p in (conv.weight, conv.bias):
        assert p.dtype == np.float32 and np.abs(p.array).max() <= bound
    assert np.abs(conv.weight.array).max() > 0.9 * bound
    u = init.uniform_(zeros(1000), -2.0, -1.0)
    assert u.array.min() >= -2.0 and u.array.max() <= -1.0
    assert np.all(init.constant_(zeros(3), 0.5).array == 0.5)
    assert np.all(init.ones_(zeros(3)).array == 1.0)
    with pytest.raises(ValueError):
        init.xavier_normal_(zeros(5))


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for name, param in [("linear", None), ("conv2d", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(
            torch.nn.init.calculate_gain(name, param), rel=1e-12)


def test_manual_seed_makes_initialisation_repeatable():
    manual_seed(3)
    a = nn.Linear(5, 5).weight.array.copy()
    manual_seed(3)
    np.testing.assert_array_equal(a, nn.Linear(5, 5).weight.array)


# ----- parity with torch ----------------------------------------------------------------
def _pair_of_models(torch):
    tnn = torch.nn
    ref = tnn.Sequential(tnn.Conv2d(3, 6, 3, padding=1), tnn.BatchNorm2d(6), tnn.ReLU(),
                         tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(6, 5)).double()
    ours = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).double()
    return ref, ours


def test_state_dict_keys_and_repr_match_torch():
    torch = pytest.importorskip("torch")
    ref, ours = _pair_of_models(torch)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert ours.state_dict()[key].shape == tuple(value.shape), key
        assert ours.state_dict()[key].dtype == value.numpy().dtype, key
    assert repr(ours) == repr(ref)


def test_torch_round_trip_forward_and_running_stats():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ref, ours = _pair_of_models(torch)
    with torch.no_grad():
        ref[1].weight.uniform_(0.5, 1.5)
        ref[1].bias.uniform_(-0.5, 0.5)
    ours.load_state_dict(ref.state_dict())
    x = rng.standard_normal((4, 3, 5, 5))
    for _ in range(2):                                   # train mode: batch statistics
        np.testing.assert_allclose(ours(Tensor(x)).numpy(),
                                   ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
    for key in ("1.running_mean", "1.running_var"):
        np.testing.assert_allclose(ours.state_dict()[key], ref.state_dict()[key].numpy(),
                                   rtol=1e-12, atol=1e-14)
    assert ours.state_dict()["1.num_batches_tracked"] == 2
    ours.eval()
    ref.eval()
    np.testing.assert_allclose(ours(Tensor(x)).numpy(),
                               ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)
    back, _ = _pair_of_models(torch)                     # tinyres -> torch
    back.load_state_dict(OrderedDict((k, torch.from_numpy(np.array(v)))
                                     for k, v in ours.state_dict().items()))
    back.eval()
    assert back.state_dict()["1.num_batches_tracked"].item() == 2
    np.testing.assert_allclose(back(torch.from_numpy(x)).detach().numpy(),
                               ours(Tensor(x)).numpy(), rtol=1e-10)


def test_gradients_match_torch_after_loading_weights():
    torch = pytest.importorskip("torch")
    ref, ours = _pair_of_models(torch)
    ours.load_state_dict(ref.state_dict())
    x = np.random.default_rng(1).standard_normal((3, 3, 4, 4))
    w = np.random.default_rng(2).standard_normal((3, 5))
    (ours(Tensor(x)) * Tensor(w)).sum().backward()
    (ref(torch.from_numpy(x)) * torch.from_numpy(w)).sum().backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_batchnorm1d_cumulative_average_matches_torch():
    torch = pytest.importorskip("torch")
    ref = torch.nn.BatchNorm1d(4, momentum=None).double()
    ours = nn.BatchNorm1d(4, momentum=None).double()
    rng = np.random.default_rng(3)
    for shape in [(8, 4), (5, 4, 3), (6, 4)]:
        x = rng.standard_normal(shape) * 2 + 1
        np.testing.assert_allclose(ours(Tensor(x)).numpy(),
                                   ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)
    for key, value in ref.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-12)


# ----- training -------------------------------------------------------------------------
def test_small_mlp_learns():
    manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)     # XOR-like quadrants: not linear
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(model(Tensor(x)), Tensor(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    accuracy = (model(Tensor(x)).array.argmax(axis=1) == y).mean()
    assert accuracy > 0.9


@pytest.mark.parametrize("bad", [None, "weights", [[1, 2], None], {"a": 1}],
                         ids=["None", "text", "ragged", "dict"])
def test_load_state_dict_refuses_non_numbers_and_loads_nothing(bad):
    net = nn.Linear(2, 3)
    before = {k: np.array(v) for k, v in net.state_dict().items()}
    state = net.state_dict()
    state["weight"] = np.full((3, 2), 7.0)          # a good value, listed first
    state["bias"] = bad
    with pytest.raises(RuntimeError, match='While copying the parameter named "bias"'):
        net.load_state_dict(state)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key])   # all or nothing


# ----- edges (issue 12): empty batches, NumPy integers, non-Tensor inputs -------------
EMPTY_BATCH_LAYERS = [   # (name, constructor args, input shape with batch 0, train mode)
    ("Conv2d", (3, 4, 3), {"padding": 1}, (0, 3, 6, 6), True),
    ("Conv2d", (3, 4, 1), {"stride": 2}, (0, 3, 6, 6), True),
    ("BatchNorm2d", (3,), {}, (0, 3, 4, 4), True),
    ("BatchNorm2d", (3,), {}, (0, 3, 4, 4), False),
    ("BatchNorm1d", (3,), {}, (0, 3), True),
    ("Linear", (5, 2), {}, (0, 5), True),
    ("MaxPool2d", (2,), {}, (0, 3, 4, 4), True),
    ("AvgPool2d", (2,), {}, (0, 3, 4, 4), True),
    ("MaxPool2d", (3, 2, 1, 2), {"ceil_mode": True}, (0, 3, 6, 6), True),
    ("AvgPool2d", (3, 2, 1, True, False), {}, (0, 3, 6, 6), True),
    ("AdaptiveAvgPool2d", (1,), {}, (0, 3, 4, 4), True),
    ("AdaptiveAvgPool2d", (2,), {}, (0, 3, 4, 4), True),
    ("ReLU", (), {}, (0, 3, 4, 4), True),
    ("Flatten", (), {}, (0, 3, 4, 4), True),
]


def _run_empty(module, x, engine):
    """Forward and backward of sum(module(x)) for an empty x; returns the output shape,
    x.grad's shape and every parameter's gradient and buffer as arrays."""
    out = module(x)
    out.sum().backward()
    as_np = (lambda t: t.detach().numpy()) if engine == "torch" else (lambda t: t.numpy())
    grads = {k: as_np(p.grad) for k, p in module.named_parameters()}
    buffers = {k: as_np(b) for k, b in module.named_buffers()}
    return tuple(out.shape), tuple(x.grad.shape), grads, buffers


@pytest.mark.parametrize("name, args, kwargs, shape, train", EMPTY_BATCH_LAYERS,
                         ids=[f"{c[0]}{c[1]}-{'train' if c[4] else 'eval'}"
                              for c in EMPTY_BATCH_LAYERS])
def test_an_empty_batch_goes_through_every_layer_as_in_torch(name, args, kwargs, shape,
                                                              train):
    torch = pytest.importorskip("torch")
    theirs = getattr(torch.nn, name)(*args, **kwargs).double().train(train)
    dtype = {"dtype": np.float64} if name in ("Conv2d", "Linear") or "Norm" in name else {}
    ours = getattr(nn, name)(*args, **kwargs, **dtype).train(train)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x_ours = Tensor(np.zeros(shape), requires_grad=True)
    x_theirs = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    got, want = _run_empty(ours, x_ours, "tinyres"), _run_empty(theirs, x_theirs, "torch")
    assert got[:2] == want[:2]
    for mine, expected in zip(got[2:], want[2:]):
        assert mine.keys() == expected.keys()
        for k in mine:
            np.testing.assert_array_equal(mine[k], expected[k], err_msg=k)


def test_cross_entropy_of_an_empty_batch_is_nan_as_torch():
    torch = pytest.importorskip("torch")
    logits = Tensor(np.zeros((0, 4)), requires_grad=True)
    loss = F.cross_entropy(logits, tensor(np.zeros(0, dtype=np.int64)))
    theirs = torch.nn.functional.cross_entropy(torch.zeros(0, 4), torch.zeros(0).long())
    assert np.isnan(loss.item()) and np.isnan(theirs.item())
    loss.backward()
    assert logits.grad.shape == (0, 4)


NP_INT = np.int64


def test_numpy_integers_are_accepted_wherever_ints_are():
    conv = nn.Conv2d(NP_INT(3), NP_INT(4), NP_INT(3), stride=NP_INT(2), padding=NP_INT(1))
    assert repr(conv) == repr(nn.Conv2d(3, 4, 3, stride=2, padding=1))
    assert nn.Linear(NP_INT(3), np.int32(2)).weight.shape == (2, 3)
    assert nn.BatchNorm2d(NP_INT(3)).running_mean.shape == (3,)
    x = randn(2, 3, 8, 8)
    assert conv(x).shape == (2, 4, 4, 4)
    assert nn.MaxPool2d(NP_INT(2), NP_INT(2))(x).shape == (2, 3, 4, 4)
    assert F.avg_pool2d(x, (NP_INT(2), 2)).shape == (2, 3, 4, 4)
    assert nn.AdaptiveAvgPool2d(NP_INT(2))(x).shape == (2, 3, 2, 2)
    assert nn.Flatten(NP_INT(1))(x).shape == (2, 192)
    assert x.reshape(NP_INT(6), -1).shape == (6, 64)
    assert x.view((NP_INT(2), NP_INT(-1))).shape == (2, 192)
    assert x.sum(NP_INT(1)).shape == (2, 8, 8)
    assert x.sum((NP_INT(2), 3)).shape == (2, 3)
    assert x.max(NP_INT(-1)).values.shape == (2, 3, 8)
    assert x.transpose(NP_INT(0), NP_INT(1)).shape == (3, 2, 8, 8)
    assert x.permute(NP_INT(1), 0, 2, 3).shape == (3, 2, 8, 8)
    assert x[NP_INT(1)].shape == (3, 8, 8)
    assert x[:1].expand(NP_INT(4), -1, -1, -1).shape == (4, 3, 8, 8)
    assert x.unsqueeze(NP_INT(0)).shape == (1, 2, 3, 8, 8)
    assert F.softmax(x, NP_INT(1)).shape == x.shape
    assert zeros(NP_INT(2), NP_INT(3)).shape == (2, 3)
    assert randn((NP_INT(2),)).shape == (2,)


def test_numpy_integers_match_torch_and_floats_are_refused():
    torch = pytest.importorskip("torch")
    assert tuple(torch.zeros(4).reshape(NP_INT(2), NP_INT(2)).shape) == \
        zeros(4).reshape(NP_INT(2), NP_INT(2)).shape
    with pytest.raises(TypeError):
        torch.zeros(4).reshape(2.0, 2)
    with pytest.raises(TypeError, match="integer"):
        zeros(4).reshape(2.0, 2)
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv2d(3, 2, 3.0)
    with pytest.raises(TypeError):
        torch.nn.Conv2d(3, 2, 3.0)


NON_TENSOR_LAYERS = [
    ("Conv2d", (3, 2, 1)), ("Linear", (3, 2)), ("BatchNorm2d", (3,)), ("BatchNorm1d", (3,)),
    ("ReLU", ()), ("MaxPool2d", (2,)), ("AvgPool2d", (2,)), ("AdaptiveAvgPool2d", (1,)),
    ("Flatten", ()), ("Dropout", ()),
]
TORCH_RAISES_TYPEERROR = {"Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "Dropout"}


@pytest.mark.parametrize("name, args", NON_TENSOR_LAYERS, ids=[c[0] for c in NON_TENSOR_LAYERS])
def test_a_layer_called_on_a_non_tensor_raises_type_error_naming_both(name, args):
    layer = getattr(nn, name)(*args)
    array = np.zeros((2, 3, 4, 4) if "2d" in name or name == "Flatten" else (2, 3),
                     dtype=np.float32)
    with pytest.raises(TypeError, match=rf"^{name}: .*numpy\.ndarray"):
        layer(array)
    with pytest.raises(TypeError, match=rf"^{name}: .*not list"):
        layer(array.tolist())
    if name in TORCH_RAISES_TYPEERROR:    # torch's other layers fail in other ways
        torch = pytest.importorskip("torch")
        with pytest.raises(TypeError, match="must be Tensor|invalid combination"):
            getattr(torch.nn, name)(*args)(array)


def test_a_model_called_on_a_numpy_array_names_its_first_layer():
    from tinyres.models import resnet20
    with pytest.raises(TypeError, match="Conv2d: argument 'input' must be Tensor, not "
                                        "numpy.ndarray"):
        resnet20()(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(TypeError, match="MSELoss: argument 'target'"):
        nn.MSELoss()(zeros(2), np.zeros(2))


def test_state_dict_values_share_the_module_memory_as_torch():
    torch = pytest.importorskip("torch")
    for lib in (tinyres, torch):
        layer = lib.nn.Linear(2, 3)
        state = layer.state_dict()
        assert not state["weight"].requires_grad
        state["weight"].zero_()                          # a live view, not a snapshot
        assert float(layer.weight.abs().sum()) == 0.0
        snapshot = {k: v.detach().numpy().copy() for k, v in layer.state_dict().items()}
        with lib.no_grad():
            layer.bias.add_(1.0)
        assert not np.array_equal(snapshot["bias"], layer.state_dict()["bias"].numpy())
