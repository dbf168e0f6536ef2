"""tinyres.save/load against torch.save/load (same objects in, same structure, values,
dtypes and flags out), the file format as documented, atomic writes and clear errors; and
tinyres.safetensors against the real safetensors package (numpy and torch flavours), both
ways, byte for byte where the reference writer is deterministic."""
import io
import json
import math
import os
import struct
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyres
from tinyres import serialization
from tinyres.safetensors import SafetensorError

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8,
          np.uint8, np.bool_]
arrays = hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=4,
                                                              min_side=0, max_side=5))


def roundtrip(module, obj, **load_args):
    buffer = io.BytesIO()
    module.save(obj, buffer)
    buffer.seek(0)
    return module.load(buffer, **load_args)


def to_torch(value):
    """The torch twin of a tinyres object (tensors converted, containers kept)."""
    if isinstance(value, tinyres.nn.Parameter):
        return torch.nn.Parameter(torch.from_numpy(value.numpy().copy()), value.requires_grad)
    if isinstance(value, tinyres.Tensor):
        return torch.from_numpy(value.numpy().copy()).requires_grad_(value.requires_grad)
    if type(value) in (list, tuple):
        return type(value)(to_torch(v) for v in value)
    if type(value) in (dict, OrderedDict):
        return type(value)((k, to_torch(v)) for k, v in value.items())
    return value


