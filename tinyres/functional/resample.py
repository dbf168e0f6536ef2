"""Resampling: interpolate (nearest; linear, bilinear, trilinear).

Along each spatial axis, resampling is a matrix: output position o reads input positions
with weights (one 1 for nearest; two weights summing to 1 for linear). interpolate builds
torch's matrices and applies them axis by axis, so one Function serves every mode: its
backward applies the transposed matrices.
"""
import math

import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module

_LINEAR_MODES = {"linear": 3, "bilinear": 4, "trilinear": 5}


class Resample(Function):
    @staticmethod
    def forward(ctx, x, matrices):
        """matrices[k] (out_k, in_k) applied along spatial axis k (axis 2 + k)."""
        xp = get_array_module(x)
        ctx.matrices = matrices
        for k, m in enumerate(matrices):
            x = xp.moveaxis(xp.tensordot(m, x, axes=([1], [2 + k])), 0, 2 + k)
        return xp.ascontiguousarray(x)

    @staticmethod
    def backward(ctx, grad_out):
        # d (M x)/dx = M^T along each axis, applied in reverse order
        xp = get_array_module(grad_out)
        g = grad_out
        for k in reversed(range(len(ctx.matrices))):
            g = xp.moveaxis(xp.tensordot(ctx.matrices[k].T, g, axes=([1], [2 + k])), 0, 2 + k)
        return xp.ascontiguousarray(g)


def nearest_matrix(in_size, out_size, scale, dtype):
    """torch's nearest: source = min(floor(o * s), in - 1) in float32 arithmetic, with
    s = 1 / scale_factor when one is given, else in / out."""
    s = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
    src = np.minimum(np.floor(np.arange(out_size, dtype=np.float32) * s).astype(np.int64),
                     in_size - 1)
    m = np.zeros((out_size, in_size), dtype=dtype)
    m[np.arange(out_size), src] = 1
    return m


def linear_matrix(in_size, out_size, scale, align_corners, dtype):
    """torch's linear weights: with align_corners the corners meet (source = o * (in-1) /
    (out-1)); without, half-pixel centres (source = (o + 0.5) s - 0.5, at least 0) with
    s = 1 / scale_factor when one is given, else in / out. Computed in the input's dtype."""
    ftype = np.dtype(dtype).type
    o = np.arange(out_size, dtype=dtype)
    if align_corners:
        s = ftype(in_size - 1) / ftype(out_size - 1) if out_size > 1 else ftype(0)
        src = o * s
    else:
        s = ftype(1.0 / scale) if scale else ftype(in_size) / ftype(out_size)
        src = np.maximum((o + ftype(0.5)) * s - ftype(0.5), ftype(0))
    i0 = src.astype(np.int64)
    i1 = i0 + (i0 < in_size - 1)
    lam1 = np.clip(src - i0, 0, 1).astype(dtype)
    m = np.zeros((out_size, in_size), dtype=dtype)
    rows = np.arange(out_size)
    m[rows, i0] += 1 - lam1
    m[rows, i1] += lam1
    return m


def _per_axis(value, n, name):
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"interpolate: {name} shape must match input shape. Input is "
                             f"{n}D, {name} is {len(value)}")
        return tuple(value)
    return (value,) * n


def _sizes(input, size, scale_factor, recompute_scale_factor):
    """(output sizes, scales for the index rule) as torch's interpolate computes them."""
    n = input.ndim - 2
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: either size or scale_factor should be defined"
                         if size is None else
                         "interpolate: only one of size or scale_factor should be defined")
    if size is not None:
        return tuple(int(s) for s in _per_axis(size, n, "size")), (None,) * n
    scales = tuple(float(s) for s in _per_axis(scale_factor, n, "scale_factor"))
    out = tuple(int(math.floor(float(i) * s)) for i, s in zip(input.shape[2:], scales))
    return out, ((None,) * n if recompute_scale_factor else scales)


def _check_mode(input, mode, align_corners):
    if mode == "nearest":
        if align_corners is not None:
            raise ValueError("interpolate: align_corners option can only be set with the "
                             "interpolating modes: linear | bilinear | bicubic | trilinear")
        if input.ndim not in (3, 4, 5):
            raise NotImplementedError(f"interpolate: nearest needs a 3-D, 4-D or 5-D input, "
                                      f"got shape {input.shape}")
        return
    if mode not in _LINEAR_MODES:
        raise NotImplementedError(f"interpolate: mode {mode!r} is not supported by tinyres "
                                  "(nearest, linear, bilinear and trilinear are)")
    if input.ndim != _LINEAR_MODES[mode]:
        raise NotImplementedError(f"interpolate: Got {input.ndim}D input, but {mode} mode "
                                  f"needs {_LINEAR_MODES[mode]}D input")


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """torch.nn.functional.interpolate for mode 'nearest' (3-, 4- or 5-D inputs) and
    'linear'/'bilinear'/'trilinear' (3-/4-/5-D), both align_corners settings, with
    torch's index rules (see nearest_matrix and linear_matrix)."""
    _check_mode(input, mode, align_corners)
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported by tinyres")
    out_sizes, scales = _sizes(input, size, scale_factor, recompute_scale_factor)
    if min(out_sizes) <= 0:
        raise ValueError(f"interpolate: output sizes must be positive, got {out_sizes} for an "
                         f"input of shape {input.shape}")
    xp = get_array_module(input.array)
    matrices = []
    for n_in, n_out, s in zip(input.shape[2:], out_sizes, scales):
        m = nearest_matrix(n_in, n_out, s, input.dtype) if mode == "nearest" else \
            linear_matrix(n_in, n_out, s, bool(align_corners), input.dtype)
        matrices.append(xp.asarray(m))
    return Resample.apply(input, matrices=tuple(matrices))
