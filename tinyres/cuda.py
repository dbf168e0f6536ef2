"""tinyres.cuda: torch.cuda's device questions, answered through CuPy.

is_available() and device_count() never raise (False and 0 without CuPy, a driver or a
device); current_device(), set_device() and synchronize() need CUDA and raise torch's
kinds of error without it (AssertionError, as torch's "not compiled with CUDA enabled",
when CuPy is missing; RuntimeError when CuPy is there but no device works). The CUDA
kernel launchers are the cuda kernel layer, tinyres/kernels/cuda.py, and their C sources
kernels/cuda/*.cu.

tinyres draws random numbers from NumPy's generator (seeded by tinyres.manual_seed); the
factories copy them to the GPU, and dropout's masks are drawn on the GPU by a generator
reseeded from that stream at every draw (backend.random_sample), so there is no CUDA
generator of its own to seed: manual_seed() and manual_seed_all() accept a seed and
change nothing, as torch's do where CUDA is absent.

count_syncs() counts the host reads (each one a synchronisation on a GPU) and the kernel
launches of a block of code; checks made on the GPU are read at the next host read or at
check_pending(); deferred_checks() changes when they are read (tinyres/host_sync.py).
"""
from tinyres import backend
from tinyres.backend import cuda_is_available, cuda_unusable_reason
# Host reads and kernel launches counted (tinyres/host_sync.py); checks read later.
from tinyres.backend import check_pending  # noqa: F401
from tinyres.host_sync import SyncCount, count_syncs, deferred_checks  # noqa: F401


def is_available():
    """True when CUDA tensors work on this machine; False (never an exception) otherwise."""
    return cuda_is_available()


def why_unavailable():
    """A sentence saying what is missing, or None when CUDA is usable."""
    return cuda_unusable_reason()


def device_count():
    """How many CUDA devices tinyres can use (0 where CUDA is not usable)."""
    return backend.cuda_device_count()


def current_device():
    """The index of the current CUDA device (the one 'cuda' means)."""
    return backend.resolve_device("cuda").index


def set_device(device):
    """Make `device` (an index, 'cuda:N' or a tinyres.device) the current CUDA device."""
    index = device if isinstance(device, int) else backend.as_device(device).index
    if index is None or index < 0:
        return                                   # torch: a no-op for a negative index
    dev = backend.resolve_device(backend.device("cuda", index))
    backend.xp_for(dev).cuda.Device(dev.index).use()


def synchronize(device=None):
    """Wait until every kernel queued on the device (the current one by default) is done."""
    dev = backend.resolve_device("cuda" if device is None else _as_cuda(device))
    backend.xp_for(dev).cuda.Device(dev.index).synchronize()


def _as_cuda(device):
    return backend.device("cuda", device) if isinstance(device, int) else device


def manual_seed(seed):
    """Accepted for torch's API; tinyres has no CUDA generator (see the module docstring)."""
    int(seed)


def manual_seed_all(seed):
    """Accepted for torch's API; tinyres has no CUDA generator (see the module docstring)."""
    int(seed)
