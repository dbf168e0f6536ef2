"""unfold and fold: torch.nn.functional's im2col and col2im, on the kernel layer of their
input (reference.py, cpu.py or cuda.py, through kernels_for).

The kernels keep the columns of the whole batch side by side, (C*kh*kw, N*L) with L = OH*OW
blocks an image; torch puts the batch first, (N, C*kh*kw, L). Both order the rows channel
first, then kernel row, then kernel column, and the blocks of an image row-major over the
output grid, so the two layouts are one transpose apart:
    torch[n, r, l] = kernels[r, n*L + l]
unfold copies every window into a column; fold is its adjoint (it adds every column entry
back onto the pixel it came from, summing overlaps), so the backward of each is the other.

The kernels take float32 and float64. float16 and bool, which torch also takes, run on
them in float32 and are cast back; on the CPU a float16 fold adds the kernel taps one at a
time, rounding after each, as torch's CPU col2im does (its CUDA col2im sums in float32 and
rounds once, as the GPU path here does).
"""
import operator

import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module, kernels_for
from tinyres.tensor import Tensor

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_TORCH_INT_NAMES = {"int64": "Long", "int32": "Int", "int16": "Short", "int8": "Char",
                    "uint8": "Byte"}


# ----- the two layouts ------------------------------------------------------------------------

def to_batch_first(xp, cols, n, count):
    """(C*kh*kw, N*L), the kernels' columns -> (N, C*kh*kw, L), torch's blocks (L = count)."""
    return xp.ascontiguousarray(cols.reshape(cols.shape[0], n, count).transpose(1, 0, 2))


def to_kernel_layout(xp, blocks):
    """(N, C*kh*kw, L), torch's blocks -> (C*kh*kw, N*L), the kernels' columns."""
    return xp.ascontiguousarray(blocks.transpose(1, 0, 2)).reshape(blocks.shape[1], -1)


def _blocks_along(size, k, d, p, s):
    """The number of windows along one axis, floor((size + 2p - d(k - 1) - 1)/s) + 1
    (floor, not truncation, as torch's div_rtn: it may be negative)."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _to_kernel_dtype(a):
    """a itself in float32/float64, else a float32 copy (float16 and bool)."""
    return a if a.dtype in _KERNEL_DTYPES else a.astype(np.float32)


def _cast_back(a, dtype):
    """A kernel result back in the caller's dtype (bool: any non-zero sum is True)."""
    if a.dtype == dtype:
        return a
    return a != 0 if dtype == np.bool_ else a.astype(dtype)


# ----- the array-level im2col and col2im in torch's layout ------------------------------------

def unfold_image(x, window):
    """x (N, C, H, W) -> its blocks (N, C*kh*kw, L); window = (kh, kw, sh, sw, ph, pw, dh, dw)."""
    xp = get_array_module(x)
    kh, kw, sh, sw, ph, pw, dh, dw = window
    count = _blocks_along(x.shape[2], kh, dh, ph, sh) * _blocks_along(x.shape[3], kw, dw, pw, sw)
    cols = kernels_for(x).im2col(_to_kernel_dtype(x), *window)
    return _cast_back(to_batch_first(xp, cols, x.shape[0], count), x.dtype)


def fold_blocks(blocks, x_shape, window):
    """blocks (N, C*kh*kw, L) -> the image of shape x_shape = (N, C, H, W) they sum to."""
    xp = get_array_module(blocks)
    cols = to_kernel_layout(xp, blocks)
    if blocks.dtype == np.float16 and xp is np:
        return _fold_half_tap_by_tap(kernels_for(blocks), cols, x_shape, window)
    image = kernels_for(blocks).col2im(_to_kernel_dtype(cols), x_shape, *window)
    return _cast_back(image, blocks.dtype)


