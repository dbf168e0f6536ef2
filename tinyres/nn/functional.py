"""tinyres.nn.functional: every differentiable op under PyTorch's name and import path
(`import tinyres.nn.functional as F`). Nothing is defined here: the ops live in
tinyres/functional/, one family per file.
"""
from tinyres.functional.activation import dropout, log_softmax, relu, softmax
from tinyres.functional.conv import conv2d
from tinyres.functional.conv import conv_transpose2d
from tinyres.functional.linear import linear
from tinyres.functional.loss import cross_entropy, mse_loss, nll_loss
from tinyres.functional.math import (abs, add, clamp, div, exp, log, matmul, max, mean, min,
                                     mul, neg, pow, sqrt, sub, sum, var, where)
from tinyres.functional.norm import batch_norm
from tinyres.functional.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from tinyres.functional.residual import residual_add
from tinyres.functional.shape import (cat, expand, flatten, getitem, pad, permute, reshape,
                                      squeeze, stack, transpose, unsqueeze, view)
from tinyres.functional.pad import pad  # noqa: F811  every mode (shape.pad: constant only)

__all__ = [
    "abs", "adaptive_avg_pool2d", "add", "avg_pool2d", "batch_norm", "cat", "clamp",
    "conv2d", "cross_entropy", "div", "dropout", "exp", "expand", "flatten", "getitem",
    "linear", "log", "log_softmax", "matmul", "max", "max_pool2d", "mean", "min", "mse_loss",
    "mul", "neg", "nll_loss", "pad", "permute", "pow", "relu", "reshape", "residual_add",
    "softmax", "sqrt", "squeeze", "stack", "sub", "sum", "transpose", "unsqueeze", "var",
    "view", "where",
    "conv_transpose2d",
]
