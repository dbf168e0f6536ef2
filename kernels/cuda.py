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

Launch geometry. No kernel splits a flat index with / or % (a GPU has no integer divider:
each is a ~20-instruction subroutine). The image kernels (im2col, col2im, max pooling) run
a 3-D grid whose thread coordinates are the indices: x a column, y a row, z a plane
n*C + c (`_launch_planes`), the batch-norm elementwise kernels x a pixel, y the channel,
z the image; the block is shaped to the plane (`tile`), every dimension is a grid-stride
loop, and gridDim.y and gridDim.z are capped at GRID_YZ_LIMIT = 65535 (the hardware's
limit; gridDim.x is capped at max_blocks). What division is left (plane -> (n, c), the
strides of the gathers) is a multiplication by a magic number computed here
(`magic_divisor`) and passed as two kernel arguments. Batch-norm statistics and backward
sums are two-stage reductions: stage 1 a grid (S, C) of blocks, S slices of the batch per
channel, each writing a partial; stage 2 one warp per channel combining its S partials.
ReLU keeps a 1-D grid-stride loop (`grid_for`). Scalars are passed as NumPy scalars of the
kernel's C type (np.int32 for int, np.uint32 for unsigned, np.int64 for long long): CuPy
passes a bare Python int as a 64-bit integer, which an `int` parameter would misread.
"""
import functools
import pathlib
import re

import numpy as np

from tinyres.host_sync import count_launch

from . import checks, cuda_build, fused_optim, nchw_conv

CUDA_DIR = pathlib.Path(__file__).resolve().parent / "cuda"
SOURCES = ("im2col.cu", "batchnorm.cu", "relu.cu", "maxpool.cu",
           "optim.cu")
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

BLOCK = 256            # threads per block on a GPU; a multiple of 32 (the reductions need it)
MAX_BLOCKS = 65535     # cap on a grid-stride grid; beyond it each thread takes more steps
GRID_YZ_LIMIT = 65535  # the hardware's limit on gridDim.y and gridDim.z
BLOCK_Z_LIMIT = 64     # and on blockDim.z
INT32_LIMIT = 2**31    # fastdiv.cuh divides 32-bit ints below this
PLANE_LIMIT = 2**31 - 2**26  # planes a kernel loops over in an int: a grid-stride step
                             # (at most 65535 * 1024 < 2**26) must not overflow it
STATS_TARGET_BLOCKS = 2048   # batch-norm stage 1 aims at this many blocks (all SMs busy)
INCLUDE = re.compile(r'^#include "(\w+\.cuh)"$', flags=re.M)

_KERNEL = re.compile(r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)")


def read_source(filename):
    """The text of one of the .cu files in kernels/cuda/, each `#include "name.cuh"` line
    replaced by that header's text (between #line markers, so compiler messages name the
    right file and line): the result compiles alone, as NVRTC, nvcc and the emulator need."""
    text = (CUDA_DIR / filename).read_text(encoding="utf-8")

    def paste(m):
        line = text.count("\n", 0, m.start()) + 2      # the line after the #include
        header = (CUDA_DIR / m.group(1)).read_text(encoding="utf-8")
        return f'#line 1 "{m.group(1)}"\n{header}#line {line} "{filename}"'

    return INCLUDE.sub(paste, text)


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


def _counted(kernel):
    """`kernel` whose every launch is first counted (tinyres.host_sync.count_launch): the one
    place a Launchers launch goes through, so no launcher can skip the count."""
    def get(name, dtype):
        compiled = kernel(name, dtype)

        def launch(grid, block, args):
            count_launch()
            return compiled(grid, block, args)
        return launch
    return get


def _update_running(running_mean, running_var, mean, var, momentum, m):
    """The running statistics, in place: (1 - momentum) * old + momentum * batch value,
    the variance unbiased by m / (m - 1) (m values a channel); None is left alone."""
    if running_mean is not None:
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean
    if running_var is not None:
        running_var *= 1.0 - momentum
        running_var += var * (momentum * m / (m - 1))


def _i32(*values):
    return tuple(np.int32(v) for v in values)


def magic_divisor(d):
    """(magic, shift) as kernel arguments (np.uint32, np.int32) for dividing by d in
    fastdiv.cuh: n // d == ((n * magic >> 32) + n) >> shift for every 0 <= n < 2**31."""
    if not 1 <= d < INT32_LIMIT:
        raise ValueError(f"magic_divisor: the divisor must be in [1, 2**31), got {d}")
    shift = (d - 1).bit_length()                       # ceil(log2(d))
    magic = (1 << 32) * ((1 << shift) - d) // d + 1
    return np.uint32(magic), np.int32(shift)


