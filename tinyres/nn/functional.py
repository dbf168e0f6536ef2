"""tinyres.nn.functional: every differentiable op under PyTorch's name and import path
(`import tinyres.nn.functional as F`). Nothing is defined here: the ops live in
tinyres/functional/, one family per file.
"""
from tinyres.functional.activation import (elu, gelu, hardsigmoid, hardswish, leaky_relu,
                                           log_softmax, logsigmoid, relu, relu6, sigmoid,
                                           silu, softmax, tanh)
from tinyres.functional.conv import conv2d, conv_transpose2d
from tinyres.functional.dropout import dropout, dropout2d
from tinyres.functional.embedding import embedding, one_hot
from tinyres.functional.linear import linear
from tinyres.functional.loss import (binary_cross_entropy, binary_cross_entropy_with_logits,
                                     cross_entropy, huber_loss, kl_div, l1_loss, mse_loss,
                                     nll_loss, smooth_l1_loss)
from tinyres.functional.math import (abs, add, clamp, div, exp, log, matmul, max, mean, min,
                                     mul, neg, pow, sqrt, sub, sum, var, where)
from tinyres.functional.norm import (batch_norm, group_norm, instance_norm, layer_norm,
                                     normalize)
from tinyres.functional.pool import (adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d,
                                     max_pool2d)
from tinyres.functional.resample import interpolate
from tinyres.functional.residual import residual_add
from tinyres.functional.shape import (cat, expand, flatten, getitem, permute, reshape,
                                      squeeze, stack, transpose, unsqueeze, view)
from tinyres.functional.pad import pad
from tinyres.functional.fold import fold, unfold

__all__ = [
    "abs", "adaptive_avg_pool2d", "adaptive_max_pool2d", "add", "avg_pool2d", "batch_norm",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cat", "clamp", "conv2d", "conv_transpose2d",
    "cross_entropy", "div", "dropout", "dropout2d", "elu", "embedding", "exp", "expand",
    "flatten", "gelu", "getitem", "group_norm", "hardsigmoid", "hardswish", "huber_loss",
    "instance_norm", "interpolate", "kl_div", "l1_loss", "layer_norm", "leaky_relu",
    "linear", "log", "log_softmax", "logsigmoid", "matmul", "max", "max_pool2d", "mean",
    "min", "mse_loss", "mul", "neg", "nll_loss", "normalize", "one_hot", "pad", "permute",
    "pow", "relu", "relu6", "reshape", "residual_add", "sigmoid", "silu", "smooth_l1_loss",
    "softmax", "sqrt", "squeeze", "stack", "sub", "sum", "tanh", "transpose", "unsqueeze",
    "var", "view", "where",
]

# tinyres's own fused ops (no PyTorch name): relu(batch_norm(...)) in one op
from tinyres.functional.fused import batch_norm_relu  # noqa: E402

__all__.append("batch_norm_relu")
__all__ += ["fold", "unfold"]
