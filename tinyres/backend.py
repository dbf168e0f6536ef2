"""Devices: which array module (NumPy or CuPy) and which kernel module serve an array.

`device` is torch.device: a type ('cpu' or 'cuda') and an optional index ('cuda:1' is
a different device from 'cuda:0'). `resolve_device(device)` is the one helper every
factory calls for its `device=` argument: it accepts None, a string, an int or a device,
fills in the current CUDA index, and raises torch's kinds of error where CUDA cannot be
used. CuPy is imported lazily, only when a CUDA array or device is asked for, so tinyres
runs on machines without CuPy or a GPU. This is Chainer's `xp = get_array_module(x)`
idea: an op looks at its input and picks `xp` for plain array maths and `kernels_for(x)`
for custom kernels.

Every read of array values into Python goes through `to_host(a)` or `item(a)`, which
count it (tinyres/host_sync.py keeps the counts; `count_syncs()` reports them), and
`defer_check` records a check made on the device whose result is read later, at a read
the caller makes anyway or at `check_pending()`.
"""
import contextlib
import functools
import re

import numpy as np

from tinyres import host_sync

DEVICES = ("cpu", "cuda")
_DEVICE_STRING = re.compile(r"(?P<type>[a-z]+)(?::(?P<index>0|[1-9][0-9]*))?")


class CudaNotCompiledError(AssertionError, RuntimeError):
    """torch raises AssertionError("Torch not compiled with CUDA enabled") when it has no
    CUDA; tinyres's equivalent (no CuPy) is this, which is also a RuntimeError."""


class UnknownDeviceError(RuntimeError, ValueError):
    """A device string torch would refuse (a RuntimeError there; also a ValueError)."""


class device:
    """A device as torch spells it: device('cuda:0'), device('cuda', 1), device('cpu').

    Equal to another device of the same type and index (device('cuda') is not
    device('cuda:0'), as in torch) and never equal to a string. Immutable and hashable."""

    __slots__ = ("_type", "_index")

    def __init__(self, type, index=None):
        if isinstance(type, device):
            if index is not None:
                raise TypeError("device(): a device and an index cannot both be given")
            type, index = type.type, type.index
        elif isinstance(type, str):
            type, index = _parse(type, index)
        elif isinstance(type, int) and not isinstance(type, bool) and index is None:
            type, index = _accelerator(type)
        else:
            raise TypeError(f"device() received an invalid combination of arguments - got "
                            f"({_typename(type)}), expected (tinyres.device device), "
                            f"(str type, int index = None) or (int index)")
        object.__setattr__(self, "_type", type)
        object.__setattr__(self, "_index", index)

    def __setattr__(self, name, value):
        raise AttributeError(f"attribute {name!r} of 'tinyres.device' objects is not "
                             "writable")

    @property
    def type(self):
        """'cpu' or 'cuda'."""
        return self._type

    @property
    def index(self):
        """The device's number, or None when none was given."""
        return self._index

    def __str__(self):
        return self._type if self._index is None else f"{self._type}:{self._index}"

    def __repr__(self):
        if self._index is None:
            return f"device(type='{self._type}')"
        return f"device(type='{self._type}', index={self._index})"

    def __eq__(self, other):
        if not isinstance(other, device):
            return False                      # torch.device('cpu') == 'cpu' is False
        return (self._type, self._index) == (other._type, other._index)

    def __hash__(self):
        return hash((self._type, self._index))

    def __reduce__(self):
        return (device, (self._type, self._index))


def _typename(value):
    return "NoneType" if value is None else type(value).__name__


def _parse(text, index):
    """(type, index) from 'cpu', 'cuda', 'cuda:1' and an optional separate index."""
    match = _DEVICE_STRING.fullmatch(text)
    if match is None or match["type"] not in DEVICES:
        if match is not None or ":" not in text:
            raise UnknownDeviceError(
                f"unknown device {text!r}: Expected one of {', '.join(DEVICES)} device "
                f"type at start of device string: {text}")
        raise UnknownDeviceError(f"Invalid device string: {text!r}")
    parsed = None if match["index"] is None else int(match["index"])
    if index is not None:
        if parsed is not None:
            raise RuntimeError(f"type (string) must not include an index because index "
                               f"was passed explicitly: {text}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"device(): argument 'index' (position 2) must be int, not "
                            f"{_typename(index)}")
        if index < 0:
            raise RuntimeError("Device index must not be negative")
        parsed = int(index)
    return match["type"], parsed


def _accelerator(index):
    """device(0) means the accelerator (CUDA) number 0, as in torch."""
    if index < 0:
        raise RuntimeError("Device index must not be negative")
    if not cuda_is_available():
        raise RuntimeError("Cannot access accelerator device when none is available.")
    return "cuda", index


CPU = device("cpu")


def as_device(value):
    """A `device` from a device, a string or an int (nothing checked about CUDA)."""
    if isinstance(value, device):
        return value
    return _from_string(value) if isinstance(value, str) else device(value)


