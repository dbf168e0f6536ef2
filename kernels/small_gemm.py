"""out = a @ b as a Numba loop, for the GEMMs of the Winograd layers with few channels.

F(2x2, 3x3) on a 16-channel layer runs 16 GEMMs (16, 16) @ (16, T) per task (winograd.py).
With so short an inner dimension the BLAS spends much of each call outside its kernel
(zeroing the output, packing the operands): OpenBLAS's AVX2 kernels were slower than this
loop on those shapes, and on 32 channels too on one CPU (family 25 model 1); from 64
channels on the BLAS is far faster. OpenBLAS's AVX-512 kernels were faster than the loop
at every width (benchmarks/winograd_gemm.py measures both). cpu.py runs the loop where
the policy's winograd_loop_gemm_max_channels allows it (kernels/conv_plan.py: 32,
resnet20's first two stages, unless SciPy's BLAS runs an AVX-512 kernel).

The loop walks the rows of `out`. For each one it adds eight rows of b at a time, each
scaled by its entry of a, in one pass over the row: LLVM vectorises that pass over the
columns (eight loads of b and one load and store of the output row per eight
multiply-adds), which is why eight and not one at a time. `fastmath={"contract"}` lets the
multiplies and adds fuse into FMA instructions and nothing else: the additions keep the
order written, channel after channel.
"""
import numpy as np
from numba import njit


@njit(cache=True, fastmath={"contract"})
def matmul_into(a, b, out):
    """out (M, N) = a (M, K) @ b (K, N); all three C-contiguous, of one float dtype."""
    m, k = a.shape
    full = k - k % 8
    for i in range(m):
        row = out[i]
        row[:] = 0
        for c in range(0, full, 8):          # eight rows of b in one pass over the row
            w = a[i, c:c + 8]
            b0, b1, b2, b3 = b[c], b[c + 1], b[c + 2], b[c + 3]
            b4, b5, b6, b7 = b[c + 4], b[c + 5], b[c + 6], b[c + 7]
            for j in range(row.size):
                row[j] = (row[j] + w[0] * b0[j] + w[1] * b1[j] + w[2] * b2[j]
                          + w[3] * b3[j] + w[4] * b4[j] + w[5] * b5[j] + w[6] * b6[j]
                          + w[7] * b7[j])
        for c in range(full, k):             # the last k % 8 rows, one at a time
            for j in range(row.size):
                row[j] += a[i, c] * b[c, j]


@njit(cache=True, inline="always")
def products(u, v, mm, loop_gemm):
    """mm[xi] = u[xi] @ v[xi] for every entry xi of a Winograd task (16 or 36 GEMMs,
    (OC, C) @ (C, T)): by matmul_into where loop_gemm, else by the BLAS (np.dot)."""
    for xi in range(u.shape[0]):
        if loop_gemm:
            matmul_into(u[xi], v[xi], mm[xi])
        else:
            np.dot(u[xi], v[xi], mm[xi])
