"""Prefetch hints: tell the CPU to bring memory into its caches before a loop reaches it.

    prefetch(a, i, write)          the cache line of a.ravel()[i], for a read (write False,
                                   x86's prefetcht0) or a write (True, prefetchw); `write`
                                   a literal
    ahead(a, b0, m, part, parts, write)
                                   run `part` of `parts` of the memory of images b0 ..
                                   b0+m-1 of a (N, ...), a cache line at a time

LLVM's llvm.prefetch intrinsic, emitted by a Numba intrinsic. A hint changes no value and
cannot fault; the CPU may drop it. Why the convolutions use them: a task of winograd.py's
image layout reads its images from memory in its input transform and writes its output in
its output transform, bursts that left the 16 GEMMs between them with nothing to overlap
(resnet20's 16@32 forward took 1.45 ms with its input and output in cache, 1.90-1.98
with neither, as in a training step). Spread over the GEMMs, a sixteenth before each, the
next task's input and this task's output are on their way while the GEMMs run: 1.75-1.80
ms there, 1.46-1.48 with both in cache (one process, two threads, AMD family 26 model 2,
OpenBLAS's SkylakeX kernel).
"""
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LINE_BYTES = 64                  # x86's cache line


@intrinsic
def prefetch(typingctx, array, index, write):
    """Hint that a.ravel()[index] (a C-contiguous array) is read (write False) or written
    (write True) soon; keep it in every cache level."""
    if not isinstance(array, types.Array) or not isinstance(write, types.BooleanLiteral):
        return None
    rw = 1 if write.literal_value else 0

    def codegen(context, builder, signature, args):
        array_type, index_type = signature.args[0], signature.args[1]
        data = context.make_array(array_type)(context, builder, args[0]).data
        byte = ir.IntType(8).as_pointer()
        offset = builder.mul(context.cast(builder, args[1], index_type, types.intp),
                             context.get_constant(types.intp, array_type.dtype.bitwidth // 8))
        address = builder.gep(builder.bitcast(data, byte), [offset])
        i32 = ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(hint, [address, i32(rw), i32(3), i32(1)])   # rw, locality 3, data
        return context.get_dummy_value()
    return types.void(array, index, write), codegen


@njit(cache=True)
def run_bounds(n, image, b0, m, part, parts):
    """(first, stop): the flat indices of run `part` (0 .. parts-1) of images b0 .. b0+m-1
    of an array of n images of `image` entries each, their memory cut into `parts` runs as
    evenly as they divide; images past n dropped, (0, 0) where none is left."""
    m = min(m, n - b0)
    if m <= 0:
        return 0, 0
    start, length = b0 * image, m * image
    return start + part * length // parts, start + (part + 1) * length // parts


@njit(cache=True, inline="always")
def ahead(a, b0, m, part, parts, write):
    """Prefetch run `part` of `parts` of the memory of images b0 .. b0+m-1 of a (N, ...),
    C-contiguous (run_bounds), a cache line at a time, for a write where `write`."""
    flat = a.reshape(-1)
    first, stop = run_bounds(a.shape[0], flat.size // max(1, a.shape[0]), b0, m, part,
                             parts)
    for k in range(first, stop, max(1, LINE_BYTES // a.itemsize)):
        if write:
            prefetch(flat, k, True)
        else:
            prefetch(flat, k, False)
