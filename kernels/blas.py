"""SciPy's BLAS GEMM, called from inside Numba's threads with what np.dot does not give
there: leading dimensions (a shifted view read in place), either operand transposed, and
beta (a product added onto C in the BLAS's own pass). For phase_gemm.py (nine GEMMs on
shifted views of the phases) and the Winograd weight gradients (winograd.py's
add_gemms: each task's 16 products added onto its thread's dU).

    fn = function(x.dtype.str)                      # sgemm or dgemm, once per dtype
    gemm(fn, False, True, m, n, k, a, lda, b, 0, ldb, 1.0, c, 0, ldc)   # C += A @ B^T

Everything is row-major here; the BLAS is column-major (Fortran): a row-major matrix is
the column-major matrix of its transpose, so C = op(A) @ op(B) is computed as
C^T = op(B)^T @ op(A)^T, the operands swapped. SciPy's BLAS is a library of its own
(scipy.linalg.cython_blas, what np.dot in Numba calls); the callers hold it to one thread
(cpu.py's _one_blas_thread) while Numba's threads call it.
"""
import ctypes
import functools

import numpy as np
from numba import njit


@functools.lru_cache(maxsize=None)
def function(dtype):
    """SciPy's BLAS sgemm (float32) or dgemm (float64), as a ctypes function of 13
    pointers (Fortran's convention: every argument by reference), or None where SciPy is
    missing. A ctypes function is an argument Numba can keep cores in its on-disk cache with."""
    try:
        from numba.extending import get_cython_function_address
        address = get_cython_function_address("scipy.linalg.cython_blas",
                                              "sgemm" if np.dtype(dtype) == np.float32
                                              else "dgemm")
    except (ImportError, ValueError):
        return None
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)(address)


@njit(cache=True)
def gemm(fn, transpose_a, transpose_b, m, n, k, a, lda, b, b_start, ldb, beta, c, c_start,
         ldc):
    """C (m, n) = op(A) @ op(B) + beta * C, row-major, by the BLAS function fn:
    A is a (m, k) with rows lda apart, or with transpose_a its transpose, a (k, m);
    B is b (flat) from b_start, (k, n) with rows ldb apart, or with transpose_b its
    transpose, (n, k); C is c (flat) from c_start, m rows ldc apart. beta 0: C is only
    written (what it held is never read)."""
    ints = np.empty(6, dtype=np.int32)
    ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] = n, m, k, ldb, lda, ldc
    scalars = np.empty(2, dtype=c.dtype)
    scalars[0], scalars[1] = 1, beta
    codes = np.empty(2, dtype=np.uint8)
    codes[0] = ord("T") if transpose_b else ord("N")
    codes[1] = ord("T") if transpose_a else ord("N")
    fn(codes[0:].ctypes.data, codes[1:].ctypes.data, ints[0:].ctypes.data,
       ints[1:].ctypes.data, ints[2:].ctypes.data, scalars[0:].ctypes.data,
       b[b_start:].ctypes.data, ints[3:].ctypes.data, a.ctypes.data, ints[4:].ctypes.data,
       scalars[1:].ctypes.data, c[c_start:].ctypes.data, ints[5:].ctypes.data)
