"""CuPy launchers for the CUDA C kernels in cuda/*.cu: the functions of reference.py.

The kernels live in real .cu files next to this one, templated on the element type T.
Each file is compiled with NVRTC with name expressions such as "im2col<float>" and
"im2col<double>", which make NVRTC instantiate the templates, once per machine (the cubin
is cached on disk by kernels/cuda_build.py, which says why not by cupy.RawModule), and
loaded once per process and device; CuPy is imported only when a kernel is first needed,
so importing this module never needs a GPU. Every launcher first checks that its arrays
are on the current device (a kernel reading another GPU's pointer is undefined).

The launch logic (argument checks, output allocation, launch geometry, the exact C type of
every scalar argument) is written once, in the class Launchers, against an array module
`xp` and a function that finds a compiled kernel. The module-level functions use CuPy;
kernels/emulate.py uses the same class with NumPy and the kernels compiled for the CPU, so
a CPU-only test run exercises the very launches a GPU would see.

Launch geometry. Elementwise kernels use a grid-stride loop: `grid_for(work, block)`
blocks of `block` threads, at most `max_blocks` of them, and each thread steps through the
data by the total number of threads. Batch-norm reductions use one block per channel
(blocks stride over channels when C > max_blocks). Scalars are passed as NumPy scalars of
the kernel's C type (np.int32 for int, np.int64 for long long): CuPy passes a bare Python
int as a 64-bit integer, which an `int` parameter would misread.
"""
import functools
import pathlib
import re

import numpy as np

from . import checks, cuda_build, gemm_conv

CUDA_DIR = pathlib.Path(__file__).resolve().parent / "cuda"
SOURCES = ("im2col.cu", "batchnorm.cu", "relu.cu", "maxpool.cu")
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

BLOCK = 256            # threads per block on a GPU; a multiple of 32 (the reductions need it)
MAX_BLOCKS = 65535     # cap on a grid-stride grid; beyond it each thread takes more steps

_KERNEL = re.compile(r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)")


def read_source(filename):
    """The text of one of the .cu files in kernels/cuda/."""
    return (CUDA_DIR / filename).read_text(encoding="utf-8")


def kernel_signatures(source):
    """{kernel name: [(C type, parameter name), ...]} of the `template <typename T>
    __global__ void` kernels in a .cu source, in order."""
    signatures = {}
    for name, params in _KERNEL.findall(source):
        pairs = []
        for param in params.split(","):
            m = re.fullmatch(r"\s*(.*?)\s*\b(\w+)\s*", param, flags=re.S)
            pairs.append((" ".join(m.group(1).split()), m.group(2)))
        signatures[name] = pairs
    return signatures


def name_expressions(source):
    """The instantiations to compile: "name<float>" and "name<double>" for every kernel."""
    return [f"{name}<{t}>" for name in kernel_signatures(source) for t in C_TYPES.values()]


@functools.lru_cache(maxsize=None)
def kernel_files():
    """{kernel name: the .cu file that defines it}, for every file in SOURCES."""
    return {name: f for f in SOURCES for name in kernel_signatures(read_source(f))}


