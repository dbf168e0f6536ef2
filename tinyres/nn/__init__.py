"""tinyres.nn: Module, Parameter, the layers of a ResNet, and init (torch.nn's names)."""
from tinyres.nn import functional, init
from tinyres.nn.containers import ModuleList, Sequential
from tinyres.nn.layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d,
                               Conv2d, CrossEntropyLoss, Dropout, Flatten, Identity, Linear,
                               MaxPool2d, MSELoss, ReLU)
from tinyres.nn.layers import ConvTranspose2d
from tinyres.nn.module import Module, Parameter

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d",
    "ConvTranspose2d",
    "CrossEntropyLoss", "Dropout", "Flatten", "Identity", "Linear", "MaxPool2d", "MSELoss",
    "Module", "ModuleList", "Parameter", "ReLU", "Sequential", "functional", "init",
]
