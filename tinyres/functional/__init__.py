"""The differentiable ops, one Function per op, grouped by family.

Import them from tinyres.nn.functional (PyTorch's names); the families live here:
math.py, pointwise.py, reduction.py, compare.py, einsum.py, shape.py, pad.py, conv.py,
norm.py, activation.py, dropout.py, pool.py, loss.py, resample.py (interpolate),
embedding.py (embedding, one_hot), device.py (copies between devices), inplace.py (the
in-place forms) and residual.py (the "+1").
fold.py holds unfold and fold (torch's im2col and col2im, on the kernel layers).
"""
