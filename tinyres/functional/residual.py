"""The residual addition y = branch + scale * shortcut, the op that gives ResNets their "+1".

Its backward is the whole lesson: the gradient arriving at y goes to the branch F(x)
unchanged, and to the shortcut multiplied by `scale`. With an identity shortcut (scale 1)
the input of the block receives grad_out * (F'(x) + 1): the "+1" is the second line of
`ResidualAdd.backward`. Stack k blocks and the product of those "+1"s is 1; scale the
shortcut by lambda and it becomes lambda**k.
"""
import numpy as np

from tinyres.autograd import Function
from tinyres.backend import kernels_for
from tinyres.functional.math import binary_operands


class ResidualAdd(Function):
    @staticmethod
    def forward(ctx, branch, shortcut, scale=1.0):
        ctx.scale = scale
        if branch.dtype in (np.float32, np.float64):      # one pass of the kernels' own
            return kernels_for(branch).add_scaled(branch, shortcut, scale)
        return branch + shortcut if scale == 1.0 else branch + scale * shortcut

    @staticmethod
    def backward(ctx, grad_out):
        # d y/d branch = 1, d y/d shortcut = scale (the "+1" when scale is 1)
        grad_branch = grad_out
        grad_shortcut = grad_out if ctx.scale == 1.0 else ctx.scale * grad_out
        return grad_branch, grad_shortcut


def residual_add(branch, shortcut, scale=1.0):
    """branch + scale * shortcut, both tensors of one shape (no broadcasting)."""
    if branch.shape != shortcut.shape:
        raise ValueError(f"residual_add: the branch {branch.shape} and the shortcut "
                         f"{shortcut.shape} must have the same shape; a block that changes "
                         "the shape needs a projection (or option-A padding) on its shortcut")
    branch, shortcut = binary_operands("residual_add", branch, shortcut)
    return ResidualAdd.apply(branch, shortcut, scale=float(scale))
