"""tinyres.backends.mps: torch.backends.mps's two questions. tinyres has no Metal backend,
so both answers are False, as torch's are on Linux and Windows (scripts such as PyTorch's
MNIST example ask `torch.backends.mps.is_available()` before choosing a device)."""


def is_available():
    """False: tinyres does not run on Apple's Metal (MPS) devices."""
    return False


def is_built():
    """False: tinyres has no MPS backend to build."""
    return False
