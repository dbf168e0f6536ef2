"""tinyres.save and tinyres.load: torch.save/torch.load's API in a format that is safe to
load (nothing is ever unpickled) and simple enough to read by hand.

    tinyres.save(model.state_dict(), "model.tnr")
    model.load_state_dict(tinyres.load("model.tnr"))
    tinyres.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, f)

What can be saved: Tensors (and nn.Parameters), NumPy arrays and NumPy scalars, None,
bool, int, float, str, tinyres.device, NumPy dtypes, and lists, tuples, dicts and
OrderedDicts of these (dict keys may be None, bools, numbers, strings or tuples of them).
Anything else (a Module, a function, a class instance) is refused with a TypeError: torch
pickles it, tinyres cannot without pickle (save its state_dict() instead).

The file, all integers little-endian:

    8 bytes   magic b"\\x89TINYRS\\n"
    8 bytes   N, the header's length (unsigned 64-bit)
    N bytes   the header: UTF-8 JSON, padded with spaces so the data starts at a
              multiple of 64 bytes from the start of the file
    D bytes   the data: each array's raw bytes (C order, little-endian), at offsets
              that are multiples of 64, zero bytes between them

The header is {"format": "tinyres.save", "version": 1, "data_size": D,
"data_sha256": <hex of the data section>, "arrays": [...], "object": <tree>}. Each entry
of "arrays" is {"kind": "tensor" | "parameter" | "ndarray" | "scalar", "dtype": NumPy's
dtype string ("<f4", "|b1", ...), "shape": [...], "offset": o, "nbytes": n, "device":
"cpu" | "cuda:N", "requires_grad": bool}. The tree writes every value as a tagged JSON
list: ["none"], ["bool", true], ["int", 3], ["float", "0.1"] (repr, so nan and inf
survive), ["str", "..."], ["list", [...]], ["tuple", [...]], ["dict", [[key, value],
...]], ["odict", [...]], ["array", i] (entry i of "arrays"), ["device", "cuda:0"],
["dtype", "<f4"].

Like torch, one Tensor object saved twice is loaded as one object; unlike torch, tensors
that merely share memory (a view and its base) are saved as separate arrays and come back
as separate memory. Tensors load with their dtype and requires_grad (as torch keeps it),
on the device they were saved from unless map_location says otherwise. A path is written
atomically (temporary file, fsync, rename: see tinyres.checkpoint.atomic_write).
"""
import hashlib
import json
import math
import os
import struct
from collections import OrderedDict

import numpy as np

from tinyres import backend

MAGIC = b"\x89TINYRS\n"
FORMAT = "tinyres.save"
VERSION = 1
ALIGN = 64
MAX_HEADER = 100_000_000


class SerializationError(RuntimeError):
    """A file that tinyres.load cannot read: not a tinyres file, truncated or corrupt."""