def assert_same(ours, theirs, where="obj"):
    """tinyres's loaded object matches torch's: container types, keys, Python values,
    tensor classes, dtypes, requires_grad, values bit for bit."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, tinyres.Tensor), where
        assert isinstance(ours, tinyres.nn.Parameter) == isinstance(theirs, torch.nn.Parameter)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), where
        assert ours.requires_grad == theirs.requires_grad, where
        np.testing.assert_array_equal(ours.numpy(), theirs.detach().numpy(), err_msg=where)
    elif type(theirs) in (list, tuple, dict, OrderedDict):
        assert type(ours) is type(theirs), where
        if isinstance(theirs, dict):
            assert list(ours) == list(theirs), where
            for k in theirs:
                assert_same(ours[k], theirs[k], f"{where}[{k!r}]")
        else:
            assert len(ours) == len(theirs), where
            for i, (a, b) in enumerate(zip(ours, theirs)):
                assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, float) and math.isnan(theirs):
        assert type(ours) is float and math.isnan(ours), where
    else:
        assert type(ours) is type(theirs) and ours == theirs, where
        if isinstance(theirs, float):
            assert math.copysign(1, ours) == math.copysign(1, theirs), where


# ----- what comes back ------------------------------------------------------------------
def test_nested_python_values_as_torch():
    obj = {"ints": [0, -7, 2 ** 70], "floats": (0.1, -0.0, float("inf"), float("nan")),
           "text": "ünïcode ✓", "flags": [True, False, None], 3: "int key", "array": ["str", "array"],
           (1, "a"): "tuple key", None: 1.5, 2.5: "float key",
           "od": OrderedDict([("z", 1), ("a", [])]), "empty": ({}, [], ())}
    assert_same(roundtrip(tinyres, obj), roundtrip(torch, obj))


def test_state_dict_round_trip_as_torch(tmp_path):
    tinyres.manual_seed(0)
    net = tinyres.nn.Sequential(tinyres.nn.Conv2d(3, 4, 3), tinyres.nn.BatchNorm2d(4),
                                tinyres.nn.ReLU(), tinyres.nn.Flatten(),
                                tinyres.nn.Linear(4 * 4 * 4, 2))
    sd = net.state_dict()
    assert_same(roundtrip(tinyres, sd), roundtrip(torch, to_torch(sd)))
    tinyres.save(sd, tmp_path / "net.tnr")
    fresh = tinyres.nn.Sequential(tinyres.nn.Conv2d(3, 4, 3), tinyres.nn.BatchNorm2d(4),
                                  tinyres.nn.ReLU(), tinyres.nn.Flatten(),
                                  tinyres.nn.Linear(4 * 4 * 4, 2))
    fresh.load_state_dict(tinyres.load(str(tmp_path / "net.tnr")))
    x = tinyres.randn(2, 3, 6, 6)
    np.testing.assert_array_equal(fresh.eval()(x).numpy(), net.eval()(x).numpy())


def test_flags_parameters_and_identity_as_torch():
    shared = tinyres.tensor([1.0, 2.0])
    obj = {"p": tinyres.nn.Parameter(tinyres.ones(2)),
           "frozen": tinyres.nn.Parameter(tinyres.ones(2), requires_grad=False),
           "leaf": tinyres.tensor([3.0], requires_grad=True), "twice": [shared, shared]}
    ours = roundtrip(tinyres, obj)
    theirs = roundtrip(torch, to_torch({**obj, "twice": [to_torch(shared)] * 2}))
    assert_same(ours, theirs)
    assert (ours["twice"][0] is ours["twice"][1]) == (theirs["twice"][0] is theirs["twice"][1])


def test_views_are_saved_as_separate_memory():
    base = tinyres.arange(6.0)
    loaded = roundtrip(tinyres, [base, base[2:]])
    np.testing.assert_array_equal(loaded[1].numpy(), [2.0, 3.0, 4.0, 5.0])
    loaded[0].array[2] = 99.0          # documented: unlike torch, no shared storage
    assert loaded[1].numpy()[0] == 2.0


@settings(max_examples=40, deadline=None)
@given(array=arrays, transpose=st.booleans())
def test_arrays_and_tensors_round_trip_bit_for_bit(array, transpose):
    if transpose:
        array = array.T                    # non-contiguous input
    tensor = tinyres.tensor(array, dtype=array.dtype)
    scalar = array.reshape(-1)[0] if array.size else np.float64(1.5)
    loaded = roundtrip(tinyres, {"t": tensor, "a": array, "s": scalar})
    assert loaded["t"].dtype == array.dtype and loaded["t"].shape == array.shape
    np.testing.assert_array_equal(loaded["t"].numpy(), array)
    assert type(loaded["a"]) is np.ndarray and loaded["a"].dtype == array.dtype
    np.testing.assert_array_equal(loaded["a"], array)
    assert type(loaded["s"]) is type(scalar)
    np.testing.assert_array_equal(loaded["s"], scalar)      # NaN equals NaN here
    assert loaded["a"].flags.writeable and loaded["t"].array.flags.writeable


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_optimizer_state_round_trip_continues_training_exactly(name, tmp_path):
    def build():
        tinyres.manual_seed(1)
        model = tinyres.nn.Linear(4, 3)
        options = {"lr": 0.1, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
        return model, getattr(tinyres.optim, name)(model.parameters(), **options)

    def steps(model, opt, n, seed):
        rng = np.random.default_rng(seed)
        for _ in range(n):
            x = tinyres.tensor(rng.standard_normal((5, 4)).astype(np.float32))
            opt.zero_grad()
            (model(x) ** 2).mean().backward()
            opt.step()

    model, opt = build()
    steps(model, opt, 3, seed=0)
    tinyres.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3},
                 tmp_path / "ckpt.tnr")
    steps(model, opt, 3, seed=1)
    restored, restored_opt = build()
    ckpt = tinyres.load(tmp_path / "ckpt.tnr")
    restored.load_state_dict(ckpt["model"])
    restored_opt.load_state_dict(ckpt["optimizer"])
    assert ckpt["epoch"] == 3
    steps(restored, restored_opt, 3, seed=1)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[key].numpy(), value.numpy())


def test_map_location_on_the_cpu():
    obj = {"w": tinyres.ones(2)}
    for location in ("cpu", tinyres.device("cpu"), {"cpu": "cpu"}):
        assert roundtrip(tinyres, obj, map_location=location)["w"].device.type == "cpu"
    with pytest.raises(TypeError):
        roundtrip(tinyres, obj, map_location=lambda storage, loc: storage)


def _relocated(data, device):
    """The same file with every tensor's saved device set to `device`."""
    (n,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16:16 + n])
    for entry in header["arrays"]:
        entry["device"] = device
    text = json.dumps(header).encode()
    return data[:8] + struct.pack("<Q", len(text)) + text + data[16 + n:]


@pytest.mark.skipif(tinyres.cuda.is_available(), reason="a GPU is usable here")
def test_cuda_tensors_need_map_location_without_a_gpu():
    buffer = io.BytesIO()
    tinyres.save({"w": tinyres.arange(3.0)}, buffer)
    data = _relocated(buffer.getvalue(), "cuda:1")
    with pytest.raises(RuntimeError) as theirs:
        torch.load(io.BytesIO(roundtrip_bytes_torch()), map_location="cuda")
    with pytest.raises(theirs.type, match="Attempting to deserialize.*map_location"):
        tinyres.load(io.BytesIO(data))
    for location in ("cpu", {"cuda:1": "cpu"}):
        w = tinyres.load(io.BytesIO(data), map_location=location)["w"]
        assert w.device == tinyres.device("cpu") and w.numpy().tolist() == [0.0, 1.0, 2.0]


def roundtrip_bytes_torch():
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, buffer)
    return buffer.getvalue()


