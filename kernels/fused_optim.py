"""Fused multi-tensor optimizer steps (torch's fused=True): the NumPy reference, the
launch logic of the CUDA kernels (cuda/optim.cu) and the choice of layer.

One call updates every tensor of a parameter group that shares a dtype and a device, in
place: the parameters, and the state (SGD's momentum buffers; Adam's exp_avg, exp_avg_sq
and, with amsgrad, max_exp_avg_sq). The three layers take the same arguments:

    sgd(params, grads, bufs, fresh, lr, weight_decay, momentum, dampening, nesterov,
        maximize)
    adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2,
         weight_decay, eps, amsgrad, maximize, decoupled)

lists of arrays, one entry per tensor (bufs and max_exp_avg_sqs are ignored when momentum
is 0 or amsgrad is off); fresh[t] says that bufs[t] was just made (it then starts as the
step itself, torch's first step); steps[t] is tensor t's step count after this step.

- reference (this file): a loop over the tensors with NumPy, the specification; it also
  serves the dtypes the compiled layers do not (float16).
- cpu (kernels/fused_optim_cpu.py): one Numba call per group and dtype that walks a table
  of the tensors' addresses.
- cuda (cuda/optim.cu, launched by cuda.Launchers.sgd_fused / adam_fused with
  `launch_sgd` / `launch_adam` below): one launch per group and dtype, blocks assigned to
  chunks of the tensors (multi-tensor apply).

The address table (`address_table`) is row-major (lists, tensors) of int64, the
addresses of each array's first element; arrays are made C-contiguous first, and those
written to that were not contiguous are copied back after the call (`Staged`). The
chunk table (`chunk_table`) lists (tensor, begin, end) for chunks of at most `chunk`
elements; empty tensors have none.
"""
import ctypes

import numpy as np

CHUNK = 32768          # elements per chunk of the CUDA kernels (128 per thread at 256 threads)
COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------- the reference (NumPy)

def sgd_reference(params, grads, bufs, fresh, lr, weight_decay, momentum, dampening,
                  nesterov, maximize):
    """torch.optim.SGD's step on each tensor, in place (see the module docstring)."""
    for t, (p, g) in enumerate(zip(params, grads)):
        d = -g if maximize else g
        if weight_decay != 0:
            d = d + weight_decay * p
        if momentum != 0:
            buf = bufs[t]
            if fresh[t]:
                buf[...] = d
            else:
                buf *= momentum
                buf += (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p -= lr * d


def adam_reference(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1,
                   beta2, weight_decay, eps, amsgrad, maximize, decoupled):
    """torch.optim.Adam's (decoupled: AdamW's) step on each tensor, in place."""
    for t, (p, g) in enumerate(zip(params, grads)):
        step_size, bias2_sqrt = adam_corrections(steps[t], lr, beta1, beta2)
        g = -g if maximize else g
        if weight_decay != 0:
            if decoupled:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        m, v = exp_avgs[t], exp_avg_sqs[t]
        m += (g - m) * (1 - beta1)                    # torch's lerp_(grad, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g
        if amsgrad:
            v = np.maximum(max_exp_avg_sqs[t], v, out=max_exp_avg_sqs[t])
        denom = np.sqrt(v) / bias2_sqrt + eps
        p -= step_size * (m / denom)


def adam_corrections(step, lr, beta1, beta2):
    """(lr / (1 - beta1**step), sqrt(1 - beta2**step)): Adam's bias corrections."""
    return lr / (1 - beta1 ** step), (1 - beta2 ** step) ** 0.5


# ---------------------------------------------------------------- tables of tensors

def address(a):
    """The address of a C-contiguous array's first element (NumPy or CuPy). For NumPy,
    ctypes' from_buffer is ~5x quicker than a.ctypes.data or __array_interface__ (it
    builds no dict or ctypes wrapper); it refuses empty and read-only arrays, which take
    the slower route."""
    if not isinstance(a, np.ndarray):
        return a.data.ptr
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError):
        return a.__array_interface__["data"][0]


class Staged:
    """Arrays made ready for a kernel: C-contiguous, in one dtype. An array that is
    written to and was not contiguous is replaced by a contiguous copy, which
    `write_back()` copies into the original after the call."""

    def __init__(self, xp, dtype):
        self.xp, self.dtype, self._copies = xp, dtype, []

    def read(self, arrays):
        """Contiguous arrays of self.dtype with the values of `arrays` (no copy if they are)."""
        return [self.xp.ascontiguousarray(a, dtype=self.dtype) for a in arrays]

    def written(self, arrays):
        """`arrays`, each non-contiguous one replaced by a copy to be written back."""
        out = []
        for a in arrays:
            if not a.flags.c_contiguous:
                copy = self.xp.ascontiguousarray(a)
                self._copies.append((a, copy))
                a = copy
            out.append(a)
        return out

    def write_back(self):
        """Copy every staged copy back into its original array."""
        for original, copy in self._copies:
            original[...] = copy


def address_table(rows):
    """int64 (len(rows), n) array: rows[r][t]'s address at [r, t]."""
    return np.array([[address(a) for a in row] for row in rows], dtype=np.int64)


