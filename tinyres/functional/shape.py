"""Shape ops: they move values around without changing them, so each backward moves the
gradient back the same way (reshape back, transpose back, scatter back)."""
import operator

import numpy as np

from tinyres.autograd import Function
from tinyres.backend import full, get_array_module, to_device
from tinyres.functional.math import cast, result_type
from tinyres.tensor import Tensor


def as_int(value, name, op):
    """`value` as a Python int. Python and NumPy integers pass (operator.index, the
    standard test for "an integer of any kind"), and so do bools, NumPy's included;
    a float or anything else is a TypeError naming the op and the argument."""
    if isinstance(value, np.bool_):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__} "
                        f"{value!r}") from None


def shape_arg(shape):
    """A shape as a tuple of Python ints, from f(2, 3), f((2, 3)), f([2, 3]) or f(2);
    NumPy integers count as ints (as_int), floats are a TypeError."""
    if not isinstance(shape, (tuple, list)):
        shape = (shape,)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(as_int(n, "a size in a shape", "shape") for n in shape)


def _dim(d, ndim, op):
    d = as_int(d, "dim", op)
    if not -ndim <= d < max(ndim, 1):
        raise IndexError(f"{op}: dimension {d} is out of range for a tensor of {ndim} dims")
    return d % max(ndim, 1)


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, grad_out):
        # a reshape of the values: reshape the gradient back
        return grad_out.reshape(ctx.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.inverse = tuple(np.argsort(dims))
        return a.transpose(dims)

    @staticmethod
    def backward(ctx, grad_out):
        # move every axis back where it came from
        return grad_out.transpose(ctx.inverse)


class Expand(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return get_array_module(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, grad_out):
        # every copy of a value sends its gradient back to the one original: sum them
        from tinyres.functional.math import unbroadcast
        return unbroadcast(grad_out, ctx.shape)


def is_basic_index(index):
    """True for an index of ints, slices, None and Ellipsis only (NumPy's basic indexing),
    which never reads a position twice."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice))
               for p in parts)


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.index = a.shape, index
        return a[index]

    @staticmethod
    def backward(ctx, grad_out):
        # scatter-add the gradient into the positions read (repeated indices accumulate)
        xp = get_array_module(grad_out)
        grad = full(xp, ctx.shape, 0, grad_out.dtype)
        if is_basic_index(ctx.index):      # slices and ints read each position once
            grad[ctx.index] = grad_out
        elif xp is np:
            np.add.at(grad, ctx.index, grad_out)
        else:
            import cupyx
            cupyx.scatter_add(grad, ctx.index, grad_out)
        return grad


class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim = dim
        ctx.bounds = [int(b) for b in np.cumsum([a.shape[dim] for a in arrays])[:-1]]
        return get_array_module(arrays[0]).concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, grad_out):
        # each input gets back its own slice of the gradient
        return tuple(get_array_module(grad_out).split(grad_out, ctx.bounds, axis=ctx.dim))


# ----- the public functions ------------------------------------------------------------
def _check_sizes(op, shape):
    """torch's rule for a target shape: sizes >= 0, and at most one -1 (inferred)."""
    for i, n in enumerate(shape):
        if n < -1:
            raise RuntimeError(f"{op}: invalid shape dimension {n} at index {i} of shape "
                               f"{list(shape)}")
    if shape.count(-1) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred, got shape "
                           f"{list(shape)}")


def reshape(a, *shape):
    """input's values in a new shape (one size may be -1: inferred)."""
    shape = shape_arg(shape)
    _check_sizes("reshape", shape)     # NumPy would read -2 as -1
    try:
        np.broadcast_to(np.int8(0), a.shape).reshape(shape)
    except ValueError:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {a.numel()} "
                           f"(reshape of a tensor of shape {a.shape})") from None
    return Reshape.apply(a, shape=shape)


def view(a, *shape):
    """reshape that never copies: as torch, a view of memory that cannot be read in the
    new shape without a copy (a transposed tensor, say) is an error."""
    out = reshape(a, *shape)
    if out.numel() and not out._shares_memory_with(a):
        raise RuntimeError(f"view size is not compatible with input tensor's size and stride "
                           f"(at least one dimension spans across two contiguous subspaces): "
                           f"{a.shape} to {out.shape}. Use .reshape(...) instead.")
    return out


