"""Models: the ResNet families (tinyres.models.resnet), the pre-activation ResNets
(tinyres.models.preact), the shortcut variants and block orderings of "Identity Mappings"
(tinyres.models.shortcuts, tinyres.models.orderings), and weight exchange with PyTorch."""
import numpy as np

from tinyres.models.resnet import (BasicBlock, Bottleneck, CifarResNet, ResidualBlock, ResNet,
                                   resnet18, resnet20, resnet32, resnet34, resnet44, resnet50,
                                   resnet56, resnet101, resnet110, resnet152)
from tinyres.models.preact import (CifarPreActResNet, PreActBlock, PreActBottleneck,
                                   PreActResNet, preact_resnet18, preact_resnet20,
                                   preact_resnet50, preact_resnet56, preact_resnet110,
                                   preact_resnet164, preact_resnet1001)
from tinyres.models.orderings import ORDERINGS, CifarVariantResNet
from tinyres.models.shortcuts import SHORTCUTS

ARCHITECTURES = {f.__name__: f for f in (resnet18, resnet34, resnet50, resnet101, resnet152,
                                         resnet20, resnet32, resnet44, resnet56, resnet110,
                                         preact_resnet18, preact_resnet50, preact_resnet20,
                                         preact_resnet56, preact_resnet110, preact_resnet164,
                                         preact_resnet1001)}


def get_model(name, **kwargs):
    """A model by name ('resnet18', 'resnet20', ...)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**kwargs)


def from_state_dict(name, state_dict, dtype=None, **kwargs):
    """Build model `name` and load a torchvision-layout state_dict: a dict of NumPy arrays,
    or the path of an .npz written by `np.savez(path, **torch_model.state_dict())` with
    the tensors turned into arrays. `dtype` (e.g. np.float64) is set before loading, so
    no value is rounded. Strict: missing, unexpected or mis-shaped keys raise."""
    if isinstance(state_dict, (str, bytes)) or hasattr(state_dict, "__fspath__"):
        with np.load(state_dict) as archive:
            state_dict = {k: archive[k] for k in archive.files}
    model = get_model(name, **kwargs)
    if dtype is not None:
        model.to(dtype=dtype)
    model.load_state_dict(state_dict)
    return model


def save_state_dict(model, path):
    """Write model.state_dict() to an .npz, readable back by from_state_dict or by torch
    (`{k: torch.from_numpy(v) for k, v in np.load(path).items()}`)."""
    np.savez(path, **model.state_dict())


def count_parameters(model):
    """The number of learnable scalars (as torchvision's figures count them)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["ARCHITECTURES", "BasicBlock", "Bottleneck", "CifarResNet", "ResNet",
           "ResidualBlock", "count_parameters", "from_state_dict", "get_model",
           "CifarPreActResNet", "CifarVariantResNet", "ORDERINGS", "PreActBlock",
           "PreActBottleneck", "PreActResNet", "SHORTCUTS", "preact_resnet18",
           "preact_resnet20", "preact_resnet50", "preact_resnet56", "preact_resnet110",
           "preact_resnet164", "preact_resnet1001",
           "resnet18", "resnet20", "resnet32", "resnet34", "resnet44", "resnet50",
           "resnet56", "resnet101", "resnet110", "resnet152", "save_state_dict"]
