"""The CUDA kernels at real resnet50 launch sizes, under the emulator, on sampled blocks.

The emulated tests of test_cuda_emulated.py use tiny shapes, 64-thread blocks and at most
8 blocks per grid dimension. A GPU sees something else: 256-thread blocks, grids of tens of
thousands of blocks, gridDim.y and gridDim.z pressed against their limit of 65535, offsets
past 2**31. Here every kernel runs once with the launchers' GPU geometry (cuda.BLOCK,
cuda.MAX_BLOCKS) on a tensor of a resnet50 layer at batch 64:

    im2col, col2im     layer1.0.conv2: x 64x64x56x56, 3x3, cols 576 x 200704 (115.6 M)
    max pooling        the stem's: x 64x64x112x112, 3x3 stride 2 padding 1
    batch norm         layer1.0.bn3: x 64x256x56x56 (51.4 M), forward and backward
    relu               the same 64x256x56x56 tensor (a 1-D grid of 65535 blocks)

and im2col and col2im once more at batch 1190, where cols holds 2.16e9 > 2**31 values, so
that any 32-bit offset would wrap: a planted one (an int offset in im2col's tap loop) must
crash or fail that check (it runs in a child process).

Emulating every block would take hours (the emulator runs each block's threads as real
threads), so each launch runs only a sample of its blocks (emulate.backend(sample=...)):
the first and last block along every grid dimension and one in the middle; for batch norm
the blocks of three channels (first, middle, last): every slice of their reductions, their
combine, and the first, middle and last pixel blocks and images of the elementwise
kernels. What those blocks cover is worked out from the grid-stride loops, and exactly
those outputs are held to kernels/reference.py run on the same planes (or channels, or
elements): a sampled reference, not a full one. Inputs are allocated lazily (np.zeros,
whose untouched pages cost nothing) and filled only where the sampled blocks read. The
geometry of every resnet50 launch is checked against the hardware limits with a
recording stand-in kernel, and (hypothesis) the grid-stride loops of any launch the
launchers make visit every index exactly once.

Run time: about 25 s here (batch norm's 256-thread blocks with their barriers are the
slowest part), so nothing is marked slow: `pytest -q tests/test_cuda_sizes.py`.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyres.kernels import cuda, emulate
from tinyres.kernels import reference as ref

N = 64
RESNET_CONV = dict(x=(N, 64, 56, 56), geometry=(3, 3, 1, 1, 1, 1))     # layer1.0.conv2
RESNET_POOL = dict(x=(N, 64, 112, 112), geometry=(3, 3, 2, 2, 1, 1))   # the stem's pool
RESNET_BN = (N, 256, 56, 56)                                            # layer1.0.bn3
BEYOND_INT32 = dict(x=(1190, 64, 56, 56), geometry=(3, 3, 1, 1, 1, 1))  # cols > 2**31
BN_CHANNELS = (0, 131, 255)
TOL = dict(rtol=1e-5, atol=1e-5)


def _ends(size):
    """First, middle and last of range(size)."""
    return sorted({0, size // 2, size - 1})


def _sample(name, grid, block):
    """The blocks to run: for every kernel the first, middle and last block along each
    grid dimension; for batch norm only those of BN_CHANNELS: every slice (x) of their
    reductions (y the channel), the blocks of the combine that hold them (block.y
    channels a block), and in the elementwise kernels (y the channel) the first, middle
    and last blocks along x and z."""
    gx, gy, gz = grid
    if name in ("batchnorm_stats", "batchnorm_backward_reduce"):
        return [(x, c, 0) for x in range(gx) for c in BN_CHANNELS]
    if name.endswith("_combine"):
        return sorted({(c // block[1], 0, 0) for c in BN_CHANNELS})
    if name.startswith("batchnorm"):
        assert block[1] == 1 and gy == RESNET_BN[1]
        return [(x, c, z) for x in _ends(gx) for c in BN_CHANNELS for z in _ends(gz)]
    return [(x, y, z) for x in _ends(gx) for y in _ends(gy) for z in _ends(gz)]


def sampled_backend(sources=None):
    """The emulated kernels with the launchers' GPU block and grid caps, on sampled blocks;
    the launches it saw are recorded in .launches."""
    launches = []

    def sample(name, grid, block):
        launches.append((name, grid, block))
        return _sample(name, grid, block)

    backend = emulate.backend(sources, block=cuda.BLOCK, max_blocks=cuda.MAX_BLOCKS,
                              sample=sample)
    backend.launches = launches
    return backend


@pytest.fixture(scope="module")
def gpu_geometry():
    try:
        return sampled_backend()
    except emulate.EmulatorUnavailable as e:
        pytest.skip(str(e))


def _covered(block_index, block_dim, grid_dim, size):
    """The indices of one grid dimension that one block visits in a grid-stride loop."""
    starts = np.arange(block_index * block_dim, size, block_dim * grid_dim)
    covered = (starts[:, None] + np.arange(block_dim)).ravel()
    return covered[covered < size]


def _coverage(grid, block, extent):
    """[(planes, rows, cols) index arrays] that the sampled blocks of a plane kernel visit."""
    planes, rows, cols = extent
    out = []
    for x, y, z in _sample("plane kernel", grid, block):
        out.append((_covered(z, block[2], grid[2], planes), _covered(y, block[1], grid[1], rows),
                    _covered(x, block[0], grid[0], cols)))
    return out


def _last_launch(backend, name):
    return [entry for entry in backend.launches if entry[0] == name][-1]


def _fill_planes(x, planes, rng):
    """Random values in the given (n*C + c) planes of a lazily allocated x (N, C, H, W)."""
    flat = x.reshape(-1, *x.shape[2:])
    for p in planes:
        flat[p] = rng.standard_normal(x.shape[2:], dtype=np.float32)


def _block_of(cols, per_image, i, ch, kk, L):
    """The kk x L block of cols that plane (image i, channel ch) fills: rows ch*kk.. of
    image i's own (C*kk, L) matrix per image, or of columns i*L.. batch-wide."""
    if per_image:
        return cols[i, ch * kk:(ch + 1) * kk]
    return cols[ch * kk:(ch + 1) * kk, i * L:(i + 1) * L]


