"""DistributedDataParallel: one model replica per process, gradients averaged after backward.

    dist.init_process_group("mpi")
    model = DistributedDataParallel(model)        # rank 0's weights and buffers everywhere
    loss_fn(model(x_shard), y_shard).backward()   # grads are now the average over ranks
    optimizer.step()                              # same update on every rank

At construction the ranks compare their parameter shapes (a mismatch is an error naming
the parameter and both shapes) and rank 0 broadcasts parameters and buffers. A
post-accumulate-grad hook on each parameter hands its finished gradient to the Reducer
(ddp_buckets.py), which all-reduces bucket by bucket while backward goes on.
`print(ddp.bucket_plan())` shows the buckets.
"""
import contextlib

from tinyres import distributed as dist
from tinyres.autograd import is_grad_enabled
from tinyres.nn.ddp_buckets import (DEFAULT_FIRST_BUCKET_BYTES, Reducer, describe_plan,
                                    plan_buckets)
from tinyres.nn.module import Module

DEFAULT_BUCKET_CAP_MB = 25


def _check_same_model(group, named_params):
    """Every rank must hold the same parameter names, shapes and dtypes as rank 0."""
    mine = [(name, tuple(p.shape), str(p.dtype)) for name, p in named_params]
    everyone = group.allgather_object(mine, "DistributedDataParallel's model check")
    reference = everyone[0]
    for rank, theirs in enumerate(everyone):
        if len(theirs) != len(reference):
            raise RuntimeError(
                f"DistributedDataParallel: rank {rank} has {len(theirs)} parameters but "
                f"rank 0 has {len(reference)}: every rank must build the same model")
        for (name0, shape0, dtype0), (name, shape, dtype) in zip(reference, theirs):
            if (name, shape, dtype) != (name0, shape0, dtype0):
                raise RuntimeError(
                    f"DistributedDataParallel: parameter {name!r} has shape {shape} "
                    f"({dtype}) on rank {rank} but {name0!r} has shape {shape0} "
                    f"({dtype0}) on rank 0: every rank must build the same model")


class DistributedDataParallel(Module):
    """Data-parallel wrapper (torch.nn.parallel.DistributedDataParallel): forward calls
    `module`; backward leaves every rank with the gradients averaged over the group.
    bucket_cap_mb: the bucket size in MiB (25 by default, and then a first bucket of 1
    MiB, as torch); broadcast_buffers: copy rank
    0's buffers before each forward. find_unused_parameters and gradient_as_bucket_view
    are not implemented (NotImplementedError)."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0,
                 broadcast_buffers=True, init_sync=True, process_group=None,
                 bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False):
        super().__init__()
        if find_unused_parameters or gradient_as_bucket_view:
            raise NotImplementedError("DistributedDataParallel: find_unused_parameters and "
                                      "gradient_as_bucket_view are not implemented in tinyres")
        group = dist.process_group.default_group(process_group)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't "
                               "have any parameter that requires a gradient.")
        self.module = module
        self.device_ids, self.output_device, self.dim = device_ids, output_device, dim
        self.broadcast_buffers, self.static_graph = broadcast_buffers, static_graph
        self.require_backward_grad_sync = True
        self.bucket_bytes_cap = int((DEFAULT_BUCKET_CAP_MB if bucket_cap_mb is None
                                     else bucket_cap_mb) * 1024 * 1024)
        self._first_bucket_bytes = (DEFAULT_FIRST_BUCKET_BYTES if bucket_cap_mb is None
                                    else self.bucket_bytes_cap)
        _check_same_model(group, named)
        if init_sync:
            self._broadcast_state()
        self._group = group
        self._buckets = plan_buckets(named, self.bucket_bytes_cap, self._first_bucket_bytes)
        self._reducer = Reducer(self._buckets, group)
        self._hook_handles = [p.register_post_accumulate_grad_hook(self._reducer.grad_ready)
                              for _, p in named]

    def _broadcast_state(self):
        """Rank 0's parameters and buffers, copied to every rank."""
        works = [dist.broadcast(t, 0, async_op=True) for t in self.module.parameters()]
        works += [dist.broadcast(b, 0, async_op=True) for b in self.module.buffers()]
        for work in works:
            work.wait()

    def _broadcast_buffers(self):
        works = [dist.broadcast(b, 0, async_op=True) for b in self.module.buffers()]
        for work in works:
            work.wait()

    def forward(self, *inputs, **kwargs):
        if is_grad_enabled():
            self._reducer.prepare(sync=self.require_backward_grad_sync)
        if self.broadcast_buffers and self._group.size > 1:
            self._broadcast_buffers()
        return self.module(*inputs, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes run inside skip the all-reduce: gradients accumulate locally
        and the first backward after the block averages the accumulated sums."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def bucket_plan(self):
        """The buckets as text: which parameters each holds, in launch order, and bytes."""
        return describe_plan(self._buckets, self.bucket_bytes_cap, self._first_bucket_bytes,
                             self._group.size)