def _fold_half_tap_by_tap(kernels, cols, x_shape, window):
    """col2im of float16 columns with torch's CPU rounding: the taps (i, j) of the kernel
    added in row-major order, each sum rounded to float16. One tap reaches a pixel at most
    once, so its col2im in float32 is exact."""
    taps = window[0] * window[1]
    per_tap = cols.reshape(cols.shape[0] // taps, taps, -1)
    image = np.zeros(x_shape, dtype=np.float16)
    for k in range(taps):
        one_tap = np.zeros(per_tap.shape, dtype=np.float32)
        one_tap[:, k] = per_tap[:, k]
        added = kernels.col2im(one_tap.reshape(cols.shape[0], -1), x_shape, *window)
        image = (image.astype(np.float32) + added).astype(np.float16)
    return image


# ----- the Functions --------------------------------------------------------------------------

class Unfold(Function):
    @staticmethod
    def forward(ctx, x, window):
        ctx.shape, ctx.window = x.shape, window
        if x.ndim == 3:                                   # unbatched (C, H, W)
            return unfold_image(x[None], window)[0]
        return unfold_image(x, window)

    @staticmethod
    def backward(ctx, grad_out):
        # d unfold/dx = fold: each block entry sends its gradient back to the pixel it copied
        shape4 = ctx.shape if len(ctx.shape) == 4 else (1,) + ctx.shape
        blocks = grad_out if grad_out.ndim == 3 else grad_out[None]
        return fold_blocks(blocks, shape4, ctx.window).reshape(ctx.shape)


class Fold(Function):
    @staticmethod
    def forward(ctx, blocks, image_shape, window):
        ctx.shape, ctx.window = blocks.shape, window
        if blocks.ndim == 2:                              # unbatched (C*kh*kw, L)
            return fold_blocks(blocks[None], (1,) + image_shape, window)[0]
        return fold_blocks(blocks, (blocks.shape[0],) + image_shape, window)

    @staticmethod
    def backward(ctx, grad_out):
        # d fold/d blocks = unfold: each block entry gets the gradient of the pixel it joined
        image = grad_out if grad_out.ndim == 4 else grad_out[None]
        return unfold_image(image, ctx.window).reshape(ctx.shape)


# ----- arguments, checked in torch's order with torch's exception classes ---------------------

def _int_pair(value, name, op):
    """torch's _pair and argument parser: an int is used twice, a sequence must hold two
    ints (NumPy integers count; bools and floats are a TypeError)."""
    values = tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else (value,) * 2
    for pos, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or not hasattr(v, "__index__"):
            raise TypeError(f"{op}: {name} must be an int or a tuple of ints, but found "
                            f"element of type {type(v).__name__} at pos {pos}")
    if len(values) != 2:
        raise RuntimeError(f"{op}: expected {name} to have 2 entries (height, width), but "
                           f"got {len(values)}: {value!r}")
    return tuple(operator.index(v) for v in values)


def _check_positive(op, label, field, pair, smallest=1):
    """torch's check (and message) that a window pair is >= smallest (1, or 0 for padding)."""
    if min(pair) < smallest:
        expected = "greater than zero" if smallest == 1 else "non-negative"
        raise RuntimeError(f"{op}: {label} should be {expected}, but got "
                           f"{field}_height: {pair[0]} {field}_width: {pair[1]}")


def _check_dtype(op, kernel, dtype):
    """torch has no integer im2col/col2im: NotImplementedError, after the shape checks."""
    if np.dtype(dtype).kind in "iu":
        raise NotImplementedError(f"{op}: \"{kernel}_out_cpu\" not implemented for "
                                  f"'{_TORCH_INT_NAMES.get(np.dtype(dtype).name, dtype)}' "
                                  f"(expected a floating-point or bool input, got {dtype})")


def _check_tensor(op, input):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' (position 1) must be Tensor, not "
                        f"{type(input).__name__}")


