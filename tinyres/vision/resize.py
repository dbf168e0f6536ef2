"""Resizing an image array: nearest and bilinear sampling, as F.interpolate does it.

The rows and columns are axes h_axis and h_axis + 1 of `array`. "bilinear" places pixel
centres at half-pixel positions (align_corners=False). "nearest" takes source pixel
floor(i * scale), as F.interpolate does for tensors; "nearest-pil" takes
floor((i + 0.5) * scale), as PIL does for images (torchvision itself differs between its
two paths). "bilinear-aa" is antialiased bilinear, as PIL and F.interpolate(...,
antialias=True) do it: when shrinking, the triangle filter widens to the scale, so every
input pixel contributes (upscaling, it equals "bilinear"). Integer arrays are rounded and
clipped back to their dtype.
"""
import numpy as np

from tinyres import backend


def resize_array(array, h_axis, out_h, out_w, mode):
    """`array` resized to (out_h, out_w) along axes (h_axis, h_axis + 1)."""
    xp = backend.get_array_module(array)
    work = array.astype(np.float64) if array.dtype.kind != "f" else array
    for axis, n_out in ((h_axis, out_h), (h_axis + 1, out_w)):
        work = _resize_axis(xp, work, axis, n_out, mode)
    if array.dtype.kind in "ui":
        info = np.iinfo(array.dtype)
        return xp.clip(xp.round(work), info.min, info.max).astype(array.dtype)
    return work.astype(array.dtype, copy=False)


def _resize_axis(xp, array, axis, n_out, mode):
    n_in = array.shape[axis]
    scale = n_in / n_out
    if mode == "bilinear-aa":
        weights = xp.asarray(antialias_weights(n_in, n_out))
        moved = xp.tensordot(weights, xp.moveaxis(array, axis, 0), axes=(1, 0))
        return xp.moveaxis(moved, 0, axis)
    if mode in ("nearest", "nearest-pil"):
        offset = 0.5 if mode == "nearest-pil" else 0.0
        src = xp.floor((xp.arange(n_out) + offset) * scale).astype(np.int64)
        src = xp.minimum(src, n_in - 1)
        return xp.take(array, src, axis=axis)
    pos = xp.maximum((xp.arange(n_out) + 0.5) * scale - 0.5, 0)
    lo = xp.minimum(xp.floor(pos).astype(np.int64), n_in - 1)
    hi = xp.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    return xp.take(array, lo, axis=axis) * (1 - frac) + xp.take(array, hi, axis=axis) * frac


def antialias_weights(n_in, n_out):
    """(n_out, n_in) weights: output pixel i averages the inputs under a triangle of
    half-width max(scale, 1) centred on its centre (i + 0.5) * scale, normalised."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        w = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - centre + 0.5) / support))
        weights[i, lo:hi] = w / w.sum()
    return weights
