"""nn.DataParallel as a pass-through wrapper on one device.

torch's DataParallel splits each batch across GPUs, runs a replica of the module on each
and gathers the outputs. tinyres runs on one device, so DataParallel here only calls the
module: a PyTorch script that wraps its model in it runs unchanged, with the same
state_dict keys ('module.' + the module's own). The multi-process data-parallel path is
DistributedDataParallel (tinyres/nn/ddp.py), importable from here as in torch.
"""
from tinyres.nn.module import Module


class DataParallel(Module):
    """DataParallel(module, device_ids=None, output_device=None, dim=0): forward calls
    `module` (kept as `.module`) on the one device there is. device_ids and output_device
    are recorded; more than one device id is refused (NotImplementedError)."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: module must be an nn.Module, got "
                            f"{type(module).__name__}")
        device_ids = list(device_ids) if device_ids is not None else []
        if len(device_ids) > 1:
            raise NotImplementedError(
                f"DataParallel: tinyres runs on one device, got device_ids={device_ids}; "
                "multi-device data parallelism belongs to the distributed-training path")
        self.module = module
        self.device_ids = device_ids
        self.output_device = output_device
        self.dim = dim

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)


from tinyres.nn.ddp import DistributedDataParallel  # noqa: E402  (torch's path for it)
