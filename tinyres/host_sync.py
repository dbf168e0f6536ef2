"""Host reads and kernel launches, counted per thread; the policy for device-side checks.

On a GPU, reading an array's values into Python (Tensor.item(), float(t), .numpy(), a
bool() of a comparison) waits until the device has finished all the work queued before
it: a host synchronisation, which drains the queue of launches and rules out capturing a
step in a CUDA graph. tinyres reads array values in one place (backend.to_host and
backend.item) and launches its CUDA kernels in one place (the Launchers of
kernels/cuda.py); both are tallied here, per thread:

    with tinyres.cuda.count_syncs() as counted:
        train_step()
    counted.host_reads, counted.launches     # host_reads 0: nothing waited for the GPU

Reads are counted on the CPU too, where they cost nothing, so that a test on the CPU can
tell how many a step would make on a GPU. `launches` counts tinyres's own kernels (on a
GPU, and on the CPU through the emulator of kernels/emulate.py); CuPy's elementwise
kernels and cuBLAS's GEMMs are not counted.

Checks whose answer is in the data (is every class target within [0, C)?) are made on the
device and read later: see backend.defer_check. Whether a check is deferred is decided
here: by default on device arrays only (on the CPU the error is raised at the call, as
torch raises it); `deferred_checks(False)` reads every check at its call (debugging on a
GPU: the error points at the op, at the cost of a synchronisation per check), and
`deferred_checks(True)` defers them on the CPU as well (to exercise that path in tests).
"""
import contextlib
import threading


class _Tally:
    """One thread's counts, its pending device-side checks and its deferral policy."""

    def __init__(self):
        self.host_reads = 0
        self.launches = 0
        self.pending = {}       # (check kind, device) -> (record array, make_error)
        self.defer = None       # None: defer on device arrays only; True / False: always / never


_local = threading.local()


def tally():
    """This thread's _Tally (made on first use)."""
    t = getattr(_local, "tally", None)
    if t is None:
        t = _local.tally = _Tally()
    return t


def count_read():
    """Count one read of array values into Python (backend.to_host and backend.item)."""
    tally().host_reads += 1


def count_launch():
    """Count one launch of a tinyres kernel (the Launchers of kernels/cuda.py)."""
    tally().launches += 1


class SyncCount:
    """What count_syncs() counted in its thread: `host_reads` and `launches`, live inside
    the with block and fixed when it ends."""

    def __init__(self):
        self._tally = tally()
        self._start = self._now()
        self._end = None

    def _now(self):
        return self._tally.host_reads, self._tally.launches

    def _since_start(self, i):
        return (self._end or self._now())[i] - self._start[i]

    @property
    def host_reads(self):
        """Reads of array values into Python (on a GPU: host synchronisations)."""
        return self._since_start(0)

    @property
    def launches(self):
        """Launches of tinyres's own kernels."""
        return self._since_start(1)

    def stop(self):
        """Fix the counts (count_syncs calls it when its block ends)."""
        if self._end is None:
            self._end = self._now()

    def __repr__(self):
        return f"SyncCount(host_reads={self.host_reads}, launches={self.launches})"


@contextlib.contextmanager
def count_syncs():
    """Count the host reads and kernel launches of this thread inside the with block:

        with count_syncs() as counted:
            loss = step()
        assert counted.host_reads == 0

    Blocks may nest; each counts everything inside it."""
    counted = SyncCount()
    try:
        yield counted
    finally:
        counted.stop()


def defers(on_device):
    """Whether a check on an array (on a device when `on_device`) is deferred now."""
    policy = tally().defer
    return on_device if policy is None else policy


@contextlib.contextmanager
def deferred_checks(enabled):
    """Within the block, defer every device-side check (True) or none (False), on every
    device; the previous policy comes back afterwards."""
    t = tally()
    before, t.defer = t.defer, bool(enabled)
    try:
        yield
    finally:
        t.defer = before
