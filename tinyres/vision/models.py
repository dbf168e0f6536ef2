"""tinyres.vision.models: torchvision.models' ResNet constructors with torchvision's
signature, `resnet18(*, weights=None, progress=True, **kwargs)` (kwargs: num_classes,
zero_init_residual), building tinyres.models' ResNets, whose state_dict keys are
torchvision's:

    from tinyres.vision import models
    model = models.resnet18(num_classes=10)

No weights are downloaded (tinyres touches no network): `weights=` other than None raises
a ValueError that says how to bring torchvision's weights over as a safetensors file.
"""
from tinyres.models import resnet as _resnet


def resnet18(*, weights=None, progress=True, **kwargs):
    """ResNet-18 (torchvision.models.resnet18): 11,689,512 parameters for 1000 classes."""
    return _build("resnet18", _resnet.resnet18, weights, kwargs)


def resnet34(*, weights=None, progress=True, **kwargs):
    """ResNet-34 (torchvision.models.resnet34): 21,797,672 parameters for 1000 classes."""
    return _build("resnet34", _resnet.resnet34, weights, kwargs)


def resnet50(*, weights=None, progress=True, **kwargs):
    """ResNet-50 (torchvision.models.resnet50): 25,557,032 parameters for 1000 classes."""
    return _build("resnet50", _resnet.resnet50, weights, kwargs)


def resnet101(*, weights=None, progress=True, **kwargs):
    """ResNet-101 (torchvision.models.resnet101): 44,549,160 parameters for 1000 classes."""
    return _build("resnet101", _resnet.resnet101, weights, kwargs)


def resnet152(*, weights=None, progress=True, **kwargs):
    """ResNet-152 (torchvision.models.resnet152): 60,192,808 parameters for 1000 classes."""
    return _build("resnet152", _resnet.resnet152, weights, kwargs)


def _build(name, constructor, weights, kwargs):
    if weights is not None:
        raise ValueError(
            f"{name}(weights={weights!r}): tinyres downloads no weights. Save torchvision's "
            f"with safetensors.torch.save_file(model.state_dict(), path) and load them with "
            f"model.load_state_dict(tinyres.safetensors.load_file(path))")
    return constructor(**kwargs)


__all__ = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
