"""benchmarks/winograd_gemm.py measures what it says: one task of a Winograd layer, split
into its three steps, and the same GEMMs four ways, the Numba loop checked against the BLAS
(on a tiny layer; the figures themselves are never tested)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import winograd_gemm  # noqa: E402


def test_one_task_is_split_and_its_gemms_timed_four_ways():
    layer = ("tiny conv3x3/s1 12->8", 4, 12, 8, 6)    # 12 channels: the loop's remainder path
    row = winograd_gemm.measure_layer(layer, 2, 1, winograd_gemm.jitted())
    assert (row["images_per_task"], row["tiles_per_task"]) == (2, 2 * 3 * 4)
    assert abs(sum(row["share"].values()) - 1) < 1e-9
    assert row["ms_per_image"] == row["task_ms"] / 2 and row["ms_per_image_8x"] > 0
    assert set(row["gflops"]) == {"as_run", "tile_major", "images_8x", "numba_loop"}
    assert all(g > 0 for g in row["gflops"].values())


def test_the_numba_loop_is_the_same_product_as_the_blas():
    as_run, _, numba_loop = winograd_gemm.jitted()
    rng = np.random.default_rng(1)
    u = rng.standard_normal((16, 5, 11), dtype=np.float32)
    v = rng.standard_normal((16, 11, 7), dtype=np.float32)
    want, got = np.empty((16, 5, 7), np.float32), np.empty((16, 5, 7), np.float32)
    as_run(u, v, want)
    numba_loop(u, v, got)
    np.testing.assert_allclose(got, np.einsum("xoc,xct->xot", u, v), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(want, got, rtol=1e-5, atol=1e-5)