def _check_window_kernels(backend, shape, geometry, seed, per_image=False):
    """im2col then col2im at `shape`, sampled, against the reference on each covered plane;
    the columns batch-wide (C*kh*kw, N*OH*OW), as im2col returns them, or per image
    (N, C*kh*kw, OH*OW), as the convolutions launch them (kernels/nchw_conv.py)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    kh, kw = geometry[:2]
    oh, ow = ref_out_size(shape, geometry)
    window = (*geometry, 1, 1)
    x = np.zeros(shape, np.float32)
    grid, block = _planned(backend, (n * c, oh, ow))
    covered = _coverage(grid, block, (n * c, oh, ow))
    planes = sorted({int(p) for ps, _, _ in covered for p in ps})
    _fill_planes(x, planes, rng)
    kk, L = kh * kw, oh * ow
    if per_image:
        cols = np.zeros((n, c * kk, L), np.float32)
        backend._unfold(x, cols, window, per_image=True)
    else:
        cols = backend.im2col(x, *geometry)
    assert _last_launch(backend, "im2col")[1:] == (grid, block)
    for ps, rows, cs in covered:
        for p in ps:
            i, ch = divmod(int(p), c)
            want = ref.im2col(x[i:i + 1, ch:ch + 1], *geometry).reshape(kk, oh, ow)
            got = _block_of(cols, per_image, i, ch, kk, L).reshape(kk, oh, ow)
            np.testing.assert_array_equal(got[:, rows][:, :, cs], want[:, rows][:, :, cs],
                                          err_msg=f"im2col plane {p} of {shape}")
    # col2im reads what im2col wrote for the same planes; its grid is over (planes, H, W)
    grid, block = _planned(backend, (n * c, h, w))
    covered = _coverage(grid, block, (n * c, h, w))
    g = np.zeros(cols.shape, np.float32)
    for ps, _, _ in covered:
        for p in ps:
            i, ch = divmod(int(p), c)
            _block_of(g, per_image, i, ch, kk, L)[...] = rng.standard_normal(
                (kk, L), dtype=np.float32)
    if per_image:
        dx = np.zeros(shape, np.float32)
        backend._fold(g, dx, window, per_image=True)
    else:
        dx = backend.col2im(g, shape, *geometry)
    assert _last_launch(backend, "col2im")[1:] == (grid, block)
    for ps, rows, cs in covered:
        for p in ps:
            i, ch = divmod(int(p), c)
            region = np.ascontiguousarray(_block_of(g, per_image, i, ch, kk, L))
            want = ref.col2im(region, (1, 1, h, w), *geometry)[0, 0]
            np.testing.assert_allclose(dx[i, ch][rows][:, cs], want[rows][:, cs],
                                       err_msg=f"col2im plane {p} of {shape}", **TOL)
    return cols


def ref_out_size(shape, geometry):
    kh, kw, sh, sw, ph, pw = geometry
    return (shape[2] + 2 * ph - kh) // sh + 1, (shape[3] + 2 * pw - kw) // sw + 1


def _planned(backend, extent):
    """(grid, block) the launchers pick for a plane kernel over extent, as 3-tuples."""
    planes, rows, cols = extent
    bx, by, bz = cuda.tile(backend.block, rows, cols)
    cap = min(backend.max_blocks, cuda.GRID_YZ_LIMIT)
    grid = (min(-(-cols // bx), backend.max_blocks), min(-(-rows // by), cap),
            min(-(-planes // bz), cap))
    return grid, (bx, by, bz)


def test_im2col_col2im_at_resnet50_size(gpu_geometry):
    cols = _check_window_kernels(gpu_geometry, RESNET_CONV["x"], RESNET_CONV["geometry"], 0)
    assert cols.shape == (576, N * 56 * 56)


def test_im2col_col2im_beyond_int32_offsets(gpu_geometry):
    cols = _check_window_kernels(gpu_geometry, BEYOND_INT32["x"], BEYOND_INT32["geometry"], 1)
    assert cols.size > 2**31
    grid = _last_launch(gpu_geometry, "im2col")[1]
    assert grid[2] == cuda.GRID_YZ_LIMIT       # 76160 planes: gridDim.z capped, z loops


def test_per_image_columns_at_resnet50_size_and_beyond_int32_offsets(gpu_geometry):
    """The layout the convolutions launch (N, C*kh*kw, OH*OW): the image stride and the
    row stride are 64-bit kernel arguments; past 2**31 values a 32-bit product would
    wrap."""
    cols = _check_window_kernels(gpu_geometry, RESNET_CONV["x"], RESNET_CONV["geometry"], 2,
                                 per_image=True)
    assert cols.shape == (N, 576, 56 * 56)
    cols = _check_window_kernels(gpu_geometry, BEYOND_INT32["x"], BEYOND_INT32["geometry"], 3,
                                 per_image=True)
    assert cols.size > 2**31 and cols.shape[0] == BEYOND_INT32["x"][0]


# A 32-bit offset planted in im2col's tap loop: the classic overflow. It wraps only past
# 2**31, so it runs in a child process (the wrapped write may well crash it).
OVERFLOW = ("for (int j = 0; j < kw; ++j, out += Q) {",
            "for (int j = 0; j < kw; ++j, out = cols + (int)(out - cols + Q)) {")
CHILD = """
import sys
sys.path.insert(0, {tests!r})
import test_cuda_sizes as t
from tinyres.kernels import cuda
source = cuda.read_source("im2col.cu")
assert source.count({old!r}) == 1
backend = t.sampled_backend({{"im2col.cu": source.replace({old!r}, {new!r})}})
print("built, launching", flush=True)
t._check_window_kernels(backend, {shape!r}, {geometry!r}, 1)
"""


def test_planted_32_bit_offset_is_caught_past_2_31(gpu_geometry):
    import pathlib
    import subprocess
    import sys
    code = CHILD.format(tests=str(pathlib.Path(__file__).parent), old=OVERFLOW[0],
                        new=OVERFLOW[1], shape=BEYOND_INT32["x"],
                        geometry=BEYOND_INT32["geometry"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert "built, launching" in done.stdout, done.stderr[-2000:]
    crashed = done.returncode < 0                  # killed by a signal (SIGSEGV)
    caught = done.returncode == 1 and "AssertionError" in done.stderr and "im2col plane" in \
        done.stderr
    assert crashed or caught, (done.returncode, done.stderr[-2000:])


def test_maxpool_at_resnet50_size(gpu_geometry):
    rng = np.random.default_rng(2)
    shape, geometry = RESNET_POOL["x"], RESNET_POOL["geometry"]
    n, c, h, w = shape
    oh, ow = ref_out_size(shape, geometry)
    grid, block = _planned(gpu_geometry, (n * c, oh, ow))
    covered = _coverage(grid, block, (n * c, oh, ow))
    x = np.zeros(shape, np.float32)
    back_grid, back_block = _planned(gpu_geometry, (n * c, h, w))
    back_covered = _coverage(back_grid, back_block, (n * c, h, w))
    planes = sorted({int(p) for cov in (covered, back_covered) for ps, _, _ in cov for p in ps})
    _fill_planes(x, planes, rng)
    y, idx = gpu_geometry.maxpool_forward(x, *geometry)
    for ps, rows, cs in covered:
        for p in ps:
            i, ch = divmod(int(p), c)
            y_ref, idx_ref = ref.maxpool_forward(x[i:i + 1, ch:ch + 1], *geometry)
            np.testing.assert_array_equal(y[i, ch][rows][:, cs], y_ref[0, 0][rows][:, cs])
            np.testing.assert_array_equal(idx[i, ch][rows][:, cs], idx_ref[0, 0][rows][:, cs])
    g, idx_in = np.zeros((n, c, oh, ow), np.float32), np.zeros((n, c, oh, ow), np.int64)
    for p in planes:
        i, ch = divmod(p, c)
        g[i, ch] = rng.standard_normal((oh, ow), dtype=np.float32)
        idx_in[i, ch] = ref.maxpool_forward(x[i:i + 1, ch:ch + 1], *geometry)[1][0, 0]
    grad_x = gpu_geometry.maxpool_backward(g, idx_in, shape, *geometry)
    for ps, rows, cs in back_covered:
        for p in ps:
            i, ch = divmod(int(p), c)
            want = ref.maxpool_backward(g[i:i + 1, ch:ch + 1], idx_in[i:i + 1, ch:ch + 1],
                                        (1, 1, h, w), *geometry)[0, 0]
            # a pixel chosen by two windows sums them in another order than np.add.at
            np.testing.assert_allclose(grad_x[i, ch][rows][:, cs], want[rows][:, cs], **TOL)


def test_batchnorm_at_resnet50_size(gpu_geometry):
    rng = np.random.default_rng(3)
    n, c, h, w = RESNET_BN
    cs = list(BN_CHANNELS)
    x, g = np.zeros(RESNET_BN, np.float32), np.zeros(RESNET_BN, np.float32)
    for ch in cs:
        x[:, ch] = rng.standard_normal((n, h, w), dtype=np.float32) * 2 + 3
        g[:, ch] = rng.standard_normal((n, h, w), dtype=np.float32)
    weight, bias = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(
        np.float32)
    with np.errstate(all="ignore"):        # the channels not sampled hold garbage statistics
        y, mean, invstd = gpu_geometry.batchnorm_forward(x, weight, bias, None, None, 0.1, 1e-5)
        grad_x, grad_w, grad_b = gpu_geometry.batchnorm_backward(g, x, weight, mean, invstd)
    xs = np.ascontiguousarray(x[:, cs])
    y_ref, mean_ref, invstd_ref = ref.batchnorm_forward(xs, weight[cs], bias[cs], None, None,
                                                        0.1, 1e-5)
    np.testing.assert_allclose(mean[cs], mean_ref, **TOL)
    np.testing.assert_allclose(invstd[cs], invstd_ref, **TOL)
    gs = np.ascontiguousarray(g[:, cs])
    want = ref.batchnorm_backward(gs, xs, weight[cs], mean_ref, invstd_ref)
    scale = lambda a: max(1.0, float(np.abs(a).max()))     # noqa: E731
    np.testing.assert_allclose(grad_w[cs] / scale(want[1]), want[1] / scale(want[1]), **TOL)
    np.testing.assert_allclose(grad_b[cs] / scale(want[2]), want[2] / scale(want[2]), **TOL)
    name, grid, block = _last_launch(gpu_geometry, "batchnorm_backward_apply")
    assert grid[1:] == (c, n) and block[1:] == (1, 1)
    pixels = np.concatenate([_covered(b, block[0], grid[0], h * w) for b in _ends(grid[0])])
    assert pixels.max() == h * w - 1
    for z in _ends(grid[2]):                 # the apply kernels' sampled images and pixels
        for k, ch in enumerate(cs):
            np.testing.assert_allclose(y[z, ch].ravel()[pixels], y_ref[z, k].ravel()[pixels],
                                       err_msg=f"y {z} {ch}", **TOL)
            np.testing.assert_allclose(grad_x[z, ch].ravel()[pixels] / scale(want[0]),
                                       want[0][z, k].ravel()[pixels] / scale(want[0]),
                                       err_msg=f"grad_x {z} {ch}", **TOL)


def test_relu_at_resnet50_size(gpu_geometry):
    rng = np.random.default_rng(4)
    x = np.zeros(RESNET_BN, np.float32)
    size = x.size
    flat = x.reshape(-1)
    threads = cuda.BLOCK * cuda.MAX_BLOCKS                 # the 1-D grid-stride loop's stride
    assert size > threads
    blocks = _ends(cuda.MAX_BLOCKS)
    covered = np.concatenate([np.arange(b * cuda.BLOCK, size, threads)[:, None]
                              + np.arange(cuda.BLOCK) for b in blocks]).ravel()
    covered = covered[covered < size]
    flat[covered] = rng.standard_normal(covered.size, dtype=np.float32)
    y = gpu_geometry.relu_forward(x).reshape(-1)
    np.testing.assert_array_equal(y[covered], ref.relu_forward(flat[covered]))
    g = np.ones_like(x)
    grad = gpu_geometry.relu_backward(g, x).reshape(-1)
    np.testing.assert_array_equal(grad[covered], ref.relu_backward(g.reshape(-1)[covered],
                                                                   flat[covered]))
    assert covered.max() >= 3 * threads          # the loop's fourth lap was checked too


# ------------------------------------------ the geometry of every resnet50 launch, no emulation
def _recording_launchers():
    launches = []

    def kernel(name, dtype):
        return lambda grid, block, args: launches.append((name, tuple(grid), tuple(block)))
    return cuda.Launchers(np, kernel), launches


def _resnet50_convs():
    import pathlib
    import sys
    folder = str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import gpu_model
    return gpu_model.resnet50_convs(N)


def test_every_resnet50_launch_fits_the_hardware_limits():
    launchers, launches = _recording_launchers()
    for name, cv in _resnet50_convs():
        n, c, h, oc, k, s, p = (cv[key] for key in "n c h oc k s p".split())
        x = np.zeros((n, c, h, h), np.float32)
        cols = launchers.im2col(x, k, k, s, s, p, p)
        launchers.col2im(cols, x.shape, k, k, s, s, p, p)
        o = (h + 2 * p - k) // s + 1
        y = np.zeros((n, oc, o, o), np.float32)
        v = np.ones(oc, np.float32)
        with np.errstate(all="ignore"):
            _, mean, invstd = launchers.batchnorm_forward(y, v, v, None, None, 0.1, 1e-5)
            launchers.batchnorm_backward(y, y, v, mean, invstd)
            r, mean, invstd = launchers.batchnorm_relu_forward(y, v, v, None, None, 0.1, 1e-5)
            launchers.batchnorm_relu_backward(y, r, y, v, mean, invstd)
        launchers.relu_backward(launchers.relu_forward(y), y)
    x = np.zeros(RESNET_POOL["x"], np.float32)
    y, idx = launchers.maxpool_forward(x, *RESNET_POOL["geometry"])
    launchers.maxpool_backward(y, idx, x.shape, *RESNET_POOL["geometry"])
    files = ("im2col.cu", "batchnorm.cu", "relu.cu", "maxpool.cu")
    kernels = {k for f in files for k in cuda.kernel_signatures(cuda.read_source(f))}
    assert {name for name, _, _ in launches} == kernels
    for name, grid, block in launches:
        grid, block = ((tuple(d) + (1, 1))[:3] for d in (grid, block))
        assert all(1 <= g <= limit for g, limit in zip(grid, emulate.GRID_LIMITS)), (name, grid)
        assert all(1 <= b <= limit for b, limit in zip(block, emulate.BLOCK_LIMITS)), name
        threads = int(np.prod(block))
        assert threads <= 1024 and threads % 32 == 0, (name, block)
    # the stem's 64-channel statistics run on 32 blocks per channel, every layer on 1024+
    stats = [grid for name, grid, _ in launches if name == "batchnorm_stats"]
    assert stats[0] == (32, 64) and min(g[0] * g[1] for g in stats) >= 1024


def test_the_emulator_refuses_what_a_gpu_refuses(gpu_geometry):
    kernel = gpu_geometry.kernel("relu_forward", np.float32)
    x, y = np.ones(4, np.float32), np.empty(4, np.float32)
    with pytest.raises(emulate.KernelArgumentError, match="gridDim.y = 65536 exceeds"):
        kernel((1, 65536, 1), (32, 1, 1), (x, y, np.int64(4)))
    with pytest.raises(emulate.KernelArgumentError, match="blockDim.z = 65 exceeds"):
        kernel((1, 1, 1), (1, 1, 65), (x, y, np.int64(4)))
    with pytest.raises(emulate.KernelArgumentError, match="more than 1024 threads"):
        kernel((1, 1, 1), (64, 32, 1), (x, y, np.int64(4)))


def test_too_many_planes_for_an_int_loop_are_refused():
    launchers, launches = _recording_launchers()
    x = np.broadcast_to(np.float32(0), (2**16, 2**15 - 2**10, 1, 1))   # no memory behind it
    assert x.shape[0] * x.shape[1] >= cuda.PLANE_LIMIT
    with pytest.raises(ValueError, match=r"im2col: planes = \d+ does not fit"):
        launchers.im2col(x, 1, 1, 1, 1, 0, 0)
    with pytest.raises(ValueError, match=r"maxpool_forward: planes = \d+ does not fit"):
        launchers.maxpool_forward(x, 1, 1, 1, 1, 0, 0)
    assert launches == []
    small = np.broadcast_to(np.float32(0), (2**15, 2**10, 1, 1))
    launchers.im2col(small, 1, 1, 1, 1, 0, 0)                 # 2**25 planes: fine
    assert launches[0][1][2] == cuda.GRID_YZ_LIMIT


def _each_once(block_dim, grid_dim, size):
    """Whether the blocks of one grid dimension, in their grid-stride loop, visit every
    index of range(size) exactly once."""
    seen = np.concatenate([_covered(b, block_dim, grid_dim, size) for b in range(grid_dim)])
    return np.array_equal(np.sort(seen), np.arange(size))


@settings(max_examples=60, deadline=None)
@given(planes=st.integers(1, 300_000), rows=st.integers(1, 300), cols=st.integers(1, 300),
       block=st.sampled_from([32, 64, 96, 128, 256, 1024]),
       max_blocks=st.sampled_from([1, 3, 8, cuda.MAX_BLOCKS]))
def test_plane_geometry_visits_every_index_once(planes, rows, cols, block, max_blocks):
    launches = []
    launchers = cuda.Launchers(np, lambda name, dtype: lambda grid, blk, args: launches.append(
        (grid, blk)), block=block, max_blocks=max_blocks)
    launchers._launch_planes("k", np.float32, (planes, rows, cols), ())
    ((grid, blk),) = launches
    assert np.prod(blk) <= block and all(b >= 1 for b in blk)
    assert all(1 <= g <= lim for g, lim in zip(grid, emulate.GRID_LIMITS))
    for size, b, g in zip((cols, rows, planes), blk, grid):
        assert _each_once(b, g, size), (size, b, g)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), c=st.integers(1, 70_000), hw=st.integers(1, 5000),
       block=st.sampled_from([32, 64, 96, 128, 256, 1024]),
       max_blocks=st.sampled_from([1, 3, 8, cuda.MAX_BLOCKS]))
def test_reduction_geometry_visits_every_value_once(n, c, hw, block, max_blocks):
    (slices, channels), (bx, by) = cuda.Launchers(np, None, block=block,
                                                  max_blocks=max_blocks).reduction_geometry(
        n, c, hw)
    assert (bx * by) % 32 == 0 and bx * by <= block
    assert 1 <= channels <= min(c, cuda.GRID_YZ_LIMIT) and slices >= 1
    # images: n = s*by + ty stepping slices*by; channels: blockIdx.y stepping gridDim.y;
    # pixels: threadIdx.x stepping bx
    assert _each_once(by, slices, n) and _each_once(1, channels, c) and _each_once(bx, 1, hw)
