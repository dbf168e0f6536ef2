"""The fully connected layer's op, composed from matmul and add (their backwards apply)."""
from tinyres.functional.math import add, matmul
from tinyres.functional.shape import transpose


def linear(input, weight, bias=None):
    """input @ weight.T + bias, weight of shape (out_features, in_features)."""
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got "
                         f"{weight.shape}")
    if input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input {input.shape} has {input.shape[-1] if input.ndim else 0}"
                         f" features but the weight {weight.shape} expects {weight.shape[1]}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    out = matmul(input, transpose(weight, 0, 1))
    return out if bias is None else add(out, bias)
