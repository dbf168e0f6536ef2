"""tinyres: a from-scratch deep-learning engine for learning how ResNets work.

    import tinyres
    import tinyres.nn.functional as F

    x = tinyres.randn(8, 3, 32, 32, requires_grad=True)
    loss = F.relu(x).mean()
    loss.backward()          # x.grad now holds d loss / d x
"""
import numpy as np

from tinyres import runtime
runtime.find_tbb()      # Numba's TBB thread pool, where pip installed it (see runtime.py)

from tinyres.autograd import (Function, enable_grad, inference_mode, is_anomaly_enabled,
                              is_grad_enabled, is_inference_mode_enabled, no_grad,
                              set_grad_enabled)
from tinyres.gradcheck import GradcheckError, gradcheck
from tinyres.tensor import Tensor, manual_seed
from tinyres.factories import (arange, from_numpy, full, full_like, ones, ones_like, rand,
                               rand_like, randn, randn_like, tensor, zeros, zeros_like)
from tinyres.functional.math import where
from tinyres.functional.shape import cat, stack
from tinyres import cuda, kernels, models, nn, optim, probes, runtime  # the public subpackages
from tinyres.backend import device
from tinyres.serialization import load, save
from tinyres import backends, safetensors
from tinyres import accelerator  # torch.accelerator: which device the scripts pick
from tinyres import utils, vision  # torch.utils.data and torchvision's data side
from tinyres import distributed  # torch.distributed (MPI is loaded by init_process_group only)
from tinyres.random import Generator
from tinyres.runtime import get_num_threads, set_num_threads
# ----- the torch namespace: functions, factories, dtypes -------------------------------
from tinyres.tensor import Size, get_default_dtype, set_default_dtype
from tinyres.factories import (as_tensor, empty, empty_like, eye, linspace, logspace,
                               normal, randint, randint_like, randperm)
from tinyres.functional.math import (abs, add, bmm, clamp, clip, clone, div, exp,
                                     floor_divide, log, masked_fill, matmul, max, maximum,
                                     mean, min, minimum, mm, mul, neg, pow, remainder, sqrt,
                                     std, sub, sum, var)
from tinyres.functional.compare import (allclose, eq, equal, ge, gt, is_floating_point,
                                        is_tensor, isclose, le, lt, ne, numel)
from tinyres.functional.reduction import (all, amax, amin, any, argmax, argmin, argsort,
                                          cumsum, logsumexp, norm, prod, sort, topk)
from tinyres.functional.shape import (chunk, flatten, flip, gather, permute, reshape, split,
                                      squeeze, t, transpose, unsqueeze)
from tinyres.functional.activation import log_softmax, relu, sigmoid, softmax, tanh
from tinyres.functional.einsum import einsum
from tinyres.functional.pointwise import ceil, floor, round, rsqrt, sign, square, trunc
from tinyres import linalg

float32 = np.float32
float64 = np.float64
int64 = np.int64
# torch's other dtype names, NumPy types underneath (x.dtype == tinyres.long holds).
# Defined here only: inside tinyres's own modules, float, int and bool stay Python's.
float = np.float32
double = np.float64
float16 = half = np.float16
long = np.int64
int32 = int = np.int32
int16 = np.int16
int8 = np.int8
uint8 = np.uint8
bool = np.bool_

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "Tensor", "arange", "cat", "cuda", "enable_grad",
    "float32", "float64", "from_numpy", "full", "full_like", "gradcheck", "inference_mode",
    "int64", "is_anomaly_enabled", "is_grad_enabled", "is_inference_mode_enabled",
    "manual_seed", "models", "nn", "no_grad", "ones", "ones_like", "optim", "probes", "rand",
    "rand_like", "randn", "randn_like", "set_grad_enabled", "stack", "tensor", "where",
    "zeros", "zeros_like",
]
__all__ += ["backends", "device", "load", "safetensors", "save"]
__all__ += ["Generator", "get_num_threads", "set_num_threads", "utils", "vision"]
__all__ += ["accelerator"]
__all__ += ["distributed"]
__all__ += [
    "Size", "abs", "add", "all", "allclose", "amax", "amin", "any", "argmax", "argmin",
    "argsort", "as_tensor", "bmm", "bool", "ceil", "chunk", "clamp", "clip", "clone",
    "cumsum", "div", "double", "einsum", "empty", "empty_like", "eq", "equal", "exp",
    "eye", "flatten", "flip", "float", "float16", "floor", "floor_divide", "gather", "ge",
    "get_default_dtype", "gt", "half", "int", "int16", "int32", "int8",
    "is_floating_point", "is_tensor", "isclose", "le", "linalg", "linspace", "log",
    "log_softmax", "logspace", "logsumexp", "long", "lt", "masked_fill", "matmul", "max",
    "maximum", "mean", "min", "minimum", "mm", "mul", "ne", "neg", "norm", "normal",
    "numel", "permute", "pow", "prod", "randint", "randint_like", "randperm", "relu",
    "remainder", "reshape", "round", "rsqrt", "set_default_dtype", "sigmoid", "sign",
    "softmax", "sort", "split", "sqrt", "square", "squeeze", "std", "sub", "sum", "t",
    "tanh", "topk", "transpose", "trunc", "uint8", "unsqueeze", "var",
]