def chunk_table(sizes, chunk=CHUNK):
    """int64 (chunks, 3) array of (tensor, begin, end): each tensor cut into chunks of at
    most `chunk` elements, in order; an empty tensor has none."""
    sizes = np.asarray(sizes, dtype=np.int64)
    counts = -(-sizes // chunk)
    tensor = np.repeat(np.arange(len(sizes), dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    begin = (np.arange(len(tensor), dtype=np.int64) - first) * chunk
    end = np.minimum(begin + chunk, sizes[tensor])
    return np.stack([tensor, begin, end], axis=1) if len(tensor) else np.zeros((0, 3), np.int64)


def _flag(value):
    return np.int32(bool(value))


# ---------------------------------------------------------------- CUDA launches

def _launch(launchers, name, dtype, rows, per_tensor, scalars, chunk):
    """One launch of `name` over the tensors of rows (each row a list of contiguous arrays
    of dtype), with the per-tensor array and scalars that follow the two tables."""
    sizes = [a.size for a in rows[0]]
    chunks = chunk_table(sizes, chunk)
    if len(chunks) == 0:
        return
    xp = launchers.xp
    if not 1 <= chunk < 2**31 or len(chunks) >= 2**31 or len(sizes) * len(rows) >= 2**31:
        raise ValueError(f"{name}: {len(sizes)} tensors in {len(chunks)} chunks do not fit "
                         "the kernel's 32-bit tensor and chunk indices")
    tensors = xp.asarray(address_table(rows))
    grid = max(1, min(len(chunks), launchers.max_blocks))
    launchers.kernel(name, dtype)((grid,), (launchers.block,),
                                  (tensors, xp.asarray(chunks), per_tensor,
                                   np.int32(len(sizes)), np.int32(len(chunks)), *scalars))


def launch_sgd(launchers, params, grads, bufs, fresh, lr, weight_decay, momentum, dampening,
               nesterov, maximize, chunk=CHUNK):
    """sgd() with the kernel sgd_fused: one launch for all the tensors (one dtype)."""
    if not params:
        return
    dtype = np.dtype(params[0].dtype)
    staged = Staged(launchers.xp, dtype)
    rows = [staged.written(params), staged.read(grads)]
    if momentum != 0:
        rows.append(staged.written(bufs))
    t = dtype.type
    _launch(launchers, "sgd_fused", dtype, rows,
            launchers.xp.asarray(np.array(fresh, dtype=np.int32).reshape(-1)),
            (t(lr), t(weight_decay), t(momentum), t(1 - dampening), _flag(nesterov),
             _flag(maximize)), chunk)
    staged.write_back()


def launch_adam(launchers, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr,
                beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled, chunk=CHUNK):
    """adam() with the kernel adam_fused: one launch for all the tensors (one dtype)."""
    if not params:
        return
    dtype = np.dtype(params[0].dtype)
    staged = Staged(launchers.xp, dtype)
    rows = [staged.written(params), staged.read(grads), staged.written(exp_avgs),
            staged.written(exp_avg_sqs)]
    if amsgrad:
        rows.append(staged.written(max_exp_avg_sqs))
    corrections = np.array([adam_corrections(s, lr, beta1, beta2) for s in steps],
                           dtype=dtype).reshape(-1)
    t = dtype.type
    _launch(launchers, "adam_fused", dtype, rows, launchers.xp.asarray(corrections),
            (t(1 - beta1), t(beta2), t(1 - beta2), t(weight_decay), t(1 - lr * weight_decay),
             t(eps), _flag(amsgrad), _flag(maximize), _flag(decoupled)), chunk)
    staged.write_back()


# ---------------------------------------------------------------- the layer for an array

def _layer(a):
    """'reference', 'cpu' or 'cuda': the kernel layer (tinyres.kernels.use, else the
    array's device, as backend.kernels_for) that updates tensors like `a`; float16 takes
    the reference on the CPU."""
    from tinyres.backend import kernels_for
    layer = kernels_for(a).__name__.rsplit(".", 1)[1]
    if layer == "cpu" and np.dtype(a.dtype) not in COMPILED_DTYPES:
        return "reference"
    return layer


def _on_gpu_of(a, name, args):
    """cuda.<name>(*args) with a's GPU current (a group may live on any GPU)."""
    from tinyres import backend
    from tinyres.kernels import cuda
    with backend.on_device(backend.device_of(a)):
        return getattr(cuda, name)(*args)


def sgd(params, grads, bufs, fresh, lr, weight_decay, momentum, dampening, nesterov,
        maximize):
    """The fused SGD step on one dtype's tensors, on the layer chosen for them."""
    if not params:
        return
    layer = _layer(params[0])
    args = (params, grads, bufs, fresh, lr, weight_decay, momentum, dampening, nesterov,
            maximize)
    if layer == "cuda":
        return _on_gpu_of(params[0], "sgd_fused", args)
    if layer == "cpu":
        from tinyres.kernels import fused_optim_cpu
        return fused_optim_cpu.sgd(*args)
    return sgd_reference(*args)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2,
         weight_decay, eps, amsgrad, maximize, decoupled):
    """The fused Adam/AdamW step on one dtype's tensors, on the layer chosen for them."""
    if not params:
        return
    layer = _layer(params[0])
    args = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2,
            weight_decay, eps, amsgrad, maximize, decoupled)
    if layer == "cuda":
        return _on_gpu_of(params[0], "adam_fused", args)
    if layer == "cpu":
        from tinyres.kernels import fused_optim_cpu
        return fused_optim_cpu.adam(*args)
    return adam_reference(*args)
