"""Moving a tensor between devices, differentiably (torch's `x.to('cuda')`), and the
argument parsing that Tensor.to, Tensor.cuda and Module.to share.

The copy is an op like any other: its output is a new tensor on the target device whose
gradient flows back to the input on the source device, so `w.cuda()` of a leaf that
requires grad is not a leaf (as in torch), and `loss.backward()` on the GPU fills the
CPU tensor's `.grad`.
"""
import numpy as np

from tinyres import backend
from tinyres.autograd import Function


class ToDevice(Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.source = backend.device_of(a)
        return backend.to_device(a, device)

    @staticmethod
    def backward(ctx, grad_out):
        # d to(a, device)/da = I, the gradient copied back to a's device
        return backend.to_device(grad_out, ctx.source)


def to_device(a, device):
    """`a` on `device` (a tinyres.device, already resolved); `a` itself when it is there."""
    return a if a.device == device else ToDevice.apply(a, device=device)


def cuda_device(device=None):
    """The device `.cuda(device)` means: the current CUDA device for None, 'cuda:N' for an
    index N; a device that is not CUDA is refused, as torch does."""
    if device is None:
        return "cuda"
    if isinstance(device, int) and not isinstance(device, bool):
        return backend.device(device)         # the accelerator number `device`, as torch
    if backend.as_device(device).type != "cuda":
        raise RuntimeError(f"Invalid device, must be cuda device (got {device!r})")
    return device


def _is_dtype(value):
    return isinstance(value, np.dtype) or (isinstance(value, type) and (
        issubclass(value, np.generic) or value in (float, int, bool)))


def _device_or_dtype(op, value):
    """A positional argument of to(): a device (string, int, device) or a dtype."""
    if _is_dtype(value):
        return None, np.dtype(value)
    if isinstance(value, str):
        try:
            return backend.resolve_device(value), None
        except backend.UnknownDeviceError:
            try:
                return None, np.dtype(value)      # to('float64'), NumPy's dtype names
            except TypeError:
                pass
            raise
    if isinstance(value, (backend.device, int)) and not isinstance(value, bool):
        return backend.resolve_device(value), None
    raise TypeError(f"{op}() received an invalid combination of arguments - got "
                    f"({type(value).__name__}), expected a device, a dtype or a Tensor")


def parse_to_args(op, args, kwargs):
    """(device or None, dtype or None, copy) from the arguments of torch's Tensor.to():
    (device=None, dtype=None, non_blocking=False, copy=False), (dtype, non_blocking=False,
    copy=False) or (other_tensor, non_blocking=False, copy=False). non_blocking and
    memory_format are accepted and have no effect."""
    kwargs = dict(kwargs)
    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy", "memory_format"}
    if unknown:
        raise TypeError(f"{op}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    args = list(args)
    device = dtype = None
    from tinyres.tensor import Tensor
    if args and isinstance(args[0], Tensor):
        other = args.pop(0)
        device, dtype = other.device, other.dtype
    elif args and not isinstance(args[0], bool):
        device, dtype = _device_or_dtype(op, args.pop(0))
        if device is not None and args and not isinstance(args[0], bool):
            extra, dtype = _device_or_dtype(op, args.pop(0))
            if extra is not None or dtype is None:
                raise TypeError(f"{op}() received an invalid combination of arguments - "
                                f"got (device, device): the second one must be a dtype")
    if len(args) > 2:
        raise TypeError(f"{op}() takes at most 4 positional arguments")
    flags = dict(zip(("non_blocking", "copy"), args))
    if "device" in kwargs and kwargs["device"] is not None:
        device = backend.resolve_device(kwargs["device"])
    if "dtype" in kwargs and kwargs["dtype"] is not None:
        dtype = np.dtype(kwargs["dtype"])
    return device, dtype, bool(kwargs.get("copy", flags.get("copy", False)))