@functools.lru_cache(maxsize=64)
def _from_string(text):
    """device(text), parsed once per spelling (devices are immutable)."""
    return device(text)


def resolve_device(value=None):
    """The device a factory's `device=` argument names, ready to allocate on: None (and
    'cpu:N') is the CPU; 'cuda' gets the current CUDA device's index. Raises
    CudaNotCompiledError (an AssertionError, as torch's "not compiled with CUDA") without
    CuPy, and a RuntimeError when CuPy is there but no usable device (or no such index)."""
    dev = CPU if value is None else as_device(value)
    if dev.type == "cpu":
        return CPU                        # 'cpu:0' too: CPU tensors carry no index
    _require_cuda(value)
    count = _cupy().cuda.runtime.getDeviceCount()
    index = _cupy().cuda.Device().id if dev.index is None else dev.index
    if index >= count:
        raise RuntimeError(f"CUDA error: invalid device ordinal (device {str(value)!r} was "
                           f"requested, {count} CUDA device(s) visible)")
    return device("cuda", index)


check_device = resolve_device   # the older name, kept for callers


def _require_cuda(requested="cuda"):
    """Raise torch's kind of error when CUDA cannot be used, saying what is missing."""
    reason = cuda_unusable_reason()
    if reason is None:
        return
    text = f"device {str(requested)!r} was requested but {reason}"
    if not _cupy_importable():
        raise CudaNotCompiledError(f"tinyres has no CUDA support here: {text}")
    raise RuntimeError(text)


@functools.lru_cache(maxsize=None)
def _cupy_importable():
    try:
        _cupy()
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _cupy():
    """Import CuPy once; raise ImportError with a hint if it is missing."""
    try:
        import cupy
    except ImportError as err:
        raise ImportError(
            "CUDA needs CuPy: install it with `pip install cupy-cuda13x` "
            "(or the wheel for your CUDA version)") from err
    return cupy


@functools.lru_cache(maxsize=None)
def cuda_unusable_reason():
    """Why CUDA cannot be used here, as a sentence; None when it can."""
    try:
        cupy = _cupy()
    except ImportError as err:
        return str(err)
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device is visible"
        # A tiny computation proves the driver and the runtime compiler work.
        a = cupy.arange(4, dtype=cupy.float32)
        if float((a * 2).sum()) != 12.0:
            return "a smoke computation on the GPU gave a wrong result"
    except Exception as err:  # any driver/runtime failure means "not usable"
        return f"CUDA is not usable: {type(err).__name__}: {err}"
    return None


def cuda_is_available():
    """True when CuPy, a driver and a device all work; never raises."""
    return cuda_unusable_reason() is None


def cuda_device_count():
    """How many CUDA devices can be used (0 where CUDA is not usable); never raises."""
    return _cupy().cuda.runtime.getDeviceCount() if cuda_is_available() else 0


def is_cuda_array(a):
    """True for a CuPy array (checked without importing CuPy; a NumPy array at once)."""
    return type(a) is not np.ndarray and type(a).__module__.startswith("cupy")


def device_of(a):
    """The device holding an array: device('cuda', n) for a CuPy array on GPU n,
    device('cpu') otherwise."""
    return _cuda(a.device.id) if is_cuda_array(a) else CPU


@functools.lru_cache(maxsize=None)
def _cuda(index):
    return device("cuda", index)


def xp_for(dev):
    """The array module of a device: numpy for the CPU, cupy for CUDA."""
    return _cupy() if as_device(dev).type == "cuda" else np


def on_device(dev):
    """A context in which CuPy allocates on `dev` (cupy.cuda.Device); nothing for the
    CPU. Factories allocate inside it so that 'cuda:1' arrays live on GPU 1."""
    dev = as_device(dev)
    if dev.type != "cuda" or dev.index is None:
        return contextlib.nullcontext()
    return _cupy().cuda.Device(dev.index)


def get_array_module(a):
    """numpy or cupy, whichever holds `a`."""
    return _cupy() if is_cuda_array(a) else np


def full(xp, shape, value, dtype):
    """xp.full(shape, value, dtype), value cast to dtype as np.full casts it (an array
    broadcast to shape too). A large host array is a block of the CPU kernels' buffer cache
    (tinyres/kernels/buffers.py), so that ops written in plain NumPy (padding, indexing's
    and the mean's gradients) reuse the last step's memory as the kernels do, instead of
    faulting fresh pages in under glibc's default malloc; on the GPU, CuPy's own pool."""
    if xp is not np:
        return xp.full(shape, value, dtype=dtype)
    from tinyres.kernels import buffers
    out = buffers.empty(shape, dtype)
    np.copyto(out, value, casting="unsafe")
    return out


