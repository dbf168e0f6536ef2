"""tinyres.backends: torch.backends' switches that scripts set, under the same names.

Only `cudnn` is here; tinyres does not use cuDNN (its convolutions are im2col + GEMM on
cuBLAS), so its flags are accepted and remembered but change nothing.
"""
from tinyres.backends import cudnn

__all__ = ["cudnn"]