def _pow2(n):
    """The least power of two >= n (1 for n <= 1)."""
    return 1 << (max(int(n), 1) - 1).bit_length()


def tile(block, rows, cols):
    """(bx, by, bz), a block of at most `block` threads shaped to planes of rows x cols:
    bx the power of two >= cols (at most block), by likewise for rows in what is left,
    bz the rest (several planes per block when a plane is small), at most BLOCK_Z_LIMIT:
    a GPU refuses blockDim.z above 64 (tiny planes get a block of fewer threads)."""
    bx = min(block, _pow2(cols))
    by = min(block // bx, _pow2(rows))
    return bx, by, min(block // (bx * by), BLOCK_Z_LIMIT)


def _layout_strides(n, rows, positions, per_image):
    """(Q, image_stride) as np.int64 kernel arguments: the distance between rows of cols and
    between the first columns of consecutive images, per image (n, rows, positions) or
    batch-wide (rows, n*positions) (im2col.cu)."""
    if per_image:
        return np.int64(positions), np.int64(rows * positions)
    return np.int64(n * positions), np.int64(positions)


def _check_int32(fn, **sizes):
    """Raise ValueError naming fn when a size is too large for a kernel's int loop."""
    for name, value in sizes.items():
        if value >= PLANE_LIMIT:
            raise ValueError(f"{fn}: {name} = {value} does not fit the kernel's 32-bit "
                             f"indices (less than {PLANE_LIMIT} = 2**31 - 2**26)")


class Launchers:
    """The kernels of reference.py, launched on arrays of `xp` (the convolutions as
    im2col/col2im and batched xp.matmul writing NCHW, kernels/nchw_conv.py).

    kernel(name, dtype) returns a callable with RawKernel's calling convention,
    kernel(grid, block, args), grid and block tuples of one to three dimensions. block
    (threads per block) must be a multiple of 32, at most 1024.
    devices, when given, is (device_of(array) -> int or None for a host array,
    current_device() -> int): every launcher then checks its arrays against the current
    device before anything else.
    """

    cols_budget = nchw_conv.COLS_BUDGET   # bytes of columns a convolution holds at once

    def __init__(self, xp, kernel, block=BLOCK, max_blocks=MAX_BLOCKS, devices=None):
        if block % 32 or not 32 <= block <= 1024:
            raise ValueError(f"block must be a multiple of 32 in [32, 1024], got {block}")
        self.xp, self.block, self.max_blocks = xp, block, max_blocks
        self.kernel = _counted(kernel)
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
        """One thread per item of `work`, in a 1-D grid-stride loop (ReLU)."""
        if work > 0:
            grid = grid_for(work, self.block, self.max_blocks)
            self.kernel(name, dtype)((grid,), (self.block,), args)

    def _launch_planes(self, name, dtype, extent, args):
        """A 3-D grid over extent = (planes, rows, cols): thread coordinates x a column,
        y a row, z a plane, each a grid-stride loop (see the module docstring)."""
        planes, rows, cols = extent
        if planes * rows * cols == 0:
            return
        bx, by, bz = tile(self.block, rows, cols)
        cap = min(self.max_blocks, GRID_YZ_LIMIT)
        grid = (min(-(-cols // bx), self.max_blocks), min(-(-rows // by), cap),
                min(-(-planes // bz), cap))
        self.kernel(name, dtype)(grid, (bx, by, bz), args)

    def reduction_geometry(self, n, c, hw):
        """(grid, block) of a batch-norm stage 1 over x (n, c, hw): block (bx, by) with bx
        the power of two >= hw (at least a warp, at most the block), by = images at once;
        grid (S, C): S slices of the batch per channel, enough for STATS_TARGET_BLOCKS
        blocks in all, at most one per by images and at most max_blocks."""
        bx = min(self.block, max(32, _pow2(hw)))
        by = self.block // bx
        slices = min(-(-n // by), -(-STATS_TARGET_BLOCKS // max(c, 1)), self.max_blocks)
        return (max(1, slices), max(1, min(c, GRID_YZ_LIMIT, self.max_blocks))), (bx, by)

    def _launch_combine(self, name, dtype, channels, args):
        """Stage 2 of a batch-norm reduction: one warp per channel."""
        per_block = self.block // 32
        grid = max(1, min(-(-channels // per_block), self.max_blocks))
        self.kernel(name, dtype)((grid,), (32, per_block), args)

    def _vector(self, v, dtype):
        return self.xp.ascontiguousarray(v, dtype=dtype)

    def im2col(self, x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        """See reference.im2col: cols (C*kh*kw, N*OH*OW), the batch-wide layout."""
        self._check_devices("im2col", x=x)
        oh, ow = checks.im2col_args(x, kh, kw, sh, sw, ph, pw, dh, dw)
        n, c, _, _ = x.shape
        _check_int32("im2col", planes=n * c)
        x = self.xp.ascontiguousarray(x)
        cols = self.xp.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
        self._unfold(x, cols, (kh, kw, sh, sw, ph, pw, dh, dw), per_image=False)
        return cols

    def col2im(self, cols, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
        """See reference.col2im: cols in the batch-wide layout (C*kh*kw, N*OH*OW)."""
        self._check_devices("col2im", cols=cols)
        n, c, h, w, _, _ = checks.col2im_args(cols, x_shape, kh, kw, sh, sw, ph, pw, dh, dw)
        _check_int32("col2im", planes=n * c)
        cols = self.xp.ascontiguousarray(cols)
        dx = self.xp.empty((n, c, h, w), dtype=cols.dtype)
        self._fold(cols, dx, (kh, kw, sh, sw, ph, pw, dh, dw), per_image=False)
        return dx

    def _unfold(self, x, cols, window, per_image):
        """im2col of x (n, C, H, W), C-contiguous, into the C-contiguous cols: per_image,
        cols is (n, C*kh*kw, OH*OW); else (C*kh*kw, n*OH*OW) (im2col.cu, the layouts).
        window = (kh, kw, sh, sw, ph, pw, dh, dw); the caller has checked the sizes."""
        n, c, h, w = x.shape
        kh, kw, sh, sw, ph, pw, dh, dw = window
        oh, ow = nchw_conv.out_size(h, w, window)
        self._launch_planes("im2col", x.dtype, (n * c, oh, ow),
                            (x, cols, *_i32(n, c, h, w, *window, oh, ow),
                             *_layout_strides(n, c * kh * kw, oh * ow, per_image),
                             *magic_divisor(max(c, 1))))

    def _fold(self, cols, dx, window, per_image):
        """col2im of cols (layouts as _unfold) into dx (n, C, H, W), both C-contiguous."""
        n, c, h, w = dx.shape
        kh, kw, sh, sw, ph, pw, dh, dw = window
        oh, ow = nchw_conv.out_size(h, w, window)
        self._launch_planes("col2im", cols.dtype, (n * c, h, w),
                            (cols, dx, *_i32(n, c, h, w, *window, oh, ow),
                             *_layout_strides(n, c * kh * kw, oh * ow, per_image),
                             *magic_divisor(max(c, 1)), *magic_divisor(sh),
                             *magic_divisor(sw)))

    def conv2d_forward(self, x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1, bias=None,
                       scale=None, relu=False, residual=None, residual_scale=1.0):
        """See reference.conv2d_forward: batched GEMMs (cuBLAS on a GPU) that write NCHW,
        over per-image columns, or over x itself for a 1x1 layer (kernels/nchw_conv.py);
        the bias, where given, one broadcast addition after (with scale, channel_affine),
        the residual's add_scaled, then relu_forward where asked."""
        self._check_devices("conv2d_forward", x=x, w2=w2, bias=bias, scale=scale,
                            residual=residual)
        checks.conv2d_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, scale,
                                   residual)
        _check_int32("conv2d_forward", planes=x.shape[0] * x.shape[1])
        out = nchw_conv.forward(self.xp, self._unfold, x, w2, (kh, kw, sh, sw, ph, pw, dh, dw),
                                groups, self.cols_budget)
        if scale is not None:
            out = channel_affine(out, scale, bias)
        elif bias is not None:
            out += bias.reshape(1, -1, 1, 1)
        if residual is not None:        # add_scaled's steps, each a kernel of the library
            self.xp.add(out, residual if residual_scale == 1.0 else
                        out.dtype.type(residual_scale) * residual, out=out)
        return self.relu_forward(out, out=out) if relu else out

    def conv2d_backward(self, grad_out, x, w2, kh, kw, sh, sw, ph, pw, need_x=True,
                        need_w=True, dh=1, dw=1, groups=1):
        """See reference.conv2d_backward; kernels/nchw_conv.py says how."""
        self._check_devices("conv2d_backward", grad_out=grad_out, x=x, w2=w2)
        checks.conv2d_backward_args(grad_out, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
        _check_int32("conv2d_backward", planes=x.shape[0] * x.shape[1])
        return nchw_conv.backward(self.xp, self._unfold, self._fold, grad_out, x, w2,
                                  (kh, kw, sh, sw, ph, pw, dh, dw), need_x, need_w, groups,
                                  self.cols_budget)

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
        mean, var, invstd = self._batch_stats(x, eps)
        y = xp.empty_like(x)
        self._launch_planes("batchnorm_apply", dt, (n, c, h * w),
                            (x, mean, invstd, self._vector(weight, dt), self._vector(bias, dt),
                             y, *_i32(n, c, h * w)))
        _update_running(running_mean, running_var, mean, var, momentum, m)
        return y, mean, invstd

    def conv2d_batchnorm_forward(self, x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, weight,
                                 bias, running_mean, running_var, momentum, eps, relu=False):
        """See reference.conv2d_batchnorm_forward: conv2d_forward, then the statistics
        kernel and the elementwise pass of batchnorm_forward (batchnorm_relu_forward)."""
        self._check_devices("conv2d_batchnorm_forward", x=x, w2=w2, weight=weight,
                            bias=bias, running_mean=running_mean, running_var=running_var)
        checks.conv2d_batchnorm_forward_args(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                                             weight, bias, running_mean, running_var)
        out = self.conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups)
        if relu:
            y, mean, invstd = self.batchnorm_relu_forward(out, weight, bias, running_mean,
                                                          running_var, momentum, eps, True)
        else:
            y, mean, invstd = self.batchnorm_forward(out, weight, bias, running_mean,
                                                     running_var, momentum, eps)
        return out, y, mean, invstd

    def _backward_sums(self, name, arrays, shape):
        """sum(g) and sum(g * xhat) per channel: stage 1 `name` over `arrays` (its leading
        arguments), then batchnorm_backward_combine; shape = (N, C, H*W)."""
        xp, dt = self.xp, arrays[0].dtype
        n, c, hw = shape
        grid, block = self.reduction_geometry(n, c, hw)
        part_g, part_gxhat = xp.empty(c * grid[0], dtype=dt), xp.empty(c * grid[0], dtype=dt)
        self.kernel(name, dt)(grid, block, (*arrays, part_g, part_gxhat, *_i32(n, c, hw)))
        sum_g, sum_gxhat = xp.empty(c, dtype=dt), xp.empty(c, dtype=dt)
        self._launch_combine("batchnorm_backward_combine", dt, c,
                             (part_g, part_gxhat, sum_g, sum_gxhat, *_i32(grid[0], c)))
        return sum_g, sum_gxhat

    def _batch_stats(self, x, eps):
        """Mean, biased variance and 1/sqrt(var + eps) per channel of a contiguous NCHW x:
        the two-stage reduction (batchnorm_stats, then batchnorm_stats_combine)."""
        xp, dt = self.xp, x.dtype
        n, c, h, w = x.shape
        grid, block = self.reduction_geometry(n, c, h * w)
        partials = [xp.empty(c * grid[0], dtype=dt) for _ in range(3)]   # count, mean, M2
        self.kernel("batchnorm_stats", dt)(grid, block, (x, *partials, *_i32(n, c, h * w)))
        mean, var, invstd = (xp.empty(c, dtype=dt) for _ in range(3))
        self._launch_combine("batchnorm_stats_combine", dt, c,
                             (*partials, mean, var, invstd, *_i32(grid[0], c), dt.type(eps)))
        return mean, var, invstd

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
        sum_g, sum_gxhat = self._backward_sums("batchnorm_backward_reduce",
                                               (g, x, mean, invstd), (n, c, h * w))
        grad_x = xp.empty_like(x)
        self._launch_planes("batchnorm_backward_apply", dt, (n, c, h * w),
                            (g, x, mean, invstd, self._vector(weight, dt), sum_g, sum_gxhat,
                             grad_x, *_i32(n, c, h * w)))
        return grad_x, sum_gxhat, sum_g

    def relu_forward(self, x, out=None):
        """See reference.relu_forward (out may be x: each element is read, then written)."""
        self._check_devices("relu_forward", x=x)
        checks.relu_forward_args(x, out)
        contiguous = out is not None and out.flags.c_contiguous
        y = out if contiguous else self.xp.empty(x.shape, dtype=x.dtype)   # x's shape, 0-d too
        x = self.xp.ascontiguousarray(x)
        self._launch("relu_forward", x.dtype, x.size, (x, y, np.int64(x.size)))
        if out is not None and not contiguous:
            out[...] = y
        return y if out is None else out

    def relu_backward(self, grad_out, x):
        """See reference.relu_backward."""
        self._check_devices("relu_backward", grad_out=grad_out, x=x)
        checks.relu_backward_args(grad_out, x)
        grad_x = self.xp.empty(grad_out.shape, dtype=grad_out.dtype)   # its shape, 0-d too
        g = self.xp.ascontiguousarray(grad_out)
        x = self.xp.ascontiguousarray(x, dtype=g.dtype)
        self._launch("relu_backward", g.dtype, g.size, (g, x, grad_x, np.int64(g.size)))
        return grad_x

    def maxpool_forward(self, x, kh, kw, sh, sw, ph, pw, dh=1, dw=1, ceil_mode=False):
        """See reference.maxpool_forward."""
        self._check_devices("maxpool_forward", x=x)
        oh, ow = checks.maxpool_forward_args(x, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)
        n, c, h, w = x.shape
        _check_int32("maxpool_forward", planes=n * c)
        x = self.xp.ascontiguousarray(x)
        y = self.xp.empty((n, c, oh, ow), dtype=x.dtype)
        idx = self.xp.empty((n, c, oh, ow), dtype=np.int64)
        self._launch_planes("maxpool_forward", x.dtype, (n * c, oh, ow),
                            (x, y, idx, *_i32(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                                              oh, ow)))
        return y, idx

    def maxpool_backward(self, grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1,
                         ceil_mode=False):
        """See reference.maxpool_backward."""
        self._check_devices("maxpool_backward", grad_out=grad_out, idx=idx)
        n, c, h, w, oh, ow = checks.maxpool_backward_args(grad_out, idx, x_shape, kh, kw, sh, sw,
                                                          ph, pw, dh, dw, ceil_mode,
                                                          check_index=False)
        _check_int32("maxpool_backward", planes=n * c)
        g = self.xp.ascontiguousarray(grad_out)
        idx = self.xp.ascontiguousarray(idx, dtype=np.int64)
        grad_x = self.xp.empty((n, c, h, w), dtype=g.dtype)
        self._launch_planes("maxpool_backward", g.dtype, (n * c, h, w),
                            (g, idx, grad_x, *_i32(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                                                   oh, ow),
                             *magic_divisor(sh), *magic_divisor(sw)))
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
            mean, var, invstd = self._batch_stats(x, eps)
        else:
            mean = xp.asarray(running_mean, dtype=dt)
            invstd = (1.0 / xp.sqrt(xp.asarray(running_var, dtype=np.float64) + eps)).astype(dt)
        y = xp.empty_like(x)
        self._launch_planes("batchnorm_relu_apply", dt, (n, c, h * w),
                            (x, mean, invstd, self._vector(weight, dt), self._vector(bias, dt),
                             y, *_i32(n, c, h * w)))
        if training:
            _update_running(running_mean, running_var, mean, var, momentum, m)
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
        sum_g, sum_gxhat = self._backward_sums("batchnorm_relu_backward_reduce",
                                               (g, y, x, mean, invstd), (n, c, h * w))
        grad_x = xp.empty_like(x)
        self._launch_planes("batchnorm_relu_backward_apply", dt, (n, c, h * w),
                            (g, y, x, mean, invstd, self._vector(weight, dt), sum_g, sum_gxhat,
                             grad_x, *_i32(n, c, h * w, bool(training))))
        return grad_x, sum_gxhat, sum_g

    def _check_tensor_devices(self, kernel, **lists):
        """_check_devices on every array of every list (named list[index])."""
        self._check_devices(kernel, **{f"{name}[{i}]": a for name, arrays in lists.items()
                                       for i, a in enumerate(arrays)})

    def sgd_fused(self, params, grads, bufs, fresh, lr, weight_decay, momentum, dampening,
                  nesterov, maximize, chunk=fused_optim.CHUNK):
        """See fused_optim.sgd_reference: one launch (multi-tensor apply) for all the
        tensors, which share a dtype."""
        self._check_tensor_devices("sgd_fused", params=params, grads=grads,
                                   bufs=bufs if momentum != 0 else [])
        fused_optim.launch_sgd(self, params, grads, bufs, fresh, lr, weight_decay, momentum,
                               dampening, nesterov, maximize, chunk)

    def adam_fused(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr,
                   beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled,
                   chunk=fused_optim.CHUNK):
        """See fused_optim.adam_reference: one launch for all the tensors (one dtype)."""
        self._check_tensor_devices("adam_fused", params=params, grads=grads,
                                   exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs,
                                   max_exp_avg_sqs=max_exp_avg_sqs if amsgrad else [])
        fused_optim.launch_adam(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                                steps, lr, beta1, beta2, weight_decay, eps, amsgrad,
                                maximize, decoupled, chunk)

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


def conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh=1, dw=1, groups=1, bias=None,
                   scale=None, relu=False, residual=None, residual_scale=1.0):
    """The convolution of x (N, C, H, W) with w2 (OC, C/groups*kh*kw), plus bias (OC,)
    where given (with scale: out * scale + bias), then residual_scale * residual where
    given, relu after where asked: im2col + cuBLAS GEMMs, one batched call for the groups."""
    return _gpu().conv2d_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias, scale,
                                 relu, residual, residual_scale)


def conv2d_backward(grad_out, x, w2, kh, kw, sh, sw, ph, pw, need_x=True, need_w=True,
                    dh=1, dw=1, groups=1):
    """(grad_x, grad_w2) of conv2d_forward, each None unless asked for, on the GPU."""
    return _gpu().conv2d_backward(grad_out, x, w2, kh, kw, sh, sw, ph, pw, need_x, need_w,
                                  dh, dw, groups)


def conv2d_batchnorm_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups, weight, bias,
                             running_mean, running_var, momentum, eps, relu=False):
    """Training-mode batch norm of a convolution (then relu) -> (out, y, mean, invstd)."""
    return _gpu().conv2d_batchnorm_forward(x, w2, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                                           weight, bias, running_mean, running_var,
                                           momentum, eps, relu)


def batchnorm_forward(x, weight, bias, running_mean, running_var, momentum, eps):
    """Training-mode batch norm -> (y, mean, invstd); updates the running stats in place."""
    return _gpu().batchnorm_forward(x, weight, bias, running_mean, running_var, momentum, eps)


def batchnorm_backward(grad_out, x, weight, mean, invstd):
    """Batch-norm gradient -> (grad_x, grad_weight, grad_bias), on the GPU."""
    return _gpu().batchnorm_backward(grad_out, x, weight, mean, invstd)


def relu_forward(x, out=None):
    """max(x, 0) elementwise, on the GPU (into out where given)."""
    return _gpu().relu_forward(x, out)


def relu_backward(grad_out, x):
    """grad_out * 1[x > 0] elementwise, on the GPU."""
    return _gpu().relu_backward(grad_out, x)


def maxpool_forward(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1, ceil_mode=False):
    """Max pooling -> (y, idx), idx the flat h*W + w of each chosen element, on the GPU."""
    return _gpu().maxpool_forward(x, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)


def maxpool_backward(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw, dh=1, dw=1,
                     ceil_mode=False):
    """Route grad_out back to the elements idx chose (a gather, no atomics), on the GPU."""
    return _gpu().maxpool_backward(grad_out, idx, x_shape, kh, kw, sh, sw, ph, pw, dh, dw,
                                   ceil_mode)


def batchnorm_relu_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                           training=True):
    """relu(batch norm) -> (y, mean, invstd); training updates the running stats in place."""
    return _gpu().batchnorm_relu_forward(x, weight, bias, running_mean, running_var,
                                         momentum, eps, training)


def batchnorm_relu_backward(grad_out, y, x, weight, mean, invstd, training=True):
    """Gradient of relu(batch norm), the mask read from y -> (grad_x, grad_weight,
    grad_bias), on the GPU."""
    return _gpu().batchnorm_relu_backward(grad_out, y, x, weight, mean, invstd, training)


def sgd_fused(params, grads, bufs, fresh, lr, weight_decay, momentum, dampening, nesterov,
              maximize):
    """The fused SGD step of one dtype's tensors (kernels/fused_optim.py), one launch."""
    return _gpu().sgd_fused(params, grads, bufs, fresh, lr, weight_decay, momentum, dampening,
                            nesterov, maximize)


def adam_fused(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2,
               weight_decay, eps, amsgrad, maximize, decoupled):
    """The fused Adam/AdamW step of one dtype's tensors (kernels/fused_optim.py), one launch."""
    return _gpu().adam_fused(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr,
                             beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled)


def channel_affine(x, scale, shift):
    """See reference.channel_affine: the same two steps, each its own elementwise kernel of
    the array library (so no multiply-add is fused)."""
    checks.channel_affine_args(x, scale, shift)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = x * scale.reshape(shape)
    y += shift.reshape(shape)
    return y


def add_scaled(a, b, scale=1.0, out=None):
    """See reference.add_scaled: the same steps, each its own elementwise kernel of the
    array library (so no multiply-add is fused); into `out` where given."""
    checks.add_scaled_args(a, b, out)
    xp = _cupy()
    return xp.add(a, b if scale == 1.0 else a.dtype.type(scale) * b, out=out)


def matmul(a, b):
    """a @ b, the array library's own."""
    return a @ b
