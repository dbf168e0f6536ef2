"""tinyres.safetensors: the safetensors format, read and written in NumPy, with the API of
safetensors.torch (save_file, load_file, save, load) for dicts of tinyres Tensors.

The format (https://huggingface.co/docs/safetensors), as the reference writer produces it:

    8 bytes   N, unsigned 64-bit little-endian: the header's length
    N bytes   UTF-8 JSON: {"__metadata__": {str: str}, (optional, first)
                           name: {"dtype": "F32", "shape": [2, 3],
                                  "data_offsets": [begin, end]}, ...}
              padded with spaces to a multiple of 8 bytes
    the rest  the tensors' bytes, C order, little-endian, back to back; offsets are
              relative to the start of this section

The reference writer orders tensors by dtype size, largest first (U64, I64, F64, F32,
U32, I32, F16, U16, I16, I8, U8, BOOL), then by name, so every tensor is aligned to its
item size; save() does the same, and its bytes equal safetensors.numpy.save's. load()
checks what the reference reader checks: the header's size and JSON, known dtypes,
offsets that cover the data exactly, without gaps or overlaps.

Dtypes: F64 F32 F16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL, i.e. every one NumPy has. BF16
and the float8 types have no NumPy dtype (tinyres has no bfloat16): loading a file that
holds one raises SafetensorError naming the tensor; convert it first, e.g. with
safetensors.torch and `.float()`.
"""
import json
import math
import os
import struct

import numpy as np

from tinyres import backend

MAX_HEADER = 100_000_000
ALIGN = 8
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "|i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
          "U8": "|u1", "BOOL": "|b1"}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
NO_NUMPY_DTYPE = ("BF16", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
                  "C64")
# the reference's Dtype enum order; the writer sorts by it, largest first
RANK = ("BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64",
        "I64", "U64")


class SafetensorError(Exception):
    """A safetensors file or buffer that cannot be read (safetensors' SafetensorError)."""


# ----- writing ---------------------------------------------------------------------------
def _check_tensors(tensors):
    """safetensors.torch's checks before a save: a dict of Tensors, none sharing memory."""
    from tinyres.tensor import Tensor
    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, tinyres.Tensor] but received "
                         f"{type(tensors)}")
    for name, value in tensors.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"Key `{name}` is invalid, expected tinyres.Tensor but "
                             f"received {type(value)}")
    failing = [set(names) for names in _shared_groups(tensors) if len(names) > 1]
    if failing:
        raise RuntimeError(
            f"Some tensors share memory, this will lead to duplicate memory on disk and "
            f"potential differences when loading them again: {failing}. A potential way "
            f"to correctly save your model is to save each shared tensor once and "
            f"restore the others at load time (tied weights).")


def _shared_groups(tensors):
    """Names grouped by the memory (the root array) their tensors view; empty ones apart."""
    groups = {}
    for name, value in tensors.items():
        root = value.array
        while getattr(root, "base", None) is not None and hasattr(root.base, "shape"):
            root = root.base
        if value.numel() == 0:
            continue
        groups.setdefault((backend.device_of(root), id(root)), []).append(name)
    return sorted(groups.values())


