"""tinyres.vision: torchvision's data side for tinyres (datasets and transforms).

    from tinyres.vision import datasets, transforms
"""
from tinyres.vision import datasets, transforms  # noqa: F401  the public subpackages

__all__ = ["datasets", "transforms"]
