"""The gradient buckets of DistributedDataParallel: the plan and the reducer.

The plan walks the parameters in reverse (backward produces the last layers' gradients
first) and packs them into buckets of about `bucket_cap_mb`, one dtype and device per
bucket; as in torch, with the default cap the first bucket is capped at 1 MiB so that
communication starts early (torch lays out its buckets again after the first iteration, in
the order gradients really arrived; reverse parameter order is that order for a ResNet).
The reducer copies each parameter's finished gradient into its bucket's flat buffer; when
a bucket is full it starts that bucket's non-blocking all-reduce (buckets start in
plan order, the same on every rank, as MPI and NCCL require), so the reduction of the last
layers overlaps the backward of the first. When every bucket has started, it waits for
them, divides by the world size and writes the averages back into the .grad tensors.
"""
import time

from tinyres.backend import device_of, get_array_module
from tinyres.distributed.errors import ReduceOp

DEFAULT_FIRST_BUCKET_BYTES = 1024 * 1024     # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES


class Bucket:
    """Parameters whose gradients travel in one all-reduce: names, tensors, offsets."""

    def __init__(self, index, named_params):
        self.index = index
        self.names = [name for name, _ in named_params]
        self.params = [p for _, p in named_params]
        self.offsets, total = [], 0
        for p in self.params:
            self.offsets.append(total)
            total += p.numel()
        self.numel, self.dtype = total, self.params[0].dtype
        self.nbytes = total * self.dtype.itemsize


def plan_buckets(named_params, cap_bytes, first_cap_bytes=DEFAULT_FIRST_BUCKET_BYTES):
    """Buckets over `named_params` taken in reverse order: a bucket closes once it holds
    at least its limit (first_cap_bytes for the first of each dtype/device, cap_bytes
    after); buckets still open at the end follow the closed ones."""
    closed, open_buckets, firsts_done = [], {}, set()
    for name, p in reversed(list(named_params)):
        key = (p.dtype, device_of(p.array))
        current = open_buckets.setdefault(key, [])
        current.append((name, p))
        limit = cap_bytes if key in firsts_done else first_cap_bytes
        if sum(q.numel() * q.dtype.itemsize for _, q in current) >= limit:
            closed.append(current)
            firsts_done.add(key)
            open_buckets[key] = []
    groups = closed + [b for b in open_buckets.values() if b]
    return [Bucket(i, group) for i, group in enumerate(groups)]


def describe_plan(buckets, cap_bytes, first_cap_bytes, world_size):
    """The bucket plan as text: per bucket its bytes and its parameters with shapes."""
    total = sum(b.nbytes for b in buckets)
    lines = [f"DistributedDataParallel: {len(buckets)} bucket(s), cap {cap_bytes / 2**20:g} "
             f"MiB (first {first_cap_bytes / 2**20:g} MiB), "
             f"{sum(b.numel for b in buckets):,} gradient values = {total:,} bytes "
             f"all-reduced per step over {world_size} rank(s)"]
    for b in buckets:
        lines.append(f"bucket {b.index}: {len(b.params)} tensor(s), {b.numel:,} x "
                     f"{b.dtype.name} = {b.nbytes:,} bytes")
        for name, p in zip(b.names, b.params):
            lines.append(f"    {name:<40} {str(tuple(p.shape)):<18} "
                         f"{p.numel() * p.dtype.itemsize:>12,} bytes")
    return "\n".join(lines)


class Reducer:
    """Averages the gradients of the bucketed parameters over the group after backward."""

    def __init__(self, buckets, group):
        self.buckets, self.group = buckets, group
        self.where = {}
        for b in buckets:
            for p, offset in zip(b.params, b.offsets):
                self.where[id(p)] = (b, offset)
        self.flat = [get_array_module(b.params[0].array).zeros(b.numel, dtype=b.dtype)
                     for b in buckets]
        self.armed = False
        self.launch_log = []     # per backward: (bucket, gradients still to come) at launch
        self.wait_seconds = 0.0  # last backward: time spent waiting for the reductions
        self._reset()

    def _reset(self):
        self.filled = [0] * len(self.buckets)
        self.requests = [None] * len(self.buckets)
        self.launched = 0
        self.ready = set()

    def prepare(self, sync):
        """Called by each forward: arm the reducer for the coming backward (sync=True)
        or let gradients accumulate locally (no_sync). A reduction left half-done by the
        previous backward is an error (a parameter that got no gradient)."""
        if self.armed and any(self.filled):
            missing = [n for b in self.buckets for n, p in zip(b.names, b.params)
                       if id(p) not in self.ready][:5]
            raise RuntimeError(
                "Expected to have finished reduction in the prior iteration before "
                "starting a new one. This error indicates that your module has parameters "
                "that were not used in producing loss (for example "
                f"{', '.join(missing) or 'one of them'}); find_unused_parameters=True is "
                "not implemented in tinyres, so make every parameter take part or set "
                "requires_grad=False on the unused ones")
        self._reset()
        self.launch_log = []
        self.armed = sync

    def grad_ready(self, param):
        """Post-accumulate hook: file param.grad into its bucket; launch full buckets."""
        if not self.armed:
            return
        bucket, offset = self.where[id(param)]
        flat = self.flat[bucket.index]
        flat[offset:offset + param.numel()] = param.grad.array.reshape(-1)
        self.filled[bucket.index] += 1
        self.ready.add(id(param))
        self._launch_full_buckets()
        for request in self.requests[:self.launched]:
            request.test()               # lets MPI progress the reductions in flight
        if self.launched == len(self.buckets):
            self._finish()

    def _launch_full_buckets(self):
        while (self.launched < len(self.buckets)
               and self.filled[self.launched] == len(self.buckets[self.launched].params)):
            i = self.launched
            self.launch_log.append((i, len(self.where) - len(self.ready)))
            self.requests[i] = self.group.allreduce(self.flat[i], ReduceOp.SUM,
                                                    what=f"DDP all_reduce of bucket {i}")
            self.launched += 1

    def _finish(self):
        """Wait for every bucket, average and write back into .grad."""
        start = time.perf_counter()
        for request in self.requests:
            request.wait()
        self.wait_seconds = time.perf_counter() - start
        for bucket, flat in zip(self.buckets, self.flat):
            flat /= self.group.size
            for p, offset in zip(bucket.params, bucket.offsets):
                p.grad.array[...] = flat[offset:offset + p.numel()].reshape(p.shape)
                p.grad._version_counter.value += 1
        self.armed = False
        self._reset()
