"""What SGD and Adam share for fused=True (torch's fused implementation): torch's argument
rules and its device/dtype check, and the split of a group's tensors by device and dtype,
each part then updated by one call of kernels/fused_optim.py (Optimizer.step sends a fused
group to the optimizer's _fused_group)."""
import numpy as np


SUPPORTED_DEVICES = ["cpu", "cuda"]


def check_flags(fused, foreach, differentiable):
    """torch's RuntimeErrors for fused=True with differentiable=True or foreach=True."""
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def check_device_dtype(p):
    """torch's RuntimeError when a parameter cannot take the fused step: not a floating
    point tensor (or on a device without fused kernels)."""
    if p.array.dtype.kind != "f" or p.device.type not in SUPPORTED_DEVICES:
        raise RuntimeError("`fused=True` requires all the params to be floating point Tensors "
                           f"of supported devices: {SUPPORTED_DEVICES} but {p.dtype} and "
                           f"{p.device.type}")


def by_device_and_dtype(params):
    """{(device, dtype): [parameter, ...]} in the order of params (as torch's
    _group_tensors_by_device_and_dtype): each list is one fused call."""
    parts = {}
    for p in params:
        a = p.array
        device = None if isinstance(a, np.ndarray) else a.device.id     # CuPy: the GPU
        parts.setdefault((device, a.dtype), []).append(p)
    return parts


def mark_written(params):
    """Count an in-place write on each parameter (as p.add_() would)."""
    for p in params:
        p._version_counter.value += 1