def kernels_for(a):
    """The kernel module for an array: the layer chosen with tinyres.kernels.use(), or by
    the array's device, Numba kernels (cpu.py) on the CPU and CUDA kernels on the GPU."""
    from tinyres import kernels
    layer = kernels.chosen()
    if is_cuda_array(a):
        if layer in ("reference", "cpu"):
            raise RuntimeError(f"kernel layer {layer!r} runs on the CPU, but this array is "
                               "on the GPU: choose 'cuda' or move the tensors with .cpu()")
        from tinyres.kernels import cuda
        return cuda
    if layer == "cuda":
        raise RuntimeError("kernel layer 'cuda' runs on the GPU, but this array is on the "
                           "CPU: move the model and the data with .cuda()")
    if layer == "reference":
        from tinyres.kernels import reference
        return reference
    from tinyres.kernels import cpu
    return cpu


def to_device(a, dev):
    """Copy an array to a device (a device, 'cpu', 'cuda' or 'cuda:N'): NumPy for the
    CPU, CuPy on GPU N for 'cuda:N' (the current GPU for 'cuda'); no copy when it is
    already there."""
    target = resolve_device(dev)
    if target == device_of(a):
        return a
    if target.type == "cpu":
        return to_host(a)
    with on_device(target):
        return _cupy().array(a, copy=True)


def new_array(dev, make):
    """`make(xp)` run for the device a `device=` argument names (see resolve_device):
    make(numpy) for the CPU, make(cupy) with GPU n current for 'cuda:n'. The helper a
    factory calls: new_array(device, lambda xp: xp.zeros(shape, dtype))."""
    dev = resolve_device(dev)
    with on_device(dev):
        return make(xp_for(dev))


def random_sample(like, shape):
    """Uniform float64 draws in [0, 1) of `shape` on the device of array `like`: NumPy's
    global generator on the CPU; on a GPU, CuPy's Philox generator for that device, reseeded
    from NumPy's global stream for every draw (so tinyres.manual_seed fixes both)."""
    if not is_cuda_array(like):
        return np.random.random_sample(shape)
    seed = int(np.random.randint(0, 2 ** 63 - 1, dtype=np.int64))
    with _cupy().cuda.Device(like.device.id):
        generator = _philox(like.device.id)
        generator.seed(seed)
        return generator.random_sample(shape, dtype=np.float64)


@functools.lru_cache(maxsize=None)
def _philox(index):
    """CuPy's counter-based generator on GPU `index` (cheap to reseed: no state kernel)."""
    cupy = _cupy()
    with cupy.cuda.Device(index):
        return cupy.random.RandomState(method=cupy.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)


# ----- reads into Python, counted; checks made on the device and read later ----------------
def to_host(a):
    """The values of an array as a NumPy array: a copy from the GPU (a host
    synchronisation), the array itself on the CPU. Counted as one host read on either;
    then the device's pending checks (see defer_check) are read and raised."""
    host_sync.count_read()
    out = a.get() if is_cuda_array(a) else a
    _after_read(a)
    return out


def item(a):
    """The one value of an array as a Python scalar; counted as to_host is."""
    host_sync.count_read()
    value = a.item()
    _after_read(a)
    return value


def _after_read(a):
    """Raise the pending checks of a's device: the read has just waited for the device,
    so reading them adds no synchronisation (and is not counted)."""
    if host_sync.tally().pending:
        _raise_pending(device_of(a))


def defers(a):
    """Whether a check on array `a` is deferred (by default: when `a` is on a GPU)."""
    return host_sync.defers(is_cuda_array(a))


def defer_check(kind, record, make_error):
    """Remember a check made on the device, without reading it. `record` is an int64
    vector on the array's device whose first element is nonzero when the check failed;
    make_error(values) builds the exception from a failed record's values (a list of
    ints). Per kind and device the first failed record is kept, chosen on the device."""
    key = (kind, device_of(record))
    pending = host_sync.tally().pending
    if key in pending:
        xp = get_array_module(record)
        earlier = pending[key][0]
        record = xp.where(earlier[0] != 0, earlier, record)
    pending[key] = (record, make_error)


def check_pending(dev=None):
    """Read the pending checks (of device `dev`, or of every device), one counted host read
    per device, forget them, and raise the first failure's exception."""
    devices = {d for _, d in host_sync.tally().pending}
    for d in sorted(devices, key=str) if dev is None else [resolve_device(dev)]:
        if d in devices:
            host_sync.count_read()
            _raise_pending(d)


def _raise_pending(dev):
    """Read dev's pending records in one transfer, forget them, raise the first failure."""
    pending = host_sync.tally().pending
    keys = [k for k in pending if k[1] == dev]
    if not keys:
        return
    records = [pending.pop(k) for k in keys]
    xp = get_array_module(records[0][0])
    flat = xp.concatenate([r for r, _ in records])
    values = (flat.get() if is_cuda_array(flat) else flat).tolist()
    start = 0
    for record, make_error in records:
        part, start = values[start:start + record.size], start + record.size
        if part[0]:
            raise make_error(part)
