"""Pinned (page-locked) host memory for the loaders' copies to a GPU.

A copy to the GPU from ordinary (pageable) NumPy memory makes the host wait until the
device has reached the copy in its queue: a synchronisation per batch, which stalls the
launches queued ahead of it. From pinned memory the copy is asynchronous (DMA), so the
host goes on preparing the next batch.

`pinned_copy(a)` is what DataLoader(pin_memory=True) of tinyres.utils.data does to each
batch on a CUDA machine (torch's pinning: the batch stays a CPU tensor, in pinned memory).
`PinnedCopier` is the training loader's path (tinyres.data.DataLoader with a CUDA device
and pin_memory=True): each array goes into a pinned buffer and from there to the GPU on a
side stream, one batch ahead, so that the copy of batch k + 1 overlaps the compute of
batch k; the compute stream waits for the copy's event before it uses the batch.

Nothing here runs without CuPy and a GPU: on the CPU the loaders skip it (as torch, which
only warns that there is no accelerator to pin for).
"""
import warnings

import numpy as np

from tinyres import backend

NO_ACCELERATOR = ("'pin_memory' argument is set as true but no accelerator is found, then "
                  "device pinned memory won't be used.")


def pinned_empty(shape, dtype):
    """An uninitialised NumPy array in pinned host memory (CuPy's pinned memory pool)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    memory = backend.xp_for("cuda").cuda.alloc_pinned_memory(max(count, 1) * dtype.itemsize)
    return np.frombuffer(memory, dtype, count).reshape(shape)


def pinned_copy(a):
    """A copy of NumPy array `a` in pinned host memory (same shape, dtype and values)."""
    out = pinned_empty(a.shape, a.dtype)
    out[...] = a
    return out


class PinnedCopier:
    """Copies NumPy arrays to one GPU through pinned buffers on a side stream.

    start(arrays) stages a batch: each array is written into a pinned buffer of one of
    `depth` slots (reused round-robin, after the host has waited for that slot's previous
    copy, long finished), its device array is allocated on the compute stream, and the
    side stream copies it there once the compute stream has reached this point (so that
    memory the pool hands back is no longer read by kernels queued before). finish(staged)
    makes the compute stream wait for the copy and returns the device arrays."""

    def __init__(self, device, depth=2):
        self.device = backend.resolve_device(device)
        self.cupy = backend.xp_for(self.device)
        with backend.on_device(self.device):
            self.stream = self.cupy.cuda.Stream(non_blocking=True)
        self.slots = [{"buffers": {}, "done": None} for _ in range(depth)]
        self.turn = 0

    def _buffer(self, slot, key, a):
        """The slot's pinned buffer for array number `key`, (re)allocated to a's size."""
        buf = slot["buffers"].get(key)
        if buf is None or buf.shape != a.shape or buf.dtype != a.dtype:
            buf = slot["buffers"][key] = pinned_empty(a.shape, a.dtype)
        return buf

    def start(self, arrays):
        """Stage NumPy `arrays` for the GPU; returns the staged batch for finish()."""
        slot = self.slots[self.turn]
        self.turn = (self.turn + 1) % len(self.slots)
        if slot["done"] is not None:
            slot["done"].synchronize()        # the slot's last copy, not the compute stream
        with backend.on_device(self.device):
            compute = self.cupy.cuda.get_current_stream()
            outs = [self.cupy.empty(a.shape, a.dtype) for a in arrays]
            self.stream.wait_event(compute.record())
            for key, (a, out) in enumerate(zip(arrays, outs)):
                buf = self._buffer(slot, key, a)
                buf[...] = a
                out.set(buf, stream=self.stream)
            slot["done"] = self.stream.record()
        return outs, slot["done"]

    def finish(self, staged):
        """The device arrays of a staged batch, the compute stream waiting for their copy."""
        outs, done = staged
        with backend.on_device(self.device):
            self.cupy.cuda.get_current_stream().wait_event(done)
        return outs


def pin_batch(data):
    """A batch with every CPU Tensor's data copied into pinned memory (torch's
    pin_memory: dicts, lists, tuples and namedtuples are rebuilt around them; anything
    else is kept)."""
    from tinyres.tensor import Tensor
    if isinstance(data, Tensor):
        return data if data.is_cuda else Tensor(pinned_copy(data.array))
    if isinstance(data, dict):
        return type(data)((k, pin_batch(v)) for k, v in data.items())
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(pin_batch(v) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(pin_batch(v) for v in data)
    return data


def pinning_for(loader):
    """What an iterator of a tinyres.utils.data loader does to each batch: pin_batch when
    pin_memory is set and CUDA is usable; otherwise nothing, with torch's warning when
    pin_memory is set (one per iterator, as torch)."""
    if not loader.pin_memory:
        return _unchanged
    if not backend.cuda_is_available():
        warnings.warn(NO_ACCELERATOR, UserWarning, stacklevel=3)
        return _unchanged
    return pin_batch


def _unchanged(batch):
    return batch
