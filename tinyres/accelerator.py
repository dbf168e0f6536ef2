"""tinyres.accelerator: torch.accelerator's device-agnostic questions (PyTorch 2.6 on), for
the one accelerator tinyres drives, CUDA through CuPy. The official PyTorch examples pick
their device this way:

    use_accel = torch.accelerator.is_available()
    device = torch.accelerator.current_accelerator() if use_accel else torch.device("cpu")

Where CUDA is not usable, the answers are torch's on a machine without an accelerator:
is_available() False, device_count() 0, current_accelerator() None, and
current_device_index(), set_device_index() and synchronize() raise RuntimeError. tinyres
knows whether CUDA is usable, not how it was built, so current_accelerator(check_available=
False) answers as check_available=True does (a CUDA build of torch on a machine without a
GPU answers device('cuda') there).
"""
from tinyres import backend, cuda

NONE_AVAILABLE = "Cannot access accelerator device when none is available."


def is_available():
    """True when tinyres can run on an accelerator (CUDA) here."""
    return cuda.is_available()


def device_count():
    """How many accelerator devices tinyres can use (0 where there is none)."""
    return cuda.device_count()


def current_accelerator(check_available=False):
    """device('cuda') where CUDA is usable, else None (see the module docstring)."""
    return backend.device("cuda") if cuda.is_available() else None


def current_device_index():
    """The index of the current accelerator device."""
    _require_accelerator()
    return cuda.current_device()


def set_device_index(device, /):
    """Make `device` (an index, 'cuda:N' or a tinyres.device) the current device."""
    _require_accelerator()
    cuda.set_device(device)


def synchronize(device=None, /):
    """Wait until every kernel queued on the device (the current one by default) is done."""
    _require_accelerator()
    cuda.synchronize(device)


def _require_accelerator():
    if not cuda.is_available():
        raise RuntimeError(NONE_AVAILABLE)