# ----- saving ----------------------------------------------------------------------------
class _Writer:
    """Walks the object, turning it into the JSON tree and a list of arrays."""

    def __init__(self):
        self.arrays, self.entries, self.seen = [], [], {}

    def add(self, kind, array, device="cpu", requires_grad=False):
        array = np.asarray(array)
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        if array.dtype.hasobject or array.dtype.kind not in "biufc":
            raise TypeError(f"save: arrays of dtype {array.dtype} cannot be saved "
                            f"(numbers and bools only)")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        self.arrays.append(array)
        self.entries.append({"kind": kind, "dtype": array.dtype.str,
                             "shape": list(array.shape), "device": str(device),
                             "requires_grad": bool(requires_grad)})
        return ["array", len(self.arrays) - 1]

    def tree(self, obj, where):
        from tinyres.nn.module import Parameter
        from tinyres.tensor import Tensor
        kind = type(obj)
        if obj is None:
            return ["none"]
        if kind is bool:
            return ["bool", obj]
        if kind is int:
            return ["int", obj]
        if kind is float:
            return ["float", repr(obj)]
        if kind is str:
            return ["str", obj]
        if isinstance(obj, Tensor):
            if id(obj) not in self.seen:
                self.seen[id(obj)] = (obj, self.add(
                    "parameter" if isinstance(obj, Parameter) else "tensor",
                    obj.numpy(), obj.device, obj.requires_grad))
            return self.seen[id(obj)][1]
        if kind is np.ndarray:
            return self.add("ndarray", obj)
        if isinstance(obj, np.generic):
            return self.add("scalar", np.asarray(obj))
        if kind is backend.device:
            return ["device", str(obj)]
        if kind is np.dtype or (kind is type and issubclass(obj, np.generic)):
            return ["dtype", np.dtype(obj).str]
        if kind in (list, tuple):
            return [kind.__name__, [self.tree(v, f"{where}[{i}]") for i, v in enumerate(obj)]]
        if kind in (dict, OrderedDict):
            return ["dict" if kind is dict else "odict",
                    [[self.key(k, where), self.tree(v, f"{where}[{k!r}]")]
                     for k, v in obj.items()]]
        raise TypeError(f"save: cannot save {where} of type {kind.__module__}.{kind.__name__}"
                        f": tinyres.save stores tensors, NumPy arrays, numbers, strings, "
                        f"bools, None and lists/tuples/dicts of them, never pickles (save a "
                        f"module's or an optimizer's state_dict() instead)")

    def key(self, k, where):
        if not _plain_key(k):
            raise TypeError(f"save: dict key {k!r} in {where} is a {type(k).__name__}; "
                            f"keys must be None, bools, numbers, strings or tuples of them")
        return self.tree(k, f"a key of {where}")


def _plain_key(k):
    """Whether `k` is None, a bool, int, float, str or a tuple of such keys."""
    if type(k) is tuple:
        return all(_plain_key(item) for item in k)
    return k is None or type(k) in (bool, int, float, str)


