"""tinyres.linalg: the vector and Frobenius norms of torch.linalg.

vector_norm is the p-norm of tinyres.norm; linalg.norm takes vector norms of 1-D inputs
(or over one dim) and the Frobenius norm of matrices. The matrix norms that need singular
values or a max over sums (ord=2, 'nuc', 1, inf of a matrix) are not provided.
"""
from tinyres.functional.reduction import norm as _pnorm


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """(sum |x|^ord)^(1/ord) over dim (all elements by default); ord may be inf, -inf, 0."""
    if isinstance(ord, str):
        raise RuntimeError(f"linalg.vector_norm: ord must be a number, got {ord!r}")
    return _pnorm(x, ord, dim, keepdim, dtype)


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """torch.linalg.norm: ord=None is the 2-norm of the flattened input (or over dim);
    a number is a vector norm of a 1-D input or over one dim; 'fro' is the Frobenius
    norm of a matrix (over the last two dims by default)."""
    if ord is None:
        return _pnorm(A, 2, dim, keepdim, dtype)
    one_dim = isinstance(dim, int) or (dim is None and A.ndim == 1) or \
        (isinstance(dim, (tuple, list)) and len(dim) == 1)
    if one_dim and not isinstance(ord, str):
        return vector_norm(A, ord, dim, keepdim, dtype=dtype)
    if ord == "fro":
        if dim is None and A.ndim != 2:
            raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input "
                               f"must be 1D or 2D. Got {A.ndim}D.")
        return _pnorm(A, 2, (-2, -1) if dim is None else dim, keepdim, dtype)
    if dim is None and A.ndim not in (1, 2):
        raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input "
                           f"must be 1D or 2D. Got {A.ndim}D.")
    raise NotImplementedError(f"linalg.norm: the matrix norm ord={ord!r} is not supported "
                              f"(vector norms and 'fro' are)")
