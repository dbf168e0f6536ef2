"""One GEMM shared among Numba's threads, each part by the BLAS on the calling thread.

    out = op(a) @ op(b)      op: the matrix or its transpose; the rows of `out` split into
                             one block per thread, each block one call of np.dot

Why not NumPy's own `@`, which threads the GEMM itself? NumPy's BLAS keeps a pool of
threads of its own, and OpenBLAS's threads spin for a while after every call (unless
OPENBLAS_THREAD_TIMEOUT, set before Python starts, cuts the spin short). The CPU layer's
other kernels run on Numba's threads on the same cores: right after a GEMM by NumPy, a
spinning thread took a core from them, and a resnet18 training step ran measurably slower
than with the spin cut short (benchmarks/README.md, "How the CPU layer picks a
convolution"). Here the GEMM runs on Numba's pool, calling the BLAS that SciPy ships
(np.dot inside Numba) held to one thread, as the per-image and Winograd paths of cpu.py
do, so no second pool wakes up.

Each block is contiguous for np.dot: a row block of `a` (or, for a^T, a column block of
`a` copied out, as a^T's rows are a's columns), and the whole of op(b) for every block.
The sums are the BLAS's over the whole inner dimension, as one call's: only the split
into row blocks differs from one GEMM.
"""
import numba
import numpy as np
from numba import njit, prange

from . import buffers


@njit(cache=True, parallel=True)
def _rows_of_a(a, b, transpose_b, blocks, out):
    """out = a @ op(b), the rows of a and out split into `blocks` blocks."""
    rows = out.shape[0]
    step = -(-rows // blocks)
    for k in prange(blocks):
        r0, r1 = k * step, min(rows, (k + 1) * step)
        if r0 < r1:
            if transpose_b:
                np.dot(a[r0:r1], b.T, out[r0:r1])
            else:
                np.dot(a[r0:r1], b, out[r0:r1])


@njit(cache=True, parallel=True)
def _columns_of_a(a, b, blocks, out):
    """out = a^T @ b, the columns of a (the rows of out) split into `blocks` blocks, each
    copied out of a first so that its transpose is contiguous."""
    rows = out.shape[0]
    step = -(-rows // blocks)
    for k in prange(blocks):
        r0, r1 = k * step, min(rows, (k + 1) * step)
        if r0 < r1:
            part = np.empty((a.shape[0], r1 - r0), dtype=a.dtype)
            for i in range(a.shape[0]):
                for j in range(r1 - r0):
                    part[i, j] = a[i, r0 + j]
            np.dot(part.T, b, out[r0:r1])


def _c_contiguous(m, transposed):
    """(m or m^T as a C-contiguous array, whether it is to be transposed): a transposed
    view (F-contiguous) is taken as it is, with the flag flipped; anything else is copied."""
    if m.flags.c_contiguous:
        return m, transposed
    if m.flags.f_contiguous:
        return m.T, not transposed
    return np.ascontiguousarray(m), transposed


def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b) for 2-D a, b of one float dtype, on Numba's threads. The caller
    holds SciPy's BLAS to one thread (cpu._one_blas_thread)."""
    a, transpose_a = _c_contiguous(a, transpose_a)
    b, transpose_b = _c_contiguous(b, transpose_b)
    rows = a.shape[1] if transpose_a else a.shape[0]
    cols = b.shape[0] if transpose_b else b.shape[1]
    out = buffers.empty((rows, cols), dtype=a.dtype)
    blocks = max(1, min(numba.get_num_threads(), rows))
    if transpose_a:
        _columns_of_a(a, np.ascontiguousarray(b.T) if transpose_b else b, blocks, out)
    else:
        _rows_of_a(a, b, transpose_b, blocks, out)
    return out
