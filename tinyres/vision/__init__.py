"""tinyres.vision: torchvision's data side for tinyres (datasets and transforms), and its
ResNet constructors (models).

    from tinyres.vision import datasets, transforms
"""
from tinyres.vision import datasets, transforms  # noqa: F401  the public subpackages
from tinyres.vision import models  # noqa: F401

__all__ = ["datasets", "models", "transforms"]
