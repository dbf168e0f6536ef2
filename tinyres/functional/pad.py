"""torch.nn.functional.pad: constant, reflect, replicate and circular padding.

`pad` lists (left, right) widths starting from the LAST dimension, as torch's; a negative
width crops. Two ops do the work:

    ConstantPad   crop where a width is negative, then surround with `value`; its gradient
                  is the interior of grad_out, put back where the crop took it from
    IndexPad      every other mode is a gather: along each padded axis, output position p
                  reads input position index[p] (reflect: mirrored without repeating the
                  edge; replicate: the edge repeated; circular: wrapped around). Its
                  gradient is the adjoint, a scatter-add: each input position receives
                  the sum of the output gradients that read it.

Plain xp code (NumPy or CuPy): no kernel of its own.
"""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import full, get_array_module
from tinyres.functional.shape import as_int

MODES = ("constant", "reflect", "replicate", "circular")


class ConstantPad(Function):
    @staticmethod
    def forward(ctx, a, widths, value):
        xp = get_array_module(a)
        crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for n, (lo, hi) in zip(a.shape, widths))
        grow = tuple((max(lo, 0), max(hi, 0)) for lo, hi in widths)
        kept = a[crop]
        out = full(xp, tuple(n + lo + hi for n, (lo, hi) in zip(kept.shape, grow)), value,
                   a.dtype)                      # value cast to a's dtype, as np.pad does
        ctx.shape, ctx.crop = a.shape, crop
        ctx.inner = tuple(slice(lo, out.shape[i] - hi) for i, (lo, hi) in enumerate(grow))
        out[ctx.inner] = kept
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # the padding is constant: the interior's gradient goes back to where it was cut
        grad = get_array_module(grad_out).zeros(ctx.shape, dtype=grad_out.dtype)
        grad[ctx.crop] = grad_out[ctx.inner]
        return grad


class IndexPad(Function):
    @staticmethod
    def forward(ctx, a, indices):
        xp = get_array_module(a)
        ctx.sizes = a.shape
        for axis, index in indices:
            a = xp.take(a, xp.asarray(index), axis=axis)
        ctx.indices = indices
        return a

    @staticmethod
    def backward(ctx, grad_out):
        # out[p] = a[index[p]] along each axis: d out/d a scatter-adds grad_out at index
        xp = get_array_module(grad_out)
        grad = grad_out
        for axis, index in reversed(ctx.indices):
            n = ctx.sizes[axis]
            one_hot = xp.asarray(index[:, None] == np.arange(n)[None, :], dtype=grad.dtype)
            grad = xp.moveaxis(xp.tensordot(grad, one_hot, axes=([axis], [0])), -1, axis)
        return xp.ascontiguousarray(grad)


# ----- the index of each mode, along one axis of size n padded by (lo, hi) --------------
def _reflect(n, lo, hi):
    p = np.arange(-lo, n + hi)
    return np.where(p < 0, -p, np.where(p >= n, 2 * (n - 1) - p, p))


def _replicate(n, lo, hi):
    return np.clip(np.arange(-lo, n + hi), 0, n - 1)


def _circular(n, lo, hi):
    """As torch: crop by the negative widths first, then wrap within what is left."""
    start, kept = max(-lo, 0), n - max(-lo, 0) - max(-hi, 0)
    return start + np.arange(-max(lo, 0), kept + max(hi, 0)) % kept


_INDEX = {"reflect": _reflect, "replicate": _replicate, "circular": _circular}


def _check_widths(shape, pad, mode, value):
    """The (left, right) widths of each padded axis, from the last; torch's errors."""
    widths = [as_int(p, "pad", "pad") for p in pad]
    if len(widths) % 2:
        raise RuntimeError(f"pad: padding length must be divisible by 2, got {tuple(pad)}")
    if len(widths) > 2 * len(shape):
        raise RuntimeError(f"pad: padding length should be less than or equal to two times "
                           f"the input dimension but got padding length {len(widths)} and "
                           f"input of dimension {len(shape)}")
    if mode not in MODES:
        raise NotImplementedError(f"pad: unrecognised padding mode {mode!r}; expected one "
                                  f"of {', '.join(MODES)}")
    if mode != "constant":
        if value is not None and value != 0:
            raise RuntimeError(f'pad: padding mode "{mode}" doesn\'t take in value argument')
        if len(shape) not in (len(widths) // 2 + 1, len(widths) // 2 + 2):
            raise NotImplementedError(
                f"pad: padding size {len(widths)} is not supported for {len(shape)}D input "
                f"tensor in mode {mode!r}; supported: 2 widths for a 2D or 3D input, 4 for "
                f"3D or 4D, 6 for 4D or 5D")
    return [(widths[2 * k], widths[2 * k + 1]) for k in range(len(widths) // 2)]


def _check_mode_fits(shape, axis, lo, hi, mode):
    """torch's limits on the widths of one axis of size n = shape[axis]."""
    n = shape[axis]
    if max(-lo, 0) + max(-hi, 0) > n or (mode != "constant" and n + lo + hi <= 0):
        raise RuntimeError(f"pad: widths ({lo}, {hi}) crop more than dimension {axis} of "
                           f"input {list(shape)} holds, or leave it empty")
    if mode == "circular" and max(-lo, 0) + max(-hi, 0) >= n:
        raise RuntimeError(f"pad: circular widths ({lo}, {hi}) crop all of dimension {axis} "
                           f"of input {list(shape)}, leaving nothing to wrap around")
    if mode != "constant" and n == 0:
        raise RuntimeError(f"pad: mode {mode!r} cannot pad dimension {axis} of size 0 of "
                           f"input {list(shape)}")
    if mode == "reflect" and max(lo, hi) >= n:
        raise RuntimeError(f"pad: padding size should be less than the corresponding input "
                           f"dimension, but got: padding ({lo}, {hi}) at dimension {axis} of "
                           f"input {list(shape)}")
    if mode == "circular" and max(lo, hi) > n:
        raise RuntimeError(f"pad: padding ({lo}, {hi}) at dimension {axis} of input "
                           f"{list(shape)} causes wrapping around more than once")


def pad(input, pad, mode="constant", value=None):
    """torch.nn.functional.pad: pad (or, with negative widths, crop) the last len(pad)//2
    dimensions of input; `pad` = (left of the last, right of the last, left of the one
    before, ...). mode 'constant' fills with value (0 if None) on any rank; 'reflect',
    'replicate' and 'circular' pad the last 1, 2 or 3 dimensions of an input with one or
    two more dimensions than that (torch's combinations)."""
    widths = _check_widths(input.shape, pad, mode, value)
    ndim = input.ndim
    per_axis = [(ndim - 1 - k, lo, hi) for k, (lo, hi) in enumerate(widths)]
    for axis, lo, hi in per_axis:
        _check_mode_fits(input.shape, axis, lo, hi, mode)
    if mode == "constant":
        full = [(0, 0)] * ndim
        for axis, lo, hi in per_axis:
            full[axis] = (lo, hi)
        return ConstantPad.apply(input, widths=tuple(full),
                                 value=0.0 if value is None else value)
    indices = tuple((axis, _INDEX[mode](input.shape[axis], lo, hi)) for axis, lo, hi in per_axis)
    return IndexPad.apply(input, indices=indices)
