"""tinyres.nn: Module, Parameter, the layers of a ResNet, and init (torch.nn's names)."""
from tinyres.nn import functional, init
from tinyres.nn.activation import (ELU, GELU, Hardsigmoid, Hardswish, LeakyReLU, LogSigmoid,
                                   LogSoftmax, ReLU6, Sigmoid, SiLU, Softmax, Tanh)
from tinyres.nn.containers import (ModuleDict, ModuleList, ParameterDict, ParameterList,
                                   Sequential)
from tinyres.nn.layers import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm1d,
                               BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Dropout2d, Flatten,
                               Identity, Linear, MaxPool2d, ReLU, Unflatten, Upsample)
from tinyres.nn.embedding import Embedding
from tinyres.nn.fold import Fold, Unfold
from tinyres.nn.loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss,
                             KLDivLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss)
from tinyres.nn.module import Module, Parameter
from tinyres.nn.normalization import GroupNorm, InstanceNorm2d, LayerNorm

from tinyres.nn import utils
from tinyres.nn.parallel import DataParallel
from tinyres.nn import parallel
from tinyres.nn.parallel import DistributedDataParallel
from tinyres.nn.sync_batchnorm import SyncBatchNorm

__all__ = [
    "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss",
    "BatchNorm1d", "BatchNorm2d", "Conv2d", "ConvTranspose2d", "CrossEntropyLoss", "DataParallel", "Dropout", "Dropout2d", "ELU",
    "Embedding", "Flatten", "GELU", "GroupNorm", "Hardsigmoid", "Hardswish", "HuberLoss",
    "Identity", "InstanceNorm2d", "KLDivLoss", "L1Loss", "LayerNorm", "LeakyReLU", "Linear",
    "LogSigmoid", "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "ModuleDict", "ModuleList",
    "NLLLoss", "Parameter", "ParameterDict", "ParameterList", "ReLU", "ReLU6", "Sequential",
    "SiLU", "Sigmoid", "SmoothL1Loss", "Softmax", "Tanh", "Unflatten", "Upsample",
    "functional", "init", "utils",
]
__all__ += ["DistributedDataParallel", "SyncBatchNorm", "parallel"]
__all__ += ["Fold", "Unfold"]