def _unfold_window(input, kernel_size, dilation, padding, stride):
    """unfold's checks (torch's im2col_shape_check); the kernels' window tuple."""
    op = "unfold"
    _check_tensor(op, input)
    k, d, p, s = (_int_pair(v, n, op) for v, n in ((kernel_size, "kernel_size"),
                  (dilation, "dilation"), (padding, "padding"), (stride, "stride")))
    _check_positive(op, "kernel size", "kernel", k)
    _check_positive(op, "dilation", "dilation", d)
    _check_positive(op, "padding", "pad", p, smallest=0)
    _check_positive(op, "stride", "stride", s)
    shape = tuple(input.shape)
    expected = (f"{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input with non-zero "
                f"C, H and W (N may be 0), but got shape {shape}")
    if len(shape) < 3:
        raise IndexError(expected)            # torch reads size(2) before it checks ndim
    if len(shape) > 4 or 0 in shape[-3:]:
        raise RuntimeError(expected)
    blocks = [_blocks_along(shape[a], k[i], d[i], p[i], s[i]) for i, a in enumerate((-2, -1))]
    if min(blocks) < 1:
        raise RuntimeError(f"{op}: given input with spatial size {shape[-2:]}, kernel_size="
                           f"{k}, dilation={d}, padding={p}, calculated shape of the array "
                           f"of sliding blocks as {tuple(blocks)}, but its components must be "
                           f"at least one")
    _check_dtype(op, "im2col", input.dtype)
    return k + s + p + d


def _fold_window(input, output_size, kernel_size, dilation, padding, stride):
    """fold's checks (torch's col2im_shape_check); (output_size, the kernels' window)."""
    op = "fold"
    _check_tensor(op, input)
    out, k, d, p, s = (_int_pair(v, n, op) for v, n in (
        (output_size, "output_size"), (kernel_size, "kernel_size"), (dilation, "dilation"),
        (padding, "padding"), (stride, "stride")))
    _check_positive(op, "kernel size", "kernel", k)
    _check_positive(op, "stride", "stride", s)
    _check_positive(op, "dilation", "dilation", d)
    _check_positive(op, "padding", "pad", p, smallest=0)
    shape = tuple(input.shape)
    if len(shape) not in (2, 3) or 0 in shape[-2:]:
        raise RuntimeError(f"{op}: expected a 2-D (C*kh*kw, L) or 3-D (N, C*kh*kw, L) input "
                           f"with non-zero C*kh*kw and L (N may be 0), but got shape {shape}")
    given = f"given output_size={out}, kernel_size={k}, dilation={d}, padding={p}, stride={s}"
    if shape[-2] % (k[0] * k[1]):
        raise RuntimeError(f"{op}: expected size of input's dimension {len(shape) - 2} to be "
                           f"divisible by the product of kernel_size, but got "
                           f"input.size({len(shape) - 2})={shape[-2]} and kernel_size={k}")
    blocks = [_blocks_along(out[i], k[i], d[i], p[i], s[i]) for i in range(2)]
    if shape[-1] != blocks[0] * blocks[1]:
        raise RuntimeError(f"{op}: {given}, expected size of input's dimension "
                           f"{len(shape) - 1} to match the calculated number of sliding blocks "
                           f"{blocks[0]} * {blocks[1]} = {blocks[0] * blocks[1]}, but got "
                           f"input.size({len(shape) - 1})={shape[-1]}")
    if min(blocks) < 1:
        raise RuntimeError(f"{op}: {given}, calculated shape of the array of sliding blocks "
                           f"as {tuple(blocks)}, which is too small (non-positive)")
    if min(out) < 1:
        raise RuntimeError(f"{op}: expected output spatial size to be positive, but got "
                           f"output_size={out}")
    _check_dtype(op, "col2im", input.dtype)
    return (shape[-2] // (k[0] * k[1]),) + out, k + s + p + d


# ----- the public functions -------------------------------------------------------------------

def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """torch.nn.functional.unfold: every sliding kernel_size block of input (N, C, H, W)
    as a column, -> (N, C*kh*kw, L), L the number of blocks; (C, H, W) -> (C*kh*kw, L).
    Rows run over (channel, kernel row, kernel column), columns over the output grid
    row-major. Its backward is fold."""
    return Unfold.apply(input, window=_unfold_window(input, kernel_size, dilation, padding,
                                                     stride))


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """torch.nn.functional.fold, unfold's adjoint: blocks (N, C*kh*kw, L) summed into an
    image (N, C, *output_size), overlaps added; (C*kh*kw, L) -> (C, *output_size). Its
    backward is unfold."""
    image_shape, window = _fold_window(input, output_size, kernel_size, dilation, padding,
                                       stride)
    return Fold.apply(input, image_shape=image_shape, window=window)
