"""Dropout: zero each element (dropout) or each whole channel (dropout2d) with
probability p in training, and scale what is kept by 1 / (1 - p). The masks are drawn
where the input is (backend.random_sample): from NumPy's global generator on the CPU, on
the GPU from CuPy's generator seeded from that same stream, so tinyres.manual_seed makes
both reproducible and nothing is copied from the host."""
import warnings


from tinyres.autograd import Function
from tinyres.backend import get_array_module, random_sample


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, keep):
        ctx.keep = keep   # the mask, already scaled by 1 / (1 - p)
        return x * keep

    @staticmethod
    def backward(ctx, grad_out):
        # d (x * mask / (1 - p))/dx = mask / (1 - p)
        return grad_out * ctx.keep


def _check_p(p, op):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")


def _apply_mask(x, p, mask_shape, inplace, op):
    """x times a mask drawn for mask_shape (broadcast over the rest), scaled by 1/(1-p)."""
    xp = get_array_module(x.array)
    mask = random_sample(x.array, mask_shape) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    keep = xp.asarray(xp.broadcast_to(mask * scale, x.shape), dtype=x.dtype)
    if inplace:
        from tinyres.functional.inplace import apply_inplace
        return apply_inplace(x, op + "_", lambda s: Dropout.apply(s, keep=keep))
    return Dropout.apply(x, keep=keep)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1 / (1 - p); with
    inplace=True the result is written into the input."""
    _check_p(p, "dropout")
    if not training or p == 0.0:
        return input
    return _apply_mask(input, p, input.shape, inplace, "dropout")


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels (N, C, H, W) -> one draw per (n, c), as torch.nn.functional.
    dropout2d; a 3-D input is read as (N, C, L), with torch's warning."""
    _check_p(p, "dropout2d")
    if input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that "
                      "channel-wise 1D dropout behavior is desired - input is interpreted "
                      "as shape (N, C, L), where C is the channel dim. This behavior will "
                      "change in a future release to interpret the input as one without a "
                      "batch dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise "
                      "dropout behavior, please switch to using dropout1d instead.",
                      UserWarning, stacklevel=2)
    elif input.ndim != 4:
        warnings.warn(f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is "
                      "deprecated and will result in an error in a future release. To retain "
                      "the behavior and silence this warning, please use dropout instead.",
                      UserWarning, stacklevel=2)
    if input.ndim < 2:
        raise RuntimeError(f"dropout2d: feature dropout requires at least 2 dimensions in "
                           f"the input, got shape {input.shape}")
    if not training or p == 0.0:
        return input
    mask_shape = input.shape[:2] + (1,) * (input.ndim - 2)
    return _apply_mask(input, p, mask_shape, inplace, "dropout2d")
