"""What the CPU layer's convolution cores (kernels/cpu.py, winograd.py, winograd4.py,
winograd_lanes.py, pointwise_conv.py) do to the images of a task just after writing them,
while they are still in the core's cache, with no separate pass over the output: the
epilogue, for the images b = b0, ..., b0 + m - 1 and every output channel o,

    out[b, o, :] += bias[o]                           a bias
    out[b, o, :] = out[b, o, :] * scale[o] + bias[o]  a per-channel affine map: batch
                                                      norm in evaluation (bias its shift)
    out[b, o, :] += lam * residual[b, o, :]           a residual block's shortcut, after
                                                      either or alone: F(x) + lambda x
    out[b, o, :] = max(out[b, o, :], 0)               relu, after any of them or alone

Each is the same float operations as the separate pass it replaces (`out += bias`, as
the one-GEMM path does; channel_affine, the product rounded, then the sum; add_scaled,
lambda rounded to the dtype, the product rounded, then the sum; relu_forward), so the
results are equal to the last bit. Last, where asked, the moments of every plane
as it now is, for batch norm's statistics in training (cpu.conv2d_batchnorm_forward):

    stats[o, b] = plane_moments(out[b, o, :])         its sum and its squared deviations

the same function on the same numbers as batch norm's own pass over a plane
(cpu._plane_stats), so the statistics are equal to the last bit too. The epilogue is one
tuple (scale, bias, relu, stats, residual, lam), scale and bias arrays of the output's
dtype, stats a float64 (OC, N, 2) array, residual the output's shape as (N, OC, OH*OW),
each empty where absent, lam a scalar of the output's dtype (`epilogue()` makes it):
Numba compiles one version of a core for every epilogue.
"""
import numpy as np
from numba import njit

NONE = {np.dtype(np.float32): np.empty(0, np.float32),
        np.dtype(np.float64): np.empty(0, np.float64)}


def _array_or_empty(values, dtype):
    if values is None:
        return NONE.get(np.dtype(dtype), np.empty(0, dtype))
    return np.ascontiguousarray(values, dtype=dtype)


NO_STATS = np.empty((0, 0, 2))
NO_RESIDUAL = {dtype: np.empty((0, 0, 0), dtype) for dtype in NONE}


def epilogue(dtype, bias=None, scale=None, relu=False, plane_stats=None, residual=None,
             residual_scale=1.0):
    """The epilogue tuple (scale, bias, relu, stats, residual, lam) of a convolution whose
    output has `dtype`: `bias` added (or, with `scale`, out * scale + bias), then
    residual_scale * residual, then relu where asked; the arguments as
    checks.conv2d_forward_args has checked them (a scale with a bias, both of the output's
    dtype; the residual C-contiguous of the output's shape and dtype). plane_stats: a
    float64 (OC, N, 2) array that receives the moments of every output plane
    (plane_moments), written by the cores."""
    dtype = np.dtype(dtype)
    stats = NO_STATS if plane_stats is None else plane_stats
    res = (NO_RESIDUAL.get(dtype, np.empty((0, 0, 0), dtype)) if residual is None
           else residual.reshape(residual.shape[:2] + (int(np.prod(residual.shape[2:])),)))
    return (_array_or_empty(scale, dtype), _array_or_empty(bias, dtype), bool(relu), stats,
            res, dtype.type(residual_scale))


NO_EPILOGUE = {dtype: epilogue(dtype) for dtype in NONE}


@njit(cache=True, inline="always")
def single_moments(value):
    """plane_moments of a plane of one value, as its loops compute it."""
    total = 0.0 + value
    d = value - total
    return total, 0.0 + d * d


@njit(cache=True, fastmath={"reassoc"})
def plane_moments(row):
    """(sum(row), sum((row - mean)^2)) of one plane in float64, mean = sum(row)/len(row):
    two passes over the plane, while it is in cache. The sums may be reassociated
    (several accumulators, vectorised), as batch norm's have always been; one compiled
    function for both of its callers, so they agree to the last bit."""
    if row.shape[0] == 1:
        return single_moments(row[0])
    total = 0.0
    for k in range(row.shape[0]):
        total += row[k]
    mean = total / row.shape[0]
    squares = 0.0
    for k in range(row.shape[0]):
        d = row[k] - mean
        squares += d * d
    return total, squares


@njit(cache=True)
def finish(out3, b0, m, epilogue):
    """out3 (N, OC, P): the epilogue on every pixel of images b0..b0+m-1 (nothing when
    it is empty)."""
    scale, bias, relu, stats, residual, lam = epilogue
    if bias.shape[0] == 0 and not relu and stats.shape[0] == 0 and residual.shape[0] == 0:
        return
    for b in range(b0, b0 + m):
        for o in range(out3.shape[1]):
            row = out3[b, o]
            if scale.shape[0]:
                s, t = scale[o], bias[o]
                for k in range(row.shape[0]):
                    row[k] = row[k] * s + t
            elif bias.shape[0]:
                t = bias[o]
                for k in range(row.shape[0]):
                    row[k] += t
            if residual.shape[0]:                      # as add_scaled: 1 * r is r
                r = residual[b, o]
                for k in range(row.shape[0]):
                    row[k] = row[k] + lam * r[k]
            if relu:
                for k in range(row.shape[0]):
                    row[k] = np.maximum(row[k], 0)    # as relu_forward: NaN passes
            if stats.shape[0]:
                stats[o, b, 0], stats[o, b, 1] = plane_moments(row)
