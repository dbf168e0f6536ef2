"""Moving a tensor between devices, differentiably (torch's `x.to('cuda')`).

The copy is an op like any other: its output is a new tensor on the target device whose
gradient flows back to the input on the source device, so `w.cuda()` of a leaf that
requires grad is not a leaf (as in torch), and `loss.backward()` on the GPU fills the
CPU tensor's `.grad`.
"""
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