# ----- the format, as documented --------------------------------------------------------
def test_file_layout_is_the_documented_one(tmp_path):
    x = tinyres.tensor([[1, 2, 3]], dtype=tinyres.int64)
    tinyres.save({"x": x, "n": 0.5}, tmp_path / "f.tnr")
    data = (tmp_path / "f.tnr").read_bytes()
    assert data[:8] == b"\x89TINYRS\n"
    (n,) = struct.unpack("<Q", data[8:16])
    assert (16 + n) % 64 == 0
    header = json.loads(data[16:16 + n])
    assert header["object"] == ["dict", [[["str", "x"], ["array", 0]],
                                         [["str", "n"], ["float", "0.5"]]]]
    entry = header["arrays"][0]
    assert entry["dtype"] == "<i8" and entry["shape"] == [1, 3] and entry["device"] == "cpu"
    start = 16 + n + entry["offset"]
    values = np.frombuffer(data[start:start + entry["nbytes"]], dtype="<i8")
    assert values.tolist() == [1, 2, 3] and len(data) == 16 + n + header["data_size"]


# ----- atomic writes --------------------------------------------------------------------
def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.tnr"
    tinyres.save({"w": tinyres.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="Linear"):
        tinyres.save({"model": tinyres.nn.Linear(2, 2)}, path)

    def broken(out, prefix, chunks):
        out.write(prefix)
        raise OSError("disk full")
    monkeypatch.setattr(serialization, "_write", broken)
    with pytest.raises(OSError, match="disk full"):
        tinyres.save({"w": tinyres.zeros(3)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.tnr"]


def test_unsupported_objects_are_refused_naming_them():
    with pytest.raises(TypeError, match=r"obj\['f'\] of type builtins.function"):
        tinyres.save({"f": lambda: 0}, io.BytesIO())
    with pytest.raises(TypeError, match="keys must be"):
        tinyres.save({frozenset(): 1}, io.BytesIO())
    with pytest.raises(TypeError):
        tinyres.save({}, 3)


# ----- errors on load -------------------------------------------------------------------
def _saved_bytes():
    buffer = io.BytesIO()
    tinyres.save({"w": tinyres.arange(40.0), "k": [1, 2]}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("cut", [0, 3, 8, 12, 16, 40, -200, -1])
def test_truncated_files_are_refused(cut):
    data = _saved_bytes()
    with pytest.raises(serialization.SerializationError, match="empty|truncated"):
        tinyres.load(io.BytesIO(data[:cut]))


def test_corrupt_data_and_header_are_refused():
    data = bytearray(_saved_bytes())
    data[-5] ^= 0xFF
    with pytest.raises(RuntimeError, match="corrupt: the SHA-256"):
        tinyres.load(io.BytesIO(bytes(data)))
    data = bytearray(_saved_bytes())
    data[16] = ord("!")                    # the header's opening brace
    with pytest.raises(RuntimeError, match="corrupt: its header is not valid JSON"):
        tinyres.load(io.BytesIO(bytes(data)))


def test_foreign_files_are_refused_saying_what_they_are(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "new.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    tinyres.safetensors.save_file({"w": tinyres.ones(2)}, tmp_path / "w.safetensors")
    (tmp_path / "notes.txt").write_text("hello, not a model")
    expected = {"new.pt": "PyTorch.*out of scope.*never unpickles",
                "old.pt": "pickle.*never unpickles", "w.safetensors": "safetensors.load_file",
                "notes.txt": "not a tinyres.save file"}
    for name, message in expected.items():
        with pytest.raises(serialization.SerializationError, match=message):
            tinyres.load(tmp_path / name)


# ----- safetensors ----------------------------------------------------------------------
safetensors_numpy = pytest.importorskip("safetensors.numpy")
safetensors_torch = pytest.importorskip("safetensors.torch")

ST_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
             np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


def _sample(dtype, shape, seed):
    values = np.random.default_rng(seed).standard_normal(shape) * 50
    return (values > 0) if dtype is np.bool_ else values.astype(dtype)


def _tinyres_dict():
    return {f"t{i}.{np.dtype(d).name}": tinyres.tensor(_sample(d, (2, i + 1), i), dtype=d)
            for i, d in enumerate(ST_DTYPES)}


def test_bytes_equal_the_reference_writer():
    ours = _tinyres_dict()
    reference = {k: v.numpy() for k, v in ours.items()}
    meta = {"note": "ünï"}        # one key: the reference keeps several in hash order
    assert tinyres.safetensors.save(ours, meta) == safetensors_numpy.save(reference, meta)
    assert tinyres.safetensors.save(ours) == safetensors_numpy.save(reference)
    assert tinyres.safetensors.save({}) == safetensors_numpy.save({})


def test_reference_readers_read_ours(tmp_path):
    ours = _tinyres_dict()
    meta = {"a": "b", "format": "np", "ü": "✓"}
    tinyres.safetensors.save_file(ours, tmp_path / "m.safetensors", metadata=meta)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m.safetensors"), framework="np") as f:
        assert f.metadata() == meta
    back_np = safetensors_numpy.load_file(str(tmp_path / "m.safetensors"))
    back_torch = safetensors_torch.load_file(str(tmp_path / "m.safetensors"))
    for name, tensor in ours.items():
        assert back_np[name].dtype == tensor.dtype
        np.testing.assert_array_equal(back_np[name], tensor.numpy())
        np.testing.assert_array_equal(back_torch[name].numpy(), tensor.numpy())


def test_we_read_the_references(tmp_path):
    reference = {k: v.numpy() for k, v in _tinyres_dict().items()}
    path = tmp_path / "ref.safetensors"
    safetensors_numpy.save_file(reference, str(path))
    from_torch = safetensors_torch.save({k: torch.from_numpy(v) for k, v in reference.items()})
    for loaded in (tinyres.safetensors.load_file(path), tinyres.safetensors.load(from_torch),
                   tinyres.safetensors.load_file(str(path), device=tinyres.device("cpu"))):
        assert sorted(loaded) == sorted(safetensors_torch.load(from_torch))
        assert list(loaded) == list(safetensors_torch.load_file(str(path)))   # file order
        for name, array in reference.items():
            assert isinstance(loaded[name], tinyres.Tensor) and not loaded[name].requires_grad
            assert loaded[name].dtype == array.dtype
            np.testing.assert_array_equal(loaded[name].numpy(), array)


@settings(max_examples=30, deadline=None)
@given(arrays=st.lists(hnp.arrays(st.sampled_from(ST_DTYPES),
                                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                   max_side=4)), max_size=4))
def test_any_shapes_and_dtypes_match_the_reference(arrays):
    named = {f"k{i}": a for i, a in enumerate(arrays)}
    ours = {k: tinyres.tensor(a, dtype=a.dtype) for k, a in named.items()}
    data = tinyres.safetensors.save(ours)
    assert data == safetensors_numpy.save(named)
    for name, tensor in tinyres.safetensors.load(data).items():
        assert tensor.dtype == named[name].dtype and tensor.shape == named[name].shape
        np.testing.assert_array_equal(tensor.numpy(), named[name])


def test_bfloat16_is_refused_naming_the_tensor():
    data = safetensors_torch.save({"w": torch.ones(2, dtype=torch.bfloat16)})
    with pytest.raises(SafetensorError, match="'w' has dtype BF16"):
        tinyres.safetensors.load(data)


def test_save_errors_as_safetensors_torch():
    t, x = torch.ones(4, 4), tinyres.ones(4, 4)
    cases = [({"a": t.t()}, {"a": x.t()}), ({"a": t, "b": t[:2]}, {"a": x, "b": x[:2]}),
             ([t], [x]), ({"a": 1}, {"a": 1})]
    for theirs, ours in cases:
        with pytest.raises(Exception) as expected:
            safetensors_torch.save(theirs)
        with pytest.raises(expected.type) as got:
            tinyres.safetensors.save(ours)
        assert str(got.value).strip()[:20] == str(expected.value).strip()[:20]
    with pytest.raises(TypeError):
        safetensors_torch.save({"a": t}, metadata={"a": 1})
    with pytest.raises(TypeError):
        tinyres.safetensors.save({"a": x}, metadata={"a": 1})


@pytest.mark.parametrize("bad", [b"12", b"\xff" * 8 + b"{}", b"\x04\0\0\0\0\0\0\0{x} ",
                                 "cut", "gap"])
def test_broken_buffers_are_refused_as_safetensors_does(bad):
    if bad == "cut":
        bad = safetensors_numpy.save({"a": np.ones(4, np.float32)})[:-3]
    elif bad == "gap":
        header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
        bad = struct.pack("<Q", len(header)) + header + bytes(8)
    with pytest.raises(Exception) as expected:
        safetensors_torch.load(bad)
    assert type(expected.value).__name__ == "SafetensorError"
    with pytest.raises(SafetensorError, match="Error while deserializing"):
        tinyres.safetensors.load(bad)


@pytest.mark.skipif(tinyres.cuda.is_available(), reason="a GPU is usable here")
def test_load_file_on_cuda_without_a_gpu_is_refused(tmp_path):
    tinyres.safetensors.save_file({"a": tinyres.ones(2)}, tmp_path / "a.safetensors")
    with pytest.raises(RuntimeError, match="was requested but"):
        tinyres.safetensors.load_file(tmp_path / "a.safetensors", device="cuda")
