"""tinyres.utils: helpers as torch.utils spells them (for now, tinyres.utils.data)."""
from tinyres.utils import data  # noqa: F401  the public subpackage

__all__ = ["data"]
