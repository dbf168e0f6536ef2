"""The two namespaces the op cases call through: tinyres's and torch's, with the few
adapters a case needs (a tensor like another, a seeded dropout, residual_add in torch)."""
import numpy as np

import tinyres
import tinyres.nn.functional as TF


def dropout_mask(shape, p):
    """The mask tinyres's dropout draws after np.random.seed(0)."""
    np.random.seed(0)
    return (np.random.random_sample(shape) >= p) / (1.0 - p)


class TinyresOps:
    """tinyres.nn.functional plus adapters."""

    def __getattr__(self, name):
        return getattr(TF, name)

    @staticmethod
    def tensor_like(value, like):
        """Integer labels stay integers; floats take the dtype of `like`."""
        value = np.asarray(value)
        return tinyres.tensor(value if value.dtype.kind in "iu" else value.astype(like.dtype))

    @staticmethod
    def seeded_dropout(a, p):
        np.random.seed(0)
        return TF.dropout(a, p, training=True)

    @staticmethod
    def wrap(array, requires_grad):
        return tinyres.Tensor(array, requires_grad=requires_grad)


class TorchOps:
    """torch.nn.functional, then torch, plus adapters."""

    def __init__(self, torch):
        self.torch = torch

    def __getattr__(self, name):
        functional = self.torch.nn.functional
        return getattr(functional, name) if hasattr(functional, name) else getattr(
            self.torch, name)

    def tensor_like(self, value, like):
        value = self.torch.as_tensor(np.asarray(value))
        return value if not value.is_floating_point() else value.to(like.dtype)

    def seeded_dropout(self, a, p):
        return a * self.torch.as_tensor(dropout_mask(tuple(a.shape), p))

    @staticmethod
    def residual_add(branch, shortcut, scale):
        return branch + scale * shortcut

    def wrap(self, array, requires_grad):
        return self.torch.tensor(np.array(array, copy=True), requires_grad=requires_grad)