def flatten(a, start_dim=0, end_dim=-1):
    """input with dims start_dim..end_dim merged into one."""
    if a.ndim == 0:
        return reshape(a, 1)
    start, end = _dim(start_dim, a.ndim, "flatten"), _dim(end_dim, a.ndim, "flatten")
    if start > end:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shape = a.shape[:start] + (int(np.prod(a.shape[start:end + 1])),) + a.shape[end + 1:]
    return reshape(a, shape)


def permute(a, *dims):
    """input with its dims reordered as dims (a permutation, as torch.permute)."""
    dims = shape_arg(dims)
    if len(dims) != a.ndim:
        raise RuntimeError(f"permute(): number of dimensions in the tensor input does not "
                           f"match the length of the desired ordering of dimensions i.e. "
                           f"input.dim() = {a.ndim} is not equal to len(dims) = {len(dims)}")
    dims = tuple(_dim(d, a.ndim, "permute") for d in dims)
    if len(set(dims)) != len(dims):
        raise RuntimeError(f"permute(): duplicate dims are not allowed (got {dims} for a "
                           f"tensor of shape {a.shape}).")
    return Permute.apply(a, dims=dims)


def transpose(a, dim0, dim1):
    """input with dims dim0 and dim1 swapped."""
    dims = list(range(a.ndim))
    d0, d1 = _dim(dim0, a.ndim, "transpose"), _dim(dim1, a.ndim, "transpose")
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(a, dims=tuple(dims))


class Flip(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return get_array_module(a).flip(a, dims).copy()

    @staticmethod
    def backward(ctx, grad_out):
        # a reversal of positions: reverse the gradient back
        return get_array_module(grad_out).flip(grad_out, ctx.dims).copy()


def flip(input, dims):
    """input with the order of its elements reversed along each of dims (a tuple)."""
    if not isinstance(dims, (tuple, list)):
        raise TypeError(f"flip(): argument 'dims' must be tuple of ints, not "
                        f"{type(dims).__name__}")
    dims = tuple(_dim(d, input.ndim, "flip") for d in dims)
    if len(set(dims)) != len(dims):
        raise RuntimeError(f"dims has duplicates, original flip dims size={len(dims)}, but "
                           f"unique flip dims size={len(set(dims))}")
    return Flip.apply(input, dims=dims)


def t(input):
    """The transpose of a tensor of at most 2 dimensions (torch.t)."""
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                           f"{input.ndim}D")
    return transpose(input, 0, 1) if input.ndim == 2 else input


def squeeze(a, dim=None):
    """a without its size-1 dims (all of them, or those of dim: an int or a tuple)."""
    if dim is None:
        return reshape(a, tuple(n for n in a.shape if n != 1))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    dims = {_dim(d, a.ndim, "squeeze") for d in dims}
    return reshape(a, tuple(n for i, n in enumerate(a.shape) if i not in dims or n != 1))


def unsqueeze(a, dim):
    """input with a new size-1 dim at position dim."""
    d = _dim(dim, a.ndim + 1, "unsqueeze")
    return reshape(a, a.shape[:d] + (1,) + a.shape[d:])


