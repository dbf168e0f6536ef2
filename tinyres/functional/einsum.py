"""einsum: products and sums over named indices, as torch.einsum.

The equation is first written out in letters only (an ellipsis becomes letters of its
own, the implicit output the letters used once, in alphabetical order). The backward of
each operand is then another einsum: the gradient of the output times every other
operand, summed down to that operand's letters.
"""
import string

from tinyres.autograd import Function
from tinyres.backend import get_array_module
from tinyres.functional.math import cast, result_type
from tinyres.tensor import Tensor


class Einsum(Function):
    @staticmethod
    def forward(ctx, *arrays, inputs, output):
        ctx.save_for_backward(*arrays)
        ctx.terms, ctx.output = inputs, output
        return get_array_module(arrays[0]).einsum(",".join(inputs) + "->" + output, *arrays)

    @staticmethod
    def backward(ctx, grad_out):
        # d out/d operand_i = grad_out times every other operand, over operand_i's letters
        arrays = ctx.saved_tensors
        xp = get_array_module(grad_out)
        grads = []
        for i, (letters, a) in enumerate(zip(ctx.terms, arrays)):
            if not ctx.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [(s, x) for k, (s, x) in enumerate(zip(ctx.terms, arrays)) if k != i]
            terms = [ctx.output] + [s for s, _ in others]
            seen = "".join(terms)
            kept = "".join(c for c in letters if c in seen)
            g = xp.einsum(",".join(terms) + "->" + kept, grad_out, *[x for _, x in others])
            grads.append(_spread(g, kept, letters, a.shape))
        return tuple(grads)


def _spread(g, kept, letters, shape):
    """g over the letters `kept`, brought to the operand's letters and shape: summed where
    the operand's size 1 was broadcast, broadcast where a letter only the operand has was
    summed out in forward (its gradient is the same all along)."""
    xp = get_array_module(g)
    g = g.reshape([g.shape[kept.index(c)] if c in kept else 1 for c in letters])
    broadcast = tuple(k for k, (m, n) in enumerate(zip(g.shape, shape)) if n == 1 and m != 1)
    if broadcast:
        g = g.sum(axis=broadcast, keepdims=True)
    return xp.ascontiguousarray(xp.broadcast_to(g, shape))


def _explicit(equation, operands):
    """(input letter strings, output letters): the ellipsis spelled out in unused letters."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise RuntimeError(f"einsum(): more operands were provided than specified in the "
                           f"equation ({len(operands)} operands for {len(terms)} terms in "
                           f"{equation!r})" if len(operands) > len(terms) else
                           f"einsum(): fewer operands were provided than specified in the "
                           f"equation ({len(operands)} operands for {len(terms)} terms in "
                           f"{equation!r})")
    spare = [c for c in string.ascii_letters if c not in equation]
    widest = max((t.ndim - len(s.replace("...", "")) for s, t in zip(terms, operands)
                  if "..." in s), default=0)
    ellipsis = "".join(spare[:widest])
    inputs = []
    for s, t in zip(terms, operands):
        if "..." in s:
            s = s.replace("...", ellipsis[widest - (t.ndim - len(s) + 3):])
        if len(s) != t.ndim or not s.isalpha():
            raise RuntimeError(f"einsum(): the term {s!r} does not fit an operand of shape "
                               f"{t.shape} in {equation!r}")
        if len(set(s)) != len(s):
            raise NotImplementedError(f"einsum: a letter repeated within one operand "
                                      f"({s!r}, a diagonal) is not supported")
        inputs.append(s)
    if arrow:
        output = rhs.replace("...", ellipsis)
    else:
        counts = {c: "".join(inputs).count(c) for c in "".join(inputs)}
        output = ellipsis + "".join(sorted(c for c, n in counts.items()
                                           if n == 1 and c not in ellipsis))
    return inputs, output


def _check_sizes(inputs, operands, equation):
    """Each letter has one size across the operands, where a size 1 broadcasts."""
    sizes = {}
    for letters, t in zip(inputs, operands):
        for c, n in zip(letters, t.shape):
            if sizes.setdefault(c, n) == 1:
                sizes[c] = n
            elif n not in (1, sizes[c]):
                raise RuntimeError(f"einsum(): operands do not broadcast with remapped "
                                   f"shapes (original->remapped): subscript {c!r} has size "
                                   f"{sizes[c]} and {n} in {equation!r}")


def einsum(equation, *operands):
    """torch.einsum(equation, *operands) (operands may also come as one list)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands or not all(isinstance(t, Tensor) for t in operands):
        raise TypeError("einsum(): expected Tensors as operands")
    inputs, output = _explicit(equation, operands)
    _check_sizes(inputs, operands, equation)
    dtype = result_type(*operands)
    if len(set(output)) != len(output) or any(c not in "".join(inputs) for c in output):
        raise RuntimeError(f"einsum(): invalid output subscripts {output!r} in {equation!r}")
    return Einsum.apply(*(cast(t, dtype) for t in operands), inputs=tuple(inputs),
                        output=output)

