"""Devices: which array module (NumPy or CuPy) and which kernel module serve an array.

CuPy is imported lazily, only when a CUDA array or device is asked for, so tinyres runs on
machines without CuPy or a GPU. This is Chainer's `xp = get_array_module(x)` idea: an op looks
at its input and picks `xp` for plain array maths and `kernels_for(x)` for custom kernels.
"""
import functools

import numpy as np

DEVICES = ("cpu", "cuda")


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


def check_device(device):
    """Normalise a device name ('cpu', 'cuda', 'cuda:0') and make sure it can be used."""
    name = str(device).split(":")[0]
    if name not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")
    if name == "cuda":
        reason = cuda_unusable_reason()
        if reason is not None:
            raise RuntimeError(f"device 'cuda' was requested but {reason}")
    return name


def is_cuda_array(a):
    """True for a CuPy array (checked without importing CuPy)."""
    return type(a).__module__.startswith("cupy")


def device_of(a):
    """'cuda' for a CuPy array, 'cpu' otherwise."""
    return "cuda" if is_cuda_array(a) else "cpu"


def xp_for(device):
    """The array module of a device: numpy for 'cpu', cupy for 'cuda'."""
    return _cupy() if device == "cuda" else np


def get_array_module(a):
    """numpy or cupy, whichever holds `a`."""
    return _cupy() if is_cuda_array(a) else np


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


def to_device(a, device):
    """Copy an array to 'cpu' (NumPy) or 'cuda' (CuPy); no copy when it is already there."""
    if device == device_of(a):
        return a
    if device == "cuda":
        return _cupy().asarray(a)
    return a.get()
