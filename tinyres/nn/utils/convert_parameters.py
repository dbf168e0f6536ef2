"""Parameters as one flat vector and back, as torch.nn.utils's."""
from tinyres.functional.shape import cat, reshape
from tinyres.tensor import Tensor


def _check_devices(parameters):
    devices = {p.device for p in parameters}
    if len(devices) > 1:
        raise TypeError(f"Found two parameters on different devices, this is currently not "
                        f"supported (devices {sorted(devices)})")


def parameters_to_vector(parameters):
    """One 1-D Tensor of every parameter's values in order (differentiable, like
    torch's: a concatenation of their flattened views)."""
    parameters = list(parameters)
    _check_devices(parameters)
    return cat([reshape(p, -1) for p in parameters])


def vector_to_parameters(vec, parameters):
    """Copy consecutive slices of the 1-D `vec` into the parameters, in order (their
    memory becomes a view of vec, as in torch; outside autograd)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    parameters = list(parameters)
    _check_devices(parameters)
    needed = sum(p.numel() for p in parameters)
    if vec.ndim != 1 or vec.numel() != needed:
        raise RuntimeError(f"vector_to_parameters: vec has shape {vec.shape}, expected a 1-D "
                           f"vector of {needed} values for these parameters")
    start = 0
    for p in parameters:
        n = p.numel()
        p.data = Tensor(vec.array[start:start + n].reshape(p.shape))    # a view, as torch
        start += n
