"""SyncBatchNorm: batch norm whose training statistics cover every rank's part of the batch.

    model = nn.SyncBatchNorm.convert_sync_batchnorm(resnet20())   # every BatchNorm swapped
    model = nn.parallel.DistributedDataParallel(model)

Outside a process group of more than one rank (or in evaluation) it is plain batch norm.
torch's SyncBatchNorm refuses CPU tensors; tinyres's runs on CPU (MPI) and GPU (NCCL).
"""
from tinyres import distributed as dist
from tinyres.autograd import no_grad
from tinyres.functional.sync_norm import sync_batch_norm
from tinyres.nn.layers import _BatchNorm


class SyncBatchNorm(_BatchNorm):
    """Batch norm over (N, C, ...) inputs with statistics reduced over the process group
    in training (torch.nn.SyncBatchNorm)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)
        self.process_group = process_group

    def _check_input_dim(self, x):
        if x.ndim < 2:
            raise ValueError(f"expected at least 2D input (got {x.ndim}D input)")

    def _group(self):
        """The process group to reduce over, or None where there is nothing to sync."""
        if not (self.training and dist.is_initialized()):
            return None
        group = dist.process_group.default_group(self.process_group)
        return group if group.size > 1 else None

    def _normalize(self, x, running_mean, running_var, use_batch_stats, momentum):
        """Batch norm with the statistics of the whole group's batch while training in a
        process group; plain batch norm otherwise."""
        group = self._group()
        if group is None:
            return super()._normalize(x, running_mean, running_var, use_batch_stats, momentum)
        return sync_batch_norm(x, running_mean, running_var, self.weight, self.bias,
                               momentum, self.eps, group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """`module` with every BatchNorm*d (at any depth) replaced by a SyncBatchNorm that
        shares its parameters and buffers; other modules are kept as they are."""
        converted = module
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group,
                            bias=module.bias is not None)
            if module.affine:
                with no_grad():
                    converted.weight = module.weight
                    converted.bias = module.bias
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(converted, name, getattr(module, name))
            converted.training = module.training
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted
