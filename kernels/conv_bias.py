"""The bias of a convolution, added by the CPU layer's convolution cores (kernels/cpu.py,
winograd.py, pointwise_conv.py) to the images of a task just after writing them, while
they are still in the core's cache: no separate pass over the output.

    out[b, o, :] += bias[o]     for the images b = b0, ..., b0 + m - 1

The same one float addition per element as `out += bias.reshape(1, OC, 1, 1)` after the
convolution (which the one-GEMM path, kernels/gemm_conv.py, does), so the results are
equal to the last bit. A convolution without a bias passes an empty array (NO_BIAS):
Numba compiles one version for both.
"""
import numpy as np
from numba import njit

NO_BIAS = {np.dtype(np.float32): np.empty(0, np.float32),
           np.dtype(np.float64): np.empty(0, np.float64)}


def bias_or_empty(bias, dtype):
    """The bias as a contiguous array of `dtype`, or an empty one for None."""
    if bias is None:
        return NO_BIAS.get(np.dtype(dtype), np.empty(0, dtype))
    return np.ascontiguousarray(bias, dtype=dtype)


@njit(cache=True)
def add_bias(out3, b0, m, bias):
    """out3 (N, OC, P): add bias[o] to every pixel of channel o of images b0..b0+m-1
    (nothing when bias is empty)."""
    if bias.shape[0] == 0:
        return
    for b in range(b0, b0 + m):
        for o in range(out3.shape[1]):
            bo = bias[o]
            row = out3[b, o]
            for k in range(row.shape[0]):
                row[k] += bo