def _array_of(name, value):
    if not value.array.flags.c_contiguous:
        raise ValueError(
            f"You are trying to save a non contiguous tensor: `{name}` which is not "
            f"allowed. It either means you are trying to save tensors which are reference "
            f"of each other in which case it's recommended to save only the full tensors, "
            f"and reslice at load time, or simply call `.contiguous()` on your tensor to "
            f"pack it before saving.")
    array = value.numpy()
    if array.dtype.newbyteorder("=") not in NAMES:
        raise ValueError(f"Key `{name}`: dtype {array.dtype} has no safetensors name "
                         f"(supported: {', '.join(DTYPES)})")
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def _prepare(tensors, metadata):
    """(header bytes with its length prefix, [arrays in file order])."""
    _check_tensors(tensors)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError(f"metadata must be a dict of str to str, got {metadata!r}")
    arrays = {name: _array_of(name, value) for name, value in tensors.items()}
    order = sorted(arrays, key=lambda n: (-RANK.index(_dtype_name(arrays[n])), n))
    header = {} if metadata is None else {"__metadata__": metadata}
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {"dtype": _dtype_name(array), "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % ALIGN)
    return struct.pack("<Q", len(text)) + text, [arrays[n] for n in order]


def _dtype_name(array):
    return NAMES[array.dtype.newbyteorder("=")]


def save(tensors, metadata=None):
    """The safetensors bytes of a dict of Tensors (contiguous, not sharing memory);
    `metadata` is an optional dict of str to str stored as "__metadata__"."""
    head, arrays = _prepare(tensors, metadata)
    return b"".join([head] + [a.tobytes() for a in arrays])


def save_file(tensors, filename, metadata=None):
    """Write save(tensors, metadata) to `filename`, atomically (temporary file, rename)."""
    from tinyres.checkpoint import atomic_write
    head, arrays = _prepare(tensors, metadata)
    with atomic_write(filename) as f:
        f.write(head)
        for array in arrays:
            f.write(array.tobytes())


# ----- reading ---------------------------------------------------------------------------
def _parse_header(data):
    """(header dict without __metadata__, metadata or None, start of the data)."""
    if len(data) < 8:
        raise SafetensorError("Error while deserializing: header too small (the "
                              f"buffer has {len(data)} bytes, the size field needs 8)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER:
        raise SafetensorError(f"Error while deserializing: header too large ({n} "
                              f"bytes, at most {MAX_HEADER})")
    if 8 + n > len(data):
        raise SafetensorError(f"Error while deserializing: invalid header length (the "
                              f"header is {n} bytes, the buffer has {len(data) - 8} after "
                              f"the size field: truncated, or not a safetensors file)")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except ValueError as err:
        raise SafetensorError(f"Error while deserializing: invalid JSON in header: "
                              f"{err}") from err
    if not isinstance(header, dict):
        raise SafetensorError("Error while deserializing: invalid JSON in header: "
                              "the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    return header, metadata, 8 + n


def _check_layout(header, size):
    """The reference reader's checks: offsets cover the data exactly, sizes agree."""
    spans = []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (TypeError, KeyError, ValueError) as err:
            raise SafetensorError(f"Error while deserializing: invalid JSON in header: "
                                  f"tensor {name!r}: {err!r}") from err
        if dtype in NO_NUMPY_DTYPE:
            raise SafetensorError(f"tensor {name!r} has dtype {dtype}, which NumPy (and so "
                                  f"tinyres) has no type for; convert it to F32 first")
        if dtype not in DTYPES:
            raise SafetensorError(f"tensor {name!r} has an unknown dtype {dtype!r}")
        count = math.prod(shape)
        if end - begin != count * np.dtype(DTYPES[dtype]).itemsize or begin > end:
            raise SafetensorError(f"Error while deserializing: invalid tensor info "
                                  f"(tensor {name!r}: shape {shape} of {dtype} needs "
                                  f"{count * np.dtype(DTYPES[dtype]).itemsize} bytes, "
                                  f"data_offsets give {end - begin})")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise SafetensorError(f"Error while deserializing: invalid offset for tensor "
                                  f"{name!r} (data_offsets must follow each other with "
                                  f"no gap or overlap)")
        position = end
    if position != size:
        raise SafetensorError(f"Error while deserializing: incomplete metadata, file not "
                              f"fully covered (the tensors cover {position} bytes, the "
                              f"data section has {size}: truncated, or not a safetensors "
                              f"file)")


def _decode(data, device):
    header, _, start = _parse_header(data)
    _check_layout(header, len(data) - start)
    out = {}
    for name in sorted(header, key=lambda n: (header[n]["data_offsets"], n)):
        info = header[name]
        dtype = np.dtype(DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        array = np.frombuffer(data, dtype=dtype, count=math.prod(info["shape"]),
                              offset=start + begin).reshape(info["shape"])
        out[name] = _tensor(array.astype(dtype.newbyteorder("="), copy=True), device)
    return out


def _tensor(array, device):
    from tinyres.tensor import Tensor
    return Tensor(backend.to_device(array, device))


def load(data):
    """A dict name -> Tensor (on the CPU, in the order of their data in the buffer, as
    safetensors' load_file gives them) from safetensors bytes."""
    return _decode(bytes(data), backend.device("cpu"))


def load_file(filename, device="cpu"):
    """A dict name -> Tensor on `device` (a device, a string or a CUDA index), read from a
    safetensors file."""
    device = backend.resolve_device(device)
    with open(os.fspath(filename), "rb") as f:
        return _decode(f.read(), device)

