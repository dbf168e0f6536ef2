"""tinyres.backends: torch.backends' switches that scripts set, under the same names.

`cudnn`: tinyres does not use cuDNN (its convolutions are im2col + GEMM on cuBLAS), so its
flags are accepted and remembered but change nothing. `mps`: there is no Metal backend.
"""
from tinyres.backends import cudnn
from tinyres.backends import mps

__all__ = ["cudnn", "mps"]
