"""The differentiable ops, one Function per op, grouped by family.

Import them from tinyres.nn.functional (PyTorch's names); the families live here:
math.py, shape.py, conv.py, norm.py, activation.py, dropout.py, pool.py, loss.py,
resample.py (interpolate), embedding.py (embedding, one_hot), residual.py.
"""
