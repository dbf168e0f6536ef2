"""tinyres: a from-scratch deep-learning engine for learning how ResNets work.

    import tinyres
    import tinyres.nn.functional as F

    x = tinyres.randn(8, 3, 32, 32, requires_grad=True)
    loss = F.relu(x).mean()
    loss.backward()          # x.grad now holds d loss / d x
"""
import numpy as np

from tinyres.autograd import (Function, enable_grad, inference_mode, is_anomaly_enabled,
                              is_grad_enabled, is_inference_mode_enabled, no_grad,
                              set_grad_enabled)
from tinyres.gradcheck import GradcheckError, gradcheck
from tinyres.tensor import (Tensor, arange, from_numpy, full, full_like, manual_seed, ones,
                            ones_like, rand, rand_like, randn, randn_like, tensor, zeros,
                            zeros_like)
from tinyres.functional.math import where
from tinyres.functional.shape import cat, stack
from tinyres import cuda, kernels, models, nn, optim, probes, runtime  # the public subpackages
from tinyres.backend import device
from tinyres.serialization import load, save
from tinyres import backends, safetensors
from tinyres import utils, vision  # torch.utils.data and torchvision's data side
from tinyres.random import Generator

float32 = np.float32
float64 = np.float64
int64 = np.int64

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "Tensor", "arange", "cat", "cuda", "enable_grad",
    "float32", "float64", "from_numpy", "full", "full_like", "gradcheck", "inference_mode",
    "int64", "is_anomaly_enabled", "is_grad_enabled", "is_inference_mode_enabled", "manual_seed", "models", "nn", "no_grad", "ones", "ones_like", "optim", "probes", "rand",
    "rand_like", "randn", "randn_like", "set_grad_enabled", "stack", "tensor", "where",
    "zeros", "zeros_like",
]
__all__ += ["backends", "device", "load", "safetensors", "save"]
__all__ += ["Generator", "utils", "vision"]
