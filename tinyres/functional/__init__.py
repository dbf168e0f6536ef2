"""The differentiable ops, one Function per op, grouped by family.

Import them from tinyres.nn.functional (PyTorch's names); the families live here:
math.py, shape.py, conv.py, norm.py, activation.py, pool.py, loss.py, residual.py.
"""
