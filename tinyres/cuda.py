"""tinyres.cuda: is the GPU usable here? (CuPy, a driver, a device and a smoke test).

Device questions only, under torch.cuda's name; the CUDA kernel launchers are the cuda
kernel layer, tinyres/kernels/cuda.py, and their C sources kernels/cuda/*.cu."""
from tinyres.backend import cuda_is_available, cuda_unusable_reason


def is_available():
    """True when CUDA tensors work on this machine; False (never an exception) otherwise."""
    return cuda_is_available()


def why_unavailable():
    """A sentence saying what is missing, or None when CUDA is usable."""
    return cuda_unusable_reason()
