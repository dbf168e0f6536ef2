"""Numba versions of the fused optimizer steps of fused_optim.py: one call per parameter
group and dtype, whatever the number of tensors.

The tensors are not gathered into one buffer (that would copy every parameter twice per
step) nor passed as a numba.typed.List (building one from Python costs ~160 us per array,
far more than the update itself). The jitted core takes the address table of
fused_optim.address_table, as the CUDA kernel does, and views each row entry as a 1-D
array with numba.carray; `_pointer` turns an int64 address into the void pointer carray
needs. The element type comes from `like`, an array of the tensors' dtype.

A tensor is walked in one loop in the order of the reference's NumPy expressions, so the
float32 results round as the per-tensor NumPy update does (within an ulp or so where
NumPy evaluates a sum in a different order). fastmath stays off; error_model="numpy"
drops the zero-divisor check Python semantics put on every `/`, a branch that kept the
Adam loop from vectorising (10x slower). Loops are branch-free inside (the amsgrad
maximum is a select), so LLVM vectorises them.
"""
import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .fused_optim import Staged, address_table, adam_corrections


@intrinsic
def _pointer(typingctx, address):
    """The int64 `address` as a void pointer (for numba.carray)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.int64), codegen


@njit(cache=True, error_model="numpy")
def _sgd_core(table, sizes, fresh, like, lr, weight_decay, momentum, one_minus_dampening,
              nesterov, maximize):
    for t in range(sizes.shape[0]):
        n = sizes[t]
        p = carray(_pointer(table[0, t]), (n,), like.dtype)
        g = carray(_pointer(table[1, t]), (n,), like.dtype)
        buf = carray(_pointer(table[2, t]), (n,), like.dtype) if momentum != 0 else p
        for i in range(n):
            d = -g[i] if maximize else g[i]
            if weight_decay != 0:
                d = d + weight_decay * p[i]
            if momentum != 0:
                b = d if fresh[t] else buf[i] * momentum + one_minus_dampening * d
                buf[i] = b
                d = d + momentum * b if nesterov else b
            p[i] = p[i] - lr * d


@njit(cache=True, error_model="numpy")
def _adam_core(table, sizes, corrections, like, one_minus_beta1, beta2, one_minus_beta2,
               weight_decay, decay, eps, amsgrad, maximize, decoupled):
    for t in range(sizes.shape[0]):
        n = sizes[t]
        p = carray(_pointer(table[0, t]), (n,), like.dtype)
        g = carray(_pointer(table[1, t]), (n,), like.dtype)
        m = carray(_pointer(table[2, t]), (n,), like.dtype)
        v = carray(_pointer(table[3, t]), (n,), like.dtype)
        vmax = carray(_pointer(table[4, t]), (n,), like.dtype) if amsgrad else v
        step_size, bias2_sqrt = corrections[t, 0], corrections[t, 1]
        for i in range(n):
            grad = -g[i] if maximize else g[i]
            x = p[i]
            if weight_decay != 0:
                if decoupled:
                    x = x * decay
                else:
                    grad = grad + weight_decay * x
            mi = m[i] + (grad - m[i]) * one_minus_beta1
            vi = v[i] * beta2 + one_minus_beta2 * grad * grad
            m[i] = mi
            v[i] = vi
            if amsgrad:                       # numpy.maximum: a NaN on either side wins
                w = vmax[i]
                vi = w if (w >= vi or w != w) else vi
                vmax[i] = vi
            p[i] = x - step_size * (mi / (np.sqrt(vi) / bias2_sqrt + eps))


def _sizes(arrays):
    return np.array([a.size for a in arrays], dtype=np.int64)


def sgd(params, grads, bufs, fresh, lr, weight_decay, momentum, dampening, nesterov,
        maximize):
    """See fused_optim.sgd_reference: one Numba call for all the tensors (one dtype)."""
    if not params:
        return
    dtype = np.dtype(params[0].dtype)
    staged = Staged(np, dtype)
    rows = [staged.written(params), staged.read(grads)]
    if momentum != 0:
        rows.append(staged.written(bufs))
    t = dtype.type
    _sgd_core(address_table(rows), _sizes(rows[0]), np.array(fresh, dtype=np.bool_).reshape(-1),
              rows[0][0], t(lr), t(weight_decay), t(momentum), t(1 - dampening),
              bool(nesterov), bool(maximize))
    staged.write_back()


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2,
         weight_decay, eps, amsgrad, maximize, decoupled):
    """See fused_optim.adam_reference: one Numba call for all the tensors (one dtype)."""
    if not params:
        return
    dtype = np.dtype(params[0].dtype)
    staged = Staged(np, dtype)
    rows = [staged.written(params), staged.read(grads), staged.written(exp_avgs),
            staged.written(exp_avg_sqs)]
    if amsgrad:
        rows.append(staged.written(max_exp_avg_sqs))
    corrections = np.array([adam_corrections(s, lr, beta1, beta2) for s in steps],
                           dtype=dtype).reshape(-1, 2)
    t = dtype.type
    _adam_core(address_table(rows), _sizes(rows[0]), corrections, rows[0][0], t(1 - beta1),
               t(beta2), t(1 - beta2), t(weight_decay), t(1 - lr * weight_decay), t(eps),
               bool(amsgrad), bool(maximize), bool(decoupled))
    staged.write_back()
