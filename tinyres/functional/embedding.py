"""Lookups by integer index: embedding (rows of a weight matrix) and one_hot."""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import get_array_module
from tinyres.tensor import Tensor


class Embedding(Function):
    @staticmethod
    def forward(ctx, weight, indices, padding_idx):
        ctx.indices, ctx.shape, ctx.padding_idx = indices, weight.shape, padding_idx
        return weight[indices]

    @staticmethod
    def backward(ctx, grad_out):
        # d weight[idx]/d weight = 1 at each row read (repeats accumulate); 0 for padding_idx
        xp = get_array_module(grad_out)
        grad = xp.zeros(ctx.shape, dtype=grad_out.dtype)
        rows, g = ctx.indices.ravel(), grad_out.reshape(-1, ctx.shape[1])
        if xp is np:
            np.add.at(grad, rows, g)
        else:
            import cupyx
            cupyx.scatter_add(grad, rows, g)
        if ctx.padding_idx is not None:
            grad[ctx.padding_idx] = 0
        return grad


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """The rows of weight (num_embeddings, dim) at the integer indices of input: output
    shape input.shape + (dim,). The row padding_idx gets no gradient."""
    idx = input.array if isinstance(input, Tensor) else input
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not "
                                  "supported by tinyres")
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"embedding: Expected tensor for argument #1 'indices' to have one "
                           f"of the following scalar types: Long, Int; but got {idx.dtype}")
    if weight.ndim != 2:
        raise RuntimeError(f"embedding: 'weight' must be 2-D, got shape {weight.shape}")
    n = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"embedding: index out of range in self (indices from "
                         f"{int(idx.min())} to {int(idx.max())} for {n} rows)")
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise AssertionError("embedding: Padding_idx must be within num_embeddings")
        padding_idx %= n
    return Embedding.apply(weight, indices=idx, padding_idx=padding_idx)


def one_hot(tensor, num_classes=-1):
    """int64 (..., num_classes) with a 1 at each value; num_classes=-1 means max + 1."""
    t = tensor.array if isinstance(tensor, Tensor) else tensor
    if t.dtype != np.int64:
        raise RuntimeError(f"one_hot is only applicable to index tensor of type LongTensor "
                           f"(int64), got {t.dtype}")
    xp = get_array_module(t)
    if t.size and int(t.min()) < 0:
        raise RuntimeError("one_hot: Class values must be non-negative.")
    if num_classes == -1:
        if t.size == 0:
            raise RuntimeError("one_hot: Can not infer total number of classes from empty "
                               "tensor.")
        num_classes = int(t.max()) + 1
    if t.size and int(t.max()) >= num_classes:
        raise RuntimeError(f"one_hot: Class values must be smaller than num_classes "
                           f"({num_classes}), got {int(t.max())}.")
    return Tensor((t[..., None] == xp.arange(num_classes)).astype(np.int64))