def grid_for(work, block, max_blocks=MAX_BLOCKS):
    """Blocks for a grid-stride loop over `work` items: enough for one item per thread,
    but at most max_blocks (and at least 1)."""
    return max(1, min(-(-work // block), max_blocks))


def _i32(*values):
    return tuple(np.int32(v) for v in values)


class Launchers:
    """The kernels of reference.py, launched on arrays of `xp` (the convolutions as
    im2col/col2im and xp.matmul, kernels/gemm_conv.py).

    kernel(name, dtype) returns a callable with RawKernel's calling convention,
    kernel((grid,), (block,), args). block must be a multiple of 32, at most 1024.
    devices, when given, is (device_of(array) -> int or None for a host array,
    current_device() -> int): every launcher then checks its arrays against the current
    device before anything else.
    """

    def __init__(self, xp, kernel, block=BLOCK, max_blocks=MAX_BLOCKS, devices=None):
        if block % 32 or not 32 <= block <= 1024:
            raise ValueError(f"block must be a multiple of 32 in [32, 1024], got {block}")
        self.xp, self.kernel, self.block, self.max_blocks = xp, kernel, block, max_blocks
        self.devices = devices

    def _check_devices(self, kernel, **arrays):
        """Raise RuntimeError naming the kernel, the array and both devices when an array
        (None is skipped) is not on the current device."""
        if self.devices is None:
            return
        device_of, current_device = self.devices
        current = current_device()
        for name, a in arrays.items():
            if a is None:
                continue
            where = device_of(a)
            if where != current:
                found = "cpu" if where is None else f"cuda:{where}"
                raise RuntimeError(
                    f"{kernel}: array {name} is on {found} but the kernel runs on the current "
                    f"device cuda:{current}; move it there (.to('cuda:{current}')) or make "
                    f"its device current")

    def _launch(self, name, dtype, work, args):
        """One thread per item of `work`, in a grid-stride loop."""
        if work > 0:
            grid = grid_for(work, self.block, self.max_blocks)
            self.kernel(name, dtype)((grid,), (self.block,), args)

    def _launch_per_channel(self, name, dtype, channels, args):
        """One block per channel (the block reduces that channel)."""
        grid = max(1, min(channels, self.max_blocks))
        self.kernel(name, dtype)((grid,), (self.block,), args)

    def _vector(self, v, dtype):
        return self.xp.ascontiguousarray(v, dtype=dtype)

    def im2col(self, x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        """See reference.im2col."""
        self._check_devices("im2col", x=x)
        oh, ow = checks.im2col_args(x, kh, kw, sh, sw, ph, pw, dh, dw)
        n, c, h, w = x.shape
        x = self.xp.ascontiguousarray(x)
        cols = self.xp.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
        self._launch("im2col", x.dtype, cols.size,
                     (x, cols, *_i32(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)))
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        """See reference.col2im."""
        self._check_devices("col2im", cols=cols)
        n, c, h, w, oh, ow = checks.col2im_args(cols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw)
        cols = self.xp.ascontiguousarray(cols)
        dx = self.xp.empty((n, c, h, w), dtype=cols.dtype)
        self._launch("col2im", cols.dtype, dx.size,
                     (cols, dx, *_i32(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)))
        return dx

    def conv2d_forward(self, x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1):
        """See reference.conv2d_forward: im2col + the groups' GEMMs (cuBLAS on a GPU)."""
        self._check_devices("conv2d_forward", x=x, w2=w2)
        oh, ow = checks.conv2d_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
        return gemm_conv.conv2d_forward(self.xp, self.im2col, x, w2, kh, kw, sh, sw, ph, pw,
                                        oh, ow, dh, dw, groups)

    def conv2d_backward(self, grad_out, x, w2, kh, kw, sh, sw, ph, pw, need_x=True,
                        need_w=True, dh=1, dw=1, groups=1):
        """See reference.conv2d_backward."""
        self._check_devices("conv2d_backward", grad_out=grad_out, x=x, w2=w2)
        checks.conv2d_backward_args(grad_out, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
        return gemm_conv.conv2d_backward(self.xp, self.im2col, self.col2im, grad_out, x, w2,
                                         kh, kw, sh, sw, ph, pw, need_x, need_w,
                                         dh, dw, groups)

    def batchnorm_forward(self, x, weight, bias, running_mean, running_var, momentum, eps):
        """See reference.batchnorm_forward."""
        self._check_devices("batchnorm_forward", x=x, weight=weight, bias=bias,
                            running_mean=running_mean, running_var=running_var)
        m = checks.batchnorm_forward_args(x, weight, bias, running_mean, running_var)
        xp, dt = self.xp, x.dtype
        if m == 0:     # an empty batch (as PyTorch): empty y, running statistics untouched
            return xp.empty_like(x), xp.zeros(x.shape[1], dt), xp.zeros(x.shape[1], dt)
        x = xp.ascontiguousarray(x)
        n, c, h, w = x.shape
        mean64, var64 = xp.empty(c, dtype=np.float64), xp.empty(c, dtype=np.float64)
        self._launch_per_channel("batchnorm_stats", dt, c, (x, mean64, var64, *_i32(n, c, h * w)))
        mean, invstd = mean64.astype(dt), (1.0 / xp.sqrt(var64 + eps)).astype(dt)
        y = xp.empty_like(x)
        self._launch("batchnorm_apply", dt, x.size,
                     (x, mean, invstd, self._vector(weight, dt), self._vector(bias, dt), y,
                      *_i32(n, c, h * w)))
        if running_mean is not None:
            running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean64
        if running_var is not None:
            running_var[...] = (1.0 - momentum) * running_var + momentum * var64 * (m / (m - 1))
        return y, mean, invstd

    def batchnorm_backward(self, grad_out, x, weight, mean, invstd):
        """See reference.batchnorm_backward."""
        self._check_devices("batchnorm_backward", grad_out=grad_out, x=x, weight=weight,
                            mean=mean, invstd=invstd)
        m = checks.batchnorm_backward_args(grad_out, x, weight, mean, invstd)
        xp, dt = self.xp, x.dtype
        if m == 0:     # an empty batch: no gradient reaches weight and bias
            return xp.empty_like(x), xp.zeros(x.shape[1], dt), xp.zeros(x.shape[1], dt)
        x, g = xp.ascontiguousarray(x), xp.ascontiguousarray(grad_out, dtype=dt)
        n, c, h, w = x.shape
        mean, invstd = self._vector(mean, dt), self._vector(invstd, dt)
        sum_g, sum_gxhat = xp.empty(c, dtype=np.float64), xp.empty(c, dtype=np.float64)
        self._launch_per_channel("batchnorm_backward_reduce", dt, c,
                                 (g, x, mean, invstd, sum_g, sum_gxhat, *_i32(n, c, h * w)))
        grad_x = xp.empty_like(x)
        self._launch("batchnorm_backward_apply", dt, x.size,
                     (g, x, mean, invstd, self._vector(weight, dt), sum_g, sum_gxhat, grad_x,
                      *_i32(n, c, h * w)))
        return grad_x, sum_gxhat.astype(dt), sum_g.astype(dt)

    def relu_forward(self, x):
        """See reference.relu_forward."""
        self._check_devices("relu_forward", x=x)
        checks.check_float("relu_forward", x, "x")
        x = self.xp.ascontiguousarray(x)
        y = self.xp.empty_like(x)
        self._launch("relu_forward", x.dtype, x.size, (x, y, np.int64(x.size)))
        return y

    def relu_backward(self, grad_out, x):
        """See reference.relu_backward."""
        self._check_devices("relu_backward", grad_out=grad_out, x=x)
        checks.relu_backward_args(grad_out, x)
        g = self.xp.ascontiguousarray(grad_out)
        x = self.xp.ascontiguousarray(x, dtype=g.dtype)
        grad_x = self.xp.empty_like(g)
        self._launch("relu_backward", g.dtype, g.size, (g, x, grad_x, np.int64(g.size)))
        return grad_x

    def maxpool_forward(self, x, kh, kw, sh, sw, ph, pw):
        """See reference.maxpool_forward."""
        self._check_devices("maxpool_forward", x=x)
        oh, ow = checks.maxpool_forward_args(x, kh, kw, sh, sw, ph, pw)
        n, c, h, w = x.shape
        x = self.xp.ascontiguousarray(x)
        y = self.xp.empty((n, c, oh, ow), dtype=x.dtype)
        idx = self.xp.empty((n, c, oh, ow), dtype=np.int64)
        self._launch("maxpool_forward", x.dtype, y.size,
                     (x, y, idx, *_i32(n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)))
        return y, idx

    def maxpool_backward(self, grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw):
        """See reference.maxpool_backward."""
        self._check_devices("maxpool_backward", grad_out=grad_out, idx=idx)
        n, c, h, w, oh, ow = checks.maxpool_backward_args(grad_out, idx, x_shape, kh, kw, sh, sw,
                                                          ph, pw, check_index=False)
        g = self.xp.ascontiguousarray(grad_out)
        idx = self.xp.ascontiguousarray(idx, dtype=np.int64)
        grad_x = self.xp.empty((n, c, h, w), dtype=g.dtype)
        self._launch("maxpool_backward", g.dtype, grad_x.size,
                     (g, idx, grad_x, *_i32(n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow)))
        return grad_x


    def batchnorm_relu_forward(self, x, weight, bias, running_mean, running_var, momentum,
                               eps, training=True):
        """See reference.batchnorm_relu_forward: the statistics kernel (training), then one
        elementwise pass writing max(batch norm, 0)."""
        self._check_devices("batchnorm_relu_forward", x=x, weight=weight, bias=bias,
                            running_mean=running_mean, running_var=running_var)
        m = checks.batchnorm_relu_forward_args(x, weight, bias, running_mean, running_var,
                                               training)
        xp, dt = self.xp, x.dtype
        if m == 0:     # an empty batch (as PyTorch): empty y, running statistics untouched
            return xp.empty_like(x), xp.zeros(x.shape[1], dt), xp.zeros(x.shape[1], dt)
        x = xp.ascontiguousarray(x)
        n, c, h, w = x.shape
        if training:
            mean64, var64 = xp.empty(c, dtype=np.float64), xp.empty(c, dtype=np.float64)
            self._launch_per_channel("batchnorm_stats", dt, c,
                                     (x, mean64, var64, *_i32(n, c, h * w)))
        else:
            mean64 = xp.asarray(running_mean, dtype=np.float64)
            var64 = xp.asarray(running_var, dtype=np.float64)
        mean, invstd = mean64.astype(dt), (1.0 / xp.sqrt(var64 + eps)).astype(dt)
        y = xp.empty_like(x)
        self._launch("batchnorm_relu_apply", dt, x.size,
                     (x, mean, invstd, self._vector(weight, dt), self._vector(bias, dt), y,
                      *_i32(n, c, h * w)))
        if training and running_mean is not None:
            running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean64
        if training and running_var is not None:
            running_var[...] = (1.0 - momentum) * running_var + momentum * var64 * (m / (m - 1))
        return y, mean, invstd

    def batchnorm_relu_backward(self, grad_out, y, x, weight, mean, invstd, training=True):
        """See reference.batchnorm_relu_backward: one reduction of the masked gradient, then
        one elementwise pass writing grad_x."""
        self._check_devices("batchnorm_relu_backward", grad_out=grad_out, y=y, x=x,
                            weight=weight, mean=mean, invstd=invstd)
        m = checks.batchnorm_relu_backward_args(grad_out, y, x, weight, mean, invstd, training)
        xp, dt = self.xp, x.dtype
        if m == 0:     # an empty batch: no gradient reaches weight and bias
            return xp.empty_like(x), xp.zeros(x.shape[1], dt), xp.zeros(x.shape[1], dt)
        x, g = xp.ascontiguousarray(x), xp.ascontiguousarray(grad_out, dtype=dt)
        y = xp.ascontiguousarray(y, dtype=dt)
        n, c, h, w = x.shape
        mean, invstd = self._vector(mean, dt), self._vector(invstd, dt)
        sum_g, sum_gxhat = xp.empty(c, dtype=np.float64), xp.empty(c, dtype=np.float64)
        self._launch_per_channel("batchnorm_relu_backward_reduce", dt, c,
                                 (g, y, x, mean, invstd, sum_g, sum_gxhat, *_i32(n, c, h * w)))
        grad_x = xp.empty_like(x)
        self._launch("batchnorm_relu_backward_apply", dt, x.size,
                     (g, y, x, mean, invstd, self._vector(weight, dt), sum_g, sum_gxhat,
                      grad_x, *_i32(n, c, h * w, bool(training))))
        return grad_x, sum_gxhat.astype(dt), sum_g.astype(dt)


@functools.lru_cache(maxsize=None)
def _module(filename, device_id):
    """(RawModule, {name expression: mangled name}) of one .cu file on one device: compiled
    once per machine by cuda_build (cached on disk, without CuPy's -ftz=true), loaded once
    per process and device."""
    import cupy

    source = read_source(filename)
    device = cupy.cuda.Device(device_id)
    built = cuda_build.build_for_device(source, filename, name_expressions(source),
                                        device.compute_capability)
    return cupy.RawModule(path=str(built.path)), built.lowered


def _cupy_kernel(name, dtype):
    """The RawKernel `name<T>` for dtype on the current device."""
    import cupy

    module, lowered = _module(kernel_files()[name], cupy.cuda.Device().id)
    return module.get_function(lowered[f"{name}<{C_TYPES[np.dtype(dtype)]}>"])


def _cupy_device_of(a):
    """The CUDA device number of a CuPy array; None for anything else (a NumPy array)."""
    return a.device.id if type(a).__module__.startswith("cupy") else None


def _cupy_current_device():
    import cupy

    return cupy.cuda.Device().id


def _cupy():
    import cupy

    return cupy


@functools.lru_cache(maxsize=None)
def _gpu():
    return Launchers(_cupy(), _cupy_kernel,
                     devices=(_cupy_device_of, _cupy_current_device))


def im2col(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """Unfold the kh x kw windows of x (N, C, H, W), taps (dh, dw) apart, into cols
    (C*kh*kw, N*OH*OW), on the GPU."""
    return _gpu().im2col(x, kh, kw, sh, sw, ph, pw, dh, dw)


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """The adjoint of im2col (a gather: each pixel sums the entries read from it), on the GPU."""
    return _gpu().col2im(cols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw)


def conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1):
    """The convolution of x (N, C, H, W) with w2 (OC, C/groups*kh*kw): im2col + cuBLAS
    GEMMs, one batched call for the groups."""
    return _gpu().conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)


def conv2d_backward(grad_out, x, w2, kh, kw, sh, sw, ph, pw, need_x=True, need_w=True,
                    dh=1, dw=1, groups=1):
    """(grad_x, grad_w2) of conv2d_forward, each None unless asked for, on the GPU."""
    return _gpu().conv2d_backward(grad_out, x, w2, kh, kw, sh, sw, ph, pw, need_x, need_w,
                                  dh, dw, groups)


def batchnorm_forward(x, weight, bias, running_mean, running_var, momentum, eps):
    """Training-mode batch norm -> (y, mean, invstd); updates the running stats in place."""
    return _gpu().batchnorm_forward(x, weight, bias, running_mean, running_var, momentum, eps)


def batchnorm_backward(grad_out, x, weight, mean, invstd):
    """Batch-norm gradient -> (grad_x, grad_weight, grad_bias), on the GPU."""
    return _gpu().batchnorm_backward(grad_out, x, weight, mean, invstd)


def relu_forward(x):
    """max(x, 0) elementwise, on the GPU."""
    return _gpu().relu_forward(x)


def relu_backward(grad_out, x):
    """grad_out * 1[x > 0] elementwise, on the GPU."""
    return _gpu().relu_backward(grad_out, x)


def maxpool_forward(x, kh, kw, sh, sw, ph, pw):
    """Max pooling -> (y, idx), idx the flat h*W + w of each chosen element, on the GPU."""
    return _gpu().maxpool_forward(x, kh, kw, sh, sw, ph, pw)


def maxpool_backward(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw):
    """Route grad_out back to the elements idx chose (a gather, no atomics), on the GPU."""
    return _gpu().maxpool_backward(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw)


def batchnorm_relu_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                           training=True):
    """relu(batch norm) -> (y, mean, invstd); training updates the running stats in place."""
    return _gpu().batchnorm_relu_forward(x, weight, bias, running_mean, running_var,
                                         momentum, eps, training)


def batchnorm_relu_backward(grad_out, y, x, weight, mean, invstd, training=True):
    """Gradient of relu(batch norm), the mask read from y -> (grad_x, grad_weight,
    grad_bias), on the GPU."""
    return _gpu().batchnorm_relu_backward(grad_out, y, x, weight, mean, invstd, training)