def expand(a, *shape):
    """input broadcast to shape without copying (-1 keeps a size)."""
    shape = shape_arg(shape)
    lead = len(shape) - a.ndim
    if lead < 0:
        raise RuntimeError(f"expand({a.shape}, size={list(shape)}): the number of sizes "
                           f"provided ({len(shape)}) must be greater or equal to the number "
                           f"of dimensions in the tensor ({a.ndim})")
    for i, n in enumerate(shape):
        if n == -1 and i < lead:      # -1 keeps a size, and a new dim has none to keep
            raise RuntimeError(f"expand: the expanded size -1 isn't allowed in a leading, "
                               f"non-existing dimension {i} (shape {a.shape} to {shape})")
        if n < -1:
            raise RuntimeError(f"expand: invalid size {n} at index {i} of {shape}")
    target = tuple(a.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
    for i, n in enumerate(a.shape):
        if n != 1 and n != target[i + lead]:
            raise RuntimeError(f"expand: the expanded size of the tensor ({target[i + lead]}) "
                               f"must match the existing size ({n}) at non-singleton "
                               f"dimension {i + lead}.  Target sizes: {list(shape)}.  Tensor "
                               f"sizes: {list(a.shape)}")
    return Expand.apply(a, shape=target)


def _check_joinable(op, tensors, dim, same_size_along_dim):
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty list of tensors")
    first = tensors[0]
    for t in tensors[1:]:
        rest_a = [n for i, n in enumerate(first.shape) if same_size_along_dim or i != dim]
        rest_b = [n for i, n in enumerate(t.shape) if same_size_along_dim or i != dim]
        if t.ndim != first.ndim or rest_a != rest_b:
            what = "the same shape" if same_size_along_dim else f"equal sizes except in dim {dim}"
            raise ValueError(f"{op}: tensors must have {what}, got "
                             + ", ".join(str(x.shape) for x in tensors))


def cat(tensors, dim=0):
    """tensors joined along an existing dim (dtypes promote, as torch.cat)."""
    tensors = list(tensors)
    d = _dim(dim, tensors[0].ndim if tensors else 1, "cat")
    _check_joinable("cat", tensors, d, same_size_along_dim=False)
    dtype = result_type(*tensors)         # mixed dtypes promote, as torch.cat
    return Cat.apply(*(cast(t, dtype) for t in tensors), dim=d)


def stack(tensors, dim=0):
    """tensors of one shape joined along a new dim."""
    tensors = list(tensors)
    d = _dim(dim, tensors[0].ndim + 1 if tensors else 1, "stack")
    _check_joinable("stack", tensors, d, same_size_along_dim=True)
    return cat([unsqueeze(t, d) for t in tensors], dim=d)


def _plain_index(index, device):
    """Tensors and arrays inside an index become arrays on `device` (a 0-d integer one
    becomes a Python int, as torch reads it); the rest is kept."""
    if isinstance(index, Tensor):
        index = index.array
    if isinstance(index, tuple):
        return tuple(_plain_index(i, device) for i in index)
    if hasattr(index, "dtype") and hasattr(index, "shape"):
        if index.ndim == 0 and index.dtype.kind in "iu":
            return int(index)
        return to_device(index, device)
    return index


def _as_view_index(index):
    """A basic index with a trailing Ellipsis, so that NumPy returns a view even where it
    picks one element (x[0] of a vector is then a 0-d view, as in torch, not a copy)."""
    parts = index if isinstance(index, tuple) else (index,)
    if not is_basic_index(parts) or any(p is Ellipsis for p in parts) or \
            any(isinstance(p, (bool, np.bool_)) for p in parts):
        return index
    return parts + (Ellipsis,)


def getitem(a, index):
    """input[index] with NumPy's (and torch's) indexing rules."""
    index = _plain_index(index, a.device)
    if a.device.type == "cpu":   # check on a zero-cost view first, for a message with shapes
        try:
            np.broadcast_to(np.int8(0), a.shape)[index]
        except (IndexError, TypeError) as err:
            raise IndexError(f"getitem: index {index!r} is invalid for a tensor of shape "
                             f"{a.shape}: {err}") from None
    return GetItem.apply(a, index=_as_view_index(index))


# ----- gather, split, chunk, repeat ----------------------------------------------------
def _scatter_add(target, index, values):
    """target[index] += values, repeated positions accumulating (NumPy or CuPy)."""
    if get_array_module(target) is np:
        np.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)


def _along(index, dim):
    """The full advanced index that picks index[...] along dim, its own position elsewhere."""
    xp = get_array_module(index)
    grids = [xp.arange(n).reshape([n if d == k else 1 for k in range(index.ndim)])
             for d, n in enumerate(index.shape)]
    grids[dim] = index
    return tuple(grids)


class Gather(Function):
    @staticmethod
    def forward(ctx, a, index, dim):
        ctx.shape, ctx.index, ctx.dim = a.shape, index, dim
        return a[_along(index, dim)]

    @staticmethod
    def backward(ctx, grad_out):
        # out[i][j] = a[i][index[i][j]]: scatter-add the gradient back to the positions read
        grad = get_array_module(grad_out).zeros(ctx.shape, dtype=grad_out.dtype)
        _scatter_add(grad, _along(ctx.index, ctx.dim), grad_out)
        return grad


