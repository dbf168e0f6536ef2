"""kernels/thread_gemm.py: one GEMM shared among Numba's threads equals NumPy's, for each
of the transposes the one-GEMM convolution path asks for, in both float dtypes, with
fewer rows than threads, and on non-contiguous inputs."""
import numba
import numpy as np
import pytest

from tinyres.kernels import conv_plan, cpu, thread_gemm

pytestmark = pytest.mark.skipif(
    conv_plan.scipy_blas() is None,
    reason="SciPy shares NumPy's BLAS here: cpu.py does not run GEMMs inside its threads")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False),
                                                      (False, True), (True, True)])
@pytest.mark.parametrize("m, k, n", [(1, 3, 2), (7, 5, 3), (64, 33, 17)])
def test_matmul_equals_numpy(dtype, transpose_a, transpose_b, m, k, n):
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    expected = (a.T if transpose_a else a).astype(np.float64) @ (
        b.T if transpose_b else b).astype(np.float64)
    with cpu._one_blas_thread():
        got = thread_gemm.matmul(a, b, transpose_a, transpose_b)
    assert got.dtype == dtype and got.shape == (m, n)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.sqrt(k))


def test_matmul_splits_rows_among_the_threads_as_one_gemm_would():
    # each thread's block of rows is one BLAS call over the whole inner dimension: the
    # result equals, bit for bit, the single-threaded products of those blocks of rows,
    # stacked. (Not the product of all rows in one call: OpenBLAS's kernels for a block's
    # last rows may add in another order, as its Haswell kernels do on a Zen 5.)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((9, 40)).astype(np.float32)
    b = rng.standard_normal((40, 11)).astype(np.float32)
    threads = numba.get_num_threads()
    step = -(-a.shape[0] // min(threads, a.shape[0]))      # the split thread_gemm makes
    with cpu._one_blas_thread():
        numba.set_num_threads(1)
        try:
            blocks = [thread_gemm.matmul(a[r:r + step], b) for r in range(0, 9, step)]
        finally:
            numba.set_num_threads(threads)
        many = thread_gemm.matmul(a, b)
        strided = thread_gemm.matmul(a[:, ::2], b[::2])
    np.testing.assert_array_equal(np.concatenate(blocks), many)
    np.testing.assert_allclose(strided, a[:, ::2].astype(np.float64) @ b[::2], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_matmul_takes_transposed_views_and_leaves_the_rest_to_numpy(dtype):
    # the linear layer's products: x @ w.T, g @ w, x.T @ g, with w.T and x.T views
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
    g = rng.standard_normal((6, 4)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in ((x, w.T), (g, w), (x.T, g), (x[:, ::2], w[:, ::2].T)):
        got = cpu.matmul(a, b)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=tol, atol=tol)
    # batched, 1-D, mixed dtypes, integers and empty operands: NumPy's own @, its errors too
    for a, b in ((np.ones((2, 3, 4), dtype), np.ones((4, 5), dtype)),
                 (np.ones(3, dtype), np.ones(3, dtype)),
                 (x, w.T.astype(np.float16)),
                 (np.ones((2, 3), np.int64), np.ones((3, 2), np.int64)),
                 (np.ones((0, 3), dtype), np.ones((3, 2), dtype))):
        np.testing.assert_array_equal(cpu.matmul(a, b), a @ b)
        assert cpu.matmul(a, b).dtype == (a @ b).dtype
    with pytest.raises(ValueError) as ours:
        cpu.matmul(x, w)
    with pytest.raises(ValueError) as numpys:
        x @ w
    assert str(ours.value) == str(numpys.value)