def _layout(entries, arrays):
    """Give each entry its offset (a multiple of ALIGN) and size; the data size."""
    offset = 0
    for entry, array in zip(entries, arrays):
        offset = -(-offset // ALIGN) * ALIGN
        entry["offset"], entry["nbytes"] = offset, array.nbytes
        offset += array.nbytes
    return offset


def _data_chunks(entries, arrays):
    """The data section as byte strings (padding between arrays included)."""
    position = 0
    for entry, array in zip(entries, arrays):
        if entry["offset"] > position:
            yield bytes(entry["offset"] - position)
        yield memoryview(array.reshape(-1)).cast("B") if array.size else b""
        position = entry["offset"] + entry["nbytes"]


def _encode(obj):
    """(prefix bytes: magic, length and header; the data chunks) for `obj`."""
    writer = _Writer()
    tree = writer.tree(obj, "obj")
    size = _layout(writer.entries, writer.arrays)
    digest = hashlib.sha256()
    for chunk in _data_chunks(writer.entries, writer.arrays):
        digest.update(chunk)
    header = json.dumps({"format": FORMAT, "version": VERSION, "data_size": size,
                         "data_sha256": digest.hexdigest(), "arrays": writer.entries,
                         "object": tree}, ensure_ascii=False).encode("utf-8")
    header += b" " * (-(len(MAGIC) + 8 + len(header)) % ALIGN)
    prefix = MAGIC + struct.pack("<Q", len(header)) + header
    return prefix, _data_chunks(writer.entries, writer.arrays)


def save(obj, f):
    """Write `obj` (see the module docstring for what it may hold) to `f`: a path (str or
    os.PathLike), written atomically, or a binary file object open for writing."""
    prefix, chunks = _encode(obj)
    if isinstance(f, (str, os.PathLike)):
        from tinyres.checkpoint import atomic_write
        with atomic_write(f) as out:
            _write(out, prefix, chunks)
    elif hasattr(f, "write"):
        _write(f, prefix, chunks)
    else:
        raise TypeError(f"save: f must be a path or a binary file object, got "
                        f"{type(f).__name__}")


def _write(out, prefix, chunks):
    out.write(prefix)
    for chunk in chunks:
        out.write(chunk)


# ----- loading ---------------------------------------------------------------------------
def load(f, map_location=None, pickle_module=None, *, weights_only=True, mmap=None):
    """Read what save() wrote, from a path or a binary file object open for reading.

    map_location: None (each tensor where it was saved), a device or device string (every
    tensor there), or a dict mapping saved locations to new ones ({'cuda:1': 'cpu'}).
    weights_only and mmap are accepted for torch's signature: this format never holds
    code, so weights_only=False loads the same things, and files are always read whole.
    Raises SerializationError for a file that is not a tinyres file, is truncated or is
    corrupt (a PyTorch .pt file included: those are pickles, out of scope)."""
    if pickle_module is not None:
        raise TypeError("load: tinyres never unpickles, so pickle_module cannot be used")
    if callable(map_location):
        raise TypeError("load: a callable map_location is not supported; pass a device, "
                        "a device string or a dict of them")
    if isinstance(f, (str, os.PathLike)):
        name = os.fspath(f)
        with open(name, "rb") as stream:
            return _decode(stream, name, map_location)
    if hasattr(f, "read"):
        return _decode(f, getattr(f, "name", "<file object>"), map_location)
    raise TypeError(f"load: f must be a path or a binary file object, got "
                    f"{type(f).__name__}")


def _what_it_is(head):
    """Why a file that does not start with MAGIC is not ours, as a phrase."""
    if head.startswith(b"PK\x03\x04"):
        return ("a zip archive (a PyTorch torch.save file, or an .npz such as "
                "tinyres.checkpoint.save_checkpoint writes: read those with "
                "tinyres.checkpoint.load_checkpoint). PyTorch .pt files are pickles and "
                "out of scope: tinyres.load never unpickles; convert the weights with "
                "safetensors.torch.save_file and read them with "
                "tinyres.safetensors.load_file")
    if head[:1] == b"\x80":
        return ("a pickle (a legacy PyTorch .pt file?): tinyres.load never unpickles; "
                "convert the weights with safetensors.torch.save_file and read them with "
                "tinyres.safetensors.load_file")
    if len(head) >= 9 and head[8:9] == b"{":
        return "a safetensors file: read it with tinyres.safetensors.load_file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file: read it with numpy.load"
    return f"not a tinyres.save file: it starts with {head[:8]!r}, expected {MAGIC!r}"


def _read_exact(stream, n, name, what):
    data = stream.read(n)
    if len(data) != n:
        raise SerializationError(f"load: {name!r} is truncated: {what} needs {n} bytes, "
                                 f"the file has {len(data)} left")
    return data


def _read_header(stream, name):
    head = stream.read(16)
    if not head:
        raise SerializationError(f"load: {name!r} is empty (0 bytes)")
    if len(head) < len(MAGIC) and MAGIC.startswith(head):
        raise SerializationError(f"load: {name!r} is truncated: it ends inside the magic "
                                 f"bytes ({len(head)} of {len(MAGIC)})")
    if not head.startswith(MAGIC):
        raise SerializationError(f"load: {name!r} is {_what_it_is(head)}")
    if len(head) < 16:
        raise SerializationError(f"load: {name!r} is truncated: it ends inside the header "
                                 f"length ({len(head)} of 16 bytes)")
    (length,) = struct.unpack("<Q", head[8:])
    if length > MAX_HEADER:
        raise SerializationError(f"load: {name!r} is corrupt: its header length is "
                                 f"{length} bytes (at most {MAX_HEADER})")
    raw = _read_exact(stream, length, name, "the header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as err:
        raise SerializationError(f"load: {name!r} is corrupt: its header is not valid "
                                 f"JSON ({err})") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SerializationError(f"load: {name!r} has no {FORMAT!r} header")
    if header.get("version") != VERSION:
        raise SerializationError(f"load: {name!r} is version {header.get('version')!r} of "
                                 f"the format; this tinyres reads version {VERSION}")
    return header


def _read_data(stream, name, header):
    size = header["data_size"]
    data = bytearray(size)
    got = stream.readinto(data) if hasattr(stream, "readinto") else None
    if got is None:
        chunk = stream.read(size)
        got = len(chunk)
        data[:got] = chunk
    if got != size:
        raise SerializationError(f"load: {name!r} is truncated: the header announces "
                                 f"{size} bytes of tensor data, the file holds {got}")
    if hashlib.sha256(data).hexdigest() != header["data_sha256"]:
        raise SerializationError(f"load: {name!r} is corrupt: the SHA-256 of its tensor "
                                 f"data does not match the one in its header")
    return data


def _decode(stream, name, map_location):
    header = _read_header(stream, name)
    data = _read_data(stream, name, header)
    try:
        arrays = [_array(entry, data) for entry in header["arrays"]]
        return _Reader(arrays, header["arrays"], map_location).value(header["object"])
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise SerializationError(f"load: {name!r} is corrupt: its header does not describe "
                                 f"valid contents ({type(err).__name__}: {err})") from err


def _array(entry, data):
    dtype = np.dtype(entry["dtype"])
    if dtype.hasobject or dtype.kind not in "biufc":
        raise ValueError(f"dtype {dtype} is not a number type")
    shape = tuple(int(n) for n in entry["shape"])
    start, nbytes = int(entry["offset"]), int(entry["nbytes"])
    if nbytes != math.prod(shape) * dtype.itemsize or start < 0 or start + nbytes > len(data):
        raise ValueError(f"array of shape {shape} and dtype {dtype} at bytes "
                         f"{start}..{start + nbytes} does not fit the data")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


class _Reader:
    """Rebuilds the saved object from the JSON tree and the arrays."""

    def __init__(self, arrays, entries, map_location):
        self.arrays, self.entries, self.location = arrays, entries, map_location
        self.made = {}

    def value(self, node):
        tag = node[0]
        if tag == "none":
            return None
        if tag in ("bool", "int", "str"):
            expected = {"bool": bool, "int": int, "str": str}[tag]
            if type(node[1]) is not expected:
                raise TypeError(f"a {tag} node holds {node[1]!r}")
            return node[1]
        if tag == "float":
            return float(node[1])
        if tag in ("list", "tuple"):
            items = [self.value(v) for v in node[1]]
            return items if tag == "list" else tuple(items)
        if tag in ("dict", "odict"):
            pairs = [(self.value(k), self.value(v)) for k, v in node[1]]
            return dict(pairs) if tag == "dict" else OrderedDict(pairs)
        if tag == "array":
            index = int(node[1])
            if index not in self.made:
                self.made[index] = self.array(index)
            return self.made[index]
        if tag == "device":
            return backend.device(node[1])
        if tag == "dtype":
            return np.dtype(node[1])
        raise ValueError(f"unknown node {tag!r}")

    def array(self, index):
        entry, array = self.entries[index], self.arrays[index]
        kind = entry["kind"]
        if kind == "ndarray":
            return array
        if kind == "scalar":
            return array[()]
        if kind not in ("tensor", "parameter"):
            raise ValueError(f"unknown array kind {kind!r}")
        from tinyres.nn.module import Parameter
        from tinyres.tensor import Tensor
        moved = backend.to_device(array, self.target(entry["device"]))
        if kind == "parameter":
            return Parameter(moved, requires_grad=bool(entry["requires_grad"]))
        return Tensor(moved, requires_grad=bool(entry["requires_grad"]))

    def target(self, saved):
        """Where a tensor saved on `saved` goes, following map_location."""
        location = self.location
        if isinstance(location, dict):
            location = location.get(saved, saved)
        location = saved if location is None else location
        if backend.as_device(location).type == "cuda" and not backend.cuda_is_available():
            raise SerializationError(
                f"Attempting to deserialize a tensor on a CUDA device ({saved}) but "
                f"tinyres.cuda.is_available() is False: {backend.cuda_unusable_reason()} "
                f"If you are running on a CPU-only machine, use tinyres.load with "
                f"map_location=tinyres.device('cpu') to load the tensors on the CPU.")
        return backend.resolve_device(location)