def gather(input, dim, index):
    """Values of input along dim at the positions in index (torch.gather): out has the
    shape of index, out[i][j] = input[i][index[i][j]] for dim=1."""
    d = _dim(dim, input.ndim, "gather")
    if not isinstance(index, Tensor) or index.dtype not in (np.int64, np.int32):
        raise RuntimeError(f"gather(): Expected dtype int32/int64 for index, got "
                           f"{getattr(index, 'dtype', type(index).__name__)}")
    if index.ndim != max(input.ndim, 1) and not (input.ndim == 0 and index.ndim == 0):
        raise RuntimeError(f"Index tensor must have the same number of dimensions as input "
                           f"tensor (input {input.shape}, index {index.shape})")
    for k, (n, m) in enumerate(zip(index.shape, input.shape)):
        if k != d and n > m:
            raise RuntimeError(f"gather(): Size does not match at dimension {k} expected "
                               f"index {list(index.shape)} to be no larger than self "
                               f"{list(input.shape)} apart from dimension {d}")
    size = input.shape[d] if input.ndim else 1
    idx = index.array
    if idx.size and (bool((idx < -size).any()) or bool((idx >= size).any())):
        raise RuntimeError(f"gather(): index {int(idx.max())} is out of bounds for dimension "
                           f"{d} with size {size}")
    if input.ndim == 0:
        return reshape(input, ())
    return Gather.apply(input, index=idx % size if idx.size else idx, dim=d)


def split(tensor, split_size_or_sections, dim=0):
    """Pieces of `tensor` along dim: of split_size each (the last one smaller), or of
    the sizes listed (which must add up to the dim's size)."""
    d = _dim(dim, tensor.ndim, "split")
    n = tensor.shape[d]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = [as_int(s, "a split size", "split") for s in split_size_or_sections]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} "
                               f"(input tensor's size at dimension {d}), but got "
                               f"split_sizes={sizes}")
    else:
        size = as_int(split_size_or_sections, "split_size", "split")
        if size < 0 or (size == 0 and n != 0):
            raise RuntimeError(f"split expects split_size be non-negative, but got "
                               f"split_size={size}" if size < 0 else
                               f"split_size can only be 0 if dimension size is 0, but got "
                               f"dimension size of {n}")
        sizes = [size] * (n // size) + ([n % size] if n % size else []) if n else [0]
    return tuple(_narrow(tensor, d, start, s)
                 for start, s in zip(np.cumsum([0] + sizes[:-1]).tolist(), sizes))


def _narrow(a, dim, start, length):
    index = (slice(None),) * dim + (slice(start, start + length),)
    return getitem(a, index)


def chunk(input, chunks, dim=0):
    """At most `chunks` pieces of equal size ceil(n / chunks) along dim (the last smaller)."""
    chunks = as_int(chunks, "chunks", "chunk")
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    d = _dim(dim, input.ndim, "chunk")
    n = input.shape[d]
    return split(input, max(-(-n // chunks), 1) if n else 0, d) if n else \
        tuple(_narrow(input, d, 0, 0) for _ in range(chunks))


def repeat(a, *sizes):
    """a tiled sizes[i] times along each dim (torch's Tensor.repeat; new leading dims when
    more sizes than dims are given), as an expand of interleaved size-1 dims."""
    sizes = shape_arg(sizes)
    if len(sizes) < a.ndim:
        raise RuntimeError(f"Number of dimensions of repeat dims ({len(sizes)}) can not be "
                           f"smaller than number of dimensions of tensor ({a.ndim})")
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"repeat: trying to create tensor with negative dimension, "
                           f"repeats {list(sizes)}")
    shape = (1,) * (len(sizes) - a.ndim) + tuple(a.shape)
    interleaved = reshape(a, tuple(x for n in shape for x in (1, n)))
    tiled = expand(interleaved, tuple(x for r, n in zip(sizes, shape) for x in (r, n)))
    return reshape(tiled, tuple(r * n for r, n in zip(sizes, shape)))
