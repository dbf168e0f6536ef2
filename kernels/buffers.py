"""The CPU kernels' large arrays, kept when they are no longer referenced and handed out
again: a cache of host memory, as CuPy's memory pool is on the GPU.

Why: a training step allocates its activations, gradients and scratch afresh each time,
the same sizes in the same order. With glibc's default settings, freeing them returns the
top of the heap to the system (trimming) once more than a threshold is free there, and the
next step takes the same memory back one page fault at a time. How often that happens
depends on the process's history: resnet20's 32-channel layer (batch 128, forward and
backward) took no page faults a call in one process and 2,532 (10 MB) in another that had
first run the same layer at a toy size, 12.5 against 5 ms a call. The arrays handed out
here are kept by tinyres, so a step reuses the last step's memory whatever malloc does.

How: `empty(shape, dtype)` is np.empty for arrays under MIN_BYTES. A larger one is a view
of a block, a 1-d uint8 array whose size is the request rounded up to a size class (at
most a quarter more). Every array viewing a block holds a reference to it (NumPy points a
view's base at the array that owns the memory), so a block is free exactly when the
cache's own reference is its only one: `empty` looks for a free block of the size class,
by reference count, and allocates a new one where none is free. Blocks that stayed unused
for STALE_AFTER requests are given back to malloc at the next allocation of a new block
(a program that moves on to other sizes does not keep the old ones), and `empty_cache()`
gives back every free block.

`enable(False)` makes `empty` plain np.empty (for comparisons); `stats()` says what the
cache holds.
"""
import math
import sys
import threading

import numpy as np

# smaller arrays come from malloc. Half glibc's default mmap threshold (128 KB): from
# there glibc maps each array afresh, and gives trimmed heap memory back, one page fault a
# page when the next step takes it again. With the cache from 1 MB, resnet20's training
# step at batch 8 took some 2,700 page faults and 1.27x its time (inference 1.6x, where a
# process's history led malloc there), at batch 32 1.1x (glibc's defaults, 2 threads, AMD
# family 26; tests/test_buffers.py counts the faults)
MIN_BYTES = 1 << 16
STALE_AFTER = 4096           # requests a free block may go unused before it is let go

_lock = threading.Lock()
_classes = {}                # size class in bytes -> [[block, last request served], ...]
_counts = {"requests": 0, "hits": 0}
_enabled = [True]


def _refs(entry):
    """References to entry's block: the entry's own and this call's, when it is free."""
    return sys.getrefcount(entry[0])


FREE_REFS = _refs([np.empty(0, np.uint8), 0])      # measured, not assumed


def size_class(nbytes):
    """nbytes rounded up to a multiple of an eighth of the next power of two: between
    2^(k-1) and 2^k the classes are 4/8, 5/8, 6/8, 7/8 and 8/8 of 2^k."""
    step = max((1 << (nbytes - 1).bit_length()) // 8, 1)
    return -(-nbytes // step) * step


def empty(shape, dtype):
    """np.empty(shape, dtype), from a cached block where the array is large."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = dtype.itemsize * int(math.prod(shape))    # (np.prod: 2 us a call)
    if nbytes < MIN_BYTES or not _enabled[0]:
        return np.empty(shape, dtype)
    size = size_class(nbytes)
    with _lock:
        _counts["requests"] += 1
        for entry in _classes.get(size, ()):
            if _refs(entry) == FREE_REFS:
                _counts["hits"] += 1
                break
        else:
            _let_go(lambda entry: entry[1] < _counts["requests"] - STALE_AFTER)
            entry = [np.empty(size, np.uint8), 0]
            _classes.setdefault(size, []).append(entry)
        entry[1] = _counts["requests"]
        block = entry[0]
    return np.ndarray(shape, dtype, buffer=block)      # its base: the block


def _let_go(should):
    """Drop the free blocks for which should(entry) holds (caller holds the lock)."""
    for size in list(_classes):
        kept = [e for e in _classes[size] if _refs(e) != FREE_REFS or not should(e)]
        if kept:
            _classes[size] = kept
        else:
            del _classes[size]


def _owner_refs(view):
    """References to view's memory owner (view.base) seen from a frame that names it once."""
    base = view.base
    return sys.getrefcount(base)


OWNER_REFS = _owner_refs(np.empty(2)[1:])          # a view's owner held by the view alone


def sole_view(array):
    """Whether nothing but `array` refers to its memory: it owns it, or it views an owner
    (a cache block, or an array of its own) that no other array or name holds. References
    to `array` itself are the caller's to count (backward._accumulate)."""
    base = array.base
    if base is None:
        return True
    if type(base) is not np.ndarray or base.base is not None:
        return False
    with _lock:                             # a cache block: the cache holds it once more
        cached = any(entry[0] is base for group in _classes.values() for entry in group)
    return sys.getrefcount(base) <= OWNER_REFS + (1 if cached else 0)


def empty_cache():
    """Give every free block back to malloc (torch.cuda.empty_cache's counterpart)."""
    with _lock:
        _let_go(lambda entry: True)


def enable(flag):
    """Whether large arrays come from the cache (True, the default) or from np.empty;
    returns the previous setting."""
    previous, _enabled[0] = _enabled[0], bool(flag)
    return previous


def stats():
    """{'held_bytes', 'in_use_bytes', 'blocks', 'requests', 'hits'} at this moment."""
    with _lock:
        entries = [e for group in _classes.values() for e in group]
        in_use = [e for e in entries if _refs(e) != FREE_REFS]
        return {"held_bytes": sum(e[0].nbytes for e in entries),
                "in_use_bytes": sum(e[0].nbytes for e in in_use),
                "blocks": len(entries), **_counts}
